//! Contacts end to end: the Workspace directory (profiles and shared contacts) and users' own
//! contacts, polled from the fake People API into the phonebook; caller-ID lookup, search,
//! status, and the vCard / Yealink / Snom exports desk phones fetch.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use serde_json::{Value, json};

const LIST_DIRECTORY: &str = "people.people.listDirectoryPeople";

#[tokio::test]
async fn a_tenant_whose_directory_is_slow_holds_up_no_other_tenant() {
    let app = start().await;
    quiet_poller(&app).await;
    add_directory(&app, person("Växeln", &["08-123 456 78"], None)).await;
    app.setup_tenant().await;

    // A second company with its own domain, service account and delegation.
    let (domain, admin) = ("globex.test", "it@globex.test");
    let r = app
        .fake_control("POST", "/_fake/domains", json!({"domain": domain, "users": [admin], "directory_sharing": true}))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let key = app.fake_control("POST", "/_fake/service-accounts", json!({"domain": domain})).await.body;
    let client_id = key["client_id"].as_str().expect("client_id");
    let r = app.fake_control("PUT", &format!("/_fake/delegation/{client_id}"), json!({"scopes": GWSYNC_SCOPES})).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = app
        .fake_control(
            "POST",
            &format!("/_fake/directory/{domain}/people"),
            person("Globex reception", &["08-555 000 00"], None),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = app.api("PUT", "/api/v1/tenants/globex", Some(json!({"domain": domain, "directory_admin": admin}))).await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = app
        .raw(
            "PUT",
            "/api/v1/tenants/globex/credentials",
            &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
            key.to_string().into_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");

    // acme's directory answers only after 6 s (acme comes first in the poller's order).
    let r = app
        .fake_control(
            "POST",
            "/_fake/faults",
            json!({"method": "people.listDirectoryPeople", "user": IT, "delay_ms": 6000}),
        )
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let held_since = std::time::Instant::now();
    app.advance("16s").await;

    let app_ref = &app;
    eventually("globex's phonebook", || async move {
        let r = app_ref.api("GET", "/api/v1/tenants/globex/contacts/lookup?number=0855500000", None).await;
        (r.status == 200 && names(&r.body["matches"]) == ["Globex reception"]).then_some(())
    })
    .await;
    assert!(held_since.elapsed() < Duration::from_secs(5), "globex waited for acme: {:?}", held_since.elapsed());
    assert_eq!(lookup_names(&app, "08-123 456 78").await, Vec::<String>::new(), "acme is still being held");

    // And acme's poll completes once Google answers.
    eventually("acme's phonebook", || async move {
        (lookup_names(app_ref, "08-123 456 78").await == ["Växeln"]).then_some(())
    })
    .await;
    app.stop().await;
}

// ---- harness helpers ----

/// gwsync against the fake, with the per-user People read limiter opened up so that the
/// tests' many syncs are not slowed down (the limiter runs on real time).
async fn start() -> TestApp {
    TestApp::start_with(|c| c.contacts.user_requests_per_minute = 6000).await
}

/// Makes the background poller sweep now (advancing the clock wakes it), so that its next sweep
/// is 15 s of real time away: a test's own `POST …/contacts/sync` right after is then the
/// tenant's first sync.
async fn quiet_poller(app: &TestApp) {
    app.advance("16s").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// Acme with one directory entry (its switchboard) and Alice and Bob as users, the poller
/// quiet (`quiet_poller`).
async fn acme_with_alice_and_bob() -> TestApp {
    let app = start().await;
    quiet_poller(&app).await;
    add_directory(&app, person("Acme Växel", &["08-123 456 78"], Some("Acme AB"))).await;
    app.setup_tenant().await;
    for u in [ALICE, BOB] {
        let r = app.put_user(u, json!({})).await;
        assert_eq!(r.status, 201, "{r:?}");
    }
    app
}

fn api(path: &str) -> String {
    format!("/api/v1/tenants/{TENANT}/contacts{path}")
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A People `Person` with a display name, numbers (type work) and optionally a company.
fn person(name: &str, numbers: &[&str], org: Option<&str>) -> Value {
    let mut p = json!({
        "names": [{"displayName": name}],
        "phoneNumbers": numbers.iter().map(|n| json!({"value": n, "type": "work"})).collect::<Vec<_>>(),
    });
    if let Some(o) = org {
        p["organizations"] = json!([{"name": o}]);
    }
    p
}

/// Adds one person (or an array) to the directory; returns the fake's answer.
async fn add_directory(app: &TestApp, p: Value) -> Value {
    let r = app.fake_control("POST", &format!("/_fake/directory/{DOMAIN}/people"), p).await;
    assert_eq!(r.status, 201, "{r:?}");
    r.body
}

async fn add_personal(app: &TestApp, user: &str, p: Value) -> Value {
    let r = app.fake_control("POST", &format!("/_fake/contacts/{user}"), p).await;
    assert_eq!(r.status, 201, "{r:?}");
    r.body
}

/// The id the control API takes for a person the fake returned.
fn id_of(p: &Value) -> String {
    p["resourceName"].as_str().expect("resourceName").trim_start_matches("people/").to_owned()
}

async fn put_tenant(app: &TestApp, contacts: Value) {
    let r = app
        .api(
            "PUT",
            &format!("/api/v1/tenants/{TENANT}"),
            Some(json!({"domain": DOMAIN, "directory_admin": IT, "contacts": contacts})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
}

/// `POST …/contacts/sync`: 202 with the job to watch; its report is the summary.
async fn sync(app: &TestApp) -> Value {
    let r = app.api("POST", &api("/sync"), None).await;
    assert_eq!(r.status, 202, "{r:?}");
    let status = r.body["status"].as_str().expect("where to watch").to_owned();
    assert_eq!(r.body["job"]["tenant"], TENANT, "{r:?}");
    let job = eventually("the phonebook sync job", || {
        let status = status.clone();
        async move {
            let j = app.api("GET", &status, None).await;
            (j.status == 200 && j.body["state"] != "running").then_some(j)
        }
    })
    .await;
    assert_eq!(job.body["state"], "done", "{job:?}");
    job.body["result"].clone()
}

fn book<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["books"]
        .as_array()
        .expect("books")
        .iter()
        .find(|b| b["book"] == name)
        .unwrap_or_else(|| panic!("no book {name} in {v:#}"))
}

fn book_names(v: &Value) -> BTreeSet<String> {
    v["books"].as_array().expect("books").iter().map(|b| b["book"].as_str().expect("book").to_owned()).collect()
}

async fn status(app: &TestApp) -> Value {
    let r = app.api("GET", &api("/status"), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body
}

async fn lookup(app: &TestApp, number: &str) -> Value {
    let r = app.api("GET", &api(&format!("/lookup?number={}", enc(number))), None).await;
    assert_eq!(r.status, 200, "lookup {number}: {r:?}");
    r.body
}

fn names(list: &Value) -> Vec<String> {
    list.as_array().expect("list").iter().map(|c| c["name"].as_str().unwrap_or("").to_owned()).collect()
}

/// Names of a lookup's matches, in the order given.
async fn lookup_names(app: &TestApp, number: &str) -> Vec<String> {
    names(&lookup(app, number).await["matches"])
}

async fn search(app: &TestApp, query: &str) -> Reply {
    app.api("GET", &api(&format!("?{query}")), None).await
}

async fn search_names(app: &TestApp, q: &str) -> Vec<String> {
    let r = search(app, &format!("q={}&page_size=500", enc(q))).await;
    assert_eq!(r.status, 200, "search {q}: {r:?}");
    assert_eq!(r.body["total"], r.body["contacts"].as_array().map(Vec::len).unwrap_or(0), "{r:?}");
    names(&r.body["contacts"])
}

/// Everyone in the phonebook, in the API's order.
async fn everyone(app: &TestApp) -> Vec<Value> {
    let r = search(app, "page_size=500").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.get("next_page_token").is_none(), "{r:?}");
    r.body["contacts"].as_array().expect("contacts").clone()
}

fn by_name(list: &[Value]) -> BTreeMap<String, Value> {
    list.iter().map(|c| (c["name"].as_str().expect("name").to_owned(), c.clone())).collect()
}

/// The fake's log of `method` calls after `since`.
async fn fake_requests(app: &TestApp, method: &str, since: u64) -> (Vec<Value>, u64) {
    let r = app.fake_control("GET", &format!("/_fake/requests?method={method}&since={since}"), Value::Null).await;
    assert_eq!(r.status, 200, "{r:?}");
    (r.body["requests"].as_array().expect("requests").clone(), r.body["last_seq"].as_u64().expect("last_seq"))
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()).unwrap_or_else(|| panic!("not a time: {v}")).into()
}

/// Polls `probe` until it gives something, for at most 20 s.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after 20 s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What gwsync holds equals what the fake's directory holds: the same people, names and
/// numbers (gwsync's E.164 against Google's canonical form).
async fn assert_phonebook_equals_directory(app: &TestApp) {
    let r = app.fake_control("GET", &format!("/_fake/directory/{DOMAIN}/people"), Value::Null).await;
    assert_eq!(r.status, 200, "{r:?}");
    let want: BTreeMap<String, (String, BTreeSet<String>)> = r.body["people"]
        .as_array()
        .expect("people")
        .iter()
        .filter(|p| p["metadata"]["deleted"] != true)
        .map(|p| {
            let numbers = p["phoneNumbers"]
                .as_array()
                .map(|a| a.iter().filter_map(|n| n["canonicalForm"].as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
            (
                p["resourceName"].as_str().expect("resourceName").to_owned(),
                (p["names"][0]["displayName"].as_str().unwrap_or("").to_owned(), numbers),
            )
        })
        .collect();
    let have: BTreeMap<String, (String, BTreeSet<String>)> = everyone(app)
        .await
        .iter()
        .map(|c| {
            let numbers = c["phones"]
                .as_array()
                .expect("phones")
                .iter()
                .filter_map(|p| p["e164"].as_str().map(str::to_owned))
                .collect();
            (
                c["resource_name"].as_str().expect("resource_name").to_owned(),
                (c["name"].as_str().unwrap_or("").to_owned(), numbers),
            )
        })
        .collect();
    assert_eq!(have, want, "the phonebook (left) is not the directory (right)");
}

// ---- 1. full and incremental sync ----

#[tokio::test]
async fn a_full_sync_over_several_pages_then_an_incremental_one_brings_exactly_the_changes() {
    let mut app = start().await;
    quiet_poller(&app).await;
    let bulk: Vec<Value> =
        (0..1100).map(|i| person(&format!("Kund {i:04}"), &[&format!("070-{}", 1_000_000 + i)], None)).collect();
    let created = add_directory(&app, Value::Array(bulk)).await;
    let created = created.as_array().expect("array");
    assert_eq!(created.len(), 1100);
    let id = |n: usize| id_of(&created[n]);
    app.setup_tenant().await;

    let summary = sync(&app).await;
    let dir = book(&summary, "directory");
    assert_eq!(dir["full"], true, "{summary:#}");
    assert_eq!(dir["pages"], 2, "1,103 entries at 1,000 a page: {summary:#}");
    assert_eq!(dir["changes"], 1103, "{summary:#}");
    assert_eq!(dir["entries"], 1103, "1,100 shared contacts and 3 users: {summary:#}");
    assert!(dir.get("error").is_none_or(Value::is_null), "{summary:#}");
    assert_eq!(summary["entries"], 1103);

    let st = status(&app).await;
    assert_eq!(st["entries"], 1103, "{st:#}");
    assert_eq!(st["numbers"], 1100, "{st:#}");
    assert_eq!(book(&st, "directory")["entries"], 1103, "{st:#}");
    assert!(book(&st, "directory")["last_full_sync"].is_string(), "{st:#}");
    let r = search(&app, "page_size=1").await;
    assert_eq!(r.body["total"], 1103, "{r:?}");
    assert_eq!(search_names(&app, "kund 0550").await, ["Kund 0550"]);
    assert_eq!(lookup_names(&app, "070-100 10 99").await, ["Kund 1099"], "the last one of page 2 too");

    let (calls, seq) = fake_requests(&app, LIST_DIRECTORY, 0).await;
    assert_eq!(calls.len(), 2, "two pages: {calls:#?}");
    for c in &calls {
        let q = c["query"].as_str().expect("query");
        assert_eq!(c["status"], 200, "{c}");
        assert!(q.contains("pageSize=1000"), "{q}");
        assert!(!q.contains("syncToken="), "a full sync sends no sync token: {q}");
        assert!(q.contains("requestSyncToken=true"), "{q}");
    }
    assert!(!calls[0]["query"].as_str().unwrap_or("").contains("pageToken="), "{calls:#?}");
    assert!(calls[1]["query"].as_str().unwrap_or("").contains("pageToken="), "{calls:#?}");

    // Incremental: one added, one renumbered, one deleted.
    add_directory(&app, person("Ny Kund", &["070-999 00 01"], None)).await;
    let r = app
        .fake_control(
            "PUT",
            &format!("/_fake/directory/{DOMAIN}/people/{}", id(2)),
            person("Kund 0002", &["070-999 00 02"], None),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = app.fake_control("DELETE", &format!("/_fake/directory/{DOMAIN}/people/{}", id(3)), Value::Null).await;
    assert_eq!(r.status, 204, "{r:?}");

    let summary = sync(&app).await;
    let dir = book(&summary, "directory");
    assert_eq!(dir["full"], false, "{summary:#}");
    assert_eq!(dir["changes"], 3, "exactly the three changes: {summary:#}");
    assert_eq!(dir["entries"], 1103, "one in, one out: {summary:#}");
    assert_eq!(lookup_names(&app, "0709990001").await, ["Ny Kund"]);
    assert_eq!(lookup_names(&app, "+46 70 999 00 02").await, ["Kund 0002"], "found by its new number");
    assert_eq!(lookup_names(&app, "070-100 00 02").await, Vec::<String>::new(), "its old number finds nothing");
    assert_eq!(lookup_names(&app, "070-100 00 03").await, Vec::<String>::new(), "the deleted one is gone");
    assert_eq!(search_names(&app, "kund 0003").await, Vec::<String>::new());
    assert_eq!(lookup_names(&app, "070-100 00 04").await, ["Kund 0004"], "the others stay");
    assert_eq!(status(&app).await["entries"], 1103);

    let (calls, seq) = fake_requests(&app, LIST_DIRECTORY, seq).await;
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert!(calls[0]["query"].as_str().unwrap_or("").contains("syncToken="), "incremental: {calls:#?}");

    // A restart keeps the phonebook and its sync token: no new full sync.
    app.restart().await;
    assert_eq!(lookup_names(&app, "0709990001").await, ["Ny Kund"], "the phonebook survives a restart");
    let summary = sync(&app).await;
    assert_eq!(book(&summary, "directory")["full"], false, "{summary:#}");
    assert_eq!(book(&summary, "directory")["entries"], 1103, "{summary:#}");
    let (calls, _) = fake_requests(&app, LIST_DIRECTORY, seq).await;
    assert!(!calls.is_empty());
    for c in &calls {
        assert!(c["query"].as_str().unwrap_or("").contains("syncToken="), "after a restart: {calls:#?}");
    }
    app.stop().await;
}

// ---- 2. expired sync tokens ----

#[tokio::test]
async fn an_expired_sync_token_means_a_full_sync_and_the_phonebook_equals_the_directory() {
    let app = start().await;
    quiet_poller(&app).await;
    let a = add_directory(&app, person("Anna", &["070-200 00 01"], None)).await;
    let b = add_directory(&app, person("Bertil", &["070-200 00 02"], None)).await;
    let c = add_directory(&app, person("Cecilia", &["070-200 00 03"], None)).await;
    app.setup_tenant().await;
    let summary = sync(&app).await;
    assert_eq!(book(&summary, "directory")["full"], true, "{summary:#}");
    assert_eq!(book(&summary, "directory")["entries"], 6, "{summary:#}");

    // Google drops the chain (POST /_fake/sync-tokens/invalidate) while the directory changes.
    add_directory(&app, person("David", &["070-200 00 04"], None)).await;
    let r = app.fake_control("DELETE", &format!("/_fake/directory/{DOMAIN}/people/{}", id_of(&a)), Value::Null).await;
    assert_eq!(r.status, 204, "{r:?}");
    let r = app
        .fake_control(
            "PUT",
            &format!("/_fake/directory/{DOMAIN}/people/{}", id_of(&b)),
            person("Bertil", &["070-200 00 22"], None),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = app.fake_control("POST", "/_fake/sync-tokens/invalidate", json!({})).await;
    assert_eq!(r.status, 200, "{r:?}");
    let summary = sync(&app).await;
    let dir = book(&summary, "directory");
    assert_eq!(dir["full"], true, "an expired token means a full sync: {summary:#}");
    assert!(dir.get("error").is_none_or(Value::is_null), "{summary:#}");
    assert_eq!(dir["entries"], 6, "{summary:#}");
    assert_phonebook_equals_directory(&app).await;
    assert_eq!(lookup_names(&app, "070-200 00 01").await, Vec::<String>::new(), "Anna was deleted meanwhile");
    assert_eq!(lookup_names(&app, "070-200 00 22").await, ["Bertil"]);

    // Eight days later the chain has aged out (7 days after its full sync).
    add_directory(&app, person("Erik", &["070-200 00 05"], None)).await;
    let r = app.fake_control("DELETE", &format!("/_fake/directory/{DOMAIN}/people/{}", id_of(&c)), Value::Null).await;
    assert_eq!(r.status, 204, "{r:?}");
    let before = time(&book(&status(&app).await, "directory")["last_full_sync"]);
    let (_, seq) = fake_requests(&app, LIST_DIRECTORY, 0).await;
    app.advance("8d").await;
    let advanced_at = app.clock.now();
    // The poller wakes with the clock and may get there first; either way one sync runs after
    // the other, and the phonebook is whole again.
    sync(&app).await;
    let st = status(&app).await;
    let dir = book(&st, "directory");
    assert!(dir["last_error"].is_null(), "{st:#}");
    let full_at = time(&dir["last_full_sync"]);
    assert!(full_at > before && full_at >= advanced_at - chrono::Duration::seconds(1), "a new full sync: {st:#}");
    assert_phonebook_equals_directory(&app).await;
    assert_eq!(lookup_names(&app, "070-200 00 05").await, ["Erik"]);
    assert_eq!(lookup_names(&app, "070-200 00 03").await, Vec::<String>::new());
    let (calls, _) = fake_requests(&app, LIST_DIRECTORY, seq).await;
    let expired = calls
        .iter()
        .position(|c| c["status"] == 400 && c["query"].as_str().unwrap_or("").contains("syncToken="))
        .unwrap_or_else(|| panic!("the old token was tried and refused: {calls:#?}"));
    assert!(
        calls[expired + 1..]
            .iter()
            .any(|c| c["status"] == 200 && !c["query"].as_str().unwrap_or("").contains("syncToken=")),
        "then a listing without a token: {calls:#?}"
    );
    // The new chain works incrementally.
    let summary = sync(&app).await;
    assert_eq!(book(&summary, "directory")["full"], false, "{summary:#}");
    assert_eq!(book(&summary, "directory")["changes"], 0, "{summary:#}");
    app.stop().await;
}

// ---- 3. personal contacts ----

#[tokio::test]
async fn personal_contacts_rank_after_the_directory_and_go_when_switched_off() {
    let app = acme_with_alice_and_bob().await;
    add_personal(
        &app,
        ALICE,
        json!([person("Mamma", &["070-111 22 33"], None), person("Aaa Växeln enligt Alice", &["08-12345678"], None)]),
    )
    .await;
    add_personal(&app, BOB, person("Bobs tandläkare", &["073-222 33 44"], None)).await;
    put_tenant(&app, json!({"personal_contacts": true})).await;

    let summary = sync(&app).await;
    assert_eq!(
        book_names(&summary),
        BTreeSet::from(["directory".into(), format!("personal:{ALICE}"), format!("personal:{BOB}")]),
        "{summary:#}"
    );
    for b in summary["books"].as_array().expect("books") {
        assert!(b.get("error").is_none_or(Value::is_null), "{summary:#}");
    }
    assert_eq!(book(&summary, &format!("personal:{ALICE}"))["entries"], 2, "{summary:#}");
    assert_eq!(summary["entries"], 7, "3 users, 1 shared, 3 personal: {summary:#}");

    let all = everyone(&app).await;
    let first_personal = all.iter().position(|c| c["source"]["kind"] == "personal").expect("personal entries");
    assert!(
        all[first_personal..].iter().all(|c| c["source"]["kind"] == "personal"),
        "personal contacts come after every directory entry: {:?}",
        names(&Value::Array(all.clone()))
    );
    let personal: BTreeSet<(String, String)> = all[first_personal..]
        .iter()
        .map(|c| (c["name"].as_str().unwrap_or("").to_owned(), c["source"]["owner"].as_str().unwrap_or("").to_owned()))
        .collect();
    assert_eq!(
        personal,
        BTreeSet::from([
            ("Aaa Växeln enligt Alice".into(), ALICE.into()),
            ("Bobs tandläkare".into(), BOB.into()),
            ("Mamma".into(), ALICE.into()),
        ])
    );
    let l = lookup(&app, "08-123 456 78").await;
    assert_eq!(names(&l["matches"]), ["Acme Växel", "Aaa Växeln enligt Alice"], "{l:#}");
    assert_eq!(l["matches"][0]["source"], json!({"kind": "shared"}), "{l:#}");
    assert_eq!(l["matches"][1]["source"], json!({"kind": "personal", "owner": ALICE}), "{l:#}");
    assert_eq!(lookup_names(&app, "+46732223344").await, ["Bobs tandläkare"]);

    // Personal contacts never leave through the exports.
    let urls = export_urls(&app).await;
    for (kind, url) in &urls {
        let (status, _, body) = fetch(&app, url).await;
        assert_eq!(status, 200, "{kind}");
        assert!(body.contains("Acme Växel"), "{kind}: {body}");
        for private in ["Mamma", "Växeln enligt Alice", "tandläkare", "+46701112233", "+46732223344"] {
            assert!(!body.contains(private), "{kind} leaks a personal contact ({private}): {body}");
        }
    }

    // Switched off: their contacts go.
    put_tenant(&app, json!({"personal_contacts": false})).await;
    let summary = sync(&app).await;
    assert_eq!(book_names(&summary), BTreeSet::from(["directory".to_owned()]), "{summary:#}");
    let all = everyone(&app).await;
    assert!(all.iter().all(|c| c["source"]["kind"] != "personal"), "{all:#?}");
    assert_eq!(all.len(), 4);
    assert_eq!(lookup_names(&app, "08-123 456 78").await, ["Acme Växel"]);
    assert_eq!(lookup_names(&app, "070-111 22 33").await, Vec::<String>::new());
    assert_eq!(book_names(&status(&app).await), BTreeSet::from(["directory".to_owned()]));
    app.stop().await;
}

#[tokio::test]
async fn a_scope_not_delegated_fails_only_its_own_books_and_is_asked_for_once_a_sync() {
    let app = acme_with_alice_and_bob().await;
    add_personal(&app, ALICE, person("Mamma", &["070-111 22 33"], None)).await;
    add_personal(&app, BOB, person("Bobs tandläkare", &["073-222 33 44"], None)).await;
    put_tenant(&app, json!({"personal_contacts": true})).await;
    let [calendar, contacts, directory] = [GWSYNC_SCOPES[0], GWSYNC_SCOPES[1], GWSYNC_SCOPES[2]];

    // Users' own contacts not delegated: the directory is synced, and the users' books fail on
    // one refused token request — Alice's; Bob's book takes the same answer without asking.
    app.delegate(&[calendar, directory]).await;
    let (_, since) = fake_requests(&app, "oauth2.token", 0).await;
    let summary = sync(&app).await;
    assert!(book(&summary, "directory").get("error").is_none_or(Value::is_null), "{summary:#}");
    for u in [ALICE, BOB] {
        let b = book(&summary, &format!("personal:{u}"));
        assert_eq!(b["error"]["code"], "delegation_missing", "{summary:#}");
        assert!(b["error"]["message"].as_str().unwrap_or_default().contains("contacts.readonly"), "{summary:#}");
    }
    let (tokens, _) = fake_requests(&app, "oauth2.token", since).await;
    let refused: Vec<&Value> = tokens.iter().filter(|t| t["status"] != 200).collect();
    assert_eq!(refused.len(), 1, "one refused token request for the users' contacts, not one a user: {tokens:#?}");
    assert_eq!(lookup_names(&app, "08-123 456 78").await, ["Acme Växel"]);

    // The directory not delegated instead: its book fails, and every user's own contacts are
    // still synced — a scope's refusal ends only the books that need that scope.
    app.delegate(&[calendar, contacts]).await;
    // Uploaded again, the key's cached tokens are forgotten: the next sync asks Google anew.
    app.upload_key().await;
    let summary = sync(&app).await;
    assert_eq!(book(&summary, "directory")["error"]["code"], "delegation_missing", "{summary:#}");
    for u in [ALICE, BOB] {
        let b = book(&summary, &format!("personal:{u}"));
        assert!(b.get("error").is_none_or(Value::is_null), "{summary:#}");
        assert_eq!(b["entries"], 1, "{summary:#}");
    }
    assert_eq!(lookup_names(&app, "070-111 22 33").await, ["Mamma"]);
    assert_eq!(lookup_names(&app, "+46732223344").await, ["Bobs tandläkare"]);
    app.stop().await;
}

// ---- 4. directory sharing ----

#[tokio::test]
async fn directory_sharing_off_is_reported_with_its_fix_and_clears_when_on_again() {
    let app = start().await;
    quiet_poller(&app).await;
    add_directory(&app, person("Växeln", &["08-123 456 78"], None)).await;
    app.setup_tenant().await;
    sync(&app).await;

    let r = app.fake_control("PUT", &format!("/_fake/domains/{DOMAIN}"), json!({"directory_sharing": false})).await;
    assert_eq!(r.status, 200, "{r:?}");
    add_directory(&app, person("Nyanställd", &["070-300 00 01"], None)).await;
    let summary = sync(&app).await;
    let err = &book(&summary, "directory")["error"];
    assert_eq!(err["code"], "directory_sharing_off", "{summary:#}");
    assert!(err["hint"].as_str().unwrap_or("").contains("External Directory Sharing"), "{summary:#}");
    let st = status(&app).await;
    let last = &book(&st, "directory")["last_error"];
    assert_eq!(last["code"], "directory_sharing_off", "{st:#}");
    assert!(last["hint"].as_str().unwrap_or("").contains("External Directory Sharing"), "{st:#}");
    assert_eq!(st["entries"], 4, "the last phonebook is kept meanwhile: {st:#}");
    assert_eq!(lookup_names(&app, "08-123 456 78").await, ["Växeln"]);
    assert_eq!(lookup_names(&app, "070-300 00 01").await, Vec::<String>::new());

    let r = app.fake_control("PUT", &format!("/_fake/domains/{DOMAIN}"), json!({"directory_sharing": true})).await;
    assert_eq!(r.status, 200, "{r:?}");
    let summary = sync(&app).await;
    assert!(book(&summary, "directory").get("error").is_none_or(Value::is_null), "{summary:#}");
    let st = status(&app).await;
    assert!(book(&st, "directory")["last_error"].is_null(), "the error is cleared: {st:#}");
    assert_eq!(lookup_names(&app, "070-300 00 01").await, ["Nyanställd"]);
    app.stop().await;
}

// ---- 5. numbers ----

#[tokio::test]
async fn numbers_written_every_common_way_are_stored_in_e164_and_found_by_any_form() {
    let app = start().await;
    quiet_poller(&app).await;
    // (name, as written, E.164, extension)
    let cases: &[(&str, &str, Option<&str>, Option<&str>)] = &[
        ("Sthlm bindestreck", "08-123 456 78", Some("+46812345678"), None),
        ("Sthlm mellanslag", "08 123 456 78", Some("+46812345678"), None),
        ("Sthlm plus", "+46 8 123 456 78", Some("+46812345678"), None),
        ("Sthlm nolla", "+46 (0)8 123 456 78", Some("+46812345678"), None),
        ("Sthlm dubbelnolla", "0046812345678", Some("+46812345678"), None),
        ("Sthlm anknytning", "08-123 456 78 ext. 12", Some("+46812345678"), Some("12")),
        ("Mobil", "070-123 45 67", Some("+46701234567"), None),
        ("Service", "0771-123 456", Some("+46771123456"), None),
        ("Google USA", "+1 (650) 253-0000", Some("+16502530000"), None),
        ("London", "+44 20 7946 0958", Some("+442079460958"), None),
        ("Trasig text", "ring receptionen", None, None),
        ("Trasig kort", "12", None, None),
    ];
    let people: Vec<Value> = cases.iter().map(|(n, raw, ..)| person(n, &[raw], None)).collect();
    add_directory(&app, Value::Array(people)).await;
    app.setup_tenant().await;
    sync(&app).await;

    let all = by_name(&everyone(&app).await);
    for (name, raw, e164, ext) in cases {
        let c = all.get(*name).unwrap_or_else(|| panic!("{name} is in the phonebook"));
        let p = &c["phones"][0];
        assert_eq!(p["raw"], *raw, "{name}: the written form is kept: {c:#}");
        assert_eq!(p["e164"].as_str(), *e164, "{name}: {c:#}");
        assert_eq!(p["extension"].as_str(), *ext, "{name}: {c:#}");
    }
    let st = status(&app).await;
    assert_eq!(st["numbers"], 10, "{st:#}");
    assert_eq!(st["unindexed_numbers"], 2, "garbage is kept and shown: {st:#}");
    assert_eq!(st["entries"], 15, "{st:#}");

    let stockholm: BTreeSet<&str> =
        cases.iter().filter(|c| c.2 == Some("+46812345678")).map(|c| c.0).collect::<BTreeSet<_>>();
    for form in [
        "08-123 456 78",
        "08 123 456 78",
        "08-12345678",
        "0812345678",
        "08/123 456 78",
        "(08) 123 456 78",
        "+46 8 123 456 78",
        "+46 (0)8 123 456 78",
        "+46-8-123 456 78",
        "+46812345678",
        "0046812345678",
        "0046 8 123 456 78",
    ] {
        let l = lookup(&app, form).await;
        assert_eq!(l["e164"], "+46812345678", "{form}: {l:#}");
        let found: BTreeSet<&str> =
            l["matches"].as_array().expect("matches").iter().filter_map(|m| m["name"].as_str()).collect();
        assert_eq!(found, stockholm, "{form}: {l:#}");
        for m in l["matches"].as_array().expect("matches") {
            assert_eq!(m["match"], "exact", "{form}: {m:#}");
            assert_eq!(m["phone"]["e164"], "+46812345678", "{form}: {m:#}");
        }
    }
    let anknytning = lookup(&app, "08-123 456 78").await["matches"]
        .as_array()
        .expect("matches")
        .iter()
        .find(|m| m["name"] == "Sthlm anknytning")
        .cloned()
        .expect("the number with an extension matches its main number");
    assert_eq!(anknytning["phone"]["raw"], "08-123 456 78 ext. 12");
    assert_eq!(anknytning["phone"]["extension"], "12");
    for (forms, who) in [
        (
            &["070-123 45 67", "0701234567", "070 123 4567", "+46 70 123 45 67", "+46701234567", "0046701234567"][..],
            "Mobil",
        ),
        (&["0771-123 456", "0771123456", "+46 771 123 456"][..], "Service"),
        (&["+1 (650) 253-0000", "+1 650 253 0000", "+16502530000", "001 650 253 0000"][..], "Google USA"),
        (&["+44 20 7946 0958", "+442079460958", "0044 20 7946 0958"][..], "London"),
    ] {
        for form in forms {
            let l = lookup(&app, form).await;
            assert_eq!(names(&l["matches"]), [who], "{form}: {l:#}");
            assert_eq!(l["matches"][0]["match"], "exact", "{form}: {l:#}");
        }
    }
    for garbage in ["12", "ring receptionen"] {
        let l = lookup(&app, garbage).await;
        assert_eq!(l["matches"], json!([]), "garbage is not indexed: {l:#}");
    }
    app.stop().await;
}

// ---- 6. lookup ranking and fallbacks ----

#[tokio::test]
async fn lookups_rank_directory_then_shared_then_personal_and_fall_back_to_the_last_digits() {
    let app = start().await;
    quiet_poller(&app).await;
    // Alphabetically the reverse of their rank.
    add_directory(
        &app,
        json!({
            "source": "DOMAIN_PROFILE",
            "names": [{"givenName": "Örjan", "familyName": "Öst"}],
            "emailAddresses": [{"value": "orjan@acme.test", "type": "work"}],
            "phoneNumbers": [{"value": "+46 8 123 456 78", "type": "work"}],
        }),
    )
    .await;
    add_directory(&app, person("Bertil Bolag", &["08-123 456 78"], Some("Bolaget AB"))).await;
    add_directory(&app, person("London Office", &["+44 20 7946 0958"], None)).await;
    add_directory(&app, person("Google US", &["+1 650-253-0000"], None)).await;
    app.setup_tenant().await;
    let r = app.put_user(ALICE, json!({})).await;
    assert_eq!(r.status, 201, "{r:?}");
    add_personal(&app, ALICE, person("Adam Alm", &["0812345678"], None)).await;
    put_tenant(&app, json!({"personal_contacts": true})).await;
    sync(&app).await;

    let l = lookup(&app, "08-123 456 78").await;
    assert_eq!(l["e164"], "+46812345678", "{l:#}");
    assert_eq!(names(&l["matches"]), ["Örjan Öst", "Bertil Bolag", "Adam Alm"], "{l:#}");
    let kinds: Vec<&str> =
        l["matches"].as_array().expect("matches").iter().filter_map(|m| m["source"]["kind"].as_str()).collect();
    assert_eq!(kinds, ["directory", "shared", "personal"], "{l:#}");
    assert_eq!(l["matches"][2]["source"]["owner"], ALICE, "{l:#}");
    let raws: Vec<&str> =
        l["matches"].as_array().expect("matches").iter().filter_map(|m| m["phone"]["raw"].as_str()).collect();
    assert_eq!(raws, ["+46 8 123 456 78", "08-123 456 78", "0812345678"], "each with the number that matched: {l:#}");
    for m in l["matches"].as_array().expect("matches") {
        assert_eq!(m["match"], "exact", "{m:#}");
    }

    // A foreign caller whose number arrives without its country code.
    for (seen, who, e164) in
        [("020 7946 0958", "London Office", "+442079460958"), ("650 253 0000", "Google US", "+16502530000")]
    {
        let l = lookup(&app, seen).await;
        assert_eq!(names(&l["matches"]), [who], "{seen}: {l:#}");
        assert_eq!(l["matches"][0]["match"], "last_digits", "{seen}: {l:#}");
        assert_eq!(l["matches"][0]["phone"]["e164"], e164, "{seen}: {l:#}");
    }
    assert_eq!(lookup(&app, "+442079460958").await["matches"][0]["match"], "exact");

    let l = lookup(&app, "+46 70 999 99 99").await;
    assert_eq!(l["matches"], json!([]), "{l:#}");

    for q in ["", "?number=", "?number=%20%20", "?nummer=0812345678"] {
        let r = app.api("GET", &api(&format!("/lookup{q}")), None).await;
        assert_eq!(r.status, 400, "lookup{q}: {r:?}");
    }
    let r = app.api("GET", &api(&format!("/lookup?number={}", "1".repeat(65))), None).await;
    assert_eq!(r.status, 400, "{r:?}");
    app.stop().await;
}

// ---- 7. search ----

#[tokio::test]
async fn search_by_name_company_and_number_prefix_with_paging() {
    let app = start().await;
    quiet_poller(&app).await;
    add_directory(
        &app,
        json!([
            person("Bertil Berg", &["070-111 22 33"], Some("Kund AB")),
            person("Anna Andersson", &["08-123 456 78"], Some("Kund AB")),
            person("Cecilia Ceder", &["031-123 45 67"], Some("Leverantör HB")),
            person("Doris Dahl", &["073-444 55 66"], None),
        ]),
    )
    .await;
    app.setup_tenant().await;
    sync(&app).await;

    assert_eq!(search_names(&app, "ber").await, ["Bertil Berg"], "by a name's prefix");
    assert_eq!(search_names(&app, "ANDERS").await, ["Anna Andersson"], "by the family name, any case");
    assert_eq!(search_names(&app, "kund").await, ["Anna Andersson", "Bertil Berg"], "by company");
    assert_eq!(search_names(&app, "leverantör").await, ["Cecilia Ceder"]);
    assert_eq!(search_names(&app, "anna kund").await, ["Anna Andersson"], "every word must match");
    assert_eq!(search_names(&app, "070").await, ["Bertil Berg"], "by a number's prefix");
    assert_eq!(search_names(&app, "+46 8 123").await, ["Anna Andersson"]);
    assert_eq!(search_names(&app, "08-123").await, ["Anna Andersson"]);
    assert_eq!(search_names(&app, "031").await, ["Cecilia Ceder"]);
    assert_eq!(search_names(&app, "zzz").await, Vec::<String>::new());

    // Paging returns everyone once, in the order of the unpaged list.
    let all: Vec<String> =
        everyone(&app).await.iter().map(|c| c["resource_name"].as_str().expect("rn").to_owned()).collect();
    assert_eq!(all.len(), 7, "3 users and 4 shared contacts");
    let mut paged = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..10 {
        let q = match &token {
            Some(t) => format!("page_size=2&page_token={}", enc(t)),
            None => "page_size=2".to_owned(),
        };
        let r = search(&app, &q).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body["total"], 7, "{r:?}");
        let page = r.body["contacts"].as_array().expect("contacts");
        assert!(page.len() <= 2, "{r:?}");
        paged.extend(page.iter().map(|c| c["resource_name"].as_str().expect("rn").to_owned()));
        token = r.body["next_page_token"].as_str().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    assert!(token.is_none(), "paging ends");
    assert_eq!(paged, all, "everyone once");
    let r = search(&app, "q=kund&page_size=1").await;
    assert_eq!((r.body["total"].clone(), names(&r.body["contacts"])), (json!(2), vec!["Anna Andersson".to_owned()]));
    let t = r.body["next_page_token"].as_str().expect("more").to_owned();
    let r = search(&app, &format!("q=kund&page_size=1&page_token={}", enc(&t))).await;
    assert_eq!(names(&r.body["contacts"]), ["Bertil Berg"], "{r:?}");
    assert!(r.body.get("next_page_token").is_none(), "{r:?}");

    for bad in ["page_size=0", "page_size=501", "page_size=abc", "page_size=-1", "page_token=not-a-token%21"] {
        let r = search(&app, bad).await;
        assert_eq!(r.status, 400, "{bad}: {r:?}");
    }
    app.stop().await;
}

// ---- 8. exports ----

/// `POST …/export-token`: the three URLs.
async fn export_urls(app: &TestApp) -> BTreeMap<String, String> {
    let r = app.api("POST", &api("/export-token"), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let token = r.body["token"].as_str().expect("token");
    assert!(token.len() >= 20, "{r:?}");
    ["vcard", "yealink", "snom"]
        .iter()
        .map(|k| {
            let url = r.body["urls"][k].as_str().unwrap_or_else(|| panic!("url {k}: {r:?}")).to_owned();
            assert!(url.starts_with(&format!("{}/phonebook/{TENANT}/", app.base())), "{url}");
            assert!(url.ends_with(&format!("?token={token}")), "{url}");
            ((*k).to_owned(), url)
        })
        .collect()
}

/// Status, content type and body (which must be UTF-8) of a GET.
async fn fetch(app: &TestApp, url: &str) -> (u16, String, String) {
    let resp = app.http.get(url).send().await.expect("fetch");
    let status = resp.status().as_u16();
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let bytes = resp.bytes().await.expect("body");
    let body = String::from_utf8(bytes.to_vec()).unwrap_or_else(|e| panic!("{url} is not UTF-8: {e}"));
    (status, ct, body)
}

struct Property {
    name: String,
    params: Vec<String>,
    value: String,
}

/// Checks RFC 6350's framing and parses each card into its properties (BEGIN/VERSION/END
/// included): CRLF line ends, lines of at most 75 octets, folding by CRLF + one space or tab,
/// `BEGIN:VCARD` then `VERSION:4.0`, … `END:VCARD` — framing vcard4 does not check.
fn parse_vcards(text: &str) -> Vec<Vec<Property>> {
    assert!(text.ends_with("\r\n"), "the last line ends with CRLF");
    let physical: Vec<&str> = text[..text.len() - 2].split("\r\n").collect();
    for l in &physical {
        assert!(!l.contains('\n') && !l.contains('\r'), "a bare CR or LF: {l:?}");
        assert!(l.len() <= 75, "a line longer than 75 octets ({}): {l:?}", l.len());
    }
    let mut logical: Vec<String> = Vec::new();
    for l in physical {
        match l.strip_prefix(' ').or_else(|| l.strip_prefix('\t')) {
            Some(rest) => logical.last_mut().expect("a continuation line follows a line").push_str(rest),
            None => {
                assert!(!l.is_empty(), "an empty line in a vCard stream");
                logical.push(l.to_owned());
            }
        }
    }
    let mut cards = Vec::new();
    let mut current: Option<Vec<Property>> = None;
    for l in logical {
        let colon = {
            let mut quoted = false;
            l.char_indices()
                .find(|&(_, c)| {
                    if c == '"' {
                        quoted = !quoted;
                    }
                    c == ':' && !quoted
                })
                .map(|(i, _)| i)
                .unwrap_or_else(|| panic!("a content line without a colon: {l:?}"))
        };
        let mut head = l[..colon].split(';');
        let name = head.next().unwrap_or("").to_ascii_uppercase();
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "a bad property name: {l:?}"
        );
        let params: Vec<String> = head.map(str::to_owned).collect();
        for p in &params {
            assert!(p.contains('='), "a parameter without a value: {l:?}");
        }
        let prop = Property { name, params, value: l[colon + 1..].to_owned() };
        match (&mut current, prop.name.as_str()) {
            (None, "BEGIN") => {
                assert!(prop.value.eq_ignore_ascii_case("VCARD"), "{l:?}");
                current = Some(vec![prop]);
            }
            (None, _) => panic!("a property outside BEGIN:VCARD … END:VCARD: {l:?}"),
            (Some(card), "END") => {
                assert!(prop.value.eq_ignore_ascii_case("VCARD"), "{l:?}");
                card.push(prop);
                cards.push(current.take().unwrap_or_default());
            }
            (Some(card), "BEGIN") => panic!("a card inside a card: {l:?} after {} lines", card.len()),
            (Some(card), _) => card.push(prop),
        }
    }
    assert!(current.is_none(), "the last card is not ended");
    for card in &cards {
        assert_eq!(card[1].name, "VERSION", "VERSION is the second line");
        assert_eq!(card[1].value, "4.0");
        assert_eq!(card.iter().filter(|p| p.name == "FN").count(), 1, "exactly one FN");
        assert_eq!(card.iter().filter(|p| p.name == "VERSION").count(), 1);
    }
    cards
}

/// A text value of RFC 6350 §3.4, unescaped; commas and semicolons must be escaped.
fn vunescape(v: &str) -> String {
    let mut out = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('\\') => out.push('\\'),
                Some(',') => out.push(','),
                Some(';') => out.push(';'),
                Some('n' | 'N') => out.push('\n'),
                other => panic!("a bad escape \\{other:?} in {v:?}"),
            },
            ',' | ';' => panic!("an unescaped {c:?} in the text value {v:?}"),
            c => out.push(c),
        }
    }
    out
}

/// (name, telephones) of every `DirectoryEntry` of a Yealink or Snom phonebook, read with
/// roxmltree (which refuses XML that is not well-formed: a raw `&` or `<` in text, unbalanced
/// tags). Also checks that the root is `root_name`, its children are among `allowed`, and that
/// `>` in text is escaped too (XML allows it raw; the phones' parsers may not).
fn directory_entries(xml: &str, root_name: &str, allowed: &[&str]) -> BTreeMap<String, Vec<String>> {
    let doc = roxmltree::Document::parse(xml).unwrap_or_else(|e| panic!("not well-formed XML ({e}):\n{xml}"));
    assert!(xml.split('<').skip(1).all(|seg| seg.matches('>').count() == 1), "a raw '>' in text:\n{xml}");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), root_name, "{xml}");
    let mut out = BTreeMap::new();
    for c in root.children().filter(|n| n.is_element()) {
        let tag = c.tag_name().name();
        assert!(allowed.contains(&tag), "an unexpected <{tag}> in <{root_name}>:\n{xml}");
        assert!(c.attributes().len() == 0, "<{tag}> has attributes:\n{xml}");
        if tag != "DirectoryEntry" {
            continue;
        }
        let mut name = None;
        let mut phones = Vec::new();
        for f in c.children().filter(|n| n.is_element()) {
            let text = f.text().unwrap_or("").to_owned();
            match f.tag_name().name() {
                "Name" => assert!(name.replace(text).is_none(), "one Name per entry:\n{xml}"),
                "Telephone" => phones.push(text),
                other => panic!("an unexpected <{other}> in an entry:\n{xml}"),
            }
        }
        let name = name.unwrap_or_else(|| panic!("an entry without a Name:\n{xml}"));
        assert!(out.insert(name.clone(), phones).is_none(), "{name} twice:\n{xml}");
    }
    out
}

#[tokio::test]
async fn exports_need_the_token_and_are_valid_vcard_yealink_and_snom() {
    let app = start().await;
    quiet_poller(&app).await;
    let special = "Kund & Partner, \"AB\"; <Stockholm>";
    let long = "Åsa Öberg-Ängström, Länsförsäkringar Södermanland; Växel och Kundtjänst i Eskilstuna";
    add_directory(
        &app,
        json!([
            {
                "names": [{"displayName": special}],
                "organizations": [{"name": "Kund AB"}],
                "phoneNumbers": [{"value": "08-123 456 78", "type": "work"}, {"value": "070-123 45 67", "type": "mobile"}],
            },
            person(long, &["08-123 456 78 ext. 12"], None),
            person("Trasig", &["ring receptionen"], None),
        ]),
    )
    .await;
    app.setup_tenant().await;
    sync(&app).await;

    // Without the token, with a wrong one, for an unknown tenant: the same 403.
    let base = app.base().to_owned();
    let mut refusals = Vec::new();
    for path in [
        format!("/phonebook/{TENANT}/contacts.vcf"),
        format!("/phonebook/{TENANT}/contacts.vcf?token=wrong"),
        "/phonebook/nosuchtenant/contacts.vcf?token=wrong".to_owned(),
    ] {
        refusals.push((path.clone(), app.raw("GET", &path, &[], vec![]).await));
    }
    let urls = export_urls(&app).await;
    let token = urls["vcard"].rsplit("token=").next().expect("token").to_owned();
    for path in [
        format!("/phonebook/{TENANT}/contacts.vcf"),
        format!("/phonebook/{TENANT}/contacts.vcf?token="),
        format!("/phonebook/{TENANT}/contacts.vcf?token=wrong"),
        format!("/phonebook/{TENANT}/yealink.xml?token={token}x"),
        format!("/phonebook/{TENANT}/snom.xml?token=wrong"),
        format!("/phonebook/nosuchtenant/contacts.vcf?token={token}"),
    ] {
        refusals.push((path.clone(), app.raw("GET", &path, &[], vec![]).await));
    }
    for (path, r) in &refusals {
        assert_eq!(r.status, 403, "{path}: {r:?}");
        assert_eq!(r.body, refusals[0].1.body, "{path}: the same answer for every refusal");
    }

    // What should be exported: directory entries and shared contacts with a valid number.
    let stored = by_name(&everyone(&app).await);
    let e164s = |name: &str| -> Vec<String> {
        stored[name]["phones"]
            .as_array()
            .expect("phones")
            .iter()
            .filter_map(|p| p["e164"].as_str().map(str::to_owned))
            .collect()
    };
    let want: BTreeMap<String, Vec<String>> = [special, long].iter().map(|n| ((*n).to_owned(), e164s(n))).collect();
    assert_eq!(want[special], ["+46812345678", "+46701234567"]);

    let (status, ct, vcf) = fetch(&app, &urls["vcard"]).await;
    assert_eq!(status, 200, "{vcf}");
    assert!(ct.starts_with("text/vcard"), "{ct}");
    let cards = parse_vcards(&vcf);
    let mut got = BTreeMap::new();
    for card in &cards {
        let fn_raw = &card.iter().find(|p| p.name == "FN").expect("FN").value;
        let name = vunescape(fn_raw);
        let mut tels = Vec::new();
        for tel in card.iter().filter(|p| p.name == "TEL") {
            assert!(tel.params.iter().any(|p| p.eq_ignore_ascii_case("VALUE=uri")), "TEL;VALUE=uri: {}", tel.value);
            let uri = tel.value.strip_prefix("tel:").unwrap_or_else(|| panic!("a tel: URI: {}", tel.value));
            let (number, params) = uri.split_once(';').unwrap_or((uri, ""));
            assert!(number.starts_with('+') && number[1..].chars().all(|c| c.is_ascii_digit()), "{uri}");
            if name == long {
                assert_eq!(params, "ext=12", "the extension as a tel: parameter: {uri}");
            }
            tels.push(number.to_owned());
        }
        assert!(got.insert(name.clone(), tels).is_none(), "{name} twice");
    }
    assert_eq!(got, want, "the vCard's people and numbers (left) are the phonebook's (right):\n{vcf}");
    assert!(vcf.contains("\r\n "), "the long name is folded:\n{vcf}");
    assert!(!vcf.contains("receptionen"), "invalid numbers are not exported");

    // A second opinion from a third-party parser (vcard4, strict mode).
    let parsed = vcard4::parse(&vcf).unwrap_or_else(|e| panic!("vcard4 refuses the export ({e}):\n{vcf}"));
    let mut third_party = BTreeMap::new();
    for card in &parsed {
        // vcard4 0.7 unescapes `\,` in text values but leaves `\;` as it is.
        let name = card.formatted_name.first().expect("FN").value.replace("\\;", ";");
        let tels: Vec<String> = card
            .tel
            .iter()
            .map(|t| match t {
                vcard4::property::TextOrUriProperty::Uri(u) => u.value.to_string(),
                vcard4::property::TextOrUriProperty::Text(t) => panic!("TEL as text, not a tel: URI: {}", t.value),
            })
            .map(|u| u.trim_start_matches("tel:").split(';').next().unwrap_or("").to_owned())
            .collect();
        third_party.insert(name, tels);
    }
    assert_eq!(parsed.len(), cards.len());
    assert_eq!(third_party, want, "vcard4's reading (left):\n{vcf}");

    for (kind, root_name, allowed) in [
        ("yealink", "YealinkIPPhoneDirectory", &["DirectoryEntry"][..]),
        ("snom", "SnomIPPhoneDirectory", &["Title", "Prompt", "DirectoryEntry"][..]),
    ] {
        let (status, ct, xml) = fetch(&app, &urls[kind]).await;
        assert_eq!(status, 200, "{kind}: {xml}");
        assert!(ct.contains("xml"), "{kind}: {ct}");
        assert_eq!(directory_entries(&xml, root_name, allowed), want, "{kind}:\n{xml}");
        if kind == "snom" {
            let doc = roxmltree::Document::parse(&xml).expect("xml");
            let first = doc.root_element().children().find(|n| n.is_element()).expect("a child");
            assert_eq!((first.tag_name().name(), first.text()), ("Title", Some(DOMAIN)), "{xml}");
        }
    }

    // A new token retires the old one.
    let again = export_urls(&app).await;
    assert_ne!(again["vcard"], urls["vcard"]);
    for kind in ["vcard", "yealink", "snom"] {
        let (status, ..) = fetch(&app, &urls[kind]).await;
        assert_eq!(status, 403, "{kind} with the old token");
        let (status, ..) = fetch(&app, &again[kind]).await;
        assert_eq!(status, 200, "{kind} with the new token");
    }
    // Editing the tenant keeps the desk phones' token.
    put_tenant(&app, json!({"poll_interval": "30m"})).await;
    let (status, ..) = fetch(&app, &again["vcard"]).await;
    assert_eq!(status, 200, "the export token survives a tenant update");
    assert!(base.starts_with("http://127.0.0.1:"));
    app.stop().await;
}

// ---- 9. status and polling ----

#[tokio::test]
async fn status_shows_polls_and_counts_and_the_tenant_is_polled_by_itself() {
    let app = start().await;
    quiet_poller(&app).await;
    add_directory(
        &app,
        json!([
            person("Växeln", &["08-123 456 78", "ring receptionen"], None),
            person("Mobil", &["070-123 45 67"], None)
        ]),
    )
    .await;
    app.setup_tenant().await;
    put_tenant(&app, json!({"poll_interval": "1m"})).await;
    sync(&app).await;
    let synced_at = app.clock.now();

    let st = status(&app).await;
    assert_eq!(
        (st["entries"].clone(), st["numbers"].clone(), st["unindexed_numbers"].clone()),
        (json!(5), json!(2), json!(1)),
        "{st:#}"
    );
    let dir = book(&st, "directory");
    assert_eq!(dir["entries"], 5, "{st:#}");
    let last_poll = time(&dir["last_poll"]);
    assert!((synced_at - last_poll).num_seconds().abs() <= 5, "{st:#}");
    let next = time(&st["next_poll"]);
    let gap = (next - last_poll).num_milliseconds();
    assert!((50_000..=70_000).contains(&gap), "the next poll is a (jittered) minute later: {st:#}");

    // A new colleague; half a minute on, nothing has been polled yet.
    add_directory(&app, person("Nyanställd", &["070-300 00 01"], None)).await;
    app.advance("30s").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let st = status(&app).await;
    assert_eq!(time(&book(&st, "directory")["last_poll"]), last_poll, "not polled before its time: {st:#}");
    assert_eq!(lookup_names(&app, "070-300 00 01").await, Vec::<String>::new());

    // Past the interval the poller polls by itself.
    app.advance("40s").await;
    let app_ref = &app;
    // (The book's last_poll is stored a moment before the index is rebuilt: wait for both.)
    let st = eventually("the poller to poll and the phonebook to show it", || async move {
        let st = status(app_ref).await;
        (time(&book(&st, "directory")["last_poll"]) > last_poll && st["entries"] == 6).then_some(st)
    })
    .await;
    assert!(time(&st["next_poll"]) > time(&book(&st, "directory")["last_poll"]), "{st:#}");
    assert_eq!(lookup_names(&app, "070-300 00 01").await, ["Nyanställd"]);
    app.stop().await;
}
