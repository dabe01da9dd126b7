//! The identity of one phone user's calendar across the system: the sync queue, presence,
//! the outbox and the store all speak of a user as `(tenant, Google address)`.

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct CalendarKey {
    pub tenant: String,
    pub user: String,
}

impl CalendarKey {
    pub fn new(tenant: &str, user: &str) -> Self {
        CalendarKey { tenant: tenant.to_owned(), user: user.to_owned() }
    }
}

impl std::fmt::Display for CalendarKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.tenant, self.user)
    }
}
