//! Expanding recurring series over the presence horizon, with RFC 5545 rules (the `rrule`
//! crate) anchored at the series' first start in the series' own time zone — so a daily 09:00
//! in Europe/Stockholm stays 09:00 local across daylight-saving changes.
//!
//! Google stores only the rule lines; the `DTSTART` comes from the event's start. Date forms
//! the crate does not take (`UNTIL` as a date, or as local time; date-valued `EXDATE`) are
//! turned into instants first. `rrule` can yield one instant twice at a spring-forward gap for
//! sub-daily rules (ECOSYSTEM §3); duplicates are dropped.
//!
//! Work is bounded by the window, not by the series' age. A series without `COUNT` is expanded
//! from a start moved forward by whole periods of its rule to just before the window (a
//! minutely series that began in 1970 yields exactly the same instances in the window, without
//! stepping through 29 million minutes since). A series with `COUNT` must be counted from its
//! first instance; at most `MAX_GENERATED` instances are generated for one window. And a
//! series yields at most `MAX_OCCURRENCES` instances per window. A series that hits either
//! limit is reported as capped (`Expansion::capped`): the presence API and the user's status
//! name it.

use chrono::{DateTime, Datelike, Duration, Months, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use rrule::RRuleSet;

use crate::model::event::EventTime;

/// Most occurrences of one series within one window (a minutely rule over two weeks stays
/// finite: the first 2,000 count).
pub const MAX_OCCURRENCES: usize = 2000;

/// Most instances generated for one series and window, counting those before the window
/// (only a series with `COUNT` generates any before it).
pub const MAX_GENERATED: usize = 100_000;

/// One occurrence: its slot in the series (what exceptions refer to) and its times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occurrence {
    pub original_start: EventTime,
    pub start: EventTime,
    pub end: EventTime,
}

/// A series' occurrences in a window; `capped` if a limit cut it short.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expansion {
    pub occurrences: Vec<Occurrence>,
    pub capped: bool,
}

/// The parts of the first `RRULE` line that decide how far its start may move.
struct RuleShape {
    freq: String,
    interval: u32,
    count: bool,
    /// BYMONTHDAY, BYDAY, BYYEARDAY or BYWEEKNO: days chosen by the rule, not by `DTSTART`.
    explicit_days: bool,
}

fn rule_shape(rules: &[String]) -> Option<RuleShape> {
    let line = rules.iter().find(|l| l.trim().to_ascii_uppercase().starts_with("RRULE"))?;
    let (_, value) = line.split_once(':')?;
    let mut shape = RuleShape { freq: String::new(), interval: 1, count: false, explicit_days: false };
    for part in value.split(';') {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        match k.trim().to_ascii_uppercase().as_str() {
            "FREQ" => shape.freq = v.trim().to_ascii_uppercase(),
            "INTERVAL" => shape.interval = v.trim().parse().ok().filter(|i| *i > 0)?,
            "COUNT" => shape.count = true,
            "BYMONTHDAY" | "BYDAY" | "BYYEARDAY" | "BYWEEKNO" => shape.explicit_days = true,
            _ => {}
        }
    }
    // Several RRULE lines: their periods need not line up; expand from the start.
    let rrules = rules.iter().filter(|l| l.trim().to_ascii_uppercase().starts_with("RRULE")).count();
    (rrules == 1).then_some(shape)
}

/// The series' start moved forward by whole periods of its rule to at most `target` (local
/// date-time in the series' zone), or `None` if it cannot move without changing the instances.
fn shifted_start(start: NaiveDateTime, shape: &RuleShape, target: NaiveDateTime) -> Option<NaiveDateTime> {
    if shape.count || target <= start {
        return None;
    }
    let interval = shape.interval;
    match shape.freq.as_str() {
        // Whole days keep every sub-daily step aligned (INTERVAL days hold a whole number of
        // INTERVAL-hour, -minute or -second steps) and keep the time of day.
        "SECONDLY" | "MINUTELY" | "HOURLY" | "DAILY" | "WEEKLY" => {
            let step = i64::from(interval) * if shape.freq == "WEEKLY" { 7 } else { 1 };
            let k = (target - start).num_days() / step;
            (k > 0).then(|| start + Duration::days(k * step))
        }
        // Whole months keep the day of the month only where every month has it.
        "MONTHLY" if start.day() <= 28 || shape.explicit_days => {
            let months = (target.year() - start.year()) * 12 + target.month() as i32 - start.month() as i32 - 1;
            let k = (months.max(0) as u32) / interval;
            (k > 0).then(|| start.checked_add_months(Months::new(k * interval))).flatten()
        }
        "YEARLY" if !(start.month() == 2 && start.day() == 29) || shape.explicit_days => {
            let years = target.year() - start.year() - 1;
            let k = (years.max(0) as u32) / interval;
            (k > 0).then(|| start.checked_add_months(Months::new(k * interval * 12))).flatten()
        }
        _ => None,
    }
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
) -> Option<Expansion> {
    // All-day occurrences are expanded in UTC dates; widen the window by a day each side so
    // the calendar's offset cannot cut one off, then filter exactly below.
    let slack = Duration::days(1);
    let shape = rule_shape(rules);
    let (text, span) = match (start, end) {
        (EventTime::DateTime { at, tz }, EventTime::DateTime { at: end_at, .. }) => {
            let series_zone: Tz = tz.as_deref().and_then(|t| t.parse().ok()).unwrap_or(zone);
            let local = at.with_timezone(&series_zone).naive_local();
            let span = *end_at - *at;
            // A week of margin before the window also covers a start the shift lands on that
            // the rule itself would not produce (it stays outside the window).
            let target = (from - span - slack - Duration::days(7)).with_timezone(&series_zone).naive_local();
            let anchor = shape.as_ref().and_then(|s| shifted_start(local, s, target)).unwrap_or(local);
            let mut text = format!("DTSTART;TZID={}:{}", series_zone.name(), anchor.format("%Y%m%dT%H%M%S"));
            for line in rules {
                text.push('\n');
                text.push_str(&normalise_line(line, Some((series_zone, local.time())))?);
            }
            (text, span)
        }
        (EventTime::Date(d), EventTime::Date(end_d)) => {
            let span = Duration::days((*end_d - *d).num_days());
            let midnight = d.and_time(NaiveTime::MIN);
            let target = (from - span - slack - Duration::days(7)).naive_utc();
            let anchor = shape.as_ref().and_then(|s| shifted_start(midnight, s, target)).unwrap_or(midnight);
            let mut text = format!("DTSTART:{}T000000Z", anchor.format("%Y%m%d"));
            for line in rules {
                text.push('\n');
                text.push_str(&normalise_line(line, None)?);
            }
            (text, span)
        }
        _ => return None,
    };
    let set: RRuleSet = text.parse().ok()?;
    // `limit` keeps the crate's own guard against rules that never match (100,000 empty loops).
    let set = set.limit();
    let (window_start, window_end) = (from - span - slack, until + slack);
    let mut expansion = Expansion::default();
    let mut generated = 0usize;
    for dt in &set {
        generated += 1;
        if generated > MAX_GENERATED {
            expansion.capped = true;
            break;
        }
        let at = dt.with_timezone(&Utc);
        if at >= window_end {
            break;
        }
        if at < window_start {
            continue;
        }
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
        if expansion.occurrences.last().is_some_and(|last| last.start == occ.start) {
            continue;
        }
        if occ.end.instant_in(zone) > from && occ.start.instant_in(zone) < until {
            if expansion.occurrences.len() >= MAX_OCCURRENCES {
                expansion.capped = true;
                break;
            }
            expansion.occurrences.push(occ);
        }
    }
    Some(expansion)
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
        .unwrap()
        .occurrences;
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
        .unwrap()
        .occurrences;
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
        let occ = expand(&start, &end, &rules, zone, at("2026-06-01T00:00:00Z"), at("2026-08-01T00:00:00Z"))
            .unwrap()
            .occurrences;
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

    #[test]
    fn a_series_from_1970_yields_the_same_instances_without_walking_from_1970() {
        let zone: Tz = "Europe/Stockholm".parse().unwrap();
        let (from, until) = (at("2026-03-28T22:00:00Z"), at("2026-03-29T04:00:00Z"));
        let old_start = timed("1970-01-01T00:00:00+01:00", "Europe/Stockholm");
        let old_end = timed("1970-01-01T00:07:00+01:00", "Europe/Stockholm");
        // The same series, started the day before the window (a whole number of 7-minute
        // steps after 1970? no: 7 does not divide a day, so compare with a 1970 start shifted
        // by whole 7-day blocks, which is exact).
        let days = (at("2026-03-20T23:00:00Z") - at("1970-01-01T00:00:00+01:00")).num_days() / 7 * 7;
        let recent_at = at("1970-01-01T00:00:00+01:00") + Duration::days(days);
        let recent_start = EventTime::DateTime { at: recent_at, tz: Some("Europe/Stockholm".into()) };
        let recent_end =
            EventTime::DateTime { at: recent_at + Duration::minutes(7), tz: Some("Europe/Stockholm".into()) };
        let rules = ["RRULE:FREQ=MINUTELY;INTERVAL=7".to_string()];
        let started = std::time::Instant::now();
        let old = expand(&old_start, &old_end, &rules, zone, from, until).unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "took {:?}", started.elapsed());
        let recent = expand(&recent_start, &recent_end, &rules, zone, from, until).unwrap();
        assert!(!old.capped);
        assert_eq!(old.occurrences.len(), recent.occurrences.len());
        assert_eq!(old, recent, "the window holds the same instances across the spring-forward night");
        assert!(old.occurrences.len() > 40, "{}", old.occurrences.len());
    }

    #[test]
    fn weekly_monthly_and_yearly_series_from_long_ago_match_a_fresh_expansion() {
        let zone: Tz = "UTC".parse().unwrap();
        let (from, until) = (at("2026-11-01T00:00:00Z"), at("2026-12-31T00:00:00Z"));
        for (rule, start) in [
            ("RRULE:FREQ=WEEKLY;INTERVAL=3;BYDAY=MO,TH", "1970-01-05T09:00:00Z"),
            ("RRULE:FREQ=MONTHLY;BYDAY=-1FR", "1971-02-26T09:00:00Z"),
            ("RRULE:FREQ=MONTHLY", "1975-05-31T09:00:00Z"),
            ("RRULE:FREQ=YEARLY;BYMONTH=11,12;BYMONTHDAY=15", "1980-11-15T09:00:00Z"),
            ("RRULE:FREQ=DAILY;INTERVAL=9", "1970-01-01T09:00:00Z"),
        ] {
            let s = timed(start, "UTC");
            let e = timed(&start.replace("09:00", "10:00"), "UTC");
            let rules = [rule.to_string()];
            let got = expand(&s, &e, &rules, zone, from, until).unwrap();
            // Reference: the crate walking from the first instance, filtered to the window.
            let text = format!("DTSTART:{}\n{rule}", at(start).format("%Y%m%dT%H%M%SZ"));
            let set: RRuleSet = text.parse().unwrap();
            let expected: Vec<DateTime<Utc>> = set
                .all_unchecked()
                .into_iter()
                .map(|d| d.with_timezone(&Utc))
                .filter(|d| *d + Duration::hours(1) > from && *d < until)
                .collect();
            let starts: Vec<DateTime<Utc>> = got.occurrences.iter().map(|o| o.start.instant_in(zone)).collect();
            assert_eq!(starts, expected, "{rule}");
            assert!(!expected.is_empty() || start.contains("-31T"), "{rule}");
        }
    }

    #[test]
    fn limits_cap_a_series_and_say_so() {
        let zone: Tz = "UTC".parse().unwrap();
        let start = timed("2026-01-01T00:00:00Z", "UTC");
        let end = timed("2026-01-01T00:00:30Z", "UTC");
        let (from, until) = (at("2026-01-01T00:00:00Z"), at("2026-01-15T00:00:00Z"));
        let minutely = expand(&start, &end, &["RRULE:FREQ=MINUTELY".into()], zone, from, until).unwrap();
        assert!(minutely.capped);
        assert_eq!(minutely.occurrences.len(), MAX_OCCURRENCES);
        // COUNT must be counted from the first instance: a huge one from 1970 stops at the
        // generation limit, in bounded time.
        let old = timed("1970-01-01T00:00:00Z", "UTC");
        let old_end = timed("1970-01-01T00:00:30Z", "UTC");
        let started = std::time::Instant::now();
        let counted =
            expand(&old, &old_end, &["RRULE:FREQ=MINUTELY;COUNT=100000000".into()], zone, from, until).unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "took {:?}", started.elapsed());
        assert!(counted.capped);
        // A small COUNT is exact.
        let daily = expand(&start, &end, &["RRULE:FREQ=DAILY;COUNT=3".into()], zone, from, until).unwrap();
        assert!(!daily.capped);
        assert_eq!(daily.occurrences.len(), 3);
    }
}
