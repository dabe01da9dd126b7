//! Health endpoints for load balancers and orchestrators: `/healthz` (the process answers),
//! `/readyz` (the store is open and the service is ready; on a replica of a shared database also
//! whether it reaches the database and which roles it holds), and `/metrics` (Prometheus).

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::app::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if !state.ready.load(std::sync::atomic::Ordering::SeqCst) {
        return HttpResponse::ServiceUnavailable()
            .json(json!({ "status": "not_ready", "reason": "starting or shutting down" }));
    }
    let cluster = &state.cluster;
    if cluster.is_shared() {
        // A replica: which roles it holds, and whether it reaches the shared database.
        let reachable = cluster.database_reachable().await;
        let body = json!({
            "status": if reachable { "ready" } else { "not_ready" },
            "store": "postgres",
            "database": if reachable { "reachable" } else { "unreachable" },
            "replica": cluster.replica_id(),
            "roles": cluster.roles(),
            "live_replicas": cluster.members(),
            // False while a live replica runs an older build: every notification is then
            // marked anew (`cluster::members`), which a rolling upgrade should see end.
            "coalescing": cluster.coalescing().load(std::sync::atomic::Ordering::Relaxed),
        });
        return if reachable { HttpResponse::Ok().json(body) } else { HttpResponse::ServiceUnavailable().json(body) };
    }
    match state.store.tenants().await {
        Ok(_) => HttpResponse::Ok().json(json!({ "status": "ready", "store": "sled", "roles": cluster.roles() })),
        Err(e) => HttpResponse::ServiceUnavailable().json(json!({ "status": "not_ready", "reason": e.to_string() })),
    }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.render())
}
