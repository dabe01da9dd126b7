//! `GET /api/v1/tenants/{tenant}/diagnose`: each thing a Workspace admin can get wrong is done for
//! real at the fake Google, and the report names the failing step and the fix.
mod common;

use common::*;
use serde_json::{Value, json};

const KEY: usize = 0;
const TOKEN_CALENDAR: usize = 1;
const TOKEN_CONTACTS: usize = 2;
const TOKEN_DIRECTORY: usize = 3;
const CALENDAR_API: usize = 4;
const PEOPLE_API: usize = 5;
const DIRECTORY_SHARING: usize = 6;
const CALENDAR_READABLE: usize = 7;
const HTTPS: usize = 8;

const CALENDAR_SCOPE: &str = "https://www.googleapis.com/auth/calendar.readonly";
const CONTACTS_SCOPE: &str = "https://www.googleapis.com/auth/contacts.readonly";
const DIRECTORY_SCOPE: &str = "https://www.googleapis.com/auth/directory.readonly";
const DELEGATION_LIST: &str = "https://www.googleapis.com/auth/calendar.readonly,https://www.googleapis.com/auth/contacts.readonly,https://www.googleapis.com/auth/directory.readonly";

async fn diagnose(app: &TestApp, user: Option<&str>) -> Reply {
    let path = match user {
        Some(u) => format!("/api/v1/tenants/{TENANT}/diagnose?user={u}"),
        None => format!("/api/v1/tenants/{TENANT}/diagnose"),
    };
    app.api("GET", &path, None).await
}

/// The report of a diagnose run that must answer 200.
async fn report(app: &TestApp, user: Option<&str>) -> Value {
    let r = diagnose(app, user).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body
}

fn steps(report: &Value) -> &Vec<Value> {
    report["steps"].as_array().expect("steps is an array")
}

fn step(report: &Value, i: usize) -> &Value {
    &steps(report)[i]
}

fn outcome(report: &Value, i: usize) -> &str {
    step(report, i)["outcome"].as_str().unwrap_or("")
}

fn fix(report: &Value, i: usize) -> &str {
    step(report, i)["fix"].as_str().unwrap_or("")
}

fn outcomes(report: &Value) -> Vec<&str> {
    steps(report).iter().map(|s| s["outcome"].as_str().unwrap_or("")).collect()
}

/// The checks, in order, for `user` with it@ as the directory admin.
fn expected_checks(user: &str, directory_user: &str) -> Vec<String> {
    vec![
        "Service-account key".to_owned(),
        format!("Domain-wide delegation: token for {user} with {CALENDAR_SCOPE}"),
        format!("Domain-wide delegation: token for {user} with {CONTACTS_SCOPE}"),
        format!("Domain-wide delegation: token for {directory_user} with {DIRECTORY_SCOPE}"),
        "Google Calendar API enabled".to_owned(),
        "People API enabled".to_owned(),
        "Directory sharing".to_owned(),
        format!("Calendar of {user} readable"),
        "Webhook address is HTTPS".to_owned(),
        "Phone system receives profile switches".to_owned(),
    ]
}

fn checks(report: &Value) -> Vec<String> {
    steps(report).iter().map(|s| s["check"].as_str().unwrap_or("").to_owned()).collect()
}

/// A failed step's fix must be there; passed and skipped steps carry none.
fn assert_fixes_only_on_failures(report: &Value) {
    for s in steps(report) {
        match s["outcome"].as_str() {
            Some("failed") => assert!(
                s["fix"].as_str().is_some_and(|f| !f.trim().is_empty()),
                "a failed step must say how to fix it: {s}"
            ),
            Some("passed" | "skipped") => assert!(s.get("fix").is_none_or(Value::is_null), "{s}"),
            other => panic!("unknown outcome {other:?} in {s}"),
        }
        assert!(s["detail"].is_string(), "{s}");
    }
}

/// The project number the fake Google gives the key's project, read from Google's own 403 body
/// when the API is disabled: a token minted directly at the fake, then a direct call.
async fn project_number_from_google(app: &TestApp, api: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let token_uri = app.key["token_uri"].as_str().expect("token_uri");
    let scope = if api == "calendar" { CALENDAR_SCOPE } else { CONTACTS_SCOPE };
    let claims = json!({
        "iss": app.key["client_email"], "sub": ALICE, "aud": token_uri,
        "scope": scope, "iat": now, "exp": now + 3600,
    });
    let assertion = fake_google::jwt::sign(&app.key, &claims).expect("sign");
    let resp = app
        .http
        .post(token_uri)
        .form(&[("grant_type", fake_google::oauth::GRANT_TYPE), ("assertion", assertion.as_str())])
        .send()
        .await
        .expect("token");
    let token: Value = resp.json().await.expect("token json");
    let access = token["access_token"].as_str().expect("access_token").to_owned();
    let url = if api == "calendar" {
        format!("{}/calendar/v3/users/me/settings/timezone", app.fake.base_url())
    } else {
        format!("{}/v1/people/me/connections?personFields=names", app.fake.base_url())
    };
    let r = reply(app.http.get(url).bearer_auth(access).send().await.expect("google call")).await;
    assert_eq!(r.status, 403, "the API should be disabled at the fake: {r:?}");
    let details = r.body["error"]["details"].as_array().expect("details");
    let consumer = details
        .iter()
        .find_map(|d| d["metadata"]["consumer"].as_str())
        .expect("SERVICE_DISABLED names the consumer project");
    consumer.trim_start_matches("projects/").to_owned()
}

#[tokio::test]
async fn a_correct_setup_passes_every_step_but_the_plain_http_webhook_address() {
    let app = TestApp::start().await;
    app.setup_tenant().await;
    let rep = report(&app, Some(ALICE)).await;

    assert_eq!(rep["tenant"], TENANT);
    assert_eq!(rep["user"], ALICE);
    assert_eq!(checks(&rep), expected_checks(ALICE, IT), "{rep:#}");
    let mut expected = vec!["passed"; 8];
    expected.extend(["failed", "passed"]);
    assert_eq!(outcomes(&rep), expected, "{rep:#}");
    assert_eq!(rep["passed"], false, "one failed step fails the report");
    assert_fixes_only_on_failures(&rep);

    // The key step says whose key it is.
    let detail = step(&rep, KEY)["detail"].as_str().unwrap_or("");
    assert!(detail.contains(app.key["client_email"].as_str().unwrap()), "{detail}");
    assert!(detail.contains(&app.client_id), "{detail}");
    // The webhook step names the setting and what to set it to.
    let https = step(&rep, HTTPS);
    assert!(https["detail"].as_str().unwrap_or("").contains("http://127.0.0.1"), "{https}");
    let f = fix(&rep, HTTPS);
    assert!(f.contains("GWSYNC_PUBLIC_URL") && f.contains("https://"), "{f}");
    app.stop().await;
}

#[tokio::test]
async fn revoked_delegation_fails_each_token_with_the_scopes_to_grant_and_skips_the_api_steps() {
    let app = TestApp::start().await;
    app.setup_tenant().await;
    let r = app.fake_control("PUT", &format!("/_fake/delegation/{}", app.client_id), json!({"scopes": []})).await;
    assert_eq!(r.status, 200, "{r:?}");

    let rep = report(&app, Some(ALICE)).await;
    assert_eq!(checks(&rep), expected_checks(ALICE, IT), "{rep:#}");
    assert_eq!(
        outcomes(&rep),
        ["passed", "failed", "failed", "failed", "skipped", "skipped", "skipped", "skipped", "failed", "passed"],
        "{rep:#}"
    );
    assert_eq!(rep["passed"], false);
    assert_fixes_only_on_failures(&rep);
    let wanted = format!("grant domain-wide delegation to client ID {} for {DELEGATION_LIST}", app.client_id);
    for i in [TOKEN_CALENDAR, TOKEN_CONTACTS, TOKEN_DIRECTORY] {
        let f = fix(&rep, i);
        assert!(f.contains(&wanted), "step {i}: fix {f:?} should contain {wanted:?}");
        assert!(
            f.trim_end().trim_end_matches('.').ends_with(DELEGATION_LIST),
            "the scope list is exactly what the admin pastes, nothing after it: {f:?}"
        );
        let detail = step(&rep, i)["detail"].as_str().unwrap_or("");
        assert!(detail.contains(&app.client_id), "{detail}");
    }
    app.stop().await;
}

#[tokio::test]
async fn re_granting_delegation_makes_the_steps_pass_on_the_next_run_without_a_restart() {
    let app = TestApp::start().await;
    app.setup_tenant().await;
    app.delegate(&[]).await;
    let before = report(&app, Some(ALICE)).await;
    assert_eq!(outcome(&before, TOKEN_CALENDAR), "failed", "{before:#}");
    assert_eq!(outcome(&before, CALENDAR_API), "skipped", "{before:#}");

    app.delegate(GWSYNC_SCOPES).await;
    let after = report(&app, Some(ALICE)).await;
    let mut expected = vec!["passed"; 8];
    expected.extend(["failed", "passed"]);
    assert_eq!(outcomes(&after), expected, "{after:#}");
    app.stop().await;
}

#[tokio::test]
async fn a_missing_directory_scope_fails_only_the_directory_token() {
    let app = TestApp::start().await;
    app.setup_tenant().await;
    app.delegate(&[CALENDAR_SCOPE, CONTACTS_SCOPE]).await;

    let rep = report(&app, Some(ALICE)).await;
    assert_eq!(
        outcomes(&rep),
        ["passed", "passed", "passed", "failed", "passed", "passed", "skipped", "passed", "failed", "passed"],
        "{rep:#}"
    );
    assert_fixes_only_on_failures(&rep);
    let f = fix(&rep, TOKEN_DIRECTORY);
    assert!(
        f.contains(&format!("grant domain-wide delegation to client ID {} for {DELEGATION_LIST}", app.client_id)),
        "{f}"
    );
    let detail = step(&rep, TOKEN_DIRECTORY)["detail"].as_str().unwrap_or("");
    assert!(detail.contains(DIRECTORY_SCOPE), "the detail names the missing scope: {detail}");
    app.stop().await;
}

#[tokio::test]
async fn a_disabled_calendar_api_names_the_api_the_project_and_the_console_link() {
    let app = TestApp::start().await;
    app.setup_tenant().await;
    let r = app.fake_control("PUT", "/_fake/apis/calendar", json!({"enabled": false})).await;
    assert_eq!(r.status, 200, "{r:?}");
    let project = project_number_from_google(&app, "calendar").await;

    let rep = report(&app, Some(ALICE)).await;
    assert_eq!(outcome(&rep, KEY), "passed");
    assert_eq!(outcome(&rep, TOKEN_CALENDAR), "passed", "tokens are minted whatever the API switch says");
    assert_eq!(outcome(&rep, CALENDAR_API), "failed", "{rep:#}");
    assert_eq!(outcome(&rep, PEOPLE_API), "passed", "{rep:#}");
    assert_eq!(outcome(&rep, DIRECTORY_SHARING), "passed", "{rep:#}");
    assert_eq!(rep["passed"], false);
    assert_fixes_only_on_failures(&rep);
    let f = fix(&rep, CALENDAR_API);
    assert!(f.contains("Google Calendar API"), "{f}");
    assert!(f.contains(&project), "the fix names project {project}: {f}");
    let link = format!(
        "https://console.developers.google.com/apis/api/calendar-json.googleapis.com/overview?project={project}"
    );
    assert!(f.contains(&link), "the fix links {link}: {f}");
    app.stop().await;
}

#[tokio::test]
async fn a_disabled_people_api_names_the_people_api_and_the_project() {
    let app = TestApp::start().await;
    app.setup_tenant().await;
    let r = app.fake_control("PUT", "/_fake/apis/people", json!({"enabled": false})).await;
    assert_eq!(r.status, 200, "{r:?}");
    let project = project_number_from_google(&app, "people").await;

    let rep = report(&app, Some(ALICE)).await;
    assert_eq!(outcome(&rep, CALENDAR_API), "passed", "{rep:#}");
    assert_eq!(outcome(&rep, PEOPLE_API), "failed", "{rep:#}");
    assert_eq!(outcome(&rep, CALENDAR_READABLE), "passed", "{rep:#}");
    assert_fixes_only_on_failures(&rep);
    let f = fix(&rep, PEOPLE_API);
    assert!(f.contains("People API"), "{f}");
    assert!(f.contains(&project), "{f}");
    let link =
        format!("https://console.developers.google.com/apis/api/people.googleapis.com/overview?project={project}");
    assert!(f.contains(&link), "{f}");
    // The directory is read through the People API too: its step must not blame directory sharing.
    assert_eq!(outcome(&rep, DIRECTORY_SHARING), "failed", "{rep:#}");
    let f = fix(&rep, DIRECTORY_SHARING);
    assert!(f.contains("People API") && !f.contains("External Directory Sharing"), "{f}");
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_user_is_told_to_check_the_google_alias() {
    let app = TestApp::start().await;
    app.setup_tenant().await;
    let nobody = "nobody@acme.test";

    let rep = report(&app, Some(nobody)).await;
    assert_eq!(rep["user"], nobody);
    assert_eq!(checks(&rep), expected_checks(nobody, IT), "{rep:#}");
    assert_eq!(
        outcomes(&rep),
        ["passed", "failed", "failed", "passed", "skipped", "skipped", "passed", "skipped", "failed", "passed"],
        "{rep:#}"
    );
    assert_fixes_only_on_failures(&rep);
    for i in [TOKEN_CALENDAR, TOKEN_CONTACTS] {
        let f = fix(&rep, i);
        assert!(f.contains(nobody), "{f}");
        assert!(f.contains("check the Google alias"), "{f}");
        assert!(!f.contains("grant domain-wide delegation"), "not a delegation problem: {f}");
    }
    app.stop().await;
}

#[tokio::test]
async fn directory_sharing_switched_off_points_at_external_directory_sharing() {
    let app = TestApp::start().await;
    app.setup_tenant().await;
    let r = app.fake_control("PUT", &format!("/_fake/domains/{DOMAIN}"), json!({"directory_sharing": false})).await;
    assert_eq!(r.status, 200, "{r:?}");

    let rep = report(&app, Some(ALICE)).await;
    let mut expected = vec!["passed"; 10];
    expected[DIRECTORY_SHARING] = "failed";
    expected[HTTPS] = "failed";
    assert_eq!(outcomes(&rep), expected, "{rep:#}");
    assert_fixes_only_on_failures(&rep);
    let f = fix(&rep, DIRECTORY_SHARING);
    assert!(f.contains("External Directory Sharing"), "{f}");

    // The admin switches it back on: the next run passes the step.
    let r = app.fake_control("PUT", &format!("/_fake/domains/{DOMAIN}"), json!({"directory_sharing": true})).await;
    assert_eq!(r.status, 200, "{r:?}");
    let rep = report(&app, Some(ALICE)).await;
    assert_eq!(outcome(&rep, DIRECTORY_SHARING), "passed", "{rep:#}");
    app.stop().await;
}

#[tokio::test]
async fn without_a_key_the_key_step_says_how_to_upload_one_and_the_rest_is_skipped() {
    let app = TestApp::start().await;
    let r = app
        .api("PUT", &format!("/api/v1/tenants/{TENANT}"), Some(json!({"domain": DOMAIN, "directory_admin": IT})))
        .await;
    assert_eq!(r.status, 201, "{r:?}");

    let rep = report(&app, Some(ALICE)).await;
    assert_eq!(checks(&rep), expected_checks(ALICE, IT), "{rep:#}");
    let mut expected = vec!["failed"];
    expected.extend(["skipped"; 7]);
    expected.extend(["failed", "passed"]);
    assert_eq!(outcomes(&rep), expected, "{rep:#}");
    assert_fixes_only_on_failures(&rep);
    let f = fix(&rep, KEY);
    assert!(f.contains(&format!("gwsync tenant credentials {TENANT}")), "{f}");

    // Uploading the key fixes it without a restart.
    app.upload_key().await;
    let rep = report(&app, Some(ALICE)).await;
    assert_eq!(outcome(&rep, KEY), "passed", "{rep:#}");
    assert_eq!(outcome(&rep, CALENDAR_READABLE), "passed", "{rep:#}");
    app.stop().await;
}

#[tokio::test]
async fn a_user_outside_the_tenant_domain_is_a_bad_request() {
    let app = TestApp::start().await;
    app.setup_tenant().await;
    let r = diagnose(&app, Some("mallory@evil.test")).await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.code(), "invalid_request", "{r:?}");
    assert!(r.message().contains(DOMAIN), "the message names the tenant's domain: {r:?}");

    let r = diagnose(&app, Some("not-an-address")).await;
    assert_eq!(r.status, 400, "{r:?}");

    let r = app.api("GET", "/api/v1/tenants/nosuch/diagnose", None).await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.code(), "tenant_not_found", "{r:?}");
    app.stop().await;
}

#[tokio::test]
async fn without_a_user_it_checks_as_the_directory_admin() {
    let app = TestApp::start().await;
    app.setup_tenant().await;
    let rep = report(&app, None).await;
    assert_eq!(rep["user"], IT, "{rep:#}");
    assert_eq!(checks(&rep), expected_checks(IT, IT), "{rep:#}");
    let mut expected = vec!["passed"; 8];
    expected.extend(["failed", "passed"]);
    assert_eq!(outcomes(&rep), expected, "{rep:#}");
    app.stop().await;
}

#[tokio::test]
async fn diagnose_needs_the_admin_token() {
    let app = TestApp::start().await;
    app.setup_tenant().await;
    let r = app.raw("GET", &format!("/api/v1/tenants/{TENANT}/diagnose?user={ALICE}"), &[], vec![]).await;
    assert_eq!(r.status, 401, "{r:?}");
    app.stop().await;
}
