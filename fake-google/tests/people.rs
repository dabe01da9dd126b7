//! Conformance of People v1: people.connections.list and people.listDirectoryPeople — masks,
//! sources, paging, sync tokens and their expiry, person shapes, sharing, delay and quota
//! (NOTES §3; checklist 19-23).
mod common;
use common::*;

use std::collections::BTreeSet;

use serde_json::{Value, json};

const CONNECTIONS: &str = "/v1/people/me/connections";
const DIRECTORY: &str = "/v1/people:listDirectoryPeople";
const PROFILES: &str = "sources=DIRECTORY_SOURCE_TYPE_DOMAIN_PROFILE";
const SHARED: &str = "sources=DIRECTORY_SOURCE_TYPE_DOMAIN_CONTACT";
const BOTH: &str = "sources=DIRECTORY_SOURCE_TYPE_DOMAIN_PROFILE&sources=DIRECTORY_SOURCE_TYPE_DOMAIN_CONTACT";
const EXPIRED_MESSAGE: &str = "Sync token is expired. Clear local cache and retry call without the sync token.";

// ---- helpers ----

async fn list(env: &Env, token: &str, path: &str, query: &str) -> Reply {
    env.get(&format!("{path}?{query}"), token).await
}

async fn list_ok(env: &Env, token: &str, path: &str, query: &str) -> Value {
    let r = list(env, token, path, query).await;
    assert_eq!(r.status, 200, "{path}?{query}: {r:?}");
    r.body
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The listed persons (`connections` or `people`), empty when the key is absent.
fn items(body: &Value) -> Vec<Value> {
    let key = if body.get("connections").is_some() { "connections" } else { "people" };
    body[key].as_array().cloned().unwrap_or_default()
}

/// Every page of a listing; asserts the page/sync token rules on the way. Returns the persons
/// and the last page's `nextSyncToken`.
async fn list_all(env: &Env, token: &str, path: &str, query: &str) -> (Vec<Value>, Option<String>) {
    let mut all = Vec::new();
    let mut page: Option<String> = None;
    loop {
        let q = match &page {
            Some(p) => format!("{query}&pageToken={}", enc(p)),
            None => query.to_owned(),
        };
        let body = list_ok(env, token, path, &q).await;
        all.extend(items(&body));
        match body["nextPageToken"].as_str() {
            Some(p) => {
                assert!(body.get("nextSyncToken").is_none(), "nextSyncToken only on the last page: {body}");
                page = Some(p.to_owned());
            }
            None => return (all, body["nextSyncToken"].as_str().map(str::to_owned)),
        }
    }
}

fn person(given: &str, family: &str) -> Value {
    json!({
        "names": [{ "givenName": given, "familyName": family }],
        "emailAddresses": [{ "value": format!("{}@example.com", given.to_lowercase()), "type": "work" }],
    })
}

async fn add_contacts(env: &Env, user: &str, people: Value) -> Value {
    let r = env.control("POST", &format!("/_fake/contacts/{user}"), Some(people)).await;
    assert_eq!(r.status, 201, "{r:?}");
    r.body
}

async fn add_to_directory(env: &Env, people: Value) -> Value {
    let r = env.control("POST", &format!("/_fake/directory/{DOMAIN}/people"), Some(people)).await;
    assert_eq!(r.status, 201, "{r:?}");
    r.body
}

fn id_of(p: &Value) -> String {
    p["resourceName"].as_str().expect("resourceName").trim_start_matches("people/").to_owned()
}

fn resource_names(people: &[Value]) -> BTreeSet<String> {
    people.iter().map(|p| p["resourceName"].as_str().expect("resourceName").to_owned()).collect()
}

fn display_names(people: &[Value]) -> BTreeSet<String> {
    people.iter().filter_map(|p| p["names"][0]["displayName"].as_str()).map(str::to_owned).collect()
}

fn keys(p: &Value) -> BTreeSet<&str> {
    p.as_object().expect("person object").keys().map(String::as_str).collect()
}

/// A google.rpc error: `code`, `message`, `status`, and no legacy `errors[]`.
fn assert_rpc_error(r: &Reply, code: u16, status: &str) {
    assert_eq!(r.status, code, "{r:?}");
    let e = &r.body["error"];
    assert_eq!(e["code"], code, "{r:?}");
    assert_eq!(e["status"], status, "{r:?}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{r:?}");
    assert!(e.get("errors").is_none(), "People errors have no errors[]: {r:?}");
}

fn assert_expired(r: &Reply) {
    assert_rpc_error(r, 400, "FAILED_PRECONDITION");
    assert_eq!(r.body["error"]["message"], EXPIRED_MESSAGE, "{r:?}");
    assert_eq!(r.detail_reason(), Some("EXPIRED_SYNC_TOKEN"), "{r:?}");
    let info = &r.body["error"]["details"][0];
    assert_eq!(info["@type"], "type.googleapis.com/google.rpc.ErrorInfo", "{r:?}");
    assert_eq!(info["domain"], "people.googleapis.com", "{r:?}");
}

async fn set_behaviour(env: &Env, body: Value) {
    let r = env.control("PUT", "/_fake/behaviour", Some(body)).await;
    assert_eq!(r.status, 200, "{r:?}");
}

// ---- request validation ----

#[tokio::test]
async fn connections_require_a_valid_person_fields_mask() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    assert_rpc_error(&list(&env, &alice, CONNECTIONS, "pageSize=10").await, 400, "INVALID_ARGUMENT");
    assert_rpc_error(&list(&env, &alice, CONNECTIONS, "personFields=").await, 400, "INVALID_ARGUMENT");
    let r = list(&env, &alice, CONNECTIONS, "personFields=names,phoneNumberz").await;
    assert_rpc_error(&r, 400, "INVALID_ARGUMENT");
    list_ok(&env, &alice, CONNECTIONS, "personFields=names,phoneNumbers").await;
    env.fake.stop().await;
}

#[tokio::test]
async fn the_directory_requires_a_read_mask_and_valid_sources() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    assert_rpc_error(&list(&env, &alice, DIRECTORY, PROFILES).await, 400, "INVALID_ARGUMENT");
    let r = list(&env, &alice, DIRECTORY, &format!("readMask=names,bogus&{PROFILES}")).await;
    assert_rpc_error(&r, 400, "INVALID_ARGUMENT");
    assert_rpc_error(&list(&env, &alice, DIRECTORY, "readMask=names").await, 400, "INVALID_ARGUMENT");
    for bad in ["DIRECTORY_SOURCE_TYPE_BOGUS", "READ_SOURCE_TYPE_CONTACT"] {
        let r = list(&env, &alice, DIRECTORY, &format!("readMask=names&sources={bad}")).await;
        assert_rpc_error(&r, 400, "INVALID_ARGUMENT");
    }
    list_ok(&env, &alice, DIRECTORY, &format!("readMask=names&{BOTH}")).await;
    env.fake.stop().await;
}

#[tokio::test]
async fn page_size_defaults_to_100_and_must_be_1_to_1000() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let many: Vec<Value> = (0..150).map(|i| person(&format!("P{i:03}"), "Many")).collect();
    add_contacts(&env, ALICE, Value::Array(many)).await;

    for query in ["personFields=names", "personFields=names&pageSize=0"] {
        let body = list_ok(&env, &alice, CONNECTIONS, query).await;
        assert_eq!(items(&body).len(), 100, "{query}");
        assert!(body["nextPageToken"].is_string(), "{query}");
    }
    let body = list_ok(&env, &alice, CONNECTIONS, "personFields=names&pageSize=1000").await;
    assert_eq!(items(&body).len(), 150);
    assert!(body.get("nextPageToken").is_none(), "{body}");
    assert_eq!(items(&list_ok(&env, &alice, CONNECTIONS, "personFields=names&pageSize=1").await).len(), 1);

    for bad in ["1001", "-1", "ten"] {
        let r = list(&env, &alice, CONNECTIONS, &format!("personFields=names&pageSize={bad}")).await;
        assert_rpc_error(&r, 400, "INVALID_ARGUMENT");
        let r = list(&env, &alice, DIRECTORY, &format!("readMask=names&{BOTH}&pageSize={bad}")).await;
        assert_rpc_error(&r, 400, "INVALID_ARGUMENT");
    }
    env.fake.stop().await;
}

// ---- paging and fields ----

#[tokio::test]
async fn the_directory_pages_through_more_than_1000_entries() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let shared: Vec<Value> = (0..1100).map(|i| person(&format!("S{i:04}"), "Shared")).collect();
    let created = add_to_directory(&env, Value::Array(shared)).await;
    assert_eq!(created.as_array().map(Vec::len), Some(1100));

    let query = format!("readMask=names&{BOTH}&pageSize=1000&requestSyncToken=true");
    let first = list_ok(&env, &alice, DIRECTORY, &query).await;
    assert_eq!(items(&first).len(), 1000);
    assert!(first.get("nextSyncToken").is_none(), "{}", first["nextSyncToken"]);
    let page = first["nextPageToken"].as_str().expect("nextPageToken");
    let second = list_ok(&env, &alice, DIRECTORY, &format!("{query}&pageToken={}", enc(page))).await;
    assert_eq!(items(&second).len(), 102, "1100 shared contacts + alice + bob");
    assert!(second.get("nextPageToken").is_none());
    assert!(second["nextSyncToken"].is_string(), "the last page ends the full sync");

    let all: Vec<Value> = items(&first).into_iter().chain(items(&second)).collect();
    assert_eq!(resource_names(&all).len(), 1102, "every entry once");

    let default = list_ok(&env, &alice, DIRECTORY, &format!("readMask=names&{BOTH}")).await;
    assert_eq!(items(&default).len(), 100, "the directory's default page size is 100 too");
    env.fake.stop().await;
}

#[tokio::test]
async fn only_the_requested_fields_come_back() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let mut p = person("Carl", "Client");
    p["phoneNumbers"] = json!([{ "value": "+46 8 123 456 78", "type": "work" }]);
    p["organizations"] = json!([{ "name": "Client AB", "title": "CTO" }]);
    add_contacts(&env, ALICE, p).await;

    let body = list_ok(&env, &alice, CONNECTIONS, "personFields=names").await;
    let c = &items(&body)[0];
    assert_eq!(keys(c), BTreeSet::from(["resourceName", "etag", "names"]), "{c}");

    let body = list_ok(&env, &alice, CONNECTIONS, "personFields=phoneNumbers,organizations").await;
    let c = &items(&body)[0];
    assert_eq!(keys(c), BTreeSet::from(["resourceName", "etag", "phoneNumbers", "organizations"]), "{c}");

    let body = list_ok(&env, &alice, DIRECTORY, &format!("readMask=emailAddresses&{PROFILES}")).await;
    let people = items(&body);
    assert_eq!(people.len(), 2);
    for p in &people {
        assert_eq!(keys(p), BTreeSet::from(["resourceName", "etag", "emailAddresses"]), "{p}");
    }
    env.fake.stop().await;
}

#[tokio::test]
async fn a_page_token_must_come_with_the_same_parameters() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let three: Vec<Value> = (0..3).map(|i| person(&format!("G{i}"), "Paged")).collect();
    add_contacts(&env, ALICE, Value::Array(three)).await;
    let first = list_ok(&env, &alice, CONNECTIONS, "personFields=names&pageSize=2").await;
    let page = enc(first["nextPageToken"].as_str().expect("nextPageToken"));

    let r =
        list(&env, &alice, CONNECTIONS, &format!("personFields=names,phoneNumbers&pageSize=2&pageToken={page}")).await;
    assert_rpc_error(&r, 400, "INVALID_ARGUMENT");
    let r = list(&env, &alice, DIRECTORY, &format!("readMask=names&{BOTH}&pageSize=2&pageToken={page}")).await;
    assert_rpc_error(&r, 400, "INVALID_ARGUMENT");
    let r = list(&env, &alice, CONNECTIONS, "personFields=names&pageSize=2&pageToken=garbled").await;
    assert_rpc_error(&r, 400, "INVALID_ARGUMENT");
    let last = list_ok(&env, &alice, CONNECTIONS, &format!("personFields=names&pageSize=2&pageToken={page}")).await;
    assert_eq!(items(&last).len(), 1);
    env.fake.stop().await;
}

#[tokio::test]
async fn next_sync_token_comes_only_on_the_last_page_and_only_when_requested() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let five: Vec<Value> = (0..5).map(|i| person(&format!("F{i}"), "Five")).collect();
    add_contacts(&env, ALICE, Value::Array(five)).await;

    let (all, sync) = list_all(&env, &alice, CONNECTIONS, "personFields=names&pageSize=2&requestSyncToken=true").await;
    assert_eq!(all.len(), 5);
    assert!(sync.is_some(), "requested, so the last page has one");
    let (all, sync) = list_all(&env, &alice, CONNECTIONS, "personFields=names&pageSize=2").await;
    assert_eq!(all.len(), 5);
    assert!(sync.is_none(), "not requested, so none");
    env.fake.stop().await;
}

#[tokio::test]
async fn total_items_counts_every_connection_not_the_page() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let five: Vec<Value> = (0..5).map(|i| person(&format!("T{i}"), "Total")).collect();
    add_contacts(&env, ALICE, Value::Array(five)).await;
    let body = list_ok(&env, &alice, CONNECTIONS, "personFields=names&pageSize=2").await;
    assert_eq!(items(&body).len(), 2);
    assert_eq!(body["totalItems"], 5, "{body}");
    env.fake.stop().await;
}

#[tokio::test]
async fn empty_results_omit_the_list() {
    let env = Env::new().await;
    let bob = env.token_all(BOB).await;
    let body = list_ok(&env, &bob, CONNECTIONS, "personFields=names&requestSyncToken=true").await;
    assert!(body.get("connections").is_none(), "proto3 JSON omits an empty list: {body}");
    assert!(body["nextSyncToken"].is_string(), "{body}");
    let body = list_ok(&env, &bob, DIRECTORY, &format!("readMask=names&{SHARED}")).await;
    assert!(body.get("people").is_none(), "{body}");
    env.fake.stop().await;
}

// ---- sync ----

#[tokio::test]
async fn incremental_sync_returns_added_changed_and_deleted_contacts() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let created = add_contacts(
        &env,
        ALICE,
        json!([person("Anna", "Kept"), person("Bert", "Changed"), person("Cleo", "Deleted")]),
    )
    .await;
    let query = "personFields=names,emailAddresses&requestSyncToken=true";
    let (full, sync) = list_all(&env, &alice, CONNECTIONS, query).await;
    assert_eq!(
        display_names(&full),
        BTreeSet::from(["Anna Kept".into(), "Bert Changed".into(), "Cleo Deleted".into()])
    );
    let sync = sync.expect("nextSyncToken");

    let (bert, cleo) = (id_of(&created[1]), id_of(&created[2]));
    add_contacts(&env, ALICE, person("Dora", "Added")).await;
    let r = env.control("PUT", &format!("/_fake/contacts/{ALICE}/{bert}"), Some(person("Bert", "Renamed"))).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = env.control("DELETE", &format!("/_fake/contacts/{ALICE}/{cleo}"), None).await;
    assert_eq!(r.status, 204, "{r:?}");

    let (delta, next) = list_all(&env, &alice, CONNECTIONS, &format!("{query}&syncToken={}", enc(&sync))).await;
    assert!(next.is_some(), "an incremental sync hands out the next token");
    assert_eq!(delta.len(), 3, "Dora, Bert and Cleo; not Anna: {delta:?}");
    let by_name = |rn: &str| delta.iter().find(|p| p["resourceName"] == rn).cloned();
    let bert_now = by_name(&format!("people/{bert}")).expect("changed contact");
    assert_eq!(bert_now["names"][0]["displayName"], "Bert Renamed");
    assert!(bert_now["emailAddresses"].is_array(), "a changed person comes in full: {bert_now}");
    let dora = delta.iter().find(|p| p["names"][0]["displayName"] == "Dora Added").expect("added contact");
    assert!(dora["emailAddresses"].is_array());
    let gone = by_name(&format!("people/{cleo}")).expect("deleted contact");
    assert_eq!(gone["metadata"]["deleted"], true, "{gone}");
    assert!(gone["etag"].is_string(), "{gone}");
    assert!(gone.get("names").is_none() && gone.get("emailAddresses").is_none(), "a tombstone: {gone}");

    // Nothing changed since: an empty delta.
    let body = list_ok(&env, &alice, CONNECTIONS, &format!("{query}&syncToken={}", enc(&next.unwrap()))).await;
    assert!(body.get("connections").is_none(), "{body}");
    env.fake.stop().await;
}

#[tokio::test]
async fn incremental_directory_sync_reports_new_and_removed_entries() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let query = format!("readMask=names,emailAddresses&{BOTH}&requestSyncToken=true");
    let (full, sync) = list_all(&env, &alice, DIRECTORY, &query).await;
    assert_eq!(full.len(), 2);
    let bob_profile = full
        .iter()
        .find(|p| p["emailAddresses"][0]["value"] == BOB)
        .map(|p| p["resourceName"].clone())
        .expect("bob's profile");

    let r = env.control("DELETE", &format!("/_fake/domains/{DOMAIN}/users/{BOB}"), None).await;
    assert_eq!(r.status, 204, "{r:?}");
    add_to_directory(&env, person("Reception", "Desk")).await;

    let (delta, _) = list_all(&env, &alice, DIRECTORY, &format!("{query}&syncToken={}", enc(&sync.unwrap()))).await;
    assert_eq!(delta.len(), 2, "{delta:?}");
    let gone = delta.iter().find(|p| p["resourceName"] == bob_profile).expect("bob's tombstone");
    assert_eq!(gone["metadata"]["deleted"], true, "{gone}");
    assert!(gone.get("names").is_none(), "{gone}");
    assert!(delta.iter().any(|p| p["names"][0]["displayName"] == "Reception Desk"), "{delta:?}");
    env.fake.stop().await;
}

#[tokio::test]
async fn a_sync_token_must_come_with_the_same_parameters() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    add_contacts(&env, ALICE, person("Sam", "Same")).await;
    let (_, sync) = list_all(&env, &alice, CONNECTIONS, "personFields=names&requestSyncToken=true").await;
    let sync = enc(&sync.unwrap());

    let changed = format!("personFields=names,phoneNumbers&requestSyncToken=true&syncToken={sync}");
    let r = list(&env, &alice, CONNECTIONS, &changed).await;
    assert_rpc_error(&r, 400, "INVALID_ARGUMENT");
    assert_ne!(r.detail_reason(), Some("EXPIRED_SYNC_TOKEN"), "{r:?}");
    let sorted = format!("personFields=names&requestSyncToken=true&sortOrder=FIRST_NAME_ASCENDING&syncToken={sync}");
    assert_rpc_error(&list(&env, &alice, CONNECTIONS, &sorted).await, 400, "INVALID_ARGUMENT");
    list_ok(&env, &alice, CONNECTIONS, &format!("personFields=names&requestSyncToken=true&syncToken={sync}")).await;
    env.fake.stop().await;
}

#[tokio::test]
async fn sync_tokens_expire_seven_days_after_the_full_sync() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    add_contacts(&env, ALICE, person("Eve", "Expiring")).await;
    let query = "personFields=names&requestSyncToken=true";
    let (_, first) = list_all(&env, &alice, CONNECTIONS, query).await;
    let first = first.unwrap();

    env.advance("4d").await;
    let alice = env.token_all(ALICE).await;
    let (_, second) = list_all(&env, &alice, CONNECTIONS, &format!("{query}&syncToken={}", enc(&first))).await;
    let second = second.unwrap();

    env.advance("4d").await;
    let alice = env.token_all(ALICE).await;
    // Eight days after the full sync, four after the last incremental one: the chain is dead.
    assert_expired(&list(&env, &alice, CONNECTIONS, &format!("{query}&syncToken={}", enc(&second))).await);
    assert_expired(&list(&env, &alice, CONNECTIONS, &format!("{query}&syncToken={}", enc(&first))).await);

    // A new full sync starts a new chain.
    let (all, fresh) = list_all(&env, &alice, CONNECTIONS, query).await;
    assert_eq!(all.len(), 1);
    list_ok(&env, &alice, CONNECTIONS, &format!("{query}&syncToken={}", enc(&fresh.unwrap()))).await;
    env.fake.stop().await;
}

#[tokio::test]
async fn invalidated_sync_tokens_answer_expired() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    add_contacts(&env, ALICE, person("Ian", "Invalid")).await;
    let con_query = "personFields=names&requestSyncToken=true";
    let dir_query = format!("readMask=names&{BOTH}&requestSyncToken=true");
    let (_, con) = list_all(&env, &alice, CONNECTIONS, con_query).await;
    let (_, dir) = list_all(&env, &alice, DIRECTORY, &dir_query).await;

    let r = env.control("POST", "/_fake/sync-tokens/invalidate", Some(json!({ "user": ALICE, "api": "people" }))).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = list(&env, &alice, CONNECTIONS, &format!("{con_query}&syncToken={}", enc(&con.unwrap()))).await;
    assert_expired(&r);
    let r = list(&env, &alice, DIRECTORY, &format!("{dir_query}&syncToken={}", enc(&dir.unwrap()))).await;
    assert_expired(&r);
    env.fake.stop().await;
}

#[tokio::test]
async fn a_propagation_delay_hides_a_change_without_losing_it() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let created = add_contacts(&env, ALICE, person("Olle", "Original")).await;
    let query = "personFields=names&requestSyncToken=true";
    let (_, t1) = list_all(&env, &alice, CONNECTIONS, query).await;

    set_behaviour(&env, json!({ "people_propagation_delay_ms": 120_000 })).await;
    add_contacts(&env, ALICE, person("Nina", "New")).await;
    let olle = id_of(&created);
    let r = env.control("PUT", &format!("/_fake/contacts/{ALICE}/{olle}"), Some(person("Olle", "Updated"))).await;
    assert_eq!(r.status, 200, "{r:?}");

    let (now, t3) = list_all(&env, &alice, CONNECTIONS, query).await;
    assert_eq!(display_names(&now), BTreeSet::from(["Olle Original".to_owned()]), "not visible yet");
    // A sync while the changes are still propagating sees nothing ...
    let (delta, t2) = list_all(&env, &alice, CONNECTIONS, &format!("{query}&syncToken={}", enc(&t1.unwrap()))).await;
    assert!(delta.is_empty(), "{delta:?}");

    // ... and the next one, once they have propagated, gets them.
    env.advance("3m").await;
    let alice = env.token_all(ALICE).await;
    let (delta, _) = list_all(&env, &alice, CONNECTIONS, &format!("{query}&syncToken={}", enc(&t2.unwrap()))).await;
    let propagated = BTreeSet::from(["Nina New".to_owned(), "Olle Updated".to_owned()]);
    assert_eq!(display_names(&delta), propagated);
    // So does a chain begun by a full sync during the delay.
    let (delta, _) = list_all(&env, &alice, CONNECTIONS, &format!("{query}&syncToken={}", enc(&t3.unwrap()))).await;
    assert_eq!(display_names(&delta), propagated);
    let (now, _) = list_all(&env, &alice, CONNECTIONS, query).await;
    assert_eq!(display_names(&now), propagated);
    env.fake.stop().await;
}

#[tokio::test]
async fn first_pages_of_full_syncs_have_their_own_quota() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    add_contacts(&env, ALICE, json!([person("Q1", "Quota"), person("Q2", "Quota")])).await;
    let r = env.control("PUT", "/_fake/quota", Some(json!({ "people_full_sync_per_minute": 1 }))).await;
    assert_eq!(r.status, 200, "{r:?}");

    let query = "personFields=names&pageSize=1&requestSyncToken=true";
    let first = list_ok(&env, &alice, CONNECTIONS, query).await;
    assert_rpc_error(&list(&env, &alice, CONNECTIONS, query).await, 429, "RESOURCE_EXHAUSTED");

    // Later pages and incremental syncs are not first pages of a full sync.
    let page = first["nextPageToken"].as_str().expect("nextPageToken");
    let last = list_ok(&env, &alice, CONNECTIONS, &format!("{query}&pageToken={}", enc(page))).await;
    let sync = last["nextSyncToken"].as_str().expect("nextSyncToken");
    list_ok(&env, &alice, CONNECTIONS, &format!("{query}&syncToken={}", enc(sync))).await;

    env.advance("61s").await;
    list_ok(&env, &alice, CONNECTIONS, query).await;
    env.fake.stop().await;
}

// ---- the directory and its sources ----

#[tokio::test]
async fn directory_sharing_off_is_403() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let query = format!("readMask=names&{BOTH}");
    let r = env.control("PUT", &format!("/_fake/domains/{DOMAIN}"), Some(json!({ "directory_sharing": false }))).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_rpc_error(&list(&env, &alice, DIRECTORY, &query).await, 403, "PERMISSION_DENIED");
    list_ok(&env, &alice, CONNECTIONS, "personFields=names").await;

    let r = env.control("PUT", &format!("/_fake/domains/{DOMAIN}"), Some(json!({ "directory_sharing": true }))).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(items(&list_ok(&env, &alice, DIRECTORY, &query).await).len(), 2);
    env.fake.stop().await;
}

#[tokio::test]
async fn sources_select_domain_profiles_or_shared_contacts() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    add_to_directory(&env, json!([person("Front", "Desk"), person("Support", "Line")])).await;
    let mask = "readMask=names,emailAddresses,metadata";

    let profiles = items(&list_ok(&env, &alice, DIRECTORY, &format!("{mask}&{PROFILES}")).await);
    let emails: BTreeSet<&str> = profiles.iter().filter_map(|p| p["emailAddresses"][0]["value"].as_str()).collect();
    assert_eq!(emails, BTreeSet::from([ALICE, BOB]));
    for p in &profiles {
        assert_eq!(p["metadata"]["sources"][0]["type"], "DOMAIN_PROFILE", "{p}");
        assert_eq!(p["names"][0]["metadata"]["source"]["type"], "DOMAIN_PROFILE", "{p}");
    }

    let shared = items(&list_ok(&env, &alice, DIRECTORY, &format!("{mask}&{SHARED}")).await);
    assert_eq!(display_names(&shared), BTreeSet::from(["Front Desk".to_owned(), "Support Line".to_owned()]));
    for p in &shared {
        assert_eq!(p["metadata"]["sources"][0]["type"], "DOMAIN_CONTACT", "{p}");
        assert_eq!(p["names"][0]["metadata"]["source"]["type"], "DOMAIN_CONTACT", "{p}");
    }

    let both = items(&list_ok(&env, &alice, DIRECTORY, &format!("{mask}&{BOTH}")).await);
    assert_eq!(resource_names(&both), &resource_names(&profiles) | &resource_names(&shared));
    env.fake.stop().await;
}

#[tokio::test]
async fn phone_numbers_carry_canonical_form_and_formatted_type() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let mut p = person("Phil", "Phones");
    p["phoneNumbers"] = json!([
        { "value": "08-123 456 78", "type": "mobile" },
        { "value": "+1 (650) 253-0000", "type": "work" },
        { "value": "12", "type": "home" },
    ]);
    add_to_directory(&env, p.clone()).await;
    add_contacts(&env, ALICE, p).await;

    let dir = items(&list_ok(&env, &alice, DIRECTORY, &format!("readMask=phoneNumbers&{SHARED}")).await);
    let con = items(&list_ok(&env, &alice, CONNECTIONS, "personFields=phoneNumbers").await);
    for (who, source) in [(&dir[0], "DOMAIN_CONTACT"), (&con[0], "CONTACT")] {
        let phones = who["phoneNumbers"].as_array().expect("phoneNumbers");
        assert_eq!(phones.len(), 3, "{who}");
        assert_eq!(phones[0]["value"], "08-123 456 78", "the value stays as typed");
        assert_eq!(phones[0]["canonicalForm"], "+46812345678", "{who}");
        assert_eq!(phones[0]["type"], "mobile");
        assert_eq!(phones[0]["formattedType"], "Mobile");
        assert_eq!(phones[1]["canonicalForm"], "+16502530000", "{who}");
        assert_eq!(phones[1]["formattedType"], "Work");
        assert!(phones[2].get("canonicalForm").is_none(), "12 is no phone number: {who}");
        assert_eq!(phones[2]["formattedType"], "Home");
        assert_eq!(phones[0]["metadata"]["primary"], true, "{who}");
        assert_ne!(phones[1]["metadata"]["primary"], true, "only one primary: {who}");
        for ph in phones {
            assert_eq!(ph["metadata"]["source"]["type"], source, "{who}");
            assert!(ph["metadata"]["source"]["id"].is_string(), "{who}");
        }
    }
    env.fake.stop().await;
}

#[tokio::test]
async fn names_and_emails_carry_their_display_forms() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    add_contacts(&env, ALICE, person("Greta", "Garbo")).await;
    let body = list_ok(&env, &alice, CONNECTIONS, "personFields=names,emailAddresses").await;
    let p = &items(&body)[0];
    let name = &p["names"][0];
    assert_eq!(name["displayName"], "Greta Garbo", "{p}");
    assert_eq!(name["displayNameLastFirst"], "Garbo, Greta", "{p}");
    assert_eq!(name["givenName"], "Greta");
    assert_eq!(name["familyName"], "Garbo");
    assert_eq!(name["metadata"]["primary"], true, "{p}");
    assert_eq!(p["emailAddresses"][0]["formattedType"], "Work", "{p}");
    assert_eq!(p["emailAddresses"][0]["metadata"]["source"]["type"], "CONTACT", "{p}");
    assert!(p["resourceName"].as_str().is_some_and(|r| r.starts_with("people/c")), "{p}");
    env.fake.stop().await;
}

#[tokio::test]
async fn each_listing_needs_its_own_scope() {
    let env = Env::new().await;
    let contacts_only = env.token(ALICE, &[CONTACTS_READONLY]).await;
    let directory_only = env.token(ALICE, &[DIRECTORY_READONLY]).await;
    list_ok(&env, &contacts_only, CONNECTIONS, "personFields=names").await;
    list_ok(&env, &directory_only, DIRECTORY, &format!("readMask=names&{BOTH}")).await;

    let r = list(&env, &contacts_only, DIRECTORY, &format!("readMask=names&{BOTH}")).await;
    assert_rpc_error(&r, 403, "PERMISSION_DENIED");
    assert_eq!(r.detail_reason(), Some("ACCESS_TOKEN_SCOPE_INSUFFICIENT"), "{r:?}");
    let r = list(&env, &directory_only, CONNECTIONS, "personFields=names").await;
    assert_rpc_error(&r, 403, "PERMISSION_DENIED");
    assert_eq!(r.detail_reason(), Some("ACCESS_TOKEN_SCOPE_INSUFFICIENT"), "{r:?}");
    env.fake.stop().await;
}

#[tokio::test]
async fn contacts_are_private_to_their_owner() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let bob = env.token_all(BOB).await;
    add_contacts(&env, ALICE, person("Secret", "Friend")).await;

    let query = "personFields=names&requestSyncToken=true";
    let (mine, alice_sync) = list_all(&env, &alice, CONNECTIONS, query).await;
    assert_eq!(display_names(&mine), BTreeSet::from(["Secret Friend".to_owned()]));
    let (theirs, _) = list_all(&env, &bob, CONNECTIONS, query).await;
    assert!(theirs.is_empty(), "{theirs:?}");
    // Alice's sync token opens nothing for Bob.
    let r = list(&env, &bob, CONNECTIONS, &format!("{query}&syncToken={}", enc(&alice_sync.unwrap()))).await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(items(&r.body).is_empty(), "{r:?}");
    env.fake.stop().await;
}
