//! Expanding a recurring series the way Google Calendar does: RFC 5545 rules (via the `rrule`
//! crate) anchored at the series' first start in the series' own time zone, so a weekly 09:00
//! stays at 09:00 local across daylight-saving changes. All-day series expand over dates.
//!
//! Google stores only the `RRULE`/`EXRULE`/`RDATE`/`EXDATE` lines; the `DTSTART` comes from the
//! event's `start`. The rules' date forms are normalised here to what the crate accepts.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use rrule::RRuleSet;

use crate::calendar::model::When;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecurrenceError {
    #[error("Invalid recurrence rule.")]
    Invalid,
    #[error("Missing time zone definition for start time.")]
    MissingTimeZone,
}

/// One occurrence: its original slot (what identifies it) and its times.
#[derive(Debug, Clone, PartialEq)]
pub struct Occurrence {
    pub start: When,
    pub end: When,
}

impl Occurrence {
    /// The instance-id suffix Google derives from the original start.
    pub fn id_suffix(&self) -> String {
        self.start.id_suffix()
    }
}

/// Cap on occurrences of one expansion, whatever the window.
pub const MAX_OCCURRENCES: u16 = 5000;

/// Occurrences of the series whose span overlaps `[from, until)` (both optional bounds are
/// instants; `until` is required so an endless series stays finite).
pub fn expand(
    start: &When,
    end: &When,
    recurrence: &[String],
    from: Option<DateTime<Utc>>,
    until: DateTime<Utc>,
) -> Result<Vec<Occurrence>, RecurrenceError> {
    let set = rule_set(start, recurrence)?;
    let span = match (start, end) {
        (When::Timed { at: s, .. }, When::Timed { at: e, .. }) => *e - *s,
        (When::AllDay(s), When::AllDay(e)) => Duration::days((*e - *s).num_days()),
        _ => return Err(RecurrenceError::Invalid),
    };
    let utc = rrule::Tz::UTC;
    let mut set = set.before(until.with_timezone(&utc));
    if let Some(from) = from {
        set = set.after((from - span).with_timezone(&utc));
    }
    let result = set.all(MAX_OCCURRENCES);
    let mut out: Vec<Occurrence> = Vec::with_capacity(result.dates.len());
    let mut last: Option<DateTime<Utc>> = None;
    for dt in result.dates {
        let at = dt.with_timezone(&Utc);
        // The crate repeats an instant for sub-daily rules at a spring-forward gap; Google never
        // has two instances at one instant.
        if last == Some(at) {
            continue;
        }
        last = Some(at);
        let (s, e) = match start {
            When::Timed { tz, .. } => {
                (When::Timed { at, tz: tz.clone() }, When::Timed { at: at + span, tz: end_tz(end) })
            }
            When::AllDay(_) => {
                let d = at.date_naive();
                (When::AllDay(d), When::AllDay(d + span))
            }
        };
        if from.is_some_and(|f| e.instant_utc() <= f) || s.instant_utc() >= until {
            continue;
        }
        out.push(Occurrence { start: s, end: e });
    }
    Ok(out)
}

fn end_tz(end: &When) -> Option<String> {
    match end {
        When::Timed { tz, .. } => tz.clone(),
        When::AllDay(_) => None,
    }
}

/// Checks that a series' recurrence parses, without expanding it.
pub fn validate(start: &When, recurrence: &[String]) -> Result<(), RecurrenceError> {
    rule_set(start, recurrence).map(|_| ())
}

fn rule_set(start: &When, recurrence: &[String]) -> Result<RRuleSet, RecurrenceError> {
    let (dtstart, zone) = match start {
        When::Timed { at, tz } => {
            let tz_name = tz.as_deref().ok_or(RecurrenceError::MissingTimeZone)?;
            let zone: Tz = tz_name.parse().map_err(|_| RecurrenceError::MissingTimeZone)?;
            let local = at.with_timezone(&zone).naive_local();
            (format!("DTSTART;TZID={tz_name}:{}", local.format("%Y%m%dT%H%M%S")), Some((zone, local.time())))
        }
        When::AllDay(d) => (format!("DTSTART:{}T000000Z", d.format("%Y%m%d")), None),
    };
    let mut text = dtstart;
    let mut has_rule = false;
    for line in recurrence {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (head, value) = line.split_once(':').ok_or(RecurrenceError::Invalid)?;
        let name = head.split(';').next().unwrap_or_default().to_ascii_uppercase();
        let fixed = match name.as_str() {
            "RRULE" | "EXRULE" => {
                has_rule |= name == "RRULE";
                format!("{name}:{}", fix_until(value, zone))
            }
            "RDATE" | "EXDATE" => {
                has_rule |= name == "RDATE";
                fix_dates(&name, head, value, zone)?
            }
            _ => return Err(RecurrenceError::Invalid),
        };
        text.push('\n');
        text.push_str(&fixed);
    }
    if !has_rule {
        return Err(RecurrenceError::Invalid);
    }
    text.parse::<RRuleSet>().map_err(|_| RecurrenceError::Invalid)
}

/// `UNTIL` must be UTC when `DTSTART` has a zone; Google writes all-day series' `UNTIL` as a date
/// and sometimes a timed one as local time.
fn fix_until(rule: &str, zone: Option<(Tz, chrono::NaiveTime)>) -> String {
    rule.split(';')
        .map(|part| {
            let Some(value) = part.strip_prefix("UNTIL=").or_else(|| part.strip_prefix("until=")) else {
                return part.to_owned();
            };
            match (value.len(), zone) {
                (8, None) => format!("UNTIL={value}T000000Z"),
                (8, Some((tz, _))) => match NaiveDate::parse_from_str(value, "%Y%m%d") {
                    Ok(d) => {
                        let end_of_day = d.and_hms_opt(23, 59, 59).unwrap_or_default();
                        let utc = tz.from_local_datetime(&end_of_day).latest().map(|t| t.with_timezone(&Utc));
                        utc.map(|u| format!("UNTIL={}", u.format("%Y%m%dT%H%M%SZ"))).unwrap_or_else(|| part.to_owned())
                    }
                    Err(_) => part.to_owned(),
                },
                (15, Some((tz, _))) => match chrono::NaiveDateTime::parse_from_str(value, "%Y%m%dT%H%M%S") {
                    Ok(local) => tz
                        .from_local_datetime(&local)
                        .latest()
                        .map(|t| format!("UNTIL={}", t.with_timezone(&Utc).format("%Y%m%dT%H%M%SZ")))
                        .unwrap_or_else(|| part.to_owned()),
                    Err(_) => part.to_owned(),
                },
                _ => part.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// Date-valued `EXDATE`/`RDATE` lines become instants: midnight UTC for all-day series, the
/// series' local start time on that day for timed ones.
fn fix_dates(
    name: &str,
    head: &str,
    value: &str,
    zone: Option<(Tz, chrono::NaiveTime)>,
) -> Result<String, RecurrenceError> {
    let is_date =
        head.to_ascii_uppercase().contains("VALUE=DATE") && !head.to_ascii_uppercase().contains("VALUE=DATE-TIME");
    let all_day = zone.is_none();
    if !is_date && !all_day {
        return Ok(format!("{head}:{value}"));
    }
    let mut out = Vec::new();
    for v in value.split(',').filter(|v| !v.is_empty()) {
        let date = NaiveDate::parse_from_str(v.get(..8).ok_or(RecurrenceError::Invalid)?, "%Y%m%d")
            .map_err(|_| RecurrenceError::Invalid)?;
        match zone {
            None => out.push(format!("{}T000000Z", date.format("%Y%m%d"))),
            Some((tz, time)) => {
                let local = date.and_time(time);
                let utc = tz.from_local_datetime(&local).earliest().ok_or(RecurrenceError::Invalid)?;
                out.push(utc.with_timezone(&Utc).format("%Y%m%dT%H%M%SZ").to_string());
            }
        }
    }
    Ok(format!("{name}:{}", out.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timed(s: &str, tz: &str) -> When {
        When::Timed { at: DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc), tz: Some(tz.into()) }
    }

    #[test]
    fn weekly_stays_at_local_time_across_dst() {
        let start = timed("2026-03-23T09:00:00+01:00", "Europe/Stockholm");
        let end = timed("2026-03-23T09:30:00+01:00", "Europe/Stockholm");
        let until = Utc.with_ymd_and_hms(2026, 4, 10, 0, 0, 0).unwrap();
        let occ = expand(&start, &end, &["RRULE:FREQ=WEEKLY".into()], None, until).unwrap();
        let utc: Vec<String> = occ.iter().map(|o| o.start.instant_utc().format("%m-%dT%H:%M").to_string()).collect();
        assert_eq!(utc, ["03-23T08:00", "03-30T07:00", "04-06T07:00"]);
        assert_eq!(occ[1].id_suffix(), "20260330T070000Z");
    }

    #[test]
    fn all_day_series_expand_over_dates_with_exdates() {
        let start = When::AllDay(NaiveDate::from_ymd_opt(2026, 9, 1).unwrap());
        let end = When::AllDay(NaiveDate::from_ymd_opt(2026, 9, 2).unwrap());
        let rec = ["RRULE:FREQ=DAILY;UNTIL=20260904".to_string(), "EXDATE;VALUE=DATE:20260902".to_string()];
        let occ = expand(&start, &end, &rec, None, Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap()).unwrap();
        let ids: Vec<String> = occ.iter().map(Occurrence::id_suffix).collect();
        assert_eq!(ids, ["20260901", "20260903", "20260904"]);
    }

    #[test]
    fn window_keeps_occurrences_that_overlap_its_start() {
        let start = timed("2026-01-01T23:00:00Z", "UTC");
        let end = timed("2026-01-02T01:00:00Z", "UTC");
        let from = Utc.with_ymd_and_hms(2026, 1, 3, 0, 30, 0).unwrap();
        let until = Utc.with_ymd_and_hms(2026, 1, 4, 0, 0, 0).unwrap();
        let occ = expand(&start, &end, &["RRULE:FREQ=DAILY".into()], Some(from), until).unwrap();
        let ids: Vec<String> = occ.iter().map(Occurrence::id_suffix).collect();
        assert_eq!(ids, ["20260102T230000Z", "20260103T230000Z"]);
    }

    #[test]
    fn bad_rules_and_missing_zones_are_refused() {
        let start = timed("2026-01-01T09:00:00Z", "UTC");
        assert_eq!(validate(&start, &["RRULE:FREQ=SOMETIMES".into()]), Err(RecurrenceError::Invalid));
        assert_eq!(validate(&start, &["FOO:BAR".into()]), Err(RecurrenceError::Invalid));
        let no_tz = When::Timed { at: Utc::now(), tz: None };
        assert_eq!(validate(&no_tz, &["RRULE:FREQ=DAILY".into()]), Err(RecurrenceError::MissingTimeZone));
    }
}
