//! A user's presence over time: which events count, which profile each one activates, and who
//! wins where they overlap.
//!
//! An event counts unless it is cancelled or declined by the user. Calendar status events
//! (Google's `eventType`, DESIGN §4) come first: an out-of-office or focus-time event the user's
//! status mapping names a profile for activates that profile whatever its title (its cause names
//! the event type and no trigger); working locations, birthdays and Gmail's events never count
//! (Google writes their titles). Any other event — out of office and focus time without a
//! mapping too — needs a summary; its profile is the highest-priority profile (earliest in the
//! user's list) with a matching trigger. All-day
//! events cover whole days in the calendar's time zone. Series are expanded over the window with
//! their moved, renamed and cancelled instances applied. Where intervals overlap, the
//! highest-priority profile wins; between equals, the event that started last. Back-to-back
//! stretches of one profile form one *run*: one switch for the phone system, whose `since` and
//! `until` are the run's, while `cause` names the event winning at that moment.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use super::matcher::{Summary, Trigger};
use super::recurrence;
use crate::model::event::{EventTime, NEVER_SWITCHING_EVENT_TYPES, StoredEvent};
pub use crate::model::presence::{Cause, State};
use crate::model::user::{Profile, STATUS_EVENT_TYPES, StatusEvents};

/// The profiles of a user, prepared for matching; index 0 has the highest priority.
#[derive(Debug, Clone)]
pub struct Profiles {
    pub names: Vec<String>,
    triggers: Vec<Vec<Trigger>>,
    /// Google event types (`outOfOffice`, `focusTime`) and the profile each one activates.
    status: Vec<(&'static str, usize)>,
}

impl Profiles {
    pub fn new(profiles: &[Profile]) -> Self {
        Self::with_status_events(profiles, &StatusEvents::default())
    }

    /// With the user's status mapping in effect (names not among the profiles are ignored).
    pub fn with_status_events(profiles: &[Profile], status: &StatusEvents) -> Self {
        let index = |name: &str| profiles.iter().position(|p| p.name.to_lowercase() == name.to_lowercase());
        Profiles {
            names: profiles.iter().map(|p| p.name.clone()).collect(),
            triggers: profiles.iter().map(|p| p.triggers.iter().filter_map(|t| Trigger::new(t)).collect()).collect(),
            status: STATUS_EVENT_TYPES
                .iter()
                .filter_map(|(field, event_type)| status.get(field).and_then(index).map(|i| (*event_type, i)))
                .collect(),
        }
    }

    /// The profile a status event of this type activates, if the user mapped it.
    fn for_status(&self, event_type: &str) -> Option<usize> {
        self.status.iter().find(|(t, _)| *t == event_type).map(|(_, i)| *i)
    }

    /// The profile an event claims and the trigger that matched (none for a mapped status event).
    fn claim(&self, e: &StoredEvent) -> Option<(usize, Option<String>)> {
        if NEVER_SWITCHING_EVENT_TYPES.contains(&e.event_type.as_str()) {
            return None;
        }
        if let Some(profile) = self.for_status(&e.event_type) {
            return Some((profile, None));
        }
        let (profile, trigger) = self.classify(e.summary.as_deref()?)?;
        Some((profile, Some(trigger.text.clone())))
    }

    /// The winning profile and trigger for a summary.
    fn classify(&self, summary: &str) -> Option<(usize, &Trigger)> {
        let s = Summary::new(summary);
        self.triggers.iter().enumerate().find_map(|(i, ts)| ts.iter().find(|t| t.matches(&s)).map(|t| (i, t)))
    }
}

/// One event's claim on a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub profile: usize,
    pub cause: Cause,
}

fn counts(e: &StoredEvent) -> bool {
    !e.is_cancelled() && e.self_response.as_deref() != Some("declined")
}

/// Every interval overlapping `[from, until)`, and the ids of series that hit an expansion
/// limit (`recurrence::MAX_OCCURRENCES`, `recurrence::MAX_GENERATED`) in the window.
///
/// Series are expanded from `series_from` (at most `from`'s later than it): their instance
/// limit then counts from there, so a minutely series cannot use it up in the lookback before
/// now. An instance running at `series_from` is still included.
pub fn intervals(
    events: &[StoredEvent],
    profiles: &Profiles,
    zone: Tz,
    from: DateTime<Utc>,
    series_from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> (Vec<Interval>, Vec<String>) {
    let series_from = series_from.max(from);
    let mut capped = Vec::new();
    // Exceptions of each series, by the slot they replace.
    let mut exceptions: HashMap<&str, Vec<DateTime<Utc>>> = HashMap::new();
    for e in events {
        if let (Some(master), Some(original)) = (&e.recurring_event_id, &e.original_start) {
            exceptions.entry(master.as_str()).or_default().push(original.instant_in(zone));
        }
    }
    let mut out = Vec::new();
    let mut push = |id: String, claim: &Claim, start: &EventTime, end: &EventTime| {
        let (s, t) = (start.instant_in(zone), end.instant_in(zone));
        if t > s && t > from && s < until {
            out.push(Interval {
                start: s,
                end: t,
                profile: claim.profile,
                cause: Cause { event_id: id, event_type: claim.event_type.clone(), trigger: claim.trigger.clone() },
            });
        }
    };
    for e in events {
        let (Some(start), Some(end)) = (&e.start, &e.end) else { continue };
        // Classified once per event (a series' instances share its summary and type).
        if !counts(e) {
            continue;
        }
        let Some((profile, trigger)) = profiles.claim(e) else { continue };
        let claim = Claim { profile, trigger, event_type: (e.event_type != "default").then(|| e.event_type.clone()) };
        if e.is_series() {
            let Some(expansion) = recurrence::expand(start, end, &e.recurrence, zone, series_from, until) else {
                tracing::warn!(event = %e.id, "a series' recurrence rules cannot be read; it is left out");
                continue;
            };
            if expansion.capped {
                capped.push(e.id.clone());
            }
            let replaced = exceptions.get(e.id.as_str());
            for occ in expansion.occurrences {
                let slot = occ.original_start.instant_in(zone);
                if replaced.is_some_and(|r| r.contains(&slot)) {
                    continue;
                }
                push(format!("{}_{}", e.id, instance_suffix(&occ.original_start)), &claim, &occ.start, &occ.end);
            }
        } else {
            push(e.id.clone(), &claim, start, end);
        }
    }
    (out, capped)
}

/// An event's claim on a profile, shared by a series' instances.
struct Claim {
    profile: usize,
    trigger: Option<String>,
    event_type: Option<String>,
}

/// Google's instance-id suffix for an original start.
fn instance_suffix(t: &EventTime) -> String {
    match t {
        EventTime::DateTime { at, .. } => at.format("%Y%m%dT%H%M%SZ").to_string(),
        EventTime::Date(d) => d.format("%Y%m%d").to_string(),
    }
}

/// A stretch of time with one winning event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub profile: usize,
    pub cause: Cause,
}

/// The user's segments, in order and non-overlapping: one per stretch of one winning event.
pub fn segments(intervals: &[Interval]) -> Vec<Segment> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    // A sweep over the boundaries: intervals join a heap as they start; the top is the winner
    // (highest priority, then latest start, then lowest id), and ended ones leave it lazily.
    let mut by_start: Vec<&Interval> = intervals.iter().collect();
    by_start.sort_by_key(|i| i.start);
    let mut bounds: Vec<DateTime<Utc>> = intervals.iter().flat_map(|i| [i.start, i.end]).collect();
    bounds.sort();
    bounds.dedup();
    // Entries end with the interval's index in `by_start` (Interval itself is not Ord).
    // (priority, latest start first, lowest id, end, index): the smallest is the winner.
    type Entry<'a> = Reverse<(usize, Reverse<DateTime<Utc>>, &'a str, DateTime<Utc>, usize)>;
    let mut heap: BinaryHeap<Entry> = BinaryHeap::new();
    let mut next = 0;
    let mut out: Vec<Segment> = Vec::new();
    for w in bounds.windows(2) {
        let (a, b) = (w[0], w[1]);
        while let Some(i) = by_start.get(next).filter(|i| i.start <= a) {
            heap.push(Reverse((i.profile, Reverse(i.start), i.cause.event_id.as_str(), i.end, next)));
            next += 1;
        }
        while heap.peek().is_some_and(|Reverse((_, _, _, end, _))| *end <= a) {
            heap.pop();
        }
        let Some(&Reverse((_, _, _, _, top))) = heap.peek() else { continue };
        let w = by_start[top];
        match out.last_mut() {
            Some(last) if last.end == a && last.cause == w.cause => last.end = b,
            _ => out.push(Segment { start: a, end: b, profile: w.profile, cause: w.cause.clone() }),
        }
    }
    out
}

/// A user's timeline over a window.
#[derive(Debug, Clone)]
pub struct Timeline {
    pub names: Vec<String>,
    pub segments: Vec<Segment>,
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// Series that hit an expansion limit in the window: only their first instances count.
    pub capped: Vec<String>,
}

/// One upcoming switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub at: DateTime<Utc>,
    pub profile: Option<String>,
    pub until: Option<DateTime<Utc>>,
    pub cause: Option<Cause>,
}

impl Timeline {
    pub fn compute(
        events: &[StoredEvent],
        profiles: &Profiles,
        zone: Tz,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Timeline {
        Self::compute_from(events, profiles, zone, from, from, until)
    }

    /// `compute`, expanding series only from `series_from` (now): single events still count
    /// from `from` (the lookback), and series' instance limits count from now.
    pub fn compute_from(
        events: &[StoredEvent],
        profiles: &Profiles,
        zone: Tz,
        from: DateTime<Utc>,
        series_from: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Timeline {
        let (iv, capped) = intervals(events, profiles, zone, from, series_from, until);
        Timeline { names: profiles.names.clone(), segments: segments(&iv), from, until, capped }
    }

    /// Runs: index ranges (inclusive) of contiguous segments with one profile.
    fn runs(&self) -> Vec<(usize, usize)> {
        let mut out: Vec<(usize, usize)> = Vec::new();
        for (i, s) in self.segments.iter().enumerate() {
            match out.last_mut() {
                Some((_, last)) if self.segments[*last].end == s.start && self.segments[*last].profile == s.profile => {
                    *last = i
                }
                _ => out.push((i, i)),
            }
        }
        out
    }

    /// The state at `t`.
    pub fn state_at(&self, t: DateTime<Utc>) -> State {
        let runs = self.runs();
        let current = self.segments.iter().position(|s| s.start <= t && t < s.end);
        match current.and_then(|i| runs.iter().find(|(a, b)| (*a..=*b).contains(&i)).map(|r| (i, *r))) {
            Some((i, (first, last))) => State {
                profile: Some(self.names[self.segments[i].profile].clone()),
                since: Some(self.segments[first].start),
                until: Some(self.segments[last].end),
                cause: Some(self.segments[i].cause.clone()),
            },
            None => State {
                profile: None,
                since: self.segments.iter().rev().find(|s| s.end <= t).map(|s| s.end),
                until: self.segments.iter().find(|s| s.start > t).map(|s| s.start),
                cause: None,
            },
        }
    }

    /// The switches after `t`, in order: each run's start, and its end unless another run
    /// starts right there.
    pub fn upcoming(&self, t: DateTime<Utc>) -> Vec<Transition> {
        let runs = self.runs();
        let mut out = Vec::new();
        for (k, &(first, last)) in runs.iter().enumerate() {
            let (start, end) = (self.segments[first].start, self.segments[last].end);
            if start > t {
                out.push(Transition {
                    at: start,
                    profile: Some(self.names[self.segments[first].profile].clone()),
                    until: Some(end),
                    cause: Some(self.segments[first].cause.clone()),
                });
            }
            let next_start = runs.get(k + 1).map(|&(f, _)| self.segments[f].start);
            if end > t && next_start != Some(end) {
                out.push(Transition { at: end, profile: None, until: next_start, cause: None });
            }
        }
        out
    }

    /// The first moment after `t` at which the state changes for the phone system.
    pub fn next_boundary(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.runs()
            .iter()
            .flat_map(|&(first, last)| [self.segments[first].start, self.segments[last].end])
            .filter(|b| *b > t)
            .min()
    }
}
