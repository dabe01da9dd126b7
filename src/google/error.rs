//! Google's failures, typed by what gwsync does next (DESIGN §6): sign in again, back off, run
//! a full sync, or stop and tell the admin what to fix. Every variant carries a hint a
//! Workspace admin can act on; none carries a token or a key.

use std::time::Duration;

use serde_json::Value;

use super::Scope;

/// The fix when the directory answers 403: the admin switched directory sharing off.
pub const DIRECTORY_SHARING_FIX: &str = "In the Admin console › Directory › Directory settings › Sharing settings, turn on External Directory Sharing with \"Organization data and authenticated user basic profile fields\" (it can take up to 24 hours to apply)";

/// Failures of the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// `unauthorized_client`: delegation missing, or a requested scope not granted.
    #[error("domain-wide delegation does not grant {scope} to client ID {client_id}")]
    DelegationMissing { client_id: String, scope: &'static str },
    /// `invalid_grant` "Invalid email or User ID": the Google alias is not a Workspace user.
    #[error("{user} is not a user of the Google Workspace domain")]
    UnknownUser { user: String },
    /// Any other `invalid_grant`: a revoked or deleted key, a clock far off.
    #[error("Google refused the service-account key: {description}")]
    KeyRejected { description: String },
    /// The token endpoint could not be reached or failed on its side.
    #[error("the token endpoint is unavailable: {0}")]
    Transient(String),
    /// The key's `token_uri` is refused by the outbound policy (`GWSYNC_OUTBOUND_ALLOW`).
    #[error("the key file's token_uri is refused: {reason}")]
    TokenUriRefused { reason: String },
}

impl AuthError {
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::DelegationMissing { .. } => "delegation_missing",
            AuthError::UnknownUser { .. } => "unknown_google_user",
            AuthError::KeyRejected { .. } => "key_rejected",
            AuthError::Transient(_) => "google_unavailable",
            AuthError::TokenUriRefused { .. } => "token_uri_refused",
        }
    }

    pub fn hint(&self) -> String {
        match self {
            AuthError::DelegationMissing { client_id, .. } => format!(
                "In the Admin console (Security › Access and data control › API controls › Manage Domain Wide Delegation), grant domain-wide delegation to client ID {client_id} for {}",
                Scope::delegation_list()
            ),
            AuthError::UnknownUser { user } => {
                format!("{user} is not a user of the Workspace domain: check the Google alias for typos, or add the user in Google Workspace")
            }
            AuthError::KeyRejected { .. } => {
                "Upload a current JSON key of the service account (the key may have been deleted or the account removed), and check this server's clock".into()
            }
            AuthError::Transient(_) => "Google's token endpoint is unavailable; gwsync retries with backoff".into(),
            AuthError::TokenUriRefused { .. } => "Upload the service account's JSON key as Google's console saved it (its token_uri is https://oauth2.googleapis.com/token); a token endpoint on a private network must be listed in GWSYNC_OUTBOUND_ALLOW by the operator".into(),
        }
    }

    /// Whether retrying without anything changing can help.
    pub fn is_transient(&self) -> bool {
        matches!(self, AuthError::Transient(_))
    }
}

/// Failures of Calendar and People calls.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("401: the access token was refused")]
    Unauthorized,
    #[error("{api} is not enabled in Cloud project {project}")]
    ApiDisabled { api: String, project: String, link: String },
    #[error("the token lacks a scope this call needs")]
    InsufficientScopes,
    #[error("rate limited by Google")]
    RateLimited { retry_after: Option<Duration> },
    #[error("403: {message}")]
    Forbidden { message: String },
    #[error("404: not found")]
    NotFound,
    #[error("410: the sync token is no longer valid; a full sync is required")]
    FullSyncRequired,
    #[error("410: {message}")]
    Gone { message: String },
    #[error("the People sync token expired; a full sync is required")]
    ExpiredSyncToken,
    #[error("400: {message}")]
    BadRequest { message: String },
    #[error("Google answered {status}")]
    Transient { status: u16, retry_after: Option<Duration> },
    #[error("network: {0}")]
    Network(String),
    #[error("unexpected response: {0}")]
    Decode(String),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "google_unauthorized",
            ApiError::ApiDisabled { .. } => "api_disabled",
            ApiError::InsufficientScopes => "insufficient_scopes",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::NotFound => "not_found",
            ApiError::FullSyncRequired => "full_sync_required",
            ApiError::Gone { .. } => "gone",
            ApiError::ExpiredSyncToken => "expired_sync_token",
            ApiError::BadRequest { .. } => "bad_request",
            ApiError::Transient { .. } => "google_unavailable",
            ApiError::Network(_) => "network",
            ApiError::Decode(_) => "bad_response",
        }
    }

    pub fn hint(&self) -> String {
        match self {
            ApiError::ApiDisabled { api, project, link } => {
                format!(
                    "Enable the {api} in Google Cloud project {project}: {link} (it can take a few minutes to take effect)"
                )
            }
            ApiError::InsufficientScopes => format!(
                "Grant the service account's client ID these scopes in the Admin console: {}",
                Scope::delegation_list()
            ),
            ApiError::RateLimited { .. } => "Google is rate limiting this project; gwsync backs off and retries".into(),
            ApiError::Transient { .. } | ApiError::Network(_) => {
                "Google is unavailable; gwsync retries with backoff".into()
            }
            ApiError::Unauthorized => "Google refused the access token; gwsync signs in again".into(),
            other => other.to_string(),
        }
    }

    /// Whether waiting and retrying can help.
    pub fn is_transient(&self) -> bool {
        matches!(self, ApiError::RateLimited { .. } | ApiError::Transient { .. } | ApiError::Network(_))
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited { retry_after } | ApiError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Classifies an error response by status, Calendar's `errors[].reason`, google.rpc's
    /// `details[].reason`, and `Retry-After`.
    pub fn from_response(status: u16, body: &[u8], retry_after: Option<Duration>) -> ApiError {
        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let err = &v["error"];
        let message = err["message"].as_str().unwrap_or("").to_owned();
        let mut reasons: Vec<String> = Vec::new();
        if let Some(errors) = err["errors"].as_array() {
            reasons.extend(errors.iter().filter_map(|e| e["reason"].as_str().map(str::to_owned)));
        }
        let mut service_metadata = None;
        if let Some(details) = err["details"].as_array() {
            for d in details {
                if let Some(r) = d["reason"].as_str() {
                    reasons.push(r.to_owned());
                    if r == "SERVICE_DISABLED" {
                        service_metadata = Some(d["metadata"].clone());
                    }
                }
            }
        }
        let has = |r: &str| reasons.iter().any(|x| x == r);
        match status {
            401 => ApiError::Unauthorized,
            400 if has("EXPIRED_SYNC_TOKEN") => ApiError::ExpiredSyncToken,
            400 => ApiError::BadRequest { message },
            403 | 429 if has("accessNotConfigured") || has("SERVICE_DISABLED") => {
                let meta = service_metadata.unwrap_or(Value::Null);
                let service = meta["service"].as_str().unwrap_or("");
                let api = match service {
                    "people.googleapis.com" => "People API".to_owned(),
                    "calendar-json.googleapis.com" => "Google Calendar API".to_owned(),
                    _ if message.contains("People API") => "People API".to_owned(),
                    _ => "Google Calendar API".to_owned(),
                };
                let project = meta["consumer"]
                    .as_str()
                    .map(|c| c.trim_start_matches("projects/").to_owned())
                    .unwrap_or_else(|| "(see the message)".into());
                let link = meta["activationUrl"].as_str().map(str::to_owned).unwrap_or_else(|| {
                    format!("https://console.developers.google.com/apis/api/{service}/overview?project={project}")
                });
                ApiError::ApiDisabled { api, project, link }
            }
            403 if has("insufficientPermissions") || has("ACCESS_TOKEN_SCOPE_INSUFFICIENT") => {
                ApiError::InsufficientScopes
            }
            403 | 429
                if status == 429
                    || has("rateLimitExceeded")
                    || has("userRateLimitExceeded")
                    || has("quotaExceeded")
                    || has("RATE_LIMIT_EXCEEDED") =>
            {
                ApiError::RateLimited { retry_after }
            }
            403 => ApiError::Forbidden { message },
            404 => ApiError::NotFound,
            410 if has("fullSyncRequired") || has("updatedMinTooLongAgo") => ApiError::FullSyncRequired,
            410 => ApiError::Gone { message },
            500..=599 => ApiError::Transient { status, retry_after },
            _ => ApiError::BadRequest { message: format!("HTTP {status}: {message}") },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn googles_bodies_classify_by_what_to_do_next() {
        let gone = br#"{"error":{"errors":[{"domain":"calendar","reason":"fullSyncRequired","message":"x"}],"code":410,"message":"x"}}"#;
        assert_eq!(ApiError::from_response(410, gone, None), ApiError::FullSyncRequired);
        let expired = br#"{"error":{"code":400,"message":"Sync token is expired.","status":"FAILED_PRECONDITION","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"EXPIRED_SYNC_TOKEN","domain":"people.googleapis.com"}]}}"#;
        assert_eq!(ApiError::from_response(400, expired, None), ApiError::ExpiredSyncToken);
        let rate = br#"{"error":{"errors":[{"domain":"usageLimits","reason":"rateLimitExceeded"}],"code":403,"message":"Rate Limit Exceeded"}}"#;
        assert_eq!(
            ApiError::from_response(403, rate, Some(Duration::from_secs(3))),
            ApiError::RateLimited { retry_after: Some(Duration::from_secs(3)) }
        );
        assert!(matches!(ApiError::from_response(502, b"<html>", None), ApiError::Transient { status: 502, .. }));
        let disabled = br#"{"error":{"code":403,"message":"People API has not been used in project 42 before","status":"PERMISSION_DENIED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"SERVICE_DISABLED","domain":"googleapis.com","metadata":{"consumer":"projects/42","service":"people.googleapis.com"}}]}}"#;
        let e = ApiError::from_response(403, disabled, None);
        assert!(
            matches!(&e, ApiError::ApiDisabled { api, project, .. } if api == "People API" && project == "42"),
            "{e:?}"
        );
        assert!(e.hint().contains("people.googleapis.com"));
        assert_eq!(ApiError::from_response(403, br#"{"error":{"code":403,"message":"The caller does not have permission","status":"PERMISSION_DENIED"}}"#, None), ApiError::Forbidden { message: "The caller does not have permission".into() });
    }
}
