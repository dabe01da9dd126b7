//! "A test proves the private key's bytes appear neither in the data directory nor in the logs."
//!
//! The real `gwsync serve` runs as a subprocess with `RUST_LOG=trace`, its stdout and stderr
//! captured to files, against an in-process fake Google. It stores a key and a phone-system
//! secret, mints access tokens (diagnose), is stopped with SIGTERM, and then every byte of the
//! logs and of every file in its data directory is searched for the secrets.
mod common;

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::*;
use fake_google::FakeGoogle;
use serde_json::{Value, json};

const MASTER_KEY_BYTES: [u8; 32] = [0x5a; 32];

/// Kills the server if the test ends before it was stopped.
struct Server(Option<Child>);

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Server {
    /// SIGTERM, then wait (bounded) for the process to end; killed if it does not.
    fn terminate(&mut self) -> ExitStatus {
        let child = self.0.take().expect("running");
        let pid = child.id();
        let sent = Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("run kill");
        assert!(sent.success(), "kill -TERM {pid}");
        let (tx, rx) = mpsc::channel();
        let mut child = child;
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(status) => status.expect("wait"),
            Err(_) => {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
                panic!("gwsync did not stop within 30 s of SIGTERM; killed it");
            }
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

async fn control(http: &reqwest::Client, fake: &FakeGoogle, method: &str, path: &str, body: Value) -> Reply {
    let req = http.request(method.parse().expect("method"), format!("{}{}", fake.base_url(), path)).json(&body);
    reply(req.send().await.expect("fake control")).await
}

async fn admin(http: &reqwest::Client, base: &str, method: &str, path: &str, body: Vec<u8>) -> Reply {
    let req = http
        .request(method.parse().expect("method"), format!("{base}{path}"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(body);
    reply(req.send().await.expect("admin call")).await
}

fn read_or_empty(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_default()
}

#[tokio::test]
async fn the_private_key_and_other_secrets_appear_neither_in_the_data_dir_nor_in_the_logs() {
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(60)).build().expect("client");

    // Fake Google, set up as the harness does.
    let fake = FakeGoogle::start().await.expect("fake starts");
    let r = control(
        &http,
        &fake,
        "POST",
        "/_fake/domains",
        json!({"domain": DOMAIN, "users": [ALICE, BOB, IT], "directory_sharing": true}),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = control(&http, &fake, "POST", "/_fake/service-accounts", json!({"domain": DOMAIN})).await;
    assert_eq!(r.status, 201, "{r:?}");
    let key = r.body;
    let client_id = key["client_id"].as_str().expect("client_id").to_owned();
    let client_email = key["client_email"].as_str().expect("client_email").to_owned();
    let r =
        control(&http, &fake, "PUT", &format!("/_fake/delegation/{client_id}"), json!({"scopes": GWSYNC_SCOPES})).await;
    assert_eq!(r.status, 200, "{r:?}");

    // The secrets.
    let pem = key["private_key"].as_str().expect("private_key").to_owned();
    let pem_lines: Vec<String> =
        pem.lines().filter(|l| !l.starts_with("-----")).map(str::trim).map(str::to_owned).collect();
    assert!(pem_lines.len() > 20, "a 2048-bit PEM body has many lines: {}", pem_lines.len());
    let der_b64: String = pem_lines.concat();
    let der = STANDARD.decode(&der_b64).expect("PEM body is base64");
    let webhook_key: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect();
    let webhook_b64 = STANDARD.encode(&webhook_key);
    let whsec = format!("whsec_{webhook_b64}");
    let master_key = STANDARD.encode(MASTER_KEY_BYTES);

    // gwsync serve, logging everything it is allowed to.
    let data_dir = tempfile::tempdir().expect("data dir");
    let log_dir = tempfile::tempdir().expect("log dir");
    let stdout_path = log_dir.path().join("stdout.log");
    let stderr_path = log_dir.path().join("stderr.log");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gwsync"));
    cmd.arg("serve");
    for (k, _) in std::env::vars_os() {
        let name = k.to_string_lossy();
        if name.starts_with("GWSYNC_") || name == "RUST_LOG" {
            cmd.env_remove(&k);
        }
    }
    cmd.env("GWSYNC_LISTEN", format!("127.0.0.1:{port}"))
        .env("GWSYNC_PUBLIC_URL", &base)
        .env("GWSYNC_DATA_DIR", data_dir.path())
        .env("GWSYNC_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("GWSYNC_MASTER_KEY", &master_key)
        .env("GWSYNC_GOOGLE_API_URL", fake.base_url())
        .env("GWSYNC_GOOGLE_PEOPLE_URL", fake.base_url())
        .env("GWSYNC_OUTBOUND_ALLOW", "127.0.0.0/8")
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"));
    let mut server = Server(Some(cmd.spawn().expect("spawn gwsync serve")));

    let mut up = false;
    for _ in 0..500 {
        if let Some(status) = server.0.as_mut().expect("running").try_wait().expect("try_wait") {
            panic!("gwsync serve exited with {status}: {}", String::from_utf8_lossy(&read_or_empty(&stderr_path)));
        }
        if http.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(up, "gwsync serve did not start listening");

    // A tenant with a phone-system secret, its key, a user.
    let tenant = json!({
        "domain": DOMAIN,
        "directory_admin": IT,
        "phone_system": {"url": "https://pbx.acme.test/hooks/gwsync", "secret": whsec},
    });
    let r = admin(&http, &base, "PUT", &format!("/api/v1/tenants/{TENANT}"), tenant.to_string().into_bytes()).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert!(!r.text.contains(&webhook_b64), "the secret is never returned: {r:?}");

    // Two uploads an operator gets wrong, each carrying the real key: the errors must not quote it.
    let mut wrong_type = key.clone();
    wrong_type["client_id"] = json!("not-numeric");
    let r = admin(
        &http,
        &base,
        "PUT",
        &format!("/api/v1/tenants/{TENANT}/credentials"),
        wrong_type.to_string().into_bytes(),
    )
    .await;
    assert_eq!(r.status, 400, "{r:?}");
    let whole = key.to_string().into_bytes();
    let truncated = whole[..whole.len() * 2 / 3].to_vec();
    let r = admin(&http, &base, "PUT", &format!("/api/v1/tenants/{TENANT}/credentials"), truncated).await;
    assert_eq!(r.status, 400, "{r:?}");
    for l in &pem_lines {
        assert!(!r.text.contains(l.as_str()), "an error quotes the key: {r:?}");
    }

    let r = admin(&http, &base, "PUT", &format!("/api/v1/tenants/{TENANT}/credentials"), whole).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(!r.text.contains("PRIVATE KEY"), "{r:?}");
    let user = json!({"external_id": "1042", "profiles": [{"name": "Lunch", "triggers": ["lunch"]}]});
    let r =
        admin(&http, &base, "PUT", &format!("/api/v1/tenants/{TENANT}/users/{ALICE}"), user.to_string().into_bytes())
            .await;
    assert_eq!(r.status, 201, "{r:?}");

    // Diagnose mints access tokens for alice and it@ (and fails only the http webhook step).
    for path in
        [format!("/api/v1/tenants/{TENANT}/diagnose?user={ALICE}"), format!("/api/v1/tenants/{TENANT}/diagnose")]
    {
        let r = admin(&http, &base, "GET", &path, vec![]).await;
        assert_eq!(r.status, 200, "{r:?}");
        let steps = r.body["steps"].as_array().expect("steps");
        let failed: Vec<&str> =
            steps.iter().filter(|s| s["outcome"] != "passed").filter_map(|s| s["check"].as_str()).collect();
        assert_eq!(failed, ["Webhook address is HTTPS"], "tokens were minted and used: {r:?}");
        assert!(!r.text.contains("ya29."), "no access token in the report: {r:?}");
    }
    // And once more with delegation revoked, so the failure paths log too.
    let r = control(&http, &fake, "PUT", &format!("/_fake/delegation/{client_id}"), json!({"scopes": []})).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = admin(&http, &base, "GET", &format!("/api/v1/tenants/{TENANT}/diagnose?user={ALICE}"), vec![]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["passed"], false, "{r:?}");

    let status = server.terminate();
    assert!(status.success(), "SIGTERM stops gwsync cleanly: {status}");
    fake.stop().await;

    // The logs: captured, at trace level, and clean.
    let mut logs = read_or_empty(&stdout_path);
    logs.extend(read_or_empty(&stderr_path));
    let text = String::from_utf8_lossy(&logs);
    assert!(logs.len() > 1000, "the logs were captured: {} bytes", logs.len());
    assert!(text.contains("TRACE"), "RUST_LOG=trace output was captured");
    assert!(text.contains("gwsync serving"), "gwsync's own logs were captured");
    assert!(text.contains("service-account key stored"), "the key upload was logged (without the key)");

    let mut secrets: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, l) in pem_lines.iter().enumerate() {
        if l.len() >= 16 {
            secrets.push((format!("line {} of the PEM body", i + 1), l.as_bytes().to_vec()));
        }
    }
    secrets.push(("the base64 of the private key's DER".into(), der_b64.clone().into_bytes()));
    secrets.push(("the private key's DER bytes".into(), der.clone()));
    secrets.push(("the webhook secret (whsec_…)".into(), whsec.clone().into_bytes()));
    secrets.push(("the webhook secret's base64".into(), webhook_b64.clone().into_bytes()));
    secrets.push(("the webhook secret's key bytes".into(), webhook_key.clone()));
    secrets.push(("an access token (ya29.)".into(), b"ya29.".to_vec()));
    secrets.push(("the master key".into(), master_key.clone().into_bytes()));
    secrets.push(("the master key's bytes".into(), MASTER_KEY_BYTES.to_vec()));

    let mut leaks = Vec::new();
    for (what, needle) in &secrets {
        if contains(&logs, needle) {
            leaks.push(format!("{what} is in the logs"));
        }
    }
    // The JWT assertions are signed with the key and grant tokens for an hour: not in the logs either.
    if text.contains("assertion=") {
        leaks.push("a signed JWT assertion is in the logs".into());
    }
    if text.contains(ADMIN_TOKEN) {
        leaks.push("the admin token is in the logs".into());
    }

    // The data directory: every byte of every file.
    let files = files_under(data_dir.path());
    assert!(!files.is_empty(), "the data directory holds the database");
    let mut holds_domain = false;
    let mut holds_client_email = false;
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_else(|e| panic!("read {}: {e}", f.display()));
        holds_domain |= contains(&bytes, DOMAIN.as_bytes());
        holds_client_email |= contains(&bytes, client_email.as_bytes());
        for (what, needle) in &secrets {
            if contains(&bytes, needle) {
                leaks.push(format!("{what} is in {}", f.display()));
            }
        }
        if contains(&bytes, b"PRIVATE KEY") {
            leaks.push(format!("a PEM armour line is in {}", f.display()));
        }
    }
    assert!(holds_domain, "the tenant's domain is stored in the data dir, so the search looked in the right place");
    assert!(holds_client_email, "the key's public facts are stored there too: the credentials record was searched");
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
}
