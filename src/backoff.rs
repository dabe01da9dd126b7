//! Retry delays: truncated exponential backoff with jitter (backon's builder), as Google's
//! retry guidance and Standard Webhooks receivers expect.

use std::time::Duration;

use backon::BackoffBuilder;

/// The delay before retry number `attempt` (0-based): `min`, doubling, jittered, at most `max`.
pub fn delay(attempt: u32, min: Duration, max: Duration) -> Duration {
    backon::ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempt as usize)
        .unwrap_or(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stop_at_the_cap() {
        let min = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        assert!(delay(0, min, max) >= min && delay(0, min, max) < min * 3);
        assert!(delay(3, min, max) >= Duration::from_secs(8));
        assert!(delay(30, min, max) <= max * 2, "jitter adds at most the base again");
    }
}
