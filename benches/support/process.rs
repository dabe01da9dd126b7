//! gwsync as its own process (the release build the benchmark was built with), so fake Google
//! and the load in the benchmark's process do not share gwsync's runtime.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;

pub const ADMIN: &str = "process-bench-admin-token-0123456789";

/// Resident memory of a process, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Starts `gwsync serve` against the fake at `fake`; its log goes to `log`. `env` adds to (or
/// overrides) the environment.
pub fn spawn(port: u16, data: &std::path::Path, log: &std::path::Path, fake: &str, env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gwsync"));
    cmd.arg("serve")
        .env("GWSYNC_LISTEN", format!("127.0.0.1:{port}"))
        .env("GWSYNC_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        .env("GWSYNC_DATA_DIR", data)
        .env("GWSYNC_ADMIN_TOKEN", ADMIN)
        .env("GWSYNC_MASTER_KEY", base64::engine::general_purpose::STANDARD.encode([9u8; 32]))
        .env("GWSYNC_GOOGLE_API_URL", fake)
        .env("GWSYNC_GOOGLE_PEOPLE_URL", fake)
        .env("RUST_LOG", "warn");
    // gwsync refuses GWSYNC_ variables it does not know: the benches' own settings stay here.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("GWSYNC_BENCH_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(Stdio::null()).stderr(std::fs::File::create(log).expect("log file")).spawn().expect("gwsync starts")
}

/// Waits until `/readyz` answers 200; the time it took.
pub async fn wait_ready(http: &reqwest::Client, base: &str, log: &std::path::Path) -> Duration {
    let started = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(60) {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "gwsync never became ready; its log ends:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
