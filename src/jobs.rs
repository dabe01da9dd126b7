//! Admin requests that can run for minutes — a renewal sweep over 100,000 users, a full
//! phonebook sync of a large directory — answer `202 Accepted` at once with where to watch
//! them (`GET /api/v1/jobs/{id}`), and run here, on the service's own runtime rather than on
//! the HTTP threads, so no reverse proxy times them out and no request thread is held.
//!
//! Jobs live in memory (the last `KEPT` of them): their effects are durable, their reports
//! are not. With sled a job cut short by a restart shows as unknown (404) afterwards; running
//! it again is harmless. Replicas on PostgreSQL also record each job in the database
//! (`cluster::jobs`) before answering 202 and when it ends, so any replica shows it; one whose
//! replica stopped before it ended shows as failed (`job_interrupted`).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::clock::Clock;
use crate::cluster::Cluster;

/// Finished jobs kept for their reports.
const KEPT: usize = 200;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Running,
    Done,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    /// `channels.renew`, `contacts.sync`.
    pub kind: String,
    /// The tenant it concerns (none: every tenant).
    pub tenant: Option<String>,
    pub state: JobState,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The job's report when done (or its error when failed).
    pub result: Option<Value>,
}

pub struct Jobs {
    runtime: tokio::runtime::Handle,
    clock: Clock,
    jobs: Arc<Mutex<VecDeque<Job>>>,
    /// Replicas on one database: where the others read this one's jobs, and it theirs.
    cluster: Option<Arc<Cluster>>,
    /// Done once per process, before this replica records a job: its earlier run's unfinished
    /// jobs marked interrupted (`Cluster::forget_jobs_of_earlier_run`).
    earlier_run: Arc<tokio::sync::OnceCell<()>>,
}

impl Jobs {
    /// Jobs run on the runtime this is created on (the service's, not an HTTP worker's).
    pub fn new(clock: Clock) -> Self {
        Jobs {
            runtime: tokio::runtime::Handle::current(),
            clock,
            jobs: Arc::new(Mutex::new(VecDeque::new())),
            cluster: None,
            earlier_run: Arc::default(),
        }
    }

    /// On a replica of a shared database: jobs are recorded there too (module doc).
    pub fn shared(mut self, cluster: Arc<Cluster>) -> Self {
        self.cluster = Some(cluster).filter(|c| c.is_shared());
        if let Some(cluster) = self.cluster.clone() {
            let once = self.earlier_run.clone();
            self.runtime.spawn(async move {
                once.get_or_init(|| cluster.forget_jobs_of_earlier_run()).await;
            });
        }
        self
    }

    /// Starts `work` and returns its record (state `running`), once any replica can show it.
    pub async fn start<F>(&self, kind: &'static str, tenant: Option<&str>, work: F) -> Job
    where
        F: Future<Output = Result<Value, Value>> + Send + 'static,
    {
        let job = Job {
            id: format!("job_{}", uuid::Uuid::new_v4().simple()),
            kind: kind.to_owned(),
            tenant: tenant.map(str::to_owned),
            state: JobState::Running,
            started_at: self.clock.now(),
            finished_at: None,
            result: None,
        };
        {
            let mut jobs = self.jobs.lock();
            jobs.push_back(job.clone());
            while jobs.len() > KEPT {
                // Drop the oldest finished one; running ones stay until they end.
                match jobs.iter().position(|j| j.state != JobState::Running) {
                    Some(i) => {
                        jobs.remove(i);
                    }
                    None => break,
                }
            }
        }
        if let Some(cluster) = &self.cluster {
            self.earlier_run.get_or_init(|| cluster.forget_jobs_of_earlier_run()).await;
            // Not recorded (the database failing): the job still runs, and this replica shows it.
            cluster.record_job(&job.id, &json!(job), false).await;
        }
        let (jobs, clock, id, cluster) = (self.jobs.clone(), self.clock.clone(), job.id.clone(), self.cluster.clone());
        self.runtime.spawn(async move {
            let outcome = work.await;
            let ended = {
                let mut jobs = jobs.lock();
                let found = jobs.iter_mut().find(|j| j.id == id);
                found.map(|j| {
                    j.finished_at = Some(clock.now());
                    match outcome {
                        Ok(v) => {
                            j.state = JobState::Done;
                            j.result = Some(v);
                        }
                        Err(e) => {
                            j.state = JobState::Failed;
                            j.result = Some(e);
                        }
                    }
                    j.clone()
                })
            };
            if let (Some(cluster), Some(ended)) = (cluster, ended) {
                // A few tries: a record left unfinished would read as running while this
                // replica lives.
                for attempt in 0..5u32 {
                    if cluster.record_job(&id, &json!(ended), true).await {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(1 << attempt)).await;
                }
            }
        });
        job
    }

    /// The job: this replica's, or (replicas) another's as recorded. An error only when the
    /// database could not be asked.
    pub async fn get(&self, id: &str) -> Result<Option<Job>, crate::cluster::ClusterError> {
        if let Some(job) = self.jobs.lock().iter().find(|j| j.id == id).cloned() {
            return Ok(Some(job));
        }
        let Some(cluster) = &self.cluster else { return Ok(None) };
        let Some(record) = cluster.job(id).await? else { return Ok(None) };
        let mut job = match serde_json::from_value::<Job>(record.job) {
            Ok(job) => job,
            Err(e) => {
                tracing::warn!(job = id, error = %e, "another replica's job record cannot be read; shown as unknown");
                return Ok(None);
            }
        };
        if !record.finished && !record.replica_alive {
            job.state = JobState::Failed;
            job.result = Some(json!({
                "code": "job_interrupted",
                "message": "the replica running this job stopped before it finished; what it did is kept, and running it again is harmless",
            }));
        }
        Ok(Some(job))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_job_runs_in_the_background_and_keeps_its_report() {
        let jobs = Jobs::new(Clock::system());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let job = jobs
            .start("test", Some("acme"), async move {
                let _ = rx.await;
                Ok(serde_json::json!({"done": 1}))
            })
            .await;
        assert_eq!(jobs.get(&job.id).await.unwrap().unwrap().state, JobState::Running);
        tx.send(()).unwrap();
        for _ in 0..100 {
            if jobs.get(&job.id).await.unwrap().unwrap().state == JobState::Done {
                break;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let done = jobs.get(&job.id).await.unwrap().unwrap();
        assert_eq!(done.state, JobState::Done);
        assert_eq!(done.result, Some(serde_json::json!({"done": 1})));
        assert!(jobs.get("job_unknown").await.unwrap().is_none());
    }
}
