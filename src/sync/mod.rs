//! Calendar sync: the dirty queue fed by webhooks, start-up and the backstop; jobs that
//! register push channels and sync calendars; and removal of users' channels and data.
//!
//! Scheduling, so that no tenant holds up another:
//! - the queue hands out claims tenant by tenant in turn, each tenant holding at most
//!   `sync.tenant_workers` (`queue` module doc);
//! - a job first takes its user's lock and checks the user still exists, then gets a token
//!   through its tenant's gate (`tenant_auth`: a failing token endpoint is tried by one probe
//!   at a time, with `sync.token_timeout`), and only then one of the `sync.workers` slots for
//!   its Google calls — so waiting for a token holds no slot;
//! - every Google call is paced under its tenant's own project quota (`pacing`).
//!
//! Deletion is final: the store refuses writes for a user that no longer exists (atomically,
//! `StoreError::Gone`), so a job that was running when its user or tenant was deleted leaves
//! nothing behind; the deleted user's channels are marked orphaned in the same write and the
//! keeper stops them at Google in the background.
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
pub mod renewal;
pub mod tenant_auth;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use rand::RngExt;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::AppState;
use crate::clock::Clock;
use crate::google::error::AuthError;
use crate::model::CalendarKey;
use crate::presence::engine::Presence;
use crate::store::{MarkRead, StoreError, SyncFailure};
use calendar::CalendarToken;
use error::{Retry, SyncError};
use pacing::Pacer;
use queue::{Claim, Finish, SyncQueue};
use tenant_auth::{Gate, TenantAuth};

pub struct SyncService {
    pub app: Arc<AppState>,
    pub queue: SyncQueue,
    pub pacer: Pacer,
    pub clock: Clock,
    pub presence: Arc<Presence>,
    /// One job per user at a time: a sync with its channel check, a renewal, a channel stop.
    locks: Mutex<HashMap<CalendarKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Each tenant's token endpoint, as a gate in front of its jobs.
    pub tenant_auth: TenantAuth,
    /// Slots for jobs calling Google (`sync.workers`).
    slots: Arc<Semaphore>,
    /// Wakes the channel keeper early (a deletion left channels to stop).
    pub keeper_wake: Notify,
}

impl SyncService {
    pub fn new(app: Arc<AppState>, queue: SyncQueue, clock: Clock, presence: Arc<Presence>) -> Self {
        let app_workers = app.config.sync.workers.max(1);
        SyncService {
            pacer: Pacer::new(&app.config.sync),
            app,
            queue,
            clock,
            presence,
            locks: Mutex::new(HashMap::new()),
            tenant_auth: TenantAuth::default(),
            slots: Arc::new(Semaphore::new(app_workers)),
            keeper_wake: Notify::new(),
        }
    }

    /// Starts the workers, the retry timer, the backstop and the channel keeper on `tracker`.
    pub async fn start(
        self: &Arc<Self>,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Result<(), StoreError> {
        let marked = self.queue.load_marks().await?;
        if marked > 0 {
            tracing::info!(calendars = marked, "resuming syncs marked before the last stop");
        }
        let (svc, stop, jobs) = (self.clone(), shutdown.clone(), tracker.clone());
        tracker.spawn(async move { svc.dispatch(jobs, stop).await });
        let (svc, stop) = (self.clone(), shutdown.clone());
        tracker.spawn(async move { svc.retry_timer(stop).await });
        if self.app.cluster.is_shared() {
            // The backstop and the keeper run on the leader (`roles`); marks a dead replica
            // left are picked up here.
            let (svc, stop) = (self.clone(), shutdown.clone());
            tracker.spawn(async move { svc.adopt_orphans(stop).await });
        } else {
            self.start_leader_tasks(tracker, shutdown);
        }
        Ok(())
    }

    /// The backstop and the channel keeper: on the leader only.
    pub fn start_leader_tasks(self: &Arc<Self>, tracker: &TaskTracker, shutdown: &CancellationToken) {
        let (svc, stop) = (self.clone(), shutdown.clone());
        tracker.spawn(async move { backstop::run(svc, stop).await });
        let (svc, stop) = (self.clone(), shutdown.clone());
        tracker.spawn(async move { keeper::run(svc, stop).await });
    }

    /// Shared database: every half lease, queues here the dirty marks no replica holds a
    /// claim on (a replica died, or stopped, before syncing them).
    async fn adopt_orphans(&self, shutdown: CancellationToken) {
        let every = self.app.cluster.lease().unwrap_or(Duration::from_secs(30)) / 2;
        let tick = every.min(Duration::from_secs(3));
        let mut next_scan = tokio::time::Instant::now() + every;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(tick) => {}
            }
            // The budgets are the cluster's: share them among the live replicas.
            self.pacer.set_replicas(self.app.cluster.members());
            if tokio::time::Instant::now() < next_scan {
                continue;
            }
            next_scan = tokio::time::Instant::now() + every;
            let found = async {
                let marks = self.app.store.dirty_calendars().await.map_err(|e| e.to_string())?;
                if marks.is_empty() {
                    return Ok(0);
                }
                let claimed = self.app.cluster.claimed().await.map_err(|e| e.to_string())?;
                let mut adopted = 0;
                for (tenant, user, generation) in marks {
                    let key = CalendarKey { tenant, user };
                    if !claimed.contains(&key) && self.queue.adopt(&key, generation) {
                        adopted += 1;
                    }
                }
                Ok::<usize, String>(adopted)
            };
            match found.await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(calendars = n, "syncing calendars whose claims ran out");
                    self.app.metrics.dirty_calendars.set(self.queue.pending() as i64);
                }
                Err(e) => tracing::warn!(error = %e, "cannot look for calendars nobody syncs"),
            }
        }
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
        let Some(inputs) = self.app.store.sync_inputs(&key.tenant, &key.user).await? else {
            return Err(StoreError::Gone.into());
        };
        let account = self.app.service_account(&key.tenant).await?;
        let mut token = CalendarToken::new(self, &account, &key.user).await?;
        let result = channels::ensure(self, &key.tenant, &key.user, &mut token, within, true, inputs.channels).await;
        if result.is_err() {
            self.app.metrics.renewal("failed");
        }
        result
    }

    /// A verified notification for a user's calendar; returns once the need to sync is durable.
    pub async fn notified(&self, key: &CalendarKey) -> Result<(), StoreError> {
        // The gauge changes only when a calendar becomes pending (no second queue lock on the
        // acknowledgement path otherwise); the jobs set it as they end.
        if self.queue.notify(key).await? {
            self.app.metrics.dirty_calendars.set(self.queue.pending() as i64);
        }
        Ok(())
    }

    pub fn last_notification(&self, key: &CalendarKey) -> Option<DateTime<Utc>> {
        self.queue.last_notification(key)
    }

    /// A user was added or changed: sync (and register a channel) soon, even if backing off.
    pub fn user_saved(&self, tenant: &str, user: &str) {
        self.queue.enqueue_now(&CalendarKey::new(tenant, user));
    }

    /// Deletes everything gwsync kept for the user, durably, and leaves their channels to the
    /// keeper to stop at Google (in the background: no Google call inside the request). A job
    /// running for the user meanwhile can write nothing more for them (`StoreError::Gone`).
    pub async fn remove_user(&self, tenant: &str, user: &str) -> Result<(), StoreError> {
        let key = CalendarKey::new(tenant, user);
        self.app.store.delete_user(tenant, user).await?;
        crate::store::flush(&self.app.store).await?;
        self.queue.forget(&key);
        self.presence.forget(&key);
        self.app.tokens.forget_user(tenant, user);
        self.keeper_wake.notify_one();
        if !self.app.cluster.reconciles_here() {
            self.app.cluster.wake_keeper().await;
        }
        Ok(())
    }

    /// Deletes the tenant with everything of its users, durably; its channels are stopped by
    /// the keeper in the background with the tenant's key, which is discarded after them.
    pub async fn remove_tenant(&self, tenant: &str) -> Result<bool, StoreError> {
        let users = self.app.store.users(tenant).await?;
        let existed = self.app.store.delete_tenant(tenant).await?;
        crate::store::flush(&self.app.store).await?;
        self.queue.forget_tenant(tenant);
        for u in users {
            let key = CalendarKey::new(tenant, &u.email);
            self.presence.forget(&key);
        }
        self.presence.outbox.forget_tenant(tenant);
        self.tenant_auth.forget(tenant);
        self.publish_tenant_health();
        self.app.forget_tenant(tenant);
        self.keeper_wake.notify_one();
        self.app.cluster.tenant_changed(tenant).await;
        if !self.app.cluster.reconciles_here() {
            self.app.cluster.wake_keeper().await;
        }
        Ok(existed)
    }

    /// Hands claims to jobs, each on its own task (the queue bounds how many per tenant).
    async fn dispatch(self: Arc<Self>, jobs: TaskTracker, shutdown: CancellationToken) {
        loop {
            let claim = tokio::select! {
                () = shutdown.cancelled() => return,
                claim = self.queue.take() => claim,
            };
            let (svc, stop) = (self.clone(), shutdown.clone());
            jobs.spawn(async move {
                // A job is not interrupted halfway: its writes are atomic, and an unfinished
                // one leaves its dirty mark for the next start.
                let outcome = tokio::select! {
                    // Unfinished: the claim is not ended, so its durable mark stays.
                    () = stop.cancelled() => {
                        // Another replica may take it over at once (its mark stays).
                        let _ = svc.app.cluster.release(&claim.key).await;
                        return;
                    }
                    outcome = svc.run_claimed(&claim) => outcome,
                };
                match svc.queue.finish(&claim, outcome).await {
                    Ok(after) => svc.after_claim(&claim.key, after).await,
                    Err(e) => {
                        tracing::error!(tenant = %claim.key.tenant, user = %claim.key.user, error = %e, "could not record the end of a sync");
                    }
                }
                svc.app.metrics.dirty_calendars.set(svc.queue.pending() as i64);
            });
        }
    }

    /// `run`, on a shared database after claiming the calendar across replicas (`cluster`),
    /// keeping the claim alive while the job runs.
    async fn run_claimed(&self, claim: &Claim) -> Finish {
        let cluster = &self.app.cluster;
        let Some(lease) = cluster.lease() else { return self.run(claim).await };
        let key = &claim.key;
        // Held without a break since the last sync here: no other replica can have synced and
        // cleared the calendar meanwhile (a look may trust the generation it reads).
        let continued = cluster.holds(key);
        match cluster.claim(key).await {
            Ok(crate::cluster::Claimed::Mine) => {
                if !continued {
                    self.queue.claim_renewed(key);
                }
            }
            Ok(crate::cluster::Claimed::Elsewhere { for_ }) => {
                tracing::debug!(tenant = %key.tenant, user = %key.user, ?for_, "calendar claimed by another replica");
                return Finish::Elsewhere { held_for: for_ };
            }
            Err(e) => {
                tracing::warn!(tenant = %key.tenant, user = %key.user, error = %e, "cannot claim the calendar; retrying");
                return Finish::RetryAt(self.clock.now() + chrono::Duration::seconds(5));
            }
        }
        // Recorded as read, so a notification on another replica from now on writes a newer
        // mark for this sync's end to find. A read within the promise of the last one (a
        // settling window, up to 2 s for a busy rerun) is refused (the promise lets other
        // replicas trust an unread mark until then): wait out the rest, holding the claim.
        // A little under the queue's own window, which started before the claim: a rerun at
        // the window's end is not refused for the claim's round trip. For a calendar synced
        // back to back, most of its cycle (`SyncQueue::read_promise`).
        let terms = self.queue.read_promise(key, self.queue.rerun_delay() * 9 / 10);
        let mut waited = 0;
        let generation = loop {
            match self.app.store.read_dirty(&key.tenant, &key.user, terms.spacing, terms.busy_for).await {
                Ok(MarkRead::Read(g)) => break g,
                Ok(MarkRead::NotBefore(wait)) if wait < lease / 3 && waited < 3 => {
                    waited += 1;
                    // The claim may have come with only two thirds of a lease left
                    // (`claims::Held`): it must outlast the wait and the sync's first keep-alive.
                    if !matches!(cluster.hold(key, wait).await, Ok(true)) {
                        self.queue.claim_lost(key);
                        return Finish::RetryAt(self.clock.now() + chrono::Duration::seconds(1));
                    }
                    tokio::time::sleep(wait).await;
                }
                Ok(MarkRead::NotBefore(wait)) => {
                    let wait = chrono::Duration::from_std(wait).unwrap_or_else(|_| chrono::Duration::seconds(5));
                    return Finish::RetryAt(self.clock.now() + wait);
                }
                Err(e) => {
                    tracing::warn!(tenant = %key.tenant, user = %key.user, error = %e, "cannot read the dirty mark; retrying");
                    return Finish::RetryAt(self.clock.now() + chrono::Duration::seconds(5));
                }
            }
        };
        let skip = self.queue.claimed(key, generation);
        tracing::debug!(tenant = %key.tenant, user = %key.user, ?generation, skip, "calendar claimed");
        if skip {
            // Another replica synced it since its notifications: no Google call.
            return Finish::Done;
        }
        let keep_alive = async {
            loop {
                tokio::time::sleep(lease / 3).await;
                match cluster.hold(key, std::time::Duration::ZERO).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(tenant = %key.tenant, user = %key.user, "the calendar's claim ran out during its sync");
                        self.queue.claim_lost(key);
                    }
                    Err(e) => {
                        tracing::warn!(tenant = %key.tenant, user = %key.user, error = %e, "cannot extend the calendar's claim")
                    }
                }
            }
        };
        tokio::select! {
            outcome = self.run(claim) => outcome,
            () = keep_alive => unreachable!("the keep-alive loop never ends"),
        }
    }

    /// Lets the calendar's claim go, or keeps it until its next run.
    async fn after_claim(&self, key: &CalendarKey, after: queue::After) {
        let cluster = &self.app.cluster;
        let result = match after {
            // Held for the rest of the settling window: other replicas' notifications in it
            // wait for one sync after it, as this replica's own do.
            // (A moment longer than the queue's own window, which trusts the claim until then.)
            // A notification here queued the calendar again meanwhile, and its sync may hold
            // the claim already (`claims::Held`): the claim stays for it.
            queue::After::Ended if self.queue.contains(key) => Ok(()),
            queue::After::Ended => {
                let left = self.queue.settling_left(key);
                let left = if left.is_zero() { left } else { left + Duration::from_millis(100) };
                cluster.release_after(key, left).await
            }
            queue::After::Again(at) => {
                let wait = at.map(|t| (t - self.clock.now()).to_std().unwrap_or_default()).unwrap_or_default();
                cluster.hold(key, wait).await.map(|_| ())
            }
        };
        if let Err(e) = result {
            tracing::warn!(tenant = %key.tenant, user = %key.user, error = %e, "cannot update the calendar's claim");
        }
    }

    async fn run(&self, claim: &Claim) -> Finish {
        let key = &claim.key;
        let span = tracing::info_span!("sync", tenant = %key.tenant, user = %key.user);
        let result = tracing::Instrument::instrument(self.job(key), span).await;
        match result {
            Ok(()) => {
                if let Some(since) = claim.since {
                    self.app.metrics.sync_lag.observe(since.elapsed().as_secs_f64());
                }
                Finish::Done
            }
            // Deleted meanwhile: nothing more to do, and nothing was written.
            Err(SyncError::Store(StoreError::Gone)) => Finish::Done,
            Err(SyncError::TenantWaiting { retry_at, .. }) => {
                if let Err(store_error) = self.record_tenant_wait(key).await {
                    tracing::error!(tenant = %key.tenant, user = %key.user, error = %store_error, "could not record a sync failure");
                }
                Finish::RetryAt(retry_at)
            }
            Err(e) => {
                self.app.metrics.sync("failed");
                let retry_at = self.retry_at(key, &e).await;
                tracing::warn!(tenant = %key.tenant, user = %key.user, code = e.code(), error = %e, retry_at = ?retry_at, "sync failed");
                if let Err(store_error) = self.record_failure(key, &e, retry_at).await {
                    tracing::error!(tenant = %key.tenant, user = %key.user, error = %store_error, "could not record a sync failure");
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
        // The user's lock first, then the check that the user exists: a deletion after the
        // check is caught by the store (`Gone`), one before it ends the job here.
        let _job = self.lock(key).await;
        // The tenant, the user, the calendar's state and channels, in one read.
        let Some(inputs) = self.app.store.sync_inputs(&key.tenant, &key.user).await? else { return Ok(()) };
        let account = self.app.service_account(&key.tenant).await?;
        let mut token = self.token(key, &account).await?;
        // Only now a slot: waiting for a token held none.
        let _slot = self.slots.acquire().await.ok();
        // The channel first: a change made between a sync and a later registration would
        // otherwise wait for the backstop.
        let within = self.app.config.sync.renew_within;
        let channel = channels::ensure(self, &key.tenant, &key.user, &mut token, within, false, inputs.channels).await;
        if channel.is_err() {
            self.app.metrics.renewal("failed");
        }
        let report = calendar::sync(self, &key.tenant, &key.user, &mut token, inputs.state).await?;
        // A sync that changed nothing leaves the timeline as it was (a profile change
        // recomputes by itself, the scheduler rolls the horizon): on a shared database this
        // spares the leader a reconcile per quiet sync.
        if report.timeline_changed {
            self.presence.recompute(key).await?;
            self.app.metrics.timeline_recompute("changed");
        }
        channel.map(|_| ())
    }

    /// A calendar token for the job, through the tenant's gate.
    async fn token<'a>(
        &'a self,
        key: &'a CalendarKey,
        account: &'a crate::google::auth::ServiceAccount,
    ) -> Result<CalendarToken<'a>, SyncError> {
        let now = self.clock.now();
        let config = &self.app.config.sync;
        if let Gate::Wait(retry_at) = self.tenant_auth.gate(&key.tenant, now, config.token_timeout) {
            return Err(SyncError::TenantWaiting { tenant: key.tenant.clone(), retry_at });
        }
        match CalendarToken::new(self, account, &key.user).await {
            Ok(token) => {
                if self.tenant_auth.succeeded(&key.tenant, self.clock.now()) {
                    self.queue.release_tenant(&key.tenant);
                    self.app.cluster.tenant_token_changed(&key.tenant, None, account.key_identity()).await;
                }
                self.publish_tenant_health();
                Ok(token)
            }
            Err(SyncError::Auth(e)) if tenant_auth::is_tenant_wide(&e) => {
                if !self.key_still_current(&key.tenant, account).await {
                    // The key was replaced (or the tenant deleted) while this request waited:
                    // its failure says nothing about the tenant now. Run again with what is.
                    return Err(SyncError::TenantWaiting { tenant: key.tenant.clone(), retry_at: now });
                }
                let (slow, max) = (config.slow_retry, config.max_backoff);
                let transient = matches!(e, AuthError::Transient(_));
                let retry_at = self.tenant_auth.failed(&key.tenant, &e, self.clock.now(), |n| {
                    if transient { crate::backoff::delay(n, Duration::from_secs(5), max) } else { jittered(slow) }
                });
                self.publish_tenant_health();
                let failure = self.tenant_auth.failure_to_tell(&key.tenant);
                self.app.cluster.tenant_token_changed(&key.tenant, failure, account.key_identity()).await;
                Err(SyncError::TenantWaiting { tenant: key.tenant.clone(), retry_at })
            }
            Err(e) => {
                self.tenant_auth.release_probe(&key.tenant);
                Err(e)
            }
        }
    }

    /// Whether the tenant still exists with the key a job used.
    async fn key_still_current(&self, tenant: &str, used: &crate::google::auth::ServiceAccount) -> bool {
        matches!(self.app.store.tenant(tenant).await, Ok(Some(_)))
            && self.app.service_account(tenant).await.is_ok_and(|current| current.info == used.info)
    }

    /// Another replica found the tenant's token endpoint failing (`failure`, as JSON) or
    /// answering again (`None`) with `key`: this one shows the same and holds or releases its
    /// jobs alike — unless the tenant's key is another by now (a new one was uploaded, or the
    /// tenant deleted, while the news was on its way).
    pub async fn tenant_token_elsewhere(&self, tenant: &str, failure: Option<&str>, key: &str) {
        let current = self.app.service_account(tenant).await.map(|a| a.key_identity());
        if current.as_deref().ok() != Some(key) {
            tracing::debug!(tenant, "ignoring another replica's token news about a key that is no longer the tenant's");
            return;
        }
        let failure = match failure.map(serde_json::from_str::<tenant_auth::TokenFailure>) {
            Some(Ok(f)) => Some(f),
            Some(Err(e)) => {
                tracing::warn!(tenant, error = %e, "ignoring another replica's token failure that cannot be read");
                return;
            }
            None => None,
        };
        if self.tenant_auth.adopt(tenant, failure, self.clock.now()) {
            self.queue.release_tenant(tenant);
        }
        self.publish_tenant_health();
    }

    /// Another replica asked for news (it started, or its listener reconnected): this one
    /// tells again of every tenant whose token endpoint it holds failing, with the tenant's
    /// current key. A failure it heard from a replica that has stopped since lives on only here.
    pub async fn tell_token_failures_again(&self) {
        for tenant in self.tenant_auth.failing_tenants() {
            let Some(failure) = self.tenant_auth.failure_to_tell(&tenant) else { continue };
            match self.app.service_account(&tenant).await {
                Ok(account) => {
                    self.app.cluster.tenant_token_changed(&tenant, Some(failure), account.key_identity()).await;
                }
                // Its key is gone or unreadable: nothing to tell of it.
                Err(e) => tracing::debug!(tenant, error = %e, "not telling of a token failure without a key"),
            }
        }
    }

    fn publish_tenant_health(&self) {
        self.app.metrics.failing_tenants("google_token", self.tenant_auth.failing());
    }

    /// The user's status shows the tenant's token failure while they wait for it.
    async fn record_tenant_wait(&self, key: &CalendarKey) -> Result<(), StoreError> {
        let Some(f) = self.tenant_auth.failure(&key.tenant) else { return Ok(()) };
        let store = &self.app.store;
        let mut state = store.calendar_state(&key.tenant, &key.user).await?.unwrap_or_default();
        let already = state.last_error.as_ref().is_some_and(|e| e.code == f.code && e.retry_at == Some(f.retry_at));
        if already {
            return Ok(());
        }
        state.last_error = Some(SyncFailure {
            code: f.code.to_owned(),
            message: f.message,
            hint: f.hint,
            at: self.clock.now(),
            retry_at: Some(f.retry_at),
        });
        match store.put_calendar_state(&key.tenant, &key.user, &state).await {
            Err(StoreError::Gone) => Ok(()),
            other => other,
        }
    }

    async fn retry_at(&self, key: &CalendarKey, e: &SyncError) -> Option<DateTime<Utc>> {
        let failures =
            self.app.store.calendar_state(&key.tenant, &key.user).await.ok().flatten().map(|s| s.failures).unwrap_or(0);
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

    async fn record_failure(
        &self,
        key: &CalendarKey,
        e: &SyncError,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let store = &self.app.store;
        let mut state = store.calendar_state(&key.tenant, &key.user).await?.unwrap_or_default();
        state.failures = state.failures.saturating_add(1);
        state.last_error = Some(SyncFailure {
            code: e.code().to_owned(),
            message: e.to_string(),
            hint: e.hint(),
            at: self.clock.now(),
            retry_at,
        });
        match store.put_calendar_state(&key.tenant, &key.user, &state).await {
            // The user was deleted meanwhile: no status to keep.
            Err(StoreError::Gone) => Ok(()),
            other => other,
        }
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
