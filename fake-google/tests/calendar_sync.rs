//! Calendar v3 events.list at the HTTP level: full listings, paging, incremental sync with sync
//! tokens (NOTES §2), the 410 a client must answer with a full sync, recurring series with and
//! without `singleEvents`, and the filters.
mod common;
use common::*;

use std::collections::BTreeSet;

use serde_json::{Value, json};

const EVENTS: &str = "/calendar/v3/calendars/primary/events";

/// One events.list call with a raw query string.
async fn list(env: &Env, token: &str, query: &str) -> Reply {
    env.get(&format!("{EVENTS}?{query}"), token).await
}

/// What paging a listing to its end gave.
struct Listing {
    items: Vec<Value>,
    sync_token: Option<String>,
    pages: usize,
}

/// Pages through `query` to the end, checking that every page answers 200 and carries at most
/// one of `nextPageToken` / `nextSyncToken`.
async fn list_all(env: &Env, token: &str, query: &str) -> Listing {
    let mut items = Vec::new();
    let mut page_token: Option<String> = None;
    for pages in 1.. {
        assert!(pages < 100, "paging does not end");
        let q = match &page_token {
            Some(p) => format!("{query}&pageToken={p}"),
            None => query.to_owned(),
        };
        let r = list(env, token, &q).await;
        assert_eq!(r.status, 200, "{q}: {r:?}");
        assert_eq!(r.body["kind"], "calendar#events");
        items.extend(r.body["items"].as_array().expect("items").iter().cloned());
        let next_page = r.body["nextPageToken"].as_str();
        let next_sync = r.body["nextSyncToken"].as_str();
        assert!(next_page.is_none() || next_sync.is_none(), "never both tokens on one page: {r:?}");
        match next_page {
            Some(p) => page_token = Some(p.to_owned()),
            None => return Listing { items, sync_token: next_sync.map(str::to_owned), pages },
        }
    }
    unreachable!()
}

/// A full (or incremental) sync: pages to the end, which must bring a sync token.
async fn sync_all(env: &Env, token: &str, query: &str) -> (Vec<Value>, String) {
    let l = list_all(env, token, query).await;
    let sync = l.sync_token.unwrap_or_else(|| panic!("the last page of {query:?} has a nextSyncToken"));
    (l.items, sync)
}

fn timed(summary: &str, start: &str, end: &str) -> Value {
    json!({"summary": summary, "start": {"dateTime": start}, "end": {"dateTime": end}})
}

/// Inserts a one-hour event on 15 June 2026 at `hour` UTC; returns its id.
async fn insert_at(env: &Env, token: &str, summary: &str, hour: u32) -> String {
    let e = env
        .insert_event(
            token,
            timed(summary, &format!("2026-06-15T{hour:02}:00:00Z"), &format!("2026-06-15T{:02}:00:00Z", hour + 1)),
        )
        .await;
    e["id"].as_str().expect("id").to_owned()
}

/// Inserts a daily 09:00-09:15 UTC series of `count` from `first_day` (YYYY-MM-DD); returns its id.
async fn insert_daily(env: &Env, token: &str, first_day: &str, count: u32) -> String {
    let e = env
        .insert_event(
            token,
            json!({
                "summary": "Standup",
                "start": {"dateTime": format!("{first_day}T09:00:00Z"), "timeZone": "UTC"},
                "end": {"dateTime": format!("{first_day}T09:15:00Z"), "timeZone": "UTC"},
                "recurrence": [format!("RRULE:FREQ=DAILY;COUNT={count}")],
            }),
        )
        .await;
    e["id"].as_str().expect("id").to_owned()
}

fn id_set(items: &[Value]) -> BTreeSet<String> {
    items.iter().map(|e| e["id"].as_str().expect("id").to_owned()).collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

fn find<'a>(items: &'a [Value], id: &str) -> &'a Value {
    items.iter().find(|e| e["id"] == id).unwrap_or_else(|| panic!("{id} not in {items:?}"))
}

async fn patch(env: &Env, token: &str, id: &str, body: Value) {
    let r = env.call("PATCH", &format!("{EVENTS}/{id}"), Some(token), Some(body)).await;
    assert_eq!(r.status, 200, "{r:?}");
}

async fn delete(env: &Env, token: &str, id: &str) {
    let r = env.call("DELETE", &format!("{EVENTS}/{id}"), Some(token), None).await;
    assert_eq!(r.status, 204, "{r:?}");
}

/// The fake's current time (RFC 3339, UTC).
async fn fake_now(env: &Env) -> String {
    let r = env.control("GET", "/_fake/clock", None).await;
    r.body["now"].as_str().expect("now").to_owned()
}

fn assert_400(r: &Reply, what: &str) {
    assert_eq!(r.status, 400, "{what}: {r:?}");
    assert_eq!(r.body["error"]["code"], 400, "{what}: {r:?}");
    assert!(r.reason().is_some(), "{what}: legacy envelope with errors[0].reason: {r:?}");
}

fn full_sync_required_body() -> Value {
    json!({"error": {
        "errors": [{
            "domain": "calendar",
            "reason": "fullSyncRequired",
            "message": "Sync token is no longer valid, a full sync is required.",
            "locationType": "parameter",
            "location": "syncToken",
        }],
        "code": 410,
        "message": "Sync token is no longer valid, a full sync is required.",
    }})
}

// ---- full listing and paging ----

#[tokio::test]
async fn a_full_list_returns_every_event_and_a_sync_token() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let a = insert_at(&env, &token, "a", 9).await;
    let b = insert_at(&env, &token, "b", 11).await;
    let c = insert_at(&env, &token, "c", 13).await;
    let r = list(&env, &token, "").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["kind"], "calendar#events");
    assert_eq!(r.body["summary"], ALICE);
    assert_eq!(r.body["timeZone"], "UTC");
    assert_eq!(r.body["accessRole"], "owner");
    assert!(r.body["etag"].is_string() && r.body["updated"].is_string(), "{r:?}");
    let items = r.body["items"].as_array().unwrap().clone();
    assert_eq!(id_set(&items), set(&[&a, &b, &c]));
    assert!(items.iter().all(|e| e["kind"] == "calendar#event" && e["status"] == "confirmed"));
    assert!(r.body["nextSyncToken"].as_str().is_some_and(|t| !t.is_empty()), "{r:?}");
    assert!(r.body.get("nextPageToken").is_none(), "{r:?}");
    env.fake.stop().await;
}

#[tokio::test]
async fn the_default_page_holds_250_events() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    for i in 0..260 {
        insert_at(&env, &token, &format!("e{i}"), i % 20).await;
    }
    let first = list(&env, &token, "").await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.body["items"].as_array().unwrap().len(), 250);
    let page = first.body["nextPageToken"].as_str().expect("nextPageToken after a full page");
    assert!(first.body.get("nextSyncToken").is_none(), "no sync token before the last page");
    let second = list(&env, &token, &format!("pageToken={page}")).await;
    assert_eq!(second.status, 200, "{second:?}");
    assert_eq!(second.body["items"].as_array().unwrap().len(), 10);
    assert!(second.body.get("nextPageToken").is_none());
    assert!(second.body["nextSyncToken"].is_string(), "{second:?}");
    let mut all = first.body["items"].as_array().unwrap().clone();
    all.extend(second.body["items"].as_array().unwrap().iter().cloned());
    assert_eq!(id_set(&all).len(), 260, "every event exactly once");
    env.fake.stop().await;
}

#[tokio::test]
async fn max_results_is_capped_at_2500() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let m = env
        .insert_event(
            &token,
            json!({
                "start": {"dateTime": "2026-01-01T00:00:00Z", "timeZone": "UTC"},
                "end": {"dateTime": "2026-01-01T00:30:00Z", "timeZone": "UTC"},
                "recurrence": ["RRULE:FREQ=HOURLY;COUNT=2600"],
            }),
        )
        .await;
    assert!(m["id"].is_string());
    let q = "singleEvents=true&timeMin=2026-01-01T00:00:00Z&timeMax=2026-12-31T00:00:00Z&maxResults=2600";
    let first = list(&env, &token, q).await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.body["items"].as_array().unwrap().len(), 2500, "a page never exceeds 2500");
    let page = first.body["nextPageToken"].as_str().expect("more pages follow");
    let second = list(&env, &token, &format!("{q}&pageToken={page}")).await;
    assert_eq!(second.body["items"].as_array().unwrap().len(), 100);
    assert!(second.body["nextSyncToken"].is_string(), "{:?}", second.body.get("nextPageToken"));
    env.fake.stop().await;
}

#[tokio::test]
async fn max_results_below_one_is_refused() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    for q in ["maxResults=0", "maxResults=-5", "maxResults=lots"] {
        assert_400(&list(&env, &token, q).await, q);
    }
    env.fake.stop().await;
}

#[tokio::test]
async fn each_page_carries_exactly_one_token() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let mut ids = Vec::new();
    for h in 0..5 {
        ids.push(insert_at(&env, &token, "e", h).await);
    }
    let mut page: Option<String> = None;
    let mut sizes = Vec::new();
    let mut seen = Vec::new();
    loop {
        let q = page.as_ref().map(|p| format!("maxResults=2&pageToken={p}")).unwrap_or("maxResults=2".into());
        let r = list(&env, &token, &q).await;
        assert_eq!(r.status, 200, "{r:?}");
        let items = r.body["items"].as_array().unwrap().clone();
        sizes.push(items.len());
        seen.extend(items);
        let (p, s) = (r.body["nextPageToken"].as_str(), r.body["nextSyncToken"].as_str());
        assert!(p.is_some() != s.is_some(), "exactly one of nextPageToken/nextSyncToken: {r:?}");
        match p {
            Some(p) => page = Some(p.to_owned()),
            None => break,
        }
    }
    assert_eq!(sizes, [2, 2, 1]);
    assert_eq!(id_set(&seen), ids.iter().cloned().collect());
    env.fake.stop().await;
}

#[tokio::test]
async fn a_page_token_only_fits_the_request_it_came_from() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    for h in 0..5 {
        insert_at(&env, &token, "e", h).await;
    }
    let first = list(&env, &token, "maxResults=2").await;
    let page = first.body["nextPageToken"].as_str().expect("page token").to_owned();
    for q in ["maxResults=3", "maxResults=2&showDeleted=true", "maxResults=2&singleEvents=true"] {
        assert_400(&list(&env, &token, &format!("{q}&pageToken={page}")).await, q);
    }
    assert_400(&list(&env, &token, "maxResults=2&pageToken=notapagetoken").await, "garbled page token");
    let same = list(&env, &token, &format!("maxResults=2&pageToken={page}")).await;
    assert_eq!(same.status, 200, "{same:?}");
    assert_eq!(same.body["items"].as_array().unwrap().len(), 2);
    env.fake.stop().await;
}

// ---- incremental sync ----

#[tokio::test]
async fn an_incremental_sync_returns_exactly_what_changed() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let a = insert_at(&env, &token, "a", 9).await;
    let b = insert_at(&env, &token, "b", 11).await;
    let c = insert_at(&env, &token, "c", 13).await;
    let series = insert_daily(&env, &token, "2026-06-15", 3).await;
    let (items, sync) = sync_all(&env, &token, "").await;
    assert_eq!(id_set(&items), set(&[&a, &b, &c, &series]));

    let e = insert_at(&env, &token, "e", 15).await;
    patch(&env, &token, &a, json!({"summary": "a2"})).await;
    delete(&env, &token, &b).await;
    let instance = format!("{series}_20260616T090000Z");
    delete(&env, &token, &instance).await;

    let (changes, next) = sync_all(&env, &token, &format!("syncToken={sync}")).await;
    assert_eq!(id_set(&changes), set(&[&a, &b, &e, &instance]), "only what changed, {c} and the series untouched");
    assert_eq!(find(&changes, &a)["summary"], "a2");
    assert_eq!(find(&changes, &a)["status"], "confirmed");
    assert_eq!(find(&changes, &e)["summary"], "e");
    let tomb = find(&changes, &b);
    assert_eq!(tomb["status"], "cancelled");
    let keys: BTreeSet<&str> = tomb.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["kind", "etag", "id", "status"]), "a deleted event is a bare tombstone: {tomb}");
    let cancelled = find(&changes, &instance);
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["recurringEventId"], series.as_str());
    assert_eq!(cancelled["originalStartTime"]["dateTime"], "2026-06-16T09:00:00Z");
    assert_ne!(next, sync);

    // The next token starts after these changes.
    let (again, _) = sync_all(&env, &token, &format!("syncToken={next}")).await;
    assert!(again.is_empty(), "{again:?}");
    env.fake.stop().await;
}

#[tokio::test]
async fn nothing_changed_gives_no_items_and_a_fresh_token() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    insert_at(&env, &token, "a", 9).await;
    let (_, sync) = sync_all(&env, &token, "").await;
    let r = list(&env, &token, &format!("syncToken={sync}")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["items"], json!([]));
    let next = r.body["nextSyncToken"].as_str().expect("a new sync token").to_owned();
    assert!(r.body.get("nextPageToken").is_none());
    let b = insert_at(&env, &token, "b", 11).await;
    let (changes, _) = sync_all(&env, &token, &format!("syncToken={next}")).await;
    assert_eq!(id_set(&changes), set(&[&b]));
    env.fake.stop().await;
}

#[tokio::test]
async fn an_incremental_result_pages_with_small_max_results() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    insert_at(&env, &token, "old", 1).await;
    let (_, sync) = sync_all(&env, &token, "maxResults=2").await;
    let mut fresh = BTreeSet::new();
    for h in 2..7 {
        fresh.insert(insert_at(&env, &token, "new", h).await);
    }
    let l = list_all(&env, &token, &format!("maxResults=2&syncToken={sync}")).await;
    assert_eq!(l.pages, 3, "5 changes at 2 per page");
    assert_eq!(id_set(&l.items), fresh);
    assert_eq!(l.items.len(), 5, "no change twice");
    let next = l.sync_token.expect("the last page has the sync token");
    let (none, _) = sync_all(&env, &token, &format!("maxResults=2&syncToken={next}")).await;
    assert!(none.is_empty());
    env.fake.stop().await;
}

#[tokio::test]
async fn changes_made_while_paging_a_full_sync_are_not_lost() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    for h in 0..4 {
        insert_at(&env, &token, "e", h).await;
    }
    let first = list(&env, &token, "maxResults=2").await;
    let served = first.body["items"].as_array().unwrap().clone();
    let page = first.body["nextPageToken"].as_str().expect("more pages").to_owned();
    let (x, y) = (served[0]["id"].as_str().unwrap().to_owned(), served[1]["id"].as_str().unwrap().to_owned());

    // While the client pages: change an event it already has, delete another, add a new one.
    patch(&env, &token, &x, json!({"summary": "changed while paging"})).await;
    delete(&env, &token, &y).await;
    let z = insert_at(&env, &token, "added while paging", 20).await;

    let rest = list_all(&env, &token, &format!("maxResults=2&pageToken={page}")).await;
    let sync = rest.sync_token.expect("sync token at the end");
    let (changes, _) = sync_all(&env, &token, &format!("maxResults=2&syncToken={sync}")).await;
    let got = id_set(&changes);
    assert!(got.contains(&x), "the patch is in the next incremental sync: {changes:?}");
    assert!(got.contains(&y), "the deletion is in the next incremental sync: {changes:?}");
    assert!(got.contains(&z), "the insert is in the next incremental sync: {changes:?}");
    assert_eq!(find(&changes, &x)["summary"], "changed while paging");
    assert_eq!(find(&changes, &y)["status"], "cancelled");
    env.fake.stop().await;
}

#[tokio::test]
async fn a_sync_token_refuses_restricting_parameters() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    insert_at(&env, &token, "a", 9).await;
    let (_, sync) = sync_all(&env, &token, "").await;
    let now = fake_now(&env).await;
    for extra in [
        "iCalUID=abc%40google.com".to_owned(),
        "orderBy=updated".to_owned(),
        "privateExtendedProperty=k%3Dv".to_owned(),
        "q=a".to_owned(),
        "sharedExtendedProperty=k%3Dv".to_owned(),
        "timeMin=2026-01-01T00:00:00Z".to_owned(),
        "timeMax=2027-01-01T00:00:00Z".to_owned(),
        format!("updatedMin={now}"),
        "showDeleted=false".to_owned(),
    ] {
        let r = list(&env, &token, &format!("syncToken={sync}&{extra}")).await;
        assert_400(&r, &extra);
    }
    // Allowed companions still work with the same token.
    let r = list(&env, &token, &format!("syncToken={sync}&showDeleted=true&maxResults=10")).await;
    assert_eq!(r.status, 200, "{r:?}");
    env.fake.stop().await;
}

#[tokio::test]
async fn a_garbled_sync_token_is_refused() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let (_, sync) = sync_all(&env, &token, "").await;
    let mut tampered = sync.clone().into_bytes();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for bad in ["garbage", tampered.as_str()] {
        assert_400(&list(&env, &token, &format!("syncToken={bad}")).await, bad);
    }
    // Bob cannot use Alice's token on his calendar.
    let bob = env.token_all(BOB).await;
    assert_ne!(list(&env, &bob, &format!("syncToken={sync}")).await.status, 200);
    env.fake.stop().await;
}

#[tokio::test]
async fn an_invalidated_sync_token_gets_410_full_sync_required() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let bob = env.token_all(BOB).await;
    let a = insert_at(&env, &alice, "a", 9).await;
    let (_, alice_sync) = sync_all(&env, &alice, "").await;
    let (_, bob_sync) = sync_all(&env, &bob, "").await;

    let r = env.control("POST", "/_fake/sync-tokens/invalidate", Some(json!({"user": ALICE}))).await;
    assert_eq!(r.status, 200, "{r:?}");

    let r = list(&env, &alice, &format!("syncToken={alice_sync}")).await;
    assert_eq!(r.status, 410, "{r:?}");
    assert_eq!(r.body, full_sync_required_body(), "exactly NOTES §2.4's body");

    let r = list(&env, &bob, &format!("syncToken={bob_sync}")).await;
    assert_eq!(r.status, 200, "other users' tokens still work: {r:?}");

    // The prescribed reaction works: a full sync, then incremental syncs again.
    let (items, fresh) = sync_all(&env, &alice, "").await;
    assert_eq!(id_set(&items), set(&[&a]));
    let b = insert_at(&env, &alice, "b", 11).await;
    let (changes, _) = sync_all(&env, &alice, &format!("syncToken={fresh}")).await;
    assert_eq!(id_set(&changes), set(&[&b]));
    env.fake.stop().await;
}

#[tokio::test]
async fn a_token_older_than_tombstone_retention_is_gone() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    insert_at(&env, &token, "a", 9).await;
    let (_, sync) = sync_all(&env, &token, "").await;
    env.advance("31d").await;
    let token = env.token_all(ALICE).await;
    let r = list(&env, &token, &format!("syncToken={sync}")).await;
    assert_eq!(r.status, 410, "{r:?}");
    assert_eq!(r.reason(), Some("fullSyncRequired"));
    let (items, _) = sync_all(&env, &token, "").await;
    assert_eq!(items.len(), 1, "a full sync still works");
    env.fake.stop().await;
}

#[tokio::test]
async fn an_updated_min_too_long_ago_is_gone() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let r = list(&env, &token, "updatedMin=2020-01-01T00:00:00Z").await;
    assert_eq!(r.status, 410, "{r:?}");
    assert_eq!(r.reason(), Some("updatedMinTooLongAgo"));
    env.fake.stop().await;
}

// ---- cancelled events and recurring series ----

#[tokio::test]
async fn a_full_list_hides_deleted_events_unless_show_deleted() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let a = insert_at(&env, &token, "a", 9).await;
    let b = insert_at(&env, &token, "b", 11).await;
    delete(&env, &token, &b).await;
    let (items, _) = sync_all(&env, &token, "").await;
    assert_eq!(id_set(&items), set(&[&a]));
    let (items, _) = sync_all(&env, &token, "showDeleted=true").await;
    assert_eq!(id_set(&items), set(&[&a, &b]));
    assert_eq!(find(&items, &b)["status"], "cancelled");
    env.fake.stop().await;
}

#[tokio::test]
async fn cancelled_instances_of_a_live_series_are_listed_without_single_events() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let series = insert_daily(&env, &token, "2026-06-15", 5).await;
    let instance = format!("{series}_20260617T090000Z");
    delete(&env, &token, &instance).await;

    let (items, _) = sync_all(&env, &token, "").await;
    assert_eq!(id_set(&items), set(&[&series, &instance]), "master plus its cancelled instance");
    let c = find(&items, &instance);
    assert_eq!(c["status"], "cancelled");
    assert_eq!(c["recurringEventId"], series.as_str());
    assert_eq!(c["originalStartTime"]["dateTime"], "2026-06-17T09:00:00Z");
    assert!(find(&items, &series)["recurrence"].is_array());

    let (items, _) = sync_all(&env, &token, "singleEvents=true").await;
    let got = id_set(&items);
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(!got.contains(&instance) && !got.contains(&series), "{got:?}");
    env.fake.stop().await;
}

#[tokio::test]
async fn single_events_expands_series_within_the_window_and_applies_exceptions() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let series = insert_daily(&env, &token, "2026-06-01", 10).await;
    let one_off = env.insert_event(&token, timed("one-off", "2026-06-03T12:00:00Z", "2026-06-03T13:00:00Z")).await;
    let one_off = one_off["id"].as_str().unwrap().to_owned();
    let moved = format!("{series}_20260603T090000Z");
    patch(
        &env,
        &token,
        &moved,
        json!({"summary": "moved", "start": {"dateTime": "2026-06-03T14:00:00Z"}, "end": {"dateTime": "2026-06-03T14:15:00Z"}}),
    )
    .await;
    let gone = format!("{series}_20260604T090000Z");
    delete(&env, &token, &gone).await;

    let window = "singleEvents=true&timeMin=2026-06-02T00:00:00Z&timeMax=2026-06-06T00:00:00Z";
    let l = list_all(&env, &token, window).await;
    let expected =
        set(&[&format!("{series}_20260602T090000Z"), &moved, &one_off, &format!("{series}_20260605T090000Z")]);
    assert_eq!(id_set(&l.items), expected, "instances in the window, the exception applied, no master");
    assert!(l.items.iter().all(|e| e.get("recurrence").is_none()), "never a master");
    let m = find(&l.items, &moved);
    assert_eq!(m["summary"], "moved");
    assert_eq!(m["start"]["dateTime"], "2026-06-03T14:00:00Z");
    assert_eq!(m["originalStartTime"]["dateTime"], "2026-06-03T09:00:00Z");

    // orderBy=startTime sorts the expanded instances.
    let sorted = list_all(&env, &token, &format!("{window}&orderBy=startTime")).await;
    let starts: Vec<&str> = sorted.items.iter().map(|e| e["start"]["dateTime"].as_str().unwrap()).collect();
    assert_eq!(
        starts,
        ["2026-06-02T09:00:00Z", "2026-06-03T12:00:00Z", "2026-06-03T14:00:00Z", "2026-06-05T09:00:00Z"]
    );
    env.fake.stop().await;
}

#[tokio::test]
async fn single_events_works_with_sync_tokens() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let series = insert_daily(&env, &token, "2026-06-01", 10).await;
    let q = "singleEvents=true&timeMin=2026-06-01T00:00:00Z&timeMax=2026-07-01T00:00:00Z";
    let (items, sync) = sync_all(&env, &token, q).await;
    assert_eq!(items.len(), 10);

    let renamed = format!("{series}_20260605T090000Z");
    patch(&env, &token, &renamed, json!({"summary": "renamed"})).await;
    let cancelled = format!("{series}_20260606T090000Z");
    delete(&env, &token, &cancelled).await;
    let new = insert_at(&env, &token, "new", 10).await;

    let (changes, _) = sync_all(&env, &token, &format!("singleEvents=true&syncToken={sync}")).await;
    assert_eq!(id_set(&changes), set(&[&renamed, &cancelled, &new]));
    assert_eq!(find(&changes, &renamed)["summary"], "renamed");
    let c = find(&changes, &cancelled);
    assert_eq!(c["status"], "cancelled");
    assert_eq!(c["recurringEventId"], series.as_str());
    assert!(changes.iter().all(|e| e["id"] != series.as_str()), "never the master");
    env.fake.stop().await;
}

#[tokio::test]
async fn order_by_start_time_requires_single_events() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    assert_400(&list(&env, &token, "orderBy=startTime").await, "orderBy=startTime alone");
    assert_400(&list(&env, &token, "orderBy=sideways").await, "unknown orderBy");
    let late = insert_at(&env, &token, "late", 15).await;
    let early = insert_at(&env, &token, "early", 8).await;
    let l = list_all(&env, &token, "singleEvents=true&orderBy=startTime").await;
    let got: Vec<&str> = l.items.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(got, [early.as_str(), late.as_str()]);
    env.fake.stop().await;
}

// ---- filters ----

#[tokio::test]
async fn time_min_bounds_the_end_and_time_max_the_start_exclusively() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let e = insert_at(&env, &token, "ten to eleven", 10).await;
    let cases = [
        ("timeMin=2026-06-15T11:00:00Z", false),
        ("timeMin=2026-06-15T10:59:59Z", true),
        ("timeMax=2026-06-15T10:00:00Z", false),
        ("timeMax=2026-06-15T10:00:01Z", true),
        ("timeMin=2026-06-15T12:00:00%2B02:00&timeMax=2026-06-15T12:00:01%2B02:00", true),
    ];
    for (q, listed) in cases {
        let l = list_all(&env, &token, q).await;
        assert_eq!(id_set(&l.items).contains(&e), listed, "{q}: {:?}", l.items);
    }
    for q in [
        "timeMin=2026-06-15T10:00:00Z&timeMax=2026-06-15T10:00:00Z",
        "timeMin=2026-06-15T11:00:00Z&timeMax=2026-06-15T10:00:00Z",
    ] {
        let r = list(&env, &token, q).await;
        assert_400(&r, q);
        // Exactly the 400 example of Google's errors guide.
        assert_eq!(
            r.body["error"]["errors"][0],
            json!({"domain": "calendar", "reason": "timeRangeEmpty", "message": "The specified time range is empty.",
                   "locationType": "parameter", "location": "timeMax"}),
            "{q}: {r:?}"
        );
    }
    assert_400(&list(&env, &token, "timeMin=2026-06-15T10:00:00").await, "timeMin without offset");
    env.fake.stop().await;
}

#[tokio::test]
async fn q_searches_summary_description_location_and_attendees() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let dentist = insert_at(&env, &token, "Dentist appointment", 8).await;
    let mut body = timed("Team sync", "2026-06-15T10:00:00Z", "2026-06-15T11:00:00Z");
    body["description"] = json!("Bring the roadmap");
    body["attendees"] = json!([{"email": BOB}]);
    let team = env.insert_event(&token, body).await["id"].as_str().unwrap().to_owned();
    let mut body = timed("Lunch", "2026-06-15T12:00:00Z", "2026-06-15T13:00:00Z");
    body["location"] = json!("Dentist street 4");
    let lunch = env.insert_event(&token, body).await["id"].as_str().unwrap().to_owned();

    let cases: [(&str, Vec<&str>); 4] = [
        ("q=dentist", vec![&dentist, &lunch]),
        ("q=ROADMAP", vec![&team]),
        ("q=bob%40acme.test", vec![&team]),
        ("q=nothingmatches", vec![]),
    ];
    for (q, want) in cases {
        let l = list_all(&env, &token, q).await;
        assert_eq!(id_set(&l.items), set(&want), "{q}");
    }
    env.fake.stop().await;
}

#[tokio::test]
async fn q_searches_the_organizers_email() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let a = insert_at(&env, &token, "Planning", 8).await;
    // The discovery document lists "organizer's email" among the fields q searches.
    let l = list_all(&env, &token, "q=alice%40acme.test").await;
    assert_eq!(id_set(&l.items), set(&[&a]), "{:?}", l.items);
    env.fake.stop().await;
}

#[tokio::test]
async fn updated_min_includes_deletions() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let old = insert_at(&env, &token, "old", 8).await;
    let doomed = insert_at(&env, &token, "doomed", 9).await;
    env.advance("10m").await;
    let since = fake_now(&env).await;
    env.advance("1m").await;
    delete(&env, &token, &doomed).await;
    let new = insert_at(&env, &token, "new", 10).await;

    let l = list_all(&env, &token, &format!("updatedMin={since}")).await;
    assert_eq!(id_set(&l.items), set(&[&doomed, &new]), "changes since, deletions included without showDeleted");
    assert!(!id_set(&l.items).contains(&old));
    assert_eq!(find(&l.items, &doomed)["status"], "cancelled");
    env.fake.stop().await;
}

// ---- knobs and the request log ----

#[tokio::test]
async fn short_pages_still_complete_the_listing() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let mut ids = BTreeSet::new();
    for h in 0..3 {
        ids.insert(insert_at(&env, &token, "e", h).await);
    }
    let r = env.control("PUT", "/_fake/behaviour", Some(json!({"short_pages": true}))).await;
    assert_eq!(r.status, 200, "{r:?}");

    let first = list(&env, &token, "").await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.body["items"], json!([]), "an empty page...");
    assert!(first.body["nextPageToken"].is_string(), "...that still says more follows: {first:?}");
    assert!(first.body.get("nextSyncToken").is_none());

    let l = list_all(&env, &token, "").await;
    assert!(l.pages >= 2);
    assert_eq!(id_set(&l.items), ids);
    assert_eq!(l.items.len(), 3);
    let sync = l.sync_token.expect("the listing ends in a sync token");
    let x = insert_at(&env, &token, "x", 5).await;
    let (changes, _) = sync_all(&env, &token, &format!("syncToken={sync}")).await;
    assert_eq!(id_set(&changes), set(&[&x]));
    env.fake.stop().await;
}

#[tokio::test]
async fn the_request_log_counts_list_calls() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    for h in 0..3 {
        insert_at(&env, &token, "e", h).await;
    }
    assert!(env.requests("calendar.events.list").await.is_empty());
    let l = list_all(&env, &token, "maxResults=1").await;
    assert_eq!(l.pages, 3);
    assert_eq!(list(&env, &token, "maxResults=0").await.status, 400);
    let logged = env.requests("calendar.events.list").await;
    assert_eq!(logged.len(), 4, "{logged:?}");
    assert_eq!(logged.iter().filter(|r| r["status"] == 200).count(), 3);
    assert!(logged.iter().all(|r| r["user"] == ALICE), "{logged:?}");
    assert_eq!(env.requests("calendar.events.insert").await.len(), 3);
    env.fake.stop().await;
}
