//! Leader election: the leader is the replica whose dedicated connection (not one from a pool,
//! which could hand the session to other work or recycle it) holds the advisory lock
//! `LEADER_LOCK`. A replica tries every `cluster.leader_retry`; the leader checks its
//! connection every second and steps down at once when it fails. A killed replica's session
//! ends with its TCP connection, so PostgreSQL frees the lock and the next try succeeds.
//!
//! A leader cut off from the database without noticing (a silent network partition) keeps
//! leading until its check times out, about two seconds; another replica may lead meanwhile.
//! That window can at worst send a switch twice with the same content (both reconcile from the
//! same stored state); receivers drop a sequence they have applied.

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

use super::Cluster;

/// The advisory lock's key: "gwsync" in ASCII, so it is recognisable in `pg_locks`.
pub const LEADER_LOCK: i64 = 0x6777_7379_6e63;

const CHECK_EVERY: Duration = Duration::from_secs(1);
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn run(cluster: Arc<Cluster>, shutdown: CancellationToken) {
    let Some(shared) = &cluster.shared else { return };
    loop {
        let term = lead(&cluster, shared);
        let result = tokio::select! {
            () = shutdown.cancelled() => None,
            r = term => Some(r),
        };
        if cluster.is_leader() {
            cluster.set_leader(false);
            if result.is_some() {
                tracing::warn!(replica = %cluster.replica_id, "lost the leader lock's connection; stepping down");
            }
        }
        match result {
            // Shutting down: the connection closes as `term` is dropped, which frees the lock.
            None => return,
            Some(Err(e)) => {
                tracing::warn!(error = %super::scrub(e, &shared.url), "leader election: database unreachable; trying again")
            }
            Some(Ok(())) => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(shared.leader_retry) => {}
        }
    }
}

/// Takes the lock (trying until it is ours) and holds it until its connection fails.
async fn lead(cluster: &Cluster, shared: &super::Shared) -> Result<(), sqlx::Error> {
    let mut conn = sqlx::PgConnection::connect(shared.url.expose_secret()).await?;
    loop {
        let got: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(LEADER_LOCK).fetch_one(&mut conn).await?;
        if got {
            break;
        }
        tokio::time::sleep(shared.leader_retry).await;
    }
    tracing::info!(replica = %cluster.replica_id, "this replica is the leader");
    cluster.set_leader(true);
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        let check = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&mut conn);
        match tokio::time::timeout(CHECK_TIMEOUT, check).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(sqlx::Error::PoolTimedOut),
        }
    }
}
