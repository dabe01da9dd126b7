//! Shared harness of the fake's conformance tests: a running fake with a domain, a service
//! account and delegation; signing in; HTTP helpers; and a webhook receiver for push tests.
//! Each test file uses part of it.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use fake_google::FakeGoogle;
use parking_lot::Mutex;
use serde_json::{Value, json};

pub const DOMAIN: &str = "acme.test";
pub const ALICE: &str = "alice@acme.test";
pub const BOB: &str = "bob@acme.test";

pub const CALENDAR: &str = "https://www.googleapis.com/auth/calendar";
pub const CALENDAR_READONLY: &str = "https://www.googleapis.com/auth/calendar.readonly";
pub const CALENDAR_EVENTS: &str = "https://www.googleapis.com/auth/calendar.events";
pub const CONTACTS_READONLY: &str = "https://www.googleapis.com/auth/contacts.readonly";
pub const DIRECTORY_READONLY: &str = "https://www.googleapis.com/auth/directory.readonly";
pub const ALL_SCOPES: &[&str] = &[CALENDAR, CALENDAR_READONLY, CALENDAR_EVENTS, CONTACTS_READONLY, DIRECTORY_READONLY];

pub struct Env {
    pub fake: FakeGoogle,
    pub http: reqwest::Client,
    pub base: String,
    /// The service account's key file, as the fake handed it out.
    pub key: Value,
    pub client_id: String,
}

/// What a call answered: status and JSON body (`Value::Null` when empty or not JSON).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Reply {
    /// `error.errors[0].reason` (Calendar's legacy envelope).
    pub fn reason(&self) -> Option<&str> {
        self.body["error"]["errors"][0]["reason"].as_str()
    }
    /// `error.details[].reason` (google.rpc ErrorInfo).
    pub fn detail_reason(&self) -> Option<&str> {
        self.body["error"]["details"].as_array()?.iter().find_map(|d| d["reason"].as_str())
    }
}

impl Env {
    /// A fake with domain acme.test (alice, bob; directory sharing on; calendars in UTC), a
    /// service account, and delegation of every scope the tests use.
    pub async fn new() -> Env {
        Self::with_domain(json!({"domain": DOMAIN, "users": [ALICE, BOB], "directory_sharing": true})).await
    }

    pub async fn with_domain(domain: Value) -> Env {
        let fake = FakeGoogle::start().await.expect("fake starts");
        let base = fake.base_url();
        let http = reqwest::Client::builder().no_proxy().build().expect("client");
        let mut env = Env { fake, http, base, key: Value::Null, client_id: String::new() };
        let r = env.control("POST", "/_fake/domains", Some(domain)).await;
        assert_eq!(r.status, 201, "{r:?}");
        let r = env.control("POST", "/_fake/service-accounts", Some(json!({"domain": DOMAIN}))).await;
        assert_eq!(r.status, 201, "{r:?}");
        env.key = r.body;
        env.client_id = env.key["client_id"].as_str().expect("client_id").to_owned();
        env.delegate(ALL_SCOPES).await;
        env
    }

    pub async fn delegate(&self, scopes: &[&str]) {
        let r = self
            .control("PUT", &format!("/_fake/delegation/{}", self.client_id), Some(json!({"scopes": scopes})))
            .await;
        assert_eq!(r.status, 200, "{r:?}");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// JWT claims as Google's client libraries make them.
    pub fn claims(&self, sub: Option<&str>, scopes: &[&str]) -> Value {
        let now = chrono::Utc::now().timestamp();
        let mut c = json!({
            "iss": self.key["client_email"],
            "aud": self.key["token_uri"],
            "scope": scopes.join(" "),
            "iat": now,
            "exp": now + 3600,
        });
        if let Some(s) = sub {
            c["sub"] = json!(s);
        }
        c
    }

    /// Posts a signed assertion with `claims` (signed with `key`) to the token endpoint.
    pub async fn token_request(&self, key: &Value, claims: &Value) -> Reply {
        let assertion = fake_google::jwt::sign(key, claims).expect("sign");
        let resp = self
            .http
            .post(self.url("/token"))
            .form(&[("grant_type", fake_google::oauth::GRANT_TYPE), ("assertion", assertion.as_str())])
            .send()
            .await
            .expect("token request");
        reply(resp).await
    }

    /// An access token for `user` with `scopes`.
    pub async fn token(&self, user: &str, scopes: &[&str]) -> String {
        let r = self.token_request(&self.key, &self.claims(Some(user), scopes)).await;
        assert_eq!(r.status, 200, "{r:?}");
        r.body["access_token"].as_str().expect("access_token").to_owned()
    }

    /// A token for `user` with every scope.
    pub async fn token_all(&self, user: &str) -> String {
        self.token(user, ALL_SCOPES).await
    }

    pub async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        let mut req = self.http.request(method.parse().expect("method"), self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        reply(req.send().await.expect("request")).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call("GET", path, Some(token), None).await
    }

    pub async fn control(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        self.call(method, path, None, body).await
    }

    /// Inserts an event into `user`'s primary calendar; panics unless Google says 200.
    pub async fn insert_event(&self, token: &str, event: Value) -> Value {
        let r = self.call("POST", "/calendar/v3/calendars/primary/events", Some(token), Some(event)).await;
        assert_eq!(r.status, 200, "{r:?}");
        r.body
    }

    /// The requests the fake logged for an API method.
    pub async fn requests(&self, method: &str) -> Vec<Value> {
        let r = self.control("GET", &format!("/_fake/requests?method={method}"), None).await;
        r.body["requests"].as_array().cloned().unwrap_or_default()
    }

    pub async fn advance(&self, by: &str) {
        let r = self.control("POST", "/_fake/clock", Some(json!({"advance": by}))).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
}

pub async fn reply(resp: reqwest::Response) -> Reply {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply { status, body, headers, text }
}

/// One request a `Receiver` got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub user_agent: String,
}

impl Received {
    /// A header by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A webhook receiver on loopback that records requests and answers with statuses the test
/// chooses (a queue of statuses, then 200).
pub struct Receiver {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    statuses: Arc<Mutex<Vec<u16>>>,
    handle: actix_web::dev::ServerHandle,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let statuses: Arc<Mutex<Vec<u16>>> = Arc::default();
        let (r2, s2) = (received.clone(), statuses.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = HttpServer::new(move || {
            let (r, s) = (r2.clone(), s2.clone());
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let (r, s) = (r.clone(), s.clone());
                async move {
                    let headers = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
                        .collect();
                    let user_agent =
                        req.headers().get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                    r.lock().push(Received { headers, body: body.to_vec(), user_agent });
                    let status = {
                        let mut s = s.lock();
                        if s.is_empty() { 200 } else { s.remove(0) }
                    };
                    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("status")).finish()
                }
            }))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Receiver { url: format!("http://{addr}/hook"), received, statuses, handle }
    }

    /// The next requests get these statuses, in order.
    pub fn answer_with(&self, statuses: &[u16]) {
        self.statuses.lock().extend_from_slice(statuses);
    }

    pub fn count(&self) -> usize {
        self.received.lock().len()
    }

    pub fn all(&self) -> Vec<Received> {
        self.received.lock().clone()
    }

    /// Waits (up to 10 s) until at least `n` requests arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.count() < n {
            assert!(tokio::time::Instant::now() < deadline, "expected {n} notifications, got {:?}", self.all());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.all()
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}
