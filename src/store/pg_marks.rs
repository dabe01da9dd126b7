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
//! The webhook's marks are batched on the HTTP worker thread that answers it
//! (`start_on_this_thread`), with connections of that worker's own: an acknowledgement then
//! never waits for the runtime that syncs calendars, which falls tens of milliseconds behind
//! when a storm of notifications starts (measured with `cargo bench --bench replicas`), nor for
//! a pooled connection that sync work holds. Each batcher keeps at most two connections (one
//! checking, one writing), opened at its first mark and closed after `WORKER_IDLE` unused.
//! Marks made by sync work go through the store's own batchers, on the service's runtime, and
//! so do the webhook's while replicas do not coalesce (`Store::mark_dirty`: a rolling upgrade
//! from an older build). (Tried and measured worse: one thread of its own for all of a
//! replica's marks, whose waits each acknowledgement then shared twice — rounds 5.3–14.6 ms
//! with waits of up to 280 ms, against 5.4–8.5 ms here.)

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::sync::{mpsc, oneshot};

use super::{StoreError, UnreadMark};

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

/// An HTTP worker's connections close after this long unused (as the shared pool's, sqlx's
/// default): kept between bursts of webhooks, so a burst does not start by connecting.
const WORKER_IDLE: Duration = Duration::from_secs(600);

/// What `pg_stat_activity` calls an HTTP worker's connections.
pub const WORKER_APPLICATION_NAME: &str = "gwsync-acks";

thread_local! {
    /// This thread's `Kind::Unread` batcher, per store (`start_on_this_thread`).
    static ON_THIS_THREAD: RefCell<HashMap<u64, Arc<MarkBatcher>>> = RefCell::new(HashMap::new());
}

/// Starts a `Kind::Unread` batcher for `store` (an id unique in the process) on this thread,
/// whose Tokio runtime (an HTTP worker's) then runs it and its connections; `on_this_thread`
/// finds it. Elsewhere (no runtime, or a multi-threaded one) nothing starts, and marks go
/// through the store's batcher.
pub fn start_on_this_thread(store: u64, options: &PgConnectOptions, acquire_timeout: Duration) {
    // An HTTP worker runs a runtime of its own on its thread; on a thread of the service's
    // runtime the batcher would gain nothing.
    let own_runtime = tokio::runtime::Handle::try_current()
        .is_ok_and(|runtime| runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
    if !own_runtime {
        return;
    }
    ON_THIS_THREAD.with(|batchers| {
        batchers.borrow_mut().entry(store).or_insert_with(|| {
            // Lazy: a worker that never answers a webhook opens no connection.
            let pool = PgPoolOptions::new()
                .max_connections(2)
                .min_connections(0)
                .idle_timeout(WORKER_IDLE)
                .acquire_timeout(acquire_timeout)
                .connect_lazy_with(options.clone().application_name(WORKER_APPLICATION_NAME));
            Arc::new(MarkBatcher::start(pool, Kind::Unread))
        });
    });
}

/// The batcher `start_on_this_thread` started here for `store`, if any.
pub fn on_this_thread(store: u64) -> Option<Arc<MarkBatcher>> {
    ON_THIS_THREAD.with(|batchers| batchers.borrow().get(&store).cloned())
}

/// Hands marks to the batching tasks; they end when this is dropped.
pub struct MarkBatcher {
    requests: mpsc::UnboundedSender<Request>,
}

impl MarkBatcher {
    pub fn start(pool: PgPool, kind: Kind) -> Self {
        let (requests, incoming) = mpsc::unbounded_channel();
        match kind {
            Kind::Always => {
                tokio::spawn(commit_marks(pool, ALWAYS, incoming));
            }
            Kind::Unread => {
                let (writes, to_write) = mpsc::unbounded_channel();
                tokio::spawn(check_marks(pool.clone(), incoming, writes));
                tokio::spawn(commit_marks(pool, UNREAD, to_write));
            }
        }
        MarkBatcher { requests }
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
    pool: PgPool,
    mut incoming: mpsc::UnboundedReceiver<Request>,
    writes: mpsc::UnboundedSender<Request>,
) {
    while let Some(mut calendars) = next_batch(&mut incoming).await {
        let (tenants, users): (Vec<&str>, Vec<&str>) = calendars.keys().map(|(t, u)| (t.as_str(), u.as_str())).unzip();
        let sent = std::time::Instant::now();
        let found: Result<Vec<MarkRow>, sqlx::Error> =
            sqlx::query_as(UNREAD_NOW).bind(&tenants).bind(&users).fetch_all(&pool).await;
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

async fn commit_marks(pool: PgPool, statement: &'static str, mut incoming: mpsc::UnboundedReceiver<Request>) {
    while let Some(mut calendars) = next_batch(&mut incoming).await {
        let (tenants, users): (Vec<&str>, Vec<&str>) = calendars.keys().map(|(t, u)| (t.as_str(), u.as_str())).unzip();
        // Before the statement starts, so the instants below are never later than PostgreSQL's.
        let mut sent;
        let mut result: Result<Vec<MarkRow>, sqlx::Error>;
        let mut attempts = 0;
        loop {
            sent = std::time::Instant::now();
            result = sqlx::query_as(statement).bind(&tenants).bind(&users).fetch_all(&pool).await;
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
