//! Shared set-up of the benchmarks: a fake Google with a domain of `users` users, gwsync serving
//! against it with a tenant, its key and those users, and their push channels registered.
#![allow(dead_code)]

pub mod process;
pub mod replicas;
pub mod wrk;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use base64::Engine;
use fake_google::FakeGoogle;
use gwsync::config::Config;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const ADMIN: &str = "bench-admin-token-0123456789";

pub struct Bench {
    pub fake: FakeGoogle,
    pub gwsync: String,
    pub http: reqwest::Client,
    pub users: Vec<String>,
    pub key: Value,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

/// A registered channel as the fake knows it (with the token Google would send).
#[derive(Clone, Debug)]
pub struct Channel {
    pub id: String,
    pub token: String,
    pub resource_id: String,
    pub user: String,
}

impl Bench {
    pub async fn start(users: usize) -> Bench {
        Self::start_with(users, |_| {}).await
    }

    /// Like `start`, with gwsync's configuration changed by `tweak`.
    pub async fn start_with(users: usize, tweak: impl FnOnce(&mut Config)) -> Bench {
        let fake = FakeGoogle::start().await.expect("fake");
        let http = reqwest::Client::builder().no_proxy().build().expect("client");
        let base = fake.base_url();
        let emails: Vec<String> = (0..users).map(|i| format!("user{i}@bench.test")).collect();
        let post = |path: &str, body: Value| http.post(format!("{base}{path}")).json(&body).send();
        post("/_fake/domains", json!({"domain": "bench.test", "users": emails})).await.expect("domain");
        let key: Value = post("/_fake/service-accounts", json!({"domain": "bench.test"}))
            .await
            .expect("sa")
            .json()
            .await
            .expect("key");
        let scopes = [
            "https://www.googleapis.com/auth/calendar.readonly",
            "https://www.googleapis.com/auth/calendar.events",
            "https://www.googleapis.com/auth/contacts.readonly",
            "https://www.googleapis.com/auth/directory.readonly",
        ];
        http.put(format!("{base}/_fake/delegation/{}", key["client_id"].as_str().expect("id")))
            .json(&json!({"scopes": scopes}))
            .send()
            .await
            .expect("delegation");

        let dir = tempfile::tempdir().expect("tempdir");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut config = Config {
            listen: addr,
            public_url: Some(format!("http://{addr}").parse().expect("url")),
            data_dir: dir.path().to_path_buf(),
            admin_token: Some(SecretString::from(ADMIN)),
            master_key: Some(SecretString::from(base64::engine::general_purpose::STANDARD.encode([7u8; 32]))),
            google_api_url: base.parse().expect("url"),
            google_people_url: base.parse().expect("url"),
            // The fake (the key's token_uri) and the benches' phone systems are on loopback.
            outbound_allow: "127.0.0.0/8".into(),
            ..Config::default()
        };
        tweak(&mut config);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(gwsync::serve(config, listener, async move {
            let _ = rx.await;
        }));
        let gwsync = format!("http://{addr}");
        let mut b = Bench { fake, gwsync, http, users: emails, key, stop: Some(tx), task: Some(task), _dir: dir };
        b.wait_up().await;
        b.admin("PUT", "/api/v1/tenants/bench", Some(json!({"domain": "bench.test"}))).await;
        let r = b
            .http
            .put(format!("{}/api/v1/tenants/bench/credentials", b.gwsync))
            .bearer_auth(ADMIN)
            .body(b.key.to_string())
            .send()
            .await
            .expect("key");
        assert!(r.status().is_success());
        for u in b.users.clone() {
            b.admin(
                "PUT",
                &format!("/api/v1/tenants/bench/users/{u}"),
                Some(json!({"profiles": [{"name": "Lunch", "triggers": ["lunch"]}]})),
            )
            .await;
        }
        b
    }

    async fn wait_up(&mut self) {
        for _ in 0..500 {
            if self.http.get(format!("{}/healthz", self.gwsync)).send().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("gwsync did not start");
    }

    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let mut req =
            self.http.request(method.parse().expect("method"), format!("{}{path}", self.gwsync)).bearer_auth(ADMIN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("admin call");
        assert!(r.status().is_success(), "{method} {path}: {}", r.status());
        r.json().await.unwrap_or(Value::Null)
    }

    /// Starts a background job (`202` with where to watch it) and waits for its report.
    pub async fn admin_job(&self, method: &str, path: &str) -> Value {
        let started = self.admin(method, path, None).await;
        let status = started["status"].as_str().expect("a job to watch").to_owned();
        loop {
            let job = self.admin("GET", &status, None).await;
            if job["state"] != "running" {
                assert_eq!(job["state"], "done", "{path}: {job}");
                return job["result"].clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub async fn fake(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method.parse().expect("method"), format!("{}{path}", self.fake.base_url()));
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.expect("fake call").json().await.unwrap_or(Value::Null)
    }

    /// Waits until every user has a live channel, and returns them.
    pub async fn channels(&self) -> Vec<Channel> {
        let started = Instant::now();
        loop {
            let v = self.fake("GET", "/_fake/channels?state=live", None).await;
            let list: Vec<Channel> = v["channels"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|c| Channel {
                            id: c["id"].as_str().unwrap_or("").into(),
                            token: c["token"].as_str().unwrap_or("").into(),
                            resource_id: c["resourceId"].as_str().unwrap_or("").into(),
                            user: c["calendar"].as_str().unwrap_or("").into(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            if list.len() >= self.users.len() {
                return list;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "only {} of {} channels after 2 minutes",
                list.len(),
                self.users.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A token with write access to `user`'s calendar at the fake.
    pub async fn writer(&self, user: &str) -> String {
        writer_token(&self.http, &self.fake.base_url(), &self.key, user).await
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        self.fake.stop().await;
    }
}

/// p-th percentile (0..=100) of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// A token with write access to `user`'s calendar at the fake `fake`, signed with `key`.
pub async fn writer_token(http: &reqwest::Client, fake: &str, key: &Value, user: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"iss": key["client_email"], "sub": user, "aud": key["token_uri"],
        "scope": "https://www.googleapis.com/auth/calendar.events", "iat": now, "exp": now + 3600});
    let assertion = fake_google::jwt::sign(key, &claims).expect("sign");
    let v: Value = http
        .post(format!("{fake}/token"))
        .form(&[("grant_type", fake_google::oauth::GRANT_TYPE), ("assertion", assertion.as_str())])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    v["access_token"].as_str().expect("token").to_owned()
}
