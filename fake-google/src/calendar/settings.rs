//! calendars.get, calendarList.get and settings.get — what a client reads to learn a user's
//! primary calendar and its time zone.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use super::{calendar_mut, owner_for};
use crate::auth::authorize;
use crate::errors::GoogleError;
use crate::world::Shared;

type Result<T> = std::result::Result<T, GoogleError>;

pub async fn calendar_get(
    shared: web::Data<Shared>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let caller = authorize(&shared, &req, "calendar.calendars.get").await?;
    let owner = owner_for(&caller, &path)?;
    let now = shared.clock.now();
    let mut world = shared.world.lock();
    let cal = calendar_mut(&mut world, &owner, now);
    Ok(HttpResponse::Ok().json(json!({
        "kind": "calendar#calendar",
        "etag": cal.etag(),
        "id": cal.owner,
        "summary": cal.owner,
        "timeZone": cal.time_zone,
        "conferenceProperties": { "allowedConferenceSolutionTypes": ["hangoutsMeet"] },
    })))
}

pub async fn calendar_list_get(
    shared: web::Data<Shared>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let caller = authorize(&shared, &req, "calendar.calendarList.get").await?;
    let owner = owner_for(&caller, &path)?;
    let now = shared.clock.now();
    let mut world = shared.world.lock();
    let cal = calendar_mut(&mut world, &owner, now);
    Ok(HttpResponse::Ok().json(json!({
        "kind": "calendar#calendarListEntry",
        "etag": cal.etag(),
        "id": cal.owner,
        "summary": cal.owner,
        "timeZone": cal.time_zone,
        "colorId": "14",
        "backgroundColor": "#9fe1e7",
        "foregroundColor": "#000000",
        "selected": true,
        "accessRole": "owner",
        "defaultReminders": [{ "method": "popup", "minutes": 10 }],
        "notificationSettings": { "notifications": [
            { "type": "eventCreation", "method": "email" },
            { "type": "eventChange", "method": "email" },
            { "type": "eventCancellation", "method": "email" },
            { "type": "eventResponse", "method": "email" },
        ]},
        "primary": true,
        "conferenceProperties": { "allowedConferenceSolutionTypes": ["hangoutsMeet"] },
    })))
}

pub async fn setting_get(shared: web::Data<Shared>, req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse> {
    let caller = authorize(&shared, &req, "calendar.settings.get").await?;
    let now = shared.clock.now();
    let mut world = shared.world.lock();
    let cal = calendar_mut(&mut world, &caller.user, now);
    let value = match path.as_str() {
        "timezone" => cal.time_zone.clone(),
        "locale" => "en".into(),
        "weekStart" => "1".into(),
        "format24HourTime" => "true".into(),
        "dateFieldOrder" => "DMY".into(),
        "defaultEventLength" => "60".into(),
        "hideWeekends" | "hideInvitations" | "showDeclinedEvents" => "false".into(),
        "useKeyboardShortcuts" | "autoAddHangouts" | "remindOnRespondedEventsOnly" => "true".into(),
        _ => return Err(GoogleError::calendar_not_found()),
    };
    Ok(HttpResponse::Ok().json(json!({
        "kind": "calendar#setting",
        "etag": format!("\"{}\"", cal.updated.timestamp_micros()),
        "id": path.as_str(),
        "value": value,
    })))
}
