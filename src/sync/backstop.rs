//! The backstop: push is an optimisation, so every calendar is also synced after each start and
//! then about once per `backstop_interval` — jittered ±25 % per calendar so they don't line up,
//! and paced to a share of each tenant's own project quota (larger right after start); tenants
//! are swept side by side.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::SyncService;
use crate::model::CalendarKey;

/// A calendar's fixed offset within ±25 % of the interval.
fn offset(key: &CalendarKey, interval: Duration) -> chrono::Duration {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    let span = interval.as_millis() as i64 / 2;
    let ms = if span == 0 { 0 } else { (h.finish() % span as u64) as i64 - span / 2 };
    chrono::Duration::milliseconds(ms)
}

pub async fn run(svc: Arc<SyncService>, shutdown: CancellationToken) {
    let interval = svc.app.config.sync.backstop_interval;
    let sweep = (interval / 12).min(Duration::from_secs(300)).max(Duration::from_secs(5));
    let mut startup = true;
    loop {
        if let Err(e) = sweep_once(&svc, startup, interval, &shutdown).await {
            tracing::error!(error = %e, "backstop sweep failed");
        }
        startup = false;
        svc.pacer.forget_idle();
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = svc.clock.sleep(sweep) => {}
        }
    }
}

/// One sweep: every tenant at once, each paced under its own project's share.
async fn sweep_once(
    svc: &SyncService,
    startup: bool,
    interval: Duration,
    shutdown: &CancellationToken,
) -> Result<(), crate::store::StoreError> {
    let tenants = svc.app.store.tenants().await?;
    let sweeps = tenants.iter().map(|t| sweep_tenant(svc, &t.id, startup, interval, shutdown));
    for result in futures_util::future::join_all(sweeps).await {
        result?;
    }
    Ok(())
}

async fn sweep_tenant(
    svc: &SyncService,
    tenant: &str,
    startup: bool,
    interval: Duration,
    shutdown: &CancellationToken,
) -> Result<(), crate::store::StoreError> {
    let store = &svc.app.store;
    let interval_c = chrono::Duration::from_std(interval).unwrap_or_default();
    for user in store.users(tenant).await? {
        let key = CalendarKey::new(tenant, &user.email);
        if svc.queue.contains(&key) {
            continue;
        }
        let state = store.calendar_state(tenant, &user.email).await?.unwrap_or_default();
        // Given up on (an unknown Google alias) until the user is saved again.
        let given_up = state.last_error.as_ref().is_some_and(|e| e.retry_at.is_none() && user.updated_at <= e.at);
        let due = !given_up
            && (startup
                || match state.last_sync_at {
                    None => true,
                    Some(last) => last + interval_c + offset(&key, interval) <= svc.clock.now(),
                });
        if !due {
            continue;
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = svc.pacer.backstop(tenant, startup) => {}
        }
        svc.queue.enqueue(&key);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_spread_within_a_quarter_of_the_interval() {
        let hour = Duration::from_secs(3600);
        let offsets: Vec<i64> =
            (0..200).map(|i| offset(&CalendarKey::new("t", &format!("u{i}@x")), hour).num_seconds()).collect();
        assert!(offsets.iter().all(|o| o.abs() <= 900));
        assert!(offsets.iter().any(|o| *o < -600) && offsets.iter().any(|o| *o > 600), "they spread out");
    }
}
