//! Console sessions and the sign-in in progress, as cookies sealed with the master key: no
//! session table, so any replica serves any request. A session names who signed in and how;
//! what they may do is decided again on every request from the current configuration and
//! tenant records (an admin taken off a tenant's list loses it at the next click), and an
//! operator token's session ends when the token is revoked.
//!
//! The session cookie is `__Host-` prefixed, HttpOnly, Secure and SameSite=Strict. The
//! sign-in cookie (state, nonce and PKCE verifier between the redirect to the provider and its
//! callback) must be SameSite=Lax: the callback is a top-level navigation from the provider's
//! site, on which a Strict cookie would not be sent. It lives ten minutes and is removed by the
//! callback.

use actix_web::HttpRequest;
use actix_web::cookie::{Cookie, SameSite, time};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::secrets::MasterKey;

pub const SESSION_COOKIE: &str = "__Host-gwsync-session";
pub const SIGNIN_COOKIE: &str = "__Host-gwsync-signin";
const SESSION_CONTEXT: &str = "console-session";
const SIGNIN_CONTEXT: &str = "console-signin";
/// How long a sign-in at the provider may take.
pub const SIGNIN_TTL_SECS: i64 = 600;
/// Largest cookie value read (a sealed session is a few hundred bytes).
const MAX_COOKIE_CHARS: usize = 4096;

/// How the person signed in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SignedInVia {
    /// Sign in with Google: the verified email of the ID token.
    Google,
    /// An operator token (its id; the secret is not kept).
    Token { token_id: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    /// Lower-cased email (Google), or the token's name.
    pub email: String,
    pub name: Option<String>,
    pub via: SignedInVia,
    /// The session's CSRF token: every form carries it.
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
}

/// A sign-in under way at the provider.
#[derive(Serialize, Deserialize)]
pub struct Signin {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub expires_at: DateTime<Utc>,
}

pub fn random_token() -> String {
    use rand::Rng;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn seal<T: Serialize>(key: &MasterKey, context: &str, value: &T) -> Option<String> {
    let json = serde_json::to_vec(value).ok()?;
    key.seal(context, &json).ok().map(|s| URL_SAFE_NO_PAD.encode(s))
}

fn open<T: for<'de> Deserialize<'de>>(key: &MasterKey, context: &str, text: &str) -> Option<T> {
    use secrecy::ExposeSecret;
    if text.len() > MAX_COOKIE_CHARS {
        return None;
    }
    let sealed = URL_SAFE_NO_PAD.decode(text).ok()?;
    let plain = key.open(context, &sealed).ok()?;
    serde_json::from_slice(plain.expose_secret()).ok()
}

fn cookie(name: &'static str, value: String, same_site: SameSite, max_age_secs: i64) -> Cookie<'static> {
    Cookie::build(name, value)
        .path("/")
        .http_only(true)
        .secure(true)
        .same_site(same_site)
        .max_age(time::Duration::seconds(max_age_secs))
        .finish()
}

/// A cookie that removes `name`.
pub fn removal(name: &'static str) -> Cookie<'static> {
    let mut c = cookie(name, String::new(), SameSite::Strict, 0);
    c.make_removal();
    c
}

impl Session {
    pub fn new(email: String, name: Option<String>, via: SignedInVia, expires_at: DateTime<Utc>) -> Session {
        Session { email, name, via, csrf: random_token(), expires_at }
    }

    pub fn cookie(&self, key: &MasterKey, now: DateTime<Utc>) -> Option<Cookie<'static>> {
        let value = seal(key, SESSION_CONTEXT, self)?;
        Some(cookie(SESSION_COOKIE, value, SameSite::Strict, (self.expires_at - now).num_seconds().max(0)))
    }

    /// The request's live session, if it has one.
    pub fn from_request(req: &HttpRequest, key: &MasterKey, now: DateTime<Utc>) -> Option<Session> {
        let c = req.cookie(SESSION_COOKIE)?;
        let s: Session = open(key, SESSION_CONTEXT, c.value())?;
        (now < s.expires_at).then_some(s)
    }

    /// Whether a form's `csrf` field is this session's token (constant time).
    pub fn csrf_matches(&self, presented: &str) -> bool {
        self.csrf.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

impl Signin {
    pub fn cookie(&self, key: &MasterKey) -> Option<Cookie<'static>> {
        Some(cookie(SIGNIN_COOKIE, seal(key, SIGNIN_CONTEXT, self)?, SameSite::Lax, SIGNIN_TTL_SECS))
    }

    pub fn from_request(req: &HttpRequest, key: &MasterKey, now: DateTime<Utc>) -> Option<Signin> {
        let c = req.cookie(SIGNIN_COOKIE)?;
        let s: Signin = open(key, SIGNIN_CONTEXT, c.value())?;
        (now < s.expires_at).then_some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_survives_its_cookie_and_nothing_else_opens_it() {
        let key = MasterKey::generate().expect("key");
        let other = MasterKey::generate().expect("key");
        let now = Utc::now();
        let s = Session::new("a@acme.se".into(), None, SignedInVia::Google, now + chrono::Duration::hours(1));
        let value = seal(&key, SESSION_CONTEXT, &s).expect("sealed");
        let back: Session = open(&key, SESSION_CONTEXT, &value).expect("opens");
        assert_eq!(back.email, "a@acme.se");
        assert!(back.csrf_matches(&s.csrf));
        assert!(!back.csrf_matches("forged"));
        assert!(open::<Session>(&other, SESSION_CONTEXT, &value).is_none(), "another key");
        assert!(open::<Session>(&key, SIGNIN_CONTEXT, &value).is_none(), "a sign-in cookie is not a session");
        let mut tampered = value.clone().into_bytes();
        tampered[10] ^= 1;
        assert!(open::<Session>(&key, SESSION_CONTEXT, &String::from_utf8_lossy(&tampered)).is_none());
    }
}
