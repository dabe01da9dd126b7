//! What the phone system is told about a user: the whole state at a moment, and why. Kept by
//! the store (what each user was last told) and computed by `presence`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Why a profile is active: the event, its Google `eventType` unless `default`, and the trigger
/// that matched its summary (none for a status event the user's mapping switches).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cause {
    pub event_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    pub trigger: Option<String>,
}

/// What the phone system is told: the whole state at a moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub profile: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub cause: Option<Cause>,
}

impl State {
    /// Whether telling the phone system `other` after `self` would say nothing new: the same
    /// profile, and for a profile the same end. Another event of the same profile taking over
    /// (a new `cause`) is no switch; for the default profile the next start (`until`) is not
    /// news either, or every edit of a future event would send a message.
    pub fn same_as(&self, other: &State) -> bool {
        self.profile == other.profile && (self.profile.is_none() || self.until == other.until)
    }
}
