//! "Sign in with Google" (DESIGN §7): the OpenID Connect authorization code flow with PKCE,
//! state and nonce, by the `openidconnect` crate, which also verifies the ID token (signature
//! against the provider's JWKS, issuer, audience, expiry, nonce). The provider's discovery
//! document and keys are fetched when first needed and kept for an hour; a token signed with a
//! key not in the cached set makes one fresh discovery (providers rotate keys).
//!
//! The issuer is the operator's (`GWSYNC_OIDC_ISSUER`), not a tenant's, so the outbound policy
//! does not apply; redirects are never followed.

use std::time::{Duration, Instant};

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreIdTokenClaims, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, Scope, TokenResponse,
};
use parking_lot::Mutex;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

const METADATA_TTL: Duration = Duration::from_secs(3600);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest provider response read.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Who the provider says signed in.
#[derive(Debug, Clone)]
pub struct Identity {
    pub email: String,
    pub name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SigninError {
    #[error("the sign-in provider could not be reached or answered wrongly: {0}")]
    Provider(String),
    #[error("the sign-in was not accepted: {0}")]
    Rejected(String),
}

pub struct Oidc {
    issuer: IssuerUrl,
    client_id: ClientId,
    client_secret: SecretString,
    redirect: RedirectUrl,
    http: reqwest::Client,
    metadata: Mutex<Option<(Instant, CoreProviderMetadata)>>,
}

/// Where the browser goes to sign in, and what the callback must find again.
pub struct Start {
    pub url: Url,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

impl Oidc {
    pub fn new(issuer: &Url, client_id: &str, client_secret: SecretString, redirect: Url) -> Result<Oidc, String> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            .build()
            .map_err(|e| format!("building the sign-in HTTP client: {e}"))?;
        Ok(Oidc {
            issuer: IssuerUrl::new(issuer.as_str().trim_end_matches('/').to_owned()).map_err(|e| e.to_string())?,
            client_id: ClientId::new(client_id.to_owned()),
            client_secret,
            redirect: RedirectUrl::from_url(redirect),
            http,
            metadata: Mutex::new(None),
        })
    }

    async fn metadata(&self, fresh: bool) -> Result<CoreProviderMetadata, SigninError> {
        if !fresh
            && let Some((at, m)) = self.metadata.lock().as_ref()
            && at.elapsed() < METADATA_TTL
        {
            return Ok(m.clone());
        }
        let http = |req: openidconnect::HttpRequest| call(&self.http, req);
        let m = CoreProviderMetadata::discover_async(self.issuer.clone(), &http)
            .await
            .map_err(|e| SigninError::Provider(chain(&e)))?;
        *self.metadata.lock() = Some((Instant::now(), m.clone()));
        Ok(m)
    }

    fn client(
        &self,
        m: CoreProviderMetadata,
    ) -> openidconnect::core::CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    > {
        CoreClient::from_provider_metadata(
            m,
            self.client_id.clone(),
            Some(ClientSecret::new(self.client_secret.expose_secret().to_owned())),
        )
        .set_redirect_uri(self.redirect.clone())
    }

    /// The provider's authorization URL for a new sign-in.
    pub async fn start(&self) -> Result<Start, SigninError> {
        let client = self.client(self.metadata(false).await?);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge)
            .url();
        Ok(Start {
            url,
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        })
    }

    /// Exchanges the callback's code and verifies the ID token it brings.
    pub async fn finish(&self, code: &str, nonce: &str, pkce_verifier: &str) -> Result<Identity, SigninError> {
        let client = self.client(self.metadata(false).await?);
        let http = |req: openidconnect::HttpRequest| call(&self.http, req);
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| SigninError::Provider(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&http)
            .await
            .map_err(|e| SigninError::Rejected(chain(&e)))?;
        let id_token = response.id_token().ok_or_else(|| SigninError::Rejected("no ID token in the answer".into()))?;
        let nonce = Nonce::new(nonce.to_owned());
        let claims: CoreIdTokenClaims = match id_token.claims(&client.id_token_verifier(), &nonce) {
            Ok(c) => c.clone(),
            // Perhaps signed with a key published since: look again once.
            Err(openidconnect::ClaimsVerificationError::SignatureVerification(_)) => {
                let client = self.client(self.metadata(true).await?);
                id_token
                    .claims(&client.id_token_verifier(), &nonce)
                    .map_err(|e| SigninError::Rejected(chain(&e)))?
                    .clone()
            }
            Err(e) => return Err(SigninError::Rejected(chain(&e))),
        };
        let email = claims.email().ok_or_else(|| SigninError::Rejected("the ID token names no email".into()))?;
        if claims.email_verified() != Some(true) {
            return Err(SigninError::Rejected("the account's email is not verified".into()));
        }
        let name = claims.name().and_then(|n| n.get(None)).map(|n| n.to_string());
        Ok(Identity { email: email.as_str().trim().to_lowercase(), name })
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

/// `openidconnect`'s HTTP calls over our reqwest (it supports reqwest 0.12 only).
async fn call(
    http: &reqwest::Client,
    req: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, HttpError> {
    let (parts, body) = req.into_parts();
    let mut builder = http.request(parts.method, parts.uri.to_string()).body(body);
    for (name, value) in &parts.headers {
        builder = builder.header(name, value);
    }
    let resp = builder.send().await.map_err(|e| HttpError(e.without_url().to_string()))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    if resp.content_length().is_some_and(|l| l > MAX_RESPONSE_BYTES as u64) {
        return Err(HttpError("the provider's answer is too large".into()));
    }
    let bytes = resp.bytes().await.map_err(|e| HttpError(e.without_url().to_string()))?;
    if bytes.len() > MAX_RESPONSE_BYTES {
        return Err(HttpError("the provider's answer is too large".into()));
    }
    let mut out = http::Response::builder().status(status);
    for (name, value) in &headers {
        out = out.header(name, value);
    }
    out.body(bytes.to_vec()).map_err(|e| HttpError(e.to_string()))
}
