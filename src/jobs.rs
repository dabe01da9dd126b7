//! Admin requests that can run for minutes — a renewal sweep over 100,000 users, a full
//! phonebook sync of a large directory — answer `202 Accepted` at once with where to watch
//! them (`GET /api/v1/jobs/{id}`), and run here, on the service's own runtime rather than on
//! the HTTP threads, so no reverse proxy times them out and no request thread is held.
//!
//! Jobs live in memory (the last `KEPT` of them): their effects are durable, their reports
//! are not. A job cut short by a restart shows as unknown (404) afterwards; running it again
//! is harmless.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;

use crate::clock::Clock;

/// Finished jobs kept for their reports.
const KEPT: usize = 200;

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Running,
    Done,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct Job {
    pub id: String,
    /// `channels.renew`, `contacts.sync`.
    pub kind: &'static str,
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
}

impl Jobs {
    /// Jobs run on the runtime this is created on (the service's, not an HTTP worker's).
    pub fn new(clock: Clock) -> Self {
        Jobs { runtime: tokio::runtime::Handle::current(), clock, jobs: Arc::new(Mutex::new(VecDeque::new())) }
    }

    /// Starts `work` and returns its record (state `running`).
    pub fn start<F>(&self, kind: &'static str, tenant: Option<&str>, work: F) -> Job
    where
        F: Future<Output = Result<Value, Value>> + Send + 'static,
    {
        let job = Job {
            id: format!("job_{}", uuid::Uuid::new_v4().simple()),
            kind,
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
        let (jobs, clock, id) = (self.jobs.clone(), self.clock.clone(), job.id.clone());
        self.runtime.spawn(async move {
            let outcome = work.await;
            let mut jobs = jobs.lock();
            if let Some(j) = jobs.iter_mut().find(|j| j.id == id) {
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
            }
        });
        job
    }

    pub fn get(&self, id: &str) -> Option<Job> {
        self.jobs.lock().iter().find(|j| j.id == id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_job_runs_in_the_background_and_keeps_its_report() {
        let jobs = Jobs::new(Clock::system());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let job = jobs.start("test", Some("acme"), async move {
            let _ = rx.await;
            Ok(serde_json::json!({"done": 1}))
        });
        assert_eq!(jobs.get(&job.id).unwrap().state, JobState::Running);
        tx.send(()).unwrap();
        for _ in 0..100 {
            if jobs.get(&job.id).unwrap().state == JobState::Done {
                break;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let done = jobs.get(&job.id).unwrap();
        assert_eq!(done.state, JobState::Done);
        assert_eq!(done.result, Some(serde_json::json!({"done": 1})));
        assert!(jobs.get("job_unknown").is_none());
    }
}
