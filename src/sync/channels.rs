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
    c.resource_id.is_some() && c.expiration.is_some_and(|e| e > now)
}

/// Makes sure the user's calendar has a live channel; registers one if not.
pub async fn ensure(
    svc: &SyncService,
    tenant: &str,
    user: &str,
    token: &mut CalendarToken<'_>,
) -> Result<Option<ChannelRecord>, SyncError> {
    let now = svc.clock.now();
    let existing = svc.app.store.channels_of(tenant, user)?;
    if existing.iter().any(|c| is_live(c, now)) {
        return Ok(None);
    }
    register(svc, tenant, user, token).await.map(Some)
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
    };
    app.store.put_channel(&record)?;
    store::flush(&app.store).await?;

    let address = app
        .public_url
        .join(WEBHOOK_PATH)
        .map_err(|e| ApiError::BadRequest { message: format!("GWSYNC_PUBLIC_URL: {e}") })?;
    let result = loop {
        svc.pacer.call(user).await;
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
            app.store.put_channel(&record)?;
            store::flush(&app.store).await?;
            tracing::info!(tenant, user, channel = %id, expiration = ?record.expiration, "push channel registered");
            Ok(record)
        }
        Err(e) => {
            app.store.delete_channel(&id)?;
            Err(e.into())
        }
    }
}

/// Stops a channel at Google and forgets it. Google accepts the stop from any user of the same
/// service account, so when the owner cannot sign in (deleted from Workspace) the tenant's
/// directory admin is used.
pub async fn stop(svc: &SyncService, channel: &ChannelRecord) -> Result<(), SyncError> {
    if let Some(resource_id) = &channel.resource_id {
        let account = svc.app.service_account(&channel.tenant)?;
        let fallback = svc.app.store.tenant(&channel.tenant)?.and_then(|t| t.directory_admin);
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
            svc.pacer.call(&subject).await;
            match svc.app.google.stop_channel(&token, &subject, &channel.id, resource_id).await {
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
    svc.app.store.delete_channel(&channel.id)?;
    tracing::info!(tenant = %channel.tenant, user = %channel.user, channel = %channel.id, "push channel stopped");
    Ok(())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
