//! The channel keeper: every `keeper_interval` (and at once after a deletion) it looks at every
//! channel gwsync has — queues the users whose channel is due for renewal (the user's next job
//! replaces it), stops channels whose user or tenant is gone or that were replaced (retrying
//! until they are stopped or expired), drops records of channels long expired, discards the
//! key of a deleted tenant once none of its channels is left, and publishes channel metrics.

use std::collections::HashSet;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::SyncService;
use super::channels::{self, is_live, renew_at};
use crate::model::CalendarKey;

pub async fn run(svc: Arc<SyncService>, shutdown: CancellationToken) {
    let interval = svc.app.config.sync.keeper_interval;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = sweep(&svc) => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = svc.clock.sleep(interval) => {}
            () = svc.keeper_wake.notified() => {}
        }
    }
}

pub async fn sweep(svc: &SyncService) {
    let store = &svc.app.store;
    let now = svc.clock.now();
    let within = svc.app.config.sync.renew_within;
    let channels = match store.channels().await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "the channel keeper cannot read channels");
            return;
        }
    };
    let (mut live, mut due, mut expired, mut pending, mut orphaned) = (0, 0, 0, 0, 0);
    let mut soonest = None;
    let mut queued = HashSet::new();
    for c in channels {
        let owner_exists = matches!(store.user(&c.tenant, &c.user).await, Ok(Some(_)));
        if c.orphaned || !owner_exists {
            orphaned += 1;
            if c.expiration.is_some_and(|e| e <= now) {
                // Google stopped it by itself.
                let _ = store.delete_channel(&c.id).await;
            } else if svc.tenant_auth.failure(&c.tenant).is_some_and(|f| f.retry_at > now) {
                // The tenant's token endpoint is failing: a later sweep tries again, and this
                // one does not wait out its timeout for every channel.
            } else {
                let key = CalendarKey::new(&c.tenant, &c.user);
                let _job = svc.lock(&key).await;
                // The user's job may have held the lock while finishing the registration this
                // record stands for (Google's resource id is known now): stop what the store
                // holds now, not what it held before the wait.
                let c = match store.channel(&c.id).await {
                    Ok(Some(now_stored)) => now_stored,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(channel = %c.id, error = %e, "cannot re-read an orphaned channel; retrying later");
                        continue;
                    }
                };
                if let Err(e) = channels::stop(svc, &c).await {
                    tracing::warn!(channel = %c.id, error = %e, "stopping an orphaned channel failed; retrying later");
                }
            }
            continue;
        }
        match c.expiration {
            None => {
                pending += 1;
                // Registration was cut short (a stop mid-call, a crash): Google may or may not
                // have the channel; without its resource id it cannot be stopped, and it dies on
                // its own within a week. After an hour nobody waits for its answer any more.
                if c.created_at + chrono::Duration::hours(1) <= now {
                    let _ = store.delete_channel(&c.id).await;
                }
            }
            Some(e) if e <= now => {
                expired += 1;
                // A day past its expiry nobody needs its record (late notifications included).
                if e + chrono::Duration::days(1) <= now {
                    let _ = store.delete_channel(&c.id).await;
                }
            }
            Some(e) => {
                live += 1;
                soonest = Some(soonest.map_or(e, |s: chrono::DateTime<chrono::Utc>| s.min(e)));
                if renew_at(&c, within).is_some_and(|at| at <= now) && is_live(&c, now) {
                    due += 1;
                    let key = CalendarKey::new(&c.tenant, &c.user);
                    if queued.insert(key.clone()) {
                        svc.queue.enqueue(&key);
                    }
                }
            }
        }
    }
    // A deleted tenant's key was retired to stop its channels; once none is left, it goes
    // (a tenant re-created under the same id has channels of its own, never orphaned ones).
    let remaining: HashSet<String> = match store.channels().await {
        Ok(c) => c.into_iter().filter(|c| c.orphaned).map(|c| c.tenant).collect(),
        Err(_) => return,
    };
    if let Ok(keys) = store.retired_credential_tenants().await {
        for tenant in keys {
            if !remaining.contains(&tenant) {
                match store.delete_retired_credentials(&tenant).await {
                    Ok(()) => {
                        svc.app.forget_tenant(&tenant);
                        tracing::info!(tenant = %tenant, "deleted tenant's channels are stopped; its key is discarded");
                    }
                    Err(e) => tracing::error!(tenant = %tenant, error = %e, "could not discard a deleted tenant's key"),
                }
            }
        }
    }
    let m = &svc.app.metrics;
    m.channel_count("live", live);
    m.channel_count("due", due);
    m.channel_count("expired", expired);
    m.channel_count("pending", pending);
    m.channel_count("orphaned", orphaned);
    m.soonest_expiry.set(soonest.map_or(0, |s| (s - now).num_seconds()));
}
