//! Driving `wrk` (a load generator in its own process, so it shares no runtime with the servers
//! it measures) with Google-shaped notifications (`benches/webhook.lua`), as
//! `cargo bench --bench webhook` does; `benches/replicas.lua` adds spreading wrk's threads over
//! several hosts (replicas).

use std::process::Command;
use std::time::Duration;

/// What wrk's `done` printed for one round.
#[derive(Debug, Clone, Copy)]
pub struct Round {
    pub requests: u64,
    pub seconds: f64,
    pub errors: u64,
    pub non2xx: u64,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Round {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    /// The `wrk-result` line the bench's Lua scripts print in `done`.
    pub fn parse(output: &str) -> Option<Round> {
        let line = output.lines().find(|l| l.starts_with("wrk-result "))?;
        let field = |name: &str| -> Option<u64> {
            line.split_whitespace().find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        };
        let micros = |name: &str| field(name).map(Duration::from_micros);
        Some(Round {
            requests: field("requests")?,
            seconds: field("micros")? as f64 / 1e6,
            errors: field("errors")?,
            non2xx: field("non2xx")?,
            p50: micros("p50")?,
            p90: micros("p90")?,
            p99: micros("p99")?,
            max: micros("max")?,
        })
    }
}

/// Exits the bench, with the fix, unless `wrk` can be run.
pub fn require_wrk() {
    match Command::new("wrk").arg("--version").output() {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "this benchmark drives the servers with wrk, which is not installed; install it with\n\n    apt-get install wrk\n\n(Debian/Ubuntu; `brew install wrk` on macOS) and run it again"
            );
            std::process::exit(2);
        }
        Err(e) => {
            eprintln!("wrk cannot be started: {e}");
            std::process::exit(2);
        }
    }
}

/// How wrk loads a target.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub threads: usize,
    pub connections: usize,
}

/// One wrk run against `url`, with the channels in `channels_file`. With `hosts` (`host:port`
/// each), wrk's threads go to them in turn (`benches/replicas.lua`), each thread's connections
/// to one host; otherwise all go to `url`'s.
pub async fn run(
    url: &str,
    hosts: &[String],
    channels_file: &std::path::Path,
    load: Load,
    duration: Duration,
) -> Round {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/replicas.lua");
    let mut cmd = Command::new("wrk");
    cmd.args([
        &format!("-t{}", load.threads),
        &format!("-c{}", load.connections),
        &format!("-d{}s", duration.as_secs().max(1)),
        "-s",
        script,
        url,
    ])
    .arg("--")
    .arg(channels_file)
    .env("GWSYNC_BENCH_LUA_DIR", concat!(env!("CARGO_MANIFEST_DIR"), "/benches"))
    .env("GWSYNC_BENCH_HOSTS", hosts.join(","));
    let out = tokio::task::spawn_blocking(move || cmd.output()).await.expect("join").expect("run wrk");
    let stdout = String::from_utf8_lossy(&out.stdout);
    match Round::parse(&stdout) {
        Some(r) if out.status.success() => r,
        _ => panic!("wrk failed ({}):\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr)),
    }
}

pub fn show(name: &str, r: &Round) {
    println!(
        "{name:<10} {:>8.0} req/s   p50 {:>8}   p90 {:>8}   p99 {:>8}   max {:>9}   errors {} non-2xx {}",
        r.rps(),
        super::ms(r.p50),
        super::ms(r.p90),
        super::ms(r.p99),
        super::ms(r.max),
        r.errors,
        r.non2xx
    );
}

/// The median over the rounds: one round disturbed by the shared machine moves it little.
pub fn median(rounds: &[Round], f: impl Fn(&Round) -> f64) -> f64 {
    let mut v: Vec<f64> = rounds.iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Throughput over all rounds, and the medians of the rounds' p50 and p99, against `base`'s.
pub struct Ratio {
    pub throughput: f64,
    pub p50: f64,
    pub p99: f64,
}

pub fn compare(gw: &[Round], base: &[Round]) -> Ratio {
    let total =
        |rs: &[Round]| rs.iter().map(|r| r.requests).sum::<u64>() as f64 / rs.iter().map(|r| r.seconds).sum::<f64>();
    Ratio {
        throughput: total(gw) / total(base).max(1e-9),
        p50: median(gw, |r| r.p50.as_secs_f64()) / median(base, |r| r.p50.as_secs_f64()).max(1e-9),
        p99: median(gw, |r| r.p99.as_secs_f64()) / median(base, |r| r.p99.as_secs_f64()).max(1e-9),
    }
}
