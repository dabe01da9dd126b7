//! A user's presence over time: which events count, which profile each one activates, and who
//! wins where they overlap.
//!
//! An event counts unless it is cancelled, declined by the user, or has no summary; its profile
//! is the highest-priority profile (earliest in the user's list) with a matching trigger. All-day
//! events cover whole days in the calendar's time zone. Series are expanded over the window with
//! their moved, renamed and cancelled instances applied. Where intervals overlap, the
//! highest-priority profile wins; between equals, the event that started last.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::matcher::{Summary, Trigger};
use super::recurrence;
use crate::model::event::{EventTime, StoredEvent};
use crate::model::user::Profile;

/// The profiles of a user, prepared for matching; index 0 has the highest priority.
#[derive(Debug, Clone)]
pub struct Profiles {
    pub names: Vec<String>,
    triggers: Vec<Vec<Trigger>>,
}

impl Profiles {
    pub fn new(profiles: &[Profile]) -> Self {
        Profiles {
            names: profiles.iter().map(|p| p.name.clone()).collect(),
            triggers: profiles.iter().map(|p| p.triggers.iter().filter_map(|t| Trigger::new(t)).collect()).collect(),
        }
    }

    /// The winning profile and trigger for a summary.
    fn classify(&self, summary: &str) -> Option<(usize, &Trigger)> {
        let s = Summary::new(summary);
        self.triggers.iter().enumerate().find_map(|(i, ts)| ts.iter().find(|t| t.matches(&s)).map(|t| (i, t)))
    }
}

/// Why a profile is active.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cause {
    pub event_id: String,
    pub trigger: String,
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

/// Every interval overlapping `[from, until)`.
pub fn intervals(
    events: &[StoredEvent],
    profiles: &Profiles,
    zone: Tz,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<Interval> {
    // Exceptions of each series, by the slot they replace.
    let mut exceptions: HashMap<&str, Vec<DateTime<Utc>>> = HashMap::new();
    for e in events {
        if let (Some(master), Some(original)) = (&e.recurring_event_id, &e.original_start) {
            exceptions.entry(master.as_str()).or_default().push(original.instant_in(zone));
        }
    }
    let mut out = Vec::new();
    let mut push = |e: &StoredEvent, start: &EventTime, end: &EventTime| {
        if !counts(e) {
            return;
        }
        let Some((profile, trigger)) = e.summary.as_deref().and_then(|s| profiles.classify(s)) else { return };
        let (s, t) = (start.instant_in(zone), end.instant_in(zone));
        if t > s && t > from && s < until {
            out.push(Interval {
                start: s,
                end: t,
                profile,
                cause: Cause { event_id: e.id.clone(), trigger: trigger.text.clone() },
            });
        }
    };
    for e in events {
        let (Some(start), Some(end)) = (&e.start, &e.end) else { continue };
        if e.is_series() {
            let Some(occurrences) = recurrence::expand(start, end, &e.recurrence, zone, from, until) else {
                tracing::warn!(event = %e.id, "a series' recurrence rules cannot be read; it is left out");
                continue;
            };
            let replaced = exceptions.get(e.id.as_str());
            for occ in occurrences {
                let slot = occ.original_start.instant_in(zone);
                if replaced.is_some_and(|r| r.contains(&slot)) {
                    continue;
                }
                let mut instance = e.clone();
                instance.id = format!("{}_{}", e.id, instance_suffix(&occ.original_start));
                push(&instance, &occ.start, &occ.end);
            }
        } else {
            push(e, start, end);
        }
    }
    out
}

/// Google's instance-id suffix for an original start.
fn instance_suffix(t: &EventTime) -> String {
    match t {
        EventTime::DateTime { at, .. } => at.format("%Y%m%dT%H%M%SZ").to_string(),
        EventTime::Date(d) => d.format("%Y%m%d").to_string(),
    }
}

/// A stretch of time with one active profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub profile: usize,
    pub cause: Cause,
}

/// The user's segments, in order and non-overlapping; adjacent ones with the same profile are
/// merged (switching to the profile one already has is no switch).
pub fn segments(intervals: &[Interval]) -> Vec<Segment> {
    let mut bounds: Vec<DateTime<Utc>> = intervals.iter().flat_map(|i| [i.start, i.end]).collect();
    bounds.sort();
    bounds.dedup();
    let mut out: Vec<Segment> = Vec::new();
    for w in bounds.windows(2) {
        let (a, b) = (w[0], w[1]);
        let winner = intervals.iter().filter(|i| i.start <= a && i.end > a).min_by(|x, y| {
            x.profile.cmp(&y.profile).then(y.start.cmp(&x.start)).then(x.cause.event_id.cmp(&y.cause.event_id))
        });
        let Some(w) = winner else { continue };
        match out.last_mut() {
            Some(last) if last.end == a && last.profile == w.profile => last.end = b,
            _ => out.push(Segment { start: a, end: b, profile: w.profile, cause: w.cause.clone() }),
        }
    }
    out
}

/// What the phone system is told: the whole state at a moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub profile: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub cause: Option<Cause>,
}

impl State {
    /// Whether telling the phone system `other` after `self` would say something new. For the
    /// default profile the next start (`until`) is not news: every edit of a future event
    /// would otherwise send a message.
    pub fn same_as(&self, other: &State) -> bool {
        if self.profile != other.profile || self.cause != other.cause {
            return false;
        }
        self.profile.is_none() || self.until == other.until
    }
}

/// A user's timeline over a window.
#[derive(Debug, Clone)]
pub struct Timeline {
    pub names: Vec<String>,
    pub segments: Vec<Segment>,
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
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
        let iv = intervals(events, profiles, zone, from, until);
        Timeline { names: profiles.names.clone(), segments: segments(&iv), from, until }
    }

    /// The state at `t`.
    pub fn state_at(&self, t: DateTime<Utc>) -> State {
        match self.segments.iter().find(|s| s.start <= t && t < s.end) {
            Some(s) => State {
                profile: Some(self.names[s.profile].clone()),
                since: Some(s.start),
                until: Some(s.end),
                cause: Some(s.cause.clone()),
            },
            None => State {
                profile: None,
                since: self.segments.iter().rev().find(|s| s.end <= t).map(|s| s.end),
                until: self.segments.iter().find(|s| s.start > t).map(|s| s.start),
                cause: None,
            },
        }
    }

    /// The switches after `t`, in order.
    pub fn upcoming(&self, t: DateTime<Utc>) -> Vec<Transition> {
        let mut out = Vec::new();
        for (i, s) in self.segments.iter().enumerate() {
            if s.start > t {
                out.push(Transition {
                    at: s.start,
                    profile: Some(self.names[s.profile].clone()),
                    until: Some(s.end),
                    cause: Some(s.cause.clone()),
                });
            }
            let next_starts_here = self.segments.get(i + 1).is_some_and(|n| n.start == s.end);
            if s.end > t && !next_starts_here {
                out.push(Transition {
                    at: s.end,
                    profile: None,
                    until: self.segments.get(i + 1).map(|n| n.start),
                    cause: None,
                });
            }
        }
        out
    }

    /// The first moment after `t` at which the state changes.
    pub fn next_boundary(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.segments.iter().flat_map(|s| [s.start, s.end]).filter(|b| *b > t).min()
    }
}
