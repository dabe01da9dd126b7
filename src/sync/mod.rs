//! Calendar sync: the dirty queue fed by webhooks, start-up and the backstop; workers that
//! register push channels and sync calendars; and removal of users' channels and data.
//!
//! Everything runs on tasks owned by one `TaskTracker` and stops with one
//! `CancellationToken` (see `serve`).

pub mod backstop;
pub mod calendar;
pub mod channels;
pub mod error;
pub mod keeper;
pub mod pacing;
pub mod queue;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use rand::RngExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::AppState;
use crate::clock::Clock;
use crate::presence::engine::Presence;
use crate::store::{StoreError, SyncFailure};
use calendar::CalendarToken;
use error::{Retry, SyncError};
use pacing::Pacer;
use queue::{CalendarKey, Claim, Finish, SyncQueue};

pub struct SyncService {
    pub app: Arc<AppState>,
    pub queue: SyncQueue,
    pub pacer: Pacer,
    pub clock: Clock,
    pub presence: Arc<Presence>,
    /// When each calendar last got a notification (shown in the user's status).
    last_notification: Mutex<HashMap<CalendarKey, DateTime<Utc>>>,
    /// One job per user at a time: a sync with its channel check, a renewal, a removal.
    locks: Mutex<HashMap<CalendarKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl SyncService {
    pub fn new(app: Arc<AppState>, queue: SyncQueue, clock: Clock, presence: Arc<Presence>) -> Self {
        SyncService {
            pacer: Pacer::new(&app.config.sync),
            app,
            queue,
            clock,
            presence,
            last_notification: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// Starts the workers, the retry timer, the backstop and the channel keeper on `tracker`.
    pub fn start(self: &Arc<Self>, tracker: &TaskTracker, shutdown: &CancellationToken) -> Result<(), StoreError> {
        let marked = self.queue.load_marks()?;
        if marked > 0 {
            tracing::info!(calendars = marked, "resuming syncs marked before the last stop");
        }
        for _ in 0..self.app.config.sync.workers {
            let (svc, stop) = (self.clone(), shutdown.clone());
            tracker.spawn(async move { svc.worker(stop).await });
        }
        let (svc, stop) = (self.clone(), shutdown.clone());
        tracker.spawn(async move { svc.retry_timer(stop).await });
        let (svc, stop) = (self.clone(), shutdown.clone());
        tracker.spawn(async move { backstop::run(svc, stop).await });
        let (svc, stop) = (self.clone(), shutdown.clone());
        tracker.spawn(async move { keeper::run(svc, stop).await });
        Ok(())
    }

    /// Takes the user's job lock (released when the guard drops).
    pub async fn lock(&self, key: &CalendarKey) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut locks = self.locks.lock();
            // Forget locks nobody holds or waits for, so the map stays small.
            if locks.len() > 1024 {
                locks.retain(|_, m| Arc::strong_count(m) > 1);
            }
            locks.entry(key.clone()).or_default().clone()
        };
        m.lock_owned().await
    }

    /// Renews (now) the user's channel if it expires within `within`; for the renew endpoint.
    pub async fn renew_user(
        &self,
        key: &CalendarKey,
        within: std::time::Duration,
    ) -> Result<channels::Ensured, SyncError> {
        let _job = self.lock(key).await;
        let account = self.app.service_account(&key.tenant)?;
        let mut token = CalendarToken::new(self, &account, &key.user).await?;
        let result = channels::ensure(self, &key.tenant, &key.user, &mut token, within, true).await;
        if result.is_err() {
            self.app.metrics.renewal("failed");
        }
        result
    }

    /// A verified notification for a user's calendar; returns once the need to sync is durable.
    pub async fn notified(&self, key: &CalendarKey) -> Result<(), StoreError> {
        let now = self.clock.now();
        {
            let mut last = self.last_notification.lock();
            match last.get_mut(key) {
                Some(at) => *at = now,
                None => {
                    last.insert(key.clone(), now);
                }
            }
        }
        self.queue.notify(key).await?;
        self.app.metrics.dirty_calendars.set(self.queue.pending() as i64);
        Ok(())
    }

    pub fn last_notification(&self, key: &CalendarKey) -> Option<DateTime<Utc>> {
        self.last_notification.lock().get(key).copied()
    }

    /// A user was added or changed: sync (and register a channel) soon, even if backing off.
    pub fn user_saved(&self, tenant: &str, user: &str) {
        self.queue.enqueue_now(&CalendarKey::new(tenant, user));
    }

    /// Stops the user's channels at Google and deletes everything gwsync kept for them.
    pub async fn remove_user(&self, tenant: &str, user: &str) -> Result<(), StoreError> {
        let key = CalendarKey::new(tenant, user);
        self.queue.forget(&key);
        self.presence.forget(&key);
        self.last_notification.lock().remove(&key);
        let _job = self.lock(&key).await;
        for channel in self.app.store.channels_of(tenant, user)? {
            channels::retire(self, &channel).await;
        }
        self.app.store.delete_user(tenant, user)?;
        crate::store::flush(&self.app.store).await
    }

    async fn worker(&self, shutdown: CancellationToken) {
        loop {
            let claim = tokio::select! {
                () = shutdown.cancelled() => return,
                claim = self.queue.take() => claim,
            };
            // A job is not interrupted halfway: its writes are atomic, and an unfinished one
            // leaves its dirty mark for the next start.
            let outcome = tokio::select! {
                () = shutdown.cancelled() => return,
                outcome = self.run(&claim) => outcome,
            };
            if let Err(e) = self.queue.finish(&claim, outcome) {
                tracing::error!(calendar = %claim.key, error = %e, "could not record the end of a sync");
            }
            self.app.metrics.dirty_calendars.set(self.queue.pending() as i64);
        }
    }

    async fn run(&self, claim: &Claim) -> Finish {
        let key = &claim.key;
        match self.job(key).await {
            Ok(()) => {
                if let Some(since) = claim.since {
                    self.app.metrics.sync_lag.observe(since.elapsed().as_secs_f64());
                }
                Finish::Done
            }
            Err(e) => {
                self.app.metrics.sync("failed");
                let retry_at = self.retry_at(key, &e);
                tracing::warn!(calendar = %key, code = e.code(), error = %e, retry_at = ?retry_at, "sync failed");
                if let Err(store_error) = self.record_failure(key, &e, retry_at) {
                    tracing::error!(calendar = %key, error = %store_error, "could not record a sync failure");
                }
                match retry_at {
                    Some(at) => Finish::RetryAt(at),
                    None => Finish::GiveUp,
                }
            }
        }
    }

    /// One calendar: make sure it has a live channel, then sync it.
    async fn job(&self, key: &CalendarKey) -> Result<(), SyncError> {
        let store = &self.app.store;
        if store.tenant(&key.tenant)?.is_none() || store.user(&key.tenant, &key.user)?.is_none() {
            return Ok(());
        }
        let account = self.app.service_account(&key.tenant)?;
        let mut token = CalendarToken::new(self, &account, &key.user).await?;
        let _job = self.lock(key).await;
        // The channel first: a change made between a sync and a later registration would
        // otherwise wait for the backstop.
        let within = self.app.config.sync.renew_within;
        let channel = channels::ensure(self, &key.tenant, &key.user, &mut token, within, false).await;
        if channel.is_err() {
            self.app.metrics.renewal("failed");
        }
        calendar::sync(self, &key.tenant, &key.user, &mut token).await?;
        self.presence.recompute(key)?;
        channel.map(|_| ())
    }

    fn retry_at(&self, key: &CalendarKey, e: &SyncError) -> Option<DateTime<Utc>> {
        let failures =
            self.app.store.calendar_state(&key.tenant, &key.user).ok().flatten().map(|s| s.failures).unwrap_or(0);
        let now = self.clock.now();
        let config = &self.app.config.sync;
        let delay = match e.retry() {
            Retry::Never => return None,
            Retry::Slowly => jittered(config.slow_retry),
            Retry::Backoff(at_least) => crate::backoff::delay(failures, Duration::from_secs(2), config.max_backoff)
                .max(at_least.unwrap_or_default()),
        };
        // Delays are bounded (config, Retry-After capped), but never let a date overflow.
        let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::days(1));
        Some(now.checked_add_signed(delay).unwrap_or(now + chrono::Duration::days(1)))
    }

    fn record_failure(
        &self,
        key: &CalendarKey,
        e: &SyncError,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let store = &self.app.store;
        if store.user(&key.tenant, &key.user)?.is_none() {
            return Ok(());
        }
        let mut state = store.calendar_state(&key.tenant, &key.user)?.unwrap_or_default();
        state.failures = state.failures.saturating_add(1);
        state.last_error = Some(SyncFailure {
            code: e.code().to_owned(),
            message: e.to_string(),
            hint: e.hint(),
            at: self.clock.now(),
            retry_at,
        });
        store.put_calendar_state(&key.tenant, &key.user, &state)
    }

    async fn retry_timer(&self, shutdown: CancellationToken) {
        loop {
            self.queue.release_due(self.clock.now());
            let next = self.queue.next_due();
            let wait = async {
                match next {
                    Some(t) => self.clock.sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = wait => {}
                () = self.queue.delayed_changed() => {}
            }
        }
    }
}

/// `d` ± 25 %, so retries of many calendars don't line up.
fn jittered(d: Duration) -> Duration {
    let factor = rand::rng().random_range(0.75..1.25);
    d.mul_f64(factor)
}
