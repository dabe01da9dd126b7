//! The sled implementation of `Store`.
//!
//! Trees: `meta` (schema version), `tenants` (id → JSON), `credentials` (tenant → JSON with the
//! sealed key file), `users` and `calendars` (`tenant \0 email` → JSON), `events`
//! (`tenant \0 email \0 event id` → JSON), `dirty` (`tenant \0 email` → generation, u64 BE),
//! `channels` (channel id → JSON) with its index `user_channels` (`tenant \0 email \0 id`),
//! `presence` (`tenant \0 email` → what the phone system was last told), `outbox`
//! (`tenant \0 email \0 sequence` (u64 BE) → a message to deliver), `contact_books`
//! (`tenant \0 book` → its sync state) and `contacts` (`tenant \0 book \0 resource name` →
//! a phonebook entry). Values are JSON: small, readable with any sled tool, and
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
    CalendarState, ChannelAuth, ChannelRecord, EventChange, OutboxMessage, PresenceRecord, SCHEMA_VERSION, Store,
    StoreError, StoredCredentials,
};
use crate::contacts::model::{BookState, Change, Contact};
use crate::model::event::StoredEvent;
use crate::model::tenant::TenantRecord;
use crate::model::user::UserRecord;

pub struct SledStore {
    db: sled::Db,
    tenants: sled::Tree,
    credentials: sled::Tree,
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
    /// Channel id → what verifying its notifications needs (`None`: its record is damaged).
    channel_index: RwLock<HashMap<String, Option<Arc<ChannelAuth>>>>,
    /// Held across a channel write and its index update, so both change in the same order.
    channel_writes: Mutex<()>,
}

type TxResult<T> = Result<T, sled::transaction::ConflictableTransactionError<()>>;

fn tx_error(e: sled::transaction::TransactionError<()>) -> StoreError {
    match e {
        sled::transaction::TransactionError::Storage(e) => StoreError::Db(e),
        sled::transaction::TransactionError::Abort(()) => StoreError::Corrupt("transaction aborted".into()),
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

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl SledStore {
    /// Opens (or creates) the database under `dir`, checking the schema version.
    pub fn open(dir: &Path, cache_capacity_mb: u64) -> Result<Self, StoreError> {
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
                    return Err(StoreError::NewerSchema { found });
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
        Ok(SledStore {
            tenants: db.open_tree("tenants")?,
            credentials: db.open_tree("credentials")?,
            users: db.open_tree("users")?,
            calendars: db.open_tree("calendars")?,
            events: db.open_tree("events")?,
            dirty: db.open_tree("dirty")?,
            channels,
            channel_index: RwLock::new(index),
            channel_writes: Mutex::new(()),
            user_channels: db.open_tree("user_channels")?,
            presence: db.open_tree("presence")?,
            outbox: db.open_tree("outbox")?,
            contact_books: db.open_tree("contact_books")?,
            contacts: db.open_tree("contacts")?,
            db,
        })
    }
}

impl Store for SledStore {
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
        let prefix = tenant_prefix(id);
        let keys = |tree: &sled::Tree| -> Result<Vec<sled::IVec>, StoreError> {
            Ok(tree.scan_prefix(&prefix).keys().collect::<Result<_, _>>()?)
        };
        let user_data = [&self.users, &self.calendars, &self.events, &self.dirty, &self.presence, &self.outbox]
            .into_iter()
            .map(keys)
            .collect::<Result<Vec<_>, _>>()?;
        let existed = (
            &self.tenants,
            &self.credentials,
            &self.users,
            &self.calendars,
            &self.events,
            &self.dirty,
            &self.presence,
            &self.outbox,
        )
            .transaction(
                |(tenants, credentials, users, calendars, events, dirty, presence, outbox)| -> TxResult<bool> {
                    let existed = tenants.remove(id.as_bytes())?.is_some();
                    credentials.remove(id.as_bytes())?;
                    for (tree, ks) in [users, calendars, events, dirty, presence, outbox].into_iter().zip(&user_data) {
                        for k in ks {
                            tree.remove(k)?;
                        }
                    }
                    Ok(existed)
                },
            )
            .map_err(tx_error)?;
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
        let existed = (&self.users, &self.calendars, &self.events, &self.dirty, &self.presence, &self.outbox)
            .transaction(|(users, calendars, events, dirty, presence, outbox)| -> TxResult<bool> {
                let existed = users.remove(key.as_slice())?.is_some();
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
        self.delete_contact_book(tenant, &crate::contacts::personal_book(email))?;
        Ok(existed)
    }

    fn calendar_state(&self, tenant: &str, user: &str) -> Result<Option<CalendarState>, StoreError> {
        self.calendars.get(user_key(tenant, user))?.map(|v| decode(&v)).transpose()
    }

    fn put_calendar_state(&self, tenant: &str, user: &str, state: &CalendarState) -> Result<(), StoreError> {
        self.calendars.insert(user_key(tenant, user), encode(state)?)?;
        Ok(())
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
        (&self.events, &self.calendars)
            .transaction(|(events, calendars)| -> TxResult<()> {
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
        let swapped = self.dirty.compare_and_swap(
            user_key(tenant, user),
            Some(&generation.to_be_bytes()[..]),
            None as Option<&[u8]>,
        )?;
        Ok(swapped.is_ok())
    }

    fn put_channel(&self, channel: &ChannelRecord) -> Result<(), StoreError> {
        let value = encode(channel)?;
        let index = event_key(&channel.tenant, &channel.user, &channel.id);
        let _writes = self.channel_writes.lock();
        (&self.channels, &self.user_channels)
            .transaction(|(channels, user_channels)| -> TxResult<()> {
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
        (&self.presence, &self.outbox)
            .transaction(|(presence, outbox)| -> TxResult<()> {
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

    fn update_message(&self, message: &OutboxMessage) -> Result<(), StoreError> {
        self.outbox.insert(outbox_key(&message.tenant, &message.user, message.sequence), encode(message)?)?;
        Ok(())
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

    fn flush_blocking(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tenant::ContactsSettings;
    use chrono::Utc;

    fn tenant(id: &str) -> TenantRecord {
        TenantRecord {
            id: id.into(),
            domain: "acme.se".into(),
            directory_admin: None,
            default_region: "SE".into(),
            phone_system: None,
            contacts: ContactsSettings::default(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
            export_token_digest: None,
        }
    }

    fn user(tenant: &str, email: &str) -> UserRecord {
        UserRecord {
            tenant: tenant.into(),
            email: email.into(),
            external_id: None,
            profiles: vec![],
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn records_survive_reopening_and_tenants_delete_with_their_users() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path(), 8).unwrap();
            s.put_tenant(&tenant("acme")).unwrap();
            s.put_tenant(&tenant("acme2")).unwrap();
            s.put_user(&user("acme", "a@acme.se")).unwrap();
            s.put_user(&user("acme2", "b@acme.se")).unwrap();
            s.flush_blocking().unwrap();
        }
        let s = SledStore::open(dir.path(), 8).unwrap();
        assert_eq!(s.tenants().unwrap().len(), 2);
        assert_eq!(s.users("acme").unwrap().len(), 1, "prefix scans stop at the tenant boundary");
        assert!(s.delete_tenant("acme").unwrap());
        assert!(s.users("acme").unwrap().is_empty());
        assert_eq!(s.users("acme2").unwrap().len(), 1);
        assert!(!s.delete_tenant("acme").unwrap());
    }

    fn event(id: &str, master: Option<&str>) -> StoredEvent {
        StoredEvent {
            id: id.into(),
            status: crate::model::event::Status::Confirmed,
            summary: Some("x".into()),
            start: None,
            end: None,
            recurrence: vec![],
            recurring_event_id: master.map(str::to_owned),
            original_start: None,
            transparent: false,
            event_type: "default".into(),
            visibility: "default".into(),
            self_response: None,
            updated: None,
        }
    }

    #[test]
    fn a_sync_result_lands_whole_and_deleting_a_series_takes_its_exceptions() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 8).unwrap();
        let st = CalendarState { sync_token: Some("t1".into()), ..Default::default() };
        let ups = [event("a", None), event("s", None), event("s_1", Some("s")), event("b", None)]
            .map(|e| EventChange::Upsert(Box::new(e)));
        s.apply_sync("acme", "u@x", false, &ups, &st).unwrap();
        s.apply_sync("acme", "v@x", false, &[EventChange::Upsert(Box::new(event("other", None)))], &st).unwrap();
        let st2 = CalendarState { sync_token: Some("t2".into()), ..Default::default() };
        s.apply_sync("acme", "u@x", false, &[EventChange::Delete("s".into()), EventChange::Delete("a".into())], &st2)
            .unwrap();
        let ids: Vec<String> = s.events("acme", "u@x").unwrap().into_iter().map(|e| e.id).collect();
        assert_eq!(ids, ["b"]);
        assert_eq!(s.calendar_state("acme", "u@x").unwrap().unwrap().sync_token.as_deref(), Some("t2"));
        s.apply_sync("acme", "u@x", true, &[EventChange::Upsert(Box::new(event("c", None)))], &st).unwrap();
        let ids: Vec<String> = s.events("acme", "u@x").unwrap().into_iter().map(|e| e.id).collect();
        assert_eq!(ids, ["c"], "a wipe replaces everything");
        assert_eq!(s.events("acme", "v@x").unwrap().len(), 1, "other calendars untouched");
        assert!(s.delete_user("acme", "u@x").unwrap() || s.events("acme", "u@x").unwrap().is_empty());
        assert!(s.events("acme", "u@x").unwrap().is_empty());
    }

    #[test]
    fn dirty_marks_clear_only_at_their_generation() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 8).unwrap();
        assert_eq!(s.mark_dirty("acme", "u@x").unwrap(), 1);
        assert_eq!(s.mark_dirty("acme", "u@x").unwrap(), 2);
        assert!(!s.clear_dirty("acme", "u@x", 1).unwrap(), "a newer mark survives");
        assert_eq!(s.dirty_calendars().unwrap(), [("acme".to_owned(), "u@x".to_owned(), 2)]);
        assert!(s.clear_dirty("acme", "u@x", 2).unwrap());
        assert!(s.dirty_calendars().unwrap().is_empty());
    }

    #[test]
    fn deleting_a_user_or_tenant_takes_everything_of_theirs() {
        use crate::contacts::model::{BookState, Change, Contact, Source};
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 8).unwrap();
        s.put_tenant(&tenant("acme")).unwrap();
        s.put_user(&user("acme", "a@x")).unwrap();
        let message = OutboxMessage {
            tenant: "acme".into(),
            user: "a@x".into(),
            sequence: 1,
            id: "msg_1".into(),
            body: "{}".into(),
            created_at: Utc::now(),
            attempts: 0,
            next_attempt_at: Utc::now(),
            last_error: None,
        };
        s.enqueue_message(&PresenceRecord { sequence: 1, last: None }, &message).unwrap();
        let contact = |book: &str| Contact {
            resource_name: format!("people/{book}"),
            source: Source::Shared,
            name: None,
            given_name: None,
            family_name: None,
            organization: None,
            title: None,
            department: None,
            emails: vec![],
            phones: vec![],
        };
        s.apply_contacts("acme", "directory", false, &[Change::Upsert(Box::new(contact("d")))], &BookState::default())
            .unwrap();
        s.apply_contacts(
            "acme",
            "personal:a@x",
            false,
            &[Change::Upsert(Box::new(contact("p")))],
            &BookState::default(),
        )
        .unwrap();
        assert!(s.delete_user("acme", "a@x").unwrap());
        assert!(s.outbox().unwrap().is_empty(), "a deleted user's switches are not sent");
        assert!(s.presence_record("acme", "a@x").unwrap().is_none());
        assert_eq!(s.contacts("acme").unwrap().len(), 1, "their own contacts go, the directory stays");
        assert!(s.delete_tenant("acme").unwrap());
        assert!(s.contacts("acme").unwrap().is_empty() && s.contact_books("acme").unwrap().is_empty());
    }

    #[test]
    fn the_channel_index_follows_every_channel_write_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = ChannelRecord {
            id: "ch-1".into(),
            token_digest: crate::sync::channels::hex(&crate::app::sha256(b"secret")),
            tenant: "acme".into(),
            user: "a@x".into(),
            resource_id: None,
            expiration: None,
            created_at: Utc::now(),
            orphaned: false,
        };
        {
            let s = SledStore::open(dir.path(), 8).unwrap();
            assert_eq!(s.channel_auth("ch-1").unwrap(), None);
            s.put_channel(&c).unwrap();
            let auth = s.channel_auth("ch-1").unwrap().unwrap();
            assert_eq!(auth.token_digest, Some(crate::app::sha256(b"secret")));
            assert_eq!((auth.tenant.as_str(), auth.user.as_str(), auth.resource_id.as_deref()), ("acme", "a@x", None));
            c.resource_id = Some("res-1".into());
            c.orphaned = true;
            s.put_channel(&c).unwrap();
            let auth = s.channel_auth("ch-1").unwrap().unwrap();
            assert!(auth.orphaned && auth.resource_id.as_deref() == Some("res-1"), "an update replaces the entry");
            let mut other = c.clone();
            other.id = "ch-2".into();
            s.put_channel(&other).unwrap();
            s.delete_channel("ch-2").unwrap();
            assert_eq!(s.channel_auth("ch-2").unwrap(), None, "a deleted channel is unknown at once");
            s.flush_blocking().unwrap();
        }
        let s = SledStore::open(dir.path(), 8).unwrap();
        assert_eq!(s.channel_auth("ch-1").unwrap(), Some(Arc::new(ChannelAuth::of(&c))), "loaded at open");
        assert_eq!(s.channel_auth("ch-2").unwrap(), None);
        s.channels.insert("ch-3", &b"{not json"[..]).unwrap();
        drop(s);
        let s = SledStore::open(dir.path(), 8).unwrap();
        assert!(matches!(s.channel_auth("ch-3"), Err(StoreError::Corrupt(_))), "damaged, not unknown");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.open_tree("meta").unwrap().insert("schema_version", &99u32.to_be_bytes()).unwrap();
            db.flush().unwrap();
        }
        assert!(matches!(SledStore::open(dir.path(), 8), Err(StoreError::NewerSchema { found: 99 })));
    }
}
