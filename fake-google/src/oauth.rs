//! The OAuth2 token endpoint (`POST /token`), JWT-bearer grant only, as a service account with
//! domain-wide delegation uses it.
//!
//! Checks run in the order a Workspace admin's mistakes surface at Google: the assertion must
//! be well formed and signed by a live key of a known service account, short-lived and current
//! (by *real* time: the client signs with its own clock), addressed to the token endpoint, for
//! well-formed scopes; the subject must exist; and the subject's domain must have delegated
//! every requested scope to the account's client id.

use std::collections::BTreeSet;

use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use rand::RngExt;
use serde_json::json;

use crate::errors::GoogleError;
use crate::jwt::Assertion;
use crate::reqlog::ApiCall;
use crate::world::{AccessToken, Shared};

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
pub const TOKEN_LIFETIME_SECS: i64 = 3599;
const MAX_ASSERTION_LIFETIME_SECS: i64 = 3600;
/// How far in the future an assertion's `iat` may lie (clients' clocks drift).
const CLOCK_SKEW_SECS: i64 = 300;

const SHORT_LIVED: &str = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.";
const UNAUTHORIZED_CLIENT: &str = "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.";

/// Audiences Google's token endpoint accepts besides its own URL: Google's client libraries put
/// the canonical endpoint into `aud` whatever the key file's `token_uri` says.
const GOOGLE_AUDIENCES: &[&str] = &[
    "https://oauth2.googleapis.com/token",
    "https://www.googleapis.com/oauth2/v4/token",
    "https://accounts.google.com/o/oauth2/token",
];

pub async fn token(shared: web::Data<Shared>, req: HttpRequest, body: web::Bytes) -> Result<HttpResponse, GoogleError> {
    req.extensions_mut().insert(ApiCall { method: "oauth2.token", user: None });
    let is_form = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(GoogleError::oauth(
            400,
            "invalid_request",
            "Invalid Content-Type: expected application/x-www-form-urlencoded",
        ));
    }
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());

    match field("grant_type") {
        Some(GRANT_TYPE) => {}
        Some("authorization_code") => return crate::oidc::exchange_code(&shared, &req, &form).await,
        Some(other) => {
            return Err(GoogleError::oauth(400, "unsupported_grant_type", &format!("Invalid grant_type: {other}")));
        }
        None => return Err(GoogleError::oauth(400, "unsupported_grant_type", "Invalid grant_type: ")),
    }
    let Some(assertion) = field("assertion") else {
        return Err(GoogleError::oauth(400, "invalid_request", "Missing required parameter: assertion"));
    };
    let bad_signature = || GoogleError::oauth(400, "invalid_grant", "Invalid JWT Signature.");
    let jwt = Assertion::parse(assertion).map_err(|_| bad_signature())?;

    // An armed fault may hold the answer (`delay_ms`), as a slow token endpoint does, without
    // holding the rest of the fake.
    let mut delay = None;
    let answer = jwt_grant(&shared, &req, &jwt, &mut delay);
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    answer
}

/// The JWT-bearer grant of a service account (with `sub`: domain-wide delegation).
fn jwt_grant(
    shared: &Shared,
    req: &HttpRequest,
    jwt: &Assertion,
    delay: &mut Option<std::time::Duration>,
) -> Result<HttpResponse, GoogleError> {
    let bad_signature = || GoogleError::oauth(400, "invalid_grant", "Invalid JWT Signature.");
    let mut world = shared.world.lock();
    let iss = jwt.claim_str("iss").unwrap_or_default().to_owned();
    let Some(account) = world.accounts.get(&iss).cloned() else {
        return Err(GoogleError::oauth(400, "invalid_grant", "Invalid grant: account not found"));
    };
    jwt.verify(&account.public_key).map_err(|_| bad_signature())?;

    let now = shared.clock.real_now().timestamp();
    let (Some(iat), Some(exp)) = (jwt.claim_i64("iat"), jwt.claim_i64("exp")) else {
        return Err(GoogleError::oauth(400, "invalid_grant", SHORT_LIVED));
    };
    if exp <= iat || exp - iat > MAX_ASSERTION_LIFETIME_SECS || exp <= now || iat > now + CLOCK_SKEW_SECS {
        return Err(GoogleError::oauth(400, "invalid_grant", SHORT_LIVED));
    }
    let own_audience = shared.token_uri();
    let aud = jwt.claim_str("aud").unwrap_or_default();
    if aud != own_audience && !GOOGLE_AUDIENCES.contains(&aud) {
        return Err(GoogleError::oauth(
            400,
            "invalid_grant",
            &format!("Invalid JWT: Failed audience check. The expected value is {own_audience}"),
        ));
    }

    let scopes: BTreeSet<String> =
        jwt.claim_str("scope").unwrap_or_default().split_whitespace().map(str::to_owned).collect();
    if scopes.is_empty() || !scopes.iter().all(|s| is_well_formed_scope(s)) {
        return Err(GoogleError::oauth(400, "invalid_scope", "Invalid OAuth scope or ID token audience provided."));
    }

    let user = match jwt.claim_str("sub") {
        Some(sub) => {
            let sub = sub.to_ascii_lowercase();
            if !world.user_exists(&sub) {
                return Err(GoogleError::oauth(400, "invalid_grant", "Invalid email or User ID"));
            }
            // Delegation is granted in the customer's Admin console, so it covers only the users
            // of the domain the service account was set up for.
            let delegated = world.delegation.get(&account.client_id);
            let same_domain = crate::world::World::domain_of(&sub).as_deref() == Some(account.domain.as_str());
            if !same_domain || !delegated.is_some_and(|d| scopes.is_subset(d)) {
                return Err(GoogleError::oauth(401, "unauthorized_client", UNAUTHORIZED_CLIENT));
            }
            sub
        }
        None => account.client_email.clone(),
    };
    if let Some(call) = req.extensions_mut().get_mut::<ApiCall>() {
        call.user = Some(user.clone());
    }
    if let Some(fault) = world.take_fault("oauth2.token", Some(&user)) {
        if fault.delay_ms > 0 {
            *delay = Some(std::time::Duration::from_millis(fault.delay_ms));
        }
        if fault.status.is_some() {
            return Err(crate::auth::fault_response(&fault, crate::params::Api::People));
        }
    }

    let access_token = new_access_token();
    world.access_tokens.insert(
        access_token.clone(),
        AccessToken {
            user,
            client_id: account.client_id.clone(),
            client_email: account.client_email.clone(),
            scopes,
            expires_at: shared.clock.now() + chrono::Duration::seconds(TOKEN_LIFETIME_SECS),
        },
    );
    Ok(HttpResponse::Ok().insert_header(("Cache-Control", "no-cache, no-store, max-age=0, must-revalidate")).json(
        json!({
            "access_token": access_token,
            "expires_in": TOKEN_LIFETIME_SECS,
            "token_type": "Bearer",
        }),
    ))
}

/// Scopes are URLs (`https://www.googleapis.com/auth/...`) or a few bare OpenID names.
fn is_well_formed_scope(s: &str) -> bool {
    matches!(s, "openid" | "email" | "profile")
        || (s.starts_with("https://") && s.len() > "https://".len() && s.chars().all(|c| c.is_ascii_graphic()))
}

/// A user's access token from a sign-in, in the shape Google gives those (`ya29.a0…`).
pub fn new_access_token_for_user() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    let tail: String = (0..180).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    format!("ya29.a0{tail}")
}

fn new_access_token() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    let tail: String = (0..160).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    format!("ya29.c.{tail}")
}
