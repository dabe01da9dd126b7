//! Phonebook entries as gwsync keeps them, read from People API persons; and the names of
//! a tenant's address books.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::phone::{self as numbers, Phone};

/// The Workspace directory's book (profiles and shared contacts).
pub const DIRECTORY: &str = "directory";

/// The book of one user's own contacts.
pub fn personal_book(user: &str) -> String {
    format!("personal:{user}")
}

/// Where an entry comes from; also its rank when several match a number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// A person of the Workspace directory (a user's profile).
    Directory,
    /// A shared contact the admin keeps in the directory.
    Shared,
    /// One user's own contact.
    Personal { owner: String },
}

impl Source {
    pub fn label(&self) -> &'static str {
        match self {
            Source::Directory => "directory",
            Source::Shared => "shared",
            Source::Personal { .. } => "personal",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub resource_name: String,
    pub source: Source,
    pub name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub organization: Option<String>,
    pub title: Option<String>,
    pub department: Option<String>,
    pub emails: Vec<String>,
    pub phones: Vec<Phone>,
}

impl AsRef<Contact> for Contact {
    fn as_ref(&self) -> &Contact {
        self
    }
}

/// Sync state of one address book (the directory, or one user's contacts).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BookState {
    pub sync_token: Option<String>,
    pub last_poll_at: Option<DateTime<Utc>>,
    pub last_full_sync_at: Option<DateTime<Utc>>,
    pub entries: usize,
    pub last_error: Option<super::records::SyncFailure>,
}

/// A change a People listing brings.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Upsert(Box<Contact>),
    Delete(String),
}

fn first_str<'a>(v: &'a Value, list: &str, field: &str) -> Option<&'a str> {
    let items = v[list].as_array()?;
    // The primary item, else the first.
    let item = items.iter().find(|i| i["metadata"]["primary"].as_bool() == Some(true)).or_else(|| items.first())?;
    item[field].as_str().map(str::trim).filter(|s| !s.is_empty())
}

/// Reads a person of a People listing. `Delete` for tombstones; `None` when it has no
/// resource name.
pub fn change_from_person(v: &Value, book_source: &Source, region: &str) -> Option<Change> {
    let resource_name = v["resourceName"].as_str().filter(|r| r.starts_with("people/"))?.to_owned();
    if v["metadata"]["deleted"].as_bool() == Some(true) {
        return Some(Change::Delete(resource_name));
    }
    let source = match book_source {
        Source::Personal { .. } => book_source.clone(),
        _ => {
            let types: Vec<&str> = v["metadata"]["sources"]
                .as_array()
                .map(|s| s.iter().filter_map(|x| x["type"].as_str()).collect())
                .unwrap_or_default();
            if types.contains(&"DOMAIN_PROFILE") { Source::Directory } else { Source::Shared }
        }
    };
    let phones = v["phoneNumbers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| {
                    let raw = p["value"].as_str()?.trim().to_owned();
                    let (mut e164, extension) = numbers::normalise(&raw, region);
                    if e164.is_none() {
                        // Google's own reading, when ours found nothing valid.
                        e164 = p["canonicalForm"]
                            .as_str()
                            .filter(|c| numbers::normalise(c, region).0.is_some())
                            .map(str::to_owned);
                    }
                    Some(Phone {
                        raw,
                        e164,
                        extension,
                        kind: p["type"].as_str().map(str::to_owned),
                        label: p["formattedType"].as_str().map(str::to_owned),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let emails = v["emailAddresses"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["value"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let given = first_str(v, "names", "givenName").map(str::to_owned);
    let family = first_str(v, "names", "familyName").map(str::to_owned);
    let name = first_str(v, "names", "displayName")
        .map(str::to_owned)
        .or_else(|| match (&given, &family) {
            (Some(g), Some(f)) => Some(format!("{g} {f}")),
            (Some(x), None) | (None, Some(x)) => Some(x.clone()),
            (None, None) => None,
        })
        .or_else(|| first_str(v, "organizations", "name").map(str::to_owned));
    Some(Change::Upsert(Box::new(Contact {
        resource_name,
        source,
        name,
        given_name: given,
        family_name: family,
        organization: first_str(v, "organizations", "name").map(str::to_owned),
        title: first_str(v, "organizations", "title").map(str::to_owned),
        department: first_str(v, "organizations", "department").map(str::to_owned),
        emails,
        phones,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn persons_become_entries_with_normalised_numbers() {
        let p = json!({
            "resourceName": "people/c1", "etag": "x",
            "metadata": {"sources": [{"type": "DOMAIN_CONTACT", "id": "1"}]},
            "names": [{"displayName": "Växel", "metadata": {"primary": true}}],
            "organizations": [{"name": "Acme AB", "title": "Reception"}],
            "phoneNumbers": [{"value": "08-123 456 78", "type": "work", "formattedType": "Work"}, {"value": "dial 9 first"}],
        });
        let Some(Change::Upsert(c)) = change_from_person(&p, &Source::Shared, "SE") else { panic!() };
        assert_eq!(
            (c.name.as_deref(), c.source.clone(), c.organization.as_deref()),
            (Some("Växel"), Source::Shared, Some("Acme AB"))
        );
        assert_eq!(c.phones[0].e164.as_deref(), Some("+46812345678"));
        assert_eq!(c.phones[1].e164, None, "kept, not indexed");
        let gone = json!({"resourceName": "people/c1", "etag": "y", "metadata": {"deleted": true}});
        assert_eq!(change_from_person(&gone, &Source::Shared, "SE"), Some(Change::Delete("people/c1".into())));
        let profile = json!({"resourceName": "people/1", "metadata": {"sources": [{"type": "DOMAIN_PROFILE"}]}, "names": [{"givenName": "Anna", "familyName": "Svensson"}]});
        let Some(Change::Upsert(c)) = change_from_person(&profile, &Source::Shared, "SE") else { panic!() };
        assert_eq!((c.source, c.name.as_deref()), (Source::Directory, Some("Anna Svensson")));
    }
}
