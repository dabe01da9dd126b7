//! Notification → presence updated: an event with a trigger word is written at (fake) Google,
//! Google's notification reaches gwsync's webhook, and the time until gwsync's presence API
//! lists the switch it causes is measured (store and timeline both updated),
//! with fake Google answering at once. Sequential rounds over `USERS` calendars (one calendar
//! would soon hit gwsync's own pacing under Google's 600 requests/minute/user quota);
//! percentiles from one run.
//!
//! Run on both stores: sled, and PostgreSQL (a throwaway cluster the bench starts, fsync on;
//! needs the server binaries, as the tests do).
//!
//!     cargo bench --bench sync_latency
//!
//! Targets (DESIGN §9 and issues #4, #14): p50 < 10 ms, p99 < 50 ms.

#[path = "../tests/common/pg.rs"]
mod pg;
mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Bench, ms, percentile};

const ROUNDS: usize = 300;
const USERS: usize = 100;

#[tokio::main]
async fn main() {
    gwsync::logging::init_with_default(gwsync::config::LogFormat::Plain, "warn");
    let sled = Bench::start(USERS).await;
    report("sled", measure(&sled).await);
    sled.stop().await;
    let database = pg::PgCluster::start_durable();
    let url = pg::database_on(&database).await;
    let on_pg = Bench::start_with(USERS, |c| c.store.database_url = Some(url.into())).await;
    report("PostgreSQL", measure(&on_pg).await);
    on_pg.stop().await;
}

fn report(store: &str, mut latencies: Vec<Duration>) {
    latencies.sort();
    println!(
        "{store}: notification → presence updated, {ROUNDS} rounds over {USERS} calendars: p50 {} (target < 10 ms), p90 {}, p99 {} (target < 50 ms), max {}",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 90.0)),
        ms(percentile(&latencies, 99.0)),
        ms(*latencies.last().unwrap_or(&Duration::ZERO))
    );
}

async fn measure(bench: &Bench) -> Vec<Duration> {
    let channels = bench.channels().await;
    let mut writers = Vec::with_capacity(channels.len());
    for c in &channels {
        writers.push(bench.writer(&c.user).await);
    }
    // The bench posts the notification itself, timed; Google's own copies would only blur it.
    bench.fake("PUT", "/_fake/delivery", Some(json!({"drop": 1.0}))).await;
    let google = format!("{}/calendar/v3/calendars/primary/events", bench.fake.base_url());
    let webhook = format!("{}/webhooks/google/calendar", bench.gwsync);
    let holds = |user: String, id: String| {
        let (http, url) = (bench.http.clone(), format!("{}/api/v1/tenants/bench/users/{user}/events", bench.gwsync));
        async move {
            let v: Value =
                http.get(&url).bearer_auth(support::ADMIN).send().await.expect("events").json().await.expect("json");
            v["events"].as_array().is_some_and(|a| a.iter().any(|e| e["id"] == id.as_str()))
        }
    };

    let mut latencies = Vec::with_capacity(ROUNDS);
    for i in 0..ROUNDS {
        let (channel, writer) = (&channels[i % channels.len()], &writers[i % channels.len()]);
        let user = channel.user.clone();
        // Within the presence horizon, one event per hour slot so none overlap.
        let start = chrono::Utc::now() + chrono::Duration::hours(1 + i as i64);
        let event = json!({"summary": format!("Lunch {i}"), "start": {"dateTime": start.to_rfc3339()}, "end": {"dateTime": (start + chrono::Duration::minutes(30)).to_rfc3339()}});
        let created: Value = bench
            .http
            .post(&google)
            .bearer_auth(writer)
            .json(&event)
            .send()
            .await
            .expect("insert")
            .json()
            .await
            .expect("json");
        let id = created["id"].as_str().expect("id").to_owned();
        let started = Instant::now();
        let r = bench
            .http
            .post(&webhook)
            .header("X-Goog-Channel-ID", &channel.id)
            .header("X-Goog-Channel-Token", &channel.token)
            .header("X-Goog-Resource-ID", &channel.resource_id)
            .header("X-Goog-Resource-State", "exists")
            .header("X-Goog-Message-Number", (1000 + i).to_string())
            .send()
            .await
            .expect("webhook");
        assert!(r.status().is_success());
        while !holds(user.clone(), id.clone()).await {
            assert!(started.elapsed() < Duration::from_secs(10), "the switch never appeared");
        }
        latencies.push(started.elapsed());
    }
    latencies
}
