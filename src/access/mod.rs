//! Scoped access to the admin and integration API (DESIGN §4 "Who may do what"): the roles, API
//! tokens per tenant and role, the per-route decision (`policy`), and the audit log (`audit`).
//! The HTTP side (`http::access`) asks `Access::authenticate` who is calling, `policy::decide`
//! whether they may, and records changes and refusals here.
//!
//! Tokens: `GWSYNC_ADMIN_TOKEN` is the bootstrap operator (compared in constant time); every
//! other token is `gws_…` (256 random bits), stored only as its SHA-256 digest and looked up by
//! it (a lookup's timing can only tell something about a digest, not about a secret); the
//! stored digest is compared again in constant time. Each request reads the token record, so a
//! revocation or an expiry (on the injected clock) counts from the next request.
//!
//! "Last used" is kept in memory on every request and written to the token records by
//! `run` once a minute and at shutdown, without a flush: a crash loses at most a minute of it,
//! and no request waits for a disk write to be told it may proceed.

pub mod audit;
pub mod policy;
pub mod token;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::model::access::{AuditActor, Role, TokenRecord};
use crate::model::{Invalid, invalid};
use crate::store::StoreError;

/// How often "last used" is written and old audit entries and dead tokens are pruned.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(60);
/// Longest `expires_in` a token may be given.
const MAX_EXPIRES_IN: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The id and name the bootstrap token has in the audit log.
pub const BOOTSTRAP_ID: &str = "admin";
pub const BOOTSTRAP_NAME: &str = "GWSYNC_ADMIN_TOKEN";
/// Longest target kept in an audit entry.
const MAX_TARGET_CHARS: usize = 256;

/// Who is calling: a known, live token.
#[derive(Debug, Clone, PartialEq)]
pub struct Actor {
    pub token_id: String,
    pub name: String,
    pub role: Role,
    /// The tenant of a `tenant_admin` or `integration` token.
    pub tenant: Option<String>,
}

impl Actor {
    pub fn bootstrap() -> Actor {
        Actor { token_id: BOOTSTRAP_ID.into(), name: BOOTSTRAP_NAME.into(), role: Role::Operator, tenant: None }
    }

    pub fn audit(&self) -> AuditActor {
        AuditActor { token_id: Some(self.token_id.clone()), name: Some(self.name.clone()), role: Some(self.role) }
    }
}

impl From<&TokenRecord> for Actor {
    fn from(t: &TokenRecord) -> Self {
        Actor { token_id: t.id.clone(), name: t.name.clone(), role: t.role, tenant: t.tenant.clone() }
    }
}

/// What the `Authorization` header amounts to.
#[derive(Debug)]
pub enum Authn {
    Valid(Actor),
    /// No bearer token, or one gwsync does not know.
    Missing,
    /// A token gwsync made that is expired or revoked (or whose tenant is gone).
    Invalid(Box<TokenRecord>),
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A token to make, as the API receives it.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub name: String,
    pub role: Role,
    /// e.g. "90d"; none: until revoked.
    pub expires_in: Option<String>,
}

pub struct Access {
    app: Arc<AppState>,
    /// Token id → last use not yet written to its record.
    last_used: Mutex<HashMap<String, DateTime<Utc>>>,
    pub audit: audit::Recorder,
}

/// What the console presents to the API for the person signed in to it:
/// `Authorization: Console <assertion>`, the actor sealed with the master key for a minute.
/// Only gwsync itself can make one; it never leaves the machine (the console calls its own
/// listen address).
#[derive(serde::Serialize, serde::Deserialize)]
struct ConsoleAssertion {
    token_id: String,
    name: String,
    role: Role,
    tenant: Option<String>,
    expires_at: DateTime<Utc>,
}

const CONSOLE_SCHEME: &str = "Console";
const CONSOLE_CONTEXT: &str = "console-assertion";
const CONSOLE_ASSERTION_SECS: i64 = 60;

/// The `Authorization` header value the console sends to act as `actor`.
pub fn console_authorization(app: &AppState, actor: &Actor) -> Option<String> {
    use base64::Engine;
    let a = ConsoleAssertion {
        token_id: actor.token_id.clone(),
        name: actor.name.clone(),
        role: actor.role,
        tenant: actor.tenant.clone(),
        expires_at: app.clock.now() + chrono::Duration::seconds(CONSOLE_ASSERTION_SECS),
    };
    let sealed = app.master_key.seal(CONSOLE_CONTEXT, &serde_json::to_vec(&a).ok()?).ok()?;
    Some(format!("{CONSOLE_SCHEME} {}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed)))
}

fn console_actor(app: &AppState, header: Option<&str>) -> Option<Actor> {
    use base64::Engine;
    let (scheme, value) = header?.split_once(' ')?;
    if scheme != CONSOLE_SCHEME || value.len() > 4096 {
        return None;
    }
    let sealed = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value.trim()).ok()?;
    let plain = app.master_key.open(CONSOLE_CONTEXT, &sealed).ok()?;
    let a: ConsoleAssertion = serde_json::from_slice(plain.expose_secret()).ok()?;
    (app.clock.now() < a.expires_at).then_some(Actor {
        token_id: a.token_id,
        name: a.name,
        role: a.role,
        tenant: a.tenant,
    })
}

/// The token of `Authorization: Bearer <token>`, if that is what the header says.
fn bearer(header: Option<&str>) -> Option<&str> {
    let (scheme, token) = header?.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl Access {
    pub fn new(app: Arc<AppState>) -> Access {
        let audit = audit::Recorder::new(app.store.clone(), app.clock.clone());
        Access { app, last_used: Mutex::new(HashMap::new()), audit }
    }

    /// Who the `Authorization` header says is calling.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<Authn, StoreError> {
        if let Some(actor) = console_actor(&self.app, header) {
            return Ok(Authn::Valid(actor));
        }
        let Some(presented) = bearer(header) else { return Ok(Authn::Missing) };
        if self.app.admin_token_matches(presented) {
            return Ok(Authn::Valid(Actor::bootstrap()));
        }
        if !presented.starts_with(token::PREFIX) {
            return Ok(Authn::Missing);
        }
        let digest = token::digest(presented);
        let Some(record) = self.app.store.token_by_digest(&digest).await? else { return Ok(Authn::Missing) };
        if !bool::from(record.digest.as_bytes().ct_eq(digest.as_bytes())) {
            return Ok(Authn::Missing);
        }
        let now = self.app.clock.now();
        let tenant_gone = match &record.tenant {
            Some(t) => self.app.store.tenant(t).await?.is_none(),
            None => false,
        };
        if record.revoked_at.is_some() || record.expires_at.is_some_and(|e| now >= e) || tenant_gone {
            return Ok(Authn::Invalid(Box::new(record)));
        }
        self.last_used.lock().insert(record.id.clone(), now);
        Ok(Authn::Valid(Actor::from(&record)))
    }

    /// Makes a token for `tenant` (none: an operator token); the secret is returned this once.
    pub async fn create(
        &self,
        by: &Actor,
        tenant: Option<&str>,
        spec: NewToken,
    ) -> Result<(TokenRecord, SecretString), AccessError> {
        let name = spec.name.trim();
        if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
            return Err(invalid("name", "give the token a name of 1 to 64 characters, e.g. \"pbx\"").into());
        }
        match (tenant, spec.role) {
            (None, Role::Operator) | (Some(_), Role::TenantAdmin | Role::Integration) => {}
            (None, _) => {
                return Err(invalid(
                    "role",
                    "this endpoint makes operator tokens; make tenant_admin and integration tokens with POST /api/v1/tenants/{tenant}/tokens",
                )
                .into());
            }
            (Some(_), _) => {
                return Err(invalid(
                    "role",
                    "a tenant's token is tenant_admin or integration; operator tokens are made with POST /api/v1/tokens",
                )
                .into());
            }
        }
        let now = self.app.clock.now();
        let expires_at = match &spec.expires_in {
            None => None,
            Some(text) => {
                let d = humantime::parse_duration(text)
                    .ok()
                    .filter(|d| *d >= Duration::from_secs(60) && *d <= MAX_EXPIRES_IN)
                    .ok_or_else(|| invalid("expires_in", "give a duration from 1m to 3650d, such as \"90d\""))?;
                Some(now + chrono::Duration::from_std(d).map_err(|_| invalid("expires_in", "too long"))?)
            }
        };
        let secret = token::generate();
        let record = TokenRecord {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_owned(),
            role: spec.role,
            tenant: tenant.map(str::to_owned),
            digest: token::digest(secret.expose_secret()),
            created_at: now,
            expires_at,
            revoked_at: None,
            last_used_at: None,
            created_by: by.token_id.clone(),
        };
        self.app.store.put_token(&record).await?;
        tracing::info!(token = %record.id, name = %record.name, role = %record.role, tenant = ?record.tenant, by = %by.token_id, "token created");
        Ok((record, secret))
    }

    /// Tokens (of `tenant`, or all), oldest first, with their latest use.
    pub async fn tokens(&self, tenant: Option<&str>) -> Result<Vec<TokenRecord>, StoreError> {
        let pending = self.last_used.lock().clone();
        let mut tokens: Vec<TokenRecord> = self
            .app
            .store
            .tokens()
            .await?
            .into_iter()
            .filter(|t| tenant.is_none() || t.tenant.as_deref() == tenant)
            .map(|mut t| {
                if let Some(at) = pending.get(&t.id) {
                    t.last_used_at = t.last_used_at.max(Some(*at));
                }
                t
            })
            .collect();
        tokens.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(tokens)
    }

    /// Revokes a token (of `tenant`, if given) from its next use on. None if there is none.
    pub async fn revoke(&self, id: &str, tenant: Option<&str>) -> Result<Option<TokenRecord>, StoreError> {
        match self.app.store.token(id).await? {
            Some(t) if tenant.is_none() || t.tenant.as_deref() == tenant => {}
            _ => return Ok(None),
        }
        let now = self.app.clock.now();
        let revoked = self
            .app
            .store
            .update_token(id, &|t| {
                t.revoked_at.get_or_insert(now);
            })
            .await?;
        if let Some(t) = &revoked {
            tracing::info!(token = %t.id, name = %t.name, tenant = ?t.tenant, "token revoked");
        }
        Ok(revoked)
    }

    /// The audit target for a route's parameters (all but the tenant): a value that looks like a
    /// secret (a pasted token) is replaced, and long ones are cut.
    pub fn target(&self, params: &[(String, String)]) -> Option<String> {
        let parts: Vec<String> =
            params.iter().filter(|(name, _)| name != "tenant").map(|(_, v)| self.redacted(v)).collect();
        if parts.is_empty() {
            return None;
        }
        let joined = parts.join("/");
        Some(if joined.chars().count() > MAX_TARGET_CHARS {
            format!("{}…", joined.chars().take(MAX_TARGET_CHARS).collect::<String>())
        } else {
            joined
        })
    }

    /// `value`, unless it is (or may be) a secret.
    pub fn redacted(&self, value: &str) -> String {
        if token::looks_like_secret(value) || self.app.admin_token_matches(value) {
            "(redacted)".into()
        } else {
            value.to_owned()
        }
    }

    /// Writes the pending "last used" times to the token records (without a flush).
    pub async fn persist_last_used(&self) {
        let pending = std::mem::take(&mut *self.last_used.lock());
        for (id, at) in pending {
            let change = move |t: &mut crate::model::access::TokenRecord| {
                if t.last_used_at.is_none_or(|l| l < at) {
                    t.last_used_at = Some(at);
                }
            };
            if let Err(e) = self.app.store.update_token(&id, &change).await {
                tracing::warn!(token = %id, error = %e, "could not record when a token was last used");
            }
        }
    }

    /// Prunes audit entries older than `audit.retention`, and tokens revoked or expired longer
    /// ago than that.
    pub async fn prune(&self) -> Result<(usize, usize), StoreError> {
        let retention = self.app.config.audit.retention;
        let entries = self.audit.prune(retention).await?;
        let cutoff =
            chrono::Duration::from_std(retention).ok().and_then(|r| self.app.clock.now().checked_sub_signed(r));
        let mut tokens = 0;
        if let Some(cutoff) = cutoff {
            for t in self.app.store.tokens().await? {
                if t.revoked_at.or(t.expires_at).is_some_and(|at| at < cutoff) {
                    self.app.store.delete_token(&t.id).await?;
                    tokens += 1;
                }
            }
        }
        Ok((entries, tokens))
    }

    /// Housekeeping until `cancel`: "last used" written, old entries and dead tokens pruned.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            self.persist_last_used().await;
            match self.prune().await {
                Ok((0, 0)) => {}
                Ok((entries, tokens)) => tracing::info!(entries, tokens, "pruned the audit log and dead tokens"),
                Err(e) => tracing::warn!(error = %e, "pruning the audit log failed; retrying later"),
            }
            tokio::select! {
                () = cancel.cancelled() => break,
                () = self.app.clock.sleep(HOUSEKEEPING_EVERY) => {}
            }
        }
        self.persist_last_used().await;
    }
}
