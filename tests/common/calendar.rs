//! Calendar helpers shared by the end-to-end tests: waiting on gwsync, writing a user's
//! calendar through the fake's Calendar API, and reading the fake's logs and controls.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::Duration;

use serde_json::{Value, json};

use super::{GWSYNC_SCOPES, Reply, TENANT, TestApp, reply};

/// The longest any one wait may take, and how often it looks.
pub const WAIT: Duration = Duration::from_secs(15);
pub const POLL: Duration = Duration::from_millis(20);

/// Polls `check` until it gives a value; fails the test after `WAIT` with the last reason.
pub async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(why) => assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}: {why}"),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `bad` for `during`; fails the test as soon as it holds.
pub async fn never_within(what: &str, during: Duration, mut bad: impl AsyncFnMut() -> Option<String>) {
    let deadline = tokio::time::Instant::now() + during;
    while tokio::time::Instant::now() < deadline {
        if let Some(why) = bad().await {
            panic!("{what}: {why}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A token for `user` with write access, to change their calendar through the fake's API.
pub async fn writer_token(app: &TestApp, user: &str) -> String {
    app.delegate(&[GWSYNC_SCOPES, &["https://www.googleapis.com/auth/calendar.events"]].concat()).await;
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "iss": app.key["client_email"], "sub": user, "aud": app.key["token_uri"],
        "scope": "https://www.googleapis.com/auth/calendar.events", "iat": now, "exp": now + 3600,
    });
    let assertion = fake_google::jwt::sign(&app.key, &claims).expect("sign");
    let r = reply(
        app.http
            .post(format!("{}/token", app.fake.base_url()))
            .form(&[("grant_type", fake_google::oauth::GRANT_TYPE), ("assertion", assertion.as_str())])
            .send()
            .await
            .expect("token"),
    )
    .await;
    r.body["access_token"].as_str().unwrap_or_else(|| panic!("no writer token: {r:?}")).to_owned()
}

pub async fn google(app: &TestApp, method: &str, path: &str, token: &str, body: Option<Value>) -> Reply {
    let mut req = app
        .http
        .request(method.parse().unwrap(), format!("{}/calendar/v3/calendars/primary/{path}", app.fake.base_url()))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    reply(req.send().await.expect("google call")).await
}

pub async fn delete(app: &TestApp, token: &str, id: &str) {
    let r = google(app, "DELETE", &format!("events/{id}"), token, None).await;
    assert_eq!(r.status, 204, "delete {id}: {r:?}");
}

/// The user's calendar as Google holds it: live events, id → summary.
pub async fn google_calendar(app: &TestApp, user: &str) -> BTreeMap<String, String> {
    let r = app.fake_control("GET", &format!("/_fake/calendars/{user}/events"), Value::Null).await;
    assert_eq!(r.status, 200, "{r:?}");
    summaries(r.body["items"].as_array().map(Vec::as_slice).unwrap_or_default())
}

/// Non-cancelled events, id → summary.
pub fn summaries(events: &[Value]) -> BTreeMap<String, String> {
    events
        .iter()
        .filter(|e| e["status"] != "cancelled")
        .map(|e| {
            (e["id"].as_str().unwrap_or_default().to_owned(), e["summary"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

/// The fake's request log after `since`, of one API method (or all with `None`).
pub async fn requests(app: &TestApp, method: Option<&str>, since: u64) -> Vec<Value> {
    let filter = method.map(|m| format!("&method={m}")).unwrap_or_default();
    let r = app.fake_control("GET", &format!("/_fake/requests?since={since}{filter}"), Value::Null).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body["requests"].as_array().cloned().unwrap_or_default()
}

/// The sequence number of the fake's last logged request.
pub async fn last_seq(app: &TestApp) -> u64 {
    let r = app.fake_control("GET", &format!("/_fake/requests?since={}", u64::MAX), Value::Null).await;
    r.body["last_seq"].as_u64().expect("last_seq")
}

/// Every delivery attempt of a channel's notifications.
pub async fn deliveries(app: &TestApp, channel: &str) -> Vec<Value> {
    let r = app.fake_control("GET", &format!("/_fake/notifications?channel={channel}"), Value::Null).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body["notifications"].as_array().cloned().unwrap_or_default()
}

pub async fn arm_fault(app: &TestApp, fault: Value) {
    let r = app.fake_control("POST", "/_fake/faults", fault).await;
    assert_eq!(r.status, 201, "{r:?}");
}

pub async fn faults_left(app: &TestApp) -> usize {
    app.fake_control("GET", "/_fake/faults", Value::Null).await.body["faults"].as_array().map(Vec::len).unwrap_or(99)
}

pub async fn stored(app: &TestApp, user: &str) -> Vec<Value> {
    let r = app.api("GET", &format!("/api/v1/tenants/{TENANT}/users/{user}/events"), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body["events"].as_array().cloned().unwrap_or_default()
}

pub async fn metrics(app: &TestApp) -> String {
    let r = app.raw("GET", "/metrics", &[], Vec::new()).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.text
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// The user as gwsync's admin API shows them (status 200 asserted).
pub async fn user_status(app: &TestApp, user: &str) -> Value {
    let r = app.api("GET", &format!("/api/v1/tenants/{TENANT}/users/{user}"), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body
}

/// Waits until no sync of the user is queued or running for a quiet spell (~300 ms).
pub async fn quiet(app: &TestApp, user: &str) {
    let mut idle_polls = 0;
    eventually("gwsync to go idle", async || {
        let status = user_status(app, user).await;
        if status["sync"]["pending"].is_null() {
            idle_polls += 1;
        } else {
            idle_polls = 0;
        }
        if idle_polls >= 15 { Ok(()) } else { Err(format!("{status}")) }
    })
    .await;
}
