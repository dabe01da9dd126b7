//! Group commit: many callers that each need "my write is on disk" share one flush.
//!
//! A webhook must not be acknowledged before its dirty mark is durable, but a flush per
//! request would cap throughput at the disk's sync rate. Callers write, then `durable()`: it
//! returns once a flush that *started after the call* has finished, so one flush covers every
//! write made before it, however many requests are waiting.
//!
//! A store whose writes are durable when they return (PostgreSQL: `Store::durable_on_return`)
//! needs no flush, and `durable()` returns at once: a trip through the flusher's task would only
//! make each acknowledgement wait for the runtime that also runs the syncs, which falls tens of
//! milliseconds behind when a storm starts (`cargo bench --bench replicas`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::{SharedStore, StoreError};

pub struct GroupFlush {
    /// The store's writes are durable on return: nothing to flush.
    needless: bool,
    requested: AtomicU64,
    wake: Notify,
    /// The last round flushed, and its error if it failed.
    done: watch::Sender<(u64, Option<String>)>,
}

impl GroupFlush {
    /// Starts the flusher task; it ends with `shutdown` (after a last flush).
    pub fn start(store: SharedStore, shutdown: CancellationToken) -> Arc<Self> {
        let (done, _) = watch::channel((0, None));
        let needless = store.durable_on_return();
        let this = Arc::new(GroupFlush { needless, requested: AtomicU64::new(0), wake: Notify::new(), done });
        if needless {
            return this;
        }
        let me = this.clone();
        tokio::spawn(async move {
            loop {
                let stopping = tokio::select! {
                    () = me.wake.notified() => false,
                    () = shutdown.cancelled() => true,
                };
                // Everything requested before this load was written before it: this flush covers it.
                let target = me.requested.load(Ordering::SeqCst);
                let result = super::flush(&store).await;
                me.done.send_replace((target, result.err().map(|e| e.to_string())));
                if stopping {
                    return;
                }
            }
        });
        this
    }

    /// Returns when every write this task made before calling is on disk.
    pub async fn durable(&self) -> Result<(), StoreError> {
        if self.needless {
            return Ok(());
        }
        let mine = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let mut done = self.done.subscribe();
        self.wake.notify_one();
        loop {
            {
                let (round, error) = &*done.borrow_and_update();
                if *round >= mine {
                    return match error {
                        Some(e) => Err(StoreError::Flush(e.clone())),
                        None => Ok(()),
                    };
                }
            }
            if done.changed().await.is_err() {
                return Err(StoreError::Flush("the flusher stopped".into()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled_store::SledStore;

    #[tokio::test]
    async fn concurrent_callers_share_flushes_and_all_return() {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore = Arc::new(SledStore::open(dir.path(), 8).unwrap());
        let shutdown = CancellationToken::new();
        let flush = GroupFlush::start(store.clone(), shutdown.clone());
        let mut tasks = Vec::new();
        for i in 0..50 {
            let (f, s) = (flush.clone(), store.clone());
            tasks.push(tokio::spawn(async move {
                s.mark_dirty("t", &format!("u{i}@x")).await.unwrap();
                f.durable().await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(store.dirty_calendars().await.unwrap().len(), 50);
        shutdown.cancel();
    }
}
