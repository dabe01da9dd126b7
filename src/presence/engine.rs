//! The presence engine: each user's timeline over the horizon, recomputed when their events or
//! profiles change and as the horizon rolls; a scheduler that wakes at every boundary (on the
//! injected clock) and reconciles what the phone system was last told with what is true now.
//!
//! Reconciling is level-triggered: at a boundary, after a change, and at start, gwsync compares
//! the state now with the last state it queued for the user and queues a message only if they
//! differ. So an edit before a boundary simply changes what fires, and after downtime each user
//! gets their current state once — not the missed history.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::outbox::Outbox;
use super::timeline::{Profiles, State, Timeline, Transition};
use crate::app::AppState;
use crate::model::CalendarKey;
use crate::store::{OutboxMessage, PresenceRecord, StoreError};

/// How far back a timeline reaches (an event that began before "now" still counts).
const LOOKBACK: Duration = Duration::days(2);

/// How far ahead the timelines kept in memory for the scheduler reach (they roll a day before
/// they run out). The presence API computes the whole horizon from the store when asked, so
/// memory stays small with 100,000 users.
const SCHEDULE_WINDOW: Duration = Duration::days(3);

pub struct Presence {
    app: Arc<AppState>,
    pub outbox: Arc<Outbox>,
    timelines: Mutex<HashMap<CalendarKey, Arc<Timeline>>>,
    /// Users with a series that hit an expansion limit in the scheduling window (their status
    /// names it).
    capped: Mutex<HashMap<CalendarKey, Vec<String>>>,
    /// Each user's next wake-up (a boundary, or time to roll the horizon).
    schedule: Mutex<Schedule>,
    wake: Notify,
    /// Serialise recomputing and reconciling per user (striped by key): the scheduler, sync
    /// workers and API handlers all do it, and the sequence read-increment-write and the
    /// choice of timeline must not interleave.
    user_locks: Vec<tokio::sync::Mutex<()>>,
}

const USER_LOCK_STRIPES: usize = 64;

#[derive(Default)]
struct Schedule {
    queue: BTreeSet<(DateTime<Utc>, CalendarKey)>,
    at: HashMap<CalendarKey, DateTime<Utc>>,
}

impl Schedule {
    fn set(&mut self, key: &CalendarKey, when: Option<DateTime<Utc>>) {
        if let Some(old) = self.at.remove(key) {
            self.queue.remove(&(old, key.clone()));
        }
        if let Some(w) = when {
            self.queue.insert((w, key.clone()));
            self.at.insert(key.clone(), w);
        }
    }
}

impl Presence {
    pub fn new(app: Arc<AppState>, outbox: Arc<Outbox>) -> Self {
        Presence {
            app,
            outbox,
            timelines: Mutex::new(HashMap::new()),
            capped: Mutex::new(HashMap::new()),
            schedule: Mutex::new(Schedule::default()),
            wake: Notify::new(),
            user_locks: (0..USER_LOCK_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    async fn user_lock(&self, key: &CalendarKey) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        self.user_locks[(h.finish() as usize) % USER_LOCK_STRIPES].lock().await
    }

    fn horizon(&self) -> Duration {
        Duration::from_std(self.app.config.presence.horizon).unwrap_or(Duration::days(14))
    }

    /// Recomputes every user's timeline (at start); messages go out for those whose state
    /// changed while gwsync was down.
    /// Runs at start-up, before the server listens: spread over the cores (the expansions run
    /// on blocking threads), as 100,000 users take seconds on one.
    pub async fn recompute_all(&self) -> Result<usize, StoreError> {
        use futures_util::TryStreamExt;
        let mut keys = Vec::new();
        for t in self.app.store.tenants().await? {
            keys.extend(self.app.store.users(&t.id).await?.into_iter().map(|u| CalendarKey::new(&t.id, &u.email)));
        }
        let parallel = 2 * std::thread::available_parallelism().map_or(1, usize::from);
        futures_util::stream::iter(keys.iter().map(Ok))
            .try_for_each_concurrent(parallel, |key| self.recompute(key))
            .await?;
        Ok(keys.len())
    }

    /// Recomputes all users of a tenant. With `new_receiver` (its phone system was added or
    /// moved) the receiver is assumed to know nothing, so every user's current state is sent.
    pub async fn recompute_tenant(&self, tenant: &str, new_receiver: bool) -> Result<(), StoreError> {
        if !self.app.cluster.reconciles_here() {
            // Only the leader reconciles (two replicas would race on users' sequences).
            return self
                .app
                .cluster
                .tenant_presence_changed(tenant, new_receiver)
                .await
                .map_err(|e| StoreError::Postgres(e.to_string()));
        }
        let store = &self.app.store;
        for u in store.users(tenant).await? {
            let key = CalendarKey::new(tenant, &u.email);
            // Under the user's lock: a sync reconciling the same user meanwhile either told the
            // new receiver already (its record names the URL) or comes after this.
            let _user = self.user_lock(&key).await;
            if new_receiver
                && let Some(mut record) = store.presence_record(tenant, &u.email).await?
                && record.receiver.is_none()
            {
                // Told before gwsync kept the URL: to whom is unknown, so the new receiver is
                // told. The sequence stays: it must keep rising.
                record.receiver = Some(String::new());
                store.put_presence_record(tenant, &u.email, &record).await?;
            }
            self.recompute_locked(&key).await?;
        }
        Ok(())
    }

    /// The user's timeline from `now - LOOKBACK` to `now + ahead`, from the store; `None` if
    /// the user is gone.
    async fn compute(
        &self,
        key: &CalendarKey,
        now: DateTime<Utc>,
        ahead: Duration,
    ) -> Result<Option<Timeline>, StoreError> {
        let store = &self.app.store;
        let Some(user) = store.user(&key.tenant, &key.user).await? else { return Ok(None) };
        let events = store.events(&key.tenant, &key.user).await?;
        let zone: Tz = store
            .calendar_state(&key.tenant, &key.user)
            .await?
            .and_then(|s| s.time_zone)
            .and_then(|z| z.parse().ok())
            .unwrap_or(chrono_tz::UTC);
        let tenant = store.tenant(&key.tenant).await?;
        let status = crate::model::user::EffectiveStatusEvents::of(&user, tenant.as_ref().map(|t| &t.status_events));
        let profiles = Profiles::with_status_events(&user.profiles, &status.mapping);
        // Expanding series is CPU work: off the async threads, so a large calendar never
        // holds up the threads that answer HTTP and webhooks.
        off_thread(move || Ok(Some(Timeline::compute_from(&events, &profiles, zone, now - LOOKBACK, now, now + ahead))))
            .await
    }

    /// Recomputes one user's timeline from their stored events and profiles, and reconciles.
    pub async fn recompute(&self, key: &CalendarKey) -> Result<(), StoreError> {
        if !self.app.cluster.reconciles_here() {
            // Only the leader reconciles (two replicas would race on the user's sequence).
            // Not sent: the caller's job fails and runs again (the calendar's state keeps
            // `timeline_pending`), rather than leaving the timeline stale.
            return self.app.cluster.presence_changed(key).await.map_err(|e| StoreError::Postgres(e.to_string()));
        }
        let _user = self.user_lock(key).await;
        self.recompute_locked(key).await
    }

    async fn recompute_locked(&self, key: &CalendarKey) -> Result<(), StoreError> {
        let now = self.app.clock.now();
        let Some(timeline) = self.compute(key, now, SCHEDULE_WINDOW.min(self.horizon())).await? else {
            self.forget(key);
            return Ok(());
        };
        let timeline = Arc::new(timeline);
        if timeline.capped.is_empty() {
            self.capped.lock().remove(key);
        } else {
            tracing::warn!(tenant = %key.tenant, user = %key.user, series = ?timeline.capped, "a recurring event has more instances than gwsync expands; only the first count");
            self.capped.lock().insert(key.clone(), timeline.capped.clone());
        }
        if timeline.segments.is_empty() {
            // Nothing switches in the window, so nothing is worth keeping: the scheduler's
            // daily roll recomputes from the store (most users of a large tenant, most days).
            self.timelines.lock().remove(key);
        } else {
            self.timelines.lock().insert(key.clone(), timeline.clone());
        }
        self.reconcile(key, &timeline, now).await?;
        self.reschedule(key, &timeline, now);
        Ok(())
    }

    /// Forgets every timeline and wake-up (this replica stopped leading: another one
    /// schedules now, and taking over again recomputes everything).
    pub fn clear(&self) {
        self.timelines.lock().clear();
        self.capped.lock().clear();
        *self.schedule.lock() = Schedule::default();
    }

    /// Series of the user that hit an expansion limit in the scheduling window.
    pub fn capped_series(&self, key: &CalendarKey) -> Vec<String> {
        self.capped.lock().get(key).cloned().unwrap_or_default()
    }

    pub fn forget(&self, key: &CalendarKey) {
        self.timelines.lock().remove(key);
        self.capped.lock().remove(key);
        self.schedule.lock().set(key, None);
        self.outbox.forget(key);
    }

    fn reschedule(&self, key: &CalendarKey, timeline: &Timeline, now: DateTime<Utc>) {
        // Roll the horizon a day before it runs out.
        let roll = roll_at(timeline);
        let next = timeline.next_boundary(now).map_or(roll, |b| b.min(roll));
        self.schedule.lock().set(key, Some(next.max(now)));
        self.wake.notify_one();
    }

    /// The user's state now, the switches ahead over the whole horizon, and the series that hit
    /// an expansion limit; `None` if the user is gone.
    pub async fn presence(&self, key: &CalendarKey) -> Result<Option<PresenceNow>, StoreError> {
        let now = self.app.clock.now();
        Ok(self.compute(key, now, self.horizon()).await?.map(|t| PresenceNow {
            state: t.state_at(now),
            upcoming: t.upcoming(now),
            capped: t.capped.clone(),
        }))
    }

    /// Queues a message if the user's state at `now` is not what the phone system was last told.
    async fn reconcile(&self, key: &CalendarKey, timeline: &Timeline, now: DateTime<Utc>) -> Result<(), StoreError> {
        let store = &self.app.store;
        let Some(tenant) = store.tenant(&key.tenant).await? else { return Ok(()) };
        let Some(phone) = tenant.phone_system.as_ref() else { return Ok(()) };
        let receiver = phone.url.as_str();
        let Some(user) = store.user(&key.tenant, &key.user).await? else { return Ok(()) };
        let state = timeline.state_at(now);
        let record = store.presence_record(&key.tenant, &key.user).await?.unwrap_or_default();
        // What this receiver was told (a phone system at another URL knows nothing yet).
        let told = record.last.as_ref().filter(|_| record.receiver.as_deref().is_none_or(|r| r == receiver));
        let news = match told {
            Some(last) => !last.same_as(&state),
            // A phone system assumes the default profile for someone it was never told about.
            None => state.profile.is_some(),
        };
        if !news {
            return Ok(());
        }
        let sequence = next_sequence(record.sequence, now);
        let body = json!({
            "type": "profile.changed",
            "tenant": key.tenant,
            "user": key.user,
            "external_id": user.external_id,
            "sequence": sequence,
            "profile": state.profile,
            "since": state.since.map(rfc3339),
            "until": state.until.map(rfc3339),
            "cause": state.cause,
        });
        let message = OutboxMessage {
            tenant: key.tenant.clone(),
            user: key.user.clone(),
            sequence,
            id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
            body: body.to_string(),
            created_at: now,
            attempts: 0,
            next_attempt_at: now,
            last_error: None,
        };
        let record = PresenceRecord { sequence, last: Some(state.clone()), receiver: Some(receiver.to_owned()) };
        match store.enqueue_message(&record, &message).await {
            Ok(()) => {}
            // Deleted meanwhile: nothing is queued for a deleted user.
            Err(StoreError::Gone) => return Ok(()),
            Err(e) => return Err(e),
        }
        tracing::info!(tenant = %key.tenant, user = %key.user, sequence, profile = ?state.profile, "profile switch queued");
        self.outbox.queued(&message);
        Ok(())
    }

    /// Wakes at every boundary and reconciles the users whose state changes then.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let clock = self.app.clock.clone();
        loop {
            let now = clock.now();
            let due: Vec<CalendarKey> = {
                let mut s = self.schedule.lock();
                let mut due = Vec::new();
                while let Some((at, _)) = s.queue.first() {
                    if *at > now {
                        break;
                    }
                    if let Some((_, key)) = s.queue.pop_first() {
                        s.at.remove(&key);
                        due.push(key);
                    }
                }
                due
            };
            if !due.is_empty() {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = self.settle(due, now) => {}
                }
            }
            let next = self.schedule.lock().queue.first().map(|(t, _)| *t);
            let wait = async {
                match next {
                    Some(t) => clock.sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                () = wait => {}
            }
        }
    }
}

impl Presence {
    /// Reconciles the users due at `now` (rolling their timelines where they run out).
    async fn settle(&self, due: Vec<CalendarKey>, now: DateTime<Utc>) {
        for key in due {
            // Under the user's lock, so the timeline is the newest (a sync may have just
            // replaced it).
            let _user = self.user_lock(&key).await;
            let timeline = self.timelines.lock().get(&key).cloned();
            let result = match timeline {
                Some(t) if now < roll_at(&t) => {
                    self.reconcile(&key, &t, now).await.map(|()| self.reschedule(&key, &t, now))
                }
                _ => self.recompute_locked(&key).await,
            };
            if let Err(e) = result {
                tracing::error!(tenant = %key.tenant, user = %key.user, error = %e, "presence update failed; retrying in a minute");
                self.schedule.lock().set(&key, Some(now + Duration::minutes(1)));
            }
        }
    }
}

/// When a kept timeline must be computed afresh: a day before its window runs out, or — for
/// a timeline with a series that hit its instance limit — when its last switch has passed, so
/// the series goes on from there.
fn roll_at(timeline: &Timeline) -> DateTime<Utc> {
    let roll = timeline.until - Duration::days(1);
    match timeline.segments.last() {
        Some(last) if !timeline.capped.is_empty() => last.end.min(roll),
        _ => roll,
    }
}

/// What the presence API shows.
#[derive(Debug, Clone)]
pub struct PresenceNow {
    pub state: State,
    pub upcoming: Vec<Transition>,
    /// Series that hit an expansion limit (only their first instances in the window count).
    pub capped: Vec<String>,
}

/// A user's next `sequence`: above the last one used, and at least the time in microseconds —
/// so it keeps rising when the user (or the tenant) is deleted and created again, or the data
/// restored from an older backup, though the record of the last one is gone.
pub fn next_sequence(last: u64, now: DateTime<Utc>) -> u64 {
    let micros = u64::try_from(now.timestamp_micros()).unwrap_or(0);
    last.saturating_add(1).max(micros)
}

async fn off_thread<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| StoreError::Background(e.to_string()))?
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
