//! Push channels on users' calendars: registering one (events.watch) and stopping them
//! (channels.stop).
//!
//! A channel is recorded *before* the watch call, because Google's first (`sync`) message can
//! arrive before the watch response; its token is random (256 bits) and only its SHA-256 is
//! stored. The address is `GWSYNC_PUBLIC_URL` + `/webhooks/google/calendar`.

use base64::Engine;
use chrono::{DateTime, Utc};
use rand::Rng;

use super::SyncService;
use super::calendar::CalendarToken;
use super::error::SyncError;
use crate::google::Scope;
use crate::google::error::ApiError;
use crate::store::{self, ChannelRecord};

pub const WEBHOOK_PATH: &str = "webhooks/google/calendar";

/// Whether the channel is registered at Google and not expired at `now`.
pub fn is_live(c: &ChannelRecord, now: DateTime<Utc>) -> bool {
    !c.orphaned && c.resource_id.is_some() && c.expiration.is_some_and(|e| e > now)
}

/// When a channel is due for renewal: `renew_within` before its expiry, less a fixed offset
/// per channel of up to a quarter of that window, so channels created together (a mass
/// registration at start) are not all renewed in the same minute.
pub fn renew_at(c: &ChannelRecord, within: std::time::Duration) -> Option<DateTime<Utc>> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    c.id.hash(&mut h);
    let within_ms = within.as_millis() as i64;
    let spread = (h.finish() % (within_ms as u64 / 4).max(1)) as i64;
    c.expiration.map(|e| e - chrono::Duration::milliseconds(within_ms + spread))
}

/// What `ensure` did.
#[derive(Debug, Clone, PartialEq)]
pub enum Ensured {
    /// A live channel that is not due for renewal exists.
    Fine,
    /// There was none (new user, or every channel expired while gwsync was down).
    Registered(ChannelRecord),
    /// The live channel was due; a new one replaced it and the old one was stopped.
    Renewed { new: ChannelRecord, old: Vec<String> },
}

/// Makes sure the user's calendar has a live channel that is not about to expire: registers
/// one if there is none, replaces the newest if it is due (`force`: if it expires within
/// `within` at all). `existing` are the calendar's channels as the store holds them
/// (`Store::sync_inputs`). The caller holds the user's job lock, so there is never more than
/// one replacement at a time.
pub async fn ensure(
    svc: &SyncService,
    tenant: &str,
    user: &str,
    token: &mut CalendarToken<'_>,
    within: std::time::Duration,
    force: bool,
    existing: Vec<ChannelRecord>,
) -> Result<Ensured, SyncError> {
    let now = svc.clock.now();
    let live: Vec<&ChannelRecord> = existing.iter().filter(|c| is_live(c, now)).collect();
    let Some(newest) = live.iter().max_by_key(|c| c.expiration) else {
        return register(svc, tenant, user, token).await.map(Ensured::Registered);
    };
    let due = if force {
        newest.expiration.is_some_and(|e| e <= now + chrono::Duration::from_std(within).unwrap_or_default())
    } else {
        renew_at(newest, within).is_some_and(|at| at <= now)
    };
    if !due {
        return Ok(Ensured::Fine);
    }
    let new = register(svc, tenant, user, token).await?;
    svc.app.metrics.renewal("renewed");
    // Both fire until the old one is stopped; the queue makes their notifications one sync.
    let mut old = Vec::new();
    for c in live.into_iter().filter(|c| c.id != new.id) {
        old.push(c.id.clone());
        retire(svc, c).await;
    }
    Ok(Ensured::Renewed { new, old })
}

/// Stops a channel that is no longer wanted; if Google cannot be told now, marks it orphaned
/// so the keeper retries (its notifications are ignored meanwhile).
pub async fn retire(svc: &SyncService, channel: &ChannelRecord) {
    if let Err(e) = stop(svc, channel).await {
        tracing::warn!(tenant = %channel.tenant, user = %channel.user, channel = %channel.id, error = %e, "could not stop a channel at Google; the keeper retries");
        let mut c = channel.clone();
        c.orphaned = true;
        if let Err(e) = svc.app.store.put_channel(&c).await {
            tracing::error!(channel = %c.id, error = %e, "could not mark a channel for a later stop");
        }
    }
}

/// Registers a new channel (alongside any old one).
pub async fn register(
    svc: &SyncService,
    tenant: &str,
    user: &str,
    token: &mut CalendarToken<'_>,
) -> Result<ChannelRecord, SyncError> {
    let app = &svc.app;
    let id = uuid::Uuid::new_v4().to_string();
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let channel_token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let mut record = ChannelRecord {
        id: id.clone(),
        token_digest: hex(&crate::app::sha256(channel_token.as_bytes())),
        tenant: tenant.to_owned(),
        user: user.to_owned(),
        resource_id: None,
        expiration: None,
        created_at: svc.clock.now(),
        orphaned: false,
    };
    app.store.put_channel(&record).await?;
    store::flush(&app.store).await?;

    let address = app
        .public_url
        .join(WEBHOOK_PATH)
        .map_err(|e| ApiError::BadRequest { message: format!("GWSYNC_PUBLIC_URL: {e}") })?;
    let result = loop {
        svc.pacer.call(tenant, user).await;
        match app
            .google
            .watch_events(token.get(), user, &id, &channel_token, address.as_str(), app.config.sync.channel_ttl)
            .await
        {
            Err(ApiError::Unauthorized) if token.refresh().await? => continue,
            other => break other,
        }
    };
    match result {
        Ok(watched) => {
            record.resource_id = Some(watched.resource_id);
            record.expiration = watched.expiration;
            match app.store.put_channel(&record).await {
                Ok(()) => {}
                Err(store::StoreError::Gone) => {
                    // The user was deleted during the watch call: Google has a channel nobody
                    // wants. Recorded as orphaned, the keeper stops it.
                    record.orphaned = true;
                    app.store.put_channel(&record).await?;
                    store::flush(&app.store).await?;
                    svc.keeper_wake.notify_one();
                    return Err(store::StoreError::Gone.into());
                }
                Err(e) => return Err(e.into()),
            }
            store::flush(&app.store).await?;
            tracing::info!(tenant, user, channel = %id, expiration = ?record.expiration, "push channel registered");
            Ok(record)
        }
        Err(e) => {
            app.store.delete_channel(&id).await?;
            Err(e.into())
        }
    }
}

/// Stops a channel at Google and forgets it. Google accepts the stop from any user of the same
/// service account, so when the owner cannot sign in (deleted from Workspace) the tenant's
/// directory admin is used.
pub async fn stop(svc: &SyncService, channel: &ChannelRecord) -> Result<(), SyncError> {
    if let Some(resource_id) = &channel.resource_id {
        let tenant = svc.app.store.tenant(&channel.tenant).await?;
        // A channel older than its tenant record was made by a deleted tenant of this id, with
        // the key that was retired with it.
        let account = match &tenant {
            Some(t) if t.created_at <= channel.created_at || !channel.orphaned => {
                svc.app.service_account(&channel.tenant).await?
            }
            _ => svc.app.retired_service_account(&channel.tenant).await?,
        };
        let fallback = tenant.and_then(|t| t.directory_admin);
        let mut subjects = vec![channel.user.clone()];
        subjects.extend(fallback.filter(|f| *f != channel.user));
        let mut last_error = None;
        for subject in subjects {
            let token = match svc.app.tokens.token(&account, &subject, Scope::Calendar).await {
                Ok(t) => t,
                Err(e) => {
                    last_error = Some(SyncError::from(e));
                    continue;
                }
            };
            svc.pacer.call(&channel.tenant, &subject).await;
            let mut result = svc.app.google.stop_channel(&token, &subject, &channel.id, resource_id).await;
            if matches!(result, Err(ApiError::Unauthorized)) {
                // A cached token Google no longer takes: one fresh one, as for every other call.
                match svc.app.tokens.fresh_token(&account, &subject, Scope::Calendar).await {
                    Ok(fresh) => result = svc.app.google.stop_channel(&fresh, &subject, &channel.id, resource_id).await,
                    Err(e) => {
                        last_error = Some(e.into());
                        continue;
                    }
                }
            }
            match result {
                Ok(()) => {
                    last_error = None;
                    break;
                }
                Err(e) => last_error = Some(e.into()),
            }
        }
        if let Some(e) = last_error {
            return Err(e);
        }
    }
    svc.app.store.delete_channel(&channel.id).await?;
    tracing::info!(tenant = %channel.tenant, user = %channel.user, channel = %channel.id, "push channel stopped");
    Ok(())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
