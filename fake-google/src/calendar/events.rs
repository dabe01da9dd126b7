//! events.insert / get / patch / update / delete. Patching, updating or deleting an instance id
//! of a series creates an exception (a cancelled one for delete), as Google does.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Map, Value, json};

use super::model::{Calendar, Event, When, is_valid_event_id, new_event_id, parse_instance_id};
use super::write::{self, merge};
use super::{calendar_mut, json_object, owner_for};
use crate::auth::authorize;
use crate::errors::GoogleError;
use crate::params::{Api, Params};
use crate::recurrence;
use crate::world::{Shared, World};

type Result<T> = std::result::Result<T, GoogleError>;

pub async fn insert(
    shared: web::Data<Shared>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse> {
    let caller = authorize(&shared, &req, "calendar.events.insert").await?;
    let owner = owner_for(&caller, &path)?;
    let body = json_object(&body)?;
    let shown = Shown::from_request(&req)?;
    let mut world = shared.world.lock();
    let event = create(&mut world, &shared, &owner, &body, Origin::Client)?;
    let cal = calendar_mut(&mut world, &owner, shared.clock.now());
    Ok(HttpResponse::Ok().json(shown.render(cal, &event)))
}

/// Who puts an event on a calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A client, through events.insert: Google's rules for each event type apply.
    Client,
    /// Google itself (Gmail's `fromGmail` events, Contacts' birthdays): `POST /_fake/calendars/{user}/events`.
    Google,
}

/// Stores a new event on `owner`'s calendar (with the world locked) and notifies the channels
/// watching it.
pub fn create(
    world: &mut World,
    shared: &Shared,
    owner: &str,
    body: &Map<String, Value>,
    origin: Origin,
) -> Result<Event> {
    let now = shared.clock.now();
    let cal = calendar_mut(world, owner, now);
    let id = match body.get("id") {
        None | Some(Value::Null) => new_event_id(),
        Some(Value::String(id)) if is_valid_event_id(id) => id.clone(),
        Some(_) => return Err(GoogleError::calendar(400, "global", "invalid", "Invalid resource id value.")),
    };
    if cal.events.contains_key(&id) {
        return Err(GoogleError::calendar(409, "global", "duplicate", "The requested identifier already exists."));
    }
    let parts = write::parse(body, owner)?;
    if origin == Origin::Client {
        write::check_event_type(&parts, cal.primary, true)?;
    }
    let seq = cal.bump(now);
    let event = Event {
        ical_uid: body
            .get("iCalUID")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{id}@google.com")),
        id: id.clone(),
        status: parts.status,
        fields: parts.fields,
        start: parts.start,
        end: parts.end,
        recurrence: parts.recurrence,
        recurring_event_id: None,
        original_start: None,
        created: now,
        updated: now,
        seq,
        sequence: body.get("sequence").and_then(Value::as_i64).unwrap_or(0),
    };
    let event_type = event.event_type().to_owned();
    cal.events.insert(id, event.clone());
    crate::push::calendar_changed(world, shared, owner, &event_type);
    Ok(event)
}

pub async fn get(
    shared: web::Data<Shared>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let caller = authorize(&shared, &req, "calendar.events.get").await?;
    let (calendar_id, event_id) = path.into_inner();
    let owner = owner_for(&caller, &calendar_id)?;
    let now = shared.clock.now();
    let mut world = shared.world.lock();
    let cal = calendar_mut(&mut world, &owner, now);
    let event = find(cal, &event_id).ok_or_else(GoogleError::calendar_not_found)?;
    Ok(HttpResponse::Ok().json(Shown::from_request(&req)?.render(cal, &event)))
}

pub async fn patch(
    shared: web::Data<Shared>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse> {
    modify(shared, req, path.into_inner(), body, "calendar.events.patch").await
}

pub async fn update(
    shared: web::Data<Shared>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse> {
    modify(shared, req, path.into_inner(), body, "calendar.events.update").await
}

async fn modify(
    shared: web::Data<Shared>,
    req: HttpRequest,
    (calendar_id, event_id): (String, String),
    body: web::Bytes,
    method: &'static str,
) -> Result<HttpResponse> {
    let caller = authorize(&shared, &req, method).await?;
    let owner = owner_for(&caller, &calendar_id)?;
    let body = json_object(&body)?;
    let shown = Shown::from_request(&req)?;
    let now = shared.clock.now();
    let mut world = shared.world.lock();
    let cal = calendar_mut(&mut world, &owner, now);
    let existing = find(cal, &event_id).ok_or_else(GoogleError::calendar_not_found)?;
    check_if_match(&req, &existing)?;

    let mut writable: Map<String, Value> = if method == "calendar.events.patch" {
        let mut w = existing.writable(cal);
        merge(&mut w, &body);
        w
    } else {
        body.clone()
    };
    if existing.recurring_event_id.is_some() {
        // An instance keeps its place in the series and cannot carry a rule of its own.
        writable.remove("recurrence");
    }
    let mut parts = write::parse(&writable, &owner)?;
    write::keep_event_type(existing.event_type(), &mut parts)?;
    write::check_event_type(&parts, cal.primary, false)?;
    let mut event = existing.clone();
    let retimed = parts.start != event.start || parts.end != event.end || parts.recurrence != event.recurrence;
    event.status = parts.status;
    event.fields = parts.fields;
    event.start = parts.start;
    event.end = parts.end;
    event.recurrence = parts.recurrence;
    event.sequence = body.get("sequence").and_then(Value::as_i64).unwrap_or(event.sequence + i64::from(retimed));
    event.seq = cal.bump(now);
    event.updated = now;
    let rendered = shown.render(cal, &event);
    let event_type = event.event_type().to_owned();
    cal.events.insert(event.id.clone(), event);
    crate::push::calendar_changed(&mut world, &shared, &owner, &event_type);
    Ok(HttpResponse::Ok().json(rendered))
}

pub async fn delete(
    shared: web::Data<Shared>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let caller = authorize(&shared, &req, "calendar.events.delete").await?;
    let (calendar_id, event_id) = path.into_inner();
    let owner = owner_for(&caller, &calendar_id)?;
    let now = shared.clock.now();
    let mut world = shared.world.lock();
    let cal = calendar_mut(&mut world, &owner, now);
    let event = find(cal, &event_id).ok_or_else(GoogleError::calendar_not_found)?;
    if event.is_cancelled() {
        return Err(GoogleError::calendar(410, "global", "deleted", "Resource has been deleted"));
    }
    check_if_match(&req, &event)?;
    let mut doomed = vec![event.id.clone()];
    if event.is_master() {
        // Deleting a series deletes its exceptions with it.
        doomed.extend(
            cal.events
                .values()
                .filter(|e| e.recurring_event_id.as_deref() == Some(event.id.as_str()) && !e.is_cancelled())
                .map(|e| e.id.clone()),
        );
    }
    let seq = cal.bump(now);
    for id in doomed {
        let mut e = if id == event.id { event.clone() } else { cal.events[&id].clone() };
        e.status = "cancelled".into();
        e.seq = seq;
        e.updated = now;
        cal.events.insert(id, e);
    }
    crate::push::calendar_changed(&mut world, &shared, &owner, event.event_type());
    Ok(HttpResponse::NoContent().finish())
}

/// A stored event, or the not-yet-stored instance an instance id names.
pub fn find(cal: &Calendar, id: &str) -> Option<Event> {
    if let Some(e) = cal.events.get(id) {
        return Some(e.clone());
    }
    let (master_id, original) = parse_instance_id(id)?;
    let master = cal.events.get(master_id).filter(|m| m.is_master())?;
    let probe = original.instant_utc();
    let occurrences = recurrence::expand(
        &master.start,
        &master.end,
        &master.recurrence,
        Some(probe - chrono::Duration::seconds(1)),
        probe + chrono::Duration::seconds(1),
    )
    .ok()?;
    let occ = occurrences.into_iter().find(|o| o.start.id_suffix() == id[master_id.len() + 1..])?;
    Some(instance_of(master, occ.start, occ.end))
}

/// An unmodified instance of `master` at `start`.
pub fn instance_of(master: &Event, start: When, end: When) -> Event {
    Event {
        id: format!("{}_{}", master.id, start.id_suffix()),
        status: master.status.clone(),
        fields: master.fields.clone(),
        start: start.clone(),
        end,
        recurrence: vec![],
        recurring_event_id: Some(master.id.clone()),
        original_start: Some(start),
        ical_uid: master.ical_uid.clone(),
        created: master.created,
        updated: master.updated,
        seq: master.seq,
        sequence: master.sequence,
    }
}

fn check_if_match(req: &HttpRequest, event: &Event) -> Result<()> {
    match req.headers().get("if-match").and_then(|v| v.to_str().ok()) {
        Some(tag) if tag != "*" && tag != event.etag() => {
            Err(GoogleError::calendar(412, "global", "conditionNotMet", "Precondition Failed"))
        }
        _ => Ok(()),
    }
}

/// How the request asks for events to be shown (`timeZone`, `maxAttendees`), read before anything
/// is changed so a bad parameter changes nothing.
struct Shown {
    zone: Option<chrono_tz::Tz>,
    max_attendees: Option<usize>,
}

impl Shown {
    fn from_request(req: &HttpRequest) -> Result<Shown> {
        let params = Params::parse(req.query_string());
        let zone = match params.get("timeZone") {
            Some(z) => Some(
                z.parse()
                    .map_err(|_| crate::params::invalid(Api::Calendar, "timeZone", "Invalid time zone definition."))?,
            ),
            None => None,
        };
        let max_attendees = params.int(Api::Calendar, "maxAttendees")?.map(|m| m.max(1) as usize);
        Ok(Shown { zone, max_attendees })
    }

    fn render(&self, cal: &Calendar, event: &Event) -> Value {
        if event.is_cancelled() && event.recurring_event_id.is_none() && event.fields.is_empty() {
            return event.render_tombstone(cal, self.zone);
        }
        json!(event.render(cal, self.zone, self.max_attendees))
    }
}
