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
//!
//! The path is cheap because Google's bursts are large (an all-hands invitation touches every
//! calendar at once) and it retries what it cannot deliver: the channel comes from the store's
//! in-memory index (`Store::channel_auth`: no read, no JSON decode), a calendar that already
//! holds an unconsumed durable mark takes no new write (`SyncQueue::notify`), and the marks of
//! concurrent notifications share one flush (`GroupFlush`). The answer bodies are fixed strings.

use actix_web::http::StatusCode;
use actix_web::http::header::{ContentType, HeaderMap, HeaderName};
use actix_web::{HttpRequest, HttpResponse, web};
use subtle::ConstantTimeEq;

use crate::app::{AppState, sha256};
use crate::model::CalendarKey;
use crate::sync::SyncService;

const CHANNEL_ID: HeaderName = HeaderName::from_static("x-goog-channel-id");
const CHANNEL_TOKEN: HeaderName = HeaderName::from_static("x-goog-channel-token");
const RESOURCE_ID: HeaderName = HeaderName::from_static("x-goog-resource-id");
const RESOURCE_STATE: HeaderName = HeaderName::from_static("x-goog-resource-state");

/// An outcome's name (the metric's label) and its answer's body.
type Outcome = (&'static str, &'static str);

macro_rules! outcome {
    ($name:literal) => {
        ($name, concat!("{\"outcome\":\"", $name, "\"}"))
    };
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/webhooks/google/calendar", web::post().to(calendar));
}

fn header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

fn answer(state: &AppState, status: StatusCode, (outcome, body): Outcome) -> HttpResponse {
    state.metrics.notification(outcome);
    HttpResponse::build(status).content_type(ContentType::json()).body(body)
}

async fn calendar(state: web::Data<AppState>, sync: web::Data<SyncService>, req: HttpRequest) -> HttpResponse {
    let headers = req.headers();
    let (Some(channel_id), Some(resource_state)) = (header(headers, &CHANNEL_ID), header(headers, &RESOURCE_STATE))
    else {
        return answer(&state, StatusCode::BAD_REQUEST, outcome!("missing_headers"));
    };
    if channel_id.len() > 64 {
        return answer(&state, StatusCode::NOT_FOUND, outcome!("unknown_channel"));
    }
    let channel = match state.store.channel_auth(channel_id).await {
        Ok(Some(c)) if !c.orphaned => c,
        Ok(_) => return answer(&state, StatusCode::NOT_FOUND, outcome!("unknown_channel")),
        Err(e) => {
            tracing::error!(error = %e, "reading a channel failed");
            return answer(&state, StatusCode::SERVICE_UNAVAILABLE, outcome!("store_error"));
        }
    };
    let presented = sha256(header(headers, &CHANNEL_TOKEN).unwrap_or("").as_bytes());
    if !channel.token_digest.is_some_and(|expected| bool::from(presented.ct_eq(&expected))) {
        return answer(&state, StatusCode::FORBIDDEN, outcome!("bad_token"));
    }
    if let Some(expected) = &channel.resource_id
        && header(headers, &RESOURCE_ID) != Some(expected.as_str())
    {
        return answer(&state, StatusCode::FORBIDDEN, outcome!("resource_mismatch"));
    }
    if resource_state.eq_ignore_ascii_case("sync") {
        return answer(&state, StatusCode::OK, outcome!("sync"));
    }
    // `exists` (and anything else Google may send on a verified channel) means: sync.
    match sync.notified(&CalendarKey::new(&channel.tenant, &channel.user)).await {
        Ok(()) => answer(&state, StatusCode::OK, outcome!("accepted")),
        Err(e) => {
            tracing::error!(error = %e, channel = %channel_id, "could not mark the calendar dirty");
            answer(&state, StatusCode::SERVICE_UNAVAILABLE, outcome!("store_error"))
        }
    }
}
