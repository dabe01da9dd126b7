//! One suite, run unchanged against both `Store` backends: sled in a temporary directory and
//! PostgreSQL in a throwaway cluster (tests/common/pg.rs, one database per test). Each case is
//! an async fn over a `Backend`; `conformance!` makes a `sled` and a `postgres` test of it.

#[path = "common/pg.rs"]
mod pg;

use std::sync::Arc;

use chrono::{Duration, Utc};
use gwsync::model::access::{AuditActor, AuditEntry, Role, TokenRecord};
use gwsync::model::contact::{BookState, Change, Contact, Source, personal_book};
use gwsync::model::event::{Status, StoredEvent};
use gwsync::model::key_file::KeyInfo;
use gwsync::model::tenant::{ContactsSettings, TenantRecord};
use gwsync::model::user::UserRecord;
use gwsync::store::pg_store::PgStore;
use gwsync::store::sled_store::SledStore;
use gwsync::store::{
    CalendarState, ChannelAuth, ChannelRecord, EventChange, OutboxMessage, PresenceRecord, SharedStore, StoreError,
    StoredCredentials, SyncInputs,
};
use secrecy::SecretString;

/// Where a case's store lives; `open` may be called again after the last store was dropped.
pub enum Backend {
    Sled(tempfile::TempDir),
    Postgres(String),
}

impl Backend {
    async fn sled() -> Backend {
        Backend::Sled(tempfile::tempdir().unwrap())
    }

    async fn postgres() -> Backend {
        Backend::Postgres(pg::fresh_database().await)
    }

    async fn try_open(&self) -> Result<SharedStore, StoreError> {
        Ok(match self {
            Backend::Sled(dir) => Arc::new(SledStore::open(dir.path(), 8)?),
            Backend::Postgres(url) => Arc::new(
                PgStore::connect(&SecretString::from(url.clone()), 4, std::time::Duration::from_secs(10)).await?,
            ),
        })
    }

    async fn open(&self) -> SharedStore {
        self.try_open().await.unwrap()
    }

    /// Writes a schema version into the store's metadata, as a newer gwsync would.
    async fn write_schema_version(&self, version: u32) {
        match self {
            Backend::Sled(dir) => {
                let db = sled::open(dir.path()).unwrap();
                db.open_tree("meta").unwrap().insert("schema_version", &version.to_be_bytes()).unwrap();
                db.flush().unwrap();
            }
            Backend::Postgres(url) => {
                use sqlx::Connection as _;
                let mut c = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::query("UPDATE gwsync_meta SET value = $1 WHERE key = 'schema_version'")
                    .bind(i64::from(version))
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
        }
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        $(mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sled() {
                super::$name(super::Backend::sled().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::Backend::postgres().await).await
            }
        })*
    };
}

conformance!(
    records_survive_reopening_and_tenants_delete_with_their_users,
    a_sync_result_lands_whole_and_deleting_a_series_takes_its_exceptions,
    what_a_sync_starts_from_comes_only_for_a_user_of_an_existing_tenant,
    dirty_marks_clear_only_at_their_generation,
    a_notification_rests_on_an_unread_mark_and_marks_anew_once_a_sync_read_it,
    a_busy_read_leaves_the_next_mark_unread_until_its_horizon,
    deleting_a_user_or_tenant_takes_everything_of_theirs,
    a_newer_message_supersedes_older_ones_and_deleted_users_get_nothing_written,
    a_recreated_tenant_has_no_key_while_the_retired_one_stays_readable,
    the_channel_auth_follows_every_channel_write_and_survives_reopening,
    outbox_messages_update_only_while_queued,
    contact_books_apply_whole,
    tokens_keep_a_revocation_made_while_a_lazy_update_runs,
    audit_pages_newest_first_filters_by_tenant_and_prunes,
    writes_racing_a_user_deletion_leave_nothing_behind,
    listings_for_copying_see_every_record,
    a_newer_schema_is_refused,
);

pub fn tenant(id: &str) -> TenantRecord {
    TenantRecord {
        id: id.into(),
        domain: "acme.se".into(),
        directory_admin: None,
        default_region: "SE".into(),
        phone_system: None,
        contacts: ContactsSettings::default(),
        created_at: Utc::now(),
        updated_at: Utc::now(),
        export_token_digest: None,
        status_events: Default::default(),
        admins: Vec::new(),
        self_service: false,
    }
}

pub fn user(tenant: &str, email: &str) -> UserRecord {
    UserRecord {
        tenant: tenant.into(),
        email: email.into(),
        external_id: None,
        profiles: vec![],
        status_events: Default::default(),
        created_at: Utc::now(),
        updated_at: Utc::now(),
    }
}

pub fn event(id: &str, master: Option<&str>) -> StoredEvent {
    StoredEvent {
        id: id.into(),
        status: Status::Confirmed,
        summary: Some("x \u{0} with a NUL".into()),
        start: None,
        end: None,
        recurrence: vec![],
        recurring_event_id: master.map(str::to_owned),
        original_start: None,
        transparent: false,
        event_type: "default".into(),
        visibility: "default".into(),
        self_response: None,
        updated: None,
    }
}

pub fn message(tenant: &str, user: &str, sequence: u64) -> OutboxMessage {
    OutboxMessage {
        tenant: tenant.into(),
        user: user.into(),
        sequence,
        id: format!("msg_{sequence}"),
        body: "{}".into(),
        created_at: Utc::now(),
        attempts: 0,
        next_attempt_at: Utc::now(),
        last_error: None,
    }
}

pub fn contact(name: &str) -> Contact {
    Contact {
        resource_name: format!("people/{name}"),
        source: Source::Shared,
        name: Some(name.into()),
        given_name: None,
        family_name: None,
        organization: None,
        title: None,
        department: None,
        emails: vec![],
        phones: vec![],
    }
}

pub fn channel(id: &str, tenant: &str, user: &str) -> ChannelRecord {
    ChannelRecord {
        id: id.into(),
        token_digest: "ab".repeat(32),
        tenant: tenant.into(),
        user: user.into(),
        resource_id: Some("r".into()),
        expiration: Some(Utc::now() + Duration::days(1)),
        created_at: Utc::now(),
        orphaned: false,
    }
}

pub fn credentials(client: &str) -> StoredCredentials {
    StoredCredentials {
        info: KeyInfo {
            client_email: format!("{client}@p.iam.gserviceaccount.com"),
            client_id: "1".into(),
            project_id: Some("p".into()),
            private_key_id: None,
            token_uri: "https://oauth2.googleapis.com/token".into(),
        },
        sealed: format!("sealed-{client}"),
        uploaded_at: Utc::now(),
    }
}

pub fn token(id: &str, tenant: Option<&str>) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        name: format!("token {id}"),
        role: if tenant.is_some() { Role::TenantAdmin } else { Role::Operator },
        tenant: tenant.map(str::to_owned),
        digest: format!("digest-{id}"),
        created_at: Utc::now(),
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
        created_by: "admin".into(),
    }
}

pub fn audit_entry(id: u64, tenant: Option<&str>, at: chrono::DateTime<Utc>) -> AuditEntry {
    AuditEntry {
        id,
        at,
        actor: AuditActor::default(),
        action: "user.put".into(),
        route: None,
        tenant: tenant.map(str::to_owned),
        target: None,
        status: Some(200),
        code: None,
        detail: None,
    }
}

fn upserts(events: impl IntoIterator<Item = StoredEvent>) -> Vec<EventChange> {
    events.into_iter().map(|e| EventChange::Upsert(Box::new(e))).collect()
}

async fn event_ids(s: &SharedStore, tenant: &str, user: &str) -> Vec<String> {
    s.events(tenant, user).await.unwrap().into_iter().map(|e| e.id).collect()
}

async fn records_survive_reopening_and_tenants_delete_with_their_users(b: Backend) {
    {
        let s = b.open().await;
        s.put_tenant(&tenant("acme")).await.unwrap();
        s.put_tenant(&tenant("acme2")).await.unwrap();
        s.put_user(&user("acme", "a@acme.se")).await.unwrap();
        s.put_user(&user("acme2", "b@acme.se")).await.unwrap();
        s.apply_sync("acme", "a@acme.se", false, &upserts([event("e1", None)]), &CalendarState::default())
            .await
            .unwrap();
        s.flush().await.unwrap();
    }
    let s = b.open().await;
    assert_eq!(s.tenants().await.unwrap().len(), 2);
    assert_eq!(s.tenant("acme").await.unwrap().unwrap().domain, "acme.se");
    assert_eq!(s.user("acme", "a@acme.se").await.unwrap().unwrap().email, "a@acme.se");
    assert_eq!(s.users("acme").await.unwrap().len(), 1, "listings stop at the tenant boundary");
    assert_eq!(event_ids(&s, "acme", "a@acme.se").await, ["e1"], "an event keeps its text (a NUL too)");
    assert_eq!(s.events("acme", "a@acme.se").await.unwrap()[0], event("e1", None));
    assert!(s.delete_tenant("acme").await.unwrap());
    assert!(s.users("acme").await.unwrap().is_empty());
    assert!(s.tenant("acme").await.unwrap().is_none());
    assert_eq!(s.users("acme2").await.unwrap().len(), 1);
    assert!(!s.delete_tenant("acme").await.unwrap());
}

async fn a_sync_result_lands_whole_and_deleting_a_series_takes_its_exceptions(b: Backend) {
    let s = b.open().await;
    s.put_user(&user("acme", "u@x")).await.unwrap();
    s.put_user(&user("acme", "v@x")).await.unwrap();
    assert!(
        matches!(s.apply_sync("acme", "w@x", false, &[], &CalendarState::default()).await, Err(StoreError::Gone)),
        "nothing is written for a user that does not exist"
    );
    assert!(s.calendar_state("acme", "w@x").await.unwrap().is_none());
    let st = CalendarState { sync_token: Some("t1".into()), ..Default::default() };
    let n = s
        .apply_sync(
            "acme",
            "u@x",
            false,
            &upserts([event("a", None), event("s", None), event("s_1", Some("s")), event("b", None)]),
            &st,
        )
        .await
        .unwrap();
    assert_eq!(n, 4);
    s.apply_sync("acme", "v@x", false, &upserts([event("other", None)]), &st).await.unwrap();
    let st2 = CalendarState { sync_token: Some("t2".into()), ..Default::default() };
    let n = s
        .apply_sync("acme", "u@x", false, &[EventChange::Delete("s".into()), EventChange::Delete("a".into())], &st2)
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(event_ids(&s, "acme", "u@x").await, ["b"]);
    assert_eq!(s.calendar_state("acme", "u@x").await.unwrap().unwrap().sync_token.as_deref(), Some("t2"));
    // An id twice in one result: the last one wins.
    let mut newer = event("b", None);
    newer.summary = Some("newer".into());
    s.apply_sync("acme", "u@x", false, &upserts([event("b", None), newer.clone()]), &st2).await.unwrap();
    assert_eq!(s.events("acme", "u@x").await.unwrap(), [newer.clone()]);
    // A sync that changed nothing stores its new token and keeps every event.
    let quiet = CalendarState { sync_token: Some("t2b".into()), events: 1, ..Default::default() };
    assert_eq!(s.apply_sync("acme", "u@x", false, &[], &quiet).await.unwrap(), 1);
    assert_eq!(s.calendar_state("acme", "u@x").await.unwrap(), Some(quiet));
    assert_eq!(s.events("acme", "u@x").await.unwrap(), [newer]);
    let n = s.apply_sync("acme", "u@x", true, &upserts([event("c", None)]), &st).await.unwrap();
    assert_eq!((n, event_ids(&s, "acme", "u@x").await), (1, vec!["c".to_owned()]), "a wipe replaces everything");
    assert_eq!(s.events("acme", "v@x").await.unwrap().len(), 1, "other calendars untouched");
    let state = CalendarState { sync_token: Some("t3".into()), failures: 2, ..Default::default() };
    s.put_calendar_state("acme", "u@x", &state).await.unwrap();
    assert_eq!(s.calendar_state("acme", "u@x").await.unwrap(), Some(state));
    assert!(s.delete_user("acme", "u@x").await.unwrap());
    assert!(s.events("acme", "u@x").await.unwrap().is_empty());
    assert!(s.calendar_state("acme", "u@x").await.unwrap().is_none());
    assert!(!s.delete_user("acme", "u@x").await.unwrap());
}

async fn what_a_sync_starts_from_comes_only_for_a_user_of_an_existing_tenant(b: Backend) {
    let s = b.open().await;
    assert_eq!(s.sync_inputs("acme", "u@x").await.unwrap(), None, "no tenant, no user");
    s.put_tenant(&tenant("acme")).await.unwrap();
    assert_eq!(s.sync_inputs("acme", "u@x").await.unwrap(), None, "no user");
    s.put_user(&user("acme", "u@x")).await.unwrap();
    s.put_user(&user("acme", "v@x")).await.unwrap();
    assert_eq!(s.sync_inputs("acme", "u@x").await.unwrap(), Some(SyncInputs::default()), "never synced");
    let state = CalendarState { sync_token: Some("t1".into()), events: 1, ..Default::default() };
    s.apply_sync("acme", "u@x", false, &upserts([event("a", None)]), &state).await.unwrap();
    let (b2, a1) = (channel("b2", "acme", "u@x"), channel("a1", "acme", "u@x"));
    for c in [&b2, &a1, &channel("c3", "acme", "v@x")] {
        s.put_channel(c).await.unwrap();
    }
    let inputs = s.sync_inputs("acme", "u@x").await.unwrap().expect("inputs");
    assert_eq!(inputs.state, Some(state));
    assert_eq!(inputs.channels, [a1, b2], "the user's own channels, by id");
    // A user whose tenant is gone (a write racing the tenant's deletion) gets nothing.
    s.put_user(&user("gone", "w@x")).await.unwrap();
    assert_eq!(s.sync_inputs("gone", "w@x").await.unwrap(), None);
}

async fn dirty_marks_clear_only_at_their_generation(b: Backend) {
    let s = b.open().await;
    assert_eq!(s.mark_dirty("acme", "u@x").await.unwrap(), 1);
    assert_eq!(s.mark_dirty("acme", "u@x").await.unwrap(), 2);
    assert_eq!(s.mark_dirty("acme", "v@x").await.unwrap(), 1, "generations count per calendar");
    assert!(!s.clear_dirty("acme", "u@x", 1).await.unwrap(), "a newer mark survives");
    assert_eq!(
        s.dirty_calendars().await.unwrap(),
        [("acme".to_owned(), "u@x".to_owned(), 2), ("acme".to_owned(), "v@x".to_owned(), 1)]
    );
    assert!(s.clear_dirty("acme", "u@x", 2).await.unwrap());
    assert!(!s.clear_dirty("acme", "u@x", 2).await.unwrap(), "cleared once");
    assert!(s.clear_dirty("acme", "v@x", 1).await.unwrap());
    assert!(s.dirty_calendars().await.unwrap().is_empty());
    // The end of a sync on a shared store: clear what it read, and learn what is left.
    let first = s.mark_dirty("acme", "w@x").await.unwrap();
    assert_eq!(s.clear_dirty_then_pending("acme", "w@x", None).await.unwrap(), Some(first), "nothing read: kept");
    let newer = s.mark_dirty("acme", "w@x").await.unwrap();
    assert_eq!(s.clear_dirty_then_pending("acme", "w@x", Some(first)).await.unwrap(), Some(newer), "a newer mark left");
    assert_eq!(s.clear_dirty_then_pending("acme", "w@x", Some(newer)).await.unwrap(), None, "cleared: none left");
    assert!(s.dirty_calendars().await.unwrap().is_empty());
    // Concurrent marks may share one (a burst committed together); the stored generation is the
    // newest any of them returned, and a later mark is above it.
    let marks = futures_util::future::join_all((0..20).map(|_| s.mark_dirty("acme", "u@x"))).await;
    let generations: Vec<u64> = marks.into_iter().map(Result::unwrap).collect();
    let newest = generations.iter().copied().max().unwrap();
    assert!(generations.iter().all(|g| (1..=20).contains(g)), "{generations:?}");
    assert_eq!(s.dirty_calendars().await.unwrap(), [("acme".to_owned(), "u@x".to_owned(), newest)]);
    assert!(s.mark_dirty("acme", "u@x").await.unwrap() > newest);
}

/// A sync's read as its window ends: the promise rounds down, so the window's end may be a
/// moment after the instant it gave; a read refused for that moment waits it out, once.
async fn read_once_open(
    s: &dyn gwsync::store::Store,
    t: &str,
    u: &str,
    spacing: std::time::Duration,
) -> gwsync::store::MarkRead {
    use gwsync::store::MarkRead;
    use std::time::Duration;
    match s.read_dirty(t, u, spacing, Duration::ZERO).await.unwrap() {
        MarkRead::NotBefore(wait) => {
            assert!(wait <= Duration::from_millis(50), "{wait:?}");
            tokio::time::sleep(wait).await;
            s.read_dirty(t, u, spacing, Duration::ZERO).await.unwrap()
        }
        read => read,
    }
}

async fn a_notification_rests_on_an_unread_mark_and_marks_anew_once_a_sync_read_it(b: Backend) {
    use gwsync::store::MarkRead;
    use std::time::{Duration, Instant};
    let s = b.open().await;
    let (t, u) = ("acme", "u@x");
    s.put_tenant(&tenant(t)).await.unwrap();
    // No calendar state yet: the sync at registration reads before it writes any, and its
    // promise must hold as well as a later sync's.
    s.put_user(&user(t, u)).await.unwrap();
    // The settling window a sync reads with; short, because it is the database's clock.
    let spacing = Duration::from_millis(200);
    let first = s.mark_unread(t, u).await.unwrap();
    assert_eq!((first.generation, first.unread_until), (1, None), "a new mark, which a sync may read at once");
    assert!(first.created, "made from nothing: whoever made it must see to its sync");
    let resting = s.mark_unread(t, u).await.unwrap();
    assert_eq!(resting.generation, 1, "no sync read it: it covers this one too");
    assert!(!resting.created, "it was there: the one that made it sees to it");
    let burst = futures_util::future::join_all((0..20).map(|_| s.mark_unread(t, u))).await;
    assert!(burst.into_iter().all(|m| m.unwrap().generation == 1), "a burst rests on the one unread mark");
    assert_eq!(s.dirty_calendars().await.unwrap(), [(t.to_owned(), u.to_owned(), 1)]);

    // A sync reads it: a notification from now on may be about a change that sync misses.
    let before_read = Instant::now();
    assert_eq!(s.read_dirty(t, u, spacing, Duration::ZERO).await.unwrap(), MarkRead::Read(Some(1)));
    match s.read_dirty(t, u, spacing, Duration::ZERO).await.unwrap() {
        MarkRead::NotBefore(wait) => assert!(wait > Duration::ZERO && wait <= spacing, "{wait:?}"),
        other => panic!("a second read within the settling window must be refused: {other:?}"),
    }
    let second = s.mark_unread(t, u).await.unwrap();
    assert_eq!(second.generation, 2, "read: a newer mark");
    assert!(!second.created, "on the row the reading sync clears, which then fails: that sync runs again");
    let until = second.unread_until.expect("no sync may read it before the window ends");
    assert!(until > Instant::now() && until <= before_read + spacing + Duration::from_millis(50), "{until:?}");
    assert_eq!(s.mark_unread(t, u).await.unwrap().generation, 2, "and that one is unread");
    assert_eq!(s.mark_dirty(t, u).await.unwrap(), 3, "mark_dirty always writes a newer one");
    assert_eq!(s.mark_unread(t, u).await.unwrap().generation, 3);
    let other = s.mark_unread("acme", "v@x").await.unwrap();
    assert_eq!((other.generation, other.unread_until), (1, None), "per calendar");

    // Once the window is over the next sync reads what came after the first; the first sync
    // cannot clear it.
    tokio::time::sleep_until(until.into()).await;
    let read = read_once_open(s.as_ref(), t, u, spacing).await;
    assert_eq!(read, MarkRead::Read(Some(3)));
    assert!(!s.clear_dirty(t, u, 1).await.unwrap());
    assert!(s.clear_dirty(t, u, 3).await.unwrap());
    assert_eq!(s.read_dirty(t, u, spacing, Duration::ZERO).await.unwrap(), MarkRead::Read(None));
    let fresh = s.mark_unread(t, u).await.unwrap();
    assert_eq!(fresh.generation, 1, "cleared: the next notification starts a new mark");
    assert!(fresh.created);
    assert!(
        fresh.unread_until.is_some_and(|at| at > Instant::now()),
        "and the last read's window still holds for it: {fresh:?}"
    );
    assert!(matches!(s.read_dirty(t, u, spacing, Duration::ZERO).await.unwrap(), MarkRead::NotBefore(_)));

    // A read that finds no mark promises as well (the sync at registration): the first
    // notification after it is unread until its window ends.
    let w = "w@x";
    s.put_user(&user(t, w)).await.unwrap();
    let before_read = Instant::now();
    assert_eq!(
        s.read_dirty(t, w, spacing, Duration::ZERO).await.unwrap(),
        MarkRead::Read(None),
        "no mark: nothing to read"
    );
    let after = s.mark_unread(t, w).await.unwrap();
    assert_eq!(after.generation, 1);
    let until = after.unread_until.expect("no sync may read it before the window of the read that found none");
    assert!(until > Instant::now() && until <= before_read + spacing + Duration::from_millis(50), "{until:?}");
    assert!(matches!(s.read_dirty(t, w, spacing, Duration::ZERO).await.unwrap(), MarkRead::NotBefore(_)));

    // The window goes with the user: one created again under the address syncs at once.
    assert!(s.delete_user(t, w).await.unwrap());
    s.put_user(&user(t, w)).await.unwrap();
    s.mark_dirty(t, w).await.unwrap();
    assert!(
        matches!(s.read_dirty(t, w, spacing, Duration::ZERO).await.unwrap(), MarkRead::Read(Some(_))),
        "no window left"
    );
}

async fn a_busy_read_leaves_the_next_mark_unread_until_its_horizon(b: Backend) {
    use gwsync::store::MarkRead;
    use std::time::{Duration, Instant};
    let s = b.open().await;
    let (t, u) = ("acme", "u@x");
    s.put_tenant(&tenant(t)).await.unwrap();
    s.put_user(&user(t, u)).await.unwrap();
    // Short, because it is the database's clock.
    let (spacing, busy_for) = (Duration::from_millis(50), Duration::from_millis(600));
    assert!(s.mark_unread(t, u).await.unwrap().created);
    // A read that is no spell's leaves the mark read, as before.
    assert_eq!(s.read_dirty(t, u, Duration::ZERO, Duration::ZERO).await.unwrap(), MarkRead::Read(Some(1)));
    assert_eq!(s.dirty_generation(t, u).await.unwrap(), Some(1));
    // A busy read makes the next generation with it: unread, and it stays so until the horizon.
    let before_read = Instant::now();
    assert_eq!(s.read_dirty(t, u, spacing, busy_for).await.unwrap(), MarkRead::Read(Some(1)));
    assert_eq!(s.dirty_generation(t, u).await.unwrap(), Some(2), "the mark made ahead");
    let resting = s.mark_unread(t, u).await.unwrap();
    assert_eq!(resting.generation, 2, "a notification rests on it, writing nothing");
    assert!(!resting.created);
    let until = resting.unread_until.expect("unread until the horizon");
    assert!(until > Instant::now() + spacing, "beyond the read's own window: {until:?}");
    assert!(until <= before_read + busy_for + Duration::from_millis(50), "{until:?}");
    assert!(!s.clear_dirty(t, u, 1).await.unwrap(), "the generation read cannot be cleared");
    // The next read within the horizon, moving it on no further, leaves one more.
    tokio::time::sleep(spacing).await;
    let read = read_once_open(s.as_ref(), t, u, spacing).await;
    assert_eq!(read, MarkRead::Read(Some(2)));
    assert!(Instant::now() < until, "the test ran too slowly to read within the horizon");
    assert_eq!(s.dirty_generation(t, u).await.unwrap(), Some(3));
    assert!(!s.clear_dirty(t, u, 2).await.unwrap());
    // After the horizon a read leaves the mark read again, and its sync clears it. (`until`
    // is on the safe side of the database's clock by the statement's latency.)
    tokio::time::sleep_until((until + Duration::from_millis(50)).into()).await;
    let read = read_once_open(s.as_ref(), t, u, spacing).await;
    assert_eq!(read, MarkRead::Read(Some(3)));
    assert_eq!(s.dirty_generation(t, u).await.unwrap(), Some(3), "past the horizon: nothing made ahead");
    let newer = s.mark_unread(t, u).await.unwrap();
    assert_eq!(newer.generation, 4, "read: a notification writes a newer mark again");
    assert!(s.clear_dirty(t, u, 4).await.unwrap());
}

async fn deleting_a_user_or_tenant_takes_everything_of_theirs(b: Backend) {
    let s = b.open().await;
    s.put_tenant(&tenant("acme")).await.unwrap();
    s.put_tenant(&tenant("other")).await.unwrap();
    for (t, u) in [("acme", "a@x"), ("acme", "b@x"), ("other", "a@x")] {
        s.put_user(&user(t, u)).await.unwrap();
        s.apply_sync(t, u, false, &upserts([event("e", None)]), &CalendarState::default()).await.unwrap();
        s.enqueue_message(&PresenceRecord { sequence: 1, last: None, receiver: None }, &message(t, u, 1))
            .await
            .unwrap();
        s.mark_dirty(t, u).await.unwrap();
        s.put_channel(&channel(&format!("ch-{t}-{u}"), t, u)).await.unwrap();
        s.apply_contacts(t, &personal_book(u), false, &[Change::Upsert(Box::new(contact(u)))], &BookState::default())
            .await
            .unwrap();
    }
    s.apply_contacts("acme", "directory", false, &[Change::Upsert(Box::new(contact("d")))], &BookState::default())
        .await
        .unwrap();
    s.put_token(&token("tok-acme", Some("acme"))).await.unwrap();
    s.put_token(&token("tok-op", None)).await.unwrap();

    assert!(s.delete_user("acme", "a@x").await.unwrap());
    assert!(s.user("acme", "a@x").await.unwrap().is_none());
    assert!(s.events("acme", "a@x").await.unwrap().is_empty());
    assert!(s.calendar_state("acme", "a@x").await.unwrap().is_none());
    assert!(s.presence_record("acme", "a@x").await.unwrap().is_none());
    assert!(s.outbox_message("acme", "a@x", 1).await.unwrap().is_none(), "a deleted user's switches are not sent");
    assert_eq!(s.outbox().await.unwrap().len(), 2);
    assert!(!s.dirty_calendars().await.unwrap().iter().any(|(t, u, _)| t == "acme" && u == "a@x"));
    assert!(s.contact_book("acme", &personal_book("a@x")).await.unwrap().is_none());
    assert_eq!(s.contacts("acme").await.unwrap().len(), 2, "their own contacts go, the directory and b's stay");
    let ch = s.channel("ch-acme-a@x").await.unwrap().unwrap();
    assert!(ch.orphaned, "left for the keeper to stop");
    assert!(s.channel_auth("ch-acme-a@x").await.unwrap().unwrap().orphaned, "the webhook sees it too");
    assert!(!s.channel("ch-acme-b@x").await.unwrap().unwrap().orphaned);
    assert_eq!(s.channels_of("acme", "a@x").await.unwrap(), [ch]);

    assert!(s.delete_tenant("acme").await.unwrap());
    assert!(s.users("acme").await.unwrap().is_empty());
    assert!(s.events("acme", "b@x").await.unwrap().is_empty());
    assert!(s.contacts("acme").await.unwrap().is_empty() && s.contact_books("acme").await.unwrap().is_empty());
    assert!(s.channel("ch-acme-b@x").await.unwrap().unwrap().orphaned);
    assert_eq!(s.outbox().await.unwrap().len(), 1);
    assert_eq!(s.dirty_calendars().await.unwrap().len(), 1);
    assert!(s.token("tok-acme").await.unwrap().is_none(), "a tenant's tokens go with it");
    assert!(s.token_by_digest("digest-tok-acme").await.unwrap().is_none());
    assert!(s.token("tok-op").await.unwrap().is_some());
    // The other tenant is untouched.
    assert_eq!(event_ids(&s, "other", "a@x").await, ["e"]);
    assert!(s.presence_record("other", "a@x").await.unwrap().is_some());
    assert!(!s.channel("ch-other-a@x").await.unwrap().unwrap().orphaned);
    assert_eq!(s.contacts("other").await.unwrap().len(), 1);
}

async fn a_newer_message_supersedes_older_ones_and_deleted_users_get_nothing_written(b: Backend) {
    let s = b.open().await;
    s.put_tenant(&tenant("acme")).await.unwrap();
    s.put_user(&user("acme", "a@x")).await.unwrap();
    s.put_user(&user("acme", "b@x")).await.unwrap();
    for seq in 1..=4 {
        s.enqueue_message(&PresenceRecord { sequence: seq, last: None, receiver: None }, &message("acme", "a@x", seq))
            .await
            .unwrap();
    }
    s.enqueue_message(&PresenceRecord { sequence: 1, last: None, receiver: None }, &message("acme", "b@x", 1))
        .await
        .unwrap();
    let queued: Vec<(String, u64)> = s.outbox().await.unwrap().into_iter().map(|m| (m.user, m.sequence)).collect();
    assert_eq!(queued, [("a@x".to_owned(), 4), ("b@x".to_owned(), 1)], "only each user's newest is kept");
    assert_eq!(s.presence_record("acme", "a@x").await.unwrap().unwrap().sequence, 4, "written with the message");
    let mut old = message("acme", "a@x", 2);
    old.attempts = 1;
    assert!(!s.update_message(&old).await.unwrap(), "a failed attempt of a superseded message does not bring it back");
    assert_eq!(s.outbox().await.unwrap().len(), 2);

    let ch = channel("ch1", "acme", "a@x");
    s.put_channel(&ch).await.unwrap();
    assert!(s.delete_user("acme", "a@x").await.unwrap());
    assert!(s.channel("ch1").await.unwrap().unwrap().orphaned);
    assert!(matches!(s.put_channel(&ch).await, Err(StoreError::Gone)), "no live channel for a deleted user");
    assert!(s.channel("ch1").await.unwrap().unwrap().orphaned, "the refused write changed nothing");
    s.put_channel(&ChannelRecord { orphaned: true, ..ch.clone() }).await.unwrap();
    assert!(matches!(
        s.enqueue_message(&PresenceRecord::default(), &message("acme", "a@x", 9)).await,
        Err(StoreError::Gone)
    ));
    assert!(s.presence_record("acme", "a@x").await.unwrap().is_none(), "nothing written with the refused message");
    assert!(s.outbox_message("acme", "a@x", 9).await.unwrap().is_none());
    assert!(matches!(s.put_calendar_state("acme", "a@x", &CalendarState::default()).await, Err(StoreError::Gone)));
    assert!(s.calendar_state("acme", "a@x").await.unwrap().is_none());
}

async fn a_recreated_tenant_has_no_key_while_the_retired_one_stays_readable(b: Backend) {
    let s = b.open().await;
    s.put_tenant(&tenant("acme")).await.unwrap();
    s.put_credentials("acme", &credentials("old")).await.unwrap();
    assert_eq!(s.credentials("acme").await.unwrap().unwrap().sealed, "sealed-old");
    s.put_credentials("acme", &credentials("newer")).await.unwrap();
    assert_eq!(s.credentials("acme").await.unwrap().unwrap().sealed, "sealed-newer", "a key replaces the last");
    assert!(s.retired_credential_tenants().await.unwrap().is_empty());
    assert!(s.delete_tenant("acme").await.unwrap());
    assert!(s.credentials("acme").await.unwrap().is_none());
    assert_eq!(s.retired_credential_tenants().await.unwrap(), ["acme"]);
    s.put_tenant(&tenant("acme")).await.unwrap();
    assert!(s.credentials("acme").await.unwrap().is_none(), "the re-created tenant starts without a key");
    assert_eq!(s.retired_credentials("acme").await.unwrap().unwrap().sealed, "sealed-newer", "the keeper still has it");
    s.put_credentials("acme", &credentials("third")).await.unwrap();
    assert_eq!(s.retired_credentials("acme").await.unwrap().unwrap().sealed, "sealed-newer");
    s.delete_retired_credentials("acme").await.unwrap();
    assert!(s.retired_credentials("acme").await.unwrap().is_none());
    assert!(s.retired_credential_tenants().await.unwrap().is_empty());
    assert_eq!(s.credentials("acme").await.unwrap().unwrap().sealed, "sealed-third");
}

async fn the_channel_auth_follows_every_channel_write_and_survives_reopening(b: Backend) {
    let digest = |secret: &[u8]| {
        use std::fmt::Write as _;
        gwsync::app::sha256(secret).iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    };
    let mut c = ChannelRecord {
        id: "ch-1".into(),
        token_digest: digest(b"secret"),
        tenant: "acme".into(),
        user: "a@x".into(),
        resource_id: None,
        expiration: None,
        created_at: Utc::now(),
        orphaned: false,
    };
    {
        let s = b.open().await;
        s.put_user(&user("acme", "a@x")).await.unwrap();
        assert_eq!(s.channel_auth("ch-1").await.unwrap(), None);
        s.put_channel(&c).await.unwrap();
        let auth = s.channel_auth("ch-1").await.unwrap().unwrap();
        assert_eq!(auth.token_digest, Some(gwsync::app::sha256(b"secret")));
        assert_eq!((auth.tenant.as_str(), auth.user.as_str(), auth.resource_id.as_deref()), ("acme", "a@x", None));
        c.resource_id = Some("res-1".into());
        c.orphaned = true;
        s.put_channel(&c).await.unwrap();
        let auth = s.channel_auth("ch-1").await.unwrap().unwrap();
        assert!(auth.orphaned && auth.resource_id.as_deref() == Some("res-1"), "an update replaces the entry");
        let other = ChannelRecord { id: "ch-2".into(), orphaned: false, ..c.clone() };
        s.put_channel(&other).await.unwrap();
        assert_eq!(s.channels().await.unwrap().len(), 2);
        assert_eq!(s.channels_of("acme", "a@x").await.unwrap().len(), 2, "two while a renewal overlaps");
        s.delete_channel("ch-2").await.unwrap();
        s.delete_channel("ch-2").await.unwrap();
        assert_eq!(s.channel_auth("ch-2").await.unwrap(), None, "a deleted channel is unknown at once");
        assert!(s.channel("ch-2").await.unwrap().is_none());
        assert_eq!(s.channels_of("acme", "a@x").await.unwrap(), [c.clone()]);
        s.flush().await.unwrap();
    }
    let s = b.open().await;
    assert_eq!(s.channel_auth("ch-1").await.unwrap(), Some(Arc::new(ChannelAuth::of(&c))), "there after reopening");
    assert_eq!(s.channel_auth("ch-2").await.unwrap(), None);
    assert_eq!(s.channels().await.unwrap(), [c]);
}

async fn outbox_messages_update_only_while_queued(b: Backend) {
    let s = b.open().await;
    s.put_user(&user("acme", "a@x")).await.unwrap();
    let m = message("acme", "a@x", 7);
    s.enqueue_message(&PresenceRecord { sequence: 7, last: None, receiver: Some("https://pbx".into()) }, &m)
        .await
        .unwrap();
    assert_eq!(s.outbox_message("acme", "a@x", 7).await.unwrap(), Some(m.clone()));
    let failed = OutboxMessage { attempts: 3, last_error: Some("503".into()), ..m.clone() };
    assert!(s.update_message(&failed).await.unwrap());
    assert_eq!(s.outbox_message("acme", "a@x", 7).await.unwrap(), Some(failed.clone()));
    assert_eq!(s.outbox().await.unwrap(), std::slice::from_ref(&failed));
    s.delete_message("acme", "a@x", 7).await.unwrap();
    assert!(!s.update_message(&failed).await.unwrap(), "delivered meanwhile: nothing written");
    assert!(s.outbox().await.unwrap().is_empty());
    let record = PresenceRecord { sequence: 8, last: None, receiver: None };
    s.put_presence_record("acme", "a@x", &record).await.unwrap();
    assert_eq!(s.presence_record("acme", "a@x").await.unwrap(), Some(record));
}

async fn contact_books_apply_whole(b: Backend) {
    let s = b.open().await;
    let state =
        |token: &str, entries: usize| BookState { sync_token: Some(token.into()), entries, ..Default::default() };
    let big: Vec<Change> = (0..2000).map(|i| Change::Upsert(Box::new(contact(&format!("c{i:04}"))))).collect();
    assert_eq!(s.apply_contacts("acme", "directory", false, &big, &state("t1", 2000)).await.unwrap(), 2000);
    let changes = [
        Change::Delete("people/c0000".into()),
        Change::Upsert(Box::new(contact("c0001"))),
        Change::Delete("people/c0001".into()),
        Change::Delete("people/c0002".into()),
        Change::Upsert(Box::new(contact("c0002"))),
        Change::Upsert(Box::new(contact("new"))),
    ];
    assert_eq!(
        s.apply_contacts("acme", "directory", false, &changes, &state("t2", 1999)).await.unwrap(),
        1999,
        "changes apply in order"
    );
    let names: Vec<String> = s.contacts("acme").await.unwrap().into_iter().map(|c| c.resource_name).collect();
    assert!(!names.contains(&"people/c0000".into()) && !names.contains(&"people/c0001".into()));
    assert!(names.contains(&"people/c0002".into()) && names.contains(&"people/new".into()));
    assert_eq!(s.contact_book("acme", "directory").await.unwrap(), Some(state("t2", 1999)));
    s.apply_contacts("acme", "personal:a@x", false, &[Change::Upsert(Box::new(contact("p")))], &state("p1", 1))
        .await
        .unwrap();
    let books: Vec<String> = s.contact_books("acme").await.unwrap().into_iter().map(|(b, _)| b).collect();
    assert_eq!(books, ["directory", "personal:a@x"]);
    assert_eq!(
        s.apply_contacts("acme", "directory", true, &[Change::Upsert(Box::new(contact("only")))], &state("t3", 1))
            .await
            .unwrap(),
        1,
        "a wipe replaces the book"
    );
    assert_eq!(s.contacts("acme").await.unwrap().len(), 2);
    s.delete_contact_book("acme", "directory").await.unwrap();
    assert!(s.contact_book("acme", "directory").await.unwrap().is_none());
    assert_eq!(s.contacts("acme").await.unwrap(), [contact("p")]);
    assert!(s.contacts("acm").await.unwrap().is_empty(), "listings stop at the tenant boundary");
}

async fn tokens_keep_a_revocation_made_while_a_lazy_update_runs(b: Backend) {
    let s = b.open().await;
    s.put_token(&token("t1", Some("acme"))).await.unwrap();
    s.put_token(&token("t2", None)).await.unwrap();
    assert_eq!(s.token_by_digest("digest-t1").await.unwrap().unwrap().id, "t1");
    assert!(s.token_by_digest("digest-nope").await.unwrap().is_none());
    assert_eq!(s.tokens().await.unwrap().len(), 2);
    assert!(s.update_token("nope", &|t| t.name = "x".into()).await.unwrap().is_none());
    let revoked_at = Utc::now();
    // Many lazy `last_used_at` writes race one revocation: every one keeps it.
    let lazies = (0..20).map(|i| {
        let s = s.clone();
        tokio::spawn(async move {
            s.update_token("t1", &move |t| t.last_used_at = Some(Utc::now() + Duration::seconds(i))).await.unwrap()
        })
    });
    let lazies: Vec<_> = lazies.collect();
    let after = s.update_token("t1", &move |t| t.revoked_at = Some(revoked_at)).await.unwrap().unwrap();
    assert_eq!(after.revoked_at, Some(revoked_at));
    for l in lazies {
        l.await.unwrap();
    }
    let t = s.token("t1").await.unwrap().unwrap();
    assert_eq!(t.revoked_at, Some(revoked_at), "no lazy write undid the revocation");
    assert!(t.last_used_at.is_some());
    assert_eq!(s.token_by_digest("digest-t1").await.unwrap().unwrap().revoked_at, Some(revoked_at));
    s.delete_token("t1").await.unwrap();
    assert!(s.token("t1").await.unwrap().is_none() && s.token_by_digest("digest-t1").await.unwrap().is_none());
    assert_eq!(s.tokens().await.unwrap().len(), 1);
}

async fn audit_pages_newest_first_filters_by_tenant_and_prunes(b: Backend) {
    let old = Utc::now() - Duration::days(100);
    let mut last = 0;
    {
        let s = b.open().await;
        for i in 0..10 {
            let id = s.next_audit_id().await.unwrap();
            assert!(id > last || i == 0, "ids rise");
            last = id;
            let tenant = if i % 2 == 0 { Some("acme") } else { Some("other") };
            let at = if i < 4 { old + Duration::minutes(i) } else { Utc::now() };
            s.put_audit(&audit_entry(id, tenant, at)).await.unwrap();
        }
        s.flush().await.unwrap();
    }
    let s = b.open().await;
    let next = s.next_audit_id().await.unwrap();
    assert!(next > last, "ids rise across reopening");
    let all = s.audit(None, None, 100).await.unwrap();
    assert_eq!(all.len(), 10);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let page1 = s.audit(None, None, 3).await.unwrap();
    let page2 = s.audit(None, Some(page1[2].id), 3).await.unwrap();
    assert_eq!(
        page1.iter().chain(&page2).map(|e| e.id).collect::<Vec<_>>(),
        all[..6].iter().map(|e| e.id).collect::<Vec<_>>()
    );
    let acme = s.audit(Some("acme"), None, 100).await.unwrap();
    assert_eq!(acme.len(), 5);
    assert!(acme.iter().all(|e| e.tenant.as_deref() == Some("acme")));
    let acme_page = s.audit(Some("acme"), Some(acme[1].id), 2).await.unwrap();
    assert_eq!(acme_page, acme[2..4]);
    assert_eq!(s.audit(None, Some(u64::MAX), 1).await.unwrap()[0].id, all[0].id);
    // An entry's outcome replaces it.
    let mut outcome = all[0].clone();
    outcome.status = Some(403);
    s.put_audit(&outcome).await.unwrap();
    assert_eq!(s.audit(None, None, 1).await.unwrap(), [outcome]);
    assert_eq!(s.prune_audit(Utc::now() - Duration::days(1)).await.unwrap(), 4);
    assert_eq!(s.audit(None, None, 100).await.unwrap().len(), 6);
    assert_eq!(s.audit(Some("acme"), None, 100).await.unwrap().len(), 3);
    assert_eq!(s.prune_audit(Utc::now() - Duration::days(1)).await.unwrap(), 0);
}

async fn writes_racing_a_user_deletion_leave_nothing_behind(b: Backend) {
    let s = b.open().await;
    for round in 0..5 {
        let email = format!("u{round}@x");
        s.put_user(&user("acme", &email)).await.unwrap();
        let writers: Vec<_> = (0..8u64)
            .map(|i| {
                let (s, email) = (s.clone(), email.clone());
                tokio::spawn(async move {
                    let st = CalendarState { sync_token: Some(format!("t{i}")), ..Default::default() };
                    let sync =
                        s.apply_sync("acme", &email, false, &upserts([event(&format!("e{i}"), None)]), &st).await;
                    let msg = s
                        .enqueue_message(
                            &PresenceRecord { sequence: i + 1, last: None, receiver: None },
                            &message("acme", &email, i + 1),
                        )
                        .await;
                    for r in [sync.map(|_| ()), msg] {
                        assert!(matches!(r, Ok(()) | Err(StoreError::Gone)), "{r:?}");
                    }
                })
            })
            .collect();
        tokio::task::yield_now().await;
        assert!(s.delete_user("acme", &email).await.unwrap());
        for w in writers {
            w.await.unwrap();
        }
        // Writes that lost the race were refused; the ones that won were deleted with the user.
        let late =
            s.apply_sync("acme", &email, false, &upserts([event("late", None)]), &CalendarState::default()).await;
        assert!(matches!(late, Err(StoreError::Gone)));
        assert!(s.events("acme", &email).await.unwrap().is_empty(), "round {round}");
        assert!(s.calendar_state("acme", &email).await.unwrap().is_none(), "round {round}");
        assert!(s.outbox().await.unwrap().iter().all(|m| m.user != email), "round {round}");
        assert!(s.presence_record("acme", &email).await.unwrap().is_none(), "round {round}");
    }
}

async fn listings_for_copying_see_every_record(b: Backend) {
    let s = b.open().await;
    s.put_user(&user("acme", "a@x")).await.unwrap();
    s.put_user(&user("beta", "b@x")).await.unwrap();
    let users: Vec<(String, String)> = s.all_users().await.unwrap().into_iter().map(|u| (u.tenant, u.email)).collect();
    assert_eq!(users, [("acme".to_owned(), "a@x".to_owned()), ("beta".to_owned(), "b@x".to_owned())]);
    s.put_credentials("acme", &credentials("a")).await.unwrap();
    s.put_credentials("beta", &credentials("b")).await.unwrap();
    let creds: Vec<(String, String)> =
        s.all_credentials().await.unwrap().into_iter().map(|(t, c)| (t, c.sealed)).collect();
    assert_eq!(creds, [("acme".to_owned(), "sealed-a".to_owned()), ("beta".to_owned(), "sealed-b".to_owned())]);
    let record = PresenceRecord { sequence: 3, last: None, receiver: None };
    s.put_presence_record("beta", "b@x", &record).await.unwrap();
    assert_eq!(s.presence_records().await.unwrap(), [("beta".to_owned(), "b@x".to_owned(), record)]);
    s.apply_contacts("beta", "directory", false, &[Change::Upsert(Box::new(contact("x")))], &BookState::default())
        .await
        .unwrap();
    s.apply_contacts("acme", "personal:a@x", false, &[Change::Upsert(Box::new(contact("y")))], &BookState::default())
        .await
        .unwrap();
    let books: Vec<(String, String)> =
        s.all_contact_books().await.unwrap().into_iter().map(|(t, b, _)| (t, b)).collect();
    assert_eq!(books, [("acme".to_owned(), "personal:a@x".to_owned()), ("beta".to_owned(), "directory".to_owned())]);
    assert_eq!(s.book_contacts("beta", "directory").await.unwrap(), [contact("x")]);
    assert!(s.book_contacts("beta", "personal:a@x").await.unwrap().is_empty());
    s.restore_dirty("acme", "a@x", 41).await.unwrap();
    assert_eq!(s.mark_dirty("acme", "a@x").await.unwrap(), 42, "a restored mark counts on");
    s.raise_audit_ids(500).await.unwrap();
    assert!(s.next_audit_id().await.unwrap() > 500);
}

async fn a_newer_schema_is_refused(b: Backend) {
    drop(b.open().await);
    b.write_schema_version(99).await;
    assert!(matches!(b.try_open().await, Err(StoreError::NewerSchema { found: 99, .. })));
    b.write_schema_version(gwsync::store::SCHEMA_VERSION).await;
    drop(b.open().await);
}

#[tokio::test]
async fn a_postgres_error_never_shows_the_password() {
    // Nothing listens on port 1: connecting fails fast.
    let url = SecretString::from("postgres://gw:hunter2-secret@127.0.0.1:1/gwsync".to_owned());
    let e = match PgStore::connect(&url, 1, std::time::Duration::from_secs(2)).await {
        Ok(_) => panic!("connected to nothing"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("127.0.0.1:1/gwsync") && !e.contains("hunter2"), "{e}");
    let url = SecretString::from("postgres://gw:hunter2-secret@127.0.0.1:notaport/gwsync".to_owned());
    let e = PgStore::connect(&url, 1, std::time::Duration::from_secs(2)).await.err().map(|e| e.to_string());
    assert!(e.as_deref().is_some_and(|e| !e.contains("hunter2")), "{e:?}");
}

/// A store with every kind of record, some of them in awkward states.
async fn fill(s: &SharedStore) {
    for t in ["acme", "beta"] {
        s.put_tenant(&tenant(t)).await.unwrap();
        s.put_credentials(t, &credentials(t)).await.unwrap();
        for u in ["a@x", "b@x"] {
            s.put_user(&user(t, u)).await.unwrap();
            let st = CalendarState { sync_token: Some(format!("tok-{t}-{u}")), events: 3, ..Default::default() };
            s.apply_sync(t, u, false, &upserts([event("s", None), event("s_1", Some("s")), event("e", None)]), &st)
                .await
                .unwrap();
            s.put_channel(&channel(&format!("ch-{t}-{u}"), t, u)).await.unwrap();
            for seq in 1..=2 {
                let record = PresenceRecord { sequence: seq, last: None, receiver: Some("https://pbx".into()) };
                s.enqueue_message(&record, &message(t, u, seq)).await.unwrap();
            }
            s.apply_contacts(
                t,
                &personal_book(u),
                false,
                &[Change::Upsert(Box::new(contact(u)))],
                &BookState::default(),
            )
            .await
            .unwrap();
        }
        s.mark_dirty(t, "a@x").await.unwrap();
        s.mark_dirty(t, "a@x").await.unwrap();
        let dir: Vec<Change> = (0..50).map(|i| Change::Upsert(Box::new(contact(&format!("{t}{i}"))))).collect();
        let state = BookState { sync_token: Some("people".into()), entries: 50, ..Default::default() };
        s.apply_contacts(t, "directory", false, &dir, &state).await.unwrap();
        s.put_token(&token(&format!("tok-{t}"), Some(t))).await.unwrap();
    }
    // A user with presence but nothing queued, and a deleted tenant's retired key and orphan.
    s.put_user(&user("beta", "c@x")).await.unwrap();
    s.put_presence_record("beta", "c@x", &PresenceRecord { sequence: 9, last: None, receiver: None }).await.unwrap();
    s.put_tenant(&tenant("gone")).await.unwrap();
    s.put_credentials("gone", &credentials("gone")).await.unwrap();
    s.put_user(&user("gone", "z@x")).await.unwrap();
    s.put_channel(&channel("ch-gone", "gone", "z@x")).await.unwrap();
    s.delete_tenant("gone").await.unwrap();
    s.put_token(&token("op", None)).await.unwrap();
    for i in 0..5 {
        let id = s.next_audit_id().await.unwrap();
        s.put_audit(&audit_entry(id, if i % 2 == 0 { Some("acme") } else { None }, Utc::now())).await.unwrap();
    }
    s.flush().await.unwrap();
}

/// Everything a store holds, as JSON, in the order the listings give.
async fn snapshot(s: &SharedStore) -> serde_json::Value {
    use serde_json::json;
    let users = s.all_users().await.unwrap();
    let mut calendars = Vec::new();
    for u in &users {
        calendars.push(json!([
            u.tenant,
            u.email,
            s.calendar_state(&u.tenant, &u.email).await.unwrap(),
            s.events(&u.tenant, &u.email).await.unwrap(),
            s.channels_of(&u.tenant, &u.email).await.unwrap(),
        ]));
    }
    let mut books = Vec::new();
    for (t, b, state) in s.all_contact_books().await.unwrap() {
        books.push(json!([t, b, state, s.book_contacts(&t, &b).await.unwrap()]));
    }
    let mut retired = Vec::new();
    for t in s.retired_credential_tenants().await.unwrap() {
        retired.push(json!([t, s.retired_credentials(&t).await.unwrap()]));
    }
    json!({
        "tenants": s.tenants().await.unwrap(),
        "credentials": s.all_credentials().await.unwrap(),
        "retired": retired,
        "users": users,
        "calendars": calendars,
        "dirty": s.dirty_calendars().await.unwrap(),
        "channels": s.channels().await.unwrap(),
        "presence": s.presence_records().await.unwrap(),
        "outbox": s.outbox().await.unwrap(),
        "books": books,
        "tokens": s.tokens().await.unwrap(),
        "audit": s.audit(None, None, usize::MAX).await.unwrap(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_copy_moves_everything_from_sled_to_postgres_and_back() {
    use gwsync::store::copy;
    let (a, b, c) = (Backend::sled().await, Backend::postgres().await, Backend::sled().await);
    let (sa, sb, sc) = (a.open().await, b.open().await, c.open().await);
    fill(&sa).await;
    let original = snapshot(&sa).await;
    let counts = copy::copy(&sa, &sb).await.unwrap();
    assert_eq!(counts, copy::counts(&sa).await.unwrap());
    assert_eq!((counts.0["users"], counts.0["events"], counts.0["contacts"]), (5, 12, 104));
    assert_eq!((counts.0["retired_credentials"], counts.0["outbox"], counts.0["presence"]), (1, 4, 5));
    assert_eq!(snapshot(&sb).await, original, "sled → PostgreSQL keeps every record as it was");
    assert_eq!(copy::copy(&sb, &sc).await.unwrap(), counts);
    assert_eq!(snapshot(&sc).await, original, "and back");
    let newest = sa.audit(None, None, 1).await.unwrap()[0].id;
    assert!(sb.next_audit_id().await.unwrap() > newest && sc.next_audit_id().await.unwrap() > newest);
    assert_eq!(sb.mark_dirty("acme", "a@x").await.unwrap(), 3, "generations carry over");
    let e = copy::copy(&sa, &sb).await.unwrap_err().to_string();
    assert!(e.contains("not empty"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_copy_command_copies_a_data_dir_into_postgres_and_refuses_a_full_target() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s: SharedStore = Arc::new(SledStore::open(&dir.path().join("db"), 8).unwrap());
        fill(&s).await;
    }
    let url = pg::fresh_database().await;
    let run = |from: &str, to: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_gwsync"))
            .args(["store", "copy", "--from", from, "--to", to])
            .output()
            .unwrap()
    };
    let dir_arg = dir.path().to_str().unwrap();
    let out = run(dir_arg, &url);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["users", "5", "5"]), "{stdout}");
    let out = run(dir_arg, &url);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("not empty"), "{stderr}");
    let missing = dir.path().join("nothing-here");
    let out = run(missing.to_str().unwrap(), &url);
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no gwsync database"));
    // A password never shows, even in a failure.
    let out = run(dir_arg, "postgres://gw:hunter2-secret@127.0.0.1:1/x");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && !stderr.contains("hunter2"), "{stderr}");
    let s = PgStore::connect(&SecretString::from(url), 2, std::time::Duration::from_secs(5)).await.unwrap();
    assert_eq!(gwsync::store::Store::all_users(&s).await.unwrap().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_keeps_its_state_in_postgresql_when_a_database_url_is_set() {
    let url = pg::fresh_database().await;
    let data = tempfile::tempdir().unwrap();
    let config = gwsync::config::Config {
        data_dir: data.path().to_path_buf(),
        admin_token: Some(SecretString::from("test-admin-token-0123456789".to_owned())),
        master_key: Some(SecretString::from("MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=".to_owned())),
        public_url: Some("https://gwsync.example.com".parse().unwrap()),
        store: gwsync::config::StoreConfig {
            database_url: Some(SecretString::from(url.clone())),
            ..Default::default()
        },
        ..Default::default()
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(gwsync::serve(config, listener, async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
        assert!(std::time::Instant::now() < deadline, "gwsync on PostgreSQL did not become ready");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let r = http
        .put(format!("{base}/api/v1/tenants/acme"))
        .bearer_auth("test-admin-token-0123456789")
        .json(&serde_json::json!({"domain": "acme.test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    assert!(!data.path().join("db").exists(), "no sled database beside PostgreSQL");
    let s = PgStore::connect(&SecretString::from(url), 2, std::time::Duration::from_secs(5)).await.unwrap();
    let tenants = gwsync::store::Store::tenants(&s).await.unwrap();
    assert_eq!(tenants.iter().map(|t| t.domain.as_str()).collect::<Vec<_>>(), ["acme.test"]);
}

/// Two stores on one database, as two replicas: a channel one of them just made is never
/// refused by the other (an id it does not hold is read), and its own deletions count at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_verifies_a_channel_another_replica_just_made() {
    let b = Backend::postgres().await;
    let (one, other) = (b.open().await, b.open().await);
    let c = ChannelRecord {
        id: "ch-9".into(),
        token_digest: "00".repeat(32),
        tenant: "acme".into(),
        user: "a@x".into(),
        resource_id: Some("res-9".into()),
        expiration: None,
        created_at: Utc::now(),
        orphaned: false,
    };
    one.put_user(&user("acme", "a@x")).await.unwrap();
    assert_eq!(other.channel_auth("ch-9").await.unwrap(), None, "not made yet");
    one.put_channel(&c).await.unwrap();
    let seen = other.channel_auth("ch-9").await.unwrap().expect("the other replica's new channel");
    assert_eq!(seen.resource_id.as_deref(), Some("res-9"));
    other.delete_channel("ch-9").await.unwrap();
    assert_eq!(other.channel_auth("ch-9").await.unwrap(), None, "its own deletion counts at once");
    assert_eq!(one.channel(&c.id).await.unwrap(), None);
}

/// A notification resting on an unread mark is answered while another calendar's mark waits to
/// be written (here for a row lock another transaction holds; under a storm, for the disk): it
/// rests without waiting for anyone's write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_resting_on_an_unread_mark_does_not_wait_for_another_calendars_write() {
    use gwsync::store::MarkRead;
    use sqlx::Connection as _;
    use std::time::Duration;
    let b = Backend::postgres().await;
    let Backend::Postgres(url) = &b else { unreachable!("a PostgreSQL backend") };
    let s = b.open().await;
    s.put_tenant(&tenant("acme")).await.unwrap();
    for u in ["a@x", "b@x"] {
        s.put_user(&user("acme", u)).await.unwrap();
        assert!(s.mark_unread("acme", u).await.unwrap().created);
    }
    // b@x's mark was read, so its next notification writes a newer one; a@x's is unread.
    assert_eq!(s.read_dirty("acme", "b@x", Duration::ZERO, Duration::ZERO).await.unwrap(), MarkRead::Read(Some(1)));
    let mut blocker = sqlx::PgConnection::connect(url).await.unwrap();
    let mut tx = blocker.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM dirty WHERE tenant = 'acme' AND email = 'b@x' FOR UPDATE")
        .execute(&mut *tx)
        .await
        .unwrap();
    let writing = tokio::spawn({
        let s = s.clone();
        async move { s.mark_unread("acme", "b@x").await }
    });
    // The write waits for the lock …
    let mut watcher = sqlx::PgConnection::connect(url).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
        )
        .fetch_one(&mut watcher)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "b@x's write never waited for the lock");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // … and a@x's notification is answered meanwhile, resting on its unread mark.
    let resting = tokio::time::timeout(Duration::from_secs(5), s.mark_unread("acme", "a@x"))
        .await
        .expect("answered while another calendar's write waits")
        .unwrap();
    assert_eq!((resting.generation, resting.created), (1, false));
    assert!(!writing.is_finished(), "b@x's write still waits");
    tx.rollback().await.unwrap();
    let written = writing.await.unwrap().unwrap();
    assert_eq!(written.generation, 2, "then written: a newer mark for the sync that read b@x's");
}

/// Another replica on `b`'s database, keeping channels in memory for `ttl`.
async fn replica_with_channel_cache_ttl(b: &Backend, ttl: std::time::Duration) -> SharedStore {
    let Backend::Postgres(url) = b else { unreachable!("a PostgreSQL backend") };
    Arc::new(
        PgStore::connect(&SecretString::from(url.clone()), 2, std::time::Duration::from_secs(10))
            .await
            .unwrap()
            .with_channel_cache_ttl(ttl),
    )
}

/// A channel another replica changed is seen once its time in memory is over: the first
/// notification after that is still answered from memory, without waiting for the database,
/// while the channel is read again in the background; the next ones see the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_sees_another_replicas_channel_change_after_its_cache_time_without_waiting_for_it() {
    use std::time::Duration;
    let b = Backend::postgres().await;
    let one = b.open().await;
    let ttl = Duration::from_millis(300);
    let other = replica_with_channel_cache_ttl(&b, ttl).await;
    one.put_tenant(&tenant("acme")).await.unwrap();
    one.put_user(&user("acme", "a@x")).await.unwrap();
    let c = channel("ch-7", "acme", "a@x");
    one.put_channel(&c).await.unwrap();
    assert!(!other.channel_auth("ch-7").await.unwrap().expect("read once").orphaned);
    // Deleting the user orphans its channel, on the first replica.
    assert!(one.delete_user("acme", "a@x").await.unwrap());
    assert!(one.channel_auth("ch-7").await.unwrap().expect("kept for the keeper").orphaned);
    assert!(!other.channel_auth("ch-7").await.unwrap().unwrap().orphaned, "within its time: from memory");
    tokio::time::sleep(ttl).await;
    assert!(
        !other.channel_auth("ch-7").await.unwrap().unwrap().orphaned,
        "past its time: still answered from memory, while it is read again"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !other.channel_auth("ch-7").await.unwrap().unwrap().orphaned {
        assert!(tokio::time::Instant::now() < deadline, "the background read never landed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// After a quiet spell longer than the cache's time, a storm finds every channel stale at once:
/// they are all answered from memory while read again together, and each lands as the database
/// has it — a channel deleted elsewhere is forgotten (and then refused), one orphaned elsewhere
/// is seen orphaned, the rest stay as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_channels_are_read_again_together_each_as_the_database_has_it() {
    use std::time::Duration;
    let b = Backend::postgres().await;
    let one = b.open().await;
    let ttl = Duration::from_millis(300);
    let other = replica_with_channel_cache_ttl(&b, ttl).await;
    one.put_tenant(&tenant("acme")).await.unwrap();
    let ids: Vec<String> = (0..40).map(|i| format!("ch-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let email = format!("u{i}@x");
        one.put_user(&user("acme", &email)).await.unwrap();
        one.put_channel(&channel(id, "acme", &email)).await.unwrap();
        assert!(other.channel_auth(id).await.unwrap().is_some(), "read once");
    }
    one.delete_channel("ch-0").await.unwrap();
    assert!(one.delete_user("acme", "u1@x").await.unwrap(), "orphans ch-1");
    tokio::time::sleep(ttl).await;
    for id in &ids {
        assert!(other.channel_auth(id).await.unwrap().is_some(), "{id}: past its time, answered from memory");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let gone = other.channel_auth("ch-0").await.unwrap().is_none();
        let orphaned = other.channel_auth("ch-1").await.unwrap().is_some_and(|c| c.orphaned);
        if gone && orphaned {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the background reads never landed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (i, id) in ids.iter().enumerate().skip(2) {
        let c = other.channel_auth(id).await.unwrap().unwrap_or_else(|| panic!("{id} kept"));
        assert_eq!((c.user.as_str(), c.orphaned), (format!("u{i}@x").as_str(), false), "{id} as it was");
    }
}

/// Two replicas marking the same calendars at once, each burst in its own order (as
/// notifications arrive): every mark is answered, none with an error (their statements lock
/// rows in one order, so they cannot deadlock, which PostgreSQL would break only after a second
/// by failing one of them: a 503 to Google).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_marking_the_same_calendars_at_once_never_fail() {
    let b = Backend::postgres().await;
    let (one, other) = (b.open().await, b.open().await);
    let users: Vec<String> = (0..300).map(|i| format!("u{i:03}@x")).collect();
    let spacing = std::time::Duration::ZERO;
    let mut read = vec![0u64; users.len()];
    for round in 0..8 {
        // Every mark read, so each notification writes a new generation (the rows are locked).
        for (u, seen) in users.iter().zip(&mut read) {
            if let gwsync::store::MarkRead::Read(Some(g)) =
                one.read_dirty("acme", u, spacing, std::time::Duration::ZERO).await.unwrap()
            {
                *seen = g;
            }
        }
        let forward = futures_util::future::join_all(users.iter().map(|u| one.mark_unread("acme", u)));
        let backward = futures_util::future::join_all(users.iter().rev().map(|u| other.mark_unread("acme", u)));
        let (a, mut b) = tokio::join!(forward, backward);
        b.reverse();
        for (i, mark) in a.into_iter().chain(b).enumerate() {
            let mark = mark.unwrap_or_else(|e| panic!("round {round}: {e}"));
            let seen = read[i % users.len()];
            assert!(mark.generation > seen, "round {round}: a mark newer than the one read ({mark:?}, read {seen})");
        }
    }
}
