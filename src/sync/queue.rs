//! The dirty set: which calendars need a sync, coalesced to one pending sync per calendar
//! however many notifications arrive.
//!
//! Durable marks live in the store (`mark_dirty`), so a crash loses none; this queue mirrors
//! them in memory with a phase per calendar:
//! - absent: nothing to do;
//! - queued: a sync will run and will see every change made so far (it has not fetched yet),
//!   so more notifications need no new mark;
//! - running: a sync is fetching; a notification now may be about a change it misses, so it
//!   takes a new durable mark and the calendar runs once more afterwards.
//!
//! A calendar starts syncing at most once per `rerun_delay`: the first notification after a
//! quiet spell syncs at once, later ones wait for the rest of the window — so a burst of
//! notifications (Google sends one per change, sometimes repeated) costs two syncs, not dozens.
//!
//! Failed syncs wait (backoff) in `delayed` with their mark kept.
//!
//! Replicas on one database (`shared`): a durable mark covers later notifications only up to
//! the moment the replica that syncs reads its generation, and that may be another replica.
//! A sync records what it read (`Store::read_dirty`), so a replica that does not hold the
//! calendar's claim makes each notification rest on an unread mark (`Store::mark_unread`):
//! while the pending mark is unread it covers the notification and nothing is written, and
//! once the holder's sync has read it the notification writes a newer one, which makes the
//! holder's clearing fail and its sync run once more. So a burst spread over the replicas
//! costs one write per holder's read, not one per notification. (While a replica of an older
//! build is alive, which records no reads, every notification marks anew: `Cluster::coalescing`.)
//! A replica with no sync of its own for the calendar queues it only if its notification had
//! to make the mark from nothing (`UnreadMark::created`); a mark that was there is the sync's
//! that reads it, or, if one read it, that sync's rerun (`notify_resting`) — so the replicas
//! that do not hold a calendar ask for no claim while another one syncs it.
//! A replica that finds its calendar claimed elsewhere (`Finish::Elsewhere`) tries once more
//! when the holder's claim runs out, but within `ELSEWHERE_RECHECK` and at least a
//! `rerun_delay` later (the holder may have ended just before the mark), and again after each
//! notification that had to make a mark from nothing meanwhile; if the mark is gone by then,
//! the holder covered it and the retry calls no Google API. A holder clears only at the
//! generation it read when it claimed (`claimed`), and runs again while a mark it did not
//! cover remains; notifications it takes during its claim rest on the mark it holds, which
//! stays for the rerun they ask for. The settling window holds across replicas: a holder with
//! nothing more to run keeps its claim for the rest of its window (`settling_left`), so a
//! notification on another replica in that window is held elsewhere and waits for one sync
//! after the window, rather than syncing at once (each replica's window is its own).
//!
//! A calendar synced back to back (read here less than `BUSY_CYCLE` ago) is in a busy spell:
//! each read promises up to twice the time since the last one, at most `BUSY_PROMISE`
//! (`read_promise`), the next sync waits for the promise's end in `delayed` (not in a
//! worker), and a sync keeps its mark and the claim and looks again then, instead of
//! clearing (`finish_shared`). Notifications meanwhile, here or on other replicas, rest on
//! that mark or on one newer generation written once per sync; a look that reads the very
//! generation the last sync fetched after, with nothing notified here, calls no Google API,
//! clears the mark and ends the spell. Under a storm a calendar so syncs at most once per
//! `BUSY_PROMISE`, and a sync costs the database a handful of statements in all. A busy read
//! that follows a few notifications here (`HORIZON_NOTIFICATIONS`), from the spell's third read
//! on (a burst for one change is over by then: `HORIZON_AFTER_READS`), also moves the spell's
//! horizon `BUSY_HORIZON` on: every
//! read before the horizon leaves the next generation unread as it reads (`Store::read_dirty`),
//! so the other replicas' notifications rest on the mark up to the horizon, however many reads
//! come meanwhile — they ask the database once a horizon, and write nothing — while the
//! holder's look finds a newer generation each time and syncs until the horizon has passed.
//!
//! Calendars ready to sync wait in one lane per tenant, and claims go round the tenants in
//! turn, each tenant holding at most `per_tenant` claims at once: a tenant with thousands of
//! calendars queued (or whose jobs hang) delays no other tenant's next sync.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use rand::RngExt;
use tokio::sync::Notify;

use crate::clock::Clock;
pub use crate::model::CalendarKey;
use crate::store::group_flush::GroupFlush;
use crate::store::{SharedStore, StoreError, UnreadMark};

/// The longest a calendar found claimed by another replica waits before it is tried again here
/// (`finish_shared`).
/// Longer than the claim a holder keeps after a busy spell ends (`BUSY_PROMISE` and
/// `settling_left`'s margin): a retry within it would be refused once more and give the mark up
/// to the orphan scan.
const ELSEWHERE_RECHECK: std::time::Duration = std::time::Duration::from_secs(3);

/// A read within this of the calendar's last read here is part of a busy spell
/// (`SyncQueue::read_promise`).
const BUSY_CYCLE: std::time::Duration = std::time::Duration::from_secs(4);
/// The longest promise a rerun in a busy spell makes.
const BUSY_PROMISE: std::time::Duration = std::time::Duration::from_secs(2);
/// How far a busy read that follows a notification here moves the calendar's spell on
/// (`Store::read_dirty`'s `busy_for`): reads until then leave a mark unread for the next one,
/// so the other replicas' notifications rest on it without asking the store — they ask once
/// a horizon, not once a read. The price: the spell reads on (once a `BUSY_PROMISE`) until the
/// horizon after the last notification here, then ends with a read and a look. (Measured:
/// with 6 s the replicas that did not hold a calendar still asked often enough to set the p99
/// of a storm's acknowledgements; `cargo bench --bench replicas`.)
const BUSY_HORIZON: std::time::Duration = std::time::Duration::from_secs(12);
/// A spell moves its horizon only from its third read on (after this many reads back to
/// back): a burst of notifications for one change that straddles a sync makes a rerun read
/// back to back, but is over before the rerun's look, and costs its two syncs, not a
/// horizon's worth; notifications that keep coming over two syncs are a storm.
const HORIZON_AFTER_READS: u32 = 2;
/// A read moves the horizon only after at least this many notifications here since the last
/// read: someone editing a calendar now and then (a notification or two a change) is no storm,
/// and the syncs for it end as soon as the edits do.
const HORIZON_NOTIFICATIONS: u32 = 4;

/// What a sync's read of its calendar's mark asks of the store (`SyncQueue::read_promise`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadTerms {
    /// No other read within this (`Store::read_dirty`'s `spacing`).
    pub spacing: std::time::Duration,
    /// Moves the busy spell's horizon this far (zero: not at all).
    pub busy_for: std::time::Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Queued,
    Delayed,
    Running { again: bool },
}

#[derive(Debug)]
struct Entry {
    phase: Phase,
    /// Generation of the durable mark this entry stands for (0: none, e.g. a backstop sync).
    generation: u64,
    /// Whether a durable mark exists for it (later notifications then need none of their own).
    marked: bool,
    /// When the oldest notification this entry covers arrived (for the lag metric).
    since: Option<Instant>,
    /// Shared database: a notification arrived after the durable mark was written (it may be
    /// about a change that a sync by another replica, which read the mark already, missed).
    since_mark: bool,
    /// Shared database: the mark's generation read when this replica claimed the calendar.
    read: Option<u64>,
    /// Shared database: this entry already found its calendar claimed elsewhere once.
    elsewhere: bool,
    /// Shared database: this replica holds the calendar's claim (from its claim to the end of
    /// the claim's last run). Only then does a mark it holds cover a new notification without
    /// asking the database: another replica's sync may have read the mark already.
    held: bool,
    /// Shared database: the unread mark this replica last made sure of stays unread until then
    /// (`UnreadMark::unread_until`), so notifications before it need not ask the database.
    covered_until: Option<Instant>,
    /// Notifications whose durable mark is being written (not committed yet: no replica can
    /// have read it, so no sync but one starting after them covers them).
    marking: u32,
    /// Shared database: the promise `read_promise` gave for the read about to be made
    /// (`claimed` turns it into `Inner::next_read`).
    promise: Option<std::time::Duration>,
    /// Shared database: that promise was a busy one (the calendar is synced back to back), so
    /// the sync keeps its mark and looks again when the promise ends (`finish_shared`).
    busy: bool,
    /// Shared database: the generation the last sync here fetched after reading, while it
    /// keeps the mark; a look that reads it again finds nothing new (`claimed`).
    synced: Option<u64>,
    /// Notifications here since this replica last read the calendar's mark (`read_promise`).
    since_read: u32,
}

impl Entry {
    fn new(phase: Phase, generation: u64, marked: bool, since: Option<Instant>) -> Self {
        Entry {
            phase,
            generation,
            marked,
            since,
            since_mark: false,
            read: None,
            elsewhere: false,
            held: false,
            covered_until: None,
            marking: 0,
            promise: None,
            busy: false,
            synced: None,
            since_read: 0,
        }
    }
}

/// A calendar's last read here (`Inner::last_read`).
#[derive(Debug, Clone, Copy)]
struct LastRead {
    at: DateTime<Utc>,
    /// How many reads back to back its busy spell here has had (0: no spell).
    spell_reads: u32,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<CalendarKey, Entry>,
    /// Calendars ready to sync, one lane per tenant.
    ready: HashMap<String, VecDeque<CalendarKey>>,
    /// Tenants with a non-empty lane, in the order they get their next claim.
    rotation: VecDeque<String>,
    /// Claims each tenant holds now.
    running: HashMap<String, usize>,
    delayed: BTreeSet<(DateTime<Utc>, CalendarKey)>,
    /// When each recently synced calendar last started a sync (pruned as they age out).
    started: HashMap<CalendarKey, DateTime<Utc>>,
    /// Shared database: calendars whose last run here has ended and whose claim this replica
    /// keeps to the end of its settling window, and until when (pruned as they age out).
    keeping: HashMap<CalendarKey, DateTime<Utc>>,
    /// When each calendar's last verified notification arrived (kept here, under the lock a
    /// notification takes anyway, so acknowledging one takes a single lock).
    notified: HashMap<CalendarKey, DateTime<Utc>>,
    /// Shared database: this replica's last read of each calendar's mark (`read_promise`).
    last_read: HashMap<CalendarKey, LastRead>,
    /// Shared database: the time before which the store refuses the next read of each
    /// calendar this replica read last (its promise): a sync waits for it in `delayed`, not
    /// in a worker, and the claim is kept until then.
    next_read: HashMap<CalendarKey, DateTime<Utc>>,
    /// Shared database: calendars this replica has no entry for whose notifications rest on a
    /// mark another sync covers, and until when that mark stays unread (`notify`).
    resting: HashMap<CalendarKey, Instant>,
}

impl Inner {
    /// After a burst (every user queued at once, at start or on an import) the maps would keep
    /// their peak capacity for good; give it back once the queue drains.
    fn shrink_if_idle(&mut self) {
        if self.entries.is_empty() && self.entries.capacity() > 1024 {
            self.entries.shrink_to_fit();
            self.ready.shrink_to_fit();
            self.rotation.shrink_to_fit();
            self.started.shrink_to_fit();
            self.keeping.shrink_to_fit();
        }
    }

    /// Notes that notifications for `key` rest on a mark another sync covers, unread until
    /// `until` (forgetting the lapsed ones once the map grows).
    fn rest(&mut self, key: &CalendarKey, until: Option<Instant>, now: Instant) {
        let Some(until) = until.filter(|u| *u > now) else { return };
        if self.resting.len() > 1024 {
            self.resting.retain(|_, u| *u > now);
        }
        self.resting.insert(key.clone(), until);
    }

    fn push_ready(&mut self, key: CalendarKey) {
        let lane = self.ready.entry(key.tenant.clone()).or_default();
        if lane.is_empty() {
            self.rotation.push_back(key.tenant.clone());
        }
        lane.push_back(key);
    }

    /// The next calendar to claim: tenants in turn, skipping those at their limit.
    fn next_claim(&mut self, per_tenant: usize) -> Option<CalendarKey> {
        for _ in 0..self.rotation.len() {
            let tenant = self.rotation.pop_front()?;
            if self.running.get(&tenant).copied().unwrap_or(0) >= per_tenant {
                self.rotation.push_back(tenant);
                continue;
            }
            let Some(lane) = self.ready.get_mut(&tenant) else { continue };
            let mut found = None;
            while let Some(key) = lane.pop_front() {
                if self.entries.get(&key).is_some_and(|e| e.phase == Phase::Queued) {
                    found = Some(key);
                    break;
                }
            }
            if lane.is_empty() {
                self.ready.remove(&tenant);
            } else {
                self.rotation.push_back(tenant.clone());
            }
            if let Some(key) = found {
                *self.running.entry(tenant).or_default() += 1;
                return Some(key);
            }
        }
        None
    }

    fn release_claim(&mut self, tenant: &str) {
        if let Some(n) = self.running.get_mut(tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.running.remove(tenant);
            }
        }
    }

    /// Queues `key` now, or at the end of its settling window if it synced very recently (on a
    /// shared database, not before the store lets its next read pass either).
    fn schedule(&mut self, key: &CalendarKey, now: DateTime<Utc>, window: chrono::Duration) -> bool {
        let settled = self.started.get(key).map(|t| *t + window);
        let readable = self.next_read.get(key).copied();
        match settled.max(readable).filter(|t| *t > now) {
            Some(at) => {
                if let Some(e) = self.entries.get_mut(key) {
                    e.phase = Phase::Delayed;
                }
                self.delayed.insert((at, key.clone()));
                false
            }
            None => {
                self.push_ready(key.clone());
                true
            }
        }
    }
}

/// What a worker got: the calendar, and since when it has been waiting.
#[derive(Debug, Clone)]
pub struct Claim {
    pub key: CalendarKey,
    pub since: Option<Instant>,
}

pub enum Finish {
    Done,
    /// Shared database: another replica holds the calendar's claim for `held_for` more; the
    /// mark stays for it.
    Elsewhere {
        held_for: std::time::Duration,
    },
    /// Try again at this time, keeping the mark.
    RetryAt(DateTime<Utc>),
    /// Give up until something changes (the user is re-saved, or gwsync restarts).
    GiveUp,
}

pub struct SyncQueue {
    /// A calendar starts syncing at most once per this window.
    rerun_delay: chrono::Duration,
    /// Claims one tenant may hold at once.
    per_tenant: usize,
    clock: Clock,
    inner: Mutex<Inner>,
    ready: Notify,
    delayed_changed: Notify,
    store: SharedStore,
    flush: Arc<GroupFlush>,
    /// Replicas share the database (see the module doc); the flag says whether notifications
    /// may rest on unread marks (`Cluster::coalescing`).
    shared: Option<Arc<AtomicBool>>,
    /// Tests: `finish` on a shared database waits for this before clearing what it read.
    #[cfg(test)]
    pause_before_clear: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

/// What follows the end of a claim, for the replica's claim on the calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Nothing more for now: let the claim go.
    Ended,
    /// It runs again (now, after its settling window, or at its retry): keep the claim.
    Again(Option<DateTime<Utc>>),
}

impl SyncQueue {
    pub fn new(
        store: SharedStore,
        flush: Arc<GroupFlush>,
        rerun_delay: std::time::Duration,
        per_tenant: usize,
        clock: Clock,
    ) -> Self {
        SyncQueue {
            rerun_delay: chrono::Duration::from_std(rerun_delay).unwrap_or_default(),
            per_tenant: per_tenant.max(1),
            clock,
            inner: Mutex::new(Inner::default()),
            ready: Notify::new(),
            delayed_changed: Notify::new(),
            store,
            flush,
            shared: None,
            #[cfg(test)]
            pause_before_clear: Mutex::new(None),
        }
    }

    /// For a replica of a shared database (see the module doc).
    pub fn shared(mut self, coalescing: Arc<AtomicBool>) -> Self {
        self.shared = Some(coalescing);
        self
    }

    /// Wakes a worker for a calendar just made ready (`Inner::schedule` said so), or the
    /// dispatcher for one that now waits in `delayed`.
    fn wake(&self, ready: bool) {
        if ready {
            self.ready.notify_one();
        } else {
            self.delayed_changed.notify_one();
        }
    }

    /// Writes the durable mark a notification needs; its generation. On a shared database,
    /// while every replica records its reads, only where the pending mark was read.
    async fn mark(&self, key: &CalendarKey) -> Result<UnreadMark, StoreError> {
        let mark = match &self.shared {
            Some(coalescing) if coalescing.load(Ordering::Relaxed) => {
                self.store.mark_unread(&key.tenant, &key.user).await?
            }
            // Every notification writes its own generation: it must see to its sync itself.
            _ => UnreadMark {
                generation: self.store.mark_dirty(&key.tenant, &key.user).await?,
                unread_until: None,
                created: true,
            },
        };
        self.flush.durable().await?;
        Ok(mark)
    }

    /// Queues a calendar whose mark nobody holds (a replica died holding it), unless it is
    /// queued here already; true if it was queued.
    pub fn adopt(&self, key: &CalendarKey, generation: u64) -> bool {
        let mut inner = self.inner.lock();
        if inner.entries.contains_key(key) {
            return false;
        }
        inner.entries.insert(key.clone(), Entry::new(Phase::Queued, generation, true, None));
        inner.push_ready(key.clone());
        drop(inner);
        self.ready.notify_one();
        true
    }

    /// Queues a calendar with a durable mark this replica did not see synced, after its
    /// settling window; unless it is queued here already.
    fn queue_again(&self, key: &CalendarKey, generation: u64) {
        let mut inner = self.inner.lock();
        if inner.entries.contains_key(key) {
            return;
        }
        inner.entries.insert(key.clone(), Entry::new(Phase::Queued, generation, true, None));
        let ready = inner.schedule(key, self.clock.now(), self.rerun_delay);
        drop(inner);
        self.wake(ready);
    }

    /// This replica's claim on the calendar ran out while it synced (another replica may hold
    /// it now): its marks no longer cover new notifications without asking the database.
    pub fn claim_lost(&self, key: &CalendarKey) {
        let mut inner = self.inner.lock();
        inner.keeping.remove(key);
        if let Some(e) = inner.entries.get_mut(key) {
            e.held = false;
            e.synced = None;
        }
    }

    /// This replica's claim on the calendar may have lapsed since its last sync here (it had to
    /// claim it anew): another replica may have synced and cleared the mark since, and a new
    /// one may carry the same generation number, so the next read is not trusted to show
    /// nothing new.
    pub fn claim_renewed(&self, key: &CalendarKey) {
        if let Some(e) = self.inner.lock().entries.get_mut(key) {
            e.synced = None;
        }
    }

    /// This replica claimed the calendar and read its mark's generation (none: no mark).
    /// True if the sync can be skipped: the notifications it stands for were all covered by a
    /// sync another replica made since.
    pub fn claimed(&self, key: &CalendarKey, generation: Option<u64>) -> bool {
        let mut inner = self.inner.lock();
        let now = self.clock.now();
        if inner.last_read.len() > 1024 {
            inner.last_read.retain(|_, r| (now - r.at).to_std().unwrap_or_default() <= BUSY_CYCLE);
            inner.next_read.retain(|_, t| *t > now);
        }
        inner.last_read.entry(key.clone()).and_modify(|r| r.at = now).or_insert(LastRead { at: now, spell_reads: 0 });
        let Some(e) = inner.entries.get_mut(key) else { return false };
        let promise = e.promise.take().and_then(|p| chrono::Duration::from_std(p).ok());
        e.read = generation;
        e.elsewhere = false;
        e.held = true;
        e.since_read = 0;
        // Read now: whatever this replica was promised about the mark staying unread is void.
        e.covered_until = None;
        let again = matches!(e.phase, Phase::Running { again: true });
        let quiet = !e.since_mark && !again && e.marking == 0;
        // No mark, or the very mark the last sync here fetched after (kept for this look):
        // nothing was notified since, here or on another replica (which would have written a
        // newer generation).
        let skip = quiet && ((generation.is_none() && e.marked) || (generation.is_some() && generation == e.synced));
        e.synced = None;
        if skip {
            // The spell is over: this look ends it, clearing the mark.
            e.busy = false;
        }
        if generation.is_none() {
            // No mark to hold: a notification from now on must write one, not rest on the one
            // this entry once stood for (another replica's sync cleared it).
            e.marked = false;
        }
        match promise {
            Some(p) => inner.next_read.insert(key.clone(), now + p),
            None => inner.next_read.remove(key),
        };
        skip
    }

    /// How long the read of the calendar's mark about to be made may promise no other read
    /// (`Store::read_dirty`'s spacing): `settling` (a little under the settling window) for a
    /// first sync after a quiet spell; for a calendar this replica read less than
    /// `BUSY_CYCLE` ago, twice the time since, up to `BUSY_PROMISE`. While the promise lasts
    /// the other replicas' notifications rest on the unread mark instead of each asking the
    /// database, and the next sync here waits for its end outside the workers (`schedule`),
    /// keeping the claim (`settling_left`), so the next read comes as the promise ends. Under
    /// a storm of notifications a calendar's syncs thus settle within a few cycles at one per
    /// `BUSY_PROMISE` — one sync for all the changes of that spell, as the settling window
    /// does for a burst. A busy read with `HORIZON_NOTIFICATIONS` here since the last read, from
    /// the spell's third read on (`HORIZON_AFTER_READS`), also moves the spell's horizon `BUSY_HORIZON` on
    /// (`busy_for`): the reads until then leave a mark unread for the next, so the other
    /// replicas ask the database once a horizon.
    pub fn read_promise(&self, key: &CalendarKey, settling: std::time::Duration) -> ReadTerms {
        let mut inner = self.inner.lock();
        let now = self.clock.now();
        let last = inner.last_read.get_mut(key);
        let cycle = last.as_ref().map(|r| (now - r.at).to_std().unwrap_or_default());
        let busy = cycle.is_some_and(|cycle| cycle <= BUSY_CYCLE);
        let mut spell_reads = 0;
        if let Some(r) = last {
            spell_reads = if busy { r.spell_reads.saturating_add(1) } else { 0 };
            r.spell_reads = spell_reads;
        }
        let Some(e) = inner.entries.get_mut(key) else {
            return ReadTerms { spacing: settling, busy_for: std::time::Duration::ZERO };
        };
        let promise = match cycle {
            // Up to a fifth less at random: calendars that became busy together (a storm
            // over a whole company) drift apart instead of syncing in step.
            Some(cycle) if busy => {
                settling.max((cycle * 2).min(BUSY_PROMISE).mul_f64(rand::rng().random_range(0.8..=1.0)))
            }
            _ => settling,
        };
        e.promise = Some(promise);
        e.busy = busy;
        let storm = e.since_read >= HORIZON_NOTIFICATIONS && spell_reads >= HORIZON_AFTER_READS;
        let busy_for = if storm { BUSY_HORIZON } else { std::time::Duration::ZERO };
        ReadTerms { spacing: promise, busy_for }
    }

    /// Queues every calendar with a durable mark (at start).
    pub async fn load_marks(&self) -> Result<usize, StoreError> {
        let marks = self.store.dirty_calendars().await?;
        let n = marks.len();
        let mut inner = self.inner.lock();
        for (tenant, user, generation) in marks {
            let key = CalendarKey { tenant, user };
            if !inner.entries.contains_key(&key) {
                inner.entries.insert(key.clone(), Entry::new(Phase::Queued, generation, true, None));
                inner.push_ready(key);
            }
        }
        drop(inner);
        self.ready.notify_waiters();
        self.ready.notify_one();
        Ok(n)
    }

    /// A notification: returns once the need to sync is durable (or already was).
    ///
    /// The notification counts at once — a queued sync will see its change, a running one will
    /// run again — and the durable mark is written meanwhile (group commit), so a burst is
    /// coalesced however fast it arrives.
    /// True if the calendar was not pending before (the pending count changed).
    pub async fn notify(&self, key: &CalendarKey) -> Result<bool, StoreError> {
        let now = Instant::now();
        let at = self.clock.now();
        let mut added = false;
        let coalescing = self.shared.as_ref().is_some_and(|c| c.load(Ordering::Relaxed));
        let resting = {
            let mut inner = self.inner.lock();
            match inner.notified.get_mut(key) {
                Some(last) => *last = at,
                None => {
                    inner.notified.insert(key.clone(), at);
                }
            }
            // Shared database: this replica still keeps the calendar's claim after its last run,
            // so no other replica can have read a mark made since (and it syncs the calendar
            // next: the entry below).
            let kept = self.shared.is_some() && inner.keeping.get(key).is_some_and(|until| *until > at);
            let resting = coalescing && !kept && !inner.entries.contains_key(key);
            // The mark this replica last made sure of (`notify_resting`) is unread, and no
            // sync reads it yet.
            if resting && inner.resting.get(key).is_some_and(|until| now < *until) {
                return Ok(false);
            }
            if !resting {
                match inner.entries.get_mut(key) {
                    None => {
                        added = true;
                        let mut entry = Entry::new(Phase::Queued, 0, false, Some(now));
                        entry.marking = 1;
                        entry.since_read = 1;
                        inner.entries.insert(key.clone(), entry);
                        let ready = inner.schedule(key, self.clock.now(), self.rerun_delay);
                        drop(inner);
                        self.wake(ready);
                    }
                    Some(e) => {
                        e.since_read = e.since_read.saturating_add(1);
                        e.since.get_or_insert(now);
                        if let Phase::Running { again } = &mut e.phase {
                            *again = true;
                        }
                        // A durable mark that is still held covers this notification too: it is
                        // cleared only by the end of a sync that starts after now (a running one
                        // was just told to run again).
                        // On a shared database only while this replica holds the calendar: else
                        // another replica's sync may have read the mark already, so the
                        // notification makes sure of an unread one (`mark`).
                        if e.marked && (self.shared.is_none() || e.held || kept) {
                            e.since_mark = true;
                            return Ok(false);
                        }
                        // Another replica may sync it, but the mark this replica made sure of is
                        // still unread, and no sync can read it before `covered_until`.
                        // Not while an older build may read it without recording the read.
                        if coalescing && e.covered_until.is_some_and(|until| now < until) {
                            return Ok(false);
                        }
                        e.marking += 1;
                    }
                }
            }
            resting
        };
        if resting {
            return self.notify_resting(key, now).await;
        }
        let written = self.mark(key).await;
        let covered = {
            let mut inner = self.inner.lock();
            match inner.entries.get_mut(key) {
                Some(e) => {
                    e.marking = e.marking.saturating_sub(1);
                    if let Ok(mark) = &written {
                        e.generation = e.generation.max(mark.generation);
                        e.marked = true;
                        e.covered_until = e.covered_until.max(mark.unread_until);
                        // Waiting for another replica's claim: a mark this notification had to
                        // make from nothing came after the holder's last clear (it may keep its
                        // claim a while without running), so the next refusal waits again
                        // rather than leave the mark to the orphan scan. A mark that was there
                        // is covered by its own sync (`UnreadMark::created`).
                        if mark.created {
                            e.elsewhere = false;
                        }
                    }
                    false
                }
                None => true,
            }
        };
        let generation = written?.generation;
        if covered {
            if self.shared.is_some() {
                // The mark may be another replica's (an unread one this notification rested
                // on, or one it added to), made after the sync here read: it must be synced,
                // not cleared. Queued again, as an adopted mark; a sync that finds nothing new
                // costs one incremental list.
                self.queue_again(key, generation);
            } else {
                // The sync this notification queued has already run and covered it.
                self.store.clear_dirty(&key.tenant, &key.user, generation).await?;
            }
        }
        Ok(added)
    }

    /// `notify` on a shared database for a calendar this replica is not syncing: the
    /// notification makes sure of an unread mark, and only if it had to make one from nothing
    /// (`UnreadMark::created`) does this replica queue the calendar. A mark that was there is
    /// covered by the sync that reads it, or, if a sync read it already, by that sync's run
    /// after its clear fails on the newer generation — so under a storm the replicas that do
    /// not hold a calendar write one mark a sync and never ask for its claim.
    async fn notify_resting(&self, key: &CalendarKey, now: Instant) -> Result<bool, StoreError> {
        let mark = self.mark(key).await?;
        let mut inner = self.inner.lock();
        let added = match inner.entries.get_mut(key) {
            // Queued here meanwhile (a notification that created the mark): it covers this one.
            Some(e) => {
                e.generation = e.generation.max(mark.generation);
                e.marked = true;
                e.covered_until = e.covered_until.max(mark.unread_until);
                false
            }
            None if mark.created => {
                inner.resting.remove(key);
                let mut entry = Entry::new(Phase::Queued, mark.generation, true, Some(now));
                entry.covered_until = mark.unread_until;
                inner.entries.insert(key.clone(), entry);
                let ready = inner.schedule(key, self.clock.now(), self.rerun_delay);
                drop(inner);
                self.wake(ready);
                true
            }
            None => {
                inner.rest(key, mark.unread_until, now);
                false
            }
        };
        Ok(added)
    }

    /// Asks for a sync without a durable mark (backstop, start, a user added): if gwsync stops
    /// first, the next start syncs every calendar anyway.
    pub fn enqueue(&self, key: &CalendarKey) {
        let mut inner = self.inner.lock();
        match inner.entries.get_mut(key) {
            None => {
                inner.entries.insert(key.clone(), Entry::new(Phase::Queued, 0, false, None));
                inner.push_ready(key.clone());
                drop(inner);
                self.ready.notify_one();
            }
            Some(e) => {
                if let Phase::Running { again } = &mut e.phase {
                    *again = true;
                }
            }
        }
    }

    /// Like `enqueue`, but also cuts a backoff short (the admin fixed something).
    pub fn enqueue_now(&self, key: &CalendarKey) {
        let mut inner = self.inner.lock();
        if let Some(e) = inner.entries.get_mut(key)
            && e.phase == Phase::Delayed
        {
            e.phase = Phase::Queued;
            inner.delayed.retain(|(_, k)| k != key);
            inner.push_ready(key.clone());
            drop(inner);
            self.ready.notify_one();
            return;
        }
        drop(inner);
        self.enqueue(key);
    }

    pub fn contains(&self, key: &CalendarKey) -> bool {
        self.inner.lock().entries.contains_key(key)
    }

    pub fn pending(&self) -> usize {
        self.inner.lock().entries.len()
    }

    /// Waits for a calendar to sync and claims it (tenants in turn, each within its limit).
    /// Every claim must be ended with `finish`.
    pub async fn take(&self) -> Claim {
        loop {
            let notified = self.ready.notified();
            {
                let mut inner = self.inner.lock();
                if let Some(key) = inner.next_claim(self.per_tenant)
                    && let Some(e) = inner.entries.get_mut(&key)
                {
                    e.phase = Phase::Running { again: false };
                    let since = e.since.take();
                    let now = self.clock.now();
                    let window = self.rerun_delay;
                    inner.started.retain(|_, t| *t + window > now);
                    inner.started.insert(key.clone(), now);
                    inner.keeping.retain(|k, until| *until > now && *k != key);
                    // More is ready: pass the wake-up on (a release wakes one worker each).
                    let more = !inner.rotation.is_empty();
                    drop(inner);
                    if more {
                        self.ready.notify_one();
                    }
                    return Claim { since, key };
                }
            }
            notified.await;
        }
    }

    /// Ends a claim.
    pub async fn finish(&self, claim: &Claim, outcome: Finish) -> Result<After, StoreError> {
        if self.shared.is_some() {
            return self.finish_shared(claim, outcome).await;
        }
        let key = &claim.key;
        let now = self.clock.now();
        // The durable mark to clear, decided under the lock and cleared after it.
        let clear = {
            let mut inner = self.inner.lock();
            inner.release_claim(&key.tenant);
            // The tenant may have been at its limit: its next calendar can go.
            self.ready.notify_one();
            let Some(entry) = inner.entries.get_mut(key) else { return Ok(After::Ended) };
            let again = matches!(entry.phase, Phase::Running { again: true });
            match outcome {
                // Only with a shared database.
                Finish::Elsewhere { .. } => None,
                Finish::Done | Finish::GiveUp if again => {
                    entry.phase = Phase::Queued;
                    let ready = inner.schedule(key, now, self.rerun_delay);
                    drop(inner);
                    self.wake(ready);
                    None
                }
                Finish::Done | Finish::GiveUp => {
                    let generation = entry.generation;
                    inner.entries.remove(key);
                    inner.shrink_if_idle();
                    (generation > 0).then_some(generation)
                }
                Finish::RetryAt(at) => {
                    entry.phase = Phase::Delayed;
                    inner.delayed.insert((at, key.clone()));
                    drop(inner);
                    self.delayed_changed.notify_one();
                    None
                }
            }
        };
        if let Some(generation) = clear {
            // Fails harmlessly if a notification marked it again meanwhile: that mark is
            // queued by its own `notify`.
            self.store.clear_dirty(&key.tenant, &key.user, generation).await?;
        }
        Ok(After::Ended)
    }

    /// `finish` on a shared database (module doc).
    async fn finish_shared(&self, claim: &Claim, outcome: Finish) -> Result<After, StoreError> {
        let key = &claim.key;
        let now = self.clock.now();
        let (read, bump) = {
            let mut inner = self.inner.lock();
            inner.release_claim(&key.tenant);
            self.ready.notify_one();
            let Some(entry) = inner.entries.get_mut(key) else { return Ok(After::Ended) };
            match outcome {
                Finish::RetryAt(at) => {
                    entry.phase = Phase::Delayed;
                    inner.delayed.insert((at, key.clone()));
                    drop(inner);
                    self.delayed_changed.notify_one();
                    return Ok(After::Again(Some(at)));
                }
                Finish::Elsewhere { held_for } => {
                    entry.synced = None;
                    let bump = entry.since_mark || matches!(entry.phase, Phase::Running { again: true });
                    // A mark still being written is no one's to cover yet: try once more.
                    if !bump && entry.elsewhere && entry.marking == 0 {
                        inner.entries.remove(key);
                        inner.shrink_if_idle();
                        return Ok(After::Ended);
                    }
                    // Once more when the holder's claim runs out (at the end of its settling
                    // window if it is done): it may have ended just before this replica's
                    // mark. Until then a holder sees every mark made before it ends, so there
                    // is nothing to ask it sooner — but no later than `ELSEWHERE_RECHECK`: a
                    // claim held for a rerun lasts a lease beyond it, and a holder whose rerun
                    // ends early lets it go then, while notifications that come here meanwhile
                    // wait for this entry (a waiting entry is not hurried by them).
                    entry.elsewhere = true;
                    entry.held = false;
                    entry.since_mark = false;
                    entry.phase = Phase::Delayed;
                    let held_for =
                        chrono::Duration::from_std(held_for.min(ELSEWHERE_RECHECK)).unwrap_or(self.rerun_delay);
                    let at = now + held_for.max(self.rerun_delay);
                    inner.delayed.insert((at, key.clone()));
                    (None, bump)
                }
                Finish::Done | Finish::GiveUp => {
                    let read = entry.read.take();
                    // Notifications here during the sync wrote no mark of their own (this one
                    // covered them): it stays until the rerun they asked for ends, so that rerun
                    // is neither lost in a crash nor skipped as covered.
                    let again = matches!(entry.phase, Phase::Running { again: true });
                    // In a busy spell the mark stays too, and this replica looks again when its
                    // promise ends, keeping the claim: notifications meanwhile, here or on
                    // another replica, rest on that mark (or on a newer generation another
                    // replica writes, for the sync that read this one), and nothing is written
                    // or cleared for the spell's syncs; a look that finds the generation this
                    // sync read, with nothing notified here, clears it and ends (`claimed`).
                    if entry.busy && entry.held && read.is_some() && matches!(outcome, Finish::Done) {
                        entry.busy = false;
                        entry.synced = if again { None } else { read };
                        entry.phase = Phase::Queued;
                        entry.since_mark = false;
                        entry.marked = true;
                        if let Some(g) = read {
                            entry.generation = entry.generation.max(g);
                        }
                        let ready = inner.schedule(key, now, self.rerun_delay);
                        let at = inner.next_read.get(key).copied().filter(|_| !ready);
                        drop(inner);
                        self.wake(ready);
                        return Ok(After::Again(at));
                    }
                    let clear = read.filter(|_| !again);
                    if clear.is_some() {
                        // The mark is cleared next, after this lock: a notification from now on
                        // cannot rest on it (it would be acknowledged on a mark about to go, and
                        // its rerun skipped as covered), so it writes one of its own.
                        entry.marked = false;
                    }
                    (clear, false)
                }
            }
        };
        if bump {
            let mark = self.mark(key).await;
            let mut inner = self.inner.lock();
            if let Some(e) = inner.entries.get_mut(key) {
                match &mark {
                    Ok(mark) => {
                        e.generation = e.generation.max(mark.generation);
                        e.marked = true;
                        e.covered_until = e.covered_until.max(mark.unread_until);
                    }
                    // Not written: the notifications still rest on a mark that may have been
                    // read, and the retry must not take the mark it finds for all of them.
                    Err(_) => e.since_mark = true,
                }
            }
            drop(inner);
            mark?;
        }
        if matches!(outcome, Finish::Elsewhere { .. }) {
            self.delayed_changed.notify_one();
            return Ok(After::Ended);
        }
        // A mark this sync did not cover (written after the claim, here or on another
        // replica): run again.
        #[cfg(test)]
        {
            let pause = self.pause_before_clear.lock().take();
            if let Some(pause) = pause {
                let _ = pause.await;
            }
        }
        let remaining = self.store.clear_dirty_then_pending(&key.tenant, &key.user, read).await;
        let remaining = match remaining {
            Ok(remaining) => remaining,
            Err(e) => {
                // The entry is not left running (nothing would take it again): it syncs again
                // shortly, without trusting a claim it may no longer hold.
                let mut inner = self.inner.lock();
                if let Some(entry) = inner.entries.get_mut(key) {
                    entry.phase = Phase::Delayed;
                    entry.held = false;
                    let at = now + chrono::Duration::seconds(5);
                    inner.delayed.insert((at, key.clone()));
                    drop(inner);
                    self.delayed_changed.notify_one();
                }
                return Err(e);
            }
        };
        let mut inner = self.inner.lock();
        let Some(entry) = inner.entries.get_mut(key) else { return Ok(After::Ended) };
        let again = matches!(entry.phase, Phase::Running { again: true });
        tracing::debug!(tenant = %key.tenant, user = %key.user, ?read, ?remaining, again, "sync ended");
        if !again && remaining.is_none() {
            let held = inner.entries.remove(key).is_some_and(|e| e.held);
            let settled = inner.started.get(key).map(|t| *t + self.rerun_delay);
            if let Some(until) = settled.max(inner.next_read.get(key).copied()).filter(|u| held && *u > now) {
                inner.keeping.insert(key.clone(), until);
            }
            inner.shrink_if_idle();
            return Ok(After::Ended);
        }
        entry.phase = Phase::Queued;
        entry.since_mark = false;
        // Only a mark that is there stands for the rerun's notifications (the clear may have
        // taken the one this entry stood for).
        entry.marked = remaining.is_some();
        if let Some(g) = remaining {
            entry.generation = g;
        }
        let ready = inner.schedule(key, now, self.rerun_delay);
        drop(inner);
        self.wake(ready);
        Ok(After::Again((!ready).then(|| now + self.rerun_delay)))
    }

    /// Drops a calendar (its user was deleted). A claim in flight still ends with `finish`.
    /// When the calendar's last verified notification arrived.
    pub fn last_notification(&self, key: &CalendarKey) -> Option<DateTime<Utc>> {
        self.inner.lock().notified.get(key).copied()
    }

    pub fn forget(&self, key: &CalendarKey) {
        let mut inner = self.inner.lock();
        inner.entries.remove(key);
        inner.notified.remove(key);
        inner.last_read.remove(key);
        inner.next_read.remove(key);
        inner.keeping.remove(key);
        inner.resting.remove(key);
        inner.delayed.retain(|(_, k)| k != key);
    }

    /// Drops every calendar of a tenant (it was deleted).
    pub fn forget_tenant(&self, tenant: &str) {
        let mut inner = self.inner.lock();
        inner.entries.retain(|k, _| k.tenant != tenant);
        inner.notified.retain(|k, _| k.tenant != tenant);
        inner.last_read.retain(|k, _| k.tenant != tenant);
        inner.next_read.retain(|k, _| k.tenant != tenant);
        inner.keeping.retain(|k, _| k.tenant != tenant);
        inner.resting.retain(|k, _| k.tenant != tenant);
        inner.delayed.retain(|(_, k)| k.tenant != tenant);
        inner.ready.remove(tenant);
        inner.rotation.retain(|t| t != tenant);
    }

    /// Makes a tenant's waiting calendars ready now (its token endpoint answers again).
    pub fn release_tenant(&self, tenant: &str) -> usize {
        let mut inner = self.inner.lock();
        let waiting: Vec<(DateTime<Utc>, CalendarKey)> =
            inner.delayed.iter().filter(|(_, k)| k.tenant == tenant).cloned().collect();
        for item in &waiting {
            inner.delayed.remove(item);
        }
        self.requeue(inner, waiting.into_iter().map(|(_, k)| k))
    }

    /// Makes the given calendars (taken out of `delayed`) ready again if they still wait, and
    /// wakes the dispatcher; how many.
    fn requeue(
        &self,
        mut inner: parking_lot::MutexGuard<'_, Inner>,
        keys: impl IntoIterator<Item = CalendarKey>,
    ) -> usize {
        let mut released = 0;
        for key in keys {
            if let Some(e) = inner.entries.get_mut(&key)
                && e.phase == Phase::Delayed
            {
                e.phase = Phase::Queued;
                inner.push_ready(key);
                released += 1;
            }
        }
        drop(inner);
        // One worker for each (a worker that finds its tenant at its limit waits for the next
        // `finish`): waking every worker for each release would have them all contend for the
        // lock the acknowledgements take, many times a second in a busy spell.
        for _ in 0..released {
            self.ready.notify_one();
        }
        released
    }

    /// When the next delayed calendar is due.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.inner.lock().delayed.first().map(|(t, _)| *t)
    }

    /// Moves delayed calendars due by `now` back to the ready queue.
    pub fn release_due(&self, now: DateTime<Utc>) -> usize {
        let mut inner = self.inner.lock();
        let mut due = Vec::new();
        while inner.delayed.first().is_some_and(|(t, _)| *t <= now) {
            if let Some((_, key)) = inner.delayed.pop_first() {
                due.push(key);
            }
        }
        self.requeue(inner, due)
    }

    /// Resolves when the delayed set changes (a new retry was scheduled).
    pub async fn delayed_changed(&self) {
        self.delayed_changed.notified().await;
    }

    /// The settling window: a calendar starts syncing at most once per this.
    pub fn rerun_delay(&self) -> std::time::Duration {
        self.rerun_delay.to_std().unwrap_or_default()
    }

    /// What is left of the calendar's settling window (a `rerun_delay` from its last start
    /// here), or of the promise its last read here made, whichever ends later; zero once both
    /// are over.
    pub fn settling_left(&self, key: &CalendarKey) -> std::time::Duration {
        let inner = self.inner.lock();
        let settled = inner.started.get(key).map(|t| *t + self.rerun_delay);
        let until = settled.max(inner.next_read.get(key).copied());
        until.and_then(|t| (t - self.clock.now()).to_std().ok()).unwrap_or_default()
    }

    /// The phase of a calendar, for the user's status.
    pub fn phase(&self, key: &CalendarKey) -> Option<&'static str> {
        self.inner.lock().entries.get(key).map(|e| match e.phase {
            Phase::Queued => "queued",
            Phase::Delayed => "waiting",
            Phase::Running { .. } => "syncing",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled_store::SledStore;
    use tokio_util::sync::CancellationToken;

    /// What a sync on another replica reads (no settling window: these tests read at will).
    async fn read(store: &SharedStore) -> Option<u64> {
        match store.read_dirty("t", "u@x", std::time::Duration::ZERO, std::time::Duration::ZERO).await.unwrap() {
            crate::store::MarkRead::Read(g) => g,
            other => panic!("{other:?}"),
        }
    }

    fn queue() -> (SyncQueue, SharedStore, tempfile::TempDir, CancellationToken) {
        queue_on(Clock::system())
    }

    /// A replica's queue on a shared database, every live replica recording its reads.
    fn shared_queue() -> (SyncQueue, SharedStore, tempfile::TempDir, CancellationToken) {
        let (q, store, dir, stop) = queue();
        (q.shared(Arc::new(AtomicBool::new(true))), store, dir, stop)
    }

    fn queue_on(clock: Clock) -> (SyncQueue, SharedStore, tempfile::TempDir, CancellationToken) {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore = Arc::new(SledStore::open(dir.path(), 8).unwrap());
        let stop = CancellationToken::new();
        let flush = GroupFlush::start(store.clone(), stop.clone());
        (SyncQueue::new(store.clone(), flush, std::time::Duration::from_millis(250), 4, clock), store, dir, stop)
    }

    #[tokio::test]
    async fn a_burst_costs_one_sync_and_one_more_if_it_lands_mid_sync() {
        let (q, store, _dir, _stop) = queue();
        let k = CalendarKey::new("t", "u@x");
        for _ in 0..100 {
            q.notify(&k).await.unwrap();
        }
        assert_eq!(store.dirty_calendars().await.unwrap().len(), 1);
        let claim = q.take().await;
        // Notifications during the sync ask for exactly one more.
        for _ in 0..10 {
            q.notify(&k).await.unwrap();
        }
        q.finish(&claim, Finish::Done).await.unwrap();
        let now = Utc::now();
        assert_eq!(q.release_due(now), 0, "the rerun waits for the burst to settle");
        assert_eq!(q.release_due(now + chrono::Duration::milliseconds(250)), 1);
        let second = q.take().await;
        q.finish(&second, Finish::Done).await.unwrap();
        assert!(!q.contains(&k));
        assert!(store.dirty_calendars().await.unwrap().is_empty(), "the mark is cleared when the last sync covered it");
    }

    #[tokio::test]
    async fn marks_survive_a_restart_and_failures_wait_their_turn() {
        let (q, store, _dir, stop) = queue();
        let k = CalendarKey::new("t", "u@x");
        q.notify(&k).await.unwrap();
        let flush = GroupFlush::start(store.clone(), stop.clone());
        let restarted = SyncQueue::new(store.clone(), flush, std::time::Duration::from_millis(250), 4, Clock::system());
        assert_eq!(restarted.load_marks().await.unwrap(), 1);
        let claim = restarted.take().await;
        let later = Utc::now() + chrono::Duration::minutes(5);
        restarted.finish(&claim, Finish::RetryAt(later)).await.unwrap();
        assert_eq!(restarted.release_due(Utc::now()), 0);
        assert_eq!(restarted.next_due(), Some(later));
        assert_eq!(restarted.release_due(later), 1);
        let claim = restarted.take().await;
        restarted.finish(&claim, Finish::Done).await.unwrap();
        assert!(store.dirty_calendars().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn across_replicas_a_calendar_held_elsewhere_keeps_its_mark_for_the_holder() {
        let (q, store, _dir, _stop) = shared_queue();
        let k = CalendarKey::new("t", "u@x");
        // This replica's notification, but another replica holds the calendar.
        q.notify(&k).await.unwrap();
        let claim = q.take().await;
        let after = q.finish(&claim, Finish::Elsewhere { held_for: std::time::Duration::ZERO }).await.unwrap();
        assert_eq!(after, After::Ended, "no claim of its own to keep");
        let marks = store.dirty_calendars().await.unwrap();
        assert_eq!(marks.len(), 1, "the mark stays for the holder");
        // While held elsewhere a notification rests on the pending mark while no sync has read
        // it …
        q.notify(&k).await.unwrap();
        assert_eq!(store.dirty_generation("t", "u@x").await.unwrap(), Some(marks[0].2), "coalesced: nothing written");
        // … and marks anew once the holder's sync has read it (that sync may miss its change).
        assert_eq!(read(&store).await, Some(marks[0].2));
        q.notify(&k).await.unwrap();
        let newer = store.dirty_generation("t", "u@x").await.unwrap();
        assert!(newer > Some(marks[0].2), "{newer:?} after {marks:?}");
        // With a replica of an older build alive (it records no reads), every notification
        // marks anew.
        let coalescing = Arc::new(AtomicBool::new(false));
        let (old, old_store, _old_dir, _old_stop) = queue();
        let old = old.shared(coalescing.clone());
        old.notify(&k).await.unwrap();
        old.notify(&k).await.unwrap();
        assert_eq!(old_store.dirty_generation("t", "u@x").await.unwrap(), Some(2), "each notification marked");
        coalescing.store(true, Ordering::Relaxed);
        old.notify(&k).await.unwrap();
        assert_eq!(old_store.dirty_generation("t", "u@x").await.unwrap(), Some(2), "coalesced once all record reads");
        // The holder synced and cleared it: the retry here calls no Google API.
        assert!(store.clear_dirty("t", "u@x", newer.unwrap()).await.unwrap());
        assert_eq!(q.release_due(Utc::now() + chrono::Duration::seconds(1)), 1);
        let retry = q.take().await;
        assert!(q.claimed(&k, None), "covered by the holder's sync: skipped");
        assert_eq!(q.finish(&retry, Finish::Done).await.unwrap(), After::Ended);
        assert!(!q.contains(&k));
    }

    #[tokio::test]
    async fn across_replicas_the_holder_clears_only_what_it_read_and_runs_again_for_newer_marks() {
        let (q, store, _dir, _stop) = shared_queue();
        let k = CalendarKey::new("t", "u@x");
        q.notify(&k).await.unwrap();
        let claim = q.take().await;
        let seen = read(&store).await;
        assert!(!q.claimed(&k, seen), "a mark to cover: it syncs");
        // Another replica's notification lands during the sync.
        store.mark_dirty("t", "u@x").await.unwrap();
        let after = q.finish(&claim, Finish::Done).await.unwrap();
        assert!(matches!(after, After::Again(_)), "it runs again and keeps its claim: {after:?}");
        assert_eq!(store.dirty_calendars().await.unwrap().len(), 1, "the newer mark survived");
        assert_eq!(q.release_due(Utc::now() + chrono::Duration::seconds(1)), 1);
        let again = q.take().await;
        let seen = read(&store).await;
        assert!(!q.claimed(&k, seen));
        assert_eq!(q.finish(&again, Finish::Done).await.unwrap(), After::Ended);
        assert!(store.dirty_calendars().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn across_replicas_notifications_during_the_holders_sync_keep_its_mark_for_the_rerun() {
        let (q, store, _dir, _stop) = shared_queue();
        let k = CalendarKey::new("t", "u@x");
        q.notify(&k).await.unwrap();
        let claim = q.take().await;
        let seen = read(&store).await;
        assert!(!q.claimed(&k, seen));
        // A notification here during the sync: the held mark covers it, it writes none.
        q.notify(&k).await.unwrap();
        assert_eq!(store.dirty_generation("t", "u@x").await.unwrap(), seen);
        let after = q.finish(&claim, Finish::Done).await.unwrap();
        assert!(matches!(after, After::Again(_)), "it runs again: {after:?}");
        assert_eq!(store.dirty_generation("t", "u@x").await.unwrap(), seen, "the mark stays for the rerun");
        assert_eq!(q.release_due(Utc::now() + chrono::Duration::seconds(1)), 1);
        let again = q.take().await;
        let seen = read(&store).await;
        assert!(!q.claimed(&k, seen), "the rerun syncs: the notification came after the first sync read its mark");
        assert_eq!(q.finish(&again, Finish::Done).await.unwrap(), After::Ended);
        assert!(store.dirty_calendars().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn across_replicas_a_notification_trusts_a_mark_no_sync_may_read_yet_without_asking() {
        let (q, store, _dir, _stop) = shared_queue();
        let k = CalendarKey::new("t", "u@x");
        q.notify(&k).await.unwrap();
        let claim = q.take().await;
        q.finish(&claim, Finish::Elsewhere { held_for: std::time::Duration::ZERO }).await.unwrap();
        // The holder's sync reads the mark, and no sync may read it again for a minute.
        let minute = std::time::Duration::from_secs(60);
        assert_eq!(
            store.read_dirty("t", "u@x", minute, std::time::Duration::ZERO).await.unwrap(),
            crate::store::MarkRead::Read(Some(1))
        );
        // A notification here asks the store, which writes a newer mark …
        q.notify(&k).await.unwrap();
        assert_eq!(store.dirty_generation("t", "u@x").await.unwrap(), Some(2), "asked: a newer mark");
        // … and the next one trusts it: nobody can read it before the minute is over. (The mark
        // is taken away by hand to see whether the notification asks.)
        assert!(store.clear_dirty("t", "u@x", 2).await.unwrap());
        q.notify(&k).await.unwrap();
        assert!(store.dirty_calendars().await.unwrap().is_empty(), "answered from memory");
    }

    #[tokio::test]
    async fn across_replicas_the_holder_trusts_its_own_mark_while_it_keeps_the_claim_after_its_run() {
        let clock = Clock::system();
        let (q, store, _dir, _stop) = queue_on(clock.clone());
        let q = q.shared(Arc::new(AtomicBool::new(true)));
        let k = CalendarKey::new("t", "u@x");
        q.notify(&k).await.unwrap();
        let claim = q.take().await;
        assert!(!q.claimed(&k, read(&store).await));
        assert_eq!(q.finish(&claim, Finish::Done).await.unwrap(), After::Ended);
        assert!(store.dirty_calendars().await.unwrap().is_empty());
        // It keeps the claim for the rest of its settling window: a new notification writes a
        // mark once, and the next rests on it. (Taken away by hand to see whether it asks.)
        q.notify(&k).await.unwrap();
        let mark = store.dirty_generation("t", "u@x").await.unwrap().expect("the first notification marks");
        assert!(store.clear_dirty("t", "u@x", mark).await.unwrap());
        q.notify(&k).await.unwrap();
        assert!(store.dirty_calendars().await.unwrap().is_empty(), "trusted: no other replica can have read it");
        // Once the window is over the claim is not its own any more: it asks again.
        clock.advance(std::time::Duration::from_millis(300));
        q.notify(&k).await.unwrap();
        assert_eq!(store.dirty_calendars().await.unwrap().len(), 1, "asked: a mark again");
    }

    #[tokio::test]
    async fn across_replicas_a_notification_whose_entry_ended_meanwhile_leaves_the_mark_it_rested_on() {
        let (q, store, _dir, _stop) = shared_queue();
        let k = CalendarKey::new("t", "u@x");
        // A notification here starts writing its mark; the calendar's entry ends meanwhile
        // (here: forgotten, as when a sync here ends before the write), and a notification on
        // another replica is answered, resting on the same unread mark.
        let mut here = std::pin::pin!(q.notify(&k));
        assert!(futures_util::poll!(&mut here).is_pending(), "the mark is being written");
        q.forget(&k);
        let elsewhere = store.mark_unread("t", "u@x").await.unwrap();
        here.await.unwrap();
        // That mark is the other replica's promise too: it must be synced, not cleared.
        assert_eq!(store.dirty_generation("t", "u@x").await.unwrap(), Some(elsewhere.generation));
        assert!(q.contains(&k), "queued again for a sync");
        let claim = q.take().await;
        assert!(!q.claimed(&k, read(&store).await), "it syncs");
        assert_eq!(q.finish(&claim, Finish::Done).await.unwrap(), After::Ended);
        assert!(store.dirty_calendars().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn across_replicas_a_holder_whose_claim_ran_out_asks_again() {
        let (q, store, _dir, _stop) = shared_queue();
        let k = CalendarKey::new("t", "u@x");
        q.notify(&k).await.unwrap();
        let claim = q.take().await;
        assert!(!q.claimed(&k, read(&store).await));
        // Held: a notification during the sync rests on the held mark.
        q.notify(&k).await.unwrap();
        assert_eq!(store.dirty_generation("t", "u@x").await.unwrap(), Some(1), "rested on the held mark");
        // The claim runs out mid-sync: another replica may have read the mark since.
        q.claim_lost(&k);
        q.notify(&k).await.unwrap();
        assert_eq!(store.dirty_generation("t", "u@x").await.unwrap(), Some(2), "asked: a newer mark");
        q.finish(&claim, Finish::Done).await.unwrap();
    }

    #[tokio::test]
    async fn across_replicas_a_notification_while_the_holder_clears_what_it_read_is_synced_again() {
        let (q, store, _dir, _stop) = shared_queue();
        let k = CalendarKey::new("t", "u@x");
        q.notify(&k).await.unwrap();
        let claim = q.take().await;
        assert!(!q.claimed(&k, read(&store).await));
        // The sync is done and about to clear the mark it read, when a notification arrives
        // here: its change may have come after the sync's list.
        let (resume, pause) = tokio::sync::oneshot::channel();
        *q.pause_before_clear.lock() = Some(pause);
        let mut finishing = std::pin::pin!(q.finish(&claim, Finish::Done));
        assert!(futures_util::poll!(&mut finishing).is_pending(), "paused before the clear");
        q.notify(&k).await.unwrap();
        resume.send(()).unwrap();
        let after = finishing.await.unwrap();
        assert!(matches!(after, After::Again(_)), "it runs again: {after:?}");
        let marks = store.dirty_calendars().await.unwrap();
        assert_eq!(marks.len(), 1, "the notification is acknowledged on a mark the clear did not take");
        assert_eq!(q.release_due(Utc::now() + chrono::Duration::seconds(1)), 1);
        let again = q.take().await;
        let seen = read(&store).await;
        assert_eq!(seen, Some(marks[0].2));
        assert!(!q.claimed(&k, seen), "the rerun syncs, not skipped as covered");
        assert_eq!(q.finish(&again, Finish::Done).await.unwrap(), After::Ended);
        assert!(store.dirty_calendars().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn across_replicas_a_notification_after_a_read_that_found_no_mark_writes_one() {
        let (q, store, _dir, _stop) = shared_queue();
        let k = CalendarKey::new("t", "u@x");
        // This replica's notification finds the calendar held elsewhere; the holder's sync
        // covers and clears the mark.
        q.notify(&k).await.unwrap();
        let claim = q.take().await;
        q.finish(&claim, Finish::Elsewhere { held_for: std::time::Duration::ZERO }).await.unwrap();
        let generation = read(&store).await.expect("the mark");
        assert!(store.clear_dirty("t", "u@x", generation).await.unwrap());
        // The retry here finds no mark: covered, skipped.
        assert_eq!(q.release_due(Utc::now() + chrono::Duration::seconds(1)), 1);
        let retry = q.take().await;
        assert!(q.claimed(&k, read(&store).await), "covered by the holder's sync: skipped");
        // A notification before the retry ends must not rest on the mark that is gone.
        q.notify(&k).await.unwrap();
        assert!(store.dirty_generation("t", "u@x").await.unwrap().is_some(), "acknowledged on a mark of its own");
        assert!(matches!(q.finish(&retry, Finish::Done).await.unwrap(), After::Again(_)));
        assert_eq!(q.release_due(Utc::now() + chrono::Duration::seconds(1)), 1);
        let again = q.take().await;
        let seen = read(&store).await;
        assert!(seen.is_some());
        assert!(!q.claimed(&k, seen), "the rerun syncs the notification's change");
        assert_eq!(q.finish(&again, Finish::Done).await.unwrap(), After::Ended);
        assert!(store.dirty_calendars().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn across_replicas_a_busy_spell_promises_twice_its_cycle_keeps_its_mark_and_ends_with_a_look_that_finds_nothing()
     {
        let clock = Clock::system();
        let (q, store, _dir, _stop) = queue_on(clock.clone());
        let q = q.shared(Arc::new(AtomicBool::new(true)));
        let k = CalendarKey::new("t", "u@x");
        let settling = std::time::Duration::from_millis(225);
        let ms = std::time::Duration::from_millis;
        q.notify(&k).await.unwrap();
        let claim = q.take().await;
        assert_eq!(q.read_promise(&k, settling).spacing, settling, "a first sync: the settling window");
        assert!(!q.claimed(&k, read(&store).await));
        // Notifications keep coming during the sync: it runs again.
        q.notify(&k).await.unwrap();
        assert!(matches!(q.finish(&claim, Finish::Done).await.unwrap(), After::Again(_)));
        // Its rerun comes 800 ms after the read (the replica was busy): it promises up to twice
        // that (a fifth less at random, so calendars busy together drift apart).
        clock.advance(ms(800));
        assert_eq!(q.release_due(clock.now()), 1);
        let rerun = q.take().await;
        let promise = q.read_promise(&k, settling).spacing;
        assert!(promise >= ms(1280) && promise <= ms(1600), "{promise:?}");
        let fetched = read(&store).await;
        assert!(!q.claimed(&k, fetched));
        // Nothing more was notified during it, but in a busy spell the mark stays and the
        // calendar is looked at again when the promise ends — not before, and without a worker
        // waiting for it meanwhile.
        let Ok(After::Again(Some(at))) = q.finish(&rerun, Finish::Done).await else { panic!("kept for a look") };
        let looks_in = (at - clock.now()).to_std().unwrap_or_default();
        assert!(looks_in > promise - ms(100) && looks_in <= promise, "{looks_in:?} for {promise:?}");
        assert_eq!(store.dirty_calendars().await.unwrap().len(), 1, "the mark stays");
        assert_eq!(q.release_due(clock.now()), 0, "not before the promise ends");
        // Another replica is notified meanwhile: it writes a newer generation (the kept one was
        // read), and the look syncs it.
        let newer = store.mark_unread("t", "u@x").await.unwrap();
        assert!(!newer.created, "the kept mark is there: the other replica leaves it to this one");
        assert!(Some(newer.generation) > fetched);
        clock.advance(promise + ms(1)); // the clock counts whole milliseconds
        assert_eq!(q.release_due(clock.now()), 1);
        let look = q.take().await;
        let longer = q.read_promise(&k, settling).spacing;
        assert!(longer >= ms(1600) && longer <= ms(2000), "at most two seconds: {longer:?}");
        let fetched = read(&store).await;
        assert_eq!(fetched, Some(newer.generation));
        assert!(!q.claimed(&k, fetched), "something new: it syncs");
        assert!(matches!(q.finish(&look, Finish::Done).await.unwrap(), After::Again(Some(_))));
        // The next look finds the very generation that sync fetched after, and nothing was
        // notified here: the spell is over, with no Google call, and the mark is cleared.
        clock.advance(longer + ms(1));
        assert_eq!(q.release_due(clock.now()), 1);
        let last = q.take().await;
        q.read_promise(&k, settling);
        assert!(q.claimed(&k, read(&store).await), "nothing new: skipped");
        assert_eq!(q.finish(&last, Finish::Done).await.unwrap(), After::Ended);
        assert!(store.dirty_calendars().await.unwrap().is_empty());
        // A sync after a quiet spell promises the settling window again.
        clock.advance(BUSY_CYCLE + ms(1000));
        q.notify(&k).await.unwrap();
        let fresh = q.take().await;
        assert_eq!(q.read_promise(&k, settling).spacing, settling);
        q.finish(&fresh, Finish::Done).await.unwrap();
    }

    /// A shared queue whose calendar `t`/`u@x` synced twice in a row (a busy spell) and now keeps
    /// its mark for a look when the promise ends: the promise, and the generation that sync read.
    async fn kept_busy_spell(
        clock: &Clock,
    ) -> (SyncQueue, SharedStore, tempfile::TempDir, CancellationToken, std::time::Duration, Option<u64>) {
        let (q, store, dir, stop) = queue_on(clock.clone());
        let q = q.shared(Arc::new(AtomicBool::new(true)));
        let k = CalendarKey::new("t", "u@x");
        let settling = std::time::Duration::from_millis(225);
        q.notify(&k).await.unwrap();
        let first = q.take().await;
        q.read_promise(&k, settling);
        assert!(!q.claimed(&k, read(&store).await));
        q.notify(&k).await.unwrap();
        q.finish(&first, Finish::Done).await.unwrap();
        clock.advance(std::time::Duration::from_millis(300));
        assert_eq!(q.release_due(clock.now()), 1);
        let busy = q.take().await;
        let promise = q.read_promise(&k, settling).spacing;
        let fetched = read(&store).await;
        assert!(!q.claimed(&k, fetched));
        assert!(matches!(q.finish(&busy, Finish::Done).await.unwrap(), After::Again(Some(_))));
        (q, store, dir, stop, promise, fetched)
    }

    /// The clock moved `by` (plus a millisecond: it counts whole ones): the one calendar waiting
    /// in `delayed` comes due and is claimed.
    async fn claim_after(q: &SyncQueue, clock: &Clock, by: std::time::Duration) -> Claim {
        clock.advance(by + std::time::Duration::from_millis(1));
        assert_eq!(q.release_due(clock.now()), 1);
        q.take().await
    }

    /// What a sync reads on its terms (no settling window: these tests read at will).
    async fn read_on(store: &SharedStore, terms: ReadTerms) -> Option<u64> {
        match store.read_dirty("t", "u@x", std::time::Duration::ZERO, terms.busy_for).await.unwrap() {
            crate::store::MarkRead::Read(g) => g,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn across_replicas_notifications_elsewhere_rest_on_the_mark_a_busy_spell_makes_ahead_and_ask_once_a_horizon()
    {
        let clock = Clock::system();
        let (holder, store, _dir, stop) = queue_on(clock.clone());
        let holder = holder.shared(Arc::new(AtomicBool::new(true)));
        let flush = GroupFlush::start(store.clone(), stop.clone());
        let other = SyncQueue::new(store.clone(), flush, std::time::Duration::from_millis(250), 4, clock.clone())
            .shared(Arc::new(AtomicBool::new(true)));
        let k = CalendarKey::new("t", "u@x");
        let settling = std::time::Duration::from_millis(225);
        holder.notify(&k).await.unwrap();
        let first = holder.take().await;
        let terms = holder.read_promise(&k, settling);
        assert_eq!(terms.busy_for, std::time::Duration::ZERO, "a first sync is no spell");
        assert_eq!(read_on(&store, terms).await, Some(1));
        assert!(!holder.claimed(&k, Some(1)));
        // Notified here during the sync: it runs again, back to back, and is busy.
        holder.notify(&k).await.unwrap();
        holder.finish(&first, Finish::Done).await.unwrap();
        clock.advance(std::time::Duration::from_millis(300));
        assert_eq!(holder.release_due(clock.now()), 1);
        let young = holder.take().await;
        let terms = holder.read_promise(&k, settling);
        assert_eq!(terms.busy_for, std::time::Duration::ZERO, "a spell's second read may be a burst's: no horizon");
        assert_eq!(read_on(&store, terms).await, Some(1));
        assert_eq!(store.dirty_generation("t", "u@x").await.unwrap(), Some(1), "nothing made ahead");
        assert!(!holder.claimed(&k, Some(1)));
        // One notification here is no storm: the third read moves nothing with it …
        holder.notify(&k).await.unwrap();
        assert!(matches!(holder.finish(&young, Finish::Done).await.unwrap(), After::Again(Some(_))));
        let calm = claim_after(&holder, &clock, terms.spacing).await;
        let terms = holder.read_promise(&k, settling);
        assert_eq!(terms.busy_for, std::time::Duration::ZERO, "a single notification since the last read");
        assert_eq!(read_on(&store, terms).await, Some(1));
        assert!(!holder.claimed(&k, Some(1)));
        // … notifications that keep coming here are: the next read moves the horizon on.
        for _ in 0..HORIZON_NOTIFICATIONS {
            holder.notify(&k).await.unwrap();
        }
        assert!(matches!(holder.finish(&calm, Finish::Done).await.unwrap(), After::Again(Some(_))));
        let busy = claim_after(&holder, &clock, terms.spacing).await;
        let terms = holder.read_promise(&k, settling);
        assert_eq!(terms.busy_for, BUSY_HORIZON, "a read back to back, a storm's notifications here since the last");
        assert_eq!(read_on(&store, terms).await, Some(1));
        assert_eq!(store.dirty_generation("t", "u@x").await.unwrap(), Some(2), "the next mark made with the read");
        assert!(!holder.claimed(&k, Some(1)));
        // The other replica's notification rests on it: nothing written, nothing queued there.
        other.notify(&k).await.unwrap();
        assert_eq!(store.dirty_generation("t", "u@x").await.unwrap(), Some(2));
        assert!(!other.contains(&k));
        assert!(matches!(holder.finish(&busy, Finish::Done).await.unwrap(), After::Again(Some(_))));
        // The holder looks again when its promise ends: it reads the mark made ahead (so it
        // syncs), and, still within the horizon, makes the next one; nothing was notified here
        // since, so it does not move the horizon on.
        let look = claim_after(&holder, &clock, terms.spacing).await;
        let terms = holder.read_promise(&k, settling);
        assert_eq!(terms.busy_for, std::time::Duration::ZERO, "nothing notified here since");
        assert_eq!(read_on(&store, terms).await, Some(2));
        assert!(!holder.claimed(&k, Some(2)), "the mark made ahead: it syncs");
        assert_eq!(store.dirty_generation("t", "u@x").await.unwrap(), Some(3));
        // A notification on the other replica after that read still does not ask the store:
        // its mark is unread until the horizon, whoever reads meanwhile. (The mark is taken
        // away by hand to see whether it asks; had it asked, it would have written one.)
        assert!(store.clear_dirty("t", "u@x", 3).await.unwrap());
        other.notify(&k).await.unwrap();
        assert!(store.dirty_calendars().await.unwrap().is_empty(), "answered from memory");
        holder.finish(&look, Finish::Done).await.unwrap();
    }

    #[tokio::test]
    async fn across_replicas_a_busy_spell_syncs_again_for_a_notification_here_while_its_mark_is_kept() {
        let clock = Clock::system();
        let (q, store, _dir, _stop, promise, fetched) = kept_busy_spell(&clock).await;
        let (k, settling) = (CalendarKey::new("t", "u@x"), std::time::Duration::from_millis(225));
        // A notification here rests on the kept mark (nothing written) and is not skipped.
        q.notify(&k).await.unwrap();
        let look = claim_after(&q, &clock, promise).await;
        q.read_promise(&k, settling);
        let again = read(&store).await;
        assert_eq!(again, fetched, "no new generation: the notification rested on the kept mark");
        assert!(!q.claimed(&k, again), "it was notified here since the last fetch: it syncs");
        q.finish(&look, Finish::Done).await.unwrap();
    }

    #[tokio::test]
    async fn across_replicas_a_look_whose_claim_was_taken_anew_syncs_even_if_the_generation_is_the_same() {
        let clock = Clock::system();
        let (q, store, _dir, _stop, promise, fetched) = kept_busy_spell(&clock).await;
        let (k, settling) = (CalendarKey::new("t", "u@x"), std::time::Duration::from_millis(225));
        // The claim lapsed meanwhile and had to be taken anew: another replica may have synced
        // and cleared the mark, and a new one started again at the same generation.
        let look = claim_after(&q, &clock, promise).await;
        q.claim_renewed(&k);
        q.read_promise(&k, settling);
        let again = read(&store).await;
        assert_eq!(again, fetched);
        assert!(!q.claimed(&k, again), "not trusted to be the one it synced: it syncs");
        q.finish(&look, Finish::Done).await.unwrap();
    }

    #[tokio::test]
    async fn across_replicas_a_notification_while_waiting_for_the_holder_keeps_the_retry_going() {
        let (q, store, _dir, _stop) = shared_queue();
        let k = CalendarKey::new("t", "u@x");
        q.notify(&k).await.unwrap();
        let claim = q.take().await;
        q.finish(&claim, Finish::Elsewhere { held_for: std::time::Duration::ZERO }).await.unwrap();
        // The holder has read and cleared this replica's mark, and keeps its claim for the rest
        // of its window without running again; a notification lands here meanwhile and has to
        // make a new mark.
        let seen = read(&store).await.expect("the mark");
        store.clear_dirty("t", "u@x", seen).await.unwrap();
        q.notify(&k).await.unwrap();
        assert_eq!(q.release_due(Utc::now() + chrono::Duration::seconds(1)), 1);
        let retry = q.take().await;
        q.finish(&retry, Finish::Elsewhere { held_for: std::time::Duration::ZERO }).await.unwrap();
        assert!(q.contains(&k), "refused again, it tries once more after the holder's window");
        assert_eq!(q.release_due(Utc::now() + chrono::Duration::seconds(1)), 1);
    }

    #[tokio::test]
    async fn across_replicas_a_notification_resting_on_a_mark_another_sync_covers_asks_for_no_claim() {
        let (q, store, _dir, _stop) = shared_queue();
        let k = CalendarKey::new("t", "u@x");
        // Another replica holds the calendar and has read its mark (its clear of that
        // generation will fail on a newer one, and it will run again).
        let other = store.mark_unread("t", "u@x").await.unwrap();
        assert!(other.created);
        assert_eq!(read(&store).await, Some(other.generation));
        // Notifications here make sure of an unread mark and leave the sync to that replica.
        q.notify(&k).await.unwrap();
        q.notify(&k).await.unwrap();
        assert!(!q.contains(&k), "nothing queued here, no claim asked for");
        assert!(q.next_due().is_none());
        let pending = store.dirty_generation("t", "u@x").await.unwrap();
        assert!(pending > Some(other.generation), "a newer generation for the holder's rerun");
        // A calendar with no mark at all is this replica's to sync.
        let fresh = CalendarKey::new("t", "v@x");
        q.notify(&fresh).await.unwrap();
        assert!(q.contains(&fresh));
    }

    #[tokio::test]
    async fn across_replicas_a_waiting_replica_whose_notification_rests_on_a_mark_that_was_there_lets_it_go() {
        let (q, _store, _dir, _stop) = shared_queue();
        let k = CalendarKey::new("t", "u@x");
        q.notify(&k).await.unwrap();
        let claim = q.take().await;
        q.finish(&claim, Finish::Elsewhere { held_for: std::time::Duration::ZERO }).await.unwrap();
        // Its own mark is still unread: the holder reads it in its next sync.
        q.notify(&k).await.unwrap();
        assert_eq!(q.release_due(Utc::now() + chrono::Duration::seconds(1)), 1);
        let retry = q.take().await;
        q.finish(&retry, Finish::Elsewhere { held_for: std::time::Duration::ZERO }).await.unwrap();
        assert!(!q.contains(&k), "refused twice with nothing of its own to cover: no more claims");
    }

    #[tokio::test]
    async fn across_replicas_a_calendar_held_elsewhere_for_a_long_lease_is_tried_again_within_three_seconds() {
        let (q, _store, _dir, _stop) = shared_queue();
        let k = CalendarKey::new("t", "u@x");
        q.notify(&k).await.unwrap();
        let claim = q.take().await;
        // The holder keeps its claim a lease beyond its rerun (30 s), but may end early and let
        // it go: a notification here meanwhile must not wait out the whole lease.
        let lease = std::time::Duration::from_secs(30);
        assert_eq!(q.finish(&claim, Finish::Elsewhere { held_for: lease }).await.unwrap(), After::Ended);
        let due = q.next_due().expect("tried again");
        let wait = (due - Utc::now()).to_std().unwrap_or_default();
        assert!(wait <= ELSEWHERE_RECHECK && wait > std::time::Duration::from_millis(2500), "{wait:?}");
        // Longer than a holder keeps its claim after a busy spell: the retry finds it let go.
        assert!(ELSEWHERE_RECHECK > BUSY_PROMISE + std::time::Duration::from_millis(500));
        assert_eq!(q.release_due(due), 1);
    }

    #[tokio::test]
    async fn the_settling_window_is_what_is_left_of_rerun_delay_since_the_last_start() {
        let (q, _store, _dir, _stop) = queue();
        let k = CalendarKey::new("t", "u@x");
        assert_eq!(q.settling_left(&k), std::time::Duration::ZERO, "never started");
        q.enqueue(&k);
        let claim = q.take().await;
        let left = q.settling_left(&k);
        assert!(left > std::time::Duration::ZERO && left <= std::time::Duration::from_millis(250), "{left:?}");
        q.finish(&claim, Finish::Done).await.unwrap();
    }

    #[tokio::test]
    async fn tenants_take_turns_and_none_holds_more_than_its_share() {
        let (q, _store, _dir, _stop) = queue();
        for i in 0..20 {
            q.enqueue(&CalendarKey::new("big", &format!("u{i}@big")));
        }
        q.enqueue(&CalendarKey::new("small", "a@small"));
        q.enqueue(&CalendarKey::new("other", "b@other"));
        let mut claims = Vec::new();
        for _ in 0..6 {
            claims.push(tokio::time::timeout(std::time::Duration::from_secs(1), q.take()).await.unwrap());
        }
        let tenants: Vec<&str> = claims.iter().map(|c| c.key.tenant.as_str()).collect();
        assert_eq!(&tenants[..3], ["big", "small", "other"], "round the tenants first");
        assert_eq!(tenants.iter().filter(|t| **t == "big").count(), 4, "big is at its limit of 4: {tenants:?}");
        // With big at its limit and the others done, nothing more is handed out …
        assert!(tokio::time::timeout(std::time::Duration::from_millis(50), q.take()).await.is_err());
        // … until one of big's claims ends.
        let big = claims.iter().find(|c| c.key.tenant == "big").unwrap().clone();
        q.finish(&big, Finish::Done).await.unwrap();
        let next = tokio::time::timeout(std::time::Duration::from_secs(1), q.take()).await.unwrap();
        assert_eq!(next.key.tenant, "big");
    }
}
