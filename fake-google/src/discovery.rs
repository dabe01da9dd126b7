//! Google's own discovery documents, embedded: the source of truth for which OAuth scopes each
//! method accepts, and served back (with the root URL pointing at the fake) so that clients that
//! build themselves from discovery work unchanged.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

const CALENDAR: &str = include_str!("../discovery/calendar.v3.json");
const PEOPLE: &str = include_str!("../discovery/people.v1.json");

struct Catalogue {
    calendar: Value,
    people: Value,
    scopes: HashMap<String, Vec<String>>,
}

fn catalogue() -> &'static Catalogue {
    static CAT: OnceLock<Catalogue> = OnceLock::new();
    CAT.get_or_init(|| {
        // The documents are compiled in and tested; failing to parse them is a build defect.
        let calendar: Value = serde_json::from_str(CALENDAR).unwrap_or(Value::Null);
        let people: Value = serde_json::from_str(PEOPLE).unwrap_or(Value::Null);
        let mut scopes = HashMap::new();
        collect_scopes(&calendar["resources"], &mut scopes);
        collect_scopes(&people["resources"], &mut scopes);
        Catalogue { calendar, people, scopes }
    })
}

fn collect_scopes(resources: &Value, out: &mut HashMap<String, Vec<String>>) {
    let Some(map) = resources.as_object() else { return };
    for resource in map.values() {
        if let Some(methods) = resource["methods"].as_object() {
            for method in methods.values() {
                if let Some(id) = method["id"].as_str() {
                    let scopes = method["scopes"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
                        .unwrap_or_default();
                    out.insert(id.to_owned(), scopes);
                }
            }
        }
        collect_scopes(&resource["resources"], out);
    }
}

/// The scopes of which a token needs any one to call `method` (a discovery method id such as
/// `calendar.events.list`). Empty for unknown methods.
pub fn scopes_for(method: &str) -> &'static [String] {
    catalogue().scopes.get(method).map(Vec::as_slice).unwrap_or(&[])
}

/// The discovery document for `api` ("calendar" or "people"), rooted at `base_url`.
pub fn document(api: &str, base_url: &str) -> Option<Value> {
    let cat = catalogue();
    let mut doc = match api {
        "calendar" => cat.calendar.clone(),
        "people" => cat.people.clone(),
        _ => return None,
    };
    let root = format!("{}/", base_url.trim_end_matches('/'));
    let service_path = doc["servicePath"].as_str().unwrap_or("").to_owned();
    doc["rootUrl"] = Value::String(root.clone());
    doc["mtlsRootUrl"] = Value::String(root.clone());
    doc["baseUrl"] = Value::String(format!("{root}{service_path}"));
    Some(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_come_from_the_discovery_documents() {
        let list = scopes_for("calendar.events.list");
        assert!(list.iter().any(|s| s == "https://www.googleapis.com/auth/calendar.readonly"));
        assert!(!scopes_for("calendar.events.insert").iter().any(|s| s.ends_with("calendar.readonly")));
        assert_eq!(
            scopes_for("people.people.listDirectoryPeople"),
            ["https://www.googleapis.com/auth/directory.readonly"]
        );
        assert!(scopes_for("calendar.channels.stop").len() > 5);
        assert!(scopes_for("no.such.method").is_empty());
    }
}
