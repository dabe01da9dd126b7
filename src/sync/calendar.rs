//! Syncing one user's primary calendar: `events.list` with the stored sync token,
//! `singleEvents=false`, the event types gwsync uses, page by page; all pages' changes and the
//! new token written in one atomic step after the last page (so a crash between pages
//! re-fetches, never skips). A 410 means wipe and full sync; a 401 means one fresh token and one
//! retry. A token from a chain started with other event types (an older gwsync asked for all of
//! them) is dropped for one full sync, as Google requires (NOTES §2.8).

use secrecy::SecretString;

use super::SyncService;
use super::error::SyncError;
use crate::google::Scope;
use crate::google::auth::ServiceAccount;
use crate::google::calendar::ListFrom;
use crate::google::error::ApiError;
use crate::model::event::{SYNCED_EVENT_TYPES, StoredEvent};
use crate::store::{self, EventChange};

/// What a sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub full: bool,
    pub pages: usize,
    pub changes: usize,
    pub skipped: usize,
    /// Whether the user's timeline may differ from the last one computed (a full sync, a
    /// change, a new time zone): the job recomputes it.
    pub timeline_changed: bool,
}

/// A token for the user's calendar, kept fresh across one job.
pub struct CalendarToken<'a> {
    svc: &'a SyncService,
    account: &'a ServiceAccount,
    user: &'a str,
    token: SecretString,
    refreshed: bool,
}

impl<'a> CalendarToken<'a> {
    pub async fn new(svc: &'a SyncService, account: &'a ServiceAccount, user: &'a str) -> Result<Self, SyncError> {
        let token = svc.app.tokens.token(account, user, Scope::Calendar).await?;
        Ok(CalendarToken { svc, account, user, token, refreshed: false })
    }

    pub fn get(&self) -> &SecretString {
        &self.token
    }

    /// After a 401: a new token, once per job. False if already refreshed.
    pub async fn refresh(&mut self) -> Result<bool, SyncError> {
        if self.refreshed {
            return Ok(false);
        }
        self.token = self.svc.app.tokens.fresh_token(self.account, self.user, Scope::Calendar).await?;
        self.refreshed = true;
        Ok(true)
    }
}

/// Syncs the calendar from `stored`, its state as the store holds it (the caller read it under
/// the user's job lock).
pub async fn sync(
    svc: &SyncService,
    tenant: &str,
    user: &str,
    token: &mut CalendarToken<'_>,
    stored: Option<crate::store::CalendarState>,
) -> Result<Report, SyncError> {
    let app = &svc.app;
    let mut state = stored.unwrap_or_default();
    let (zone_before, pending_before) = (state.time_zone.clone(), state.timeline_pending);
    let event_types: Vec<String> = SYNCED_EVENT_TYPES.iter().map(|t| t.to_string()).collect();
    if state.sync_token.is_some() && state.event_types.as_ref() != Some(&event_types) {
        tracing::info!(
            tenant,
            user,
            synced_with = ?state.event_types,
            "the calendar was synced with other event types: wiping it and syncing in full once"
        );
        state.sync_token = None;
    }
    let config = &app.config.sync;
    loop {
        let full = state.sync_token.is_none();
        let lookback = chrono::Duration::from_std(config.full_sync_lookback).unwrap_or_default();
        let saved_token = state.sync_token.clone();
        let from = match &saved_token {
            Some(t) => ListFrom::Changes { sync_token: t },
            None => ListFrom::Full { time_min: Some(svc.clock.now() - lookback) },
        };
        // Pages are read into changes as they come, so raw JSON never piles up.
        let mut changes = Vec::new();
        let mut skipped = 0;
        let mut page_token: Option<String> = None;
        let mut pages = 0;
        let mut time_zone = None;
        let next_sync_token = loop {
            svc.pacer.call(tenant, user).await;
            match app.google.list_events(token.get(), user, &from, page_token.as_deref(), config.page_size).await {
                Ok(page) => {
                    pages += 1;
                    if pages > MAX_PAGES {
                        return Err(ApiError::Decode(format!(
                            "the calendar lists more than {MAX_PAGES} pages; gwsync stops there"
                        ))
                        .into());
                    }
                    skipped += read_page(&page.items, &mut changes, tenant, user);
                    time_zone = time_zone.or(page.time_zone);
                    match (page.next_page_token, page.next_sync_token) {
                        (Some(next), _) => page_token = Some(next),
                        (None, Some(sync_token)) => break sync_token,
                        (None, None) => return Err(ApiError::Decode("a last page without nextSyncToken".into()).into()),
                    }
                }
                Err(ApiError::Unauthorized) if token.refresh().await? => continue,
                Err(ApiError::FullSyncRequired) if !full => {
                    tracing::info!(tenant, user, "sync token expired (410): wiping the calendar and syncing in full");
                    svc.app.metrics.sync("full_sync_required");
                    break String::new();
                }
                Err(e) => return Err(e.into()),
            }
        };
        if next_sync_token.is_empty() {
            state.sync_token = None;
            continue;
        }

        let time_zone = time_zone.or(state.time_zone.take());
        let timeline_changed = full || !changes.is_empty() || time_zone != zone_before;
        if !timeline_changed && pending_before {
            // The job that stored the last change may have stopped before its recompute took:
            // recompute now, before the state written below says it is done.
            svc.presence.recompute(&crate::model::CalendarKey::new(tenant, user)).await?;
            app.metrics.timeline_recompute("pending");
        }
        let now = svc.clock.now();
        state.sync_token = Some(next_sync_token);
        state.event_types = Some(event_types.clone());
        state.time_zone = time_zone;
        state.timeline_pending = timeline_changed;
        state.last_sync_at = Some(now);
        if full {
            state.last_full_sync_at = Some(now);
        }
        state.last_error = None;
        state.failures = 0;
        let count = app.store.apply_sync(tenant, user, full, &changes, &state).await?;
        if count != state.events {
            state.events = count;
            app.store.put_calendar_state(tenant, user, &state).await?;
        }
        store::flush(&app.store).await?;
        svc.app.metrics.sync(if full { "full" } else { "incremental" });
        tracing::debug!(tenant, user, full, pages, changes = changes.len(), skipped, "calendar synced");
        return Ok(Report { full, pages, changes: changes.len(), skipped, timeline_changed });
    }
}

/// Most pages one sync reads (2,500 events each): a calendar beyond it is an error, not a
/// memory problem.
const MAX_PAGES: usize = 400;

/// Turns a page's items into changes; returns how many could not be read (logged, skipped).
fn read_page(items: &[serde_json::Value], changes: &mut Vec<EventChange>, tenant: &str, user: &str) -> usize {
    let mut skipped = 0;
    for item in items {
        match StoredEvent::from_google(item) {
            // A cancelled instance of a series is kept: it is what cancels that instance.
            Ok(e) if e.is_cancelled() && e.recurring_event_id.is_none() => changes.push(EventChange::Delete(e.id)),
            Ok(e) => changes.push(EventChange::Upsert(Box::new(e))),
            Err(why) => {
                skipped += 1;
                tracing::warn!(
                    tenant,
                    user,
                    event = item["id"].as_str().unwrap_or("?"),
                    why,
                    "skipped an event gwsync cannot read"
                );
            }
        }
    }
    skipped
}
