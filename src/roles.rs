//! What this replica runs as its roles change (`cluster` module doc): on becoming leader it
//! loads the outbox, reconciles every user (so every switch that fell due meanwhile goes out)
//! and starts the leader's tasks — the boundary scheduler, outbox delivery, the backstop, the
//! channel keeper and contacts polling — under a child token; on losing the lock it cancels
//! them at once, waits for them, and forgets their in-memory state. It also acts on what other
//! replicas ask (`cluster::Event`).
//!
//! Audit and token housekeeping (`Access::run`) is not here but on every replica: it writes
//! back the `last_used_at` times this replica saw, which only it knows, and its pruning is
//! idempotent.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::{Cluster, Event};
use crate::contacts::Contacts;
use crate::presence::engine::Presence;
use crate::sync::SyncService;

/// How often a leader tries again a reconcile another replica asked for (5 s, doubling).
const RECONCILE_ATTEMPTS: u32 = 5;

pub struct Roles {
    pub cluster: Arc<Cluster>,
    pub sync: Arc<SyncService>,
    pub presence: Arc<Presence>,
    pub contacts: Arc<Contacts>,
    /// Reconciles being tried again (`retry_reconcile`).
    pub retrying: Arc<parking_lot::Mutex<std::collections::HashSet<Event>>>,
}

impl Roles {
    /// Starts following leadership and other replicas' requests (shared database only).
    pub fn start(self: Arc<Self>, tracker: &TaskTracker, shutdown: &CancellationToken) {
        let (me, stop) = (self.clone(), shutdown.clone());
        tracker.spawn(async move { me.lead(stop).await });
        if let Some(events) = self.cluster.take_events() {
            let (me, stop, retries) = (self.clone(), shutdown.clone(), tracker.clone());
            tracker.spawn(async move { me.serve_events(events, retries, stop).await });
        }
    }

    async fn lead(&self, shutdown: CancellationToken) {
        let mut leadership = self.cluster.leadership();
        loop {
            // Wait to lead.
            while !*leadership.borrow_and_update() {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    changed = leadership.changed() => if changed.is_err() { return },
                }
            }
            let term = shutdown.child_token();
            let tasks = TaskTracker::new();
            self.take_over(&tasks, &term).await;
            while *leadership.borrow_and_update() {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    changed = leadership.changed() => if changed.is_err() { break },
                }
            }
            term.cancel();
            tasks.close();
            tasks.wait().await;
            self.presence.clear();
            self.presence.outbox.clear();
            if shutdown.is_cancelled() {
                return;
            }
            tracing::info!("leader tasks stopped");
            // A follower now: how each phone system is doing is the next leader's to tell.
            self.cluster.ask_for_news().await;
        }
    }

    async fn take_over(&self, tasks: &TaskTracker, term: &CancellationToken) {
        let outbox = self.presence.outbox.clone();
        match outbox.load().await {
            Ok(queued) => tracing::info!(queued_switches = queued, "outbox loaded"),
            // Its messages stay in the store; each user's next switch supersedes them.
            Err(e) => tracing::error!(error = %e, "cannot load the outbox"),
        }
        tasks.spawn(outbox.run(tasks.clone(), term.clone()));
        // The scheduler runs while users are reconciled: their wake-ups arrive as they go.
        tasks.spawn(self.presence.clone().run(term.clone()));
        let presence = self.presence.clone();
        let stop = term.clone();
        tasks.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                users = presence.recompute_all() => match users {
                    Ok(users) => tracing::info!(users, "leading: presence reconciled"),
                    Err(e) => tracing::error!(error = %e, "reconciling presence on taking over failed"),
                },
            }
        });
        self.sync.start_leader_tasks(tasks, term);
        tasks.spawn(self.contacts.clone().run(term.clone()));
    }

    async fn serve_events(
        &self,
        mut events: tokio::sync::mpsc::UnboundedReceiver<Event>,
        retries: TaskTracker,
        shutdown: CancellationToken,
    ) {
        loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => return,
                e = events.recv() => match e { Some(e) => e, None => return },
            };
            let leading = self.cluster.is_leader();
            let result = match event {
                Event::Presence(ref key) if leading => {
                    let result = self.presence.recompute(key).await;
                    if result.is_err() {
                        self.retry_reconcile(event.clone(), &retries, &shutdown);
                    }
                    result
                }
                Event::PresenceTenant { ref tenant, new_receiver } if leading => {
                    let result = self.presence.recompute_tenant(tenant, new_receiver).await;
                    if result.is_err() {
                        self.retry_reconcile(event.clone(), &retries, &shutdown);
                    }
                    result
                }
                Event::Keeper if leading => {
                    self.sync.keeper_wake.notify_one();
                    Ok(())
                }
                Event::Missed if leading => self.presence.recompute_all().await.map(|_| ()),
                Event::Tenant { tenant } => {
                    self.sync.app.forget_tenant(&tenant);
                    self.sync.tenant_auth.forget(&tenant);
                    self.contacts.forget_tenant(&tenant);
                    // Deleted on another replica: nothing of its phone system's may show for a
                    // tenant created again under its id.
                    if matches!(self.sync.app.store.tenant(&tenant).await, Ok(None)) {
                        self.presence.outbox.forget_tenant(&tenant);
                    }
                    Ok(())
                }
                Event::Contacts { tenant } => {
                    self.contacts.forget_book(&tenant);
                    Ok(())
                }
                Event::PhoneSystem { tenant, health } => {
                    self.sync.presence.outbox.heard_from_leader(&tenant, &health);
                    Ok(())
                }
                Event::NewsWanted { replica } => {
                    if replica != self.cluster.replica_id() {
                        self.sync.presence.outbox.tell_followers_again(&retries);
                        let sync = self.sync.clone();
                        retries.spawn(async move { sync.tell_token_failures_again().await });
                    }
                    Ok(())
                }
                Event::TenantToken { tenant, failure, key } => {
                    self.sync.tenant_token_elsewhere(&tenant, failure.as_deref(), &key).await;
                    Ok(())
                }
                // For the leader only.
                _ => Ok(()),
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "acting on another replica's request failed");
            }
        }
    }

    /// A follower's request to reconcile a user (or a tenant's users) failed here (the
    /// database, most likely): the follower counted it as sent, so this leader tries again, a
    /// few times with backoff while it leads, once per request however often it failed
    /// meanwhile. (A new leader reconciles everyone.)
    fn retry_reconcile(&self, event: Event, tracker: &TaskTracker, shutdown: &CancellationToken) {
        if !self.retrying.lock().insert(event.clone()) {
            return;
        }
        let (presence, cluster, stop) = (self.presence.clone(), self.cluster.clone(), shutdown.clone());
        let retrying = self.retrying.clone();
        tracker.spawn(async move {
            for attempt in 0..RECONCILE_ATTEMPTS {
                let wait = std::time::Duration::from_secs(5 << attempt);
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(wait) => {}
                }
                if !cluster.is_leader() {
                    break;
                }
                let result = match &event {
                    Event::Presence(key) => presence.recompute(key).await,
                    Event::PresenceTenant { tenant, new_receiver } => {
                        presence.recompute_tenant(tenant, *new_receiver).await
                    }
                    _ => Ok(()),
                };
                match result {
                    Ok(()) => break,
                    Err(e) if attempt + 1 == RECONCILE_ATTEMPTS => {
                        tracing::error!(?event, error = %e, "gave up reconciling; the next change, the daily roll or a new leader does it");
                    }
                    Err(e) => tracing::warn!(?event, error = %e, attempt, "reconciling failed again"),
                }
            }
            retrying.lock().remove(&event);
        });
    }
}
