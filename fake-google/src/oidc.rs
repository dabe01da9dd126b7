//! Google's OpenID Connect provider: "Sign in with Google" for web-server apps — the discovery
//! document, the authorization page (an account chooser), the authorization-code grant of the
//! token endpoint with PKCE, ID tokens signed RS256 with keys published at the JWKS URI, the
//! userinfo endpoint and token revocation.
//!
//! Paths mirror Google's (`/.well-known/openid-configuration`, `/o/oauth2/v2/auth`, `/token`,
//! `/oauth2/v3/certs`, `/v1/userinfo`, `/revoke`), all on the fake's one address. The issuer is the
//! fake's base URL unless set (`PUT /_fake/oidc {"issuer": …}`), so a relying party pointed at the
//! fake discovers it exactly as it would discover `https://accounts.google.com`.
//!
//! What Google does and the fake copies: the client and redirect URI are checked before anything
//! else and their failures are an error *page*, never a redirect; a cancelled sign-in redirects with `error=access_denied`; codes are single use (a
//! second use also revokes the access token the first one gave), expire after
//! [`DEFAULT_CODE_LIFETIME_SECS`] on the fake clock, and are bound to the client, the redirect
//! URI, the nonce and the PKCE challenge; token endpoint errors are OAuth2 JSON
//! (`{"error", "error_description"}`) with Google's wording.
//!
//! Not modelled: implicit and hybrid response types, refresh tokens (`access_type=offline`), the
//! consent screen, browser sessions (`prompt=none` signs in the `login_hint` account or answers
//! `login_required`), consumer (gmail.com) accounts without `hd`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::errors::GoogleError;
use crate::params::Params;
use crate::people::model::SourceKind;
use crate::reqlog::ApiCall;
use crate::world::{AccessToken, Shared, World};

/// How long an authorization code can be exchanged (fake time). Google does not document it;
/// RFC 6749 recommends at most ten minutes.
pub const DEFAULT_CODE_LIFETIME_SECS: i64 = 600;
/// ID tokens live one hour.
pub const ID_TOKEN_LIFETIME_SECS: i64 = 3600;
pub const USERINFO_EMAIL: &str = "https://www.googleapis.com/auth/userinfo.email";
pub const USERINFO_PROFILE: &str = "https://www.googleapis.com/auth/userinfo.profile";

/// An OAuth client ("OAuth 2.0 Client ID" of type Web application in the Cloud console).
#[derive(Debug, Clone, Serialize)]
pub struct OAuthClient {
    pub client_id: String,
    pub client_secret: String,
    pub name: String,
    pub project_id: String,
    pub redirect_uris: Vec<String>,
    pub created_at: String,
}

/// One RSA signing key of the provider.
pub struct SigningKey {
    pub kid: String,
    pair: KeyPair,
    pub n: String,
    pub e: String,
}

impl SigningKey {
    pub fn generate() -> Result<Self, GoogleError> {
        let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| server_error())?;
        let public = pair.public_key();
        let n = URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero());
        let e = URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero());
        let mut rng = rand::rng();
        // Google's kids are 40 hex digits.
        let kid: String = (0..40).map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0')).collect();
        Ok(SigningKey { kid, pair, n, e })
    }

    pub fn jwk(&self) -> Value {
        json!({ "kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid, "n": self.n, "e": self.e })
    }

    /// A compact JWS (RS256) of `claims` with this key's `kid`.
    pub fn sign(&self, claims: &Value) -> Result<String, GoogleError> {
        let header = json!({ "alg": "RS256", "kid": self.kid, "typ": "JWT" });
        let h = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).map_err(|_| server_error())?);
        let c = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).map_err(|_| server_error())?);
        let signed_part = format!("{h}.{c}");
        let mut sig = vec![0u8; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                signed_part.as_bytes(),
                &mut sig,
            )
            .map_err(|_| server_error())?;
        Ok(format!("{signed_part}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }
}

/// What a user's ID token says beyond the address, as `PUT /_fake/oidc/users/{email}` set it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileOverride {
    pub email_verified: Option<bool>,
    pub name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub picture: Option<String>,
}

#[derive(Debug, Clone)]
struct AuthCode {
    client_id: String,
    redirect_uri: String,
    user: String,
    scopes: Vec<String>,
    nonce: Option<String>,
    challenge: Option<(String, ChallengeMethod)>,
    expires_at: DateTime<Utc>,
    /// Set once exchanged: a second exchange fails and revokes this token.
    redeemed: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum ChallengeMethod {
    Plain,
    S256,
}

/// The provider's state, inside [`World`].
pub struct OidcState {
    pub issuer: Option<String>,
    pub clients: BTreeMap<String, OAuthClient>,
    pub deleted_clients: BTreeSet<String>,
    /// Published keys, oldest first; the last one signs.
    pub keys: Vec<Arc<SigningKey>>,
    codes: HashMap<String, AuthCode>,
    /// Each account's `sub`: a stable numeric string, kept for the life of the account.
    pub subjects: HashMap<String, String>,
    pub profiles: HashMap<String, ProfileOverride>,
    pub code_lifetime_secs: i64,
}

impl Default for OidcState {
    fn default() -> Self {
        OidcState {
            issuer: None,
            clients: BTreeMap::new(),
            deleted_clients: BTreeSet::new(),
            keys: Vec::new(),
            codes: HashMap::new(),
            subjects: HashMap::new(),
            profiles: HashMap::new(),
            code_lifetime_secs: DEFAULT_CODE_LIFETIME_SECS,
        }
    }
}

impl OidcState {
    pub fn subject(&mut self, email: &str) -> String {
        self.subjects
            .entry(email.to_owned())
            .or_insert_with(|| format!("1{:020}", rand::rng().random_range(0..10u128.pow(20))))
            .clone()
    }

    /// Forgets an account: a new account under the same address gets a new `sub`.
    pub fn forget_user(&mut self, email: &str) {
        self.subjects.remove(email);
        self.profiles.remove(email);
        self.codes.retain(|_, c| c.user != email);
    }

    /// Deletes a client; its codes die with it (its tokens are removed by the caller).
    pub fn delete_client(&mut self, client_id: &str) -> Option<OAuthClient> {
        let client = self.clients.remove(client_id)?;
        self.deleted_clients.insert(client_id.to_owned());
        self.codes.retain(|_, c| c.client_id != client_id);
        Some(client)
    }

    pub fn pending_codes(&self) -> usize {
        self.codes.values().filter(|c| c.redeemed.is_none()).count()
    }
}

/// Registers a client with Google's id and secret formats and returns it.
pub fn add_client(shared: &Shared, name: &str, redirect_uris: Vec<String>) -> Result<OAuthClient, String> {
    redirect_uris.iter().try_for_each(|u| check_redirect_uri(u))?;
    let client = new_client(name, redirect_uris, shared.clock.now());
    shared.world.lock().oidc.clients.insert(client.client_id.clone(), client.clone());
    Ok(client)
}

/// A new client with Google's id and secret formats.
pub fn new_client(name: &str, redirect_uris: Vec<String>, now: DateTime<Utc>) -> OAuthClient {
    const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    const SECRET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    let number: u64 = rng.random_range(100_000_000_000..1_000_000_000_000);
    let tail: String = (0..32).map(|_| LOWER[rng.random_range(0..LOWER.len())] as char).collect();
    let secret: String = (0..28).map(|_| SECRET[rng.random_range(0..SECRET.len())] as char).collect();
    OAuthClient {
        client_id: format!("{number}-{tail}.apps.googleusercontent.com"),
        client_secret: format!("GOCSPX-{secret}"),
        name: name.to_owned(),
        project_id: format!("fake-project-{}", rng.random_range(100_000..1_000_000)),
        redirect_uris,
        created_at: crate::clock::google_timestamp(now),
    }
}

/// `<digits>-<lower-case letters and digits>.apps.googleusercontent.com`, as Google makes them.
pub fn check_client_id(id: &str) -> Result<(), String> {
    let ok = id.strip_suffix(".apps.googleusercontent.com").and_then(|p| p.split_once('-')).is_some_and(|(n, t)| {
        !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
            && !t.is_empty()
            && t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    });
    if ok {
        Ok(())
    } else {
        Err(format!("client_id '{id}' is not <digits>-<letters/digits>.apps.googleusercontent.com"))
    }
}

/// `GOCSPX-` and at least 16 URL-safe characters.
pub fn check_client_secret(secret: &str) -> Result<(), String> {
    let ok = secret
        .strip_prefix("GOCSPX-")
        .is_some_and(|t| t.len() >= 16 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    if ok { Ok(()) } else { Err("client_secret must be GOCSPX- and at least 16 letters, digits, - or _".to_owned()) }
}

/// Google's rules for a registered redirect URI: absolute, no fragment, no wildcard, `https`
/// except on localhost.
pub fn check_redirect_uri(uri: &str) -> Result<(), String> {
    let url = url::Url::parse(uri).map_err(|e| format!("'{uri}' is not an absolute URI: {e}"))?;
    if url.fragment().is_some() {
        return Err(format!("'{uri}': a redirect URI cannot contain a fragment"));
    }
    if uri.contains('*') {
        return Err(format!("'{uri}': a redirect URI cannot contain a wildcard"));
    }
    let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!("'{uri}': a redirect URI must use https (http only for localhost)")),
    }
}

fn server_error() -> GoogleError {
    GoogleError::oauth(500, "server_error", "Internal error")
}

pub fn issuer(shared: &Shared) -> String {
    shared.world.lock().oidc.issuer.clone().unwrap_or_else(|| shared.base_url.clone())
}

/// The key that signs now, generated on first use (RSA key generation takes a moment, so a fake
/// nobody signs in to never pays for it).
pub async fn current_key(shared: &Shared) -> Result<Arc<SigningKey>, GoogleError> {
    if let Some(k) = shared.world.lock().oidc.keys.last() {
        return Ok(k.clone());
    }
    let key = Arc::new(web::block(SigningKey::generate).await.map_err(|_| server_error())??);
    let mut world = shared.world.lock();
    if let Some(k) = world.oidc.keys.last() {
        return Ok(k.clone());
    }
    world.oidc.keys.push(key.clone());
    Ok(key)
}

/// Publishes a new signing key; the previous one stays published (as Google keeps two) unless
/// `keep_previous` is false; older ones are dropped.
pub async fn rotate_keys(shared: &Shared, keep_previous: bool) -> Result<Vec<String>, GoogleError> {
    let key = Arc::new(web::block(SigningKey::generate).await.map_err(|_| server_error())??);
    let mut world = shared.world.lock();
    let keys = &mut world.oidc.keys;
    let keep: Vec<Arc<SigningKey>> =
        if keep_previous { keys.last().cloned().into_iter().collect() } else { Vec::new() };
    *keys = keep;
    keys.push(key);
    Ok(keys.iter().map(|k| k.kid.clone()).collect())
}

fn log_call(req: &HttpRequest, method: &'static str, user: Option<String>) {
    req.extensions_mut().insert(ApiCall { method, user });
}

// ---- discovery and keys ----

pub async fn discovery(shared: web::Data<Shared>, req: HttpRequest) -> HttpResponse {
    log_call(&req, "oauth2.discovery", None);
    let base = &shared.base_url;
    HttpResponse::Ok().insert_header(("Cache-Control", "public, max-age=3600")).json(json!({
        "issuer": issuer(&shared),
        "authorization_endpoint": format!("{base}/o/oauth2/v2/auth"),
        "token_endpoint": format!("{base}/token"),
        "userinfo_endpoint": format!("{base}/v1/userinfo"),
        "revocation_endpoint": format!("{base}/revoke"),
        "jwks_uri": format!("{base}/oauth2/v3/certs"),
        "response_types_supported": ["code", "token", "id_token", "code token", "code id_token",
            "token id_token", "code token id_token", "none"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email", "profile"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "claims_supported": ["aud", "email", "email_verified", "exp", "family_name", "given_name",
            "iat", "iss", "name", "picture", "sub"],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "authorization_response_iss_parameter_supported": true,
        "code_challenge_methods_supported": ["plain", "S256"],
        "grant_types_supported": ["authorization_code", "refresh_token",
            "urn:ietf:params:oauth:grant-type:device_code", "urn:ietf:params:oauth:grant-type:jwt-bearer"],
    }))
}

pub async fn jwks(shared: web::Data<Shared>, req: HttpRequest) -> Result<HttpResponse, GoogleError> {
    log_call(&req, "oauth2.certs", None);
    current_key(&shared).await?;
    let keys: Vec<Value> = shared.world.lock().oidc.keys.iter().rev().map(|k| k.jwk()).collect();
    // Google serves its certs with a cache lifetime of hours; a short one here keeps tests that
    // rotate keys honest without making a client that caches at all wrong.
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "public, max-age=300, must-revalidate, no-transform"))
        .json(json!({ "keys": keys })))
}

// ---- the authorization endpoint ----

/// The parts of an authorization request that survive the account chooser, sealed into the page
/// so the choice cannot be replayed with another redirect URI or challenge.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AuthRequest {
    client_id: String,
    redirect_uri: String,
    scopes: Vec<String>,
    state: Option<String>,
    nonce: Option<String>,
    challenge: Option<(String, ChallengeMethod)>,
    hd: Option<String>,
    prompt: Option<String>,
}

/// An authorization error shown as Google shows it: a page, with the error code and the request
/// details; the client is never redirected to.
fn error_page(status: u16, error: &str, description: &str, pairs: &[(String, String)]) -> HttpResponse {
    let heading = match error {
        "invalid_client" | "deleted_client" => "Access blocked: Authorization Error".to_owned(),
        _ => "Access blocked: This app’s request is invalid".to_owned(),
    };
    let details: String = pairs
        .iter()
        .map(|(k, v)| format!("<li><code>{}={}</code></li>", escape(k), escape(v)))
        .collect::<Vec<_>>()
        .join("\n");
    let body = format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{heading}</title>
<style>body{{font-family:sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;color:#202124}}code{{word-break:break-all}}</style>
</head>
<body>
<main>
<h1>{heading}</h1>
<p id="description">{description}</p>
<p id="error-code"><strong>Error {status}: {error}</strong></p>
<h2>Request details</h2>
<ul id="request-details">
{details}
</ul>
</main>
</body>
</html>
"#,
        heading = escape(&heading),
        description = escape(description),
        error = escape(error),
    );
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::BAD_REQUEST),
    )
    .insert_header(("Cache-Control", "no-cache, no-store, max-age=0, must-revalidate"))
    .content_type("text/html; charset=utf-8")
    .body(body)
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Redirects to the client's registered `redirect_uri` with `pairs` added to its query.
fn redirect(redirect_uri: &str, pairs: &[(&str, &str)]) -> HttpResponse {
    let Ok(mut url) = url::Url::parse(redirect_uri) else {
        return HttpResponse::BadRequest().body("bad redirect_uri");
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
    }
    HttpResponse::Found()
        .insert_header(("Location", url.as_str()))
        .insert_header(("Cache-Control", "no-cache, no-store, max-age=0, must-revalidate"))
        .finish()
}

enum Checked {
    Ok(AuthRequest, Option<String>),
    Page(HttpResponse),
}

/// Validates an authorization request in Google's order: client, redirect URI (both fail as a
/// page), then the rest (also a page: Google redirects only a user's refusal and `prompt=none`
/// failures).
fn check_request(world: &World, params: &Params) -> Checked {
    let pairs: Vec<(String, String)> = ["client_id", "redirect_uri", "response_type", "scope", "state", "prompt", "hd"]
        .iter()
        .filter_map(|k| params.get(k).map(|v| ((*k).to_owned(), v.to_owned())))
        .collect();
    let page = |status, error: &str, description: &str| Checked::Page(error_page(status, error, description, &pairs));
    let Some(client_id) = params.get("client_id").filter(|c| !c.is_empty()) else {
        return page(400, "invalid_request", "Missing required parameter: client_id");
    };
    if world.oidc.deleted_clients.contains(client_id) {
        return page(401, "deleted_client", "The OAuth client was deleted.");
    }
    let Some(client) = world.oidc.clients.get(client_id) else {
        return page(401, "invalid_client", "The OAuth client was not found.");
    };
    let Some(redirect_uri) = params.get("redirect_uri").filter(|r| !r.is_empty()) else {
        return page(400, "invalid_request", "Missing required parameter: redirect_uri");
    };
    if !client.redirect_uris.iter().any(|r| r == redirect_uri) {
        return page(
            400,
            "redirect_uri_mismatch",
            &format!(
                "You can’t sign in to this app because it doesn’t comply with Google’s OAuth 2.0 policy. \
                 If you’re the app developer, register the redirect URI in the Google Cloud Console. \
                 Request details: redirect_uri={redirect_uri}"
            ),
        );
    }
    match params.get("response_type") {
        None | Some("") => return page(400, "invalid_request", "Required parameter is missing: response_type"),
        Some("code") => {}
        Some(other) => {
            return page(
                400,
                "unsupported_response_type",
                &format!("fake-google supports only response_type=code, not '{other}'"),
            );
        }
    }
    let scope = params.get("scope").unwrap_or_default();
    let scopes: Vec<String> = scope.split_whitespace().map(str::to_owned).collect();
    if scopes.is_empty() {
        return page(400, "invalid_request", "Missing required parameter: scope");
    }
    let invalid: Vec<&str> = scopes
        .iter()
        .map(String::as_str)
        .filter(|s| !matches!(*s, "openid" | "email" | "profile") && !s.starts_with("https://www.googleapis.com/auth/"))
        .collect();
    if !invalid.is_empty() {
        return page(
            400,
            "invalid_scope",
            &format!("Some requested scopes were invalid. {{invalid=[{}]}}", invalid.join(", ")),
        );
    }
    let challenge = match (params.get("code_challenge"), params.get("code_challenge_method")) {
        (None, None) => None,
        (None, Some(_)) => return page(400, "invalid_request", "Missing code_challenge."),
        (Some(c), method) => {
            let method = match method {
                None | Some("plain") => ChallengeMethod::Plain,
                Some("S256") => ChallengeMethod::S256,
                Some(_) => return page(400, "invalid_request", "Invalid code_challenge_method."),
            };
            let unreserved = c.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
            let ok = match method {
                ChallengeMethod::S256 => c.len() == 43 && unreserved,
                ChallengeMethod::Plain => (43..=128).contains(&c.len()) && unreserved,
            };
            if !ok {
                return page(400, "invalid_request", "Invalid code_challenge.");
            }
            Some((c.to_owned(), method))
        }
    };
    let prompt = params.get("prompt").map(str::to_owned);
    if let Some(p) = &prompt {
        let values: Vec<&str> = p.split_whitespace().collect();
        if values.iter().any(|v| !matches!(*v, "none" | "consent" | "select_account"))
            || (values.contains(&"none") && values.len() > 1)
        {
            return page(400, "invalid_request", &format!("Invalid parameter value for prompt: {p}"));
        }
    }
    let request = AuthRequest {
        client_id: client_id.to_owned(),
        redirect_uri: redirect_uri.to_owned(),
        scopes,
        state: params.get("state").map(str::to_owned),
        nonce: params.get("nonce").map(str::to_owned),
        challenge,
        hd: params.get("hd").filter(|h| !h.is_empty()).map(str::to_ascii_lowercase),
        prompt,
    };
    Checked::Ok(request, params.get("login_hint").map(str::to_ascii_lowercase))
}

/// Whether `user` may sign in to `request`: an existing account, in `hd`'s domain if given.
fn eligible(world: &World, request: &AuthRequest, user: &str) -> bool {
    world.user_exists(user)
        && match request.hd.as_deref() {
            None | Some("*") => true,
            Some(hd) => World::domain_of(user).as_deref() == Some(hd),
        }
}

/// An error for the client, sent to its redirect URI with `state` and `iss` (RFC 9207).
fn redirect_error(request: &AuthRequest, error: &str, iss: &str) -> HttpResponse {
    let mut pairs = vec![("error", error)];
    if let Some(s) = &request.state {
        pairs.push(("state", s));
    }
    pairs.push(("iss", iss));
    redirect(&request.redirect_uri, &pairs)
}

/// `GET /o/oauth2/v2/auth`: validates the request, then shows the account chooser.
pub async fn authorize(shared: web::Data<Shared>, req: HttpRequest) -> HttpResponse {
    log_call(&req, "oauth2.authorize", None);
    let params = Params::parse(req.query_string());
    let now = shared.clock.now();
    let iss = issuer(&shared);
    let mut world = shared.world.lock();
    let (request, hint) = match check_request(&world, &params) {
        Checked::Ok(r, h) => (r, h),
        Checked::Page(p) => return p,
    };
    if request.prompt.as_deref() == Some("none") {
        // No browser session in the fake: `login_hint` names the signed-in account.
        return match hint.filter(|h| eligible(&world, &request, h)) {
            Some(user) => grant(&mut world, now, &request, &user, &iss),
            None => redirect_error(&request, "login_required", &iss),
        };
    }
    let client_name = world.oidc.clients.get(&request.client_id).map(|c| c.name.clone()).unwrap_or_default();
    let mut accounts: Vec<(String, String)> = world
        .domains
        .values()
        .flat_map(|d| d.users.iter())
        .filter(|u| eligible(&world, &request, u))
        .map(|u| (u.clone(), display_name(&world, u).0))
        .collect();
    if let Some(h) = &hint
        && let Some(i) = accounts.iter().position(|(u, _)| u == h)
    {
        let preselected = accounts.remove(i);
        accounts.insert(0, preselected);
    }
    let preselected = hint.as_ref().is_some_and(|h| accounts.first().is_some_and(|(u, _)| u == h));
    drop(world);
    let sealed = shared.tokens.seal("oidc-auth", &request);
    chooser_page(&client_name, &sealed, &accounts, preselected, request.hd.as_deref())
}

fn chooser_page(
    client: &str,
    sealed: &str,
    accounts: &[(String, String)],
    preselected: bool,
    hd: Option<&str>,
) -> HttpResponse {
    let items: String = accounts
        .iter()
        .enumerate()
        .map(|(i, (email, name))| {
            let selected = preselected && i == 0;
            format!(
                r#"<li><button type="submit" name="account" value="{email}" class="account{cls}"{attrs}><span class="name">{name}</span> <span class="email">{email}</span></button></li>"#,
                email = escape(email),
                name = escape(name),
                cls = if selected { " selected" } else { "" },
                attrs = if selected { r#" aria-current="true" autofocus"# } else { "" },
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let empty = if accounts.is_empty() {
        match hd {
            Some(hd) if hd != "*" => format!(r#"<p id="no-accounts">No accounts in {}.</p>"#, escape(hd)),
            _ => r#"<p id="no-accounts">No accounts.</p>"#.to_owned(),
        }
    } else {
        String::new()
    };
    let body = format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in – Google Accounts</title>
<style>
body{{font-family:sans-serif;max-width:28rem;margin:2rem auto;padding:0 1rem;color:#202124}}
ul{{list-style:none;padding:0}}
button{{font:inherit;cursor:pointer}}
.account{{display:block;width:100%;text-align:left;padding:.75rem;margin:.25rem 0;border:1px solid #dadce0;border-radius:.5rem;background:#fff;color:#202124}}
.account:focus{{outline:3px solid #1a73e8}}
.account.selected{{border-color:#1a73e8}}
.email{{display:block;color:#3c4043}}
#cancel{{margin-top:1rem;padding:.5rem 1rem;border:1px solid #5f6368;border-radius:.25rem;background:#fff;color:#1a0dab}}
</style>
</head>
<body>
<main>
<h1 id="heading">Choose an account</h1>
<p>to continue to <strong id="client-name">{client}</strong></p>
<form method="post" action="/o/oauth2/v2/auth/choose" aria-labelledby="heading">
<input type="hidden" name="request" value="{sealed}">
{empty}<ul id="accounts">
{items}
</ul>
<button type="submit" name="cancel" value="1" id="cancel">Cancel</button>
</form>
</main>
</body>
</html>
"#,
        client = escape(client),
        sealed = escape(sealed),
    );
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-cache, no-store, max-age=0, must-revalidate"))
        .insert_header(("X-Frame-Options", "DENY"))
        .content_type("text/html; charset=utf-8")
        .body(body)
}

/// `POST /o/oauth2/v2/auth/choose` (the chooser's form): `request` plus `account` or `cancel`.
pub async fn choose(shared: web::Data<Shared>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    log_call(&req, "oauth2.authorize", None);
    let form = Params::parse(std::str::from_utf8(&body).unwrap_or_default());
    let none: Vec<(String, String)> = Vec::new();
    let Some(request) = form.get("request").and_then(|r| shared.tokens.open::<AuthRequest>("oidc-auth", r)) else {
        return error_page(400, "invalid_request", "The sign-in request is missing or was altered.", &none);
    };
    let now = shared.clock.now();
    let iss = issuer(&shared);
    let mut world = shared.world.lock();
    // The client or its redirect URI may have gone while the page was open.
    match world.oidc.clients.get(&request.client_id) {
        None => return error_page(401, "invalid_client", "The OAuth client was not found.", &none),
        Some(c) if !c.redirect_uris.contains(&request.redirect_uri) => {
            return error_page(400, "redirect_uri_mismatch", "The redirect URI is no longer registered.", &none);
        }
        Some(_) => {}
    }
    if form.has("cancel") {
        return redirect_error(&request, "access_denied", &iss);
    }
    let Some(user) = form.get("account").map(str::to_ascii_lowercase).filter(|u| eligible(&world, &request, u)) else {
        return error_page(400, "invalid_request", "That account cannot sign in to this app.", &none);
    };
    if let Some(call) = req.extensions_mut().get_mut::<ApiCall>() {
        call.user = Some(user.clone());
    }
    grant(&mut world, now, &request, &user, &iss)
}

/// Mints a code for `user` and redirects with what Google appends: `state`, `code`, `scope`,
/// `authuser`, `hd`, `prompt`, and `iss` (RFC 9207; Google has sent it since early 2026 and its
/// reference lists `authorization_response_iss_parameter_supported`).
fn grant(world: &mut World, now: DateTime<Utc>, request: &AuthRequest, user: &str, iss: &str) -> HttpResponse {
    let code = new_code();
    let expires_at = now + chrono::Duration::seconds(world.oidc.code_lifetime_secs);
    world.oidc.codes.insert(
        code.clone(),
        AuthCode {
            client_id: request.client_id.clone(),
            redirect_uri: request.redirect_uri.clone(),
            user: user.to_owned(),
            scopes: request.scopes.clone(),
            nonce: request.nonce.clone(),
            challenge: request.challenge.clone(),
            expires_at,
            redeemed: None,
        },
    );
    let granted = granted_scopes(&request.scopes);
    let hd = World::domain_of(user).unwrap_or_default();
    let prompt = if request.prompt.as_deref().is_some_and(|p| p.contains("consent")) { "consent" } else { "none" };
    let scope = redirect_scope(&request.scopes, &granted);
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    if let Some(s) = &request.state {
        pairs.push(("state", s));
    }
    pairs.extend([("code", code.as_str()), ("scope", scope.as_str()), ("authuser", "0"), ("hd", hd.as_str())]);
    pairs.push(("prompt", prompt));
    pairs.push(("iss", iss));
    redirect(&request.redirect_uri, &pairs)
}

fn new_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    let tail: String = (0..71).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    format!("4/0A{tail}")
}

/// The scopes a token carries: `email` and `profile` become their userinfo URLs.
fn granted_scopes(requested: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in requested {
        let s = match s.as_str() {
            "email" => USERINFO_EMAIL,
            "profile" => USERINFO_PROFILE,
            other => other,
        };
        if !out.iter().any(|o| o == s) {
            out.push(s.to_owned());
        }
    }
    // Google lists openid last.
    out.sort_by_key(|s| s == "openid");
    out
}

/// The redirect's `scope`: the short names asked for, then the granted URLs (openid last).
fn redirect_scope(requested: &[String], granted: &[String]) -> String {
    let mut out: Vec<&str> =
        requested.iter().map(String::as_str).filter(|s| matches!(*s, "email" | "profile")).collect();
    for g in granted {
        if !out.contains(&g.as_str()) {
            out.push(g);
        }
    }
    out.join(" ")
}

/// The name Google shows for an account: the directory profile's, else one made from the address.
fn display_name(world: &World, email: &str) -> (String, String, Option<String>) {
    let from_directory = World::domain_of(email).and_then(|d| world.directory.get(&d)).and_then(|book| {
        book.people.values().find_map(|p| {
            let v = p.latest();
            let is_theirs = p.kind == SourceKind::DomainProfile
                && !v.deleted
                && v.data
                    .get("emailAddresses")
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.iter().any(|e| e.get("value").and_then(Value::as_str) == Some(email)));
            is_theirs.then(|| v.data.get("names").and_then(|n| n.get(0)).cloned()).flatten()
        })
    });
    let given = from_directory.as_ref().and_then(|n| n.get("givenName")).and_then(Value::as_str).map(str::to_owned);
    let family = from_directory.as_ref().and_then(|n| n.get("familyName")).and_then(Value::as_str).map(str::to_owned);
    let given = given.unwrap_or_else(|| {
        let local = email.split('@').next().unwrap_or_default();
        let mut c = local.chars();
        c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
    });
    let name = match &family {
        Some(f) => format!("{given} {f}"),
        None => given.clone(),
    };
    (name, given, family)
}

// ---- the token endpoint: authorization_code ----

fn oauth(status: u16, error: &str, description: &str) -> GoogleError {
    GoogleError::oauth(status, error, description)
}

/// The client's credentials: HTTP Basic (client_secret_basic) or form fields (client_secret_post).
fn client_credentials(req: &HttpRequest, field: &dyn Fn(&str) -> Option<String>) -> (Option<String>, Option<String>) {
    let basic = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|s| {
            s.split_once(':').map(|(id, secret)| {
                let dec =
                    |x: &str| form_urlencoded::parse(format!("x={x}").as_bytes()).next().map(|(_, v)| v.into_owned());
                (dec(id).unwrap_or_default(), dec(secret).unwrap_or_default())
            })
        });
    match basic {
        Some((id, secret)) => (Some(id), Some(secret)),
        None => (field("client_id"), field("client_secret")),
    }
}

/// `POST /token` with `grant_type=authorization_code`.
pub async fn exchange_code(
    shared: &Shared,
    req: &HttpRequest,
    form: &[(String, String)],
) -> Result<HttpResponse, GoogleError> {
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let (client_id, secret) = client_credentials(req, &field);
    let Some(client_id) = client_id.filter(|c| !c.is_empty()) else {
        return Err(oauth(400, "invalid_request", "Could not determine client ID from request."));
    };
    let key = current_key(shared).await?;
    let issuer = issuer(shared);
    let now = shared.clock.now();
    let mut world = shared.world.lock();
    if world.oidc.deleted_clients.contains(&client_id) {
        return Err(oauth(401, "deleted_client", "The OAuth client was deleted."));
    }
    let Some(client) = world.oidc.clients.get(&client_id).cloned() else {
        return Err(oauth(401, "invalid_client", "The OAuth client was not found."));
    };
    let Some(secret) = secret.filter(|s| !s.is_empty()) else {
        return Err(oauth(400, "invalid_request", "client_secret is missing."));
    };
    if aws_lc_rs::constant_time::verify_slices_are_equal(secret.as_bytes(), client.client_secret.as_bytes()).is_err() {
        return Err(oauth(401, "invalid_client", "Unauthorized"));
    }
    let Some(code) = field("code").filter(|c| !c.is_empty()) else {
        return Err(oauth(400, "invalid_request", "Missing required parameter: code"));
    };
    if !code.starts_with("4/") {
        return Err(oauth(400, "invalid_grant", "Malformed auth code."));
    }
    let bad_request = || oauth(400, "invalid_grant", "Bad Request");
    let Some(entry) = world.oidc.codes.get_mut(&code) else {
        return Err(bad_request());
    };
    if let Some(token) = entry.redeemed.clone() {
        // A replayed code: refuse it, and revoke what the first exchange gave (RFC 6749 §4.1.2).
        world.access_tokens.remove(&token);
        return Err(bad_request());
    }
    // Any attempt spends the code, successful or not.
    let grant = entry.clone();
    world.oidc.codes.remove(&code);
    if grant.expires_at <= now || grant.client_id != client_id {
        return Err(bad_request());
    }
    let Some(redirect_uri) = field("redirect_uri").filter(|r| !r.is_empty()) else {
        return Err(oauth(400, "invalid_request", "Missing parameter: redirect_uri"));
    };
    if redirect_uri != grant.redirect_uri {
        return Err(oauth(400, "redirect_uri_mismatch", "Bad Request"));
    }
    let verifier = field("code_verifier");
    match (&grant.challenge, verifier) {
        (None, None) => {}
        (None, Some(_)) => return Err(oauth(400, "invalid_grant", "code_verifier or verifier is not needed.")),
        (Some(_), None) => return Err(oauth(400, "invalid_grant", "Missing code verifier.")),
        (Some((challenge, method)), Some(v)) => {
            let well_formed =
                (43..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
            let derived = match method {
                ChallengeMethod::Plain => v.clone(),
                ChallengeMethod::S256 => {
                    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, v.as_bytes()))
                }
            };
            if !well_formed || derived != *challenge {
                return Err(oauth(400, "invalid_grant", "Invalid code verifier."));
            }
        }
    }
    if !world.user_exists(&grant.user) {
        return Err(bad_request());
    }
    if let Some(call) = req.extensions_mut().get_mut::<ApiCall>() {
        call.user = Some(grant.user.clone());
    }

    let scopes = granted_scopes(&grant.scopes);
    let access_token = crate::oauth::new_access_token_for_user();
    world.access_tokens.insert(
        access_token.clone(),
        AccessToken {
            user: grant.user.clone(),
            client_id: client_id.clone(),
            client_email: String::new(),
            scopes: scopes.iter().cloned().collect(),
            expires_at: now + chrono::Duration::seconds(crate::oauth::TOKEN_LIFETIME_SECS),
        },
    );
    // Kept (an hour past its expiry) only to recognise a replay.
    world.oidc.codes.retain(|_, c| c.expires_at + chrono::Duration::hours(1) > now);
    world.oidc.codes.insert(code, AuthCode { redeemed: Some(access_token.clone()), ..grant.clone() });

    let mut body = json!({
        "access_token": access_token,
        "expires_in": crate::oauth::TOKEN_LIFETIME_SECS,
        "scope": scopes.join(" "),
        "token_type": "Bearer",
    });
    if grant.scopes.iter().any(|s| s == "openid") {
        let claims = id_token_claims(&mut world, &grant, &client_id, &issuer, &access_token, now);
        drop(world);
        body["id_token"] = json!(key.sign(&claims)?);
    }
    Ok(HttpResponse::Ok().insert_header(("Cache-Control", "no-cache, no-store, max-age=0, must-revalidate")).json(body))
}

/// The claims of an ID token, in the order Google writes them.
fn id_token_claims(
    world: &mut World,
    grant: &AuthCode,
    client_id: &str,
    issuer: &str,
    access_token: &str,
    now: DateTime<Utc>,
) -> Value {
    let user = grant.user.as_str();
    let sub = world.oidc.subject(user);
    let profile = world.oidc.profiles.get(user).cloned().unwrap_or_default();
    let (name, given, family) = display_name(world, user);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, access_token.as_bytes());
    let at_hash = URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16]);
    let has = |s: &str| grant.scopes.iter().any(|g| g == s);
    let mut claims = serde_json::Map::new();
    claims.insert("iss".into(), json!(issuer));
    claims.insert("azp".into(), json!(client_id));
    claims.insert("aud".into(), json!(client_id));
    claims.insert("sub".into(), json!(sub));
    if let Some(hd) = World::domain_of(user) {
        claims.insert("hd".into(), json!(hd));
    }
    if has("email") || has(USERINFO_EMAIL) {
        claims.insert("email".into(), json!(user));
        claims.insert("email_verified".into(), json!(profile.email_verified.unwrap_or(true)));
    }
    claims.insert("at_hash".into(), json!(at_hash));
    if let Some(n) = &grant.nonce {
        claims.insert("nonce".into(), json!(n));
    }
    if has("profile") || has(USERINFO_PROFILE) {
        claims.insert("name".into(), json!(profile.name.clone().unwrap_or(name)));
        claims.insert("picture".into(), json!(profile.picture.clone().unwrap_or_else(|| picture_for(&sub))));
        claims.insert("given_name".into(), json!(profile.given_name.clone().unwrap_or(given)));
        if let Some(f) = profile.family_name.clone().or(family) {
            claims.insert("family_name".into(), json!(f));
        }
    }
    let iat = now.timestamp();
    claims.insert("iat".into(), json!(iat));
    claims.insert("exp".into(), json!(iat + ID_TOKEN_LIFETIME_SECS));
    Value::Object(claims)
}

fn picture_for(sub: &str) -> String {
    format!("https://lh3.googleusercontent.com/a/fake-{sub}=s96-c")
}

// ---- userinfo and revocation ----

/// `GET|POST /v1/userinfo` with the access token of a sign-in.
pub async fn userinfo(shared: web::Data<Shared>, req: HttpRequest) -> HttpResponse {
    log_call(&req, "oauth2.userinfo", None);
    let unauthorized = || {
        HttpResponse::Unauthorized()
            .insert_header((
                "WWW-Authenticate",
                "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"",
            ))
            .json(json!({ "error": "invalid_request", "error_description": "Invalid Credentials" }))
    };
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned())
        .or_else(|| Params::parse(req.query_string()).get("access_token").map(str::to_owned));
    let Some(bearer) = bearer else { return unauthorized() };
    let now = shared.clock.now();
    let mut world = shared.world.lock();
    let Some(token) = world.access_tokens.get(&bearer).filter(|t| t.expires_at > now).cloned() else {
        return unauthorized();
    };
    let email = token.scopes.contains(USERINFO_EMAIL);
    let profile = token.scopes.contains(USERINFO_PROFILE);
    if !token.scopes.contains("openid") && !email && !profile {
        return unauthorized();
    }
    if let Some(call) = req.extensions_mut().get_mut::<ApiCall>() {
        call.user = Some(token.user.clone());
    }
    let user = token.user.as_str();
    let sub = world.oidc.subject(user);
    let o = world.oidc.profiles.get(user).cloned().unwrap_or_default();
    let (name, given, family) = display_name(&world, user);
    let mut out = serde_json::Map::new();
    out.insert("sub".into(), json!(sub));
    if profile {
        out.insert("name".into(), json!(o.name.clone().unwrap_or(name)));
        out.insert("given_name".into(), json!(o.given_name.clone().unwrap_or(given)));
        if let Some(f) = o.family_name.clone().or(family) {
            out.insert("family_name".into(), json!(f));
        }
        out.insert("picture".into(), json!(o.picture.clone().unwrap_or_else(|| picture_for(&sub))));
    }
    if email {
        out.insert("email".into(), json!(user));
        out.insert("email_verified".into(), json!(o.email_verified.unwrap_or(true)));
    }
    if let Some(hd) = World::domain_of(user) {
        out.insert("hd".into(), json!(hd));
    }
    HttpResponse::Ok().json(Value::Object(out))
}

/// `POST /revoke` (`token=…`): revokes an access token.
pub async fn revoke(shared: web::Data<Shared>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    log_call(&req, "oauth2.revoke", None);
    let form = Params::parse(std::str::from_utf8(&body).unwrap_or_default());
    let query = Params::parse(req.query_string());
    let token = form.get("token").or_else(|| query.get("token")).map(str::to_owned);
    let removed = token.is_some_and(|t| shared.world.lock().access_tokens.remove(&t).is_some());
    if removed {
        HttpResponse::Ok().json(json!({}))
    } else {
        HttpResponse::BadRequest()
            .json(json!({ "error": "invalid_token", "error_description": "Token expired or revoked" }))
    }
}
