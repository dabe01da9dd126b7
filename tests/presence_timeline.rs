//! Presence timelines as a user sees them: which profile is active at which local time, since
//! and until when, why (event and trigger), and which switches come next — computed from events
//! shaped exactly as gwsync stores what Google's `events.list` (`singleEvents=false`) returns.
//!
//! Expected instants are worked out here with chrono-tz (or written out in UTC), never with
//! gwsync's own conversions.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use gwsync::model::event::{EventTime, Status, StoredEvent};
use gwsync::model::user::Profile;
use gwsync::presence::timeline::{Cause, Profiles, State, Timeline, Transition};

/// The calendar's (and every series') time zone.
const SE: Tz = chrono_tz::Europe::Stockholm;
const SE_NAME: &str = "Europe/Stockholm";

// ---------------------------------------------------------------------------------------------
// Times

/// A Stockholm wall-clock time as an instant.
fn se(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    SE.with_ymd_and_hms(y, mo, d, h, mi, 0).single().expect("an unambiguous local time").with_timezone(&Utc)
}

/// An instant written out in UTC.
fn utc(s: &str) -> DateTime<Utc> {
    s.parse().expect("an RFC 3339 instant")
}

fn date(y: i32, mo: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, mo, d).expect("a date")
}

/// Local midnight starting `d` in Stockholm.
fn se_midnight(d: NaiveDate) -> DateTime<Utc> {
    SE.from_local_datetime(&d.and_hms_opt(0, 0, 0).unwrap()).single().expect("midnight exists").with_timezone(&Utc)
}

fn local(t: DateTime<Utc>) -> String {
    t.with_timezone(&SE).format("%Y-%m-%d %H:%M %Z").to_string()
}

// ---------------------------------------------------------------------------------------------
// Events, as gwsync stores them

fn timed(at: DateTime<Utc>) -> EventTime {
    EventTime::DateTime { at, tz: Some(SE_NAME.into()) }
}

/// A confirmed one-off timed event.
fn event(id: &str, summary: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> StoredEvent {
    StoredEvent {
        id: id.into(),
        status: Status::Confirmed,
        summary: Some(summary.into()),
        start: Some(timed(start)),
        end: Some(timed(end)),
        recurrence: Vec::new(),
        recurring_event_id: None,
        original_start: None,
        transparent: false,
        event_type: "default".into(),
        visibility: "default".into(),
        self_response: None,
        updated: None,
    }
}

/// An all-day event from `first` to `end` (exclusive), as Google writes `date` times.
fn all_day(id: &str, summary: &str, first: NaiveDate, end: NaiveDate) -> StoredEvent {
    StoredEvent {
        start: Some(EventTime::Date(first)),
        end: Some(EventTime::Date(end)),
        ..event(id, summary, Utc::now(), Utc::now())
    }
}

/// A series master: `start`/`end` are the first instance, `recurrence` the rule lines.
fn series(id: &str, summary: &str, start: DateTime<Utc>, end: DateTime<Utc>, rules: &[&str]) -> StoredEvent {
    StoredEvent { recurrence: rules.iter().map(|r| r.to_string()).collect(), ..event(id, summary, start, end) }
}

/// Google's id of a timed series' instance: `{master}_{original start in UTC}`.
fn instance_id(master: &str, original: DateTime<Utc>) -> String {
    format!("{master}_{}", original.format("%Y%m%dT%H%M%SZ"))
}

/// An exception replacing the slot `original` of `master`: moved and/or renamed.
fn exception(
    master: &str,
    original: DateTime<Utc>,
    summary: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> StoredEvent {
    StoredEvent {
        recurring_event_id: Some(master.into()),
        original_start: Some(timed(original)),
        ..event(&instance_id(master, original), summary, start, end)
    }
}

/// A cancelled instance as an incremental sync delivers it: id, status, master and slot only.
fn cancelled_instance(master: &str, original: DateTime<Utc>) -> StoredEvent {
    StoredEvent {
        status: Status::Cancelled,
        summary: None,
        start: None,
        end: None,
        recurring_event_id: Some(master.into()),
        original_start: Some(timed(original)),
        ..event(&instance_id(master, original), "", original, original)
    }
}

// ---------------------------------------------------------------------------------------------
// Profiles

fn profile(name: &str, triggers: &[&str]) -> Profile {
    Profile { name: name.into(), triggers: triggers.iter().map(|t| t.to_string()).collect() }
}

/// The user of most tests: Semester outranks Lunch outranks Möte.
fn standard_profiles() -> Vec<Profile> {
    vec![profile("Semester", &["semester"]), profile("Lunch", &["lunch"]), profile("Möte", &["möte", "*möte"])]
}

fn compute(events: &[StoredEvent], profiles: &[Profile], from: DateTime<Utc>, until: DateTime<Utc>) -> Timeline {
    Timeline::compute(events, &Profiles::new(profiles), SE, from, until)
}

fn timeline(events: &[StoredEvent], from: DateTime<Utc>, until: DateTime<Utc>) -> Timeline {
    compute(events, &standard_profiles(), from, until)
}

// ---------------------------------------------------------------------------------------------
// What the user sees

fn cause(event_id: &str, trigger: &str) -> Cause {
    Cause { event_id: event_id.into(), event_type: None, trigger: Some(trigger.into()) }
}

/// A profile is active.
fn on(profile: &str, since: DateTime<Utc>, until: DateTime<Utc>, event_id: &str, trigger: &str) -> State {
    State {
        profile: Some(profile.into()),
        since: Some(since),
        until: Some(until),
        cause: Some(cause(event_id, trigger)),
    }
}

/// No profile (the phone system's default).
fn off(since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> State {
    State { profile: None, since, until, cause: None }
}

/// A switch to a profile.
fn switch(at: DateTime<Utc>, profile: &str, until: DateTime<Utc>, event_id: &str, trigger: &str) -> Transition {
    Transition { at, profile: Some(profile.into()), until: Some(until), cause: Some(cause(event_id, trigger)) }
}

/// A switch back to no profile.
fn back(at: DateTime<Utc>, until: Option<DateTime<Utc>>) -> Transition {
    Transition { at, profile: None, until, cause: None }
}

fn profile_at(tl: &Timeline, t: DateTime<Utc>) -> Option<String> {
    tl.state_at(t).profile
}

fn cause_at(tl: &Timeline, t: DateTime<Utc>) -> Option<String> {
    tl.state_at(t).cause.map(|c| c.event_id)
}

// =============================================================================================
// 1. Overlaps and priorities (Monday 15 June 2026, CEST)

fn june_window() -> (DateTime<Utc>, DateTime<Utc>) {
    (utc("2026-06-14T00:00:00Z"), utc("2026-06-17T00:00:00Z"))
}

#[test]
fn lunch_outranks_the_meeting_it_overlaps() {
    let (from, until) = june_window();
    let events = [
        event("m", "Möte med Anna", se(2026, 6, 15, 10, 0), se(2026, 6, 15, 12, 0)),
        event("l", "Lunch", se(2026, 6, 15, 11, 0), se(2026, 6, 15, 13, 0)),
    ];
    let tl = timeline(&events, from, until);
    let cases = [
        ((9, 59), off(None, Some(se(2026, 6, 15, 10, 0)))),
        ((10, 0), on("Möte", se(2026, 6, 15, 10, 0), se(2026, 6, 15, 11, 0), "m", "möte")),
        ((10, 59), on("Möte", se(2026, 6, 15, 10, 0), se(2026, 6, 15, 11, 0), "m", "möte")),
        ((11, 0), on("Lunch", se(2026, 6, 15, 11, 0), se(2026, 6, 15, 13, 0), "l", "lunch")),
        ((11, 59), on("Lunch", se(2026, 6, 15, 11, 0), se(2026, 6, 15, 13, 0), "l", "lunch")),
        ((12, 30), on("Lunch", se(2026, 6, 15, 11, 0), se(2026, 6, 15, 13, 0), "l", "lunch")),
        ((13, 0), off(Some(se(2026, 6, 15, 13, 0)), None)),
    ];
    for ((h, m), want) in cases {
        assert_eq!(tl.state_at(se(2026, 6, 15, h, m)), want, "at {h:02}:{m:02}");
    }
    assert_eq!(
        tl.upcoming(from),
        [
            switch(se(2026, 6, 15, 10, 0), "Möte", se(2026, 6, 15, 11, 0), "m", "möte"),
            switch(se(2026, 6, 15, 11, 0), "Lunch", se(2026, 6, 15, 13, 0), "l", "lunch"),
            back(se(2026, 6, 15, 13, 0), None),
        ],
        "the meeting's own end at 12:00 is hidden under lunch"
    );
}

#[test]
fn an_all_day_semester_outranks_everything_that_day() {
    let (from, until) = june_window();
    let events = [
        event("m", "Möte", se(2026, 6, 15, 10, 0), se(2026, 6, 15, 12, 0)),
        all_day("v", "Semester", date(2026, 6, 15), date(2026, 6, 16)),
        event("l", "Lunch", se(2026, 6, 15, 11, 0), se(2026, 6, 15, 13, 0)),
    ];
    let tl = timeline(&events, from, until);
    let (day_start, day_end) = (se(2026, 6, 15, 0, 0), se(2026, 6, 16, 0, 0));
    for (h, m) in [(0, 0), (9, 0), (10, 30), (11, 30), (12, 30), (23, 59)] {
        assert_eq!(
            tl.state_at(se(2026, 6, 15, h, m)),
            on("Semester", day_start, day_end, "v", "semester"),
            "at {h:02}:{m:02}"
        );
    }
    assert_eq!(tl.upcoming(from), [switch(day_start, "Semester", day_end, "v", "semester"), back(day_end, None)]);
}

#[test]
fn between_equal_profiles_the_event_that_started_last_is_the_cause() {
    let (from, until) = june_window();
    let events = [
        event("m1", "Möte", se(2026, 6, 15, 9, 0), se(2026, 6, 15, 12, 0)),
        event("m2", "Projektmöte", se(2026, 6, 15, 10, 0), se(2026, 6, 15, 11, 0)),
    ];
    let tl = timeline(&events, from, until);
    let cases = [
        ((9, 30), Some("Möte"), Some("m1")),
        ((10, 30), Some("Möte"), Some("m2")),
        ((11, 30), Some("Möte"), Some("m1")),
        ((12, 0), None, None),
    ];
    for ((h, m), profile, event_id) in cases {
        let t = se(2026, 6, 15, h, m);
        assert_eq!(
            (profile_at(&tl, t).as_deref(), cause_at(&tl, t).as_deref()),
            (profile, event_id),
            "at {h:02}:{m:02}: full state {:?}",
            tl.state_at(t)
        );
    }
}

#[test]
fn after_a_higher_priority_interruption_the_later_started_equal_event_is_the_cause() {
    // Möte A 09-12, Lunch 10-11, Möte B 10:30-11:30: when lunch ends, both meetings run and B
    // started last.
    let (from, until) = june_window();
    let events = [
        event("a", "Möte", se(2026, 6, 15, 9, 0), se(2026, 6, 15, 12, 0)),
        event("l", "Lunch", se(2026, 6, 15, 10, 0), se(2026, 6, 15, 11, 0)),
        event("b", "Möte", se(2026, 6, 15, 10, 30), se(2026, 6, 15, 11, 30)),
    ];
    let tl = timeline(&events, from, until);
    let t = se(2026, 6, 15, 11, 15);
    assert_eq!((profile_at(&tl, t).as_deref(), cause_at(&tl, t).as_deref()), (Some("Möte"), Some("b")));
    assert_eq!(profile_at(&tl, se(2026, 6, 15, 10, 45)).as_deref(), Some("Lunch"));
}

#[test]
fn back_to_back_events_of_one_profile_are_one_switch() {
    let (from, until) = june_window();
    let events = [
        event("b1", "Möte", se(2026, 6, 15, 9, 0), se(2026, 6, 15, 10, 0)),
        event("b2", "Kundmöte", se(2026, 6, 15, 10, 0), se(2026, 6, 15, 11, 0)),
    ];
    let tl = timeline(&events, from, until);
    assert_eq!(
        tl.state_at(se(2026, 6, 15, 9, 30)),
        on("Möte", se(2026, 6, 15, 9, 0), se(2026, 6, 15, 11, 0), "b1", "möte"),
        "until is the end of the whole stretch"
    );
    assert_eq!(profile_at(&tl, se(2026, 6, 15, 10, 0)).as_deref(), Some("Möte"));
    assert_eq!(tl.state_at(se(2026, 6, 15, 10, 30)).since, Some(se(2026, 6, 15, 9, 0)), "no new switch at 10:00");
    assert_eq!(
        tl.upcoming(se(2026, 6, 15, 8, 0)),
        [
            switch(se(2026, 6, 15, 9, 0), "Möte", se(2026, 6, 15, 11, 0), "b1", "möte"),
            back(se(2026, 6, 15, 11, 0), None)
        ],
        "no transition at the 10:00 seam"
    );
    assert_eq!(tl.next_boundary(se(2026, 6, 15, 9, 0)), Some(se(2026, 6, 15, 11, 0)));
}

#[test]
fn a_gap_is_no_profile_from_the_previous_end_until_the_next_start() {
    let (from, until) = june_window();
    let events = [
        event("m", "Möte", se(2026, 6, 15, 9, 0), se(2026, 6, 15, 10, 0)),
        event("l", "Lunch", se(2026, 6, 15, 12, 0), se(2026, 6, 15, 13, 0)),
    ];
    let tl = timeline(&events, from, until);
    let gap = off(Some(se(2026, 6, 15, 10, 0)), Some(se(2026, 6, 15, 12, 0)));
    for (h, m) in [(10, 0), (11, 0), (11, 59)] {
        assert_eq!(tl.state_at(se(2026, 6, 15, h, m)), gap, "at {h:02}:{m:02}");
    }
    assert_eq!(
        tl.upcoming(se(2026, 6, 15, 9, 30)),
        [
            back(se(2026, 6, 15, 10, 0), Some(se(2026, 6, 15, 12, 0))),
            switch(se(2026, 6, 15, 12, 0), "Lunch", se(2026, 6, 15, 13, 0), "l", "lunch"),
            back(se(2026, 6, 15, 13, 0), None),
        ]
    );
}

// =============================================================================================
// 2. A daily series across daylight-saving changes, with moved, cancelled and renamed instances

/// What one day of a daily series should look like: `None` = nothing that day.
type Day = (NaiveDate, Option<(u32, u32, &'static str, &'static str, String)>);

/// Checks each day's state at its instance, and the full list of switches over the window.
fn check_days(tl: &Timeline, from: DateTime<Utc>, days: &[Day]) {
    let mut expected = Vec::new();
    for (d, want) in days {
        match want {
            Some((h, m, profile, trigger, id)) => {
                let start = SE.from_local_datetime(&d.and_hms_opt(*h, *m, 0).unwrap()).single().unwrap();
                let (start, end) = (start.with_timezone(&Utc), start.with_timezone(&Utc) + Duration::minutes(30));
                assert_eq!(
                    tl.state_at(start + Duration::minutes(15)),
                    on(profile, start, end, id, trigger),
                    "{d} at {}",
                    local(start + Duration::minutes(15))
                );
                expected.push((start, end, *profile, *trigger, id.clone()));
            }
            None => {
                let nine =
                    SE.from_local_datetime(&d.and_hms_opt(9, 15, 0).unwrap()).single().unwrap().with_timezone(&Utc);
                assert_eq!(profile_at(tl, nine), None, "{d}: nothing at 09:15 local");
            }
        }
    }
    let mut transitions = Vec::new();
    for (i, (start, end, profile, trigger, id)) in expected.iter().enumerate() {
        transitions.push(switch(*start, profile, *end, id, trigger));
        transitions.push(back(*end, expected.get(i + 1).map(|n| n.0)));
    }
    let seen: Vec<String> = tl.upcoming(from).iter().map(|t| format!("{} {:?}", local(t.at), t.profile)).collect();
    assert_eq!(tl.upcoming(from), transitions, "switches seen: {seen:#?}");
}

#[test]
fn a_daily_series_across_the_spring_change_keeps_local_time_and_applies_its_exceptions() {
    // Daily 09:00-09:30 "Morgonmöte" from Thursday 26 March 2026; clocks go forward on
    // Sunday 29 March. 27th moved to 14:00, 28th cancelled, 30th renamed to a lunch.
    let first = se(2026, 3, 26, 9, 0);
    let master = series("daily", "Morgonmöte", first, first + Duration::minutes(30), &["RRULE:FREQ=DAILY"]);
    let events = [
        master,
        exception("daily", se(2026, 3, 27, 9, 0), "Morgonmöte", se(2026, 3, 27, 14, 0), se(2026, 3, 27, 14, 30)),
        cancelled_instance("daily", se(2026, 3, 28, 9, 0)),
        exception("daily", se(2026, 3, 30, 9, 0), "Lunch med kund", se(2026, 3, 30, 9, 0), se(2026, 3, 30, 9, 30)),
    ];
    let from = utc("2026-03-25T00:00:00Z");
    let tl = timeline(&events, from, utc("2026-04-02T00:00:00Z"));

    // The instants in UTC, written out: 08:00Z before the change, 07:00Z after.
    assert_eq!(cause_at(&tl, utc("2026-03-26T08:15:00Z")).as_deref(), Some("daily_20260326T080000Z"));
    assert_eq!(
        tl.state_at(utc("2026-03-29T07:15:00Z")),
        on("Möte", utc("2026-03-29T07:00:00Z"), utc("2026-03-29T07:30:00Z"), "daily_20260329T070000Z", "*möte"),
        "Sunday 29 March: 09:00 CEST is 07:00Z"
    );
    assert_eq!(profile_at(&tl, utc("2026-03-29T08:15:00Z")), None, "not at 10:00 local (a fixed-UTC expansion)");
    assert_eq!(profile_at(&tl, utc("2026-03-27T08:15:00Z")), None, "the moved instance left its slot");

    let id = |d: u32| instance_id("daily", se(2026, 3, d, 9, 0));
    let days: Vec<Day> = vec![
        (date(2026, 3, 26), Some((9, 0, "Möte", "*möte", id(26)))),
        (date(2026, 3, 27), Some((14, 0, "Möte", "*möte", id(27)))),
        (date(2026, 3, 28), None),
        (date(2026, 3, 29), Some((9, 0, "Möte", "*möte", id(29)))),
        (date(2026, 3, 30), Some((9, 0, "Lunch", "lunch", id(30)))),
        (date(2026, 3, 31), Some((9, 0, "Möte", "*möte", id(31)))),
        (date(2026, 4, 1), Some((9, 0, "Möte", "*möte", instance_id("daily", se(2026, 4, 1, 9, 0))))),
    ];
    check_days(&tl, from, &days);
}

#[test]
fn a_daily_series_across_the_autumn_change_keeps_local_time_and_applies_its_exceptions() {
    // Daily 09:00-09:30 from Thursday 22 October 2026; clocks go back on Sunday 25 October.
    // 24th moved to 14:00, 26th cancelled, 27th renamed to something without a trigger.
    let first = se(2026, 10, 22, 9, 0);
    let master = series("daily", "Morgonmöte", first, first + Duration::minutes(30), &["RRULE:FREQ=DAILY"]);
    let events = [
        master,
        exception("daily", se(2026, 10, 24, 9, 0), "Morgonmöte", se(2026, 10, 24, 14, 0), se(2026, 10, 24, 14, 30)),
        cancelled_instance("daily", se(2026, 10, 26, 9, 0)),
        exception("daily", se(2026, 10, 27, 9, 0), "Fika med teamet", se(2026, 10, 27, 9, 0), se(2026, 10, 27, 9, 30)),
    ];
    let from = utc("2026-10-21T00:00:00Z");
    let tl = timeline(&events, from, utc("2026-10-29T00:00:00Z"));

    assert_eq!(cause_at(&tl, utc("2026-10-23T07:15:00Z")).as_deref(), Some("daily_20261023T070000Z"));
    assert_eq!(
        tl.state_at(utc("2026-10-25T08:15:00Z")),
        on("Möte", utc("2026-10-25T08:00:00Z"), utc("2026-10-25T08:30:00Z"), "daily_20261025T080000Z", "*möte"),
        "Sunday 25 October: 09:00 CET is 08:00Z"
    );
    assert_eq!(profile_at(&tl, utc("2026-10-25T07:15:00Z")), None, "not at 08:00 local");

    let id = |d: u32| instance_id("daily", se(2026, 10, d, 9, 0));
    let days: Vec<Day> = vec![
        (date(2026, 10, 22), Some((9, 0, "Möte", "*möte", id(22)))),
        (date(2026, 10, 23), Some((9, 0, "Möte", "*möte", id(23)))),
        (date(2026, 10, 24), Some((14, 0, "Möte", "*möte", id(24)))),
        (date(2026, 10, 25), Some((9, 0, "Möte", "*möte", id(25)))),
        (date(2026, 10, 26), None),
        (date(2026, 10, 27), None),
        (date(2026, 10, 28), Some((9, 0, "Möte", "*möte", id(28)))),
    ];
    check_days(&tl, from, &days);
}

// =============================================================================================
// 3. All-day events cover whole local days

#[test]
fn an_all_day_semester_covers_local_midnight_to_local_midnight() {
    // (first day, exclusive end date, start and end as UTC instants)
    let cases = [
        ("three summer days", date(2026, 7, 7), date(2026, 7, 10), "2026-07-06T22:00:00Z", "2026-07-09T22:00:00Z"),
        (
            "over the spring change",
            date(2026, 3, 28),
            date(2026, 3, 31),
            "2026-03-27T23:00:00Z",
            "2026-03-30T22:00:00Z",
        ),
        (
            "over the autumn change",
            date(2026, 10, 24),
            date(2026, 10, 27),
            "2026-10-23T22:00:00Z",
            "2026-10-26T23:00:00Z",
        ),
        ("one winter day", date(2026, 11, 26), date(2026, 11, 27), "2026-11-25T23:00:00Z", "2026-11-26T23:00:00Z"),
    ];
    for (name, first, end, start_utc, end_utc) in cases {
        let (start_at, end_at) = (utc(start_utc), utc(end_utc));
        assert_eq!((se_midnight(first), se_midnight(end)), (start_at, end_at), "{name}: the table itself");
        let events = [all_day("v", "Semester i Åre", first, end)];
        let tl = timeline(&events, start_at - Duration::days(3), end_at + Duration::days(3));
        let one_sec = Duration::seconds(1);
        assert_eq!(tl.state_at(start_at - one_sec), off(None, Some(start_at)), "{name}: the evening before");
        assert_eq!(tl.state_at(start_at), on("Semester", start_at, end_at, "v", "semester"), "{name}: first midnight");
        assert_eq!(
            tl.state_at(end_at - one_sec),
            on("Semester", start_at, end_at, "v", "semester"),
            "{name}: last second"
        );
        assert_eq!(tl.state_at(end_at), off(Some(end_at), None), "{name}: the midnight after the last day");
        assert_eq!(
            tl.upcoming(start_at - Duration::hours(1)),
            [switch(start_at, "Semester", end_at, "v", "semester"), back(end_at, None)],
            "{name}"
        );
    }
}

// =============================================================================================
// 4. Which events count

#[test]
fn declined_cancelled_untitled_and_untriggered_events_do_not_count_the_rest_do() {
    let (start, end) = (se(2026, 6, 15, 10, 0), se(2026, 6, 15, 11, 0));
    let base = || event("e", "Möte", start, end);
    let cases: Vec<(&str, StoredEvent, bool)> = vec![
        ("a plain meeting", base(), true),
        ("declined by the user", StoredEvent { self_response: Some("declined".into()), ..base() }, false),
        ("cancelled", StoredEvent { status: Status::Cancelled, ..base() }, false),
        ("without a summary", StoredEvent { summary: None, ..base() }, false),
        ("a summary with no trigger", StoredEvent { summary: Some("Tandläkare".into()), ..base() }, false),
        ("accepted", StoredEvent { self_response: Some("accepted".into()), ..base() }, true),
        ("not yet answered", StoredEvent { self_response: Some("needsAction".into()), ..base() }, true),
        ("answered maybe", StoredEvent { self_response: Some("tentative".into()), ..base() }, true),
        ("tentative status", StoredEvent { status: Status::Tentative, ..base() }, true),
        ("transparent (shows as free)", StoredEvent { transparent: true, ..base() }, true),
        ("private", StoredEvent { visibility: "private".into(), ..base() }, true),
        ("confidential", StoredEvent { visibility: "confidential".into(), ..base() }, true),
        (
            "out of office with a trigger",
            StoredEvent { event_type: "outOfOffice".into(), summary: Some("Semester".into()), ..base() },
            true,
        ),
    ];
    let (from, until) = june_window();
    for (name, e, counts) in cases {
        let expected_profile = e.summary.as_deref().map(|s| if s == "Semester" { "Semester" } else { "Möte" });
        let tl = timeline(std::slice::from_ref(&e), from, until);
        let state = tl.state_at(se(2026, 6, 15, 10, 30));
        if counts {
            assert_eq!(state.profile.as_deref(), expected_profile, "{name}");
            assert_eq!((state.since, state.until), (Some(start), Some(end)), "{name}");
            assert_eq!(state.cause.map(|c| c.event_id).as_deref(), Some("e"), "{name}");
        } else {
            assert_eq!(state, off(None, None), "{name}: nothing at all");
            assert!(tl.upcoming(from).is_empty(), "{name}: no switches");
        }
    }
}

#[test]
fn a_declined_instance_of_a_series_leaves_a_gap_in_it() {
    let first = se(2026, 6, 15, 12, 0);
    let events = [
        series("l", "Lunch", first, first + Duration::hours(1), &["RRULE:FREQ=DAILY;COUNT=3"]),
        StoredEvent {
            self_response: Some("declined".into()),
            ..exception("l", se(2026, 6, 16, 12, 0), "Lunch", se(2026, 6, 16, 12, 0), se(2026, 6, 16, 13, 0))
        },
    ];
    let (from, _) = june_window();
    let tl = timeline(&events, from, utc("2026-06-20T00:00:00Z"));
    let seen: Vec<_> = [15, 16, 17].iter().map(|d| profile_at(&tl, se(2026, 6, *d, 12, 30))).collect();
    assert_eq!(seen, [Some("Lunch".to_string()), None, Some("Lunch".to_string())]);
}

// =============================================================================================
// 5. Triggers

/// The active profile's name and the trigger that activated it.
type ProfileAndTrigger = (&'static str, &'static str);

#[test]
fn triggers_match_compounds_and_the_higher_priority_profile_takes_a_double_match() {
    let (from, until) = june_window();
    let lunch_first = [profile("Lunch", &["lunch*"]), profile("Möte", &["*Möte"])];
    let meeting_first = [profile("Möte", &["*Möte"]), profile("Lunch", &["lunch*"])];
    // (profiles, summary, expected profile and trigger as configured)
    let cases: &[(&[Profile], &str, Option<ProfileAndTrigger>)] = &[
        (&lunch_first, "Kundmöte", Some(("Möte", "*Möte"))),
        (&lunch_first, "KUNDMÖTE i Malmö", Some(("Möte", "*Möte"))),
        (&lunch_first, "möte", Some(("Möte", "*Möte"))),
        (&lunch_first, "Lunchmöte", Some(("Lunch", "lunch*"))),
        (&lunch_first, "Möte, sedan lunch", Some(("Lunch", "lunch*"))),
        (&meeting_first, "Lunchmöte", Some(("Möte", "*Möte"))),
        (&meeting_first, "Möte, sedan lunch", Some(("Möte", "*Möte"))),
        (&lunch_first, "Mötesrum bokat", None),
        (&lunch_first, "Brunch", None),
    ];
    for (profiles, summary, want) in cases {
        let events = [event("e", summary, se(2026, 6, 15, 10, 0), se(2026, 6, 15, 11, 0))];
        let tl = compute(&events, profiles, from, until);
        let state = tl.state_at(se(2026, 6, 15, 10, 30));
        let got = state.profile.as_deref().zip(state.cause.as_ref().and_then(|c| c.trigger.as_deref()));
        let order: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(got, *want, "{summary:?} with profiles {order:?}");
    }
}

// =============================================================================================
// 6. The window

#[test]
fn the_window_keeps_what_overlaps_it_and_lists_the_switches_ahead() {
    let from = utc("2026-06-15T06:00:00Z"); // 08:00 local
    let until = utc("2026-06-16T06:00:00Z");
    let t = |h, m| se(2026, 6, 15, h, m);
    let events = [
        event("early", "Möte", t(5, 0), t(6, 0)),    // ended before the window
        event("edge", "Möte", t(7, 0), t(8, 0)),     // ends exactly at `from`
        event("running", "Möte", t(7, 30), t(9, 0)), // began before `from`, runs into it
        event("lunch", "Lunch", t(10, 0), t(11, 0)),
        event("meeting", "Kundmöte", t(11, 0), t(12, 0)), // right after lunch
        event("late", "Möte", t(14, 0), t(15, 0)),
        event("tomorrow", "Möte", se(2026, 6, 16, 8, 0), se(2026, 6, 16, 9, 0)), // starts exactly at `until`
        event("next-week", "Lunch", se(2026, 6, 22, 12, 0), se(2026, 6, 22, 13, 0)),
    ];
    let tl = timeline(&events, from, until);

    assert_eq!(tl.state_at(from), on("Möte", t(7, 30), t(9, 0), "running", "möte"), "current at `from`, real since");
    for (when, name) in [
        (t(5, 30), "early"),
        (t(7, 15), "edge"),
        (se(2026, 6, 16, 8, 30), "tomorrow"),
        (se(2026, 6, 22, 12, 30), "next-week"),
    ] {
        assert_eq!(profile_at(&tl, when), None, "{name} lies outside the window");
    }
    let all = [
        back(t(9, 0), Some(t(10, 0))),
        switch(t(10, 0), "Lunch", t(11, 0), "lunch", "lunch"),
        switch(t(11, 0), "Möte", t(12, 0), "meeting", "*möte"),
        back(t(12, 0), Some(t(14, 0))),
        switch(t(14, 0), "Möte", t(15, 0), "late", "möte"),
        back(t(15, 0), None),
    ];
    assert_eq!(tl.upcoming(from), all);
    assert_eq!(tl.upcoming(t(10, 30)), all[2..], "from the middle of lunch");
    assert_eq!(tl.upcoming(t(11, 0)), all[3..], "a switch at `t` itself is not upcoming");
    assert_eq!(tl.upcoming(t(15, 0)), [], "nothing after the last end");

    let boundaries = [
        (from, Some(t(9, 0))),
        (t(9, 0), Some(t(10, 0))),
        (t(10, 30), Some(t(11, 0))),
        (t(11, 0), Some(t(12, 0))),
        (t(12, 0), Some(t(14, 0))),
        (t(14, 59), Some(t(15, 0))),
        (t(15, 0), None),
    ];
    for (at, want) in boundaries {
        assert_eq!(tl.next_boundary(at), want, "after {}", local(at));
    }
}

// =============================================================================================
// 7. Series rules: UNTIL, COUNT, EXDATE, and rules that cannot be read

/// The local dates (at 12:00) on which a Lunch series starting Monday 15 June 2026 is seen.
fn lunch_days(rules: &[&str]) -> Vec<NaiveDate> {
    let first = se(2026, 6, 15, 12, 0);
    let events = [series("s", "Lunch", first, first + Duration::hours(1), rules)];
    let tl = timeline(&events, utc("2026-06-14T00:00:00Z"), utc("2026-06-29T00:00:00Z"));
    let mut days = Vec::new();
    for tr in tl.upcoming(utc("2026-06-14T00:00:00Z")) {
        if tr.profile.is_some() {
            let at = tr.at.with_timezone(&SE);
            assert_eq!(at.format("%H:%M").to_string(), "12:00", "{rules:?}: starts at 12:00 local");
            let id = tr.cause.map(|c| c.event_id).unwrap_or_default();
            assert_eq!(id, instance_id("s", tr.at), "{rules:?}: Google's instance id");
            days.push(at.date_naive());
        }
    }
    days
}

#[test]
fn series_rules_until_count_and_exdate_are_honoured() {
    let june = |ds: &[u32]| ds.iter().map(|d| date(2026, 6, *d)).collect::<Vec<_>>();
    let cases: &[(&[&str], Vec<NaiveDate>)] = &[
        (&["RRULE:FREQ=DAILY;UNTIL=20260619T215959Z"], june(&[15, 16, 17, 18, 19])),
        (&["RRULE:FREQ=DAILY;UNTIL=20260619T100000Z"], june(&[15, 16, 17, 18, 19])), // UNTIL = the last start
        (&["RRULE:FREQ=DAILY;UNTIL=20260619T095959Z"], june(&[15, 16, 17, 18])),
        (&["RRULE:FREQ=DAILY;UNTIL=20260617"], june(&[15, 16, 17])),
        (&["RRULE:FREQ=WEEKLY;BYDAY=MO,WE,FR;COUNT=4"], june(&[15, 17, 19, 22])),
        (&["RRULE:FREQ=DAILY;COUNT=5", "EXDATE;TZID=Europe/Stockholm:20260617T120000"], june(&[15, 16, 18, 19])),
        (
            &["RRULE:FREQ=DAILY;COUNT=5", "EXDATE;TZID=Europe/Stockholm:20260616T120000,20260618T120000"],
            june(&[15, 17, 19]),
        ),
        (&["EXDATE:20260617T100000Z", "RRULE:FREQ=WEEKLY;BYDAY=MO,WE"], june(&[15, 22, 24])),
        (&["RRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=MO"], june(&[15])),
    ];
    for (rules, want) in cases {
        assert_eq!(&lunch_days(rules), want, "{rules:?}");
    }
}

#[test]
fn a_series_with_an_unreadable_rule_is_left_out_and_the_rest_still_counts() {
    let (from, until) = (utc("2026-06-14T00:00:00Z"), utc("2026-06-21T00:00:00Z"));
    let lunch = se(2026, 6, 15, 12, 0);
    let meeting = se(2026, 6, 15, 9, 0);
    let events = [
        series("bad", "Lunch", lunch, lunch + Duration::hours(1), &["RRULE:FREQ=FORTNIGHTLY"]),
        series("good", "Möte", meeting, meeting + Duration::hours(1), &["RRULE:FREQ=DAILY;COUNT=3"]),
        event("once", "Lunch", se(2026, 6, 16, 12, 0), se(2026, 6, 16, 13, 0)),
    ];
    let tl = timeline(&events, from, until);
    let seen: Vec<(String, Option<String>)> = tl
        .upcoming(from)
        .into_iter()
        .filter(|t| t.profile.is_some())
        .map(|t| (local(t.at), t.cause.map(|c| c.event_id)))
        .collect();
    let want: Vec<(String, Option<String>)> = vec![
        (local(se(2026, 6, 15, 9, 0)), Some(instance_id("good", se(2026, 6, 15, 9, 0)))),
        (local(se(2026, 6, 16, 9, 0)), Some(instance_id("good", se(2026, 6, 16, 9, 0)))),
        (local(se(2026, 6, 16, 12, 0)), Some("once".into())),
        (local(se(2026, 6, 17, 9, 0)), Some(instance_id("good", se(2026, 6, 17, 9, 0)))),
    ];
    assert_eq!(seen, want);
    assert_eq!(profile_at(&tl, se(2026, 6, 15, 12, 30)), None, "the unreadable series is not guessed at");
}

#[test]
fn a_series_begun_years_ago_or_in_winter_keeps_its_local_time_this_summer() {
    let (from, until) = (utc("2026-06-14T00:00:00Z"), utc("2026-06-28T00:00:00Z"));
    let old = se(2019, 1, 7, 12, 0); // a daily lunch since January 2019 (CET)
    let winter = se(2026, 1, 5, 9, 0); // a Monday meeting since January 2026 (CET)
    let events = [
        series("old", "Lunch", old, old + Duration::hours(1), &["RRULE:FREQ=DAILY"]),
        series("wk", "Möte", winter, winter + Duration::hours(1), &["RRULE:FREQ=WEEKLY;BYDAY=MO"]),
    ];
    let tl = timeline(&events, from, until);
    let mut want = Vec::new();
    for d in 14..28 {
        if d == 15 || d == 22 {
            let m = se(2026, 6, d, 9, 0);
            want.push(switch(m, "Möte", m + Duration::hours(1), &instance_id("wk", m), "möte"));
            want.push(back(m + Duration::hours(1), Some(se(2026, 6, d, 12, 0))));
        }
        let l = se(2026, 6, d, 12, 0);
        want.push(switch(l, "Lunch", l + Duration::hours(1), &instance_id("old", l), "lunch"));
        let next = if d + 1 == 15 || d + 1 == 22 { se(2026, 6, d + 1, 9, 0) } else { se(2026, 6, d + 1, 12, 0) };
        want.push(back(l + Duration::hours(1), (d < 27).then_some(next)));
    }
    assert_eq!(tl.upcoming(from), want);
}

#[test]
fn an_all_day_weekend_series_covers_local_days_across_the_spring_change_and_drops_a_cancelled_weekend() {
    // Weekly Saturday+Sunday "Semester" (end exclusive on Monday), three weekends from 21 March
    // 2026; the weekend of 28-29 March spans the change to summer time; 4 April is cancelled.
    let master = StoredEvent {
        recurrence: vec!["RRULE:FREQ=WEEKLY;BYDAY=SA;COUNT=3".into()],
        ..all_day("we", "Semester", date(2026, 3, 21), date(2026, 3, 23))
    };
    let cancelled = StoredEvent {
        id: "we_20260404".into(),
        status: Status::Cancelled,
        summary: None,
        start: None,
        end: None,
        recurring_event_id: Some("we".into()),
        original_start: Some(EventTime::Date(date(2026, 4, 4))),
        ..all_day("x", "", date(2026, 4, 4), date(2026, 4, 5))
    };
    let from = utc("2026-03-16T00:00:00Z");
    let tl = timeline(&[master, cancelled], from, utc("2026-04-12T00:00:00Z"));
    assert_eq!(
        tl.upcoming(from),
        [
            switch(utc("2026-03-20T23:00:00Z"), "Semester", utc("2026-03-22T23:00:00Z"), "we_20260321", "semester"),
            back(utc("2026-03-22T23:00:00Z"), Some(utc("2026-03-27T23:00:00Z"))),
            switch(utc("2026-03-27T23:00:00Z"), "Semester", utc("2026-03-29T22:00:00Z"), "we_20260328", "semester"),
            back(utc("2026-03-29T22:00:00Z"), None),
        ]
    );
}
