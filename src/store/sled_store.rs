//! The sled implementation of `Store`.
//!
//! Trees: `meta` (schema version), `tenants` (id → JSON), `credentials` (tenant → JSON with the
//! sealed key file), `users` (`tenant \0 email` → JSON). Values are JSON: small, readable with
//! any sled tool, and versioned by the schema number in `meta`.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;

use super::{SCHEMA_VERSION, Store, StoreError, StoredCredentials};
use crate::model::tenant::TenantRecord;
use crate::model::user::UserRecord;

pub struct SledStore {
    db: sled::Db,
    tenants: sled::Tree,
    credentials: sled::Tree,
    users: sled::Tree,
}

fn user_key(tenant: &str, email: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(tenant.len() + email.len() + 1);
    k.extend_from_slice(tenant.as_bytes());
    k.push(0);
    k.extend_from_slice(email.as_bytes());
    k
}

fn tenant_prefix(tenant: &str) -> Vec<u8> {
    let mut k = tenant.as_bytes().to_vec();
    k.push(0);
    k
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl SledStore {
    /// Opens (or creates) the database under `dir`, checking the schema version.
    pub fn open(dir: &Path, cache_capacity_mb: u64) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(dir).cache_capacity(cache_capacity_mb * 1024 * 1024).open()?;
        let meta = db.open_tree("meta")?;
        match meta.get("schema_version")? {
            None => {
                meta.insert("schema_version", &SCHEMA_VERSION.to_be_bytes())?;
            }
            Some(v) => {
                let found = u32::from_be_bytes(
                    v.as_ref().try_into().map_err(|_| StoreError::Corrupt("schema_version".into()))?,
                );
                if found > SCHEMA_VERSION {
                    return Err(StoreError::NewerSchema { found });
                }
            }
        }
        Ok(SledStore {
            tenants: db.open_tree("tenants")?,
            credentials: db.open_tree("credentials")?,
            users: db.open_tree("users")?,
            db,
        })
    }
}

impl Store for SledStore {
    fn put_tenant(&self, tenant: &TenantRecord) -> Result<(), StoreError> {
        self.tenants.insert(tenant.id.as_bytes(), encode(tenant)?)?;
        Ok(())
    }

    fn tenant(&self, id: &str) -> Result<Option<TenantRecord>, StoreError> {
        self.tenants.get(id.as_bytes())?.map(|v| decode(&v)).transpose()
    }

    fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        self.tenants.iter().values().map(|v| decode(&v?)).collect()
    }

    fn delete_tenant(&self, id: &str) -> Result<bool, StoreError> {
        let user_keys: Vec<sled::IVec> = self.users.scan_prefix(tenant_prefix(id)).keys().collect::<Result<_, _>>()?;
        let existed = (&self.tenants, &self.credentials, &self.users)
            .transaction(|(tenants, credentials, users)| {
                let existed = tenants.remove(id.as_bytes())?.is_some();
                credentials.remove(id.as_bytes())?;
                for k in &user_keys {
                    users.remove(k)?;
                }
                Ok(existed)
            })
            .map_err(|e: sled::transaction::TransactionError<()>| match e {
                sled::transaction::TransactionError::Storage(e) => StoreError::Db(e),
                sled::transaction::TransactionError::Abort(()) => StoreError::Corrupt("transaction aborted".into()),
            })?;
        Ok(existed)
    }

    fn put_credentials(&self, tenant: &str, credentials: &StoredCredentials) -> Result<(), StoreError> {
        self.credentials.insert(tenant.as_bytes(), encode(credentials)?)?;
        Ok(())
    }

    fn credentials(&self, tenant: &str) -> Result<Option<StoredCredentials>, StoreError> {
        self.credentials.get(tenant.as_bytes())?.map(|v| decode(&v)).transpose()
    }

    fn put_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        self.users.insert(user_key(&user.tenant, &user.email), encode(user)?)?;
        Ok(())
    }

    fn user(&self, tenant: &str, email: &str) -> Result<Option<UserRecord>, StoreError> {
        self.users.get(user_key(tenant, email))?.map(|v| decode(&v)).transpose()
    }

    fn users(&self, tenant: &str) -> Result<Vec<UserRecord>, StoreError> {
        self.users.scan_prefix(tenant_prefix(tenant)).values().map(|v| decode(&v?)).collect()
    }

    fn delete_user(&self, tenant: &str, email: &str) -> Result<bool, StoreError> {
        Ok(self.users.remove(user_key(tenant, email))?.is_some())
    }

    fn flush_blocking(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tenant::ContactsSettings;
    use chrono::Utc;

    fn tenant(id: &str) -> TenantRecord {
        TenantRecord {
            id: id.into(),
            domain: "acme.se".into(),
            directory_admin: None,
            default_region: "SE".into(),
            phone_system: None,
            contacts: ContactsSettings::default(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn user(tenant: &str, email: &str) -> UserRecord {
        UserRecord {
            tenant: tenant.into(),
            email: email.into(),
            external_id: None,
            profiles: vec![],
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn records_survive_reopening_and_tenants_delete_with_their_users() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path(), 8).unwrap();
            s.put_tenant(&tenant("acme")).unwrap();
            s.put_tenant(&tenant("acme2")).unwrap();
            s.put_user(&user("acme", "a@acme.se")).unwrap();
            s.put_user(&user("acme2", "b@acme.se")).unwrap();
            s.flush_blocking().unwrap();
        }
        let s = SledStore::open(dir.path(), 8).unwrap();
        assert_eq!(s.tenants().unwrap().len(), 2);
        assert_eq!(s.users("acme").unwrap().len(), 1, "prefix scans stop at the tenant boundary");
        assert!(s.delete_tenant("acme").unwrap());
        assert!(s.users("acme").unwrap().is_empty());
        assert_eq!(s.users("acme2").unwrap().len(), 1);
        assert!(!s.delete_tenant("acme").unwrap());
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.open_tree("meta").unwrap().insert("schema_version", &99u32.to_be_bytes()).unwrap();
            db.flush().unwrap();
        }
        assert!(matches!(SledStore::open(dir.path(), 8), Err(StoreError::NewerSchema { found: 99 })));
    }
}
