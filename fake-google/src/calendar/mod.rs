//! Calendar v3: events (insert, get, patch, update, delete, instances, list), push channels
//! (events.watch, channels.stop), calendarList.get and settings.get, under `/calendar/v3/`.

pub mod events;
pub mod list;
pub mod model;
pub mod settings;
pub mod watch;
pub mod write;

use actix_web::web;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::auth::Caller;
use crate::errors::GoogleError;
use crate::world::World;
use model::Calendar;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/calendar/v3")
            .route("/calendars/{calendarId}/events", web::get().to(list::list))
            .route("/calendars/{calendarId}/events", web::post().to(events::insert))
            .route("/calendars/{calendarId}/events/watch", web::post().to(watch::watch))
            .route("/calendars/{calendarId}/events/{eventId}", web::get().to(events::get))
            .route("/calendars/{calendarId}/events/{eventId}", web::patch().to(events::patch))
            .route("/calendars/{calendarId}/events/{eventId}", web::put().to(events::update))
            .route("/calendars/{calendarId}/events/{eventId}", web::delete().to(events::delete))
            .route("/calendars/{calendarId}/events/{eventId}/instances", web::get().to(list::instances_handler))
            .route("/calendars/{calendarId}", web::get().to(settings::calendar_get))
            .route("/channels/stop", web::post().to(watch::stop))
            .route("/users/me/calendarList/{calendarId}", web::get().to(settings::calendar_list_get))
            .route("/users/me/settings/{setting}", web::get().to(settings::setting_get))
            .default_service(web::to(not_found)),
    );
}

async fn not_found() -> actix_web::HttpResponse {
    actix_web::ResponseError::error_response(&GoogleError::calendar_not_found())
}

/// The calendar a caller means by `calendar_id`: `primary` or their own address (their primary
/// calendar), or the id of one of their secondary calendars. Other people's calendars were not
/// shared with anybody here, so they are 404, as at Google.
pub fn owner_for(caller: &Caller, calendar_id: &str) -> Result<String, GoogleError> {
    let id = calendar_id.to_ascii_lowercase();
    if id == "primary" || id == caller.user {
        Ok(caller.user.clone())
    } else if caller.secondary_calendars.contains(&id) {
        Ok(id)
    } else {
        Err(GoogleError::calendar_not_found())
    }
}

/// The owner's calendar, created in the domain's time zone on first use.
pub fn calendar_mut<'w>(world: &'w mut World, owner: &str, now: DateTime<Utc>) -> &'w mut Calendar {
    let tz = world.domain_for_user(owner).map(|d| d.time_zone.clone()).unwrap_or_else(|| "UTC".into());
    world.calendars.entry(owner.to_owned()).or_insert_with(|| Calendar::new(owner, &tz, now))
}

/// A JSON object request body, or Google's parse error.
pub fn json_object(body: &[u8]) -> Result<Map<String, Value>, GoogleError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(GoogleError::calendar_parse_error()),
    }
}
