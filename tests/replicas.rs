//! Three `gwsync serve` replicas (real processes, so a SIGKILL is real) on one throwaway
//! PostgreSQL database, behind a small round-robin TCP proxy that is the public URL Google
//! posts to: notifications spread over the replicas sync; a burst over three replicas costs at
//! most two `events.list` calls, and so does one change notified on each replica in turn
//! within the settling window; the leader killed mid-run still delivers the next switch in
//! time, none twice with different content, in order; all replicas killed and restarted lose
//! nothing; a database from before the cluster migration migrates cleanly. What one replica
//! finds — a tenant's token endpoint failing, a phone system failing or its queue growing, a
//! long request's progress — reads the same on every replica, also on one restarted since.
//!
//! The processes run on the system clock (there is no clock to inject into another process):
//! the switches are a few seconds ahead, and the test polls with timeouts rather than sleeping.
mod common;
use common::*;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use common::receiver::Receiver;
use parking_lot::Mutex;
use serde_json::{Value, json};

const REPLICAS: usize = 3;

/// A round-robin TCP proxy: each connection goes to the next replica that accepts it.
struct Proxy {
    port: u16,
    backends: Arc<Mutex<Vec<u16>>>,
    /// Connections passed to each backend port.
    passed: Arc<Mutex<BTreeMap<u16, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start() -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let port = listener.local_addr().expect("addr").port();
        let backends: Arc<Mutex<Vec<u16>>> = Arc::default();
        let passed: Arc<Mutex<BTreeMap<u16, usize>>> = Arc::default();
        let next = Arc::new(AtomicUsize::new(0));
        let (b, p) = (backends.clone(), passed.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { continue };
                let (b, p, next) = (b.clone(), p.clone(), next.clone());
                tokio::spawn(async move {
                    let ports = b.lock().clone();
                    for _ in 0..ports.len() {
                        let port = ports[next.fetch_add(1, Ordering::SeqCst) % ports.len()];
                        // A killed replica refuses: the next one gets the connection.
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                            *p.lock().entry(port).or_default() += 1;
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        Proxy { port, backends, passed, task }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The three replicas, the database they share and the proxy in front of them.
struct Cluster {
    app: TestApp,
    database_url: String,
    proxy: Proxy,
    master_key: String,
    dirs: tempfile::TempDir,
    replicas: Vec<Option<ServeProcess>>,
    ports: Vec<u16>,
    env: Vec<(String, String)>,
    /// A client that opens a connection per request, so the proxy spreads requests.
    http: reqwest::Client,
}

impl Cluster {
    async fn start(extra: &[(&str, &str)]) -> Cluster {
        let mut app = TestApp::start().await;
        app.stop_gwsync().await.expect("the in-process gwsync stops");
        let database_url = pg::fresh_database().await;
        let proxy = Proxy::start().await;
        let mut env: Vec<(String, String)> = vec![
            ("GWSYNC_DATABASE_URL".into(), database_url.clone()),
            ("GWSYNC_PUBLIC_URL".into(), proxy.url()),
            ("GWSYNC_CLUSTER__CLAIM_LEASE".into(), "4s".into()),
            ("GWSYNC_CLUSTER__LEADER_RETRY".into(), "500ms".into()),
            ("GWSYNC_SYNC__BACKSTOP_INTERVAL".into(), "7d".into()),
            ("RUST_LOG".into(), "info,gwsync::sync=debug".into()),
        ];
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let http = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(0).build().expect("client");
        let mut c = Cluster {
            app,
            database_url,
            proxy,
            master_key: random_master_key(),
            dirs: tempfile::tempdir().expect("tempdir"),
            replicas: Vec::new(),
            ports: (0..REPLICAS).map(|_| free_port()).collect(),
            env,
            http,
        };
        for i in 0..REPLICAS {
            let r = c.spawn(i).await;
            c.replicas.push(Some(r));
        }
        *c.proxy.backends.lock() = c.ports.clone();
        c
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.dirs.path().join(format!("replica{i}"))
    }

    async fn spawn(&self, i: usize) -> ServeProcess {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        ServeProcess::spawn(&self.app, &self.data_dir(i), self.ports[i], &self.master_key, &env).await
    }

    async fn restart(&mut self, i: usize) {
        let r = self.spawn(i).await;
        self.replicas[i] = Some(r);
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut r) = self.replicas[i].take() {
            r.kill();
        }
    }

    fn replica(&self, i: usize) -> &ServeProcess {
        self.replicas[i].as_ref().expect("a running replica")
    }

    fn logs(&self) -> String {
        self.replicas
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().map(|r| format!("--- replica {i}\n{}", r.log_text())))
            .collect()
    }

    /// An admin-API call through the proxy (whichever replica gets it).
    async fn api(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let mut req = self
            .http
            .request(method.parse().expect("method"), format!("{}{path}", self.proxy.url()))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        reply(req.send().await.expect("api call through the proxy")).await
    }

    async fn readyz(&self, i: usize) -> Value {
        let r = self.app.http.get(format!("{}/readyz", self.replica(i).base())).send().await.expect("readyz");
        r.json().await.unwrap_or(Value::Null)
    }

    /// The replica that leads now (waits for exactly one).
    async fn leader(&self) -> usize {
        eventually("exactly one leader", async || {
            let mut leaders = Vec::new();
            for i in 0..REPLICAS {
                if self.replicas[i].is_some() {
                    let ready = self.readyz(i).await;
                    if ready["roles"].as_array().is_some_and(|r| r.iter().any(|x| x == "leader")) {
                        leaders.push(i);
                    }
                }
            }
            if leaders.len() == 1 { Ok(leaders[0]) } else { Err(format!("leaders: {leaders:?}")) }
        })
        .await
    }

    /// Tenant acme (optionally with a phone system) and its key, through the proxy.
    async fn setup_tenant(&self, phone: Option<(&str, &str)>) {
        let mut tenant = json!({"domain": DOMAIN, "directory_admin": IT});
        if let Some((url, secret)) = phone {
            tenant["phone_system"] = json!({"url": url, "secret": secret});
        }
        let r = self.api("PUT", &format!("/api/v1/tenants/{TENANT}"), Some(tenant)).await;
        assert_eq!(r.status, 201, "{r:?}");
        let r = self.api("PUT", &format!("/api/v1/tenants/{TENANT}/credentials"), Some(self.app.key.clone())).await;
        assert_eq!(r.status, 200, "{r:?}");
    }

    async fn add_user(&self, user: &str) {
        let body = json!({"profiles": [{"name": "Lunch", "triggers": ["lunch"]}]});
        let r = self.api("PUT", &format!("/api/v1/tenants/{TENANT}/users/{user}"), Some(body)).await;
        assert_eq!(r.status, 201, "{r:?}");
    }

    /// Live channels at the fake by calendar: (id, token, resource id).
    async fn channels(&self, users: &[&str]) -> BTreeMap<String, (String, String, String)> {
        self.app.live_channels(users).await
    }

    /// Waits until no replica has a sync of `user` queued or running, for a quiet spell.
    async fn quiet(&self, user: &str) {
        let mut idle = 0;
        eventually("every replica idle", async || {
            for r in self.replicas.iter().flatten() {
                let s = r.api(&self.app, "GET", &format!("/api/v1/tenants/{TENANT}/users/{user}"), None).await;
                if !s.body["sync"]["pending"].is_null() || s.body["sync"]["last_sync"].is_null() {
                    idle = 0;
                    return Err(format!("{}", s.body));
                }
            }
            idle += 1;
            if idle >= 10 { Ok(()) } else { Err("idle, settling".into()) }
        })
        .await;
    }

    /// A notification for a channel, through the proxy; its status.
    async fn notify(&self, channel: &(String, String, String), n: usize) -> u16 {
        let (id, token, resource) = channel;
        let sent = self
            .http
            .post(format!("{}/webhooks/google/calendar", self.proxy.url()))
            .header("X-Goog-Channel-ID", id)
            .header("X-Goog-Channel-Token", token)
            .header("X-Goog-Resource-ID", resource)
            .header("X-Goog-Resource-State", "exists")
            .header("X-Goog-Message-Number", (1_000 + n).to_string())
            .header("Content-Length", "0")
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        sent.map(|r| r.status().as_u16()).unwrap_or(0)
    }

    /// A notification straight to replica `i` (not through the proxy).
    async fn notify_replica(&self, i: usize, channel: &(String, String, String)) -> u16 {
        let (id, token, resource) = channel;
        let sent = self
            .http
            .post(format!("{}/webhooks/google/calendar", self.replica(i).base()))
            .header("X-Goog-Channel-ID", id)
            .header("X-Goog-Channel-Token", token)
            .header("X-Goog-Resource-ID", resource)
            .header("X-Goog-Resource-State", "exists")
            .header("X-Goog-Message-Number", "999")
            .header("Content-Length", "0")
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        sent.map(|r| r.status().as_u16()).unwrap_or(0)
    }

    /// Waits until the stored events of `user` (read through the proxy) include `summary`.
    async fn stored(&self, user: &str, summary: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let r = self.api("GET", &format!("/api/v1/tenants/{TENANT}/users/{user}/events"), None).await;
            if r.body["events"].as_array().into_iter().flatten().any(|e| e["summary"] == summary) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {summary} stored for {user}: {}\n{}",
                r.body,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn insert_event(app: &TestApp, user: &str, summary: &str, start: DateTime<Utc>, end: DateTime<Utc>) {
    let writer = writer_token(app, user).await;
    let rfc = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    let event = json!({"summary": summary, "start": {"dateTime": rfc(start)}, "end": {"dateTime": rfc(end)}});
    let r = google(app, "POST", "events", &writer, Some(event)).await;
    assert_eq!(r.status, 200, "{r:?}");
}

async fn drop_google_notifications(app: &TestApp) {
    let r = app.fake_control("PUT", "/_fake/delivery", json!({"drop": 1.0})).await;
    assert_eq!(r.status, 200, "{r:?}");
}

fn far_future(hour: u32) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = chrono::TimeZone::with_ymd_and_hms(&Utc, 2030, 3, 4, hour, 0, 0).single().expect("a time");
    (start, start + chrono::Duration::hours(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn notifications_spread_over_replicas_sync_and_a_burst_costs_at_most_two_lists() {
    // The settling window is long enough for the whole burst to land in it.
    let cluster = Cluster::start(&[("GWSYNC_SYNC__RERUN_DELAY", "3s")]).await;
    let leader = cluster.leader().await;
    for i in 0..REPLICAS {
        let ready = cluster.readyz(i).await;
        assert_eq!(ready["status"], "ready", "{ready}");
        assert_eq!(ready["store"], "postgres", "{ready}");
        assert_eq!(ready["database"], "reachable", "{ready}");
        let roles = ready["roles"].as_array().cloned().unwrap_or_default();
        assert!(roles.contains(&json!("sync")) && roles.contains(&json!("http")), "{ready}");
        assert_eq!(roles.contains(&json!("leader")), i == leader, "{ready}");
    }
    cluster.setup_tenant(None).await;
    cluster.add_user(ALICE).await;
    cluster.add_user(BOB).await;
    let channels = cluster.channels(&[ALICE, BOB]).await;
    cluster.quiet(ALICE).await;
    cluster.quiet(BOB).await;
    drop_google_notifications(&cluster.app).await;

    // One change and one notification at a time: each lands on the next replica and syncs.
    let before: BTreeMap<u16, usize> = cluster.proxy.passed.lock().clone();
    for n in 0..6 {
        let summary = format!("Spread {n}");
        let (start, end) = far_future(8 + n as u32);
        insert_event(&cluster.app, BOB, &summary, start, end).await;
        assert_eq!(cluster.notify(&channels[BOB], n).await, 200);
        cluster.stored(BOB, &summary).await;
    }
    let after: BTreeMap<u16, usize> = cluster.proxy.passed.lock().clone();
    for port in &cluster.ports {
        let got = after.get(port).copied().unwrap_or(0) - before.get(port).copied().unwrap_or(0);
        assert!(got > 0, "every replica answered some of the requests: {before:?} → {after:?}");
    }
    cluster.quiet(BOB).await;

    // A burst of 100 notifications for one change, over the three replicas.
    let since = last_seq(&cluster.app).await;
    let (start, end) = far_future(16);
    insert_event(&cluster.app, ALICE, "Burst", start, end).await;
    let sent = futures_util::future::join_all((0..100).map(|n| cluster.notify(&channels[ALICE], 100 + n))).await;
    assert!(sent.iter().all(|s| *s == 200), "every notification acknowledged: {sent:?}");
    cluster.stored(ALICE, "Burst").await;
    cluster.quiet(ALICE).await;
    let lists: Vec<Value> = requests(&cluster.app, Some("calendar.events.list"), since)
        .await
        .into_iter()
        .filter(|r| r["user"] == ALICE)
        .collect();
    assert!(
        (1..=2).contains(&lists.len()),
        "a burst over three replicas costs at most two events.list calls, not {}: {lists:#?}\n{}",
        lists.len(),
        cluster.logs()
    );
    cluster.app.fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_change_notified_on_each_replica_in_turn_within_the_settling_window_costs_at_most_two_lists() {
    // Each replica gets its notification only once the one before has synced (or found the
    // calendar held): the settling window keeps this to two syncs only if it holds across
    // replicas, not just within each.
    const WINDOW: Duration = Duration::from_secs(6);
    let cluster = Cluster::start(&[("GWSYNC_SYNC__RERUN_DELAY", "6s")]).await;
    cluster.setup_tenant(None).await;
    cluster.add_user(ALICE).await;
    let channels = cluster.channels(&[ALICE]).await;
    cluster.quiet(ALICE).await;
    drop_google_notifications(&cluster.app).await;
    let path = format!("/api/v1/tenants/{TENANT}/users/{ALICE}");
    // Every replica's window of the first sync is over.
    eventually("the first sync's settling window over", async || {
        let s = cluster.api("GET", &path, None).await;
        let last = s.body["sync"]["last_sync"].as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok());
        match last {
            Some(t) if Utc::now() - t.with_timezone(&Utc) > chrono::Duration::from_std(WINDOW).expect("window") => {
                Ok(())
            }
            _ => Err(format!("{}", s.body["sync"])),
        }
    })
    .await;

    let since = last_seq(&cluster.app).await;
    let (start, end) = far_future(10);
    insert_event(&cluster.app, ALICE, "In turn", start, end).await;
    let first = tokio::time::Instant::now();
    for i in 0..REPLICAS {
        assert_eq!(cluster.notify_replica(i, &channels[ALICE]).await, 200);
        eventually("the replica done with its notification (synced, or waiting)", async || {
            let s = cluster.replica(i).api(&cluster.app, "GET", &path, None).await;
            match s.body["sync"]["pending"].as_str() {
                None | Some("waiting") => Ok(()),
                Some(other) => Err(other.to_owned()),
            }
        })
        .await;
    }
    assert!(first.elapsed() < WINDOW, "the notifications landed within the settling window (make it longer)");
    cluster.stored(ALICE, "In turn").await;
    cluster.quiet(ALICE).await;
    let lists = requests(&cluster.app, Some("calendar.events.list"), since)
        .await
        .into_iter()
        .filter(|r| r["user"] == ALICE)
        .count();
    assert!(
        (1..=2).contains(&lists),
        "one change notified on each replica in turn costs at most two events.list calls, not {lists}\n{}",
        cluster.logs()
    );
    cluster.app.fake.stop().await;
}

/// A rolling upgrade from an older build: while a replica of schema 3 is alive (it reads marks
/// without making the next one ahead in a busy spell), every replica marks each notification
/// anew instead of resting on unread marks, and `/readyz` says so; once its heartbeat has aged
/// out, they coalesce again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn while_an_older_build_is_alive_the_replicas_stop_coalescing_and_say_so_on_readyz() {
    use sqlx::Connection as _;
    let c = Cluster::start(&[]).await;
    let all = async |coalescing: bool, live: u64| {
        eventually("every replica's readyz", async || {
            for i in 0..REPLICAS {
                let r = c.readyz(i).await;
                if r["coalescing"] != coalescing || r["live_replicas"] != live {
                    return Err(format!("replica {i}: {r}"));
                }
            }
            Ok(())
        })
        .await
    };
    all(true, 3).await;
    let mut db = sqlx::PgConnection::connect(&c.database_url).await.expect("connect");
    sqlx::query("INSERT INTO cluster_members (id, last_seen, schema_version) VALUES ('older', now(), 3)")
        .execute(&mut db)
        .await
        .expect("an older replica's heartbeat");
    all(false, 4).await;
    // It stopped long enough ago (a claim lease beyond the live window).
    sqlx::query("UPDATE cluster_members SET last_seen = now() - interval '1 hour' WHERE id = 'older'")
        .execute(&mut db)
        .await
        .expect("age it out");
    all(true, 3).await;
    c.app.fake.stop().await;
}

/// A database from before the cluster tables were a migration (each replica created
/// `sync_claims` and `cluster_members` at start): migration 2 applies over them and keeps their
/// rows; the schema version then counts migrations, so a build without migration 2 is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_before_the_cluster_migration_migrates_cleanly() {
    use gwsync::store::StoreError;
    use gwsync::store::pg_store::PgStore;
    use sqlx::Connection as _;

    let url = pg::fresh_database().await;
    let open = async || PgStore::connect(&secrecy::SecretString::from(url.clone()), 2, Duration::from_secs(10)).await;
    drop(open().await.expect("a new database migrates"));
    let mut db = sqlx::PgConnection::connect(&url).await.expect("connect");
    // What the previous build left: migration 1 applied, schema 1, and the tables its cluster
    // module made, in use.
    sqlx::raw_sql(
        "DELETE FROM _sqlx_migrations WHERE version = 2;
         UPDATE gwsync_meta SET value = 1 WHERE key = 'schema_version';
         DROP TABLE sync_claims; DROP TABLE cluster_members;
         CREATE TABLE IF NOT EXISTS sync_claims (
             tenant TEXT NOT NULL,
             user_email TEXT NOT NULL,
             holder TEXT NOT NULL,
             until TIMESTAMPTZ NOT NULL,
             PRIMARY KEY (tenant, user_email)
         );
         CREATE TABLE IF NOT EXISTS cluster_members (
             id TEXT PRIMARY KEY,
             last_seen TIMESTAMPTZ NOT NULL
         );
         INSERT INTO sync_claims VALUES ('acme', 'alice@acme.test', 'old-replica', now() + interval '1 minute');
         INSERT INTO cluster_members VALUES ('old-replica', now());",
    )
    .execute(&mut db)
    .await
    .expect("the previous build's layout");

    drop(open().await.expect("the previous build's database migrates"));
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(&mut db)
        .await
        .expect("migrations");
    assert_eq!(versions, [1, 2, 3, 4, 5, 6]);
    let schema: i64 = sqlx::query_scalar("SELECT value FROM gwsync_meta WHERE key = 'schema_version'")
        .fetch_one(&mut db)
        .await
        .expect("schema version");
    assert_eq!(schema, 6, "the schema version is the latest migration");
    let kept: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM sync_claims WHERE holder = 'old-replica'),
                (SELECT count(*) FROM cluster_members WHERE id = 'old-replica')",
    )
    .fetch_one(&mut db)
    .await
    .expect("rows");
    assert_eq!(kept, (1, 1), "the claims and heartbeats in use are kept");

    // A build with fewer migrations than the database refuses it before touching it.
    sqlx::query("UPDATE gwsync_meta SET value = 7 WHERE key = 'schema_version'").execute(&mut db).await.expect("7");
    match open().await {
        Err(e @ StoreError::NewerSchema { found: 7, reads: 6, .. }) => assert_eq!(
            e.to_string(),
            "the database was written by a newer gwsync (schema 7, this build reads up to 6); upgrade gwsync"
        ),
        other => panic!("a newer schema must be refused: {:?}", other.map(|_| ())),
    }
    db.close().await.ok();
}

const SECRET_KEY: [u8; 32] = *b"gwsync-replicas-test-key-32bytes";

fn secret() -> String {
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(SECRET_KEY))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leader_killed_before_a_switch_the_next_leader_delivers_it_in_time() {
    let mut cluster = Cluster::start(&[]).await;
    let rx = Receiver::start(&secret(), gwsync::clock::Clock::system()).await;
    cluster.setup_tenant(Some((&rx.url, &secret()))).await;
    cluster.add_user(ALICE).await;
    cluster.channels(&[ALICE]).await;
    cluster.quiet(ALICE).await;
    let leader = cluster.leader().await;

    // Lunch a few seconds from now, synced through whichever replica gets the notification.
    let start = (Utc::now() + chrono::Duration::seconds(8)).with_nanosecond_zero();
    let end = start + chrono::Duration::seconds(4);
    insert_event(&cluster.app, ALICE, "lunch", start, end).await;
    cluster.stored(ALICE, "lunch").await;
    cluster.kill(leader);
    assert!(Utc::now() < start, "the leader was killed before the switch (set the lunch later)");
    let next = cluster.leader().await;
    assert_ne!(next, leader);

    let delivered = eventually("the lunch switch and its end delivered", async || {
        let got = rx.delivered_to(ALICE);
        let lunch = got.iter().position(|a| a.json["profile"] == "Lunch");
        let ended = lunch.is_some_and(|i| got[i..].iter().any(|a| a.json["profile"].is_null()));
        if ended { Ok(got) } else { Err(format!("{:?}", got.iter().map(|a| a.json.clone()).collect::<Vec<_>>())) }
    })
    .await;
    let lunch = delivered.iter().find(|a| a.json["profile"] == "Lunch").expect("the lunch switch");
    let late = lunch.real_at - start;
    assert!(
        late < chrono::Duration::seconds(10),
        "the switch came {late} after its time, over the failover target of 10 s\n{}",
        cluster.logs()
    );
    // In order, and never one sequence with two contents.
    let mut by_seq: BTreeMap<u64, String> = BTreeMap::new();
    let mut last = 0;
    for a in rx.attempts().iter().filter(|a| a.user() == ALICE && a.ok()) {
        assert!(a.seq() >= last, "out of order: {} after {last}", a.seq());
        last = a.seq();
        let body = format!("{}|{}", a.json["profile"], a.json["until"]);
        if let Some(seen) = by_seq.insert(a.seq(), body.clone()) {
            assert_eq!(seen, body, "sequence {} sent twice with different content", a.seq());
        }
    }
    cluster.app.fake.stop().await;
}

/// One part of the tenant's `status` (`google_token`, `phone_system`) as replica `i` shows it.
async fn status_on(cluster: &Cluster, i: usize, part: &str) -> Value {
    let r = cluster.replica(i).api(&cluster.app, "GET", &format!("/api/v1/tenants/{TENANT}"), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body["status"][part].clone()
}

async fn google_token_on(cluster: &Cluster, i: usize) -> Value {
    status_on(cluster, i, "google_token").await
}

/// Sends `payload` on `channel` as a replica would (`NOTIFY`), from a connection of the test's.
async fn notify_as_a_replica(cluster: &Cluster, channel: &str, payload: String) {
    use sqlx::Connection as _;
    let mut db = sqlx::PgConnection::connect(&cluster.database_url).await.expect("connect");
    sqlx::query("SELECT pg_notify($1, $2)").bind(channel).bind(payload).execute(&mut db).await.expect("notify");
    db.close().await.ok();
}

/// For `never_within`: the first replica whose status `part` is not `ok`.
async fn one_not_ok(cluster: &Cluster, part: &str) -> Option<String> {
    for i in 0..REPLICAS {
        let p = status_on(cluster, i, part).await;
        if p["state"] != "ok" {
            return Some(format!("replica {i}: {p}"));
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_endpoint_one_replica_finds_failing_shows_failing_on_every_replica_and_ok_again_on_every_one() {
    let mut cluster = Cluster::start(&[]).await;
    cluster.setup_tenant(None).await;
    // Google's token endpoint fails Alice's next token request (503).
    arm_fault(&cluster.app, json!({"method": "oauth2.token", "status": 503, "user": ALICE})).await;
    // Alice saved on replica 0: only replica 0 syncs her calendar, and so only it meets the
    // failure; the tenant waits (one probe a retry time) there.
    let body = json!({"profiles": [{"name": "Lunch", "triggers": ["lunch"]}]});
    let path = format!("/api/v1/tenants/{TENANT}/users/{ALICE}");
    let r = cluster.replica(0).api(&cluster.app, "PUT", &path, Some(body)).await;
    assert_eq!(r.status, 201, "{r:?}");
    let failing = eventually("replica 0 to find the token endpoint failing", async || {
        let g = google_token_on(&cluster, 0).await;
        if g["state"] == "failing" { Ok(g) } else { Err(g.to_string()) }
    })
    .await;
    assert_eq!(failing["error"]["code"], "google_unavailable", "{failing}");
    // The admin sees the same whichever replica the balancer picks, though the other two asked
    // for no token of the tenant.
    for i in 1..REPLICAS {
        eventually(&format!("replica {i} to show the tenant's token endpoint failing"), async || {
            let g = google_token_on(&cluster, i).await;
            let same = g["error"]["code"] == failing["error"]["code"]
                && g["error"]["retry_at"] == failing["error"]["retry_at"];
            if g["state"] == "failing" && same { Ok(()) } else { Err(g.to_string()) }
        })
        .await;
    }

    // At the retry time replica 0's probe gets a token, and every replica shows ok again.
    for i in 0..REPLICAS {
        eventually(&format!("replica {i} to show the token endpoint answering again"), async || {
            let g = google_token_on(&cluster, i).await;
            if g == json!({"state": "ok"}) { Ok(()) } else { Err(g.to_string()) }
        })
        .await;
    }

    // News that comes late, about a key the tenant no longer has (a new one was uploaded while
    // it was on its way), holds nobody; the same news about the current key does.
    let news = |key: String| {
        let failure = json!({"code": "google_unavailable", "message": "late news", "hint": "-",
            "since": Utc::now(), "retry_at": Utc::now() + chrono::Duration::hours(1), "failures": 1});
        json!({"kind": "tenant_token", "tenant": TENANT, "failure": failure.to_string(), "key": key}).to_string()
    };
    notify_as_a_replica(&cluster, "gwsync_tenant_token", news("old@acme.iam.gserviceaccount.com/0123".into())).await;
    never_within("news about an older key to hold the tenant", Duration::from_secs(1), async || {
        one_not_ok(&cluster, "google_token").await
    })
    .await;
    let current = format!(
        "{}/{}",
        cluster.app.key["client_email"].as_str().expect("email"),
        cluster.app.key["private_key_id"].as_str().expect("key id")
    );
    notify_as_a_replica(&cluster, "gwsync_tenant_token", news(current)).await;
    for i in 0..REPLICAS {
        eventually(&format!("replica {i} to take news about the current key"), async || {
            let g = google_token_on(&cluster, i).await;
            if g["state"] == "failing" && g["error"]["message"] == "late news" { Ok(()) } else { Err(g.to_string()) }
        })
        .await;
    }

    // A replica started after the news (here: restarted) asks the others, and shows it too.
    cluster.kill(2);
    cluster.restart(2).await;
    eventually("the restarted replica to hear of the failing token endpoint", async || {
        let g = google_token_on(&cluster, 2).await;
        if g["state"] == "failing" && g["error"]["message"] == "late news" { Ok(()) } else { Err(g.to_string()) }
    })
    .await;
    cluster.app.fake.stop().await;
}

async fn phone_system_on(cluster: &Cluster, i: usize) -> Value {
    status_on(cluster, i, "phone_system").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_phone_system_the_leader_finds_failing_shows_so_on_every_replica_and_ok_again_on_every_one() {
    let mut cluster = Cluster::start(&[]).await;
    let rx = Receiver::start(&secret(), gwsync::clock::Clock::system()).await;
    // The phone system refuses Alice's switches (500) until told otherwise.
    rx.fail_next(ALICE, u32::MAX);
    cluster.setup_tenant(Some((&rx.url, &secret()))).await;
    cluster.add_user(ALICE).await;
    cluster.channels(&[ALICE]).await;
    // A lunch under way: Alice's profile switches to Lunch, a message for the phone system.
    let now = Utc::now();
    insert_event(&cluster.app, ALICE, "lunch", now - chrono::Duration::minutes(5), now + chrono::Duration::hours(1))
        .await;
    let leader = cluster.leader().await;
    let failing = eventually("the leader to find the phone system failing", async || {
        let p = phone_system_on(&cluster, leader).await;
        if p["state"] != "ok" && !p["last_error"].is_null() { Ok(p) } else { Err(p.to_string()) }
    })
    .await;
    // Only the leader delivers; the admin sees the same on whichever replica the balancer picks.
    for i in (0..REPLICAS).filter(|i| *i != leader) {
        eventually(&format!("replica {i} to show the phone system failing"), async || {
            let p = phone_system_on(&cluster, i).await;
            let same = p["last_error"] == failing["last_error"] && p["failing_since"] == failing["failing_since"];
            if p["state"] != "ok" && same { Ok(()) } else { Err(p.to_string()) }
        })
        .await;
    }
    // A follower started after the telling (here: restarted) asks for news, and shows it too.
    let late = (leader + 1) % REPLICAS;
    cluster.kill(late);
    cluster.restart(late).await;
    eventually("the restarted follower to hear how the phone system is doing", async || {
        let p = phone_system_on(&cluster, late).await;
        if p["state"] != "ok" && p["last_error"] == failing["last_error"] { Ok(()) } else { Err(p.to_string()) }
    })
    .await;

    // It answers again: the leader's next attempt goes through, and every replica shows ok.
    rx.fail_next(ALICE, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for i in 0..REPLICAS {
        loop {
            let p = phone_system_on(&cluster, i).await;
            if p["state"] == "ok" && p["last_error"].is_null() && p["failing_since"].is_null() {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "replica {i} still shows {p}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(rx.delivered_to(ALICE).iter().any(|a| a.ok()), "the phone system got Alice's switch");

    // The console's list of the last deliveries reads the same on every replica: the refused
    // attempt and the one that went through, newest first.
    let path = format!("/api/v1/tenants/{TENANT}/phone-system/deliveries");
    let lists = eventually("every replica to list the delivery that went through", async || {
        let mut lists = Vec::new();
        for i in 0..REPLICAS {
            let r = cluster.replica(i).api(&cluster.app, "GET", &path, None).await;
            assert_eq!(r.status, 200, "{r:?}");
            lists.push(r.body["deliveries"].clone());
        }
        let delivered = lists.iter().all(|l| l[0]["outcome"] == "delivered");
        if delivered && lists.iter().all(|l| *l == lists[0]) { Ok(lists) } else { Err(format!("{lists:#?}")) }
    })
    .await;
    let list = lists[0].as_array().expect("deliveries");
    assert!(list.iter().all(|d| d["user"] == ALICE && d["profile"] == "Lunch"), "{list:#?}");
    assert!(list[1..].iter().any(|d| d["outcome"] != "delivered"), "the refused attempt is listed: {list:#?}");
    let delivered = eventually("the leader to show when the phone system last took a message", async || {
        let p = phone_system_on(&cluster, leader).await;
        if p["last_delivered"].is_null() { Err(p.to_string()) } else { Ok(p) }
    })
    .await;

    // Tellings may arrive out of order (a tenant's deliveries run side by side): a follower
    // keeps the newest it heard. One older than the leader's last changes nothing…
    let telling = |seq: i64| {
        // Retrying since long before `delivery_alert_after` (15 minutes): a follower works
        // out for itself that this is failing.
        let health = json!({"state": "retrying", "failing_since": Utc::now() - chrono::Duration::hours(1),
            "last_error": "late telling", "last_delivered": null, "paused_until": null, "queued": 1});
        let telling = json!({"seq": seq, "health": health}).to_string();
        json!({"kind": "phone_system", "tenant": TENANT, "health": telling}).to_string()
    };
    notify_as_a_replica(&cluster, "gwsync_phone_system", telling(1)).await;
    never_within("an older telling to replace a newer one", Duration::from_secs(1), async || {
        one_not_ok(&cluster, "phone_system").await
    })
    .await;
    // …a newer one is taken by every follower (and shows failing there, as its run of failures
    // began over `delivery_alert_after` ago), while the leader goes by its own deliveries.
    let newer = (Utc::now() + chrono::Duration::hours(1)).timestamp_micros();
    notify_as_a_replica(&cluster, "gwsync_phone_system", telling(newer)).await;
    for i in (0..REPLICAS).filter(|i| *i != leader) {
        eventually(&format!("replica {i} to take the newer telling"), async || {
            let p = phone_system_on(&cluster, i).await;
            if p["state"] == "failing" && p["last_error"] == "late telling" { Ok(()) } else { Err(p.to_string()) }
        })
        .await;
    }
    assert_eq!(phone_system_on(&cluster, leader).await["state"], "ok");

    // The company deleted on a follower and created again under its id: no replica shows
    // anything of the old one's phone system.
    let follower = (leader + 1) % REPLICAS;
    let r = cluster.replica(follower).api(&cluster.app, "DELETE", &format!("/api/v1/tenants/{TENANT}"), None).await;
    assert_eq!(r.status, 204, "{r:?}");
    let tenant = json!({"domain": DOMAIN, "phone_system": {"url": rx.url, "secret": secret()}});
    let r =
        cluster.replica(follower).api(&cluster.app, "PUT", &format!("/api/v1/tenants/{TENANT}"), Some(tenant)).await;
    assert_eq!(r.status, 201, "{r:?}");
    for i in 0..REPLICAS {
        eventually(&format!("replica {i} to show nothing of the deleted company's phone system"), async || {
            let p = phone_system_on(&cluster, i).await;
            let r = cluster.replica(i).api(&cluster.app, "GET", &path, None).await;
            let none = r.body["deliveries"].as_array().is_some_and(Vec::is_empty);
            if p["last_delivered"].is_null() && p["last_error"].is_null() && p["state"] == "ok" && none {
                Ok(())
            } else {
                Err(format!("{p} {} (before: {delivered})", r.body))
            }
        })
        .await;
    }
    cluster.app.fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_phone_system_queue_that_grows_soon_after_a_telling_reaches_every_replica_by_a_follow_up() {
    // A phone system that takes connections and never answers, within a timeout longer than
    // the test: no attempt ends, so only the queue's own changes are told.
    let cluster = Cluster::start(&[("GWSYNC_PRESENCE__DELIVERY_TIMEOUT", "120s")]).await;
    let hang = common::receiver::HangingServer::start().await;
    cluster.setup_tenant(Some((&hang.url("/phone"), &secret()))).await;
    cluster.add_user(ALICE).await;
    cluster.add_user(BOB).await;
    cluster.channels(&[ALICE, BOB]).await;
    let leader = cluster.leader().await;
    let followers: Vec<usize> = (0..REPLICAS).filter(|i| *i != leader).collect();
    let lunch = |now: DateTime<Utc>| (now - chrono::Duration::minutes(5), now + chrono::Duration::hours(1));
    let queued_on = async |i: usize, n: u64| {
        let p = phone_system_on(&cluster, i).await;
        if p["queued"] == n { Ok(()) } else { Err(p.to_string()) }
    };
    let (start, end) = lunch(Utc::now());
    insert_event(&cluster.app, ALICE, "lunch", start, end).await;
    for i in &followers {
        eventually(&format!("replica {i} to hear of Alice's switch waiting"), async || queued_on(*i, 1).await).await;
    }
    // Bob's switch queues behind it moments later: only a counter changed, which the leader
    // tells at most every 5 s — here by the follow-up it schedules, as nothing else happens.
    let (start, end) = lunch(Utc::now());
    insert_event(&cluster.app, BOB, "lunch", start, end).await;
    eventually("the leader to count two switches waiting", async || queued_on(leader, 2).await).await;
    for i in &followers {
        eventually(&format!("replica {i} to hear of Bob's switch waiting"), async || queued_on(*i, 2).await).await;
    }
    eventually("both switches to be on their way to the phone system", async || {
        if hang.accepted() == 2 { Ok(()) } else { Err(format!("{} connections", hang.accepted())) }
    })
    .await;
    assert_eq!(hang.open(), 2, "neither attempt ended");
    hang.stop();
    cluster.app.fake.stop().await;
}

/// `GET` of a job's status URL straight from replica `i`, with `token`.
async fn job_on(cluster: &Cluster, i: usize, status: &str, token: &str) -> Reply {
    let r = cluster
        .app
        .http
        .get(format!("{}{status}", cluster.replica(i).base()))
        .bearer_auth(token)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("job status");
    reply(r).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_request_is_watched_on_any_replica_and_one_whose_replica_dies_shows_interrupted() {
    let mut cluster = Cluster::start(&[]).await;
    cluster.setup_tenant(None).await;
    let r = cluster.api("PUT", "/api/v1/tenants/globex", Some(json!({"domain": "globex.test"}))).await;
    assert_eq!(r.status, 201, "{r:?}");
    let r =
        cluster.api("POST", "/api/v1/tenants/globex/tokens", Some(json!({"name": "pbx", "role": "integration"}))).await;
    assert_eq!(r.status, 201, "{r:?}");
    let globex = r.body["token"].as_str().expect("globex's token").to_owned();
    let sync = format!("/api/v1/tenants/{TENANT}/contacts/sync");

    // A phonebook sync asked of replica 0: its status URL answers on every replica at once (a
    // balancer rarely sends the next request to the same one), and each shows the report.
    let r = cluster.replica(0).api(&cluster.app, "POST", &sync, None).await;
    assert_eq!(r.status, 202, "{r:?}");
    let status = r.body["status"].as_str().expect("status").to_owned();
    for i in 0..REPLICAS {
        let r = job_on(&cluster, i, &status, ADMIN_TOKEN).await;
        assert_eq!(r.status, 200, "replica {i} does not know the job: {r:?}");
        assert_eq!(r.body["kind"], "contacts.sync", "{r:?}");
        assert_eq!(r.body["tenant"], TENANT, "{r:?}");
    }
    let mut reports = Vec::new();
    for i in 0..REPLICAS {
        let done = eventually(&format!("replica {i} to show the job done"), async || {
            let r = job_on(&cluster, i, &status, ADMIN_TOKEN).await;
            if r.body["state"] == "done" { Ok(r.body) } else { Err(r.body.to_string()) }
        })
        .await;
        assert!(done["result"]["books"].as_array().is_some_and(|b| !b.is_empty()), "{done}");
        reports.push(done);
    }
    assert!(reports.iter().all(|r| *r == reports[0]), "the replicas show different reports: {reports:#?}");
    // Another tenant's token sees it on no replica, as if the id were wrong.
    for i in 0..REPLICAS {
        let r = job_on(&cluster, i, &status, &globex).await;
        assert_eq!(r.status, 404, "replica {i} shows acme's job to globex: {r:?}");
    }

    // A sync whose listing hangs, asked of replica 1, shows running elsewhere; replica 1 killed,
    // the others show it failed once its heartbeat has aged out, instead of running for ever.
    arm_fault(&cluster.app, json!({"method": "people.people.listDirectoryPeople", "delay_ms": 60_000, "count": 10}))
        .await;
    let r = cluster.replica(1).api(&cluster.app, "POST", &sync, None).await;
    assert_eq!(r.status, 202, "{r:?}");
    let status = r.body["status"].as_str().expect("status").to_owned();
    // (Its listing waits a minute at the fake: the job runs that long.)
    let r = job_on(&cluster, 2, &status, ADMIN_TOKEN).await;
    assert_eq!(r.body["state"], "running", "{r:?}");
    cluster.kill(1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let failed = loop {
        let r = job_on(&cluster, 2, &status, ADMIN_TOKEN).await;
        if r.body["state"] != "running" {
            break r.body;
        }
        assert!(tokio::time::Instant::now() < deadline, "the killed replica's job still shows running: {r:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["result"]["code"], "job_interrupted", "{failed}");
    assert_eq!(job_on(&cluster, 0, &status, ADMIN_TOKEN).await.body, failed, "replicas 0 and 2 agree");

    // A replica with a fixed `cluster.replica_id` heartbeats under the same id after a restart:
    // the jobs its earlier run left unfinished read as interrupted once it is back, at once.
    cluster.env.push(("GWSYNC_CLUSTER__REPLICA_ID".into(), "replica-one".into()));
    cluster.restart(1).await;
    let r = cluster.replica(1).api(&cluster.app, "POST", &sync, None).await;
    assert_eq!(r.status, 202, "{r:?}");
    let status = r.body["status"].as_str().expect("status").to_owned();
    assert_eq!(job_on(&cluster, 0, &status, ADMIN_TOKEN).await.body["state"], "running");
    cluster.kill(1);
    cluster.restart(1).await;
    let failed = eventually("the earlier run's job to read as interrupted", async || {
        let r = job_on(&cluster, 0, &status, ADMIN_TOKEN).await;
        if r.body["state"] == "failed" { Ok(r.body) } else { Err(r.body.to_string()) }
    })
    .await;
    assert_eq!(failed["result"]["code"], "job_interrupted", "{failed}");
    cluster.app.fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn all_replicas_killed_with_syncs_unfinished_and_restarted_lose_nothing() {
    let mut cluster = Cluster::start(&[]).await;
    let users: Vec<String> = (0..6).map(|i| format!("r{i}@{DOMAIN}")).collect();
    for u in &users {
        let r = cluster.app.fake_control("POST", &format!("/_fake/domains/{DOMAIN}/users"), json!({"email": u})).await;
        assert_eq!(r.status, 201, "{r:?}");
    }
    cluster.setup_tenant(None).await;
    for u in &users {
        cluster.add_user(u).await;
    }
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    let channels = cluster.channels(&names).await;
    for u in &users {
        cluster.quiet(u).await;
    }
    drop_google_notifications(&cluster.app).await;
    for u in &users {
        let (start, end) = far_future(9);
        insert_event(&cluster.app, u, &format!("Kept {u}"), start, end).await;
    }
    // Every sync that starts now hangs in events.list: only the durable marks carry the
    // notifications over the kill.
    arm_fault(&cluster.app, json!({"method": "calendar.events.list", "delay_ms": 60_000, "count": 100_000})).await;
    for (n, u) in users.iter().enumerate() {
        assert_eq!(cluster.notify(&channels[u], n).await, 200, "acknowledged once the mark is durable");
    }
    for i in 0..REPLICAS {
        cluster.kill(i);
    }
    let r = cluster.app.fake_control("DELETE", "/_fake/faults", Value::Null).await;
    assert!(r.status < 300, "{r:?}");
    for i in 0..REPLICAS {
        cluster.restart(i).await;
    }
    for u in &users {
        cluster.stored(u, &format!("Kept {u}")).await;
    }
    let _ = &cluster.database_url;
    cluster.app.fake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_between_pages_leaves_the_calendar_to_another_after_its_lease() {
    let mut cluster = Cluster::start(&[("GWSYNC_SYNC__PAGE_SIZE", "2")]).await;
    cluster.setup_tenant(None).await;
    cluster.add_user(ALICE).await;
    let channels = cluster.channels(&[ALICE]).await;
    cluster.quiet(ALICE).await;
    drop_google_notifications(&cluster.app).await;
    for n in 0..5 {
        let (start, end) = far_future(8 + n);
        insert_event(&cluster.app, ALICE, &format!("Paged {n}"), start, end).await;
    }
    // The first page answers; the second hangs, so the replica dies between pages.
    let since = last_seq(&cluster.app).await;
    arm_fault(&cluster.app, json!({"method": "calendar.events.list", "skip": 1, "delay_ms": 60_000, "count": 1})).await;
    let victim = 1;
    assert_eq!(cluster.notify_replica(victim, &channels[ALICE]).await, 200);
    eventually("the second page requested (and hanging)", async || {
        let lists = requests(&cluster.app, Some("calendar.events.list"), since).await;
        // The fault is used up when the request arrives; the log has it only once answered.
        let left = faults_left(&cluster.app).await;
        if lists.len() == 1 && left == 0 { Ok(()) } else { Err(format!("{} lists, {left} faults left", lists.len())) }
    })
    .await;
    cluster.kill(victim);
    // Its claim runs out (4 s) and another replica finds the mark nobody holds.
    for n in 0..5 {
        cluster.stored(ALICE, &format!("Paged {n}")).await;
    }
    cluster.app.fake.stop().await;
}

trait WholeSeconds {
    fn with_nanosecond_zero(self) -> Self;
}

impl WholeSeconds for DateTime<Utc> {
    fn with_nanosecond_zero(self) -> Self {
        chrono::Timelike::with_nanosecond(&self, 0).unwrap_or(self)
    }
}
