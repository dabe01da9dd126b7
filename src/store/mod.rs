//! Durable state behind a trait of domain operations, so a PostgreSQL backend can follow
//! (DESIGN §10). The sled implementation is the default.
//!
//! Methods are synchronous and quick (sled works in memory and logs in the background);
//! durability is explicit: `flush` returns once everything written before it survives a crash.
//! Call it through `flush(store)` before acknowledging anything that must not be lost.

pub mod sled_store;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::key_file::KeyInfo;
use crate::model::tenant::TenantRecord;
use crate::model::user::UserRecord;

/// The layout version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sled::Error),
    #[error("a stored record is damaged ({0}); restore the data directory from a backup")]
    Corrupt(String),
    #[error(
        "the data directory was written by a newer gwsync (schema {found}, this build reads {SCHEMA_VERSION}); upgrade gwsync"
    )]
    NewerSchema { found: u32 },
    #[error("flushing the database failed: {0}")]
    Flush(String),
}

/// A tenant's service-account key: its public facts and the sealed key file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredCredentials {
    pub info: KeyInfo,
    /// The key file, sealed under the master key (base64).
    pub sealed: String,
    pub uploaded_at: DateTime<Utc>,
}

pub trait Store: Send + Sync {
    fn put_tenant(&self, tenant: &TenantRecord) -> Result<(), StoreError>;
    fn tenant(&self, id: &str) -> Result<Option<TenantRecord>, StoreError>;
    fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError>;
    /// Deletes the tenant with its users and credentials, atomically. False if it did not exist.
    fn delete_tenant(&self, id: &str) -> Result<bool, StoreError>;

    fn put_credentials(&self, tenant: &str, credentials: &StoredCredentials) -> Result<(), StoreError>;
    fn credentials(&self, tenant: &str) -> Result<Option<StoredCredentials>, StoreError>;

    fn put_user(&self, user: &UserRecord) -> Result<(), StoreError>;
    fn user(&self, tenant: &str, email: &str) -> Result<Option<UserRecord>, StoreError>;
    fn users(&self, tenant: &str) -> Result<Vec<UserRecord>, StoreError>;
    fn delete_user(&self, tenant: &str, email: &str) -> Result<bool, StoreError>;

    /// Blocks until everything written so far is on disk.
    fn flush_blocking(&self) -> Result<(), StoreError>;
}

pub type SharedStore = Arc<dyn Store>;

/// Makes every earlier write durable, off the async threads.
pub async fn flush(store: &SharedStore) -> Result<(), StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.flush_blocking()).await.map_err(|e| StoreError::Flush(e.to_string()))?
}
