//! Google's per-minute quotas, as sliding one-minute windows.
//!
//! Calendar allows 600 requests per minute per user and 10,000 per project; People's reads are
//! bucketed per user too. Windows are always counted (so `GET /_fake/stats` can report the peak
//! rate a client reached) and only enforced when a limit is set with `PUT /_fake/quota`.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

const WINDOW_MS: i64 = 60_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaSettings {
    pub calendar_per_user_per_minute: Option<u32>,
    pub people_per_user_per_minute: Option<u32>,
    pub project_per_minute: Option<u32>,
    /// People: first pages of full syncs per user per minute (Google's fixed extra quota).
    pub people_full_sync_per_minute: Option<u32>,
    /// Calendar answers rate limits with 403 or 429; Google uses both.
    pub rate_limit_status: u16,
}

impl Default for QuotaSettings {
    fn default() -> Self {
        QuotaSettings {
            calendar_per_user_per_minute: None,
            people_per_user_per_minute: None,
            project_per_minute: None,
            people_full_sync_per_minute: None,
            rate_limit_status: 403,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    CalendarUser,
    PeopleUser,
    Project,
    PeopleFullSync,
}

#[derive(Debug, Default)]
pub struct Quota {
    pub settings: QuotaSettings,
    windows: HashMap<(Bucket, String), VecDeque<i64>>,
    peaks: HashMap<Bucket, usize>,
}

impl Quota {
    fn limit(&self, bucket: Bucket) -> Option<u32> {
        match bucket {
            Bucket::CalendarUser => self.settings.calendar_per_user_per_minute,
            Bucket::PeopleUser => self.settings.people_per_user_per_minute,
            Bucket::Project => self.settings.project_per_minute,
            Bucket::PeopleFullSync => self.settings.people_full_sync_per_minute,
        }
    }

    /// Counts one request against `key` in `bucket` at `now_ms`; false (and not counted) when
    /// the window is full.
    pub fn admit(&mut self, bucket: Bucket, key: &str, now_ms: i64) -> bool {
        let limit = self.limit(bucket);
        let window = self.windows.entry((bucket, key.to_owned())).or_default();
        while window.front().is_some_and(|&t| t <= now_ms - WINDOW_MS) {
            window.pop_front();
        }
        if limit.is_some_and(|l| window.len() >= l as usize) {
            return false;
        }
        window.push_back(now_ms);
        let len = window.len();
        let peak = self.peaks.entry(bucket).or_default();
        *peak = (*peak).max(len);
        true
    }

    /// Whether a request would be admitted, without counting it.
    pub fn would_admit(&mut self, bucket: Bucket, key: &str, now_ms: i64) -> bool {
        let Some(limit) = self.limit(bucket) else { return true };
        let Some(window) = self.windows.get_mut(&(bucket, key.to_owned())) else { return true };
        while window.front().is_some_and(|&t| t <= now_ms - WINDOW_MS) {
            window.pop_front();
        }
        window.len() < limit as usize
    }

    /// The highest number of requests seen in any one-minute window, per bucket.
    pub fn peak(&self, bucket: Bucket) -> usize {
        self.peaks.get(&bucket).copied().unwrap_or(0)
    }

    pub fn reset_peaks(&mut self) {
        self.peaks.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_slides() {
        let mut q = Quota::default();
        q.settings.calendar_per_user_per_minute = Some(2);
        assert!(q.admit(Bucket::CalendarUser, "a", 0));
        assert!(q.admit(Bucket::CalendarUser, "a", 30_000));
        assert!(!q.admit(Bucket::CalendarUser, "a", 59_999));
        assert!(q.admit(Bucket::CalendarUser, "b", 59_999), "other users have their own window");
        assert!(q.admit(Bucket::CalendarUser, "a", 60_000), "the first request left the window");
        assert!(!q.admit(Bucket::CalendarUser, "a", 60_001));
        assert_eq!(q.peak(Bucket::CalendarUser), 2);
    }
}
