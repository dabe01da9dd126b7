//! Each tenant's token endpoint, as a gate in front of its jobs.
//!
//! Tokens are minted per user, but what usually fails is the tenant's: its token endpoint
//! hangs or is down, delegation is missing, its key was revoked. Without a gate every one of
//! the tenant's users would wait out the token timeout in turn, holding work others need. So
//! the first tenant-wide failure marks the tenant failing (with the hint an admin can act on)
//! until a retry time — backoff for an unreachable endpoint, `sync.slow_retry` for what only
//! an admin can fix — and until then its jobs end at once without calling Google. When the
//! time comes one job probes; the others wait for its answer. A probe that succeeds releases
//! all of the tenant's waiting calendars (`SyncQueue::release_tenant`).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::google::error::AuthError;

/// A tenant-wide token failure, as the tenant's status shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenFailure {
    pub code: String,
    pub message: String,
    pub hint: String,
    pub since: DateTime<Utc>,
    pub retry_at: DateTime<Utc>,
    pub failures: u32,
}

#[derive(Debug)]
struct State {
    failure: TokenFailure,
    probing: bool,
}

/// Whether a job of the tenant may mint a token now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Go,
    /// The tenant is failing (or another job is probing): try again at this time.
    Wait(DateTime<Utc>),
}

/// The longest message or hint told to the other replicas (`failure_to_tell`).
const TOLD_TEXT: usize = 400;

#[derive(Default)]
pub struct TenantAuth {
    states: Mutex<HashMap<String, State>>,
    /// When each tenant's token endpoint last answered again after failing, as far as this
    /// replica knows (found here, or another replica's news): a failure that began before then
    /// is old news — e.g. one told again to a replica that asked for news, sent before the
    /// teller heard the endpoint answer.
    answered: Mutex<HashMap<String, DateTime<Utc>>>,
}

/// Whether a token error is the tenant's rather than one user's.
pub fn is_tenant_wide(e: &AuthError) -> bool {
    !matches!(e, AuthError::UnknownUser { .. })
}

impl TenantAuth {
    /// `probe_wait`: how long the others wait for a probe in flight (the token timeout).
    pub fn gate(&self, tenant: &str, now: DateTime<Utc>, probe_wait: Duration) -> Gate {
        let mut states = self.states.lock();
        let Some(state) = states.get_mut(tenant) else { return Gate::Go };
        if state.failure.retry_at > now {
            return Gate::Wait(state.failure.retry_at);
        }
        if state.probing {
            return Gate::Wait(now + chrono::Duration::from_std(probe_wait).unwrap_or_default());
        }
        state.probing = true;
        Gate::Go
    }

    /// A token was minted: true if the tenant was failing (its waiting jobs can go now).
    pub fn succeeded(&self, tenant: &str, now: DateTime<Utc>) -> bool {
        let recovered = self.states.lock().remove(tenant).is_some();
        if recovered {
            self.answered_at(tenant, now);
            tracing::info!(tenant, "the token endpoint answers again");
        }
        recovered
    }

    /// A tenant-wide failure: the tenant waits until the returned time.
    pub fn failed(
        &self,
        tenant: &str,
        e: &AuthError,
        now: DateTime<Utc>,
        retry_in: impl Fn(u32) -> Duration,
    ) -> DateTime<Utc> {
        let mut states = self.states.lock();
        let previous = states.remove(tenant);
        let failures = previous.as_ref().map_or(0, |s| s.failure.failures).saturating_add(1);
        let delay = chrono::Duration::from_std(retry_in(failures - 1)).unwrap_or(chrono::Duration::hours(1));
        let retry_at = now.checked_add_signed(delay).unwrap_or(now + chrono::Duration::hours(1));
        if previous.is_none() {
            tracing::warn!(tenant, code = e.code(), error = %e, retry_at = %retry_at, "the tenant's token endpoint fails; its calendars wait");
        }
        let failure = TokenFailure {
            code: e.code().to_owned(),
            message: e.to_string(),
            hint: e.hint(),
            since: previous.map_or(now, |s| s.failure.since),
            retry_at,
            failures,
        };
        states.insert(tenant.to_owned(), State { failure, probing: false });
        retry_at
    }

    /// A probe ended without an answer about the token (e.g. shutdown): let another try.
    pub fn release_probe(&self, tenant: &str) {
        if let Some(s) = self.states.lock().get_mut(tenant) {
            s.probing = false;
        }
    }

    fn answered_at(&self, tenant: &str, now: DateTime<Utc>) {
        let mut answered = self.answered.lock();
        match answered.get_mut(tenant) {
            Some(at) => *at = (*at).max(now),
            None => {
                answered.insert(tenant.to_owned(), now);
            }
        }
    }

    /// What another replica found (`None`: its token request succeeded), heard at `now`: the
    /// tenant's jobs here wait for the same retry time, or go again. True if the tenant was
    /// failing here and is not any more. Older news is ignored: a failure with an earlier retry
    /// time than the one known here, or one that began before the endpoint last answered.
    pub fn adopt(&self, tenant: &str, failure: Option<TokenFailure>, now: DateTime<Utc>) -> bool {
        if let Some(f) = &failure
            && self.answered.lock().get(tenant).is_some_and(|at| *at >= f.since)
        {
            return false;
        }
        if failure.is_none() {
            self.answered_at(tenant, now);
        }
        let mut states = self.states.lock();
        match failure {
            None => states.remove(tenant).is_some(),
            Some(f) => {
                if states.get(tenant).is_none_or(|s| s.failure.retry_at < f.retry_at) {
                    states.insert(tenant.to_owned(), State { failure: f, probing: false });
                }
                false
            }
        }
    }

    /// The failure as told to the other replicas (JSON): its texts cut to `TOLD_TEXT` characters, so
    /// a token endpoint's long error description cannot push the notification past
    /// PostgreSQL's 8,000 bytes.
    pub fn failure_to_tell(&self, tenant: &str) -> Option<String> {
        let cut = |s: &str| s.chars().take(TOLD_TEXT).collect::<String>();
        let failure = self.failure(tenant)?;
        serde_json::to_string(&TokenFailure { message: cut(&failure.message), hint: cut(&failure.hint), ..failure })
            .ok()
    }

    /// The tenants failing now (each one's `failure_to_tell`).
    pub fn failing_tenants(&self) -> Vec<String> {
        self.states.lock().keys().cloned().collect()
    }

    pub fn failure(&self, tenant: &str) -> Option<TokenFailure> {
        self.states.lock().get(tenant).map(|s| s.failure.clone())
    }

    /// Forgets the tenant (its key was replaced, or it was deleted): its next job tries at once.
    pub fn forget(&self, tenant: &str) {
        self.states.lock().remove(tenant);
        self.answered.lock().remove(tenant);
    }

    pub fn failing(&self) -> usize {
        self.states.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_tenant_waits_then_one_job_probes() {
        let auth = TenantAuth::default();
        let now = Utc::now();
        let wait = Duration::from_secs(10);
        assert_eq!(auth.gate("b", now, wait), Gate::Go);
        let e = AuthError::Transient("timed out".into());
        let retry_at = auth.failed("b", &e, now, |_| Duration::from_secs(30));
        assert_eq!(auth.gate("b", now, wait), Gate::Wait(retry_at));
        assert_eq!(auth.gate("a", now, wait), Gate::Go, "another tenant is not affected");
        let later = retry_at + chrono::Duration::seconds(1);
        assert_eq!(auth.gate("b", later, wait), Gate::Go, "one probe");
        assert!(matches!(auth.gate("b", later, wait), Gate::Wait(_)), "the others wait for it");
        let again = auth.failed("b", &e, later, |n| Duration::from_secs(30 << n));
        assert_eq!(auth.failure("b").unwrap().failures, 2);
        assert_eq!(again, later + chrono::Duration::seconds(60));
        assert!(auth.succeeded("b", later));
        assert_eq!(auth.gate("b", later, wait), Gate::Go);
        assert!(!auth.succeeded("b", later));
    }

    #[test]
    fn a_failure_told_to_the_other_replicas_has_its_texts_cut_to_fit_a_notification() {
        let auth = TenantAuth::default();
        assert_eq!(auth.failure_to_tell("b"), None, "nothing to tell of a tenant that is not failing");
        let long = "ü".repeat(3000);
        auth.failed("b", &AuthError::KeyRejected { description: long }, Utc::now(), |_| Duration::from_secs(30));
        let told = auth.failure_to_tell("b").expect("told");
        // PostgreSQL's NOTIFY payload limit, with room for the event around it encoded again.
        assert!(told.len() < 4000, "{} bytes", told.len());
        let told: TokenFailure = serde_json::from_str(&told).expect("JSON");
        assert_eq!(told.message.chars().count(), TOLD_TEXT, "{}", told.message);
        assert_eq!(told.retry_at, auth.failure("b").expect("failing").retry_at);
    }

    #[test]
    fn another_replicas_news_holds_or_releases_the_tenant_and_older_news_is_ignored() {
        let (here, there) = (TenantAuth::default(), TenantAuth::default());
        let now = Utc::now();
        let wait = Duration::from_secs(10);
        let e = AuthError::Transient("timed out".into());
        let first = there.failed("b", &e, now, |_| Duration::from_secs(30));
        let older = there.failure("b");
        assert!(!here.adopt("b", older.clone(), now));
        assert_eq!(here.gate("b", now, wait), Gate::Wait(first), "waits as the replica that failed");
        let second = there.failed("b", &e, first, |_| Duration::from_secs(30));
        assert!(!here.adopt("b", there.failure("b"), first));
        assert!(!here.adopt("b", older.clone(), first), "a failure older than the one known is ignored");
        assert_eq!(here.gate("b", now, wait), Gate::Wait(second));
        let answered = first + chrono::Duration::seconds(1);
        assert!(here.adopt("b", None, answered), "the endpoint answering there releases the tenant here");
        assert_eq!(here.gate("b", now, wait), Gate::Go);
        assert!(!here.adopt("b", None, answered), "nothing to release twice");
        // The same failure told again after the endpoint answered (a replica re-telling what
        // it held before it heard so) holds nobody; a run of failures that begins later does.
        assert!(!here.adopt("b", older, answered));
        assert_eq!(here.gate("b", answered, wait), Gate::Go, "old news after the answer is ignored");
        let fresh = TenantAuth::default();
        let third = fresh.failed("b", &e, answered + chrono::Duration::seconds(1), |_| Duration::from_secs(30));
        assert!(!here.adopt("b", fresh.failure("b"), answered));
        assert_eq!(here.gate("b", answered, wait), Gate::Wait(third));
        // The endpoint found answering again here counts as well.
        let mine = TenantAuth::default();
        mine.failed("b", &e, now, |_| Duration::from_secs(30));
        assert!(mine.succeeded("b", third));
        assert!(!mine.adopt("b", fresh.failure("b"), third));
        assert_eq!(mine.gate("b", third, wait), Gate::Go);
    }
}
