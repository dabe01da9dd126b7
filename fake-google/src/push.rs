//! Push notifications: the channels events.watch creates, and their delivery.
//!
//! Every change to a calendar queues an `exists` message for each live channel on it that
//! watches the changed event's type (`eventTypes` of events.watch; unset: all); a
//! delivery task posts them (no body, `X-Goog-*` headers, Google's user agent), one channel's
//! messages in order, channels in parallel, retrying only on 500/502/503/504 as Google does.
//! `PUT /_fake/delivery` makes delivery lossy, repeated, late or shuffled. Nothing is sent under
//! the world lock: handlers only queue.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use actix_web::web;
use chrono::{DateTime, Utc};
use rand::RngExt;
use rand::seq::SliceRandom;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::google_timestamp;
use crate::world::{Shared, World};

pub const USER_AGENT: &str = "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)";
const LOG_CAPACITY: usize = 100_000;
/// A channel's delivery worker ends after this long without messages.
const WORKER_IDLE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Serialize)]
pub struct Channel {
    pub id: String,
    #[serde(rename = "resourceId")]
    pub resource_id: String,
    #[serde(rename = "resourceUri")]
    pub resource_uri: String,
    pub calendar: String,
    pub address: String,
    pub token: Option<String>,
    pub expiration: DateTime<Utc>,
    pub client_id: String,
    pub user: String,
    pub created: DateTime<Utc>,
    pub stopped: Option<DateTime<Utc>>,
    pub last_message: u64,
    pub messages_queued: u64,
    /// The `eventTypes` the watch asked for (empty: every type): only changes to events of
    /// these types notify the channel.
    pub event_types: Vec<String>,
}

impl Channel {
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.stopped.is_none() && self.expiration > now
    }

    pub fn state(&self, now: DateTime<Utc>) -> &'static str {
        if self.stopped.is_some() {
            "stopped"
        } else if self.expiration <= now {
            "expired"
        } else {
            "live"
        }
    }
}

/// Every channel ever created (stopped and expired ones stay, for `GET /_fake/channels`).
#[derive(Debug, Default)]
pub struct Channels {
    pub by_id: HashMap<String, Channel>,
}

impl Channels {
    pub fn live_id_taken(&self, id: &str, now: DateTime<Utc>) -> bool {
        self.by_id.get(id).is_some_and(|c| c.is_live(now))
    }
}

/// One message on its way.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub channel_id: String,
    pub address: String,
    pub message_number: u64,
    pub state: &'static str,
    pub headers: Vec<(String, String)>,
}

impl Outgoing {
    pub fn new(ch: &Channel, message_number: u64, state: &'static str) -> Self {
        let mut headers = vec![
            ("X-Goog-Channel-ID".to_owned(), ch.id.clone()),
            ("X-Goog-Channel-Expiration".to_owned(), ch.expiration.format("%a, %d %b %Y %H:%M:%S GMT").to_string()),
            ("X-Goog-Message-Number".to_owned(), message_number.to_string()),
            ("X-Goog-Resource-ID".to_owned(), ch.resource_id.clone()),
            ("X-Goog-Resource-State".to_owned(), state.to_owned()),
            ("X-Goog-Resource-URI".to_owned(), ch.resource_uri.clone()),
        ];
        if let Some(t) = &ch.token {
            headers.push(("X-Goog-Channel-Token".to_owned(), t.clone()));
        }
        Outgoing { channel_id: ch.id.clone(), address: ch.address.clone(), message_number, state, headers }
    }
}

/// Message numbers rise but are never consecutive after the first (`sync` is always 1).
fn next_message_number(last: u64) -> u64 {
    let mut rng = rand::rng();
    if last <= 1 { rng.random_range(100_000..2_000_000) } else { last + rng.random_range(2..5_000) }
}

/// Queues an `exists` message for every live channel on `calendar` that watches events of
/// `event_type`. Call with the world locked, right after the change.
pub fn calendar_changed(world: &mut World, shared: &Shared, calendar: &str, event_type: &str) {
    let now = shared.clock.now();
    for ch in world.channels.by_id.values_mut() {
        let watched = ch.event_types.is_empty() || ch.event_types.iter().any(|t| t == event_type);
        if ch.calendar == calendar && ch.is_live(now) && watched {
            ch.last_message = next_message_number(ch.last_message);
            ch.messages_queued += 1;
            let _ = shared.push_tx.send(Outgoing::new(ch, ch.last_message, "exists"));
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRecord {
    pub channel_id: String,
    pub message_number: u64,
    pub state: String,
    pub address: String,
    pub attempt: u32,
    /// delivered, failed, retrying, dropped, skipped (channel stopped or expired meanwhile)
    pub outcome: String,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub time: String,
}

#[derive(Debug, Default)]
pub struct DeliveryLog {
    pub records: VecDeque<DeliveryRecord>,
}

impl DeliveryLog {
    fn push(&mut self, r: DeliveryRecord) {
        if self.records.len() == LOG_CAPACITY {
            self.records.pop_front();
        }
        self.records.push_back(r);
    }
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default()
}

/// The delivery task: routes each message to its channel's worker until `shutdown`.
pub async fn run_delivery(
    shared: web::Data<Shared>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    shutdown: CancellationToken,
) {
    let http = http_client();
    let mut workers: HashMap<String, mpsc::UnboundedSender<Outgoing>> = HashMap::new();
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = rx.recv() => match m { Some(m) => m, None => break },
        };
        let msg = match workers.get(&msg.channel_id) {
            Some(worker) => match worker.send(msg) {
                Ok(()) => continue,
                // The worker went idle and ended: start a new one below.
                Err(mpsc::error::SendError(m)) => m,
            },
            None => msg,
        };
        let (tx, wrx) = mpsc::unbounded_channel();
        let id = msg.channel_id.clone();
        let _ = tx.send(msg);
        workers.insert(id, tx);
        workers.retain(|_, w| !w.is_closed());
        tokio::spawn(channel_worker(shared.clone(), http.clone(), wrx, shutdown.clone()));
    }
}

async fn channel_worker(
    shared: web::Data<Shared>,
    http: reqwest::Client,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = tokio::time::timeout(WORKER_IDLE, rx.recv()) => match m { Ok(Some(m)) => m, _ => return },
        };
        let mut batch = vec![first];
        let reorder = shared.world.lock().delivery.reorder;
        if reorder {
            // Gather what arrives within a moment, then shuffle it.
            tokio::time::sleep(Duration::from_millis(20)).await;
            while let Ok(m) = rx.try_recv() {
                batch.push(m);
            }
            batch.shuffle(&mut rand::rng());
        }
        for msg in batch {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = deliver(&shared, &http, &msg) => {}
            }
        }
    }
}

fn record(shared: &Shared, msg: &Outgoing, attempt: u32, outcome: &str, status: Option<u16>, error: Option<String>) {
    let time = google_timestamp(shared.clock.now());
    shared.world.lock().notifications.push(DeliveryRecord {
        channel_id: msg.channel_id.clone(),
        message_number: msg.message_number,
        state: msg.state.to_owned(),
        address: msg.address.clone(),
        attempt,
        outcome: outcome.to_owned(),
        status,
        error,
        time,
    });
}

/// Sends one message as the delivery settings say: maybe late, maybe lost, maybe more than once.
pub async fn deliver(shared: &Shared, http: &reqwest::Client, msg: &Outgoing) {
    let (settings, behaviour) = {
        let w = shared.world.lock();
        (w.delivery.clone(), w.behaviour.clone())
    };
    if settings.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(settings.delay_ms)).await;
    }
    let live = {
        let w = shared.world.lock();
        w.channels.by_id.get(&msg.channel_id).is_some_and(|c| c.is_live(shared.clock.now()))
    };
    if !live {
        record(shared, msg, 0, "skipped", None, Some("channel stopped or expired".into()));
        return;
    }
    if settings.drop > 0.0 && rand::rng().random_bool(settings.drop.clamp(0.0, 1.0)) {
        record(shared, msg, 0, "dropped", None, None);
        return;
    }
    for _copy in 0..=settings.duplicate {
        send_with_retries(shared, http, msg, &behaviour).await;
    }
}

async fn send_with_retries(
    shared: &Shared,
    http: &reqwest::Client,
    msg: &Outgoing,
    behaviour: &crate::world::Behaviour,
) {
    let attempts = behaviour.push_max_attempts.max(1);
    for attempt in 1..=attempts {
        let mut req = http
            .post(&msg.address)
            .header("Content-Type", "application/json; charset=UTF-8")
            .header("Content-Length", "0");
        for (k, v) in &msg.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let (status, error) = match req.send().await {
            Ok(resp) => (Some(resp.status().as_u16()), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let retryable = match status {
            Some(200 | 201 | 202 | 204 | 102) => {
                record(shared, msg, attempt, "delivered", status, None);
                return;
            }
            Some(500 | 502 | 503 | 504) | None => true,
            Some(_) => false,
        };
        if !retryable || attempt == attempts {
            record(shared, msg, attempt, "failed", status, error);
            return;
        }
        record(shared, msg, attempt, "retrying", status, error);
        let backoff = behaviour.push_retry_base_ms.saturating_mul(1 << (attempt - 1).min(16));
        tokio::time::sleep(Duration::from_millis(backoff)).await;
    }
}
