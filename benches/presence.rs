//! Timeline recomputation: 10,000 users with a realistic calendar each (daily and weekly series
//! with exceptions, single events, an all-day event, a declined one). Reports the time to
//! recompute one user's timeline after a change (p50, p99) — over the 3-day window the
//! scheduler keeps in memory, and over the 14-day horizon the presence API computes on request —
//! and the memory the kept timelines of all users take.
//!
//!     cargo bench --bench presence

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use gwsync::model::event::{EventTime, Status, StoredEvent};
use gwsync::model::user::Profile;
use gwsync::presence::timeline::{Profiles, Timeline};

const USERS: usize = 10_000;

fn event(id: String, summary: &str, start: EventTime, end: EventTime) -> StoredEvent {
    StoredEvent {
        id,
        status: Status::Confirmed,
        summary: Some(summary.to_owned()),
        start: Some(start),
        end: Some(end),
        recurrence: vec![],
        recurring_event_id: None,
        original_start: None,
        transparent: false,
        event_type: "default".into(),
        visibility: "default".into(),
        self_response: None,
        updated: None,
    }
}

fn at(zone: Tz, d: NaiveDate, h: u32, m: u32) -> EventTime {
    let t = zone
        .from_local_datetime(&d.and_hms_opt(h, m, 0).expect("time"))
        .earliest()
        .expect("local time")
        .with_timezone(&Utc);
    EventTime::DateTime { at: t, tz: Some(zone.name().to_owned()) }
}

/// About 40 events per user: 2 daily and 4 weekly series (with a moved and a cancelled
/// instance), 25 single meetings over the fortnight, an all-day trip, a declined invitation.
fn calendar(u: usize, zone: Tz, today: NaiveDate) -> Vec<StoredEvent> {
    let mut events = Vec::new();
    let series_start = today - chrono::Days::new(30);
    let mut daily =
        event(format!("u{u}standup"), "Daily stand-up", at(zone, series_start, 9, 0), at(zone, series_start, 9, 15));
    daily.recurrence = vec!["RRULE:FREQ=DAILY;BYDAY=MO,TU,WE,TH,FR".into()];
    events.push(daily);
    let mut lunch = event(format!("u{u}lunch"), "Lunch", at(zone, series_start, 12, 0), at(zone, series_start, 13, 0));
    lunch.recurrence = vec![
        "RRULE:FREQ=DAILY".into(),
        format!("EXDATE;TZID={}:{}T120000", zone.name(), (today + chrono::Days::new(3)).format("%Y%m%d")),
    ];
    events.push(lunch);
    for (i, (name, weekday, hour)) in
        [("Kundmöte", "MO", 14), ("1:1", "TU", 10), ("Planning", "WE", 15), ("Retro", "FR", 11)].iter().enumerate()
    {
        let mut w =
            event(format!("u{u}w{i}"), name, at(zone, series_start, *hour, 0), at(zone, series_start, *hour + 1, 0));
        w.recurrence = vec![format!("RRULE:FREQ=WEEKLY;BYDAY={weekday}")];
        events.push(w);
    }
    // A moved and a cancelled instance of the stand-up.
    let moved_day = today + chrono::Days::new(1);
    let mut moved =
        event(format!("u{u}standup_moved"), "Daily stand-up", at(zone, moved_day, 10, 0), at(zone, moved_day, 10, 15));
    moved.recurring_event_id = Some(format!("u{u}standup"));
    moved.original_start = Some(at(zone, moved_day, 9, 0));
    events.push(moved);
    let gone_day = today + chrono::Days::new(2);
    let mut gone =
        event(format!("u{u}standup_gone"), "Daily stand-up", at(zone, gone_day, 9, 0), at(zone, gone_day, 9, 15));
    gone.status = Status::Cancelled;
    gone.recurring_event_id = Some(format!("u{u}standup"));
    gone.original_start = Some(at(zone, gone_day, 9, 0));
    events.push(gone);
    for i in 0..25u32 {
        let d = today + chrono::Days::new(u64::from(i % 14));
        let h = 8 + (i * 7 + u as u32) % 9;
        let name = ["Möte med Volvo", "Lunch with a customer", "Interview", "Workshop", "Call"][(i as usize + u) % 5];
        events.push(event(format!("u{u}s{i}"), name, at(zone, d, h, 30), at(zone, d, h + 1, 0)));
    }
    let trip = today + chrono::Days::new(9);
    events.push(event(
        format!("u{u}trip"),
        "Semester",
        EventTime::Date(trip),
        EventTime::Date(trip + chrono::Days::new(3)),
    ));
    let mut declined =
        event(format!("u{u}declined"), "Lunch at the board", at(zone, today, 12, 0), at(zone, today, 13, 0));
    declined.self_response = Some("declined".into());
    events.push(declined);
    events
}

/// Counts live heap bytes, so each run's memory is measured exactly (an RSS difference would
/// hide the second run inside pages the first one freed).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live_bytes() -> usize {
    LIVE.load(Ordering::Relaxed)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((p / 100.0) * (sorted.len() - 1) as f64).round() as usize]
}

fn main() {
    let zone: Tz = "Europe/Stockholm".parse().expect("zone");
    let now: DateTime<Utc> = Utc::now();
    let today = now.with_timezone(&zone).date_naive();
    let profiles = Profiles::new(&[
        Profile { name: "Semester".into(), triggers: vec!["semester".into(), "ledig".into()] },
        Profile { name: "Lunch".into(), triggers: vec!["lunch".into()] },
        Profile {
            name: "Möte".into(),
            triggers: vec!["*möte".into(), "meeting".into(), "1:1".into(), "interview".into()],
        },
    ]);
    let calendars: Vec<Vec<StoredEvent>> = (0..USERS).map(|u| calendar(u, zone, today)).collect();
    let events: usize = calendars.iter().map(Vec::len).sum();
    let from = now - chrono::Duration::days(2);
    // The scheduler keeps each user's 3-day window (LOOKBACK + SCHEDULE_WINDOW in the engine);
    // the presence API computes the 14-day horizon on request and keeps nothing.
    for (label, ahead) in [("3-day window (kept by the scheduler)", 3), ("14-day horizon (presence API)", 14)] {
        let until = now + chrono::Duration::days(ahead);
        let before = live_bytes();
        let mut timelines = Vec::with_capacity(USERS);
        let mut times = Vec::with_capacity(USERS);
        for cal in &calendars {
            let t = Instant::now();
            let timeline = Timeline::compute(cal, &profiles, zone, from, until);
            times.push(t.elapsed());
            timelines.push(timeline);
        }
        let after = live_bytes();
        times.sort();
        let segments: usize = timelines.iter().map(|t| t.segments.len()).sum();
        println!("{label}: {USERS} users, {events} stored events, {segments} profile segments");
        println!(
            "  recompute one user's timeline: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            percentile(&times, 50.0).as_secs_f64() * 1e3,
            percentile(&times, 99.0).as_secs_f64() * 1e3,
            times.last().map_or(0.0, |d| d.as_secs_f64() * 1e3)
        );
        println!(
            "  heap of all {USERS} timelines: {:.1} MiB ({:.0} bytes per user)",
            after.saturating_sub(before) as f64 / 1048576.0,
            after.saturating_sub(before) as f64 / USERS as f64
        );
        drop(timelines);
    }
}
