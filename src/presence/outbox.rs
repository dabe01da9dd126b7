//! Delivering profile switches to the phone system: a durable outbox, one signed `POST` per
//! message to the tenant's URL, retried with exponential backoff until a 2xx — in order per
//! user (a user's next message waits for the one before), users independent of each other.
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
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::signing::signature;
use crate::app::{AppState, webhook_secret_context};
use crate::store::{OutboxMessage, StoreError};
use crate::sync::queue::CalendarKey;

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
const CONCURRENCY: usize = 16;
const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Index {
    /// Each user's queued sequence numbers, oldest first.
    pending: HashMap<CalendarKey, VecDeque<u64>>,
    /// When each user's head message is due.
    due: BTreeSet<(DateTime<Utc>, CalendarKey)>,
    in_flight: HashSet<CalendarKey>,
}

pub struct Outbox {
    app: Arc<AppState>,
    /// Calls only what the outbound policy allows; no redirects.
    http: crate::outbound::HttpClients,
    index: Mutex<Index>,
    wake: Notify,
    slots: Arc<Semaphore>,
}

impl Outbox {
    pub fn new(app: Arc<AppState>) -> Result<Self, String> {
        let http = crate::outbound::HttpClients::new(app.outbound.clone(), |b| {
            b.timeout(DELIVERY_TIMEOUT).user_agent(concat!("gwsync/", env!("CARGO_PKG_VERSION")))
        })?;
        Ok(Outbox {
            app,
            http,
            index: Mutex::new(Index::default()),
            wake: Notify::new(),
            slots: Arc::new(Semaphore::new(CONCURRENCY)),
        })
    }

    /// Loads what was queued before the last stop.
    pub fn load(&self) -> Result<usize, StoreError> {
        let messages = self.app.store.outbox()?;
        let n = messages.len();
        for m in messages {
            self.queued(&m);
        }
        Ok(n)
    }

    /// A message was written to the store: deliver it in its turn.
    pub fn queued(&self, m: &OutboxMessage) {
        let key = CalendarKey::new(&m.tenant, &m.user);
        let mut index = self.index.lock();
        let queue = index.pending.entry(key.clone()).or_default();
        let was_empty = queue.is_empty();
        queue.push_back(m.sequence);
        if was_empty && !index.in_flight.contains(&key) {
            index.due.insert((m.next_attempt_at, key));
        }
        drop(index);
        self.wake.notify_one();
    }

    /// Drops a user's queue (the user was deleted; the store already dropped the messages).
    pub fn forget(&self, key: &CalendarKey) {
        let mut index = self.index.lock();
        index.pending.remove(key);
        index.due.retain(|(_, k)| k != key);
    }

    pub fn pending(&self) -> usize {
        self.index.lock().pending.values().map(VecDeque::len).sum()
    }

    pub async fn run(self: Arc<Self>, tracker: TaskTracker, shutdown: CancellationToken) {
        let clock = self.app.clock.clone();
        loop {
            let now = clock.now();
            let mut ready = Vec::new();
            let next = {
                let mut index = self.index.lock();
                while let Some((at, _)) = index.due.first() {
                    if *at > now {
                        break;
                    }
                    let Some((_, key)) = index.due.pop_first() else { break };
                    index.in_flight.insert(key.clone());
                    ready.push(key);
                }
                index.due.first().map(|(at, _)| *at)
            };
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
                        () = me.deliver_head(&key) => {}
                    }
                    me.index.lock().in_flight.remove(&key);
                    drop(permit);
                    me.wake.notify_one();
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

    /// Tries the user's oldest message once, then schedules what comes next.
    async fn deliver_head(&self, key: &CalendarKey) {
        let Some(sequence) = self.index.lock().pending.get(key).and_then(|q| q.front().copied()) else { return };
        let next_due = match self.attempt(key, sequence).await {
            Ok(()) => {
                let mut index = self.index.lock();
                if let Some(q) = index.pending.get_mut(key) {
                    q.pop_front();
                    if q.is_empty() {
                        index.pending.remove(key);
                    }
                }
                index.pending.contains_key(key).then(|| self.app.clock.now())
            }
            Err(retry_at) => Some(retry_at),
        };
        if let Some(at) = next_due {
            self.index.lock().due.insert((at, key.clone()));
        }
    }

    /// `Ok`: done with it (delivered, or nobody left to tell); `Err(t)`: failed, try again at `t`.
    async fn attempt(&self, key: &CalendarKey, sequence: u64) -> Result<(), DateTime<Utc>> {
        let store = &self.app.store;
        let now = self.app.clock.now();
        let mut message = match store.outbox_message(&key.tenant, &key.user, sequence) {
            Ok(Some(m)) => m,
            // Gone: its user was deleted meanwhile.
            Ok(None) => return Ok(()),
            Err(e) => {
                tracing::error!(user = %key, sequence, error = %e, "cannot read a queued switch; retrying");
                return Err(now + chrono::Duration::seconds(30));
            }
        };
        if message.attempts == 0 {
            // Tell the phone system nothing the store could forget in a crash: the message and
            // the user's new state must be on disk before it leaves.
            if let Err(e) = crate::store::flush(store).await {
                return Err(self.failed(&mut message, now, format!("database: {e}")));
            }
        }
        let target = match store.tenant(&key.tenant) {
            Ok(Some(t)) => t.phone_system,
            Ok(None) => None,
            Err(e) => return Err(self.failed(&mut message, now, format!("database: {e}"))),
        };
        let Some(target) = target else {
            // The tenant no longer has a phone system: nobody to tell.
            let _ = store.delete_message(&key.tenant, &key.user, sequence);
            return Ok(());
        };
        let key_bytes = match base64::engine::general_purpose::STANDARD
            .decode(&target.secret_sealed)
            .ok()
            .and_then(|sealed| self.app.master_key.open(&webhook_secret_context(&key.tenant), &sealed).ok())
        {
            Some(k) => k,
            None => {
                return Err(self.failed(
                    &mut message,
                    now,
                    "the webhook secret cannot be opened with this master key".into(),
                ));
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
                return Err(self.failed(&mut message, now, format!("the phone system's URL is refused: {r}")));
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
                if let Err(e) = store.delete_message(&key.tenant, &key.user, sequence) {
                    tracing::error!(user = %key, error = %e, "delivered, but could not remove the message; it may be sent again");
                }
                self.app.metrics.delivery("delivered");
                tracing::info!(user = %key, sequence, attempts = message.attempts + 1, "profile switch delivered");
                Ok(())
            }
            Ok(resp) => Err(self.failed(&mut message, now, format!("the phone system answered {}", resp.status()))),
            Err(e) => match crate::outbound::refusal_in(&e) {
                Some(r) => Err(self.failed(&mut message, now, format!("the phone system's URL is refused: {r}"))),
                None => Err(self.failed(
                    &mut message,
                    now,
                    format!("could not reach the phone system: {}", e.without_url()),
                )),
            },
        }
    }

    fn failed(&self, message: &mut OutboxMessage, now: DateTime<Utc>, why: String) -> DateTime<Utc> {
        self.app.metrics.delivery("failed");
        message.attempts = message.attempts.saturating_add(1);
        let delay = crate::backoff::delay(message.attempts - 1, Duration::from_secs(1), MAX_RETRY_DELAY);
        message.next_attempt_at = now + chrono::Duration::from_std(delay).unwrap_or_default();
        tracing::warn!(tenant = %message.tenant, user = %message.user, sequence = message.sequence, attempts = message.attempts, error = %why, "profile switch not delivered; will retry");
        message.last_error = Some(why);
        if let Err(e) = self.app.store.update_message(message) {
            tracing::error!(error = %e, "could not record a failed delivery");
        }
        message.next_attempt_at
    }
}
