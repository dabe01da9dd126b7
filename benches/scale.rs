//! Scale: 100,000 users registered from scratch against fake Google enforcing Google's quotas
//! (600 requests/min/user, 10,000/min/project). Each user's calendar holds a working week's
//! worth: a daily stand-up and a weekly customer meeting (series, Europe/Stockholm), a lunch
//! with a customer tomorrow and an all-day conference, so every user has profile switches
//! ahead and the scheduler keeps a timeline for each. Reports the time and Google calls to
//! register every user (a push channel and a full sync each), the peak requests per minute fake
//! Google saw, refused requests, gwsync's RSS afterwards, and restart-to-ready time. gwsync runs
//! as its own process (release build); fake Google runs in this one.
//!
//!     cargo bench --bench scale                         # 100,000 users: about half an hour
//!     BENCH_USERS=10000 cargo bench --bench scale

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

const ADMIN: &str = "scale-bench-admin-token-0123456789";

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Starts gwsync; its log goes to `log` (shown if it never becomes ready).
fn spawn(port: u16, data: &std::path::Path, log: &std::path::Path, fake: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_gwsync"))
        .arg("serve")
        .env("GWSYNC_LISTEN", format!("127.0.0.1:{port}"))
        .env("GWSYNC_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        .env("GWSYNC_DATA_DIR", data)
        .env("GWSYNC_ADMIN_TOKEN", ADMIN)
        .env("GWSYNC_MASTER_KEY", base64::engine::general_purpose::STANDARD.encode([9u8; 32]))
        .env("GWSYNC_GOOGLE_API_URL", fake)
        .env("GWSYNC_GOOGLE_PEOPLE_URL", fake)
        .env("GWSYNC_OUTBOUND_ALLOW", "127.0.0.0/8")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("gwsync starts")
}

async fn wait_ready(http: &reqwest::Client, base: &str, log: &std::path::Path) -> Duration {
    let started = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(60) {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "gwsync never became ready; its log ends:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main]
async fn main() {
    let users: usize = std::env::var("BENCH_USERS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let fake = fake_google::FakeGoogle::start().await.expect("fake");
    let base_fake = fake.base_url();
    let http = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(64).build().expect("client");
    let emails: Vec<String> = (0..users).map(|i| format!("u{i}@scale.test")).collect();
    let post = |path: &str, body: Value| http.post(format!("{base_fake}{path}")).json(&body).send();
    post("/_fake/domains", json!({"domain": "scale.test", "users": emails})).await.expect("domain");
    let key: Value =
        post("/_fake/service-accounts", json!({"domain": "scale.test"})).await.expect("sa").json().await.expect("key");
    let scopes = [
        "https://www.googleapis.com/auth/calendar.readonly",
        "https://www.googleapis.com/auth/contacts.readonly",
        "https://www.googleapis.com/auth/directory.readonly",
        // Only for writing the calendars below; gwsync asks for the read-only scopes.
        "https://www.googleapis.com/auth/calendar.events",
    ];
    http.put(format!("{base_fake}/_fake/delegation/{}", key["client_id"].as_str().expect("id")))
        .json(&json!({"scopes": scopes}))
        .send()
        .await
        .expect("delegation");
    let seeding = Instant::now();
    let seeded = seed_calendars(&http, &base_fake, &key, &emails).await;
    println!(
        "scale: {seeded} events written to {users} calendars in {:.0} s; waiting a minute for fake Google's quota windows to empty",
        seeding.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(61)).await;
    http.put(format!("{base_fake}/_fake/quota"))
        .json(&json!({"calendar_per_user_per_minute": 600, "project_per_minute": 10000}))
        .send()
        .await
        .expect("quota");

    let data = tempfile::tempdir().expect("tempdir");
    let logs = tempfile::tempdir().expect("tempdir");
    let log = logs.path().join("gwsync.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = spawn(port, data.path(), &log, &base_fake);
    wait_ready(&http, &base, &log).await;
    let admin = |method: reqwest::Method, path: String, body: Option<Vec<u8>>| {
        let mut req = http.request(method, format!("{base}{path}")).bearer_auth(ADMIN);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        req.send()
    };
    admin(
        reqwest::Method::PUT,
        "/api/v1/tenants/scale".into(),
        Some(json!({"domain": "scale.test"}).to_string().into_bytes()),
    )
    .await
    .expect("tenant");
    admin(reqwest::Method::PUT, "/api/v1/tenants/scale/credentials".into(), Some(key.to_string().into_bytes()))
        .await
        .expect("key");
    http.delete(format!("{base_fake}/_fake/requests")).send().await.expect("clear log");

    println!("scale: registering {users} users against fake Google enforcing 600/min/user and 10,000/min/project");
    let started = Instant::now();
    use futures_util::StreamExt;
    futures_util::stream::iter(emails.iter().cloned())
        .map(|u| {
            let body = json!({"profiles": [
                {"name": "Lunch", "triggers": ["lunch"]},
                {"name": "Möte", "triggers": ["*möte", "stand-up"]}
            ]})
            .to_string()
            .into_bytes();
            admin(reqwest::Method::PUT, format!("/api/v1/tenants/scale/users/{u}"), Some(body))
        })
        .buffer_unordered(32)
        .for_each(|r| async move {
            assert!(r.is_ok_and(|r| r.status().is_success()));
        })
        .await;
    let added = started.elapsed();
    let mut last_report = Instant::now();
    let stats = loop {
        let stats: Value =
            http.get(format!("{base_fake}/_fake/stats")).send().await.expect("stats").json().await.expect("json");
        let live = stats["live_channels"].as_u64().unwrap_or(0) as usize;
        if live >= users {
            break stats;
        }
        if last_report.elapsed() > Duration::from_secs(60) {
            println!("  … {live} of {users} registered after {:.0} s", started.elapsed().as_secs_f64());
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    };
    let registered = started.elapsed();
    // Let the last full syncs finish before measuring memory.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rss = rss_mib(child.id());
    let stats: Value = http
        .get(format!("{base_fake}/_fake/stats"))
        .send()
        .await
        .map(|r| r.json::<Value>())
        .expect("stats")
        .await
        .unwrap_or(stats);

    let sample: Value =
        admin(reqwest::Method::GET, format!("/api/v1/tenants/scale/users/{}/presence", emails[0]), None)
            .await
            .expect("presence")
            .json()
            .await
            .expect("json");
    let upcoming = sample["upcoming"].as_array().map_or(0, Vec::len);

    // Restart: SIGTERM, then start on the same data and time until ready.
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
    let restart = Instant::now();
    let mut child = spawn(port, data.path(), &log, &base_fake);
    let ready = wait_ready(&http, &base, &log).await;
    let restart_total = restart.elapsed();

    println!("  users added through the admin API in {:.1} s", added.as_secs_f64());
    println!("  all {users} registered (channel + full sync) in {:.1} min", registered.as_secs_f64() / 60.0);
    println!("  Google calls: {}", stats["requests_by_method"]);
    println!("  Google answers by status: {}", stats["google_responses_by_status"]);
    println!(
        "  peak requests in any minute: project {} (limit 10,000), one user {} (limit 600)",
        stats["peak_requests_per_minute"]["project"], stats["peak_requests_per_minute"]["calendar_user"]
    );
    println!("  presence of {}: {upcoming} switches ahead over the horizon", emails[0]);
    println!("  gwsync RSS after registering: {rss:.0} MiB (target < 500 MB)");
    println!(
        "  restart to ready: {:.2} s (process start included: {:.2} s; target < 10 s)",
        ready.as_secs_f64(),
        restart_total.as_secs_f64()
    );
    let _ = child.kill();
    let _ = child.wait();
    fake.stop().await;
}

/// Writes each user's calendar through the Calendar API, 64 users at a time; the number of
/// events written.
async fn seed_calendars(http: &reqwest::Client, fake: &str, key: &Value, emails: &[String]) -> usize {
    use futures_util::StreamExt;
    let zone = "Europe/Stockholm";
    let stockholm: chrono_tz::Tz = zone.parse().expect("zone");
    let today = chrono::Utc::now().with_timezone(&stockholm).date_naive();
    let at = |days: i64, hm: &str| format!("{}T{hm}:00", today + chrono::Duration::days(days));
    let calendar = [
        json!({"summary": "Daily stand-up", "recurrence": ["RRULE:FREQ=DAILY;BYDAY=MO,TU,WE,TH,FR"],
               "start": {"dateTime": at(-14, "09:00"), "timeZone": zone}, "end": {"dateTime": at(-14, "09:15"), "timeZone": zone}}),
        json!({"summary": "Kundmöte", "recurrence": ["RRULE:FREQ=WEEKLY"],
               "start": {"dateTime": at(-6, "14:00"), "timeZone": zone}, "end": {"dateTime": at(-6, "15:00"), "timeZone": zone}}),
        json!({"summary": "Lunch with a customer",
               "start": {"dateTime": at(1, "12:00"), "timeZone": zone}, "end": {"dateTime": at(1, "13:00"), "timeZone": zone}}),
        json!({"summary": "Conference", "start": {"date": (today + chrono::Duration::days(5)).to_string()},
               "end": {"date": (today + chrono::Duration::days(7)).to_string()}}),
    ];
    let calendar = &calendar;
    futures_util::stream::iter(emails)
        .map(|user| async move {
            let token = support::writer_token(http, fake, key, user).await;
            for event in calendar {
                let r = http
                    .post(format!("{fake}/calendar/v3/calendars/primary/events"))
                    .bearer_auth(&token)
                    .json(event)
                    .send()
                    .await
                    .expect("insert");
                assert!(r.status().is_success(), "insert: {}", r.status());
            }
            calendar.len()
        })
        .buffer_unordered(64)
        .fold(0, |n, k| async move { n + k })
        .await
}
