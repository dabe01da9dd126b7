//! `/api/v1/tenants/{tenant}/users`: phone users, their Google alias and profiles.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use serde_json::{Value, json};

use super::body;
use super::error::ApiError;
use super::tenants::existing;
use crate::app::AppState;
use crate::model::tenant::TenantRecord;
use crate::model::user::{UserRecord, UserSpec, validate_email};
use crate::store;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/tenants/{tenant}/users", web::get().to(list))
        .route("/tenants/{tenant}/users/{email}", web::put().to(put))
        .route("/tenants/{tenant}/users/{email}", web::get().to(get))
        .route("/tenants/{tenant}/users/{email}", web::delete().to(delete));
}

pub fn view(u: &UserRecord) -> Value {
    json!({
        "tenant": u.tenant,
        "email": u.email,
        "external_id": u.external_id,
        "profiles": u.profiles,
        "created_at": u.created_at,
        "updated_at": u.updated_at,
    })
}

/// The user named in the path, or 404.
pub fn existing_user(state: &AppState, tenant: &TenantRecord, email: &str) -> Result<UserRecord, ApiError> {
    let email = validate_email(email, &tenant.domain)?;
    state
        .store
        .user(&tenant.id, &email)?
        .ok_or_else(|| ApiError::not_found("user_not_found", format!("no user {email} in tenant '{}'", tenant.id)))
}

async fn list(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let t = existing(&state, &path)?;
    let users: Vec<Value> = state.store.users(&t.id)?.iter().map(view).collect();
    Ok(HttpResponse::Ok().json(json!({ "users": users })))
}

async fn get(state: web::Data<AppState>, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    let (tenant, email) = path.into_inner();
    let t = existing(&state, &tenant)?;
    Ok(HttpResponse::Ok().json(view(&existing_user(&state, &t, &email)?)))
}

async fn put(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (tenant, email) = path.into_inner();
    let t = existing(&state, &tenant)?;
    let email = validate_email(&email, &t.domain)?;
    let spec: UserSpec = body::json(&req, payload, state.config.max_body_bytes).await?;
    let (external_id, profiles) = spec.validate()?;
    let previous = state.store.user(&t.id, &email)?;
    let now = Utc::now();
    let record = UserRecord {
        tenant: t.id.clone(),
        email: email.clone(),
        external_id,
        profiles,
        created_at: previous.as_ref().map(|p| p.created_at).unwrap_or(now),
        updated_at: now,
    };
    state.store.put_user(&record)?;
    store::flush(&state.store).await?;
    tracing::info!(tenant = %t.id, user = %email, created = previous.is_none(), "user saved");
    Ok(if previous.is_none() {
        HttpResponse::Created().json(view(&record))
    } else {
        HttpResponse::Ok().json(view(&record))
    })
}

async fn delete(state: web::Data<AppState>, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    let (tenant, email) = path.into_inner();
    let t = existing(&state, &tenant)?;
    let u = existing_user(&state, &t, &email)?;
    state.store.delete_user(&t.id, &u.email)?;
    store::flush(&state.store).await?;
    state.tokens.forget_user(&t.id, &u.email);
    tracing::info!(tenant = %t.id, user = %u.email, "user deleted");
    Ok(HttpResponse::NoContent().finish())
}
