//! Durable state behind a trait of domain operations (DESIGN §10), with two backends: sled, the
//! embedded default, and PostgreSQL (`store.database_url`), which replicas can share. `open`
//! picks one from the configuration.
//!
//! Methods are async: PostgreSQL is a network call; sled works in memory (and runs its large
//! operations off the async threads). Durability is explicit: `flush` returns once everything
//! written before it survives a crash; call it before acknowledging anything that must not be
//! lost.

pub mod copy;
pub mod group_flush;
pub mod pg_channels;
pub mod pg_marks;
pub mod pg_store;
pub mod sled_store;

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::model::access::{AuditEntry, TokenRecord};
use crate::model::event::StoredEvent;
use crate::model::tenant::TenantRecord;
use crate::model::user::UserRecord;

pub use crate::model::records::{
    CalendarState, ChannelAuth, ChannelRecord, EventChange, OutboxMessage, PresenceRecord, StoredCredentials,
    SyncFailure,
};

/// A mark no sync has read yet (`Store::mark_unread`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnreadMark {
    pub generation: u64,
    /// No sync reads the mark before this instant without leaving a newer one unread (a sync
    /// read it less than its settling window ago, and the store refuses a read before that
    /// window ends; or the calendar is in a busy spell, `Store::read_dirty`): until then it
    /// covers every new notification without asking the store. `None`: it may be read at any
    /// time.
    pub unread_until: Option<std::time::Instant>,
    /// The calendar had no mark: this one was made from nothing, so no sync is coming for it
    /// until some replica claims the calendar — the one that made it must. A mark that was
    /// there already is some sync's to cover: the one that will read it, or the one that read
    /// it, whose clear of the generation it read then fails and makes it run again.
    pub created: bool,
}

/// What a calendar's sync starts from (`Store::sync_inputs`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncInputs {
    pub state: Option<CalendarState>,
    /// The calendar's channels (`channels_of`).
    pub channels: Vec<ChannelRecord>,
}

/// What a sync about to fetch got from `Store::read_dirty`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkRead {
    /// Recorded as read: the mark's generation (`None`: no mark; the window opens all the same).
    Read(Option<u64>),
    /// A sync read the mark less than its settling window ago: read again after this long.
    NotBefore(std::time::Duration),
}

/// The layout version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sled::Error),
    #[error("a stored record is damaged ({0}); restore the data directory from a backup")]
    Corrupt(String),
    /// `found` is the store's schema, `reads` the newest this build knows (sled's record layout,
    /// or PostgreSQL's latest migration).
    #[error(
        "the {store} was written by a newer gwsync (schema {found}, this build reads up to {reads}); upgrade gwsync"
    )]
    NewerSchema { store: &'static str, found: u32, reads: u32 },
    /// A PostgreSQL error (never with the database URL or its password).
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    #[error("flushing the database failed: {0}")]
    Flush(String),
    #[error("a background store task failed: {0}")]
    Background(String),
    /// The user (or tenant) was deleted while the work that wanted to write for it ran: the
    /// write was refused, so nothing is left behind for a deleted user.
    #[error("the user was deleted meanwhile")]
    Gone,
}

#[async_trait::async_trait]
pub trait Store: Send + Sync {
    async fn put_tenant(&self, tenant: &TenantRecord) -> Result<(), StoreError>;
    async fn tenant(&self, id: &str) -> Result<Option<TenantRecord>, StoreError>;
    async fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError>;
    /// Deletes the tenant with its users and their data, atomically, and marks its channels
    /// orphaned (the keeper stops them at Google in the background). The sealed key is retired,
    /// not deleted — stopping those channels needs it — and removed with
    /// `delete_retired_credentials`; a tenant re-created under the same id starts without it.
    /// False if the tenant did not exist.
    async fn delete_tenant(&self, id: &str) -> Result<bool, StoreError>;

    async fn put_credentials(&self, tenant: &str, credentials: &StoredCredentials) -> Result<(), StoreError>;
    async fn credentials(&self, tenant: &str) -> Result<Option<StoredCredentials>, StoreError>;
    /// The key a deleted tenant (of this id) had, kept until its orphaned channels are stopped.
    async fn retired_credentials(&self, tenant: &str) -> Result<Option<StoredCredentials>, StoreError>;
    /// Every tenant id with a retired key.
    async fn retired_credential_tenants(&self) -> Result<Vec<String>, StoreError>;
    async fn delete_retired_credentials(&self, tenant: &str) -> Result<(), StoreError>;

    async fn put_user(&self, user: &UserRecord) -> Result<(), StoreError>;
    async fn user(&self, tenant: &str, email: &str) -> Result<Option<UserRecord>, StoreError>;
    async fn users(&self, tenant: &str) -> Result<Vec<UserRecord>, StoreError>;
    /// Deletes the user with their calendar state, events, dirty mark, presence and queued
    /// messages, and marks their channels orphaned (stopped by the keeper), atomically.
    async fn delete_user(&self, tenant: &str, email: &str) -> Result<bool, StoreError>;

    async fn calendar_state(&self, tenant: &str, user: &str) -> Result<Option<CalendarState>, StoreError>;
    /// `Gone` if the user does not exist (checked atomically with the write).
    async fn put_calendar_state(&self, tenant: &str, user: &str, state: &CalendarState) -> Result<(), StoreError>;
    /// Applies a sync result atomically: optionally wipes the calendar's events first, then the
    /// changes, then the new state (with its sync token). All or nothing; `Gone` (nothing
    /// written) if the user was deleted meanwhile. Returns how many events the calendar holds
    /// after.
    async fn apply_sync(
        &self,
        tenant: &str,
        user: &str,
        wipe: bool,
        changes: &[EventChange],
        state: &CalendarState,
    ) -> Result<usize, StoreError>;
    async fn events(&self, tenant: &str, user: &str) -> Result<Vec<StoredEvent>, StoreError>;
    /// What a sync of the user's calendar starts from, if the tenant and the user exist: the
    /// calendar's state and channels. (A backend shared by replicas reads it in one statement.)
    async fn sync_inputs(&self, tenant: &str, user: &str) -> Result<Option<SyncInputs>, StoreError> {
        if self.tenant(tenant).await?.is_none() || self.user(tenant, user).await?.is_none() {
            return Ok(None);
        }
        let state = self.calendar_state(tenant, user).await?;
        let channels = self.channels_of(tenant, user).await?;
        Ok(Some(SyncInputs { state, channels }))
    }

    /// Marks the calendar as needing a sync, durably; returns the mark's generation, above every
    /// generation returned before this call began (concurrent calls may share one: PostgreSQL
    /// commits a burst of marks together).
    async fn mark_dirty(&self, tenant: &str, user: &str) -> Result<u64, StoreError>;
    async fn dirty_calendars(&self) -> Result<Vec<(String, String, u64)>, StoreError>;
    /// The calendar's mark's generation now, if it has one. (This default reads every mark; a
    /// backend shared by replicas reads the one row.)
    async fn dirty_generation(&self, tenant: &str, user: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.dirty_calendars().await?.into_iter().find(|(t, u, _)| t == tenant && u == user).map(|(_, _, g)| g))
    }
    /// Clears the mark if it is still at `generation` (no notification came since); false if not.
    async fn clear_dirty(&self, tenant: &str, user: &str, generation: u64) -> Result<bool, StoreError>;
    /// `clear_dirty` at `generation` (if given), then the generation of the mark left, if any:
    /// the end of a sync on a shared database. (A backend shared by replicas does both in one
    /// statement.)
    async fn clear_dirty_then_pending(
        &self,
        tenant: &str,
        user: &str,
        generation: Option<u64>,
    ) -> Result<Option<u64>, StoreError> {
        if let Some(generation) = generation {
            self.clear_dirty(tenant, user, generation).await?;
        }
        self.dirty_generation(tenant, user).await
    }
    /// Makes sure the calendar holds a mark no sync has read yet (`read_dirty`), as durably as
    /// `mark_dirty`: a new generation if it has no mark or its mark was read, else the mark it
    /// has, with nothing written. That is all a notification needs — the next sync to read
    /// the mark starts after it — so replicas that do not sync the calendar coalesce their
    /// notifications on the holder's mark instead of each writing its own.
    async fn mark_unread(&self, tenant: &str, user: &str) -> Result<UnreadMark, StoreError>;
    /// The calendar's mark's generation, recorded as read by a sync that fetches next: a
    /// notification after this needs a newer mark (`mark_unread` writes one). No sync may read
    /// the mark again within `spacing` (the settling window): such a read is refused with the
    /// time left (`MarkRead::NotBefore`), which is what lets an unread mark promise it stays
    /// unread (`UnreadMark::unread_until`). A read that finds no mark opens the window too
    /// (unless one is open), so the first notification after a calendar's first sync rests
    /// on it; a calendar whose user does not exist may make no promise.
    ///
    /// Busy spells: a read that passes moves the calendar's `busy_until` to `busy_for` from now
    /// (if later; zero leaves it), and a read that passes before `busy_until` leaves the next
    /// generation unread as it reads (a mark made ahead for the next read). No mark can be
    /// cleared meanwhile (its generation is never one a sync read), so an unread mark covers
    /// every notification up to `busy_until` (`UnreadMark::unread_until`), however many
    /// reads come before it: replicas that do not sync a busy calendar ask the store once a
    /// spell's `busy_for` instead of writing once per read.
    async fn read_dirty(
        &self,
        tenant: &str,
        user: &str,
        spacing: std::time::Duration,
        busy_for: std::time::Duration,
    ) -> Result<MarkRead, StoreError>;

    /// `Gone` for a channel that is not orphaned whose user does not exist (checked atomically
    /// with the write, so a deletion and a registration racing leave no live channel behind).
    async fn put_channel(&self, channel: &ChannelRecord) -> Result<(), StoreError>;
    async fn channel(&self, id: &str) -> Result<Option<ChannelRecord>, StoreError>;
    /// What verifying a notification on channel `id` needs. A backend serving one process keeps
    /// it in memory in step with `put_channel`/`delete_channel`, so the webhook reads and
    /// decodes nothing per notification; this default reads the record (as a backend shared by
    /// replicas must: another replica may have created the channel).
    async fn channel_auth(&self, id: &str) -> Result<Option<Arc<ChannelAuth>>, StoreError> {
        Ok(self.channel(id).await?.map(|c| Arc::new(ChannelAuth::of(&c))))
    }
    async fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError>;
    /// The channels of one user's calendar (usually one; two while a renewal overlaps).
    async fn channels_of(&self, tenant: &str, user: &str) -> Result<Vec<ChannelRecord>, StoreError>;
    async fn delete_channel(&self, id: &str) -> Result<(), StoreError>;

    async fn presence_record(&self, tenant: &str, user: &str) -> Result<Option<PresenceRecord>, StoreError>;
    async fn put_presence_record(&self, tenant: &str, user: &str, record: &PresenceRecord) -> Result<(), StoreError>;
    /// Records what the user is now told and queues the message saying it, atomically; the
    /// user's older undelivered messages are dropped in the same step (each message carries the
    /// whole state, so the newest supersedes them). `Gone` if the user does not exist.
    async fn enqueue_message(&self, record: &PresenceRecord, message: &OutboxMessage) -> Result<(), StoreError>;
    /// Every queued message, each user's in sequence order.
    async fn outbox(&self) -> Result<Vec<OutboxMessage>, StoreError>;
    async fn outbox_message(
        &self,
        tenant: &str,
        user: &str,
        sequence: u64,
    ) -> Result<Option<OutboxMessage>, StoreError>;
    /// Records a failed attempt; false (nothing written) if the message is gone meanwhile
    /// (superseded, or its user deleted).
    async fn update_message(&self, message: &OutboxMessage) -> Result<bool, StoreError>;
    async fn delete_message(&self, tenant: &str, user: &str, sequence: u64) -> Result<(), StoreError>;

    async fn contact_book(
        &self,
        tenant: &str,
        book: &str,
    ) -> Result<Option<crate::model::contact::BookState>, StoreError>;
    async fn contact_books(&self, tenant: &str) -> Result<Vec<(String, crate::model::contact::BookState)>, StoreError>;
    /// Applies a People listing atomically: optionally wipes the book, then the changes, then
    /// its new state (with the sync token). Returns the book's size after.
    async fn apply_contacts(
        &self,
        tenant: &str,
        book: &str,
        wipe: bool,
        changes: &[crate::model::contact::Change],
        state: &crate::model::contact::BookState,
    ) -> Result<usize, StoreError>;
    /// Every entry of every book of a tenant.
    async fn contacts(&self, tenant: &str) -> Result<Vec<crate::model::contact::Contact>, StoreError>;
    async fn delete_contact_book(&self, tenant: &str, book: &str) -> Result<(), StoreError>;

    /// Saves an API token with its digest index. (A tenant's tokens go with the tenant.)
    async fn put_token(&self, token: &TokenRecord) -> Result<(), StoreError>;
    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// The token whose secret has this SHA-256 digest (hex).
    async fn token_by_digest(&self, digest: &str) -> Result<Option<TokenRecord>, StoreError>;
    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;
    /// Changes a stored token in place, atomically, so a lazy `last_used_at` write never undoes
    /// a revocation made meanwhile. `change` may run more than once. None if there is no such token.
    async fn update_token(
        &self,
        id: &str,
        change: &(dyn for<'t> Fn(&'t mut TokenRecord) + Send + Sync),
    ) -> Result<Option<TokenRecord>, StoreError>;
    async fn delete_token(&self, id: &str) -> Result<(), StoreError>;

    /// A new audit entry id, above every one given before (also across restarts).
    async fn next_audit_id(&self) -> Result<u64, StoreError>;
    /// Writes an audit entry (replacing the one with its id: a request's outcome is added later).
    async fn put_audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    /// Newest first: entries with an id below `before`, only `tenant`'s if given, at most `limit`.
    async fn audit(
        &self,
        tenant: Option<&str>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError>;
    /// Removes the entries older than `cutoff`; returns how many went.
    async fn prune_audit(&self, cutoff: DateTime<Utc>) -> Result<usize, StoreError>;

    /// Returns once everything written so far survives a crash.
    async fn flush(&self) -> Result<(), StoreError>;

    /// Whether every write survives a crash once it returns (PostgreSQL: a write returns after
    /// its commit), so `flush` has nothing to wait for and `GroupFlush` skips it.
    fn durable_on_return(&self) -> bool {
        false
    }

    /// Called on each HTTP worker thread as it starts, inside its runtime: PostgreSQL starts
    /// the webhook's mark batching there (`pg_marks`).
    fn on_http_worker(&self) {}

    // Listings and restores for `gwsync store copy`: every record of a kind, whatever tenant
    // (or none) it belongs to.

    /// Every user of every tenant.
    async fn all_users(&self) -> Result<Vec<UserRecord>, StoreError>;
    /// Every tenant's (current) key.
    async fn all_credentials(&self) -> Result<Vec<(String, StoredCredentials)>, StoreError>;
    /// Every presence record: (tenant, user, record).
    async fn presence_records(&self) -> Result<Vec<(String, String, PresenceRecord)>, StoreError>;
    /// Every address book's state: (tenant, book, state).
    async fn all_contact_books(&self) -> Result<Vec<(String, String, crate::model::contact::BookState)>, StoreError>;
    /// The entries of one book.
    async fn book_contacts(&self, tenant: &str, book: &str) -> Result<Vec<crate::model::contact::Contact>, StoreError>;
    /// Stores a retired key as it was (a copy keeps a deleted tenant's key for the keeper).
    async fn put_retired_credentials(&self, tenant: &str, credentials: &StoredCredentials) -> Result<(), StoreError>;
    /// Sets a calendar's dirty mark to `generation` (a copy keeps the source's generations).
    async fn restore_dirty(&self, tenant: &str, user: &str, generation: u64) -> Result<(), StoreError>;
    /// Makes `next_audit_id` answer above `id` from now on (copied entries keep their ids).
    async fn raise_audit_ids(&self, id: u64) -> Result<(), StoreError>;
}

pub type SharedStore = Arc<dyn Store>;

/// Opens the configured store: PostgreSQL if `store.database_url` is set, else sled under
/// `data_dir/db`.
pub async fn open(config: &crate::config::Config) -> anyhow::Result<SharedStore> {
    use anyhow::Context;
    match &config.store.database_url {
        Some(url) => Ok(Arc::new(
            pg_store::PgStore::connect(url, config.store.pool_size, config.store.connect_timeout)
                .await
                .context("opening the PostgreSQL database (store.database_url)")?,
        )),
        None => {
            let dir = config.data_dir.join("db");
            Ok(Arc::new(
                sled_store::SledStore::open(&dir, config.store.cache_capacity_mb)
                    .with_context(|| format!("opening the database in {}", dir.display()))?,
            ))
        }
    }
}

/// Makes every earlier write durable.
pub async fn flush(store: &SharedStore) -> Result<(), StoreError> {
    store.flush().await
}
