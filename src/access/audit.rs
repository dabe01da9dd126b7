//! The audit log: every request that changes state and every refused one, with who, what, on
//! which tenant and target, and the outcome — never a body, a header or a query string, so never
//! a secret. Kept `audit.retention` (90 days) and pruned by `Access::run`.
//!
//! Durability: a change's entry is written *before* its handler runs (outcome unknown), so the
//! handler's own flush makes it durable together with the change; the outcome is added after,
//! and flushed before the answer goes out. A crash in between leaves an entry without a status:
//! the change may or may not have happened, but it was attempted and by whom is on record.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::clock::Clock;
use crate::model::access::{AuditActor, AuditEntry};
use crate::store::{self, SharedStore, StoreError};

/// Refusals of callers without a known token recorded per minute at most: anyone who can reach
/// the port can send them, and each is a durable write.
const ANONYMOUS_REFUSALS_PER_MINUTE: u32 = 120;

/// What an entry is about, before its outcome is known.
#[derive(Debug, Clone, Default)]
pub struct Event {
    pub actor: AuditActor,
    pub action: String,
    pub route: Option<String>,
    pub tenant: Option<String>,
    pub target: Option<String>,
}

pub struct Recorder {
    store: SharedStore,
    clock: Clock,
    anonymous: DefaultDirectRateLimiter,
    /// Anonymous refusals not recorded since the last recorded one.
    suppressed: AtomicU64,
}

impl Recorder {
    pub fn new(store: SharedStore, clock: Clock) -> Self {
        let per_minute = NonZeroU32::new(ANONYMOUS_REFUSALS_PER_MINUTE).unwrap_or(NonZeroU32::MIN);
        Recorder {
            store,
            clock,
            anonymous: RateLimiter::direct(Quota::per_minute(per_minute)),
            suppressed: AtomicU64::new(0),
        }
    }

    async fn entry(&self, ev: Event) -> Result<AuditEntry, StoreError> {
        Ok(AuditEntry {
            id: self.store.next_audit_id().await?,
            at: self.clock.now(),
            actor: ev.actor,
            action: ev.action,
            route: ev.route,
            tenant: ev.tenant,
            target: ev.target,
            status: None,
            code: None,
            detail: None,
        })
    }

    /// Records a change about to run; `finish` adds its outcome.
    pub async fn begin(&self, ev: Event) -> Result<AuditEntry, StoreError> {
        let entry = self.entry(ev).await?;
        self.store.put_audit(&entry).await?;
        Ok(entry)
    }

    /// Adds the outcome (and the handler's target and note, if it gave them) and makes the
    /// entry durable.
    pub async fn finish(
        &self,
        mut entry: AuditEntry,
        status: u16,
        target: Option<String>,
        detail: Option<String>,
    ) -> Result<(), StoreError> {
        entry.status = Some(status);
        if target.is_some() {
            entry.target = target;
        }
        entry.detail = detail;
        self.store.put_audit(&entry).await?;
        store::flush(&self.store).await
    }

    /// Records a refused request, durably. Those without a known token are rate limited; the
    /// next one recorded says how many were left out.
    pub async fn refusal(&self, ev: Event, status: u16, code: &str) -> Result<(), StoreError> {
        let anonymous = ev.actor.token_id.is_none();
        if anonymous && self.anonymous.check().is_err() {
            if self.suppressed.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!(
                    per_minute = ANONYMOUS_REFUSALS_PER_MINUTE,
                    "many requests without a valid token: not every refusal is recorded in the audit log"
                );
            }
            return Ok(());
        }
        let mut entry = self.entry(ev).await?;
        entry.status = Some(status);
        entry.code = Some(code.to_owned());
        if anonymous {
            let left_out = self.suppressed.swap(0, Ordering::Relaxed);
            if left_out > 0 {
                entry.detail = Some(format!("{left_out} earlier refusals without a valid token were not recorded"));
            }
        }
        self.store.put_audit(&entry).await?;
        store::flush(&self.store).await
    }

    /// Newest first, below `before`, of `tenant` if given.
    pub async fn list(
        &self,
        tenant: Option<&str>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.store.audit(tenant, before, limit).await
    }

    /// Removes what is older than `retention`.
    pub async fn prune(&self, retention: std::time::Duration) -> Result<usize, StoreError> {
        let Some(cutoff) =
            chrono::Duration::from_std(retention).ok().and_then(|r| self.clock.now().checked_sub_signed(r))
        else {
            return Ok(0);
        };
        self.store.prune_audit(cutoff).await
    }
}
