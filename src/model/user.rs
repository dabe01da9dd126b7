//! Phone users: a Google address (the "Google alias"), the phone system's own id, and the
//! ordered profiles whose trigger words switch them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Invalid, email_domain, invalid, normalise_email};

pub const MAX_PROFILES: usize = 32;
pub const MAX_TRIGGERS_PER_PROFILE: usize = 64;
pub const MAX_TRIGGER_CHARS: usize = 100;
pub const MAX_NAME_CHARS: usize = 64;
pub const MAX_EXTERNAL_ID_CHARS: usize = 128;

/// What the admin API accepts in `PUT /api/v1/tenants/{tenant}/users/{email}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub profiles: Vec<Profile>,
}

/// A profile of the phone system; earlier in the list = higher priority.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    #[serde(default)]
    pub triggers: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserRecord {
    pub tenant: String,
    pub email: String,
    pub external_id: Option<String>,
    pub profiles: Vec<Profile>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Validates the address in the URL against the tenant's domain.
pub fn validate_email(email: &str, tenant_domain: &str) -> Result<String, Invalid> {
    let e = normalise_email("email", email)?;
    if email_domain(&e) != tenant_domain {
        return Err(invalid("email", format!("{e} is not in the tenant's domain {tenant_domain}")));
    }
    Ok(e)
}

fn validate_trigger(field: &str, t: &str) -> Result<String, Invalid> {
    let t = t.trim();
    let chars = t.chars().count();
    if chars == 0 {
        return Err(invalid(field, "a trigger cannot be empty"));
    }
    if chars > MAX_TRIGGER_CHARS {
        return Err(invalid(
            field,
            format!("a trigger is at most {MAX_TRIGGER_CHARS} characters; this one has {chars}"),
        ));
    }
    let core = t.trim_matches('*');
    if core.contains('*') {
        return Err(invalid(field, format!("'{t}': * may only stand at the start or end of a trigger")));
    }
    if !core.chars().any(char::is_alphanumeric) {
        return Err(invalid(field, format!("'{t}' has no letters or digits to match")));
    }
    if t.chars().any(char::is_control) {
        return Err(invalid(field, "a trigger cannot hold control characters"));
    }
    Ok(t.to_owned())
}

impl UserSpec {
    /// Checks external id, profile names (unique, case-insensitively) and triggers.
    pub fn validate(&self) -> Result<(Option<String>, Vec<Profile>), Invalid> {
        let external_id = match &self.external_id {
            None => None,
            Some(x) => {
                let x = x.trim();
                if x.is_empty() || x.chars().count() > MAX_EXTERNAL_ID_CHARS || x.chars().any(char::is_control) {
                    return Err(invalid(
                        "external_id",
                        format!("must be 1-{MAX_EXTERNAL_ID_CHARS} printable characters"),
                    ));
                }
                Some(x.to_owned())
            }
        };
        if self.profiles.len() > MAX_PROFILES {
            return Err(invalid("profiles", format!("at most {MAX_PROFILES} profiles")));
        }
        let mut seen = std::collections::HashSet::new();
        let mut profiles = Vec::with_capacity(self.profiles.len());
        for (i, p) in self.profiles.iter().enumerate() {
            let name = p.name.trim();
            let field = format!("profiles[{i}].name");
            if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
                return Err(invalid(field, format!("a profile name is 1-{MAX_NAME_CHARS} printable characters")));
            }
            if !seen.insert(name.to_lowercase()) {
                return Err(invalid(field, format!("profile '{name}' is listed twice")));
            }
            if p.triggers.len() > MAX_TRIGGERS_PER_PROFILE {
                return Err(invalid(
                    format!("profiles[{i}].triggers"),
                    format!("at most {MAX_TRIGGERS_PER_PROFILE} triggers per profile"),
                ));
            }
            let mut triggers = Vec::with_capacity(p.triggers.len());
            let mut seen_triggers = std::collections::HashSet::new();
            for (j, t) in p.triggers.iter().enumerate() {
                let t = validate_trigger(&format!("profiles[{i}].triggers[{j}]"), t)?;
                if seen_triggers.insert(t.to_lowercase()) {
                    triggers.push(t);
                }
            }
            profiles.push(Profile { name: name.to_owned(), triggers });
        }
        Ok((external_id, profiles))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn validate(v: serde_json::Value) -> Result<(Option<String>, Vec<Profile>), Invalid> {
        serde_json::from_value::<UserSpec>(v).unwrap().validate()
    }

    #[test]
    fn profiles_keep_their_order_and_triggers_are_tidied() {
        let (x, p) = validate(json!({"external_id": " 1042 ", "profiles": [
            {"name": "Lunch", "triggers": ["lunch", " Lunch ", "*möte"]}, {"name": "Semester", "triggers": []}
        ]}))
        .unwrap();
        assert_eq!(x.as_deref(), Some("1042"));
        assert_eq!(p[0].triggers, ["lunch", "*möte"], "duplicates (case-insensitive) collapse");
        assert_eq!(p[1].name, "Semester");
    }

    #[test]
    fn bad_users_name_the_field() {
        let long = "x".repeat(101);
        let cases = [
            (json!({"profiles": [{"name": "Lunch"}, {"name": "LUNCH"}]}), "profiles[1].name"),
            (json!({"profiles": [{"name": " "}]}), "profiles[0].name"),
            (json!({"profiles": [{"name": "L", "triggers": [""]}]}), "profiles[0].triggers[0]"),
            (json!({"profiles": [{"name": "L", "triggers": [long]}]}), "profiles[0].triggers[0]"),
            (json!({"profiles": [{"name": "L", "triggers": ["lu*nch"]}]}), "profiles[0].triggers[0]"),
            (json!({"profiles": [{"name": "L", "triggers": ["**"]}]}), "profiles[0].triggers[0]"),
            (json!({"external_id": ""}), "external_id"),
        ];
        for (v, field) in cases {
            assert_eq!(validate(v.clone()).unwrap_err().field, field, "{v}");
        }
        assert_eq!(validate_email("Alice@Acme.se", "acme.se").unwrap(), "alice@acme.se");
        assert_eq!(validate_email("alice@other.se", "acme.se").unwrap_err().field, "email");
        assert_eq!(validate_email("not an email", "acme.se").unwrap_err().field, "email");
    }
}
