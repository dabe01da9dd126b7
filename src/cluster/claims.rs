//! Sync claims across replicas: a row per calendar being synced (or waiting for its retry or
//! rerun) in `sync_claims`, with the replica holding it and until when.
//!
//! Claiming is one statement: `INSERT … ON CONFLICT DO UPDATE … WHERE the old claim ran out or
//! is ours`, which PostgreSQL applies under the row's lock, so of replicas racing for one
//! calendar exactly one wins, and none waits for another. (`FOR UPDATE SKIP LOCKED` serves
//! replicas taking *any* free work from a shared queue; here each replica asks for a calendar
//! it was notified of, by key, so a claim by key is what fits — and it needs no transaction.)
//! Leases are on the database's clock, which all replicas share. The table comes from the
//! store's migrations (`migrations/0002_cluster.sql`), applied before the cluster starts.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use sqlx::PgPool;

use super::ClusterError;
use crate::model::CalendarKey;

/// This replica's own claims and when each runs out at the earliest: measured from before the
/// statement that set it, so never later than the database's `until`. A claim with most of a
/// lease left is not asked for again (a rerun, a keep-alive): no other replica can take it
/// before it runs out, so the statement would change nothing.
#[derive(Default)]
pub struct Held(parking_lot::Mutex<HashMap<CalendarKey, Instant>>);

impl Held {
    /// Whether the claim is certainly this replica's for `for_` more.
    pub fn covers(&self, key: &CalendarKey, for_: Duration) -> bool {
        self.0.lock().get(key).is_some_and(|until| *until > Instant::now() + for_)
    }

    pub fn set(&self, key: &CalendarKey, until: Instant) {
        let mut held = self.0.lock();
        if held.len() > 1024 {
            let now = Instant::now();
            held.retain(|_, u| *u > now);
        }
        held.insert(key.clone(), until);
    }

    pub fn forget(&self, key: &CalendarKey) {
        self.0.lock().remove(key);
    }
}

/// Whether a calendar's sync is this replica's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    Mine,
    /// Another replica holds it for `for_` more (from the database's now): it will see this
    /// replica's dirty mark if it is made before its claim ends.
    Elsewhere {
        for_: Duration,
    },
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

/// A calendar held by another replica is answered from a plain read, before the insert: a
/// conflicting `INSERT … ON CONFLICT DO UPDATE` locks the row even when its `WHERE` refuses the
/// update, and a lock is a write that waits for the disk at commit. Replicas try the claims
/// they found held again when those run out, so a refused claim is common under load; it now
/// writes nothing, and says how long the holder's claim has left, in the same statement.
pub async fn claim(pool: &PgPool, key: &CalendarKey, me: &str, lease: Duration) -> Result<Claimed, ClusterError> {
    let (mine, left_us): (Option<String>, Option<i64>) = sqlx::query_as(
        "WITH held AS (SELECT until FROM sync_claims
                 WHERE tenant = $1 AND user_email = $2 AND holder <> $3 AND until >= now()),
             claimed AS (INSERT INTO sync_claims (tenant, user_email, holder, until)
                 SELECT $1::text, $2::text, $3::text, now() + $4 * interval '1 millisecond'
                 WHERE NOT EXISTS (SELECT 1 FROM held)
                 ON CONFLICT (tenant, user_email) DO UPDATE
                     SET holder = EXCLUDED.holder, until = EXCLUDED.until
                     WHERE sync_claims.until < now() OR sync_claims.holder = EXCLUDED.holder
                 RETURNING holder)
         SELECT (SELECT holder FROM claimed),
                (SELECT floor(EXTRACT(EPOCH FROM (until - now())) * 1000000)::bigint FROM held)",
    )
    .bind(&key.tenant)
    .bind(&key.user)
    .bind(me)
    .bind(millis(lease))
    .fetch_one(pool)
    .await?;
    if mine.is_some() {
        return Ok(Claimed::Mine);
    }
    // No `held` row but refused all the same: another replica's claim landed meanwhile.
    let left = left_us.and_then(|us| u64::try_from(us).ok()).map(Duration::from_micros).unwrap_or_default();
    Ok(Claimed::Elsewhere { for_: left })
}

/// Extends this replica's claim to `for_` from now; false if it is no longer ours.
pub async fn extend(pool: &PgPool, key: &CalendarKey, me: &str, for_: Duration) -> Result<bool, ClusterError> {
    let done = sqlx::query(
        "UPDATE sync_claims SET until = now() + $4 * interval '1 millisecond'
         WHERE tenant = $1 AND user_email = $2 AND holder = $3",
    )
    .bind(&key.tenant)
    .bind(&key.user)
    .bind(me)
    .bind(millis(for_))
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn release(pool: &PgPool, key: &CalendarKey, me: &str) -> Result<(), ClusterError> {
    sqlx::query("DELETE FROM sync_claims WHERE tenant = $1 AND user_email = $2 AND holder = $3")
        .bind(&key.tenant)
        .bind(&key.user)
        .bind(me)
        .execute(pool)
        .await?;
    Ok(())
}

/// Lets this replica's claim go once `after` has passed (at once if it is zero). Until then the
/// calendar stays this replica's: a notification landing on another replica within this one's
/// settling window finds it held, leaves its mark and tries again after the window, instead of
/// syncing at once — the window holds across replicas, as it does within one.
pub async fn release_after(pool: &PgPool, key: &CalendarKey, me: &str, after: Duration) -> Result<(), ClusterError> {
    if after.is_zero() {
        return release(pool, key, me).await;
    }
    sqlx::query(
        "UPDATE sync_claims SET until = now() + $4 * interval '1 millisecond'
         WHERE tenant = $1 AND user_email = $2 AND holder = $3",
    )
    .bind(&key.tenant)
    .bind(&key.user)
    .bind(me)
    .bind(millis(after))
    .execute(pool)
    .await?;
    Ok(())
}

/// Calendars with a live claim (and, in passing, forgets claims that ran out long ago).
pub async fn live(pool: &PgPool) -> Result<HashSet<CalendarKey>, ClusterError> {
    sqlx::query("DELETE FROM sync_claims WHERE until < now() - interval '1 hour'").execute(pool).await?;
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT tenant, user_email FROM sync_claims WHERE until >= now()").fetch_all(pool).await?;
    Ok(rows.into_iter().map(|(tenant, user)| CalendarKey { tenant, user }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_known_held_only_while_enough_of_it_is_left_and_until_let_go() {
        let held = Held::default();
        let k = CalendarKey::new("t", "u@x");
        let minute = Duration::from_secs(60);
        assert!(!held.covers(&k, Duration::ZERO), "never claimed here");
        held.set(&k, Instant::now() + minute);
        assert!(held.covers(&k, Duration::from_secs(30)));
        assert!(!held.covers(&k, minute), "not for longer than is left");
        assert!(!held.covers(&CalendarKey::new("t", "v@x"), Duration::ZERO), "per calendar");
        held.forget(&k);
        assert!(!held.covers(&k, Duration::ZERO), "let go: asked for again");
    }
}
