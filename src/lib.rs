//! gwsync keeps a business phone system in step with Google Workspace: calendar events with
//! trigger words switch users' phone profiles, and the company's contacts become the phonebook.
//!
//! Module map:
//! - `config` — layered configuration, validated once
//! - `secrets` — encryption at rest under the master key
//! - `model` — tenants, users, key files, events, and their validation
//! - `store` — durable state behind a trait: sled (embedded, group commit) or PostgreSQL (shared by replicas)
//! - `clock` — the injectable clock every timer reads
//! - `cluster` — replicas on one PostgreSQL database: the leader lock, sync claims, LISTEN/NOTIFY
//! - `backoff` — retry schedules for Google and the phone system
//! - `google` — tokens per user, typed Google errors, Calendar and People calls
//! - `sync` — the work queue, calendar sync with sync tokens, push channels and their renewal
//! - `presence` — trigger words, recurrence, each user's timeline, and the signed outbox to the
//!   phone system
//! - `contacts` — the contacts poller, the phonebook index, caller-ID lookup and exports
//! - `roles` — what a replica runs as it gains and loses the leader role
//! - `admin` — what the admin API's writes set in motion (the service layer under `http`)
//! - `app` — the state handlers and workers share
//! - `access` — roles, API tokens per tenant and role, who may call which route, the audit log
//! - `http` — Google's webhook, the admin API, the phonebook, health and metrics
//! - `jobs` — long admin requests (renewal sweep, phonebook sync) run in the background
//! - `metrics` — Prometheus counters and gauges
//! - `outbound` — which addresses tenant-supplied URLs may reach (GWSYNC_OUTBOUND_ALLOW)
//! - `diagnose` — checks a tenant's Google setup step by step
//! - `client` — the operator commands' client of the admin API
//! - `demo` — `gwsync demo`
//! - `logging` — log setup

pub mod access;
pub mod admin;
pub mod app;
pub mod backoff;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod console;
pub mod contacts;
pub mod demo;
pub mod diagnose;
pub mod google;
pub mod http;
pub mod jobs;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod outbound;
pub mod presence;
pub mod roles;
pub mod secrets;
pub mod store;
pub mod sync;

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer, web};
use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::Access;
use crate::app::AppState;
use crate::clock::Clock;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::contacts::Contacts;
use crate::presence::engine::Presence;
use crate::presence::outbox::Outbox;
use crate::roles::Roles;
use crate::store::SharedStore;
use crate::store::group_flush::GroupFlush;
use crate::sync::SyncService;
use crate::sync::queue::SyncQueue;

/// The most HTTP worker threads: webhooks and the API are I/O-bound, a handful of workers
/// answers hundreds of thousands of webhooks a second, and on PostgreSQL each keeps up to two
/// connections for acknowledgements (`store::pg_marks`) — on a large machine one per CPU would
/// crowd the database's connection limit.
const MAX_HTTP_WORKERS: usize = 8;

/// One HTTP worker per CPU of `cpus` (this machine's if unknown: 1), at most `MAX_HTTP_WORKERS`.
fn http_workers(cpus: std::io::Result<std::num::NonZero<usize>>) -> usize {
    cpus.map_or(1, std::num::NonZero::get).min(MAX_HTTP_WORKERS)
}

/// Runs the service on `listener` until `shutdown` completes, on the system clock.
pub async fn serve(config: Config, listener: TcpListener, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    serve_with_clock(config, listener, shutdown, Clock::system()).await
}

/// `serve` on a given clock (tests move it forward).
///
/// Shutdown, in order: stop accepting HTTP and let in-flight requests finish (up to
/// `shutdown_timeout`) → cancel the workers and wait for them → flush the store → wait until the
/// database is released, so a new `serve` on the same data directory can start at once.
pub async fn serve_with_clock(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    clock: Clock,
) -> anyhow::Result<()> {
    let (admin_token, master_key, public_url) = config.serve_settings()?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data_dir {}", config.data_dir.display()))?;
    let store: SharedStore = store::open(&config).await?;
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let flush = GroupFlush::start(store.clone(), cancel.clone());
    let cluster = Arc::new(match &config.store.database_url {
        Some(url) => Cluster::postgres(url, &config.cluster).await.context("joining the replicas on PostgreSQL")?,
        None => Cluster::single(),
    });
    let app = Arc::new(
        AppState::new(config.clone(), store.clone(), master_key, &admin_token, public_url, clock.clone())
            .map_err(anyhow::Error::msg)?
            .with_cluster(cluster.clone()),
    );
    let outbox = Arc::new(Outbox::new(app.clone()).map_err(anyhow::Error::msg)?);
    let presence = Arc::new(Presence::new(app.clone(), outbox.clone()));
    let contacts = Arc::new(Contacts::new(app.clone()));
    let access = Arc::new(Access::new(app.clone()));
    if !cluster.is_shared() {
        // One process: it leads from the start, and reconciles before it listens.
        let queued = outbox.load().await.context("loading the outbox")?;
        let users = presence.recompute_all().await.context("computing presence")?;
        tracing::info!(users, queued_switches = queued, "presence ready");
        tracker.spawn(outbox.clone().run(tracker.clone(), cancel.clone()));
        tracker.spawn(presence.clone().run(cancel.clone()));
        tracker.spawn(contacts.clone().run(cancel.clone()));
    }
    tracker.spawn(access.clone().run(cancel.clone()));
    let mut queue =
        SyncQueue::new(store.clone(), flush, config.sync.rerun_delay, config.sync.tenant_workers, clock.clone());
    if cluster.is_shared() {
        queue = queue.shared(cluster.coalescing());
    }
    let sync = Arc::new(SyncService::new(app.clone(), queue, clock, presence.clone()));
    sync.start(&tracker, &cancel).await.context("starting the sync workers")?;
    if cluster.is_shared() {
        let roles = Arc::new(Roles {
            cluster: cluster.clone(),
            sync: sync.clone(),
            presence: presence.clone(),
            contacts: contacts.clone(),
            retrying: Default::default(),
        });
        roles.start(&tracker, &cancel);
        cluster.start(&tracker, &cancel);
        tracing::info!(
            replica = cluster.replica_id(),
            "replica on a shared database; the leader lock decides who schedules"
        );
    }
    let addr = listener.local_addr()?;

    let (app_data, sync_data, contacts_data) =
        (web::Data::from(app.clone()), web::Data::from(sync.clone()), web::Data::from(contacts.clone()));
    let access_data = web::Data::from(access.clone());
    let console_data = web::Data::new(console::Console::new(&app, addr).map_err(anyhow::Error::msg)?);
    let server = HttpServer::new(move || {
        // Runs on each HTTP worker thread as it starts.
        app_data.store.on_http_worker();
        App::new()
            .app_data(app_data.clone())
            .app_data(console_data.clone())
            .app_data(sync_data.clone())
            .app_data(contacts_data.clone())
            .app_data(access_data.clone())
            .configure(http::configure)
    })
    .workers(http_workers(std::thread::available_parallelism()))
    .disable_signals()
    .shutdown_timeout(config.shutdown_timeout.as_secs().max(1))
    .listen(listener)?
    .run();
    let handle = server.handle();
    let mut server = tokio::spawn(server);
    app.ready.store(true, std::sync::atomic::Ordering::SeqCst);
    tracing::info!(listen = %addr, public_url = %app.public_url, "gwsync serving");

    let server_result = tokio::select! {
        result = &mut server => result.context("the HTTP server task failed").and_then(|r| r.map_err(Into::into)),
        () = shutdown => {
            tracing::info!("shutting down");
            app.ready.store(false, std::sync::atomic::Ordering::SeqCst);
            handle.stop(true).await;
            let _ = server.await;
            Ok(())
        }
    };
    cancel.cancel();
    tracker.close();
    if tokio::time::timeout(config.shutdown_timeout, tracker.wait()).await.is_err() {
        tracing::warn!("background work did not stop within shutdown_timeout; its dirty marks stay for the next start");
    }
    drop(sync);
    drop(contacts);
    drop(access);
    drop(presence);
    drop(outbox);
    drop(app);
    store::flush(&store).await?;
    // The HTTP workers drop their copies of the state on their own threads; the database is
    // released when the last one goes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&store) > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(store);
    tracing::info!("stopped");
    server_result
}

#[cfg(test)]
mod tests {
    use std::num::NonZero;

    #[test]
    fn a_large_machine_gets_no_more_http_workers_than_the_cap_and_a_small_one_one_per_cpu() {
        // Each worker keeps up to two acknowledgement connections on PostgreSQL.
        assert_eq!(super::http_workers(Ok(NonZero::new(64).unwrap())), super::MAX_HTTP_WORKERS);
        assert_eq!(super::http_workers(Ok(NonZero::new(2).unwrap())), 2);
        assert_eq!(super::http_workers(Err(std::io::Error::other("unknown"))), 1);
    }
}
