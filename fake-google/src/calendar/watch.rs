//! events.watch (with events.list's `eventTypes` filter) and channels.stop.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Duration;
use serde_json::{Value, json};

use super::{calendar_mut, json_object, owner_for};
use crate::auth::authorize;
use crate::errors::GoogleError;
use crate::params::Params;
use crate::push::{Channel, Outgoing};
use crate::world::Shared;

type Result<T> = std::result::Result<T, GoogleError>;

/// Calendar documents a 7-day default and no maximum; Google's effective limit is the default.
pub const MAX_TTL_SECS: i64 = 604_800;

fn bad(reason: &str, message: &str) -> GoogleError {
    GoogleError::calendar(400, "global", reason, message)
}

/// Webhook addresses must be https; the fake also takes plain http to a loopback host so tests
/// can receive.
fn address_allowed(address: &str) -> bool {
    let Ok(url) = url::Url::parse(address) else { return false };
    match url.scheme() {
        "https" => url.host().is_some(),
        "http" => match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        _ => false,
    }
}

fn ms_value(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

pub async fn watch(
    shared: web::Data<Shared>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse> {
    let caller = authorize(&shared, &req, "calendar.events.watch").await?;
    let owner = owner_for(&caller, &path)?;
    // events.watch takes events.list's query parameters; `eventTypes` is the one that changes
    // which changes notify.
    let event_types = super::list::event_types(&Params::parse(req.query_string()))?;
    let body = json_object(&body)?;
    let now = shared.clock.now();

    let id = match body.get("id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(GoogleError::calendar_required("Required", Some(("parameter", "id")))),
    };
    if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_+/=".contains(&b)) {
        return Err(bad(
            "push.channelIdInvalid",
            "Channel id must match [A-Za-z0-9\\-_\\+/=]+ and be at most 64 characters long.",
        ));
    }
    match body.get("type").and_then(Value::as_str) {
        Some("web_hook" | "webhook") => {}
        Some(other) => return Err(bad("push.channelTypeNotSupported", &format!("Unsupported channel type: {other}"))),
        None => return Err(GoogleError::calendar_required("Required", Some(("parameter", "type")))),
    }
    let address = body
        .get("address")
        .and_then(Value::as_str)
        .ok_or_else(|| GoogleError::calendar_required("Required", Some(("parameter", "address"))))?
        .to_owned();
    if !address_allowed(&address) {
        return Err(bad("push.webhookUrlNotHttps", &format!("WebHook callback must be HTTPS: {address}")));
    }
    let token = match body.get("token") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) if t.len() <= 256 => Some(t.clone()),
        Some(_) => return Err(bad("invalid", "Channel token must be a string of at most 256 characters.")),
    };
    let ttl = match body.get("params").and_then(|p| p.get("ttl")) {
        None | Some(Value::Null) => MAX_TTL_SECS,
        Some(v) => ms_value(v).filter(|t| *t > 0).ok_or_else(|| bad("invalid", "Invalid value for: params.ttl"))?,
    };
    let mut expiration = now + Duration::seconds(ttl.min(MAX_TTL_SECS));
    match body.get("expiration") {
        None | Some(Value::Null) => {}
        Some(v) => {
            let requested = ms_value(v)
                .and_then(chrono::DateTime::from_timestamp_millis)
                .ok_or_else(|| bad("invalid", "Invalid value for: expiration"))?;
            if requested <= now {
                return Err(bad("invalid", "Expiration time must be in the future."));
            }
            expiration = expiration.min(requested);
        }
    }
    // Google reports expiry in whole milliseconds.
    let expiration = chrono::DateTime::from_timestamp_millis(expiration.timestamp_millis()).unwrap_or(expiration);

    let (response, sync, sync_first) = {
        let mut world = shared.world.lock();
        if world.channels.live_id_taken(&id, now) {
            return Err(bad("channelIdNotUnique", &format!("Channel id {id} not unique")));
        }
        let resource_id = calendar_mut(&mut world, &owner, now).resource_id.clone();
        let channel = Channel {
            id: id.clone(),
            resource_id: resource_id.clone(),
            resource_uri: format!(
                "{}/calendar/v3/calendars/{}/events?alt=json",
                shared.base_url,
                owner.replace('@', "%40")
            ),
            calendar: owner.clone(),
            address,
            token: token.clone(),
            expiration,
            client_id: caller.client_id.clone(),
            user: caller.user.clone(),
            created: now,
            stopped: None,
            last_message: 1,
            messages_queued: 1,
            event_types,
        };
        let sync = Outgoing::new(&channel, 1, "sync");
        let mut response = json!({
            "kind": "api#channel",
            "id": id,
            "resourceId": resource_id,
            "resourceUri": channel.resource_uri,
            "expiration": expiration.timestamp_millis().to_string(),
        });
        if let Some(t) = token {
            response["token"] = json!(t);
        }
        world.channels.by_id.insert(id, channel);
        (response, sync, world.behaviour.sync_before_watch_response)
    };
    if sync_first {
        // The documented race: the sync message lands before the client has the watch response.
        crate::push::deliver(&shared, &crate::push::http_client(), &sync).await;
    } else {
        let _ = shared.push_tx.send(sync);
    }
    Ok(HttpResponse::Ok().json(response))
}

pub async fn stop(shared: web::Data<Shared>, req: HttpRequest, body: web::Bytes) -> Result<HttpResponse> {
    let caller = authorize(&shared, &req, "calendar.channels.stop").await?;
    let body = json_object(&body)?;
    let id = body.get("id").and_then(Value::as_str);
    let resource_id = body.get("resourceId").and_then(Value::as_str);
    let (Some(id), Some(resource_id)) = (id, resource_id) else {
        let missing = if id.is_none() { "id" } else { "resourceId" };
        return Err(GoogleError::calendar_required("Required", Some(("parameter", missing))));
    };
    let now = shared.clock.now();
    let mut world = shared.world.lock();
    match world.channels.by_id.get_mut(id) {
        // A channel a service account made can be stopped by any user of the same client.
        Some(ch) if ch.is_live(now) && ch.resource_id == resource_id && ch.client_id == caller.client_id => {
            ch.stopped = Some(now);
            Ok(HttpResponse::NoContent().finish())
        }
        _ => Err(GoogleError::calendar(
            404,
            "global",
            "notFound",
            &format!("Channel '{id}' not found for project '{}'", caller.project_number),
        )),
    }
}
