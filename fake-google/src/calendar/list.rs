//! events.list (full and incremental, paged, with or without `singleEvents`, filtered by
//! `eventTypes`) and events.instances.
//!
//! Listing order is by a sort key with the event id as tie-breaker; page tokens carry the last
//! key served, so an item deleted while a client pages cannot shift another out of view, and
//! the change number at the start of the listing, which becomes the sync token: whatever
//! changes while the client pages shows up again in the next incremental sync.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::events::instance_of;
use super::model::{Calendar, Event};
use super::{calendar_mut, owner_for};
use crate::auth::authorize;
use crate::clock::google_timestamp;
use crate::errors::GoogleError;
use crate::params::{Api, Params, STANDARD, invalid};
use crate::recurrence;
use crate::world::{Behaviour, Shared};

type Result<T> = std::result::Result<T, GoogleError>;

/// Parameters that may not accompany a `syncToken`.
const NOT_WITH_SYNC_TOKEN: &[&str] = &[
    "iCalUID",
    "orderBy",
    "privateExtendedProperty",
    "q",
    "sharedExtendedProperty",
    "timeMin",
    "timeMax",
    "updatedMin",
];
const DEFAULT_PAGE: i64 = 250;
const MAX_PAGE: i64 = 2500;

#[derive(Serialize, Deserialize)]
struct SyncToken {
    /// Calendar owner.
    c: String,
    /// Change number the token stands at.
    s: u64,
    /// Calendar epoch when issued.
    e: u32,
    /// `singleEvents` of the full sync the chain started with.
    f: bool,
    /// Issued at (fake time, ms).
    i: i64,
    /// `timeMin`/`timeMax` of that full sync (ms), bounding instance expansion.
    w: (Option<i64>, Option<i64>),
    /// `eventTypes` of that full sync (sorted; empty: every type).
    #[serde(default)]
    t: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct PageToken {
    c: String,
    /// Fingerprint of every other parameter: a page token is only good for the same request.
    f: String,
    snap: u64,
    after: Option<(String, String)>,
    /// Whether this listing already served its deliberately short page.
    short: bool,
}

struct Query {
    zone_override: Option<Tz>,
    single: bool,
    show_deleted: Option<bool>,
    time_min: Option<DateTime<Utc>>,
    time_max: Option<DateTime<Utc>>,
    order_by: Option<String>,
    max_results: usize,
    max_attendees: Option<usize>,
}

fn parse_time(params: &Params, name: &str) -> Result<Option<DateTime<Utc>>> {
    params
        .get(name)
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| invalid(Api::Calendar, name, "Bad Request"))
        })
        .transpose()
}

fn parse_query(params: &Params, default_page: i64) -> Result<Query> {
    let max_results = match params.int(Api::Calendar, "maxResults")? {
        None => default_page,
        Some(n) if n < 1 => {
            return Err(invalid(
                Api::Calendar,
                "maxResults",
                &format!("Invalid value '{n}'. Values must be within the range: [1, 2500]"),
            ));
        }
        Some(n) => n.min(MAX_PAGE),
    } as usize;
    let time_min = parse_time(params, "timeMin")?;
    let time_max = parse_time(params, "timeMax")?;
    if let (Some(a), Some(b)) = (time_min, time_max)
        && b <= a
    {
        return Err(super::write::time_range_empty());
    }
    let single = params.bool(Api::Calendar, "singleEvents")?.unwrap_or(false);
    let order_by = params.get("orderBy").map(str::to_owned);
    match order_by.as_deref() {
        None | Some("updated") => {}
        Some("startTime") if single => {}
        Some("startTime") => {
            return Err(GoogleError::calendar_at(
                400,
                "global",
                "badRequest",
                "The requested ordering is not available for the particular query.",
                "parameter",
                "orderBy",
            ));
        }
        Some(other) => return Err(invalid(Api::Calendar, "orderBy", &format!("Invalid value '{other}'."))),
    }
    let zone_override = match params.get("timeZone") {
        Some(z) => {
            Some(z.parse::<Tz>().map_err(|_| invalid(Api::Calendar, "timeZone", "Invalid time zone definition."))?)
        }
        None => None,
    };
    Ok(Query {
        zone_override,
        single,
        show_deleted: params.bool(Api::Calendar, "showDeleted")?,
        time_min,
        time_max,
        order_by,
        max_results,
        max_attendees: params.int(Api::Calendar, "maxAttendees")?.map(|m| m.max(1) as usize),
    })
}

/// The `eventTypes` asked for (repeatable), checked against Google's list, sorted; empty means
/// every type (NOTES §2.8: unset returns all of them, working locations and birthdays included).
pub fn event_types(params: &Params) -> Result<Vec<String>> {
    let mut types = params.all("eventTypes");
    if let Some(bad) = types.iter().find(|t| !super::write::EVENT_TYPES.contains(&t.as_str())) {
        return Err(invalid(Api::Calendar, "eventTypes", &format!("Invalid value '{bad}'.")));
    }
    types.sort();
    types.dedup();
    Ok(types)
}

fn ms(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(|t| t.timestamp_millis())
}

fn from_ms(t: Option<i64>) -> Option<DateTime<Utc>> {
    t.and_then(DateTime::from_timestamp_millis)
}

fn key_time(t: DateTime<Utc>) -> String {
    format!("{:020}", t.timestamp_micros().max(0))
}

pub async fn list(shared: web::Data<Shared>, req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse> {
    let caller = authorize(&shared, &req, "calendar.events.list").await?;
    let owner = owner_for(&caller, &path)?;
    let params = Params::parse(req.query_string());
    let q = parse_query(&params, DEFAULT_PAGE)?;
    let types = event_types(&params)?;
    let now = shared.clock.now();
    let mut world = shared.world.lock();
    let behaviour = world.behaviour.clone();
    let codec = &shared.tokens;
    let cal = calendar_mut(&mut world, &owner, now);
    let retention = Duration::days(i64::from(behaviour.tombstone_retention_days));
    cal.purge_tombstones(now - retention);

    let sync = match params.get("syncToken") {
        None => None,
        Some(raw) => {
            if let Some(p) = NOT_WITH_SYNC_TOKEN.iter().find(|p| params.has(p)) {
                return Err(invalid(
                    Api::Calendar,
                    p,
                    &format!("The parameter {p} cannot be used together with syncToken."),
                ));
            }
            if q.show_deleted == Some(false) {
                return Err(invalid(
                    Api::Calendar,
                    "showDeleted",
                    "showDeleted=false cannot be used together with syncToken: deletions are always included.",
                ));
            }
            let tok: SyncToken = codec
                .open("cal-sync", raw)
                .filter(|t: &SyncToken| t.c == owner)
                .ok_or_else(|| invalid(Api::Calendar, "syncToken", "Invalid sync token value."))?;
            if tok.e != cal.epoch || tok.i < (now - retention).timestamp_millis() {
                return Err(GoogleError::calendar_at(
                    410,
                    "calendar",
                    "fullSyncRequired",
                    "Sync token is no longer valid, a full sync is required.",
                    "parameter",
                    "syncToken",
                ));
            }
            if tok.f != q.single {
                return Err(invalid(
                    Api::Calendar,
                    "singleEvents",
                    "singleEvents must have the value it had when the syncToken was issued.",
                ));
            }
            // Google leaves another set undefined (NOTES §2.8: it needs a new full sync); the
            // fake refuses it, so a client that forgets the full sync is caught.
            if tok.t != types {
                return Err(invalid(
                    Api::Calendar,
                    "eventTypes",
                    "eventTypes must have the values they had when the syncToken was issued.",
                ));
            }
            Some(tok)
        }
    };
    let updated_min = parse_time(&params, "updatedMin")?;
    if updated_min.is_some_and(|u| u < now - retention) {
        return Err(GoogleError::calendar_at(
            410,
            "calendar",
            "updatedMinTooLongAgo",
            "The requested minimum modification time lies too far in the past.",
            "parameter",
            "updatedMin",
        ));
    }

    let fingerprint = params.fingerprint(&[&["pageToken"], STANDARD].concat());
    let page: Option<PageToken> = match params.get("pageToken") {
        None => None,
        Some(raw) => Some(
            codec
                .open("cal-page", raw)
                .filter(|p: &PageToken| p.c == owner && p.f == fingerprint)
                .ok_or_else(|| invalid(Api::Calendar, "pageToken", "Invalid page token value."))?,
        ),
    };
    let snapshot = page.as_ref().map(|p| p.snap).unwrap_or(cal.seq);
    let window = match &sync {
        Some(t) => (from_ms(t.w.0), from_ms(t.w.1)),
        None => (q.time_min, q.time_max),
    };
    let horizon = window.1.unwrap_or(now + Duration::days(i64::from(behaviour.unbounded_expansion_days)));

    let mut items: Vec<((String, String), Value)> = Vec::new();
    let filters = Filters::new(&params, updated_min)?;
    for e in cal.events.values() {
        match &sync {
            Some(tok) => {
                if e.seq <= tok.s || !filters.admits_type(e) {
                    continue;
                }
                if q.single && e.is_master() {
                    for inst in instances(cal, e, window.0, horizon) {
                        if !cal.events.contains_key(&inst.id) {
                            let v = if e.is_cancelled() {
                                inst.render_tombstone(cal, q.zone_override)
                            } else {
                                inst.render(cal, q.zone_override, q.max_attendees)
                            };
                            items.push((sort_key(&q, &inst, cal), v));
                        }
                    }
                } else {
                    let v = if e.is_cancelled() {
                        e.render_tombstone(cal, q.zone_override)
                    } else {
                        e.render(cal, q.zone_override, q.max_attendees)
                    };
                    items.push((sort_key(&q, e, cal), v));
                }
            }
            None => {
                if !filters.admit(e, &cal.owner) {
                    continue;
                }
                let show_deleted = q.show_deleted.unwrap_or(false) || updated_min.is_some();
                if q.single && e.is_master() {
                    if e.is_cancelled() && !show_deleted {
                        continue;
                    }
                    for inst in instances(cal, e, q.time_min, horizon) {
                        if !cal.events.contains_key(&inst.id) {
                            items.push((sort_key(&q, &inst, cal), inst.render(cal, q.zone_override, q.max_attendees)));
                        }
                    }
                    continue;
                }
                let live_series_exception =
                    e.recurring_event_id.as_ref().and_then(|m| cal.events.get(m)).is_some_and(|m| !m.is_cancelled());
                // A cancelled instance of a live series is listed even without showDeleted (NOTES §2.6).
                let kept_cancelled = live_series_exception && !q.single;
                if e.is_cancelled() && !show_deleted && !kept_cancelled {
                    continue;
                }
                let in_window = if e.is_master() {
                    (q.time_min.is_none() && q.time_max.is_none()) || !instances(cal, e, q.time_min, horizon).is_empty()
                } else {
                    overlaps(e, cal.zone(), q.time_min, q.time_max)
                };
                if !in_window {
                    continue;
                }
                let v = if e.is_cancelled() && !show_deleted {
                    e.render_tombstone(cal, q.zone_override)
                } else {
                    e.render(cal, q.zone_override, q.max_attendees)
                };
                items.push((sort_key(&q, e, cal), v));
            }
        }
    }
    items.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(after) = page.as_ref().and_then(|p| p.after.as_ref()) {
        items.retain(|(k, _)| k > after);
    }

    let short_now = behaviour.short_pages && !page.as_ref().is_some_and(|p| p.short) && !items.is_empty();
    let take = if short_now { 0 } else { q.max_results };
    let more = items.len() > take;
    let last_key = if take == 0 {
        page.as_ref().and_then(|p| p.after.clone())
    } else {
        items.get(take.saturating_sub(1)).map(|(k, _)| k.clone())
    };
    items.truncate(take);

    let mut body = list_envelope(cal, q.zone_override);
    body["items"] = Value::Array(items.into_iter().map(|(_, v)| v).collect());
    if more {
        let token = PageToken {
            c: owner.clone(),
            f: fingerprint,
            snap: snapshot,
            after: last_key,
            short: page.as_ref().is_some_and(|p| p.short) || short_now,
        };
        body["nextPageToken"] = json!(codec.seal("cal-page", &token));
    } else if filters.allows_sync_token {
        let token = SyncToken {
            c: owner.clone(),
            s: snapshot,
            e: cal.epoch,
            f: q.single,
            i: now.timestamp_millis(),
            w: sync.as_ref().map(|t| t.w).unwrap_or((ms(q.time_min), ms(q.time_max))),
            t: types,
        };
        body["nextSyncToken"] = json!(codec.seal("cal-sync", &token));
    }
    Ok(HttpResponse::Ok().json(body))
}

fn list_envelope(cal: &Calendar, zone_override: Option<Tz>) -> Value {
    json!({
        "kind": "calendar#events",
        "etag": cal.etag(),
        "summary": cal.owner,
        "description": "",
        "updated": google_timestamp(cal.updated),
        "timeZone": zone_override.map(|z| z.name().to_owned()).unwrap_or_else(|| cal.time_zone.clone()),
        "accessRole": "owner",
        "defaultReminders": [{ "method": "popup", "minutes": 10 }],
    })
}

fn sort_key(q: &Query, e: &Event, cal: &Calendar) -> (String, String) {
    let primary = match q.order_by.as_deref() {
        Some("startTime") => key_time(e.start.instant_in(cal.zone())),
        Some("updated") => key_time(e.updated),
        _ => String::new(),
    };
    (primary, e.id.clone())
}

fn overlaps(e: &Event, zone: Tz, min: Option<DateTime<Utc>>, max: Option<DateTime<Utc>>) -> bool {
    let start = e.start.instant_in(zone);
    let end = e.end.instant_in(zone);
    min.is_none_or(|m| end > m) && max.is_none_or(|m| start < m)
}

/// The unmodified instances of a series overlapping `[from, until)`.
fn instances(_cal: &Calendar, master: &Event, from: Option<DateTime<Utc>>, until: DateTime<Utc>) -> Vec<Event> {
    recurrence::expand(&master.start, &master.end, &master.recurrence, from, until)
        .unwrap_or_default()
        .into_iter()
        .map(|o| instance_of(master, o.start, o.end))
        .collect()
}

/// The filters of a full listing, and whether its result may end in a sync token.
struct Filters {
    q: Option<String>,
    ical_uid: Option<String>,
    updated_min: Option<DateTime<Utc>>,
    event_types: Vec<String>,
    private_props: Vec<(String, String)>,
    shared_props: Vec<(String, String)>,
    allows_sync_token: bool,
}

impl Filters {
    fn new(params: &Params, updated_min: Option<DateTime<Utc>>) -> Result<Self> {
        let props = |name: &str| -> Result<Vec<(String, String)>> {
            params
                .all(name)
                .into_iter()
                .map(|p| {
                    p.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .ok_or_else(|| invalid(Api::Calendar, name, "Invalid extended property constraint."))
                })
                .collect()
        };
        Ok(Filters {
            q: params.get("q").map(str::to_lowercase),
            ical_uid: params.get("iCalUID").map(str::to_owned),
            updated_min,
            event_types: event_types(params)?,
            private_props: props("privateExtendedProperty")?,
            shared_props: props("sharedExtendedProperty")?,
            allows_sync_token: !NOT_WITH_SYNC_TOKEN.iter().any(|p| *p != "timeMin" && *p != "timeMax" && params.has(p)),
        })
    }

    /// Whether the event is of a type asked for: on full and incremental listings alike,
    /// deletions included.
    fn admits_type(&self, e: &Event) -> bool {
        self.event_types.is_empty() || self.event_types.iter().any(|t| t == e.event_type())
    }

    fn admit(&self, e: &Event, owner: &str) -> bool {
        let text = |k: &str| e.fields.get(k).and_then(Value::as_str).unwrap_or("").to_lowercase();
        if let Some(q) = &self.q {
            // What Google's `q` searches: summary, description, location, attendees' names and
            // addresses, the organizer (the calendar's owner here), working-location labels.
            let json_text = |k: &str| e.fields.get(k).map(|a| a.to_string().to_lowercase()).unwrap_or_default();
            let haystack = [
                text("summary"),
                text("description"),
                text("location"),
                json_text("attendees"),
                json_text("workingLocationProperties"),
                owner.to_lowercase(),
            ];
            if !q.split_whitespace().all(|w| haystack.iter().any(|h| h.contains(w))) {
                return false;
            }
        }
        if self.ical_uid.as_ref().is_some_and(|u| *u != e.ical_uid) {
            return false;
        }
        if self.updated_min.is_some_and(|m| e.updated < m) {
            return false;
        }
        if !self.admits_type(e) {
            return false;
        }
        let has = |scope: &str, (k, v): &(String, String)| {
            e.fields.get("extendedProperties").and_then(|p| p.get(scope)).and_then(|p| p.get(k)).and_then(Value::as_str)
                == Some(v.as_str())
        };
        self.private_props.iter().all(|p| has("private", p)) && self.shared_props.iter().all(|p| has("shared", p))
    }
}

pub async fn instances_handler(
    shared: web::Data<Shared>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse> {
    let caller = authorize(&shared, &req, "calendar.events.instances").await?;
    let (calendar_id, event_id) = path.into_inner();
    let owner = owner_for(&caller, &calendar_id)?;
    let params = Params::parse(req.query_string());
    let q = parse_query(&params, DEFAULT_PAGE)?;
    let original_start = parse_time(&params, "originalStart")?;
    let now = shared.clock.now();
    let mut world = shared.world.lock();
    let behaviour: Behaviour = world.behaviour.clone();
    let codec = &shared.tokens;
    let cal = calendar_mut(&mut world, &owner, now);
    let master = cal.events.get(&event_id).ok_or_else(GoogleError::calendar_not_found)?;
    if !master.is_master() {
        return Err(GoogleError::calendar(400, "global", "invalid", "The requested event is not a recurring event."));
    }
    let show_deleted = q.show_deleted.unwrap_or(false);
    let horizon = q.time_max.unwrap_or(now + Duration::days(i64::from(behaviour.unbounded_expansion_days)));
    let mut all: Vec<Event> = instances(cal, master, q.time_min, horizon)
        .into_iter()
        .map(|i| cal.events.get(&i.id).cloned().unwrap_or(i))
        .collect();
    // Exceptions moved into the window from an original slot outside it.
    for e in cal.events.values() {
        if e.recurring_event_id.as_deref() == Some(event_id.as_str())
            && !all.iter().any(|i| i.id == e.id)
            && overlaps(e, cal.zone(), q.time_min, q.time_max)
        {
            all.push(e.clone());
        }
    }
    all.retain(|e| show_deleted || (!e.is_cancelled() && !master.is_cancelled()));
    if let Some(os) = original_start {
        all.retain(|e| e.original_start.as_ref().is_some_and(|o| o.instant_utc() == os));
    }
    let fingerprint = params.fingerprint(&[&["pageToken"], STANDARD].concat());
    let page: Option<PageToken> = match params.get("pageToken") {
        None => None,
        Some(raw) => Some(
            codec
                .open("cal-page", raw)
                .filter(|p: &PageToken| p.c == owner && p.f == fingerprint)
                .ok_or_else(|| invalid(Api::Calendar, "pageToken", "Invalid page token value."))?,
        ),
    };
    let mut items: Vec<((String, String), Value)> = all
        .iter()
        .map(|e| {
            let key = (key_time(e.original_start.as_ref().unwrap_or(&e.start).instant_in(cal.zone())), e.id.clone());
            let v = if e.is_cancelled() {
                e.render_tombstone(cal, q.zone_override)
            } else {
                e.render(cal, q.zone_override, q.max_attendees)
            };
            (key, v)
        })
        .collect();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(after) = page.as_ref().and_then(|p| p.after.as_ref()) {
        items.retain(|(k, _)| k > after);
    }
    let more = items.len() > q.max_results;
    items.truncate(q.max_results);
    let mut body = list_envelope(cal, q.zone_override);
    if more {
        let token = PageToken {
            c: owner,
            f: fingerprint,
            snap: cal.seq,
            after: items.last().map(|(k, _)| k.clone()),
            short: true,
        };
        body["nextPageToken"] = json!(codec.seal("cal-page", &token));
    }
    body["items"] = Value::Array(items.into_iter().map(|(_, v)| v).collect());
    Ok(HttpResponse::Ok().json(body))
}
