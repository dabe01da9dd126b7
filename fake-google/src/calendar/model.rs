//! Calendar data as the fake keeps it, and its JSON forms.
//!
//! An event keeps its times parsed (`When`) and every other writable field as JSON; rendering
//! puts the times back in the shape Google returns (RFC 3339 with the offset of the zone the
//! response is in, or a bare date). Every change to a calendar takes the next number of its
//! change counter; sync tokens are positions in that counter.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value, json};

use crate::clock::google_timestamp;
use crate::errors::GoogleError;

/// A start or end: an instant (with the zone it was given in, if any) or an all-day date.
#[derive(Debug, Clone, PartialEq)]
pub enum When {
    Timed { at: DateTime<Utc>, tz: Option<String> },
    AllDay(NaiveDate),
}

impl When {
    /// The instant this time stands for; all-day dates begin at midnight UTC here (callers that
    /// care about the calendar's zone use `instant_in`).
    pub fn instant_utc(&self) -> DateTime<Utc> {
        match self {
            When::Timed { at, .. } => *at,
            When::AllDay(d) => d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc(),
        }
    }

    /// The instant, with all-day dates at midnight in `zone` (how Google filters all-day events
    /// by `timeMin`/`timeMax`).
    pub fn instant_in(&self, zone: Tz) -> DateTime<Utc> {
        match self {
            When::Timed { at, .. } => *at,
            When::AllDay(d) => {
                let midnight = d.and_hms_opt(0, 0, 0).unwrap_or_default();
                zone.from_local_datetime(&midnight)
                    .earliest()
                    .map(|t| t.with_timezone(&Utc))
                    .unwrap_or_else(|| midnight.and_utc())
            }
        }
    }

    /// Instance-id suffix: `20260615T090000Z` (UTC) for timed, `20260902` for all-day.
    pub fn id_suffix(&self) -> String {
        match self {
            When::Timed { at, .. } => at.format("%Y%m%dT%H%M%SZ").to_string(),
            When::AllDay(d) => d.format("%Y%m%d").to_string(),
        }
    }

    pub fn is_all_day(&self) -> bool {
        matches!(self, When::AllDay(_))
    }

    /// The `EventDateTime` JSON, times shown in `zone` unless the time carries its own.
    pub fn render(&self, zone: Tz, force_zone: bool) -> Value {
        match self {
            When::AllDay(d) => json!({ "date": d.format("%Y-%m-%d").to_string() }),
            When::Timed { at, tz } => {
                let shown: Tz =
                    if force_zone { zone } else { tz.as_deref().and_then(|t| t.parse().ok()).unwrap_or(zone) };
                let mut v = json!({ "dateTime": format_in(*at, shown) });
                if let Some(tz) = tz {
                    v["timeZone"] = json!(tz);
                }
                v
            }
        }
    }

    /// Parses an `EventDateTime`. `which` is "start" or "end", for the error messages.
    pub fn parse(v: &Value, which: &str) -> Result<When, GoogleError> {
        let invalid = || GoogleError::calendar(400, "global", "invalid", &format!("Invalid {which} time."));
        let obj = v.as_object().ok_or_else(invalid)?;
        let date = obj.get("date").and_then(Value::as_str);
        let date_time = obj.get("dateTime").and_then(Value::as_str);
        let tz = match obj.get("timeZone") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                s.parse::<Tz>().map_err(|_| {
                    GoogleError::calendar(
                        400,
                        "global",
                        "timeZoneInvalid",
                        &format!("Invalid time zone definition for {which} time."),
                    )
                })?;
                Some(s.clone())
            }
            Some(_) => return Err(invalid()),
        };
        match (date, date_time) {
            (Some(_), Some(_)) | (None, None) => Err(if date.is_none() {
                GoogleError::calendar_required(&format!("Missing {which} time."), None)
            } else {
                invalid()
            }),
            (Some(d), None) => NaiveDate::parse_from_str(d, "%Y-%m-%d").map(When::AllDay).map_err(|_| invalid()),
            (None, Some(dt)) => {
                if let Ok(parsed) = DateTime::parse_from_rfc3339(dt) {
                    return Ok(When::Timed { at: parsed.with_timezone(&Utc), tz });
                }
                // No offset: the time zone field says where it is.
                let local = NaiveDateTime::parse_from_str(dt, "%Y-%m-%dT%H:%M:%S")
                    .or_else(|_| NaiveDateTime::parse_from_str(dt, "%Y-%m-%dT%H:%M:%S%.f"))
                    .map_err(|_| invalid())?;
                let zone: Tz = tz.as_deref().and_then(|t| t.parse().ok()).ok_or_else(|| {
                    GoogleError::calendar_required(&format!("Missing time zone definition for {which} time."), None)
                })?;
                let at = zone.from_local_datetime(&local).earliest().ok_or_else(invalid)?;
                Ok(When::Timed { at: at.with_timezone(&Utc), tz })
            }
        }
    }
}

/// RFC 3339 in `zone`, `Z` for UTC as Google writes it.
pub fn format_in(at: DateTime<Utc>, zone: Tz) -> String {
    if zone == chrono_tz::UTC {
        at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    } else {
        at.with_timezone(&zone).to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
    }
}

#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub status: String,
    /// Every other writable field, as the client sent it (validated).
    pub fields: Map<String, Value>,
    pub start: When,
    pub end: When,
    pub recurrence: Vec<String>,
    pub recurring_event_id: Option<String>,
    pub original_start: Option<When>,
    pub ical_uid: String,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    /// Position in the calendar's change counter of this event's last change.
    pub seq: u64,
    /// iCalendar SEQUENCE: bumped when the time or the rule changes.
    pub sequence: i64,
}

impl Event {
    pub fn is_cancelled(&self) -> bool {
        self.status == "cancelled"
    }

    pub fn is_master(&self) -> bool {
        !self.recurrence.is_empty() && self.recurring_event_id.is_none()
    }

    pub fn etag(&self) -> String {
        format!("\"{}\"", self.updated.timestamp_micros() * 2)
    }

    pub fn event_type(&self) -> &str {
        self.fields.get("eventType").and_then(Value::as_str).unwrap_or("default")
    }

    /// The full resource as events.get returns it.
    pub fn render(&self, cal: &Calendar, zone_override: Option<Tz>, max_attendees: Option<usize>) -> Value {
        let zone = zone_override.unwrap_or(cal.zone());
        let force = zone_override.is_some();
        let mut v = Map::new();
        v.insert("kind".into(), json!("calendar#event"));
        v.insert("etag".into(), json!(self.etag()));
        v.insert("id".into(), json!(self.id));
        v.insert("status".into(), json!(self.status));
        v.insert("htmlLink".into(), json!(html_link(&self.id, &cal.owner)));
        v.insert("created".into(), json!(google_timestamp(self.created)));
        v.insert("updated".into(), json!(google_timestamp(self.updated)));
        let me = json!({ "email": cal.owner, "self": true });
        v.insert("creator".into(), me.clone());
        v.insert("organizer".into(), me);
        for (k, val) in &self.fields {
            v.insert(k.clone(), val.clone());
        }
        v.insert("start".into(), self.start.render(zone, force));
        v.insert("end".into(), self.end.render(zone, force));
        if !self.recurrence.is_empty() {
            v.insert("recurrence".into(), json!(self.recurrence));
        }
        if let Some(r) = &self.recurring_event_id {
            v.insert("recurringEventId".into(), json!(r));
        }
        if let Some(o) = &self.original_start {
            v.insert("originalStartTime".into(), o.render(zone, force));
        }
        v.insert("iCalUID".into(), json!(self.ical_uid));
        v.insert("sequence".into(), json!(self.sequence));
        if !v.contains_key("reminders") {
            v.insert("reminders".into(), json!({ "useDefault": true }));
        }
        if !v.contains_key("eventType") {
            v.insert("eventType".into(), json!("default"));
        }
        if let (Some(max), Some(Value::Array(attendees))) = (max_attendees, v.get_mut("attendees"))
            && attendees.len() > max
        {
            attendees.truncate(max);
            v.insert("attendeesOmitted".into(), json!(true));
        }
        Value::Object(v)
    }

    /// What an incremental sync returns for a cancelled item: next to nothing. A cancelled
    /// instance of a series keeps what identifies it.
    pub fn render_tombstone(&self, cal: &Calendar, zone_override: Option<Tz>) -> Value {
        let mut v = json!({
            "kind": "calendar#event",
            "etag": self.etag(),
            "id": self.id,
            "status": "cancelled",
        });
        if let (Some(r), Some(o)) = (&self.recurring_event_id, &self.original_start) {
            let zone = zone_override.unwrap_or(cal.zone());
            v["recurringEventId"] = json!(r);
            v["originalStartTime"] = o.render(zone, zone_override.is_some());
        }
        v
    }

    /// The writable form of this event, which patch merges into.
    pub fn writable(&self, cal: &Calendar) -> Map<String, Value> {
        let mut m = self.fields.clone();
        m.insert("status".into(), json!(self.status));
        m.insert("start".into(), self.start.render(cal.zone(), false));
        m.insert("end".into(), self.end.render(cal.zone(), false));
        if !self.recurrence.is_empty() {
            m.insert("recurrence".into(), json!(self.recurrence));
        }
        m
    }
}

fn html_link(id: &str, owner: &str) -> String {
    use base64::Engine;
    let eid = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{id} {owner}"));
    format!("https://www.google.com/calendar/event?eid={eid}")
}

#[derive(Debug, Clone)]
pub struct Calendar {
    /// The calendar's id: its owner's address for a primary calendar, `c_…@group.calendar.google.com`
    /// for a secondary one.
    pub owner: String,
    /// A user's own calendar. Status events (out of office, focus time, working location) live
    /// only there (NOTES §2.8).
    pub primary: bool,
    pub time_zone: String,
    /// What events.watch returns as `resourceId`: stable for the calendar's life.
    pub resource_id: String,
    pub seq: u64,
    /// Bumped when sync tokens are invalidated; older tokens get 410.
    pub epoch: u32,
    pub updated: DateTime<Utc>,
    pub events: BTreeMap<String, Event>,
}

impl Calendar {
    pub fn new(owner: &str, time_zone: &str, now: DateTime<Utc>) -> Self {
        Calendar {
            owner: owner.to_owned(),
            primary: true,
            time_zone: time_zone.to_owned(),
            resource_id: random_resource_id(),
            seq: 0,
            epoch: 0,
            updated: now,
            events: BTreeMap::new(),
        }
    }

    pub fn zone(&self) -> Tz {
        self.time_zone.parse().unwrap_or(chrono_tz::UTC)
    }

    /// Takes the next change number.
    pub fn bump(&mut self, now: DateTime<Utc>) -> u64 {
        self.seq += 1;
        self.updated = now;
        self.seq
    }

    pub fn etag(&self) -> String {
        format!("\"{}\"", self.updated.timestamp_micros() * 2 + 1)
    }

    /// Forgets cancelled events older than `before`, except cancelled instances of live series
    /// (they are what keeps the instance cancelled).
    pub fn purge_tombstones(&mut self, before: DateTime<Utc>) {
        let live_masters: std::collections::HashSet<String> =
            self.events.values().filter(|e| e.is_master() && !e.is_cancelled()).map(|e| e.id.clone()).collect();
        self.events.retain(|_, e| {
            !(e.is_cancelled()
                && e.updated < before
                && e.recurring_event_id.as_ref().is_none_or(|m| !live_masters.contains(m)))
        });
    }
}

/// 27 characters of base64url, like real resource ids.
fn random_resource_id() -> String {
    use rand::RngExt;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    (0..27).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// A new event id: 26 base32hex characters, like Google's.
pub fn new_event_id() -> String {
    use rand::RngExt;
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuv";
    let mut rng = rand::rng();
    (0..26).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// Client-chosen ids: base32hex characters, 5 to 1024 of them.
pub fn is_valid_event_id(id: &str) -> bool {
    (5..=1024).contains(&id.len()) && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'v'))
}

/// Splits an instance id into its series id and original start.
pub fn parse_instance_id(id: &str) -> Option<(&str, When)> {
    let (master, suffix) = id.rsplit_once('_')?;
    if let Ok(t) = NaiveDateTime::parse_from_str(suffix, "%Y%m%dT%H%M%SZ") {
        return Some((master, When::Timed { at: t.and_utc(), tz: None }));
    }
    if suffix.len() == 8
        && let Ok(d) = NaiveDate::parse_from_str(suffix, "%Y%m%d")
    {
        return Some((master, When::AllDay(d)));
    }
    None
}
