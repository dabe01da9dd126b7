//! What the HTTP handlers and background workers share: configuration, the store, the master
//! key, and the Google clients; plus opening a tenant's sealed service-account key.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use parking_lot::Mutex;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::clock::Clock;
use crate::config::Config;
use crate::google::api::GoogleApi;
use crate::google::auth::{ServiceAccount, TokenSource};
use crate::metrics::Metrics;
use crate::outbound::OutboundPolicy;
use crate::secrets::MasterKey;
use crate::store::{SharedStore, StoreError, StoredCredentials};

pub struct AppState {
    pub config: Config,
    pub store: SharedStore,
    pub master_key: MasterKey,
    /// SHA-256 of the admin token: compared in constant time, never kept in the clear.
    admin_token_digest: [u8; 32],
    pub public_url: Url,
    pub tokens: TokenSource,
    pub google: GoogleApi,
    /// What tenant-supplied URLs may reach (`outbound_allow`).
    pub outbound: Arc<OutboundPolicy>,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    /// Long admin requests running in the background.
    pub jobs: crate::jobs::Jobs,
    /// This replica's place among replicas on one database (with sled: alone, the leader).
    pub cluster: Arc<crate::cluster::Cluster>,
    /// Set once the workers run; cleared when shutdown begins (`/readyz`).
    pub ready: std::sync::atomic::AtomicBool,
    accounts: Mutex<HashMap<String, Arc<ServiceAccount>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("no service-account key has been uploaded for this tenant")]
    Missing,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the stored key cannot be opened: {0}")]
    Unreadable(String),
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl AppState {
    pub fn new(
        config: Config,
        store: SharedStore,
        master_key: MasterKey,
        admin_token: &SecretString,
        public_url: Url,
        clock: Clock,
    ) -> Result<Self, String> {
        let metrics = Arc::new(Metrics::new());
        let google = GoogleApi::new(&config.google_api_url, &config.google_people_url)?.with_metrics(metrics.clone());
        let outbound = Arc::new(OutboundPolicy::parse(&config.outbound_allow)?);
        Ok(AppState {
            metrics,
            jobs: crate::jobs::Jobs::new(clock.clone()),
            clock,
            ready: std::sync::atomic::AtomicBool::new(false),
            cluster: Arc::new(crate::cluster::Cluster::single()),
            admin_token_digest: sha256(admin_token.expose_secret().as_bytes()),
            tokens: TokenSource::new(outbound.clone())?.with_timeout(config.sync.token_timeout),
            google,
            outbound,
            config,
            store,
            master_key,
            public_url,
            accounts: Mutex::new(HashMap::new()),
        })
    }

    /// On a replica of a shared database.
    pub fn with_cluster(mut self, cluster: Arc<crate::cluster::Cluster>) -> Self {
        self.jobs = self.jobs.shared(cluster.clone());
        self.cluster = cluster;
        self
    }

    /// Whether `presented` is the admin token, in constant time.
    pub fn admin_token_matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        sha256(presented.as_bytes()).ct_eq(&self.admin_token_digest).into()
    }

    /// The tenant's service account, opened once and kept in memory.
    pub async fn service_account(&self, tenant: &str) -> Result<Arc<ServiceAccount>, CredentialsError> {
        if let Some(a) = self.accounts.lock().get(tenant) {
            return Ok(a.clone());
        }
        let stored = self.store.credentials(tenant).await?.ok_or(CredentialsError::Missing)?;
        let account = self.open_account(tenant, stored)?;
        self.accounts.lock().insert(tenant.to_owned(), account.clone());
        Ok(account)
    }

    /// The key a deleted tenant of this id had (retired until its channels are stopped).
    pub async fn retired_service_account(&self, tenant: &str) -> Result<Arc<ServiceAccount>, CredentialsError> {
        let stored = self.store.retired_credentials(tenant).await?.ok_or(CredentialsError::Missing)?;
        self.open_account(tenant, stored)
    }

    fn open_account(&self, tenant: &str, stored: StoredCredentials) -> Result<Arc<ServiceAccount>, CredentialsError> {
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(&stored.sealed)
            .map_err(|_| CredentialsError::Unreadable("damaged record".into()))?;
        let key_file = self
            .master_key
            .open(&credentials_context(tenant), &sealed)
            .map_err(|e| CredentialsError::Unreadable(e.to_string()))?;
        Ok(Arc::new(
            ServiceAccount::from_key_file(tenant, stored.info, &key_file).map_err(CredentialsError::Unreadable)?,
        ))
    }

    /// Forgets what is cached about a tenant's key (after an upload or a deletion).
    pub fn forget_tenant(&self, tenant: &str) {
        self.accounts.lock().remove(tenant);
        self.tokens.forget_tenant(tenant);
    }
}

/// Associated data binding a sealed key file to its tenant.
pub fn credentials_context(tenant: &str) -> String {
    format!("credentials:{tenant}")
}

/// Associated data binding a sealed webhook secret to its tenant.
pub fn webhook_secret_context(tenant: &str) -> String {
    format!("phone-system-secret:{tenant}")
}
