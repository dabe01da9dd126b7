//! The outbound URL policy end to end (DESIGN §7): the phone-system URL and a key file's
//! `token_uri` must be https to a public address unless the operator allows the target with
//! `GWSYNC_OUTBOUND_ALLOW`; refused when saved (400 naming the field, nothing stored) and again
//! on the address actually connected; no redirects followed. The harness allows 127.0.0.0/8
//! (fake-google and the phone systems here listen on loopback); some tests narrow that.
mod common;
use common::*;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::{App, HttpResponse, HttpServer, web};
use base64::Engine;
use chrono::{DateTime, DurationRound, SecondsFormat, Utc};
use gwsync::store::Store;
use parking_lot::Mutex;
use serde_json::{Value, json};

fn secret() -> String {
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode([42u8; 32]))
}

/// A local HTTP server counting the requests it gets, answering `status` (with a `Location`).
struct Server {
    url: String,
    hits: Arc<AtomicUsize>,
    handle: actix_web::dev::ServerHandle,
}

impl Server {
    async fn start(status: u16, location: Option<String>) -> Server {
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = HttpServer::new(move || {
            let (h, location) = (h.clone(), location.clone());
            App::new().default_service(web::to(move || {
                let (h, location) = (h.clone(), location.clone());
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    let mut resp = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("status"));
                    if let Some(l) = location {
                        resp.insert_header(("location", l));
                    }
                    resp.finish()
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
        Server { url: format!("http://{addr}/hooks/gwsync"), hits, handle }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    async fn stop(self) {
        self.handle.stop(false).await;
    }
}

/// A TCP listener on loopback counting the connections it accepts (and speaking no TLS).
async fn tcp_counter() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (port, accepted)
}

async fn put_tenant(app: &TestApp, tenant: &str, url: &str) -> Reply {
    app.api(
        "PUT",
        &format!("/api/v1/tenants/{tenant}"),
        Some(json!({"domain": DOMAIN, "directory_admin": IT, "phone_system": {"url": url, "secret": secret()}})),
    )
    .await
}

async fn put_key(app: &TestApp, key: &Value) -> Reply {
    app.raw(
        "PUT",
        &format!("/api/v1/tenants/{TENANT}/credentials"),
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        key.to_string().into_bytes(),
    )
    .await
}

async fn tenant(app: &TestApp) -> Value {
    let r = app.api("GET", &format!("/api/v1/tenants/{TENANT}"), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body
}

fn assert_refused(r: &Reply, field: &str, code: &str) {
    assert_eq!((r.status, r.code()), (400, code), "{r:?}");
    assert!(r.message().starts_with(field) || r.message().contains(&format!(": {field}:")), "names {field}: {r:?}");
}

async fn counter(app: &TestApp, series: &str) -> f64 {
    metrics(app)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

const FAILED: &str = r#"gwsync_deliveries_total{outcome="failed"}"#;
const DELIVERED: &str = r#"gwsync_deliveries_total{outcome="delivered"}"#;

async fn wait_counter(app: &TestApp, series: &str, at_least: f64) {
    eventually(series, async || {
        let n = counter(app, series).await;
        if n >= at_least { Ok(()) } else { Err(format!("{n}")) }
    })
    .await;
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Alice with a Lunch profile and a lunch running now (on gwsync's clock); returns its end.
async fn alice_at_lunch(app: &TestApp) -> DateTime<Utc> {
    let r = app.put_user(ALICE, json!({"profiles": [{"name": "Lunch", "triggers": ["lunch"]}]})).await;
    assert_eq!(r.status, 201, "{r:?}");
    let start = (app.clock.now() + chrono::Duration::minutes(10)).duration_trunc(chrono::Duration::minutes(1)).unwrap();
    let end = start + chrono::Duration::minutes(60);
    let token = writer_token(app, ALICE).await;
    let body = json!({"summary": "Lunch", "start": {"dateTime": rfc(start)}, "end": {"dateTime": rfc(end)}});
    let r = google(app, "POST", "events", &token, Some(body)).await;
    assert_eq!(r.status, 200, "{r:?}");
    let path = format!("/api/v1/tenants/{TENANT}/users/{ALICE}/presence");
    eventually("the lunch to be synced", async || {
        let p = app.api("GET", &path, None).await;
        if p.body["upcoming"].as_array().is_some_and(|u| !u.is_empty()) { Ok(()) } else { Err(format!("{p:?}")) }
    })
    .await;
    let ms = (start - app.clock.now()).num_milliseconds() + 60_000;
    app.advance(&format!("{ms}ms")).await;
    eventually("alice at lunch", async || {
        let p = app.api("GET", &path, None).await;
        if p.body["profile"] == "Lunch" { Ok(()) } else { Err(format!("{p:?}")) }
    })
    .await;
    end
}

/// The last errors of the switches still queued in gwsync's database (gwsync stopped); at
/// least one. (How many messages are queued is the outbox's business, not this policy's.)
async fn last_errors(app: &TestApp) -> Vec<String> {
    let store = gwsync::store::sled_store::SledStore::open(&app.data_path().join("db"), 8).expect("open the store");
    let queued = store.outbox().await.expect("outbox");
    let errors: Vec<String> = queued.iter().filter_map(|m| m.last_error.clone()).collect();
    assert!(!errors.is_empty(), "a failed delivery is queued with its error: {queued:?}");
    errors
}

#[tokio::test]
async fn each_refused_phone_system_url_is_a_400_naming_the_field_and_nothing_is_stored() {
    let app = TestApp::start_with(|c| c.outbound_allow.clear()).await;
    let (port, _) = tcp_counter().await;
    // Accepted: https to a public name (not in DNS here: connections are screened anyway).
    let good = "https://pbx.acme.test/hooks/gwsync";
    let r = put_tenant(&app, TENANT, good).await;
    assert_eq!(r.status, 201, "{r:?}");

    for (url, says) in [
        ("https://169.254.169.254/latest".to_owned(), "metadata"),
        (format!("http://127.0.0.1:{port}/hooks"), "loopback"),
        ("https://10.0.0.1/hooks".to_owned(), "private"),
        ("https://192.168.1.20/hooks".to_owned(), "private"),
        ("https://[::1]/hooks".to_owned(), "loopback"),
        ("https://[fe80::1]/hooks".to_owned(), "link-local"),
        ("https://[fd00:ec2::254]/latest".to_owned(), "metadata"),
        ("https://100.100.100.200/latest".to_owned(), "metadata"),
        ("https://100.64.1.1/hooks".to_owned(), "shared"),
        ("https://0.0.0.0/hooks".to_owned(), "unspecified"),
        ("https://224.0.0.251/hooks".to_owned(), "multicast"),
        ("https://[::ffff:169.254.169.254]/latest".to_owned(), "metadata"),
        ("https://metadata.google.internal/computeMetadata/v1/".to_owned(), "metadata"),
        (format!("https://localhost:{port}/hooks"), "loopback"),
        ("http://pbx.acme.test/hooks".to_owned(), "https://"),
    ] {
        let r = put_tenant(&app, TENANT, &url).await;
        assert_refused(&r, "phone_system.url", "outbound_url_refused");
        assert!(r.message().contains(says) && r.message().contains("GWSYNC_OUTBOUND_ALLOW"), "{url}: {r:?}");
        assert_eq!(tenant(&app).await["phone_system"]["url"], good, "{url} was not stored");
        // A new tenant is not created either.
        let r = put_tenant(&app, "other", &url).await;
        assert_eq!(r.status, 400, "{r:?}");
        assert_eq!(app.api("GET", "/api/v1/tenants/other", None).await.status, 404, "{url}");
    }

    // Credentials in the URL: refused, and not echoed.
    let r = put_tenant(&app, TENANT, "https://gwsync:hunter2@pbx.acme.test/hooks").await;
    assert_refused(&r, "phone_system.url", "invalid_request");
    assert!(r.message().contains("password") && !r.text.contains("hunter2"), "{r:?}");
    let t = tenant(&app).await;
    assert_eq!(t["phone_system"]["url"], good);
    assert!(!t.to_string().contains("hunter2"), "{t}");
    app.stop().await;
}

#[tokio::test]
async fn a_key_whose_token_uri_is_refused_is_not_stored() {
    let app = TestApp::start_with(|c| c.outbound_allow.clear()).await;
    let r = app.api("PUT", &format!("/api/v1/tenants/{TENANT}"), Some(json!({"domain": DOMAIN}))).await;
    assert_eq!(r.status, 201, "{r:?}");
    // The fake's key points at the fake's token endpoint on loopback, which this gwsync does
    // not allow.
    assert!(app.key["token_uri"].as_str().unwrap().starts_with("http://127.0.0.1:"), "{}", app.key["token_uri"]);
    let mut keys = vec![app.key.clone()];
    for uri in ["https://169.254.169.254/token", "https://localhost/token", "https://[fd00::1]/token"] {
        let mut k = app.key.clone();
        k["token_uri"] = uri.into();
        keys.push(k);
    }
    for k in &keys {
        let r = put_key(&app, k).await;
        assert_eq!((r.status, r.code()), (400, "outbound_url_refused"), "{}: {r:?}", k["token_uri"]);
        assert!(r.message().contains("token_uri") && r.message().contains("GWSYNC_OUTBOUND_ALLOW"), "{r:?}");
        assert!(tenant(&app).await["credentials"].is_null(), "{} was stored", k["token_uri"]);
    }
    let mut k = app.key.clone();
    k["token_uri"] = "https://gwsync:hunter2@oauth2.googleapis.com/token".into();
    let r = put_key(&app, &k).await;
    assert_eq!((r.status, r.code()), (400, "invalid_key_file"), "{r:?}");
    assert!(r.message().contains("token_uri") && !r.text.contains("hunter2"), "{r:?}");

    // Google's own token endpoint passes (the upload does not call it).
    let mut k = app.key.clone();
    k["token_uri"] = "https://oauth2.googleapis.com/token".into();
    let r = put_key(&app, &k).await;
    assert_eq!(r.status, 200, "{r:?}");
    app.stop().await;
}

#[tokio::test]
async fn allowed_loopback_targets_may_use_plain_http_and_nothing_else_is_lifted() {
    let app = TestApp::start().await; // 127.0.0.0/8 allowed
    let rx = Server::start(204, None).await;
    for url in [rx.url.clone(), rx.url.replace("127.0.0.1", "localhost")] {
        let r = put_tenant(&app, TENANT, &url).await;
        assert!(matches!(r.status, 200 | 201), "{url}: {r:?}");
        assert_eq!(tenant(&app).await["phone_system"]["url"], url.as_str());
    }
    for url in ["https://[::1]/hooks", "https://10.0.0.1/hooks", "http://pbx.acme.test/hooks", "http://8.8.8.8/hooks"] {
        let r = put_tenant(&app, TENANT, url).await;
        assert_refused(&r, "phone_system.url", "outbound_url_refused");
    }
    rx.stop().await;
    app.stop().await;
}

/// An allow list the test changes between starts of gwsync.
fn switchable_allow_list() -> (Arc<Mutex<String>>, impl Fn(&mut gwsync::config::Config) + Send + Sync + 'static) {
    let allow = Arc::new(Mutex::new("127.0.0.0/8".to_owned()));
    let a = allow.clone();
    (allow, move |c: &mut gwsync::config::Config| c.outbound_allow = a.lock().clone())
}

/// A URL saved while allowed (as by an older gwsync, or before the operator narrowed the list)
/// is refused before each send: the delivery fails with a clear last_error, and nothing is sent.
#[tokio::test]
async fn a_stored_url_the_policy_now_refuses_fails_delivery_with_a_clear_error_and_sends_nothing() {
    let (allow, tweak) = switchable_allow_list();
    let mut app = TestApp::start_with(tweak).await;
    let rx = Server::start(204, None).await;
    app.setup_tenant().await;
    let end = alice_at_lunch(&app).await;
    let r = put_tenant(&app, TENANT, &rx.url).await;
    assert_eq!(r.status, 200, "{r:?}");
    // Allowed, the phone system hears that alice is at lunch.
    wait_counter(&app, DELIVERED, 1.0).await;
    assert_eq!(rx.hits(), 1);

    allow.lock().clear();
    app.restart().await;
    // Lunch ends: a new switch is due to the same URL.
    let ms = (end - app.clock.now()).num_milliseconds() + 1000;
    app.advance(&format!("{ms}ms")).await;
    wait_counter(&app, FAILED, 1.0).await;
    assert_eq!(counter(&app, DELIVERED).await, 0.0);
    assert_eq!(rx.hits(), 1, "nothing was sent to the refused URL");
    app.stop_gwsync().await.expect("clean stop");
    for error in last_errors(&app).await {
        assert!(
            error.contains("refused") && error.contains("loopback") && error.contains("GWSYNC_OUTBOUND_ALLOW"),
            "{error}"
        );
    }
    rx.stop().await;
    app.stop().await;
}

/// The connect-time check on the address actually connected: `https://localhost:…` names no
/// address, so only the resolver stands between it and loopback. Allowed, gwsync connects
/// (the TCP listener sees it; no TLS there, so the delivery fails); with loopback no longer
/// allowed, the resolver drops 127.0.0.1 and ::1 and gwsync connects nowhere.
#[tokio::test]
async fn a_name_whose_addresses_are_refused_at_connect_time_is_not_connected() {
    let (allow, tweak) = switchable_allow_list();
    let mut app = TestApp::start_with(tweak).await;
    let (port, accepted) = tcp_counter().await;
    app.setup_tenant().await;
    alice_at_lunch(&app).await;
    let r = put_tenant(&app, TENANT, &format!("https://localhost:{port}/hooks")).await;
    assert_eq!(r.status, 200, "{r:?}");
    wait_counter(&app, FAILED, 1.0).await;
    eventually("a connection to the listener", async || {
        if accepted.load(Ordering::SeqCst) > 0 { Ok(()) } else { Err("none".into()) }
    })
    .await;

    allow.lock().clear();
    app.stop_gwsync().await.expect("clean stop");
    let connections = accepted.load(Ordering::SeqCst);
    app.start_gwsync().await;
    // The retry is due.
    app.advance("10m").await;
    wait_counter(&app, FAILED, 1.0).await;
    assert_eq!(accepted.load(Ordering::SeqCst), connections, "no connection under the narrower policy");
    app.stop_gwsync().await.expect("clean stop");
    for error in last_errors(&app).await {
        assert!(
            error.contains("localhost resolves only to refused addresses (such as a loopback address)")
                && error.contains("GWSYNC_OUTBOUND_ALLOW"),
            "{error}"
        );
    }
    app.stop().await;
}

/// A phone system answering 307 to another local server: gwsync does not follow, the second
/// server gets nothing, and the delivery counts as failed. Pointed at the second server
/// directly, gwsync reaches it (so it could have been reached).
#[tokio::test]
async fn a_redirect_from_the_phone_system_is_not_followed() {
    let app = TestApp::start().await;
    let second = Server::start(204, None).await;
    let first = Server::start(307, Some(second.url.clone())).await;
    app.setup_tenant().await;
    alice_at_lunch(&app).await;
    let r = put_tenant(&app, TENANT, &first.url).await;
    assert_eq!(r.status, 200, "{r:?}");
    wait_counter(&app, FAILED, 1.0).await;
    assert!(first.hits() >= 1);
    assert_eq!(second.hits(), 0, "the redirect was followed");
    assert_eq!(counter(&app, DELIVERED).await, 0.0);

    let r = put_tenant(&app, TENANT, &second.url).await;
    assert_eq!(r.status, 200, "{r:?}");
    // The queued switch goes to the new URL, and so does everybody's current state.
    wait_counter(&app, DELIVERED, 1.0).await;
    assert!(second.hits() >= 1);
    first.stop().await;
    second.stop().await;
    app.stop().await;
}

/// A token endpoint answering 307 to the real (fake) one: yup-oauth2's requests are not
/// redirected either; the user's sync fails and Google's token endpoint hears nothing.
#[tokio::test]
async fn a_redirect_from_the_token_endpoint_is_not_followed() {
    let app = TestApp::start().await;
    let token_url = app.key["token_uri"].as_str().unwrap().to_owned();
    let redirector = Server::start(307, Some(token_url)).await;
    let r = app.api("PUT", &format!("/api/v1/tenants/{TENANT}"), Some(json!({"domain": DOMAIN}))).await;
    assert_eq!(r.status, 201, "{r:?}");
    let mut key = app.key.clone();
    key["token_uri"] = redirector.url.clone().into();
    let r = put_key(&app, &key).await;
    assert_eq!(r.status, 200, "{r:?}");
    let since = last_seq(&app).await;
    let r = app.put_user(ALICE, json!({"profiles": [{"name": "Lunch", "triggers": ["lunch"]}]})).await;
    assert_eq!(r.status, 201, "{r:?}");
    eventually("the sync to fail", async || {
        let s = user_status(&app, ALICE).await;
        if s["sync"]["last_error"].is_null() { Err(format!("{s}")) } else { Ok(()) }
    })
    .await;
    assert!(redirector.hits() >= 1);
    assert!(requests(&app, Some("oauth2.token"), since).await.is_empty(), "the redirect was followed");

    // With the key as Google made it, the same user syncs (the fake's endpoint was reachable).
    let r = put_key(&app, &app.key).await;
    assert_eq!(r.status, 200, "{r:?}");
    eventually("a token from the fake", async || {
        let n = requests(&app, Some("oauth2.token"), since).await.len();
        if n > 0 { Ok(()) } else { Err("no token request".into()) }
    })
    .await;
    redirector.stop().await;
    app.stop().await;
}
