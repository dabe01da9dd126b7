//! The audit log: `GET /api/v1/audit` (operators: everything, or `?tenant=` — also a deleted
//! tenant's) and `GET /api/v1/tenants/{tenant}/audit` (its admins), newest first, paged with
//! `?limit=&before=` (the `next_before` of the previous page).

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::tenants::existing;
use crate::access::Access;
use crate::app::AppState;
use crate::model::tenant::validate_tenant_id;

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 1000;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/audit", web::get().to(all)).route("/tenants/{tenant}/audit", web::get().to(of_tenant));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllQuery {
    limit: Option<usize>,
    before: Option<u64>,
    tenant: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantQuery {
    limit: Option<usize>,
    before: Option<u64>,
}

async fn page(
    access: &Access,
    tenant: Option<&str>,
    limit: Option<usize>,
    before: Option<u64>,
) -> Result<HttpResponse, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request("invalid_request", format!("limit must be 1 to {MAX_LIMIT}")));
    }
    let entries = access.audit.list(tenant, before, limit).await?;
    let next_before = if entries.len() == limit { entries.last().map(|e| e.id) } else { None };
    Ok(HttpResponse::Ok().json(json!({ "entries": entries, "next_before": next_before })))
}

async fn all(access: web::Data<Access>, query: web::Query<AllQuery>) -> Result<HttpResponse, ApiError> {
    if let Some(t) = &query.tenant {
        validate_tenant_id(t)?;
    }
    page(&access, query.tenant.as_deref(), query.limit, query.before).await
}

async fn of_tenant(
    state: web::Data<AppState>,
    access: web::Data<Access>,
    path: web::Path<String>,
    query: web::Query<TenantQuery>,
) -> Result<HttpResponse, ApiError> {
    let t = existing(&state, &path).await?;
    page(&access, Some(&t.id), query.limit, query.before).await
}
