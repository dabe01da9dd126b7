//! `gwsync serve` as its own process, for what only a real process shows: a kill -9 between
//! pages, SIGTERM. Its environment is cleared of the caller's `GWSYNC_*` settings and points at
//! the harness's fake Google; its log goes to a file beside the data directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;

use super::{ADMIN_TOKEN, Reply, TestApp, eventually, reply};

/// A running `gwsync serve`; killed when dropped.
pub struct ServeProcess {
    child: Child,
    base: String,
    log: PathBuf,
}

/// A fresh master key (32 random bytes, base64).
pub fn random_master_key() -> String {
    base64::engine::general_purpose::STANDARD
        .encode([uuid::Uuid::new_v4().into_bytes(), uuid::Uuid::new_v4().into_bytes()].concat())
}

impl ServeProcess {
    /// Starts it on `port` with `data_dir`, plus `env` (e.g. a smaller page size), and waits
    /// until it answers `/healthz`.
    pub async fn spawn(app: &TestApp, data_dir: &Path, port: u16, master_key: &str, env: &[(&str, &str)]) -> Self {
        let base = format!("http://127.0.0.1:{port}");
        let log = data_dir.with_extension(format!("{}.log", uuid::Uuid::new_v4()));
        let out = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gwsync"));
        cmd.arg("serve");
        for (k, _) in std::env::vars_os() {
            let name = k.to_string_lossy();
            if name.starts_with("GWSYNC_") || name == "RUST_LOG" {
                cmd.env_remove(&k);
            }
        }
        cmd.env("NO_COLOR", "1")
            .env("GWSYNC_LISTEN", format!("127.0.0.1:{port}"))
            .env("GWSYNC_PUBLIC_URL", &base)
            .env("GWSYNC_DATA_DIR", data_dir)
            .env("GWSYNC_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("GWSYNC_MASTER_KEY", master_key)
            .env("GWSYNC_GOOGLE_API_URL", app.fake.base_url())
            .env("GWSYNC_GOOGLE_PEOPLE_URL", app.fake.base_url())
            .env("GWSYNC_OUTBOUND_ALLOW", "127.0.0.0/8")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out);
        let child = cmd.spawn().expect("spawn gwsync serve");
        let mut g = ServeProcess { child, base, log };
        let health = format!("{}/healthz", g.base);
        eventually("gwsync serve to answer /healthz", async || {
            if let Ok(Some(exit)) = g.child.try_wait() {
                panic!("gwsync serve exited with {exit}: {}", g.log_text());
            }
            match app.http.get(&health).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        g
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An admin-API call with the admin token.
    pub async fn api(&self, app: &TestApp, method: &str, path: &str, body: Option<Value>) -> Reply {
        let mut req = app
            .http
            .request(method.parse().expect("method"), format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .timeout(Duration::from_secs(10));
        if let Some(b) = body {
            req = req.json(&b);
        }
        reply(req.send().await.expect("gwsync serve answers")).await
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM; waits (up to 20 s) for the exit, returns it and how long it took.
    pub async fn terminate(&mut self) -> (ExitStatus, Duration) {
        let started = Instant::now();
        let sent = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().expect("kill");
        assert!(sent.success(), "kill -TERM failed");
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return (status, started.elapsed());
            }
            assert!(started.elapsed() < Duration::from_secs(20), "gwsync ignored SIGTERM for 20 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}
