//! `POST /webhooks/google/calendar`: Google's push notifications.
//!
//! Verification comes before anything else: the channel id must be one gwsync created, the
//! token must match (SHA-256 compared in constant time), and the resource id must be the
//! channel's. Only then is the calendar marked dirty — durably — and the request acknowledged.
//! The body is never read (Google sends none). Answers:
//! - 200 `sync`: a new channel's first message, nothing to fetch;
//! - 200 `accepted`: the calendar will be synced;
//! - 400 missing `X-Goog-Channel-ID` or `X-Goog-Resource-State`;
//! - 404 unknown channel (stale or forged; Google does not retry 4xx, so nothing loops);
//! - 403 wrong token or resource id;
//! - 503 the dirty mark could not be made durable: Google retries 5xx, which is what we want.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::app::{AppState, sha256};
use crate::model::CalendarKey;
use crate::sync::SyncService;
use crate::sync::channels::hex;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/webhooks/google/calendar", web::post().to(calendar));
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

fn answer(state: &AppState, status: actix_web::http::StatusCode, outcome: &'static str) -> HttpResponse {
    state.metrics.notification(outcome);
    HttpResponse::build(status).json(json!({ "outcome": outcome }))
}

async fn calendar(state: web::Data<AppState>, sync: web::Data<SyncService>, req: HttpRequest) -> HttpResponse {
    use actix_web::http::StatusCode;
    let (Some(channel_id), Some(resource_state)) =
        (header(&req, "x-goog-channel-id"), header(&req, "x-goog-resource-state"))
    else {
        return answer(&state, StatusCode::BAD_REQUEST, "missing_headers");
    };
    if channel_id.len() > 64 {
        return answer(&state, StatusCode::NOT_FOUND, "unknown_channel");
    }
    let channel = match state.store.channel(channel_id) {
        Ok(Some(c)) if !c.orphaned => c,
        Ok(_) => return answer(&state, StatusCode::NOT_FOUND, "unknown_channel"),
        Err(e) => {
            tracing::error!(error = %e, "reading a channel failed");
            return answer(&state, StatusCode::SERVICE_UNAVAILABLE, "store_error");
        }
    };
    let token = header(&req, "x-goog-channel-token").unwrap_or("");
    let presented = hex(&sha256(token.as_bytes()));
    if !bool::from(presented.as_bytes().ct_eq(channel.token_digest.as_bytes())) {
        return answer(&state, StatusCode::FORBIDDEN, "bad_token");
    }
    if let Some(expected) = &channel.resource_id
        && header(&req, "x-goog-resource-id") != Some(expected.as_str())
    {
        return answer(&state, StatusCode::FORBIDDEN, "resource_mismatch");
    }
    if resource_state.eq_ignore_ascii_case("sync") {
        return answer(&state, StatusCode::OK, "sync");
    }
    // `exists` (and anything else Google may send on a verified channel) means: sync.
    match sync.notified(&CalendarKey::new(&channel.tenant, &channel.user)).await {
        Ok(()) => answer(&state, StatusCode::OK, "accepted"),
        Err(e) => {
            tracing::error!(error = %e, channel = %channel.id, "could not mark the calendar dirty");
            answer(&state, StatusCode::SERVICE_UNAVAILABLE, "store_error")
        }
    }
}
