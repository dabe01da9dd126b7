//! Calendar events as gwsync keeps them: what presence needs and nothing more (no
//! descriptions, no attendees' addresses). Parsed leniently from Google's JSON: unknown fields
//! and unknown `eventType` values are fine; an item that cannot be understood is skipped by the
//! caller, never fatal to a sync.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The `eventTypes` gwsync asks Google for on `events.list` and `events.watch`, sorted: the
/// types that can switch a profile. Since March 2024 an unset `eventTypes` returns every type
/// (NOTES §2.8), working locations and birthdays too; those never switch a profile, so gwsync
/// neither fetches nor stores them. A calendar synced with another set is synced in full again.
pub const SYNCED_EVENT_TYPES: [&str; 3] = ["default", "focusTime", "outOfOffice"];

/// Event types whose titles Google writes ("Home", "Office", a contact's name, a flight from an
/// email), not the user: they never switch a profile, whatever their title.
pub const NEVER_SWITCHING_EVENT_TYPES: [&str; 3] = ["workingLocation", "birthday", "fromGmail"];

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Confirmed,
    Tentative,
    Cancelled,
}

/// A start or end: an instant (with the IANA zone it was given in, if any), or an all-day date.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EventTime {
    DateTime { at: DateTime<Utc>, tz: Option<String> },
    Date(NaiveDate),
}

impl EventTime {
    /// Parses Google's `EventDateTime`.
    pub fn from_google(v: &Value) -> Option<EventTime> {
        let tz = v["timeZone"].as_str().filter(|s| !s.is_empty()).map(str::to_owned);
        if let Some(d) = v["date"].as_str() {
            return NaiveDate::parse_from_str(d, "%Y-%m-%d").ok().map(EventTime::Date);
        }
        let dt = v["dateTime"].as_str()?;
        if let Ok(parsed) = DateTime::parse_from_rfc3339(dt) {
            return Some(EventTime::DateTime { at: parsed.with_timezone(&Utc), tz });
        }
        // A local time needs its zone.
        let local = NaiveDateTime::parse_from_str(dt, "%Y-%m-%dT%H:%M:%S").ok()?;
        let zone: Tz = tz.as_deref()?.parse().ok()?;
        let at = zone.from_local_datetime(&local).earliest()?.with_timezone(&Utc);
        Some(EventTime::DateTime { at, tz })
    }

    /// The instant, with all-day dates starting at midnight in `zone` (the calendar's).
    pub fn instant_in(&self, zone: Tz) -> DateTime<Utc> {
        match self {
            EventTime::DateTime { at, .. } => *at,
            EventTime::Date(d) => {
                let midnight = d.and_hms_opt(0, 0, 0).unwrap_or_default();
                zone.from_local_datetime(&midnight)
                    .earliest()
                    .map(|t| t.with_timezone(&Utc))
                    .unwrap_or_else(|| midnight.and_utc())
            }
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredEvent {
    pub id: String,
    pub status: Status,
    pub summary: Option<String>,
    pub start: Option<EventTime>,
    pub end: Option<EventTime>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recurrence: Vec<String>,
    pub recurring_event_id: Option<String>,
    pub original_start: Option<EventTime>,
    /// `transparent` events show the user as available.
    pub transparent: bool,
    /// Google's `eventType` (`default`, `outOfOffice`, `focusTime`, …; unknown values kept).
    pub event_type: String,
    /// `default`, `public`, `private`, `confidential`.
    pub visibility: String,
    /// The user's own answer (`accepted`, `declined`, …) if they are an attendee.
    pub self_response: Option<String>,
    pub updated: Option<DateTime<Utc>>,
}

impl StoredEvent {
    /// Parses an item of `events.list`. `Err` says what is wrong with it.
    pub fn from_google(v: &Value) -> Result<StoredEvent, String> {
        let id = v["id"].as_str().filter(|s| !s.is_empty() && s.len() <= 1024).ok_or("no id")?.to_owned();
        let status = match v["status"].as_str() {
            Some("cancelled") => Status::Cancelled,
            Some("tentative") => Status::Tentative,
            _ => Status::Confirmed,
        };
        let time = |name: &str| -> Result<Option<EventTime>, String> {
            match &v[name] {
                Value::Null => Ok(None),
                t => EventTime::from_google(t).map(Some).ok_or_else(|| format!("unreadable {name}")),
            }
        };
        let start = time("start")?;
        let end = time("end")?;
        if status != Status::Cancelled && (start.is_none() || end.is_none()) {
            return Err("no start or end".into());
        }
        let self_response = v["attendees"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["self"].as_bool() == Some(true)))
            .and_then(|x| x["responseStatus"].as_str())
            .map(str::to_owned);
        Ok(StoredEvent {
            id,
            status,
            summary: v["summary"].as_str().map(str::to_owned),
            start,
            end,
            recurrence: v["recurrence"]
                .as_array()
                .map(|r| r.iter().filter_map(|l| l.as_str().map(str::to_owned)).collect())
                .unwrap_or_default(),
            recurring_event_id: v["recurringEventId"].as_str().map(str::to_owned),
            original_start: time("originalStartTime")?,
            transparent: v["transparency"].as_str() == Some("transparent"),
            event_type: v["eventType"].as_str().unwrap_or("default").to_owned(),
            visibility: v["visibility"].as_str().unwrap_or("default").to_owned(),
            self_response,
            updated: v["updated"]
                .as_str()
                .and_then(|u| DateTime::parse_from_rfc3339(u).ok())
                .map(|u| u.with_timezone(&Utc)),
        })
    }

    pub fn is_cancelled(&self) -> bool {
        self.status == Status::Cancelled
    }

    /// A series master (it has rules and is not itself an instance).
    pub fn is_series(&self) -> bool {
        !self.recurrence.is_empty() && self.recurring_event_id.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn googles_shapes_parse() {
        let e = StoredEvent::from_google(&json!({
            "id": "abc123", "status": "confirmed", "summary": "Lunch",
            "start": {"dateTime": "2026-11-26T12:00:00+01:00", "timeZone": "Europe/Stockholm"},
            "end": {"dateTime": "2026-11-26T13:00:00+01:00"},
            "attendees": [{"email": "x@y", "responseStatus": "accepted"}, {"email": "me@y", "self": true, "responseStatus": "declined"}],
            "eventType": "someFutureType", "transparency": "transparent", "brandNewField": {"x": 1}
        }))
        .unwrap();
        assert_eq!(
            e.start,
            Some(EventTime::DateTime {
                at: "2026-11-26T11:00:00Z".parse().unwrap(),
                tz: Some("Europe/Stockholm".into())
            })
        );
        assert_eq!(
            (e.self_response.as_deref(), e.event_type.as_str(), e.transparent),
            (Some("declined"), "someFutureType", true)
        );
        let allday = StoredEvent::from_google(
            &json!({"id": "d1", "start": {"date": "2026-12-24"}, "end": {"date": "2026-12-27"}}),
        )
        .unwrap();
        assert_eq!(allday.start, Some(EventTime::Date(NaiveDate::from_ymd_opt(2026, 12, 24).unwrap())));
        let stub = StoredEvent::from_google(&json!({"id": "s_20261201T090000Z", "status": "cancelled", "recurringEventId": "s", "originalStartTime": {"dateTime": "2026-12-01T10:00:00+01:00"}})).unwrap();
        assert!(stub.is_cancelled() && stub.start.is_none());
        assert!(
            StoredEvent::from_google(
                &json!({"id": "x", "start": {"dateTime": "garbage"}, "end": {"date": "2026-01-01"}})
            )
            .is_err()
        );
        assert!(StoredEvent::from_google(&json!({"summary": "no id"})).is_err());
        assert!(StoredEvent::from_google(&json!({"id": "x"})).is_err(), "a live event needs times");
    }
}
