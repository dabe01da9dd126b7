//! What verifying a notification needs, per channel, kept in memory on PostgreSQL: the webhook
//! reads a channel from the database once per `ttl`, not per notification. This replica's own
//! writes update it at once; another replica's are seen within about `ttl`, which is safe: a
//! channel's id and token never change, an id not in memory is always read (a channel another
//! replica just created is never refused), and a notification on a channel stopped elsewhere
//! meanwhile only causes a sync that finds nothing to do.
//!
//! A channel past its time is still answered from memory while the store reads it again in the
//! background (`Lookup::Stale` goes to one caller at a time, who hands it to the store's
//! refresher; `PgStore` reads the stale channels many to a statement): no acknowledgement waits
//! for that read. And each channel's time is drawn from the last quarter of `ttl`, so the
//! channels read together (all of a replica's at its first notifications) do not all fall due
//! together every `ttl`; after a quiet spell longer than `ttl` they do, and the refresher's
//! batches keep that to a few statements.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use rand::RngExt;

use super::ChannelAuth;

/// Past this many cached channels, the stale ones are dropped (channels deleted elsewhere).
const PRUNE_AT: usize = 200_000;

struct Cached {
    auth: Arc<ChannelAuth>,
    fresh_until: Instant,
    /// A caller got `Lookup::Stale` and reads the channel again.
    refreshing: AtomicBool,
}

/// What the cache knows of a channel.
#[derive(Debug)]
pub enum Lookup {
    Fresh(Arc<ChannelAuth>),
    /// Past its time, and this caller reads it again (then `remember`, `forget` or
    /// `refresh_failed`); answer with it meanwhile.
    Stale(Arc<ChannelAuth>),
    /// Past its time, and another caller reads it again already.
    Refreshing(Arc<ChannelAuth>),
    Missing,
}

pub struct ChannelCache {
    entries: RwLock<HashMap<String, Cached>>,
    ttl: Duration,
}

impl ChannelCache {
    pub fn new(ttl: Duration) -> Self {
        ChannelCache { entries: RwLock::new(HashMap::new()), ttl }
    }

    pub fn get(&self, id: &str) -> Lookup {
        let entries = self.entries.read();
        let Some(c) = entries.get(id) else { return Lookup::Missing };
        if Instant::now() < c.fresh_until {
            Lookup::Fresh(c.auth.clone())
        } else if c.refreshing.swap(true, Ordering::AcqRel) {
            Lookup::Refreshing(c.auth.clone())
        } else {
            Lookup::Stale(c.auth.clone())
        }
    }

    /// The channel as just read or written.
    pub fn remember(&self, id: &str, auth: Arc<ChannelAuth>) {
        let now = Instant::now();
        let fresh_until = now + self.ttl.mul_f64(rand::rng().random_range(0.75..=1.0));
        let mut entries = self.entries.write();
        if entries.len() >= PRUNE_AT {
            entries.retain(|_, c| c.fresh_until > now);
        }
        entries.insert(id.to_owned(), Cached { auth, fresh_until, refreshing: AtomicBool::new(false) });
    }

    pub fn forget(&self, id: &str) {
        self.entries.write().remove(id);
    }

    /// Drops the channels `keep` says no to (a user or tenant deleted).
    pub fn retain(&self, keep: impl Fn(&ChannelAuth) -> bool) {
        self.entries.write().retain(|_, c| keep(&c.auth));
    }

    /// The read after `Lookup::Stale` failed: the next caller tries again.
    pub fn refresh_failed(&self, id: &str) {
        if let Some(c) = self.entries.read().get(id) {
            c.refreshing.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(user: &str) -> Arc<ChannelAuth> {
        Arc::new(ChannelAuth {
            tenant: "acme".into(),
            user: user.into(),
            token_digest: None,
            resource_id: None,
            orphaned: false,
        })
    }

    #[test]
    fn a_stale_channel_is_answered_while_one_caller_reads_it_again() {
        let cache = ChannelCache::new(Duration::from_secs(60));
        assert!(matches!(cache.get("c1"), Lookup::Missing));
        cache.remember("c1", auth("a@acme"));
        assert!(matches!(cache.get("c1"), Lookup::Fresh(a) if a.user == "a@acme"));

        let due = ChannelCache::new(Duration::ZERO);
        due.remember("c1", auth("a@acme"));
        assert!(matches!(due.get("c1"), Lookup::Stale(a) if a.user == "a@acme"), "the first caller reads it again");
        assert!(matches!(due.get("c1"), Lookup::Refreshing(_)), "the others answer from memory meanwhile");
        assert!(matches!(due.get("c1"), Lookup::Refreshing(_)));
        due.refresh_failed("c1");
        assert!(matches!(due.get("c1"), Lookup::Stale(_)), "a failed read is tried again by the next caller");
        due.forget("c1");
        assert!(matches!(due.get("c1"), Lookup::Missing), "gone where it was read as gone");
    }

    #[test]
    fn channels_read_together_do_not_fall_due_together() {
        let ttl = Duration::from_secs(40);
        let cache = ChannelCache::new(ttl);
        let before = Instant::now();
        for i in 0..200 {
            cache.remember(&format!("c{i}"), auth("a@acme"));
        }
        let entries = cache.entries.read();
        let times: Vec<Duration> = entries.values().map(|c| c.fresh_until - before).collect();
        assert!(times.iter().all(|t| *t >= ttl.mul_f64(0.75) && *t <= ttl + Duration::from_secs(1)), "{times:?}");
        let (min, max) = (times.iter().min().copied(), times.iter().max().copied());
        assert!(
            max.zip(min).is_some_and(|(max, min)| max - min > ttl / 8),
            "spread over the last quarter: {min:?}..{max:?}"
        );
    }
}
