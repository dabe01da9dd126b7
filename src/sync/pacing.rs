//! Staying under Google's quotas, per Google Cloud project: each tenant's service account
//! lives in its own project with its own budget (NOTES §5.3), so every tenant is paced under
//! its own `project_requests_per_minute` and each of its users under
//! `user_requests_per_minute` — a hundred tenants run side by side, each at its own pace,
//! instead of sharing one budget. Every call waits for a slot in its tenant's budget and in its
//! user's (GCRA via `governor`, at ~90 % of the quota with a small burst, so no one-minute
//! window can reach the limit); backstop syncs additionally wait for their own, smaller share
//! of their tenant's budget.
//!
//! Replicas on one database share each project's budget: each paces at its quotas divided by
//! the live replicas (`set_replicas`, from the cluster's member table), so the cluster as a
//! whole stays under the quota. A change of the count starts fresh buckets (a burst's worth
//! may go at once), which the 90 % margin absorbs.

use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::SyncConfig;

pub struct Pacer {
    config: SyncConfig,
    replicas: std::sync::atomic::AtomicUsize,
    limits: parking_lot::RwLock<std::sync::Arc<Limits>>,
}

struct Limits {
    projects: DefaultKeyedRateLimiter<String>,
    users: DefaultKeyedRateLimiter<(String, String)>,
    backstop: DefaultKeyedRateLimiter<String>,
    startup: DefaultKeyedRateLimiter<String>,
}

impl Limits {
    /// This replica's share of the quotas: one of `replicas`.
    fn new(config: &SyncConfig, replicas: usize) -> Self {
        let of = 1.0 / replicas.max(1) as f64;
        Limits {
            projects: RateLimiter::keyed(quota(config.project_requests_per_minute, of)),
            users: RateLimiter::keyed(quota(config.user_requests_per_minute, of)),
            backstop: RateLimiter::keyed(quota(config.project_requests_per_minute, config.backstop_share * of)),
            startup: RateLimiter::keyed(quota(config.project_requests_per_minute, config.startup_share * of)),
        }
    }
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
            config: config.clone(),
            replicas: std::sync::atomic::AtomicUsize::new(1),
            limits: parking_lot::RwLock::new(std::sync::Arc::new(Limits::new(config, 1))),
        }
    }

    fn limits(&self) -> std::sync::Arc<Limits> {
        self.limits.read().clone()
    }

    /// The live replicas sharing each project's budget (1: this one alone).
    pub fn set_replicas(&self, replicas: usize) {
        let replicas = replicas.max(1);
        if self.replicas.swap(replicas, std::sync::atomic::Ordering::Relaxed) != replicas {
            *self.limits.write() = std::sync::Arc::new(Limits::new(&self.config, replicas));
        }
    }

    /// Waits for a slot for one Google call made for `user` of `tenant`.
    pub async fn call(&self, tenant: &str, user: &str) {
        let limits = self.limits();
        limits.projects.until_key_ready(&tenant.to_owned()).await;
        limits.users.until_key_ready(&(tenant.to_owned(), user.to_owned())).await;
    }

    /// Waits for a slot to start one backstop sync of `tenant` (after start: the larger
    /// startup share).
    pub async fn backstop(&self, tenant: &str, startup: bool) {
        let key = tenant.to_owned();
        let limits = self.limits();
        if startup { limits.startup.until_key_ready(&key).await } else { limits.backstop.until_key_ready(&key).await }
    }

    /// Forgets tenants and users idle long enough that their budget is full again.
    pub fn forget_idle(&self) {
        let limits = self.limits();
        limits.projects.retain_recent();
        limits.users.retain_recent();
        limits.backstop.retain_recent();
        limits.startup.retain_recent();
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

    #[tokio::test]
    async fn three_replicas_share_a_projects_budget() {
        let config =
            SyncConfig { project_requests_per_minute: 600, user_requests_per_minute: 6000, ..Default::default() };
        let pacer = Pacer::new(&config);
        pacer.set_replicas(3);
        // A third of the burst of 30 (5 % of 600) is this replica's.
        for i in 0..10 {
            pacer.call("a", &format!("u{i}@a")).await;
        }
        let waited = tokio::time::timeout(std::time::Duration::from_millis(20), pacer.call("a", "x@a")).await;
        assert!(waited.is_err(), "a third of the burst is spent");
    }
}
