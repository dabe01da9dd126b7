//! Tenant isolation and bounded work, end to end (DESIGN §5, issue 10): companies beside a
//! normal one whose token endpoint or phone system hangs (a TCP listener on 127.0.0.1 that
//! accepts and never answers), whose calendars queue up by the dozen, or whose calendar holds
//! a minutely series from 1970; sequences across deletion; supersession after downtime;
//! deletion of a user or a company while Google is still answering (a list call, a token grant);
//! pacing per Google project; diagnose naming a failing phone system; and each tenant's jobs
//! hidden from other tenants' tokens. Each test asserts what an operator would notice:
//! the normal company's syncs and switches on time, the bad one's status, metrics and recovery.
mod common;
use common::receiver::{HangingServer, Receiver};
use common::*;

use std::time::{Duration, Instant};

use base64::Engine;
use chrono::{DateTime, DurationRound, SecondsFormat, TimeZone, Timelike, Utc};
use gwsync::store::Store;
use gwsync::store::sled_store::SledStore;
use serde_json::{Value, json};

const SECRET_KEY: [u8; 32] = *b"gwsync-isolation-test-key-32byte";
const CALENDAR_EVENTS: &str = "https://www.googleapis.com/auth/calendar.events";
const LIST: &str = "calendar.events.list";
const WATCH: &str = "calendar.events.watch";
const STOP: &str = "calendar.channels.stop";

fn secret() -> String {
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(SECRET_KEY))
}

fn mins(n: i64) -> chrono::Duration {
    chrono::Duration::minutes(n)
}

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

// ---- time ----

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap_or_else(|e| panic!("not a time: {v}: {e}"))
        .with_timezone(&Utc)
}

/// gwsync's clock `ahead` from now, on a whole minute.
fn minute_ahead(app: &TestApp, ahead: chrono::Duration) -> DateTime<Utc> {
    (app.clock.now() + ahead).duration_trunc(mins(1)).expect("truncate")
}

/// Moves gwsync's and the fake's clock to `t` (a little past it: real time runs on).
async fn advance_to(app: &TestApp, t: DateTime<Utc>) {
    let ms = (t - app.clock.now()).num_milliseconds();
    if ms > 0 {
        app.advance(&format!("{ms}ms")).await;
    }
}

// ---- companies ----

fn profiles() -> Value {
    json!([
        {"name": "Lunch", "triggers": ["lunch"]},
        {"name": "Meeting", "triggers": ["meeting", "standup"]},
    ])
}

async fn add_user(app: &TestApp, tenant: &str, user: &str) {
    let r = app
        .api(
            "PUT",
            &format!("/api/v1/tenants/{tenant}/users/{user}"),
            Some(json!({"external_id": format!("ext-{user}"), "profiles": profiles()})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
}

async fn delete_user(app: &TestApp, tenant: &str, user: &str) {
    let r = app.api("DELETE", &format!("/api/v1/tenants/{tenant}/users/{user}"), None).await;
    assert_eq!(r.status, 204, "{r:?}");
}

/// Gives a tenant a phone system at `url` (the tenant's domain and admin kept).
async fn connect_phone_system(app: &TestApp, tenant: &str, domain: &str, url: &str) {
    let r = app
        .api(
            "PUT",
            &format!("/api/v1/tenants/{tenant}"),
            Some(json!({"domain": domain, "directory_admin": format!("it@{domain}"),
                        "phone_system": {"url": url, "secret": secret()}})),
        )
        .await;
    assert!(r.status == 200 || r.status == 201, "{r:?}");
}

/// Another company beside acme: its own Workspace domain at the fake (`it@` and `n` users), its
/// own service account (its own Cloud project) with full delegation, and its gwsync tenant
/// (with `it@` as its directory admin).
struct Company {
    tenant: &'static str,
    users: Vec<String>,
    /// The key file the fake issued (its `token_uri` is the fake's).
    key: Value,
}

impl Company {
    async fn create(app: &TestApp, tenant: &'static str, n: usize, phone_system: Option<&str>) -> Company {
        Self::create_with(app, tenant, n, phone_system, true).await
    }

    /// `phonebook: false`: no directory admin, so the phonebook is never polled and every call
    /// at the company's token endpoint is a calendar's.
    async fn create_with(
        app: &TestApp,
        tenant: &'static str,
        n: usize,
        phone_system: Option<&str>,
        phonebook: bool,
    ) -> Company {
        let domain = format!("{tenant}.test");
        let admin = format!("it@{domain}");
        let users: Vec<String> = (1..=n).map(|i| format!("user{i:02}@{domain}")).collect();
        let everybody: Vec<&String> = std::iter::once(&admin).chain(&users).collect();
        let r = app
            .fake_control(
                "POST",
                "/_fake/domains",
                json!({"domain": domain, "users": everybody, "directory_sharing": true}),
            )
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        let r = app.fake_control("POST", "/_fake/service-accounts", json!({"domain": domain})).await;
        assert_eq!(r.status, 201, "{r:?}");
        let key = r.body;
        let client_id = key["client_id"].as_str().expect("client_id");
        let scopes = [GWSYNC_SCOPES, &[CALENDAR_EVENTS]].concat();
        let r = app.fake_control("PUT", &format!("/_fake/delegation/{client_id}"), json!({"scopes": scopes})).await;
        assert_eq!(r.status, 200, "{r:?}");
        let mut body = json!({"domain": domain});
        if phonebook {
            body["directory_admin"] = json!(admin);
        }
        if let Some(url) = phone_system {
            body["phone_system"] = json!({"url": url, "secret": secret()});
        }
        let r = app.api("PUT", &format!("/api/v1/tenants/{tenant}"), Some(body)).await;
        assert_eq!(r.status, 201, "{r:?}");
        Company { tenant, users, key }
    }

    async fn upload_key(&self, app: &TestApp, key: &Value) {
        let r = app
            .raw(
                "PUT",
                &format!("/api/v1/tenants/{}/credentials", self.tenant),
                &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
                key.to_string().into_bytes(),
            )
            .await;
        assert_eq!(r.status, 200, "{r:?}");
    }

    async fn add_users(&self, app: &TestApp) {
        for u in &self.users {
            add_user(app, self.tenant, u).await;
        }
    }

    /// A token for `user` with write access to their calendar, signed with the company's key.
    async fn writer(&self, app: &TestApp, user: &str) -> String {
        let now = Utc::now().timestamp();
        let claims = json!({
            "iss": self.key["client_email"], "sub": user, "aud": app.fake.token_uri(),
            "scope": CALENDAR_EVENTS, "iat": now, "exp": now + 3600,
        });
        let assertion = fake_google::jwt::sign(&self.key, &claims).expect("sign");
        let r = reply(
            app.http
                .post(app.fake.token_uri())
                .form(&[("grant_type", fake_google::oauth::GRANT_TYPE), ("assertion", assertion.as_str())])
                .send()
                .await
                .expect("token"),
        )
        .await;
        r.body["access_token"].as_str().unwrap_or_else(|| panic!("no writer token: {r:?}")).to_owned()
    }
}

// ---- what gwsync shows ----

async fn status_of(app: &TestApp, tenant: &str, user: &str) -> Value {
    let r = app.api("GET", &format!("/api/v1/tenants/{tenant}/users/{user}"), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body
}

/// `status` of `GET /api/v1/tenants/{tenant}`.
async fn tenant_status(app: &TestApp, tenant: &str) -> Value {
    let r = app.api("GET", &format!("/api/v1/tenants/{tenant}"), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body["status"].clone()
}

/// Waits until the user's calendar has a channel and a first sync.
async fn synced(app: &TestApp, tenant: &str, user: &str) {
    eventually(&format!("{user} to be synced"), async || {
        let s = status_of(app, tenant, user).await;
        let sync = &s["sync"];
        if !sync["channel"].is_null() && !sync["last_sync"].is_null() && sync["last_error"].is_null() {
            Ok(())
        } else {
            Err(sync.to_string())
        }
    })
    .await;
}

async fn presence(app: &TestApp, tenant: &str, user: &str) -> Reply {
    app.api("GET", &format!("/api/v1/tenants/{tenant}/users/{user}/presence"), None).await
}

/// The upcoming switches of a presence answer: (at, profile or "-").
fn upcoming(p: &Value) -> Vec<(DateTime<Utc>, String)> {
    p["upcoming"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| (time(&t["at"]), t["profile"].as_str().unwrap_or("-").to_owned()))
        .collect()
}

/// Waits until the user's presence lists a switch to `profile` at `at` (their calendar synced).
async fn wait_switch(app: &TestApp, tenant: &str, user: &str, at: DateTime<Utc>, profile: &str) {
    eventually(&format!("{user}'s switch to {profile} at {at}"), async || {
        let p = presence(app, tenant, user).await;
        if p.status == 200 && upcoming(&p.body).contains(&(at, profile.to_owned())) {
            Ok(())
        } else {
            Err(format!("{} {}", p.status, p.body))
        }
    })
    .await;
}

/// The value of one series in /metrics (0 if absent).
async fn metric(app: &TestApp, series: &str) -> f64 {
    metrics(app)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn wait_metric(app: &TestApp, series: &str, want: f64) {
    eventually(&format!("{series} to be {want}"), async || {
        let got = metric(app, series).await;
        if got == want { Ok(()) } else { Err(format!("{got}")) }
    })
    .await;
}

const TOKEN_FAILING: &str = r#"gwsync_tenants_failing{part="google_token"}"#;
const PHONE_FAILING: &str = r#"gwsync_tenants_failing{part="phone_system"}"#;
const OUTBOX: &str = "gwsync_outbox_messages";

// ---- Google's side (the fake) ----

/// Inserts an event `[start, end)` with `extra` fields; returns its id.
async fn create(
    app: &TestApp,
    token: &str,
    summary: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    extra: Value,
) -> String {
    let mut body = json!({"summary": summary, "start": {"dateTime": rfc(start)}, "end": {"dateTime": rfc(end)}});
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            body[k] = v;
        }
    }
    let r = google(app, "POST", "events", token, Some(body)).await;
    assert_eq!(r.status, 200, "insert {summary}: {r:?}");
    r.body["id"].as_str().expect("id").to_owned()
}

/// The fake's channels of `user` (every state).
async fn fake_channels(app: &TestApp, user: &str) -> Vec<Value> {
    let r = app.fake_control("GET", &format!("/_fake/channels?user={user}"), Value::Null).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body["channels"].as_array().cloned().unwrap_or_default()
}

/// Waits until Google has channels for `user` and every one of them is stopped.
async fn all_stopped(app: &TestApp, user: &str) {
    eventually(&format!("{user}'s channels to be stopped at Google"), async || {
        let channels = fake_channels(app, user).await;
        if !channels.is_empty() && channels.iter().all(|c| c["state"] == "stopped") {
            Ok(())
        } else {
            Err(format!("{channels:?}"))
        }
    })
    .await;
}

// ---- 1. a hanging token endpoint ----

#[tokio::test]
async fn a_company_whose_token_endpoint_hangs_holds_up_no_other_company() {
    let app = TestApp::start_with(|c| c.sync.token_timeout = Duration::from_secs(5)).await;
    app.setup_tenant().await;
    add_user(&app, TENANT, ALICE).await;
    synced(&app, TENANT, ALICE).await;
    let alice_writer = writer_token(&app, ALICE).await;

    // Company B's key names a token endpoint that accepts and never answers. (B has no phonebook,
    // so every call there is one of its calendars'.)
    let hang = HangingServer::start().await;
    let b = Company::create_with(&app, "globex", 16, None, false).await;
    let mut hanging_key = b.key.clone();
    hanging_key["token_uri"] = json!(hang.url("/token"));
    b.upload_key(&app, &hanging_key).await;
    b.add_users(&app).await;
    eventually("B's token requests to hang", async || {
        if hang.open() >= 1 { Ok(()) } else { Err(format!("{} accepted", hang.accepted())) }
    })
    .await;

    // A's next change is synced at once, while B's token requests hang.
    let start = minute_ahead(&app, chrono::Duration::days(3));
    let changed = Instant::now();
    let id = create(&app, &alice_writer, "Lunch", start, start + mins(30), json!({})).await;
    eventually("A's change to be stored", async || {
        let events = stored(&app, ALICE).await;
        if events.iter().any(|e| e["id"] == id.as_str()) { Ok(()) } else { Err(format!("{events:?}")) }
    })
    .await;
    let took = changed.elapsed();
    assert!(took < Duration::from_secs(2), "A's change took {took:?} to sync while B's token endpoint hung");
    assert!(hang.open() >= 1, "B's token requests no longer hung when A's change landed: this proves nothing");

    // B shows as failing, with the hint, in its status, in the metric and in every user's status.
    let failure = eventually("B's token endpoint to show as failing", async || {
        let s = tenant_status(&app, b.tenant).await;
        if s["google_token"]["state"] == "failing" {
            Ok(s["google_token"]["error"].clone())
        } else {
            Err(s.to_string())
        }
    })
    .await;
    assert_eq!(failure["code"], "google_unavailable", "{failure}");
    assert!(failure["message"].as_str().unwrap_or_default().contains("did not answer within 5s"), "{failure}");
    assert!(failure["hint"].as_str().unwrap_or_default().contains("token endpoint"), "{failure}");
    assert!(failure["failures"].as_u64() >= Some(1), "{failure}");
    assert!(time(&failure["retry_at"]) > time(&failure["since"]), "{failure}");
    assert_eq!(tenant_status(&app, TENANT).await["google_token"], json!({"state": "ok"}));
    wait_metric(&app, TOKEN_FAILING, 1.0).await;
    for u in &b.users {
        eventually(&format!("{u}'s status to show the tenant's error"), async || {
            let s = status_of(&app, b.tenant, u).await;
            let e = &s["sync"]["last_error"];
            if e["code"] == "google_unavailable" && e["hint"] == failure["hint"] { Ok(()) } else { Err(s.to_string()) }
        })
        .await;
    }

    // While B is failing its jobs end at once, without calling its token endpoint …
    let calls = hang.accepted();
    assert!(calls >= 1, "the endpoint's calls could grow: they did when B started");
    for u in &b.users[..4] {
        let r = app.api("POST", &format!("/api/v1/tenants/{}/users/{u}/resync", b.tenant), None).await;
        assert_eq!(r.status, 202, "{r:?}");
    }
    for u in &b.users[..4] {
        eventually(&format!("{u}'s resync to run and wait again"), async || {
            let s = status_of(&app, b.tenant, u).await;
            if s["sync"]["pending"] == "waiting" { Ok(()) } else { Err(s["sync"].to_string()) }
        })
        .await;
    }
    never_within("B's jobs call the failing endpoint", Duration::from_millis(500), async || {
        (hang.accepted() != calls).then(|| format!("{} calls, {calls} before", hang.accepted()))
    })
    .await;

    // … and when its retry time comes, one job probes while the others wait for its answer.
    let retry_at = time(&tenant_status(&app, b.tenant).await["google_token"]["error"]["retry_at"]);
    advance_to(&app, retry_at + secs(1)).await;
    eventually("one probe", async || {
        if hang.accepted() == calls + 1 { Ok(()) } else { Err(format!("{} calls, {calls} before", hang.accepted())) }
    })
    .await;
    never_within("a second probe at once", Duration::from_millis(700), async || {
        (hang.accepted() > calls + 1).then(|| format!("{} calls, {calls} before", hang.accepted()))
    })
    .await;

    // The admin uploads a working key while the probe still hangs: B's users sync, and the old
    // key's probe giving up afterwards says nothing about the new one.
    assert!(hang.open() >= 1, "the probe still waits");
    b.upload_key(&app, &b.key).await;
    eventually("the old key's probe to give up", async || {
        if hang.open() == 0 { Ok(()) } else { Err(format!("{} open", hang.open())) }
    })
    .await;
    let s = tenant_status(&app, b.tenant).await;
    assert_eq!(s["google_token"], json!({"state": "ok"}), "B is shown failing after its key was replaced");
    assert_eq!(metric(&app, TOKEN_FAILING).await, 0.0);
    for u in &b.users {
        synced(&app, b.tenant, u).await;
    }
    hang.stop();
    app.stop().await;
}

#[tokio::test]
async fn a_token_endpoint_that_answers_5xx_for_a_while_is_waited_out_and_then_the_calendar_syncs() {
    let app = TestApp::start().await;
    app.setup_tenant().await;
    // Google's token endpoint fails Alice's next two grants: a 503 with Google's API error
    // envelope (JSON without an access token: not a token to keep), then a 503 in OAuth's shape.
    arm_fault(&app, json!({"method": "oauth2.token", "status": 503, "user": ALICE})).await;
    let oauth_503 = json!({"error": "temporarily_unavailable", "error_description": "Try again later."});
    arm_fault(&app, json!({"method": "oauth2.token", "status": 503, "user": ALICE, "body": oauth_503})).await;
    add_user(&app, TENANT, ALICE).await;
    let mut retry_at: Option<DateTime<Utc>> = None;
    for attempt in 1..=2 {
        // Each failure is the endpoint's, retried soon with backoff — not a key an admin must
        // replace — and the next attempt asks Google again rather than reuse what it answered.
        let failure = eventually(&format!("failure {attempt} to show"), async || {
            let s = tenant_status(&app, TENANT).await;
            let f = &s["google_token"]["error"];
            if f["failures"] == attempt { Ok(f.clone()) } else { Err(s.to_string()) }
        })
        .await;
        assert_eq!(failure["code"], "google_unavailable", "{failure}");
        assert!(time(&failure["retry_at"]) - time(&failure["since"]) < mins(5), "retried soon: {failure}");
        let at = time(&failure["retry_at"]);
        assert!(retry_at.is_none_or(|before| at > before), "each failure waits anew: {failure}");
        retry_at = Some(at);
        advance_to(&app, at + secs(1)).await;
    }
    synced(&app, TENANT, ALICE).await;
    assert_eq!(tenant_status(&app, TENANT).await["google_token"], json!({"state": "ok"}));
    app.stop().await;
}

/// The tenant's phonebook books as `GET …/contacts/status` lists them, by name.
async fn phonebook_books(app: &TestApp, tenant: &str) -> Vec<Value> {
    let r = app.api("GET", &format!("/api/v1/tenants/{tenant}/contacts/status"), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body["books"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_company_whose_token_endpoint_hangs_costs_a_phonebook_poll_one_wait_not_one_per_user() {
    let app = TestApp::start_with(|c| c.sync.token_timeout = Duration::from_secs(1)).await;
    // Company B's phonebook: the directory and each of its 6 users' own contacts, 7 books.
    let b = Company::create_with(&app, "globex", 6, None, true).await;
    let r = app
        .api(
            "PUT",
            &format!("/api/v1/tenants/{}", b.tenant),
            Some(json!({"domain": "globex.test", "directory_admin": "it@globex.test",
                        "contacts": {"personal_contacts": true}})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    b.add_users(&app).await;
    // The background poller sweeps now (advancing the clock wakes it) and polls B, which has no
    // key yet: seven books fail without a token request, and B's next poll is a poll interval
    // away, so the sync below is the only one asking for tokens.
    app.advance("16s").await;
    eventually("the poller's first poll of B", async || {
        let books = phonebook_books(&app, b.tenant).await;
        if books.len() == 7 { Ok(()) } else { Err(format!("{books:?}")) }
    })
    .await;

    // B's key names a token endpoint that accepts and never answers. Its calendars meet it first:
    // one probe, then they wait (the tenant's gate).
    let hang = HangingServer::start().await;
    let mut hanging_key = b.key.clone();
    hanging_key["token_uri"] = json!(hang.url("/token"));
    b.upload_key(&app, &hanging_key).await;
    eventually("B's calendars to find the token endpoint failing", async || {
        let s = tenant_status(&app, b.tenant).await;
        if s["google_token"]["state"] == "failing" && hang.open() == 0 { Ok(()) } else { Err(s.to_string()) }
    })
    .await;
    let calls = hang.accepted();

    // A phonebook sync of B: the directory admin's token request hangs until the token timeout;
    // that failure is the tenant's, so the six users' books take it without asking again.
    let r = app.api("POST", &format!("/api/v1/tenants/{}/contacts/sync", b.tenant), None).await;
    assert_eq!(r.status, 202, "{r:?}");
    let job = r.body["status"].as_str().expect("status").to_owned();
    let done = eventually("B's phonebook sync to finish", async || {
        let r = app.api("GET", &job, None).await;
        if r.body["state"] == "done" { Ok(r.body) } else { Err(r.body.to_string()) }
    })
    .await;
    let books = done["result"]["books"].as_array().cloned().unwrap_or_default();
    assert_eq!(books.len(), 7, "{done}");
    for book in &books {
        let e = &book["error"];
        assert_eq!(e["code"], "google_unavailable", "{book}");
        assert!(e["message"].as_str().unwrap_or_default().contains("did not answer within 1s"), "{book}");
        assert!(e["hint"].as_str().unwrap_or_default().contains("token endpoint"), "{book}");
    }
    assert_eq!(
        hang.accepted(),
        calls + 1,
        "B's phonebook sync asked its hanging token endpoint {} times for 7 books: once is enough",
        hang.accepted() - calls
    );
    // The status each book shows says so too.
    for book in phonebook_books(&app, b.tenant).await {
        assert_eq!(book["last_error"]["code"], "google_unavailable", "{book}");
    }
    hang.stop();
    app.stop().await;
}

#[tokio::test]
async fn a_deleted_company_whose_token_endpoint_failed_no_longer_counts_as_failing() {
    let app = TestApp::start_with(|c| c.sync.token_timeout = Duration::from_secs(1)).await;
    let hang = HangingServer::start().await;
    let b = Company::create_with(&app, "globex", 2, None, false).await;
    let mut hanging_key = b.key.clone();
    hanging_key["token_uri"] = json!(hang.url("/token"));
    b.upload_key(&app, &hanging_key).await;
    b.add_users(&app).await;
    wait_metric(&app, TOKEN_FAILING, 1.0).await;
    let r = app.api("DELETE", &format!("/api/v1/tenants/{}", b.tenant), None).await;
    assert_eq!(r.status, 204, "{r:?}");
    wait_metric(&app, TOKEN_FAILING, 0.0).await;
    hang.stop();
    app.stop().await;
}

// ---- 2. a hanging phone system ----

#[tokio::test]
async fn a_company_whose_phone_system_hangs_holds_up_no_other_and_is_backed_off_as_a_whole() {
    let app = TestApp::start_with(|c| {
        c.presence.delivery_timeout = Duration::from_secs(1);
        c.presence.delivery_alert_after = Duration::from_secs(120);
    })
    .await;
    let rx_a = Receiver::start(&secret(), app.clock.clone()).await;
    app.setup_tenant().await;
    connect_phone_system(&app, TENANT, DOMAIN, &rx_a.url).await;
    add_user(&app, TENANT, ALICE).await;
    // Company C's phone system accepts connections and never answers.
    let hang = HangingServer::start().await;
    let rx_c = Receiver::start(&secret(), app.clock.clone()).await;
    let c = Company::create(&app, "initech", 20, Some(&hang.url("/hooks/gwsync"))).await;
    c.upload_key(&app, &c.key).await;
    c.add_users(&app).await;

    // Everybody goes to lunch at the same minute.
    let start = minute_ahead(&app, mins(10));
    let end = start + mins(30);
    create(&app, &writer_token(&app, ALICE).await, "Lunch", start, end, json!({})).await;
    for u in &c.users {
        create(&app, &c.writer(&app, u).await, "Lunch", start, end, json!({})).await;
    }
    wait_switch(&app, TENANT, ALICE, start, "Lunch").await;
    for u in &c.users {
        wait_switch(&app, c.tenant, u, start, "Lunch").await;
    }
    assert_eq!(hang.accepted(), 0, "nothing is due yet");

    // A's switch is delivered at once, though C's 20 are due at the same moment.
    advance_to(&app, start).await;
    let moved = Instant::now();
    let got = rx_a.wait_delivered_to(ALICE, 1).await;
    let took = moved.elapsed();
    assert!(took < Duration::from_secs(1), "A's switch came {took:?} after its boundary");
    assert_eq!(got[0].json["profile"], "Lunch", "{:?}", got[0].json);

    // C's attempts hang until they time out; after 3 failures in a row C is paused as a whole.
    let paused = eventually("C's phone system to be paused", async || {
        let p = tenant_status(&app, c.tenant).await["phone_system"].clone();
        if p["state"] == "retrying" && !p["paused_until"].is_null() && hang.open() == 0 {
            Ok(p)
        } else {
            Err(format!("{p}, {} attempts held", hang.open()))
        }
    })
    .await;
    let calls = hang.accepted();
    assert!(calls >= 3, "attempts could reach C: {calls}");
    assert_eq!(paused["queued"], 20, "{paused}");
    assert_eq!(paused["last_error"], "the phone system did not answer within 1s", "{paused}");
    assert_eq!(tenant_status(&app, TENANT).await["phone_system"]["state"], "ok");

    // While paused, nothing is sent to C, though each message's own retry comes due …
    let until = time(&paused["paused_until"]);
    let failing_since = time(&paused["failing_since"]);
    // (each failed message's own retry is due 1–2 s after its failure; the pause is 5 s or more)
    advance_to(&app, until - chrono::Duration::milliseconds(1500)).await;
    assert!(app.clock.now() >= failing_since + secs(3), "the messages' own retries are due");
    never_within("an attempt while C is paused", Duration::from_millis(600), async || {
        (hang.accepted() != calls).then(|| format!("{} attempts, {calls} before", hang.accepted()))
    })
    .await;
    // … and when the pause is over one probe goes, alone.
    advance_to(&app, until + chrono::Duration::milliseconds(100)).await;
    eventually("one probe", async || {
        if hang.accepted() == calls + 1 { Ok(()) } else { Err(format!("{} attempts, {calls} before", hang.accepted())) }
    })
    .await;
    never_within("a second attempt beside the probe", Duration::from_millis(600), async || {
        (hang.accepted() > calls + 1).then(|| format!("{} attempts, {calls} before", hang.accepted()))
    })
    .await;

    // Failing longer than delivery_alert_after: "failing" in C's status and in the metric.
    advance_to(&app, failing_since + secs(121)).await;
    let p = tenant_status(&app, c.tenant).await["phone_system"].clone();
    assert_eq!(p["state"], "failing", "{p}");
    assert_eq!(time(&p["failing_since"]), failing_since, "{p}");
    wait_metric(&app, PHONE_FAILING, 1.0).await;
    assert_eq!(tenant_status(&app, TENANT).await["phone_system"]["state"], "ok");

    // C's phone system answers again: every C user gets their current state, once.
    hang.forward_to(rx_c.addr);
    let paused = eventually("C to be paused between probes", async || {
        let p = tenant_status(&app, c.tenant).await["phone_system"].clone();
        if !p["paused_until"].is_null() && hang.open() == 0 { Ok(p) } else { Err(format!("{p}")) }
    })
    .await;
    advance_to(&app, time(&paused["paused_until"]) + chrono::Duration::milliseconds(100)).await;
    for u in &c.users {
        rx_c.wait_delivered_to(u, 1).await;
    }
    rx_c.assert_quiet("no more messages to C").await;
    for u in &c.users {
        let got = rx_c.delivered_to(u);
        assert_eq!(got.len(), 1, "{u}: {got:#?}");
        assert_eq!(got[0].json["profile"], "Lunch", "{u}: {:?}", got[0].json);
        assert_eq!(time(&got[0].json["since"]), start, "{u}: {:?}", got[0].json);
        assert!(got[0].verified.is_ok(), "{:?}", got[0]);
    }
    let p = tenant_status(&app, c.tenant).await["phone_system"].clone();
    assert_eq!(p["state"], "ok", "{p}");
    assert_eq!(p["queued"], 0, "{p}");
    assert!(p["failing_since"].is_null() && p["paused_until"].is_null(), "{p}");
    wait_metric(&app, PHONE_FAILING, 0.0).await;
    wait_metric(&app, OUTBOX, 0.0).await;
    assert_eq!(rx_a.delivered_to(ALICE).len(), 1, "A heard its one switch, once");
    hang.stop();
    rx_a.stop().await;
    rx_c.stop().await;
    app.stop().await;
}

// ---- 3. a minutely series since 1970 ----

#[tokio::test]
async fn a_minutely_series_since_1970_answers_at_once_with_a_warning_and_holds_up_no_webhook() {
    let app = TestApp::start().await;
    app.setup_tenant().await;
    add_user(&app, TENANT, ALICE).await;
    synced(&app, TENANT, ALICE).await;
    let writer = writer_token(&app, ALICE).await;
    let epoch = Utc.timestamp_opt(0, 0).single().expect("1970");
    let id = create(
        &app,
        &writer,
        "Lunch",
        epoch,
        epoch + secs(30),
        json!({
            "start": {"dateTime": rfc(epoch), "timeZone": "UTC"},
            "end": {"dateTime": rfc(epoch + secs(30)), "timeZone": "UTC"},
            "recurrence": ["RRULE:FREQ=MINUTELY"],
        }),
    )
    .await;
    eventually("the series to be synced", async || {
        let s = status_of(&app, TENANT, ALICE).await;
        if s["sync"]["events_stored"] == 1 && s["sync"]["pending"].is_null() { Ok(()) } else { Err(s.to_string()) }
    })
    .await;

    // The presence API answers within 1 s, naming the series that hit the cap.
    let asked = Instant::now();
    let before = app.clock.now();
    let p = presence(&app, TENANT, ALICE).await;
    let took = asked.elapsed();
    assert_eq!(p.status, 200, "{p:?}");
    assert!(took < Duration::from_secs(1), "presence took {took:?}");
    let warnings = p.body["warnings"].as_array().cloned().unwrap_or_default();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0]["code"], "series_capped", "{warnings:?}");
    assert_eq!(warnings[0]["event_id"], id.as_str(), "{warnings:?}");
    assert!(warnings[0]["message"].as_str().is_some_and(|m| m.contains("2000")), "{warnings:?}");
    let status = status_of(&app, TENANT, ALICE).await;
    assert_eq!(status["presence"]["warnings"][0]["code"], "series_capped", "{status}");
    assert_eq!(status["presence"]["warnings"][0]["event_id"], id.as_str(), "{status}");

    // The same switches as the series has: Lunch for the first 30 s of every minute, from now on.
    let now_profile = p.body["profile"].as_str().unwrap_or("-").to_owned();
    let switches = upcoming(&p.body);
    assert!(switches.len() >= 10, "{}", p.body);
    let first = switches[0].0;
    assert!(first > before - secs(1) && first <= before + secs(32), "first switch {first} at {before}: {}", p.body);
    for (at, profile) in &switches[..10] {
        let want = if at.second() == 0 { "Lunch" } else { "-" };
        assert!(at.second() == 0 || at.second() == 30, "{at}: {}", p.body);
        assert_eq!(profile, want, "at {at}: {}", p.body);
        assert_eq!(at.nanosecond(), 0, "{at}");
    }
    for w in switches[..10].windows(2) {
        assert_eq!(w[1].0 - w[0].0, secs(30), "{:?}", &switches[..10]);
    }
    let in_lunch = switches[0].1 == "-";
    assert_eq!(now_profile == "Lunch", in_lunch, "now: {}", p.body);

    // A webhook meanwhile is acknowledged at once, however many such answers are being computed.
    let channel = fake_channels(&app, ALICE).await.into_iter().find(|c| c["state"] == "live").expect("a live channel");
    let (cid, token, resource) = (
        channel["id"].as_str().expect("id").to_owned(),
        channel["token"].as_str().expect("token").to_owned(),
        channel["resourceId"].as_str().expect("resourceId").to_owned(),
    );
    let hook = async {
        // Let the presence requests start first.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let sent = Instant::now();
        let r = app
            .raw(
                "POST",
                "/webhooks/google/calendar",
                &[
                    ("x-goog-channel-id", &cid),
                    ("x-goog-channel-token", &token),
                    ("x-goog-resource-id", &resource),
                    ("x-goog-resource-state", "exists"),
                    ("x-goog-message-number", "99"),
                ],
                Vec::new(),
            )
            .await;
        (r, sent.elapsed())
    };
    let (p1, p2, p3, p4, (hooked, hook_took)) = tokio::join!(
        presence(&app, TENANT, ALICE),
        presence(&app, TENANT, ALICE),
        presence(&app, TENANT, ALICE),
        presence(&app, TENANT, ALICE),
        hook
    );
    assert_eq!(hooked.status, 200, "{hooked:?}");
    assert_eq!(hooked.body["outcome"], "accepted", "{hooked:?}");
    assert!(hook_took < Duration::from_secs(1), "the webhook took {hook_took:?}");
    for a in [p1, p2, p3, p4] {
        assert_eq!(a.status, 200, "{a:?}");
    }
    app.stop().await;
}

// ---- 4. sequences across deletion ----

#[tokio::test]
async fn a_user_or_company_created_again_continues_above_its_old_sequences() {
    let app = TestApp::start().await;
    let rx = Receiver::start(&secret(), app.clock.clone()).await;
    app.setup_tenant().await;
    connect_phone_system(&app, TENANT, DOMAIN, &rx.url).await;
    add_user(&app, TENANT, ALICE).await;
    let start = minute_ahead(&app, mins(10));
    create(&app, &writer_token(&app, ALICE).await, "Lunch", start, start + mins(120), json!({})).await;
    wait_switch(&app, TENANT, ALICE, start, "Lunch").await;
    advance_to(&app, start).await;
    let first = rx.wait_delivered_to(ALICE, 1).await[0].clone();

    // Deleted and added again: the phone system hears her current state, above the old sequence
    // (a receiver drops a message whose sequence is not above the last it applied).
    delete_user(&app, TENANT, ALICE).await;
    add_user(&app, TENANT, ALICE).await;
    let second = rx.wait_delivered_to(ALICE, 2).await[1].clone();
    assert_eq!(second.json["profile"], "Lunch", "{:?}", second.json);
    assert!(second.seq() > first.seq(), "sequence {} after {}", second.seq(), first.seq());

    // The whole company deleted and created again: still above.
    let r = app.api("DELETE", &format!("/api/v1/tenants/{TENANT}"), None).await;
    assert_eq!(r.status, 204, "{r:?}");
    app.setup_tenant().await;
    connect_phone_system(&app, TENANT, DOMAIN, &rx.url).await;
    add_user(&app, TENANT, ALICE).await;
    let third = rx.wait_delivered_to(ALICE, 3).await[2].clone();
    assert_eq!(third.json["profile"], "Lunch", "{:?}", third.json);
    assert!(third.seq() > second.seq(), "sequence {} after {}", third.seq(), second.seq());
    rx.assert_quiet("nothing more").await;
    assert_eq!(rx.delivered_to(ALICE).len(), 3);
    rx.stop().await;
    app.stop().await;
}

// ---- 5. supersession after downtime ----

#[tokio::test]
async fn after_downtime_the_phone_system_gets_the_current_state_once_not_the_history() {
    // No breaker here (it is tested above): every flip is attempted once while the phone
    // system is down, so the test sees each one queued.
    let app = TestApp::start_with(|c| c.presence.breaker_threshold = 100).await;
    let rx = Receiver::start(&secret(), app.clock.clone()).await;
    app.setup_tenant().await;
    connect_phone_system(&app, TENANT, DOMAIN, &rx.url).await;
    add_user(&app, TENANT, ALICE).await;
    add_user(&app, TENANT, BOB).await;
    let writer = writer_token(&app, ALICE).await;
    let s = minute_ahead(&app, mins(10));
    // Alice flips four times (lunch, back, …), then goes into a long meeting.
    for k in 0..4 {
        create(&app, &writer, "Lunch", s + mins(2 * k), s + mins(2 * k + 1), json!({})).await;
    }
    let meeting = s + mins(8);
    create(&app, &writer, "Meeting with sales", meeting, s + mins(60), json!({})).await;
    let bob_lunch = s + mins(9);
    create(&app, &writer_token(&app, BOB).await, "Lunch", bob_lunch, s + mins(60), json!({})).await;
    wait_switch(&app, TENANT, ALICE, meeting, "Meeting").await;
    wait_switch(&app, TENANT, BOB, bob_lunch, "Lunch").await;

    // The phone system is down while alice flips: each flip is tried once, and fails.
    rx.fail_next(ALICE, u32::MAX);
    let mut flips: Vec<(DateTime<Utc>, &str)> = Vec::new();
    for k in 0..4 {
        flips.push((s + mins(2 * k), "Lunch"));
        flips.push((s + mins(2 * k + 1), "-"));
    }
    flips.push((meeting, "Meeting"));
    let mut last_seq = 0;
    for (at, profile) in &flips {
        advance_to(&app, *at).await;
        last_seq = eventually(&format!("the switch to {profile} at {at} to be tried"), async || {
            let tried = rx.attempts().into_iter().rev().find(|a| a.user() == ALICE);
            match tried {
                Some(a) if a.seq() > last_seq && a.json["profile"].as_str().unwrap_or("-") == *profile => {
                    assert_eq!(a.status, 500, "{a:?}");
                    Ok(a.seq())
                }
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        assert_eq!(metric(&app, OUTBOX).await, 1.0, "one message waits: alice's newest");
    }
    assert!(rx.delivered_to(ALICE).is_empty());

    // It comes back: one message, the current state, not the history.
    rx.fail_next(ALICE, 0);
    app.advance("10s").await;
    let got = rx.wait_delivered_to(ALICE, 1).await;
    rx.assert_quiet("only the current state").await;
    let got_now = rx.delivered_to(ALICE);
    assert_eq!(got_now.len(), 1, "{got_now:#?}");
    assert_eq!(got[0].json["profile"], "Meeting", "{:?}", got[0].json);
    assert_eq!(time(&got[0].json["since"]), meeting, "{:?}", got[0].json);
    assert_eq!(got[0].seq(), last_seq, "the newest message is the one delivered");
    wait_metric(&app, OUTBOX, 0.0).await;

    // Bob's switch is queued while the phone system refuses him; deleting him drops it.
    rx.fail_next(BOB, u32::MAX);
    advance_to(&app, bob_lunch).await;
    eventually("bob's switch to be tried", async || {
        if rx.attempts().iter().any(|a| a.user() == BOB && a.status == 500) { Ok(()) } else { Err("not yet".into()) }
    })
    .await;
    assert_eq!(metric(&app, OUTBOX).await, 1.0);
    delete_user(&app, TENANT, BOB).await;
    wait_metric(&app, OUTBOX, 0.0).await;
    // Had it stayed queued, it would go now: the phone system takes bob again, and the retry is due.
    rx.fail_next(BOB, 0);
    app.advance("10s").await;
    rx.assert_quiet("nothing for deleted bob").await;
    assert!(rx.delivered_to(BOB).is_empty());
    rx.stop().await;
    app.stop().await;
}

// ---- 6. deletion during a sync ----

#[tokio::test]
async fn a_user_deleted_while_google_answers_leaves_nothing_behind_and_their_channels_stopped() {
    let mut app = TestApp::start().await;
    app.setup_tenant().await;
    add_user(&app, TENANT, ALICE).await;
    synced(&app, TENANT, ALICE).await;
    let writer = writer_token(&app, ALICE).await;

    // Google holds alice's next events.list; she is deleted meanwhile.
    arm_fault(&app, json!({"method": LIST, "user": ALICE, "delay_ms": 2000})).await;
    let since = last_seq(&app).await;
    create(&app, &writer, "Lunch", minute_ahead(&app, mins(30)), minute_ahead(&app, mins(60)), json!({})).await;
    eventually("alice's sync to be held by Google", async || {
        if faults_left(&app).await == 0 { Ok(()) } else { Err("not yet".into()) }
    })
    .await;
    assert!(requests(&app, Some(LIST), since).await.is_empty(), "the list call is still held");
    let asked = Instant::now();
    delete_user(&app, TENANT, ALICE).await;
    assert!(asked.elapsed() < Duration::from_secs(1), "deleting took {:?}", asked.elapsed());

    // Google holds bob's events.watch (his first channel); he is deleted meanwhile.
    arm_fault(&app, json!({"method": WATCH, "user": BOB, "delay_ms": 2000})).await;
    add_user(&app, TENANT, BOB).await;
    eventually("bob's channel registration to be held by Google", async || {
        if faults_left(&app).await == 0 { Ok(()) } else { Err("not yet".into()) }
    })
    .await;
    delete_user(&app, TENANT, BOB).await;

    // The held calls complete.
    eventually("the held calls to be answered", async || {
        let list = requests(&app, Some(LIST), since).await.iter().any(|r| r["user"] == ALICE);
        let watch = requests(&app, Some(WATCH), since).await.iter().any(|r| r["user"] == BOB && r["status"] == 200);
        if list && watch { Ok(()) } else { Err(format!("list {list}, watch {watch}")) }
    })
    .await;
    // Google made bob a channel after he was deleted: it is stopped. Alice's too.
    all_stopped(&app, BOB).await;
    all_stopped(&app, ALICE).await;
    // Alice's sync has ended (no calendar waits any more).
    wait_metric(&app, "gwsync_dirty_calendars", 0.0).await;

    // Nothing is stored for either of them.
    app.stop_gwsync().await.expect("a clean stop");
    let store = SledStore::open(&app.data_path().join("db"), 8).expect("open the store");
    for u in [ALICE, BOB] {
        assert!(store.user(TENANT, u).await.expect("read").is_none(), "{u}");
        assert!(store.calendar_state(TENANT, u).await.expect("read").is_none(), "{u}'s calendar state was stored");
        assert!(store.events(TENANT, u).await.expect("read").is_empty(), "{u}'s events were stored");
        assert!(store.presence_record(TENANT, u).await.expect("read").is_none(), "{u}'s presence was stored");
        let live: Vec<_> =
            store.channels_of(TENANT, u).await.expect("read").into_iter().filter(|c| !c.orphaned).collect();
        assert!(live.is_empty(), "{u} has channels: {live:?}");
    }
    assert!(store.outbox().await.expect("read").is_empty());
    drop(store);
    app.stop().await;
}

#[tokio::test]
async fn deleting_a_company_answers_at_once_and_its_channels_are_stopped_afterwards() {
    let app = TestApp::start().await;
    app.setup_tenant().await;
    add_user(&app, TENANT, ALICE).await;
    let g = Company::create(&app, "globex", 12, None).await;
    g.upload_key(&app, &g.key).await;
    g.add_users(&app).await;
    synced(&app, TENANT, ALICE).await;
    for u in &g.users {
        synced(&app, g.tenant, u).await;
    }

    // Google holds the first channels.stop calls: the deletion does not wait for them.
    arm_fault(&app, json!({"method": STOP, "delay_ms": 1500, "count": 3})).await;
    let since = last_seq(&app).await;
    let asked = Instant::now();
    let r = app.api("DELETE", &format!("/api/v1/tenants/{}", g.tenant), None).await;
    let took = asked.elapsed();
    assert_eq!(r.status, 204, "{r:?}");
    assert!(took < Duration::from_secs(1), "deleting the company took {took:?}");
    assert!(requests(&app, Some(STOP), since).await.is_empty(), "no channel was stopped before the answer");
    let r = app.api("GET", &format!("/api/v1/tenants/{}", g.tenant), None).await;
    assert_eq!(r.status, 404, "{r:?}");

    // In the background, with the company's key, every channel is stopped.
    for u in &g.users {
        all_stopped(&app, u).await;
    }
    assert_eq!(faults_left(&app).await, 0, "the stop calls were held");
    assert!(fake_channels(&app, ALICE).await.iter().any(|c| c["state"] == "live"), "acme's channel is untouched");
    app.stop().await;
}

// ---- 7. fair lanes ----

#[tokio::test]
async fn a_company_with_many_calendars_queued_does_not_delay_another_companys_notification() {
    let app = TestApp::start().await;
    app.setup_tenant().await;
    add_user(&app, TENANT, ALICE).await;
    synced(&app, TENANT, ALICE).await;
    let writer = writer_token(&app, ALICE).await;

    // Company B: 40 calendars whose first events.list Google answers only after 3 s.
    let b = Company::create(&app, "globex", 40, None).await;
    b.upload_key(&app, &b.key).await;
    for u in &b.users {
        arm_fault(&app, json!({"method": LIST, "user": u, "delay_ms": 3000})).await;
    }
    b.add_users(&app).await;
    eventually("B's syncs to be held by Google", async || {
        let left = faults_left(&app).await;
        if left <= 36 { Ok(()) } else { Err(format!("{left} faults left")) }
    })
    .await;

    // A's single notification is not queued behind B's calendars.
    let changed = Instant::now();
    let id =
        create(&app, &writer, "Lunch", minute_ahead(&app, mins(30)), minute_ahead(&app, mins(60)), json!({})).await;
    eventually("A's change to be stored", async || {
        let events = stored(&app, ALICE).await;
        if events.iter().any(|e| e["id"] == id.as_str()) { Ok(()) } else { Err(format!("{events:?}")) }
    })
    .await;
    let took = changed.elapsed();
    assert!(took < Duration::from_secs(2), "A's change took {took:?} behind B's queue");
    let left = faults_left(&app).await;
    assert!(left >= 28, "B still had most of its calendars queued ({left} not yet listed): this proves nothing");
    let r = app.fake_control("DELETE", "/_fake/faults", Value::Null).await;
    assert!(r.status < 300, "{r:?}");
    app.stop().await;
}

// ---- 8. pacing per Google project ----

/// When fake Google logged a request (real time).
fn logged_at(r: &Value) -> DateTime<Utc> {
    time(&r["time"])
}

/// The fake's Calendar calls (not token grants) made for `users` since `since`, oldest first.
async fn calendar_calls(app: &TestApp, users: &[String], since: u64) -> Vec<Value> {
    requests(app, None, since)
        .await
        .into_iter()
        .filter(|r| r["method"].as_str().is_some_and(|m| m.starts_with("calendar.")))
        .filter(|r| r["user"].as_str().is_some_and(|u| users.iter().any(|x| x == u)))
        .collect()
}

#[tokio::test]
async fn one_companys_burst_is_paced_under_its_own_project_quota_and_does_not_slow_another() {
    // Each company's project allows 120 Calendar calls a minute, at fake Google and in gwsync:
    // gwsync paces each project at 90 % of it (108/min, one call per ~0.56 s) after a burst of 6.
    const PER_MINUTE: u32 = 120;
    let app = TestApp::start_with(|c| c.sync.project_requests_per_minute = PER_MINUTE).await;
    let r = app
        .fake_control(
            "PUT",
            "/_fake/quota",
            json!({"project_per_minute": PER_MINUTE, "calendar_per_user_per_minute": 600}),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    // Two companies, each with its own service account in its own Cloud project; no phonebook,
    // so every Google call is a calendar's.
    let a = Company::create_with(&app, "globex", 10, None, false).await;
    let b = Company::create_with(&app, "initech", 1, None, false).await;
    assert_ne!(a.key["project_id"], b.key["project_id"], "the companies' projects differ");
    a.upload_key(&app, &a.key).await;
    b.upload_key(&app, &b.key).await;

    // A registers 10 users at once: 20 calls (a channel and a full sync each), far more than
    // its burst.
    let since = last_seq(&app).await;
    a.add_users(&app).await;
    let burst = 6;
    eventually("A's burst to be spent and its calls paced", async || {
        let n = calendar_calls(&app, &a.users, since).await.len();
        if n > burst { Ok(()) } else { Err(format!("{n} calls")) }
    })
    .await;

    // B's user registers meanwhile: B's project has its own budget, so it syncs at once.
    let asked = Utc::now();
    let started = Instant::now();
    add_user(&app, b.tenant, &b.users[0]).await;
    synced(&app, b.tenant, &b.users[0]).await;
    let took = started.elapsed();
    let b_calls = calendar_calls(&app, &b.users, since).await;
    let a_at_b = calendar_calls(&app, &a.users, since).await;
    assert!(took < Duration::from_secs(2), "B's user took {took:?} to sync beside A's burst");
    assert_eq!(b_calls.len(), 2, "B: a channel and a full sync: {b_calls:#?}");
    let b_last = b_calls.iter().map(logged_at).max().expect("B's calls");
    assert!(
        b_last - asked < chrono::Duration::seconds(2),
        "B's calls ended {} after its user was added",
        b_last - asked
    );
    let a_left = 2 * a.users.len() - a_at_b.len();
    assert!(
        a_left >= 4,
        "A still had calls waiting for its budget when B was done ({a_left} left): this proves nothing"
    );

    // A goes on at its own pace until all its users are synced, never refused by Google.
    for u in &a.users {
        synced(&app, a.tenant, u).await;
    }
    let a_calls = calendar_calls(&app, &a.users, since).await;
    assert_eq!(a_calls.len(), 2 * a.users.len(), "{a_calls:#?}");
    assert!(logged_at(a_calls.last().expect("A's calls")) > b_last, "A's calls went on after B was done");
    let (first, last) = (logged_at(&a_calls[0]), logged_at(a_calls.last().expect("A's calls")));
    // 14 calls beyond the burst at one per 0.556 s: at least ~7.8 s (a little less for timing).
    let paced = (a_calls.len() - burst) as i64 * 60_000 / i64::from(PER_MINUTE * 9 / 10);
    assert!(
        (last - first).num_milliseconds() >= paced * 9 / 10,
        "A's {} calls took {} ms; its pace needs {paced} ms",
        a_calls.len(),
        (last - first).num_milliseconds()
    );
    let refused: Vec<Value> =
        requests(&app, None, since).await.into_iter().filter(|r| r["status"] == 429 || r["status"] == 403).collect();
    assert!(refused.is_empty(), "Google refused calls: {refused:#?}");
    app.stop().await;
}

// ---- 9. deletion while a token grant is held ----

/// A tenant's token endpoint (its key's `token_uri`) that holds every grant for one user until
/// released, then answers it with a real token from fake Google (fake Google's own token
/// endpoint answers at once: a `delay_ms` fault on `oauth2.token` is taken but not waited out).
/// Grants for anyone else are answered at once. Each grant is re-signed for fake Google's
/// audience with the key, as Google would mint it.
struct HeldGrants {
    url: String,
    state: std::sync::Arc<GrantState>,
    release: tokio::sync::watch::Sender<bool>,
    handle: actix_web::dev::ServerHandle,
}

struct GrantState {
    key: Value,
    fake_token_uri: String,
    user: String,
    /// Grants for `user` waiting now, and answered so far.
    waiting: std::sync::atomic::AtomicUsize,
    answered: std::sync::atomic::AtomicUsize,
    released: tokio::sync::watch::Receiver<bool>,
    http: reqwest::Client,
}

async fn held_grant(state: actix_web::web::Data<GrantState>, body: actix_web::web::Bytes) -> actix_web::HttpResponse {
    use std::sync::atomic::Ordering::SeqCst;
    let assertion = url::form_urlencoded::parse(&body).find(|(k, _)| k == "assertion").map(|(_, v)| v.into_owned());
    let asked: Value = assertion
        .as_deref()
        .and_then(|a| a.split('.').nth(1))
        .and_then(|p| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let held = asked["sub"] == state.user.as_str();
    if held {
        state.waiting.fetch_add(1, SeqCst);
        let _ = state.released.clone().wait_for(|r| *r).await;
    }
    let now = Utc::now().timestamp();
    let mut claims = json!({"iss": asked["iss"], "sub": asked["sub"], "aud": state.fake_token_uri,
                            "scope": asked["scope"], "iat": now, "exp": now + 3600});
    if asked["sub"].is_null() {
        claims.as_object_mut().expect("object").remove("sub");
    }
    let assertion = fake_google::jwt::sign(&state.key, &claims).expect("sign");
    let answer = state
        .http
        .post(&state.fake_token_uri)
        .form(&[("grant_type", fake_google::oauth::GRANT_TYPE), ("assertion", assertion.as_str())])
        .send()
        .await;
    let response = match answer {
        Ok(r) => {
            let status = actix_web::http::StatusCode::from_u16(r.status().as_u16()).expect("status");
            let body = r.bytes().await.unwrap_or_default();
            actix_web::HttpResponse::build(status).content_type("application/json").body(body)
        }
        Err(e) => actix_web::HttpResponse::BadGateway().body(e.to_string()),
    };
    if held {
        state.waiting.fetch_sub(1, SeqCst);
        state.answered.fetch_add(1, SeqCst);
    }
    response
}

impl HeldGrants {
    async fn start(app: &TestApp, key: &Value, user: &str) -> HeldGrants {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/token", listener.local_addr().expect("addr"));
        let (release, released) = tokio::sync::watch::channel(false);
        let state = std::sync::Arc::new(GrantState {
            key: key.clone(),
            fake_token_uri: app.fake.token_uri(),
            user: user.to_owned(),
            waiting: Default::default(),
            answered: Default::default(),
            released,
            http: reqwest::Client::builder().no_proxy().build().expect("client"),
        });
        let data = actix_web::web::Data::from(state.clone());
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new().app_data(data.clone()).route("/token", actix_web::web::post().to(held_grant))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        HeldGrants { url, state, release, handle }
    }

    fn waiting(&self) -> usize {
        self.state.waiting.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn answered(&self) -> usize {
        self.state.answered.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn release(&self) {
        let _ = self.release.send(true);
    }

    async fn stop(&self) {
        self.release();
        self.handle.stop(false).await;
    }
}

const TOKEN_GRANT: &str = "oauth2.token";

#[tokio::test]
async fn a_user_deleted_while_their_sync_waits_for_a_token_grant_gets_nothing_written() {
    let mut app = TestApp::start().await;
    app.setup_tenant().await;
    // Acme's key names a token endpoint that holds alice's grants until told.
    let grants = HeldGrants::start(&app, &app.key, ALICE).await;
    let mut key = app.key.clone();
    key["token_uri"] = json!(grants.url);
    let r = app
        .raw(
            "PUT",
            &format!("/api/v1/tenants/{TENANT}/credentials"),
            &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
            key.to_string().into_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    // Alice's calendar has an event: a sync that went on would store it and make her a channel.
    let writer = writer_token(&app, ALICE).await;
    let id =
        create(&app, &writer, "Lunch", minute_ahead(&app, mins(30)), minute_ahead(&app, mins(60)), json!({})).await;
    assert!(google_calendar(&app, ALICE).await.contains_key(&id));

    // Alice's first sync asks for her token, and the grant is held; she is deleted meanwhile.
    let since = last_seq(&app).await;
    add_user(&app, TENANT, ALICE).await;
    eventually("alice's token grant to reach the token endpoint and be held", async || {
        if grants.waiting() == 1 {
            Ok(())
        } else {
            Err(format!("{} waiting; {}", grants.waiting(), status_of(&app, TENANT, ALICE).await["sync"]))
        }
    })
    .await;
    assert!(calendar_calls(&app, &[ALICE.to_owned()], since).await.is_empty(), "the job waits for its token");
    let asked = Instant::now();
    delete_user(&app, TENANT, ALICE).await;
    assert!(asked.elapsed() < Duration::from_secs(1), "deleting took {:?}", asked.elapsed());

    // The grant is answered with a real token from Google: the job has it now …
    grants.release();
    eventually("the held grant to be answered", async || {
        let minted = requests(&app, Some(TOKEN_GRANT), since)
            .await
            .into_iter()
            .any(|r| r["user"] == ALICE && r["status"] == 200);
        if minted && grants.answered() == 1 {
            Ok(())
        } else {
            Err(format!("minted {minted}, {} answered", grants.answered()))
        }
    })
    .await;
    // … and a job for a user who still exists goes on to Google with such a token: bob, added
    // now, is synced and given a channel (alice's job, ahead of his, would show as much).
    add_user(&app, TENANT, BOB).await;
    synced(&app, TENANT, BOB).await;
    assert!(fake_channels(&app, BOB).await.iter().any(|c| c["state"] == "live"));
    wait_metric(&app, "gwsync_dirty_calendars", 0.0).await;

    // Nothing for alice: no channel at Google, none asked for, nothing stored.
    assert!(fake_channels(&app, ALICE).await.is_empty(), "Google has a channel for deleted alice");
    let watched: Vec<Value> =
        requests(&app, Some(WATCH), since).await.into_iter().filter(|r| r["user"] == ALICE).collect();
    assert!(watched.is_empty(), "a channel was asked for deleted alice: {watched:#?}");
    let r = app.api("GET", &format!("/api/v1/tenants/{TENANT}/users/{ALICE}"), None).await;
    assert_eq!(r.status, 404, "{r:?}");
    let r = app.api("GET", &format!("/api/v1/tenants/{TENANT}/users/{ALICE}/events"), None).await;
    assert_eq!(r.status, 404, "{r:?}");
    grants.stop().await;
    app.stop_gwsync().await.expect("a clean stop");
    let store = SledStore::open(&app.data_path().join("db"), 8).expect("open the store");
    assert!(store.user(TENANT, ALICE).await.expect("read").is_none());
    assert!(store.calendar_state(TENANT, ALICE).await.expect("read").is_none(), "alice's calendar state was stored");
    assert!(store.events(TENANT, ALICE).await.expect("read").is_empty(), "alice's events were stored");
    assert!(store.presence_record(TENANT, ALICE).await.expect("read").is_none(), "alice's presence was stored");
    assert!(store.channels_of(TENANT, ALICE).await.expect("read").is_empty(), "alice has channel records");
    assert!(store.calendar_state(TENANT, BOB).await.expect("read").is_some(), "bob's sync was stored");
    drop(store);
    app.stop().await;
}

// ---- 10. diagnose names a failing phone system ----

const PHONE_CHECK: &str = "Phone system receives profile switches";

/// The phone-system step of `GET …/diagnose?user=alice`, and whether the whole report passed.
async fn phone_step(app: &TestApp) -> (Value, bool) {
    let r = app.api("GET", &format!("/api/v1/tenants/{TENANT}/diagnose?user={ALICE}"), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let step = r.body["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["check"] == PHONE_CHECK)
        .cloned()
        .unwrap_or_else(|| panic!("no phone-system step: {}", r.body));
    (step, r.body["passed"] == true)
}

/// `gwsync diagnose --tenant acme --user alice` against the test server: (success, stdout).
async fn diagnose_cli(app: &TestApp) -> (bool, String) {
    let server = app.base().to_owned();
    tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gwsync"));
        cmd.args(["diagnose", "--tenant", TENANT, "--user", ALICE]);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("GWSYNC_") {
                cmd.env_remove(&k);
            }
        }
        let out = cmd
            .env("GWSYNC_SERVER", server)
            .env("GWSYNC_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .output()
            .expect("run gwsync diagnose");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    })
    .await
    .expect("join")
}

#[tokio::test]
async fn diagnose_reports_a_failing_phone_system_with_its_fix_and_passes_once_it_answers() {
    let app = TestApp::start_with(|c| {
        c.presence.delivery_timeout = Duration::from_secs(1);
        c.presence.delivery_alert_after = Duration::from_secs(120);
    })
    .await;
    // The phone system accepts connections and never answers.
    let hang = HangingServer::start().await;
    let url = hang.url("/hooks/gwsync");
    app.setup_tenant().await;
    connect_phone_system(&app, TENANT, DOMAIN, &url).await;
    add_user(&app, TENANT, ALICE).await;
    let start = minute_ahead(&app, mins(10));
    create(&app, &writer_token(&app, ALICE).await, "Lunch", start, start + mins(60), json!({})).await;
    wait_switch(&app, TENANT, ALICE, start, "Lunch").await;

    // Nothing has been sent yet: the step passes.
    let (step, _) = phone_step(&app).await;
    assert_eq!(step["outcome"], "passed", "{step}");
    assert!(step["detail"].as_str().is_some_and(|d| d.contains("nothing has failed")), "{step}");

    // Alice's switch is due and goes unanswered: retrying, still a pass (it may be a blip).
    advance_to(&app, start).await;
    let failing_since = eventually("the phone system to be retrying", async || {
        let p = tenant_status(&app, TENANT).await["phone_system"].clone();
        if p["state"] == "retrying" && !p["failing_since"].is_null() {
            Ok(time(&p["failing_since"]))
        } else {
            Err(p.to_string())
        }
    })
    .await;
    let (step, _) = phone_step(&app).await;
    assert_eq!(step["outcome"], "passed", "{step}");
    assert!(step["detail"].as_str().is_some_and(|d| d.contains("retrying")), "{step}");

    // Failing for longer than delivery_alert_after: the step fails, naming the URL, since when
    // and the error, with the fix.
    advance_to(&app, failing_since + secs(121)).await;
    assert_eq!(tenant_status(&app, TENANT).await["phone_system"]["state"], "failing");
    let (step, passed) = phone_step(&app).await;
    assert!(!passed, "a failing step fails the report");
    assert_eq!(step["outcome"], "failed", "{step}");
    let detail = step["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(&format!("deliveries to {url} fail since")), "{step}");
    assert!(detail.contains(&failing_since.to_rfc3339()[..16]), "{step}");
    let fix = step["fix"].as_str().unwrap_or_default();
    assert!(fix.contains("Check that the phone system is up at that URL"), "{step}");
    assert!(fix.contains("sends every user's current state once it answers"), "{step}");

    // The operator's command prints it the same way and exits non-zero.
    let (ok, out) = diagnose_cli(&app).await;
    assert!(!ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim_start().starts_with(&format!("FAIL  {PHONE_CHECK}: deliveries to {url}")))
        .unwrap_or_else(|| panic!("no FAIL line for the phone system:\n{out}"));
    assert!(
        lines.get(at + 1).is_some_and(|l| l.trim_start().starts_with("fix: Check that the phone system is up")),
        "the fix follows the failure:\n{out}"
    );

    // Following the fix: the phone system answers again, gets alice's state, and the step passes.
    let rx = Receiver::start(&secret(), app.clock.clone()).await;
    hang.forward_to(rx.addr);
    eventually("alice's state to reach the phone system", async || {
        if !rx.delivered_to(ALICE).is_empty() {
            return Ok(());
        }
        // Between probes: the next one is due at the end of the pause.
        let p = tenant_status(&app, TENANT).await["phone_system"].clone();
        if !p["paused_until"].is_null() && hang.open() == 0 {
            advance_to(&app, time(&p["paused_until"]) + chrono::Duration::milliseconds(100)).await;
        }
        Err(p.to_string())
    })
    .await;
    let step = eventually("the step to pass again", async || {
        let (step, _) = phone_step(&app).await;
        if step["outcome"] == "passed" { Ok(step) } else { Err(step.to_string()) }
    })
    .await;
    let detail = step["detail"].as_str().unwrap_or_default();
    assert!(!detail.contains("retrying") && !detail.contains("fail since"), "{step}");
    // And says when the phone system last took a message, as the status does.
    assert!(detail.contains(&format!("{url}: last delivered ")), "{step}");
    let p = tenant_status(&app, TENANT).await["phone_system"].clone();
    assert_eq!(p["state"], "ok", "{p}");
    assert!(time(&p["last_delivered"]) >= failing_since, "{p}");
    hang.stop();
    rx.stop().await;
    app.stop().await;
}

// ---- 11. a tenant's jobs are its own ----

/// A call with `token` instead of the admin token.
async fn call_as(app: &TestApp, token: &str, method: &str, path: &str) -> Reply {
    app.raw(method, path, &[("authorization", &format!("Bearer {token}"))], Vec::new()).await
}

/// A new token (its secret) made with the admin token: on `tenant`, or an operator's.
async fn mint(app: &TestApp, tenant: Option<&str>, name: &str, role: &str) -> String {
    let path = tenant.map_or_else(|| "/api/v1/tokens".to_owned(), |t| format!("/api/v1/tenants/{t}/tokens"));
    let r = app.api("POST", &path, Some(json!({"name": name, "role": role}))).await;
    assert_eq!(r.status, 201, "{r:?}");
    r.body["token"].as_str().expect("token").to_owned()
}

#[tokio::test]
async fn a_tenant_token_cannot_read_another_tenants_job_while_its_owner_and_operators_can() {
    let app = TestApp::start().await;
    app.setup_tenant().await;
    let g = Company::create(&app, "globex", 1, None).await;
    g.upload_key(&app, &g.key).await;
    let acme_admin = mint(&app, Some(TENANT), "it-dept", "tenant_admin").await;
    let acme_pbx = mint(&app, Some(TENANT), "pbx", "integration").await;
    let globex_admin = mint(&app, Some(g.tenant), "it-dept", "tenant_admin").await;
    let globex_pbx = mint(&app, Some(g.tenant), "pbx", "integration").await;
    let operator = mint(&app, None, "ops", "operator").await;

    // Each company's admin starts a phonebook sync: a job of its own.
    let start = async |token: &str, tenant: &str| {
        let r = call_as(&app, token, "POST", &format!("/api/v1/tenants/{tenant}/contacts/sync")).await;
        assert_eq!(r.status, 202, "{r:?}");
        let status = r.body["status"].as_str().expect("status").to_owned();
        assert_eq!(r.headers.get("location").and_then(|v| v.to_str().ok()), Some(status.as_str()), "{r:?}");
        assert_eq!(r.body["job"]["tenant"], tenant, "{r:?}");
        status
    };
    let acme_job = start(&acme_admin, TENANT).await;
    let globex_job = start(&globex_admin, g.tenant).await;

    // Its own tenant's tokens and every operator token read it, until it is done …
    for token in [acme_admin.as_str(), acme_pbx.as_str(), operator.as_str(), ADMIN_TOKEN] {
        let r = call_as(&app, token, "GET", &acme_job).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body["kind"], "contacts.sync", "{r:?}");
        assert_eq!(r.body["tenant"], TENANT, "{r:?}");
    }
    let done = eventually("acme's phonebook sync to finish", async || {
        let r = call_as(&app, &acme_admin, "GET", &acme_job).await;
        if r.body["state"] == "done" { Ok(r.body) } else { Err(r.body.to_string()) }
    })
    .await;
    assert!(done["result"].is_object(), "{done}");
    let r = call_as(&app, &globex_admin, "GET", &globex_job).await;
    assert_eq!(r.status, 200, "globex reads its own job: {r:?}");

    // … another tenant's tokens get exactly what an unknown job answers, and learn nothing of it.
    let unknown = call_as(&app, &acme_admin, "GET", "/api/v1/jobs/job_nosuch").await;
    assert_eq!(unknown.status, 404, "{unknown:?}");
    for (token, job) in
        [(&globex_admin, &acme_job), (&globex_pbx, &acme_job), (&acme_admin, &globex_job), (&acme_pbx, &globex_job)]
    {
        let r = call_as(&app, token, "GET", job).await;
        assert_eq!(r.status, 404, "{job}: {r:?}");
        assert_eq!(r.code(), unknown.code(), "{r:?}");
        let id = job.rsplit('/').next().expect("id");
        assert_eq!(r.message(), unknown.message().replace("job_nosuch", id), "{r:?}");
        assert!(!r.text.contains("contacts.sync"), "{r:?}");
    }
    app.stop().await;
}

// ---- 12. a company deleted during a sync ----

#[tokio::test]
async fn a_company_deleted_while_google_answers_a_sync_leaves_nothing_behind() {
    let mut app = TestApp::start().await;
    app.setup_tenant().await;
    add_user(&app, TENANT, ALICE).await;
    let g = Company::create(&app, "globex", 2, None).await;
    g.upload_key(&app, &g.key).await;
    g.add_users(&app).await;
    synced(&app, TENANT, ALICE).await;
    for u in &g.users {
        synced(&app, g.tenant, u).await;
    }
    // Its phonebook synced, an export token and a token of its own: all of it must go too.
    let r = app.api("POST", &format!("/api/v1/tenants/{}/contacts/sync", g.tenant), None).await;
    assert_eq!(r.status, 202, "{r:?}");
    let job = r.body["status"].as_str().expect("status").to_owned();
    eventually("globex's phonebook to be synced", async || {
        let r = app.api("GET", &job, None).await;
        if r.body["state"] == "done" { Ok(()) } else { Err(format!("{r:?}")) }
    })
    .await;
    let r = app.api("GET", &format!("/api/v1/tenants/{}/contacts/status", g.tenant), None).await;
    assert!(r.body["books"].as_array().is_some_and(|b| !b.is_empty()), "globex has a phonebook: {r:?}");
    let r = app.api("POST", &format!("/api/v1/tenants/{}/contacts/export-token", g.tenant), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = app
        .api(
            "POST",
            &format!("/api/v1/tenants/{}/tokens", g.tenant),
            Some(json!({"name": "pbx", "role": "integration"})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");

    // Google holds the next events.list of globex's first user; the company is deleted meanwhile.
    let held = &g.users[0];
    arm_fault(&app, json!({"method": LIST, "user": held, "delay_ms": 2000})).await;
    let since = last_seq(&app).await;
    let writer = g.writer(&app, held).await;
    create(&app, &writer, "Lunch", minute_ahead(&app, mins(30)), minute_ahead(&app, mins(60)), json!({})).await;
    eventually("the sync to be held by Google", async || {
        if faults_left(&app).await == 0 { Ok(()) } else { Err("not yet".into()) }
    })
    .await;
    assert!(
        requests(&app, Some(LIST), since).await.iter().all(|r| r["user"] != held.as_str()),
        "the list call is still held"
    );
    let asked = Instant::now();
    let r = app.api("DELETE", &format!("/api/v1/tenants/{}", g.tenant), None).await;
    assert_eq!(r.status, 204, "{r:?}");
    assert!(asked.elapsed() < Duration::from_secs(1), "deleting took {:?}", asked.elapsed());

    // The held call completes, with events a sync would store …
    eventually("the held list call to be answered", async || {
        let answered =
            requests(&app, Some(LIST), since).await.iter().any(|r| r["user"] == held.as_str() && r["status"] == 200);
        if answered { Ok(()) } else { Err("not yet".into()) }
    })
    .await;
    // … and the company's channels are stopped at Google, with its key, which is then discarded
    // (the keeper publishes its channel counts after that).
    for u in &g.users {
        all_stopped(&app, u).await;
    }
    eventually("the keeper's sweep to end", async || {
        let orphaned = metric(&app, r#"gwsync_channels{state="orphaned"}"#).await;
        if orphaned >= 1.0 { Ok(()) } else { Err(format!("{orphaned} orphaned")) }
    })
    .await;
    wait_metric(&app, "gwsync_dirty_calendars", 0.0).await;
    let r = app.api("GET", &format!("/api/v1/tenants/{}", g.tenant), None).await;
    assert_eq!(r.status, 404, "{r:?}");
    assert!(fake_channels(&app, ALICE).await.iter().any(|c| c["state"] == "live"), "acme's channel is untouched");

    // Nothing of globex is left in the store; acme is whole.
    app.stop_gwsync().await.expect("a clean stop");
    let store = SledStore::open(&app.data_path().join("db"), 8).expect("open the store");
    let t = g.tenant;
    assert!(store.tenant(t).await.expect("read").is_none());
    assert!(store.credentials(t).await.expect("read").is_none(), "its key is kept");
    assert!(store.retired_credentials(t).await.expect("read").is_none(), "its retired key is kept");
    assert!(store.users(t).await.expect("read").is_empty());
    for u in &g.users {
        assert!(store.user(t, u).await.expect("read").is_none(), "{u}");
        assert!(store.calendar_state(t, u).await.expect("read").is_none(), "{u}'s calendar state was stored");
        assert!(store.events(t, u).await.expect("read").is_empty(), "{u}'s events were stored");
        assert!(store.presence_record(t, u).await.expect("read").is_none(), "{u}'s presence was stored");
        assert!(store.channels_of(t, u).await.expect("read").is_empty(), "{u} has channel records");
    }
    assert!(store.channels().await.expect("read").iter().all(|c| c.tenant != t), "globex has channel records");
    assert!(store.contact_books(t).await.expect("read").is_empty(), "globex's phonebook is kept");
    assert!(store.contacts(t).await.expect("read").is_empty(), "globex's contacts are kept");
    assert!(
        store.tokens().await.expect("read").iter().all(|k| k.tenant.as_deref() != Some(t)),
        "globex's tokens are kept"
    );
    assert!(store.outbox().await.expect("read").is_empty());
    assert!(store.tenant(TENANT).await.expect("read").is_some());
    assert!(!store.channels_of(TENANT, ALICE).await.expect("read").is_empty());
    drop(store);
    app.stop().await;
}
