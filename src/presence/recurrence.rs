//! Expanding recurring series over the presence horizon, with RFC 5545 rules (the `rrule`
//! crate) anchored at the series' first start in the series' own time zone — so a daily 09:00
//! in Europe/Stockholm stays 09:00 local across daylight-saving changes.
//!
//! Google stores only the rule lines; the `DTSTART` comes from the event's start. Date forms
//! the crate does not take (`UNTIL` as a date, or as local time; date-valued `EXDATE`) are
//! turned into instants first. `rrule` can yield one instant twice at a spring-forward gap for
//! sub-daily rules (ECOSYSTEM §3); duplicates are dropped.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use rrule::RRuleSet;

use crate::model::event::EventTime;

/// Most occurrences of one series within one horizon (a minutely rule over two weeks stays
/// finite).
const MAX_OCCURRENCES: u16 = 2000;

/// One occurrence: its slot in the series (what exceptions refer to) and its times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occurrence {
    pub original_start: EventTime,
    pub start: EventTime,
    pub end: EventTime,
}

/// Occurrences of a series whose span overlaps `[from, until)`; all-day dates are placed in
/// `zone` (the calendar's). `None` when the rules cannot be read.
pub fn expand(
    start: &EventTime,
    end: &EventTime,
    rules: &[String],
    zone: Tz,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Option<Vec<Occurrence>> {
    let (text, span) = match (start, end) {
        (EventTime::DateTime { at, tz }, EventTime::DateTime { at: end_at, .. }) => {
            let series_zone: Tz = tz.as_deref().and_then(|t| t.parse().ok()).unwrap_or(zone);
            let local = at.with_timezone(&series_zone).naive_local();
            let mut text = format!("DTSTART;TZID={}:{}", series_zone.name(), local.format("%Y%m%dT%H%M%S"));
            for line in rules {
                text.push('\n');
                text.push_str(&normalise_line(line, Some((series_zone, local.time())))?);
            }
            (text, *end_at - *at)
        }
        (EventTime::Date(d), EventTime::Date(end_d)) => {
            let mut text = format!("DTSTART:{}T000000Z", d.format("%Y%m%d"));
            for line in rules {
                text.push('\n');
                text.push_str(&normalise_line(line, None)?);
            }
            (text, Duration::days((*end_d - *d).num_days()))
        }
        _ => return None,
    };
    let set: RRuleSet = text.parse().ok()?;
    let utc = rrule::Tz::UTC;
    // All-day occurrences are expanded in UTC dates; widen the window by a day each side so
    // the calendar's offset cannot cut one off, then filter exactly below.
    let slack = Duration::days(1);
    let result = set
        .after((from - span - slack).with_timezone(&utc))
        .before((until + slack).with_timezone(&utc))
        .all(MAX_OCCURRENCES);
    let mut out: Vec<Occurrence> = Vec::new();
    for dt in result.dates {
        let at = dt.with_timezone(&Utc);
        let occ = match start {
            EventTime::DateTime { tz, .. } => Occurrence {
                original_start: EventTime::DateTime { at, tz: tz.clone() },
                start: EventTime::DateTime { at, tz: tz.clone() },
                end: EventTime::DateTime { at: at + span, tz: tz.clone() },
            },
            EventTime::Date(_) => {
                let d = at.date_naive();
                Occurrence {
                    original_start: EventTime::Date(d),
                    start: EventTime::Date(d),
                    end: EventTime::Date(d + span),
                }
            }
        };
        if out.last().is_some_and(|last| last.start == occ.start) {
            continue;
        }
        if occ.end.instant_in(zone) > from && occ.start.instant_in(zone) < until {
            out.push(occ);
        }
    }
    Some(out)
}

/// Brings one rule line into the form the crate reads. `zone` is the series' zone and local
/// start time (none for all-day series).
fn normalise_line(line: &str, zone: Option<(Tz, NaiveTime)>) -> Option<String> {
    let line = line.trim();
    let (head, value) = line.split_once(':')?;
    let name = head.split(';').next()?.to_ascii_uppercase();
    match name.as_str() {
        "RRULE" | "EXRULE" => {
            let parts: Vec<String> = value
                .split(';')
                .map(|part| match part.split_once('=') {
                    Some((k, v)) if k.eq_ignore_ascii_case("UNTIL") => {
                        format!("UNTIL={}", until_utc(v, zone).unwrap_or_else(|| v.to_owned()))
                    }
                    _ => part.to_owned(),
                })
                .collect();
            Some(format!("{name}:{}", parts.join(";")))
        }
        "RDATE" | "EXDATE" => {
            let is_date =
                head.to_ascii_uppercase().contains("VALUE=DATE") && !head.to_ascii_uppercase().contains("DATE-TIME");
            if !is_date && zone.is_some() {
                return Some(line.to_owned());
            }
            let mut instants = Vec::new();
            for v in value.split(',').filter(|v| v.len() >= 8) {
                let d = NaiveDate::parse_from_str(v.get(..8)?, "%Y%m%d").ok()?;
                instants.push(match zone {
                    None => format!("{}T000000Z", d.format("%Y%m%d")),
                    Some((tz, time)) => tz
                        .from_local_datetime(&d.and_time(time))
                        .earliest()?
                        .with_timezone(&Utc)
                        .format("%Y%m%dT%H%M%SZ")
                        .to_string(),
                });
            }
            Some(format!("{name}:{}", instants.join(",")))
        }
        _ => None,
    }
}

/// `UNTIL` in UTC, as the crate needs when `DTSTART` has a zone: a bare date means the end of
/// that day (locally), a local date-time is read in the series' zone.
fn until_utc(v: &str, zone: Option<(Tz, NaiveTime)>) -> Option<String> {
    if v.ends_with('Z') {
        return None;
    }
    let fmt = "%Y%m%dT%H%M%SZ";
    match (v.len(), zone) {
        (8, None) => Some(format!("{v}T235959Z")),
        (8, Some((tz, _))) => {
            let d = NaiveDate::parse_from_str(v, "%Y%m%d").ok()?;
            Some(
                tz.from_local_datetime(&d.and_hms_opt(23, 59, 59)?)
                    .latest()?
                    .with_timezone(&Utc)
                    .format(fmt)
                    .to_string(),
            )
        }
        (15, Some((tz, _))) => {
            let local = NaiveDateTime::parse_from_str(v, "%Y%m%dT%H%M%S").ok()?;
            Some(tz.from_local_datetime(&local).latest()?.with_timezone(&Utc).format(fmt).to_string())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn timed(s: &str, tz: &str) -> EventTime {
        EventTime::DateTime { at: at(s), tz: Some(tz.into()) }
    }

    #[test]
    fn a_daily_series_keeps_local_time_across_both_dst_changes() {
        let stockholm: Tz = "Europe/Stockholm".parse().unwrap();
        let start = timed("2026-03-27T09:00:00+01:00", "Europe/Stockholm");
        let end = timed("2026-03-27T09:15:00+01:00", "Europe/Stockholm");
        let occ = expand(
            &start,
            &end,
            &["RRULE:FREQ=DAILY".into()],
            stockholm,
            at("2026-03-27T00:00:00Z"),
            at("2026-03-31T00:00:00Z"),
        )
        .unwrap();
        let hours: Vec<u32> = occ
            .iter()
            .map(|o| o.start.instant_in(stockholm).with_timezone(&stockholm).format("%H").to_string().parse().unwrap())
            .collect();
        assert_eq!(hours, [9, 9, 9, 9], "09:00 local every day");
        let utc_hours: Vec<String> =
            occ.iter().map(|o| o.start.instant_in(stockholm).format("%d %H").to_string()).collect();
        assert_eq!(utc_hours, ["27 08", "28 08", "29 07", "30 07"]);
        let autumn = expand(
            &start,
            &end,
            &["RRULE:FREQ=DAILY".into()],
            stockholm,
            at("2026-10-24T00:00:00Z"),
            at("2026-10-27T00:00:00Z"),
        )
        .unwrap();
        let utc: Vec<String> =
            autumn.iter().map(|o| o.start.instant_in(stockholm).format("%d %H").to_string()).collect();
        assert_eq!(utc, ["24 07", "25 08", "26 08"]);
    }

    #[test]
    fn until_as_a_date_and_date_exdates_work_for_all_day_series() {
        let zone: Tz = "Europe/Stockholm".parse().unwrap();
        let start = EventTime::Date(NaiveDate::from_ymd_opt(2026, 7, 1).unwrap());
        let end = EventTime::Date(NaiveDate::from_ymd_opt(2026, 7, 2).unwrap());
        let rules = ["RRULE:FREQ=DAILY;UNTIL=20260705".to_string(), "EXDATE;VALUE=DATE:20260703".to_string()];
        let occ = expand(&start, &end, &rules, zone, at("2026-06-01T00:00:00Z"), at("2026-08-01T00:00:00Z")).unwrap();
        let days: Vec<String> = occ.iter().map(|o| format!("{:?}", o.start)).collect();
        assert_eq!(occ.len(), 4, "{days:?}");
        assert!(!occ.iter().any(|o| o.start == EventTime::Date(NaiveDate::from_ymd_opt(2026, 7, 3).unwrap())));
    }

    #[test]
    fn unreadable_rules_are_none() {
        let zone: Tz = "UTC".parse().unwrap();
        let start = timed("2026-01-01T09:00:00Z", "UTC");
        let end = timed("2026-01-01T10:00:00Z", "UTC");
        assert!(
            expand(
                &start,
                &end,
                &["RRULE:FREQ=NEVER".into()],
                zone,
                at("2026-01-01T00:00:00Z"),
                at("2026-02-01T00:00:00Z")
            )
            .is_none()
        );
        assert!(
            expand(&start, &end, &["BOGUS".into()], zone, at("2026-01-01T00:00:00Z"), at("2026-02-01T00:00:00Z"))
                .is_none()
        );
    }
}
