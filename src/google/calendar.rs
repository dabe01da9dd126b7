//! The Calendar v3 calls gwsync makes: events.list (full or incremental, page by page),
//! events.watch and channels.stop. Listing and watching both ask for the event types gwsync
//! uses (`eventTypes`, the same on every call, so a sync-token chain never changes them).

use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde_json::{Value, json};

use super::api::GoogleApi;
use super::error::ApiError;
use crate::model::event::SYNCED_EVENT_TYPES;

/// One page of events.list.
#[derive(Debug, Clone, Default)]
pub struct EventsPage {
    pub items: Vec<Value>,
    pub next_page_token: Option<String>,
    pub next_sync_token: Option<String>,
    pub time_zone: Option<String>,
}

/// Where a listing starts: a full sync (optionally bounded below) or an incremental one.
#[derive(Debug, Clone)]
pub enum ListFrom<'a> {
    Full { time_min: Option<DateTime<Utc>> },
    Changes { sync_token: &'a str },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    pub resource_id: String,
    pub expiration: Option<DateTime<Utc>>,
}

impl GoogleApi {
    /// One page of the user's primary calendar, series unexpanded (`singleEvents=false`), of the
    /// event types gwsync uses.
    /// A page token must come with the same `from` as the first page.
    pub async fn list_events(
        &self,
        token: &SecretString,
        user: &str,
        from: &ListFrom<'_>,
        page_token: Option<&str>,
        page_size: u32,
    ) -> Result<EventsPage, ApiError> {
        let size = page_size.to_string();
        let time_min;
        let mut query: Vec<(&str, &str)> = vec![("singleEvents", "false"), ("maxResults", &size)];
        query.extend(SYNCED_EVENT_TYPES.iter().map(|t| ("eventTypes", *t)));
        match from {
            ListFrom::Full { time_min: Some(t) } => {
                time_min = t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                query.push(("timeMin", &time_min));
            }
            ListFrom::Full { time_min: None } => {}
            ListFrom::Changes { sync_token } => query.push(("syncToken", sync_token)),
        }
        if let Some(p) = page_token {
            query.push(("pageToken", p));
        }
        let url = self.calendar_url(&["calendars", "primary", "events"]);
        let v = self.get("events.list", url, &query, token, user).await?;
        Ok(EventsPage {
            items: v["items"].as_array().cloned().unwrap_or_default(),
            next_page_token: v["nextPageToken"].as_str().map(str::to_owned),
            next_sync_token: v["nextSyncToken"].as_str().map(str::to_owned),
            time_zone: v["timeZone"].as_str().map(str::to_owned),
        })
    }

    /// events.watch on the user's primary calendar.
    pub async fn watch_events(
        &self,
        token: &SecretString,
        user: &str,
        id: &str,
        channel_token: &str,
        address: &str,
        ttl: Duration,
    ) -> Result<Watched, ApiError> {
        let body = json!({
            "id": id,
            "type": "web_hook",
            "address": address,
            "token": channel_token,
            "params": { "ttl": ttl.as_secs().to_string() },
        });
        let mut url = self.calendar_url(&["calendars", "primary", "events", "watch"]);
        // Only changes to these types notify (events.watch takes events.list's parameters).
        url.query_pairs_mut().extend_pairs(SYNCED_EVENT_TYPES.iter().map(|t| ("eventTypes", *t)));
        let v = self.post("events.watch", url, &body, token, user).await?;
        let resource_id = v["resourceId"]
            .as_str()
            .ok_or_else(|| ApiError::Decode("watch response without resourceId".into()))?
            .to_owned();
        // Google sends the expiry as a string of milliseconds; accept a number too.
        let expiration = v["expiration"]
            .as_str()
            .and_then(|s| s.parse::<i64>().ok())
            .or_else(|| v["expiration"].as_i64())
            .and_then(DateTime::from_timestamp_millis);
        Ok(Watched { resource_id, expiration })
    }

    /// channels.stop. A channel Google no longer knows (404) counts as stopped.
    pub async fn stop_channel(
        &self,
        token: &SecretString,
        user: &str,
        id: &str,
        resource_id: &str,
    ) -> Result<(), ApiError> {
        let url = self.calendar_url(&["channels", "stop"]);
        match self.post("channels.stop", url, &json!({ "id": id, "resourceId": resource_id }), token, user).await {
            Ok(_) | Err(ApiError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
