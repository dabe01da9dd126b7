//! Staying under Google's quotas, per Google Cloud project: each tenant's service account
//! lives in its own project with its own budget (NOTES §5.3), so every tenant is paced under
//! its own `project_requests_per_minute` and each of its users under
//! `user_requests_per_minute` — a hundred tenants run side by side, each at its own pace,
//! instead of sharing one budget. Every call waits for a slot in its tenant's budget and in its
//! user's (GCRA via `governor`, at ~90 % of the quota with a small burst, so no one-minute
//! window can reach the limit); backstop syncs additionally wait for their own, smaller share
//! of their tenant's budget.

use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::SyncConfig;

pub struct Pacer {
    projects: DefaultKeyedRateLimiter<String>,
    users: DefaultKeyedRateLimiter<(String, String)>,
    backstop: DefaultKeyedRateLimiter<String>,
    startup: DefaultKeyedRateLimiter<String>,
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
            projects: RateLimiter::keyed(quota(config.project_requests_per_minute, 1.0)),
            users: RateLimiter::keyed(quota(config.user_requests_per_minute, 1.0)),
            backstop: RateLimiter::keyed(quota(config.project_requests_per_minute, config.backstop_share)),
            startup: RateLimiter::keyed(quota(config.project_requests_per_minute, config.startup_share)),
        }
    }

    /// Waits for a slot for one Google call made for `user` of `tenant`.
    pub async fn call(&self, tenant: &str, user: &str) {
        self.projects.until_key_ready(&tenant.to_owned()).await;
        self.users.until_key_ready(&(tenant.to_owned(), user.to_owned())).await;
    }

    /// Waits for a slot to start one backstop sync of `tenant` (after start: the larger
    /// startup share).
    pub async fn backstop(&self, tenant: &str, startup: bool) {
        let key = tenant.to_owned();
        if startup { self.startup.until_key_ready(&key).await } else { self.backstop.until_key_ready(&key).await }
    }

    /// Forgets tenants and users idle long enough that their budget is full again.
    pub fn forget_idle(&self) {
        self.projects.retain_recent();
        self.users.retain_recent();
        self.backstop.retain_recent();
        self.startup.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_tenants_budget_does_not_slow_another() {
        let config =
            SyncConfig { project_requests_per_minute: 600, user_requests_per_minute: 600, ..Default::default() };
        let pacer = Pacer::new(&config);
        // Tenant a spends its burst (5 % of 600 = 30) and then some: its next call must wait.
        for i in 0..30 {
            pacer.call("a", &format!("u{i}@a")).await;
        }
        let waited = tokio::time::timeout(std::time::Duration::from_millis(20), pacer.call("a", "x@a")).await;
        assert!(waited.is_err(), "tenant a is out of burst");
        // Tenant b has a budget of its own.
        let started = std::time::Instant::now();
        for i in 0..30 {
            pacer.call("b", &format!("u{i}@b")).await;
        }
        assert!(started.elapsed() < std::time::Duration::from_millis(100), "b was not held up by a");
    }
}
