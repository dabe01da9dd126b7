//! Replicas on PostgreSQL (DESIGN §9–10, issue 14), in one run, each replica its own
//! `gwsync serve` process (release build) on a PostgreSQL cluster the bench starts itself
//! (fsync on, as deployed; tests/common/pg.rs), fake Google and the phone system in this
//! process:
//!
//! a. Webhook acknowledgements of ONE replica and of THREE replicas against a bare actix-web
//!    handler that only reads the headers, under the same wrk load (`LOAD`: 3 threads, 30
//!    connections; Google-shaped notifications over `ACK_USERS` live channels,
//!    benches/webhook.lua). For three replicas wrk's threads go one to each replica
//!    (benches/replicas.lua sets each thread's address), as a balancer spreads connections,
//!    with no proxy process taking the two cores' CPU or adding its hop to the latency. Rounds
//!    alternate bare / one / three; throughput over all rounds, the medians of the rounds'
//!    percentiles. Targets: ≥ 50 % of the bare handler's throughput, p99 ≤ 3×. After each round
//!    the bench waits for the target's syncs to stop (`settle`: a storm's busy spells read on
//!    for a while after it), so no round shares the cores with the tail of the one before.
//! b. Failover: a lunch a few seconds ahead, the leader SIGKILLed just before it starts; the
//!    time from the kill to the switch arriving at the phone system, over `GWSYNC_BENCH_KILLS`
//!    kills (the killed replica restarted each time). Target < 10 s.
//! c. `GWSYNC_BENCH_USERS` users on three replicas, registered from scratch (a push channel and
//!    a full sync each) as `GWSYNC_BENCH_TENANTS` tenants, each its own Google project, so the
//!    run is bound by CPU rather than one project's quota (100,000 users in one project take
//!    ≥ 20 minutes at 10,000 calls a minute); fake Google enforces Google's quotas. Then RSS per
//!    replica, the database's size, and restart-to-ready of all three (spawn → `/readyz` 200).
//!
//!     apt-get install wrk        # once (Debian/Ubuntu); PostgreSQL's server binaries as for the tests
//!     cargo bench --bench replicas                               # ≈ 15 minutes
//!     GWSYNC_BENCH_USERS=5000 GWSYNC_BENCH_SECONDS=3 GWSYNC_BENCH_ROUNDS=2 cargo bench --bench replicas
//!
//! `GWSYNC_BENCH_PG_STATEMENTS=1` loads `pg_stat_statements` and prints, for each target's last
//! round of part a, the statements PostgreSQL ran most often (calls a second, mean time).
//!
//! By default a target's rounds start cold: its storm stopped during the other targets' rounds,
//! so each round also measures a storm's onset (every calendar's first syncs, before its busy
//! spell settles). `GWSYNC_BENCH_WARM_EACH=1` gives each round `WARM_UP` of load, unreported,
//! right before it, to measure the storm's steady state alone.
//!
//! `GWSYNC_BENCH_SECONDS` (10) and `GWSYNC_BENCH_ROUNDS` (4) size part a, `GWSYNC_BENCH_KILLS`
//! (5) part b, `GWSYNC_BENCH_USERS` (100,000) and `GWSYNC_BENCH_TENANTS` (20) part c; a part
//! set to 0 kills or 0 users is left out.

#[path = "../tests/common/pg.rs"]
mod pg;
mod support;

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use fake_google::FakeGoogle;
use futures_util::StreamExt;
use parking_lot::Mutex;
use reqwest::Method;
use serde_json::{Value, json};
use support::process::CpuSplit;
use support::replicas::Replicas;
use support::wrk::{self, Load, Round};
use support::{percentile, writer_token};

const ACK_USERS: usize = 200;
/// The acknowledgement path alone: each calendar synced once (at registration), its rerun held
/// back for the run, as `benches/webhook.rs`'s `acks`.
const HELD_BACK: &[(&str, &str)] = &[("GWSYNC_SYNC__RERUN_DELAY", "1h")];
const LOAD: Load = Load { threads: 3, connections: 30 };
/// Before the measured rounds each target gets this much load, unreported.
const WARM_UP: Duration = Duration::from_secs(2);
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// How far ahead of the kill a failover round's lunch is written (it must be synced first).
const LUNCH_AHEAD: Duration = Duration::from_secs(4);
/// The leader is killed this long before the lunch starts, so it cannot have sent it.
const KILL_BEFORE: Duration = Duration::from_millis(300);

fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// What the phone system received: (user, profile, when).
type Received = Arc<Mutex<Vec<(String, Value, Instant)>>>;

/// The phone system: answers 204 and notes what arrived when (the signatures are the delivery
/// tests' business).
fn phone(received: Received) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = HttpServer::new(move || {
        let received = received.clone();
        App::new().route(
            "/phone",
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
    .disable_signals()
    .listen(listener)
    .expect("listen")
    .run();
    tokio::spawn(server);
    format!("http://{addr}/phone")
}

async fn bare(req: HttpRequest) -> HttpResponse {
    // Reads what gwsync reads, then answers.
    let h = req.headers();
    let seen = ["x-goog-channel-id", "x-goog-channel-token", "x-goog-resource-id", "x-goog-resource-state"]
        .iter()
        .filter(|n| h.get(**n).is_some())
        .count();
    if seen == 4 { HttpResponse::Ok().finish() } else { HttpResponse::BadRequest().finish() }
}

/// A Workspace domain `name.test` of `users` users at the fake, with a service account (its
/// own project) and delegation, the writer scope included for the bench's own writes.
async fn domain(http: &reqwest::Client, fake: &str, name: &str, users: usize) -> (Vec<String>, Value) {
    let domain = format!("{name}.test");
    let emails: Vec<String> = (0..users).map(|i| format!("u{i}@{domain}")).collect();
    let post = |path: &str, body: Value| http.post(format!("{fake}{path}")).json(&body).send();
    post("/_fake/domains", json!({"domain": domain, "users": emails})).await.expect("domain");
    let key: Value =
        post("/_fake/service-accounts", json!({"domain": domain})).await.expect("sa").json().await.expect("key");
    let scopes = [
        "https://www.googleapis.com/auth/calendar.readonly",
        "https://www.googleapis.com/auth/calendar.events",
        "https://www.googleapis.com/auth/contacts.readonly",
        "https://www.googleapis.com/auth/directory.readonly",
    ];
    http.put(format!("{fake}/_fake/delegation/{}", key["client_id"].as_str().expect("id")))
        .json(&json!({"scopes": scopes}))
        .send()
        .await
        .expect("delegation");
    (emails, key)
}

/// The tenant in gwsync (through the replicas' proxy) with its key and, optionally, a phone system.
async fn tenant(replicas: &Replicas, name: &str, key: &Value, phone: Option<&str>) {
    let mut spec = json!({"domain": format!("{name}.test")});
    if let Some(url) = phone {
        spec["phone_system"] = json!({"url": url, "secret": SECRET});
    }
    replicas.admin(Method::PUT, &format!("/api/v1/tenants/{name}"), Some(&spec)).await;
    replicas.admin(Method::PUT, &format!("/api/v1/tenants/{name}/credentials"), Some(key)).await;
}

/// Adds users (tenant, email), `concurrency` requests at a time, spread over the replicas.
async fn add_users(replicas: &Replicas, users: Vec<(String, String)>, concurrency: usize) {
    let body = json!({"profiles": [{"name": "Lunch", "triggers": ["lunch"]}]});
    let body = &body;
    futures_util::stream::iter(users)
        .map(|(tenant, user)| async move {
            replicas.admin(Method::PUT, &format!("/api/v1/tenants/{tenant}/users/{user}"), Some(body)).await;
        })
        .buffer_unordered(concurrency)
        .for_each(|()| async {})
        .await;
}

async fn fake_stats(http: &reqwest::Client, fake: &str) -> Value {
    http.get(format!("{fake}/_fake/stats")).send().await.expect("stats").json().await.expect("json")
}

/// Waits until the fake holds `n` live channels, reporting progress every 30 s.
async fn wait_live(http: &reqwest::Client, fake: &str, n: usize, started: Instant) {
    let mut reported = Instant::now();
    loop {
        let live = fake_stats(http, fake).await["live_channels"].as_u64().unwrap_or(0) as usize;
        if live >= n {
            return;
        }
        if reported.elapsed() > Duration::from_secs(30) {
            println!("  … {live} of {n} channels after {:.0} s", started.elapsed().as_secs_f64());
            reported = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The live channels at the fake, written one a line (id, token, resource id) for wrk.
async fn channels_file(http: &reqwest::Client, fake: &str, path: &std::path::Path) {
    let v: Value = http
        .get(format!("{fake}/_fake/channels?state=live"))
        .send()
        .await
        .expect("channels")
        .json()
        .await
        .expect("json");
    let mut f = std::fs::File::create(path).expect("channels file");
    for c in v["channels"].as_array().into_iter().flatten() {
        let field = |k: &str| c[k].as_str().unwrap_or("").to_owned();
        writeln!(f, "{}\t{}\t{}", field("id"), field("token"), field("resourceId")).expect("write");
    }
}

/// One load target: where wrk sends, and what it measured.
struct Target {
    name: &'static str,
    url: String,
    hosts: Vec<String>,
    channels: std::path::PathBuf,
    rounds: Vec<Round>,
    /// The replicas' processes (none for the bare handler) and their fake Google.
    pids: Vec<u32>,
    fake: Option<String>,
}

impl Target {
    async fn run(&mut self, duration: Duration) -> Round {
        let r = wrk::run(&self.url, &self.hosts, &self.channels, LOAD, duration).await;
        self.rounds.push(r);
        r
    }
}

/// `n` replicas on a new database with one tenant of `ACK_USERS` users (channels live), and the
/// wrk target for them.
async fn ack_cluster(
    database: &pg::PgCluster,
    n: usize,
    name: &'static str,
    env: &[(&str, &str)],
    phone: &str,
    dir: &std::path::Path,
) -> (Replicas, FakeGoogle, Target, Value) {
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    let fake = FakeGoogle::start().await.expect("fake");
    let (emails, key) = domain(&http, &fake.base_url(), "bench", ACK_USERS).await;
    let url = pg::database_on(database).await;
    let replicas = Replicas::start(n, &url, &fake.base_url(), env).await;
    tenant(&replicas, "bench", &key, Some(phone)).await;
    add_users(&replicas, emails.into_iter().map(|u| ("bench".to_owned(), u)).collect(), 16).await;
    wait_live(&http, &fake.base_url(), ACK_USERS, Instant::now()).await;
    let channels = dir.join(format!("{name}.tsv"));
    channels_file(&http, &fake.base_url(), &channels).await;
    let hosts: Vec<String> = replicas.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let target = Target {
        name,
        url: format!("{}/webhooks/google/calendar", replicas.base(0)),
        hosts,
        channels,
        rounds: vec![],
        pids: replicas.pids(),
        fake: Some(fake.base_url()),
    };
    (replicas, fake, target, key)
}

async fn part_a(targets: &mut [Target], seconds: u64, rounds: usize, warm_each: bool, statements: Option<&str>) {
    println!(
        "a. webhook acknowledgement under wrk ({} threads, {} connections, {seconds} s a round, {rounds} rounds each, alternating, {}), notifications over {ACK_USERS} live channels; PostgreSQL with fsync on",
        LOAD.threads,
        LOAD.connections,
        if warm_each { "each round right after 2 s of unreported load" } else { "each round cold" }
    );
    for t in targets.iter_mut() {
        t.run(WARM_UP).await;
        t.rounds.clear();
        // As after every round: the next target's first round does not share the cores with
        // this one's storm, and (with no rounds) part b does not start among its claims.
        settle(t.fake.as_deref()).await;
    }
    for round in 1..=rounds {
        for t in targets.iter_mut() {
            if warm_each {
                wrk::run(&t.url, &t.hosts, &t.channels, LOAD, WARM_UP).await;
            }
            let profiled = statements.filter(|_| round == rounds && !t.hosts.is_empty());
            if let Some(url) = profiled {
                pg_statements(url, None).await;
            }
            let lists_before = events_lists(t.fake.as_deref()).await;
            let cpu_before = CpuSplit::now(&t.pids);
            let r = t.run(Duration::from_secs(seconds)).await;
            let cpu = CpuSplit::now(&t.pids).since(&cpu_before);
            let lists = events_lists(t.fake.as_deref()).await.saturating_sub(lists_before);
            wrk::show(&format!("{} {round}", t.name), &r);
            println!("           {cpu}; events.list {:.0}/s", lists as f64 / seconds as f64);
            if let Some(url) = profiled {
                pg_statements(url, Some(Duration::from_secs(seconds))).await;
            }
            if !t.hosts.is_empty() && r.errors + r.non2xx > 0 {
                // Google retries a notification it got no 2xx for; reported, not fatal.
                println!("           ! {} connection errors or timeouts, {} non-2xx answers", r.errors, r.non2xx);
            }
            settle(t.fake.as_deref()).await;
        }
    }
    let base = targets[0].rounds.clone();
    for t in &targets[1..] {
        let r = wrk::compare(&t.rounds, &base);
        println!(
            "  {}/bare: throughput {:.0} % ({:.0} vs {:.0} req/s), p50 {:.2}×, p99 {:.2}× ({} vs {}) (targets ≥ 50 %, p99 ≤ 3×)",
            t.name,
            r.throughput * 100.0,
            wrk::median(&t.rounds, Round::rps),
            wrk::median(&base, Round::rps),
            r.p50,
            r.p99,
            support::ms(Duration::from_secs_f64(wrk::median(&t.rounds, |r| r.p99.as_secs_f64()))),
            support::ms(Duration::from_secs_f64(wrk::median(&base, |r| r.p99.as_secs_f64()))),
        );
    }
    println!("  (throughput over all rounds; percentiles the medians of the rounds')");
}

/// Waits until the target's storm is over (its busy spells read on for a while after the last
/// notification: `sync::queue`'s horizon), so the next round measures its own target alone:
/// no `events.list` call for a second, or 30 s at most.
async fn settle(fake: Option<&str>) {
    let started = Instant::now();
    let mut last = events_lists(fake).await;
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(1) && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = events_lists(fake).await;
        if now != last {
            last = now;
            quiet_since = Instant::now();
        }
    }
}

/// How many `events.list` calls the fake has answered so far (0 without a fake).
async fn events_lists(fake: Option<&str>) -> u64 {
    let Some(fake) = fake else { return 0 };
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    fake_stats(&http, fake).await["requests_by_method"]["calendar.events.list"].as_u64().unwrap_or(0)
}

/// `pg_stat_statements`: reset (no `over`), or the most frequent statements over the last `over`.
async fn pg_statements(url: &str, over: Option<Duration>) {
    let pool = sqlx::PgPool::connect(url).await.expect("connect for pg_stat_statements");
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").execute(&pool).await.expect("extension");
    let Some(over) = over else {
        sqlx::query("SELECT pg_stat_statements_reset()").execute(&pool).await.expect("reset");
        return;
    };
    let rows: Vec<(i64, f64, String)> = sqlx::query_as(
        "SELECT calls, mean_exec_time, regexp_replace(query, '\\s+', ' ', 'g') FROM pg_stat_statements \
         WHERE query NOT LIKE '%pg_stat_statements%' ORDER BY calls DESC LIMIT 16",
    )
    .fetch_all(&pool)
    .await
    .expect("pg_stat_statements");
    let (xacts,): (i64,) =
        sqlx::query_as("SELECT sum(xact_commit)::bigint FROM pg_stat_database").fetch_one(&pool).await.expect("xacts");
    println!("           PostgreSQL, most frequent statements (calls/s, mean ms; {xacts} commits since start):");
    for (calls, mean, query) in rows {
        let query: String = query.chars().take(110).collect();
        println!("           {:>8.0}  {mean:>6.3}  {query}", calls as f64 / over.as_secs_f64());
    }
    pool.close().await;
}

/// Waits until gwsync (any replica, through the proxy) stores an event called `summary` for `user`.
async fn wait_stored(replicas: &Replicas, tenant: &str, user: &str, summary: &str) {
    let started = Instant::now();
    loop {
        let v = replicas.admin(Method::GET, &format!("/api/v1/tenants/{tenant}/users/{user}/events"), None).await;
        if v["events"].as_array().into_iter().flatten().any(|e| e["summary"] == summary) {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{summary} not stored within 30 s\n{}", replicas.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn part_b(replicas: &mut Replicas, fake: &FakeGoogle, key: &Value, received: &Received, kills: usize) {
    println!(
        "b. failover: the leader SIGKILLed {} ms before a lunch starts, {kills} times; kill → switch at the phone system",
        KILL_BEFORE.as_millis()
    );
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    let mut times = Vec::new();
    for k in 0..kills {
        let user = format!("u{k}@bench.test");
        let token = writer_token(&http, &fake.base_url(), key, &user).await;
        let summary = format!("lunch {k}");
        let start = chrono::Utc::now() + chrono::Duration::from_std(LUNCH_AHEAD).expect("ahead");
        let start = chrono::Timelike::with_nanosecond(&start, 0).unwrap_or(start) + chrono::Duration::seconds(1);
        let end = start + chrono::Duration::hours(1);
        let event = json!({"summary": summary, "start": {"dateTime": start.to_rfc3339()}, "end": {"dateTime": end.to_rfc3339()}});
        let r = http
            .post(format!("{}/calendar/v3/calendars/primary/events", fake.base_url()))
            .bearer_auth(&token)
            .json(&event)
            .send()
            .await
            .expect("insert");
        assert!(r.status().is_success(), "insert: {}", r.status());
        // Fake Google notifies the public URL (the proxy): whichever replica gets it syncs.
        let inserted = Instant::now();
        wait_stored(replicas, "bench", &user, &summary).await;
        let stored = inserted.elapsed();
        let leader = replicas.leader().await;
        let until_start = (start - chrono::Utc::now()).to_std().unwrap_or_default();
        let due = Instant::now() + until_start;
        let kill_at = due.checked_sub(KILL_BEFORE).unwrap_or(due);
        assert!(
            Instant::now() < kill_at,
            "the lunch was synced too late to kill the leader before it (LUNCH_AHEAD): stored after {stored:?}, the leader known after {:?}\n{}",
            inserted.elapsed(),
            replicas.logs()
        );
        tokio::time::sleep_until(kill_at.into()).await;
        let killed = Instant::now();
        replicas.kill(leader);
        let delivered = loop {
            let got =
                received.lock().iter().find(|(u, p, at)| *u == user && p == "Lunch" && *at >= killed).map(|x| x.2);
            if let Some(at) = got {
                break at;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(60),
                "lunch {k} not delivered within 60 s\n{}",
                replicas.logs()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let took = delivered - killed;
        let late = delivered.saturating_duration_since(due);
        let next = replicas.leader().await;
        println!(
            "  kill {}: replica {leader} killed, replica {next} took over; the switch came {:.2} s after the kill ({:.2} s after its start)",
            k + 1,
            took.as_secs_f64(),
            late.as_secs_f64()
        );
        times.push(took);
        // Back to three for the next kill (it joins as a follower).
        replicas.spawn(leader);
        replicas.ready(leader).await;
    }
    times.sort();
    println!(
        "  failover (kill → switch delivered) over {} kills: p50 {:.2} s, max {:.2} s (target < 10 s)",
        times.len(),
        percentile(&times, 50.0).as_secs_f64(),
        times.last().copied().unwrap_or_default().as_secs_f64()
    );
}

async fn part_c(database: &pg::PgCluster, users: usize, tenants: usize) {
    let per = users.div_ceil(tenants);
    let users = per * tenants;
    println!(
        "c. {users} users on three replicas ({tenants} tenants × {per}, each tenant its own Google project; fake Google enforcing 600/min/user and 10,000/min/project)"
    );
    let http = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(64).build().expect("client");
    let fake = FakeGoogle::start().await.expect("fake");
    let base = fake.base_url();
    let mut keys = Vec::new();
    for t in 0..tenants {
        keys.push(domain(&http, &base, &format!("s{t}"), per).await.1);
    }
    http.put(format!("{base}/_fake/quota"))
        .json(&json!({"calendar_per_user_per_minute": 600, "project_per_minute": 10000}))
        .send()
        .await
        .expect("quota");
    let url = pg::database_on(database).await;
    let mut replicas = Replicas::start(3, &url, &base, &[]).await;
    for (t, key) in keys.iter().enumerate() {
        tenant(&replicas, &format!("s{t}"), key, None).await;
    }
    // Interleaved: the first user of every tenant, then the second, …
    let order: Vec<(String, String)> =
        (0..per).flat_map(|i| (0..tenants).map(move |t| (format!("s{t}"), format!("u{i}@s{t}.test")))).collect();
    let started = Instant::now();
    add_users(&replicas, order, 32).await;
    let added = started.elapsed();
    wait_live(&http, &base, users, started).await;
    let registered = started.elapsed();
    // The last full syncs finish; then the figures.
    let mut settled = 0;
    while settled < 3 {
        let stats = fake_stats(&http, &base).await;
        let calls = stats["requests_by_method"]["calendar.events.list"].as_u64().unwrap_or(0) as usize;
        settled = if calls >= users { settled + 1 } else { 0 };
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let stats = fake_stats(&http, &base).await;
    let rss: Vec<f64> = (0..3).map(|i| replicas.rss_mib(i)).collect();
    let size: i64 = {
        use sqlx::Connection as _;
        let mut c = sqlx::PgConnection::connect(&url).await.expect("connect");
        sqlx::query_scalar("SELECT pg_database_size(current_database())").fetch_one(&mut c).await.expect("size")
    };
    replicas.stop_all();
    let restart = Instant::now();
    for i in 0..3 {
        replicas.spawn(i);
    }
    let ready = replicas.ready_all().await;
    let all_ready = restart.elapsed();
    println!("  users added through the admin API in {:.1} s", added.as_secs_f64());
    println!("  all {users} registered (channel + full sync) in {:.1} s", registered.as_secs_f64());
    println!("  Google calls: {}", stats["requests_by_method"]);
    println!("  Google answers by status: {}", stats["google_responses_by_status"]);
    println!(
        "  peak requests in any minute: busiest project {} (limit 10,000), one user {} (limit 600)",
        stats["peak_requests_per_minute"]["project"], stats["peak_requests_per_minute"]["calendar_user"]
    );
    println!(
        "  RSS per replica after registering: {} (target < 500 MB each)",
        rss.iter().map(|r| format!("{r:.0} MiB")).collect::<Vec<_>>().join(", ")
    );
    println!("  database size: {:.0} MiB (pg_database_size)", size as f64 / (1024.0 * 1024.0));
    println!(
        "  restart to ready (spawn → /readyz 200, all three at once): {} ; all three {:.2} s (target < 10 s)",
        ready.iter().map(|d| format!("{:.2} s", d.as_secs_f64())).collect::<Vec<_>>().join(", "),
        all_ready.as_secs_f64()
    );
    drop(replicas);
    fake.stop().await;
}

#[tokio::main]
async fn main() {
    wrk::require_wrk();
    let seconds: u64 = setting("GWSYNC_BENCH_SECONDS", 10);
    let rounds: usize = setting("GWSYNC_BENCH_ROUNDS", 4);
    let kills: usize = setting("GWSYNC_BENCH_KILLS", 5);
    let users: usize = setting("GWSYNC_BENCH_USERS", 100_000);
    let tenants: usize = setting::<usize>("GWSYNC_BENCH_TENANTS", 20).max(1);
    gwsync::logging::init_with_default(gwsync::config::LogFormat::Plain, "warn");
    let began = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let profile = setting("GWSYNC_BENCH_PG_STATEMENTS", 0) == 1;
    let database = if profile { pg::PgCluster::start_durable_profiled() } else { pg::PgCluster::start_durable() };

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let bare_url = format!("http://{}/webhooks/google/calendar", listener.local_addr().expect("addr"));
    let server = HttpServer::new(|| App::new().route("/webhooks/google/calendar", web::post().to(bare)))
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
    let handle = server.handle();
    tokio::spawn(server);

    let received: Received = Arc::default();
    let phone = phone(received.clone());
    let path = dir.path();
    let (one_acks, fake1a, one_acks_target, _) = ack_cluster(&database, 1, "one-acks", HELD_BACK, &phone, path).await;
    let (three_acks, fake3a, three_acks_target, _) =
        ack_cluster(&database, 3, "three-acks", HELD_BACK, &phone, path).await;
    let (one, fake1, one_target, _) = ack_cluster(&database, 1, "one", &[], &phone, path).await;
    let (mut three, fake3, three_target, key3) = ack_cluster(&database, 3, "three", &[], &phone, path).await;
    let bare_channels = dir.path().join("bare.tsv");
    std::fs::copy(&one_target.channels, &bare_channels).expect("copy");
    let mut targets = [
        Target {
            name: "bare",
            url: bare_url,
            hosts: vec![],
            channels: bare_channels,
            rounds: vec![],
            pids: vec![],
            fake: None,
        },
        one_acks_target,
        three_acks_target,
        one_target,
        three_target,
    ];
    let statements = if profile { Some(database.url("postgres")) } else { None };
    let warm_each = setting("GWSYNC_BENCH_WARM_EACH", 0) == 1;
    part_a(&mut targets, seconds, rounds, warm_each, statements.as_deref()).await;
    for (mut cluster, fake) in [(one_acks, fake1a), (three_acks, fake3a), (one, fake1)] {
        cluster.stop_all();
        drop(cluster);
        fake.stop().await;
    }
    handle.stop(false).await;

    if kills > 0 {
        part_b(&mut three, &fake3, &key3, &received, kills).await;
    }
    three.stop_all();
    drop(three);
    fake3.stop().await;

    if users > 0 {
        part_c(&database, users, tenants).await;
    }
    println!("whole run: {:.1} min", began.elapsed().as_secs_f64() / 60.0);
    drop(database);
}
