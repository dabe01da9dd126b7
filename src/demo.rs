//! `gwsync demo`: the real service against a bundled fake Google — no key, no config, no network.
//!
//! It starts fake Google in this process with a Swedish demo company (three users, calendars in
//! Europe/Stockholm), runs `gwsync serve` against it with a fresh data directory, registers the
//! tenant, its key and the users with their profiles through the admin API, writes events that
//! start within minutes (a lunch, a "kundmöte", a daily stand-up, an all-day "Semester", an
//! out-of-office "Borta" that switches by its event type, beside a working location "Office"
//! that never switches), and
//! prints every profile switch as its built-in phone system receives and verifies it, until
//! Ctrl-C. The API stays available meanwhile.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use anyhow::{Context, Result, bail};
use base64::Engine;
use chrono::{Duration, Utc};
use rand::Rng;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::config::Config;

const DOMAIN: &str = "demo.test";
const ZONE: &str = "Europe/Stockholm";
const USERS: [&str; 3] = ["anna@demo.test", "bjorn@demo.test", "cecilia@demo.test"];
const ADMIN: &str = "it@demo.test";
const SCOPES: [&str; 4] = [
    "https://www.googleapis.com/auth/calendar.readonly",
    "https://www.googleapis.com/auth/contacts.readonly",
    "https://www.googleapis.com/auth/directory.readonly",
    // Only the demo writes events; gwsync itself reads.
    "https://www.googleapis.com/auth/calendar.events",
];

pub fn run(listen: Option<SocketAddr>) -> Result<std::process::ExitCode> {
    crate::logging::init_with_default(Config::default().log_format, "warn");
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(demo(listen))?;
    Ok(std::process::ExitCode::SUCCESS)
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rng().fill_bytes(&mut b);
    b
}

async fn demo(listen: Option<SocketAddr>) -> Result<()> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let http = reqwest::Client::builder().no_proxy().build()?;

    // Fake Google with the demo company.
    let fake = fake_google::FakeGoogle::start().await.context("starting fake Google")?;
    let google = fake.base_url();
    let all: Vec<&str> = USERS.iter().copied().chain([ADMIN]).collect();
    call(
        &http,
        "POST",
        &format!("{google}/_fake/domains"),
        Some(json!({"domain": DOMAIN, "users": all, "time_zone": ZONE, "region": "SE"})),
    )
    .await?;
    let key = call(&http, "POST", &format!("{google}/_fake/service-accounts"), Some(json!({"domain": DOMAIN}))).await?;
    let client_id = key["client_id"].as_str().context("key without client_id")?.to_owned();
    call(&http, "PUT", &format!("{google}/_fake/delegation/{client_id}"), Some(json!({"scopes": SCOPES}))).await?;

    // The phone system: prints what it gets, after checking the signature.
    let phone_key = random_bytes::<24>();
    let receiver = start_receiver(phone_key.to_vec())?;

    // gwsync itself.
    let listener = match TcpListener::bind(listen.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)))) {
        Ok(l) => l,
        Err(_) if listen.is_none() => TcpListener::bind("127.0.0.1:0")?,
        Err(e) => return Err(e).context("binding the API address"),
    };
    let addr = listener.local_addr()?;
    let base = format!("http://{addr}");
    let data = tempfile_dir()?;
    let admin_token = hex(&random_bytes::<16>());
    // The console's Sign in with Google, against the fake's OpenID provider.
    let oauth = fake
        .add_oauth_client("gwsync console", &[&format!("{base}/console/auth/callback")])
        .map_err(anyhow::Error::msg)
        .context("registering the console's OAuth client")?;
    let config = Config {
        listen: addr,
        public_url: Some(base.parse()?),
        data_dir: data.clone(),
        admin_token: Some(SecretString::from(admin_token.clone())),
        master_key: Some(SecretString::from(b64.encode(random_bytes::<32>()))),
        google_api_url: google.parse()?,
        google_people_url: google.parse()?,
        // The fake Google (the key's token_uri) and the phone system above are this machine's
        // loopback, which the outbound policy refuses unless allowed.
        outbound_allow: "127.0.0.1/32".into(),
        oidc_issuer: fake.issuer().parse()?,
        oidc_client_id: Some(oauth.client_id.clone()),
        oidc_client_secret: Some(SecretString::from(oauth.client_secret.clone())),
        operators: ADMIN.into(),
        ..Config::default()
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(crate::serve(config, listener, async move {
        let _ = stop_rx.await;
    }));
    wait_up(&http, &base).await?;

    let api = |method: &'static str, path: String, body: Option<Value>| {
        let (http, base, token) = (http.clone(), base.clone(), admin_token.clone());
        async move {
            let mut req = http.request(method.parse()?, format!("{base}{path}")).bearer_auth(token);
            if let Some(b) = body {
                req = req.json(&b);
            }
            check(req.send().await?).await
        }
    };
    let secret = format!("whsec_{}", b64.encode(phone_key));
    api("PUT", "/api/v1/tenants/demo".into(), Some(json!({"domain": DOMAIN, "directory_admin": ADMIN, "default_region": "SE", "phone_system": {"url": receiver, "secret": secret}, "admins": [ADMIN], "self_service": true}))).await?;
    check(
        http.put(format!("{base}/api/v1/tenants/demo/credentials"))
            .bearer_auth(&admin_token)
            .body(key.to_string())
            .send()
            .await?,
    )
    .await?;
    let profiles = [
        // Kontor's trigger matches her working location's title ("Office"), which still never
        // switches her: working locations do not count (README, Calendar status events).
        json!([{"name": "Semester", "triggers": ["semester", "ledig"]}, {"name": "Lunch", "triggers": ["lunch"]}, {"name": "Möte", "triggers": ["*möte", "meeting"]}, {"name": "Kontor", "triggers": ["office", "kontor"]}]),
        json!([{"name": "Möte", "triggers": ["*möte", "meeting"]}, {"name": "Lunch", "triggers": ["lunch"]}]),
        json!([{"name": "Stand-up", "triggers": ["stand-up", "standup"]}, {"name": "Semester", "triggers": ["semester"]}]),
    ];
    for (i, (user, p)) in USERS.iter().zip(profiles).enumerate() {
        let mut body = json!({"external_id": format!("{}", 1041 + i), "profiles": p});
        if i == 0 {
            // Anna's out-of-office events switch her to Semester whatever they are called.
            body["status_events"] = json!({"out_of_office": "Semester"});
        }
        api("PUT", format!("/api/v1/tenants/demo/users/{user}"), Some(body)).await?;
    }

    // Events that start within minutes, written through Google's own Calendar API.
    let token = sign_in(&http, &key, USERS[0]).await?;
    let now = Utc::now();
    let minute = |m: i64| (now + Duration::minutes(m)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let local = (now + Duration::minutes(1)).with_timezone(&ZONE.parse::<chrono_tz::Tz>().unwrap_or(chrono_tz::UTC));
    let events = [
        (
            USERS[0],
            json!({"summary": "Lunch med kund", "start": {"dateTime": minute(1)}, "end": {"dateTime": minute(3)}}),
        ),
        (
            USERS[1],
            json!({"summary": "Kundmöte Volvo", "start": {"dateTime": minute(2)}, "end": {"dateTime": minute(4)}}),
        ),
        (
            USERS[2],
            json!({"summary": "Stand-up", "recurrence": ["RRULE:FREQ=DAILY"],
            "start": {"dateTime": local.format("%Y-%m-%dT%H:%M:%S").to_string(), "timeZone": ZONE},
            "end": {"dateTime": (local + Duration::minutes(2)).format("%Y-%m-%dT%H:%M:%S").to_string(), "timeZone": ZONE}}),
        ),
        (
            USERS[2],
            json!({"summary": "Semester", "start": {"date": local.format("%Y-%m-%d").to_string()}, "end": {"date": (local.date_naive() + Duration::days(1)).format("%Y-%m-%d").to_string()}}),
        ),
        (
            USERS[0],
            json!({"summary": "Borta", "eventType": "outOfOffice", "start": {"dateTime": minute(3)}, "end": {"dateTime": minute(125)},
            "outOfOfficeProperties": {"autoDeclineMode": "declineOnlyNewConflictingInvitations", "declineMessage": "Tillbaka om två timmar"}}),
        ),
        (
            USERS[0],
            json!({"summary": "Office", "eventType": "workingLocation", "visibility": "public", "transparency": "transparent",
            "start": {"date": local.format("%Y-%m-%d").to_string()}, "end": {"date": (local.date_naive() + Duration::days(1)).format("%Y-%m-%d").to_string()},
            "workingLocationProperties": {"type": "officeLocation", "officeLocation": {"label": "Office"}}}),
        ),
    ];
    for (user, event) in events {
        let t = sign_in(&http, &key, user).await?;
        check(
            http.post(format!("{google}/calendar/v3/calendars/primary/events"))
                .bearer_auth(&t)
                .json(&event)
                .send()
                .await?,
        )
        .await?;
    }
    drop(token);

    println!();
    println!("gwsync demo: the real service against a bundled fake Google (no key, no network).");
    println!("  console       {base}/console/   (Sign in with Google → pick {ADMIN}, or a user for their own page)");
    println!("  gwsync API    {base}   (admin token: {admin_token})");
    println!("  fake Google   {google}   (control API under /_fake/)");
    println!(
        "  users         {} — Lunch at +1 min, Kundmöte at +2 min, a daily Stand-up at +1 min, Semester all day today",
        USERS.join(", ")
    );
    println!(
        "  status events {} is out of office (\"Borta\") from +3 min: Semester by its event type; her working location \"Office\" never switches",
        USERS[0]
    );
    println!(
        "  try:          curl -H 'Authorization: Bearer {admin_token}' {base}/api/v1/tenants/demo/users/{}/presence",
        USERS[0]
    );
    println!("Profile switches, as the phone system receives them (Ctrl-C to stop):");

    tokio::signal::ctrl_c().await?;
    let _ = stop_tx.send(());
    let _ = service.await;
    fake.stop().await;
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("gwsync-demo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

async fn wait_up(http: &reqwest::Client, base: &str) -> Result<()> {
    for _ in 0..500 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    bail!("gwsync did not start")
}

async fn call(http: &reqwest::Client, method: &str, url: &str, body: Option<Value>) -> Result<Value> {
    let mut req = http.request(method.parse()?, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    check(req.send().await?).await
}

async fn check(resp: reqwest::Response) -> Result<Value> {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{status}: {text}");
    }
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Signs in as `subject` with the demo key (the demo writes events; gwsync only reads).
async fn sign_in(http: &reqwest::Client, key: &Value, subject: &str) -> Result<String> {
    let now = Utc::now().timestamp();
    let token_uri = key["token_uri"].as_str().context("key without token_uri")?;
    let claims = json!({"iss": key["client_email"], "sub": subject, "aud": token_uri, "scope": SCOPES[3], "iat": now, "exp": now + 3600});
    let assertion = fake_google::jwt::sign(key, &claims)?;
    let body = check(
        http.post(token_uri)
            .form(&[("grant_type", fake_google::oauth::GRANT_TYPE), ("assertion", assertion.as_str())])
            .send()
            .await?,
    )
    .await?;
    body["access_token"].as_str().map(str::to_owned).context("no access token")
}

/// The demo's phone system: verifies each message's Standard Webhooks signature and prints it.
fn start_receiver(key: Vec<u8>) -> Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/hooks/gwsync", listener.local_addr()?);
    let key = Arc::new(key);
    let server = HttpServer::new(move || {
        let key = key.clone();
        App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
            let key = key.clone();
            async move { receive(&key, &req, &body) }
        }))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    tokio::spawn(server);
    Ok(url)
}

fn receive(key: &[u8], req: &HttpRequest, body: &[u8]) -> HttpResponse {
    let h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let (id, ts, sig) = (h("webhook-id"), h("webhook-timestamp"), h("webhook-signature"));
    let text = String::from_utf8_lossy(body);
    let expected = crate::presence::signing::signature(key, &id, ts.parse().unwrap_or(0), &text);
    if !sig.split(' ').any(|s| s == expected) {
        println!("  !! a message with a bad signature was refused");
        return HttpResponse::Unauthorized().finish();
    }
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let zone: chrono_tz::Tz = ZONE.parse().unwrap_or(chrono_tz::UTC);
    let local = |field: &str| {
        v[field]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&zone).format("%H:%M").to_string())
    };
    let now = Utc::now().with_timezone(&zone).format("%H:%M:%S");
    let who = v["user"].as_str().unwrap_or("?");
    let why = match (v["cause"]["trigger"].as_str(), v["cause"]["event_type"].as_str()) {
        (Some(t), _) => format!("trigger \"{t}\""),
        (None, Some(event_type)) => format!("event type {event_type}"),
        (None, None) => "?".to_owned(),
    };
    match v["profile"].as_str() {
        Some(p) => println!(
            "  {now}  {who:<18} → {p:<9} until {}   ({why}, #{})",
            local("until").unwrap_or_else(|| "?".into()),
            v["sequence"]
        ),
        None => println!("  {now}  {who:<18} → default   (#{})", v["sequence"]),
    }
    HttpResponse::NoContent().finish()
}
