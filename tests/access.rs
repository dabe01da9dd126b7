//! Scoped access end to end (DESIGN §4 "Who may do what"): every route against every role, the
//! route table against the routes the code registers, revocation and expiry, tenants invisible
//! to each other, the audit log, and no secret in the audit log, the logs or the data directory.
mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{Value, json};

const BETA: &str = "beta";
const BETA_DOMAIN: &str = "beta.test";

async fn call(app: &TestApp, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Reply {
    call_at(&app.http, app.base(), method, path, token, body).await
}

async fn call_at(
    http: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Reply {
    let mut req = http.request(method.parse().expect("method"), format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    reply(req.send().await.expect("call")).await
}

/// Makes a token with `by` (on `tenant`, or an operator token); answers the 201 body.
async fn mint(app: &TestApp, by: &str, tenant: Option<&str>, name: &str, role: &str) -> Value {
    mint_at(&app.http, app.base(), by, tenant, json!({"name": name, "role": role})).await
}

async fn mint_at(http: &reqwest::Client, base: &str, by: &str, tenant: Option<&str>, body: Value) -> Value {
    let path = match tenant {
        Some(t) => format!("/api/v1/tenants/{t}/tokens"),
        None => "/api/v1/tokens".to_owned(),
    };
    let r = call_at(http, base, "POST", &path, Some(by), Some(&body)).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert!(r.body["token"].as_str().is_some_and(|t| t.starts_with("gws_")), "{r:?}");
    r.body
}

fn secret(token: &Value) -> String {
    token["token"].as_str().expect("token").to_owned()
}

/// acme (with its key, alice) and beta.
async fn two_tenants() -> TestApp {
    let app = TestApp::start().await;
    app.setup_tenant().await;
    let r = app.put_user(ALICE, json!({"external_id": "1042"})).await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = app.api("PUT", &format!("/api/v1/tenants/{BETA}"), Some(json!({"domain": BETA_DOMAIN}))).await;
    assert_eq!(r.status, 201, "{r:?}");
    app
}

// ---------------------------------------------------------------------------------------------
// The route table

/// Who may call a route, as DESIGN §4 says.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Who {
    /// No API token involved.
    Public,
    /// Any token (tenant tokens see their own tenant only).
    Any,
    Operator,
    /// The path's tenant: its tenant_admin tokens (and operators).
    Admin,
    /// The path's tenant: any of its tokens (and operators).
    Read,
}

struct Row {
    method: &'static str,
    pattern: &'static str,
    who: Who,
    /// A request to the route that changes nothing that matters to the rest of the test.
    path: &'static str,
    body: Option<Value>,
}

fn row(method: &'static str, pattern: &'static str, who: Who, path: &'static str, body: Option<Value>) -> Row {
    Row { method, pattern, who, path, body }
}

/// Every route of gwsync, once.
fn routes() -> Vec<Row> {
    use Who::*;
    let bad = Some(json!({"bad": true}));
    vec![
        row("GET", "/healthz", Public, "/healthz", None),
        row("GET", "/readyz", Public, "/readyz", None),
        row("GET", "/metrics", Public, "/metrics", None),
        row("POST", "/webhooks/google/calendar", Public, "/webhooks/google/calendar", None),
        row("GET", "/phonebook/{tenant}/{file}", Public, "/phonebook/acme/contacts.vcf", None),
        row("GET", "/api/v1/tenants", Any, "/api/v1/tenants", None),
        row("PUT", "/api/v1/tenants/{tenant}", Admin, "/api/v1/tenants/acme", bad.clone()),
        row("GET", "/api/v1/tenants/{tenant}", Read, "/api/v1/tenants/acme", None),
        row("DELETE", "/api/v1/tenants/{tenant}", Operator, "/api/v1/tenants/acme", None),
        row("PUT", "/api/v1/tenants/{tenant}/credentials", Admin, "/api/v1/tenants/acme/credentials", bad.clone()),
        row("GET", "/api/v1/tenants/{tenant}/users", Read, "/api/v1/tenants/acme/users", None),
        row(
            "PUT",
            "/api/v1/tenants/{tenant}/users/{email}",
            Admin,
            "/api/v1/tenants/acme/users/alice@acme.test",
            bad.clone(),
        ),
        row("GET", "/api/v1/tenants/{tenant}/users/{email}", Read, "/api/v1/tenants/acme/users/alice@acme.test", None),
        row(
            "DELETE",
            "/api/v1/tenants/{tenant}/users/{email}",
            Admin,
            "/api/v1/tenants/acme/users/nobody@acme.test",
            None,
        ),
        row(
            "GET",
            "/api/v1/tenants/{tenant}/users/{email}/events",
            Admin,
            "/api/v1/tenants/acme/users/alice@acme.test/events",
            None,
        ),
        row(
            "GET",
            "/api/v1/tenants/{tenant}/users/{email}/presence",
            Read,
            "/api/v1/tenants/acme/users/alice@acme.test/presence",
            None,
        ),
        row(
            "POST",
            "/api/v1/tenants/{tenant}/users/{email}/resync",
            Admin,
            "/api/v1/tenants/acme/users/alice@acme.test/resync",
            None,
        ),
        row(
            "GET",
            "/api/v1/tenants/{tenant}/diagnose",
            Admin,
            "/api/v1/tenants/acme/diagnose?user=alice@acme.test",
            None,
        ),
        row("POST", "/api/v1/channels/renew", Operator, "/api/v1/channels/renew?within=1m", None),
        row("GET", "/api/v1/jobs/{job}", Any, "/api/v1/jobs/job_none", None),
        row("GET", "/api/v1/tenants/{tenant}/contacts", Read, "/api/v1/tenants/acme/contacts?q=a", None),
        row(
            "GET",
            "/api/v1/tenants/{tenant}/contacts/lookup",
            Read,
            "/api/v1/tenants/acme/contacts/lookup?number=%2B46812345678",
            None,
        ),
        row("POST", "/api/v1/tenants/{tenant}/contacts/sync", Admin, "/api/v1/tenants/acme/contacts/sync", None),
        row("GET", "/api/v1/tenants/{tenant}/contacts/status", Read, "/api/v1/tenants/acme/contacts/status", None),
        row(
            "POST",
            "/api/v1/tenants/{tenant}/contacts/export-token",
            Admin,
            "/api/v1/tenants/acme/contacts/export-token",
            None,
        ),
        row(
            "POST",
            "/api/v1/tenants/{tenant}/phone-system/test",
            Admin,
            "/api/v1/tenants/acme/phone-system/test",
            None,
        ),
        row(
            "GET",
            "/api/v1/tenants/{tenant}/phone-system/deliveries",
            Admin,
            "/api/v1/tenants/acme/phone-system/deliveries",
            None,
        ),
        row("POST", "/api/v1/tokens", Operator, "/api/v1/tokens", bad.clone()),
        row("GET", "/api/v1/tokens", Operator, "/api/v1/tokens", None),
        row("DELETE", "/api/v1/tokens/{id}", Operator, "/api/v1/tokens/no-such-token", None),
        row("POST", "/api/v1/tenants/{tenant}/tokens", Admin, "/api/v1/tenants/acme/tokens", bad.clone()),
        row("GET", "/api/v1/tenants/{tenant}/tokens", Admin, "/api/v1/tenants/acme/tokens", None),
        row("DELETE", "/api/v1/tenants/{tenant}/tokens/{id}", Admin, "/api/v1/tenants/acme/tokens/no-such-token", None),
        row("GET", "/api/v1/audit", Operator, "/api/v1/audit", None),
        row("GET", "/api/v1/tenants/{tenant}/audit", Admin, "/api/v1/tenants/acme/audit", None),
    ]
}

/// Every `(method, path)` registered with `cfg.route("…", web::method()…)` in src/http. Any
/// other way of registering a handler fails the test: this scan must see every route.
fn registered_routes() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("src/http") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let src = std::fs::read_to_string(&path).expect("read");
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        for forbidden in ["web::resource(", "#[get(", "#[post(", "#[put(", "#[delete(", "#[route(", "web::method("] {
            assert!(
                !src.contains(forbidden),
                "{file} registers a route with {forbidden}: use cfg.route(\"…\", web::get().to(…)) so tests/access.rs sees it"
            );
        }
        let handlers = src.matches(".to(").count();
        let mut routes = 0;
        let mut rest = src.as_str();
        while let Some(i) = rest.find(".route(") {
            rest = &rest[i + ".route(".len()..];
            let after = rest.trim_start();
            let literal = after.strip_prefix('"').unwrap_or_else(|| panic!("{file}: .route( without a literal path"));
            let end = literal.find('"').expect("closing quote");
            let route_path = &literal[..end];
            let tail = literal[end + 1..].trim_start().strip_prefix(',').expect("comma").trim_start();
            let method = tail.strip_prefix("web::").and_then(|t| t.split_once("()")).map(|(m, _)| m.to_uppercase());
            let method = method.unwrap_or_else(|| panic!("{file}: the route {route_path} has no web::<method>()"));
            found.push((method, route_path.to_owned()));
            routes += 1;
        }
        assert_eq!(
            handlers, routes,
            "{file}: every handler (`.to(`) must be registered with cfg.route(\"…\", web::<method>().to(…))"
        );
    }
    found
}

#[test]
fn every_route_the_code_registers_has_an_access_decision_and_is_tested() {
    let tested: BTreeSet<(String, String)> =
        routes().iter().map(|r| (r.method.to_owned(), r.pattern.to_owned())).collect();
    assert_eq!(tested.len(), routes().len(), "a route is listed twice in this test");
    let decided: BTreeSet<(String, String)> =
        gwsync::access::policy::ROUTES.iter().map(|r| (r.method.to_owned(), r.pattern.to_owned())).collect();
    assert_eq!(decided, tested, "access::policy::ROUTES and this test list different routes");

    let registered = registered_routes();
    assert!(registered.len() > 20, "the scan found the routes: {registered:?}");
    let mut seen = BTreeSet::new();
    for (method, path) in &registered {
        let under_api = (method.clone(), format!("/api/v1{path}"));
        let at_root = (method.clone(), path.clone());
        let hit = match (decided.contains(&under_api), decided.contains(&at_root)) {
            (true, false) => under_api,
            (false, true) => at_root,
            (true, true) => panic!("{method} {path} is ambiguous (both at the root and under /api/v1)"),
            (false, false) => panic!(
                "{method} {path} has no access decision: add it to access::policy::ROUTES and to routes() in tests/access.rs"
            ),
        };
        assert!(seen.insert(hit.clone()), "{hit:?} registered twice");
    }
    let stale: Vec<_> = decided.difference(&seen).collect();
    assert!(stale.is_empty(), "the table lists routes the code does not register: {stale:?}");
}

/// A route that reaches the middleware without a table entry is refused (500), so a route
/// added without a decision is not open to every token meanwhile.
#[actix_web::test]
async fn a_route_missing_from_the_table_is_refused() {
    use actix_web::{App, HttpResponse, test, web};
    use gwsync::access::Access;
    use gwsync::app::AppState;
    use gwsync::store::SharedStore;
    use gwsync::store::sled_store::SledStore;
    use std::sync::Arc;

    let dir = tempfile::tempdir().expect("tempdir");
    let store: SharedStore = Arc::new(SledStore::open(dir.path(), 8).expect("store"));
    let config = gwsync::config::Config::default();
    let key = gwsync::secrets::MasterKey::from_bytes(&[1u8; 32]).expect("key");
    let state = Arc::new(
        AppState::new(
            config,
            store,
            key,
            &secrecy::SecretString::from(ADMIN_TOKEN),
            "http://127.0.0.1:9".parse().unwrap(),
            gwsync::clock::Clock::system(),
        )
        .expect("state"),
    );
    let access = web::Data::from(Arc::new(Access::new(state.clone())));
    let app = test::init_service(
        App::new().app_data(web::Data::from(state)).app_data(access).service(
            web::scope("/api/v1")
                .wrap(actix_web::middleware::from_fn(gwsync::http::access::guard))
                .route("/tenants", web::get().to(HttpResponse::Ok))
                .route("/new-thing", web::get().to(HttpResponse::Ok)),
        ),
    )
    .await;
    let get = |path: &str| {
        test::TestRequest::get()
            .uri(path)
            .insert_header(("authorization", format!("Bearer {ADMIN_TOKEN}")))
            .to_request()
    };
    let listed = test::call_service(&app, get("/api/v1/tenants")).await;
    assert_eq!(listed.status(), 200, "a route in the table answers, so the refusal below is about the table");
    let resp = test::call_service(&app, get("/api/v1/new-thing")).await;
    assert_eq!(resp.status(), 500);
    let body: Value = test::read_body_json(resp).await;
    assert_eq!(body["error"]["code"], "no_access_decision", "{body}");
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Allowed,
    Unauthorized,
    Forbidden,
    /// As if the tenant did not exist.
    NoSuchTenant,
}

fn expected(r: &Row, caller: &Caller) -> Outcome {
    use Outcome::*;
    let names_a_tenant = r.pattern.contains("{tenant}");
    match caller {
        Caller::Nobody if r.who == Who::Public => Allowed,
        Caller::Nobody => Unauthorized,
        Caller::Operator(_) => Allowed,
        Caller::Tenant { home, admin, .. } => match r.who {
            Who::Public | Who::Any => Allowed,
            _ if names_a_tenant && !home => NoSuchTenant,
            Who::Operator => Forbidden,
            Who::Admin if !admin => Forbidden,
            Who::Admin | Who::Read => Allowed,
        },
    }
}

#[derive(Debug, Clone)]
enum Caller {
    Nobody,
    Operator(String),
    /// A token of acme (`home`) or of beta, tenant_admin or integration.
    Tenant {
        secret: String,
        home: bool,
        admin: bool,
    },
}

impl Caller {
    fn token(&self) -> Option<&str> {
        match self {
            Caller::Nobody => None,
            Caller::Operator(s) | Caller::Tenant { secret: s, .. } => Some(s),
        }
    }
}

#[tokio::test]
async fn every_role_gets_what_the_design_says_on_every_route() {
    let app = two_tenants().await;
    let operator = secret(&mint(&app, ADMIN_TOKEN, None, "ops", "operator").await);
    let mut callers: Vec<(String, Caller)> = vec![
        ("no token".into(), Caller::Nobody),
        ("GWSYNC_ADMIN_TOKEN".into(), Caller::Operator(ADMIN_TOKEN.into())),
        ("an operator token".into(), Caller::Operator(operator)),
    ];
    for (tenant, home) in [(TENANT, true), (BETA, false)] {
        for (role, admin) in [("tenant_admin", true), ("integration", false)] {
            let s = secret(&mint(&app, ADMIN_TOKEN, Some(tenant), "t", role).await);
            callers.push((format!("{tenant}'s {role} token"), Caller::Tenant { secret: s, home, admin }));
        }
    }

    for r in routes() {
        let mut public_statuses = BTreeSet::new();
        for (label, caller) in &callers {
            let want = expected(&r, caller);
            // Deleting a tenant really deletes it: operators delete a scratch tenant instead.
            let mut path = r.path.to_owned();
            if r.method == "DELETE" && r.pattern == "/api/v1/tenants/{tenant}" && want == Outcome::Allowed {
                let made = app.api("PUT", "/api/v1/tenants/scratch", Some(json!({"domain": "scratch.test"}))).await;
                assert_eq!(made.status, 201, "{made:?}");
                path = "/api/v1/tenants/scratch".into();
            }
            let got = call(&app, r.method, &path, caller.token(), r.body.as_ref()).await;
            let what = format!("{} {} with {label}", r.method, path);
            if r.who == Who::Public {
                public_statuses.insert(got.status);
                continue;
            }
            match want {
                Outcome::Allowed => {
                    assert!(
                        ![401, 403, 500].contains(&got.status)
                            && !["tenant_not_found", "no_such_endpoint", "no_access_decision"].contains(&got.code()),
                        "{what}: should be allowed, got {got:?}"
                    );
                }
                Outcome::Unauthorized => {
                    assert_eq!((got.status, got.code()), (401, "unauthorized"), "{what}: {got:?}");
                }
                Outcome::Forbidden => {
                    assert_eq!((got.status, got.code()), (403, "forbidden"), "{what}: {got:?}");
                }
                Outcome::NoSuchTenant => {
                    assert_eq!((got.status, got.code()), (404, "tenant_not_found"), "{what}: {got:?}");
                }
            }
        }
        if r.who == Who::Public {
            assert_eq!(
                public_statuses.len(),
                1,
                "{} {}: a token changes nothing: {public_statuses:?}",
                r.method,
                r.path
            );
        }
    }
    let r = app.api("GET", "/api/v1/tenants/acme", None).await;
    assert_eq!(r.status, 200, "the refused deletions left acme alone: {r:?}");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Tokens

#[tokio::test]
async fn a_revoked_token_is_refused_from_its_next_use() {
    let app = two_tenants().await;
    let pbx = mint(&app, ADMIN_TOKEN, Some(TENANT), "pbx", "integration").await;
    let (id, s) = (pbx["id"].as_str().unwrap().to_owned(), secret(&pbx));
    assert_eq!(pbx["role"], "integration");
    assert_eq!(pbx["tenant"], TENANT);
    assert!(pbx["expires_at"].is_null(), "{pbx}");
    let users = format!("/api/v1/tenants/{TENANT}/users");
    let r = call(&app, "GET", &users, Some(&s), None).await;
    assert_eq!(r.status, 200, "{r:?}");

    // The tenant's list shows it without the secret, with its last use.
    let r = app.api("GET", &format!("/api/v1/tenants/{TENANT}/tokens"), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(!r.text.contains(&s), "a list never shows a secret: {r:?}");
    let listed = &r.body["tokens"][0];
    assert_eq!((listed["id"].as_str(), listed["name"].as_str()), (Some(id.as_str()), Some("pbx")), "{r:?}");
    assert!(listed["last_used_at"].is_string(), "the use just made shows: {r:?}");

    // Another tenant's admin can neither see nor revoke it.
    let beta_admin = secret(&mint(&app, ADMIN_TOKEN, Some(BETA), "beta-admin", "tenant_admin").await);
    let r = call(&app, "DELETE", &format!("/api/v1/tenants/{BETA}/tokens/{id}"), Some(&beta_admin), None).await;
    assert_eq!((r.status, r.code()), (404, "token_not_found"), "{r:?}");
    let r = call(&app, "DELETE", &format!("/api/v1/tenants/{TENANT}/tokens/{id}"), Some(&beta_admin), None).await;
    assert_eq!((r.status, r.code()), (404, "tenant_not_found"), "{r:?}");
    assert_eq!(call(&app, "GET", &users, Some(&s), None).await.status, 200, "still valid");

    // acme's own admin revokes it; the very next request is refused.
    let acme_admin = secret(&mint(&app, ADMIN_TOKEN, Some(TENANT), "it-dept", "tenant_admin").await);
    let r = call(&app, "DELETE", &format!("/api/v1/tenants/{TENANT}/tokens/{id}"), Some(&acme_admin), None).await;
    assert_eq!(r.status, 204, "{r:?}");
    let r = call(&app, "GET", &users, Some(&s), None).await;
    assert_eq!((r.status, r.code()), (401, "invalid_token"), "{r:?}");
    assert!(r.headers.get("www-authenticate").is_some(), "{r:?}");
    let r = app.api("GET", &format!("/api/v1/tenants/{TENANT}/tokens"), None).await;
    let listed: Vec<&Value> = r.body["tokens"].as_array().unwrap().iter().filter(|t| t["id"] == id.as_str()).collect();
    assert!(listed[0]["revoked_at"].is_string(), "{r:?}");

    // Operators revoke any token; an operator token can revoke itself.
    let ops = mint(&app, ADMIN_TOKEN, None, "ops", "operator").await;
    let ops_secret = secret(&ops);
    let r = call(&app, "GET", "/api/v1/tokens", Some(&ops_secret), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body["tokens"].as_array().unwrap().len() >= 4, "operators list every token: {r:?}");
    let r =
        call(&app, "DELETE", &format!("/api/v1/tokens/{}", ops["id"].as_str().unwrap()), Some(&ops_secret), None).await;
    assert_eq!(r.status, 204, "{r:?}");
    let r = call(&app, "GET", "/api/v1/tokens", Some(&ops_secret), None).await;
    assert_eq!((r.status, r.code()), (401, "invalid_token"), "{r:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_token_expires_on_the_clock() {
    let app = two_tenants().await;
    let body = json!({"name": "trial", "role": "integration", "expires_in": "1h"});
    let t = mint_at(&app.http, app.base(), ADMIN_TOKEN, Some(TENANT), body).await;
    let created: chrono::DateTime<chrono::Utc> = t["created_at"].as_str().unwrap().parse().unwrap();
    let expires: chrono::DateTime<chrono::Utc> = t["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(expires - created, chrono::Duration::hours(1), "{t}");
    let s = secret(&t);
    let path = format!("/api/v1/tenants/{TENANT}/users/{ALICE}/presence");
    app.advance("59m").await;
    let r = call(&app, "GET", &path, Some(&s), None).await;
    assert_eq!(r.status, 200, "valid for the hour: {r:?}");
    app.advance("2m").await;
    let r = call(&app, "GET", &path, Some(&s), None).await;
    assert_eq!((r.status, r.code()), (401, "invalid_token"), "{r:?}");

    // Bad requests for tokens say what to fix and make nothing.
    let before = app.api("GET", "/api/v1/tokens", None).await.body["tokens"].as_array().unwrap().len();
    for (path, body, field) in [
        ("/api/v1/tokens", json!({"name": "x", "role": "integration"}), "role"),
        ("/api/v1/tenants/acme/tokens", json!({"name": "x", "role": "operator"}), "role"),
        ("/api/v1/tenants/acme/tokens", json!({"name": "", "role": "integration"}), "name"),
        (
            "/api/v1/tenants/acme/tokens",
            json!({"name": "x", "role": "integration", "expires_in": "soon"}),
            "expires_in",
        ),
        ("/api/v1/tenants/acme/tokens", json!({"name": "x", "role": "integration", "expires_in": "1s"}), "expires_in"),
    ] {
        let r = app.api("POST", path, Some(body.clone())).await;
        assert_eq!((r.status, r.code()), (400, "invalid_request"), "{body}: {r:?}");
        assert!(r.message().starts_with(field), "{body}: {r:?}");
    }
    let r = app.api("POST", "/api/v1/tenants/acme/tokens", Some(json!({"name": "x", "role": "root"}))).await;
    assert_eq!((r.status, r.code()), (400, "invalid_json"), "{r:?}");
    let r = app.api("POST", "/api/v1/tenants/ghost/tokens", Some(json!({"name": "x", "role": "integration"}))).await;
    assert_eq!((r.status, r.code()), (404, "tenant_not_found"), "{r:?}");
    let after = app.api("GET", "/api/v1/tokens", None).await.body["tokens"].as_array().unwrap().len();
    assert_eq!(before, after, "no refused request made a token");
    app.stop().await;
}

#[tokio::test]
async fn other_tenants_do_not_exist_for_a_tenant_token() {
    let app = two_tenants().await;
    let beta = secret(&mint(&app, ADMIN_TOKEN, Some(BETA), "beta-pbx", "integration").await);
    let acme = secret(&mint(&app, ADMIN_TOKEN, Some(TENANT), "acme-admin", "tenant_admin").await);

    // beta's token on acme reads exactly like beta's token on a tenant that does not exist.
    for (existing_path, ghost_path) in [
        ("/api/v1/tenants/acme", "/api/v1/tenants/ghost"),
        ("/api/v1/tenants/acme/users/alice@acme.test", "/api/v1/tenants/ghost/users/alice@acme.test"),
        ("/api/v1/tenants/acme/contacts/lookup?number=1", "/api/v1/tenants/ghost/contacts/lookup?number=1"),
    ] {
        let seen = call(&app, "GET", existing_path, Some(&beta), None).await;
        let none = call(&app, "GET", ghost_path, Some(&beta), None).await;
        let operator_none = app.api("GET", ghost_path, None).await;
        assert_eq!((seen.status, seen.code()), (404, "tenant_not_found"), "{seen:?}");
        assert_eq!(seen.text.replace("acme", "ghost"), none.text, "{existing_path} vs {ghost_path}");
        assert_eq!(none.text, operator_none.text, "the same answer an operator gets for a missing tenant");
    }

    let ids = |r: &Reply| -> Vec<String> {
        r.body["tenants"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(ids(&call(&app, "GET", "/api/v1/tenants", Some(&beta), None).await), [BETA]);
    assert_eq!(ids(&call(&app, "GET", "/api/v1/tenants", Some(&acme), None).await), [TENANT]);
    assert_eq!(ids(&app.api("GET", "/api/v1/tenants", None).await), [TENANT, BETA]);

    // Writes across tenants are refused the same way and change nothing.
    let r = call(&app, "PUT", "/api/v1/tenants/beta", Some(&acme), Some(&json!({"domain": "evil.test"}))).await;
    assert_eq!((r.status, r.code()), (404, "tenant_not_found"), "{r:?}");
    assert_eq!(app.api("GET", "/api/v1/tenants/beta", None).await.body["domain"], BETA_DOMAIN);
    // Within its tenant, a tenant_admin changes things but does not delete the tenant.
    let r = call(
        &app,
        "PUT",
        &format!("/api/v1/tenants/{TENANT}/users/{BOB}"),
        Some(&acme),
        Some(&json!({"external_id": "5"})),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = call(&app, "DELETE", "/api/v1/tenants/acme", Some(&acme), None).await;
    assert_eq!((r.status, r.code()), (403, "forbidden"), "{r:?}");

    // A deleted tenant takes its tokens along: re-creating it does not bring them back.
    let r = app.api("DELETE", "/api/v1/tenants/beta", None).await;
    assert_eq!(r.status, 204, "{r:?}");
    let r = app.api("PUT", "/api/v1/tenants/beta", Some(json!({"domain": BETA_DOMAIN}))).await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = call(&app, "GET", "/api/v1/tenants/beta", Some(&beta), None).await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"), "{r:?}");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Audit

fn entries(r: &Reply) -> Vec<Value> {
    assert_eq!(r.status, 200, "{r:?}");
    r.body["entries"].as_array().expect("entries").clone()
}

#[tokio::test]
async fn changes_and_refusals_are_in_the_audit_log_newest_first_and_kept_for_the_retention() {
    let app = two_tenants().await;
    let admin = mint(&app, ADMIN_TOKEN, Some(TENANT), "it-dept", "tenant_admin").await;
    let pbx = mint(&app, ADMIN_TOKEN, Some(TENANT), "pbx", "integration").await;
    let beta = mint(&app, ADMIN_TOKEN, Some(BETA), "beta-admin", "tenant_admin").await;
    let (admin_s, pbx_s, beta_s) = (secret(&admin), secret(&pbx), secret(&beta));
    let bob = format!("/api/v1/tenants/{TENANT}/users/{BOB}");

    let r = call(&app, "PUT", &bob, Some(&admin_s), Some(&json!({"external_id": "7"}))).await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = call(&app, "PUT", &bob, Some(&pbx_s), Some(&json!({"external_id": "8"}))).await;
    assert_eq!(r.status, 403, "{r:?}");
    let r = call(&app, "DELETE", &bob, None, None).await;
    assert_eq!(r.status, 401, "{r:?}");
    let r = call(&app, "GET", &bob, Some(&beta_s), None).await;
    assert_eq!(r.status, 404, "{r:?}");
    let r = call(&app, "GET", &bob, Some(&admin_s), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let export = format!("/api/v1/tenants/{TENANT}/contacts/export-token");
    for _ in 0..2 {
        let r = call(&app, "POST", &export, Some(&admin_s), None).await;
        assert_eq!(r.status, 200, "{r:?}");
    }

    let all = entries(&app.api("GET", "/api/v1/audit?limit=100", None).await);
    let ids: Vec<u64> = all.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let actions: Vec<(&str, Option<&str>, u64)> = all
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["actor"]["name"].as_str(), e["status"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("contacts.export_token", Some("it-dept"), 200),
            ("contacts.export_token", Some("it-dept"), 200),
            ("user.get", Some("beta-admin"), 404),
            ("user.delete", None, 401),
            ("user.put", Some("pbx"), 403),
            ("user.put", Some("it-dept"), 201),
            ("token.create", Some("GWSYNC_ADMIN_TOKEN"), 201),
            ("token.create", Some("GWSYNC_ADMIN_TOKEN"), 201),
            ("token.create", Some("GWSYNC_ADMIN_TOKEN"), 201),
            ("tenant.put", Some("GWSYNC_ADMIN_TOKEN"), 201),
            ("user.put", Some("GWSYNC_ADMIN_TOKEN"), 201),
            ("tenant.credentials.put", Some("GWSYNC_ADMIN_TOKEN"), 200),
            ("tenant.put", Some("GWSYNC_ADMIN_TOKEN"), 201),
        ],
        "every change and refusal, no successful read: {all:#?}"
    );
    let put = &all[5];
    assert_eq!(put["actor"]["token_id"], admin["id"]);
    assert_eq!(put["actor"]["role"], "tenant_admin");
    assert_eq!(put["tenant"], TENANT);
    assert_eq!(put["target"], BOB);
    assert_eq!(put["route"], "PUT /api/v1/tenants/{tenant}/users/{email}");
    assert_eq!((all[1]["detail"].as_str(), all[0]["detail"].as_str()), (Some("made"), Some("replaced")));
    assert_eq!(all[6]["target"], beta["id"], "a new token's id is the target");
    assert_eq!(all[4]["code"], "forbidden");
    assert_eq!(all[3]["code"], "unauthorized");
    assert!(all[2]["tenant"].is_null(), "a probe of another tenant is not shown to that tenant's admins");

    // Paging: two at a time, no overlap, the same entries.
    let mut paged = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let path = match before {
            Some(b) => format!("/api/v1/audit?limit=2&before={b}"),
            None => "/api/v1/audit?limit=2".to_owned(),
        };
        let r = app.api("GET", &path, None).await;
        paged.extend(entries(&r));
        match r.body["next_before"].as_u64() {
            Some(b) => before = Some(b),
            None => break,
        }
    }
    assert_eq!(paged, all);

    // A tenant's admins read their tenant's entries only; an integration token reads none.
    let acme_view = entries(&call(&app, "GET", "/api/v1/tenants/acme/audit", Some(&admin_s), None).await);
    assert!(!acme_view.is_empty() && acme_view.iter().all(|e| e["tenant"] == TENANT), "{acme_view:#?}");
    assert!(acme_view.iter().all(|e| e["actor"]["name"] != "beta-admin"), "{acme_view:#?}");
    let beta_view = entries(&call(&app, "GET", "/api/v1/tenants/beta/audit", Some(&beta_s), None).await);
    assert!(beta_view.iter().all(|e| e["tenant"] == BETA), "{beta_view:#?}");
    let r = call(&app, "GET", "/api/v1/tenants/acme/audit", Some(&pbx_s), None).await;
    assert_eq!(r.status, 403, "{r:?}");
    let r = call(&app, "GET", "/api/v1/audit", Some(&admin_s), None).await;
    assert_eq!(r.status, 403, "{r:?}");
    let r = app.api("GET", "/api/v1/audit?before=soon", None).await;
    assert_eq!((r.status, r.code()), (400, "invalid_query"), "{r:?}");

    // Retention (90 days): the service prunes what is older, on its clock.
    app.advance("91d").await;
    let r = call(&app, "PUT", &bob, Some(&admin_s), Some(&json!({"external_id": "9"}))).await;
    assert_eq!(r.status, 200, "{r:?}");
    let oldest = all[0]["id"].as_u64().unwrap();
    let kept = eventually("the audit log pruned", async || {
        let now = entries(&app.api("GET", "/api/v1/audit?limit=1000", None).await);
        if now.iter().any(|e| e["id"].as_u64().unwrap() <= oldest) {
            return Err(format!("{} entries, old ones still there", now.len()));
        }
        Ok(now)
    })
    .await;
    assert_eq!(kept.len(), 1, "the change made after 91 days is kept: {kept:#?}");
    assert_eq!(kept[0]["action"], "user.put");
    app.stop().await;
}

/// "No secret in any audit entry or log line": the real `gwsync serve` at RUST_LOG=trace, with
/// tokens of every role made, used, misused and revoked; then the log, the audit log and every
/// file of the data directory are searched for each secret.
#[tokio::test]
async fn no_token_secret_or_key_reaches_the_audit_log_the_logs_or_the_data_dir() {
    let app = TestApp::start().await;
    let data = tempfile::tempdir().expect("data dir");
    let mut serve =
        ServeProcess::spawn(&app, data.path(), free_port(), &random_master_key(), &[("RUST_LOG", "trace")]).await;
    let (http, base) = (&app.http, serve.base().to_owned());
    let r =
        serve.api(&app, "PUT", "/api/v1/tenants/acme", Some(json!({"domain": DOMAIN, "directory_admin": IT}))).await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = app
        .http
        .put(format!("{base}/api/v1/tenants/acme/credentials"))
        .bearer_auth(ADMIN_TOKEN)
        .body(app.key.to_string())
        .send()
        .await
        .expect("upload");
    assert_eq!(r.status(), 200);

    let ops = mint_at(http, &base, ADMIN_TOKEN, None, json!({"name": "ops", "role": "operator"})).await;
    let admin = mint_at(http, &base, ADMIN_TOKEN, Some(TENANT), json!({"name": "it", "role": "tenant_admin"})).await;
    let pbx = mint_at(http, &base, &secret(&admin), Some(TENANT), json!({"name": "pbx", "role": "integration"})).await;
    let mut secrets: Vec<(String, String)> = vec![("the admin token".into(), ADMIN_TOKEN.into())];
    for t in [&ops, &admin, &pbx] {
        secrets.push((format!("the {} token's secret", t["name"]), secret(t)));
    }
    let r =
        call_at(http, &base, "POST", "/api/v1/tenants/acme/contacts/export-token", Some(&secret(&admin)), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    secrets.push(("the phonebook export token".into(), r.body["token"].as_str().unwrap().to_owned()));
    for l in app.key["private_key"].as_str().unwrap().lines().filter(|l| l.len() >= 16 && !l.starts_with("---")) {
        secrets.push(("a line of the private key".into(), l.to_owned()));
    }

    // Uses, refusals, and secrets put where they do not belong.
    let user = json!({"external_id": "1"});
    let alice = format!("/api/v1/tenants/acme/users/{ALICE}");
    assert_eq!(call_at(http, &base, "PUT", &alice, Some(&secret(&admin)), Some(&user)).await.status, 201);
    assert_eq!(call_at(http, &base, "PUT", &alice, Some(&secret(&pbx)), Some(&user)).await.status, 403);
    assert_eq!(call_at(http, &base, "GET", "/api/v1/audit", Some(&secret(&pbx)), None).await.status, 403);
    assert_eq!(call_at(http, &base, "GET", &alice, Some(&secret(&pbx)), None).await.status, 200);
    assert_eq!(call_at(http, &base, "DELETE", &alice, Some("gws_not-a-token-of-ours"), None).await.status, 401);
    let pasted = format!("/api/v1/tokens/{}", secret(&pbx));
    assert_eq!(call_at(http, &base, "DELETE", &pasted, Some(&secret(&ops)), None).await.status, 404);
    let pasted = format!("/api/v1/tenants/acme/tokens/{ADMIN_TOKEN}");
    assert_eq!(call_at(http, &base, "DELETE", &pasted, Some(ADMIN_TOKEN), None).await.status, 404);
    let pbx_path = format!("/api/v1/tenants/acme/tokens/{}", pbx["id"].as_str().unwrap());
    assert_eq!(call_at(http, &base, "DELETE", &pbx_path, Some(&secret(&admin)), None).await.status, 204);
    let r = call_at(http, &base, "GET", &alice, Some(&secret(&pbx)), None).await;
    assert_eq!(r.status, 401, "{r:?}");

    let audit = call_at(http, &base, "GET", "/api/v1/audit?limit=1000", Some(ADMIN_TOKEN), None).await;
    let entries = entries(&audit);
    assert!(entries.len() >= 12, "the audit log holds what was done: {entries:#?}");
    assert!(audit.text.contains("(redacted)"), "a pasted secret is replaced in the target: {entries:#?}");
    let (status, _) = serve.terminate().await;
    assert!(status.success(), "{status}");
    let log = serve.log_text();
    assert!(log.contains("TRACE") && log.contains("token created"), "the trace log was captured");

    let mut leaks = Vec::new();
    for (what, s) in &secrets {
        if audit.text.contains(s.as_str()) {
            leaks.push(format!("{what} is in the audit log"));
        }
        if log.contains(s.as_str()) {
            leaks.push(format!("{what} is in the log"));
        }
    }
    let files = files_under(data.path());
    assert!(!files.is_empty());
    let mut digest_seen = false;
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        digest_seen |= text.contains("\"digest\"");
        for (what, s) in secrets.iter().filter(|(w, _)| w.contains("token")) {
            if text.contains(s.as_str()) {
                leaks.push(format!("{what} is stored in {}", f.display()));
            }
        }
    }
    assert!(digest_seen, "the token records were in the files searched");
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Extractor errors

#[tokio::test]
async fn a_query_string_that_does_not_fit_answers_in_the_error_shape() {
    let app = two_tenants().await;
    for path in [
        "/api/v1/tenants/acme/contacts?page_size=abc",
        "/api/v1/tenants/acme/contacts?colour=blue",
        "/api/v1/channels/renew?within=1h&within=2h",
        "/api/v1/tenants/acme/audit?limit=-1",
    ] {
        let method = if path.contains("renew") { "POST" } else { "GET" };
        let r = app.api(method, path, None).await;
        assert_eq!((r.status, r.code()), (400, "invalid_query"), "{path}: {r:?}");
        assert!(r.message().starts_with("the query string does not fit"), "{path}: {r:?}");
        assert_eq!(r.headers.get("content-type").and_then(|v| v.to_str().ok()), Some("application/json"), "{path}");
    }
    app.stop().await;
}

/// The path and JSON extractor configuration `http::configure` installs, on routes that use
/// those extractors.
#[actix_web::test]
async fn path_and_json_extractor_errors_answer_in_the_error_shape() {
    use actix_web::{App, HttpResponse, test, web};

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[allow(dead_code)]
        n: u32,
    }
    let app = test::init_service(
        App::new()
            .configure(gwsync::http::extractor_errors)
            .route("/things/{n}", web::get().to(|_: web::Path<u32>| async { HttpResponse::Ok().finish() }))
            .route("/things", web::post().to(|_: web::Json<Body>| async { HttpResponse::Ok().finish() })),
    )
    .await;
    let cases = [
        (test::TestRequest::get().uri("/things/7").to_request(), 200, ""),
        (test::TestRequest::get().uri("/things/seven").to_request(), 400, "invalid_path"),
        (test::TestRequest::post().uri("/things").set_json(json!({"n": 1})).to_request(), 200, ""),
        (
            test::TestRequest::post().uri("/things").set_json(json!({"n": "secret-ish"})).to_request(),
            400,
            "invalid_json",
        ),
        (test::TestRequest::post().uri("/things").set_json(json!({"m": 1})).to_request(), 400, "invalid_json"),
        (
            test::TestRequest::post()
                .uri("/things")
                .insert_header(("content-type", "text/plain"))
                .set_payload("{}")
                .to_request(),
            415,
            "unsupported_media_type",
        ),
    ];
    for (req, status, code) in cases {
        let resp = test::call_service(&app, req).await;
        assert_eq!(resp.status().as_u16(), status);
        if status != 200 {
            let body: Value = test::read_body_json(resp).await;
            assert_eq!(body["error"]["code"], code, "{body}");
            assert!(!body.to_string().contains("secret-ish"), "no value is quoted back: {body}");
        }
    }
}
