//! The web console in a real browser (headless Debian Chromium, `common::browser`), walked as a
//! new company would: an operator signs in with Google (the fake's OpenID provider) and adds
//! the company; its admin signs in, uploads the key, sees the check fail on a missing scope,
//! fixes the delegation at "Google" and checks again, adds two users from the directory, gives
//! one a trigger word and sees an event switch her; then that user signs in and edits only her
//! own words, and an outsider is refused. Every page is checked with axe (WCAG 2.1 A/AA) and
//! photographed under `target/console-screenshots/` at desktop and phone width.
//!
//! gwsync is reached as `http://localhost:…` and fake Google as `http://127.0.0.1:…`: two sites,
//! as in production, so a SameSite=Strict cookie behaves as it would after a real Google sign-in.

mod common;

use std::net::TcpListener;

use common::browser::{Browser, CookieInfo};
use common::*;
use fake_google::FakeGoogle;
use gwsync::config::Config;
use secrecy::SecretString;
use serde_json::{Value, json};

const OPERATOR: &str = "ops@acme.test";
const COMPANY_ADMIN: &str = "admin@acme.test";
const OUTSIDER: &str = "carol@acme.test";
const SESSION: &str = "__Host-gwsync-session";

struct World {
    fake: FakeGoogle,
    http: reqwest::Client,
    key: Value,
    client_id: String,
    /// gwsync as the browser reaches it.
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _data: tempfile::TempDir,
}

impl World {
    async fn start() -> World {
        let fake = FakeGoogle::start().await.expect("fake starts");
        let http = reqwest::Client::builder().no_proxy().build().expect("client");
        let control = |method: &str, path: &str, body: Value| {
            let req = http.request(method.parse().expect("method"), format!("{}{path}", fake.base_url())).json(&body);
            async move { reply(req.send().await.expect("fake control")).await }
        };
        let users = [OPERATOR, COMPANY_ADMIN, ALICE, BOB, OUTSIDER];
        let r = control("POST", "/_fake/domains", json!({"domain": DOMAIN, "users": users, "directory_sharing": true}))
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        let key = control("POST", "/_fake/service-accounts", json!({"domain": DOMAIN})).await.body;
        let client_id = key["client_id"].as_str().expect("client_id").to_owned();
        // The admin forgot the contacts and directory scopes.
        let r = control("PUT", &format!("/_fake/delegation/{client_id}"), json!({"scopes": [GWSYNC_SCOPES[0]]})).await;
        assert_eq!(r.status, 200, "{r:?}");

        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let base = format!("http://localhost:{port}");
        let oauth =
            fake.add_oauth_client("gwsync console", &[&format!("{base}/console/auth/callback")]).expect("client");
        let data = tempfile::tempdir().expect("tempdir");
        let config = Config {
            listen: listener.local_addr().expect("addr"),
            public_url: Some(base.parse().expect("url")),
            data_dir: data.path().to_path_buf(),
            admin_token: Some(SecretString::from(ADMIN_TOKEN)),
            master_key: Some(SecretString::from("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")),
            google_api_url: fake.base_url().parse().expect("url"),
            google_people_url: fake.base_url().parse().expect("url"),
            outbound_allow: "127.0.0.0/8".into(),
            oidc_issuer: fake.issuer().parse().expect("issuer"),
            oidc_client_id: Some(oauth.client_id.clone()),
            oidc_client_secret: Some(SecretString::from(oauth.client_secret.clone())),
            operators: OPERATOR.into(),
            ..Config::default()
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(gwsync::serve(config, listener, async move {
            let _ = rx.await;
        }));
        let w = World { fake, http, key, client_id, base, stop: Some(tx), task, _data: data };
        eventually("gwsync answers", async || {
            w.http.get(format!("{}/healthz", w.base)).send().await.map(|_| ()).map_err(|e| e.to_string())
        })
        .await;
        w
    }

    async fn api(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let mut req =
            self.http.request(method.parse().expect("method"), format!("{}{path}", self.base)).bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        reply(req.send().await.expect("api")).await
    }

    async fn delegate_everything(&self) {
        let scopes: Vec<&str> =
            GWSYNC_SCOPES.iter().copied().chain(["https://www.googleapis.com/auth/calendar.events"]).collect();
        let r = reply(
            self.http
                .put(format!("{}/_fake/delegation/{}", self.fake.base_url(), self.client_id))
                .json(&json!({"scopes": scopes}))
                .send()
                .await
                .expect("delegate"),
        )
        .await;
        assert_eq!(r.status, 200, "{r:?}");
    }

    /// An event on `user`'s calendar, written as Google's own clients do.
    async fn insert_event(&self, user: &str, summary: &str) {
        let now = chrono::Utc::now().timestamp();
        let claims = json!({
            "iss": self.key["client_email"], "sub": user, "aud": self.key["token_uri"],
            "scope": "https://www.googleapis.com/auth/calendar.events", "iat": now, "exp": now + 3600,
        });
        let assertion = fake_google::jwt::sign(&self.key, &claims).expect("sign");
        let r = reply(
            self.http
                .post(format!("{}/token", self.fake.base_url()))
                .form(&[("grant_type", fake_google::oauth::GRANT_TYPE), ("assertion", assertion.as_str())])
                .send()
                .await
                .expect("token"),
        )
        .await;
        let token = r.body["access_token"].as_str().unwrap_or_else(|| panic!("no token: {r:?}")).to_owned();
        let start = chrono::Utc::now() - chrono::Duration::minutes(1);
        let end = start + chrono::Duration::minutes(45);
        let r = reply(
            self.http
                .post(format!("{}/calendar/v3/calendars/primary/events", self.fake.base_url()))
                .bearer_auth(token)
                .json(&json!({"summary": summary, "start": {"dateTime": start.to_rfc3339()}, "end": {"dateTime": end.to_rfc3339()}}))
                .send()
                .await
                .expect("insert"),
        )
        .await;
        assert_eq!(r.status, 200, "{r:?}");
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = self.task.await;
        self.fake.stop().await;
    }
}

/// Signs `email` in with Google: the console's button, the fake's account chooser, back.
async fn sign_in(b: &Browser, w: &World, email: &str) {
    b.goto(&format!("{}/console/signin", w.base)).await;
    b.click_link("Sign in with Google").await;
    b.wait_for(&format!("button[value='{email}']")).await.click().await.expect("choose the account");
}

async fn sign_out(b: &Browser) {
    b.click_button("Sign out").await;
    b.wait_for_text("Sign in with Google").await;
}

/// Checks the page with axe and photographs it at desktop and phone width.
async fn page_check(b: &Browser, name: &str) {
    b.assert_accessible(name).await;
    b.screenshot(name).await;
    b.phone().await;
    b.assert_accessible(&format!("{name} at phone width")).await;
    b.screenshot(&format!("{name}-phone")).await;
    b.desktop().await;
}

fn assert_strict(c: &CookieInfo) {
    assert!(c.http_only && c.secure, "{c:?}");
    assert_eq!(c.same_site.as_deref(), Some("Strict"), "{c:?}");
    assert_eq!(c.path.as_deref(), Some("/"), "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_company_is_set_up_in_the_browser_and_each_user_edits_only_their_own_words() {
    let w = World::start().await;
    let b = Browser::start().await;

    // Signed out: the sign-in page, with its headers.
    b.goto(&format!("{}/console/", w.base)).await;
    b.wait_for_path("/console/signin").await;
    let head = w.http.get(format!("{}/console/signin", w.base)).send().await.expect("signin");
    let csp = head.headers()["content-security-policy"].to_str().expect("csp").to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'") && csp.contains("form-action 'self'"),
        "{csp}"
    );
    page_check(&b, "signin").await;

    // The operator adds the company.
    sign_in(&b, &w, OPERATOR).await;
    b.wait_for_text("Add a company").await;
    assert_strict(&b.cookie(SESSION).await.expect("a session cookie"));
    b.fill("Company id", "Not An Id").await;
    b.fill("Google Workspace domain", DOMAIN).await;
    b.click_button("Add company").await;
    b.wait_for_text("lower-case").await;
    b.fill("Company id", TENANT).await;
    b.fill("Admins (who sign in to set it up)", COMPANY_ADMIN).await;
    b.click_button("Add company").await;
    b.wait_for_path(&format!("/console/t/{TENANT}/setup")).await;
    sign_out(&b).await;
    assert!(b.cookie(SESSION).await.is_none(), "signing out removes the session");

    // Its admin signs in, lands on the setup, uploads the key: a scope is missing.
    sign_in(&b, &w, COMPANY_ADMIN).await;
    b.wait_for_path(&format!("/console/t/{TENANT}/setup")).await;
    page_check(&b, "setup-new").await;
    let key_file = tempfile::NamedTempFile::new().expect("key file");
    std::fs::write(key_file.path(), w.key.to_string()).expect("write key");
    b.upload("JSON key file", key_file.path()).await;
    b.click_button_in("form[enctype='multipart/form-data']", "Save").await;
    b.wait_for_text("Some checks failed").await;
    let text = b.page_text().await;
    assert!(text.contains(&w.client_id), "the client ID to paste is shown: {text}");
    assert!(text.contains("https://www.googleapis.com/auth/contacts.readonly"), "the scopes to paste: {text}");
    assert!(text.contains("FAILED"), "{text}");
    page_check(&b, "setup-failing").await;

    // Fixed at "Google": Check again passes, and self-service is switched on.
    w.delegate_everything().await;
    b.click_button("Check again").await;
    b.wait_for_text("All checks passed").await;
    b.set_checked("Self-service: every phone user may sign in and edit their own trigger words", true).await;
    b.click_button_in(&format!("form[action='/console/t/{TENANT}/setup'][method='post']"), "Save").await;
    b.wait_for_text("Saved.").await;
    let tenant = w.api("GET", &format!("/api/v1/tenants/{TENANT}"), None).await;
    assert_eq!(tenant.body["self_service"], true, "{tenant:?}");
    assert_eq!(tenant.body["admins"], json!([COMPANY_ADMIN]), "{tenant:?}");
    b.goto(&format!("{}/console/t/{TENANT}/setup?check=1", w.base)).await;
    b.wait_for_text("All checks passed").await;
    page_check(&b, "setup").await;

    // Two users from the directory (read once the delegation is right).
    eventually("the directory in the phonebook", async || {
        let s = w.api("GET", &format!("/api/v1/tenants/{TENANT}/contacts/status"), None).await;
        if s.body["entries"].as_u64().unwrap_or(0) >= 2 { Ok(()) } else { Err(format!("{s:?}")) }
    })
    .await;
    b.click_link("Users").await;
    b.wait_for_text("Add from the company directory").await;
    for who in [ALICE, BOB] {
        b.wait_for(&format!("input[name='pick'][value='{who}']")).await.click().await.expect("pick");
    }
    b.click_button("Add selected users").await;
    b.wait_for(&format!("a[href='/console/t/{TENANT}/users/alice%40acme.test']")).await;
    let users = w.api("GET", &format!("/api/v1/tenants/{TENANT}/users"), None).await;
    let emails: Vec<&str> =
        users.body["users"].as_array().expect("users").iter().filter_map(|u| u["email"].as_str()).collect();
    assert_eq!(emails, [ALICE, BOB], "{users:?}");

    // Alice's profiles: a trigger word added, a title tested, saved.
    b.click_link(ALICE).await;
    b.wait_for_text("Profiles of alice@acme.test").await;
    b.fill("New trigger word for Lunch", "fika").await;
    b.find("button[value='add.0']").await.click().await.expect("Add");
    b.wait_for_text("Not saved yet").await;
    b.fill("Event title", "Fika med kund").await;
    b.click_button("Test").await;
    let result = b.wait_for("#test-result").await.text().await.expect("text");
    assert!(result.contains("switches to Lunch") && result.contains("fika"), "{result}");
    b.select("Out of office switches to", "Meeting").await;
    b.click_button("Save").await;
    b.wait_for_text("Saved.").await;
    page_check(&b, "profiles").await;
    let alice = w.api("GET", &format!("/api/v1/tenants/{TENANT}/users/{ALICE}"), None).await;
    assert_eq!(alice.body["profiles"][0]["triggers"], json!(["lunch", "fika"]), "{alice:?}");
    assert_eq!(alice.body["status_events"]["out_of_office"], "Meeting", "{alice:?}");

    // An event at "Google" switches her; the users page shows it.
    w.live_channels_for(&[ALICE]).await;
    w.insert_event(ALICE, "Fika med kund").await;
    eventually("Alice switched to Lunch", async || {
        let p = w.api("GET", &format!("/api/v1/tenants/{TENANT}/users/{ALICE}/presence"), None).await;
        if p.body["profile"] == "Lunch" { Ok(()) } else { Err(format!("{p:?}")) }
    })
    .await;
    b.click_link("Users").await;
    let row = b.wait_for("#users tbody tr").await.text().await.expect("row");
    assert!(row.contains(ALICE) && row.contains("Lunch"), "{row}");
    page_check(&b, "users").await;

    // The other pages are there and accessible; a refused URL is shown beside its field.
    b.click_link("Phone system").await;
    b.fill("Phone system URL", "https://169.254.169.254/latest").await;
    b.click_button_in(&format!("form[action='/console/t/{TENANT}/phone']"), "Save").await;
    let err = b.wait_for("#url-error").await.text().await.expect("text");
    assert!(err.contains("169.254.169.254") || err.contains("refused") || err.contains("link-local"), "{err}");
    // A phone system: the secret is made here and shown once; kept when the URL moves; the
    // test message and the switches arrive signed with it, and the page lists the deliveries.
    let phone_form = format!("form[action='/console/t/{TENANT}/phone']");
    b.fill("Phone system URL", "http://127.0.0.1:9/not-yet").await;
    b.click_button_in(&phone_form, "Save").await;
    let secret = b.wait_for("#secret").await.text().await.expect("secret");
    assert!(secret.trim().starts_with("whsec_"), "{secret}");
    let receiver = common::receiver::Receiver::start(secret.trim(), gwsync::clock::Clock::system()).await;
    b.fill("Phone system URL", &receiver.url).await;
    b.set_checked("Generate a new signing secret (shown once)", false).await;
    b.click_button_in(&phone_form, "Save").await;
    eventually("the phone system moved", async || {
        let t = w.api("GET", &format!("/api/v1/tenants/{TENANT}"), None).await;
        if t.body["phone_system"]["url"] == receiver.url.as_str() { Ok(()) } else { Err(format!("{t:?}")) }
    })
    .await;
    let switched = receiver.wait_delivered_to(ALICE, 1).await;
    assert!(switched.iter().all(|a| a.verified.is_ok()), "signed with the secret shown once: {switched:?}");
    assert_eq!(switched[0].json["profile"], "Lunch", "her current state: {switched:?}");
    b.click_button("Send a test switch").await;
    let result = b.wait_for("#test-switch").await.text().await.expect("text");
    assert!(result.contains("accepted"), "{result}");
    let test = receiver.attempts().into_iter().find(|a| a.json["type"] == "gwsync.test").expect("a test message");
    assert!(test.verified.is_ok(), "{test:?}");
    let deliveries = b.page_text().await;
    assert!(deliveries.contains(ALICE) && deliveries.contains("delivered"), "the last deliveries: {deliveries}");
    page_check(&b, "phone").await;
    receiver.stop().await;
    b.click_link("Phonebook").await;
    b.wait_for_text("Number lookup").await;
    b.fill("Name, company or number", "bob").await;
    b.click_button("Search").await;
    let found = b.wait_for_text("1 found").await;
    assert!(found.contains("Bob"), "{found}");
    b.fill("Phone number", "+46 8 123 456 78").await;
    b.click_button("Look up").await;
    b.wait_for_text("No one has that number.").await;
    b.click_button("Make export addresses").await;
    let vcard = b.wait_for("section[aria-labelledby='export-h'] li span.mono").await.text().await.expect("url");
    let exported = w.http.get(vcard.trim()).send().await.expect("export");
    assert_eq!(exported.status(), 200, "the export address works");
    assert!(exported.headers()["content-type"].to_str().expect("type").starts_with("text/vcard"));
    let (without, _) = vcard.trim().split_once("?token=").expect("the address carries its token");
    assert_eq!(w.http.get(without).send().await.expect("export").status(), 403, "and needs it");
    page_check(&b, "phonebook").await;
    b.click_link("Audit log").await;
    let audit = b.wait_for_text(COMPANY_ADMIN).await;
    assert!(audit.contains("user.put") && audit.contains("tenant.credentials.put"), "{audit}");
    page_check(&b, "audit").await;
    sign_out(&b).await;

    // Alice signs in to her own page and edits her own words only.
    sign_in(&b, &w, ALICE).await;
    b.wait_for_path(&format!("/console/t/{TENANT}/me")).await;
    b.wait_for_text("My profiles").await;
    let text = b.page_text().await;
    assert!(!text.contains("Remove profile") && !text.contains("Phone system id"), "a user edits words only: {text}");
    b.fill("New trigger word for Meeting", "kaffe").await;
    b.click_button("Save").await;
    b.wait_for_text("Saved.").await;
    page_check(&b, "my-profiles").await;
    let alice = w.api("GET", &format!("/api/v1/tenants/{TENANT}/users/{ALICE}"), None).await;
    assert_eq!(alice.body["profiles"][1]["triggers"], json!(["*möte", "kaffe"]), "{alice:?}");
    for elsewhere in [
        format!("/console/t/{TENANT}/users"),
        format!("/console/t/{TENANT}/users/bob%40acme.test"),
        format!("/console/t/{TENANT}/setup"),
    ] {
        b.goto(&format!("{}{elsewhere}", w.base)).await;
        b.wait_for_path(&format!("/console/t/{TENANT}/me")).await;
    }
    let audit = w.api("GET", &format!("/api/v1/tenants/{TENANT}/audit?limit=5"), None).await;
    let mine = &audit.body["entries"][0];
    assert_eq!(
        (mine["actor"]["name"].as_str(), mine["actor"]["role"].as_str()),
        (Some(ALICE), Some("user")),
        "{audit:?}"
    );
    sign_out(&b).await;

    // Someone who is neither an admin nor a phone user gets no session.
    sign_in(&b, &w, OUTSIDER).await;
    b.wait_for_text("No access").await;
    assert!(b.cookie(SESSION).await.is_none(), "an outsider has no session");
    page_check(&b, "refused").await;
    b.goto(&format!("{}/console/t/{TENANT}/setup", w.base)).await;
    b.wait_for_path("/console/signin").await;

    b.close().await;
    w.stop().await;
}

impl World {
    /// Waits until gwsync holds a live channel at the fake for each of `users`.
    async fn live_channels_for(&self, users: &[&str]) {
        eventually("live channels", async || {
            let r = reply(
                self.http
                    .get(format!("{}/_fake/channels?state=live", self.fake.base_url()))
                    .send()
                    .await
                    .expect("channels"),
            )
            .await;
            let live: Vec<&str> =
                r.body["channels"].as_array().into_iter().flatten().filter_map(|c| c["calendar"].as_str()).collect();
            if users.iter().all(|u| live.contains(u)) { Ok(()) } else { Err(format!("{live:?}")) }
        })
        .await;
    }
}

/// The session cookie a console answer sets, as `name=value`.
fn session_from(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(SESSION) && !c.contains("Max-Age=0"))
        .map(|c| c.split(';').next().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_sign_in_with_a_token_forms_need_their_csrf_token_and_other_companies_do_not_exist() {
    let w = World::start().await;
    let http =
        reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let post = |path: &str, cookie: Option<&str>, form: Vec<(&str, String)>| {
        let mut req = http.post(format!("{}{path}", w.base)).header("Origin", w.base.clone()).form(&form);
        if let Some(c) = cookie {
            req = req.header("Cookie", c.to_owned());
        }
        req.send()
    };
    // A wrong token is not a token.
    let r = post("/console/signin/token", None, vec![("token", "gws_wrong".into())]).await.expect("post");
    assert_eq!(r.status(), 401);
    assert!(session_from(&r).is_none());

    // The bootstrap token signs an operator in.
    let r = post("/console/signin/token", None, vec![("token", ADMIN_TOKEN.into())]).await.expect("post");
    assert_eq!(r.status(), 303, "{:?}", r.text().await);
    let cookie = session_from(&r).expect("a session");
    let page = http.get(format!("{}/console/", w.base)).header("Cookie", &cookie).send().await.expect("get");
    let html = page.text().await.expect("html");
    assert!(html.contains("Add a company"), "{html}");
    let csrf = html.split("name=\"csrf\" value=\"").nth(1).and_then(|s| s.split('"').next()).expect("csrf").to_owned();

    // A form without the session's CSRF token, or from another origin, changes nothing.
    let company =
        |id: &str| vec![("id", id.to_owned()), ("domain", DOMAIN.to_owned()), ("admins", COMPANY_ADMIN.to_owned())];
    let mut forged = company("forged");
    forged.push(("csrf", "not-the-token".into()));
    let r = post("/console/tenants", Some(&cookie), forged).await.expect("post");
    assert_eq!(r.status(), 403);
    let mut cross = company("cross");
    cross.push(("csrf", csrf.clone()));
    let r = http
        .post(format!("{}/console/tenants", w.base))
        .header("Origin", "https://evil.example")
        .header("Cookie", &cookie)
        .form(&cross)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 403);
    let tenants = w.api("GET", "/api/v1/tenants", None).await;
    assert_eq!(tenants.body["tenants"], json!([]), "nothing was made: {tenants:?}");

    // With it, two companies; each admin sees only their own.
    for (id, domain, admin) in [("acme", DOMAIN, COMPANY_ADMIN), ("other", "other.test", "boss@other.test")] {
        let form = vec![
            ("id", id.to_owned()),
            ("domain", domain.to_owned()),
            ("admins", admin.to_owned()),
            ("csrf", csrf.clone()),
        ];
        let r = post("/console/tenants", Some(&cookie), form).await.expect("post");
        assert_eq!(r.status(), 303, "{:?}", r.text().await);
    }
    let audit = w.api("GET", "/api/v1/tenants/acme/audit", None).await;
    assert_eq!(
        audit.body["entries"][0]["actor"]["name"], "GWSYNC_ADMIN_TOKEN",
        "made by the signed-in token: {audit:?}"
    );
    // A company's own token does not sign in to the console (its admins use Google).
    let theirs = w.api("POST", "/api/v1/tenants/acme/tokens", Some(json!({"name": "x", "role": "tenant_admin"}))).await;
    let r = post("/console/signin/token", None, vec![("token", theirs.body["token"].as_str().expect("token").into())])
        .await
        .expect("post");
    assert_eq!(r.status(), 403);
    assert!(session_from(&r).is_none());
    // A revoked operator token's session ends at once.
    let made = w.api("POST", "/api/v1/tokens", Some(json!({"name": "ops", "role": "operator"}))).await;
    let r = post("/console/signin/token", None, vec![("token", made.body["token"].as_str().expect("token").into())])
        .await
        .expect("post");
    let ops = session_from(&r).expect("a session");
    let ok = http.get(format!("{}/console/t/other/setup", w.base)).header("Cookie", &ops).send().await.expect("get");
    assert_eq!(ok.status(), 200);
    let id = made.body["id"].as_str().expect("id");
    assert_eq!(w.api("DELETE", &format!("/api/v1/tokens/{id}"), None).await.status, 204);
    let gone = http.get(format!("{}/console/t/other/setup", w.base)).header("Cookie", &ops).send().await.expect("get");
    assert_eq!(gone.status(), 303, "a revoked token's session is over");
    assert_eq!(gone.headers()["location"], "/console/signin");
    // acme's admin (through a session as Google would give it) cannot open the other company.
    let b = Browser::start().await;
    sign_in(&b, &w, COMPANY_ADMIN).await;
    b.wait_for_path("/console/t/acme/setup").await;
    b.goto(&format!("{}/console/t/other/setup", w.base)).await;
    let text = b.wait_for_text("There is no such company").await;
    assert!(!text.contains("other.test"), "{text}");
    b.goto(&format!("{}/console/t/nonexistent/users", w.base)).await;
    b.wait_for_text("There is no such company").await;
    b.close().await;
    w.stop().await;
}
