//! `/api/v1/tenants`: tenants and their service-account key.

use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use serde_json::{Value, json};

use super::body;
use super::error::ApiError;
use crate::access::Actor;
use crate::app::{AppState, credentials_context, webhook_secret_context};
use crate::contacts::Contacts;
use crate::model::key_file::{self, MAX_KEY_FILE_BYTES};
use crate::model::tenant::{StoredPhoneSystem, TenantRecord, TenantSpec, validate_tenant_id};
use crate::store::StoredCredentials;
use crate::sync::SyncService;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/tenants", web::get().to(list))
        .route("/tenants/{tenant}", web::put().to(put))
        .route("/tenants/{tenant}", web::get().to(get))
        .route("/tenants/{tenant}", web::delete().to(delete))
        .route("/tenants/{tenant}/credentials", web::put().to(put_credentials));
}

/// The tenant as the API shows it: no secret, whether a key is uploaded and whose.
pub async fn view(state: &AppState, t: &TenantRecord) -> Result<Value, ApiError> {
    let credentials = state.store.credentials(&t.id).await?.map(|c| {
        json!({
            "client_email": c.info.client_email,
            "client_id": c.info.client_id,
            "project_id": c.info.project_id,
            "uploaded_at": c.uploaded_at,
        })
    });
    Ok(json!({
        "id": t.id,
        "domain": t.domain,
        "directory_admin": t.directory_admin,
        "default_region": t.default_region,
        "phone_system": t.phone_system.as_ref().map(|p| json!({ "url": without_credentials(&p.url), "secret_set": true })),
        "contacts": {
            "poll_interval": humantime::format_duration(t.contacts.poll_interval).to_string(),
            "personal_contacts": t.contacts.personal_contacts,
        },
        "credentials": credentials,
        "status_events": t.status_events,
        "admins": t.admins,
        "self_service": t.self_service,
        "created_at": t.created_at,
        "updated_at": t.updated_at,
    }))
}

/// A URL as shown: a password stored by an older gwsync is not echoed.
fn without_credentials(url: &url::Url) -> url::Url {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url
}

/// The tenant named in the path, or 404.
pub async fn existing(state: &AppState, id: &str) -> Result<TenantRecord, ApiError> {
    validate_tenant_id(id)?;
    state.store.tenant(id).await?.ok_or_else(|| tenant_not_found(id))
}

/// How the tenant's parts are doing: its token endpoint (per tenant: it fails for every user
/// at once) and its phone system.
pub fn status(sync: &SyncService, t: &TenantRecord) -> Value {
    let google = match sync.tenant_auth.failure(&t.id) {
        Some(f) => json!({ "state": "failing", "error": f }),
        None => json!({ "state": "ok" }),
    };
    let phone = t.phone_system.as_ref().map(|_| sync.presence.outbox.health(&t.id));
    json!({ "google_token": google, "phone_system": phone })
}

/// The answer for a tenant that does not exist (and, to a tenant token, for every other tenant).
pub fn tenant_not_found(id: &str) -> ApiError {
    ApiError::not_found("tenant_not_found", format!("no tenant '{id}': create it with PUT /api/v1/tenants/{id}"))
}

/// Every tenant for an operator; its own for a tenant token.
async fn list(
    state: web::Data<AppState>,
    sync: web::Data<SyncService>,
    actor: web::ReqData<Actor>,
) -> Result<HttpResponse, ApiError> {
    let mut tenants = state.store.tenants().await?;
    if let Some(own) = &actor.tenant {
        tenants.retain(|t| &t.id == own);
    }
    let mut views = Vec::with_capacity(tenants.len());
    for t in &tenants {
        let mut v = view(&state, t).await?;
        v["status"] = status(&sync, t);
        views.push(v);
    }
    Ok(HttpResponse::Ok().json(json!({ "tenants": views })))
}

async fn get(
    state: web::Data<AppState>,
    sync: web::Data<SyncService>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let t = existing(&state, &path).await?;
    let mut v = view(&state, &t).await?;
    v["status"] = status(&sync, &t);
    Ok(HttpResponse::Ok().json(v))
}

async fn put(
    state: web::Data<AppState>,
    sync: web::Data<SyncService>,
    contacts: web::Data<Contacts>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    validate_tenant_id(&id)?;
    let spec: TenantSpec = body::json(&req, payload, state.config.max_body_bytes).await?;
    let valid = spec.validate(&state.outbound)?;
    valid.check_outbound(&state.outbound).await?;
    let status_events = spec.validate_status_events()?;
    let previous = state.store.tenant(&id).await?;
    if let Some(prev) = &previous
        && prev.domain != valid.domain
        && !state.store.users(&id).await?.is_empty()
    {
        return Err(ApiError::conflict(
            "tenant_has_users",
            format!(
                "tenant '{id}' has users in {}; delete them before moving the tenant to {}",
                prev.domain, valid.domain
            ),
        ));
    }
    let phone_system = match valid.phone_system {
        None => None,
        Some((url, Some(key))) => {
            let sealed = state
                .master_key
                .seal(&webhook_secret_context(&id), &key)
                .map_err(|e| ApiError::internal("sealing the webhook secret", &e))?;
            Some(StoredPhoneSystem { url, secret_sealed: base64::engine::general_purpose::STANDARD.encode(sealed) })
        }
        // The URL changes, the secret stays.
        Some((url, None)) => match previous.as_ref().and_then(|p| p.phone_system.as_ref()) {
            Some(old) => Some(StoredPhoneSystem { url, secret_sealed: old.secret_sealed.clone() }),
            None => {
                return Err(crate::model::invalid(
                    "phone_system.secret",
                    "a new phone system needs its secret: whsec_ followed by base64 of 16 to 64 random bytes",
                )
                .into());
            }
        },
    };
    let now = state.clock.now();
    let record = TenantRecord {
        id: id.clone(),
        domain: valid.domain,
        directory_admin: valid.directory_admin,
        default_region: valid.default_region,
        phone_system,
        contacts: valid.contacts,
        created_at: previous.as_ref().map(|p| p.created_at).unwrap_or(now),
        updated_at: now,
        export_token_digest: previous.as_ref().and_then(|p| p.export_token_digest.clone()),
        status_events,
        admins: valid.admins,
        self_service: valid.self_service,
    };
    crate::admin::tenant_saved(&state, &sync, &contacts, &record, previous.as_ref()).await?;
    let mut body = view(&state, &record).await?;
    body["status"] = status(&sync, &record);
    Ok(if previous.is_none() { HttpResponse::Created().json(body) } else { HttpResponse::Ok().json(body) })
}

async fn delete(
    state: web::Data<AppState>,
    sync: web::Data<SyncService>,
    contacts: web::Data<Contacts>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let t = existing(&state, &path).await?;
    crate::admin::tenant_deleted(&sync, &contacts, &t.id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The key file exactly as Google's console saved it (`curl -T key.json`): any content type.
async fn put_credentials(
    state: web::Data<AppState>,
    sync: web::Data<SyncService>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let t = existing(&state, &path).await?;
    let bytes = body::read_limited(payload, MAX_KEY_FILE_BYTES).await?;
    let key_file_error = |e: crate::model::Invalid| {
        let code = if e.code == "outbound_url_refused" { e.code } else { "invalid_key_file" };
        ApiError::bad_request(code, format!("the key file is not usable: {e}"))
    };
    let info = key_file::validate(&bytes, &state.outbound).map_err(key_file_error)?;
    key_file::check_outbound(&info, &state.outbound).await.map_err(key_file_error)?;
    let sealed = state
        .master_key
        .seal(&credentials_context(&t.id), &bytes)
        .map_err(|e| ApiError::internal("sealing the key", &e))?;
    let stored = StoredCredentials {
        info: info.clone(),
        sealed: base64::engine::general_purpose::STANDARD.encode(sealed),
        uploaded_at: state.clock.now(),
    };
    crate::admin::credentials_saved(&state, &sync, &t.id, &stored).await?;
    Ok(HttpResponse::Ok().json(json!({
        "client_email": info.client_email,
        "client_id": info.client_id,
        "project_id": info.project_id,
        "uploaded_at": stored.uploaded_at,
    })))
}
