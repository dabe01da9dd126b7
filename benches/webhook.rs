//! Webhook acknowledgement throughput and latency: gwsync's `POST /webhooks/google/calendar`
//! (verify channel and token, durable dirty mark, 200) against a bare actix-web handler that
//! only reads the headers, both driven by `wrk` — a load generator in its own process, so it
//! does not share this process's runtime with the servers it measures — with Google-shaped
//! notifications (`benches/webhook.lua`) over `USERS` live channels: `CONNECTIONS` keep-alive
//! connections on one wrk thread, `SECONDS` a round, `ROUNDS` rounds of each, alternating
//! bare / gwsync so drift on the shared machine hits both alike. Three gwsyncs: `acks` (the
//! acknowledgement path alone), `deployed` (the default configuration, re-syncing as it goes)
//! and `pg` (deployed, on a PostgreSQL cluster the bench starts itself, fsync on; needs the
//! server binaries, as the tests do).
//!
//!     apt-get install wrk        # once (Debian/Ubuntu); the bench installs nothing itself
//!     cargo bench --bench webhook
//!
//! `WEBHOOK_BENCH_SECONDS` shortens the rounds for a quick look.
//!
//! Targets (issue #13; DESIGN §9 asks ≥ 70 % and ≤ 2×): throughput ≥ 90 % of the bare handler's,
//! p99 ≤ 1.5 × its p99.

#[path = "../tests/common/pg.rs"]
mod pg;
mod support;

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use support::Bench;
use support::wrk::{Round, median, require_wrk, show};

const CONNECTIONS: usize = 32;
const SECONDS: u64 = 10;
const ROUNDS: usize = 4;
const USERS: usize = 200;
/// Before the measured rounds, each server gets this much load (connections, caches, the first
/// dirty marks), unreported.
const WARM_UP: Duration = Duration::from_secs(2);

/// One wrk run against `url` (wrk blocks; it runs off the async threads).
async fn wrk(url: &str, channels_file: &std::path::Path, duration: Duration) -> Round {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/webhook.lua");
    let mut cmd = Command::new("wrk");
    cmd.args(["-t1", &format!("-c{CONNECTIONS}"), &format!("-d{}s", duration.as_secs().max(1)), "-s", script, url])
        .arg("--")
        .arg(channels_file);
    let out = tokio::task::spawn_blocking(move || cmd.output()).await.expect("join").expect("run wrk");
    let stdout = String::from_utf8_lossy(&out.stdout);
    match Round::parse(&stdout) {
        Some(r) if out.status.success() => r,
        _ => panic!("wrk failed ({}):\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr)),
    }
}

async fn bare(req: HttpRequest) -> HttpResponse {
    // Reads what gwsync reads, then answers.
    let h = req.headers();
    let seen = ["x-goog-channel-id", "x-goog-channel-token", "x-goog-resource-id", "x-goog-resource-state"]
        .iter()
        .filter(|n| h.get(**n).is_some())
        .count();
    if seen == 4 { HttpResponse::Ok().finish() } else { HttpResponse::BadRequest().finish() }
}

/// CPU time this process (servers, fake Google, gwsync's workers; not wrk) has used so far.
fn cpu_used() -> Duration {
    // Linux: utime and stime, fields 14 and 15 of /proc/self/stat, in ticks of 1/100 s.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let ticks: u64 = after_name.split_whitespace().skip(11).take(2).filter_map(|t| t.parse::<u64>().ok()).sum();
    Duration::from_millis(ticks * 10)
}

/// Calendar syncs gwsync has run so far (its `/metrics`).
async fn syncs(bench: &Bench) -> u64 {
    let text = bench.http.get(format!("{}/metrics", bench.gwsync)).send().await.expect("metrics");
    let text = text.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("gwsync_syncs_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// One server under test: where wrk sends, its channels file, and what it measured.
struct Target {
    name: &'static str,
    url: String,
    channels: std::path::PathBuf,
    bench: Option<Bench>,
    rounds: Vec<(Round, Duration, u64)>,
}

impl Target {
    async fn gwsync(name: &'static str, bench: Bench, dir: &std::path::Path) -> Target {
        let channels = bench.channels().await;
        let path = dir.join(format!("{name}.tsv"));
        let mut f = std::fs::File::create(&path).expect("channels file");
        for c in &channels {
            writeln!(f, "{}\t{}\t{}", c.id, c.token, c.resource_id).expect("write");
        }
        Target {
            name,
            url: format!("{}/webhooks/google/calendar", bench.gwsync),
            channels: path,
            bench: Some(bench),
            rounds: Vec::new(),
        }
    }

    async fn run(&mut self, duration: Duration) -> Round {
        let synced = match &self.bench {
            Some(b) => syncs(b).await,
            None => 0,
        };
        let cpu = cpu_used();
        let r = wrk(&self.url, &self.channels, duration).await;
        let cpu = cpu_used() - cpu;
        let synced = match &self.bench {
            Some(b) => syncs(b).await - synced,
            None => 0,
        };
        self.rounds.push((r, cpu, synced));
        r
    }

    fn show_last(&self, round: usize) {
        let Some((r, cpu, synced)) = self.rounds.last() else { return };
        show(&format!("{} {round}", self.name), r);
        println!(
            "{:<12} CPU of this process {:.1} µs a request; {synced} calendar syncs",
            "",
            cpu.as_secs_f64() * 1e6 / r.requests.max(1) as f64
        );
    }

    fn measured(&self) -> Vec<Round> {
        self.rounds.iter().map(|(r, _, _)| *r).collect()
    }
}

fn compare(what: &str, gw: &[Round], base: &[Round]) {
    let total =
        |rs: &[Round]| rs.iter().map(|r| r.requests).sum::<u64>() as f64 / rs.iter().map(|r| r.seconds).sum::<f64>();
    let throughput = total(gw) / total(base);
    let p50 = median(gw, |r| r.p50.as_secs_f64()) / median(base, |r| r.p50.as_secs_f64()).max(1e-9);
    let p99 = median(gw, |r| r.p99.as_secs_f64()) / median(base, |r| r.p99.as_secs_f64()).max(1e-9);
    println!("{what}: throughput {:.0} %, p50 {p50:.2}×, p99 {p99:.2}×", throughput * 100.0);
}

#[tokio::main]
async fn main() {
    require_wrk();
    let seconds = std::env::var("WEBHOOK_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(SECONDS);
    gwsync::logging::init_with_default(gwsync::config::LogFormat::Plain, "warn");
    let dir = tempfile::tempdir().expect("tempdir");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let bare_url = format!("http://{}/webhooks/google/calendar", listener.local_addr().expect("addr"));
    let server = HttpServer::new(|| App::new().route("/webhooks/google/calendar", web::post().to(bare)))
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
    let handle = server.handle();
    tokio::spawn(server);

    // Two gwsyncs, each with its own fake Google and 200 users. Under wrk every calendar is
    // notified over a hundred times a second without end, so gwsync re-syncs each one every
    // `rerun_delay` (250 ms) — up to 800 syncs a second, each an events.list answered by the
    // fake in this process — on the same two cores. `acks` holds the rerun back for the run
    // (each calendar synced once, in the warm-up, then waiting with its durable mark) and so
    // measures the acknowledgement path alone; `deployed` runs the default configuration.
    let acks = Bench::start_with(USERS, |c| c.sync.rerun_delay = Duration::from_secs(3600)).await;
    let deployed = Bench::start(USERS).await;
    // `pg`: as deployed, on PostgreSQL (fsync on, as in production) instead of sled: every
    // notification on a calendar whose sync is running commits a new dirty mark there.
    let database = pg::PgCluster::start_durable();
    let url = pg::database_on(&database).await;
    let on_pg = Bench::start_with(USERS, |c| c.store.database_url = Some(url.into())).await;
    let mut targets = [
        Target { name: "bare", url: bare_url, channels: dir.path().join("bare.tsv"), bench: None, rounds: Vec::new() },
        Target::gwsync("acks", acks, dir.path()).await,
        Target::gwsync("deployed", deployed, dir.path()).await,
        Target::gwsync("pg", on_pg, dir.path()).await,
    ];
    // The bare handler gets the same requests as `acks`.
    std::fs::copy(&targets[1].channels, &targets[0].channels).expect("copy");

    println!(
        "webhook acknowledgement under wrk (1 thread, {CONNECTIONS} connections, {seconds} s a round, {ROUNDS} rounds each, alternating), notifications over {USERS} live channels"
    );
    for t in &mut targets {
        t.run(WARM_UP).await;
        t.rounds.clear();
    }
    for round in 1..=ROUNDS {
        for t in &mut targets {
            let r = t.run(Duration::from_secs(seconds)).await;
            t.show_last(round);
            if t.bench.is_some() {
                assert_eq!(r.errors + r.non2xx, 0, "gwsync must answer every notification 2xx");
            }
        }
    }
    let base = targets[0].measured();
    compare("acks/bare (the acknowledgement path; target ≥ 90 %, p99 ≤ 1.5×)", &targets[1].measured(), &base);
    compare(
        "deployed/bare (gwsync re-syncing every calendar every 250 ms, fake Google answering on the same cores)",
        &targets[2].measured(),
        &base,
    );
    compare("pg/bare (as deployed, on PostgreSQL with fsync; target ≥ 50 %, p99 ≤ 3×)", &targets[3].measured(), &base);
    println!("(throughput over all rounds; percentiles are the medians of the rounds')");
    handle.stop(false).await;
    for t in targets {
        if let Some(b) = t.bench {
            b.stop().await;
        }
    }
    drop(database);
}
