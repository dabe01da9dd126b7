//! Contacts: the company's Google contacts as the phone system's phonebook.
//!
//! Google offers no push for contacts, so each tenant is polled (`poll_interval`, jittered;
//! or on request): the Workspace directory — users' profiles and shared contacts — as the
//! tenant's `directory_admin`, and optionally every user's own contacts. Listings are
//! incremental with sync tokens, written atomically with their changes; an expired token means
//! a full sync. Numbers are put into E.164 with the tenant's default region (`numbers`); an
//! in-memory index per tenant answers caller-ID lookups and searches (`index`); `export` renders
//! vCard and desk-phone phonebooks.

pub mod export;
pub mod index;
/// The records live in the model (the store keeps them); re-exported under their old names.
pub use crate::model::contact as model;
pub use crate::model::contact::{DIRECTORY, personal_book};
pub use crate::model::phone as numbers;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use parking_lot::{Mutex, RwLock};
use rand::RngExt;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::google::Scope;
use crate::google::auth::ServiceAccount;
use crate::google::error::ApiError;
use crate::google::error::AuthError;
use crate::google::error::DIRECTORY_SHARING_FIX;
use crate::google::people::Book;
use crate::store::{StoreError, SyncFailure};
use crate::sync::error::SyncError;
use index::TenantBook;
use model::{BookState, Source};

/// What one sync of a tenant's phonebook did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub books: Vec<BookSummary>,
    pub entries: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct BookSummary {
    pub book: String,
    pub full: bool,
    pub pages: usize,
    pub changes: usize,
    pub entries: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<SyncFailure>,
}

pub struct Contacts {
    app: Arc<AppState>,
    /// People's per-user read bucket, per tenant and user (each tenant is its own project).
    reads: DefaultKeyedRateLimiter<(String, String)>,
    books: RwLock<HashMap<String, Arc<TenantBook>>>,
    /// Held while an index is built from the store, so an older build never replaces a newer.
    building: tokio::sync::Mutex<()>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    next_poll: Mutex<HashMap<String, DateTime<Utc>>>,
}

impl Contacts {
    pub fn new(app: Arc<AppState>) -> Self {
        let rpm = app.config.contacts.user_requests_per_minute;
        let rate = NonZeroU32::new(((f64::from(rpm) * 0.9) as u32).max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new((rpm / 20).max(1)).unwrap_or(NonZeroU32::MIN);
        Contacts {
            reads: RateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst)),
            app,
            books: RwLock::new(HashMap::new()),
            building: tokio::sync::Mutex::new(()),
            locks: Mutex::new(HashMap::new()),
            next_poll: Mutex::new(HashMap::new()),
        }
    }

    /// The tenant's phonebook index (built from the store on first use).
    pub async fn book(&self, tenant: &str) -> Result<Arc<TenantBook>, StoreError> {
        if let Some(b) = self.books.read().get(tenant) {
            return Ok(b.clone());
        }
        // Built under `building`, so a concurrent `reindex` cannot be overwritten by an older
        // build.
        let _building = self.building.lock().await;
        if let Some(b) = self.books.read().get(tenant) {
            return Ok(b.clone());
        }
        let contacts = self.app.store.contacts(tenant).await?;
        let book = Arc::new(TenantBook::build(contacts, self.app.config.contacts.match_last_digits));
        self.books.write().insert(tenant.to_owned(), book.clone());
        Ok(book)
    }

    async fn reindex(&self, tenant: &str) -> Result<Arc<TenantBook>, StoreError> {
        let _building = self.building.lock().await;
        let contacts = self.app.store.contacts(tenant).await?;
        let book = Arc::new(TenantBook::build(contacts, self.app.config.contacts.match_last_digits));
        self.books.write().insert(tenant.to_owned(), book.clone());
        Ok(book)
    }

    /// Drops the tenant's index (another replica changed its books); rebuilt on next use.
    pub fn forget_book(&self, tenant: &str) {
        self.books.write().remove(tenant);
    }

    pub fn forget_tenant(&self, tenant: &str) {
        self.books.write().remove(tenant);
        self.next_poll.lock().remove(tenant);
    }

    /// Polls the tenant at the next sweep (its settings changed).
    pub fn poll_soon(&self, tenant: &str) {
        self.next_poll.lock().insert(tenant.to_owned(), self.app.clock.now());
    }

    pub fn next_poll(&self, tenant: &str) -> Option<DateTime<Utc>> {
        self.next_poll.lock().get(tenant).copied()
    }

    /// Syncs every book of the tenant now (one sync per tenant at a time).
    pub async fn sync_tenant(&self, tenant_id: &str) -> Result<Summary, StoreError> {
        let lock = self.locks.lock().entry(tenant_id.to_owned()).or_default().clone();
        let _guard = lock.lock().await;
        let store = &self.app.store;
        let Some(tenant) = store.tenant(tenant_id).await? else {
            self.forget_tenant(tenant_id);
            return Ok(Summary::default());
        };
        let now = self.app.clock.now();
        let mut summary = Summary::default();
        let account = self.app.service_account(&tenant.id).await;
        let mut retry_soon = false;

        let mut plan: Vec<(String, Book, String, Scope, Source)> = Vec::new();
        match &tenant.directory_admin {
            Some(admin) => {
                plan.push((DIRECTORY.into(), Book::Directory, admin.clone(), Scope::Directory, Source::Shared))
            }
            None => {
                let failure = failure(
                    now,
                    "no_directory_admin",
                    "the tenant has no directory_admin",
                    "Set the tenant's directory_admin: the Workspace user whose view of the directory becomes the phonebook",
                );
                summary.books.push(self.record_failure(&tenant.id, DIRECTORY, failure).await?);
            }
        }
        let users = store.users(&tenant.id).await?;
        if tenant.contacts.personal_contacts {
            for u in &users {
                plan.push((
                    personal_book(&u.email),
                    Book::Connections,
                    u.email.clone(),
                    Scope::Contacts,
                    Source::Personal { owner: u.email.clone() },
                ));
            }
        }
        // Books no longer wanted: personal contacts switched off, or their user deleted.
        for (book, _) in store.contact_books(&tenant.id).await? {
            if book != DIRECTORY && !plan.iter().any(|(b, ..)| *b == book) {
                store.delete_contact_book(&tenant.id, &book).await?;
            }
        }
        // A token failure that every later book would meet too ends those books at once, so
        // a tenant whose token endpoint hangs holds a poll slot (`contacts.parallel_tenants`)
        // for one `sync.token_timeout`, not one per user with personal contacts.
        let mut tenant_failures: Vec<(Reach, SyncFailure)> = Vec::new();
        for (book, kind, subject, scope, source) in plan {
            if let Some((_, failure)) = tenant_failures.iter().find(|(reach, _)| reach.covers(scope)) {
                summary.books.push(self.record_failure(&tenant.id, &book, failure.clone()).await?);
                continue;
            }
            let result = match &account {
                Ok(a) => {
                    self.sync_book(&tenant.id, &tenant.default_region, a, &book, kind, &subject, scope, &source).await
                }
                Err(crate::app::CredentialsError::Missing) => {
                    Err(SyncError::from(crate::app::CredentialsError::Missing))
                }
                Err(e) => Err(SyncError::from(crate::app::CredentialsError::Unreadable(e.to_string()))),
            };
            match result {
                Ok(s) => summary.books.push(s),
                Err(e) => {
                    retry_soon |= matches!(
                        e,
                        SyncError::Api(ApiError::RateLimited { .. }) | SyncError::Api(ApiError::Transient { .. })
                    );
                    let hint = match (&e, kind) {
                        (SyncError::Api(ApiError::Forbidden { .. }), Book::Directory) => {
                            DIRECTORY_SHARING_FIX.to_owned()
                        }
                        _ => e.hint(),
                    };
                    let code = match (&e, kind) {
                        (SyncError::Api(ApiError::Forbidden { .. }), Book::Directory) => "directory_sharing_off",
                        _ => e.code(),
                    };
                    tracing::warn!(tenant = %tenant.id, book, code, error = %e, "phonebook sync failed");
                    let failure = failure(now, code, &e.to_string(), &hint);
                    if let Some(reach) = Reach::of(&e, scope) {
                        tenant_failures.push((reach, failure.clone()));
                    }
                    summary.books.push(self.record_failure(&tenant.id, &book, failure).await?);
                }
            }
        }
        crate::store::flush(store).await?;
        let index = self.reindex(&tenant.id).await?;
        // Other replicas answer lookups from their own index: they rebuild it from the store.
        self.app.cluster.contacts_changed(&tenant.id).await;
        summary.entries = index.entries.len();
        let interval = Duration::from_std(tenant.contacts.poll_interval).unwrap_or(Duration::minutes(15));
        // ±10 % so tenants polled together drift apart; rate limits come back sooner, with backoff.
        let jittered = interval.to_std().unwrap_or_default().mul_f64(rand::rng().random_range(0.9..1.1));
        let next = if retry_soon { Duration::minutes(5) } else { Duration::from_std(jittered).unwrap_or(interval) };
        self.next_poll.lock().insert(tenant.id.clone(), now + next);
        Ok(summary)
    }

    async fn record_failure(&self, tenant: &str, book: &str, error: SyncFailure) -> Result<BookSummary, StoreError> {
        let mut state = self.app.store.contact_book(tenant, book).await?.unwrap_or_default();
        state.last_poll_at = Some(error.at);
        state.last_error = Some(error.clone());
        let entries = self.app.store.apply_contacts(tenant, book, false, &[], &state).await?;
        Ok(BookSummary { book: book.to_owned(), full: false, pages: 0, changes: 0, entries, error: Some(error) })
    }

    #[allow(clippy::too_many_arguments)]
    async fn sync_book(
        &self,
        tenant: &str,
        region: &str,
        account: &ServiceAccount,
        book: &str,
        kind: Book,
        subject: &str,
        scope: Scope,
        source: &Source,
    ) -> Result<BookSummary, SyncError> {
        let app = &self.app;
        let mut state = app.store.contact_book(tenant, book).await?.unwrap_or_default();
        let mut token = app.tokens.token(account, subject, scope).await?;
        let mut refreshed = false;
        loop {
            let full = state.sync_token.is_none();
            let mut changes = Vec::new();
            let mut page_token: Option<String> = None;
            let mut pages = 0;
            let next_sync_token = loop {
                self.reads.until_key_ready(&(tenant.to_owned(), subject.to_owned())).await;
                let page = app
                    .google
                    .list_people(
                        kind,
                        &token,
                        subject,
                        state.sync_token.as_deref(),
                        page_token.as_deref(),
                        app.config.contacts.page_size,
                    )
                    .await;
                match page {
                    Ok(p) => {
                        pages += 1;
                        changes.extend(
                            p.people.iter().filter_map(|person| model::change_from_person(person, source, region)),
                        );
                        match (p.next_page_token, p.next_sync_token) {
                            (Some(next), _) => page_token = Some(next),
                            (None, sync_token) => break sync_token,
                        }
                    }
                    Err(ApiError::Unauthorized) if !refreshed => {
                        token = app.tokens.fresh_token(account, subject, scope).await?;
                        refreshed = true;
                    }
                    Err(ApiError::ExpiredSyncToken) if !full => {
                        tracing::info!(tenant, book, "contacts sync token expired: full sync");
                        state.sync_token = None;
                        break None;
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            if next_sync_token.is_none() && state.sync_token.is_none() && !full {
                continue;
            }
            let now = app.clock.now();
            state.sync_token = next_sync_token;
            state.last_poll_at = Some(now);
            if full {
                state.last_full_sync_at = Some(now);
            }
            state.last_error = None;
            let changed = changes.len();
            let (t, b, s) = (tenant.to_owned(), book.to_owned(), state.clone());
            let entries = app.store.apply_contacts(&t, &b, full, &changes, &s).await?;
            if entries != state.entries {
                state.entries = entries;
                app.store.apply_contacts(tenant, book, false, &[], &state).await?;
            }
            tracing::info!(tenant, book, full, pages, changes = changed, entries, "phonebook synced");
            return Ok(BookSummary { book: book.to_owned(), full, pages, changes: changed, entries, error: None });
        }
    }

    /// Polls every tenant when due, up to `contacts.parallel_tenants` at once, until `shutdown`
    /// (polls in flight are dropped then: a listing is written, with its sync token, only once
    /// complete, so nothing half-done is kept).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let clock = self.app.clock.clone();
        let parallel = self.app.config.contacts.parallel_tenants.max(1);
        let mut polls: JoinSet<()> = JoinSet::new();
        // The tenant of each poll in flight, by its task (a panicked task still names its id).
        let mut polling: HashMap<tokio::task::Id, String> = HashMap::new();
        loop {
            let now = clock.now();
            let tenants = match self.app.store.tenants().await {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(error = %e, "the contacts poller cannot read tenants");
                    Vec::new()
                }
            };
            for t in tenants {
                if polling.len() >= parallel {
                    break;
                }
                let due = self.next_poll.lock().get(&t.id).is_none_or(|at| *at <= now);
                if !due || polling.values().any(|id| *id == t.id) {
                    continue;
                }
                let contacts = self.clone();
                let tenant = t.id.clone();
                let task = polls.spawn(async move {
                    if let Err(e) = contacts.sync_tenant(&tenant).await {
                        tracing::error!(tenant, error = %e, "phonebook sync failed");
                        // Not at once again: the store's trouble would keep this slot spinning.
                        let retry = contacts.app.clock.now() + Duration::minutes(1);
                        contacts.next_poll.lock().insert(tenant, retry);
                    }
                });
                polling.insert(task.id(), t.id);
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                Some(done) = polls.join_next_with_id(), if !polls.is_empty() => {
                    let id = match done {
                        Ok((id, ())) => id,
                        Err(e) => {
                            tracing::error!(tenant = ?polling.get(&e.id()), error = %e, "a phonebook poll failed unexpectedly");
                            e.id()
                        }
                    };
                    polling.remove(&id);
                }
                () = clock.sleep(std::time::Duration::from_secs(15)) => {}
            }
        }
    }

    /// The tenant's phonebook status: each book's last poll, size and last error.
    pub async fn status(&self, tenant: &str) -> Result<serde_json::Value, StoreError> {
        let books: Vec<serde_json::Value> = self
            .app
            .store
            .contact_books(tenant)
            .await?
            .into_iter()
            .map(|(book, s): (String, BookState)| {
                serde_json::json!({
                    "book": book,
                    "entries": s.entries,
                    "last_poll": s.last_poll_at,
                    "last_full_sync": s.last_full_sync_at,
                    "last_error": s.last_error,
                })
            })
            .collect();
        let index = self.book(tenant).await?;
        let indexed_numbers: usize =
            index.entries.iter().map(|c| c.phones.iter().filter(|p| p.e164.is_some()).count()).sum();
        let unindexed_numbers: usize =
            index.entries.iter().map(|c| c.phones.iter().filter(|p| p.e164.is_none()).count()).sum();
        Ok(serde_json::json!({
            "entries": index.entries.len(),
            "numbers": indexed_numbers,
            "unindexed_numbers": unindexed_numbers,
            "next_poll": self.next_poll(tenant),
            "books": books,
        }))
    }
}

/// Which of a poll's later books meet a book's token failure too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// Every book: the failure is the tenant's (its token endpoint, its key, the key's `token_uri`).
    Tenant,
    /// The books that need this scope: it is not delegated.
    Scope(Scope),
}

impl Reach {
    /// None when the failure is one user's (not a Workspace user) or not a token failure.
    fn of(e: &SyncError, scope: Scope) -> Option<Reach> {
        match e {
            SyncError::Auth(AuthError::DelegationMissing { .. }) => Some(Reach::Scope(scope)),
            SyncError::Auth(AuthError::UnknownUser { .. }) => None,
            SyncError::Auth(_) => Some(Reach::Tenant),
            _ => None,
        }
    }

    fn covers(self, scope: Scope) -> bool {
        self == Reach::Tenant || self == Reach::Scope(scope)
    }
}

fn failure(at: DateTime<Utc>, code: &str, message: &str, hint: &str) -> SyncFailure {
    SyncFailure { code: code.to_owned(), message: message.to_owned(), hint: hint.to_owned(), at, retry_at: None }
}
