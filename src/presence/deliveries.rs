//! What the console's phone-system page shows: the last deliveries to each tenant's phone
//! system, and the outcome of a test message. With sled the list is kept in memory (a restart
//! starts it afresh); replicas on PostgreSQL record each attempt in the database
//! (`cluster::deliveries`: only the leader delivers, and any replica shows them).

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Deliveries kept per tenant.
pub const KEPT: usize = 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    pub at: DateTime<Utc>,
    pub user: String,
    pub sequence: u64,
    /// The profile the message switched to (none: back to the default).
    pub profile: Option<String>,
    /// `delivered`, or what went wrong.
    pub outcome: String,
}

#[derive(Default)]
pub struct RecentDeliveries {
    by_tenant: Mutex<HashMap<String, VecDeque<Delivery>>>,
}

impl RecentDeliveries {
    pub fn record(&self, tenant: &str, delivery: Delivery) {
        let mut map = self.by_tenant.lock();
        let list = map.entry(tenant.to_owned()).or_default();
        if list.len() == KEPT {
            list.pop_back();
        }
        list.push_front(delivery);
    }

    /// Newest first.
    pub fn list(&self, tenant: &str) -> Vec<Delivery> {
        self.by_tenant.lock().get(tenant).map(|l| l.iter().cloned().collect()).unwrap_or_default()
    }

    pub fn forget(&self, tenant: &str) {
        self.by_tenant.lock().remove(tenant);
    }
}

/// The outcome of a test message to a phone system.
#[derive(Debug, Clone, Serialize)]
pub struct TestOutcome {
    pub delivered: bool,
    /// The HTTP status the phone system answered, if it answered.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub elapsed_ms: u64,
}

/// The profile a message body names.
pub fn profile_of(body: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(body).ok()?.get("profile")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_deliveries_are_kept_newest_first() {
        let r = RecentDeliveries::default();
        for i in 0..(KEPT as u64 + 5) {
            r.record(
                "acme",
                Delivery {
                    at: Utc::now(),
                    user: "a@acme.se".into(),
                    sequence: i,
                    profile: None,
                    outcome: "delivered".into(),
                },
            );
        }
        let l = r.list("acme");
        assert_eq!(l.len(), KEPT);
        assert_eq!(l[0].sequence, KEPT as u64 + 4);
        assert!(r.list("other").is_empty());
        assert_eq!(profile_of(r#"{"profile":"Lunch"}"#).as_deref(), Some("Lunch"));
        assert_eq!(profile_of(r#"{"profile":null}"#), None);
    }
}
