//! Time, injected. Production runs on the system clock; tests run on a clock that starts at
//! real time and jumps forward when told (`advance`), waking every sleeper whose moment has
//! come — so starts, ends, expiry and renewal are tested without sleeping for real.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

#[derive(Clone)]
pub struct Clock {
    inner: Arc<Inner>,
}

struct Inner {
    offset_ms: AtomicI64,
    advanced: watch::Sender<i64>,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock(offset {} ms)", self.inner.offset_ms.load(Ordering::SeqCst))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl Clock {
    /// The system clock (and a test clock before its first `advance`).
    pub fn system() -> Clock {
        let (advanced, _) = watch::channel(0);
        Clock { inner: Arc::new(Inner { offset_ms: AtomicI64::new(0), advanced }) }
    }

    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::milliseconds(self.inner.offset_ms.load(Ordering::SeqCst))
    }

    /// Jumps forward (tests only: production never calls it).
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        let total = self.inner.offset_ms.fetch_add(ms, Ordering::SeqCst) + ms;
        self.inner.advanced.send_replace(total);
    }

    /// Sleeps until the clock reads `t` — in real time, or sooner if the clock is advanced.
    pub async fn sleep_until(&self, t: DateTime<Utc>) {
        let mut advanced = self.inner.advanced.subscribe();
        loop {
            let now = self.now();
            if now >= t {
                return;
            }
            let remaining = (t - now).to_std().unwrap_or(Duration::ZERO);
            tokio::select! {
                () = tokio::time::sleep(remaining) => {}
                changed = advanced.changed() => {
                    if changed.is_err() {
                        tokio::time::sleep(remaining).await;
                    }
                }
            }
        }
    }

    pub async fn sleep(&self, d: Duration) {
        let now = self.now();
        let until = chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| now.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.sleep_until(until).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn advancing_wakes_sleepers_whose_time_has_come() {
        let clock = Clock::system();
        let target = clock.now() + chrono::Duration::hours(1);
        let c = clock.clone();
        let sleeper = tokio::spawn(async move {
            c.sleep_until(target).await;
            c.now()
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!sleeper.is_finished(), "an hour has not passed");
        clock.advance(Duration::from_secs(1800));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!sleeper.is_finished(), "half an hour is not enough");
        clock.advance(Duration::from_secs(1800));
        let woke_at = tokio::time::timeout(Duration::from_secs(5), sleeper).await.unwrap().unwrap();
        assert!(woke_at >= target);
    }
}
