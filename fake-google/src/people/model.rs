//! People data as the fake keeps it: an address book (a domain's directory, or one user's
//! contacts) of persons, each with its versions, so that a configurable propagation delay can
//! keep a change out of list and sync results for a while, as Google's does for minutes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rand::RngExt;
use serde_json::{Map, Value, json};

use crate::clock::google_timestamp;

/// Every field a person can carry; field masks name these.
pub const PERSON_FIELDS: &[&str] = &[
    "addresses",
    "ageRanges",
    "biographies",
    "birthdays",
    "calendarUrls",
    "clientData",
    "coverPhotos",
    "emailAddresses",
    "events",
    "externalIds",
    "genders",
    "imClients",
    "interests",
    "locales",
    "locations",
    "memberships",
    "metadata",
    "miscKeywords",
    "names",
    "nicknames",
    "occupations",
    "organizations",
    "phoneNumbers",
    "photos",
    "relations",
    "sipAddresses",
    "skills",
    "urls",
    "userDefined",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A Workspace user's profile in the directory.
    DomainProfile,
    /// A shared contact an admin added to the directory.
    DomainContact,
    /// A user's own contact.
    Contact,
}

impl SourceKind {
    pub fn source_type(self) -> &'static str {
        match self {
            SourceKind::DomainProfile => "DOMAIN_PROFILE",
            SourceKind::DomainContact => "DOMAIN_CONTACT",
            SourceKind::Contact => "CONTACT",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "DOMAIN_PROFILE" => Some(SourceKind::DomainProfile),
            "DOMAIN_CONTACT" => Some(SourceKind::DomainContact),
            "CONTACT" => Some(SourceKind::Contact),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Version {
    pub data: Map<String, Value>,
    pub deleted: bool,
    pub seq: u64,
    pub updated: DateTime<Utc>,
    /// When this version starts to show in list results (fake time).
    pub visible_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Person {
    /// What follows `people/` in the resource name.
    pub id: String,
    pub kind: SourceKind,
    /// Oldest first; never empty.
    pub versions: Vec<Version>,
}

impl Person {
    pub fn resource_name(&self) -> String {
        format!("people/{}", self.id)
    }

    /// The newest version visible at `now`.
    pub fn visible(&self, now: DateTime<Utc>) -> Option<&Version> {
        self.versions.iter().rev().find(|v| v.visible_at <= now)
    }

    pub fn latest(&self) -> &Version {
        // `versions` is never empty: a person is created with one and only ever gains more.
        &self.versions[self.versions.len() - 1]
    }

    /// Forgets versions superseded by one that is already visible.
    pub fn compact(&mut self, now: DateTime<Utc>) {
        if let Some(idx) = self.versions.iter().rposition(|v| v.visible_at <= now) {
            self.versions.drain(..idx);
        }
    }

    fn etag(v: &Version) -> String {
        use base64::Engine;
        format!(
            "%{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(format!(
                "{}:{}",
                v.seq,
                v.updated.timestamp_micros()
            ))
        )
    }

    fn source(&self, v: &Version) -> Value {
        json!({
            "type": self.kind.source_type(),
            "id": self.source_id(),
            "etag": Self::etag(v),
            "updateTime": google_timestamp(v.updated),
        })
    }

    fn source_id(&self) -> String {
        self.id.trim_start_matches('c').to_owned()
    }

    /// The person as the API returns it, limited to the fields in `mask`.
    pub fn render(&self, v: &Version, mask: &[String]) -> Value {
        let mut out = Map::new();
        out.insert("resourceName".into(), json!(self.resource_name()));
        out.insert("etag".into(), json!(Self::etag(v)));
        if v.deleted {
            out.insert(
                "metadata".into(),
                json!({ "sources": [self.source(v)], "deleted": true, "objectType": "PERSON" }),
            );
            return Value::Object(out);
        }
        for field in mask {
            if field == "metadata" {
                out.insert("metadata".into(), json!({ "sources": [self.source(v)], "objectType": "PERSON" }));
                continue;
            }
            let Some(Value::Array(items)) = v.data.get(field) else { continue };
            let items: Vec<Value> = items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let mut item = item.clone();
                    if let Value::Object(m) = &mut item {
                        let mut meta = json!({ "source": { "type": self.kind.source_type(), "id": self.source_id() } });
                        if i == 0 {
                            meta["primary"] = json!(true);
                            meta["sourcePrimary"] = json!(true);
                        }
                        if field == "emailAddresses" && self.kind == SourceKind::DomainProfile {
                            meta["verified"] = json!(true);
                        }
                        m.insert("metadata".into(), meta);
                    }
                    item
                })
                .collect();
            if !items.is_empty() {
                out.insert(field.clone(), Value::Array(items));
            }
        }
        Value::Object(out)
    }
}

#[derive(Debug, Clone)]
pub struct PeopleBook {
    pub seq: u64,
    /// Bumped to invalidate sync tokens (`POST /_fake/sync-tokens/invalidate`).
    pub epoch: u32,
    /// Region used to put phone numbers in canonical form.
    pub region: String,
    pub people: BTreeMap<String, Person>,
}

impl PeopleBook {
    pub fn new(region: &str) -> Self {
        PeopleBook { seq: 0, epoch: 0, region: region.to_owned(), people: BTreeMap::new() }
    }

    /// The change number a sync token may stand at: just below the oldest change not yet visible,
    /// so a delayed change is never skipped.
    pub fn watermark(&self, now: DateTime<Utc>) -> u64 {
        self.people
            .values()
            .flat_map(|p| p.versions.iter())
            .filter(|v| v.visible_at > now)
            .map(|v| v.seq - 1)
            .min()
            .unwrap_or(self.seq)
    }

    /// Records a new version of person `id` (creating it if new).
    pub fn put(
        &mut self,
        id: &str,
        kind: SourceKind,
        data: Map<String, Value>,
        deleted: bool,
        now: DateTime<Utc>,
        delay: chrono::Duration,
    ) {
        self.seq += 1;
        let version = Version { data, deleted, seq: self.seq, updated: now, visible_at: now + delay };
        match self.people.get_mut(id) {
            Some(p) => {
                p.compact(now);
                p.versions.push(version);
            }
            None => {
                self.people.insert(id.to_owned(), Person { id: id.to_owned(), kind, versions: vec![version] });
            }
        }
    }
}

/// A new person id: profiles are numeric (`1…`), contacts `c…`, as at Google.
pub fn new_person_id(kind: SourceKind) -> String {
    let mut rng = rand::rng();
    let digits: String = (0..19).map(|_| char::from(b'0' + rng.random_range(0..10u8))).collect();
    match kind {
        SourceKind::DomainProfile => format!("1{digits}0"),
        SourceKind::DomainContact | SourceKind::Contact => format!("c{digits}"),
    }
}

/// Google's localised label for a phone/email type.
pub fn formatted_type(t: &str) -> String {
    match t {
        "home" => "Home".into(),
        "work" => "Work".into(),
        "mobile" => "Mobile".into(),
        "homeFax" => "Home Fax".into(),
        "workFax" => "Work Fax".into(),
        "otherFax" => "Other Fax".into(),
        "pager" => "Pager".into(),
        "workMobile" => "Work Mobile".into(),
        "workPager" => "Work Pager".into(),
        "main" => "Main".into(),
        "googleVoice" => "Google Voice".into(),
        "other" => "Other".into(),
        custom => custom.to_owned(),
    }
}

/// E.164 form of `raw` when it is a valid number in `region` (or carries its own country code).
pub fn canonical_form(raw: &str, region: &str) -> Option<String> {
    let id = region.to_ascii_uppercase().parse::<phonenumber::country::Id>().ok();
    let number = phonenumber::parse(id, raw).ok()?;
    phonenumber::is_valid(&number).then(|| number.format().mode(phonenumber::Mode::E164).to_string())
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PersonInputError(pub String);

/// Validates and fills in a person written through the control API: phone numbers get
/// `canonicalForm` and `formattedType`, names get their display forms.
pub fn normalise(input: &Map<String, Value>, region: &str) -> Result<Map<String, Value>, PersonInputError> {
    let mut out = Map::new();
    for (field, value) in input {
        if matches!(field.as_str(), "source" | "id" | "resourceName" | "etag") {
            continue;
        }
        if !PERSON_FIELDS.contains(&field.as_str()) || field == "metadata" {
            return Err(PersonInputError(format!(
                "unknown person field '{field}'; use one of {}",
                PERSON_FIELDS.join(", ")
            )));
        }
        let Value::Array(items) = value else {
            return Err(PersonInputError(format!("'{field}' must be an array of objects")));
        };
        let mut fixed = Vec::with_capacity(items.len());
        for item in items {
            let Value::Object(m) = item else {
                return Err(PersonInputError(format!("'{field}' must be an array of objects")));
            };
            let mut m = m.clone();
            match field.as_str() {
                "phoneNumbers" => {
                    let raw = m
                        .get("value")
                        .and_then(Value::as_str)
                        .ok_or_else(|| PersonInputError("every phone number needs a 'value'".into()))?
                        .to_owned();
                    m.remove("canonicalForm");
                    if let Some(c) = canonical_form(&raw, region) {
                        m.insert("canonicalForm".into(), json!(c));
                    }
                    if let Some(t) = m.get("type").and_then(Value::as_str).map(str::to_owned) {
                        m.insert("formattedType".into(), json!(formatted_type(&t)));
                    }
                }
                "emailAddresses" => {
                    if !m.get("value").and_then(Value::as_str).is_some_and(|v| v.contains('@')) {
                        return Err(PersonInputError("every email address needs a 'value' with an @".into()));
                    }
                    if let Some(t) = m.get("type").and_then(Value::as_str).map(str::to_owned) {
                        m.insert("formattedType".into(), json!(formatted_type(&t)));
                    }
                }
                "names" => {
                    let given = m.get("givenName").and_then(Value::as_str).unwrap_or("").to_owned();
                    let family = m.get("familyName").and_then(Value::as_str).unwrap_or("").to_owned();
                    if !m.contains_key("displayName") {
                        m.insert("displayName".into(), json!(format!("{given} {family}").trim()));
                    }
                    if !m.contains_key("displayNameLastFirst") {
                        let lf = match (family.is_empty(), given.is_empty()) {
                            (false, false) => format!("{family}, {given}"),
                            _ => format!("{family}{given}"),
                        };
                        m.insert("displayNameLastFirst".into(), json!(lf));
                    }
                    if !m.contains_key("unstructuredName") {
                        let d = m.get("displayName").cloned().unwrap_or(json!(""));
                        m.insert("unstructuredName".into(), d);
                    }
                }
                _ => {}
            }
            fixed.push(Value::Object(m));
        }
        out.insert(field.clone(), Value::Array(fixed));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_is_e164_only_for_valid_numbers() {
        assert_eq!(canonical_form("08-123 456 78", "SE").as_deref(), Some("+46812345678"));
        assert_eq!(canonical_form("+1 (650) 253-0000", "SE").as_deref(), Some("+16502530000"));
        assert_eq!(canonical_form("12", "SE"), None);
        assert_eq!(canonical_form("call me", "SE"), None);
    }

    #[test]
    fn a_delayed_change_holds_the_watermark_back() {
        let now = Utc::now();
        let mut book = PeopleBook::new("SE");
        book.put("c1", SourceKind::Contact, Map::new(), false, now, chrono::Duration::zero());
        book.put("c2", SourceKind::Contact, Map::new(), false, now, chrono::Duration::minutes(5));
        book.put("c3", SourceKind::Contact, Map::new(), false, now, chrono::Duration::zero());
        assert_eq!(book.watermark(now), 1);
        assert!(book.people["c2"].visible(now).is_none());
        assert_eq!(book.watermark(now + chrono::Duration::minutes(6)), 3);
    }
}
