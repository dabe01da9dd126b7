//! `gwsync store copy`: moves everything from a stopped store into an empty one (sled →
//! PostgreSQL or back, or between two of a kind), then verifies by counting every kind of
//! record on both sides.
//!
//! It goes through the `Store` trait only, so whatever either backend keeps, the copy keeps
//! the same way (ids, sequences, dirty generations, retired keys, the audit id counter).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use secrecy::{ExposeSecret, SecretString};

use super::pg_store::PgStore;
use super::sled_store::SledStore;
use super::{EventChange, PresenceRecord, SharedStore, StoreError};
use crate::model::contact::Change;

/// One side of a copy: a data directory (sled under `<dir>/db`, as `serve` uses it) or a
/// PostgreSQL URL.
pub enum Location {
    Sled(PathBuf),
    Postgres(SecretString),
}

impl Location {
    pub fn parse(text: &str) -> Location {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Location::Postgres(SecretString::from(text.to_owned()))
        } else {
            Location::Sled(PathBuf::from(text))
        }
    }

    /// Names the location without the URL's password.
    pub fn describe(&self) -> String {
        match self {
            Location::Sled(dir) => format!("data_dir {}", dir.display()),
            Location::Postgres(url) => match url::Url::parse(url.expose_secret()) {
                Ok(mut u) => {
                    if u.password().is_some() {
                        let _ = u.set_password(Some("***"));
                    }
                    format!("PostgreSQL {u}")
                }
                Err(_) => "PostgreSQL (an unreadable URL)".to_owned(),
            },
        }
    }

    /// Opens the store; a source must already exist (sled would create an empty one).
    pub async fn open(&self, source: bool) -> Result<SharedStore> {
        match self {
            Location::Sled(dir) => {
                let db = dir.join("db");
                if source && !db.is_dir() {
                    bail!("{} holds no gwsync database (no {})", self.describe(), db.display());
                }
                let store = SledStore::open(&db, 64).with_context(|| {
                    format!("opening {} (is a gwsync still running on it? stop it first)", self.describe())
                })?;
                Ok(Arc::new(store))
            }
            Location::Postgres(url) => Ok(Arc::new(
                PgStore::connect(url, 4, Duration::from_secs(10))
                    .await
                    .with_context(|| format!("opening {}", self.describe()))?,
            )),
        }
    }
}

/// How many records of each kind a store holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts(pub BTreeMap<&'static str, usize>);

impl Counts {
    pub fn total(&self) -> usize {
        self.0.values().sum()
    }
}

/// Counts every kind of record.
pub async fn counts(store: &SharedStore) -> Result<Counts, StoreError> {
    let mut c = BTreeMap::new();
    let users = store.all_users().await?;
    let (mut calendars, mut events) = (0, 0);
    for u in &users {
        calendars += usize::from(store.calendar_state(&u.tenant, &u.email).await?.is_some());
        events += store.events(&u.tenant, &u.email).await?.len();
    }
    let books = store.all_contact_books().await?;
    let mut contacts = 0;
    for (tenant, book, _) in &books {
        contacts += store.book_contacts(tenant, book).await?.len();
    }
    c.insert("tenants", store.tenants().await?.len());
    c.insert("credentials", store.all_credentials().await?.len());
    c.insert("retired_credentials", store.retired_credential_tenants().await?.len());
    c.insert("users", users.len());
    c.insert("calendars", calendars);
    c.insert("events", events);
    c.insert("dirty", store.dirty_calendars().await?.len());
    c.insert("channels", store.channels().await?.len());
    c.insert("presence", store.presence_records().await?.len());
    c.insert("outbox", store.outbox().await?.len());
    c.insert("contact_books", books.len());
    c.insert("contacts", contacts);
    c.insert("tokens", store.tokens().await?.len());
    c.insert("audit", store.audit(None, None, usize::MAX).await?.len());
    Ok(Counts(c))
}

/// Copies everything from `from` into `to`, which must be empty; returns the counts, verified
/// equal on both sides.
pub async fn copy(from: &SharedStore, to: &SharedStore) -> Result<Counts> {
    let existing = counts(to).await.context("counting the target")?;
    if existing.total() > 0 {
        bail!(
            "the target is not empty ({} records: {}); store copy only fills an empty store",
            existing.total(),
            existing.0.iter().filter(|(_, n)| **n > 0).map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
        );
    }
    for t in from.tenants().await? {
        to.put_tenant(&t).await?;
    }
    for (tenant, c) in from.all_credentials().await? {
        to.put_credentials(&tenant, &c).await?;
    }
    for tenant in from.retired_credential_tenants().await? {
        if let Some(c) = from.retired_credentials(&tenant).await? {
            to.put_retired_credentials(&tenant, &c).await?;
        }
    }
    for u in from.all_users().await? {
        to.put_user(&u).await?;
        let events: Vec<EventChange> =
            from.events(&u.tenant, &u.email).await?.into_iter().map(|e| EventChange::Upsert(Box::new(e))).collect();
        match from.calendar_state(&u.tenant, &u.email).await? {
            Some(state) => {
                to.apply_sync(&u.tenant, &u.email, false, &events, &state).await?;
            }
            None if !events.is_empty() => {
                bail!("{} of {} has events but no calendar state; the source is damaged", u.email, u.tenant)
            }
            None => {}
        }
    }
    for (tenant, user, generation) in from.dirty_calendars().await? {
        to.restore_dirty(&tenant, &user, generation).await?;
    }
    for c in from.channels().await? {
        to.put_channel(&c).await?;
    }
    let presence = from.presence_records().await?;
    let record_of: std::collections::HashMap<(&str, &str), &PresenceRecord> =
        presence.iter().map(|(t, u, r)| ((t.as_str(), u.as_str()), r)).collect();
    // Each user's in sequence order: enqueueing drops a user's older messages.
    for m in from.outbox().await? {
        let record = record_of
            .get(&(m.tenant.as_str(), m.user.as_str()))
            .map(|r| (*r).clone())
            .unwrap_or_else(|| PresenceRecord { sequence: m.sequence, ..Default::default() });
        to.enqueue_message(&record, &m).await?;
    }
    for (tenant, user, record) in &presence {
        to.put_presence_record(tenant, user, record).await?;
    }
    for (tenant, book, state) in from.all_contact_books().await? {
        let entries: Vec<Change> =
            from.book_contacts(&tenant, &book).await?.into_iter().map(|c| Change::Upsert(Box::new(c))).collect();
        to.apply_contacts(&tenant, &book, false, &entries, &state).await?;
    }
    for t in from.tokens().await? {
        to.put_token(&t).await?;
    }
    let audit = from.audit(None, None, usize::MAX).await?;
    for e in audit.iter().rev() {
        to.put_audit(e).await?;
    }
    if let Some(newest) = audit.first() {
        to.raise_audit_ids(newest.id).await?;
    }
    to.flush().await?;

    let (source, target) =
        (counts(from).await.context("counting the source")?, counts(to).await.context("counting the target")?);
    if source != target {
        let differ: Vec<String> = source
            .0
            .iter()
            .filter(|(k, n)| target.0.get(*k) != Some(n))
            .map(|(k, n)| format!("{k}: {n} → {}", target.0.get(k).copied().unwrap_or(0)))
            .collect();
        bail!("the copy does not match its source ({}); the target is incomplete", differ.join(", "));
    }
    Ok(source)
}

/// `gwsync store copy --from … --to …`: returns the report to print.
pub async fn run(from: &str, to: &str) -> Result<String> {
    let (from, to) = (Location::parse(from), Location::parse(to));
    if let (Location::Sled(a), Location::Sled(b)) = (&from, &to)
        && a == b
    {
        bail!("--from and --to are the same data directory");
    }
    let source = from.open(true).await?;
    let target = to.open(false).await?;
    let counts = copy(&source, &target).await?;
    let mut out = format!("copied {} → {}\n", from.describe(), to.describe());
    out.push_str(&format!("{:<20} {:>10} {:>10}\n", "records", "source", "target"));
    for (kind, n) in &counts.0 {
        out.push_str(&format!("{kind:<20} {n:>10} {n:>10}\n"));
    }
    out.push_str(&format!("{:<20} {:>10} {:>10}\n", "total", counts.total(), counts.total()));
    Ok(out)
}
