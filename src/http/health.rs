//! Health endpoints for load balancers and orchestrators: `/healthz` (the process answers) and
//! `/readyz` (the store is open and the service is ready).

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::app::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz)).route("/readyz", web::get().to(readyz));
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.store.tenants() {
        Ok(_) => HttpResponse::Ok().json(json!({ "status": "ready" })),
        Err(e) => HttpResponse::ServiceUnavailable().json(json!({ "status": "not_ready", "reason": e.to_string() })),
    }
}
