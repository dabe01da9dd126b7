//! Who is looking at a console page, and what they may do there: decided on every request from
//! the session and the current configuration and tenant records (DESIGN §7): operators are
//! `GWSYNC_OPERATORS` (or signed in with an operator token that is still live), a tenant's
//! admins are its `admins`, and with its `self_service` each of its users may see and edit
//! their own trigger words.

use crate::access::Actor;
use crate::app::AppState;
use crate::model::access::Role;
use crate::model::tenant::TenantRecord;
use crate::store::StoreError;

use super::session::{Session, SignedInVia};

/// What the viewer is to one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Operator,
    Admin,
    /// One of its users, with `self_service`.
    User,
}

pub struct Viewer {
    pub session: Session,
    /// An operator (by `GWSYNC_OPERATORS`, or by a live operator token).
    pub operator: bool,
}

impl Viewer {
    /// The session's viewer, or none if the session no longer stands (its operator token was
    /// revoked).
    pub async fn of(app: &AppState, session: Session) -> Result<Option<Viewer>, StoreError> {
        let operator = match &session.via {
            SignedInVia::Google => app.config.operator_emails().contains(&session.email),
            SignedInVia::Token { token_id } if token_id == crate::access::BOOTSTRAP_ID => true,
            SignedInVia::Token { token_id } => {
                let now = app.clock.now();
                match app.store.token(token_id).await? {
                    Some(t) => {
                        let live = t.revoked_at.is_none() && t.expires_at.is_none_or(|e| now < e);
                        if !(live && t.role == Role::Operator) {
                            return Ok(None);
                        }
                        true
                    }
                    None => return Ok(None),
                }
            }
        };
        Ok(Some(Viewer { session, operator }))
    }

    pub fn email(&self) -> &str {
        &self.session.email
    }

    /// Their standing in `tenant`, if any.
    pub async fn standing(&self, app: &AppState, tenant: &TenantRecord) -> Result<Option<Standing>, StoreError> {
        if self.operator {
            return Ok(Some(Standing::Operator));
        }
        if self.session.via != SignedInVia::Google {
            return Ok(None);
        }
        if tenant.admins.iter().any(|a| a == self.email()) {
            return Ok(Some(Standing::Admin));
        }
        if tenant.self_service && app.store.user(&tenant.id, self.email()).await?.is_some() {
            return Ok(Some(Standing::User));
        }
        Ok(None)
    }

    /// The tenants they may open, with their standing (every tenant for an operator).
    pub async fn tenants(&self, app: &AppState) -> Result<Vec<(TenantRecord, Standing)>, StoreError> {
        let mut out = Vec::new();
        for t in app.store.tenants().await? {
            if let Some(s) = self.standing(app, &t).await? {
                out.push((t, s));
            }
        }
        Ok(out)
    }

    /// The API actor the console acts as for them in `tenant` (none: the operator scope).
    pub fn actor(&self, tenant: Option<&str>, standing: Standing) -> Actor {
        let (token_id, name) = match &self.session.via {
            SignedInVia::Google => ("console".to_owned(), self.session.email.clone()),
            SignedInVia::Token { token_id } => (token_id.clone(), self.session.email.clone()),
        };
        let (role, tenant) = match standing {
            Standing::Operator => (Role::Operator, None),
            Standing::Admin => (Role::TenantAdmin, tenant.map(str::to_owned)),
            Standing::User => (Role::User, tenant.map(str::to_owned)),
        };
        Actor { token_id, name, role, tenant }
    }
}
