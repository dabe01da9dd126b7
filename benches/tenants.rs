//! Tenants side by side: each tenant's service account lives in its own Google Cloud project
//! with its own quota, so registering many tenants at once should take about as long as one.
//! Two runs in one command, each with a fresh fake Google and a fresh gwsync:
//!
//! 1. **Google's quotas** (600 requests/min/user, 10,000/min/project, at fake Google and in
//!    gwsync): one tenant of `BENCH_USERS` users registered from scratch (a push channel and a
//!    full sync each), then `BENCH_TENANTS` tenants of as many users each, all at once. On two
//!    cores this run is bound by CPU (token signing and verification, the calls themselves), not
//!    by any project's quota: one tenant alone stays far under 10,000/min.
//! 2. **Quota-bound**: each project's quota lowered to `BENCH_QUOTA_PER_MINUTE` (200) at fake
//!    Google and in gwsync (`sync.project_requests_per_minute`), so that one tenant's wall time
//!    is set by its own quota; then one tenant of `BENCH_QUOTA_USERS` (60) users, then
//!    `BENCH_QUOTA_TENANTS` (100) tenants of as many, all at once. If tenants shared a budget, the
//!    hundred would take a hundred times as long; paced per project they take about as long as one.
//!
//! Reports per run both wall times, their ratio (target: within 2×), the peak requests per
//! minute fake Google saw for the busiest project and user, refused requests, the CPU time of
//! gwsync and of this process (fake Google) per user, and the load average (other work on the
//! machine). The quota-bound run also reports each tenant's own wall time (first call to last).
//! gwsync runs as its own process (release build); fake Google runs in this one.
//!
//!     cargo bench --bench tenants                        # 100 × 1,000, then 100 × 60 at 200/min
//!     BENCH_TENANTS=20 BENCH_USERS=500 BENCH_QUOTA_TENANTS=20 cargo bench --bench tenants

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use support::process::{ADMIN, spawn, wait_ready};

struct Setup {
    http: reqwest::Client,
    fake: String,
    gwsync: String,
    /// gwsync's process id, for its CPU time.
    pid: u32,
}

impl Setup {
    /// An idempotent admin call (a PUT); sent again if a kept-alive connection was closed
    /// under it (the server's keep-alive timeout racing the client's reuse).
    async fn admin(&self, method: reqwest::Method, path: &str, body: Vec<u8>) {
        let mut tries = 0;
        let r = loop {
            tries += 1;
            let sent = self
                .http
                .request(method.clone(), format!("{}{path}", self.gwsync))
                .bearer_auth(ADMIN)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(r) => break r,
                Err(e) if tries < 3 && e.is_request() => continue,
                Err(e) => panic!("admin call {path}: {e:?}"),
            }
        };
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

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// CPU time (user + system) of a process so far, in seconds ("self" for this one).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the file, 12 and 13 after the name; 100 ticks/s.
    (ticks(11) + ticks(12)) / 100.0
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// What one phase (one tenant alone, or all at once) measured.
struct Phase {
    wall: Duration,
    stats: Value,
    /// CPU seconds of gwsync and of this process (fake Google) during the phase.
    cpu_gwsync: f64,
    cpu_fake: f64,
    users: usize,
    load_before: String,
    load_after: String,
}

impl Phase {
    fn print(&self, what: &str) {
        let per_user = |s: f64| s * 1000.0 / self.users as f64;
        println!(
            "  {what}: {:.1} s; CPU per user: gwsync {:.2} ms + fake Google {:.2} ms = {:.2} ms; load average {} → {}",
            self.wall.as_secs_f64(),
            per_user(self.cpu_gwsync),
            per_user(self.cpu_fake),
            per_user(self.cpu_gwsync + self.cpu_fake),
            self.load_before,
            self.load_after,
        );
        println!(
            "    peak requests in any minute: busiest project {}, busiest user {}; Google answers by status: {}",
            self.stats["peak_requests_per_minute"]["project"],
            self.stats["peak_requests_per_minute"]["calendar_user"],
            self.stats["google_responses_by_status"]
        );
    }
}

impl Setup {
    /// Registers `users` (already interleaved) and waits for `live` channels in all, measuring.
    async fn phase(&self, users: Vec<(String, String)>, live: usize) -> Phase {
        let n = users.len();
        let _ = self.http.delete(format!("{}/_fake/requests", self.fake)).send().await;
        let (g0, f0, load_before) = (cpu_seconds(&self.pid.to_string()), cpu_seconds("self"), load_average());
        let wall = self.register(users, live).await;
        let (g1, f1) = (cpu_seconds(&self.pid.to_string()), cpu_seconds("self"));
        Phase {
            wall,
            stats: self.stats().await,
            cpu_gwsync: g1 - g0,
            cpu_fake: f1 - f0,
            users: n,
            load_before,
            load_after: load_average(),
        }
    }

    /// Each tenant's own wall time in the fake's request log: its first Calendar call to its last.
    async fn tenant_spans(&self) -> Vec<f64> {
        let log: Value = self
            .http
            .get(format!("{}/_fake/requests", self.fake))
            .send()
            .await
            .expect("requests")
            .json()
            .await
            .expect("json");
        let mut spans: BTreeMap<String, (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> =
            BTreeMap::new();
        for r in log["requests"].as_array().into_iter().flatten() {
            let (Some(method), Some(user), Some(at)) = (r["method"].as_str(), r["user"].as_str(), r["time"].as_str())
            else {
                continue;
            };
            if !method.starts_with("calendar.") {
                continue;
            }
            let Ok(at) = chrono::DateTime::parse_from_rfc3339(at) else { continue };
            let at = at.with_timezone(&chrono::Utc);
            let domain = user.rsplit('@').next().unwrap_or_default().to_owned();
            let span = spans.entry(domain).or_insert((at, at));
            span.0 = span.0.min(at);
            span.1 = span.1.max(at);
        }
        let mut out: Vec<f64> = spans.values().map(|(a, b)| (*b - *a).num_milliseconds() as f64 / 1000.0).collect();
        out.sort_by(f64::total_cmp);
        out
    }
}

/// One run: a fresh fake Google with `quota` per project (and 600/min/user), a fresh gwsync
/// pacing each project under the same quota; one tenant of `users`, then `tenants` of as many.
async fn run(label: &str, tenants: usize, users: usize, quota: u32) -> (Phase, Phase, Vec<f64>) {
    let fake = fake_google::FakeGoogle::start().await.expect("fake");
    let http = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(64).build().expect("client");
    http.put(format!("{}/_fake/quota", fake.base_url()))
        .json(&json!({"calendar_per_user_per_minute": 600, "project_per_minute": quota}))
        .send()
        .await
        .expect("quota");
    let data = tempfile::tempdir().expect("tempdir");
    let logs = tempfile::tempdir().expect("tempdir");
    let log = logs.path().join("gwsync.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let base = format!("http://127.0.0.1:{port}");
    let quota_env = quota.to_string();
    // Fake Google's token endpoint is on loopback.
    let mut child = spawn(
        port,
        data.path(),
        &log,
        &fake.base_url(),
        &[("GWSYNC_OUTBOUND_ALLOW", "127.0.0.0/8"), ("GWSYNC_SYNC__PROJECT_REQUESTS_PER_MINUTE", &quota_env)],
    );
    wait_ready(&http, &base, &log).await;
    let setup = Setup { http, fake: fake.base_url(), gwsync: base, pid: child.id() };

    println!(
        "tenants, {label}: one tenant of {users} users, registered from scratch at quota pace ({quota}/min/project)"
    );
    let one = setup.tenant("solo", users).await;
    let alone = setup.phase(one.into_iter().map(|u| ("solo".to_owned(), u)).collect(), users).await;
    let solo_span = setup.tenant_spans().await;

    println!("tenants, {label}: {tenants} tenants of {users} users each, all at once");
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
    let together = setup.phase(order, users + tenants * users).await;
    // The request log holds the last 200,000 requests: each tenant's span only when it holds all.
    let spans = if tenants * users * 2 < 190_000 { setup.tenant_spans().await } else { Vec::new() };

    println!("tenants, {label}: results");
    alone.print(&format!("one tenant × {users}"));
    together.print(&format!("{tenants} tenants × {users}"));
    println!("  ratio: {:.2}× (target: within 2×)", together.wall.as_secs_f64() / alone.wall.as_secs_f64());
    if !spans.is_empty() {
        let pick = |q: f64| spans[((spans.len() - 1) as f64 * q).round() as usize];
        println!(
            "  each tenant's own span (first Calendar call to last): alone {:.1} s; together p50 {:.1} s, max {:.1} s",
            solo_span.last().copied().unwrap_or(0.0),
            pick(0.5),
            pick(1.0)
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    fake.stop().await;
    (alone, together, spans)
}

#[tokio::main]
async fn main() {
    let tenants = env_or("BENCH_TENANTS", 100);
    let users = env_or("BENCH_USERS", 1000);
    let quota_tenants = env_or("BENCH_QUOTA_TENANTS", 100);
    let quota_users = env_or("BENCH_QUOTA_USERS", 60);
    let quota = env_or("BENCH_QUOTA_PER_MINUTE", 200) as u32;
    let started = Instant::now();
    let (a1, t1, _) = run("Google's quotas", tenants, users, 10_000).await;
    let (a2, t2, _) = run("quota-bound", quota_tenants, quota_users, quota).await;
    println!("tenants: summary ({:.0} s in all)", started.elapsed().as_secs_f64());
    println!(
        "  Google's quotas (10,000/min/project): one × {users} {:.1} s, {tenants} × {users} {:.1} s: {:.2}×",
        a1.wall.as_secs_f64(),
        t1.wall.as_secs_f64(),
        t1.wall.as_secs_f64() / a1.wall.as_secs_f64()
    );
    println!(
        "  quota-bound ({quota}/min/project): one × {quota_users} {:.1} s, {quota_tenants} × {quota_users} {:.1} s: {:.2}×; busiest project {}/min",
        a2.wall.as_secs_f64(),
        t2.wall.as_secs_f64(),
        t2.wall.as_secs_f64() / a2.wall.as_secs_f64(),
        t2.stats["peak_requests_per_minute"]["project"]
    );
}
