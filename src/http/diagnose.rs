//! `GET /api/v1/tenants/{tenant}/diagnose?user=`: the diagnose report as JSON.

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::error::ApiError;
use super::tenants::existing;
use crate::app::AppState;
use crate::model::user::validate_email;
use crate::sync::SyncService;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/tenants/{tenant}/diagnose", web::get().to(diagnose));
}

#[derive(Deserialize)]
struct Query {
    user: Option<String>,
}

async fn diagnose(
    state: web::Data<AppState>,
    sync: web::Data<SyncService>,
    path: web::Path<String>,
    query: web::Query<Query>,
) -> Result<HttpResponse, ApiError> {
    let t = existing(&state, &path).await?;
    let user = match &query.user {
        Some(u) => validate_email(u, &t.domain)?,
        None => match match t.directory_admin.clone() {
            Some(admin) => Some(admin),
            None => state.store.users(&t.id).await.ok().and_then(|u| u.first().map(|u| u.email.clone())),
        } {
            Some(u) => u,
            None => {
                return Err(ApiError::bad_request(
                    "no_user",
                    "the tenant has no users and no directory_admin: pass ?user=<address> to check",
                ));
            }
        },
    };
    let phone = Some(sync.presence.outbox.health(&t.id));
    let report = crate::diagnose::run(&state, &t, &user, phone).await;
    Ok(HttpResponse::Ok().json(report))
}
