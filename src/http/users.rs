//! `/api/v1/tenants/{tenant}/users`: phone users, their Google alias and profiles.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use super::body;
use super::error::ApiError;
use super::tenants::existing;
use crate::access::Actor;
use crate::app::AppState;
use crate::model::CalendarKey;
use crate::model::access::Role;
use crate::model::tenant::TenantRecord;
use crate::model::user::{
    EffectiveStatusEvents, Profile, STATUS_EVENT_TYPES, StatusEvents, UserRecord, UserSpec, validate_email,
};
use crate::sync::SyncService;
use crate::sync::channels::is_live;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/tenants/{tenant}/users", web::get().to(list))
        .route("/tenants/{tenant}/users/{email}", web::put().to(put))
        .route("/tenants/{tenant}/users/{email}", web::get().to(get))
        .route("/tenants/{tenant}/users/{email}", web::delete().to(delete))
        .route("/tenants/{tenant}/users/{email}/events", web::get().to(events))
        .route("/tenants/{tenant}/users/{email}/presence", web::get().to(presence))
        .route("/tenants/{tenant}/users/{email}/resync", web::post().to(resync));
}

pub fn view(u: &UserRecord) -> Value {
    json!({
        "tenant": u.tenant,
        "email": u.email,
        "external_id": u.external_id,
        "profiles": u.profiles,
        "status_events": u.status_events,
        "created_at": u.created_at,
        "updated_at": u.updated_at,
    })
}

/// The user with their sync status: channel, last notification, last sync, events stored,
/// and the last error with its hint.
pub async fn view_with_status(state: &AppState, sync: &SyncService, u: &UserRecord) -> Result<Value, ApiError> {
    let mut v = view(u);
    let now = sync.clock.now();
    let calendar = state.store.calendar_state(&u.tenant, &u.email).await?.unwrap_or_default();
    let mut channels = state.store.channels_of(&u.tenant, &u.email).await?;
    channels.sort_by_key(|c| std::cmp::Reverse(c.expiration));
    let channel = channels
        .iter()
        .find(|c| is_live(c, now))
        .map(|c| json!({ "id": c.id, "expiration": c.expiration, "created_at": c.created_at }));
    let key = CalendarKey::new(&u.tenant, &u.email);
    v["sync"] = json!({
        "channel": channel,
        "channels": channels.len(),
        "last_notification": sync.last_notification(&key),
        "last_sync": calendar.last_sync_at,
        "last_full_sync": calendar.last_full_sync_at,
        "events_stored": calendar.events,
        "time_zone": calendar.time_zone,
        "pending": sync.queue.phase(&key),
        "last_error": calendar.last_error,
    });
    v["presence"] = json!({ "warnings": capped_warnings(&sync.presence.capped_series(&key)) });
    // Which profiles status events switch to, and any tenant default that cannot apply.
    let tenant = state.store.tenant(&u.tenant).await?;
    let status = EffectiveStatusEvents::of(u, tenant.as_ref().map(|t| &t.status_events));
    let in_effect: serde_json::Map<String, Value> = STATUS_EVENT_TYPES
        .iter()
        .map(|(field, _)| {
            let applied = status.applied.iter().find(|(f, _)| f == field).map(|(_, a)| a);
            (field.to_string(), json!(applied))
        })
        .collect();
    v["status_events_in_effect"] = Value::Object(in_effect);
    v["status_events_not_applied"] = json!(status.not_applied);
    Ok(v)
}

/// What the presence API and the user's status say of series that hit an expansion limit.
pub fn capped_warnings(series: &[String]) -> Vec<Value> {
    use crate::presence::recurrence::MAX_OCCURRENCES;
    series
        .iter()
        .map(|id| {
            json!({
                "code": "series_capped",
                "event_id": id,
                "message": format!(
                    "this recurring event has more instances in the window than gwsync expands \
                     ({MAX_OCCURRENCES} per window, counting from the window's start; a series with COUNT \
                     is counted from its first instance, up to 100,000): only the first ones switch profiles"
                ),
            })
        })
        .collect()
}

/// The user named in the path, or 404.
pub async fn existing_user(state: &AppState, tenant: &TenantRecord, email: &str) -> Result<UserRecord, ApiError> {
    let email = validate_email(email, &tenant.domain)?;
    state
        .store
        .user(&tenant.id, &email)
        .await?
        .ok_or_else(|| ApiError::not_found("user_not_found", format!("no user {email} in tenant '{}'", tenant.id)))
}

async fn list(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let t = existing(&state, &path).await?;
    let users: Vec<Value> = state.store.users(&t.id).await?.iter().map(view).collect();
    Ok(HttpResponse::Ok().json(json!({ "users": users })))
}

async fn get(
    state: web::Data<AppState>,
    sync: web::Data<SyncService>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, email) = path.into_inner();
    let t = existing(&state, &tenant).await?;
    Ok(HttpResponse::Ok().json(view_with_status(&state, &sync, &existing_user(&state, &t, &email).await?).await?))
}

async fn put(
    state: web::Data<AppState>,
    sync: web::Data<SyncService>,
    actor: web::ReqData<Actor>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (tenant, email) = path.into_inner();
    let t = existing(&state, &tenant).await?;
    let email = validate_email(&email, &t.domain)?;
    let spec: UserSpec = body::json(&req, payload, state.config.max_body_bytes).await?;
    let (external_id, profiles) = spec.validate()?;
    let previous = state.store.user(&t.id, &email).await?;
    if actor.role == Role::User {
        let asked = spec.status_events.clone().unwrap_or_default();
        only_trigger_words_changed(previous.as_ref(), &external_id, &profiles, &asked)?;
    }
    let status_events = spec.validate_status_events(&profiles)?;
    let now = state.clock.now();
    let record = UserRecord {
        tenant: t.id.clone(),
        email: email.clone(),
        external_id,
        profiles,
        status_events,
        created_at: previous.as_ref().map(|p| p.created_at).unwrap_or(now),
        updated_at: now,
    };
    crate::admin::user_saved(&state, &sync, &record, previous.is_none()).await?;
    Ok(if previous.is_none() {
        HttpResponse::Created().json(view(&record))
    } else {
        HttpResponse::Ok().json(view(&record))
    })
}

/// A user editing themselves (console self-service) may change the trigger words of their
/// profiles, nothing else: not the profiles, their order, the phone system's id or the
/// status-event mapping, which their admin set up.
fn only_trigger_words_changed(
    previous: Option<&UserRecord>,
    external_id: &Option<String>,
    profiles: &[Profile],
    status_events: &StatusEvents,
) -> Result<(), ApiError> {
    let forbidden = |what: &str| {
        ApiError::new(
            actix_web::http::StatusCode::FORBIDDEN,
            "forbidden",
            format!("you may change only the trigger words of your own profiles, not {what}; ask your admin"),
        )
    };
    let Some(p) = previous else { return Err(forbidden("whether you are a phone user")) };
    if &p.external_id != external_id {
        return Err(forbidden("external_id"));
    }
    let names = |ps: &[Profile]| ps.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
    if names(&p.profiles) != names(profiles) {
        return Err(forbidden("the profiles or their order"));
    }
    if &p.status_events != status_events {
        return Err(forbidden("status_events"));
    }
    Ok(())
}

async fn delete(
    state: web::Data<AppState>,
    sync: web::Data<SyncService>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, email) = path.into_inner();
    let t = existing(&state, &tenant).await?;
    let u = existing_user(&state, &t, &email).await?;
    crate::admin::user_deleted(&sync, &t.id, &u.email).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// What gwsync holds of the user's calendar, for operators checking a sync. Private and
/// confidential events show no summary: their content never leaves gwsync.
async fn events(state: web::Data<AppState>, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    let (tenant, email) = path.into_inner();
    let t = existing(&state, &tenant).await?;
    let u = existing_user(&state, &t, &email).await?;
    let events: Vec<Value> = state
        .store
        .events(&t.id, &u.email)
        .await?
        .into_iter()
        .map(|mut e| {
            if matches!(e.visibility.as_str(), "private" | "confidential") {
                e.summary = None;
            }
            serde_json::to_value(e).unwrap_or(Value::Null)
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "events": events })))
}

/// The user's profile now (or null), since when, until when, why, and the switches ahead.
async fn presence(
    state: web::Data<AppState>,
    sync: web::Data<SyncService>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, email) = path.into_inner();
    let t = existing(&state, &tenant).await?;
    let u = existing_user(&state, &t, &email).await?;
    let key = CalendarKey::new(&t.id, &u.email);
    let Some(p) = sync.presence.presence(&key).await? else {
        return Err(ApiError::not_found("user_not_found", format!("no user {} in tenant '{}'", u.email, t.id)));
    };
    Ok(HttpResponse::Ok().json(json!({
        "profile": p.state.profile,
        "since": p.state.since,
        "until": p.state.until,
        "cause": p.state.cause,
        "upcoming": p.upcoming,
        "warnings": capped_warnings(&p.capped),
    })))
}

/// Syncs the user's calendar (and checks their channel) now, cutting any backoff short.
async fn resync(
    state: web::Data<AppState>,
    sync: web::Data<SyncService>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, email) = path.into_inner();
    let t = existing(&state, &tenant).await?;
    let u = existing_user(&state, &t, &email).await?;
    sync.user_saved(&t.id, &u.email);
    Ok(HttpResponse::Accepted()
        .json(json!({ "queued": true, "status": format!("/api/v1/tenants/{}/users/{}", t.id, u.email) })))
}
