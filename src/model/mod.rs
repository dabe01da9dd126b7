//! The admin side's data: tenants, their users with profiles and triggers, and service-account
//! key files — each with the validation the admin API applies before anything is stored; and
//! API tokens with the audit log's entries.

pub mod access;
pub mod contact;
pub mod event;
pub mod key;
pub mod key_file;
pub mod phone;
pub mod presence;
pub mod records;
pub mod tenant;
pub mod user;

pub use key::CalendarKey;

/// A validation failure: which field, and what to do about it. Becomes a 400 with `code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: String,
    pub message: String,
    /// The API error code: `invalid_request`, or `outbound_url_refused` for a URL the outbound
    /// policy refuses.
    pub code: &'static str,
}

pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid { field: field.into(), message: message.into(), code: "invalid_request" }
}

/// A URL field the outbound policy refused.
pub fn refused_url(field: &str, r: crate::outbound::Refused) -> Invalid {
    let code = match r.kind {
        crate::outbound::RefusalKind::Policy => "outbound_url_refused",
        _ => "invalid_request",
    };
    Invalid { field: field.to_owned(), message: r.message, code }
}

/// A plausible address (RFC 5322 via the `email_address` crate), lower-cased.
pub fn normalise_email(field: &str, s: &str) -> Result<String, Invalid> {
    let s = s.trim();
    if s.len() > 254 || !email_address::EmailAddress::is_valid(s) || !s.contains('@') || s.contains(' ') {
        return Err(invalid(field, format!("'{s}' is not an email address")));
    }
    Ok(s.to_lowercase())
}

/// The domain part of an address.
pub fn email_domain(email: &str) -> &str {
    email.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
}
