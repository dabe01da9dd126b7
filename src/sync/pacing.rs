//! Staying under Google's quotas: every call waits for a slot in the project's budget and in
//! its user's (GCRA via `governor`, at ~90 % of the quota with a small burst, so no one-minute
//! window can reach the limit); backstop syncs additionally wait for their own, smaller share.

use std::num::NonZeroU32;

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::SyncConfig;

pub struct Pacer {
    project: DefaultDirectRateLimiter,
    users: DefaultKeyedRateLimiter<String>,
    backstop: DefaultDirectRateLimiter,
    startup: DefaultDirectRateLimiter,
}

/// A quota of `share` × `per_minute`, at 90 %, with a burst of 5 % (at least 1).
fn quota(per_minute: u32, share: f64) -> Quota {
    let rate = ((f64::from(per_minute) * share * 0.9).floor() as u32).max(1);
    let burst = ((f64::from(per_minute) * share * 0.05).floor() as u32).max(1);
    Quota::per_minute(NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
}

impl Pacer {
    pub fn new(config: &SyncConfig) -> Self {
        Pacer {
            project: RateLimiter::direct(quota(config.project_requests_per_minute, 1.0)),
            users: RateLimiter::keyed(quota(config.user_requests_per_minute, 1.0)),
            backstop: RateLimiter::direct(quota(config.project_requests_per_minute, config.backstop_share)),
            startup: RateLimiter::direct(quota(config.project_requests_per_minute, config.startup_share)),
        }
    }

    /// Waits for a slot for one Google call made for `user`.
    pub async fn call(&self, user: &str) {
        self.project.until_ready().await;
        self.users.until_key_ready(&user.to_owned()).await;
    }

    /// Waits for a slot to start one backstop sync (after start: the larger startup share).
    pub async fn backstop(&self, startup: bool) {
        if startup { self.startup.until_ready().await } else { self.backstop.until_ready().await }
    }

    /// Forgets users idle long enough that their budget is full again.
    pub fn forget_idle_users(&self) {
        self.users.retain_recent();
    }
}
