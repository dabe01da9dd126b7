//! Talking to Google: per-user access tokens (`auth`), typed errors that say what to do next
//! (`error`), and the Calendar and People calls (`api`).

pub mod api;
pub mod auth;
pub mod calendar;
pub mod error;
pub mod people;

/// The OAuth scopes gwsync asks for, one purpose each, so a scope the admin forgot to delegate
/// breaks only what needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Read events, watch them, read calendar settings.
    Calendar,
    /// Read a user's own contacts.
    Contacts,
    /// Read the Workspace directory.
    Directory,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Calendar, Scope::Contacts, Scope::Directory];

    pub fn url(self) -> &'static str {
        match self {
            Scope::Calendar => "https://www.googleapis.com/auth/calendar.readonly",
            Scope::Contacts => "https://www.googleapis.com/auth/contacts.readonly",
            Scope::Directory => "https://www.googleapis.com/auth/directory.readonly",
        }
    }

    /// The comma-separated list an admin pastes into the Admin console's delegation form.
    pub fn delegation_list() -> String {
        Scope::ALL.iter().map(|s| s.url()).collect::<Vec<_>>().join(",")
    }
}
