//! The `gwsync` command as an operator types it: the operator commands against a running server
//! (an in-process gwsync with the fake Google), and `gwsync serve` refusing bad configuration.
mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// No command may take longer than this; a stuck one is killed and the test fails.
const TIMEOUT: Duration = Duration::from_secs(60);
const DELEGATION_LIST: &str = "https://www.googleapis.com/auth/calendar.readonly,https://www.googleapis.com/auth/contacts.readonly,https://www.googleapis.com/auth/directory.readonly";

#[derive(Debug)]
struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Output {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    fn assert_ok(&self) -> &Self {
        assert!(self.status.success(), "gwsync should succeed: {self:?}");
        self
    }

    /// Failed, with a one-line reason on stderr.
    fn assert_failed_with_one_line(&self) -> &str {
        assert!(!self.status.success(), "gwsync should fail: {self:?}");
        let reason = self.stderr.trim();
        assert!(!reason.is_empty(), "a failure must say why on stderr: {self:?}");
        assert_eq!(reason.lines().count(), 1, "the reason is one line: {:?}", self.stderr);
        reason
    }
}

/// A gwsync command with the caller's GWSYNC_* and RUST_LOG removed, so only `envs` count.
fn command(args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gwsync"));
    cmd.args(args);
    for (k, _) in std::env::vars_os() {
        let name = k.to_string_lossy();
        if name.starts_with("GWSYNC_") || name == "RUST_LOG" {
            cmd.env_remove(&k);
        }
    }
    cmd.env("NO_COLOR", "1");
    cmd.envs(envs.iter().copied());
    cmd
}

/// Runs gwsync to its end, killed (and the test failed) if it takes longer than `TIMEOUT`.
fn run_blocking(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let started = Instant::now();
    let child = command(args, envs)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gwsync");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(TIMEOUT) {
        Ok(out) => {
            let out = out.expect("wait for gwsync");
            Output {
                status: out.status,
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                elapsed: started.elapsed(),
            }
        }
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            panic!("gwsync {args:?} did not finish within {TIMEOUT:?}; killed it");
        }
    }
}

/// `run_blocking` off the async runtime, so the in-process server keeps answering meanwhile.
async fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let envs: Vec<(String, String)> = envs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_blocking(&args, &envs)
    })
    .await
    .expect("join")
}

/// An operator command against the test server with the right admin token.
async fn op(app: &TestApp, args: &[&str]) -> Output {
    run(args, &[("GWSYNC_SERVER", app.base()), ("GWSYNC_ADMIN_TOKEN", ADMIN_TOKEN)]).await
}

fn write_key(dir: &Path, key: &Value) -> String {
    let path = dir.join("key.json");
    std::fs::write(&path, serde_json::to_vec_pretty(key).expect("key json")).expect("write key");
    path.to_str().expect("utf-8 path").to_owned()
}

#[tokio::test]
async fn operators_manage_tenants_keys_and_users_from_the_command_line() {
    let app = TestApp::start().await;
    let dir = tempfile::tempdir().expect("tempdir");

    let out = op(&app, &["tenant", "put", TENANT, "--domain", DOMAIN, "--directory-admin", IT]).await;
    let t = out.assert_ok().json();
    assert_eq!(t["id"], TENANT, "{out:?}");
    assert_eq!(t["domain"], DOMAIN, "{out:?}");
    assert_eq!(t["directory_admin"], IT, "{out:?}");
    let r = app.api("GET", &format!("/api/v1/tenants/{TENANT}"), None).await;
    assert_eq!(r.status, 200, "the server has the tenant: {r:?}");
    assert_eq!(r.body["domain"], DOMAIN);

    let key_path = write_key(dir.path(), &app.key);
    let out = op(&app, &["tenant", "credentials", TENANT, &key_path]).await;
    out.assert_ok();
    assert!(out.stdout.contains(&app.client_id), "the client ID to delegate to is printed: {out:?}");
    assert!(out.stdout.contains(app.key["client_email"].as_str().unwrap()), "{out:?}");
    let secret_line = app.key["private_key"].as_str().unwrap().lines().nth(1).unwrap();
    assert!(!out.stdout.contains(secret_line) && !out.stderr.contains(secret_line), "the key is never echoed");

    let out = op(&app, &["tenant", "get", TENANT]).await;
    let t = out.assert_ok().json();
    assert_eq!(t["credentials"]["client_id"], app.client_id.as_str(), "{out:?}");
    assert!(!out.stdout.contains(secret_line), "the key is never returned");

    let out = op(&app, &["tenant", "list"]).await;
    let list = out.assert_ok().json();
    let ids: Vec<&str> = list["tenants"].as_array().expect("tenants").iter().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(ids, [TENANT], "{out:?}");

    let out = op(
        &app,
        &[
            "user",
            "put",
            TENANT,
            ALICE,
            "--external-id",
            "1042",
            "--profile",
            "Lunch: lunch, lunchmöte",
            "--profile",
            "Möte: *möte",
        ],
    )
    .await;
    let u = out.assert_ok().json();
    let expected_profiles =
        json!([{"name": "Lunch", "triggers": ["lunch", "lunchmöte"]}, {"name": "Möte", "triggers": ["*möte"]}]);
    assert_eq!(u["email"], ALICE, "{out:?}");
    assert_eq!(u["external_id"], "1042", "{out:?}");
    assert_eq!(u["profiles"], expected_profiles, "profiles keep their order and their UTF-8: {out:?}");

    let out = op(&app, &["user", "get", TENANT, ALICE]).await;
    let u = out.assert_ok().json();
    assert_eq!(u["external_id"], "1042", "{out:?}");
    assert_eq!(u["profiles"], expected_profiles, "{out:?}");
    let r = app.api("GET", &format!("/api/v1/tenants/{TENANT}/users/{ALICE}"), None).await;
    assert_eq!(r.body["profiles"], expected_profiles, "the server stored what the CLI sent: {r:?}");

    let out = op(&app, &["user", "list", TENANT]).await;
    let list = out.assert_ok().json();
    let emails: Vec<&str> =
        list["users"].as_array().expect("users").iter().filter_map(|u| u["email"].as_str()).collect();
    assert_eq!(emails, [ALICE], "{out:?}");

    let out = op(&app, &["user", "delete", TENANT, ALICE]).await;
    out.assert_ok();
    assert!(out.stdout.contains(ALICE), "{out:?}");
    let r = app.api("GET", &format!("/api/v1/tenants/{TENANT}/users/{ALICE}"), None).await;
    assert_eq!(r.status, 404, "the user is gone: {r:?}");
    let out = op(&app, &["user", "get", TENANT, ALICE]).await;
    let reason = out.assert_failed_with_one_line();
    assert!(reason.contains("user_not_found"), "{reason}");
    app.stop().await;
}

#[tokio::test]
async fn diagnose_prints_each_step_with_its_fix_and_fails_while_a_step_fails() {
    let app = TestApp::start().await;
    app.setup_tenant().await;
    let r = app.put_user(ALICE, json!({"external_id": "1042"})).await;
    assert_eq!(r.status, 201, "{r:?}");

    let out = op(&app, &["diagnose", "--tenant", TENANT, "--user", ALICE]).await;
    assert!(
        !out.status.success(),
        "the plain-http webhook address fails a step, so the exit status is non-zero: {out:?}"
    );
    let pass_lines = out.stdout.lines().filter(|l| l.trim_start().starts_with("PASS")).count();
    let fail_lines: Vec<&str> = out.stdout.lines().filter(|l| l.trim_start().starts_with("FAIL")).collect();
    assert_eq!(pass_lines, 9, "{}", out.stdout);
    assert!(out.stdout.contains("PASS  Phone system receives profile switches"), "{}", out.stdout);
    assert_eq!(fail_lines.len(), 1, "{}", out.stdout);
    assert!(fail_lines[0].contains("Webhook address is HTTPS"), "{}", out.stdout);
    assert!(
        out.stdout.lines().any(|l| l.trim_start().starts_with("fix:") && l.contains("GWSYNC_PUBLIC_URL")),
        "the failure comes with its fix: {}",
        out.stdout
    );
    assert!(out.stdout.contains(&format!("Calendar of {ALICE} readable")), "{}", out.stdout);

    app.delegate(&[]).await;
    let out = op(&app, &["diagnose", "--tenant", TENANT, "--user", ALICE]).await;
    assert!(!out.status.success(), "{out:?}");
    let wanted = format!("grant domain-wide delegation to client ID {} for {DELEGATION_LIST}", app.client_id);
    assert!(
        out.stdout.lines().any(|l| l.trim_start().starts_with("fix:") && l.contains(&wanted)),
        "the delegation fix is printed: {}",
        out.stdout
    );
    assert!(out.stdout.lines().any(|l| l.trim_start().starts_with("SKIP")), "{}", out.stdout);
    app.stop().await;
}

#[tokio::test]
async fn operator_commands_fail_with_a_one_line_reason() {
    let app = TestApp::start().await;
    app.setup_tenant().await;

    // No admin token.
    let out = run(&["tenant", "list"], &[("GWSYNC_SERVER", app.base())]).await;
    let reason = out.assert_failed_with_one_line();
    assert!(reason.contains("GWSYNC_ADMIN_TOKEN"), "{reason}");

    // A wrong admin token.
    let out =
        run(&["tenant", "list"], &[("GWSYNC_SERVER", app.base()), ("GWSYNC_ADMIN_TOKEN", "wrong-token-0123456789")])
            .await;
    let reason = out.assert_failed_with_one_line();
    assert!(reason.contains("unauthorized"), "{reason}");

    // Nothing listening at the address.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let server = format!("http://{closed}");
    let out = run(&["tenant", "list"], &[("GWSYNC_SERVER", &server), ("GWSYNC_ADMIN_TOKEN", ADMIN_TOKEN)]).await;
    let reason = out.assert_failed_with_one_line();
    assert!(reason.contains("cannot reach"), "{reason}");
    assert!(reason.contains(&closed.to_string()), "the reason names the address tried: {reason}");

    // A profile argument the CLI cannot read: nothing reaches the server.
    let out = op(&app, &["user", "put", TENANT, ALICE, "--profile", ": lunch"]).await;
    let reason = out.assert_failed_with_one_line();
    assert!(reason.contains("--profile"), "{reason}");
    let r = app.api("GET", &format!("/api/v1/tenants/{TENANT}/users/{ALICE}"), None).await;
    assert_eq!(r.status, 404, "a refused command creates nothing: {r:?}");

    // The server's validation errors are shown with their field.
    let out = op(&app, &["user", "put", TENANT, ALICE, "--profile", "Lunch: lu*nch"]).await;
    let reason = out.assert_failed_with_one_line();
    assert!(reason.contains("invalid_request"), "{reason}");
    assert!(reason.contains("profiles[0].triggers[0]"), "{reason}");
    let r = app.api("GET", &format!("/api/v1/tenants/{TENANT}/users/{ALICE}"), None).await;
    assert_eq!(r.status, 404, "{r:?}");

    let out = op(&app, &["tenant", "put", "other", "--domain", "not a domain"]).await;
    let reason = out.assert_failed_with_one_line();
    assert!(reason.contains("400") && reason.contains("domain"), "{reason}");
    assert!(reason.contains("not a domain name"), "{reason}");

    let out = op(&app, &["user", "put", TENANT, "mallory@evil.test", "--external-id", "7"]).await;
    let reason = out.assert_failed_with_one_line();
    assert!(reason.contains("not in the tenant's domain"), "{reason}");

    let dir = tempfile::tempdir().expect("tempdir");
    let mut broken = app.key.clone();
    broken["type"] = json!("authorized_user");
    let key_path = write_key(dir.path(), &broken);
    let out = op(&app, &["tenant", "credentials", TENANT, &key_path]).await;
    let reason = out.assert_failed_with_one_line();
    assert!(reason.contains("invalid_key_file") && reason.contains("type"), "{reason}");

    let missing = dir.path().join("no-such-key.json");
    let out = op(&app, &["tenant", "credentials", TENANT, missing.to_str().unwrap()]).await;
    let reason = out.assert_failed_with_one_line();
    assert!(reason.contains("no-such-key.json"), "{reason}");

    let out = op(&app, &["diagnose", "--tenant", "nosuch"]).await;
    let reason = out.assert_failed_with_one_line();
    assert!(reason.contains("tenant_not_found"), "{reason}");
    app.stop().await;
}

// --- gwsync serve: configuration ---

fn master_key() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode([7u8; 32])
}

/// Everything `serve` needs except what the test takes away or changes.
fn serve_env(data_dir: &Path) -> Vec<(String, String)> {
    vec![
        ("GWSYNC_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
        ("GWSYNC_PUBLIC_URL".into(), "http://127.0.0.1:9".into()),
        ("GWSYNC_DATA_DIR".into(), data_dir.to_str().expect("utf-8").into()),
        ("GWSYNC_LISTEN".into(), "127.0.0.1:0".into()),
        ("GWSYNC_MASTER_KEY".into(), master_key()),
    ]
}

/// `gwsync serve` that must refuse to start: it fails fast with a one-line reason.
fn serve_refused(args: &[&str], env: &[(String, String)]) -> String {
    let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut all = vec!["serve"];
    all.extend_from_slice(args);
    let out = run_blocking(&all, &envs);
    assert!(out.elapsed < Duration::from_secs(15), "refusing must be quick: {out:?}");
    out.assert_failed_with_one_line().to_owned()
}

fn without(env: Vec<(String, String)>, key: &str) -> Vec<(String, String)> {
    env.into_iter().filter(|(k, _)| k != key).collect()
}

fn with(env: Vec<(String, String)>, key: &str, value: &str) -> Vec<(String, String)> {
    let mut env = without(env, key);
    env.push((key.into(), value.into()));
    env
}

#[test]
fn serve_without_a_master_key_says_how_to_make_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reason = serve_refused(&[], &without(serve_env(dir.path()), "GWSYNC_MASTER_KEY"));
    assert!(reason.contains("GWSYNC_MASTER_KEY"), "{reason}");
    assert!(reason.contains("openssl rand -base64 32"), "{reason}");
}

#[test]
fn serve_refuses_a_master_key_of_the_wrong_length() {
    use base64::Engine;
    let dir = tempfile::tempdir().expect("tempdir");
    let short = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
    let reason = serve_refused(&[], &with(serve_env(dir.path()), "GWSYNC_MASTER_KEY", &short));
    assert!(reason.contains("GWSYNC_MASTER_KEY"), "{reason}");
    assert!(reason.contains("32 bytes"), "{reason}");

    let reason = serve_refused(&[], &with(serve_env(dir.path()), "GWSYNC_MASTER_KEY", "not base64!"));
    assert!(reason.contains("GWSYNC_MASTER_KEY") && reason.contains("base64"), "{reason}");
}

#[test]
fn serve_without_an_admin_token_names_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reason = serve_refused(&[], &without(serve_env(dir.path()), "GWSYNC_ADMIN_TOKEN"));
    assert!(reason.contains("GWSYNC_ADMIN_TOKEN"), "{reason}");
}

#[test]
fn serve_refuses_a_plain_http_public_url_to_another_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = with(serve_env(dir.path()), "GWSYNC_PUBLIC_URL", "http://gwsync.acme.test");
    let reason = serve_refused(&[], &env);
    assert!(reason.contains("GWSYNC_PUBLIC_URL"), "{reason}");
    assert!(reason.contains("https"), "{reason}");
}

#[test]
fn serve_refuses_a_config_file_that_does_not_exist() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.toml");
    let reason = serve_refused(&["--config", missing.to_str().unwrap()], &serve_env(dir.path()));
    assert!(reason.contains("missing.toml"), "{reason}");
    assert!(reason.contains("does not exist"), "{reason}");
}

#[test]
fn serve_refuses_an_unknown_key_in_the_config_file_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("gwsync.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:0\"\nlisten_colour = \"blue\"\n").expect("write");
    let reason = serve_refused(&["--config", file.to_str().unwrap()], &serve_env(dir.path()));
    assert!(reason.contains("listen_colour"), "{reason}");
}

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn serve_runs_from_a_toml_config_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let file_token = "token-from-the-file-0123456789";
    let file = dir.path().join("gwsync.toml");
    std::fs::write(
        &file,
        format!(
            "listen = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\ndata_dir = {data:?}\n\
             admin_token = \"{file_token}\"\nmaster_key = \"{}\"\nshutdown_timeout = \"2s\"\n\n[store]\ncache_capacity_mb = 16\n",
            master_key()
        ),
    )
    .expect("write config");
    let stderr_path = dir.path().join("stderr.log");
    let child = command(&["serve", "--config", file.to_str().unwrap()], &[])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("spawn gwsync serve");
    let mut server = Server(child);

    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().expect("client");
    let base = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..500 {
        if let Some(status) = server.0.try_wait().expect("try_wait") {
            let mut log = String::new();
            let _ = std::fs::File::open(&stderr_path).and_then(|mut f| f.read_to_string(&mut log));
            panic!("gwsync serve exited with {status} instead of serving: {log}");
        }
        if http.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(up, "gwsync serve did not start listening on the port from the file");

    let r = reply(http.get(format!("{base}/api/v1/tenants")).bearer_auth(file_token).send().await.expect("call")).await;
    assert_eq!(r.status, 200, "the admin token from the file is accepted: {r:?}");
    let r =
        reply(http.get(format!("{base}/api/v1/tenants")).bearer_auth(ADMIN_TOKEN).send().await.expect("call")).await;
    assert_eq!(r.status, 401, "{r:?}");
    let r = reply(
        http.put(format!("{base}/api/v1/tenants/{TENANT}"))
            .bearer_auth(file_token)
            .json(&json!({"domain": DOMAIN}))
            .send()
            .await
            .expect("call"),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    assert!(!files_under(&data).is_empty(), "the database lives in the data_dir from the file");
    drop(server);
}

// --- tokens, the audit log, and what arguments can reach ---

/// An operator command with another token (GWSYNC_TOKEN wins over GWSYNC_ADMIN_TOKEN).
async fn op_with(app: &TestApp, token: &str, args: &[&str]) -> Output {
    run(args, &[("GWSYNC_SERVER", app.base()), ("GWSYNC_ADMIN_TOKEN", ADMIN_TOKEN), ("GWSYNC_TOKEN", token)]).await
}

#[tokio::test]
async fn operators_make_list_and_revoke_tokens_and_read_the_audit_log() {
    let app = TestApp::start().await;
    app.setup_tenant().await;
    let r = app.put_user(ALICE, json!({"external_id": "1042"})).await;
    assert_eq!(r.status, 201, "{r:?}");

    let out = op(&app, &["token", "create", "--name", "pbx", "--role", "integration", "--tenant", TENANT]).await;
    let pbx = out.assert_ok().json();
    let secret = pbx["token"].as_str().expect("the secret is printed once").to_owned();
    assert!(secret.starts_with("gws_"), "{out:?}");
    assert_eq!((pbx["role"].as_str(), pbx["tenant"].as_str()), (Some("integration"), Some(TENANT)), "{out:?}");
    let id = pbx["id"].as_str().unwrap().to_owned();

    // The phone system's token reads and cannot write.
    let out = op_with(&app, &secret, &["user", "list", TENANT]).await;
    assert_eq!(out.assert_ok().json()["users"][0]["email"], ALICE, "{out:?}");
    let out = op_with(&app, &secret, &["user", "delete", TENANT, ALICE]).await;
    let reason = out.assert_failed_with_one_line();
    assert!(reason.contains("403") && reason.contains("forbidden"), "{reason}");
    let out = op_with(&app, &secret, &["tenant", "list"]).await;
    let ids: Vec<String> = out.assert_ok().json()["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, [TENANT], "{out:?}");

    let out = op(&app, &["token", "create", "--name", "ops", "--role", "operator", "--expires-in", "30d"]).await;
    let ops = out.assert_ok().json();
    assert!(ops["expires_at"].is_string(), "{out:?}");
    let out = op(&app, &["token", "list", "--tenant", TENANT]).await;
    let listed = out.assert_ok().json();
    let names: Vec<&str> = listed["tokens"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["pbx"], "{out:?}");
    assert!(!out.stdout.contains(&secret), "a list never shows a secret");
    let out = op(&app, &["token", "list"]).await;
    assert_eq!(out.assert_ok().json()["tokens"].as_array().unwrap().len(), 2, "{out:?}");

    let out = op(&app, &["token", "revoke", &id, "--tenant", TENANT]).await;
    assert!(out.assert_ok().stdout.contains(&id), "{out:?}");
    let out = op_with(&app, &secret, &["user", "list", TENANT]).await;
    let reason = out.assert_failed_with_one_line();
    assert!(reason.contains("401") && reason.contains("invalid_token"), "{reason}");

    let out = op(&app, &["audit", "--tenant", TENANT, "--limit", "3"]).await;
    let page = out.assert_ok().json();
    let actions: Vec<&str> = page["entries"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(
        actions,
        ["user.list", "token.revoke", "user.delete"],
        "the refused use of the revoked token too: {out:?}"
    );
    assert!(page["next_before"].is_u64(), "{out:?}");
    let out = op(&app, &["audit"]).await;
    let all = out.assert_ok().json();
    assert!(
        all["entries"].as_array().unwrap().iter().any(|e| e["action"] == "token.create" && e["target"] == ops["id"]),
        "operator tokens' creation is in the operator's log: {out:?}"
    );
    assert!(!out.stdout.contains(&secret) && !out.stdout.contains(ops["token"].as_str().unwrap()), "{out:?}");

    let out = op(&app, &["token", "create", "--name", "x", "--role", "root"]).await;
    assert!(!out.status.success(), "{out:?}");
    app.stop().await;
}

#[tokio::test]
async fn no_argument_reaches_another_path() {
    let app = TestApp::start().await;
    app.setup_tenant().await;
    let r = app.api("PUT", "/api/v1/tenants/victim", Some(json!({"domain": "victim.test"}))).await;
    assert_eq!(r.status, 201, "{r:?}");

    let out = op(&app, &["user", "delete", TENANT, "nobody@acme.test/../../../victim"]).await;
    let reason = out.assert_failed_with_one_line();
    assert!(
        reason.contains("400") && reason.contains("not an email address"),
        "the whole argument is the address: {reason}"
    );
    for args in [
        &["tenant", "delete", ".."][..],
        &["tenant", "delete", "victim/../acme"],
        &["tenant", "delete", "%2e%2e"],
        &["tenant", "delete", "victim?x=1"],
        &["tenant", "delete", "victim#x"],
    ] {
        op(&app, args).await.assert_failed_with_one_line();
    }
    for tenant in ["victim", TENANT] {
        let r = app.api("GET", &format!("/api/v1/tenants/{tenant}"), None).await;
        assert_eq!(r.status, 200, "{tenant} is untouched: {r:?}");
    }
    // The same command does delete what it names.
    op(&app, &["tenant", "delete", "victim"]).await.assert_ok();
    let r = app.api("GET", "/api/v1/tenants/victim", None).await;
    assert_eq!(r.status, 404, "{r:?}");
    app.stop().await;
}
