//! gwsync keeps a business phone system in step with Google Workspace: calendar events with
//! trigger words switch users' phone profiles, and the company's contacts become the phonebook.
//!
//! Module map:
//! - `config` — layered configuration, validated once
//! - `secrets` — encryption at rest under the master key
//! - `model` — tenants, users, key files, and their validation
//! - `store` — durable state (sled) behind a trait
//! - `google` — tokens per user, typed Google errors, Calendar and People calls
//! - `app` — the state handlers and workers share
//! - `http` — health and the admin API
//! - `diagnose` — checks a tenant's Google setup step by step
//! - `client` — the operator commands' client of the admin API
//! - `demo` — `gwsync demo`
//! - `logging` — log setup

pub mod app;
pub mod client;
pub mod clock;
pub mod config;
pub mod demo;
pub mod diagnose;
pub mod google;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod secrets;
pub mod store;

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;

use actix_web::{App, HttpServer, web};
use anyhow::Context;

use crate::app::AppState;
use crate::config::Config;
use crate::store::SharedStore;
use crate::store::sled_store::SledStore;

/// Runs the service on `listener` until `shutdown` completes; then stops taking requests,
/// lets in-flight ones finish (up to `shutdown_timeout`), and flushes the store.
pub async fn serve(config: Config, listener: TcpListener, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let (admin_token, master_key, public_url) = config.serve_settings()?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data_dir {}", config.data_dir.display()))?;
    let db_dir = config.data_dir.join("db");
    let store: SharedStore = Arc::new(
        SledStore::open(&db_dir, config.store.cache_capacity_mb)
            .with_context(|| format!("opening the database in {}", db_dir.display()))?,
    );
    let state = web::Data::new(
        AppState::new(config.clone(), store.clone(), master_key, &admin_token, public_url)
            .map_err(anyhow::Error::msg)?,
    );
    let addr = listener.local_addr()?;

    let app_state = state.clone();
    let server = HttpServer::new(move || App::new().app_data(app_state.clone()).configure(http::configure))
        .disable_signals()
        .shutdown_timeout(config.shutdown_timeout.as_secs().max(1))
        .listen(listener)?
        .run();
    let handle = server.handle();
    let mut server = tokio::spawn(server);
    tracing::info!(listen = %addr, public_url = %state.public_url, "gwsync serving");

    tokio::select! {
        result = &mut server => {
            result.context("the HTTP server task failed")??;
        }
        () = shutdown => {
            tracing::info!("shutting down");
            handle.stop(true).await;
            let _ = server.await;
        }
    }
    store::flush(&store).await?;
    tracing::info!("stopped");
    Ok(())
}
