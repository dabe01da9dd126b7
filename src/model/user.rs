//! Phone users: a Google address (the "Google alias"), the phone system's own id, the ordered
//! profiles whose trigger words switch them, and which profiles Google's calendar status events
//! (out of office, focus time) switch them to — their own choice or their tenant's default.

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
    #[serde(default)]
    pub status_events: Option<StatusEvents>,
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
    /// The user's own mapping; where it leaves a status unset, the tenant's default applies.
    #[serde(default)]
    pub status_events: StatusEvents,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Which profile each of Google's calendar status events activates (DESIGN §4 "Calendar status
/// events"), on a user or, as the default for its users, on a tenant:
/// `{"out_of_office": "Semester", "focus_time": "Stör ej"}`, either optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StatusEvents {
    #[serde(default)]
    pub out_of_office: Option<String>,
    #[serde(default)]
    pub focus_time: Option<String>,
}

/// The status events a mapping covers: its field and Google's `eventType`.
pub const STATUS_EVENT_TYPES: [(&str, &str); 2] = [("out_of_office", "outOfOffice"), ("focus_time", "focusTime")];

impl StatusEvents {
    /// The profile named for a status field (`out_of_office`, `focus_time`).
    pub fn get(&self, field: &str) -> Option<&str> {
        match field {
            "out_of_office" => self.out_of_office.as_deref(),
            "focus_time" => self.focus_time.as_deref(),
            _ => None,
        }
    }

    fn set(&mut self, field: &str, profile: Option<String>) {
        match field {
            "out_of_office" => self.out_of_office = profile,
            "focus_time" => self.focus_time = profile,
            _ => {}
        }
    }

    /// The profile named for one of Google's event types (`outOfOffice`, `focusTime`).
    pub fn for_event_type(&self, event_type: &str) -> Option<&str> {
        STATUS_EVENT_TYPES.iter().find(|(_, t)| *t == event_type).and_then(|(field, _)| self.get(field))
    }

    /// A tenant's default: the names are well-formed (whether a user has them is decided for
    /// each user, when the default applies).
    pub fn validated(&self) -> Result<StatusEvents, Invalid> {
        let mut out = StatusEvents::default();
        for (field, _) in STATUS_EVENT_TYPES {
            if let Some(name) = self.get(field) {
                out.set(field, Some(profile_name(&format!("status_events.{field}"), name)?));
            }
        }
        Ok(out)
    }

    /// A user's own: each name must be one of `profiles` (in any case; kept as the profile
    /// spells it).
    pub fn validated_for(&self, profiles: &[Profile]) -> Result<StatusEvents, Invalid> {
        let mut out = StatusEvents::default();
        for (key, _) in STATUS_EVENT_TYPES {
            let Some(name) = self.get(key) else { continue };
            let field = format!("status_events.{key}");
            let name = profile_name(&field, name)?;
            let Some(p) = find_profile(profiles, &name) else {
                let known: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
                let known = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
                return Err(invalid(field, format!("'{name}' is not one of the user's profiles ({known})")));
            };
            out.set(key, Some(p.name.clone()));
        }
        Ok(out)
    }
}

/// A profile by name, case-insensitively (names are unique that way).
fn find_profile<'p>(profiles: &'p [Profile], name: &str) -> Option<&'p Profile> {
    let lower = name.to_lowercase();
    profiles.iter().find(|p| p.name.to_lowercase() == lower)
}

fn profile_name(field: &str, name: &str) -> Result<String, Invalid> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(invalid(field, format!("a profile name is 1-{MAX_NAME_CHARS} printable characters")));
    }
    Ok(name.to_owned())
}

/// Who chose a status event's profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SetBy {
    User,
    Tenant,
}

/// A status event's profile in effect for a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppliedStatus {
    pub profile: String,
    pub set_by: SetBy,
}

/// A tenant default that does not apply to a user, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotApplied {
    pub status: &'static str,
    pub profile: String,
    pub reason: String,
}

/// What a user's status events switch to: their own choice, else the tenant's default if they
/// have that profile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EffectiveStatusEvents {
    pub mapping: StatusEvents,
    pub applied: Vec<(&'static str, AppliedStatus)>,
    pub not_applied: Vec<NotApplied>,
}

impl EffectiveStatusEvents {
    pub fn of(user: &UserRecord, tenant_default: Option<&StatusEvents>) -> EffectiveStatusEvents {
        let mut out = EffectiveStatusEvents::default();
        for (field, _) in STATUS_EVENT_TYPES {
            let chosen = match (user.status_events.get(field), tenant_default.and_then(|t| t.get(field))) {
                (Some(own), _) => find_profile(&user.profiles, own).map(|p| (p.name.clone(), SetBy::User)),
                (None, Some(default)) => match find_profile(&user.profiles, default) {
                    Some(p) => Some((p.name.clone(), SetBy::Tenant)),
                    None => {
                        out.not_applied.push(NotApplied {
                            status: field,
                            profile: default.to_owned(),
                            reason: format!(
                                "the tenant's default names the profile '{default}', which {} does not have: add that profile to the user or set status_events.{field} on the user",
                                user.email
                            ),
                        });
                        None
                    }
                },
                (None, None) => None,
            };
            if let Some((profile, set_by)) = chosen {
                out.mapping.set(field, Some(profile.clone()));
                out.applied.push((field, AppliedStatus { profile, set_by }));
            }
        }
        out
    }
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
    /// The user's own status-event mapping, against the profiles `validate` returned.
    pub fn validate_status_events(&self, profiles: &[Profile]) -> Result<StatusEvents, Invalid> {
        self.status_events.as_ref().map_or(Ok(StatusEvents::default()), |s| s.validated_for(profiles))
    }

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

    fn user(profiles: &[&str], own: StatusEvents) -> UserRecord {
        UserRecord {
            tenant: "acme".into(),
            email: "alice@acme.se".into(),
            external_id: None,
            profiles: profiles.iter().map(|n| Profile { name: n.to_string(), triggers: vec![] }).collect(),
            status_events: own,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn a_users_status_events_name_their_own_profiles() {
        let spec: UserSpec = serde_json::from_value(json!({
            "profiles": [{"name": "Semester"}, {"name": "Stör ej"}],
            "status_events": {"out_of_office": " semester ", "focus_time": "Stör ej"}
        }))
        .unwrap();
        let (_, profiles) = spec.validate().unwrap();
        let s = spec.validate_status_events(&profiles).unwrap();
        assert_eq!((s.out_of_office.as_deref(), s.focus_time.as_deref()), (Some("Semester"), Some("Stör ej")));
        let bad: UserSpec =
            serde_json::from_value(json!({"profiles": [{"name": "Lunch"}], "status_events": {"focus_time": "Fokus"}}))
                .unwrap();
        let e = bad.validate_status_events(&bad.validate().unwrap().1).unwrap_err();
        assert_eq!(e.field, "status_events.focus_time");
        assert!(e.message.contains("'Fokus'") && e.message.contains("Lunch"), "{}", e.message);
        assert!(serde_json::from_value::<UserSpec>(json!({"status_events": {"outOfOffice": "x"}})).is_err());
    }

    #[test]
    fn a_tenant_default_needs_only_well_formed_names() {
        let ok = StatusEvents { out_of_office: Some(" Semester ".into()), focus_time: None }.validated().unwrap();
        assert_eq!(ok.out_of_office.as_deref(), Some("Semester"));
        let bad = StatusEvents { out_of_office: None, focus_time: Some("".into()) }.validated().unwrap_err();
        assert_eq!(bad.field, "status_events.focus_time");
    }

    #[test]
    fn a_tenant_default_applies_only_to_users_with_that_profile() {
        let default = StatusEvents { out_of_office: Some("semester".into()), focus_time: Some("Fokus".into()) };
        let e = EffectiveStatusEvents::of(&user(&["Semester", "Lunch"], StatusEvents::default()), Some(&default));
        assert_eq!(e.mapping, StatusEvents { out_of_office: Some("Semester".into()), focus_time: None });
        assert_eq!(e.applied, [("out_of_office", AppliedStatus { profile: "Semester".into(), set_by: SetBy::Tenant })]);
        assert_eq!(e.not_applied.len(), 1);
        assert_eq!((e.not_applied[0].status, e.not_applied[0].profile.as_str()), ("focus_time", "Fokus"));
        let own = StatusEvents { focus_time: Some("Lunch".into()), ..Default::default() };
        let e = EffectiveStatusEvents::of(&user(&["Semester", "Lunch"], own), Some(&default));
        assert_eq!(e.mapping.focus_time.as_deref(), Some("Lunch"), "the user's own choice wins");
        assert!(e.not_applied.is_empty());
    }
}
