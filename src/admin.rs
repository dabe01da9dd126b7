//! What the admin API's writes set in motion, between the HTTP edge and the domain: handlers
//! validate and build records; these functions make them durable and tell sync, presence and
//! the phonebook what changed. Deletions are durable at once and their channels stopped in the
//! background (`SyncService::remove_user` / `remove_tenant`). Long work is never done here: it
//! is queued to the workers or started as a job (`jobs`).

use base64::Engine;
use rand::Rng;

use crate::app::{AppState, sha256};
use crate::contacts::Contacts;
use crate::model::CalendarKey;
use crate::model::tenant::TenantRecord;
use crate::model::user::UserRecord;
use crate::store::{self, StoreError, StoredCredentials};
use crate::sync::SyncService;
use crate::sync::channels::hex;

/// A tenant created or changed (`previous`: what it was).
pub async fn tenant_saved(
    app: &AppState,
    sync: &SyncService,
    contacts: &Contacts,
    record: &TenantRecord,
    previous: Option<&TenantRecord>,
) -> Result<(), StoreError> {
    app.store.put_tenant(record).await?;
    store::flush(&app.store).await?;
    tracing::info!(tenant = %record.id, domain = %record.domain, created = previous.is_none(), "tenant saved");
    // A phone system added or moved to another URL knows nothing yet: tell it everybody's
    // current state.
    let old_url = previous.and_then(|p| p.phone_system.as_ref()).map(|p| p.url.clone());
    let new_url = record.phone_system.as_ref().map(|p| p.url.clone());
    sync.presence.recompute_tenant(&record.id, new_url.is_some() && old_url != new_url).await?;
    contacts.poll_soon(&record.id);
    Ok(())
}

/// A tenant's service-account key uploaded: cached tokens and a failing token endpoint are
/// forgotten, and every user is synced now.
pub async fn credentials_saved(
    app: &AppState,
    sync: &SyncService,
    tenant: &str,
    stored: &StoredCredentials,
) -> Result<(), StoreError> {
    app.store.put_credentials(tenant, stored).await?;
    store::flush(&app.store).await?;
    app.forget_tenant(tenant);
    sync.tenant_auth.forget(tenant);
    app.cluster.tenant_changed(tenant).await;
    tracing::info!(tenant, client_email = %stored.info.client_email, client_id = %stored.info.client_id, "service-account key stored");
    for u in app.store.users(tenant).await? {
        sync.user_saved(tenant, &u.email);
    }
    Ok(())
}

/// A user created or changed: synced (and given a channel) soon, and the timeline recomputed
/// at once (new profiles or triggers change it without waiting for Google).
pub async fn user_saved(
    app: &AppState,
    sync: &SyncService,
    record: &UserRecord,
    created: bool,
) -> Result<(), StoreError> {
    app.store.put_user(record).await?;
    store::flush(&app.store).await?;
    tracing::info!(tenant = %record.tenant, user = %record.email, created, "user saved");
    // A changed user is retried at once if failing (the admin may have fixed the alias).
    sync.user_saved(&record.tenant, &record.email);
    sync.presence.recompute(&CalendarKey::new(&record.tenant, &record.email)).await
}

/// A user deleted: durable at once, nothing more written for them by a job still running, their
/// channels stopped at Google in the background.
pub async fn user_deleted(sync: &SyncService, tenant: &str, email: &str) -> Result<(), StoreError> {
    sync.remove_user(tenant, email).await?;
    tracing::info!(tenant, user = %email, "user deleted");
    Ok(())
}

/// A tenant deleted: durable at once with everything of its users; its channels are stopped in
/// the background with the key, which stays (sealed) until they are; its phonebook forgotten.
pub async fn tenant_deleted(sync: &SyncService, contacts: &Contacts, tenant: &str) -> Result<(), StoreError> {
    sync.remove_tenant(tenant).await?;
    contacts.forget_tenant(tenant);
    tracing::info!(tenant, "tenant deleted");
    Ok(())
}

/// A new phonebook export token for desk phones, replacing the tenant's old one if it had one.
pub struct ExportToken {
    /// The token itself: shown once, only its SHA-256 is kept.
    pub token: String,
    /// Whether it replaced an earlier token (which no longer works).
    pub replaced: bool,
}

/// Makes the tenant a new export token and stores its digest durably.
pub async fn export_token_replaced(app: &AppState, tenant: &TenantRecord) -> Result<ExportToken, StoreError> {
    let replaced = tenant.export_token_digest.is_some();
    let mut tenant = tenant.clone();
    let mut secret = [0u8; 24];
    rand::rng().fill_bytes(&mut secret);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    tenant.export_token_digest = Some(hex(&sha256(token.as_bytes())));
    app.store.put_tenant(&tenant).await?;
    store::flush(&app.store).await?;
    tracing::info!(tenant = %tenant.id, replaced, "phonebook export token made");
    Ok(ExportToken { token, replaced })
}
