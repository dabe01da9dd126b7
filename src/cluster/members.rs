//! The member table: each replica writes its heartbeat every few seconds; the replicas seen
//! within the last 15 s count as live. Pacing divides each Google project's quota by that count
//! (one budget per project for the whole cluster): simple and never over the quota while the
//! count is right, at the price of a slightly smaller budget for a few seconds after a replica
//! dies (until its heartbeat ages out) and a larger one for a moment after one starts.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Cluster;

const HEARTBEAT: Duration = Duration::from_secs(3);
const LIVE_WITHIN_SECS: i64 = 15;

pub async fn run(cluster: Arc<Cluster>, shutdown: CancellationToken) {
    let Some(shared) = &cluster.shared else { return };
    loop {
        let beat = async {
            sqlx::query(
                "INSERT INTO cluster_members (id, last_seen) VALUES ($1, now())
                 ON CONFLICT (id) DO UPDATE SET last_seen = now()",
            )
            .bind(&cluster.replica_id)
            .execute(&shared.pool)
            .await?;
            sqlx::query("DELETE FROM cluster_members WHERE last_seen < now() - interval '1 day'")
                .execute(&shared.pool)
                .await?;
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM cluster_members WHERE last_seen > now() - $1 * interval '1 second'",
            )
            .bind(LIVE_WITHIN_SECS)
            .fetch_one(&shared.pool)
            .await
        };
        match beat.await {
            Ok(n) => {
                let n = usize::try_from(n).unwrap_or(1).max(1);
                if cluster.members.swap(n, Ordering::Relaxed) != n {
                    tracing::info!(replicas = n, "live replicas changed; Google budgets are shared among them");
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
