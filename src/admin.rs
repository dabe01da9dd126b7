//! What the admin API's writes set in motion, between the HTTP edge and the domain: handlers
//! validate and build records; these functions make them durable and tell sync, presence and
//! the phonebook what changed. Deletions are `SyncService::remove_user` / `remove_tenant`
//! (durable at once, channels stopped in the background). Long work is never done here: it is
//! queued to the workers or started as a job (`jobs`).

use crate::app::AppState;
use crate::contacts::Contacts;
use crate::model::CalendarKey;
use crate::model::tenant::TenantRecord;
use crate::model::user::UserRecord;
use crate::store::{self, StoreError, StoredCredentials};
use crate::sync::SyncService;

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
