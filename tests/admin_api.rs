//! The admin API end to end: every endpoint, its bad inputs and its auth, and data that
//! survives a restart. Real gwsync against the fake Google, over loopback.
mod common;
use common::*;

use base64::Engine;
use serde_json::{Value, json};

/// A Standard Webhooks secret (`whsec_` + base64 of 24 key bytes).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SECRET_B64: &str = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const PBX_URL: &str = "https://pbx.example/hooks/gwsync";

fn tenant_path(tenant: &str) -> String {
    format!("/api/v1/tenants/{tenant}")
}

fn user_path(email: &str) -> String {
    format!("/api/v1/tenants/{TENANT}/users/{email}")
}

fn bytes(v: &Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

/// `v` as JSON followed by spaces: exactly `len` bytes.
fn padded(v: &Value, len: usize) -> Vec<u8> {
    let mut b = bytes(v);
    assert!(b.len() <= len, "{} > {len}", b.len());
    b.resize(len, b' ');
    b
}

/// A call with the admin token and an optional content type.
async fn send(app: &TestApp, method: &str, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Reply {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let mut headers = vec![("authorization", auth.as_str())];
    if let Some(ct) = content_type {
        headers.push(("content-type", ct));
    }
    app.raw(method, path, &headers, body).await
}

async fn put_key(app: &TestApp, tenant: &str, content_type: Option<&str>, body: Vec<u8>) -> Reply {
    send(app, "PUT", &format!("{}/credentials", tenant_path(tenant)), content_type, body).await
}

/// A fresh key file from the fake, for a second service account of acme.test.
async fn another_key(app: &TestApp, name: &str) -> Value {
    let r = app.fake_control("POST", "/_fake/service-accounts", json!({"domain": DOMAIN, "name": name})).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_ne!(r.body["client_id"], app.key["client_id"]);
    r.body
}

/// The base64 lines of the PEM private key of `key`.
fn pem_lines(key: &Value) -> Vec<String> {
    let pem = key["private_key"].as_str().expect("private_key");
    let lines: Vec<String> =
        pem.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("-----")).map(str::to_owned).collect();
    assert!(lines.len() > 5, "a real PEM body");
    lines
}

fn assert_no_secrets(text: &str, key: &Value, what: &str) {
    assert!(!text.contains(SECRET_B64), "{what}: the webhook secret leaked: {text}");
    for line in pem_lines(key) {
        assert!(!text.contains(&line), "{what}: a line of the private key leaked: {text}");
    }
}

/// The API's error shape, with a status, a stable code and a message naming what to fix.
#[track_caller]
fn assert_error(r: &Reply, status: u16, code: &str, mentions: &[&str], what: &str) {
    assert_eq!(r.status, status, "{what}: {r:?}");
    assert!(
        r.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").starts_with("application/json"),
        "{what}: errors are JSON: {r:?}"
    );
    assert!(r.body["error"]["code"].is_string() && r.body["error"]["message"].is_string(), "{what}: {r:?}");
    assert_eq!(r.code(), code, "{what}: {r:?}");
    let message = r.message().to_lowercase();
    assert!(message.len() >= 10, "{what}: a message a person can act on: {r:?}");
    for m in mentions {
        assert!(message.contains(&m.to_lowercase()), "{what}: the message should mention '{m}': {}", r.message());
    }
}

/// Everything the admin API shows: every tenant, each one's users, and each user.
async fn snapshot(app: &TestApp) -> Value {
    let tenants = app.api("GET", "/api/v1/tenants", None).await;
    assert_eq!(tenants.status, 200, "{tenants:?}");
    let mut out = serde_json::Map::new();
    for t in tenants.body["tenants"].as_array().expect("tenants") {
        let id = t["id"].as_str().expect("id");
        let one = app.api("GET", &tenant_path(id), None).await;
        assert_eq!(one.status, 200, "{one:?}");
        assert_eq!(&one.body, t, "GET of one tenant shows what the list shows");
        let users = app.api("GET", &format!("{}/users", tenant_path(id)), None).await;
        assert_eq!(users.status, 200, "{users:?}");
        let mut each = Vec::new();
        for u in users.body["users"].as_array().expect("users") {
            let email = u["email"].as_str().expect("email");
            let mut r = app.api("GET", &format!("{}/users/{email}", tenant_path(id)), None).await;
            assert_eq!(r.status, 200, "{r:?}");
            // The sync status moves on its own (background syncs); the snapshot is the admin data.
            assert!(r.body["sync"].is_object(), "a user shows their sync status: {r:?}");
            if let Some(u) = r.body.as_object_mut() {
                u.remove("sync");
            }
            each.push(r.body);
        }
        out.insert(id.to_owned(), json!({"tenant": one.body, "users": users.body, "each": each}));
    }
    json!({"list": tenants.body, "tenants": out})
}

fn time(v: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().expect("a timestamp")).expect("RFC 3339")
}

fn alice_profiles() -> Value {
    json!([
        {"name": "Semester", "triggers": ["semester", "*ledig"]},
        {"name": "Lunch", "triggers": ["lunch", "lunchmöte"]},
        {"name": "Meeting", "triggers": ["*möte", "meeting"]},
    ])
}

/// acme with a phone system and alice with profiles, besides the key `setup_tenant` uploads.
async fn full_setup(app: &TestApp) {
    app.setup_tenant().await;
    let r = app
        .api(
            "PUT",
            &tenant_path(TENANT),
            Some(json!({
                "domain": DOMAIN, "directory_admin": IT, "default_region": "SE",
                "phone_system": {"url": PBX_URL, "secret": SECRET},
                "contacts": {"poll_interval": "30m", "personal_contacts": true},
            })),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = app.put_user(ALICE, json!({"external_id": "1042", "profiles": alice_profiles()})).await;
    assert_eq!(r.status, 201, "{r:?}");
}

async fn diagnose_alice(app: &TestApp) -> Reply {
    app.api("GET", &format!("{}/diagnose?user={ALICE}", tenant_path(TENANT)), None).await
}

#[track_caller]
fn assert_key_works(r: &Reply) {
    assert_eq!(r.status, 200, "{r:?}");
    let steps = r.body["steps"].as_array().expect("steps");
    assert!(steps.len() >= 2, "{r:?}");
    for s in &steps[..2] {
        assert_eq!(s["outcome"], "passed", "{s}");
    }
}

// ---------------------------------------------------------------------------------------------
// Auth
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_admin_endpoint_refuses_missing_wrong_and_near_miss_tokens_and_changes_nothing() {
    let app = TestApp::start().await;
    full_setup(&app).await;
    let before = snapshot(&app).await;
    let key2 = another_key(&app, "intruder").await;

    let json_ct = Some("application/json");
    let endpoints: Vec<(&str, String, Option<&str>, Vec<u8>)> = vec![
        ("GET", "/api/v1/tenants".into(), None, vec![]),
        ("GET", tenant_path(TENANT), None, vec![]),
        ("PUT", tenant_path(TENANT), json_ct, bytes(&json!({"domain": DOMAIN, "default_region": "US"}))),
        ("PUT", tenant_path("newco"), json_ct, bytes(&json!({"domain": "newco.test"}))),
        ("DELETE", tenant_path(TENANT), None, vec![]),
        ("PUT", format!("{}/credentials", tenant_path(TENANT)), None, bytes(&key2)),
        ("GET", format!("{}/users", tenant_path(TENANT)), None, vec![]),
        ("PUT", user_path(BOB), json_ct, bytes(&json!({"profiles": [{"name": "Lunch", "triggers": ["lunch"]}]}))),
        ("PUT", user_path(ALICE), json_ct, bytes(&json!({"external_id": "9999"}))),
        ("GET", user_path(ALICE), None, vec![]),
        ("DELETE", user_path(ALICE), None, vec![]),
        ("GET", format!("{}/diagnose?user={ALICE}", tenant_path(TENANT)), None, vec![]),
    ];

    let last = ADMIN_TOKEN.chars().last().expect("token");
    let near_miss = format!("{}{}", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1], if last == '9' { '8' } else { '9' });
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("admin:{ADMIN_TOKEN}"));
    let bad_auth: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("wrong token", Some("Bearer wrong-token".into())),
        ("token differing in the last character", Some(format!("Bearer {near_miss}"))),
        ("token missing its last character", Some(format!("Bearer {}", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1]))),
        ("token with an extra character", Some(format!("Bearer {ADMIN_TOKEN}0"))),
        ("Basic scheme", Some(format!("Basic {basic}"))),
        ("Token scheme with the right token", Some(format!("Token {ADMIN_TOKEN}"))),
        ("the right token without a scheme", Some(ADMIN_TOKEN.into())),
        ("Bearer without a token", Some("Bearer".into())),
    ];

    let since = app.fake_control("GET", "/_fake/requests", Value::Null).await.body["last_seq"].as_u64().unwrap();
    for (method, path, content_type, body) in &endpoints {
        for (what, auth) in &bad_auth {
            let mut headers: Vec<(&str, &str)> = Vec::new();
            if let Some(a) = auth {
                headers.push(("authorization", a.as_str()));
            }
            if let Some(ct) = content_type {
                headers.push(("content-type", ct));
            }
            let r = app.raw(method, path, &headers, body.clone()).await;
            let label = format!("{method} {path} with {what}");
            assert_error(&r, 401, "unauthorized", &["Bearer"], &label);
            let challenge = r.headers.get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or("");
            assert!(challenge.starts_with("Bearer"), "{label}: WWW-Authenticate: Bearer, got '{challenge}'");
            assert!(!r.text.contains(&near_miss) && !r.text.contains(ADMIN_TOKEN), "{label}: token echoed");
        }
    }

    assert_eq!(snapshot(&app).await, before, "refused calls changed nothing");
    assert_eq!(app.api("GET", &tenant_path(TENANT), None).await.body["credentials"]["client_id"], app.client_id);
    let calls = app.fake_control("GET", &format!("/_fake/requests?since={since}"), Value::Null).await;
    // Background syncs call events.list and events.watch on their own; only diagnose reads
    // settings and People.
    let diagnose_methods =
        ["calendar.settings.get", "people.people.connections.list", "people.people.listDirectoryPeople"];
    let google_calls: Vec<&Value> = calls.body["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| diagnose_methods.contains(&r["method"].as_str().unwrap_or("")))
        .collect();
    assert!(google_calls.is_empty(), "a refused diagnose reached Google: {google_calls:?}");

    // With the token everything answers: the 401s were about the token.
    let r = app.api("GET", &format!("{}/users", tenant_path(TENANT)), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    app.stop().await;
}

#[tokio::test]
async fn health_endpoints_need_no_token() {
    let app = TestApp::start().await;
    for path in ["/healthz", "/readyz"] {
        let r = app.raw("GET", path, &[], vec![]).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
        let r = app.raw("GET", path, &[("authorization", "Bearer wrong-token")], vec![]).await;
        assert_eq!(r.status, 200, "{path} with a wrong token: {r:?}");
    }
    let r = app.raw("GET", "/readyz", &[], vec![]).await;
    assert_eq!(r.body["status"], "ready", "{r:?}");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Tenants
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn tenants_are_created_updated_listed_and_deleted_with_their_users_and_key() {
    let app = TestApp::start().await;
    let mut texts: Vec<String> = Vec::new();

    // Create: 201, normalised, defaults filled in, the secret never shown.
    let r = app
        .api(
            "PUT",
            &tenant_path(TENANT),
            Some(json!({"domain": "ACME.Test", "directory_admin": "IT@Acme.test",
                        "phone_system": {"url": PBX_URL, "secret": SECRET}})),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    texts.push(r.text.clone());
    let created = r.body.clone();
    let got = app.api("GET", &tenant_path(TENANT), None).await;
    assert_eq!(got.status, 200, "{got:?}");
    texts.push(got.text.clone());
    assert_eq!(got.body, created, "GET shows what PUT answered");
    let t = &got.body;
    assert_eq!(t["id"], TENANT);
    assert_eq!(t["domain"], DOMAIN, "domain lower-cased");
    assert_eq!(t["directory_admin"], IT, "directory admin lower-cased");
    assert_eq!(t["default_region"], "SE");
    assert_eq!(t["contacts"], json!({"poll_interval": "15m", "personal_contacts": false}));
    assert_eq!(t["phone_system"]["url"], PBX_URL);
    assert_eq!(t["phone_system"]["secret_set"], true);
    assert!(t["phone_system"].get("secret").is_none(), "{t}");
    assert!(t["credentials"].is_null(), "no key yet: {t}");

    // Update: 200, created_at kept, updated_at moves.
    let r = app
        .api(
            "PUT",
            &tenant_path(TENANT),
            Some(json!({"domain": DOMAIN, "directory_admin": IT, "default_region": "us",
                        "phone_system": {"url": PBX_URL, "secret": SECRET},
                        "contacts": {"poll_interval": "30m", "personal_contacts": true}})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    texts.push(r.text.clone());
    let got = app.api("GET", &tenant_path(TENANT), None).await;
    texts.push(got.text.clone());
    assert_eq!(got.body["created_at"], created["created_at"], "created_at kept");
    assert!(time(&got.body["updated_at"]) > time(&created["updated_at"]), "updated_at moves: {}", got.text);
    assert_eq!(got.body["default_region"], "US");
    assert_eq!(got.body["contacts"], json!({"poll_interval": "30m", "personal_contacts": true}));
    assert_eq!(got.body["phone_system"], json!({"url": PBX_URL, "secret_set": true}));

    // A second tenant; the list shows both.
    let r = app.api("PUT", &tenant_path("beta"), Some(json!({"domain": "beta.test"}))).await;
    assert_eq!(r.status, 201, "{r:?}");
    let list = app.api("GET", "/api/v1/tenants", None).await;
    assert_eq!(list.status, 200, "{list:?}");
    texts.push(list.text.clone());
    let mut ids: Vec<&str> =
        list.body["tenants"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["acme", "beta"]);
    let listed_acme = list.body["tenants"].as_array().unwrap().iter().find(|t| t["id"] == TENANT).unwrap();
    assert_eq!(listed_acme, &got.body);

    // Moving a tenant that has users to another domain: 409, nothing changed.
    let r = app.put_user(ALICE, json!({"profiles": alice_profiles()})).await;
    assert_eq!(r.status, 201, "{r:?}");
    let before = app.api("GET", &tenant_path(TENANT), None).await;
    let r = app.api("PUT", &tenant_path(TENANT), Some(json!({"domain": "acme2.test"}))).await;
    assert_error(&r, 409, "tenant_has_users", &["acme.test", "acme2.test", "delete"], "domain change with users");
    assert_eq!(app.api("GET", &tenant_path(TENANT), None).await.body, before.body, "409 changed nothing");
    // A tenant without users may move.
    let r = app.api("PUT", &tenant_path("beta"), Some(json!({"domain": "beta2.test"}))).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["domain"], "beta2.test");

    // Delete: 204, then 404; its users and key are gone with it.
    upload_key(&app).await;
    let r = app.api("DELETE", &tenant_path(TENANT), None).await;
    assert_eq!(r.status, 204, "{r:?}");
    assert!(r.text.is_empty(), "{r:?}");
    let r = app.api("GET", &tenant_path(TENANT), None).await;
    assert_error(&r, 404, "tenant_not_found", &["acme"], "deleted tenant");
    let r = app.api("GET", &format!("{}/users", tenant_path(TENANT)), None).await;
    assert_error(&r, 404, "tenant_not_found", &[], "users of a deleted tenant");
    let r = app.api("GET", &user_path(ALICE), None).await;
    assert_error(&r, 404, "tenant_not_found", &[], "a user of a deleted tenant");
    let r = app.api("DELETE", &tenant_path(TENANT), None).await;
    assert_error(&r, 404, "tenant_not_found", &[], "deleting twice");
    let list = app.api("GET", "/api/v1/tenants", None).await;
    let ids: Vec<&str> = list.body["tenants"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["beta"], "beta is untouched");

    // Recreated under the same id, it starts empty: no users, no key.
    let r = app.api("PUT", &tenant_path(TENANT), Some(json!({"domain": DOMAIN}))).await;
    assert_eq!(r.status, 201, "a new tenant, not an update: {r:?}");
    assert!(r.body["credentials"].is_null(), "the old key is gone: {}", r.text);
    assert!(r.body["phone_system"].is_null(), "{}", r.text);
    let r = app.api("GET", &format!("{}/users", tenant_path(TENANT)), None).await;
    assert_eq!(r.body, json!({"users": []}), "the old users are gone");
    let r = app.api("GET", &user_path(ALICE), None).await;
    assert_error(&r, 404, "user_not_found", &[ALICE], "alice went with the tenant");
    let r = diagnose_alice(&app).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["steps"][0]["outcome"], "failed", "no key any more: {}", r.text);

    for text in &texts {
        assert!(!text.contains(SECRET) && !text.contains(SECRET_B64), "the secret leaked: {text}");
    }
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Credentials
// ---------------------------------------------------------------------------------------------

/// Uploads `app.key` to acme, which must exist.
async fn upload_key(app: &TestApp) {
    let r = put_key(app, TENANT, None, bytes(&app.key)).await;
    assert_eq!(r.status, 200, "{r:?}");
}

#[tokio::test]
async fn key_files_upload_with_any_content_type_and_broken_ones_are_refused_keeping_the_old_key() {
    let app = TestApp::start().await;
    let r = app.api("PUT", &tenant_path(TENANT), Some(json!({"domain": DOMAIN, "directory_admin": IT}))).await;
    assert_eq!(r.status, 201, "{r:?}");
    let key2 = another_key(&app, "second").await;
    let mut texts: Vec<String> = Vec::new();

    // The raw file, as `curl -T key.json` sends it, or with a JSON or binary content type.
    for (content_type, key) in [
        (None, &key2),
        (Some("application/json"), &app.key),
        (Some("application/octet-stream"), &key2),
        (None, &app.key),
    ] {
        let r = put_key(&app, TENANT, content_type, bytes(key)).await;
        assert_eq!(r.status, 200, "content type {content_type:?}: {r:?}");
        assert_eq!(r.body["client_email"], key["client_email"], "{r:?}");
        assert_eq!(r.body["client_id"], key["client_id"], "{r:?}");
        texts.push(r.text.clone());
        let t = app.api("GET", &tenant_path(TENANT), None).await;
        assert_eq!(t.body["credentials"]["client_id"], key["client_id"], "{}", t.text);
        assert_eq!(t.body["credentials"]["client_email"], key["client_email"], "{}", t.text);
        texts.push(t.text.clone());
    }
    // The file as the console saved it (pretty-printed) is fine too.
    let pretty = serde_json::to_vec_pretty(&app.key).unwrap();
    let r = put_key(&app, TENANT, None, pretty).await;
    assert_eq!(r.status, 200, "{r:?}");
    texts.push(r.text.clone());
    texts.push(app.api("GET", "/api/v1/tenants", None).await.text);

    // Broken files: 400 naming the field; the stored key (app.key) stays.
    let broken = |field: &str, value: Option<Value>| {
        let mut k = key2.clone();
        match value {
            Some(v) => k[field] = v,
            None => {
                k.as_object_mut().unwrap().remove(field);
            }
        }
        bytes(&k)
    };
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        ("type authorized_user", broken("type", Some(json!("authorized_user"))), &["type", "service_account"]),
        ("type missing", broken("type", None), &["type"]),
        ("client_email missing", broken("client_email", None), &["client_email"]),
        ("client_email not an address", broken("client_email", Some(json!("gwsync"))), &["client_email"]),
        ("client_id missing", broken("client_id", None), &["client_id"]),
        ("client_id not numeric", broken("client_id", Some(json!("abc"))), &["client_id"]),
        (
            "private_key garbage in PEM armour",
            broken("private_key", Some(json!("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))),
            &["private_key"],
        ),
        ("private_key not PEM", broken("private_key", Some(json!("ssh-rsa AAAAB3NzaC1yc2E"))), &["private_key"]),
        ("private_key missing", broken("private_key", None), &["private_key"]),
        ("token_uri not a URL", broken("token_uri", Some(json!("not a url"))), &["token_uri"]),
        ("not JSON", b"{not json".to_vec(), &["JSON"]),
        ("empty", Vec::new(), &["JSON"]),
        ("a JSON array", bytes(&json!([key2.clone()])), &["JSON object"]),
        ("a JSON string", bytes(&json!("service_account")), &["JSON object"]),
    ];
    for (what, body, mentions) in cases {
        for content_type in [None, Some("application/json")] {
            let r = put_key(&app, TENANT, content_type, body.clone()).await;
            assert_error(&r, 400, "invalid_key_file", mentions, what);
            texts.push(r.text.clone());
            assert_no_secrets(&r.text, &key2, what);
            let t = app.api("GET", &tenant_path(TENANT), None).await;
            assert_eq!(t.body["credentials"]["client_id"], app.client_id, "{what}: the old key stays: {}", t.text);
        }
    }

    // A token_uri the outbound policy refuses (DESIGN §7).
    for (what, body, mentions) in [
        (
            "token_uri plain http to Google",
            broken("token_uri", Some(json!("http://oauth2.googleapis.com/token"))),
            &["token_uri", "https"],
        ),
        (
            "token_uri plain http to a LAN host",
            broken("token_uri", Some(json!("http://10.0.0.5/token"))),
            &["token_uri", "private"],
        ),
    ] {
        let r = put_key(&app, TENANT, None, body).await;
        assert_error(&r, 400, "outbound_url_refused", mentions, what);
        assert_no_secrets(&r.text, &key2, what);
        let t = app.api("GET", &tenant_path(TENANT), None).await;
        assert_eq!(t.body["credentials"]["client_id"], app.client_id, "{what}: the old key stays: {}", t.text);
    }

    // Exactly 16 KiB is a key file; one byte more is not, and the old key stays.
    let r = put_key(&app, TENANT, None, padded(&key2, 16 * 1024)).await;
    assert_eq!(r.status, 200, "a key file of exactly 16 KiB: {r:?}");
    assert_eq!(r.body["client_id"], key2["client_id"]);
    let r = put_key(&app, TENANT, None, padded(&app.key, 16 * 1024 + 1)).await;
    assert_error(&r, 413, "payload_too_large", &["16384"], "a key file of 16 KiB + 1 byte");
    let t = app.api("GET", &tenant_path(TENANT), None).await;
    assert_eq!(t.body["credentials"]["client_id"], key2["client_id"], "{}", t.text);

    // The key in place is the one used: key2 has no delegation, so tokens fail with it.
    let r = diagnose_alice(&app).await;
    assert_eq!(r.status, 200, "{r:?}");
    texts.push(r.text.clone());
    assert_eq!(r.body["steps"][0]["outcome"], "passed", "{}", r.text);
    assert!(r.body["steps"][0]["detail"].as_str().unwrap_or("").contains(key2["client_id"].as_str().unwrap()));
    assert_eq!(r.body["steps"][1]["outcome"], "failed", "an undelegated key cannot sign in: {}", r.text);
    upload_key(&app).await;

    // Over 16 KiB: 413, the old key stays.
    let mut big = app.key.clone();
    big["padding"] = json!("x".repeat(17 * 1024));
    let r = put_key(&app, TENANT, None, bytes(&big)).await;
    assert_error(&r, 413, "payload_too_large", &[], "a key file over 16 KiB");
    let t = app.api("GET", &tenant_path(TENANT), None).await;
    assert_eq!(t.body["credentials"]["client_id"], app.client_id, "{}", t.text);

    // An unknown tenant: 404, and it is not created.
    let r = put_key(&app, "nobody", None, bytes(&app.key)).await;
    assert_error(&r, 404, "tenant_not_found", &["nobody"], "credentials for an unknown tenant");
    let r = app.api("GET", &tenant_path("nobody"), None).await;
    assert_eq!(r.status, 404, "{r:?}");

    // The key in place still signs in.
    let r = diagnose_alice(&app).await;
    assert_key_works(&r);
    texts.push(r.text.clone());

    for text in &texts {
        assert_no_secrets(text, &app.key, "a response");
        assert_no_secrets(text, &key2, "a response");
    }
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn users_are_created_updated_listed_and_deleted_with_ordered_profiles() {
    let app = TestApp::start().await;
    app.setup_tenant().await;

    // Create with a mixed-case address: 201, lower-cased, profiles in the order given.
    let r = app.put_user("Alice@ACME.test", json!({"external_id": "1042", "profiles": alice_profiles()})).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.body["email"], ALICE);
    assert_eq!(r.body["tenant"], TENANT);
    assert_eq!(r.body["external_id"], "1042");
    assert_eq!(r.body["profiles"], alice_profiles());
    let created = r.body.clone();
    for path in [user_path(ALICE), user_path("ALICE@acme.TEST")] {
        let r = app.api("GET", &path, None).await;
        assert_eq!(r.status, 200, "{path}: {r:?}");
        assert_eq!(r.body["email"], ALICE);
        assert_eq!(r.body["external_id"], "1042");
        assert_eq!(r.body["profiles"], alice_profiles(), "order preserved");
    }

    // The limits count characters, not bytes; a charset in the content type is fine; a body of
    // exactly 64 KiB is accepted and one byte more is not.
    let hundred = "ö".repeat(100);
    let body = json!({"external_id": "1042", "profiles": [{"name": "Möte", "triggers": [hundred.clone()]}]});
    let r =
        send(&app, "PUT", &user_path(ALICE), Some("application/json; charset=utf-8"), padded(&body, 64 * 1024)).await;
    assert_eq!(r.status, 200, "a 100-character trigger in a 64 KiB body: {r:?}");
    assert_eq!(r.body["profiles"][0]["triggers"], json!([hundred]));
    let r = send(&app, "PUT", &user_path(ALICE), Some("application/json"), padded(&body, 64 * 1024 + 1)).await;
    assert_error(&r, 413, "payload_too_large", &["65536"], "a user body of 64 KiB + 1 byte");
    let r = app.put_user(ALICE, json!({"external_id": "1042", "profiles": alice_profiles()})).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["created_at"], created["created_at"], "created_at kept");

    // Update: 200, new order and triggers, created_at kept.
    let reordered = json!([
        {"name": "Meeting", "triggers": ["möte"]},
        {"name": "Lunch", "triggers": ["lunch"]},
        {"name": "Away", "triggers": []},
    ]);
    let r = app.put_user(ALICE, json!({"external_id": "2001", "profiles": reordered})).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = app.api("GET", &user_path(ALICE), None).await;
    assert_eq!(r.body["external_id"], "2001");
    assert_eq!(r.body["profiles"], reordered, "the new order");
    assert_eq!(r.body["created_at"], created["created_at"], "created_at kept");
    assert!(time(&r.body["updated_at"]) > time(&created["updated_at"]), "updated_at moves");

    // A second user; and another tenant's user doesn't show up in acme's list.
    let r = app.put_user(BOB, json!({})).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.body["profiles"], json!([]));
    assert!(r.body["external_id"].is_null());
    let r = app.api("PUT", &tenant_path("beta"), Some(json!({"domain": "beta.test"}))).await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = app.api("PUT", "/api/v1/tenants/beta/users/carol@beta.test", Some(json!({}))).await;
    assert_eq!(r.status, 201, "{r:?}");
    let list = app.api("GET", &format!("{}/users", tenant_path(TENANT)), None).await;
    assert_eq!(list.status, 200, "{list:?}");
    let mut emails: Vec<&str> =
        list.body["users"].as_array().unwrap().iter().map(|u| u["email"].as_str().unwrap()).collect();
    emails.sort();
    assert_eq!(emails, [ALICE, BOB]);
    let alice_listed = list.body["users"].as_array().unwrap().iter().find(|u| u["email"] == ALICE).unwrap();
    assert_eq!(alice_listed["profiles"], reordered);
    let beta = app.api("GET", "/api/v1/tenants/beta/users", None).await;
    assert_eq!(beta.body["users"].as_array().unwrap().len(), 1, "{}", beta.text);

    // Delete: 204, then 404 user_not_found.
    let r = app.api("DELETE", &user_path(ALICE), None).await;
    assert_eq!(r.status, 204, "{r:?}");
    let r = app.api("GET", &user_path(ALICE), None).await;
    assert_error(&r, 404, "user_not_found", &[ALICE], "deleted user");
    let r = app.api("DELETE", &user_path(ALICE), None).await;
    assert_error(&r, 404, "user_not_found", &[], "deleting twice");
    let list = app.api("GET", &format!("{}/users", tenant_path(TENANT)), None).await;
    let emails: Vec<&str> =
        list.body["users"].as_array().unwrap().iter().map(|u| u["email"].as_str().unwrap()).collect();
    assert_eq!(emails, [BOB]);
    // Deleting a user does not touch the tenant's key.
    let t = app.api("GET", &tenant_path(TENANT), None).await;
    assert_eq!(t.body["credentials"]["client_id"], app.client_id);
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------------

struct Bad {
    what: &'static str,
    method: &'static str,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
    mentions: &'static [&'static str],
}

fn bad(
    what: &'static str,
    method: &'static str,
    path: String,
    body: Value,
    status: u16,
    code: &'static str,
    mentions: &'static [&'static str],
) -> Bad {
    Bad { what, method, path, content_type: Some("application/json"), body: bytes(&body), status, code, mentions }
}

fn tenant_cases() -> Vec<Bad> {
    let acme = tenant_path(TENANT);
    let new = tenant_path("newco");
    let ps = |url: &str, secret: &str| json!({"url": url, "secret": secret});
    let mut cases = Vec::new();
    for path in [acme.clone(), new.clone()] {
        let p = || path.clone();
        cases.extend([
            bad(
                "a bad domain",
                "PUT",
                p(),
                json!({"domain": "not a domain"}),
                400,
                "invalid_request",
                &["domain", "not a domain"],
            ),
            bad("a domain without a dot", "PUT", p(), json!({"domain": "acme"}), 400, "invalid_request", &["domain"]),
            bad(
                "a bad default_region",
                "PUT",
                p(),
                json!({"domain": DOMAIN, "default_region": "Sweden"}),
                400,
                "invalid_request",
                &["default_region"],
            ),
            bad(
                "an unknown default_region",
                "PUT",
                p(),
                json!({"domain": DOMAIN, "default_region": "XX"}),
                400,
                "invalid_request",
                &["default_region"],
            ),
            bad(
                "a directory_admin outside the domain",
                "PUT",
                p(),
                json!({"domain": DOMAIN, "directory_admin": "it@other.test"}),
                400,
                "invalid_request",
                &["directory_admin"],
            ),
            bad(
                "phone_system over plain http",
                "PUT",
                p(),
                json!({"domain": DOMAIN, "phone_system": ps("http://pbx.example/hooks", SECRET)}),
                400,
                "outbound_url_refused",
                &["phone_system.url", "https", "GWSYNC_OUTBOUND_ALLOW"],
            ),
            bad(
                "phone_system over plain http to a LAN address",
                "PUT",
                p(),
                json!({"domain": DOMAIN, "phone_system": ps("http://192.168.1.10/hooks", SECRET)}),
                400,
                "outbound_url_refused",
                &["phone_system.url", "private"],
            ),
            bad(
                "phone_system url not a URL",
                "PUT",
                p(),
                json!({"domain": DOMAIN, "phone_system": ps("pbx.example", SECRET)}),
                400,
                "invalid_request",
                &["phone_system.url"],
            ),
            bad(
                "a secret without whsec_",
                "PUT",
                p(),
                json!({"domain": DOMAIN, "phone_system": ps(PBX_URL, SECRET_B64)}),
                400,
                "invalid_request",
                &["phone_system.secret", "whsec_"],
            ),
            bad(
                "a secret that is not base64",
                "PUT",
                p(),
                json!({"domain": DOMAIN, "phone_system": ps(PBX_URL, "whsec_!!!not-base64!!!")}),
                400,
                "invalid_request",
                &["phone_system.secret"],
            ),
            bad(
                "a poll_interval of 5s",
                "PUT",
                p(),
                json!({"domain": DOMAIN, "contacts": {"poll_interval": "5s"}}),
                400,
                "invalid_request",
                &["contacts.poll_interval"],
            ),
            bad(
                "a poll_interval that is no duration",
                "PUT",
                p(),
                json!({"domain": DOMAIN, "contacts": {"poll_interval": "often"}}),
                400,
                "invalid_request",
                &["contacts.poll_interval"],
            ),
            bad(
                "an unknown field in a tenant",
                "PUT",
                p(),
                json!({"domain": DOMAIN, "colour": "red"}),
                400,
                "invalid_json",
                &["colour"],
            ),
            bad(
                "an unknown field in contacts",
                "PUT",
                p(),
                json!({"domain": DOMAIN, "contacts": {"pol_interval": "15m"}}),
                400,
                "invalid_json",
                &["pol_interval"],
            ),
            bad(
                "an unknown field in phone_system",
                "PUT",
                p(),
                json!({"domain": DOMAIN, "phone_system": {"url": PBX_URL, "secret": SECRET, "method": "GET"}}),
                400,
                "invalid_json",
                &["method"],
            ),
            bad("a number as domain", "PUT", p(), json!({"domain": 42}), 400, "invalid_json", &["expected"]),
            bad(
                "a string as personal_contacts",
                "PUT",
                p(),
                json!({"domain": DOMAIN, "contacts": {"personal_contacts": "yes"}}),
                400,
                "invalid_json",
                &["expected"],
            ),
            bad(
                "the secret as phone_system",
                "PUT",
                p(),
                json!({"domain": DOMAIN, "phone_system": SECRET}),
                400,
                "invalid_json",
                &["expected"],
            ),
            bad("no domain", "PUT", p(), json!({}), 400, "invalid_json", &["domain"]),
            bad("an array body", "PUT", p(), json!([{"domain": DOMAIN}]), 400, "invalid_json", &["expected"]),
        ]);
        cases.push(Bad {
            what: "invalid JSON",
            method: "PUT",
            path: p(),
            content_type: Some("application/json"),
            body: br#"{"domain": "acme.test""#.to_vec(),
            status: 400,
            code: "invalid_json",
            mentions: &[],
        });
        cases.push(Bad {
            what: "an empty body",
            method: "PUT",
            path: p(),
            content_type: Some("application/json"),
            body: Vec::new(),
            status: 400,
            code: "invalid_json",
            mentions: &[],
        });
        cases.push(Bad {
            what: "a tenant body over 64 KiB",
            method: "PUT",
            path: p(),
            content_type: Some("application/json"),
            body: bytes(&json!({"domain": DOMAIN, "pad": "x".repeat(70 * 1024)})),
            status: 413,
            code: "payload_too_large",
            mentions: &["65536"],
        });
        cases.push(Bad {
            what: "a tenant as text/plain",
            method: "PUT",
            path: p(),
            content_type: Some("text/plain"),
            body: bytes(&json!({"domain": DOMAIN})),
            status: 415,
            code: "unsupported_media_type",
            mentions: &["application/json"],
        });
        cases.push(Bad {
            what: "a tenant without a content type",
            method: "PUT",
            path: p(),
            content_type: None,
            body: bytes(&json!({"domain": DOMAIN})),
            status: 415,
            code: "unsupported_media_type",
            mentions: &["application/json"],
        });
    }
    for id in ["Acme!", "Acme", "-acme", "a_b"] {
        cases.push(bad(
            "a bad tenant id in the path",
            "PUT",
            tenant_path(id),
            json!({"domain": DOMAIN}),
            400,
            "invalid_request",
            &["tenant"],
        ));
        cases.push(bad(
            "a bad tenant id in the path",
            "GET",
            tenant_path(id),
            Value::Null,
            400,
            "invalid_request",
            &["tenant"],
        ));
    }
    cases.push(bad(
        "a tenant id of 64 characters",
        "PUT",
        tenant_path(&"a".repeat(64)),
        json!({"domain": DOMAIN}),
        400,
        "invalid_request",
        &["tenant"],
    ));
    cases.push(bad(
        "moving a tenant with users",
        "PUT",
        acme,
        json!({"domain": "acme2.test"}),
        409,
        "tenant_has_users",
        &["acme2.test"],
    ));
    cases.push(bad(
        "users of an unknown tenant",
        "GET",
        format!("{}/users", new),
        Value::Null,
        404,
        "tenant_not_found",
        &["newco"],
    ));
    cases
}

fn user_cases() -> Vec<Bad> {
    let long = "x".repeat(101);
    let mut cases = Vec::new();
    for email in [ALICE, BOB] {
        let p = || user_path(email);
        cases.extend([
            bad(
                "duplicate profile names",
                "PUT",
                p(),
                json!({"profiles": [{"name": "Lunch"}, {"name": "Meeting"}, {"name": "LUNCH"}]}),
                400,
                "invalid_request",
                &["profiles[2].name", "twice"],
            ),
            bad(
                "duplicate Unicode profile names",
                "PUT",
                p(),
                json!({"profiles": [{"name": "Möte"}, {"name": "MÖTE"}]}),
                400,
                "invalid_request",
                &["profiles[1].name"],
            ),
            bad(
                "duplicate profile names with spaces",
                "PUT",
                p(),
                json!({"profiles": [{"name": "Lunch"}, {"name": " lunch "}]}),
                400,
                "invalid_request",
                &["profiles[1].name"],
            ),
            bad(
                "an empty trigger",
                "PUT",
                p(),
                json!({"profiles": [{"name": "Lunch", "triggers": ["lunch", ""]}]}),
                400,
                "invalid_request",
                &["profiles[0].triggers[1]", "empty"],
            ),
            bad(
                "a blank trigger",
                "PUT",
                p(),
                json!({"profiles": [{"name": "Lunch", "triggers": ["   "]}]}),
                400,
                "invalid_request",
                &["profiles[0].triggers[0]"],
            ),
            bad(
                "a trigger of 101 characters",
                "PUT",
                p(),
                json!({"profiles": [{"name": "L", "triggers": ["ok"]}, {"name": "Lunch", "triggers": [long.clone()]}]}),
                400,
                "invalid_request",
                &["profiles[1].triggers[0]", "100"],
            ),
            bad(
                "* in the middle of a trigger",
                "PUT",
                p(),
                json!({"profiles": [{"name": "Lunch", "triggers": ["lu*nch"]}]}),
                400,
                "invalid_request",
                &["profiles[0].triggers[0]", "*"],
            ),
            bad(
                "an empty profile name",
                "PUT",
                p(),
                json!({"profiles": [{"name": ""}]}),
                400,
                "invalid_request",
                &["profiles[0].name"],
            ),
            bad(
                "an empty external_id",
                "PUT",
                p(),
                json!({"external_id": " "}),
                400,
                "invalid_request",
                &["external_id"],
            ),
            bad(
                "an unknown field in a user",
                "PUT",
                p(),
                json!({"nickname": "Al", "profiles": []}),
                400,
                "invalid_json",
                &["nickname"],
            ),
            bad(
                "an unknown field in a profile",
                "PUT",
                p(),
                json!({"profiles": [{"name": "Lunch", "trigers": ["lunch"]}]}),
                400,
                "invalid_json",
                &["trigers"],
            ),
            bad("a string as profiles", "PUT", p(), json!({"profiles": "Lunch"}), 400, "invalid_json", &["expected"]),
            bad(
                "a number as external_id",
                "PUT",
                p(),
                json!({"external_id": 1042}),
                400,
                "invalid_json",
                &["expected"],
            ),
            bad(
                "a string as triggers",
                "PUT",
                p(),
                json!({"profiles": [{"name": "Lunch", "triggers": "lunch"}]}),
                400,
                "invalid_json",
                &["expected"],
            ),
        ]);
        cases.push(Bad {
            what: "invalid JSON",
            method: "PUT",
            path: p(),
            content_type: Some("application/json"),
            body: b"{\"profiles\": [".to_vec(),
            status: 400,
            code: "invalid_json",
            mentions: &[],
        });
        cases.push(Bad {
            what: "a user body over 64 KiB",
            method: "PUT",
            path: p(),
            content_type: Some("application/json"),
            body: bytes(&json!({"profiles": [{"name": "L", "triggers": ["x".repeat(70 * 1024)]}]})),
            status: 413,
            code: "payload_too_large",
            mentions: &["65536"],
        });
        cases.push(Bad {
            what: "a user as text/plain",
            method: "PUT",
            path: p(),
            content_type: Some("text/plain"),
            body: bytes(&json!({"profiles": []})),
            status: 415,
            code: "unsupported_media_type",
            mentions: &["application/json"],
        });
    }
    let body = json!({"profiles": [{"name": "Lunch", "triggers": ["lunch"]}]});
    for (what, email) in [
        ("a malformed email in the path", "not-an-email"),
        ("an email with two @", "a@b@acme.test"),
        ("an email without a local part", "@acme.test"),
    ] {
        cases.push(bad(what, "PUT", user_path(email), body.clone(), 400, "invalid_request", &["email"]));
        cases.push(bad(what, "GET", user_path(email), Value::Null, 400, "invalid_request", &["email"]));
        cases.push(bad(what, "DELETE", user_path(email), Value::Null, 400, "invalid_request", &["email"]));
    }
    for email in ["mallory@evil.test", "alice@sub.acme.test"] {
        cases.push(bad(
            "a user outside the tenant's domain",
            "PUT",
            user_path(email),
            body.clone(),
            400,
            "invalid_request",
            &["email", DOMAIN],
        ));
    }
    cases.push(bad(
        "a user of an unknown tenant",
        "PUT",
        "/api/v1/tenants/newco/users/alice@newco.test".into(),
        body.clone(),
        404,
        "tenant_not_found",
        &["newco"],
    ));
    cases.push(bad(
        "a user in a bad tenant id",
        "PUT",
        format!("/api/v1/tenants/Acme!/users/{ALICE}"),
        body,
        400,
        "invalid_request",
        &["tenant"],
    ));
    cases.push(bad("an unknown user", "GET", user_path(BOB), Value::Null, 404, "user_not_found", &[BOB]));
    cases.push(bad("deleting an unknown user", "DELETE", user_path(BOB), Value::Null, 404, "user_not_found", &[BOB]));
    cases.push(bad(
        "diagnose for a user outside the domain",
        "GET",
        format!("{}/diagnose?user=mallory@evil.test", tenant_path(TENANT)),
        Value::Null,
        400,
        "invalid_request",
        &["email"],
    ));
    for path in
        ["/api/v1/nope", "/api/v1/tenants/acme/nope", "/api/v1/tenants/acme/users/alice@acme.test/nope", "/api/v1"]
    {
        cases.push(bad("an unknown endpoint", "GET", path.into(), Value::Null, 404, "no_such_endpoint", &[]));
    }
    cases
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let app = TestApp::start().await;
    full_setup(&app).await;
    let before = snapshot(&app).await;
    assert_eq!(before["tenants"]["acme"]["users"]["users"].as_array().unwrap().len(), 1);

    for case in tenant_cases().into_iter().chain(user_cases()) {
        let label = format!("{} ({} {})", case.what, case.method, case.path);
        let body = if case.method == "PUT" { case.body.clone() } else { Vec::new() };
        let r = send(&app, case.method, &case.path, case.content_type, body).await;
        assert_error(&r, case.status, case.code, case.mentions, &label);
        assert!(!r.text.contains(SECRET_B64), "{label}: the secret is echoed: {}", r.text);
        assert_eq!(snapshot(&app).await, before, "{label} changed something");
    }

    // The key still works and the server still answers.
    assert_key_works(&diagnose_alice(&app).await);
    let r = app.raw("GET", "/healthz", &[], vec![]).await;
    assert_eq!(r.status, 200, "{r:?}");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Persistence
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn tenants_users_and_the_key_survive_a_restart_and_stay_encrypted_at_rest() {
    let mut app = TestApp::start().await;
    full_setup(&app).await;
    let r =
        app.put_user(BOB, json!({"external_id": "77", "profiles": [{"name": "Away", "triggers": ["*ledig"]}]})).await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = app.api("PUT", &tenant_path("beta"), Some(json!({"domain": "beta.test", "default_region": "NO"}))).await;
    assert_eq!(r.status, 201, "{r:?}");
    let before = snapshot(&app).await;
    assert_key_works(&diagnose_alice(&app).await);

    app.restart().await;

    let after = snapshot(&app).await;
    assert_eq!(after, before, "the same data after a restart");
    let alice = app.api("GET", &user_path(ALICE), None).await;
    assert_eq!(alice.body["profiles"], alice_profiles(), "profiles in order after a restart");
    assert_eq!(alice.body["external_id"], "1042");
    let acme = app.api("GET", &tenant_path(TENANT), None).await;
    assert_eq!(acme.body["credentials"]["client_id"], app.client_id);
    assert_eq!(acme.body["phone_system"], json!({"url": PBX_URL, "secret_set": true}));
    assert_eq!(acme.body["contacts"], json!({"poll_interval": "30m", "personal_contacts": true}));

    // The stored key opens with the same master key and still signs in.
    let r = diagnose_alice(&app).await;
    assert_key_works(&r);
    assert!(r.text.contains(&app.client_id), "{}", r.text);

    // Neither the private key nor the webhook secret lies on disk in the clear.
    let files = files_under(app.data_path());
    assert!(!files.is_empty());
    for f in files {
        let content = String::from_utf8_lossy(&std::fs::read(&f).unwrap_or_default()).into_owned();
        assert_no_secrets(&content, &app.key, &f.display().to_string());
    }

    // Writes after the restart work and survive the next one.
    let r = app.put_user(IT, json!({"profiles": [{"name": "Lunch", "triggers": ["lunch"]}]})).await;
    assert_eq!(r.status, 201, "{r:?}");
    let before = snapshot(&app).await;
    app.restart().await;
    assert_eq!(snapshot(&app).await, before);
    app.stop().await;
}

#[tokio::test]
async fn back_to_back_restarts_keep_every_write() {
    // An operator restarting twice in a row (a deploy, then a config fix) must find everything.
    let mut app = TestApp::start().await;
    app.setup_tenant().await;
    for (i, email) in [ALICE, BOB, IT, "dana@acme.test", "erik@acme.test"].into_iter().enumerate() {
        let r = app.put_user(email, json!({"external_id": format!("{i}"), "profiles": alice_profiles()})).await;
        assert_eq!(r.status, 201, "{r:?}");
        let before = snapshot(&app).await;
        app.restart().await;
        assert_eq!(snapshot(&app).await, before, "after restart {i}");
    }
    let users = app.api("GET", &format!("{}/users", tenant_path(TENANT)), None).await;
    assert_eq!(users.body["users"].as_array().unwrap().len(), 5, "{}", users.text);
    assert_key_works(&diagnose_alice(&app).await);
    app.stop().await;
}
