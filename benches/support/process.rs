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

/// CPU time (user + system) a process has used so far, in clock ticks (`/proc/<pid>/stat`).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces; the fields after it are plain.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

/// CPU ticks used so far by every process named `name` (e.g. all of PostgreSQL's backends).
pub fn cpu_ticks_named(name: &str) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name))
        .map(cpu_ticks)
        .sum()
}

/// Ticks the whole machine spent busy (not idle or waiting for I/O), over all cores.
pub fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else { return 0 };
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal …
    v.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, t)| t).sum()
}

/// Where the machine's CPU went over a span: the processes under test, PostgreSQL, the
/// benchmark's own process (fake Google, the phone system, the bare handler) and the rest
/// (mostly wrk).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSplit {
    pub servers: u64,
    pub postgres: u64,
    pub bench: u64,
    pub machine: u64,
}

impl CpuSplit {
    pub fn now(servers: &[u32]) -> CpuSplit {
        CpuSplit {
            servers: servers.iter().map(|p| cpu_ticks(*p)).sum(),
            postgres: cpu_ticks_named("postgres"),
            bench: cpu_ticks(std::process::id()),
            machine: machine_busy_ticks(),
        }
    }

    /// "servers 1.23 s, postgres …" from `before` to `self`.
    pub fn since(&self, before: &CpuSplit) -> String {
        let hz = 100.0; // USER_HZ on Linux
        let s = |a: u64, b: u64| a.saturating_sub(b) as f64 / hz;
        let servers = s(self.servers, before.servers);
        let postgres = s(self.postgres, before.postgres);
        let bench = s(self.bench, before.bench);
        let machine = s(self.machine, before.machine);
        format!(
            "CPU s: servers {servers:.1}, postgres {postgres:.1}, bench process {bench:.1}, rest {:.1} (machine {machine:.1})",
            (machine - servers - postgres - bench).max(0.0)
        )
    }
}
