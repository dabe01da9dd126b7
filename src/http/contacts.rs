//! The phonebook: `/api/v1/tenants/{t}/contacts` (search, lookup, sync, status, export token)
//! with the admin token, and `/phonebook/{t}/…` exports for desk phones with the tenant's
//! export token in the query string (desk phones cannot send headers).

use actix_web::{HttpResponse, web};
use base64::Engine;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::access::AuditNote;
use super::error::ApiError;
use super::tenants::existing;
use crate::app::{AppState, sha256};
use crate::contacts::{Contacts, export};
use crate::sync::channels::hex;

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

pub fn configure_api(cfg: &mut web::ServiceConfig) {
    cfg.route("/tenants/{tenant}/contacts", web::get().to(search))
        .route("/tenants/{tenant}/contacts/lookup", web::get().to(lookup))
        .route("/tenants/{tenant}/contacts/sync", web::post().to(sync))
        .route("/tenants/{tenant}/contacts/status", web::get().to(status))
        .route("/tenants/{tenant}/contacts/export-token", web::post().to(export_token));
}

pub fn configure_public(cfg: &mut web::ServiceConfig) {
    cfg.route("/phonebook/{tenant}/{file}", web::get().to(export));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchQuery {
    q: Option<String>,
    page_size: Option<usize>,
    page_token: Option<String>,
}

async fn search(
    state: web::Data<AppState>,
    contacts: web::Data<Contacts>,
    path: web::Path<String>,
    query: web::Query<SearchQuery>,
) -> Result<HttpResponse, ApiError> {
    let t = existing(&state, &path).await?;
    let size = query.page_size.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&size) {
        return Err(ApiError::bad_request("invalid_request", format!("page_size must be 1 to {MAX_PAGE}")));
    }
    let offset = match &query.page_token {
        None => 0,
        Some(tok) => base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(tok)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or_else(|| ApiError::bad_request("invalid_request", "page_token is not one this API gave out"))?,
    };
    let hits = contacts.book(&t.id).await?.search(query.q.as_deref(), &t.default_region);
    let page: Vec<_> = hits.iter().skip(offset).take(size).collect();
    let mut body = json!({ "contacts": page, "total": hits.len() });
    if let Some(next) = offset.checked_add(size).filter(|n| *n < hits.len()) {
        body["next_page_token"] = json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(next.to_string()));
    }
    Ok(HttpResponse::Ok().json(body))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LookupQuery {
    number: Option<String>,
}

async fn lookup(
    state: web::Data<AppState>,
    contacts: web::Data<Contacts>,
    path: web::Path<String>,
    query: web::Query<LookupQuery>,
) -> Result<HttpResponse, ApiError> {
    let t = existing(&state, &path).await?;
    let number =
        query.number.as_deref().map(str::trim).filter(|n| !n.is_empty() && n.len() <= 64).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_request",
                "give the caller's number: ?number=+46812345678 (any common written form; up to 64 characters)",
            )
        })?;
    let (e164, hits) = contacts.book(&t.id).await?.lookup(number, &t.default_region);
    Ok(HttpResponse::Ok().json(json!({ "number": number, "e164": e164, "matches": hits })))
}

/// Starts a phonebook sync now: `202 Accepted` with the job to watch (a full sync of a large
/// directory takes minutes at People's pace); its report is the sync's summary.
async fn sync(
    state: web::Data<AppState>,
    contacts: web::Data<Contacts>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let t = existing(&state, &path).await?;
    let (contacts, tenant) = (contacts.into_inner(), t.id.clone());
    let job = state
        .jobs
        .start("contacts.sync", Some(&t.id), async move {
            match contacts.sync_tenant(&tenant).await {
                Ok(summary) => Ok(serde_json::to_value(summary).unwrap_or(serde_json::Value::Null)),
                Err(e) => {
                    tracing::error!(tenant = %tenant, error = %e, "phonebook sync failed");
                    Err(json!({"code": "database", "message": "the phonebook sync failed; see the server log"}))
                }
            }
        })
        .await;
    Ok(super::jobs::accepted(&job))
}

async fn status(
    state: web::Data<AppState>,
    contacts: web::Data<Contacts>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let t = existing(&state, &path).await?;
    Ok(HttpResponse::Ok().json(contacts.status(&t.id).await?))
}

/// Creates (or replaces) the token desk phones use for the exports; shown once.
async fn export_token(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let t = existing(&state, &path).await?;
    let crate::admin::ExportToken { token, replaced } = crate::admin::export_token_replaced(&state, &t).await?;
    let base = state.public_url.as_str().trim_end_matches('/');
    let mut resp = HttpResponse::Ok().json(json!({
        "token": token,
        "urls": {
            "vcard": format!("{base}/phonebook/{}/contacts.vcf?token={token}", t.id),
            "yealink": format!("{base}/phonebook/{}/yealink.xml?token={token}", t.id),
            "snom": format!("{base}/phonebook/{}/snom.xml?token={token}", t.id),
        }
    }));
    resp.extensions_mut().insert(AuditNote {
        target: Some("phonebook export token".into()),
        detail: Some(if replaced { "replaced" } else { "made" }.into()),
    });
    Ok(resp)
}

#[derive(Deserialize)]
struct ExportQuery {
    token: Option<String>,
}

async fn export(
    state: web::Data<AppState>,
    contacts: web::Data<Contacts>,
    path: web::Path<(String, String)>,
    query: web::Query<ExportQuery>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, file) = path.into_inner();
    let forbidden = || {
        ApiError::new(
            actix_web::http::StatusCode::FORBIDDEN,
            "forbidden",
            "this phonebook needs its export token: ?token=…",
        )
    };
    // Unknown tenants and wrong tokens look the same from outside.
    let t = state.store.tenant(&tenant).await.ok().flatten().ok_or_else(forbidden)?;
    let (Some(digest), Some(token)) = (&t.export_token_digest, &query.token) else { return Err(forbidden()) };
    let presented = hex(&sha256(token.as_bytes()));
    if !bool::from(presented.as_bytes().ct_eq(digest.as_bytes())) {
        return Err(forbidden());
    }
    let book = contacts.book(&t.id).await?;
    let (body, content_type) = match file.as_str() {
        "contacts.vcf" => (export::vcard(&book.entries), "text/vcard; charset=utf-8"),
        "yealink.xml" => (export::yealink(&book.entries), "application/xml; charset=utf-8"),
        "snom.xml" => (export::snom(&t.domain, &book.entries), "application/xml; charset=utf-8"),
        _ => return Err(ApiError::not_found("no_such_export", "exports are contacts.vcf, yealink.xml and snom.xml")),
    };
    Ok(HttpResponse::Ok().content_type(content_type).body(body))
}
