//! Tenants: one customer company — a Workspace domain, where its phone system listens for
//! profile switches, and how its contacts are polled.

use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use url::Url;

use super::{Invalid, invalid, normalise_email, refused_url};
use crate::outbound::OutboundPolicy;

/// What the admin API accepts in `PUT /api/v1/tenants/{tenant}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSpec {
    pub domain: String,
    #[serde(default)]
    pub directory_admin: Option<String>,
    #[serde(default)]
    pub default_region: Option<String>,
    #[serde(default)]
    pub phone_system: Option<PhoneSystemSpec>,
    #[serde(default)]
    pub contacts: Option<ContactsSpec>,
    /// The default profiles for its users' calendar status events.
    #[serde(default)]
    pub status_events: Option<super::user::StatusEvents>,
    /// Who signs in to the console as this tenant's admins (emails in its domain).
    #[serde(default)]
    pub admins: Option<Vec<String>>,
    /// Whether each of its users may sign in to the console and edit their own trigger words.
    #[serde(default)]
    pub self_service: Option<bool>,
}

/// Most console admins a tenant may list.
pub const MAX_ADMINS: usize = 50;

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhoneSystemSpec {
    pub url: String,
    /// Standard Webhooks secret: `whsec_` + base64 of the key bytes. Left out on a tenant that
    /// has a phone system already: the stored secret stays.
    #[serde(default)]
    pub secret: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactsSpec {
    #[serde(default)]
    pub poll_interval: Option<String>,
    #[serde(default)]
    pub personal_contacts: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContactsSettings {
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    pub personal_contacts: bool,
}

impl Default for ContactsSettings {
    fn default() -> Self {
        ContactsSettings { poll_interval: Duration::from_secs(15 * 60), personal_contacts: false }
    }
}

/// A validated tenant, before its secret is sealed for storage.
#[derive(Clone)]
pub struct ValidTenant {
    pub domain: String,
    pub directory_admin: Option<String>,
    pub default_region: String,
    /// URL and the secret's key bytes (none: keep the stored secret).
    pub phone_system: Option<(Url, Option<Vec<u8>>)>,
    pub contacts: ContactsSettings,
    pub admins: Vec<String>,
    pub self_service: bool,
}

// Hand-written: the derived ones would print the webhook secret.
impl std::fmt::Debug for PhoneSystemSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL as given may carry a password (which validation refuses).
        let url = match Url::parse(&self.url) {
            Ok(u) if u.password().is_some() || !u.username().is_empty() => "[URL with credentials]",
            _ => self.url.as_str(),
        };
        f.debug_struct("PhoneSystemSpec").field("url", &url).field("secret", &"[REDACTED]").finish()
    }
}

impl std::fmt::Debug for ValidTenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidTenant")
            .field("domain", &self.domain)
            .field("directory_admin", &self.directory_admin)
            .field("default_region", &self.default_region)
            .field("phone_system", &self.phone_system.as_ref().map(|(url, _)| (url.as_str(), "[REDACTED]")))
            .field("contacts", &self.contacts)
            .field("admins", &self.admins)
            .field("self_service", &self.self_service)
            .finish()
    }
}

pub const DEFAULT_REGION: &str = "SE";

/// Tenant ids appear in URLs and keys: lower-case letters, digits and dashes, up to 63.
pub fn validate_tenant_id(id: &str) -> Result<(), Invalid> {
    let ok = !id.is_empty()
        && id.len() <= 63
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(invalid("tenant", format!("'{id}' is not a tenant id: use 1-63 lower-case letters, digits and dashes")))
    }
}

fn validate_domain(domain: &str) -> Result<String, Invalid> {
    let d = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let labels_ok = d.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    if d.len() > 253 || !d.contains('.') || !labels_ok {
        return Err(invalid("domain", format!("'{domain}' is not a domain name such as acme.se")));
    }
    Ok(d)
}

/// Decodes a Standard Webhooks secret (`whsec_<base64>`) to its key bytes.
pub fn decode_webhook_secret(secret: &str) -> Result<Vec<u8>, Invalid> {
    let field = "phone_system.secret";
    let b64 = secret.strip_prefix("whsec_").ok_or_else(|| {
        invalid(
            field,
            "must start with whsec_ followed by base64 (Standard Webhooks), e.g. whsec_ + `openssl rand -base64 32`",
        )
    })?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| invalid(field, "the part after whsec_ is not base64"))?;
    if !(16..=64).contains(&bytes.len()) {
        return Err(invalid(field, format!("must hold 16 to 64 key bytes; this one holds {}", bytes.len())));
    }
    Ok(bytes)
}

impl TenantSpec {
    /// Checks every field; the phone system's URL against `outbound` without DNS (see
    /// `ValidTenant::check_outbound` for the rest).
    pub fn validate(&self, outbound: &OutboundPolicy) -> Result<ValidTenant, Invalid> {
        let domain = validate_domain(&self.domain)?;
        let directory_admin = match &self.directory_admin {
            None => None,
            Some(a) => {
                let a = normalise_email("directory_admin", a)?;
                if super::email_domain(&a) != domain {
                    return Err(invalid("directory_admin", format!("{a} is not in the tenant's domain {domain}")));
                }
                Some(a)
            }
        };
        let default_region = match &self.default_region {
            None => DEFAULT_REGION.to_owned(),
            Some(r) => {
                let r = r.trim().to_ascii_uppercase();
                if r.len() != 2 || r.parse::<phonenumber::country::Id>().is_err() {
                    return Err(invalid(
                        "default_region",
                        format!("'{r}' is not a region code such as SE or US (ISO 3166-1 alpha-2)"),
                    ));
                }
                r
            }
        };
        let phone_system = match &self.phone_system {
            None => None,
            Some(p) => {
                let url = outbound.check(&p.url).map_err(|r| refused_url("phone_system.url", r))?;
                let secret = p.secret.as_deref().map(|s| decode_webhook_secret(s.trim())).transpose()?;
                Some((url, secret))
            }
        };
        let mut contacts = ContactsSettings::default();
        if let Some(c) = &self.contacts {
            if let Some(i) = &c.poll_interval {
                let d = humantime::parse_duration(i)
                    .map_err(|_| invalid("contacts.poll_interval", format!("'{i}' is not a duration such as 15m")))?;
                if d < Duration::from_secs(60) || d > Duration::from_secs(24 * 3600) {
                    return Err(invalid("contacts.poll_interval", "must be between 1m and 24h"));
                }
                contacts.poll_interval = d;
            }
            if let Some(p) = c.personal_contacts {
                contacts.personal_contacts = p;
            }
        }
        let mut admins = Vec::new();
        for (i, a) in self.admins.iter().flatten().enumerate() {
            let field = format!("admins[{i}]");
            let a = normalise_email(&field, a)?;
            if super::email_domain(&a) != domain {
                return Err(invalid(field, format!("{a} is not in the tenant's domain {domain}")));
            }
            if !admins.contains(&a) {
                admins.push(a);
            }
        }
        if admins.len() > MAX_ADMINS {
            return Err(invalid("admins", format!("list at most {MAX_ADMINS} admins")));
        }
        let self_service = self.self_service.unwrap_or(false);
        Ok(ValidTenant { domain, directory_admin, default_region, phone_system, contacts, admins, self_service })
    }
}

impl ValidTenant {
    /// The outbound policy's check that needs DNS: the phone system's host name must not
    /// resolve only to refused addresses.
    pub async fn check_outbound(&self, outbound: &OutboundPolicy) -> Result<(), Invalid> {
        match &self.phone_system {
            Some((url, _)) => outbound.check_resolved(url).await.map_err(|r| refused_url("phone_system.url", r)),
            None => Ok(()),
        }
    }
}

/// How a tenant is stored. The webhook secret is sealed under the master key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantRecord {
    pub id: String,
    pub domain: String,
    pub directory_admin: Option<String>,
    pub default_region: String,
    pub phone_system: Option<StoredPhoneSystem>,
    pub contacts: ContactsSettings,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// SHA-256 (hex) of the token desk phones use to fetch the phonebook exports.
    #[serde(default)]
    pub export_token_digest: Option<String>,
    /// The default for users who set no `status_events` of their own; it applies to a user only
    /// if they have the profile it names.
    #[serde(default)]
    pub status_events: super::user::StatusEvents,
    /// Who signs in to the console as its admins.
    #[serde(default)]
    pub admins: Vec<String>,
    /// Whether its users may sign in to the console to edit their own trigger words.
    #[serde(default)]
    pub self_service: bool,
}

impl TenantSpec {
    /// The tenant's default status-event mapping: well-formed names (each user is checked for
    /// the profile when the default applies to them).
    pub fn validate_status_events(&self) -> Result<super::user::StatusEvents, Invalid> {
        self.status_events.as_ref().map_or(Ok(Default::default()), super::user::StatusEvents::validated)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredPhoneSystem {
    pub url: Url,
    /// base64 of the sealed key bytes.
    pub secret_sealed: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> Result<ValidTenant, Invalid> {
        serde_json::from_value::<TenantSpec>(v).unwrap().validate(&OutboundPolicy::default())
    }

    #[test]
    fn a_full_tenant_validates() {
        let t = spec(serde_json::json!({
            "domain": "Acme.SE", "directory_admin": "IT@acme.se", "default_region": "se",
            "phone_system": {"url": "https://pbx.example/hooks", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
            "contacts": {"poll_interval": "30m", "personal_contacts": true}
        }))
        .unwrap();
        assert_eq!(
            (t.domain.as_str(), t.directory_admin.as_deref(), t.default_region.as_str()),
            ("acme.se", Some("it@acme.se"), "SE")
        );
        assert_eq!(t.contacts.poll_interval, Duration::from_secs(1800));
        assert_eq!(t.phone_system.unwrap().1.map(|k| k.len()), Some(24));
    }

    #[test]
    fn debug_output_never_shows_the_webhook_secret() {
        let spec: TenantSpec = serde_json::from_value(serde_json::json!({
            "domain": "acme.se", "phone_system": {"url": "https://pbx.example", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
        }))
        .unwrap();
        let valid = spec.validate(&OutboundPolicy::default()).unwrap();
        for text in [format!("{spec:?}"), format!("{valid:?}")] {
            assert!(!text.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") && text.contains("REDACTED"), "{text}");
        }
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            (serde_json::json!({"domain": "acme"}), "domain"),
            (serde_json::json!({"domain": "acme.se", "directory_admin": "it@other.se"}), "directory_admin"),
            (serde_json::json!({"domain": "acme.se", "default_region": "Sweden"}), "default_region"),
            (
                serde_json::json!({"domain": "acme.se", "phone_system": {"url": "http://pbx.example", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}}),
                "phone_system.url",
            ),
            (
                serde_json::json!({"domain": "acme.se", "phone_system": {"url": "https://pbx.example", "secret": "hunter2"}}),
                "phone_system.secret",
            ),
            (serde_json::json!({"domain": "acme.se", "contacts": {"poll_interval": "5s"}}), "contacts.poll_interval"),
        ];
        for (v, field) in cases {
            assert_eq!(spec(v.clone()).unwrap_err().field, field, "{v}");
        }
        for (url, code) in [
            ("https://169.254.169.254/latest", "outbound_url_refused"),
            ("https://u:hunter2@pbx.example/", "invalid_request"),
            ("not a url", "invalid_request"),
        ] {
            let v = serde_json::json!({"domain": "acme.se", "phone_system": {"url": url, "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}});
            let e = spec(v).unwrap_err();
            assert_eq!((e.field.as_str(), e.code), ("phone_system.url", code), "{url}: {e}");
            assert!(!e.message.contains("hunter2"), "{e}");
        }
        let with_password: TenantSpec = serde_json::from_value(serde_json::json!({
            "domain": "acme.se", "phone_system": {"url": "https://u:hunter2@pbx.example/", "secret": "whsec_x"}
        }))
        .unwrap();
        assert!(!format!("{with_password:?}").contains("hunter2"));
        assert!(validate_tenant_id("acme-1").is_ok());
        for bad in ["", "Acme", "a/b", "-x", &"a".repeat(64)] {
            assert!(validate_tenant_id(bad).is_err(), "{bad}");
        }
    }
}
