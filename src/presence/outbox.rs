//! Delivering profile switches to the phone system: a durable outbox, one signed `POST` per
//! message to the tenant's URL, retried with exponential backoff until a 2xx or until a newer
//! message for the user supersedes it.
//!
//! - **Supersession.** Each message carries the user's whole state, so only a user's newest
//!   message is worth sending: queueing one drops the older undelivered ones (in the store, in
//!   the same write), and after a phone system's downtime it gets each user's current state,
//!   not the history. A message in flight when a newer one arrives finishes its attempt; the
//!   newer one goes next (per user, in sequence order, never two at once).
//! - **Lanes per tenant.** A tenant's phone system has its own delivery slots
//!   (`presence.deliveries_per_tenant`); one that hangs holds only those, never another
//!   tenant's.
//! - **Breaker per tenant.** After `presence.breaker_threshold` failures since the last
//!   delivery — attempts it did not answer at all, and distinct users whose messages it refused
//!   (one user's messages refused again and again are that user's backoff, not an outage) — the
//!   phone system is backed off as a whole (5 s doubling to 5 min): one probe at a time until it
//!   answers, then every waiting user goes out. Failing longer than
//!   `presence.delivery_alert_after` shows as failing in the tenant's status, in metrics and
//!   in diagnose.
//!
//! Messages are written (with the user's new state, atomically) before anything is sent; a
//! crash between sending and deleting one means it is sent again, which the receiver handles
//! by its `sequence` (at-least-once, as promised).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::signing::signature;
use crate::app::{AppState, webhook_secret_context};
use crate::model::CalendarKey;
use crate::store::{OutboxMessage, StoreError};

/// Deliveries in flight across all tenants: a bound on sockets, far above what healthy phone
/// systems need (each tenant is capped well below it).
const GLOBAL_CONCURRENCY: usize = 512;
const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);
const BREAKER_MIN: Duration = Duration::from_secs(5);
const BREAKER_MAX: Duration = Duration::from_secs(300);

/// How a tenant's phone system is doing, as its status shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PhoneSystemHealth {
    /// `ok`, `retrying` (failing for less than `delivery_alert_after`) or `failing`.
    pub state: String,
    /// When the current run of failures began.
    pub failing_since: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_delivered: Option<DateTime<Utc>>,
    /// Backed off as a whole until then (none: closed).
    pub paused_until: Option<DateTime<Utc>>,
    /// Users with a switch waiting for it.
    pub queued: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Breaker {
    Closed,
    /// Nothing is sent before `until`.
    Open {
        until: DateTime<Utc>,
    },
    /// One probe is (or may be) in flight; the rest wait for its answer.
    HalfOpen,
}

#[derive(Debug)]
struct Lane {
    in_flight: usize,
    /// Users due now but waiting for a free slot (or for the breaker).
    waiting: VecDeque<CalendarKey>,
    breaker: Breaker,
    /// Since the last delivery: attempts that could not reach the phone system (timeouts,
    /// refused connections), and the users whose messages it answered with an error. Both count
    /// towards the breaker; one user's messages refused again and again do not (that is the
    /// user's backoff), so others are not held up by one user's errors.
    unreachable: u32,
    refused_users: HashSet<CalendarKey>,
    /// How often the breaker opened in this run.
    opened: u32,
    failing_since: Option<DateTime<Utc>>,
    last_error: Option<String>,
    queued: usize,
    /// How often the tenant was deleted while attempts were in flight (the lane stays while
    /// one is): an attempt that began before a deletion counts for nothing after it
    /// (`Outbox::deliver`), so a company created again under the same id inherits none of the
    /// old one's failures or deliveries. (A leader that hears of a deletion on another replica
    /// only after the company was created again does not count it: a narrow window left open.)
    deletions: u64,
}

impl Default for Lane {
    fn default() -> Self {
        Lane {
            in_flight: 0,
            waiting: VecDeque::new(),
            breaker: Breaker::Closed,
            unreachable: 0,
            refused_users: HashSet::new(),
            opened: 0,
            failing_since: None,
            last_error: None,
            queued: 0,
            deletions: 0,
        }
    }
}

impl Lane {
    fn is_idle(&self) -> bool {
        self.in_flight == 0 && self.waiting.is_empty() && self.queued == 0 && self.failing_since.is_none()
    }

    fn failing(&self, now: DateTime<Utc>, alert_after: chrono::Duration) -> bool {
        self.failing_since.is_some_and(|since| now - since >= alert_after)
    }
}

#[derive(Default)]
struct Index {
    /// Each user's newest queued sequence number (older ones are superseded).
    newest: HashMap<CalendarKey, u64>,
    /// When each user's message is due.
    due: BTreeSet<(DateTime<Utc>, CalendarKey)>,
    in_flight: HashSet<CalendarKey>,
    lanes: HashMap<String, Lane>,
    /// When each tenant's phone system last took a message: kept apart from its lane, which
    /// goes as soon as it is idle (after nearly every delivery), so the status can say it.
    last_delivered: HashMap<String, DateTime<Utc>>,
    /// Replicas: tenants whose queue grew or shrank other than by a delivery's end, which the
    /// run loop tells the followers of (`tell_followers`): a switch queued while the phone
    /// system hangs or is backed off ends no attempt that would.
    untold: HashSet<String>,
}

impl Index {
    fn lane(&mut self, tenant: &str) -> &mut Lane {
        self.lanes.entry(tenant.to_owned()).or_default()
    }

    /// `Lane::deletions` of the tenant's lane (0 without one).
    fn deletions(&self, tenant: &str) -> u64 {
        self.lanes.get(tenant).map_or(0, |l| l.deletions)
    }
}

/// What one attempt came to.
enum Attempt {
    /// Done with this message: delivered, superseded, or nobody left to tell.
    Done { delivered: bool },
    /// The phone system failed (`unreachable`: no answer at all); try this user again at the
    /// given time.
    Failed { retry_at: DateTime<Utc>, why: String, unreachable: bool },
    /// gwsync itself could not (database): retry later without blaming the phone system.
    Later(DateTime<Utc>),
}

pub struct Outbox {
    app: Arc<AppState>,
    /// Calls only what the outbound policy allows; no redirects.
    http: crate::outbound::HttpClients,
    index: Mutex<Index>,
    wake: Notify,
    slots: Arc<Semaphore>,
    /// The last deliveries per tenant (the console's phone-system page), with sled.
    recent: super::deliveries::RecentDeliveries,
    /// Replicas: on the leader, what it last told the others of each tenant's phone system
    /// (`tell_followers`); on a follower, the newest telling it heard of each.
    told: Mutex<HashMap<String, Told>>,
    heard: Mutex<HashMap<String, Telling>>,
    /// The last telling's `seq`, kept across terms and re-tellings (`told` is not): tellings
    /// keep rising even if the clock steps back.
    told_seq: std::sync::atomic::AtomicU64,
    /// `tell_followers_again` running, and asked again meanwhile.
    retelling: Mutex<Retelling>,
    /// Recorded deliveries being written for the other replicas (`record`): a bound, so a
    /// storm of deliveries cannot pile writes onto the pool; past it the list skips some.
    recording: Arc<Semaphore>,
}

/// Why a request to the phone system got no answer, as the admin reads it: a timeout with the
/// time it had, a refused connection as such, anything else by reqwest's words (without the URL,
/// which may carry a token).
fn unreachable(e: reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("the phone system did not answer within {}", humantime::format_duration(timeout));
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    while let Some(cause) = source {
        if cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused) {
            return "could not connect to the phone system: connection refused".into();
        }
        source = cause.source();
    }
    format!("could not reach the phone system: {}", e.without_url())
}

/// Delivery records written at once, at most (`Outbox::recording`).
const RECORDING: usize = 8;

/// A telling of a tenant's phone-system health, leader to followers. `seq` orders tellings that
/// may arrive out of order (deliveries of one tenant run side by side): the microseconds of
/// the leader's clock when it was taken, at least one more than the one before.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Telling {
    seq: u64,
    health: PhoneSystemHealth,
}

/// `Outbox::tell_followers_again` in progress.
#[derive(Default)]
struct Retelling {
    running: bool,
    again: bool,
}

/// What the leader last told of a tenant.
struct Told {
    telling: Telling,
    at: DateTime<Utc>,
    /// A change held back (`TELL_COUNTERS_EVERY`) is told by a follow-up already scheduled.
    follow_up: bool,
}

/// The leader tells the followers of a change in a tenant's delivery counters (`queued`,
/// `last_delivered`) at most this often, and when its queue drains; of a change in its state,
/// error or pause at once.
const TELL_COUNTERS_EVERY: chrono::Duration = chrono::Duration::seconds(5);

impl Outbox {
    pub fn new(app: Arc<AppState>) -> Result<Self, String> {
        let http = crate::outbound::HttpClients::new(app.outbound.clone(), |b| {
            b.timeout(app.config.presence.delivery_timeout).user_agent(concat!("gwsync/", env!("CARGO_PKG_VERSION")))
        })?;
        Ok(Outbox {
            app,
            http,
            index: Mutex::new(Index::default()),
            wake: Notify::new(),
            slots: Arc::new(Semaphore::new(GLOBAL_CONCURRENCY)),
            recent: Default::default(),
            told: Mutex::new(HashMap::new()),
            heard: Mutex::new(HashMap::new()),
            told_seq: std::sync::atomic::AtomicU64::new(0),
            retelling: Mutex::new(Retelling::default()),
            recording: Arc::new(Semaphore::new(RECORDING)),
        })
    }

    /// Sends the tenant's phone system a signed `gwsync.test` message now (outside the queue:
    /// it switches nobody) and says how it went.
    pub async fn send_test(&self, tenant: &crate::model::tenant::TenantRecord) -> super::deliveries::TestOutcome {
        use super::deliveries::TestOutcome;
        let started = std::time::Instant::now();
        let outcome = |delivered: bool, status: Option<u16>, error: Option<String>| TestOutcome {
            delivered,
            status,
            error,
            elapsed_ms: started.elapsed().as_millis() as u64,
        };
        let Some(target) = &tenant.phone_system else {
            return outcome(false, None, Some("this company has no phone system URL".into()));
        };
        let Some(key_bytes) = base64::engine::general_purpose::STANDARD
            .decode(&target.secret_sealed)
            .ok()
            .and_then(|sealed| self.app.master_key.open(&webhook_secret_context(&tenant.id), &sealed).ok())
        else {
            return outcome(false, None, Some("the webhook secret cannot be opened with this master key".into()));
        };
        let id = format!("msg_test_{}", uuid::Uuid::new_v4().simple());
        let body = serde_json::json!({ "type": "gwsync.test", "tenant": tenant.id, "sent_at": self.app.clock.now() })
            .to_string();
        let timestamp = Utc::now().timestamp();
        let sig = signature(key_bytes.expose_secret(), &id, timestamp, &body);
        let client = match self.http.for_url(&target.url) {
            Ok(c) => c,
            Err(r) => return outcome(false, None, Some(format!("the phone system's URL is refused: {r}"))),
        };
        let sent = client
            .post(target.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", sig)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => outcome(true, Some(resp.status().as_u16()), None),
            Ok(resp) => outcome(
                false,
                Some(resp.status().as_u16()),
                Some(format!("the phone system answered {}", resp.status())),
            ),
            Err(e) => match crate::outbound::refusal_in(&e) {
                Some(r) => outcome(false, None, Some(format!("the phone system's URL is refused: {r}"))),
                None => outcome(false, None, Some(unreachable(e, self.app.config.presence.delivery_timeout))),
            },
        }
    }

    /// Loads what was queued before the last stop. An older gwsync kept every message; of
    /// those only each user's newest is kept (the others are superseded).
    pub async fn load(&self) -> Result<usize, StoreError> {
        let messages = self.app.store.outbox().await?;
        let mut newest: HashMap<CalendarKey, &OutboxMessage> = HashMap::new();
        for m in &messages {
            let key = CalendarKey::new(&m.tenant, &m.user);
            if newest.get(&key).is_none_or(|n| n.sequence < m.sequence) {
                newest.insert(key, m);
            }
        }
        for m in &messages {
            if newest.get(&CalendarKey::new(&m.tenant, &m.user)).is_some_and(|n| n.sequence != m.sequence) {
                self.app.store.delete_message(&m.tenant, &m.user, m.sequence).await?;
            }
        }
        let n = newest.len();
        for m in newest.into_values() {
            self.queued(m);
        }
        Ok(n)
    }

    /// Forgets the in-memory queue (this replica stopped leading; its deliveries were
    /// stopped). Taking over again loads it from the store.
    pub fn clear(&self) {
        // A new term: what this replica told before says nothing of what the followers heard
        // since, and what it heard before it led is old news (it asks for news again).
        self.told.lock().clear();
        self.heard.lock().clear();
        *self.index.lock() = Index::default();
        self.update_gauges();
    }

    /// A message was written to the store: deliver it in its turn (it supersedes the user's
    /// older ones).
    pub fn queued(&self, m: &OutboxMessage) {
        let key = CalendarKey::new(&m.tenant, &m.user);
        let mut index = self.index.lock();
        let had = index.newest.insert(key.clone(), m.sequence).is_some();
        if !had {
            index.lane(&m.tenant).queued += 1;
            if self.app.cluster.is_shared() {
                index.untold.insert(m.tenant.clone());
            }
        }
        if !index.in_flight.contains(&key) {
            // The successor of a message waiting for its retry waits as long: the phone system
            // failed for this user, and a new state is no reason to try it sooner.
            let pending = index.due.iter().find(|(_, k)| *k == key).cloned();
            let at = pending.as_ref().map_or(m.next_attempt_at, |(t, _)| (*t).max(m.next_attempt_at));
            if let Some(p) = pending {
                index.due.remove(&p);
            }
            index.due.insert((at, key));
        }
        drop(index);
        self.update_gauges();
        self.wake.notify_one();
    }

    /// Drops a user's queue (the user was deleted; the store already dropped the messages).
    pub fn forget(&self, key: &CalendarKey) {
        let mut index = self.index.lock();
        if index.newest.remove(key).is_some()
            && let Some(lane) = index.lanes.get_mut(&key.tenant)
        {
            lane.queued = lane.queued.saturating_sub(1);
            if self.app.cluster.is_shared() {
                index.untold.insert(key.tenant.clone());
            }
        }
        index.due.retain(|(_, k)| k != key);
        if let Some(lane) = index.lanes.get_mut(&key.tenant) {
            lane.waiting.retain(|k| k != key);
        }
        drop(index);
        self.update_gauges();
        // The run loop tells the followers (`Index::untold`).
        self.wake.notify_one();
    }

    /// Drops everything of a tenant (it was deleted).
    pub fn forget_tenant(&self, tenant: &str) {
        self.told.lock().remove(tenant);
        self.heard.lock().remove(tenant);
        let mut index = self.index.lock();
        // Under `index`, as `record` records: no attempt's record slips in between.
        self.recent.forget(tenant);
        index.last_delivered.remove(tenant);
        index.untold.remove(tenant);
        index.newest.retain(|k, _| k.tenant != tenant);
        index.due.retain(|(_, k)| k.tenant != tenant);
        // Gone, so nothing of it is told again (`tell_followers_again`); a delivery still in
        // flight keeps a lane with nothing of the old company's state, and ends it.
        if let Some(lane) = index.lanes.get_mut(tenant) {
            let (in_flight, deletions) = (lane.in_flight, lane.deletions + 1);
            *lane = Lane { in_flight, deletions, ..Lane::default() };
            if lane.is_idle() {
                index.lanes.remove(tenant);
            }
        }
        drop(index);
        self.update_gauges();
    }

    /// Users with a switch waiting to be delivered.
    pub fn pending(&self) -> usize {
        self.index.lock().newest.len()
    }

    /// How the tenant's phone system is doing. Only the leader delivers, so a follower shows
    /// what the leader last told it (`tell_followers`), if anything — whether a run of failures
    /// has lasted past `delivery_alert_after` it works out itself, as time passes.
    pub fn health(&self, tenant: &str) -> PhoneSystemHealth {
        let cluster = &self.app.cluster;
        if cluster.is_shared()
            && !cluster.is_leader()
            && let Some(mut h) = self.heard.lock().get(tenant).map(|t| t.health.clone())
        {
            if let Some(since) = h.failing_since {
                let failing = self.app.clock.now() - since >= self.alert_after();
                h.state = if failing { "failing" } else { "retrying" }.into();
            }
            return h;
        }
        self.local_health(tenant)
    }

    /// What the leader told of a tenant's phone system (a `Telling` as JSON), on a follower:
    /// kept if it is newer than the one heard before.
    pub fn heard_from_leader(&self, tenant: &str, telling: &str) {
        if self.app.cluster.is_leader() {
            return;
        }
        match serde_json::from_str::<Telling>(telling) {
            Ok(t) => {
                let mut heard = self.heard.lock();
                if heard.get(tenant).is_none_or(|h| h.seq < t.seq) {
                    heard.insert(tenant.to_owned(), t);
                }
            }
            Err(e) => {
                tracing::warn!(tenant, error = %e, "ignoring the leader's phone-system health that cannot be read")
            }
        }
    }

    /// On the leader of replicas: tells the followers how the tenant's phone system is doing
    /// when that changed — its state, error or pause, and its queue draining, at once; other
    /// changes of its counters at most every `TELL_COUNTERS_EVERY`, by a follow-up if none
    /// comes sooner — so the tenant's status reads the same on every replica.
    fn tell_followers<'a>(
        self: &'a Arc<Self>,
        tenant: &'a str,
        follow_up: bool,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let cluster = &self.app.cluster;
            if !cluster.is_shared() || !cluster.is_leader() {
                return;
            }
            let payload = {
                let mut told = self.told.lock();
                let now = self.app.clock.now();
                let health = self.local_health(tenant);
                let last = told.get_mut(tenant);
                let wait = match last {
                    None => None,
                    Some(last) => {
                        if follow_up {
                            last.follow_up = false;
                        }
                        let before = &last.telling.health;
                        let material = (&before.state, before.failing_since, &before.last_error, before.paused_until)
                            != (&health.state, health.failing_since, &health.last_error, health.paused_until);
                        let drained = health.queued == 0 && before.queued != 0;
                        let due = last.at + TELL_COUNTERS_EVERY;
                        if *before == health {
                            return;
                        }
                        if material || drained || now >= due {
                            None
                        } else if last.follow_up {
                            return;
                        } else {
                            last.follow_up = true;
                            Some(due - now)
                        }
                    }
                };
                if let Some(wait) = wait {
                    let (me, tenant) = (self.clone(), tenant.to_owned());
                    tokio::spawn(async move {
                        me.app.clock.sleep(wait.to_std().unwrap_or_default()).await;
                        me.tell_followers(&tenant, true).await;
                    });
                    return;
                }
                let previous = self.told_seq.load(std::sync::atomic::Ordering::Relaxed);
                let seq = u64::try_from(now.timestamp_micros()).unwrap_or(0).max(previous + 1);
                self.told_seq.store(seq, std::sync::atomic::Ordering::Relaxed);
                let telling = Telling { seq, health };
                let Ok(json) = serde_json::to_string(&telling) else { return };
                told.insert(tenant.to_owned(), Told { telling, at: now, follow_up: false });
                json
            };
            cluster.phone_system_health(tenant, payload).await;
        })
    }

    /// On the leader of replicas: tells the followers afresh of every tenant it knows something
    /// of (another replica asked: it started, or its listener reconnected, and may have missed
    /// a telling). One tenant after another, in the background.
    /// Asked again while it runs (replicas starting together), it runs once more after, rather
    /// than side by side.
    pub fn tell_followers_again(self: &Arc<Self>, tracker: &TaskTracker) {
        if !self.app.cluster.is_shared() || !self.app.cluster.is_leader() {
            return;
        }
        {
            let mut r = self.retelling.lock();
            if r.running {
                r.again = true;
                return;
            }
            r.running = true;
        }
        let me = self.clone();
        tracker.spawn(async move {
            loop {
                me.told.lock().clear();
                let tenants: HashSet<String> = {
                    let index = me.index.lock();
                    index.lanes.keys().chain(index.last_delivered.keys()).cloned().collect()
                };
                for tenant in tenants {
                    me.tell_followers(&tenant, false).await;
                }
                let mut r = me.retelling.lock();
                if !std::mem::take(&mut r.again) {
                    r.running = false;
                    return;
                }
            }
        });
    }

    fn local_health(&self, tenant: &str) -> PhoneSystemHealth {
        let now = self.app.clock.now();
        let alert_after = self.alert_after();
        let index = self.index.lock();
        let last_delivered = index.last_delivered.get(tenant).copied();
        let Some(lane) = index.lanes.get(tenant) else {
            return PhoneSystemHealth {
                state: "ok".into(),
                failing_since: None,
                last_error: None,
                last_delivered,
                paused_until: None,
                queued: 0,
            };
        };
        PhoneSystemHealth {
            state: match lane.failing_since {
                None => "ok",
                Some(_) if lane.failing(now, alert_after) => "failing",
                Some(_) => "retrying",
            }
            .into(),
            failing_since: lane.failing_since,
            last_error: lane.last_error.clone(),
            last_delivered,
            paused_until: match lane.breaker {
                Breaker::Open { until } => Some(until),
                _ => None,
            },
            queued: lane.queued,
        }
    }

    fn alert_after(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.app.config.presence.delivery_alert_after).unwrap_or(chrono::Duration::MAX)
    }

    fn update_gauges(&self) {
        let now = self.app.clock.now();
        let alert_after = self.alert_after();
        let (pending, failing) = {
            let index = self.index.lock();
            (index.newest.len(), index.lanes.values().filter(|l| l.failing(now, alert_after)).count())
        };
        self.app.metrics.outbox.set(pending as i64);
        self.app.metrics.failing_tenants("phone_system", failing);
    }

    pub async fn run(self: Arc<Self>, tracker: TaskTracker, shutdown: CancellationToken) {
        let clock = self.app.clock.clone();
        let per_tenant = self.app.config.presence.deliveries_per_tenant.max(1);
        loop {
            let now = clock.now();
            let mut ready = Vec::new();
            let untold;
            let next = {
                let mut guard = self.index.lock();
                let index = &mut *guard;
                while let Some((at, _)) = index.due.first() {
                    if *at > now {
                        break;
                    }
                    let Some((_, key)) = index.due.pop_first() else { break };
                    if !index.newest.contains_key(&key) || index.in_flight.contains(&key) {
                        continue;
                    }
                    let lane = index.lanes.entry(key.tenant.clone()).or_default();
                    if let Breaker::Open { until } = lane.breaker
                        && until <= now
                    {
                        lane.breaker = Breaker::HalfOpen;
                    }
                    let free = match lane.breaker {
                        Breaker::Closed => lane.in_flight < per_tenant,
                        Breaker::HalfOpen => lane.in_flight == 0,
                        Breaker::Open { until } => {
                            // Backed off as a whole: due again when a probe may go.
                            index.due.insert((until, key));
                            continue;
                        }
                    };
                    if !free {
                        if !lane.waiting.contains(&key) {
                            lane.waiting.push_back(key);
                        }
                        continue;
                    }
                    lane.in_flight += 1;
                    index.in_flight.insert(key.clone());
                    ready.push(key);
                }
                untold = std::mem::take(&mut index.untold);
                index.due.first().map(|(at, _)| *at)
            };
            for tenant in untold {
                let me = self.clone();
                tracker.spawn(async move { me.tell_followers(&tenant, false).await });
            }
            for key in ready {
                let permit = tokio::select! {
                    () = shutdown.cancelled() => return,
                    p = self.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                };
                let me = self.clone();
                let stop = shutdown.clone();
                tracker.spawn(async move {
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = me.deliver(&key) => {}
                    }
                    drop(permit);
                    me.wake.notify_one();
                    me.tell_followers(&key.tenant, false).await;
                });
            }
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

    /// Tries the user's newest message once, then settles the lane and schedules what comes
    /// next.
    async fn deliver(&self, key: &CalendarKey) {
        let (sequence, deletions) = {
            let index = self.index.lock();
            (index.newest.get(key).copied(), index.deletions(&key.tenant))
        };
        let outcome = match sequence {
            Some(sequence) => self.attempt(key, sequence, deletions).await,
            None => Attempt::Done { delivered: false },
        };
        let now = self.app.clock.now();
        let threshold = self.app.config.presence.breaker_threshold.max(1);
        let mut guard = self.index.lock();
        let index = &mut *guard;
        index.in_flight.remove(key);
        // The tenant was deleted during the attempt: whatever it came to was the old company's,
        // and a message of the user's now is another's (`superseded`: due at once, if any).
        let deleted = index.deletions(&key.tenant) != deletions;
        let outcome = if deleted { Attempt::Done { delivered: false } } else { outcome };
        let superseded = deleted || index.newest.get(key).copied() != sequence;
        let lane = index.lanes.entry(key.tenant.clone()).or_default();
        lane.in_flight = lane.in_flight.saturating_sub(1);
        let mut next_due = None;
        match outcome {
            Attempt::Done { delivered } => {
                if delivered {
                    index.last_delivered.insert(key.tenant.clone(), now);
                    lane.unreachable = 0;
                    lane.refused_users.clear();
                    lane.opened = 0;
                    lane.failing_since = None;
                    lane.last_error = None;
                    if lane.breaker != Breaker::Closed {
                        tracing::info!(tenant = %key.tenant, "phone system answers again; sending every waiting switch");
                        lane.breaker = Breaker::Closed;
                    }
                }
                if !superseded && index.newest.remove(key).is_some() {
                    lane.queued = lane.queued.saturating_sub(1);
                }
                if superseded {
                    next_due = Some(now);
                }
            }
            Attempt::Failed { retry_at, why, unreachable } => {
                if unreachable {
                    lane.unreachable = lane.unreachable.saturating_add(1);
                } else {
                    lane.refused_users.insert(key.clone());
                }
                lane.failing_since.get_or_insert(now);
                lane.last_error = Some(why);
                let failures = lane.unreachable.saturating_add(lane.refused_users.len() as u32);
                if failures >= threshold || lane.breaker == Breaker::HalfOpen {
                    let pause = crate::backoff::delay(lane.opened, BREAKER_MIN, BREAKER_MAX);
                    let until = now + chrono::Duration::from_std(pause).unwrap_or_default();
                    if lane.breaker == Breaker::Closed {
                        tracing::warn!(tenant = %key.tenant, failures, until = %until, "phone system keeps failing; backing it off as a whole");
                    }
                    lane.opened = lane.opened.saturating_add(1);
                    lane.breaker = Breaker::Open { until };
                }
                let paused_until = match lane.breaker {
                    Breaker::Open { until } => Some(until),
                    _ => None,
                };
                // A newer message waits out the failed one's backoff (and the breaker's).
                let own = retry_at;
                next_due = Some(paused_until.map_or(own, |until| until.max(own)));
                if let Breaker::Open { until } = lane.breaker {
                    // Waiting users are due when the breaker lets a probe through.
                    let waiting: Vec<CalendarKey> = lane.waiting.drain(..).collect();
                    for k in waiting {
                        index.due.insert((until, k));
                    }
                }
            }
            Attempt::Later(at) => next_due = Some(at),
        }
        if index.newest.contains_key(key)
            && let Some(at) = next_due
        {
            index.due.insert((at, key.clone()));
        }
        // Slots freed: users waiting in this lane are due now.
        let lane = index.lanes.entry(key.tenant.clone()).or_default();
        if lane.breaker == Breaker::Closed {
            let waiting: Vec<CalendarKey> = lane.waiting.drain(..).collect();
            for k in waiting {
                index.due.insert((now, k));
            }
        } else if lane.breaker == Breaker::HalfOpen
            && lane.in_flight == 0
            && let Some(k) = lane.waiting.pop_front()
        {
            index.due.insert((now, k));
        }
        if index.lanes.get(&key.tenant).is_some_and(Lane::is_idle) {
            index.lanes.remove(&key.tenant);
        }
        drop(guard);
        self.update_gauges();
    }

    /// `deletions`: the tenant's count when the attempt began (`Lane::deletions`).
    async fn attempt(&self, key: &CalendarKey, sequence: u64, deletions: u64) -> Attempt {
        let store = &self.app.store;
        let now = self.app.clock.now();
        let mut message = match store.outbox_message(&key.tenant, &key.user, sequence).await {
            Ok(Some(m)) => m,
            // Gone: superseded, or its user was deleted meanwhile.
            Ok(None) => return Attempt::Done { delivered: false },
            Err(e) => {
                tracing::error!(tenant = %key.tenant, user = %key.user, sequence, error = %e, "cannot read a queued switch; retrying");
                return Attempt::Later(now + chrono::Duration::seconds(30));
            }
        };
        if message.attempts == 0 {
            // Tell the phone system nothing the store could forget in a crash: the message and
            // the user's new state must be on disk before it leaves.
            if let Err(e) = crate::store::flush(store).await {
                tracing::error!(error = %e, "cannot flush before a delivery; retrying");
                return Attempt::Later(now + chrono::Duration::seconds(5));
            }
        }
        let target = match store.tenant(&key.tenant).await {
            Ok(Some(t)) => t.phone_system,
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the tenant before a delivery; retrying");
                return Attempt::Later(now + chrono::Duration::seconds(30));
            }
        };
        // Deleted (and maybe created again) since the attempt began: the tenant just read may
        // be a new company's, whose phone system must not get the old one's switch.
        if self.index.lock().deletions(&key.tenant) != deletions {
            return Attempt::Done { delivered: false };
        }
        let Some(target) = target else {
            // The tenant no longer has a phone system: nobody to tell.
            let _ = store.delete_message(&key.tenant, &key.user, sequence).await;
            return Attempt::Done { delivered: false };
        };
        let key_bytes = match base64::engine::general_purpose::STANDARD
            .decode(&target.secret_sealed)
            .ok()
            .and_then(|sealed| self.app.master_key.open(&webhook_secret_context(&key.tenant), &sealed).ok())
        {
            Some(k) => k,
            None => {
                return self
                    .failed(
                        &mut message,
                        deletions,
                        now,
                        "the webhook secret cannot be opened with this master key".into(),
                        false,
                    )
                    .await;
            }
        };
        // The receiver checks the timestamp against its own clock: real time, whatever the
        // service clock says.
        let timestamp = Utc::now().timestamp();
        let sig = signature(key_bytes.expose_secret(), &message.id, timestamp, &message.body);
        // A URL saved before the outbound policy (or under a wider allow list) is refused here.
        let client = match self.http.for_url(&target.url) {
            Ok(c) => c,
            Err(r) => {
                return self
                    .failed(&mut message, deletions, now, format!("the phone system's URL is refused: {r}"), true)
                    .await;
            }
        };
        let result = client
            .post(target.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &message.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", sig)
            .body(message.body.clone())
            .send()
            .await;
        match result {
            Ok(resp) if resp.status().is_success() => {
                if let Err(e) = store.delete_message(&key.tenant, &key.user, sequence).await {
                    tracing::error!(tenant = %key.tenant, user = %key.user, error = %e, "delivered, but could not remove the message; it may be sent again");
                }
                self.app.metrics.delivery("delivered");
                self.record(&message, deletions, "delivered".into());
                tracing::info!(tenant = %key.tenant, user = %key.user, sequence, attempts = message.attempts + 1, "profile switch delivered");
                Attempt::Done { delivered: true }
            }
            Ok(resp) => {
                self.failed(&mut message, deletions, now, format!("the phone system answered {}", resp.status()), false)
                    .await
            }
            Err(e) => match crate::outbound::refusal_in(&e) {
                Some(r) => {
                    self.failed(&mut message, deletions, now, format!("the phone system's URL is refused: {r}"), true)
                        .await
                }
                None => {
                    self.failed(
                        &mut message,
                        deletions,
                        now,
                        unreachable(e, self.app.config.presence.delivery_timeout),
                        true,
                    )
                    .await
                }
            },
        }
    }

    fn record(&self, message: &OutboxMessage, deletions: u64, outcome: String) {
        let delivery = super::deliveries::Delivery {
            at: self.app.clock.now(),
            user: message.user.clone(),
            sequence: message.sequence,
            profile: super::deliveries::profile_of(&message.body),
            outcome,
        };
        {
            let index = self.index.lock();
            // Deleted meanwhile: not the list of a company created again under its id.
            if index.deletions(&message.tenant) != deletions {
                return;
            }
            // Replicas read the list from the database (`recent_deliveries`); one process keeps
            // it, recorded under `index` as `forget_tenant` forgets it.
            if !self.app.cluster.is_shared() {
                self.recent.record(&message.tenant, delivery);
                return;
            }
        }
        if let Ok(json) = serde_json::to_value(&delivery) {
            // In the background: the delivery path does not wait for the console's list.
            match self.recording.clone().try_acquire_owned() {
                Ok(permit) => {
                    let (cluster, tenant) = (self.app.cluster.clone(), message.tenant.clone());
                    tokio::spawn(async move {
                        cluster.record_delivery(&tenant, &json, super::deliveries::KEPT).await;
                        drop(permit);
                    });
                }
                Err(_) => tracing::debug!(tenant = %message.tenant, "delivery records busy: this one not recorded"),
            }
        }
    }

    /// The tenant's last deliveries, newest first: as recorded for every replica, or (sled)
    /// this process's.
    pub async fn recent_deliveries(
        &self,
        tenant: &str,
    ) -> Result<Vec<super::deliveries::Delivery>, crate::cluster::ClusterError> {
        match self.app.cluster.deliveries(tenant, super::deliveries::KEPT).await? {
            Some(recorded) => Ok(recorded
                .into_iter()
                .filter_map(|d| match serde_json::from_str(&d) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        tracing::warn!(tenant, error = %e, "a recorded delivery cannot be read; left out");
                        None
                    }
                })
                .collect()),
            None => Ok(self.recent.list(tenant)),
        }
    }

    async fn failed(
        &self,
        message: &mut OutboxMessage,
        deletions: u64,
        now: DateTime<Utc>,
        why: String,
        unreachable: bool,
    ) -> Attempt {
        self.app.metrics.delivery("failed");
        self.record(message, deletions, why.clone());
        message.attempts = message.attempts.saturating_add(1);
        let delay = crate::backoff::delay(message.attempts - 1, Duration::from_secs(1), MAX_RETRY_DELAY);
        message.next_attempt_at = now + chrono::Duration::from_std(delay).unwrap_or_default();
        tracing::warn!(tenant = %message.tenant, user = %message.user, sequence = message.sequence, attempts = message.attempts, error = %why, "profile switch not delivered; will retry");
        message.last_error = Some(why.clone());
        match self.app.store.update_message(message).await {
            Ok(true) => {}
            // Superseded meanwhile: the newer message is what goes next.
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "could not record a failed delivery"),
        }
        Attempt::Failed { retry_at: message.next_attempt_at, why, unreachable }
    }
}
