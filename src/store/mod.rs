//! Durable state behind a trait of domain operations, so a PostgreSQL backend can follow
//! (DESIGN §10). The sled implementation is the default.
//!
//! Methods are synchronous and quick (sled works in memory and logs in the background);
//! durability is explicit: `flush` returns once everything written before it survives a crash.
//! Call it through `flush(store)` before acknowledging anything that must not be lost.

pub mod group_flush;
pub mod sled_store;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::event::StoredEvent;
use crate::model::key_file::KeyInfo;
use crate::model::tenant::TenantRecord;
use crate::model::user::UserRecord;

/// The layout version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sled::Error),
    #[error("a stored record is damaged ({0}); restore the data directory from a backup")]
    Corrupt(String),
    #[error(
        "the data directory was written by a newer gwsync (schema {found}, this build reads {SCHEMA_VERSION}); upgrade gwsync"
    )]
    NewerSchema { found: u32 },
    #[error("flushing the database failed: {0}")]
    Flush(String),
    #[error("a background store task failed: {0}")]
    Background(String),
}

/// A tenant's service-account key: its public facts and the sealed key file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredCredentials {
    pub info: KeyInfo,
    /// The key file, sealed under the master key (base64).
    pub sealed: String,
    pub uploaded_at: DateTime<Utc>,
}

/// Sync state of one user's primary calendar.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CalendarState {
    /// Google's cursor; written only together with the changes it covers.
    pub sync_token: Option<String>,
    /// The calendar's own time zone, as `events.list` reports it.
    pub time_zone: Option<String>,
    pub last_sync_at: Option<DateTime<Utc>>,
    pub last_full_sync_at: Option<DateTime<Utc>>,
    pub events: usize,
    pub last_error: Option<SyncFailure>,
    /// Failures since the last success (drives the backoff).
    pub failures: u32,
}

/// Why the last attempt failed, and what a Workspace admin can do about it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SyncFailure {
    pub code: String,
    pub message: String,
    pub hint: String,
    pub at: DateTime<Utc>,
    /// When gwsync tries again (none: not until the user or tenant changes).
    pub retry_at: Option<DateTime<Utc>>,
}

/// One change of a sync result.
#[derive(Debug, Clone, PartialEq)]
pub enum EventChange {
    Upsert(Box<StoredEvent>),
    /// Remove the event (and, for a series, its exceptions).
    Delete(String),
}

/// A push channel gwsync created (or is creating) on a user's calendar.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChannelRecord {
    pub id: String,
    /// SHA-256 (hex) of the channel token: enough to verify notifications, useless to forge them.
    pub token_digest: String,
    pub tenant: String,
    pub user: String,
    /// Known once Google answered the watch call.
    pub resource_id: Option<String>,
    pub expiration: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// Its user or tenant is gone (or it was replaced) but stopping it at Google failed: the
    /// keeper retries until it is stopped or expires. Its notifications are ignored.
    #[serde(default)]
    pub orphaned: bool,
}

/// What verifying a notification needs of a channel: the webhook's whole view of it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelAuth {
    /// SHA-256 of the channel token; `None` if the stored digest is damaged (nothing matches).
    pub token_digest: Option<[u8; 32]>,
    pub resource_id: Option<String>,
    pub tenant: String,
    pub user: String,
    pub orphaned: bool,
}

impl ChannelAuth {
    pub fn of(channel: &ChannelRecord) -> Self {
        ChannelAuth {
            token_digest: digest_from_hex(&channel.token_digest),
            resource_id: channel.resource_id.clone(),
            tenant: channel.tenant.clone(),
            user: channel.user.clone(),
            orphaned: channel.orphaned,
        }
    }
}

fn digest_from_hex(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// What gwsync last told the phone system about a user, and the last sequence number used.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PresenceRecord {
    pub sequence: u64,
    pub last: Option<crate::presence::timeline::State>,
}

/// A profile switch waiting to be delivered (or retried).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutboxMessage {
    pub tenant: String,
    pub user: String,
    pub sequence: u64,
    /// `webhook-id`: the same on every attempt.
    pub id: String,
    /// The exact JSON that is signed and sent.
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
}

pub trait Store: Send + Sync {
    fn put_tenant(&self, tenant: &TenantRecord) -> Result<(), StoreError>;
    fn tenant(&self, id: &str) -> Result<Option<TenantRecord>, StoreError>;
    fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError>;
    /// Deletes the tenant with its users and credentials, atomically. False if it did not exist.
    fn delete_tenant(&self, id: &str) -> Result<bool, StoreError>;

    fn put_credentials(&self, tenant: &str, credentials: &StoredCredentials) -> Result<(), StoreError>;
    fn credentials(&self, tenant: &str) -> Result<Option<StoredCredentials>, StoreError>;

    fn put_user(&self, user: &UserRecord) -> Result<(), StoreError>;
    fn user(&self, tenant: &str, email: &str) -> Result<Option<UserRecord>, StoreError>;
    fn users(&self, tenant: &str) -> Result<Vec<UserRecord>, StoreError>;
    /// Deletes the user with their calendar state, events and dirty mark, atomically.
    fn delete_user(&self, tenant: &str, email: &str) -> Result<bool, StoreError>;

    fn calendar_state(&self, tenant: &str, user: &str) -> Result<Option<CalendarState>, StoreError>;
    fn put_calendar_state(&self, tenant: &str, user: &str, state: &CalendarState) -> Result<(), StoreError>;
    /// Applies a sync result atomically: optionally wipes the calendar's events first, then the
    /// changes, then the new state (with its sync token). All or nothing. Returns how many
    /// events the calendar holds after.
    fn apply_sync(
        &self,
        tenant: &str,
        user: &str,
        wipe: bool,
        changes: &[EventChange],
        state: &CalendarState,
    ) -> Result<usize, StoreError>;
    fn events(&self, tenant: &str, user: &str) -> Result<Vec<StoredEvent>, StoreError>;

    /// Marks the calendar as needing a sync; returns the mark's generation.
    fn mark_dirty(&self, tenant: &str, user: &str) -> Result<u64, StoreError>;
    fn dirty_calendars(&self) -> Result<Vec<(String, String, u64)>, StoreError>;
    /// Clears the mark if it is still at `generation` (no notification came since); false if not.
    fn clear_dirty(&self, tenant: &str, user: &str, generation: u64) -> Result<bool, StoreError>;

    fn put_channel(&self, channel: &ChannelRecord) -> Result<(), StoreError>;
    fn channel(&self, id: &str) -> Result<Option<ChannelRecord>, StoreError>;
    /// What verifying a notification on channel `id` needs. A backend serving one process keeps
    /// it in memory in step with `put_channel`/`delete_channel`, so the webhook reads and
    /// decodes nothing per notification; this default reads the record (as a backend shared by
    /// replicas must: another replica may have created the channel).
    fn channel_auth(&self, id: &str) -> Result<Option<Arc<ChannelAuth>>, StoreError> {
        Ok(self.channel(id)?.map(|c| Arc::new(ChannelAuth::of(&c))))
    }
    fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError>;
    /// The channels of one user's calendar (usually one; two while a renewal overlaps).
    fn channels_of(&self, tenant: &str, user: &str) -> Result<Vec<ChannelRecord>, StoreError>;
    fn delete_channel(&self, id: &str) -> Result<(), StoreError>;

    fn presence_record(&self, tenant: &str, user: &str) -> Result<Option<PresenceRecord>, StoreError>;
    fn put_presence_record(&self, tenant: &str, user: &str, record: &PresenceRecord) -> Result<(), StoreError>;
    /// Records what the user is now told and queues the message saying it, atomically.
    fn enqueue_message(&self, record: &PresenceRecord, message: &OutboxMessage) -> Result<(), StoreError>;
    /// Every queued message, each user's in sequence order.
    fn outbox(&self) -> Result<Vec<OutboxMessage>, StoreError>;
    fn outbox_message(&self, tenant: &str, user: &str, sequence: u64) -> Result<Option<OutboxMessage>, StoreError>;
    fn update_message(&self, message: &OutboxMessage) -> Result<(), StoreError>;
    fn delete_message(&self, tenant: &str, user: &str, sequence: u64) -> Result<(), StoreError>;

    fn contact_book(&self, tenant: &str, book: &str) -> Result<Option<crate::contacts::model::BookState>, StoreError>;
    fn contact_books(&self, tenant: &str) -> Result<Vec<(String, crate::contacts::model::BookState)>, StoreError>;
    /// Applies a People listing atomically: optionally wipes the book, then the changes, then
    /// its new state (with the sync token). Returns the book's size after.
    fn apply_contacts(
        &self,
        tenant: &str,
        book: &str,
        wipe: bool,
        changes: &[crate::contacts::model::Change],
        state: &crate::contacts::model::BookState,
    ) -> Result<usize, StoreError>;
    /// Every entry of every book of a tenant.
    fn contacts(&self, tenant: &str) -> Result<Vec<crate::contacts::model::Contact>, StoreError>;
    fn delete_contact_book(&self, tenant: &str, book: &str) -> Result<(), StoreError>;

    /// Blocks until everything written so far is on disk.
    fn flush_blocking(&self) -> Result<(), StoreError>;
}

pub type SharedStore = Arc<dyn Store>;

/// Makes every earlier write durable, off the async threads.
pub async fn flush(store: &SharedStore) -> Result<(), StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.flush_blocking()).await.map_err(|e| StoreError::Flush(e.to_string()))?
}

/// Runs a large store operation off the async threads, so it holds up no request: a full
/// phonebook sync writes 100,000 entries at once.
pub async fn blocking<T: Send + 'static>(
    store: &SharedStore,
    op: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || op(store.as_ref())).await.map_err(|e| StoreError::Background(e.to_string()))?
}
