//! The People v1 calls gwsync makes: listDirectoryPeople (the Workspace directory: profiles and
//! shared contacts) and connections.list (a user's own contacts), page by page with sync tokens.

use secrecy::SecretString;
use serde_json::Value;

use super::api::GoogleApi;
use super::error::ApiError;

/// The fields of a person the phonebook keeps.
pub const FIELDS: &str = "names,emailAddresses,phoneNumbers,organizations,metadata";

#[derive(Debug, Clone, Default)]
pub struct PeoplePage {
    pub people: Vec<Value>,
    pub next_page_token: Option<String>,
    pub next_sync_token: Option<String>,
}

/// Which address book to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Book {
    Directory,
    Connections,
}

impl GoogleApi {
    /// One page. The same `sync_token` (or none) must come with every page of one listing.
    pub async fn list_people(
        &self,
        book: Book,
        token: &SecretString,
        user: &str,
        sync_token: Option<&str>,
        page_token: Option<&str>,
        page_size: u32,
    ) -> Result<PeoplePage, ApiError> {
        let size = page_size.to_string();
        let mut query: Vec<(&str, &str)> = vec![("pageSize", &size), ("requestSyncToken", "true")];
        let (method, url, items) = match book {
            Book::Directory => {
                query.push(("readMask", FIELDS));
                query.push(("sources", "DIRECTORY_SOURCE_TYPE_DOMAIN_PROFILE"));
                query.push(("sources", "DIRECTORY_SOURCE_TYPE_DOMAIN_CONTACT"));
                ("people.listDirectoryPeople", self.people_url("people:listDirectoryPeople"), "people")
            }
            Book::Connections => {
                query.push(("personFields", FIELDS));
                ("people.connections.list", self.people_url("people/me/connections"), "connections")
            }
        };
        if let Some(t) = sync_token {
            query.push(("syncToken", t));
        }
        if let Some(p) = page_token {
            query.push(("pageToken", p));
        }
        let v = self.get(method, url, &query, token, user).await?;
        Ok(PeoplePage {
            // proto3 JSON leaves an empty list out.
            people: v[items].as_array().cloned().unwrap_or_default(),
            next_page_token: v["nextPageToken"].as_str().map(str::to_owned),
            next_sync_token: v["nextSyncToken"].as_str().map(str::to_owned),
        })
    }
}
