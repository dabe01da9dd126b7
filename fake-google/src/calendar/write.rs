//! Validating what clients write into events (insert, update, patch), with Google's messages.
//!
//! Event types (NOTES §2.8; Google's calendar-status and event-types guides): out of office,
//! focus time and working location exist only on primary calendars; out of office and focus
//! time are timed, opaque, and carry their properties object (even empty); a working location is
//! public, transparent, carries its `type`, and spans one day if all-day; a birthday is one
//! all-day day recurring yearly, private and transparent; `fromGmail` events cannot be created.
//! The type never changes. Where Google's exact wording is known it is used ("An out of office
//! event must not have a description." is observed); the rest follow its style.

use serde_json::{Map, Value, json};

use super::model::When;
use crate::errors::GoogleError;
use crate::recurrence::{self, RecurrenceError};

/// Writable Event fields kept as JSON (start, end, status, recurrence and id are handled apart;
/// output-only fields such as `creator` or `updated` are ignored when sent).
const WRITABLE: &[&str] = &[
    "summary",
    "description",
    "location",
    "colorId",
    "transparency",
    "visibility",
    "attendees",
    "reminders",
    "eventType",
    "outOfOfficeProperties",
    "focusTimeProperties",
    "workingLocationProperties",
    "birthdayProperties",
    "extendedProperties",
    "source",
    "attachments",
    "anyoneCanAddSelf",
    "guestsCanInviteOthers",
    "guestsCanModify",
    "guestsCanSeeOtherGuests",
    "conferenceData",
    "endTimeUnspecified",
    "gadget",
    "locked",
    "privateCopy",
    "hangoutLink",
];

pub const EVENT_TYPES: &[&str] = &["default", "outOfOffice", "focusTime", "workingLocation", "birthday", "fromGmail"];
const AUTO_DECLINE_MODES: &[&str] =
    &["declineNone", "declineAllConflictingInvitations", "declineOnlyNewConflictingInvitations"];

pub struct Parts {
    pub status: String,
    pub fields: Map<String, Value>,
    pub start: When,
    pub end: When,
    pub recurrence: Vec<String>,
}

/// JSON merge as Google's patch does it: objects merge field by field, `null` clears, anything
/// else (arrays included) replaces.
pub fn merge(base: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        match (base.get_mut(k), v) {
            (_, Value::Null) => {
                base.remove(k);
            }
            (Some(Value::Object(b)), Value::Object(p)) => merge(b, p),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Google's body for an empty time range (its errors guide's own example).
pub fn time_range_empty() -> GoogleError {
    GoogleError::calendar_at(
        400,
        "calendar",
        "timeRangeEmpty",
        "The specified time range is empty.",
        "parameter",
        "timeMax",
    )
}

fn invalid(message: &str) -> GoogleError {
    GoogleError::calendar(400, "global", "invalid", message)
}

fn enum_field(body: &Map<String, Value>, name: &str, allowed: &[&str]) -> Result<Option<String>, GoogleError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if allowed.contains(&s.as_str()) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(&format!("Invalid value for: {name}"))),
    }
}

/// Validates the whole writable form of an event for calendar `owner`.
pub fn parse(body: &Map<String, Value>, owner: &str) -> Result<Parts, GoogleError> {
    let start = When::parse(body.get("start").unwrap_or(&Value::Null), "start").map_err(|e| {
        if body.get("start").is_none() { GoogleError::calendar_required("Missing start time.", None) } else { e }
    })?;
    let end = When::parse(body.get("end").unwrap_or(&Value::Null), "end").map_err(|e| {
        if body.get("end").is_none() { GoogleError::calendar_required("Missing end time.", None) } else { e }
    })?;
    match (&start, &end) {
        (When::Timed { at: s, .. }, When::Timed { at: e, .. }) if e < s => {
            return Err(time_range_empty());
        }
        (When::AllDay(s), When::AllDay(e)) if e <= s => {
            return Err(time_range_empty());
        }
        (When::Timed { .. }, When::AllDay(_)) | (When::AllDay(_), When::Timed { .. }) => {
            return Err(invalid("Start and end times must either both be date or both be dateTime."));
        }
        _ => {}
    }

    let recurrence: Vec<String> = match body.get("recurrence") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(lines)) => lines
            .iter()
            .map(|l| l.as_str().map(str::to_owned).ok_or_else(|| invalid("Invalid recurrence rule.")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid("Invalid recurrence rule.")),
    };
    if !recurrence.is_empty() {
        recurrence::validate(&start, &recurrence).map_err(|e| match e {
            RecurrenceError::MissingTimeZone => {
                GoogleError::calendar_required("Missing time zone definition for start time.", None)
            }
            RecurrenceError::Invalid => invalid("Invalid recurrence rule."),
        })?;
    }

    let status =
        enum_field(body, "status", &["confirmed", "tentative", "cancelled"])?.unwrap_or_else(|| "confirmed".into());
    let transparency = enum_field(body, "transparency", &["opaque", "transparent"])?;
    let visibility = enum_field(body, "visibility", &["default", "public", "private", "confidential"])?;
    enum_field(body, "eventType", EVENT_TYPES)?;
    for text in ["summary", "description", "location", "colorId"] {
        if body.get(text).is_some_and(|v| !v.is_string() && !v.is_null()) {
            return Err(invalid(&format!("Invalid value for: {text}")));
        }
    }

    let mut fields = Map::new();
    for &name in WRITABLE {
        if let Some(v) = body.get(name).filter(|v| !v.is_null()) {
            fields.insert(name.to_owned(), v.clone());
        }
    }
    // Google leaves the defaults out of the resource: absent transparency means opaque.
    if transparency.as_deref() == Some("opaque") {
        fields.remove("transparency");
    }
    if visibility.as_deref() == Some("default") {
        fields.remove("visibility");
    }
    if let Some(attendees) = fields.get("attendees").cloned() {
        fields.insert("attendees".into(), normalise_attendees(&attendees, owner)?);
    }
    Ok(Parts { status, fields, start, end, recurrence })
}

fn type_restriction(message: &str) -> GoogleError {
    GoogleError::calendar(400, "calendar", "eventTypeRestriction", message)
}

/// A type's name as Google's messages write it.
fn type_name(event_type: &str) -> &'static str {
    match event_type {
        "outOfOffice" => "out of office",
        "focusTime" => "focus time",
        "workingLocation" => "working location",
        "birthday" => "birthday",
        "fromGmail" => "Gmail",
        _ => "default",
    }
}

/// The event's type (`default` when unset).
pub fn event_type_of(fields: &Map<String, Value>) -> &str {
    fields.get("eventType").and_then(Value::as_str).unwrap_or("default")
}

/// An update keeps the type the event was created with: unset means unchanged, another one is
/// refused.
pub fn keep_event_type(existing: &str, parts: &mut Parts) -> Result<(), GoogleError> {
    match parts.fields.get("eventType").and_then(Value::as_str) {
        None if existing != "default" => {
            parts.fields.insert("eventType".into(), json!(existing));
            Ok(())
        }
        Some(t) if t != existing => Err(type_restriction("The event type cannot be changed.")),
        _ => Ok(()),
    }
}

/// Whether an all-day event covers exactly one day.
fn one_day(parts: &Parts) -> bool {
    match (&parts.start, &parts.end) {
        (When::AllDay(s), When::AllDay(e)) => e.signed_duration_since(*s).num_days() == 1,
        _ => false,
    }
}

/// The rules of the event's type; `creating` for events.insert (an update of a Gmail event
/// is Google's business, not the fake's).
pub fn check_event_type(parts: &Parts, primary: bool, creating: bool) -> Result<(), GoogleError> {
    let event_type = event_type_of(&parts.fields);
    let fields = &parts.fields;
    let field = |name: &str| fields.get(name).and_then(Value::as_str);
    let all_day = parts.start.is_all_day();
    match event_type {
        "fromGmail" if creating => Err(type_restriction("Events from Gmail cannot be created through the API.")),
        "outOfOffice" | "focusTime" | "workingLocation" if !primary => {
            let name = type_name(event_type);
            let mut capital = name.to_owned();
            capital[..1].make_ascii_uppercase();
            Err(type_restriction(&format!("{capital} events can only be created on the primary calendar.")))
        }
        "outOfOffice" | "focusTime" => {
            let (props_field, article) = if event_type == "outOfOffice" {
                ("outOfOfficeProperties", "An")
            } else {
                ("focusTimeProperties", "A")
            };
            let name = type_name(event_type);
            let props = match fields.get(props_field) {
                Some(Value::Object(p)) => p,
                Some(_) => return Err(invalid(&format!("Invalid value for: {props_field}"))),
                None => return Err(GoogleError::calendar_required(&format!("Missing {props_field}."), None)),
            };
            if enum_field(props, "autoDeclineMode", AUTO_DECLINE_MODES).is_err() {
                return Err(invalid(&format!("Invalid value for: {props_field}.autoDeclineMode")));
            }
            if event_type == "focusTime" && enum_field(props, "chatStatus", &["available", "doNotDisturb"]).is_err() {
                return Err(invalid("Invalid value for: focusTimeProperties.chatStatus"));
            }
            if all_day {
                return Err(invalid(&format!("{article} {name} event cannot be an all-day event.")));
            }
            if field("transparency") == Some("transparent") {
                return Err(invalid(&format!("{article} {name} event must be opaque.")));
            }
            if event_type == "outOfOffice" {
                if field("description").is_some_and(|d| !d.is_empty()) {
                    return Err(invalid("An out of office event must not have a description."));
                }
                if fields.get("attendees").and_then(Value::as_array).is_some_and(|a| !a.is_empty()) {
                    return Err(invalid("An out of office event cannot have attendees."));
                }
            }
            Ok(())
        }
        "workingLocation" => {
            let props = fields.get("workingLocationProperties").and_then(Value::as_object);
            match props.and_then(|p| p.get("type")).and_then(Value::as_str) {
                Some("homeOffice" | "officeLocation" | "customLocation") => {}
                Some(_) => return Err(invalid("Invalid value for: workingLocationProperties.type")),
                None => {
                    return Err(GoogleError::calendar_required("Missing workingLocationProperties.type.", None));
                }
            }
            if field("visibility") != Some("public") {
                return Err(invalid("A working location event must be public."));
            }
            if field("transparency") != Some("transparent") {
                return Err(invalid("A working location event must be transparent."));
            }
            if all_day && !one_day(parts) {
                return Err(invalid("An all-day working location event must span exactly one day."));
            }
            Ok(())
        }
        "birthday" if creating => {
            if !one_day(parts) {
                return Err(invalid("A birthday event must be an all-day event spanning exactly one day."));
            }
            let yearly = parts.recurrence.len() == 1
                && parts.recurrence[0].to_ascii_uppercase().starts_with("RRULE:FREQ=YEARLY");
            if !yearly {
                return Err(invalid("A birthday event must recur yearly."));
            }
            if field("visibility") != Some("private") {
                return Err(invalid("A birthday event must be private."));
            }
            if field("transparency") != Some("transparent") {
                return Err(invalid("A birthday event must be transparent."));
            }
            match fields.get("birthdayProperties").and_then(|p| p.get("type")).and_then(Value::as_str) {
                None | Some("birthday") => Ok(()),
                Some(_) => Err(type_restriction("Only birthday events of type 'birthday' can be created.")),
            }
        }
        _ => Ok(()),
    }
}

/// Attendees need an email and a known response; the calendar's owner is marked `self`, and
/// joins as the accepted organizer if the client left them out.
fn normalise_attendees(v: &Value, owner: &str) -> Result<Value, GoogleError> {
    let list = v.as_array().ok_or_else(|| invalid("Invalid attendee list."))?;
    let mut out = Vec::with_capacity(list.len() + 1);
    let mut owner_present = false;
    for a in list {
        let mut a = a.as_object().cloned().ok_or_else(|| invalid("Invalid attendee."))?;
        let email = a
            .get("email")
            .and_then(Value::as_str)
            .filter(|e| e.contains('@'))
            .ok_or_else(|| GoogleError::calendar_required("Missing attendee email.", None))?
            .to_ascii_lowercase();
        let status = enum_field(&a, "responseStatus", &["needsAction", "declined", "tentative", "accepted"])?;
        a.insert("responseStatus".into(), json!(status.unwrap_or_else(|| "needsAction".into())));
        a.insert("email".into(), json!(email));
        if email == owner {
            owner_present = true;
            a.insert("self".into(), json!(true));
            a.insert("organizer".into(), json!(true));
        } else {
            a.remove("self");
        }
        out.push(Value::Object(a));
    }
    if !out.is_empty() && !owner_present {
        out.push(json!({ "email": owner, "organizer": true, "self": true, "responseStatus": "accepted" }));
    }
    Ok(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_is_recursive_for_objects_and_replaces_arrays() {
        let mut base = json!({"start": {"dateTime": "a", "timeZone": "UTC"}, "attendees": [1, 2], "x": 1})
            .as_object()
            .cloned()
            .unwrap();
        let patch = json!({"start": {"dateTime": "b"}, "attendees": [3], "x": null}).as_object().cloned().unwrap();
        merge(&mut base, &patch);
        assert_eq!(Value::Object(base), json!({"start": {"dateTime": "b", "timeZone": "UTC"}, "attendees": [3]}));
    }

    #[test]
    fn the_owner_is_self_and_organizer() {
        let v = normalise_attendees(&json!([{"email": "Bob@x.test"}]), "alice@x.test").unwrap();
        assert_eq!(v[0], json!({"email": "bob@x.test", "responseStatus": "needsAction"}));
        assert_eq!(v[1]["self"], json!(true));
    }
}
