//! API tokens: `/api/v1/tokens` (operator tokens; operators see and revoke every token there)
//! and `/api/v1/tenants/{tenant}/tokens` (the tenant's `tenant_admin` and `integration`
//! tokens). Made with the secret shown this once; listed without it; revoked at once.

use actix_web::{HttpRequest, HttpResponse, web};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::access::AuditNote;
use super::body;
use super::error::ApiError;
use super::tenants::existing;
use crate::access::{Access, AccessError, Actor, NewToken};
use crate::app::AppState;
use crate::model::access::TokenRecord;
use crate::store;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/tokens", web::post().to(create_operator))
        .route("/tokens", web::get().to(list_all))
        .route("/tokens/{id}", web::delete().to(revoke_any))
        .route("/tenants/{tenant}/tokens", web::post().to(create_tenant))
        .route("/tenants/{tenant}/tokens", web::get().to(list_tenant))
        .route("/tenants/{tenant}/tokens/{id}", web::delete().to(revoke_tenant));
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::Invalid(i) => i.into(),
            AccessError::Store(s) => s.into(),
        }
    }
}

/// A token as listed: everything but the secret (which gwsync does not have).
pub fn view(t: &TokenRecord) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "role": t.role,
        "tenant": t.tenant,
        "created_at": t.created_at,
        "expires_at": t.expires_at,
        "last_used_at": t.last_used_at,
        "revoked_at": t.revoked_at,
        "created_by": t.created_by,
    })
}

async fn create(
    state: &AppState,
    access: &Access,
    req: &HttpRequest,
    actor: &Actor,
    tenant: Option<&str>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let spec: NewToken = body::json(req, payload, state.config.max_body_bytes).await?;
    let (record, secret) = access.create(actor, tenant, spec).await?;
    store::flush(&state.store).await?;
    let mut body = view(&record);
    body["token"] = json!(secret.expose_secret());
    let mut resp = HttpResponse::Created().json(body);
    resp.extensions_mut().insert(AuditNote {
        target: Some(record.id.clone()),
        detail: Some(format!("{} token '{}'", record.role, record.name)),
    });
    Ok(resp)
}

async fn create_operator(
    state: web::Data<AppState>,
    access: web::Data<Access>,
    actor: web::ReqData<Actor>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    create(&state, &access, &req, &actor, None, payload).await
}

async fn create_tenant(
    state: web::Data<AppState>,
    access: web::Data<Access>,
    actor: web::ReqData<Actor>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let t = existing(&state, &path).await?;
    create(&state, &access, &req, &actor, Some(&t.id), payload).await
}

async fn list_all(access: web::Data<Access>) -> Result<HttpResponse, ApiError> {
    let tokens: Vec<Value> = access.tokens(None).await?.iter().map(view).collect();
    Ok(HttpResponse::Ok().json(json!({ "tokens": tokens })))
}

async fn list_tenant(
    state: web::Data<AppState>,
    access: web::Data<Access>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let t = existing(&state, &path).await?;
    let tokens: Vec<Value> = access.tokens(Some(&t.id)).await?.iter().map(view).collect();
    Ok(HttpResponse::Ok().json(json!({ "tokens": tokens })))
}

async fn revoke(state: &AppState, access: &Access, id: &str, tenant: Option<&str>) -> Result<HttpResponse, ApiError> {
    if access.revoke(id, tenant).await?.is_none() {
        let whose = tenant.map(|t| format!(" of tenant '{t}'")).unwrap_or_default();
        return Err(ApiError::not_found("token_not_found", format!("no token {}{whose}", access.redacted(id))));
    }
    store::flush(&state.store).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn revoke_any(
    state: web::Data<AppState>,
    access: web::Data<Access>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    revoke(&state, &access, &path, None).await
}

async fn revoke_tenant(
    state: web::Data<AppState>,
    access: web::Data<Access>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, id) = path.into_inner();
    let t = existing(&state, &tenant).await?;
    revoke(&state, &access, &id, Some(&t.id)).await
}
