//! Conformance of the token endpoint, API-call authorisation, quotas, armed faults and the
//! control API, as a client sees them on the wire (NOTES.md sections 4 and 5, checklist items
//! 1-5 and 23-25).
mod common;
use common::*;

use serde_json::{Value, json};

const SHORT_LIVED: &str = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.";
const UNAUTHORIZED_CLIENT: &str = "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.";
const INVALID_SCOPE: &str = "Invalid OAuth scope or ID token audience provided.";
const EVENTS: &str = "/calendar/v3/calendars/primary/events";
const CONNECTIONS: &str = "/v1/people/me/connections?personFields=names";
const DIRECTORY: &str = "/v1/people:listDirectoryPeople?readMask=names&sources=DIRECTORY_SOURCE_TYPE_DOMAIN_PROFILE";

// ---- helpers ----

/// Asserts an OAuth2-shaped token endpoint error (`error`, `error_description`).
fn assert_oauth_error(r: &Reply, status: u16, error: &str, description: Option<&str>) {
    assert_eq!(r.status, status, "status: {r:?}");
    assert_eq!(r.body["error"].as_str(), Some(error), "error: {r:?}");
    if let Some(d) = description {
        assert_eq!(r.body["error_description"].as_str(), Some(d), "error_description: {r:?}");
    }
    assert!(r.body.get("access_token").is_none(), "no token on an error: {r:?}");
}

/// Claims as the harness makes them, then changed by `edit`.
fn claims_with(env: &Env, sub: Option<&str>, scopes: &[&str], edit: impl FnOnce(&mut Value)) -> Value {
    let mut c = env.claims(sub, scopes);
    edit(&mut c);
    c
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// POSTs a form to the token endpoint.
async fn post_token_form(env: &Env, pairs: &[(&str, &str)]) -> Reply {
    reply(env.http.post(env.url("/token")).form(pairs).send().await.expect("token request")).await
}

/// A second service account (for `domain`) and its key file.
async fn new_account(env: &Env, domain: &str, name: &str) -> Value {
    let r = env.control("POST", "/_fake/service-accounts", Some(json!({"domain": domain, "name": name}))).await;
    assert_eq!(r.status, 201, "{r:?}");
    r.body
}

/// A control call that must succeed with `status`.
async fn control_ok(env: &Env, method: &str, path: &str, body: Value, status: u16) -> Reply {
    let r = env.control(method, path, Some(body)).await;
    assert_eq!(r.status, status, "{method} {path}: {r:?}");
    r
}

/// An API call with extra request headers.
async fn call_with_headers(env: &Env, path: &str, token: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = env.http.get(env.url(path)).bearer_auth(token);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    reply(req.send().await.expect("request")).await
}

/// Asserts a control API error: the status and `{"error": {"code", "message"}}`.
fn assert_control_error(r: &Reply, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: {r:?}");
    assert!(r.body["error"]["code"].as_str().is_some_and(|c| !c.is_empty()), "{what}: error.code: {r:?}");
    assert!(r.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: error.message: {r:?}");
}

/// Asserts a google.rpc (People) error: code, status name, and no legacy `errors[]`.
fn assert_rpc_error(r: &Reply, status: u16, rpc_status: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.body["error"]["code"], json!(status), "{r:?}");
    assert_eq!(r.body["error"]["status"].as_str(), Some(rpc_status), "{r:?}");
    assert!(r.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{r:?}");
    assert!(r.body["error"].get("errors").is_none(), "People errors carry no errors[]: {r:?}");
}

/// Asserts a Calendar legacy-envelope error: code, `errors[0]` domain and reason.
fn assert_calendar_error(r: &Reply, status: u16, domain: &str, reason: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.body["error"]["code"], json!(status), "{r:?}");
    assert_eq!(r.body["error"]["errors"][0]["domain"].as_str(), Some(domain), "{r:?}");
    assert_eq!(r.reason(), Some(reason), "{r:?}");
    assert!(r.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{r:?}");
}

/// The ErrorInfo detail of an error body.
fn error_info(r: &Reply) -> Value {
    r.body["error"]["details"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"))
        .cloned()
        .unwrap_or_else(|| panic!("no ErrorInfo detail in {r:?}"))
}

fn event_body() -> Value {
    json!({
        "summary": "Lunch with a customer",
        "start": {"dateTime": "2026-06-01T11:00:00Z"},
        "end": {"dateTime": "2026-06-01T12:00:00Z"},
    })
}

// ---- token endpoint ----

#[tokio::test]
async fn token_success_has_googles_shape() {
    let env = Env::new().await;
    let r = env.token_request(&env.key, &env.claims(Some(ALICE), &[CALENDAR_READONLY])).await;
    assert_eq!(r.status, 200, "{r:?}");
    let token = r.body["access_token"].as_str().expect("access_token is a string");
    assert!(token.starts_with("ya29."), "Google access tokens start with ya29.: {token}");
    assert_eq!(r.body["expires_in"], json!(3599), "{r:?}");
    assert_eq!(r.body["token_type"], json!("Bearer"), "{r:?}");
    assert!(r.body.get("refresh_token").is_none(), "the JWT-bearer grant gives no refresh token: {r:?}");
    let ct = r.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(ct.starts_with("application/json"), "content type {ct}");
    let again = env.token(ALICE, &[CALENDAR_READONLY]).await;
    assert_ne!(again, token, "every grant mints a new token");
    let list = env.get(EVENTS, token).await;
    assert_eq!(list.status, 200, "the token works: {list:?}");
    env.fake.stop().await;
}

#[tokio::test]
async fn token_rejects_other_grant_types() {
    let env = Env::new().await;
    let r = post_token_form(&env, &[("grant_type", "password"), ("code", "abc")]).await;
    assert_oauth_error(&r, 400, "unsupported_grant_type", Some("Invalid grant_type: password"));
    // authorization_code is Sign in with Google's grant (tests/oidc.rs); without a client it fails
    // on client authentication first, as at Google.
    let r = post_token_form(&env, &[("grant_type", "authorization_code"), ("code", "abc")]).await;
    assert_oauth_error(&r, 400, "invalid_request", Some("Could not determine client ID from request."));
    let r = post_token_form(&env, &[("assertion", "x.y.z")]).await;
    assert_oauth_error(&r, 400, "unsupported_grant_type", None);
    env.fake.stop().await;
}

#[tokio::test]
async fn token_requires_an_assertion() {
    let env = Env::new().await;
    let r = post_token_form(&env, &[("grant_type", fake_google::oauth::GRANT_TYPE)]).await;
    assert_oauth_error(&r, 400, "invalid_request", None);
    let d = r.body["error_description"].as_str().unwrap_or_default();
    assert!(d.contains("assertion"), "the description names the missing parameter: {d}");
    env.fake.stop().await;
}

#[tokio::test]
async fn token_requires_a_form_body() {
    let env = Env::new().await;
    let assertion = fake_google::jwt::sign(&env.key, &env.claims(Some(ALICE), &[CALENDAR_READONLY])).expect("sign");
    let form = format!("grant_type={}&assertion={assertion}", "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer");
    let resp = env
        .http
        .post(env.url("/token"))
        .header("content-type", "text/plain")
        .body(form)
        .send()
        .await
        .expect("token request");
    let r = reply(resp).await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body["error"].is_string(), "OAuth2 error shape: {r:?}");
    assert!(r.body.get("access_token").is_none(), "{r:?}");
    env.fake.stop().await;
}

#[tokio::test]
async fn token_rejects_bad_signatures() {
    let env = Env::new().await;
    for garbage in ["garbage", "a.b.c", "not-base64!.at-all?.x"] {
        let r = post_token_form(&env, &[("grant_type", fake_google::oauth::GRANT_TYPE), ("assertion", garbage)]).await;
        assert_oauth_error(&r, 400, "invalid_grant", Some("Invalid JWT Signature."));
    }
    // Our account's claims, signed with another account's key.
    let other = new_account(&env, DOMAIN, "other").await;
    let r = env.token_request(&other, &env.claims(Some(ALICE), &[CALENDAR_READONLY])).await;
    assert_oauth_error(&r, 400, "invalid_grant", Some("Invalid JWT Signature."));
    // The other account's own claims with its own key are fine (it just has no delegation).
    let own = claims_with(&env, None, &[CALENDAR_READONLY], |c| c["iss"] = other["client_email"].clone());
    let r = env.token_request(&other, &own).await;
    assert_eq!(r.status, 200, "{r:?}");
    env.fake.stop().await;
}

#[tokio::test]
async fn token_rejects_unknown_and_deleted_accounts() {
    let env = Env::new().await;
    let ghost = claims_with(&env, Some(ALICE), &[CALENDAR_READONLY], |c| {
        c["iss"] = json!("ghost@nowhere-123456.iam.gserviceaccount.com")
    });
    let r = env.token_request(&env.key, &ghost).await;
    assert_oauth_error(&r, 400, "invalid_grant", Some("Invalid grant: account not found"));

    let token = env.token(ALICE, &[CALENDAR_READONLY]).await;
    let email = env.key["client_email"].as_str().expect("client_email");
    let r = env.control("DELETE", &format!("/_fake/service-accounts/{email}"), None).await;
    assert_eq!(r.status, 204, "{r:?}");
    let r = env.token_request(&env.key, &env.claims(Some(ALICE), &[CALENDAR_READONLY])).await;
    assert_oauth_error(&r, 400, "invalid_grant", Some("Invalid grant: account not found"));
    let r = env.get(EVENTS, &token).await;
    assert_calendar_error(&r, 401, "global", "authError");
    env.fake.stop().await;
}

#[tokio::test]
async fn token_requires_a_short_lived_current_assertion() {
    let env = Env::new().await;
    let cases: [(&str, i64, i64); 4] = [
        ("lifetime over 60 minutes", now(), now() + 3601),
        ("exp in the past", now() - 7200, now() - 3600),
        ("iat an hour in the future", now() + 3600, now() + 4000),
        ("exp before iat", now(), now() - 10),
    ];
    for (what, iat, exp) in cases {
        let c = claims_with(&env, Some(ALICE), &[CALENDAR_READONLY], |c| {
            c["iat"] = json!(iat);
            c["exp"] = json!(exp);
        });
        let r = env.token_request(&env.key, &c).await;
        assert_eq!(r.status, 400, "{what}: {r:?}");
        assert_oauth_error(&r, 400, "invalid_grant", Some(SHORT_LIVED));
    }
    // Exactly 60 minutes, and an iat a minute ahead (client clock drift), are accepted.
    let c = claims_with(&env, Some(ALICE), &[CALENDAR_READONLY], |c| {
        c["iat"] = json!(now() + 60);
        c["exp"] = json!(now() + 60 + 3600);
    });
    let r = env.token_request(&env.key, &c).await;
    assert_eq!(r.status, 200, "a slightly early iat is tolerated: {r:?}");
    env.fake.stop().await;
}

#[tokio::test]
async fn token_checks_the_audience() {
    let env = Env::new().await;
    let wrong = claims_with(&env, Some(ALICE), &[CALENDAR_READONLY], |c| c["aud"] = json!("https://example.com/token"));
    let r = env.token_request(&env.key, &wrong).await;
    assert_oauth_error(&r, 400, "invalid_grant", None);
    let d = r.body["error_description"].as_str().unwrap_or_default();
    assert!(d.starts_with("Invalid JWT"), "{d}");
    let canonical = claims_with(&env, Some(ALICE), &[CALENDAR_READONLY], |c| {
        c["aud"] = json!("https://oauth2.googleapis.com/token")
    });
    let r = env.token_request(&env.key, &canonical).await;
    assert_eq!(r.status, 200, "Google's canonical audience is accepted: {r:?}");
    let own = env.token_request(&env.key, &env.claims(Some(ALICE), &[CALENDAR_READONLY])).await;
    assert_eq!(own.status, 200, "the key file's token_uri is accepted: {own:?}");
    env.fake.stop().await;
}

#[tokio::test]
async fn token_rejects_empty_or_malformed_scopes() {
    let env = Env::new().await;
    for scope in ["", "   ", "calendar", "https://www.googleapis.com/auth/calendar readonly"] {
        let c = claims_with(&env, Some(ALICE), &[], |c| c["scope"] = json!(scope));
        let r = env.token_request(&env.key, &c).await;
        assert_oauth_error(&r, 400, "invalid_scope", Some(INVALID_SCOPE));
    }
    let c = claims_with(&env, Some(ALICE), &[], |c| {
        c.as_object_mut().expect("claims object").remove("scope");
    });
    let r = env.token_request(&env.key, &c).await;
    assert_oauth_error(&r, 400, "invalid_scope", Some(INVALID_SCOPE));
    env.fake.stop().await;
}

#[tokio::test]
async fn token_rejects_an_unknown_subject() {
    let env = Env::new().await;
    let r = env.token_request(&env.key, &env.claims(Some("nobody@acme.test"), &[CALENDAR_READONLY])).await;
    assert_oauth_error(&r, 400, "invalid_grant", Some("Invalid email or User ID"));
    let r = env.token_request(&env.key, &env.claims(Some("nobody@unknown.test"), &[CALENDAR_READONLY])).await;
    assert_oauth_error(&r, 400, "invalid_grant", Some("Invalid email or User ID"));
    env.fake.stop().await;
}

#[tokio::test]
async fn token_without_delegation_is_unauthorized_client() {
    let env = Env::new().await;
    let other = new_account(&env, DOMAIN, "nodelegation").await;
    let c = claims_with(&env, Some(ALICE), &[CALENDAR_READONLY], |c| c["iss"] = other["client_email"].clone());
    let r = env.token_request(&other, &c).await;
    assert_oauth_error(&r, 401, "unauthorized_client", Some(UNAUTHORIZED_CLIENT));
    env.fake.stop().await;
}

#[tokio::test]
async fn token_with_a_scope_outside_the_delegation_is_unauthorized_client() {
    let env = Env::new().await;
    env.delegate(&[CALENDAR_READONLY]).await;
    let r = env.token_request(&env.key, &env.claims(Some(ALICE), &[CALENDAR_READONLY, CONTACTS_READONLY])).await;
    assert_oauth_error(&r, 401, "unauthorized_client", Some(UNAUTHORIZED_CLIENT));
    let r = env.token_request(&env.key, &env.claims(Some(ALICE), &[CALENDAR])).await;
    assert_oauth_error(&r, 401, "unauthorized_client", Some(UNAUTHORIZED_CLIENT));
    let r = env.token_request(&env.key, &env.claims(Some(ALICE), &[CALENDAR_READONLY])).await;
    assert_eq!(r.status, 200, "the delegated scope alone is fine: {r:?}");
    env.fake.stop().await;
}

#[tokio::test]
async fn token_after_delegation_is_revoked_is_unauthorized_client() {
    let env = Env::new().await;
    assert_eq!(env.token_request(&env.key, &env.claims(Some(ALICE), &[CALENDAR_READONLY])).await.status, 200);
    let r = env.control("PUT", &format!("/_fake/delegation/{}", env.client_id), Some(json!({"scopes": []}))).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = env.token_request(&env.key, &env.claims(Some(ALICE), &[CALENDAR_READONLY])).await;
    assert_oauth_error(&r, 401, "unauthorized_client", Some(UNAUTHORIZED_CLIENT));
    env.fake.stop().await;
}

#[tokio::test]
async fn token_for_a_user_of_another_domain_is_unauthorized_client() {
    let env = Env::new().await;
    control_ok(&env, "POST", "/_fake/domains", json!({"domain": "other.test", "users": ["eve@other.test"]}), 201).await;
    let r = env.token_request(&env.key, &env.claims(Some("eve@other.test"), &[CALENDAR_READONLY])).await;
    assert_oauth_error(&r, 401, "unauthorized_client", Some(UNAUTHORIZED_CLIENT));
    // eve is real: her own domain's delegated account can impersonate her.
    let key = new_account(&env, "other.test", "gwsync").await;
    let client_id = key["client_id"].as_str().expect("client_id");
    control_ok(&env, "PUT", &format!("/_fake/delegation/{client_id}"), json!({"scopes": [CALENDAR_READONLY]}), 200)
        .await;
    let c = claims_with(&env, Some("eve@other.test"), &[CALENDAR_READONLY], |c| c["iss"] = key["client_email"].clone());
    let r = env.token_request(&key, &c).await;
    assert_eq!(r.status, 200, "{r:?}");
    env.fake.stop().await;
}

#[tokio::test]
async fn token_without_sub_is_for_the_service_account_itself() {
    let env = Env::new().await;
    // Its own token needs no domain-wide delegation.
    control_ok(&env, "PUT", &format!("/_fake/delegation/{}", env.client_id), json!({"scopes": []}), 200).await;
    let r = env.token_request(&env.key, &env.claims(None, &[CALENDAR_READONLY])).await;
    assert_eq!(r.status, 200, "{r:?}");
    let token = r.body["access_token"].as_str().expect("access_token");
    let email = env.key["client_email"].as_str().expect("client_email");
    let list = env.get(EVENTS, token).await;
    assert_eq!(list.status, 200, "{list:?}");
    assert_eq!(list.body["summary"].as_str(), Some(email), "the primary calendar is the account's own");
    let logged = env.requests("oauth2.token").await;
    assert_eq!(logged.last().map(|r| r["user"].clone()), Some(json!(email)), "{logged:?}");
    let other = env.get(&format!("/calendar/v3/calendars/{ALICE}/events"), token).await;
    assert_calendar_error(&other, 404, "global", "notFound");
    env.fake.stop().await;
}

// ---- API calls ----

#[tokio::test]
async fn api_call_without_a_token_is_401() {
    let env = Env::new().await;
    let r = env.call("GET", EVENTS, None, None).await;
    // Google answers a missing credential with reason `required` ("Login Required.").
    assert_calendar_error(&r, 401, "global", "required");
    assert_eq!(r.body["error"]["errors"][0]["message"].as_str(), Some("Login Required."), "{r:?}");
    assert_eq!(r.body["error"]["errors"][0]["locationType"].as_str(), Some("header"), "{r:?}");
    assert_eq!(r.body["error"]["errors"][0]["location"].as_str(), Some("Authorization"), "{r:?}");
    assert_eq!(r.body["error"]["status"].as_str(), Some("UNAUTHENTICATED"), "{r:?}");
    let www = r.headers.get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(www.starts_with("Bearer") && www.contains("realm="), "WWW-Authenticate: {www:?}");
    let people = env.call("GET", CONNECTIONS, None, None).await;
    assert_rpc_error(&people, 401, "UNAUTHENTICATED");
    env.fake.stop().await;
}

#[tokio::test]
async fn api_call_with_a_bogus_token_is_401_auth_error() {
    let env = Env::new().await;
    let r = env.get(EVENTS, "ya29.not-a-real-token").await;
    assert_calendar_error(&r, 401, "global", "authError");
    assert_eq!(r.body["error"]["errors"][0]["message"].as_str(), Some("Invalid Credentials"), "{r:?}");
    assert_eq!(r.body["error"]["errors"][0]["location"].as_str(), Some("Authorization"), "{r:?}");
    assert_eq!(r.body["error"]["status"].as_str(), Some("UNAUTHENTICATED"), "{r:?}");
    assert!(r.headers.contains_key("www-authenticate"), "{r:?}");
    let people = env.get(CONNECTIONS, "ya29.not-a-real-token").await;
    assert_rpc_error(&people, 401, "UNAUTHENTICATED");
    env.fake.stop().await;
}

#[tokio::test]
async fn access_tokens_expire_on_the_fake_clock_and_sign_in_works_after_a_jump() {
    let env = Env::new().await;
    let token = env.token(ALICE, &[CALENDAR_READONLY]).await;
    env.advance("3500s").await;
    assert_eq!(env.get(EVENTS, &token).await.status, 200, "still valid after 3500 s");
    env.advance("100s").await;
    let r = env.get(EVENTS, &token).await;
    assert_calendar_error(&r, 401, "global", "authError");
    // The client signs with its real clock; the fake checks the JWT against real time.
    let fresh = env.token(ALICE, &[CALENDAR_READONLY]).await;
    let r = env.get(EVENTS, &fresh).await;
    assert_eq!(r.status, 200, "{r:?}");
    env.fake.stop().await;
}

#[tokio::test]
async fn calendar_write_with_a_readonly_token_is_insufficient_permissions() {
    let env = Env::new().await;
    let token = env.token(ALICE, &[CALENDAR_READONLY]).await;
    let r = env.call("POST", EVENTS, Some(&token), Some(event_body())).await;
    assert_calendar_error(&r, 403, "global", "insufficientPermissions");
    assert_eq!(r.body["error"]["message"].as_str(), Some("Request had insufficient authentication scopes."));
    assert_eq!(r.body["error"]["status"].as_str(), Some("PERMISSION_DENIED"), "{r:?}");
    let info = error_info(&r);
    assert_eq!(info["reason"], "ACCESS_TOKEN_SCOPE_INSUFFICIENT", "{info}");
    assert_eq!(info["domain"], "googleapis.com", "{info}");
    assert_eq!(info["metadata"]["service"], "calendar-json.googleapis.com", "{info}");
    assert_eq!(info["metadata"]["method"], "calendar.v3.Events.Insert", "{info}");
    let list = env.get(EVENTS, &token).await;
    assert_eq!(list.status, 200, "reading is allowed: {list:?}");
    assert_eq!(list.body["items"], json!([]), "nothing was written: {list:?}");
    env.fake.stop().await;
}

#[tokio::test]
async fn directory_with_only_contacts_scope_is_insufficient_in_rpc_envelope() {
    let env = Env::new().await;
    let token = env.token(ALICE, &[CONTACTS_READONLY]).await;
    let r = env.get(DIRECTORY, &token).await;
    assert_rpc_error(&r, 403, "PERMISSION_DENIED");
    assert_eq!(r.body["error"]["message"].as_str(), Some("Request had insufficient authentication scopes."));
    assert_eq!(r.detail_reason(), Some("ACCESS_TOKEN_SCOPE_INSUFFICIENT"), "{r:?}");
    assert_eq!(error_info(&r)["metadata"]["service"], "people.googleapis.com");
    let ok = env.get(CONNECTIONS, &token).await;
    assert_eq!(ok.status, 200, "contacts.readonly is enough for connections: {ok:?}");
    env.fake.stop().await;
}

#[tokio::test]
async fn disabled_calendar_api_is_access_not_configured() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    control_ok(&env, "PUT", "/_fake/apis/calendar", json!({"enabled": false}), 200).await;
    let r = env.get(EVENTS, &token).await;
    assert_calendar_error(&r, 403, "usageLimits", "accessNotConfigured");
    assert_eq!(r.body["error"]["status"].as_str(), Some("PERMISSION_DENIED"), "{r:?}");
    let info = error_info(&r);
    assert_eq!(info["reason"], "SERVICE_DISABLED", "{info}");
    assert_eq!(info["domain"], "googleapis.com", "{info}");
    assert_eq!(info["metadata"]["service"], "calendar-json.googleapis.com", "{info}");
    let consumer = info["metadata"]["consumer"].as_str().expect("consumer");
    let project = consumer.strip_prefix("projects/").expect("consumer is projects/<N>");
    assert!(!project.is_empty() && project.bytes().all(|b| b.is_ascii_digit()), "project number: {project}");
    let link = format!(
        "https://console.developers.google.com/apis/api/calendar-json.googleapis.com/overview?project={project}"
    );
    let message = format!(
        "Google Calendar API has not been used in project {project} before or it is disabled. Enable it by visiting {link} then retry. If you enabled this API recently, wait a few minutes for the action to propagate to our systems and retry."
    );
    assert_eq!(r.body["error"]["message"].as_str(), Some(message.as_str()), "{r:?}");
    assert_eq!(r.body["error"]["errors"][0]["message"].as_str(), Some(message.as_str()), "{r:?}");
    assert!(r.body["error"]["errors"][0]["extendedHelp"].is_string(), "extendedHelp: {r:?}");
    let help = r.body["error"]["details"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["@type"] == "type.googleapis.com/google.rpc.Help"))
        .unwrap_or_else(|| panic!("a google.rpc.Help detail: {r:?}"));
    assert_eq!(help["links"][0]["url"].as_str(), Some(link.as_str()), "{help}");
    assert_eq!(env.get(CONNECTIONS, &token).await.status, 200, "People is still enabled");

    control_ok(&env, "PUT", "/_fake/apis/calendar", json!({"enabled": true}), 200).await;
    assert_eq!(env.get(EVENTS, &token).await.status, 200, "re-enabled");
    env.fake.stop().await;
}

#[tokio::test]
async fn disabled_people_api_is_service_disabled_in_rpc_envelope() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    control_ok(&env, "PUT", "/_fake/apis/people", json!({"enabled": false}), 200).await;
    for path in [CONNECTIONS, DIRECTORY] {
        let r = env.get(path, &token).await;
        assert_rpc_error(&r, 403, "PERMISSION_DENIED");
        let info = error_info(&r);
        assert_eq!(info["reason"], "SERVICE_DISABLED", "{info}");
        assert_eq!(info["metadata"]["service"], "people.googleapis.com", "{info}");
        let project = info["metadata"]["consumer"]
            .as_str()
            .and_then(|c| c.strip_prefix("projects/"))
            .expect("consumer is projects/<N>")
            .to_owned();
        let expected = format!(
            "People API has not been used in project {project} before or it is disabled. Enable it by visiting https://console.developers.google.com/apis/api/people.googleapis.com/overview?project={project} then retry. If you enabled this API recently, wait a few minutes for the action to propagate to our systems and retry."
        );
        assert_eq!(r.body["error"]["message"].as_str(), Some(expected.as_str()), "{r:?}");
    }
    assert_eq!(env.get(EVENTS, &token).await.status, 200, "Calendar is still enabled");
    control_ok(&env, "PUT", "/_fake/apis/people", json!({"enabled": true}), 200).await;
    assert_eq!(env.get(CONNECTIONS, &token).await.status, 200, "re-enabled");
    env.fake.stop().await;
}

#[tokio::test]
async fn tokens_are_bound_to_their_user() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let bob = env.token_all(BOB).await;
    let r = env.get(&format!("/calendar/v3/calendars/{BOB}/events"), &alice).await;
    assert_calendar_error(&r, 404, "global", "notFound");
    let r = env.call("POST", &format!("/calendar/v3/calendars/{BOB}/events"), Some(&alice), Some(event_body())).await;
    assert_calendar_error(&r, 404, "global", "notFound");
    let r = env.get(&format!("/calendar/v3/calendars/{BOB}/events"), &bob).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["summary"].as_str(), Some(BOB));
    assert_eq!(r.body["items"], json!([]), "alice's insert did not land in bob's calendar");
    let r = env.get(EVENTS, &alice).await;
    assert_eq!(r.body["summary"].as_str(), Some(ALICE), "primary is the token's user: {r:?}");
    env.fake.stop().await;
}

// ---- quotas ----

#[tokio::test]
async fn calendar_per_user_quota_refuses_then_recovers() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    control_ok(&env, "PUT", "/_fake/quota", json!({"calendar_per_user_per_minute": 3}), 200).await;
    for i in 0..3 {
        assert_eq!(env.get(EVENTS, &token).await.status, 200, "call {i}");
    }
    let r = env.get(EVENTS, &token).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.body["error"]["errors"][0]["domain"].as_str(), Some("usageLimits"), "{r:?}");
    assert!(matches!(r.reason(), Some("userRateLimitExceeded" | "rateLimitExceeded")), "{r:?}");
    assert_eq!(r.detail_reason(), Some("RATE_LIMIT_EXCEEDED"), "{r:?}");
    env.advance("61s").await;
    let r = env.get(EVENTS, &token).await;
    assert_eq!(r.status, 200, "a minute later the window is free: {r:?}");
    env.fake.stop().await;
}

#[tokio::test]
async fn calendar_quota_window_slides() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    control_ok(&env, "PUT", "/_fake/quota", json!({"calendar_per_user_per_minute": 3}), 200).await;
    for _ in 0..2 {
        assert_eq!(env.get(EVENTS, &token).await.status, 200);
    }
    env.advance("30s").await;
    assert_eq!(env.get(EVENTS, &token).await.status, 200);
    env.advance("31s").await;
    // The first two left the window, the third is still in it.
    for i in 0..2 {
        assert_eq!(env.get(EVENTS, &token).await.status, 200, "call {i} after the slide");
    }
    let r = env.get(EVENTS, &token).await;
    assert_eq!(r.status, 403, "a sliding window, not a fixed minute: {r:?}");
    env.fake.stop().await;
}

#[tokio::test]
async fn calendar_rate_limit_can_answer_429() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    control_ok(&env, "PUT", "/_fake/quota", json!({"calendar_per_user_per_minute": 1, "rate_limit_status": 429}), 200)
        .await;
    assert_eq!(env.get(EVENTS, &token).await.status, 200);
    let r = env.get(EVENTS, &token).await;
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.body["error"]["code"], json!(429), "{r:?}");
    assert!(matches!(r.reason(), Some("userRateLimitExceeded" | "rateLimitExceeded")), "{r:?}");
    assert_eq!(r.body["error"]["status"].as_str(), Some("RESOURCE_EXHAUSTED"), "{r:?}");
    assert_eq!(r.detail_reason(), Some("RATE_LIMIT_EXCEEDED"), "{r:?}");
    let bad = env.control("PUT", "/_fake/quota", Some(json!({"rate_limit_status": 500}))).await;
    assert_control_error(&bad, 400, "rate_limit_status 500");
    env.fake.stop().await;
}

#[tokio::test]
async fn quota_user_gives_separate_windows() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    control_ok(&env, "PUT", "/_fake/quota", json!({"calendar_per_user_per_minute": 2}), 200).await;
    let by_param = format!("{EVENTS}?quotaUser={ALICE}");
    for i in 0..2 {
        assert_eq!(env.get(&by_param, &token).await.status, 200, "quotaUser call {i}");
    }
    assert_eq!(env.get(&by_param, &token).await.status, 403, "quotaUser window full");
    for i in 0..2 {
        let r = call_with_headers(&env, EVENTS, &token, &[("x-goog-quota-user", BOB)]).await;
        assert_eq!(r.status, 200, "header call {i}: {r:?}");
    }
    let r = call_with_headers(&env, EVENTS, &token, &[("x-goog-quota-user", BOB)]).await;
    assert_eq!(r.status, 403, "header window full: {r:?}");
    // Without either, the service account's own window is still empty.
    for i in 0..2 {
        assert_eq!(env.get(EVENTS, &token).await.status, 200, "unkeyed call {i}");
    }
    assert_eq!(env.get(EVENTS, &token).await.status, 403, "service account window full");
    env.fake.stop().await;
}

#[tokio::test]
async fn project_quota_spans_quota_users() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let bob = env.token_all(BOB).await;
    control_ok(&env, "PUT", "/_fake/quota", json!({"project_per_minute": 4}), 200).await;
    for (i, (tok, user)) in [(&alice, ALICE), (&bob, BOB), (&alice, ALICE), (&bob, BOB)].into_iter().enumerate() {
        let r = env.get(&format!("{EVENTS}?quotaUser={user}"), tok).await;
        assert_eq!(r.status, 200, "call {i}: {r:?}");
    }
    let r = env.get(&format!("{EVENTS}?quotaUser=carol"), &alice).await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.reason(), Some("rateLimitExceeded"), "a project limit is not a user limit: {r:?}");
    assert_eq!(r.detail_reason(), Some("RATE_LIMIT_EXCEEDED"), "{r:?}");
    env.advance("61s").await;
    assert_eq!(env.get(EVENTS, &alice).await.status, 200, "the project window frees up");
    env.fake.stop().await;
}

#[tokio::test]
async fn project_quota_is_per_api() {
    // Google's quotas are per service per project: People calls do not use up Calendar's
    // per-project minute, and vice versa.
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    control_ok(&env, "PUT", "/_fake/quota", json!({"project_per_minute": 3}), 200).await;
    for i in 0..3 {
        let r = env.get(CONNECTIONS, &token).await;
        assert_eq!(r.status, 200, "people call {i}: {r:?}");
    }
    let r = env.get(EVENTS, &token).await;
    assert_eq!(r.status, 200, "Calendar's project window is untouched by People calls: {r:?}");
    env.fake.stop().await;
}

#[tokio::test]
async fn people_rate_limit_is_429_resource_exhausted() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    control_ok(&env, "PUT", "/_fake/quota", json!({"people_per_user_per_minute": 2}), 200).await;
    for i in 0..2 {
        assert_eq!(env.get(CONNECTIONS, &token).await.status, 200, "call {i}");
    }
    let r = env.get(CONNECTIONS, &token).await;
    assert_rpc_error(&r, 429, "RESOURCE_EXHAUSTED");
    assert_eq!(r.detail_reason(), Some("RATE_LIMIT_EXCEEDED"), "{r:?}");
    let m = r.body["error"]["message"].as_str().unwrap_or_default();
    assert!(m.starts_with("Quota exceeded for quota metric"), "{m}");
    assert!(m.contains("people.googleapis.com"), "{m}");
    assert!(
        m.contains("'Critical read requests (Contact and Profile Reads)'"),
        "People reads are metered as Critical read requests (NOTES 5.4): {m}"
    );
    assert_eq!(env.get(EVENTS, &token).await.status, 200, "Calendar has its own window");
    env.advance("61s").await;
    assert_eq!(env.get(CONNECTIONS, &token).await.status, 200, "recovers after a minute");
    env.fake.stop().await;
}

#[tokio::test]
async fn stats_report_peak_per_minute_rate() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    for _ in 0..5 {
        assert_eq!(env.get(EVENTS, &token).await.status, 200);
    }
    env.advance("61s").await;
    for _ in 0..2 {
        assert_eq!(env.get(EVENTS, &token).await.status, 200);
    }
    assert_eq!(env.get(CONNECTIONS, &token).await.status, 200);
    let r = env.control("GET", "/_fake/stats", None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let peaks = &r.body["peak_requests_per_minute"];
    assert_eq!(peaks["calendar_user"], json!(5), "{r:?}");
    assert_eq!(peaks["people_user"], json!(1), "{r:?}");
    assert_eq!(r.body["requests_by_method"]["calendar.events.list"], json!(7), "{r:?}");
    env.fake.stop().await;
}

// ---- faults ----

#[tokio::test]
async fn fault_503_three_times_then_success() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let armed = control_ok(
        &env,
        "POST",
        "/_fake/faults",
        json!({"method": "calendar.events.list", "status": 503, "count": 3}),
        201,
    )
    .await;
    assert_eq!(armed.body["count"], json!(3), "{armed:?}");
    for i in 0..3 {
        let r = env.get(EVENTS, &token).await;
        assert_calendar_error(&r, 503, "global", "backendError");
        assert_eq!(r.body["error"]["status"].as_str(), Some("UNAVAILABLE"), "call {i}: {r:?}");
        // Other methods are not affected.
        let other = env.get("/calendar/v3/calendars/primary", &token).await;
        assert_eq!(other.status, 200, "calendars.get during the fault: {other:?}");
    }
    assert_eq!(env.get(EVENTS, &token).await.status, 200, "the fourth call succeeds");
    let faults = env.control("GET", "/_fake/faults", None).await;
    assert_eq!(faults.body["faults"], json!([]), "the fault is used up: {faults:?}");
    env.fake.stop().await;
}

#[tokio::test]
async fn fault_502_is_googles_html_page() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    control_ok(&env, "POST", "/_fake/faults", json!({"method": "calendar.events.list", "status": 502}), 201).await;
    let r = env.get(EVENTS, &token).await;
    assert_eq!(r.status, 502, "{r:?}");
    let ct = r.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(ct.starts_with("text/html"), "content type {ct}");
    assert!(r.text.contains("502") && r.text.contains("That’s an error"), "{}", r.text);
    assert!(r.body.is_null(), "not JSON");
    assert_eq!(env.get(EVENTS, &token).await.status, 200, "count defaults to 1");
    env.fake.stop().await;
}

#[tokio::test]
async fn fault_with_custom_body_and_headers() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let body = json!({"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}});
    let fault = json!({
        "method": "calendar.events.list", "status": 429, "body": body, "headers": {"Retry-After": "17"},
    });
    control_ok(&env, "POST", "/_fake/faults", fault, 201).await;
    let r = env.get(EVENTS, &token).await;
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.body, body, "the given body verbatim");
    assert_eq!(r.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("17"), "{r:?}");
    control_ok(&env, "POST", "/_fake/faults", json!({"method": "calendar.events.list", "status": 500}), 201).await;
    let r = env.get(EVENTS, &token).await;
    assert_calendar_error(&r, 500, "global", "backendError");
    assert!(r.headers.get("retry-after").is_none(), "headers belong to their fault: {r:?}");
    env.fake.stop().await;
}

#[tokio::test]
async fn fault_for_one_user_hits_only_that_user() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let bob = env.token_all(BOB).await;
    control_ok(
        &env,
        "POST",
        "/_fake/faults",
        json!({"method": "calendar.events.list", "status": 500, "user": BOB}),
        201,
    )
    .await;
    assert_eq!(env.get(EVENTS, &alice).await.status, 200, "alice is not hit");
    let r = env.get(EVENTS, &bob).await;
    assert_calendar_error(&r, 500, "global", "backendError");
    assert_eq!(env.get(EVENTS, &bob).await.status, 200, "used up");
    env.fake.stop().await;
}

#[tokio::test]
async fn people_faults_use_the_rpc_envelope_and_method_alias() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let armed =
        control_ok(&env, "POST", "/_fake/faults", json!({"method": "people.connections.list", "status": 503}), 201)
            .await;
    assert_eq!(armed.body["method"], json!("people.people.connections.list"), "{armed:?}");
    let r = env.get(CONNECTIONS, &token).await;
    assert_rpc_error(&r, 503, "UNAVAILABLE");
    control_ok(&env, "POST", "/_fake/faults", json!({"method": "people.people.connections.list", "status": 429}), 201)
        .await;
    let r = env.get(CONNECTIONS, &token).await;
    assert_rpc_error(&r, 429, "RESOURCE_EXHAUSTED");
    control_ok(&env, "POST", "/_fake/faults", json!({"method": "people.listDirectoryPeople", "status": 500}), 201)
        .await;
    assert_eq!(env.get(CONNECTIONS, &token).await.status, 200, "connections not hit by a directory fault");
    let r = env.get(DIRECTORY, &token).await;
    assert_rpc_error(&r, 500, "INTERNAL");
    assert_eq!(env.get(DIRECTORY, &token).await.status, 200);
    env.fake.stop().await;
}

#[tokio::test]
async fn fault_on_the_token_endpoint() {
    let env = Env::new().await;
    control_ok(&env, "POST", "/_fake/faults", json!({"method": "oauth2.token", "status": 503, "count": 2}), 201).await;
    for i in 0..2 {
        let r = env.token_request(&env.key, &env.claims(Some(ALICE), &[CALENDAR_READONLY])).await;
        assert_eq!(r.status, 503, "call {i}: {r:?}");
        assert!(r.body.get("access_token").is_none(), "{r:?}");
    }
    let r = env.token_request(&env.key, &env.claims(Some(ALICE), &[CALENDAR_READONLY])).await;
    assert_eq!(r.status, 200, "{r:?}");
    let statuses: Vec<Value> = env.requests("oauth2.token").await.iter().map(|r| r["status"].clone()).collect();
    assert_eq!(statuses, vec![json!(503), json!(503), json!(200)]);
    env.fake.stop().await;
}

#[tokio::test]
async fn a_token_grant_can_be_held_without_holding_anyone_else() {
    let env = Env::new().await;
    let fault = json!({"method": "oauth2.token", "user": ALICE, "delay_ms": 2000, "count": 1});
    control_ok(&env, "POST", "/_fake/faults", fault, 201).await;
    let alice_claims = env.claims(Some(ALICE), &[CALENDAR_READONLY]);
    let bob_claims = env.claims(Some(BOB), &[CALENDAR_READONLY]);
    let alice = {
        let held = env.token_request(&env.key, &alice_claims);
        let other = env.token_request(&env.key, &bob_claims);
        tokio::pin!(held);
        // Bob's grant is answered while Alice's is still held.
        let bob = tokio::select! {
            r = &mut held => panic!("the held grant came first: {r:?}"),
            r = other => r,
        };
        assert_eq!(bob.status, 200, "{bob:?}");
        let still = tokio::time::timeout(std::time::Duration::from_millis(300), &mut held).await;
        assert!(still.is_err(), "Alice's grant is still held after Bob's: {still:?}");
        held.await
    };
    assert_eq!(alice.status, 200, "a held grant is then given: {alice:?}");
    assert!(alice.body["access_token"].is_string(), "{alice:?}");
    env.fake.stop().await;
}

// ---- control API ----

#[tokio::test]
async fn control_api_rejects_bad_input() {
    let env = Env::new().await;
    let cases: Vec<(&str, &str, Value, u16, &str)> = vec![
        ("POST", "/_fake/domains", json!({"domain": "x.test", "bogus": 1}), 400, "unknown field"),
        ("PUT", "/_fake/quota", json!({"calendar_per_user": 5}), 400, "unknown settings field"),
        ("POST", "/_fake/domains", json!({"domain": "y.test", "users": [ALICE]}), 400, "user outside the domain"),
        ("POST", "/_fake/domains/acme.test/users", json!({"email": "eve@other.test"}), 400, "user outside the domain"),
        ("POST", "/_fake/domains", json!({"domain": "z.test", "time_zone": "Mars/Olympus"}), 400, "bad time zone"),
        ("PUT", "/_fake/domains/acme.test", json!({"time_zone": "Nowhere"}), 400, "bad time zone"),
        ("POST", "/_fake/domains", json!({"domain": DOMAIN}), 409, "duplicate domain"),
        ("PUT", "/_fake/delegation/999", json!({"scopes": [CALENDAR]}), 404, "unknown client id"),
        ("PUT", "/_fake/delivery", json!({"drop": 1.5}), 400, "drop probability > 1"),
        ("POST", "/_fake/clock", json!({"advance": "soon"}), 400, "bad clock duration"),
        ("POST", "/_fake/clock", json!({"advance": "-5s"}), 400, "negative clock duration"),
    ];
    for (method, path, body, status, what) in cases {
        let r = env.control(method, path, Some(body)).await;
        assert_control_error(&r, status, what);
    }
    // Nothing took effect.
    let clock = env.control("GET", "/_fake/clock", None).await;
    assert_eq!(clock.body["offset_ms"], json!(0), "{clock:?}");
    let delivery = env.control("GET", "/_fake/delivery", None).await;
    assert_eq!(delivery.body["drop"], json!(0.0), "{delivery:?}");
    let domains = env.control("GET", "/_fake/domains", None).await;
    let names: Vec<&str> =
        domains.body["domains"].as_array().into_iter().flatten().filter_map(|d| d["domain"].as_str()).collect();
    assert_eq!(names, vec![DOMAIN], "{domains:?}");
    env.fake.stop().await;
}

#[tokio::test]
async fn request_log_lists_exactly_the_calls_made() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let bob = env.token_all(BOB).await;
    assert_eq!(env.get(EVENTS, &alice).await.status, 200);
    assert_eq!(env.get(&format!("/calendar/v3/calendars/{ALICE}/events"), &bob).await.status, 404);
    assert_eq!(env.call("GET", EVENTS, None, None).await.status, 401);
    env.insert_event(&alice, event_body()).await;
    assert_eq!(env.get(CONNECTIONS, &bob).await.status, 200);

    let list = env.requests("calendar.events.list").await;
    let seen: Vec<(Value, Value, Value)> =
        list.iter().map(|r| (r["user"].clone(), r["status"].clone(), r["http_method"].clone())).collect();
    assert_eq!(
        seen,
        vec![
            (json!(ALICE), json!(200), json!("GET")),
            (json!(BOB), json!(404), json!("GET")),
            (Value::Null, json!(401), json!("GET")),
        ],
        "{list:?}"
    );
    assert_eq!(env.requests("calendar.events.insert").await.len(), 1);
    let people = env.requests("people.connections.list").await;
    assert_eq!(people.len(), 1, "the People alias works in the filter too: {people:?}");
    assert_eq!(people[0]["user"], json!(BOB));
    let by_user = env.control("GET", &format!("/_fake/requests?method=calendar.events.list&user={BOB}"), None).await;
    assert_eq!(by_user.body["requests"].as_array().map(Vec::len), Some(1), "{by_user:?}");
    env.fake.stop().await;
}

#[tokio::test]
async fn discovery_documents_are_rooted_at_the_fake() {
    let env = Env::new().await;
    let root = format!("{}/", env.base);
    let token = env.token_all(ALICE).await;

    let r = env.call("GET", "/discovery/v1/apis/calendar/v3/rest", None, None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["name"], "calendar");
    assert_eq!(r.body["rootUrl"].as_str(), Some(root.as_str()));
    let base_url = r.body["baseUrl"].as_str().expect("baseUrl").to_owned();
    assert_eq!(base_url, format!("{root}calendar/v3/"));
    let path = r.body["resources"]["events"]["methods"]["list"]["path"].as_str().expect("events.list path");
    let url = format!("{base_url}{}", path.replace("{calendarId}", "primary"));
    let resp = env.http.get(&url).bearer_auth(&token).send().await.expect("events.list via discovery");
    assert_eq!(resp.status().as_u16(), 200, "{url}");

    let r = env.call("GET", "/$discovery/rest?version=v1", None, None).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["name"], "people");
    assert_eq!(r.body["rootUrl"].as_str(), Some(root.as_str()));
    let path = r.body["resources"]["people"]["methods"]["listDirectoryPeople"]["path"].as_str().expect("path");
    let url = format!(
        "{}{path}?readMask=names&sources=DIRECTORY_SOURCE_TYPE_DOMAIN_PROFILE",
        r.body["baseUrl"].as_str().expect("baseUrl")
    );
    let resp = env.http.get(&url).bearer_auth(&token).send().await.expect("listDirectoryPeople via discovery");
    assert_eq!(resp.status().as_u16(), 200, "{url}");

    let r = env.call("GET", "/discovery/v1/apis/people/v1/rest", None, None).await;
    assert_eq!(r.body["rootUrl"].as_str(), Some(root.as_str()), "{r:?}");
    assert_eq!(env.call("GET", "/discovery/v1/apis/drive/v3/rest", None, None).await.status, 404);
    env.fake.stop().await;
}

#[tokio::test]
async fn a_fault_can_skip_calls_and_hold_one_back_without_failing_it() {
    let env = Env::new().await;
    let token = env.token(ALICE, &[CALENDAR_READONLY]).await;
    let r = env
        .control("POST", "/_fake/faults", Some(json!({"method": "calendar.events.list", "skip": 1, "delay_ms": 400})))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let path = "/calendar/v3/calendars/primary/events";
    let started = std::time::Instant::now();
    assert_eq!(env.get(path, &token).await.status, 200);
    assert!(started.elapsed() < std::time::Duration::from_millis(300), "the first call is let through at once");
    let started = std::time::Instant::now();
    assert_eq!(env.get(path, &token).await.status, 200, "no status: answered normally");
    assert!(started.elapsed() >= std::time::Duration::from_millis(400), "the second call was held back");
    let r = env.control("POST", "/_fake/faults", Some(json!({"method": "calendar.events.list"}))).await;
    assert_eq!(r.status, 400, "a fault without status or delay does nothing: refused");
    env.fake.stop().await;
}
