//! The member table: each replica writes its heartbeat every few seconds; the replicas seen
//! within the last 15 s count as live. Pacing divides each Google project's quota by that count
//! (one budget per project for the whole cluster): simple and never over the quota while the
//! count is right, at the price of a slightly smaller budget for a few seconds after a replica
//! dies (until its heartbeat ages out) and a larger one for a moment after one starts.
//!
//! Each heartbeat also carries the replica's schema (its latest migration), and notifications
//! coalesce on unread marks (`Store::mark_unread`) only while every live replica records the
//! marks it reads and makes a mark ahead for the next read in a busy spell
//! (`COALESCING_SINCE`): during a rolling upgrade from an older build, the
//! replicas mark every notification anew, as the older build does, until no older build has
//! been seen for a claim lease beyond the live window. A replica starts out not coalescing,
//! until its first heartbeat has seen the others.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Cluster;

const HEARTBEAT: Duration = Duration::from_secs(3);
pub(super) const LIVE_WITHIN_SECS: i64 = 15;
/// The first schema whose builds record the dirty marks their syncs read
/// (`migrations/0003_read_marks.sql`) and, in a busy spell, leave the next generation unread
/// as they read (`migrations/0004_busy_spells.sql`): a build of schema 3 reads a busy
/// calendar's mark without it, so a notification resting on the mark until `busy_until`
/// could be missed.
pub const COALESCING_SINCE: i32 = 4;

pub async fn run(cluster: Arc<Cluster>, shutdown: CancellationToken) {
    let Some(shared) = &cluster.shared else { return };
    loop {
        let beat = async {
            sqlx::query(
                "INSERT INTO cluster_members (id, last_seen, schema_version) VALUES ($1, now(), $2)
                 ON CONFLICT (id) DO UPDATE SET last_seen = now(), schema_version = EXCLUDED.schema_version",
            )
            .bind(&cluster.replica_id)
            .bind(i32::try_from(crate::store::pg_store::pg_schema_version()).unwrap_or(i32::MAX))
            .execute(&shared.pool)
            .await?;
            sqlx::query("DELETE FROM cluster_members WHERE last_seen < now() - interval '1 day'")
                .execute(&shared.pool)
                .await?;
            // An older build leaves `schema_version` NULL. It counts as alive for longer than
            // the quota's count: a replica paused past its heartbeat may still finish a sync on
            // a claim it holds (a lease) and clear a mark it read without recording the read.
            sqlx::query_as::<_, (i64, bool)>(
                "SELECT count(*) FILTER (WHERE last_seen > now() - $1 * interval '1 second'),
                        COALESCE(bool_and(COALESCE(schema_version, 0) >= $2), true)
                 FROM cluster_members WHERE last_seen > now() - $3 * interval '1 second'",
            )
            .bind(LIVE_WITHIN_SECS)
            .bind(COALESCING_SINCE)
            .bind(LIVE_WITHIN_SECS + i64::try_from(shared.lease.as_secs()).unwrap_or(i64::MAX / 4) + 1)
            .fetch_one(&shared.pool)
            .await
        };
        match beat.await {
            Ok((n, all_record_reads)) => {
                let n = usize::try_from(n).unwrap_or(1).max(1);
                if cluster.members.swap(n, Ordering::Relaxed) != n {
                    tracing::info!(replicas = n, "live replicas changed; Google budgets are shared among them");
                }
                if cluster.coalescing.swap(all_record_reads, Ordering::Relaxed) != all_record_reads {
                    if all_record_reads {
                        tracing::info!("every live replica records the marks it reads: notifications coalesce");
                    } else {
                        tracing::info!("a live replica runs an older build: every notification is marked anew");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "replica heartbeat failed"),
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(HEARTBEAT) => {}
        }
    }
    // A clean stop leaves the count at once.
    let _ =
        sqlx::query("DELETE FROM cluster_members WHERE id = $1").bind(&cluster.replica_id).execute(&shared.pool).await;
}
