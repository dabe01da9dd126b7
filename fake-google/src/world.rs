//! Everything the fake knows, behind one lock.
//!
//! The fake is a test double: correctness and clarity beat throughput, so one `Mutex<World>`
//! guards all state and every handler holds it for a short, await-free section. Outgoing push
//! notifications leave through a channel, so no HTTP call ever happens under the lock.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::calendar::model::Calendar;
use crate::clock::FakeClock;
use crate::keys::ServiceAccount;
use crate::people::model::PeopleBook;
use crate::push::{Channels, DeliveryLog, Outgoing};
use crate::quota::Quota;
use crate::reqlog::RequestLog;
use crate::tokens::TokenCodec;

/// State shared by every handler and background task of one fake instance.
pub struct Shared {
    pub base_url: String,
    pub clock: FakeClock,
    pub world: Mutex<World>,
    pub push_tx: mpsc::UnboundedSender<Outgoing>,
    pub tokens: TokenCodec,
}

impl Shared {
    pub fn token_uri(&self) -> String {
        format!("{}/token", self.base_url)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Domain {
    pub domain: String,
    pub users: BTreeSet<String>,
    pub directory_sharing: bool,
    /// The time zone new calendars of this domain get (Calendar settings → time zone).
    pub time_zone: String,
    /// The region Google uses to put phone numbers into canonical (E.164) form.
    pub region: String,
}

#[derive(Debug, Clone)]
pub struct AccessToken {
    pub user: String,
    pub client_id: String,
    pub client_email: String,
    pub scopes: BTreeSet<String>,
    pub expires_at: DateTime<Utc>,
}

/// `PUT /_fake/apis/{calendar|people}`: whether the API is enabled in the Cloud project(s).
#[derive(Debug, Clone, Copy)]
pub struct Apis {
    pub calendar: bool,
    pub people: bool,
}

/// `PUT /_fake/delivery`: how push notifications misbehave.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliverySettings {
    /// Probability (0..=1) that a notification is silently lost.
    pub drop: f64,
    /// Extra copies of each notification (same message number).
    pub duplicate: u32,
    /// Delay before each notification is sent.
    pub delay_ms: u64,
    /// Shuffle notifications queued for the same channel.
    pub reorder: bool,
}

/// `PUT /_fake/behaviour`: knobs for the places where Google's behaviour varies or is undocumented.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Behaviour {
    /// Deliver a channel's `sync` message before the watch call answers (the documented race).
    pub sync_before_watch_response: bool,
    /// Cancelled events and Calendar sync tokens older than this (fake time) are forgotten;
    /// such tokens get 410 `fullSyncRequired`.
    pub tombstone_retention_days: u32,
    /// Give out pages with fewer items than asked (even none) while more pages follow, as Google
    /// may.
    pub short_pages: bool,
    /// How far ahead an unbounded recurring series is expanded when no `timeMax` is given.
    pub unbounded_expansion_days: u32,
    /// People: how long (fake time) before a change shows up in list and sync results.
    pub people_propagation_delay_ms: u64,
    /// Push: first retry delay after a 500/502/503/504 (doubles each time), and attempts in all.
    pub push_retry_base_ms: u64,
    pub push_max_attempts: u32,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            sync_before_watch_response: false,
            tombstone_retention_days: 30,
            short_pages: false,
            unbounded_expansion_days: 366,
            people_propagation_delay_ms: 0,
            push_retry_base_ms: 200,
            push_max_attempts: 5,
        }
    }
}

/// `POST /_fake/faults`: after letting `skip` calls through, the next `count` calls of `method`
/// wait `delay_ms`, then answer `status` with `body` (or, without a status, answer normally).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub method: String,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub skip: u32,
    #[serde(default)]
    pub delay_ms: u64,
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default)]
    pub body: Option<Value>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Only calls made as this user (the token's subject).
    #[serde(default)]
    pub user: Option<String>,
}

fn one() -> u32 {
    1
}

pub struct World {
    pub domains: BTreeMap<String, Domain>,
    /// Service accounts by `client_email`.
    pub accounts: HashMap<String, ServiceAccount>,
    /// Domain-wide delegation: client id → the scopes the admin allowed.
    pub delegation: HashMap<String, BTreeSet<String>>,
    pub apis: Apis,
    pub access_tokens: HashMap<String, AccessToken>,
    /// Each user's primary calendar, by owner address, and secondary calendars by their id.
    pub calendars: HashMap<String, Calendar>,
    /// The ids of each user's secondary calendars (`POST /_fake/calendars/{user}/secondary`).
    pub secondary_calendars: HashMap<String, BTreeSet<String>>,
    pub channels: Channels,
    /// Workspace directory by domain: profiles of users and shared (domain) contacts.
    pub directory: HashMap<String, PeopleBook>,
    /// Each user's own contacts.
    pub contacts: HashMap<String, PeopleBook>,
    pub faults: Vec<Fault>,
    pub delivery: DeliverySettings,
    pub behaviour: Behaviour,
    pub quota: Quota,
    pub requests: RequestLog,
    pub notifications: DeliveryLog,
    /// Sign in with Google: OAuth clients, signing keys, codes, subjects.
    pub oidc: crate::oidc::OidcState,
}

impl World {
    pub fn new() -> Self {
        World {
            domains: BTreeMap::new(),
            accounts: HashMap::new(),
            delegation: HashMap::new(),
            apis: Apis { calendar: true, people: true },
            access_tokens: HashMap::new(),
            calendars: HashMap::new(),
            secondary_calendars: HashMap::new(),
            channels: Channels::default(),
            directory: HashMap::new(),
            contacts: HashMap::new(),
            faults: Vec::new(),
            delivery: DeliverySettings::default(),
            behaviour: Behaviour::default(),
            quota: Quota::default(),
            requests: RequestLog::default(),
            notifications: DeliveryLog::default(),
            oidc: crate::oidc::OidcState::default(),
        }
    }

    /// The domain part of an address, lower-cased.
    pub fn domain_of(email: &str) -> Option<String> {
        email.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase())
    }

    pub fn user_exists(&self, email: &str) -> bool {
        let email = email.to_ascii_lowercase();
        World::domain_of(&email).and_then(|d| self.domains.get(&d)).is_some_and(|d| d.users.contains(&email))
    }

    pub fn domain_for_user(&self, email: &str) -> Option<&Domain> {
        World::domain_of(email).and_then(|d| self.domains.get(&d))
    }

    /// Takes one matching fault, if any is armed for `method` and `user`.
    pub fn take_fault(&mut self, method: &str, user: Option<&str>) -> Option<Fault> {
        let idx = self
            .faults
            .iter()
            .position(|f| normalise_method(&f.method) == method && f.user.as_deref().is_none_or(|u| Some(u) == user))?;
        if self.faults[idx].skip > 0 {
            self.faults[idx].skip -= 1;
            return None;
        }
        let fault = self.faults[idx].clone();
        if self.faults[idx].count <= 1 {
            self.faults.remove(idx);
        } else {
            self.faults[idx].count -= 1;
        }
        Some(fault)
    }
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

/// Accepts `people.connections.list` for the discovery id `people.people.connections.list`.
pub fn normalise_method(m: &str) -> String {
    if let Some(rest) = m.strip_prefix("people.")
        && !rest.starts_with("people.")
        && !rest.starts_with("otherContacts.")
        && !rest.starts_with("contactGroups.")
    {
        return format!("people.people.{rest}");
    }
    m.to_owned()
}
