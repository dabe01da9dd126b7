//! Who may use the API: the roles a token can have, the token records gwsync keeps (a digest,
//! never the secret), and the audit log's entries. Plain records; `access` decides with them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a token may do (DESIGN §4 "Who may do what"). A token has exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, every tenant.
    Operator,
    /// Everything under one tenant except deleting it.
    TenantAdmin,
    /// One tenant, read only: users, sync status, presence, contacts. What a phone system holds.
    Integration,
    /// A tenant's user signed in to the console (the tenant has `self_service`): their own
    /// status and presence, and their own profiles' trigger words. Never a token's role.
    User,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::TenantAdmin => "tenant_admin",
            Role::Integration => "integration",
            Role::User => "user",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An API token as stored: its SHA-256 digest (hex) instead of the secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// The tenant a `tenant_admin` or `integration` token belongs to; none for operators.
    pub tenant: Option<String>,
    /// SHA-256 (hex) of the secret: enough to recognise it, useless to present it.
    pub digest: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Written lazily (see `access`): may lag the last request by up to a minute.
    pub last_used_at: Option<DateTime<Utc>>,
    /// The token id of whoever made it.
    pub created_by: String,
}

/// Who acted, as the audit log names them: never the secret.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AuditActor {
    /// `admin` for the bootstrap token (GWSYNC_ADMIN_TOKEN); none when no known token was sent.
    pub token_id: Option<String>,
    pub name: Option<String>,
    pub role: Option<Role>,
}

/// One audited request: a change, or a refusal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEntry {
    /// Rises with every entry (newest has the highest); paging cursor.
    pub id: u64,
    pub at: DateTime<Utc>,
    pub actor: AuditActor,
    /// A stable name such as `user.put`, or `unknown` for a path no route matches.
    pub action: String,
    /// The method and route pattern, e.g. `PUT /api/v1/tenants/{tenant}/users/{email}`.
    pub route: Option<String>,
    pub tenant: Option<String>,
    /// What was acted on below the tenant: a user's address, a token id.
    pub target: Option<String>,
    /// The HTTP status answered; none while the request runs (or if gwsync stopped meanwhile).
    pub status: Option<u16>,
    /// The error code when the access layer refused it.
    pub code: Option<String>,
    /// A short note from the handler (e.g. `replaced`); never a secret.
    pub detail: Option<String>,
}
