//! Replicas on one database (DESIGN §10): who leads, who syncs which calendar, and how replicas
//! wake each other.
//!
//! With sled (one process) this replica is everything: always the leader, every claim its own,
//! nothing goes over the network. With PostgreSQL any number of `gwsync serve` replicas share
//! the database, and each holds some of these roles (`/readyz` lists them):
//! - **http** and **sync** — every replica: it answers webhooks and the API, and syncs the
//!   calendars notified to it. A sync first claims its calendar in `sync_claims` (`claims`),
//!   with a lease a dead replica's claims fall out of; a replica that finds the calendar held
//!   elsewhere leaves its dirty mark for the holder, whose clearing (only at the generation it
//!   read when it claimed) then fails, so it runs once more. Marks coalesce across replicas: a
//!   sync records the generation it read, and a notification on a replica that does not hold
//!   the calendar writes a mark only when the pending one was read (`sync::queue`). A holder
//!   keeps its claim to the end of its settling window (`sync.rerun_delay` from its sync's start), so a burst spread
//!   over the replicas costs two syncs in the cluster, as in one process. Marks nobody holds
//!   (a killed replica's) are picked up by every replica's scan every half lease.
//! - **leader** — one replica at a time, the holder of a PostgreSQL advisory lock on a
//!   dedicated connection (`leader`): it runs what must run once — the boundary scheduler and
//!   the outbox (each user's switches in sequence order), channel renewal and the keeper, the
//!   backstop and contacts polling. Only the leader reconciles presence: a follower that
//!   changed a user's data asks it to (`NOTIFY gwsync_presence`), since two replicas reconciling
//!   one user would race on its sequence. A killed leader's session ends, PostgreSQL frees the
//!   lock, and the next replica takes over within `cluster.leader_retry`; on taking over it
//!   loads the outbox and reconciles every user, so every switch that fell due meanwhile goes
//!   out.
//! - Replicas wake each other with `LISTEN/NOTIFY` (`notify`); notifications are lost while a
//!   listener is reconnecting, so after a reconnect the leader reconciles everyone again.
//! - Google budgets are the cluster's, not each replica's: every replica heartbeats in
//!   `cluster_members`, and paces each project at its quota divided by the live replicas
//!   (`members`).
//!
//! This module knows only the database and the keys; what runs on becoming leader is wired in
//! `roles`.

pub mod claims;
pub mod deliveries;
pub mod jobs;
pub mod leader;
pub mod members;
pub mod notify;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::ClusterConfig;
use crate::model::CalendarKey;

pub use claims::Claimed;
pub use notify::Event;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Connecting failed (the message never shows the URL or its password).
    #[error("connecting to the database: {0}")]
    Connect(String),
    /// A request to the other replicas was not sent (the message never shows the URL).
    #[error("asking the other replicas: {0}")]
    Notify(String),
}

/// `error` as text without the database URL or its password (sqlx names the URL in some
/// configuration errors).
pub fn scrub(error: impl std::fmt::Display, url: &secrecy::SecretString) -> String {
    use secrecy::ExposeSecret;
    let url = url.expose_secret();
    let mut text = error.to_string().replace(url, "<database_url>");
    if let Ok(parsed) = url::Url::parse(url)
        && let Some(password) = parsed.password()
        && !password.is_empty()
    {
        text = text.replace(password, "<password>");
        if let Ok(decoded) = percent_encoding::percent_decode_str(password).decode_utf8()
            && !decoded.is_empty()
        {
            text = text.replace(decoded.as_ref(), "<password>");
        }
    }
    text
}

/// The PostgreSQL side: a small pool of its own (claims, notifications, heartbeats), besides the
/// leader's and the listener's dedicated connections. Its tables (`sync_claims`,
/// `cluster_members`) are the store's: `migrations/0002_cluster.sql`, applied when the store
/// connects, which is before the cluster does.
struct Shared {
    pool: sqlx::PgPool,
    url: secrecy::SecretString,
    lease: Duration,
    leader_retry: Duration,
    held: claims::Held,
}

/// This replica's place in the cluster; in the app state.
pub struct Cluster {
    shared: Option<Shared>,
    replica_id: String,
    leader: watch::Sender<bool>,
    /// Whether the last database check succeeded (PostgreSQL only).
    reachable: AtomicBool,
    /// Live replicas, this one included (at least 1).
    members: AtomicUsize,
    /// Whether every live replica records the marks it reads (`members`), so a notification
    /// may rest on an unread mark (`Store::mark_unread`); shared with the sync queue.
    coalescing: Arc<AtomicBool>,
    events: mpsc::UnboundedSender<Event>,
    events_rx: parking_lot::Mutex<Option<mpsc::UnboundedReceiver<Event>>>,
}

impl Cluster {
    /// One process on sled: always the leader, alone.
    pub fn single() -> Self {
        Self::new(None, "local".into(), true)
    }

    /// A replica on PostgreSQL at `url`, whose store has connected (and so migrated) already;
    /// `start` runs its background work.
    pub async fn postgres(url: &secrecy::SecretString, config: &ClusterConfig) -> Result<Self, ClusterError> {
        use secrecy::ExposeSecret;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url.expose_secret())
            .await
            .map_err(|e| ClusterError::Connect(scrub(e, url)))?;
        let id = config.replica_id.clone().unwrap_or_else(default_replica_id);
        let shared = Shared {
            pool,
            url: url.clone(),
            lease: config.claim_lease,
            leader_retry: config.leader_retry,
            held: claims::Held::default(),
        };
        Ok(Self::new(Some(shared), id, false))
    }

    fn new(shared: Option<Shared>, replica_id: String, leader: bool) -> Self {
        let (events, events_rx) = mpsc::unbounded_channel();
        Cluster {
            shared,
            replica_id,
            leader: watch::Sender::new(leader),
            reachable: AtomicBool::new(true),
            members: AtomicUsize::new(1),
            coalescing: Arc::new(AtomicBool::new(false)),
            events,
            events_rx: parking_lot::Mutex::new(Some(events_rx)),
        }
    }

    /// Starts the leader election, the listener and the heartbeat (nothing with sled).
    pub fn start(self: &Arc<Self>, tracker: &tokio_util::task::TaskTracker, shutdown: &CancellationToken) {
        if self.shared.is_none() {
            return;
        }
        tracker.spawn(leader::run(self.clone(), shutdown.clone()));
        tracker.spawn(notify::listen(self.clone(), shutdown.clone()));
        tracker.spawn(members::run(self.clone(), shutdown.clone()));
    }

    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    pub fn replica_id(&self) -> &str {
        &self.replica_id
    }

    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// Follows leadership (true while this replica leads).
    pub fn leadership(&self) -> watch::Receiver<bool> {
        self.leader.subscribe()
    }

    fn set_leader(&self, leading: bool) {
        self.leader.send_if_modified(|l| std::mem::replace(l, leading) != leading);
    }

    /// What other replicas asked of this one (taken once, by `roles`).
    pub fn take_events(&self) -> Option<mpsc::UnboundedReceiver<Event>> {
        self.events_rx.lock().take()
    }

    /// Whether this replica reconciles presence itself (else it asks the leader).
    pub fn reconciles_here(&self) -> bool {
        self.shared.is_none() || self.is_leader()
    }

    /// The roles this replica holds now, for `/readyz`.
    pub fn roles(&self) -> Vec<&'static str> {
        let mut roles = Vec::with_capacity(3);
        if self.is_leader() {
            roles.push("leader");
        }
        roles.extend(["sync", "http"]);
        roles
    }

    /// Live replicas, this one included.
    pub fn members(&self) -> usize {
        self.members.load(Ordering::Relaxed).max(1)
    }

    /// Whether notifications may rest on unread marks: every live replica records the marks
    /// it reads (the flag follows the heartbeats; see `members`).
    pub fn coalescing(&self) -> Arc<AtomicBool> {
        self.coalescing.clone()
    }

    /// Whether the database answers now (a quick query; always true with sled).
    pub async fn database_reachable(&self) -> bool {
        let Some(shared) = &self.shared else { return true };
        let ok = tokio::time::timeout(
            Duration::from_secs(2),
            sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&shared.pool),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        self.reachable.store(ok, Ordering::Relaxed);
        ok
    }

    /// Asks the leader to reconcile a user (a follower changed their data); an error if the
    /// request was not sent, so the work that needed it is not taken as done.
    pub async fn presence_changed(&self, key: &CalendarKey) -> Result<(), ClusterError> {
        let Some(shared) = &self.shared else { return Ok(()) };
        notify::send(&shared.pool, notify::PRESENCE, &Event::Presence(key.clone()))
            .await
            .map_err(|e| ClusterError::Notify(scrub(e, &shared.url)))
    }

    /// Asks the leader to reconcile a tenant's users (`new_receiver`: its phone system moved);
    /// an error if the request was not sent.
    pub async fn tenant_presence_changed(&self, tenant: &str, new_receiver: bool) -> Result<(), ClusterError> {
        let Some(shared) = &self.shared else { return Ok(()) };
        let event = Event::PresenceTenant { tenant: tenant.to_owned(), new_receiver };
        notify::send(&shared.pool, notify::PRESENCE_TENANT, &event)
            .await
            .map_err(|e| ClusterError::Notify(scrub(e, &shared.url)))
    }

    /// Records a long request (`crate::jobs`) for the other replicas to show; false if the
    /// record could not be written (logged), true with sled (nothing to share).
    pub async fn record_job(&self, id: &str, job: &serde_json::Value, finished: bool) -> bool {
        let Some(shared) = &self.shared else { return true };
        match jobs::put(&shared.pool, &self.replica_id, id, job, finished).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(job = id, error = %scrub(e, &shared.url), "could not record a job for the other replicas");
                false
            }
        }
    }

    /// A job another replica runs or ran, as recorded (none with sled).
    pub async fn job(&self, id: &str) -> Result<Option<jobs::Record>, ClusterError> {
        let Some(shared) = &self.shared else { return Ok(None) };
        jobs::get(&shared.pool, id, members::LIVE_WITHIN_SECS)
            .await
            .map_err(|e| ClusterError::Connect(scrub(e, &shared.url)))
    }

    /// Marks the jobs an earlier run of this replica (same `cluster.replica_id`) left unfinished
    /// as interrupted: its heartbeat goes on under the same id, so they would read as running.
    pub async fn forget_jobs_of_earlier_run(&self) {
        let Some(shared) = &self.shared else { return };
        if let Err(e) = jobs::interrupt_earlier_run(&shared.pool, &self.replica_id).await {
            tracing::warn!(error = %scrub(e, &shared.url), "could not mark an earlier run's jobs as interrupted");
        }
    }

    /// Tells every replica a tenant's key or settings changed (they drop what they cached).
    pub async fn tenant_changed(&self, tenant: &str) {
        self.send(notify::TENANT, &Event::Tenant { tenant: tenant.to_owned() }).await;
    }

    /// Tells every replica what this one found of a tenant's token endpoint with `key` (`failure`
    /// as JSON; none: it answers again).
    pub async fn tenant_token_changed(&self, tenant: &str, failure: Option<String>, key: String) {
        self.send(notify::TENANT_TOKEN, &Event::TenantToken { tenant: tenant.to_owned(), failure, key }).await;
    }

    /// Records an attempt to deliver to a tenant's phone system for every replica to show
    /// (`presence::deliveries`), keeping the newest `kept`; nothing with sled.
    pub async fn record_delivery(&self, tenant: &str, delivery: &serde_json::Value, kept: usize) {
        let Some(shared) = &self.shared else { return };
        let kept = i64::try_from(kept).unwrap_or(i64::MAX);
        if let Err(e) = deliveries::record(&shared.pool, tenant, delivery, kept).await {
            tracing::warn!(tenant, error = %scrub(e, &shared.url), "could not record a delivery for the other replicas");
        }
    }

    /// The tenant's last `kept` deliveries as recorded (JSON), newest first (none with sled).
    pub async fn deliveries(&self, tenant: &str, kept: usize) -> Result<Option<Vec<String>>, ClusterError> {
        let Some(shared) = &self.shared else { return Ok(None) };
        let kept = i64::try_from(kept).unwrap_or(i64::MAX);
        let list = deliveries::list(&shared.pool, tenant, kept).await;
        Ok(Some(list.map_err(|e| ClusterError::Connect(scrub(e, &shared.url)))?))
    }

    /// The leader tells the followers how a tenant's phone system is doing (`health` as JSON).
    pub async fn phone_system_health(&self, tenant: &str, health: String) {
        self.send(notify::PHONE_SYSTEM, &Event::PhoneSystem { tenant: tenant.to_owned(), health }).await;
    }

    /// Tells every replica a tenant's phonebook changed (they rebuild their index).
    pub async fn contacts_changed(&self, tenant: &str) {
        self.send(notify::CONTACTS, &Event::Contacts { tenant: tenant.to_owned() }).await;
    }

    /// Asks the other replicas to tell this one again what they told before (`Event::NewsWanted`).
    pub async fn ask_for_news(&self) {
        self.send(notify::NEWS, &Event::NewsWanted { replica: self.replica_id.clone() }).await;
    }

    /// Wakes the leader's channel keeper (a deletion left channels to stop).
    pub async fn wake_keeper(&self) {
        self.send(notify::KEEPER, &Event::Keeper).await;
    }

    async fn send(&self, channel: &str, event: &Event) {
        let Some(shared) = &self.shared else { return };
        if let Err(e) = notify::send(&shared.pool, channel, event).await {
            // Not fatal for what goes through here (cached tenants and phonebooks, the keeper's
            // wake-up): replicas refresh on their own and the keeper sweeps on its interval.
            // Requests to reconcile presence are sent by the callers themselves, who fail.
            tracing::warn!(channel, error = %e, "could not notify the other replicas");
        }
    }

    /// Claims a calendar's sync for this replica (with sled: always).
    /// (A claim this replica holds with two thirds of a lease left, e.g. for a rerun, is its
    /// own without asking: `claims::Held`.)
    pub async fn claim(&self, key: &CalendarKey) -> Result<Claimed, ClusterError> {
        let Some(s) = &self.shared else { return Ok(Claimed::Mine) };
        if s.held.covers(key, s.lease * 2 / 3) {
            return Ok(Claimed::Mine);
        }
        let sent = std::time::Instant::now();
        let claimed = claims::claim(&s.pool, key, &self.replica_id, s.lease).await;
        match claimed {
            Ok(Claimed::Mine) => s.held.set(key, sent + s.lease),
            _ => s.held.forget(key),
        }
        claimed
    }

    /// Whether this replica's claim on the calendar is certainly live now, and so has been its
    /// own since the statement that last took or extended it (with sled: always).
    pub fn holds(&self, key: &CalendarKey) -> bool {
        self.shared.as_ref().is_none_or(|s| s.held.covers(key, Duration::ZERO))
    }

    /// Keeps this replica's claim for `extra` beyond a lease from now (a job running, or
    /// waiting for its retry or rerun); as `claim`, without asking while two thirds of a lease
    /// beyond `extra` are left.
    pub async fn hold(&self, key: &CalendarKey, extra: Duration) -> Result<bool, ClusterError> {
        let Some(s) = &self.shared else { return Ok(true) };
        if s.held.covers(key, extra + s.lease * 2 / 3) {
            return Ok(true);
        }
        let sent = std::time::Instant::now();
        let held = claims::extend(&s.pool, key, &self.replica_id, s.lease + extra).await;
        match held {
            Ok(true) => s.held.set(key, sent + s.lease + extra),
            _ => s.held.forget(key),
        }
        held
    }

    pub async fn release(&self, key: &CalendarKey) -> Result<(), ClusterError> {
        match &self.shared {
            None => Ok(()),
            Some(s) => {
                s.held.forget(key);
                claims::release(&s.pool, key, &self.replica_id).await
            }
        }
    }

    /// Lets the calendar's claim go after `settling`, the rest of this replica's settling
    /// window for it (`claims::release_after`); with sled, nothing to do.
    pub async fn release_after(&self, key: &CalendarKey, settling: Duration) -> Result<(), ClusterError> {
        match &self.shared {
            None => Ok(()),
            Some(s) => {
                s.held.forget(key);
                claims::release_after(&s.pool, key, &self.replica_id, settling).await
            }
        }
    }

    /// Calendars some replica holds a live claim on.
    pub async fn claimed(&self) -> Result<std::collections::HashSet<CalendarKey>, ClusterError> {
        match &self.shared {
            None => Ok(Default::default()),
            Some(s) => claims::live(&s.pool).await,
        }
    }

    /// The claim lease (how often marks nobody holds are looked for: half of it).
    pub fn lease(&self) -> Option<Duration> {
        self.shared.as_ref().map(|s| s.lease)
    }
}

/// Host name, process id and a random suffix: unique per process, readable in the tables.
fn default_replica_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gwsync".into());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &suffix[..8])
}
