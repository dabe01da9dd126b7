//! The PostgreSQL implementation of `Store` (`store.database_url`), which several gwsync
//! processes can share.
//!
//! One table per record kind (see `migrations/`): key columns plus `data`, the same JSON the
//! sled store writes. Each trait method that promises atomicity is one transaction. A write that
//! must not outlive its user locks the user row (`FOR SHARE`) first: a deletion racing it either
//! waits for it and then removes what it wrote (the user's tables cascade from `users`), or
//! commits first and the write is refused with `Gone`.
//!
//! Queries are checked at run time (`sqlx::query`), so building needs no database.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Row};

use super::pg_channels::{ChannelCache, Lookup};
use super::pg_marks::{self, Kind, MarkBatcher};
use super::{
    CalendarState, ChannelAuth, ChannelRecord, EventChange, MarkRead, OutboxMessage, PresenceRecord, SCHEMA_VERSION,
    Store, StoreError, StoredCredentials, UnreadMark,
};
use crate::model::access::{AuditEntry, TokenRecord};
use crate::model::contact::{BookState, Change, Contact};
use crate::model::event::StoredEvent;
use crate::model::tenant::TenantRecord;
use crate::model::user::UserRecord;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// The schema version this build writes and reads on PostgreSQL: its latest migration
/// (`migrations/NNNN_*.sql`). It starts at `SCHEMA_VERSION` (the record format both stores
/// share, 1) and advances with each migration, so a build that lacks a migration refuses a
/// database that has it (`NewerSchema`) before touching it, as sled refuses a newer data
/// directory; the record format itself has not changed.
pub fn pg_schema_version() -> u32 {
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    u32::try_from(latest).unwrap_or(u32::MAX).max(SCHEMA_VERSION)
}

/// The shared store: a pool of connections to one database.
pub struct PgStore {
    pool: PgPool,
    /// Dirty marks, committed many to a statement (group commit for the webhook).
    marks: MarkBatcher,
    /// Marks only where the pending one was read (`mark_unread`), likewise batched.
    unread_marks: MarkBatcher,
    /// What verifying a notification needs, per channel read from the database: the webhook
    /// reads a channel once per `CHANNEL_CACHE_TTL`, not per notification.
    channel_cache: Arc<ChannelCache>,
    channel_refresher: ChannelRefresher,
    /// For the HTTP workers' own mark batchers (`Store::on_http_worker`). It holds the
    /// password: this struct must never print it (no `Debug`).
    options: PgConnectOptions,
    connect_timeout: Duration,
    /// Which store this is, for the HTTP workers' batchers (tests run several in a process).
    id: u64,
}

static STORE_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How long a channel read from the database answers webhooks from memory before it is read
/// again (`pg_channels`).
const CHANNEL_CACHE_TTL: Duration = Duration::from_secs(30);

const CHANNEL_BY_ID: &str = "SELECT data FROM channels WHERE id = $1";

/// Reads what verifying a notification on channel `id` needs, and keeps it in `cache` (or
/// drops it there, if the channel is gone).
async fn read_channel_auth(
    pool: &PgPool,
    cache: &ChannelCache,
    id: &str,
) -> Result<Option<Arc<ChannelAuth>>, StoreError> {
    let data = sqlx::query_scalar::<_, String>(CHANNEL_BY_ID).bind(id).fetch_optional(pool).await.map_err(pg)?;
    keep_channel(cache, id, data.as_deref())
}

/// Keeps in `cache` what verifying a notification on channel `id` needs, from its row as read
/// (`None`: the channel is gone, and is dropped there).
fn keep_channel(cache: &ChannelCache, id: &str, data: Option<&str>) -> Result<Option<Arc<ChannelAuth>>, StoreError> {
    match data.map(decode::<ChannelRecord>).transpose()? {
        Some(c) => {
            let auth = Arc::new(ChannelAuth::of(&c));
            cache.remember(id, auth.clone());
            Ok(Some(auth))
        }
        None => {
            cache.forget(id);
            Ok(None)
        }
    }
}

/// The most stale channels one statement reads again.
const REFRESH_BATCH: usize = 512;

/// Reads channels past their time again in the background (`Lookup::Stale`), many to a
/// statement. After a quiet spell longer than the cache's time every channel a storm names is
/// stale at once: one read each would send the database hundreds of statements just as the
/// storm starts, and take the pool's connections from the acknowledgements' marks.
struct ChannelRefresher {
    stale: tokio::sync::mpsc::UnboundedSender<String>,
}

impl ChannelRefresher {
    fn start(pool: PgPool, cache: Arc<ChannelCache>) -> Self {
        let (stale, incoming) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(refresh_channels(pool, cache, incoming));
        ChannelRefresher { stale }
    }

    /// Reads `id` again soon; the cache answers with what it had meanwhile.
    fn refresh(&self, cache: &ChannelCache, id: &str) {
        if self.stale.send(id.to_owned()).is_err() {
            // Shutting down: the next caller tries again.
            cache.refresh_failed(id);
        }
    }
}

/// `ChannelRefresher`'s task: the ids waiting now (the first awaited), one statement for them,
/// until the store is dropped.
async fn refresh_channels(
    pool: PgPool,
    cache: Arc<ChannelCache>,
    mut incoming: tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    while let Some(first) = incoming.recv().await {
        let mut ids = vec![first];
        while ids.len() < REFRESH_BATCH {
            match incoming.try_recv() {
                Ok(id) => ids.push(id),
                Err(_) => break,
            }
        }
        // Once each: an id answered below is taken out of what was read.
        ids.sort_unstable();
        ids.dedup();
        let rows: Result<Vec<(String, String)>, sqlx::Error> =
            sqlx::query_as("SELECT id, data FROM channels WHERE id = ANY($1)").bind(&ids).fetch_all(&pool).await;
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(channels = ids.len(), error = %e, "reading channels again failed");
                for id in &ids {
                    cache.refresh_failed(id);
                }
                continue;
            }
        };
        let mut read: HashMap<String, String> = rows.into_iter().collect();
        for id in ids {
            if let Err(e) = keep_channel(&cache, &id, read.remove(&id).as_deref()) {
                tracing::warn!(channel = %id, error = %e, "reading a channel again failed");
                cache.refresh_failed(&id);
            }
        }
    }
}

fn pg(e: sqlx::Error) -> StoreError {
    // A foreign-key violation means the user row went away under a write: the write is refused.
    if let sqlx::Error::Database(d) = &e
        && d.code().as_deref() == Some("23503")
    {
        return StoreError::Gone;
    }
    StoreError::Postgres(e.to_string())
}

fn encode<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode<T: DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode_all<T: DeserializeOwned>(rows: Vec<String>) -> Result<Vec<T>, StoreError> {
    rows.iter().map(|r| decode(r)).collect()
}

/// PostgreSQL has no unsigned integers; values above `i64::MAX` never occur in practice.
fn int(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} {v} is out of range")))
}

fn uint(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} {v} is negative")))
}

/// Takes the password (as written in the URL and decoded) out of a message.
fn scrub(message: String, url: &str) -> String {
    let Some(password) = url::Url::parse(url).ok().and_then(|u| u.password().map(str::to_owned)) else {
        return message;
    };
    let decoded = percent_encoding::percent_decode_str(&password).decode_utf8_lossy().into_owned();
    let mut out = message.replace(url, "<database_url>");
    for p in [password.as_str(), decoded.as_str()] {
        if !p.is_empty() {
            out = out.replace(p, "***");
        }
    }
    out
}

/// Refuses the write (`Gone`) unless the user exists, and keeps them until the transaction ends.
async fn lock_user(conn: &mut PgConnection, tenant: &str, email: &str) -> Result<(), StoreError> {
    let found = sqlx::query("SELECT 1 FROM users WHERE tenant = $1 AND email = $2 FOR SHARE")
        .bind(tenant)
        .bind(email)
        .fetch_optional(&mut *conn)
        .await
        .map_err(pg)?;
    if found.is_none() { Err(StoreError::Gone) } else { Ok(()) }
}

/// Marks the channels of a tenant (or one of its users) orphaned, inside a deletion.
async fn orphan_channels(conn: &mut PgConnection, tenant: &str, email: Option<&str>) -> Result<(), StoreError> {
    let rows = sqlx::query(
        "SELECT id, data FROM channels WHERE tenant = $1 AND ($2::text IS NULL OR email = $2) ORDER BY id FOR UPDATE",
    )
    .bind(tenant)
    .bind(email)
    .fetch_all(&mut *conn)
    .await
    .map_err(pg)?;
    for row in rows {
        let id: String = row.try_get(0).map_err(pg)?;
        let data: String = row.try_get(1).map_err(pg)?;
        let mut channel: ChannelRecord = decode(&data)?;
        if !channel.orphaned {
            channel.orphaned = true;
            sqlx::query("UPDATE channels SET data = $2 WHERE id = $1")
                .bind(&id)
                .bind(encode(&channel)?)
                .execute(&mut *conn)
                .await
                .map_err(pg)?;
        }
    }
    Ok(())
}

impl PgStore {
    /// This store with its channels kept in memory for `ttl` instead of `CHANNEL_CACHE_TTL`
    /// (tests: another replica's change is seen within it).
    pub fn with_channel_cache_ttl(mut self, ttl: Duration) -> Self {
        self.channel_cache = Arc::new(ChannelCache::new(ttl));
        self.channel_refresher = ChannelRefresher::start(self.pool.clone(), self.channel_cache.clone());
        self
    }

    /// Connects (a pool of at most `pool_size` connections; giving up on the first after
    /// `connect_timeout`), refuses a database written by a newer gwsync, and applies the
    /// migrations this build has. Errors never contain the URL's password.
    pub async fn connect(url: &SecretString, pool_size: u32, connect_timeout: Duration) -> Result<Self, StoreError> {
        let url = url.expose_secret();
        let options = PgConnectOptions::from_str(url).map_err(|e| {
            StoreError::Postgres(scrub(format!("store.database_url is not a PostgreSQL URL: {e}"), url))
        })?;
        let target =
            format!("{}:{}/{}", options.get_host(), options.get_port(), options.get_database().unwrap_or_default());
        let pool = PgPoolOptions::new()
            .max_connections(pool_size.max(1))
            .acquire_timeout(connect_timeout)
            .connect_with(options.clone())
            .await
            .map_err(|e| StoreError::Postgres(scrub(format!("connecting to {target}: {e}"), url)))?;
        let channel_cache = Arc::new(ChannelCache::new(CHANNEL_CACHE_TTL));
        let store = PgStore {
            marks: MarkBatcher::start(pool.clone(), Kind::Always),
            unread_marks: MarkBatcher::start(pool.clone(), Kind::Unread),
            channel_refresher: ChannelRefresher::start(pool.clone(), channel_cache.clone()),
            channel_cache,
            pool,
            options,
            connect_timeout,
            id: STORE_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// The schema check, then the migrations (sqlx serialises concurrent replicas with an
    /// advisory lock), then the version row.
    async fn migrate(&self) -> Result<(), StoreError> {
        let this_build = pg_schema_version();
        if let Some(found) = self.schema_version().await?
            && found > this_build
        {
            return Err(StoreError::NewerSchema { store: "database", found, reads: this_build });
        }
        MIGRATOR.run(&self.pool).await.map_err(|e| StoreError::Postgres(format!("applying migrations: {e}")))?;
        sqlx::query(
            "INSERT INTO gwsync_meta (key, value) VALUES ('schema_version', $1) \
             ON CONFLICT (key) DO UPDATE SET value = GREATEST(gwsync_meta.value, EXCLUDED.value)",
        )
        .bind(i64::from(this_build))
        .execute(&self.pool)
        .await
        .map_err(pg)?;
        Ok(())
    }

    /// The version recorded in the database; none if it is new.
    async fn schema_version(&self) -> Result<Option<u32>, StoreError> {
        let table: Option<String> =
            sqlx::query_scalar("SELECT to_regclass('gwsync_meta')::text").fetch_one(&self.pool).await.map_err(pg)?;
        if table.is_none() {
            return Ok(None);
        }
        let v: Option<i64> = sqlx::query_scalar("SELECT value FROM gwsync_meta WHERE key = 'schema_version'")
            .fetch_optional(&self.pool)
            .await
            .map_err(pg)?;
        // A version too large for u32 is newer than any build.
        Ok(v.map(|v| u32::try_from(v).unwrap_or(u32::MAX)))
    }

    /// The pool, for tests and tools that look at the tables.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn one<T: DeserializeOwned>(&self, sql: &'static str, keys: &[&str]) -> Result<Option<T>, StoreError> {
        let mut q = sqlx::query_scalar::<_, String>(sql);
        for k in keys {
            q = q.bind(*k);
        }
        q.fetch_optional(&self.pool).await.map_err(pg)?.map(|v| decode(&v)).transpose()
    }

    async fn all<T: DeserializeOwned>(&self, sql: &'static str, keys: &[&str]) -> Result<Vec<T>, StoreError> {
        let mut q = sqlx::query_scalar::<_, String>(sql);
        for k in keys {
            q = q.bind(*k);
        }
        decode_all(q.fetch_all(&self.pool).await.map_err(pg)?)
    }

    async fn exec(&self, sql: &'static str, keys: &[&str]) -> Result<u64, StoreError> {
        let mut q = sqlx::query(sql);
        for k in keys {
            q = q.bind(*k);
        }
        Ok(q.execute(&self.pool).await.map_err(pg)?.rows_affected())
    }
}

#[async_trait::async_trait]
impl Store for PgStore {
    async fn put_tenant(&self, tenant: &TenantRecord) -> Result<(), StoreError> {
        let data = encode(tenant)?;
        self.exec(
            "INSERT INTO tenants (id, data) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data",
            &[&tenant.id, &data],
        )
        .await?;
        Ok(())
    }

    async fn tenant(&self, id: &str) -> Result<Option<TenantRecord>, StoreError> {
        self.one("SELECT data FROM tenants WHERE id = $1", &[id]).await
    }

    async fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        self.all("SELECT data FROM tenants ORDER BY id", &[]).await
    }

    async fn delete_tenant(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(pg)?;
        for sql in [
            "DELETE FROM tokens WHERE tenant = $1",
            // The key is retired, not kept in place: a tenant re-created under this id starts
            // without it, while the keeper can still stop the old channels.
            "INSERT INTO retired_credentials (tenant, data) SELECT tenant, data FROM credentials WHERE tenant = $1 \
             ON CONFLICT (tenant) DO UPDATE SET data = EXCLUDED.data",
            "DELETE FROM credentials WHERE tenant = $1",
            "DELETE FROM users WHERE tenant = $1",
            "DELETE FROM dirty WHERE tenant = $1",
            "DELETE FROM presence WHERE tenant = $1",
            "DELETE FROM contacts WHERE tenant = $1",
            "DELETE FROM contact_books WHERE tenant = $1",
            "DELETE FROM phone_deliveries WHERE tenant = $1",
            "DELETE FROM cluster_jobs WHERE (data::jsonb)->>'tenant' = $1",
        ] {
            sqlx::query(sql).bind(id).execute(&mut *tx).await.map_err(pg)?;
        }
        orphan_channels(&mut tx, id, None).await?;
        let existed = sqlx::query("DELETE FROM tenants WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(pg)?
            .rows_affected()
            > 0;
        tx.commit().await.map_err(pg)?;
        self.channel_cache.retain(|c| c.tenant != id);
        Ok(existed)
    }

    async fn put_credentials(&self, tenant: &str, credentials: &StoredCredentials) -> Result<(), StoreError> {
        let data = encode(credentials)?;
        self.exec(
            "INSERT INTO credentials (tenant, data) VALUES ($1, $2) \
             ON CONFLICT (tenant) DO UPDATE SET data = EXCLUDED.data",
            &[tenant, &data],
        )
        .await?;
        Ok(())
    }

    async fn credentials(&self, tenant: &str) -> Result<Option<StoredCredentials>, StoreError> {
        self.one("SELECT data FROM credentials WHERE tenant = $1", &[tenant]).await
    }

    async fn retired_credentials(&self, tenant: &str) -> Result<Option<StoredCredentials>, StoreError> {
        self.one("SELECT data FROM retired_credentials WHERE tenant = $1", &[tenant]).await
    }

    async fn retired_credential_tenants(&self) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar("SELECT tenant FROM retired_credentials ORDER BY tenant")
            .fetch_all(&self.pool)
            .await
            .map_err(pg)
    }

    async fn delete_retired_credentials(&self, tenant: &str) -> Result<(), StoreError> {
        self.exec("DELETE FROM retired_credentials WHERE tenant = $1", &[tenant]).await?;
        Ok(())
    }

    async fn put_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let data = encode(user)?;
        self.exec(
            "INSERT INTO users (tenant, email, data) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant, email) DO UPDATE SET data = EXCLUDED.data",
            &[&user.tenant, &user.email, &data],
        )
        .await?;
        Ok(())
    }

    async fn user(&self, tenant: &str, email: &str) -> Result<Option<UserRecord>, StoreError> {
        self.one("SELECT data FROM users WHERE tenant = $1 AND email = $2", &[tenant, email]).await
    }

    async fn users(&self, tenant: &str) -> Result<Vec<UserRecord>, StoreError> {
        self.all("SELECT data FROM users WHERE tenant = $1 ORDER BY email", &[tenant]).await
    }

    async fn delete_user(&self, tenant: &str, email: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(pg)?;
        // Calendar state, events and queued messages cascade from the user row.
        let existed = sqlx::query("DELETE FROM users WHERE tenant = $1 AND email = $2")
            .bind(tenant)
            .bind(email)
            .execute(&mut *tx)
            .await
            .map_err(pg)?
            .rows_affected()
            > 0;
        for sql in [
            "DELETE FROM dirty WHERE tenant = $1 AND email = $2",
            "DELETE FROM presence WHERE tenant = $1 AND email = $2",
        ] {
            sqlx::query(sql).bind(tenant).bind(email).execute(&mut *tx).await.map_err(pg)?;
        }
        let book = crate::model::contact::personal_book(email);
        for sql in [
            "DELETE FROM contacts WHERE tenant = $1 AND book = $2",
            "DELETE FROM contact_books WHERE tenant = $1 AND book = $2",
        ] {
            sqlx::query(sql).bind(tenant).bind(&book).execute(&mut *tx).await.map_err(pg)?;
        }
        orphan_channels(&mut tx, tenant, Some(email)).await?;
        tx.commit().await.map_err(pg)?;
        self.channel_cache.retain(|c| !(c.tenant == tenant && c.user == email));
        Ok(existed)
    }

    async fn calendar_state(&self, tenant: &str, user: &str) -> Result<Option<CalendarState>, StoreError> {
        self.one("SELECT data FROM calendars WHERE tenant = $1 AND email = $2", &[tenant, user]).await
    }

    async fn put_calendar_state(&self, tenant: &str, user: &str, state: &CalendarState) -> Result<(), StoreError> {
        let data = encode(state)?;
        let mut tx = self.pool.begin().await.map_err(pg)?;
        lock_user(&mut tx, tenant, user).await?;
        put_state(&mut tx, tenant, user, &data).await?;
        tx.commit().await.map_err(pg)
    }

    async fn apply_sync(
        &self,
        tenant: &str,
        user: &str,
        wipe: bool,
        changes: &[EventChange],
        state: &CalendarState,
    ) -> Result<usize, StoreError> {
        // As in sled: every removal first (a deleted series takes the exceptions stored before
        // this result), then the upserts, the last of an id winning.
        let mut deletes: Vec<&str> = Vec::new();
        let mut upserts: Vec<(&str, Option<&str>, String)> = Vec::new();
        let mut position: HashMap<&str, usize> = HashMap::new();
        for change in changes {
            match change {
                EventChange::Delete(id) => deletes.push(id),
                EventChange::Upsert(e) => {
                    let row = (e.id.as_str(), e.recurring_event_id.as_deref(), encode(e)?);
                    match position.get(e.id.as_str()) {
                        Some(&i) => upserts[i] = row,
                        None => {
                            position.insert(e.id.as_str(), upserts.len());
                            upserts.push(row);
                        }
                    }
                }
            }
        }
        let state = encode(state)?;
        if !wipe && changes.is_empty() {
            // Most syncs change nothing but the token: one statement (one round trip, one
            // commit) instead of a transaction of four, atomic all the same.
            let (stored, count): (bool, i64) = sqlx::query_as(
                "WITH u AS (SELECT 1 FROM users WHERE tenant = $1 AND email = $2 FOR SHARE), \
                      s AS (INSERT INTO calendars (tenant, email, data) SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM u) \
                            ON CONFLICT (tenant, email) DO UPDATE SET data = EXCLUDED.data RETURNING 1) \
                 SELECT EXISTS (SELECT 1 FROM s), (SELECT count(*) FROM events WHERE tenant = $1 AND email = $2)",
            )
            .bind(tenant)
            .bind(user)
            .bind(&state)
            .fetch_one(&self.pool)
            .await
            .map_err(pg)?;
            if !stored {
                return Err(StoreError::Gone);
            }
            return Ok(usize::try_from(count).unwrap_or_default());
        }
        let mut tx = self.pool.begin().await.map_err(pg)?;
        lock_user(&mut tx, tenant, user).await?;
        if wipe {
            sqlx::query("DELETE FROM events WHERE tenant = $1 AND email = $2")
                .bind(tenant)
                .bind(user)
                .execute(&mut *tx)
                .await
                .map_err(pg)?;
        }
        if !deletes.is_empty() {
            sqlx::query(
                "DELETE FROM events WHERE tenant = $1 AND email = $2 \
                 AND (id = ANY($3) OR recurring_event_id = ANY($3))",
            )
            .bind(tenant)
            .bind(user)
            .bind(&deletes)
            .execute(&mut *tx)
            .await
            .map_err(pg)?;
        }
        if !upserts.is_empty() {
            let ids: Vec<&str> = upserts.iter().map(|u| u.0).collect();
            let series: Vec<Option<&str>> = upserts.iter().map(|u| u.1).collect();
            let data: Vec<&str> = upserts.iter().map(|u| u.2.as_str()).collect();
            sqlx::query(
                "INSERT INTO events (tenant, email, id, recurring_event_id, data) \
                 SELECT $1, $2, u.id, u.series, u.data FROM UNNEST($3::text[], $4::text[], $5::text[]) AS u(id, series, data) \
                 ON CONFLICT (tenant, email, id) DO UPDATE \
                 SET recurring_event_id = EXCLUDED.recurring_event_id, data = EXCLUDED.data",
            )
            .bind(tenant)
            .bind(user)
            .bind(&ids)
            .bind(&series)
            .bind(&data)
            .execute(&mut *tx)
            .await
            .map_err(pg)?;
        }
        put_state(&mut tx, tenant, user, &state).await?;
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE tenant = $1 AND email = $2")
            .bind(tenant)
            .bind(user)
            .fetch_one(&mut *tx)
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(usize::try_from(count).unwrap_or_default())
    }

    async fn events(&self, tenant: &str, user: &str) -> Result<Vec<StoredEvent>, StoreError> {
        self.all("SELECT data FROM events WHERE tenant = $1 AND email = $2 ORDER BY id", &[tenant, user]).await
    }

    async fn mark_dirty(&self, tenant: &str, user: &str) -> Result<u64, StoreError> {
        Ok(self.marks.mark(tenant, user).await?.generation)
    }

    async fn dirty_calendars(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT tenant, email, generation FROM dirty ORDER BY tenant, email")
                .fetch_all(&self.pool)
                .await
                .map_err(pg)?;
        rows.into_iter().map(|(t, u, g)| Ok((t, u, uint(g, "dirty generation")?))).collect()
    }

    async fn dirty_generation(&self, tenant: &str, user: &str) -> Result<Option<u64>, StoreError> {
        let generation: Option<i64> =
            sqlx::query_scalar("SELECT generation FROM dirty WHERE tenant = $1 AND email = $2")
                .bind(tenant)
                .bind(user)
                .fetch_optional(&self.pool)
                .await
                .map_err(pg)?;
        generation.map(|g| uint(g, "dirty generation")).transpose()
    }

    async fn sync_inputs(&self, tenant: &str, user: &str) -> Result<Option<super::SyncInputs>, StoreError> {
        let row: Option<(Option<String>, Vec<String>)> = sqlx::query_as(
            "SELECT (SELECT c.data FROM calendars c WHERE c.tenant = u.tenant AND c.email = u.email), \
                    ARRAY(SELECT ch.data FROM channels ch WHERE ch.tenant = u.tenant AND ch.email = u.email ORDER BY ch.id) \
             FROM users u JOIN tenants t ON t.id = u.tenant WHERE u.tenant = $1 AND u.email = $2",
        )
        .bind(tenant)
        .bind(user)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg)?;
        let Some((state, channels)) = row else { return Ok(None) };
        let state = state.map(|s| decode(&s)).transpose()?;
        Ok(Some(super::SyncInputs { state, channels: decode_all(channels)? }))
    }

    async fn clear_dirty_then_pending(
        &self,
        tenant: &str,
        user: &str,
        generation: Option<u64>,
    ) -> Result<Option<u64>, StoreError> {
        // The outer SELECT sees the row as the statement began: if the DELETE took it, nothing
        // is left (a mark made since is another statement's, found by its own notification).
        let generation = generation.map(|g| int(g, "dirty generation")).transpose()?;
        let pending: Option<i64> = sqlx::query_scalar(
            "WITH gone AS (DELETE FROM dirty WHERE tenant = $1 AND email = $2 AND generation = $3 RETURNING 1) \
             SELECT generation FROM dirty WHERE tenant = $1 AND email = $2 AND NOT EXISTS (SELECT 1 FROM gone)",
        )
        .bind(tenant)
        .bind(user)
        .bind(generation)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg)?;
        pending.map(|g| uint(g, "dirty generation")).transpose()
    }

    async fn mark_unread(&self, tenant: &str, user: &str) -> Result<UnreadMark, StoreError> {
        // On an HTTP worker (a webhook), its own batcher (`pg_marks` module doc).
        match pg_marks::on_this_thread(self.id) {
            Some(worker) => worker.mark(tenant, user).await,
            None => self.unread_marks.mark(tenant, user).await,
        }
    }

    async fn read_dirty(
        &self,
        tenant: &str,
        user: &str,
        spacing: Duration,
        busy_for: Duration,
    ) -> Result<MarkRead, StoreError> {
        // The promise is kept in `read_windows`, whose upsert checks it on the row's newest
        // version (a concurrent first insert waits and then meets the conflict), so two reads
        // within `spacing` cannot both pass, whatever the replicas' own clocks say. A calendar
        // whose user does not exist (yet, or any more) makes no promise: its marks give no
        // `unread_until` either. A read that finds no mark promises too: the first
        // notification after the sync at registration rests on it. A read that passes before
        // `busy_until` (moved later, never earlier, by `busy_for`) also leaves the generation
        // after the one it read unread: SET's right-hand sides see the row before the update,
        // and RETURNING the row after it, so `read_generation` is what was read.
        let (read, current, wait_us): (Option<i64>, Option<i64>, Option<i64>) = sqlx::query_as(
            "WITH current AS (SELECT d.generation, \
                 floor(EXTRACT(EPOCH FROM (w.next_read_at - now())) * 1000000)::bigint AS wait_us, \
                 EXISTS (SELECT 1 FROM users u WHERE u.tenant = $1 AND u.email = $2) AS promises \
                 FROM dirty d LEFT JOIN read_windows w ON w.tenant = d.tenant AND w.email = d.email \
                 WHERE d.tenant = $1 AND d.email = $2), \
             allowed AS (INSERT INTO read_windows (tenant, email, next_read_at, busy_until) \
                 SELECT u.tenant, u.email, now() + $3 * interval '1 microsecond', \
                 CASE WHEN $4 > 0 THEN now() + $4 * interval '1 microsecond' END FROM users u \
                 WHERE u.tenant = $1 AND u.email = $2 \
                 ON CONFLICT (tenant, email) DO UPDATE SET next_read_at = EXCLUDED.next_read_at, \
                 busy_until = GREATEST(read_windows.busy_until, EXCLUDED.busy_until) \
                 WHERE read_windows.next_read_at <= now() RETURNING COALESCE(busy_until > now(), false) AS busy), \
             seen AS (UPDATE dirty SET read_generation = generation, \
                 generation = generation + CASE WHEN COALESCE((SELECT busy FROM allowed), false) THEN 1 ELSE 0 END \
                 WHERE tenant = $1 AND email = $2 \
                 AND (EXISTS (SELECT 1 FROM allowed) OR NOT (SELECT promises FROM current)) \
                 RETURNING read_generation) \
             SELECT (SELECT read_generation FROM seen), (SELECT generation FROM current), (SELECT wait_us FROM current)",
        )
        .bind(tenant)
        .bind(user)
        .bind(i64::try_from(spacing.as_micros()).unwrap_or(i64::MAX / 2))
        .bind(i64::try_from(busy_for.as_micros()).unwrap_or(i64::MAX / 2))
        .fetch_one(&self.pool)
        .await
        .map_err(pg)?;
        Ok(match (read, current) {
            (Some(g), _) => MarkRead::Read(Some(uint(g, "dirty generation")?)),
            (None, None) => MarkRead::Read(None),
            // Read too recently (or a read by another replica won the race: it waits a moment).
            (None, Some(_)) => MarkRead::NotBefore(Duration::from_micros(
                wait_us.and_then(|us| u64::try_from(us).ok()).unwrap_or(0).max(1_000),
            )),
        })
    }

    async fn clear_dirty(&self, tenant: &str, user: &str, generation: u64) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM dirty WHERE tenant = $1 AND email = $2 AND generation = $3")
            .bind(tenant)
            .bind(user)
            .bind(int(generation, "dirty generation")?)
            .execute(&self.pool)
            .await
            .map_err(pg)?;
        Ok(done.rows_affected() > 0)
    }

    async fn put_channel(&self, channel: &ChannelRecord) -> Result<(), StoreError> {
        let data = encode(channel)?;
        let mut tx = self.pool.begin().await.map_err(pg)?;
        if !channel.orphaned {
            lock_user(&mut tx, &channel.tenant, &channel.user).await?;
        }
        sqlx::query(
            "INSERT INTO channels (id, tenant, email, data) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET tenant = EXCLUDED.tenant, email = EXCLUDED.email, data = EXCLUDED.data",
        )
        .bind(&channel.id)
        .bind(&channel.tenant)
        .bind(&channel.user)
        .bind(&data)
        .execute(&mut *tx)
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        self.channel_cache.remember(&channel.id, Arc::new(ChannelAuth::of(channel)));
        Ok(())
    }

    async fn channel_auth(&self, id: &str) -> Result<Option<Arc<ChannelAuth>>, StoreError> {
        match self.channel_cache.get(id) {
            Lookup::Fresh(auth) | Lookup::Refreshing(auth) => Ok(Some(auth)),
            Lookup::Stale(auth) => {
                self.channel_refresher.refresh(&self.channel_cache, id);
                Ok(Some(auth))
            }
            Lookup::Missing => read_channel_auth(&self.pool, &self.channel_cache, id).await,
        }
    }

    async fn channel(&self, id: &str) -> Result<Option<ChannelRecord>, StoreError> {
        self.one(CHANNEL_BY_ID, &[id]).await
    }

    async fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        self.all("SELECT data FROM channels ORDER BY id", &[]).await
    }

    async fn channels_of(&self, tenant: &str, user: &str) -> Result<Vec<ChannelRecord>, StoreError> {
        self.all("SELECT data FROM channels WHERE tenant = $1 AND email = $2 ORDER BY id", &[tenant, user]).await
    }

    async fn delete_channel(&self, id: &str) -> Result<(), StoreError> {
        self.exec("DELETE FROM channels WHERE id = $1", &[id]).await?;
        self.channel_cache.forget(id);
        Ok(())
    }

    async fn presence_record(&self, tenant: &str, user: &str) -> Result<Option<PresenceRecord>, StoreError> {
        self.one("SELECT data FROM presence WHERE tenant = $1 AND email = $2", &[tenant, user]).await
    }

    async fn put_presence_record(&self, tenant: &str, user: &str, record: &PresenceRecord) -> Result<(), StoreError> {
        let data = encode(record)?;
        put_presence(&self.pool, tenant, user, &data).await
    }

    async fn enqueue_message(&self, record: &PresenceRecord, message: &OutboxMessage) -> Result<(), StoreError> {
        let (record, data) = (encode(record)?, encode(message)?);
        let sequence = int(message.sequence, "sequence")?;
        let (tenant, user) = (message.tenant.as_str(), message.user.as_str());
        let mut tx = self.pool.begin().await.map_err(pg)?;
        lock_user(&mut tx, tenant, user).await?;
        sqlx::query("DELETE FROM outbox WHERE tenant = $1 AND email = $2 AND sequence < $3")
            .bind(tenant)
            .bind(user)
            .bind(sequence)
            .execute(&mut *tx)
            .await
            .map_err(pg)?;
        put_presence(&mut *tx, tenant, user, &record).await?;
        sqlx::query(
            "INSERT INTO outbox (tenant, email, sequence, data) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant, email, sequence) DO UPDATE SET data = EXCLUDED.data",
        )
        .bind(tenant)
        .bind(user)
        .bind(sequence)
        .bind(&data)
        .execute(&mut *tx)
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn outbox(&self) -> Result<Vec<OutboxMessage>, StoreError> {
        self.all("SELECT data FROM outbox ORDER BY tenant, email, sequence", &[]).await
    }

    async fn outbox_message(
        &self,
        tenant: &str,
        user: &str,
        sequence: u64,
    ) -> Result<Option<OutboxMessage>, StoreError> {
        let data: Option<String> =
            sqlx::query_scalar("SELECT data FROM outbox WHERE tenant = $1 AND email = $2 AND sequence = $3")
                .bind(tenant)
                .bind(user)
                .bind(int(sequence, "sequence")?)
                .fetch_optional(&self.pool)
                .await
                .map_err(pg)?;
        data.map(|d| decode(&d)).transpose()
    }

    async fn update_message(&self, message: &OutboxMessage) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE outbox SET data = $4 WHERE tenant = $1 AND email = $2 AND sequence = $3")
            .bind(&message.tenant)
            .bind(&message.user)
            .bind(int(message.sequence, "sequence")?)
            .bind(encode(message)?)
            .execute(&self.pool)
            .await
            .map_err(pg)?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_message(&self, tenant: &str, user: &str, sequence: u64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM outbox WHERE tenant = $1 AND email = $2 AND sequence = $3")
            .bind(tenant)
            .bind(user)
            .bind(int(sequence, "sequence")?)
            .execute(&self.pool)
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn contact_book(&self, tenant: &str, book: &str) -> Result<Option<BookState>, StoreError> {
        self.one("SELECT data FROM contact_books WHERE tenant = $1 AND book = $2", &[tenant, book]).await
    }

    async fn contact_books(&self, tenant: &str) -> Result<Vec<(String, BookState)>, StoreError> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT book, data FROM contact_books WHERE tenant = $1 ORDER BY book")
                .bind(tenant)
                .fetch_all(&self.pool)
                .await
                .map_err(pg)?;
        rows.into_iter().map(|(b, d)| Ok((b, decode(&d)?))).collect()
    }

    async fn apply_contacts(
        &self,
        tenant: &str,
        book: &str,
        wipe: bool,
        changes: &[Change],
        state: &BookState,
    ) -> Result<usize, StoreError> {
        // Changes apply in order, so the last change of an entry decides.
        let mut last: HashMap<&str, Option<String>> = HashMap::new();
        for c in changes {
            match c {
                Change::Upsert(contact) => last.insert(&contact.resource_name, Some(encode(contact.as_ref())?)),
                Change::Delete(name) => last.insert(name, None),
            };
        }
        let deletes: Vec<&str> = last.iter().filter(|(_, v)| v.is_none()).map(|(k, _)| *k).collect();
        let (names, data): (Vec<&str>, Vec<&str>) =
            last.iter().filter_map(|(k, v)| v.as_deref().map(|v| (*k, v))).unzip();
        let state = encode(state)?;
        let mut tx = self.pool.begin().await.map_err(pg)?;
        if wipe {
            sqlx::query("DELETE FROM contacts WHERE tenant = $1 AND book = $2")
                .bind(tenant)
                .bind(book)
                .execute(&mut *tx)
                .await
                .map_err(pg)?;
        }
        if !deletes.is_empty() {
            sqlx::query("DELETE FROM contacts WHERE tenant = $1 AND book = $2 AND resource_name = ANY($3)")
                .bind(tenant)
                .bind(book)
                .bind(&deletes)
                .execute(&mut *tx)
                .await
                .map_err(pg)?;
        }
        if !names.is_empty() {
            sqlx::query(
                "INSERT INTO contacts (tenant, book, resource_name, data) \
                 SELECT $1, $2, u.name, u.data FROM UNNEST($3::text[], $4::text[]) AS u(name, data) \
                 ON CONFLICT (tenant, book, resource_name) DO UPDATE SET data = EXCLUDED.data",
            )
            .bind(tenant)
            .bind(book)
            .bind(&names)
            .bind(&data)
            .execute(&mut *tx)
            .await
            .map_err(pg)?;
        }
        sqlx::query(
            "INSERT INTO contact_books (tenant, book, data) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant, book) DO UPDATE SET data = EXCLUDED.data",
        )
        .bind(tenant)
        .bind(book)
        .bind(&state)
        .execute(&mut *tx)
        .await
        .map_err(pg)?;
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM contacts WHERE tenant = $1 AND book = $2")
            .bind(tenant)
            .bind(book)
            .fetch_one(&mut *tx)
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(usize::try_from(count).unwrap_or_default())
    }

    async fn contacts(&self, tenant: &str) -> Result<Vec<Contact>, StoreError> {
        self.all("SELECT data FROM contacts WHERE tenant = $1 ORDER BY book, resource_name", &[tenant]).await
    }

    async fn delete_contact_book(&self, tenant: &str, book: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(pg)?;
        for sql in [
            "DELETE FROM contacts WHERE tenant = $1 AND book = $2",
            "DELETE FROM contact_books WHERE tenant = $1 AND book = $2",
        ] {
            sqlx::query(sql).bind(tenant).bind(book).execute(&mut *tx).await.map_err(pg)?;
        }
        tx.commit().await.map_err(pg)
    }

    async fn put_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tokens (id, digest, tenant, data) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET digest = EXCLUDED.digest, tenant = EXCLUDED.tenant, data = EXCLUDED.data",
        )
        .bind(&token.id)
        .bind(&token.digest)
        .bind(token.tenant.as_deref())
        .bind(encode(token)?)
        .execute(&self.pool)
        .await
        .map_err(pg)?;
        Ok(())
    }

    async fn token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.one("SELECT data FROM tokens WHERE id = $1", &[id]).await
    }

    async fn token_by_digest(&self, digest: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.one("SELECT data FROM tokens WHERE digest = $1 ORDER BY id LIMIT 1", &[digest]).await
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.all("SELECT data FROM tokens ORDER BY id", &[]).await
    }

    async fn update_token(
        &self,
        id: &str,
        change: &(dyn for<'t> Fn(&'t mut TokenRecord) + Send + Sync),
    ) -> Result<Option<TokenRecord>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(pg)?;
        // The row lock makes a concurrent update (a revocation) wait or be waited for: neither
        // undoes the other.
        let data: Option<String> = sqlx::query_scalar("SELECT data FROM tokens WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(pg)?;
        let Some(data) = data else { return Ok(None) };
        let mut token: TokenRecord = decode(&data)?;
        change(&mut token);
        sqlx::query("UPDATE tokens SET digest = $2, tenant = $3, data = $4 WHERE id = $1")
            .bind(id)
            .bind(&token.digest)
            .bind(token.tenant.as_deref())
            .bind(encode(&token)?)
            .execute(&mut *tx)
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(Some(token))
    }

    async fn delete_token(&self, id: &str) -> Result<(), StoreError> {
        self.exec("DELETE FROM tokens WHERE id = $1", &[id]).await?;
        Ok(())
    }

    async fn next_audit_id(&self) -> Result<u64, StoreError> {
        let id: i64 = sqlx::query_scalar("SELECT nextval('audit_ids')").fetch_one(&self.pool).await.map_err(pg)?;
        uint(id, "audit id")
    }

    async fn put_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit (id, tenant, at, data) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET tenant = EXCLUDED.tenant, at = EXCLUDED.at, data = EXCLUDED.data",
        )
        .bind(int(entry.id, "audit id")?)
        .bind(entry.tenant.as_deref())
        .bind(entry.at)
        .bind(encode(entry)?)
        .execute(&self.pool)
        .await
        .map_err(pg)?;
        Ok(())
    }

    async fn audit(
        &self,
        tenant: Option<&str>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        // A cursor beyond every id is no cursor.
        let before = before.and_then(|b| i64::try_from(b).ok());
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT data FROM audit WHERE ($1::text IS NULL OR tenant = $1) AND ($2::bigint IS NULL OR id < $2) \
             ORDER BY id DESC LIMIT $3",
        )
        .bind(tenant)
        .bind(before)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(pg)?;
        decode_all(rows)
    }

    async fn prune_audit(&self, cutoff: DateTime<Utc>) -> Result<usize, StoreError> {
        let done = sqlx::query("DELETE FROM audit WHERE at < $1").bind(cutoff).execute(&self.pool).await.map_err(pg)?;
        Ok(usize::try_from(done.rows_affected()).unwrap_or(usize::MAX))
    }

    /// Nothing to do: every write above returned after its transaction committed, and a
    /// committed transaction is durable (PostgreSQL's WAL is flushed at commit).
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn durable_on_return(&self) -> bool {
        true
    }

    fn on_http_worker(&self) {
        pg_marks::start_on_this_thread(self.id, &self.options, self.connect_timeout);
    }

    async fn all_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.all("SELECT data FROM users ORDER BY tenant, email", &[]).await
    }

    async fn all_credentials(&self) -> Result<Vec<(String, StoredCredentials)>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT tenant, data FROM credentials ORDER BY tenant")
            .fetch_all(&self.pool)
            .await
            .map_err(pg)?;
        rows.into_iter().map(|(t, d)| Ok((t, decode(&d)?))).collect()
    }

    async fn presence_records(&self) -> Result<Vec<(String, String, PresenceRecord)>, StoreError> {
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT tenant, email, data FROM presence ORDER BY tenant, email")
                .fetch_all(&self.pool)
                .await
                .map_err(pg)?;
        rows.into_iter().map(|(t, u, d)| Ok((t, u, decode(&d)?))).collect()
    }

    async fn all_contact_books(&self) -> Result<Vec<(String, String, BookState)>, StoreError> {
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT tenant, book, data FROM contact_books ORDER BY tenant, book")
                .fetch_all(&self.pool)
                .await
                .map_err(pg)?;
        rows.into_iter().map(|(t, b, d)| Ok((t, b, decode(&d)?))).collect()
    }

    async fn book_contacts(&self, tenant: &str, book: &str) -> Result<Vec<Contact>, StoreError> {
        self.all("SELECT data FROM contacts WHERE tenant = $1 AND book = $2 ORDER BY resource_name", &[tenant, book])
            .await
    }

    async fn put_retired_credentials(&self, tenant: &str, credentials: &StoredCredentials) -> Result<(), StoreError> {
        let data = encode(credentials)?;
        self.exec(
            "INSERT INTO retired_credentials (tenant, data) VALUES ($1, $2) \
             ON CONFLICT (tenant) DO UPDATE SET data = EXCLUDED.data",
            &[tenant, &data],
        )
        .await?;
        Ok(())
    }

    async fn restore_dirty(&self, tenant: &str, user: &str, generation: u64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO dirty (tenant, email, generation) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant, email) DO UPDATE SET generation = EXCLUDED.generation",
        )
        .bind(tenant)
        .bind(user)
        .bind(int(generation, "dirty generation")?)
        .execute(&self.pool)
        .await
        .map_err(pg)?;
        Ok(())
    }

    async fn raise_audit_ids(&self, id: u64) -> Result<(), StoreError> {
        // setval never lowers below what was handed out: GREATEST with the current value.
        sqlx::query("SELECT setval('audit_ids', GREATEST($1, (SELECT last_value FROM audit_ids)))")
            .bind(int(id, "audit id")?.max(1))
            .execute(&self.pool)
            .await
            .map_err(pg)?;
        Ok(())
    }
}

async fn put_state(conn: &mut PgConnection, tenant: &str, user: &str, data: &str) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO calendars (tenant, email, data) VALUES ($1, $2, $3) \
         ON CONFLICT (tenant, email) DO UPDATE SET data = EXCLUDED.data",
    )
    .bind(tenant)
    .bind(user)
    .bind(data)
    .execute(conn)
    .await
    .map_err(pg)?;
    Ok(())
}

async fn put_presence<'c, E>(conn: E, tenant: &str, user: &str, data: &str) -> Result<(), StoreError>
where
    E: sqlx::PgExecutor<'c>,
{
    sqlx::query(
        "INSERT INTO presence (tenant, email, data) VALUES ($1, $2, $3) \
         ON CONFLICT (tenant, email) DO UPDATE SET data = EXCLUDED.data",
    )
    .bind(tenant)
    .bind(user)
    .bind(data)
    .execute(conn)
    .await
    .map_err(pg)?;
    Ok(())
}
