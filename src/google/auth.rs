//! Access tokens per (tenant, user, scope), minted by yup-oauth2's service-account flow with the
//! user as subject (domain-wide delegation).
//!
//! yup-oauth2 caches per authenticator and keys its cache by scopes only, so there is one
//! authenticator per (tenant, user, scope); all share one HTTP client. Its debug logs print
//! tokens: `logging` pins `yup_oauth2=warn` whatever `RUST_LOG` says. Its key type prints the
//! private key when debug-formatted, so it only ever lives inside `ServiceAccount`, whose
//! `Debug` is redacted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use parking_lot::Mutex;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use yup_oauth2::authenticator::Authenticator;
use yup_oauth2::error::AuthErrorCode;
use yup_oauth2::{CustomHyperClientBuilder, HyperClientBuilder, ServiceAccountAuthenticator, ServiceAccountKey};

use super::Scope;
use super::error::AuthError;
use crate::model::key_file::KeyInfo;

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
type Auth = Authenticator<Connector>;

/// How long one token request may take unless `with_timeout` says otherwise.
const DEFAULT_TOKEN_TIMEOUT: Duration = Duration::from_secs(30);

/// A tenant's service account, its key opened from the store.
pub struct ServiceAccount {
    pub tenant: String,
    pub info: KeyInfo,
    key: ServiceAccountKey,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("tenant", &self.tenant)
            .field("client_email", &self.info.client_email)
            .finish_non_exhaustive()
    }
}

impl ServiceAccount {
    /// Builds from a validated key file's bytes.
    pub fn from_key_file(tenant: &str, info: KeyInfo, key_file: &SecretBox<Vec<u8>>) -> Result<Self, String> {
        let key: ServiceAccountKey =
            serde_json::from_slice(key_file.expose_secret()).map_err(|e| format!("key file: {}", e.classify_name()))?;
        Ok(ServiceAccount { tenant: tenant.to_owned(), info, key })
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    /// serde's own message can quote input; say only what kind of problem it was.
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "a field has the wrong type",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

/// Most authenticators kept at once. Each holds the parsed key and a cached token (a few KB);
/// with 100,000 users that would be hundreds of MB for tokens that expire within the hour
/// anyway, so the oldest are dropped (and sign in again when next needed).
const MAX_AUTHENTICATORS: usize = 4096;

type AuthKey = (String, String, Scope);

pub struct TokenSource {
    client: hyper_util::client::legacy::Client<Connector, String>,
    timeout: Duration,
    authenticators: Mutex<Authenticators>,
}

#[derive(Default)]
struct Authenticators {
    map: HashMap<AuthKey, Arc<Auth>>,
    /// Insertion order, for eviction.
    order: std::collections::VecDeque<AuthKey>,
}

impl Authenticators {
    fn insert(&mut self, key: AuthKey, auth: Arc<Auth>) {
        if self.map.insert(key.clone(), auth).is_none() {
            self.order.push_back(key);
        }
        while self.map.len() > MAX_AUTHENTICATORS {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
    }

    fn retain(&mut self, keep: impl Fn(&AuthKey) -> bool) {
        self.map.retain(|k, _| keep(k));
        self.order.retain(|k| keep(k));
    }
}

impl TokenSource {
    /// One HTTP client for every authenticator: rustls with aws-lc-rs and the Mozilla roots
    /// (no dependency on the host's certificate store); plain http allowed for the fake.
    pub fn new() -> Result<Self, String> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .map_err(|e| format!("TLS setup: {e}"))?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build::<_, String>(connector);
        Ok(TokenSource {
            client,
            timeout: DEFAULT_TOKEN_TIMEOUT,
            authenticators: Mutex::new(Authenticators::default()),
        })
    }

    /// Token requests that take longer than `timeout` fail as transient (`sync.token_timeout`).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn authenticator(&self, account: &ServiceAccount, user: &str, scope: Scope) -> Result<Arc<Auth>, AuthError> {
        let key = (account.tenant.clone(), user.to_owned(), scope);
        if let Some(a) = self.authenticators.lock().map.get(&key) {
            return Ok(a.clone());
        }
        let builder = CustomHyperClientBuilder::from(self.client.clone()).with_timeout(self.timeout);
        let auth = ServiceAccountAuthenticator::with_client(account.key.clone(), builder)
            .subject(user)
            .build()
            .await
            .map_err(|e| AuthError::KeyRejected {
            description: format!("the key could not be loaded ({})", e.kind()),
        })?;
        let auth = Arc::new(auth);
        self.authenticators.lock().insert(key, auth.clone());
        Ok(auth)
    }

    /// A token for `user` with `scope`, cached until shortly before it expires.
    pub async fn token(&self, account: &ServiceAccount, user: &str, scope: Scope) -> Result<SecretString, AuthError> {
        let auth = self.authenticator(account, user, scope).await?;
        let token = tokio::time::timeout(self.timeout, auth.token(&[scope.url()]))
            .await
            .map_err(|_| self.timed_out())?
            .map_err(|e| classify(e, account, user, scope))?;
        token
            .token()
            .map(|t| SecretString::from(t.to_owned()))
            .ok_or_else(|| AuthError::Transient("no access token in the response".into()))
    }

    /// A new token, ignoring the cache: after Google refused the cached one with 401.
    pub async fn fresh_token(
        &self,
        account: &ServiceAccount,
        user: &str,
        scope: Scope,
    ) -> Result<SecretString, AuthError> {
        let auth = self.authenticator(account, user, scope).await?;
        let token = tokio::time::timeout(self.timeout, auth.force_refreshed_token(&[scope.url()]))
            .await
            .map_err(|_| self.timed_out())?
            .map_err(|e| classify(e, account, user, scope))?;
        token
            .token()
            .map(|t| SecretString::from(t.to_owned()))
            .ok_or_else(|| AuthError::Transient("no access token in the response".into()))
    }

    fn timed_out(&self) -> AuthError {
        AuthError::Transient(format!(
            "the token endpoint did not answer within {}",
            humantime::format_duration(self.timeout)
        ))
    }

    /// Drops cached tokens of a tenant (its key changed or it was deleted).
    pub fn forget_tenant(&self, tenant: &str) {
        self.authenticators.lock().retain(|(t, _, _)| t != tenant);
    }

    /// Drops cached tokens of one user.
    pub fn forget_user(&self, tenant: &str, user: &str) {
        self.authenticators.lock().retain(|(t, u, _)| !(t == tenant && u == user));
    }
}

fn classify(e: yup_oauth2::Error, account: &ServiceAccount, user: &str, scope: Scope) -> AuthError {
    match e {
        yup_oauth2::Error::AuthError(ae) => {
            let description = ae.error_description.clone().unwrap_or_default();
            match ae.error {
                AuthErrorCode::UnauthorizedClient => {
                    AuthError::DelegationMissing { client_id: account.info.client_id.clone(), scope: scope.url() }
                }
                AuthErrorCode::InvalidGrant if description.contains("Invalid email or User ID") => {
                    AuthError::UnknownUser { user: user.to_owned() }
                }
                AuthErrorCode::InvalidGrant => AuthError::KeyRejected { description },
                other => AuthError::KeyRejected { description: format!("{}: {description}", other.as_str()) },
            }
        }
        // Network failures, timeouts, and 5xx pages that are not OAuth JSON.
        other => AuthError::Transient(other.to_string()),
    }
}
