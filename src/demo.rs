//! `gwsync demo`: starts the bundled fake Google in this process, sets up a sample Workspace
//! (domain, service account with domain-wide delegation, a user), signs in as the user the way a
//! service account does, writes and lists an event, and keeps the fake running so a newcomer can
//! poke at it. Later issues run the real service against it here.

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

const DOMAIN: &str = "acme.test";
const USER: &str = "alice@acme.test";
const SCOPES: &[&str] = &[
    "https://www.googleapis.com/auth/calendar.readonly",
    "https://www.googleapis.com/auth/calendar.events",
    "https://www.googleapis.com/auth/contacts.readonly",
    "https://www.googleapis.com/auth/directory.readonly",
];

pub fn run(fake_listen: Option<SocketAddr>) -> Result<std::process::ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let addr = fake_listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let fake =
            fake_google::FakeGoogle::start_on(addr).await.with_context(|| format!("starting fake Google on {addr}"))?;
        let base = fake.base_url();
        println!("fake Google is listening on {base}");
        let http = reqwest::Client::builder().no_proxy().build()?;

        post(
            &http,
            &format!("{base}/_fake/domains"),
            json!({"domain": DOMAIN, "users": [USER], "time_zone": "Europe/Stockholm"}),
        )
        .await?;
        let key = post(&http, &format!("{base}/_fake/service-accounts"), json!({"domain": DOMAIN})).await?;
        let client_id = key["client_id"].as_str().context("key file without client_id")?;
        let resp =
            http.put(format!("{base}/_fake/delegation/{client_id}")).json(&json!({"scopes": SCOPES})).send().await?;
        check(resp).await?;
        println!(
            "set up {DOMAIN}: user {USER}, service account {} (client id {client_id}), delegation granted",
            key["client_email"].as_str().unwrap_or("?")
        );

        let token = sign_in(&http, &key, USER).await?;
        println!("signed in as {USER} with a JWT-bearer assertion: got an access token");

        let now = chrono::Utc::now();
        let event = json!({
            "summary": "Lunch with a customer",
            "start": {"dateTime": (now + chrono::Duration::minutes(5)).to_rfc3339()},
            "end": {"dateTime": (now + chrono::Duration::minutes(65)).to_rfc3339()},
        });
        let resp = http
            .post(format!("{base}/calendar/v3/calendars/primary/events"))
            .bearer_auth(&token)
            .json(&event)
            .send()
            .await?;
        let inserted = check(resp).await?;
        println!(
            "inserted event {} \"{}\" starting {}",
            inserted["id"].as_str().unwrap_or("?"),
            inserted["summary"].as_str().unwrap_or(""),
            inserted["start"]["dateTime"].as_str().unwrap_or("?")
        );

        let resp = http.get(format!("{base}/calendar/v3/calendars/primary/events")).bearer_auth(&token).send().await?;
        let list = check(resp).await?;
        println!(
            "events.list: {} event(s), sync token issued: {}",
            list["items"].as_array().map_or(0, Vec::len),
            list["nextSyncToken"].is_string()
        );
        println!("\nfake Google keeps running; try:  curl {base}/_fake/requests");
        println!("press Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
        fake.stop().await;
        Ok(std::process::ExitCode::SUCCESS)
    })
}

async fn post(http: &reqwest::Client, url: &str, body: Value) -> Result<Value> {
    check(http.post(url).json(&body).send().await?).await
}

async fn check(resp: reqwest::Response) -> Result<Value> {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() && status != reqwest::StatusCode::NO_CONTENT {
        bail!("fake Google answered {status}: {body}");
    }
    Ok(body)
}

async fn sign_in(http: &reqwest::Client, key: &Value, subject: &str) -> Result<String> {
    let now = chrono::Utc::now().timestamp();
    let token_uri = key["token_uri"].as_str().context("key file without token_uri")?;
    let claims = json!({
        "iss": key["client_email"], "sub": subject, "aud": token_uri,
        "scope": SCOPES.join(" "), "iat": now, "exp": now + 3600,
    });
    let assertion = fake_google::jwt::sign(key, &claims)?;
    let resp = http
        .post(token_uri)
        .form(&[("grant_type", fake_google::oauth::GRANT_TYPE), ("assertion", assertion.as_str())])
        .send()
        .await?;
    let body = check(resp).await?;
    body["access_token"].as_str().map(str::to_owned).context("token response without access_token")
}
