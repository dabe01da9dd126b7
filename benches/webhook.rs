//! Webhook acknowledgement throughput and latency: gwsync's `POST /webhooks/google/calendar`
//! (verify channel and token, durable dirty mark, 200) against a bare actix-web handler that
//! only reads the headers — same machine, same run, same load: `CONNECTIONS` keep-alive
//! connections sending Google-shaped notifications for `SECONDS` each.
//!
//!     cargo bench --bench webhook
//!
//! Targets (DESIGN §9): throughput ≥ 70 % of the bare handler's, p99 ≤ 2 × its p99.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use support::{Bench, Channel, ms, percentile};

const CONNECTIONS: usize = 32;
const SECONDS: u64 = 10;
const USERS: usize = 200;

struct Run {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

async fn load(url: String, channels: Arc<Vec<Channel>>) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let (url, channels, stop) = (url.clone(), channels.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            // One connection each, kept alive, like Google's delivery.
            let client = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(1).build().expect("client");
            let mut latencies = Vec::new();
            let mut errors = 0;
            let mut n: u64 = c as u64;
            while !stop.load(Ordering::Relaxed) {
                let ch = &channels[(n as usize) % channels.len()];
                n += CONNECTIONS as u64;
                let t = Instant::now();
                let r = client
                    .post(&url)
                    .header("X-Goog-Channel-ID", &ch.id)
                    .header("X-Goog-Channel-Token", &ch.token)
                    .header("X-Goog-Resource-ID", &ch.resource_id)
                    .header("X-Goog-Resource-State", "exists")
                    .header("X-Goog-Message-Number", (100_000 + n).to_string())
                    .header(
                        "X-Goog-Resource-URI",
                        "https://www.googleapis.com/calendar/v3/calendars/primary/events?alt=json",
                    )
                    .header("X-Goog-Channel-Expiration", "Tue, 19 Nov 2030 01:13:52 GMT")
                    .header("Content-Length", "0")
                    .send()
                    .await;
                match r {
                    Ok(resp) if resp.status().is_success() => latencies.push(t.elapsed()),
                    _ => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs(SECONDS)).await;
    stop.store(true, Ordering::Relaxed);
    let mut run = Run { requests: 0, errors: 0, elapsed: Duration::ZERO, latencies: Vec::new() };
    for t in tasks {
        let (lat, err) = t.await.expect("load task");
        run.requests += lat.len();
        run.errors += err;
        run.latencies.extend(lat);
    }
    run.elapsed = started.elapsed();
    run.latencies.sort();
    run
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

fn report(name: &str, r: &Run) -> (f64, Duration) {
    let rps = r.requests as f64 / r.elapsed.as_secs_f64();
    let p99 = percentile(&r.latencies, 99.0);
    println!(
        "{name:<8} {:>9.0} req/s   p50 {:>9}   p99 {:>9}   errors {}",
        rps,
        ms(percentile(&r.latencies, 50.0)),
        ms(p99),
        r.errors
    );
    (rps, p99)
}

#[tokio::main]
async fn main() {
    gwsync::logging::init_with_default(gwsync::config::LogFormat::Plain, "warn");
    let bench = Bench::start(USERS).await;
    let channels = Arc::new(bench.channels().await);
    // Notifications here are synthetic: keep Google quiet so the workers sync at most once
    // per calendar while the load runs.
    println!(
        "webhook acknowledgement, {CONNECTIONS} connections, {SECONDS} s each, notifications spread over {USERS} calendars"
    );

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let bare_url = format!("http://{}/webhooks/google/calendar", listener.local_addr().expect("addr"));
    let server = HttpServer::new(|| App::new().route("/webhooks/google/calendar", web::post().to(bare)))
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
    let handle = server.handle();
    tokio::spawn(server);

    let base = load(bare_url, channels.clone()).await;
    let gw = load(format!("{}/webhooks/google/calendar", bench.gwsync), channels.clone()).await;
    let (base_rps, base_p99) = report("bare", &base);
    let (gw_rps, gw_p99) = report("gwsync", &gw);
    let ratio = gw_rps / base_rps;
    let p99_ratio = gw_p99.as_secs_f64() / base_p99.as_secs_f64().max(1e-9);
    println!("gwsync/bare: throughput {:.0} % (target ≥ 70 %), p99 {:.2}× (target ≤ 2×)", ratio * 100.0, p99_ratio);
    handle.stop(false).await;
    bench.stop().await;
}
