//! Group commit of dirty marks on PostgreSQL: the webhook answers 200 only once a calendar's
//! mark is committed, and a commit waits for the disk, so marks made meanwhile by other
//! requests (on this replica) wait for the one in flight and then go together in one statement
//! — one commit for a whole burst, as sled's shared flush does.
//!
//! Two kinds (`Kind`), each with its own committer: `Always` writes a new generation for every
//! calendar (`Store::mark_dirty`); `Unread` writes one only for calendars whose pending mark a
//! sync has read (`Store::mark_unread`). `Unread` asks in two steps: a read-only statement
//! first finds which calendars of a batch hold an unread mark (most, under a storm), and
//! answers those at once; only the rest go on to the committer, which writes their marks. So
//! a notification that rests on an unread mark never waits for the disk, not even for another
//! calendar's write in the same batch, and the checks go on while a write is in flight.
//!
//! The batchers run on a thread of their own, each statement on a connection of its own
//! (`Link`): a webhook's acknowledgement never queues behind the sync work on the service's
//! runtime, nor for a pooled connection that sync work holds. (Measured with `cargo bench
//! --bench replicas`: as a storm starts, the runtime that syncs every calendar at once falls
//! tens of milliseconds behind, and acknowledgements that asked the database waited for it.)
//! Until its own connection is open (and while it is lost), a batcher sends its statements
//! through the pool; a lost one is opened again after `RECONNECT_AFTER`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot};

use super::{StoreError, UnreadMark};

/// How long a batcher that lost its own connection (or could not open it) sends through the
/// pool before it tries to open one again.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// The batchers' own connections, as `pg_stat_activity` names them.
pub const APPLICATION_NAME: &str = "gwsync-marks";

/// The most marks one statement carries (the rest wait for the next).
const BATCH: usize = 1024;

type Reply = oneshot::Sender<Result<UnreadMark, StoreError>>;

/// A mark as a statement returns it: tenant, email, generation, microseconds it stays unread,
/// whether the statement created it (`UnreadMark::created`).
type MarkRow = (String, String, i64, Option<i64>, bool);

/// Which marks a batcher writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A new generation for every calendar.
    Always,
    /// A new generation only where the pending mark was read (or there is none).
    Unread,
}

/// Every calendar of the batch gets a new generation.
const ALWAYS: &str = "INSERT INTO dirty (tenant, email, generation) \
     SELECT t, e, 1 FROM UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS marks(t, e, n) ORDER BY n \
     ON CONFLICT (tenant, email) DO UPDATE SET generation = dirty.generation + 1 \
     RETURNING tenant, email, generation, NULL::bigint, (xmax = 0)";

/// Microseconds from the statement's start until the mark may be read (NULL: at any time),
/// rounded down.
macro_rules! unread_for {
    () => {
        "floor(EXTRACT(EPOCH FROM ((SELECT GREATEST(w.next_read_at, w.busy_until) FROM read_windows w \
             WHERE w.tenant = dirty.tenant AND w.email = dirty.email) - now())) * 1000000)::bigint"
    };
}

/// Calendars whose mark is unread in the statement's snapshot keep it; the rest get a new
/// generation. Why the snapshot is enough: a sync records its read (`read_dirty`) before it
/// fetches, and a read this snapshot does not see commits after the snapshot was taken, which
/// is after the notification arrived — so that sync's fetch sees the notification's change.
///
/// Each row also says how long the mark stays unread: the next read is refused before the
/// calendar's `read_windows.next_read_at` (`PgStore::read_dirty`), and no read this snapshot does not see
/// can have set an earlier one (reads only move it later, and it stays with the calendar when
/// a mark is cleared), and whether the statement created it (`xmax = 0` on a row the upsert
/// inserted rather than updated; `UnreadMark::created`).
const UNREAD: &str = concat!(
    "WITH wanted AS (SELECT t, e, n FROM UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS marks(t, e, n)), \
     unread AS (SELECT dirty.tenant, dirty.email, dirty.generation, ",
    unread_for!(),
    " AS unread_for FROM dirty \
         JOIN wanted w ON dirty.tenant = w.t AND dirty.email = w.e WHERE dirty.generation > dirty.read_generation), \
     written AS (INSERT INTO dirty (tenant, email, generation) \
         SELECT w.t, w.e, 1 FROM wanted w \
         WHERE NOT EXISTS (SELECT 1 FROM unread u WHERE u.tenant = w.t AND u.email = w.e) ORDER BY w.n \
         ON CONFLICT (tenant, email) DO UPDATE SET generation = dirty.generation + 1 \
         RETURNING tenant, email, generation, ",
    unread_for!(),
    " AS unread_for, (xmax = 0) AS created) \
     SELECT tenant, email, generation, unread_for, false FROM unread \
     UNION ALL SELECT tenant, email, generation, unread_for, created FROM written"
);

/// The batch's calendars that hold an unread mark in the statement's snapshot, as `UNREAD`
/// returns them (it re-checks the others in its own snapshot, writing where needed). Read-only:
/// the same reasoning as `UNREAD`'s holds for its snapshot, which is taken after every
/// notification of the batch arrived.
const UNREAD_NOW: &str = concat!(
    "SELECT dirty.tenant, dirty.email, dirty.generation, ",
    unread_for!(),
    " AS unread_for, false FROM dirty \
     JOIN UNNEST($1::text[], $2::text[]) AS w(t, e) ON dirty.tenant = w.t AND dirty.email = w.e \
     WHERE dirty.generation > dirty.read_generation"
);

/// A mark asked for: tenant, email, where to answer.
type Request = (String, String, Reply);

/// Hands marks to the batching tasks; they end when this is dropped.
pub struct MarkBatcher {
    requests: mpsc::UnboundedSender<Request>,
}

impl MarkBatcher {
    /// Starts the batching on a thread of its own; it ends when this is dropped.
    pub fn start(
        options: &PgConnectOptions,
        pool: &PgPool,
        connect_timeout: Duration,
        kind: Kind,
    ) -> Result<Self, StoreError> {
        let (requests, incoming) = mpsc::unbounded_channel();
        let (first, second) = (Link::new(options, pool, connect_timeout), Link::new(options, pool, connect_timeout));
        let batching = async move {
            match kind {
                Kind::Always => commit_marks(first, ALWAYS, incoming).await,
                Kind::Unread => {
                    let (writes, to_write) = mpsc::unbounded_channel();
                    tokio::join!(check_marks(first, incoming, writes), commit_marks(second, UNREAD, to_write));
                }
            }
        };
        std::thread::Builder::new()
            .name("gwsync-marks".into())
            .spawn(move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime.block_on(batching),
                // Every mark is then refused (503), and Google retries.
                Err(e) => tracing::error!(error = %e, "the dirty-mark committer could not start"),
            })
            .map_err(|e| StoreError::Background(format!("starting the dirty-mark committer: {e}")))?;
        Ok(MarkBatcher { requests })
    }

    /// Marks the calendar dirty; returns the mark once it is committed.
    pub async fn mark(&self, tenant: &str, user: &str) -> Result<UnreadMark, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send((tenant.to_owned(), user.to_owned(), reply))
            .map_err(|_| StoreError::Background("the dirty-mark committer stopped".into()))?;
        answer.await.map_err(|_| StoreError::Background("the dirty-mark committer stopped".into()))?
    }
}

/// Where a batcher sends its statements: its own connection, opened on its thread (so its
/// replies are read there), or the pool while it has none. The connection is opened in the
/// background: no statement waits for a connection attempt.
struct Link {
    options: PgConnectOptions,
    pool: PgPool,
    connect_timeout: Duration,
    own: Option<PgConnection>,
    connecting: Option<tokio::task::JoinHandle<Result<PgConnection, String>>>,
    /// No new connection is tried before this (the last attempt failed).
    retry_at: Option<Instant>,
}

impl Link {
    fn new(options: &PgConnectOptions, pool: &PgPool, connect_timeout: Duration) -> Self {
        Link {
            options: options.clone().application_name(APPLICATION_NAME),
            pool: pool.clone(),
            connect_timeout,
            own: None,
            connecting: None,
            retry_at: None,
        }
    }

    async fn fetch(
        &mut self,
        statement: &'static str,
        tenants: &[&str],
        users: &[&str],
    ) -> Result<Vec<MarkRow>, sqlx::Error> {
        let query = || sqlx::query_as(statement).bind(tenants).bind(users);
        let Some(connection) = self.connection().await else {
            return query().fetch_all(&self.pool).await;
        };
        let result = query().fetch_all(connection).await;
        match &result {
            Err(e) if broke_connection(e) => {
                // Once more through the pool. (A write that did commit before the connection
                // broke only adds a generation: one more sync.)
                self.own = None;
                self.lost(&e.to_string());
                query().fetch_all(&self.pool).await
            }
            _ => result,
        }
    }

    /// The own connection, if it is open; starts opening one if it is due.
    async fn connection(&mut self) -> Option<&mut PgConnection> {
        if self.own.is_some() {
            return self.own.as_mut();
        }
        if let Some(attempt) = self.connecting.take_if(|attempt| attempt.is_finished()) {
            match attempt.await {
                Ok(Ok(connection)) => {
                    self.own = Some(connection);
                    self.retry_at = None;
                    return self.own.as_mut();
                }
                Ok(Err(e)) => self.lost(&e),
                Err(e) => self.lost(&e.to_string()),
            }
        }
        if self.connecting.is_none() && self.retry_at.is_none_or(|at| Instant::now() >= at) {
            let (options, timeout) = (self.options.clone(), self.connect_timeout);
            self.connecting = Some(tokio::spawn(async move {
                match tokio::time::timeout(timeout, PgConnection::connect_with(&options)).await {
                    Ok(connected) => connected.map_err(|e| e.to_string()),
                    Err(_) => Err("connecting timed out".to_owned()),
                }
            }));
        }
        None
    }

    fn lost(&mut self, error: &str) {
        // A connection error names the server, never the password (the URL was parsed before).
        tracing::warn!(error, "the dirty-mark committer has no connection of its own; it uses the pool meanwhile");
        self.retry_at = Some(Instant::now() + RECONNECT_AFTER);
    }
}

/// Whether `error` leaves the connection unusable: anything but an error the server answered
/// a statement with (a deadlock broken, say), and of those the server ending the session
/// (class 57, operator intervention: a terminated backend or a shutdown) or a connection
/// exception (class 08).
fn broke_connection(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(e) => e.code().is_some_and(|code| code.starts_with("57") || code.starts_with("08")),
        _ => true,
    }
}

/// The requests waiting now (the first awaited), up to `BATCH`, one entry per calendar: a
/// statement may not update a row twice, and one new generation covers every notification of
/// the batch for that calendar. In key order, which the statements keep: two replicas'
/// batches sharing calendars then lock their rows in the same order, and cannot deadlock.
async fn next_batch(incoming: &mut mpsc::UnboundedReceiver<Request>) -> Option<BTreeMap<(String, String), Vec<Reply>>> {
    let first = incoming.recv().await?;
    let mut batch = vec![first];
    while batch.len() < BATCH {
        match incoming.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    let mut calendars: BTreeMap<(String, String), Vec<Reply>> = BTreeMap::new();
    for (tenant, user, reply) in batch {
        calendars.entry((tenant, user)).or_default().push(reply);
    }
    Some(calendars)
}

/// Answers the calendars among `calendars` that a statement sent at `sent` returned, taking
/// them out.
fn answer(calendars: &mut BTreeMap<(String, String), Vec<Reply>>, rows: Vec<MarkRow>, sent: std::time::Instant) {
    for (tenant, user, generation, unread_for, created) in rows {
        let unread_until = unread_for
            .and_then(|us| u64::try_from(us).ok())
            .filter(|us| *us > 0)
            .map(|us| sent + std::time::Duration::from_micros(us));
        let mark = u64::try_from(generation).map(|generation| UnreadMark { generation, unread_until, created });
        for reply in calendars.remove(&(tenant, user)).unwrap_or_default() {
            let _ = reply.send(mark.map_err(|_| StoreError::Corrupt(format!("dirty generation {generation}"))));
        }
    }
}

/// `Kind::Unread`'s first step (module doc): answers the calendars that hold an unread mark,
/// and passes the others on to the committer (all of them if the check fails: the committer
/// checks again as it writes).
async fn check_marks(
    mut link: Link,
    mut incoming: mpsc::UnboundedReceiver<Request>,
    writes: mpsc::UnboundedSender<Request>,
) {
    while let Some(mut calendars) = next_batch(&mut incoming).await {
        let (tenants, users): (Vec<&str>, Vec<&str>) = calendars.keys().map(|(t, u)| (t.as_str(), u.as_str())).unzip();
        let sent = std::time::Instant::now();
        let found = link.fetch(UNREAD_NOW, &tenants, &users).await;
        if let Ok(rows) = found {
            answer(&mut calendars, rows, sent);
        }
        for ((tenant, user), replies) in calendars {
            for reply in replies {
                // The committer stopped (shutting down): the reply is dropped, and the
                // notification answered as not marked.
                let _ = writes.send((tenant.clone(), user.clone(), reply));
            }
        }
    }
}

async fn commit_marks(mut link: Link, statement: &'static str, mut incoming: mpsc::UnboundedReceiver<Request>) {
    while let Some(mut calendars) = next_batch(&mut incoming).await {
        let (tenants, users): (Vec<&str>, Vec<&str>) = calendars.keys().map(|(t, u)| (t.as_str(), u.as_str())).unzip();
        // Before the statement starts, so the instants below are never later than PostgreSQL's.
        let mut sent;
        let mut result: Result<Vec<MarkRow>, sqlx::Error>;
        let mut attempts = 0;
        loop {
            sent = std::time::Instant::now();
            result = link.fetch(statement, &tenants, &users).await;
            attempts += 1;
            // A deadlock with a statement of another kind (the order above holds among marks)
            // is PostgreSQL's to break, and nothing was written: once more, not a 503.
            let deadlocked = matches!(&result, Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("40P01"));
            if !deadlocked || attempts == 3 {
                break;
            }
        }
        match result {
            Ok(rows) => {
                answer(&mut calendars, rows, sent);
                // A calendar the statement did not return (it cannot happen) is not answered
                // as marked.
                for reply in calendars.into_values().flatten() {
                    let _ = reply.send(Err(StoreError::Postgres("a dirty mark was not written".into())));
                }
            }
            Err(e) => {
                let message = e.to_string();
                for reply in calendars.into_values().flatten() {
                    let _ = reply.send(Err(StoreError::Postgres(message.clone())));
                }
            }
        }
    }
}
