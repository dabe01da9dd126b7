//! The records gwsync keeps per tenant and user beside the admin's own data: a sealed key,
//! a calendar's sync state, push channels, what a user was last told and the messages queued
//! to tell them. The store persists them; sync, presence and the API read them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::event::StoredEvent;
use super::key_file::KeyInfo;

/// A tenant's service-account key: its public facts and the sealed key file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredCredentials {
    pub info: KeyInfo,
    /// The key file, sealed under the master key (base64).
    pub sealed: String,
    pub uploaded_at: DateTime<Utc>,
}

/// Sync state of one user's primary calendar.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CalendarState {
    /// Google's cursor; written only together with the changes it covers.
    pub sync_token: Option<String>,
    /// The calendar's own time zone, as `events.list` reports it.
    pub time_zone: Option<String>,
    pub last_sync_at: Option<DateTime<Utc>>,
    pub last_full_sync_at: Option<DateTime<Utc>>,
    pub events: usize,
    pub last_error: Option<SyncFailure>,
    /// Failures since the last success (drives the backoff).
    pub failures: u32,
    /// The `eventTypes` the sync token's chain was started with; none if synced by a gwsync that
    /// did not send them (every type). A calendar synced with another set is synced in full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_types: Option<Vec<String>>,
    /// The last sync stored something that changes the user's timeline, and no sync since has
    /// made sure it was recomputed. A sync that changes nothing recomputes nothing, unless
    /// this says the job before it may have stopped between storing and recomputing (killed,
    /// or its request to the leader lost): then it recomputes before clearing this.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timeline_pending: bool,
}

/// Why the last attempt failed, and what a Workspace admin can do about it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SyncFailure {
    pub code: String,
    pub message: String,
    pub hint: String,
    pub at: DateTime<Utc>,
    /// When gwsync tries again (none: not until the user or tenant changes).
    pub retry_at: Option<DateTime<Utc>>,
}

/// One change of a sync result.
#[derive(Debug, Clone, PartialEq)]
pub enum EventChange {
    Upsert(Box<StoredEvent>),
    /// Remove the event (and, for a series, its exceptions).
    Delete(String),
}

/// A push channel gwsync created (or is creating) on a user's calendar.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChannelRecord {
    pub id: String,
    /// SHA-256 (hex) of the channel token: enough to verify notifications, useless to forge them.
    pub token_digest: String,
    pub tenant: String,
    pub user: String,
    /// Known once Google answered the watch call.
    pub resource_id: Option<String>,
    pub expiration: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// Its user or tenant is gone (or it was replaced) but stopping it at Google failed: the
    /// keeper retries until it is stopped or expires. Its notifications are ignored.
    #[serde(default)]
    pub orphaned: bool,
}

/// What verifying a notification needs of a channel: the webhook's whole view of it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelAuth {
    /// SHA-256 of the channel token; `None` if the stored digest is damaged (nothing matches).
    pub token_digest: Option<[u8; 32]>,
    pub resource_id: Option<String>,
    pub tenant: String,
    pub user: String,
    pub orphaned: bool,
}

impl ChannelAuth {
    pub fn of(channel: &ChannelRecord) -> Self {
        ChannelAuth {
            token_digest: digest_from_hex(&channel.token_digest),
            resource_id: channel.resource_id.clone(),
            tenant: channel.tenant.clone(),
            user: channel.user.clone(),
            orphaned: channel.orphaned,
        }
    }
}

fn digest_from_hex(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// What gwsync last told the phone system about a user, and the last sequence number used.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PresenceRecord {
    pub sequence: u64,
    pub last: Option<super::presence::State>,
    /// The phone-system URL `last` was queued for; none from a gwsync before it was kept. A
    /// receiver at another URL was never told anything.
    #[serde(default)]
    pub receiver: Option<String>,
}

/// A profile switch waiting to be delivered (or retried).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutboxMessage {
    pub tenant: String,
    pub user: String,
    pub sequence: u64,
    /// `webhook-id`: the same on every attempt.
    pub id: String,
    /// The exact JSON that is signed and sent.
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
}
