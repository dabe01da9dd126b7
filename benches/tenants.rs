//! Tenants side by side: each tenant's service account lives in its own Google Cloud project
//! with its own quota, so registering many tenants at once should take about as long as one.
//! First one tenant of `BENCH_USERS` users is registered from scratch (a push channel and a
//! full sync each) against fake Google enforcing Google's quotas (600 requests/min/user,
//! 10,000/min/project); then `BENCH_TENANTS` tenants of as many users each, all at once. Reports
//! both wall times, their ratio (target: within 2×), the peak requests per minute fake Google saw
//! for any one project and user, and refused requests. gwsync runs as its own process (release
//! build); fake Google runs in this one.
//!
//!     cargo bench --bench tenants                        # 100 tenants × 1,000 users
//!     BENCH_TENANTS=20 BENCH_USERS=500 cargo bench --bench tenants

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use support::process::{ADMIN, spawn, wait_ready};

struct Setup {
    http: reqwest::Client,
    fake: String,
    gwsync: String,
}

impl Setup {
    async fn admin(&self, method: reqwest::Method, path: &str, body: Vec<u8>) {
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
    }

    async fn stats(&self) -> Value {
        self.http.get(format!("{}/_fake/stats", self.fake)).send().await.expect("stats").json().await.expect("json")
    }

    /// A Workspace domain with `users` users, its key with delegation, and the tenant in gwsync
    /// with that key (no users yet). Returns the users' addresses.
    async fn tenant(&self, name: &str, users: usize) -> Vec<String> {
        let domain = format!("{name}.test");
        let emails: Vec<String> = (0..users).map(|i| format!("u{i}@{domain}")).collect();
        let post = |path: &str, body: Value| self.http.post(format!("{}{path}", self.fake)).json(&body).send();
        post("/_fake/domains", json!({"domain": domain, "users": emails})).await.expect("domain");
        let key: Value =
            post("/_fake/service-accounts", json!({"domain": domain})).await.expect("sa").json().await.expect("key");
        let scopes = [
            "https://www.googleapis.com/auth/calendar.readonly",
            "https://www.googleapis.com/auth/contacts.readonly",
            "https://www.googleapis.com/auth/directory.readonly",
        ];
        self.http
            .put(format!("{}/_fake/delegation/{}", self.fake, key["client_id"].as_str().expect("id")))
            .json(&json!({"scopes": scopes}))
            .send()
            .await
            .expect("delegation");
        self.admin(
            reqwest::Method::PUT,
            &format!("/api/v1/tenants/{name}"),
            json!({"domain": domain}).to_string().into_bytes(),
        )
        .await;
        self.admin(reqwest::Method::PUT, &format!("/api/v1/tenants/{name}/credentials"), key.to_string().into_bytes())
            .await;
        emails
    }

    /// Adds the users (tenants interleaved, 32 requests at a time) and waits until fake Google
    /// holds `live` channels in all; the time from the first request.
    async fn register(&self, users: Vec<(String, String)>, live: usize) -> Duration {
        let started = Instant::now();
        let body = json!({"profiles": [{"name": "Lunch", "triggers": ["lunch"]}]}).to_string();
        futures_util::stream::iter(users)
            .map(|(tenant, user)| {
                let body = body.clone().into_bytes();
                async move {
                    self.admin(reqwest::Method::PUT, &format!("/api/v1/tenants/{tenant}/users/{user}"), body).await
                }
            })
            .buffer_unordered(32)
            .for_each(|()| async {})
            .await;
        let mut last_report = Instant::now();
        loop {
            let stats = self.stats().await;
            if stats["live_channels"].as_u64().unwrap_or(0) as usize >= live {
                return started.elapsed();
            }
            if last_report.elapsed() > Duration::from_secs(30) {
                println!(
                    "  … {} of {live} channels after {:.0} s",
                    stats["live_channels"],
                    started.elapsed().as_secs_f64()
                );
                last_report = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::main]
async fn main() {
    let tenants: usize = std::env::var("BENCH_TENANTS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let users: usize = std::env::var("BENCH_USERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let fake = fake_google::FakeGoogle::start().await.expect("fake");
    let http = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(64).build().expect("client");
    http.put(format!("{}/_fake/quota", fake.base_url()))
        .json(&json!({"calendar_per_user_per_minute": 600, "project_per_minute": 10000}))
        .send()
        .await
        .expect("quota");
    let data = tempfile::tempdir().expect("tempdir");
    let logs = tempfile::tempdir().expect("tempdir");
    let log = logs.path().join("gwsync.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let base = format!("http://127.0.0.1:{port}");
    // Fake Google's token endpoint is on loopback.
    let mut child = spawn(port, data.path(), &log, &fake.base_url(), &[("GWSYNC_OUTBOUND_ALLOW", "127.0.0.0/8")]);
    wait_ready(&http, &base, &log).await;
    let setup = Setup { http, fake: fake.base_url(), gwsync: base };

    println!("tenants: one tenant of {users} users, registered from scratch at quota pace");
    let one = setup.tenant("solo", users).await;
    let _ = setup.http.delete(format!("{}/_fake/requests", setup.fake)).send().await;
    let alone = setup.register(one.into_iter().map(|u| ("solo".to_owned(), u)).collect(), users).await;
    let solo_stats = setup.stats().await;

    println!("tenants: {tenants} tenants of {users} users each, all at once");
    let mut all: Vec<Vec<String>> = Vec::new();
    for t in 0..tenants {
        all.push(setup.tenant(&format!("t{t}"), users).await);
    }
    // Interleaved: the first user of every tenant, then the second, …
    let mut order = Vec::with_capacity(tenants * users);
    for i in 0..users {
        for (t, emails) in all.iter().enumerate() {
            order.push((format!("t{t}"), emails[i].clone()));
        }
    }
    let _ = setup.http.delete(format!("{}/_fake/requests", setup.fake)).send().await;
    let together = setup.register(order, users + tenants * users).await;
    let stats = setup.stats().await;

    println!("  one tenant × {users}: {:.1} s", alone.as_secs_f64());
    println!("  {tenants} tenants × {users}: {:.1} s", together.as_secs_f64());
    println!("  ratio: {:.2}× (target: within 2×)", together.as_secs_f64() / alone.as_secs_f64());
    println!(
        "  peak requests in any minute, alone: project {} (limit 10,000), one user {} (limit 600)",
        solo_stats["peak_requests_per_minute"]["project"], solo_stats["peak_requests_per_minute"]["calendar_user"]
    );
    println!(
        "  peak requests in any minute, together: busiest project {} (limit 10,000), one user {} (limit 600)",
        stats["peak_requests_per_minute"]["project"], stats["peak_requests_per_minute"]["calendar_user"]
    );
    println!("  Google answers by status: {}", stats["google_responses_by_status"]);
    let _ = child.kill();
    let _ = child.wait();
    fake.stop().await;
}
