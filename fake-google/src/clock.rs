//! The fake's clock: real time plus an offset that only moves forward.
//!
//! `POST /_fake/clock {"advance": "8d"}` ages everything Google ages in time — channels, sync
//! tokens, access tokens, tombstones — without anybody sleeping. JWT assertions are the one
//! exception: clients sign them with their own real clock, so the token endpoint checks them
//! against real time (see `oauth.rs`).

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Duration, Utc};

#[derive(Debug, Default)]
pub struct FakeClock {
    offset_ms: AtomicI64,
}

impl FakeClock {
    /// The fake's notion of now: real time plus every advance so far.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + Duration::milliseconds(self.offset_ms.load(Ordering::SeqCst))
    }

    /// Real wall-clock time, for checks that Google makes against the client's clock.
    pub fn real_now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    /// Moves the clock forward. Negative durations are refused by the caller: time never runs
    /// backwards for Google.
    pub fn advance(&self, by: std::time::Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::SeqCst);
    }

    /// How far the fake runs ahead of real time.
    pub fn offset(&self) -> Duration {
        Duration::milliseconds(self.offset_ms.load(Ordering::SeqCst))
    }
}

/// Formats a time the way Google's JSON does: RFC 3339, UTC, milliseconds, `Z`.
pub fn google_timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
