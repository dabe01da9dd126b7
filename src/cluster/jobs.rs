//! Long admin requests' records, shared by the replicas (`crate::jobs`): a job runs on the
//! replica that was asked, and any replica answers `GET /api/v1/jobs/{id}` for it — behind a
//! balancer the next request rarely reaches the same replica. The record is written before the
//! request is answered and again when the job ends. A record that never ended, whose replica
//! no longer heartbeats (`members`), is one a stopped replica cut short; so is one a replica
//! restarted under the same `cluster.replica_id` finds of its earlier run
//! (`interrupt_earlier_run`, before it records a job of its own). The table comes from the
//! store's migrations (`migrations/0005_jobs.sql`).

use serde_json::Value;
use sqlx::PgPool;

/// Records kept across the replicas (the newest); each replica keeps fewer in memory.
const KEPT: i64 = 1000;

/// A job's record as another replica wrote it.
#[derive(Debug)]
pub struct Record {
    /// The job as its replica serialised it (`crate::jobs::Job`).
    pub job: Value,
    pub finished: bool,
    /// Whether the replica running it still heartbeats.
    pub replica_alive: bool,
}

/// Writes (or rewrites) a job's record; a new one also drops the oldest beyond `KEPT`.
pub async fn put(pool: &PgPool, replica: &str, id: &str, job: &Value, finished: bool) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO cluster_jobs (id, replica, finished, data) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (id) DO UPDATE SET finished = EXCLUDED.finished, data = EXCLUDED.data",
    )
    .bind(id)
    .bind(replica)
    .bind(finished)
    .bind(job.to_string())
    .execute(pool)
    .await?;
    if !finished {
        sqlx::query(
            "DELETE FROM cluster_jobs WHERE id IN (SELECT id FROM cluster_jobs ORDER BY started_at DESC OFFSET $1)",
        )
        .bind(KEPT)
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// What `get` reads as a replica that no longer heartbeats.
const GONE: &str = "(an earlier run)";

/// An earlier run's unfinished jobs of `replica` read as interrupted from now on.
pub async fn interrupt_earlier_run(pool: &PgPool, replica: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE cluster_jobs SET replica = $2 WHERE replica = $1 AND NOT finished")
        .bind(replica)
        .bind(GONE)
        .execute(pool)
        .await?;
    Ok(())
}

/// The job's record, if one is kept; `live_within_secs`: how recent a heartbeat counts as alive.
pub async fn get(pool: &PgPool, id: &str, live_within_secs: i64) -> Result<Option<Record>, sqlx::Error> {
    let row: Option<(String, bool, bool)> = sqlx::query_as(
        "SELECT j.data, j.finished, EXISTS (SELECT 1 FROM cluster_members m \
             WHERE m.id = j.replica AND m.last_seen > now() - $2 * interval '1 second') \
         FROM cluster_jobs j WHERE j.id = $1",
    )
    .bind(id)
    .bind(live_within_secs)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(data, finished, replica_alive)| match serde_json::from_str(&data) {
        Ok(job) => Some(Record { job, finished, replica_alive }),
        Err(e) => {
            tracing::warn!(job = id, error = %e, "a job's record cannot be read; shown as unknown");
            None
        }
    }))
}
