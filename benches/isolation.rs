//! Isolation: 50 normal tenants of 20 users, measured alone and then beside one tenant whose
//! token endpoint hangs (16 users) and one whose phone system hangs (40 switches due), in one
//! run. For the normal tenants: notification → stored (the event in gwsync's store) p50/p99, and
//! boundary → delivered (a profile switch at its phone system after the event's start) p50/p99.
//! gwsync runs as its own process (release build); fake Google, the phone systems and the
//! hanging servers run in this one.
//!
//!     cargo bench --bench isolation
//!
//! Targets (DESIGN §9): with the bad tenants, notification → stored p99 < 2 s, and every switch
//! within 1 s of its boundary.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use parking_lot::Mutex;
use serde_json::{Value, json};
use support::process::{ADMIN, spawn, wait_ready};
use support::{ms, percentile, writer_token};

const TENANTS: usize = 50;
const USERS: usize = 20;
const SAMPLES: usize = 100;
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// What the normal tenants' phone systems received: (user, profile, when).
type Received = Arc<Mutex<Vec<(String, Value, Instant)>>>;

struct Run {
    http: reqwest::Client,
    fake: String,
    gwsync: String,
    phones: String,
}

impl Run {
    async fn admin(&self, method: reqwest::Method, path: &str, body: Vec<u8>) -> Value {
        let r = self
            .http
            .request(method, format!("{}{path}", self.gwsync))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("admin call");
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap_or(Value::Null)
    }

    /// A Workspace domain with its users and a key with delegation (the writer scope too, for
    /// the benchmark's own writes).
    async fn domain(&self, name: &str, users: usize) -> (Vec<String>, Value) {
        let domain = format!("{name}.test");
        let emails: Vec<String> = (0..users).map(|i| format!("u{i}@{domain}")).collect();
        let post = |path: &str, body: Value| self.http.post(format!("{}{path}", self.fake)).json(&body).send();
        post("/_fake/domains", json!({"domain": domain, "users": emails})).await.expect("domain");
        let key: Value =
            post("/_fake/service-accounts", json!({"domain": domain})).await.expect("sa").json().await.expect("key");
        let scopes = [
            "https://www.googleapis.com/auth/calendar.readonly",
            "https://www.googleapis.com/auth/calendar.events",
            "https://www.googleapis.com/auth/contacts.readonly",
            "https://www.googleapis.com/auth/directory.readonly",
        ];
        self.http
            .put(format!("{}/_fake/delegation/{}", self.fake, key["client_id"].as_str().expect("id")))
            .json(&json!({"scopes": scopes}))
            .send()
            .await
            .expect("delegation");
        (emails, key)
    }

    /// The tenant in gwsync with its key, phone system and users.
    async fn tenant(&self, name: &str, emails: &[String], key: &Value, phone: &str) {
        let spec = json!({"domain": format!("{name}.test"), "phone_system": {"url": phone, "secret": SECRET}});
        self.admin(reqwest::Method::PUT, &format!("/api/v1/tenants/{name}"), spec.to_string().into_bytes()).await;
        self.admin(reqwest::Method::PUT, &format!("/api/v1/tenants/{name}/credentials"), key.to_string().into_bytes())
            .await;
        let body = json!({"profiles": [{"name": "Lunch", "triggers": ["lunch"]}]}).to_string();
        for u in emails {
            self.admin(reqwest::Method::PUT, &format!("/api/v1/tenants/{name}/users/{u}"), body.clone().into_bytes())
                .await;
        }
    }

    async fn live_channels(&self) -> Vec<Value> {
        let v: Value = self
            .http
            .get(format!("{}/_fake/channels?state=live", self.fake))
            .send()
            .await
            .expect("channels")
            .json()
            .await
            .expect("json");
        v["channels"].as_array().cloned().unwrap_or_default()
    }

    async fn insert(&self, token: &str, summary: &str, start: chrono::DateTime<chrono::Utc>, seconds: i64) -> String {
        let end = start + chrono::Duration::seconds(seconds);
        let event = json!({"summary": summary, "start": {"dateTime": start.to_rfc3339()}, "end": {"dateTime": end.to_rfc3339()}});
        let v: Value = self
            .http
            .post(format!("{}/calendar/v3/calendars/primary/events", self.fake))
            .bearer_auth(token)
            .json(&event)
            .send()
            .await
            .expect("insert")
            .json()
            .await
            .expect("json");
        v["id"].as_str().expect("id").to_owned()
    }

    /// Posts Google's notification for the user's channel, as Google would.
    async fn notify(&self, channel: &Value, n: usize) {
        let r = self
            .http
            .post(format!("{}/webhooks/google/calendar", self.gwsync))
            .header("X-Goog-Channel-ID", channel["id"].as_str().unwrap_or(""))
            .header("X-Goog-Channel-Token", channel["token"].as_str().unwrap_or(""))
            .header("X-Goog-Resource-ID", channel["resourceId"].as_str().unwrap_or(""))
            .header("X-Goog-Resource-State", "exists")
            .header("X-Goog-Message-Number", (10_000 + n).to_string())
            .send()
            .await
            .expect("webhook");
        assert!(r.status().is_success(), "webhook: {}", r.status());
    }

    async fn stored(&self, tenant: &str, user: &str, id: &str) -> bool {
        let v: Value = self
            .http
            .get(format!("{}/api/v1/tenants/{tenant}/users/{user}/events", self.gwsync))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("events")
            .json()
            .await
            .expect("json");
        v["events"].as_array().is_some_and(|a| a.iter().any(|e| e["id"] == id))
    }
}

/// A server that accepts connections and never answers.
async fn hanging_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    format!("http://{addr}")
}

/// The normal tenants' phone systems: one server, a path per tenant, answering 204.
async fn phones(received: Received) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = HttpServer::new(move || {
        let received = received.clone();
        App::new().route(
            "/{tenant}",
            web::post().to(move |body: web::Json<Value>| {
                let received = received.clone();
                async move {
                    let user = body["user"].as_str().unwrap_or("").to_owned();
                    received.lock().push((user, body["profile"].clone(), Instant::now()));
                    HttpResponse::NoContent().finish()
                }
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .expect("listen")
    .run();
    tokio::spawn(server);
    format!("http://{addr}")
}

struct Figures {
    stored: Vec<Duration>,
    delivered: Vec<Duration>,
    missing: usize,
}

/// Notification → stored over `SAMPLES` rounds, then `SAMPLES` switches at their boundary.
async fn measure(run: &Run, samples: &[(String, String, Value, String)], received: &Received, round: usize) -> Figures {
    let mut stored = Vec::with_capacity(SAMPLES);
    for (i, (tenant, user, channel, token)) in samples.iter().enumerate() {
        let start = chrono::Utc::now() + chrono::Duration::hours(2 + (round * SAMPLES + i) as i64 % 300);
        let id = run.insert(token, &format!("Planning {round}.{i}"), start, 1800).await;
        let t = Instant::now();
        run.notify(channel, round * 1000 + i).await;
        while !run.stored(tenant, user, &id).await {
            assert!(t.elapsed() < Duration::from_secs(60), "{tenant}/{user}: never stored");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        stored.push(t.elapsed());
    }
    // Boundaries a little ahead, on whole seconds (Google keeps event times to the second), ten
    // users a second; each synced in advance. Short lunches, over before the next round.
    let first = chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp() + 20, 0).expect("a time");
    let mut due = Vec::with_capacity(SAMPLES);
    for (i, (_, user, channel, token)) in samples.iter().enumerate() {
        let at = first + chrono::Duration::seconds(i as i64 / 10);
        run.insert(token, "Lunch", at, 3).await;
        run.notify(channel, round * 1000 + 500 + i).await;
        due.push((user.clone(), at));
    }
    let last = due.last().map(|(_, at)| *at).unwrap_or(first);
    let wait = (last - chrono::Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(5);
    tokio::time::sleep(wait).await;
    let got = received.lock().clone();
    let mut delivered = Vec::new();
    let mut missing = 0;
    // Instants of real time are compared through the offset between the two clocks.
    let (now_i, now_c) = (Instant::now(), chrono::Utc::now());
    for (user, at) in due {
        let boundary = now_i - (now_c - at).to_std().unwrap_or_default();
        match got
            .iter()
            .filter(|(u, p, t)| *u == user && p == "Lunch" && *t + Duration::from_secs(2) >= boundary)
            .min_by_key(|(_, _, t)| *t)
        {
            Some((_, _, t)) => delivered.push(t.saturating_duration_since(boundary)),
            None => missing += 1,
        }
    }
    stored.sort();
    delivered.sort();
    Figures { stored, delivered, missing }
}

fn report(label: &str, f: &Figures) {
    println!(
        "  {label}: notification → stored p50 {} p99 {}; boundary → delivered p50 {} p99 {} ({} of {SAMPLES} delivered)",
        ms(percentile(&f.stored, 50.0)),
        ms(percentile(&f.stored, 99.0)),
        ms(percentile(&f.delivered, 50.0)),
        ms(percentile(&f.delivered, 99.0)),
        SAMPLES - f.missing
    );
}

#[tokio::main]
async fn main() {
    let fake = fake_google::FakeGoogle::start().await.expect("fake");
    let http = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(64).build().expect("client");
    // The benchmark posts the notifications itself, timed; Google's own copies would blur it.
    http.put(format!("{}/_fake/delivery", fake.base_url())).json(&json!({"drop": 1.0})).send().await.expect("drop");
    let received: Received = Arc::default();
    let phone_base = phones(received.clone()).await;
    let data = tempfile::tempdir().expect("tempdir");
    let logs = tempfile::tempdir().expect("tempdir");
    let log = logs.path().join("gwsync.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = spawn(port, data.path(), &log, &fake.base_url(), &[("GWSYNC_OUTBOUND_ALLOW", "127.0.0.0/8")]);
    wait_ready(&http, &base, &log).await;
    let run = Run { http, fake: fake.base_url(), gwsync: base, phones: phone_base };

    println!("isolation: {TENANTS} tenants of {USERS} users");
    let mut samples = Vec::new();
    let mut keys = Vec::new();
    for t in 0..TENANTS {
        let name = format!("n{t}");
        let (emails, key) = run.domain(&name, USERS).await;
        run.tenant(&name, &emails, &key, &format!("{}/{name}", run.phones)).await;
        keys.push((name, emails, key));
    }
    let started = Instant::now();
    while run.live_channels().await.len() < TENANTS * USERS {
        assert!(started.elapsed() < Duration::from_secs(600), "channels never all registered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let channels = run.live_channels().await;
    for (name, emails, key) in &keys {
        for user in emails.iter().take(SAMPLES / TENANTS) {
            let channel = channels.iter().find(|c| c["calendar"] == user.as_str()).cloned().expect("a channel");
            let token = writer_token(&run.http, &run.fake, key, user).await;
            samples.push((name.clone(), user.clone(), channel, token));
        }
    }
    let alone = measure(&run, &samples, &received, 0).await;

    println!("isolation: adding a tenant whose token endpoint hangs and one whose phone system hangs");
    let hang = hanging_server().await;
    let (b_users, mut b_key) = run.domain("hangtoken", 16).await;
    b_key["token_uri"] = json!(format!("{hang}/token"));
    run.tenant("hangtoken", &b_users, &b_key, &format!("{}/hangtoken", run.phones)).await;
    // Company C: 40 users whose lunch runs now, and a phone system that never answers.
    let (c_users, c_key) = run.domain("hangphone", 40).await;
    for u in &c_users {
        let token = writer_token(&run.http, &run.fake, &c_key, u).await;
        run.insert(&token, "Lunch", chrono::Utc::now() - chrono::Duration::minutes(5), 7200).await;
    }
    run.tenant("hangphone", &c_users, &c_key, &format!("{hang}/pbx")).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let beside = measure(&run, &samples, &received, 1).await;
    let status = run.admin(reqwest::Method::GET, "/api/v1/tenants/hangtoken", Vec::new()).await;
    let c_status = run.admin(reqwest::Method::GET, "/api/v1/tenants/hangphone", Vec::new()).await;

    report("alone", &alone);
    report("beside the hanging tenants", &beside);
    println!(
        "  ratio with/without: stored p99 {:.2}×, delivered p99 {:.2}×",
        percentile(&beside.stored, 99.0).as_secs_f64() / percentile(&alone.stored, 99.0).as_secs_f64().max(1e-9),
        percentile(&beside.delivered, 99.0).as_secs_f64() / percentile(&alone.delivered, 99.0).as_secs_f64().max(1e-9)
    );
    println!("  the hanging token endpoint's tenant: google_token {}", status["status"]["google_token"]["state"]);
    println!(
        "  the hanging phone system's tenant: phone_system {} ({} users waiting)",
        c_status["status"]["phone_system"]["state"], c_status["status"]["phone_system"]["queued"]
    );
    let _ = child.kill();
    let _ = child.wait();
    fake.stop().await;
}
