//! The sled implementation of `Store`.
//!
//! Trees: `meta` (schema version), `tenants` (id → JSON), `credentials` (tenant → JSON with the
//! sealed key file), `users` and `calendars` (`tenant \0 email` → JSON), `events`
//! (`tenant \0 email \0 event id` → JSON), `dirty` (`tenant \0 email` → generation, u64 BE),
//! `channels` (channel id → JSON) with its index `user_channels` (`tenant \0 email \0 id`),
//! `presence` (`tenant \0 email` → what the phone system was last told), `outbox`
//! (`tenant \0 email \0 sequence` (u64 BE) → a message to deliver), `contact_books`
//! (`tenant \0 book` → its sync state) and `contacts` (`tenant \0 book \0 resource name` →
//! a phonebook entry), `tokens` (token id → JSON, a digest instead of the secret) with its index
//! `token_digests` (digest hex → id), `audit` (entry id, u64 BE → JSON) with its index
//! `audit_tenants` (`tenant \0 id` → nothing). Values are JSON: small, readable with any sled tool, and
//! versioned by the schema number in `meta`.
//!
//! The `channels` tree is mirrored in memory as what verifying a notification needs
//! (`channel_auth`): the webhook answers from it without a read or a JSON decode. It is loaded
//! at open and changed only by `put_channel`/`delete_channel`, after their write and under one
//! lock, so it never differs from the tree (nothing else writes `channels`: deleting a user or
//! tenant leaves their channels to be retired or stopped through those two methods).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;

use super::{
    CalendarState, ChannelAuth, ChannelRecord, EventChange, MarkRead, OutboxMessage, PresenceRecord, SCHEMA_VERSION,
    Store, StoreError, StoredCredentials, UnreadMark,
};
use crate::model::access::{AuditEntry, TokenRecord};
use crate::model::contact::{BookState, Change, Contact};
use crate::model::event::StoredEvent;
use crate::model::tenant::TenantRecord;
use crate::model::user::UserRecord;

/// The trees, with synchronous operations; `SledStore` puts the async `Store` in front.
struct Sled {
    db: sled::Db,
    tenants: sled::Tree,
    credentials: sled::Tree,
    retired_credentials: sled::Tree,
    users: sled::Tree,
    calendars: sled::Tree,
    events: sled::Tree,
    dirty: sled::Tree,
    channels: sled::Tree,
    user_channels: sled::Tree,
    presence: sled::Tree,
    outbox: sled::Tree,
    contact_books: sled::Tree,
    contacts: sled::Tree,
    tokens: sled::Tree,
    token_digests: sled::Tree,
    audit: sled::Tree,
    audit_tenants: sled::Tree,
    /// Channel id → what verifying its notifications needs (`None`: its record is damaged).
    channel_index: RwLock<HashMap<String, Option<Arc<ChannelAuth>>>>,
    /// Held across a channel write and its index update, so both change in the same order.
    channel_writes: Mutex<()>,
    /// Calendar key → what its last sync read (`read_dirty`). One process needs it only in
    /// memory: after a restart no sync is running, so every mark is unread.
    read_marks: Mutex<HashMap<Vec<u8>, ReadMark>>,
}

/// A calendar's last read (`SledStore::read_marks`).
#[derive(Debug, Clone, Copy)]
struct ReadMark {
    /// The mark generation it read (0: none since the mark was cleared).
    generation: u64,
    /// The earliest the next read may be.
    next_read: std::time::Instant,
    /// Reads before this leave a newer generation unread (`Store::read_dirty`'s `busy_for`).
    busy_until: Option<std::time::Instant>,
}

impl ReadMark {
    /// Until when an unread mark stays unread: no read before `next_read`, and none before
    /// `busy_until` that does not leave a newer one.
    fn unread_until(&self) -> std::time::Instant {
        self.busy_until.map_or(self.next_read, |b| b.max(self.next_read))
    }
}

/// Why a transaction gave up.
#[derive(Debug)]
enum Abort {
    /// The user it writes for does not exist (any more).
    Gone,
    Corrupt(String),
}

type TxResult<T> = Result<T, sled::transaction::ConflictableTransactionError<Abort>>;

fn tx_error(e: sled::transaction::TransactionError<Abort>) -> StoreError {
    match e {
        sled::transaction::TransactionError::Storage(e) => StoreError::Db(e),
        sled::transaction::TransactionError::Abort(Abort::Gone) => StoreError::Gone,
        sled::transaction::TransactionError::Abort(Abort::Corrupt(why)) => StoreError::Corrupt(why),
    }
}

fn gone<T>() -> TxResult<T> {
    Err(sled::transaction::ConflictableTransactionError::Abort(Abort::Gone))
}

/// Marks a channel record orphaned inside a transaction (its user or tenant is being deleted).
fn orphan_in(channels: &sled::transaction::TransactionalTree, id: &[u8]) -> TxResult<()> {
    if let Some(v) = channels.get(id)? {
        let mut c: ChannelRecord = serde_json::from_slice(&v)
            .map_err(|e| sled::transaction::ConflictableTransactionError::Abort(Abort::Corrupt(e.to_string())))?;
        if !c.orphaned {
            c.orphaned = true;
            let bytes = serde_json::to_vec(&c)
                .map_err(|e| sled::transaction::ConflictableTransactionError::Abort(Abort::Corrupt(e.to_string())))?;
            channels.insert(id, bytes)?;
        }
    }
    Ok(())
}

/// The channel id at the end of a `user_channels` key.
fn channel_id_of(index_key: &[u8]) -> &[u8] {
    match index_key.iter().rposition(|b| *b == 0) {
        Some(i) => &index_key[i + 1..],
        None => index_key,
    }
}

fn event_key(tenant: &str, user: &str, id: &str) -> Vec<u8> {
    let mut k = user_key(tenant, user);
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

fn outbox_key(tenant: &str, user: &str, sequence: u64) -> Vec<u8> {
    let mut k = calendar_prefix(tenant, user);
    k.extend_from_slice(&sequence.to_be_bytes());
    k
}

fn calendar_prefix(tenant: &str, user: &str) -> Vec<u8> {
    let mut k = user_key(tenant, user);
    k.push(0);
    k
}

fn user_key(tenant: &str, email: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + email.len() + 1);
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(email.as_bytes());
    k
}

fn tenant_prefix(tenant: &str) -> Vec<u8> {
    let mut k = tenant.as_bytes().to_vec();
    k.push(0);
    k
}

fn audit_tenant_key(tenant: &str, id: u64) -> Vec<u8> {
    let mut k = tenant_prefix(tenant);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// `tenant \0 rest` → (tenant, rest).
fn split_pair(key: &[u8], what: &str) -> Result<(String, String), StoreError> {
    let text = std::str::from_utf8(key).map_err(|_| StoreError::Corrupt(what.into()))?;
    let (a, b) = text.split_once('\0').ok_or_else(|| StoreError::Corrupt(what.into()))?;
    Ok((a.to_owned(), b.to_owned()))
}

/// Every record of a tree keyed `tenant \0 name`, with both parts of its key.
fn pairs<T: DeserializeOwned>(tree: &sled::Tree, what: &str) -> Result<Vec<(String, String, T)>, StoreError> {
    tree.iter()
        .map(|kv| {
            let (k, v) = kv?;
            let (tenant, name) = split_pair(&k, what)?;
            Ok((tenant, name, decode(&v)?))
        })
        .collect()
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl Sled {
    /// Opens (or creates) the database under `dir`, checking the schema version.
    fn open(dir: &Path, cache_capacity_mb: u64) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(dir).cache_capacity(cache_capacity_mb * 1024 * 1024).open()?;
        let meta = db.open_tree("meta")?;
        match meta.get("schema_version")? {
            None => {
                meta.insert("schema_version", &SCHEMA_VERSION.to_be_bytes())?;
            }
            Some(v) => {
                let found = u32::from_be_bytes(
                    v.as_ref().try_into().map_err(|_| StoreError::Corrupt("schema_version".into()))?,
                );
                if found > SCHEMA_VERSION {
                    return Err(StoreError::NewerSchema { store: "data directory", found, reads: SCHEMA_VERSION });
                }
            }
        }
        let channels = db.open_tree("channels")?;
        let mut index = HashMap::new();
        for kv in channels.iter() {
            let (k, v) = kv?;
            let id = String::from_utf8_lossy(&k).into_owned();
            let auth = match decode::<ChannelRecord>(&v) {
                Ok(c) => Some(Arc::new(ChannelAuth::of(&c))),
                Err(e) => {
                    // Kept as damaged: its notifications get 503, as a read of it would.
                    tracing::error!(channel = %id, error = %e, "a stored channel is damaged");
                    None
                }
            };
            index.insert(id, auth);
        }
        Ok(Sled {
            tenants: db.open_tree("tenants")?,
            credentials: db.open_tree("credentials")?,
            retired_credentials: db.open_tree("retired_credentials")?,
            users: db.open_tree("users")?,
            calendars: db.open_tree("calendars")?,
            events: db.open_tree("events")?,
            dirty: db.open_tree("dirty")?,
            channels,
            channel_index: RwLock::new(index),
            channel_writes: Mutex::new(()),
            read_marks: Mutex::new(HashMap::new()),
            user_channels: db.open_tree("user_channels")?,
            presence: db.open_tree("presence")?,
            outbox: db.open_tree("outbox")?,
            contact_books: db.open_tree("contact_books")?,
            contacts: db.open_tree("contacts")?,
            tokens: db.open_tree("tokens")?,
            token_digests: db.open_tree("token_digests")?,
            audit: db.open_tree("audit")?,
            audit_tenants: db.open_tree("audit_tenants")?,
            db,
        })
    }
}

impl Sled {
    /// Brings the channel index in step with the records behind `index_keys` (`user_channels`
    /// keys) after a deletion orphaned them. The caller holds `channel_writes`.
    fn reindex_channels(&self, index_keys: &[sled::IVec]) -> Result<(), StoreError> {
        let mut index = self.channel_index.write();
        for k in index_keys {
            let id = channel_id_of(k);
            let record = self.channels.get(id)?;
            let id = String::from_utf8_lossy(id).into_owned();
            match record {
                Some(v) => index.insert(id, decode::<ChannelRecord>(&v).ok().map(|c| Arc::new(ChannelAuth::of(&c)))),
                None => index.remove(&id),
            };
        }
        Ok(())
    }
}

impl Sled {
    /// Removes what a write for the user committed between a deletion's scan of their keys and
    /// its transaction (a transaction cannot scan). Writes after the deletion are refused, as
    /// they check the user; if the user was re-created meanwhile, their data is theirs.
    fn sweep_deleted_user(&self, user_key: &[u8]) -> Result<(), StoreError> {
        if self.users.get(user_key)?.is_some() {
            return Ok(());
        }
        let mut prefix = user_key.to_vec();
        prefix.push(0);
        for tree in [&self.events, &self.outbox] {
            for k in tree.scan_prefix(&prefix).keys() {
                tree.remove(k?)?;
            }
        }
        self.calendars.remove(user_key)?;
        self.presence.remove(user_key)?;
        Ok(())
    }
}

impl Sled {
    fn put_tenant(&self, tenant: &TenantRecord) -> Result<(), StoreError> {
        self.tenants.insert(tenant.id.as_bytes(), encode(tenant)?)?;
        Ok(())
    }

    fn tenant(&self, id: &str) -> Result<Option<TenantRecord>, StoreError> {
        self.tenants.get(id.as_bytes())?.map(|v| decode(&v)).transpose()
    }

    fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        self.tenants.iter().values().map(|v| decode(&v?)).collect()
    }

    fn delete_tenant(&self, id: &str) -> Result<bool, StoreError> {
        // Its tokens first: a crash after this leaves a tenant without tokens, never tokens that
        // a re-created tenant of the same id would honour.
        for t in self.tokens()?.into_iter().filter(|t| t.tenant.as_deref() == Some(id)) {
            self.delete_token(&t.id)?;
        }
        let prefix = tenant_prefix(id);
        let keys = |tree: &sled::Tree| -> Result<Vec<sled::IVec>, StoreError> {
            Ok(tree.scan_prefix(&prefix).keys().collect::<Result<_, _>>()?)
        };
        let user_data = [&self.users, &self.calendars, &self.events, &self.dirty, &self.presence, &self.outbox]
            .into_iter()
            .map(keys)
            .collect::<Result<Vec<_>, _>>()?;
        let channel_keys = keys(&self.user_channels)?;
        let writes = self.channel_writes.lock();
        let existed = (
            &self.tenants,
            &self.users,
            &self.calendars,
            &self.events,
            &self.dirty,
            &self.presence,
            &self.outbox,
            &self.channels,
            &self.credentials,
            &self.retired_credentials,
        )
            .transaction(|(tenants, users, calendars, events, dirty, presence, outbox, channels, credentials, retired)| -> TxResult<bool> {
                let existed = tenants.remove(id.as_bytes())?.is_some();
                // The key is retired, not kept in place: a tenant re-created under this id
                // starts without it, while the keeper can still stop the old channels.
                if let Some(key) = credentials.remove(id.as_bytes())? {
                    retired.insert(id.as_bytes(), key)?;
                }
                for (tree, ks) in [users, calendars, events, dirty, presence, outbox].into_iter().zip(&user_data) {
                    for k in ks {
                        tree.remove(k)?;
                    }
                }
                for k in &channel_keys {
                    orphan_in(channels, channel_id_of(k))?;
                }
                Ok(existed)
            })
            .map_err(tx_error)?;
        self.reindex_channels(&channel_keys)?;
        drop(writes);
        for k in &user_data[0] {
            self.sweep_deleted_user(k)?;
        }
        self.read_marks.lock().retain(|k, _| !k.starts_with(&prefix));
        // The phonebook can hold 100,000 entries: removed after the transaction. Nothing reads a
        // deleted tenant's entries, and a re-created tenant's first (full) sync replaces them.
        for k in keys(&self.contacts)?.into_iter().chain(keys(&self.contact_books)?) {
            self.contacts.remove(&k)?;
            self.contact_books.remove(&k)?;
        }
        Ok(existed)
    }

    fn put_credentials(&self, tenant: &str, credentials: &StoredCredentials) -> Result<(), StoreError> {
        self.credentials.insert(tenant.as_bytes(), encode(credentials)?)?;
        Ok(())
    }

    fn credentials(&self, tenant: &str) -> Result<Option<StoredCredentials>, StoreError> {
        self.credentials.get(tenant.as_bytes())?.map(|v| decode(&v)).transpose()
    }

    fn retired_credentials(&self, tenant: &str) -> Result<Option<StoredCredentials>, StoreError> {
        self.retired_credentials.get(tenant.as_bytes())?.map(|v| decode(&v)).transpose()
    }

    fn retired_credential_tenants(&self) -> Result<Vec<String>, StoreError> {
        self.retired_credentials.iter().keys().map(|k| Ok(String::from_utf8_lossy(&k?).into_owned())).collect()
    }

    fn delete_retired_credentials(&self, tenant: &str) -> Result<(), StoreError> {
        self.retired_credentials.remove(tenant.as_bytes())?;
        Ok(())
    }

    fn put_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        self.users.insert(user_key(&user.tenant, &user.email), encode(user)?)?;
        Ok(())
    }

    fn user(&self, tenant: &str, email: &str) -> Result<Option<UserRecord>, StoreError> {
        self.users.get(user_key(tenant, email))?.map(|v| decode(&v)).transpose()
    }

    fn users(&self, tenant: &str) -> Result<Vec<UserRecord>, StoreError> {
        self.users.scan_prefix(tenant_prefix(tenant)).values().map(|v| decode(&v?)).collect()
    }

    fn delete_user(&self, tenant: &str, email: &str) -> Result<bool, StoreError> {
        let key = user_key(tenant, email);
        let prefix = calendar_prefix(tenant, email);
        let event_keys: Vec<sled::IVec> = self.events.scan_prefix(&prefix).keys().collect::<Result<_, _>>()?;
        let outbox_keys: Vec<sled::IVec> = self.outbox.scan_prefix(&prefix).keys().collect::<Result<_, _>>()?;
        let channel_keys: Vec<sled::IVec> = self.user_channels.scan_prefix(&prefix).keys().collect::<Result<_, _>>()?;
        let writes = self.channel_writes.lock();
        let existed =
            (&self.users, &self.calendars, &self.events, &self.dirty, &self.presence, &self.outbox, &self.channels)
                .transaction(|(users, calendars, events, dirty, presence, outbox, channels)| -> TxResult<bool> {
                    let existed = users.remove(key.as_slice())?.is_some();
                    for k in &channel_keys {
                        orphan_in(channels, channel_id_of(k))?;
                    }
                    calendars.remove(key.as_slice())?;
                    dirty.remove(key.as_slice())?;
                    presence.remove(key.as_slice())?;
                    for k in &event_keys {
                        events.remove(k)?;
                    }
                    for k in &outbox_keys {
                        outbox.remove(k)?;
                    }
                    Ok(existed)
                })
                .map_err(tx_error)?;
        self.reindex_channels(&channel_keys)?;
        drop(writes);
        // The read window goes with the user, as on PostgreSQL.
        self.read_marks.lock().remove(&key);
        self.sweep_deleted_user(&key)?;
        self.delete_contact_book(tenant, &crate::model::contact::personal_book(email))?;
        Ok(existed)
    }

    fn calendar_state(&self, tenant: &str, user: &str) -> Result<Option<CalendarState>, StoreError> {
        self.calendars.get(user_key(tenant, user))?.map(|v| decode(&v)).transpose()
    }

    fn put_calendar_state(&self, tenant: &str, user: &str, state: &CalendarState) -> Result<(), StoreError> {
        let (key, value) = (user_key(tenant, user), encode(state)?);
        (&self.users, &self.calendars)
            .transaction(|(users, calendars)| -> TxResult<()> {
                if users.get(key.as_slice())?.is_none() {
                    return gone();
                }
                calendars.insert(key.as_slice(), value.as_slice())?;
                Ok(())
            })
            .map_err(tx_error)
    }

    fn apply_sync(
        &self,
        tenant: &str,
        user: &str,
        wipe: bool,
        changes: &[EventChange],
        state: &CalendarState,
    ) -> Result<usize, StoreError> {
        // Keys to remove are found before the transaction (a transaction cannot scan).
        let existing: Vec<(sled::IVec, StoredEvent)> =
            if wipe || changes.iter().any(|c| matches!(c, EventChange::Delete(_))) {
                self.events
                    .scan_prefix(calendar_prefix(tenant, user))
                    .map(|kv| {
                        let (k, v) = kv?;
                        Ok((k, decode::<StoredEvent>(&v)?))
                    })
                    .collect::<Result<_, StoreError>>()?
            } else {
                Vec::new()
            };
        let mut removals: Vec<Vec<u8>> = Vec::new();
        let mut writes: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if wipe {
            removals.extend(existing.iter().map(|(k, _)| k.to_vec()));
        }
        for change in changes {
            match change {
                EventChange::Upsert(e) => writes.push((event_key(tenant, user, &e.id), encode(e)?)),
                EventChange::Delete(id) => {
                    removals.push(event_key(tenant, user, id));
                    // A deleted series takes its exceptions with it.
                    removals.extend(
                        existing
                            .iter()
                            .filter(|(_, e)| e.recurring_event_id.as_deref() == Some(id.as_str()))
                            .map(|(k, _)| k.to_vec()),
                    );
                }
            }
        }
        let state_bytes = encode(state)?;
        let key = user_key(tenant, user);
        (&self.users, &self.events, &self.calendars)
            .transaction(|(users, events, calendars)| -> TxResult<()> {
                if users.get(key.as_slice())?.is_none() {
                    return gone();
                }
                for k in &removals {
                    events.remove(k.as_slice())?;
                }
                for (k, v) in &writes {
                    events.insert(k.as_slice(), v.as_slice())?;
                }
                calendars.insert(key.as_slice(), state_bytes.as_slice())?;
                Ok(())
            })
            .map_err(tx_error)?;
        Ok(self.events.scan_prefix(calendar_prefix(tenant, user)).count())
    }

    fn events(&self, tenant: &str, user: &str) -> Result<Vec<StoredEvent>, StoreError> {
        self.events.scan_prefix(calendar_prefix(tenant, user)).values().map(|v| decode(&v?)).collect()
    }

    fn mark_dirty(&self, tenant: &str, user: &str) -> Result<u64, StoreError> {
        let next = self.dirty.update_and_fetch(user_key(tenant, user), |old| {
            let n = old.and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_be_bytes).unwrap_or(0);
            Some((n + 1).to_be_bytes().to_vec())
        })?;
        Ok(next.and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok()).map(u64::from_be_bytes).unwrap_or(1))
    }

    fn dirty_calendars(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        self.dirty
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let text = String::from_utf8(k.to_vec()).map_err(|_| StoreError::Corrupt("dirty key".into()))?;
                let (tenant, user) = text.split_once('\0').ok_or_else(|| StoreError::Corrupt("dirty key".into()))?;
                let generation = <[u8; 8]>::try_from(v.as_ref())
                    .map(u64::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt("dirty generation".into()))?;
                Ok((tenant.to_owned(), user.to_owned(), generation))
            })
            .collect()
    }

    fn clear_dirty(&self, tenant: &str, user: &str, generation: u64) -> Result<bool, StoreError> {
        let key = user_key(tenant, user);
        let mut reads = self.read_marks.lock();
        let swapped = self.dirty.compare_and_swap(&key, Some(&generation.to_be_bytes()[..]), None as Option<&[u8]>)?;
        // The promise of no read before the window's end stays with the calendar; a new mark
        // is unread.
        if swapped.is_ok()
            && let Some(read) = reads.get_mut(&key)
        {
            read.generation = 0;
        }
        Ok(swapped.is_ok())
    }

    fn mark_unread(&self, tenant: &str, user: &str) -> Result<UnreadMark, StoreError> {
        let key = user_key(tenant, user);
        // Under the lock `read_dirty` takes, so no read slips between the check and the write.
        let reads = self.read_marks.lock();
        let window = reads.get(&key).copied();
        let read = window.map_or(0, |w| w.generation);
        let mut created = false;
        let next = self.dirty.update_and_fetch(&key, |old| {
            created = old.is_none();
            let n = old.and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_be_bytes).unwrap_or(0);
            Some((if n > read { n } else { n + 1 }).to_be_bytes().to_vec())
        })?;
        let generation = next.and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok()).map(u64::from_be_bytes).unwrap_or(1);
        let now = std::time::Instant::now();
        let unread_until = window.map(|w| w.unread_until()).filter(|at| *at > now);
        Ok(UnreadMark { generation, unread_until, created })
    }

    fn read_dirty(
        &self,
        tenant: &str,
        user: &str,
        spacing: std::time::Duration,
        busy_for: std::time::Duration,
    ) -> Result<MarkRead, StoreError> {
        let key = user_key(tenant, user);
        let mut reads = self.read_marks.lock();
        let generation = self
            .dirty
            .get(&key)?
            .map(|v| <[u8; 8]>::try_from(v.as_ref()).map(u64::from_be_bytes))
            .transpose()
            .map_err(|_| StoreError::Corrupt("dirty generation".into()))?;
        let now = std::time::Instant::now();
        let last = reads.get(&key).copied();
        if let Some(last) = last.filter(|w| w.next_read > now) {
            if generation.is_some() {
                return Ok(MarkRead::NotBefore(last.next_read - now));
            }
            // Nothing to read, and nothing refused; the open window stays.
            return Ok(MarkRead::Read(None));
        }
        let busy_until = last.and_then(|w| w.busy_until).max((!busy_for.is_zero()).then(|| now + busy_for));
        let Some(generation) = generation else {
            // Nothing to read; the window opens (a mark made from now on rests on it).
            reads.insert(key, ReadMark { generation: 0, next_read: now + spacing, busy_until });
            return Ok(MarkRead::Read(None));
        };
        if busy_until.is_some_and(|b| b > now) {
            // Busy: the next read finds a newer generation unread, written with this read.
            self.dirty.insert(&key, &(generation + 1).to_be_bytes())?;
        }
        reads.insert(key, ReadMark { generation, next_read: now + spacing, busy_until });
        Ok(MarkRead::Read(Some(generation)))
    }

    fn put_channel(&self, channel: &ChannelRecord) -> Result<(), StoreError> {
        let value = encode(channel)?;
        let index = event_key(&channel.tenant, &channel.user, &channel.id);
        let owner = user_key(&channel.tenant, &channel.user);
        let _writes = self.channel_writes.lock();
        (&self.users, &self.channels, &self.user_channels)
            .transaction(|(users, channels, user_channels)| -> TxResult<()> {
                if !channel.orphaned && users.get(owner.as_slice())?.is_none() {
                    return gone();
                }
                channels.insert(channel.id.as_bytes(), value.as_slice())?;
                user_channels.insert(index.as_slice(), &[] as &[u8])?;
                Ok(())
            })
            .map_err(tx_error)?;
        self.channel_index.write().insert(channel.id.clone(), Some(Arc::new(ChannelAuth::of(channel))));
        Ok(())
    }

    fn channel_auth(&self, id: &str) -> Result<Option<Arc<ChannelAuth>>, StoreError> {
        match self.channel_index.read().get(id) {
            None => Ok(None),
            Some(Some(auth)) => Ok(Some(auth.clone())),
            Some(None) => Err(StoreError::Corrupt(format!("channel {id}"))),
        }
    }

    fn channel(&self, id: &str) -> Result<Option<ChannelRecord>, StoreError> {
        self.channels.get(id.as_bytes())?.map(|v| decode(&v)).transpose()
    }

    fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        self.channels.iter().values().map(|v| decode(&v?)).collect()
    }

    fn channels_of(&self, tenant: &str, user: &str) -> Result<Vec<ChannelRecord>, StoreError> {
        let prefix = calendar_prefix(tenant, user);
        let mut out = Vec::new();
        for k in self.user_channels.scan_prefix(&prefix).keys() {
            let k = k?;
            let id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            if let Some(c) = self.channel(&id)? {
                out.push(c);
            }
        }
        Ok(out)
    }

    fn delete_channel(&self, id: &str) -> Result<(), StoreError> {
        let _writes = self.channel_writes.lock();
        let Some(channel) = self.channel(id)? else { return Ok(()) };
        let index = event_key(&channel.tenant, &channel.user, &channel.id);
        (&self.channels, &self.user_channels)
            .transaction(|(channels, user_channels)| -> TxResult<()> {
                channels.remove(id.as_bytes())?;
                user_channels.remove(index.as_slice())?;
                Ok(())
            })
            .map_err(tx_error)?;
        self.channel_index.write().remove(id);
        Ok(())
    }

    fn presence_record(&self, tenant: &str, user: &str) -> Result<Option<PresenceRecord>, StoreError> {
        self.presence.get(user_key(tenant, user))?.map(|v| decode(&v)).transpose()
    }

    fn put_presence_record(&self, tenant: &str, user: &str, record: &PresenceRecord) -> Result<(), StoreError> {
        self.presence.insert(user_key(tenant, user), encode(record)?)?;
        Ok(())
    }

    fn enqueue_message(&self, record: &PresenceRecord, message: &OutboxMessage) -> Result<(), StoreError> {
        let (rk, rv) = (user_key(&message.tenant, &message.user), encode(record)?);
        let (mk, mv) = (outbox_key(&message.tenant, &message.user, message.sequence), encode(message)?);
        let older: Vec<sled::IVec> = self
            .outbox
            .scan_prefix(calendar_prefix(&message.tenant, &message.user))
            .keys()
            .filter(|k| k.as_ref().map_or(true, |k| k.as_ref() < mk.as_slice()))
            .collect::<Result<_, _>>()?;
        (&self.users, &self.presence, &self.outbox)
            .transaction(|(users, presence, outbox)| -> TxResult<()> {
                if users.get(rk.as_slice())?.is_none() {
                    return gone();
                }
                for k in &older {
                    outbox.remove(k)?;
                }
                presence.insert(rk.as_slice(), rv.as_slice())?;
                outbox.insert(mk.as_slice(), mv.as_slice())?;
                Ok(())
            })
            .map_err(tx_error)
    }

    fn outbox(&self) -> Result<Vec<OutboxMessage>, StoreError> {
        self.outbox.iter().values().map(|v| decode(&v?)).collect()
    }

    fn outbox_message(&self, tenant: &str, user: &str, sequence: u64) -> Result<Option<OutboxMessage>, StoreError> {
        self.outbox.get(outbox_key(tenant, user, sequence))?.map(|v| decode(&v)).transpose()
    }

    fn update_message(&self, message: &OutboxMessage) -> Result<bool, StoreError> {
        let (key, value) = (outbox_key(&message.tenant, &message.user, message.sequence), encode(message)?);
        self.outbox
            .transaction(|outbox| -> TxResult<bool> {
                if outbox.get(key.as_slice())?.is_none() {
                    return Ok(false);
                }
                outbox.insert(key.as_slice(), value.as_slice())?;
                Ok(true)
            })
            .map_err(tx_error)
    }

    fn delete_message(&self, tenant: &str, user: &str, sequence: u64) -> Result<(), StoreError> {
        self.outbox.remove(outbox_key(tenant, user, sequence))?;
        Ok(())
    }

    fn contact_book(&self, tenant: &str, book: &str) -> Result<Option<BookState>, StoreError> {
        self.contact_books.get(user_key(tenant, book))?.map(|v| decode(&v)).transpose()
    }

    fn contact_books(&self, tenant: &str) -> Result<Vec<(String, BookState)>, StoreError> {
        let prefix = tenant_prefix(tenant);
        self.contact_books
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((String::from_utf8_lossy(&k[prefix.len()..]).into_owned(), decode(&v)?))
            })
            .collect()
    }

    fn apply_contacts(
        &self,
        tenant: &str,
        book: &str,
        wipe: bool,
        changes: &[Change],
        state: &BookState,
    ) -> Result<usize, StoreError> {
        let prefix = calendar_prefix(tenant, book);
        let existing: Vec<sled::IVec> =
            if wipe { self.contacts.scan_prefix(&prefix).keys().collect::<Result<_, _>>()? } else { Vec::new() };
        let mut writes: Vec<(Vec<u8>, Option<Vec<u8>>)> = existing.iter().map(|k| (k.to_vec(), None)).collect();
        for c in changes {
            match c {
                Change::Upsert(contact) => {
                    writes.push((event_key(tenant, book, &contact.resource_name), Some(encode(contact.as_ref())?)))
                }
                Change::Delete(name) => writes.push((event_key(tenant, book, name), None)),
            }
        }
        let state_key = user_key(tenant, book);
        let state_bytes = encode(state)?;
        (&self.contacts, &self.contact_books)
            .transaction(|(contacts, books)| -> TxResult<()> {
                for (k, v) in &writes {
                    match v {
                        Some(v) => contacts.insert(k.as_slice(), v.as_slice())?,
                        None => contacts.remove(k.as_slice())?,
                    };
                }
                books.insert(state_key.as_slice(), state_bytes.as_slice())?;
                Ok(())
            })
            .map_err(tx_error)?;
        Ok(self.contacts.scan_prefix(&prefix).count())
    }

    fn contacts(&self, tenant: &str) -> Result<Vec<Contact>, StoreError> {
        self.contacts.scan_prefix(tenant_prefix(tenant)).values().map(|v| decode(&v?)).collect()
    }

    fn delete_contact_book(&self, tenant: &str, book: &str) -> Result<(), StoreError> {
        let keys: Vec<sled::IVec> =
            self.contacts.scan_prefix(calendar_prefix(tenant, book)).keys().collect::<Result<_, _>>()?;
        for k in keys {
            self.contacts.remove(k)?;
        }
        self.contact_books.remove(user_key(tenant, book))?;
        Ok(())
    }

    fn put_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        let value = encode(token)?;
        (&self.tokens, &self.token_digests)
            .transaction(|(tokens, digests)| -> TxResult<()> {
                tokens.insert(token.id.as_bytes(), value.as_slice())?;
                digests.insert(token.digest.as_bytes(), token.id.as_bytes())?;
                Ok(())
            })
            .map_err(tx_error)
    }

    fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.tokens.get(id.as_bytes())?.map(|v| decode(&v)).transpose()
    }

    fn token_by_digest(&self, digest: &str) -> Result<Option<TokenRecord>, StoreError> {
        match self.token_digests.get(digest.as_bytes())? {
            None => Ok(None),
            Some(id) => self.tokens.get(id)?.map(|v| decode(&v)).transpose(),
        }
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.tokens.iter().values().map(|v| decode(&v?)).collect()
    }

    fn update_token(&self, id: &str, change: impl Fn(&mut TokenRecord)) -> Result<Option<TokenRecord>, StoreError> {
        let mut damaged = None;
        let after = self.tokens.update_and_fetch(id.as_bytes(), |old| {
            let old = old?;
            match decode::<TokenRecord>(old).and_then(|mut t| {
                change(&mut t);
                encode(&t)
            }) {
                Ok(v) => Some(sled::IVec::from(v)),
                Err(e) => {
                    damaged = Some(e);
                    Some(sled::IVec::from(old))
                }
            }
        })?;
        if let Some(e) = damaged {
            return Err(e);
        }
        after.map(|v| decode(&v)).transpose()
    }

    fn delete_token(&self, id: &str) -> Result<(), StoreError> {
        let Some(token) = self.token(id)? else { return Ok(()) };
        (&self.tokens, &self.token_digests)
            .transaction(|(tokens, digests)| -> TxResult<()> {
                tokens.remove(id.as_bytes())?;
                digests.remove(token.digest.as_bytes())?;
                Ok(())
            })
            .map_err(tx_error)
    }

    fn next_audit_id(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()?)
    }

    fn put_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let value = encode(entry)?;
        let index = entry.tenant.as_deref().map(|t| audit_tenant_key(t, entry.id));
        (&self.audit, &self.audit_tenants)
            .transaction(|(audit, tenants)| -> TxResult<()> {
                audit.insert(&entry.id.to_be_bytes(), value.as_slice())?;
                if let Some(k) = &index {
                    tenants.insert(k.as_slice(), &[])?;
                }
                Ok(())
            })
            .map_err(tx_error)
    }

    fn audit(&self, tenant: Option<&str>, before: Option<u64>, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let before = before.unwrap_or(u64::MAX);
        let mut out = Vec::new();
        match tenant {
            None => {
                for v in self.audit.range(..before.to_be_bytes()).values().rev().take(limit) {
                    out.push(decode(&v?)?);
                }
            }
            Some(t) => {
                let (start, end) = (audit_tenant_key(t, 0), audit_tenant_key(t, before));
                for k in self.audit_tenants.range(start..end).keys().rev() {
                    if out.len() >= limit {
                        break;
                    }
                    let k = k?;
                    let id = k.get(k.len().saturating_sub(8)..).unwrap_or_default();
                    // An index entry whose entry was pruned meanwhile is skipped.
                    if let Some(v) = self.audit.get(id)? {
                        out.push(decode(&v)?);
                    }
                }
            }
        }
        Ok(out)
    }

    fn prune_audit(&self, cutoff: chrono::DateTime<chrono::Utc>) -> Result<usize, StoreError> {
        let mut removed = 0;
        // Ids rise with time, so the old entries are the first ones.
        for item in self.audit.iter() {
            let (k, v) = item?;
            let entry: AuditEntry = decode(&v)?;
            if entry.at >= cutoff {
                break;
            }
            if let Some(t) = &entry.tenant {
                self.audit_tenants.remove(audit_tenant_key(t, entry.id))?;
            }
            self.audit.remove(k)?;
            removed += 1;
        }
        Ok(removed)
    }

    fn all_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.users.iter().values().map(|v| decode(&v?)).collect()
    }

    fn all_credentials(&self) -> Result<Vec<(String, StoredCredentials)>, StoreError> {
        self.credentials
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                Ok((String::from_utf8_lossy(&k).into_owned(), decode(&v)?))
            })
            .collect()
    }

    fn presence_records(&self) -> Result<Vec<(String, String, PresenceRecord)>, StoreError> {
        pairs(&self.presence, "presence key")
    }

    fn all_contact_books(&self) -> Result<Vec<(String, String, BookState)>, StoreError> {
        pairs(&self.contact_books, "contact book key")
    }

    fn book_contacts(&self, tenant: &str, book: &str) -> Result<Vec<Contact>, StoreError> {
        self.contacts.scan_prefix(calendar_prefix(tenant, book)).values().map(|v| decode(&v?)).collect()
    }

    fn put_retired_credentials(&self, tenant: &str, credentials: &StoredCredentials) -> Result<(), StoreError> {
        self.retired_credentials.insert(tenant.as_bytes(), encode(credentials)?)?;
        Ok(())
    }

    fn restore_dirty(&self, tenant: &str, user: &str, generation: u64) -> Result<(), StoreError> {
        self.dirty.insert(user_key(tenant, user), &generation.to_be_bytes())?;
        Ok(())
    }

    fn raise_audit_ids(&self, id: u64) -> Result<(), StoreError> {
        // sled's id generator only counts up; it is cheap (a counter persisted in batches).
        while self.db.generate_id()? < id {}
        Ok(())
    }

    fn flush_blocking(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

/// The embedded store: one process, one data directory.
pub struct SledStore(Arc<Sled>);

impl SledStore {
    /// Opens (or creates) the database under `dir`, checking the schema version.
    pub fn open(dir: &Path, cache_capacity_mb: u64) -> Result<Self, StoreError> {
        Ok(SledStore(Arc::new(Sled::open(dir, cache_capacity_mb)?)))
    }

    /// Runs a long operation (a flush, a phonebook of 100,000 entries) off the async threads.
    async fn off_thread<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Sled) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.0.clone();
        tokio::task::spawn_blocking(move || op(&db)).await.map_err(|e| StoreError::Background(e.to_string()))?
    }
}

/// `Store` for `SledStore`: each listed operation runs in place (sled answers from memory and
/// logs in the background, so these return in microseconds); the rest are written out below.
macro_rules! sled_store {
    ($(fn $name:ident(&self $(, $arg:ident : $ty:ty)*) -> $ret:ty;)*) => {
        #[async_trait::async_trait]
        impl Store for SledStore {
            $(async fn $name(&self $(, $arg: $ty)*) -> $ret { self.0.$name($($arg),*) })*

            async fn apply_contacts(
                &self,
                tenant: &str,
                book: &str,
                wipe: bool,
                changes: &[Change],
                state: &BookState,
            ) -> Result<usize, StoreError> {
                let (tenant, book, changes, state) = (tenant.to_owned(), book.to_owned(), changes.to_vec(), state.clone());
                self.off_thread(move |db| db.apply_contacts(&tenant, &book, wipe, &changes, &state)).await
            }

            async fn flush(&self) -> Result<(), StoreError> {
                self.off_thread(|db| db.flush_blocking()).await
            }

            async fn update_token(
                &self,
                id: &str,
                change: &(dyn for<'t> Fn(&'t mut TokenRecord) + Send + Sync),
            ) -> Result<Option<TokenRecord>, StoreError> {
                self.0.update_token(id, |t: &mut TokenRecord| change(t))
            }
        }
    };
}

sled_store! {
    fn put_tenant(&self, tenant: &TenantRecord) -> Result<(), StoreError>;
    fn tenant(&self, id: &str) -> Result<Option<TenantRecord>, StoreError>;
    fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError>;
    fn delete_tenant(&self, id: &str) -> Result<bool, StoreError>;
    fn put_credentials(&self, tenant: &str, credentials: &StoredCredentials) -> Result<(), StoreError>;
    fn credentials(&self, tenant: &str) -> Result<Option<StoredCredentials>, StoreError>;
    fn retired_credentials(&self, tenant: &str) -> Result<Option<StoredCredentials>, StoreError>;
    fn retired_credential_tenants(&self) -> Result<Vec<String>, StoreError>;
    fn delete_retired_credentials(&self, tenant: &str) -> Result<(), StoreError>;
    fn put_user(&self, user: &UserRecord) -> Result<(), StoreError>;
    fn user(&self, tenant: &str, email: &str) -> Result<Option<UserRecord>, StoreError>;
    fn users(&self, tenant: &str) -> Result<Vec<UserRecord>, StoreError>;
    fn delete_user(&self, tenant: &str, email: &str) -> Result<bool, StoreError>;
    fn calendar_state(&self, tenant: &str, user: &str) -> Result<Option<CalendarState>, StoreError>;
    fn put_calendar_state(&self, tenant: &str, user: &str, state: &CalendarState) -> Result<(), StoreError>;
    fn apply_sync(&self, tenant: &str, user: &str, wipe: bool, changes: &[EventChange], state: &CalendarState) -> Result<usize, StoreError>;
    fn events(&self, tenant: &str, user: &str) -> Result<Vec<StoredEvent>, StoreError>;
    fn mark_dirty(&self, tenant: &str, user: &str) -> Result<u64, StoreError>;
    fn dirty_calendars(&self) -> Result<Vec<(String, String, u64)>, StoreError>;
    fn clear_dirty(&self, tenant: &str, user: &str, generation: u64) -> Result<bool, StoreError>;
    fn mark_unread(&self, tenant: &str, user: &str) -> Result<UnreadMark, StoreError>;
    fn read_dirty(&self, tenant: &str, user: &str, spacing: std::time::Duration, busy_for: std::time::Duration) -> Result<MarkRead, StoreError>;
    fn put_channel(&self, channel: &ChannelRecord) -> Result<(), StoreError>;
    fn channel(&self, id: &str) -> Result<Option<ChannelRecord>, StoreError>;
    fn channel_auth(&self, id: &str) -> Result<Option<Arc<ChannelAuth>>, StoreError>;
    fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError>;
    fn channels_of(&self, tenant: &str, user: &str) -> Result<Vec<ChannelRecord>, StoreError>;
    fn delete_channel(&self, id: &str) -> Result<(), StoreError>;
    fn presence_record(&self, tenant: &str, user: &str) -> Result<Option<PresenceRecord>, StoreError>;
    fn put_presence_record(&self, tenant: &str, user: &str, record: &PresenceRecord) -> Result<(), StoreError>;
    fn enqueue_message(&self, record: &PresenceRecord, message: &OutboxMessage) -> Result<(), StoreError>;
    fn outbox(&self) -> Result<Vec<OutboxMessage>, StoreError>;
    fn outbox_message(&self, tenant: &str, user: &str, sequence: u64) -> Result<Option<OutboxMessage>, StoreError>;
    fn update_message(&self, message: &OutboxMessage) -> Result<bool, StoreError>;
    fn delete_message(&self, tenant: &str, user: &str, sequence: u64) -> Result<(), StoreError>;
    fn contact_book(&self, tenant: &str, book: &str) -> Result<Option<BookState>, StoreError>;
    fn contact_books(&self, tenant: &str) -> Result<Vec<(String, BookState)>, StoreError>;
    fn contacts(&self, tenant: &str) -> Result<Vec<Contact>, StoreError>;
    fn delete_contact_book(&self, tenant: &str, book: &str) -> Result<(), StoreError>;
    fn put_token(&self, token: &TokenRecord) -> Result<(), StoreError>;
    fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError>;
    fn token_by_digest(&self, digest: &str) -> Result<Option<TokenRecord>, StoreError>;
    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;
    fn delete_token(&self, id: &str) -> Result<(), StoreError>;
    fn next_audit_id(&self) -> Result<u64, StoreError>;
    fn put_audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    fn audit(&self, tenant: Option<&str>, before: Option<u64>, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;
    fn prune_audit(&self, cutoff: chrono::DateTime<chrono::Utc>) -> Result<usize, StoreError>;
    fn all_users(&self) -> Result<Vec<UserRecord>, StoreError>;
    fn all_credentials(&self) -> Result<Vec<(String, StoredCredentials)>, StoreError>;
    fn presence_records(&self) -> Result<Vec<(String, String, PresenceRecord)>, StoreError>;
    fn all_contact_books(&self) -> Result<Vec<(String, String, BookState)>, StoreError>;
    fn book_contacts(&self, tenant: &str, book: &str) -> Result<Vec<Contact>, StoreError>;
    fn put_retired_credentials(&self, tenant: &str, credentials: &StoredCredentials) -> Result<(), StoreError>;
    fn restore_dirty(&self, tenant: &str, user: &str, generation: u64) -> Result<(), StoreError>;
    fn raise_audit_ids(&self, id: u64) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    // The behaviour both backends share is tested in tests/store_conformance.rs; this is what
    // only sled has: the in-memory channel index, loaded at open.
    use super::*;
    use chrono::Utc;

    #[tokio::test]
    async fn a_damaged_channel_is_reported_as_damaged_not_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let c = ChannelRecord {
            id: "ch-1".into(),
            token_digest: "ab".repeat(32),
            tenant: "acme".into(),
            user: "a@x".into(),
            resource_id: None,
            expiration: None,
            created_at: Utc::now(),
            orphaned: true,
        };
        {
            let s = SledStore::open(dir.path(), 8).unwrap();
            s.put_channel(&c).await.unwrap();
            s.0.channels.insert("ch-3", &b"{not json"[..]).unwrap();
            s.flush().await.unwrap();
        }
        let s = SledStore::open(dir.path(), 8).unwrap();
        assert_eq!(s.channel_auth("ch-1").await.unwrap(), Some(Arc::new(ChannelAuth::of(&c))), "loaded at open");
        assert!(matches!(s.channel_auth("ch-3").await, Err(StoreError::Corrupt(_))), "damaged, not unknown");
    }
}
