//! Group commit of dirty marks on PostgreSQL: the webhook answers 200 only once a calendar's
//! mark is committed, and a commit waits for the disk, so marks made meanwhile by other
//! requests (on this replica) wait for the one in flight and then go together in one statement
//! — one commit for a whole burst, as sled's shared flush does.

use std::collections::HashMap;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::StoreError;

/// The most marks one statement carries (the rest wait for the next).
const BATCH: usize = 1024;

type Reply = oneshot::Sender<Result<u64, StoreError>>;

/// Hands marks to the committer task; the task ends when this is dropped.
pub struct MarkBatcher {
    requests: mpsc::UnboundedSender<(String, String, Reply)>,
}

impl MarkBatcher {
    pub fn start(pool: PgPool) -> Self {
        let (requests, incoming) = mpsc::unbounded_channel();
        tokio::spawn(commit_marks(pool, incoming));
        MarkBatcher { requests }
    }

    /// Marks the calendar dirty; returns the mark's generation once it is committed.
    pub async fn mark(&self, tenant: &str, user: &str) -> Result<u64, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send((tenant.to_owned(), user.to_owned(), reply))
            .map_err(|_| StoreError::Background("the dirty-mark committer stopped".into()))?;
        answer.await.map_err(|_| StoreError::Background("the dirty-mark committer stopped".into()))?
    }
}

async fn commit_marks(pool: PgPool, mut incoming: mpsc::UnboundedReceiver<(String, String, Reply)>) {
    while let Some(first) = incoming.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match incoming.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        // One row per calendar: a statement may not update a row twice, and one new
        // generation covers every notification of the batch for that calendar.
        let mut calendars: HashMap<(String, String), Vec<Reply>> = HashMap::new();
        for (tenant, user, reply) in batch {
            calendars.entry((tenant, user)).or_default().push(reply);
        }
        let (tenants, users): (Vec<&str>, Vec<&str>) = calendars.keys().map(|(t, u)| (t.as_str(), u.as_str())).unzip();
        let result: Result<Vec<(String, String, i64)>, sqlx::Error> = sqlx::query_as(
            "INSERT INTO dirty (tenant, email, generation) \
             SELECT t, e, 1 FROM UNNEST($1::text[], $2::text[]) AS marks(t, e) \
             ON CONFLICT (tenant, email) DO UPDATE SET generation = dirty.generation + 1 \
             RETURNING tenant, email, generation",
        )
        .bind(&tenants)
        .bind(&users)
        .fetch_all(&pool)
        .await;
        match result {
            Ok(rows) => {
                for (tenant, user, generation) in rows {
                    for reply in calendars.remove(&(tenant, user)).unwrap_or_default() {
                        let _ = reply.send(
                            u64::try_from(generation)
                                .map_err(|_| StoreError::Corrupt(format!("dirty generation {generation}"))),
                        );
                    }
                }
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
