//! Access tokens per (tenant, user, scope), minted by yup-oauth2's service-account flow with the
//! user as subject (domain-wide delegation).
//!
//! yup-oauth2 caches per authenticator and keys its cache by scopes only, so there is one
//! authenticator per (tenant, user, scope); all share one HTTP client. Its debug logs print
//! tokens: `logging` pins `yup_oauth2=warn` whatever `RUST_LOG` says. Its key type prints the
//! private key when debug-formatted, so it only ever lives inside `ServiceAccount`, whose
//! `Debug` is redacted.
//!
//! A key's `token_uri` is the tenant's to choose, so token requests follow the outbound policy
//! (`crate::outbound`): it is checked when an authenticator is built (IP-literal hosts, which
//! no resolver sees), and every connection resolves through the policy's resolver. hyper's
//! client follows no redirects, and yup-oauth2 reads a redirect's body as a failed token
//! answer, so a token endpoint cannot send gwsync elsewhere.

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
use crate::outbound::{self, Mode, OutboundPolicy};

type Connector = hyper_rustls::HttpsConnector<HttpConnector<outbound::Resolver>>;
type Auth = Authenticator<Connector>;

/// How long one token request may take unless `with_timeout` says otherwise.
const DEFAULT_TOKEN_TIMEOUT: Duration = Duration::from_secs(30);

/// A tenant's service account, its key opened from the store.
pub struct ServiceAccount {
    pub tenant: String,
    pub info: KeyInfo,
    key: ServiceAccountKey,
}

impl ServiceAccount {
    /// Which key this is (not secret: the key's id and account, as Google shows them).
    pub fn key_identity(&self) -> String {
        format!("{}/{}", self.info.client_email, self.info.private_key_id.as_deref().unwrap_or(""))
    }
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

/// Tenant, key (its id: a deleted tenant's retired key and the key of a tenant re-created
/// under its id are different accounts), user, scope.
type AuthKey = (String, String, String, Scope);

pub struct TokenSource {
    /// https to public or allowed addresses.
    https: hyper_util::client::legacy::Client<Connector, String>,
    /// Plain http, to allowed addresses only (fake-google in tests).
    http: hyper_util::client::legacy::Client<Connector, String>,
    outbound: Arc<OutboundPolicy>,
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
    /// Two HTTP clients shared by every authenticator (one per scheme, see the fields):
    /// rustls with aws-lc-rs and the Mozilla roots (no dependency on the host's certificate
    /// store), resolving through the outbound policy.
    pub fn new(outbound: Arc<OutboundPolicy>) -> Result<Self, String> {
        let client = |mode: Mode| -> Result<_, String> {
            let tls = hyper_rustls::HttpsConnectorBuilder::new()
                .with_provider_and_webpki_roots(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .map_err(|e| format!("TLS setup: {e}"))?;
            let tls = if mode == Mode::PublicOrAllowed { tls.https_only() } else { tls.https_or_http() };
            let connector =
                tls.enable_http1().enable_http2().wrap_connector(outbound::http_connector(outbound.clone(), mode));
            Ok(hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build::<_, String>(connector))
        };
        Ok(TokenSource {
            https: client(Mode::PublicOrAllowed)?,
            http: client(Mode::AllowedOnly)?,
            outbound,
            timeout: DEFAULT_TOKEN_TIMEOUT,
            authenticators: Mutex::new(Authenticators::default()),
        })
    }

    /// Token requests that take longer than `timeout` fail as transient (`sync.token_timeout`).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The client for the key's `token_uri`, if the outbound policy allows it.
    fn client_for(&self, token_uri: &str) -> Result<&hyper_util::client::legacy::Client<Connector, String>, AuthError> {
        let refused = |reason: String| AuthError::TokenUriRefused { reason };
        // yup-oauth2 panics on a token_uri that is no URI; keys stored before that was checked.
        token_uri.parse::<http::Uri>().map_err(|_| refused("it is not a plain URL".into()))?;
        let url = url::Url::parse(token_uri).map_err(|_| refused("it is not a URL".into()))?;
        match self.outbound.check_url(&url).map_err(|r| refused(r.message))? {
            Mode::PublicOrAllowed => Ok(&self.https),
            Mode::AllowedOnly => Ok(&self.http),
        }
    }

    async fn authenticator(&self, account: &ServiceAccount, user: &str, scope: Scope) -> Result<Arc<Auth>, AuthError> {
        let key = (account.tenant.clone(), account.key_identity(), user.to_owned(), scope);
        if let Some(a) = self.authenticators.lock().map.get(&key) {
            return Ok(a.clone());
        }
        let client = self.client_for(&account.key.token_uri)?;
        let builder = CustomHyperClientBuilder::from(client.clone()).with_timeout(self.timeout);
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
        self.access_token(&token, account, user, scope)
    }

    /// The token's access token. yup-oauth2 takes any JSON answer without an OAuth `error` for a
    /// token, whatever its HTTP status, and keeps one without an expiry for good: a token
    /// endpoint that once answers a 5xx with such a body (`{}`, Google's API error envelope)
    /// would fail this user's every later request. So the authenticator that holds it goes,
    /// and the next request signs in afresh.
    fn access_token(
        &self,
        token: &yup_oauth2::AccessToken,
        account: &ServiceAccount,
        user: &str,
        scope: Scope,
    ) -> Result<SecretString, AuthError> {
        match token.token() {
            Some(t) => Ok(SecretString::from(t.to_owned())),
            None => {
                let key = (account.tenant.clone(), account.key_identity(), user.to_owned(), scope);
                self.authenticators.lock().retain(|k| *k != key);
                Err(AuthError::Transient("no access token in the response".into()))
            }
        }
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
        self.access_token(&token, account, user, scope)
    }

    fn timed_out(&self) -> AuthError {
        AuthError::Transient(format!(
            "the token endpoint did not answer within {}",
            humantime::format_duration(self.timeout)
        ))
    }

    /// Drops cached tokens of a tenant (its key changed or it was deleted).
    pub fn forget_tenant(&self, tenant: &str) {
        self.authenticators.lock().retain(|(t, _, _, _)| t != tenant);
    }

    /// Drops cached tokens of one user.
    pub fn forget_user(&self, tenant: &str, user: &str) {
        self.authenticators.lock().retain(|(t, _, u, _)| !(t == tenant && u == user));
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
                // OAuth's codes for the server's own trouble (RFC 6749 §4.1.2.1; Google's token
                // endpoint has answered `internal_failure`): nothing an admin can fix, so soon again.
                AuthErrorCode::Other(code)
                    if matches!(code.as_str(), "server_error" | "temporarily_unavailable" | "internal_failure") =>
                {
                    AuthError::Transient(format!("{code}: {description}"))
                }
                other => AuthError::KeyRejected { description: format!("{}: {description}", other.as_str()) },
            }
        }
        // A connection the outbound policy's resolver refused (the name resolves elsewhere now).
        other if outbound::refusal_in(&other).is_some() => AuthError::TokenUriRefused {
            reason: outbound::refusal_in(&other).map(|r| r.message.clone()).unwrap_or_default(),
        },
        // Network failures, timeouts, and 5xx pages that are not OAuth JSON.
        other => AuthError::Transient(other.to_string()),
    }
}
