//! Renewal on request (`POST /api/v1/channels/renew`, `gwsync renew`, the cron script): every
//! push channel expiring within a window is replaced now (and users with none live get one),
//! each under its user's job lock, so no renewal overlaps another. It runs as a background job
//! (`jobs`): with 100,000 users it takes minutes at quota pace.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use super::SyncService;
use super::channels::{Ensured, is_live};
use crate::model::CalendarKey;
use crate::store::StoreError;

/// Renewals run this many at a time (each is paced under its tenant's quota anyway).
const PARALLEL: usize = 8;

/// Renews what expires within `within`; the report lists each renewal and each failure.
pub async fn renew_due(svc: Arc<SyncService>, within: Duration) -> Result<Value, StoreError> {
    let now = svc.clock.now();
    let horizon = now + chrono::Duration::from_std(within).unwrap_or_default();
    let store = &svc.app.store;
    let mut due: BTreeSet<CalendarKey> = BTreeSet::new();
    let mut checked = 0;
    for t in store.tenants().await? {
        for u in store.users(&t.id).await? {
            checked += 1;
            let live: Vec<_> =
                store.channels_of(&t.id, &u.email).await?.into_iter().filter(|c| is_live(c, now)).collect();
            let newest = live.iter().filter_map(|c| c.expiration).max();
            if newest.is_none_or(|e| e <= horizon) {
                due.insert(CalendarKey::new(&t.id, &u.email));
            }
        }
    }
    let results: Vec<(CalendarKey, Result<Ensured, super::error::SyncError>)> = futures_util::stream::iter(due)
        .map(|key| {
            let svc = svc.clone();
            async move {
                let r = svc.renew_user(&key, within).await;
                (key, r)
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let mut renewed: Vec<Value> = Vec::new();
    let mut failed: Vec<Value> = Vec::new();
    for (key, result) in results {
        match result {
            Ok(Ensured::Renewed { new, old }) => renewed.push(
                json!({"tenant": key.tenant, "user": key.user, "channel": new.id, "expiration": new.expiration, "replaced": old}),
            ),
            Ok(Ensured::Registered(new)) => renewed.push(
                json!({"tenant": key.tenant, "user": key.user, "channel": new.id, "expiration": new.expiration, "replaced": []}),
            ),
            Ok(Ensured::Fine) => {}
            // Deleted while the sweep ran: nothing to renew.
            Err(super::error::SyncError::Store(StoreError::Gone)) => {}
            Err(e) => failed.push(
                json!({"tenant": key.tenant, "user": key.user, "code": e.code(), "message": e.to_string(), "hint": e.hint()}),
            ),
        }
    }
    tracing::info!(checked, renewed = renewed.len(), failed = failed.len(), "channel renewal on request");
    Ok(json!({
        "within": humantime::format_duration(within).to_string(),
        "users_checked": checked,
        "renewed": renewed,
        "failed": failed,
    }))
}
