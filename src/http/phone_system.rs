//! `/api/v1/tenants/{tenant}/phone-system`: a test message to the tenant's phone system, and
//! how deliveries to it are going (its health and the last deliveries).

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::error::ApiError;
use super::tenants::existing;
use crate::app::AppState;
use crate::sync::SyncService;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/tenants/{tenant}/phone-system/test", web::post().to(test))
        .route("/tenants/{tenant}/phone-system/deliveries", web::get().to(deliveries));
}

/// Sends a signed `gwsync.test` message now and answers how it went (200 either way: the
/// outcome is the answer).
async fn test(
    state: web::Data<AppState>,
    sync: web::Data<SyncService>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let t = existing(&state, &path).await?;
    if t.phone_system.is_none() {
        return Err(ApiError::conflict(
            "no_phone_system",
            format!("tenant '{}' has no phone system: set phone_system with PUT /api/v1/tenants/{}", t.id, t.id),
        ));
    }
    let outcome = sync.presence.outbox.send_test(&t).await;
    tracing::info!(tenant = %t.id, delivered = outcome.delivered, status = ?outcome.status, "test message sent to the phone system");
    Ok(HttpResponse::Ok().json(outcome))
}

async fn deliveries(
    state: web::Data<AppState>,
    sync: web::Data<SyncService>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let t = existing(&state, &path).await?;
    let outbox = &sync.presence.outbox;
    let deliveries =
        outbox.recent_deliveries(&t.id).await.map_err(|e| ApiError::internal("reading the deliveries", &e))?;
    Ok(HttpResponse::Ok().json(json!({
        "health": outbox.health(&t.id),
        "deliveries": deliveries,
    })))
}
