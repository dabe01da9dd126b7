//! Harness of gwsync's end-to-end tests: a fake Google with a Workspace domain, a service
//! account and delegation, and the real gwsync serving on a free loopback port with its own
//! data directory. Each test file uses part of it.
#![allow(dead_code)]

pub mod browser;
pub mod calendar;
pub mod pg;
pub mod process;
pub mod receiver;
// Not every test file uses these.
#[allow(unused_imports)]
pub use calendar::*;
#[allow(unused_imports)]
pub use process::*;

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use base64::Engine;
use fake_google::FakeGoogle;
use gwsync::clock::Clock;
use gwsync::config::Config;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const DOMAIN: &str = "acme.test";
pub const TENANT: &str = "acme";
pub const ALICE: &str = "alice@acme.test";
pub const BOB: &str = "bob@acme.test";
pub const IT: &str = "it@acme.test";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The scopes gwsync needs, as an admin grants them.
pub const GWSYNC_SCOPES: &[&str] = &[
    "https://www.googleapis.com/auth/calendar.readonly",
    "https://www.googleapis.com/auth/contacts.readonly",
    "https://www.googleapis.com/auth/directory.readonly",
];

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }
}

pub async fn reply(resp: reqwest::Response) -> Reply {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply { status, body, text, headers }
}

struct Running {
    base: String,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

pub struct TestApp {
    pub fake: FakeGoogle,
    pub http: reqwest::Client,
    /// The service-account key file the fake issued.
    pub key: Value,
    pub client_id: String,
    pub data_dir: tempfile::TempDir,
    pub master_key: String,
    /// gwsync's clock; `advance` moves it together with the fake's.
    pub clock: Clock,
    tweak: std::sync::Arc<dyn Fn(&mut Config) + Send + Sync>,
    running: Option<Running>,
}

impl TestApp {
    /// Fake Google with acme.test (alice, bob, it), a key and full delegation; gwsync serving.
    pub async fn start() -> TestApp {
        Self::start_with(|_| {}).await
    }

    /// Like `start`, with gwsync's configuration changed by `tweak` (kept for restarts).
    pub async fn start_with(tweak: impl Fn(&mut Config) + Send + Sync + 'static) -> TestApp {
        let fake = FakeGoogle::start().await.expect("fake starts");
        let http = reqwest::Client::builder().no_proxy().build().expect("client");
        let master_key = base64::engine::general_purpose::STANDARD.encode(rand_bytes());
        let mut app = TestApp {
            fake,
            http,
            key: Value::Null,
            client_id: String::new(),
            data_dir: tempfile::tempdir().expect("tempdir"),
            master_key,
            clock: Clock::system(),
            tweak: std::sync::Arc::new(tweak),
            running: None,
        };
        let r = app
            .fake_control(
                "POST",
                "/_fake/domains",
                json!({"domain": DOMAIN, "users": [ALICE, BOB, IT], "directory_sharing": true}),
            )
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        let r = app.fake_control("POST", "/_fake/service-accounts", json!({"domain": DOMAIN})).await;
        assert_eq!(r.status, 201, "{r:?}");
        app.key = r.body;
        app.client_id = app.key["client_id"].as_str().expect("client_id").to_owned();
        app.delegate(GWSYNC_SCOPES).await;
        app.launch().await;
        app
    }

    /// The configuration gwsync runs with: everything pointing at the fake.
    pub fn config(&self, listen: std::net::SocketAddr) -> Config {
        Config {
            listen,
            public_url: Some(format!("http://{listen}").parse().expect("url")),
            data_dir: self.data_dir.path().to_path_buf(),
            admin_token: Some(SecretString::from(ADMIN_TOKEN)),
            master_key: Some(SecretString::from(self.master_key.clone())),
            google_api_url: self.fake.base_url().parse().expect("url"),
            google_people_url: self.fake.base_url().parse().expect("url"),
            // fake-google (the key's token_uri) and the tests' phone systems listen on loopback.
            outbound_allow: "127.0.0.0/8".into(),
            ..Config::default()
        }
    }

    async fn launch(&mut self) {
        // A restart in this process may find the data directory still locked for a moment: the
        // last instance's HTTP workers drop their copies of the store on their own threads
        // (a new process, as in production, finds it free). Another try then; any other
        // failure to start is reported as it is.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match self.launch_once().await {
                Ok(()) => return,
                Err(e) if format!("{e:#}").contains("lock") && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => panic!("gwsync did not start: {e:#}"),
            }
        }
    }

    async fn launch_once(&mut self) -> anyhow::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut config = self.config(addr);
        (self.tweak)(&mut config);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(gwsync::serve_with_clock(
            config,
            listener,
            async move {
                let _ = rx.await;
            },
            self.clock.clone(),
        ));
        self.running = Some(Running { base: format!("http://{addr}"), shutdown: tx, task });
        // Wait until it answers (up to 10 s: a start while the rest of the suite loads both
        // cores once took over 2 s).
        for _ in 0..1000 {
            if self.http.get(format!("{}/healthz", self.base())).send().await.is_ok() {
                return Ok(());
            }
            if self.running.as_ref().is_some_and(|r| r.task.is_finished()) {
                let running = self.running.take().expect("running");
                return Err(match running.task.await {
                    Ok(Err(e)) => e,
                    Ok(Ok(())) => anyhow::anyhow!("it stopped at once"),
                    Err(e) => anyhow::anyhow!("its task failed: {e}"),
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        anyhow::bail!("it did not answer /healthz within 10 s")
    }

    /// Stops gwsync gracefully (the server's result is returned) without touching the fake.
    pub async fn stop_gwsync(&mut self) -> anyhow::Result<()> {
        let running = self.running.take().expect("running");
        let _ = running.shutdown.send(());
        running.task.await.expect("join")
    }

    /// Starts gwsync again after `stop_gwsync`.
    pub async fn start_gwsync(&mut self) {
        self.launch().await;
    }

    /// Stops and starts gwsync on the same data directory and master key.
    pub async fn restart(&mut self) {
        self.stop_gwsync().await.expect("clean stop");
        self.launch().await;
    }

    pub fn base(&self) -> &str {
        &self.running.as_ref().expect("running").base
    }

    pub fn data_path(&self) -> &Path {
        self.data_dir.path()
    }

    /// Moves time forward for both gwsync and the fake (`by` like "8d", "90s").
    pub async fn advance(&self, by: &str) {
        let d = humantime::parse_duration(by).expect("duration");
        let r = self.fake_control("POST", "/_fake/clock", json!({"advance": by})).await;
        assert_eq!(r.status, 200, "{r:?}");
        self.clock.advance(d);
    }

    pub async fn delegate(&self, scopes: &[&str]) {
        let r =
            self.fake_control("PUT", &format!("/_fake/delegation/{}", self.client_id), json!({"scopes": scopes})).await;
        assert_eq!(r.status, 200, "{r:?}");
    }

    pub async fn fake_control(&self, method: &str, path: &str, body: Value) -> Reply {
        let req = self.http.request(method.parse().expect("method"), format!("{}{}", self.fake.base_url(), path));
        let req = if body.is_null() { req } else { req.json(&body) };
        reply(req.send().await.expect("fake control")).await
    }

    /// Live channels at the fake, by calendar: (id, token, resource id) — once every one of
    /// `users` has one.
    pub async fn live_channels<U: AsRef<str>>(
        &self,
        users: &[U],
    ) -> std::collections::BTreeMap<String, (String, String, String)> {
        eventually("a live channel per user", async || {
            let r = self.fake_control("GET", "/_fake/channels?state=live", Value::Null).await;
            let live: std::collections::BTreeMap<String, (String, String, String)> = r.body["channels"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
                    (s("calendar"), (s("id"), s("token"), s("resourceId")))
                })
                .collect();
            if users.iter().all(|u| live.contains_key(u.as_ref())) {
                Ok(live)
            } else {
                Err(format!("{} live", live.len()))
            }
        })
        .await
    }

    /// An admin-API call with the admin token.
    pub async fn api(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let mut req = self
            .http
            .request(method.parse().expect("method"), format!("{}{}", self.base(), path))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        reply(req.send().await.expect("api call")).await
    }

    /// A call with full control of headers and body.
    pub async fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
        let mut req = self.http.request(method.parse().expect("method"), format!("{}{}", self.base(), path)).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        reply(req.send().await.expect("raw call")).await
    }

    /// Tenant `acme` for acme.test with it@ as directory admin, and its key uploaded.
    pub async fn setup_tenant(&self) {
        let r = self
            .api("PUT", &format!("/api/v1/tenants/{TENANT}"), Some(json!({"domain": DOMAIN, "directory_admin": IT})))
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        self.upload_key().await;
    }

    /// Uploads acme's key (again: gwsync then forgets its cached tokens and retries at once).
    pub async fn upload_key(&self) {
        let r = self
            .raw(
                "PUT",
                &format!("/api/v1/tenants/{TENANT}/credentials"),
                &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
                self.key.to_string().into_bytes(),
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
    }

    pub async fn put_user(&self, email: &str, body: Value) -> Reply {
        self.api("PUT", &format!("/api/v1/tenants/{TENANT}/users/{email}"), Some(body)).await
    }

    pub async fn stop(mut self) {
        if self.running.is_some() {
            let _ = self.stop_gwsync().await;
        }
        self.fake.stop().await;
    }
}

fn rand_bytes() -> [u8; 32] {
    let mut b = [0u8; 32];
    for (i, x) in uuid::Uuid::new_v4().as_bytes().iter().chain(uuid::Uuid::new_v4().as_bytes()).enumerate() {
        b[i] = *x;
    }
    b
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() { stack.push(p) } else { out.push(p) }
        }
    }
    out
}

/// A gwsync serving in this process on the harness's data directory, master key and clock,
/// started and stopped by the test itself: the harness's `restart` starts again at once, and
/// some tests need time to pass while gwsync is down.
pub struct Instance {
    pub base: String,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Instance {
    pub async fn launch(app: &TestApp) -> Instance {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (shutdown, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(gwsync::serve_with_clock(
            app.config(addr),
            listener,
            async move {
                let _ = rx.await;
            },
            app.clock.clone(),
        ));
        let base = format!("http://{addr}");
        eventually("gwsync to answer /healthz", async || match app.http.get(format!("{base}/healthz")).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            other => Err(format!("{other:?}")),
        })
        .await;
        Instance { base, shutdown, task }
    }

    /// Stops it and asserts a clean stop.
    pub async fn stop(self) {
        let _ = self.shutdown.send(());
        self.task.await.expect("join").expect("a clean stop");
    }
}
