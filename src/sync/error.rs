//! Why a sync or a channel registration failed, and when to try again (DESIGN §6).

use std::time::Duration;

use crate::app::CredentialsError;
use crate::google::error::{ApiError, AuthError};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The tenant's token endpoint is failing: its jobs wait without calling Google.
    #[error("tenant {tenant}'s token endpoint is failing; its calendars wait until {retry_at}")]
    TenantWaiting { tenant: String, retry_at: chrono::DateTime<chrono::Utc> },
}

/// When to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Soon, with exponential backoff (and at least this long, if Google said so).
    Backoff(Option<Duration>),
    /// Slowly: only a Workspace admin can fix it.
    Slowly,
    /// Not until the user or tenant changes.
    Never,
}

impl SyncError {
    pub fn code(&self) -> &'static str {
        match self {
            SyncError::Credentials(CredentialsError::Missing) => "no_credentials",
            SyncError::Credentials(_) => "credentials_unreadable",
            SyncError::Auth(e) => e.code(),
            SyncError::Api(e) => e.code(),
            SyncError::Store(_) => "database",
            SyncError::TenantWaiting { .. } => "tenant_token_failing",
        }
    }

    pub fn hint(&self) -> String {
        match self {
            SyncError::Credentials(CredentialsError::Missing) => {
                "Upload the service account's JSON key (gwsync tenant credentials)".into()
            }
            SyncError::Credentials(_) => {
                "Upload the JSON key again, and check that GWSYNC_MASTER_KEY is the key it was stored with".into()
            }
            SyncError::Auth(e) => e.hint(),
            SyncError::Api(ApiError::NotFound) => {
                "Google does not find the user's calendar: check the Google alias".into()
            }
            SyncError::Api(e) => e.hint(),
            SyncError::Store(_) => "gwsync's database failed; see the server log".into(),
            SyncError::TenantWaiting { .. } => {
                "The tenant's token endpoint fails for every user; see the tenant's status for the cause".into()
            }
        }
    }

    pub fn retry(&self) -> Retry {
        match self {
            SyncError::Auth(AuthError::UnknownUser { .. }) => Retry::Never,
            SyncError::Auth(AuthError::Transient(_)) => Retry::Backoff(None),
            SyncError::Auth(_) | SyncError::Credentials(_) => Retry::Slowly,
            SyncError::Api(e) if e.is_transient() => Retry::Backoff(e.retry_after()),
            SyncError::Api(ApiError::Unauthorized | ApiError::Decode(_)) => Retry::Backoff(None),
            SyncError::Api(_) => Retry::Slowly,
            SyncError::Store(_) => Retry::Backoff(None),
            SyncError::TenantWaiting { .. } => Retry::Backoff(None),
        }
    }
}
