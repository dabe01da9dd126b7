//! Calendar sync end to end, one test per item of the issue's "Done when" list: coalescing of
//! notification bursts, changes spanning pages, a `kill -9` between pages (the real binary),
//! invalidated sync tokens, forged and malformed notifications, dropped notifications caught by
//! the backstop, Google's failures (503, 429 with Retry-After, expired access tokens), user
//! deletion, and the user's sync status and metrics.
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use serde_json::{Value, json};

const HOOK: &str = "/webhooks/google/calendar";

// ---- Google's side (the fake) ----

/// Inserts a one-hour event on March `day` 2030; returns its id.
async fn insert(app: &TestApp, token: &str, summary: &str, day: u32) -> String {
    let body = json!({
        "summary": summary,
        "start": {"dateTime": format!("2030-03-{day:02}T11:00:00Z")},
        "end": {"dateTime": format!("2030-03-{day:02}T12:00:00Z")},
    });
    let r = google(app, "POST", "events", token, Some(body)).await;
    assert_eq!(r.status, 200, "insert {summary}: {r:?}");
    r.body["id"].as_str().expect("id").to_owned()
}

async fn rename(app: &TestApp, token: &str, id: &str, summary: &str) {
    let r = google(app, "PATCH", &format!("events/{id}"), token, Some(json!({"summary": summary}))).await;
    assert_eq!(r.status, 200, "rename {id}: {r:?}");
}

fn query_has(request: &Value, param: &str) -> bool {
    request["query"].as_str().unwrap_or_default().split('&').any(|kv| kv.starts_with(&format!("{param}=")))
}

/// Requests of Google's APIs (not the control API) in the fake's log after `since`.
async fn google_calls_since(app: &TestApp, since: u64) -> Vec<Value> {
    requests(app, None, since)
        .await
        .into_iter()
        .filter(|r| r["method"].is_string() && r["method"] != "control")
        .collect()
}

async fn fake_channel(app: &TestApp, id: &str) -> Option<Value> {
    let r = app.fake_control("GET", "/_fake/channels", Value::Null).await;
    r.body["channels"].as_array().into_iter().flatten().find(|c| c["id"] == id).cloned()
}

async fn set_delivery(app: &TestApp, settings: Value) {
    let r = app.fake_control("PUT", "/_fake/delivery", settings).await;
    assert_eq!(r.status, 200, "{r:?}");
}

/// Waits until `n` `exists` notifications of `channel` were dropped by the fake.
async fn wait_dropped(app: &TestApp, channel: &str, n: usize) {
    eventually("the fake to drop the notifications", async || {
        let dropped = deliveries(app, channel)
            .await
            .iter()
            .filter(|d| d["state"] == "exists" && d["outcome"] == "dropped")
            .count();
        if dropped >= n { Ok(()) } else { Err(format!("{dropped} of {n} dropped")) }
    })
    .await;
}

// ---- gwsync's side ----

async fn store_map(app: &TestApp, user: &str) -> BTreeMap<String, String> {
    summaries(&stored(app, user).await)
}

/// Waits until gwsync's store holds exactly Google's calendar (as it is now); returns it.
async fn wait_store_matches_google(app: &TestApp, user: &str, what: &str) -> BTreeMap<String, String> {
    let want = google_calendar(app, user).await;
    eventually(what, async || {
        let have = store_map(app, user).await;
        if have == want { Ok(have) } else { Err(format!("\n store:  {have:?}\n google: {want:?}")) }
    })
    .await
}

async fn wait_stored(app: &TestApp, user: &str, id: &str, what: &str) {
    eventually(what, async || {
        let have = store_map(app, user).await;
        if have.contains_key(id) { Ok(()) } else { Err(format!("store holds {have:?}")) }
    })
    .await;
}

/// Waits until the user is synced, idle, with a live channel whose `sync` message Google
/// delivered; returns gwsync's status and the fake's channel.
async fn wait_ready(app: &TestApp, user: &str) -> (Value, Value) {
    eventually("a first sync and a live channel", async || {
        let status = user_status(app, user).await;
        let sync = &status["sync"];
        let Some(id) = sync["channel"]["id"].as_str() else { return Err(format!("no channel: {status}")) };
        if sync["last_sync"].is_null() || !sync["pending"].is_null() {
            return Err(format!("not synced yet: {status}"));
        }
        let Some(channel) = fake_channel(app, id).await else { return Err(format!("the fake has no channel {id}")) };
        if channel["state"] != "live" {
            return Err(format!("channel not live: {channel}"));
        }
        if !deliveries(app, id).await.iter().any(|d| d["state"] == "sync" && d["outcome"] == "delivered") {
            return Err("the channel's sync message is not delivered yet".into());
        }
        Ok((status, channel))
    })
    .await
}

/// The value of one series (`name{labels}`) in Prometheus text, 0 if absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap_or_else(|e| panic!("not a time: {v}: {e}"))
        .with_timezone(&Utc)
}

/// A tenant with a key, and alice with a first event, fully synced with a live channel.
async fn alice_synced(app: &TestApp) -> (String, Value) {
    app.setup_tenant().await;
    let writer = writer_token(app, ALICE).await;
    insert(app, &writer, "Planning", 1).await;
    let r = app.put_user(ALICE, json!({"profiles": [{"name": "Lunch", "triggers": ["lunch"]}]})).await;
    assert_eq!(r.status, 201, "{r:?}");
    let (_, channel) = wait_ready(app, ALICE).await;
    wait_store_matches_google(app, ALICE, "the full sync").await;
    quiet(app, ALICE).await;
    (writer, channel)
}

// ---- 1. coalescing ----

#[tokio::test]
async fn a_burst_of_a_hundred_notifications_costs_at_most_two_listings() {
    let app = TestApp::start().await;
    let (writer, channel) = alice_synced(&app).await;
    let channel_id = channel["id"].as_str().expect("id").to_owned();
    let accepted_before = metric(&metrics(&app).await, r#"gwsync_notifications_total{outcome="accepted"}"#);
    let since = last_seq(&app).await;

    // One change, which Google announces 100 times over.
    set_delivery(&app, json!({"duplicate": 99})).await;
    let id = insert(&app, &writer, "Lunch with a customer", 2).await;
    let burst = eventually("100 notifications delivered", async || {
        let d: Vec<Value> =
            deliveries(&app, &channel_id).await.into_iter().filter(|d| d["state"] == "exists").collect();
        if d.len() >= 100 { Ok(d) } else { Err(format!("{} delivered so far", d.len())) }
    })
    .await;
    assert_eq!(burst.len(), 100, "{burst:?}");
    assert!(burst.iter().all(|d| d["outcome"] == "delivered" && d["status"] == 200), "all acknowledged: {burst:?}");
    let span = time(&burst[99]["time"]) - time(&burst[0]["time"]);
    wait_stored(&app, ALICE, &id, "the change").await;
    quiet(&app, ALICE).await;

    let lists = requests(&app, Some("calendar.events.list"), since).await;
    assert!(
        !lists.is_empty() && lists.len() <= 2,
        "100 notifications (delivered within {} ms) cost {} events.list calls, expected 1 or 2: {lists:#?}",
        span.num_milliseconds(),
        lists.len()
    );
    let store = wait_store_matches_google(&app, ALICE, "the store after the burst").await;
    assert_eq!(store.len(), 2, "{store:?}");
    let accepted = metric(&metrics(&app).await, r#"gwsync_notifications_total{outcome="accepted"}"#);
    assert_eq!(accepted - accepted_before, 100.0, "every notification is counted as accepted");
    app.stop().await;
}

// ---- 2. pages ----

#[tokio::test]
async fn changes_spanning_several_pages_all_arrive_in_full_and_incremental_syncs() {
    let app = TestApp::start_with(|c| c.sync.page_size = 2).await;
    app.setup_tenant().await;
    let writer = writer_token(&app, ALICE).await;
    let mut ids = Vec::new();
    for i in 0..9 {
        ids.push(insert(&app, &writer, &format!("Event {i}"), i + 1).await);
    }
    let since = last_seq(&app).await;
    let r = app.put_user(ALICE, json!({"profiles": []})).await;
    assert_eq!(r.status, 201, "{r:?}");
    let (_, channel) = wait_ready(&app, ALICE).await;
    let channel_id = channel["id"].as_str().expect("id").to_owned();
    let store = wait_store_matches_google(&app, ALICE, "the full sync over several pages").await;
    assert_eq!(store.len(), 9, "{store:?}");
    let full: Vec<Value> = requests(&app, Some("calendar.events.list"), since)
        .await
        .into_iter()
        .filter(|r| !query_has(r, "syncToken"))
        .collect();
    assert!(full.len() >= 5 && full.iter().filter(|r| query_has(r, "pageToken")).count() >= 4, "{full:#?}");
    quiet(&app, ALICE).await;

    // Nine changes gwsync hears nothing about, then one it hears of: one incremental result
    // of ten items, five pages.
    set_delivery(&app, json!({"drop": 1.0})).await;
    for i in 0..3 {
        insert(&app, &writer, &format!("New {i}"), 11 + i).await;
    }
    for id in &ids[0..3] {
        rename(&app, &writer, id, &format!("Renamed {id}")).await;
    }
    for id in &ids[3..6] {
        delete(&app, &writer, id).await;
    }
    wait_dropped(&app, &channel_id, 9).await;
    set_delivery(&app, json!({"drop": 0.0})).await;
    let since = last_seq(&app).await;
    insert(&app, &writer, "Trigger", 20).await;
    let store = wait_store_matches_google(&app, ALICE, "the incremental sync over several pages").await;
    assert_eq!(store.len(), 10, "{store:?}");
    assert!(ids[0..3].iter().all(|id| store[id] == format!("Renamed {id}")), "{store:?}");
    assert!(ids[3..6].iter().all(|id| !store.contains_key(id)), "deleted events are gone: {store:?}");
    quiet(&app, ALICE).await;
    let lists = requests(&app, Some("calendar.events.list"), since).await;
    assert!(lists.iter().all(|r| query_has(r, "syncToken")), "incremental, not a full sync: {lists:#?}");
    assert!(
        lists.iter().filter(|r| query_has(r, "pageToken")).count() >= 4,
        "the incremental result was paged: {lists:#?}"
    );
    assert_eq!(user_status(&app, ALICE).await["sync"]["events_stored"], 10);
    app.stop().await;
}

// ---- 3. kill -9 between pages (the real binary) ----

/// Alice as the process's admin API shows her.
async fn alice_status(gw: &ServeProcess, app: &TestApp) -> Value {
    let r = gw.api(app, "GET", &format!("/api/v1/tenants/{TENANT}/users/{ALICE}"), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body
}

/// Alice's stored events in the process, id → summary.
async fn alice_store(gw: &ServeProcess, app: &TestApp) -> BTreeMap<String, String> {
    let r = gw.api(app, "GET", &format!("/api/v1/tenants/{TENANT}/users/{ALICE}/events"), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    summaries(r.body["events"].as_array().map(Vec::as_slice).unwrap_or_default())
}

async fn wait_alice_matches_google(gw: &ServeProcess, app: &TestApp, what: &str) -> BTreeMap<String, String> {
    let want = google_calendar(app, ALICE).await;
    eventually(what, async || {
        let have = alice_store(gw, app).await;
        if have == want { Ok(have) } else { Err(format!("\n store:  {have:?}\n google: {want:?}")) }
    })
    .await
}

#[tokio::test]
async fn a_kill_between_pages_loses_no_change() {
    // The harness's fake Google, key and delegation; gwsync runs as a real process instead.
    let mut app = TestApp::start().await;
    app.stop_gwsync().await.expect("the in-process gwsync stops");
    let writer = writer_token(&app, ALICE).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(insert(&app, &writer, &format!("Before {i}"), i + 1).await);
    }
    let data = tempfile::tempdir().expect("tempdir");
    let data_dir = data.path().join("gwsync");
    let port = free_port();
    let master_key = random_master_key();
    let small_pages = [("GWSYNC_SYNC__PAGE_SIZE", "2")];
    let mut gw = ServeProcess::spawn(&app, &data_dir, port, &master_key, &small_pages).await;

    let r = gw
        .api(&app, "PUT", &format!("/api/v1/tenants/{TENANT}"), Some(json!({"domain": DOMAIN, "directory_admin": IT})))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = gw.api(&app, "PUT", &format!("/api/v1/tenants/{TENANT}/credentials"), Some(app.key.clone())).await;
    assert_eq!(r.status, 200, "{r:?}");
    let user = json!({"profiles": [{"name": "Lunch", "triggers": ["lunch"]}]});
    let r = gw.api(&app, "PUT", &format!("/api/v1/tenants/{TENANT}/users/{ALICE}"), Some(user.clone())).await;
    assert_eq!(r.status, 201, "{r:?}");
    let channel_id = eventually("the first sync and a channel", async || {
        let s = alice_status(&gw, &app).await;
        match s["sync"]["channel"]["id"].as_str() {
            Some(id) if !s["sync"]["last_sync"].is_null() && s["sync"]["pending"].is_null() => Ok(id.to_owned()),
            _ => Err(format!("{s}")),
        }
    })
    .await;
    eventually("the channel's sync message delivered", async || {
        if deliveries(&app, &channel_id).await.iter().any(|d| d["state"] == "sync" && d["outcome"] != "retrying") {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    })
    .await;
    let before = wait_alice_matches_google(&gw, &app, "the full sync").await;
    assert_eq!(before.len(), 5);
    let lists = requests(&app, Some("calendar.events.list"), 0).await;
    assert!(
        lists.iter().all(|r| r["query"].as_str().unwrap_or_default().contains("maxResults=2&")),
        "GWSYNC_SYNC__PAGE_SIZE=2 is honoured (the full sync lists 2 events a page): {lists:#?}"
    );

    // Five changes gwsync does not hear about: an incremental result of three pages.
    set_delivery(&app, json!({"drop": 1.0})).await;
    for i in 0..3 {
        insert(&app, &writer, &format!("After {i}"), 10 + i).await;
    }
    rename(&app, &writer, &ids[0], "Renamed").await;
    delete(&app, &writer, &ids[1]).await;
    wait_dropped(&app, &channel_id, 5).await;
    set_delivery(&app, json!({"drop": 0.0})).await;

    // The second page of the next sync hangs; re-saving the user starts that sync.
    arm_fault(&app, json!({"method": "calendar.events.list", "skip": 1, "delay_ms": 60000})).await;
    let r = gw.api(&app, "PUT", &format!("/api/v1/tenants/{TENANT}/users/{ALICE}"), Some(user)).await;
    assert_eq!(r.status, 200, "{r:?}");
    eventually("the sync to reach its second page", async || {
        let left = faults_left(&app).await;
        if left == 0 { Ok(()) } else { Err(format!("{left} faults armed")) }
    })
    .await;
    assert_eq!(alice_store(&gw, &app).await, before, "nothing of the first page is applied before the last page");

    gw.kill();
    let r = app.fake_control("DELETE", "/_fake/faults", Value::Null).await;
    assert_eq!(r.status, 204, "{r:?}");
    let since = last_seq(&app).await;
    let gw = ServeProcess::spawn(&app, &data_dir, port, &master_key, &small_pages).await;
    let after = wait_alice_matches_google(&gw, &app, "the store after the restart").await;
    assert_eq!(after.len(), 7, "{after:?}");
    assert_eq!(after[&ids[0]], "Renamed");
    assert!(!after.contains_key(&ids[1]), "the deleted event is gone: {after:?}");
    let lists = requests(&app, Some("calendar.events.list"), since).await;
    assert!(
        lists.first().is_some_and(|r| query_has(r, "syncToken")),
        "the restart resumed from the stored token: {lists:#?}"
    );
    drop(gw);
    app.stop().await;
}

// ---- 4. 410 ----

#[tokio::test]
async fn an_invalidated_sync_token_means_wipe_and_full_sync() {
    let app = TestApp::start().await;
    let (writer, _) = alice_synced(&app).await;
    let doomed = insert(&app, &writer, "Doomed", 2).await;
    let kept = insert(&app, &writer, "Kept", 3).await;
    wait_store_matches_google(&app, ALICE, "the first changes").await;
    quiet(&app, ALICE).await;
    let last_full = user_status(&app, ALICE).await["sync"]["last_full_sync"].clone();
    let since = last_seq(&app).await;

    let r = app.fake_control("POST", "/_fake/sync-tokens/invalidate", json!({"user": ALICE, "api": "calendar"})).await;
    assert_eq!(r.status, 200, "{r:?}");
    // A deletion only a full sync after a wipe can notice: the token is dead already.
    delete(&app, &writer, &doomed).await;
    let added = insert(&app, &writer, "Added", 4).await;
    let store = wait_store_matches_google(&app, ALICE, "the full sync after 410").await;
    assert!(!store.contains_key(&doomed), "the event deleted meanwhile is gone: {store:?}");
    assert!(store.contains_key(&kept) && store.contains_key(&added) && store.len() == 3, "{store:?}");
    quiet(&app, ALICE).await;

    let lists = requests(&app, Some("calendar.events.list"), since).await;
    let gone = lists.iter().position(|r| r["status"] == 410 && query_has(r, "syncToken"));
    let gone = gone.unwrap_or_else(|| panic!("an events.list answered 410: {lists:#?}"));
    assert!(
        lists[gone..].iter().any(|r| r["status"] == 200 && !query_has(r, "syncToken")),
        "a full sync followed the 410: {lists:#?}"
    );
    let status = user_status(&app, ALICE).await;
    assert_ne!(status["sync"]["last_full_sync"], last_full, "{status}");
    assert!(status["sync"]["last_error"].is_null(), "{status}");
    assert_eq!(status["sync"]["events_stored"], 3, "{status}");
    assert!(metric(&metrics(&app).await, r#"gwsync_syncs_total{outcome="full_sync_required"}"#) >= 1.0);
    app.stop().await;
}

// ---- 5. forged and malformed notifications ----

/// A hand-made notification: what it is, its headers and body, the status and outcome due.
type Case<'a> = (&'a str, Vec<(String, String)>, Vec<u8>, u16, &'a str);

#[tokio::test]
async fn forged_and_malformed_notifications_cost_nothing_and_are_counted() {
    let app = TestApp::start().await;
    let (_, channel) = alice_synced(&app).await;
    let id = channel["id"].as_str().expect("id").to_owned();
    let resource = channel["resourceId"].as_str().expect("resourceId").to_owned();
    let uri = channel["resourceUri"].as_str().expect("resourceUri").to_owned();
    let events_before = stored(&app, ALICE).await;
    let notified_before = user_status(&app, ALICE).await["sync"]["last_notification"].clone();
    let metrics_before = metrics(&app).await;
    let since = last_seq(&app).await;

    let unknown = uuid::Uuid::new_v4().to_string();
    let long_id = "c".repeat(1000);
    let goog = |id: &str, token: &str| -> Vec<(String, String)> {
        vec![
            ("X-Goog-Channel-ID".into(), id.to_owned()),
            ("X-Goog-Channel-Token".into(), token.to_owned()),
            ("X-Goog-Channel-Expiration".into(), "Tue, 19 Nov 2030 01:13:52 GMT".into()),
            ("X-Goog-Message-Number".into(), "1302465".into()),
            ("X-Goog-Resource-ID".into(), resource.clone()),
            ("X-Goog-Resource-State".into(), "exists".into()),
            ("X-Goog-Resource-URI".into(), uri.clone()),
        ]
    };
    let ten_mb = vec![b'x'; 10 * 1024 * 1024];
    // (case, headers, body, expected status, expected outcome)
    let cases: Vec<Case> = vec![
        (
            "a forged token on a real channel",
            goog(&id, "forged-token-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            vec![],
            403,
            "bad_token",
        ),
        ("a real channel without a token", goog(&id, ""), vec![], 403, "bad_token"),
        ("an unknown channel id", goog(&unknown, "whatever"), vec![], 404, "unknown_channel"),
        ("no headers at all", vec![], vec![], 400, "missing_headers"),
        ("no resource state", vec![("X-Goog-Channel-ID".into(), id.clone())], vec![], 400, "missing_headers"),
        ("a 10 MB body", goog(&unknown, "whatever"), ten_mb, 404, "unknown_channel"),
        ("a 1000-character channel id", goog(&long_id, "whatever"), vec![], 404, "unknown_channel"),
    ];
    let mut expected: BTreeMap<&str, f64> = BTreeMap::new();
    for (case, headers, body, status, outcome) in &cases {
        let h: Vec<(&str, &str)> =
            headers.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let r = app.raw("POST", HOOK, &h, body.clone()).await;
        assert!(r.status < 500, "{case}: never 5xx (Google would retry): {r:?}");
        assert_eq!((r.status, r.body["outcome"].as_str()), (*status, Some(*outcome)), "{case}: {r:?}");
        *expected.entry(outcome).or_default() += 1.0;
    }

    let health = app.raw("GET", "/healthz", &[], Vec::new()).await;
    assert_eq!(health.status, 200, "the server still answers: {health:?}");
    let calls = google_calls_since(&app, since).await;
    assert!(calls.is_empty(), "no Google call for bad notifications: {calls:#?}");
    let metrics_after = metrics(&app).await;
    for (outcome, n) in expected {
        let series = format!("gwsync_notifications_total{{outcome=\"{outcome}\"}}");
        assert_eq!(
            metric(&metrics_after, &series) - metric(&metrics_before, &series),
            n,
            "{series} counts them:\n{metrics_after}"
        );
    }
    let accepted = r#"gwsync_notifications_total{outcome="accepted"}"#;
    assert_eq!(metric(&metrics_after, accepted), metric(&metrics_before, accepted), "none was accepted");
    assert_eq!(stored(&app, ALICE).await, events_before, "the store is untouched");
    let status = user_status(&app, ALICE).await;
    assert_eq!(
        status["sync"]["last_notification"], notified_before,
        "bad notifications are not notifications: {status}"
    );
    assert!(status["sync"]["pending"].is_null(), "no sync was queued: {status}");
    app.stop().await;
}

// ---- 6. backstop ----

#[tokio::test]
async fn a_dropped_notification_is_caught_by_the_backstop() {
    let app = TestApp::start().await;
    let (writer, channel) = alice_synced(&app).await;
    let channel_id = channel["id"].as_str().expect("id").to_owned();
    set_delivery(&app, json!({"drop": 1.0})).await;
    let missed = insert(&app, &writer, "Nobody told gwsync", 2).await;
    wait_dropped(&app, &channel_id, 1).await;
    never_within("a change nobody announced must wait for the backstop", Duration::from_secs(1), async || {
        store_map(&app, ALICE).await.contains_key(&missed).then(|| "it is already stored".to_owned())
    })
    .await;

    app.advance("2h").await;
    wait_stored(&app, ALICE, &missed, "the backstop sync").await;
    let store = wait_store_matches_google(&app, ALICE, "the store after the backstop").await;
    assert_eq!(store.len(), 2, "{store:?}");
    let status = user_status(&app, ALICE).await;
    assert!(status["sync"]["last_error"].is_null(), "{status}");
    app.stop().await;
}

// ---- 7. Google failures ----

#[tokio::test]
async fn google_503s_are_retried_with_backoff_and_shown_meanwhile() {
    let app = TestApp::start().await;
    let (writer, _) = alice_synced(&app).await;
    arm_fault(&app, json!({"method": "calendar.events.list", "status": 503, "count": 3})).await;
    let id = insert(&app, &writer, "During an outage", 2).await;
    let failing = eventually("the failure in the user's status", async || {
        let s = user_status(&app, ALICE).await;
        if s["sync"]["last_error"]["code"] == "google_unavailable" { Ok(s) } else { Err(format!("{s}")) }
    })
    .await;
    let error = &failing["sync"]["last_error"];
    assert!(error["hint"].as_str().is_some_and(|h| !h.is_empty()), "with a hint: {failing}");
    assert!(error["retry_at"].is_string(), "with the time of the retry: {failing}");
    assert!(!store_map(&app, ALICE).await.contains_key(&id));

    // Release the backoff (2 s, 4 s, 8 s… on gwsync's clock).
    let mut advanced = 0;
    loop {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while tokio::time::Instant::now() < deadline && !store_map(&app, ALICE).await.contains_key(&id) {
            tokio::time::sleep(POLL).await;
        }
        if store_map(&app, ALICE).await.contains_key(&id) {
            break;
        }
        assert!(advanced < 10, "not synced after advancing {advanced} minutes: {}", user_status(&app, ALICE).await);
        app.advance("1m").await;
        advanced += 1;
    }
    wait_store_matches_google(&app, ALICE, "the store after the outage").await;
    eventually("the error cleared after success", async || {
        let s = user_status(&app, ALICE).await;
        if s["sync"]["last_error"].is_null() { Ok(()) } else { Err(format!("{s}")) }
    })
    .await;
    assert_eq!(faults_left(&app).await, 0, "all three 503s were met");
    let failed = requests(&app, Some("calendar.events.list"), 0).await.iter().filter(|r| r["status"] == 503).count();
    assert_eq!(failed, 3);
    app.stop().await;
}

#[tokio::test]
async fn a_rate_limit_with_retry_after_is_honoured_on_gwsyncs_clock() {
    let app = TestApp::start().await;
    let (writer, _) = alice_synced(&app).await;
    arm_fault(
        &app,
        json!({"method": "calendar.events.list", "status": 429, "count": 1, "headers": {"Retry-After": "120"}}),
    )
    .await;
    let id = insert(&app, &writer, "Rate limited", 2).await;
    let limited = eventually("the 429 in the user's status", async || {
        let s = user_status(&app, ALICE).await;
        if faults_left(&app).await == 0 && !s["sync"]["last_error"].is_null() { Ok(s) } else { Err(format!("{s}")) }
    })
    .await;
    let error = &limited["sync"]["last_error"];
    assert_eq!(error["code"], "rate_limited", "{limited}");
    let wait = time(&error["retry_at"]) - time(&error["at"]);
    // `at` is taken a moment after `retry_at` was computed.
    assert!(wait >= chrono::Duration::seconds(119), "Retry-After: 120 is honoured: retry in {wait}: {limited}");

    let since = last_seq(&app).await;
    for (by, total) in [("60s", 60), ("55s", 115)] {
        app.advance(by).await;
        never_within(
            &format!("{total} s after a Retry-After of 120 s gwsync must still wait"),
            Duration::from_secs(1),
            async || {
                let lists = requests(&app, Some("calendar.events.list"), since).await;
                (!lists.is_empty() || store_map(&app, ALICE).await.contains_key(&id))
                    .then(|| format!("it called events.list already: {lists:#?}"))
            },
        )
        .await;
    }
    app.advance("35s").await;
    wait_stored(&app, ALICE, &id, "the retry after Retry-After").await;
    eventually("the error cleared after success", async || {
        let s = user_status(&app, ALICE).await;
        if s["sync"]["last_error"].is_null() { Ok(()) } else { Err(format!("{s}")) }
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn an_expired_access_token_is_replaced_and_changes_still_arrive() {
    let app = TestApp::start().await;
    let (_, _) = alice_synced(&app).await;
    let since = last_seq(&app).await;
    // Past the hour: the fake refuses every token it issued before.
    app.advance("3601s").await;
    let writer = writer_token(&app, ALICE).await;
    let id = insert(&app, &writer, "After an hour", 2).await;
    wait_stored(&app, ALICE, &id, "the change after the token expired").await;
    wait_store_matches_google(&app, ALICE, "the store after the token expired").await;
    quiet(&app, ALICE).await;
    let status = user_status(&app, ALICE).await;
    assert!(status["sync"]["last_error"].is_null(), "{status}");
    let tokens = requests(&app, Some("oauth2.token"), since).await;
    assert!(tokens.len() >= 2, "gwsync minted a new token (besides the writer's): {tokens:#?}");
    let lists = requests(&app, Some("calendar.events.list"), since).await;
    assert!(lists.last().is_some_and(|r| r["status"] == 200), "{lists:#?}");
    app.stop().await;
}

// ---- 8. user deletion ----

#[tokio::test]
async fn a_deleted_user_has_their_channel_stopped_and_events_removed() {
    let app = TestApp::start().await;
    let (writer, channel) = alice_synced(&app).await;
    let old_channel = channel["id"].as_str().expect("id").to_owned();
    let second = insert(&app, &writer, "Second", 2).await;
    wait_stored(&app, ALICE, &second, "the second event").await;
    quiet(&app, ALICE).await;
    let since = last_seq(&app).await;

    let r = app.api("DELETE", &format!("/api/v1/tenants/{TENANT}/users/{ALICE}"), None).await;
    assert_eq!(r.status, 204, "{r:?}");
    // The deletion is durable when it answers; the channel is stopped in the background.
    eventually("channels.stop reached Google", async || {
        let stops = requests(&app, Some("calendar.channels.stop"), since).await;
        if stops.iter().any(|s| s["status"] == 204) { Ok(()) } else { Err(format!("{stops:#?}")) }
    })
    .await;
    let ch = fake_channel(&app, &old_channel).await.expect("the fake knows the channel");
    assert_eq!(ch["state"], "stopped", "{ch}");
    let r = app.api("GET", &format!("/api/v1/tenants/{TENANT}/users/{ALICE}"), None).await;
    assert_eq!((r.status, r.code()), (404, "user_not_found"), "{r:?}");
    let r = app.api("GET", &format!("/api/v1/tenants/{TENANT}/users/{ALICE}/events"), None).await;
    assert_eq!(r.status, 404, "{r:?}");

    // Google changes while the user is gone; the re-created user starts from scratch.
    delete(&app, &writer, &second).await;
    let third = insert(&app, &writer, "Third", 3).await;
    let since = last_seq(&app).await;
    let r = app.put_user(ALICE, json!({"profiles": []})).await;
    assert_eq!(r.status, 201, "a new user: {r:?}");
    let (status, channel) = wait_ready(&app, ALICE).await;
    assert_ne!(channel["id"], old_channel.as_str(), "a new channel");
    let store = wait_store_matches_google(&app, ALICE, "the re-created user's full sync").await;
    assert!(store.contains_key(&third) && !store.contains_key(&second) && store.len() == 2, "{store:?}");
    let lists = requests(&app, Some("calendar.events.list"), since).await;
    assert!(
        lists.first().is_some_and(|r| !query_has(r, "syncToken")),
        "the re-created user is synced in full, not from the old token: {lists:#?}"
    );
    assert!(status["sync"]["last_error"].is_null() && status["sync"]["last_full_sync"].is_string(), "{status}");
    assert_eq!(user_status(&app, ALICE).await["sync"]["events_stored"], 2);
    app.stop().await;
}

// ---- 9. status and metrics ----

#[tokio::test]
async fn the_user_status_and_metrics_show_channel_syncs_and_google_calls() {
    let app = TestApp::start().await;
    let (writer, channel) = alice_synced(&app).await;
    let before_change = app.clock.now();
    let id = insert(&app, &writer, "Lunch", 2).await;
    wait_stored(&app, ALICE, &id, "the change").await;
    quiet(&app, ALICE).await;

    let status = user_status(&app, ALICE).await;
    let sync = &status["sync"];
    assert_eq!(sync["channel"]["id"], channel["id"], "{status}");
    let expiration: i64 = channel["expiration"].as_str().expect("ms").parse().expect("ms");
    assert_eq!(time(&sync["channel"]["expiration"]).timestamp_millis(), expiration, "{status} vs {channel}");
    let notified = time(&sync["last_notification"]);
    assert!(notified >= before_change - chrono::Duration::seconds(1), "{status}");
    assert!(time(&sync["last_sync"]) >= notified, "{status}");
    assert_eq!(sync["events_stored"], 2, "{status}");
    assert!(sync["last_error"].is_null(), "{status}");

    let text = metrics(&app).await;
    assert!(metric(&text, r#"gwsync_syncs_total{outcome="full"}"#) >= 1.0, "{text}");
    assert!(metric(&text, r#"gwsync_syncs_total{outcome="incremental"}"#) >= 1.0, "{text}");
    assert!(metric(&text, r#"gwsync_notifications_total{outcome="accepted"}"#) >= 1.0, "{text}");
    let count = async |method: &str, status: u16| {
        requests(&app, Some(method), 0).await.iter().filter(|r| r["status"] == status).count() as f64
    };
    let lists = count("calendar.events.list", 200).await;
    let watches = count("calendar.events.watch", 200).await;
    assert!(lists >= 2.0 && watches == 1.0);
    assert_eq!(metric(&text, r#"gwsync_google_calls_total{method="events.list",status="200"}"#), lists, "{text}");
    assert_eq!(metric(&text, r#"gwsync_google_calls_total{method="events.watch",status="200"}"#), watches, "{text}");
    app.stop().await;
}

// ---- timelines after a sync ----

/// `gwsync_timeline_recomputes_total{outcome=why}`.
async fn recomputes(app: &TestApp, why: &str) -> f64 {
    metric(&metrics(app).await, &format!(r#"gwsync_timeline_recomputes_total{{outcome="{why}"}}"#))
}

/// Asks for a sync of alice now and waits for the listing it makes.
async fn resync_alice(app: &TestApp) {
    let since = last_seq(app).await;
    let r = app.api("POST", &format!("/api/v1/tenants/{TENANT}/users/{ALICE}/resync"), None).await;
    assert_eq!(r.status, 202, "{r:?}");
    eventually("the resync's listing", async || {
        let lists = requests(app, Some("calendar.events.list"), since).await;
        if lists.iter().any(|r| r["user"] == ALICE) { Ok(()) } else { Err("no listing yet".to_owned()) }
    })
    .await;
    quiet(app, ALICE).await;
}

#[tokio::test]
async fn a_quiet_sync_recomputes_no_timeline_unless_the_last_change_may_not_have_been() {
    let mut app = TestApp::start().await;
    let (writer, _) = alice_synced(&app).await;
    let changed = recomputes(&app, "changed").await;
    assert!(changed >= 1.0, "the full sync recomputed the timeline");
    // The first sync after a change that finds nothing new makes sure once more (the job that
    // stored the change may have stopped before its recompute took) …
    let pending = recomputes(&app, "pending").await;
    resync_alice(&app).await;
    assert_eq!(recomputes(&app, "pending").await, pending + 1.0);
    // … and the next ones recompute nothing.
    resync_alice(&app).await;
    resync_alice(&app).await;
    assert_eq!(recomputes(&app, "pending").await, pending + 1.0, "nothing pending any more");
    assert_eq!(recomputes(&app, "changed").await, changed, "nothing changed");
    // A change recomputes.
    let id = insert(&app, &writer, "Lunch", 2).await;
    wait_stored(&app, ALICE, &id, "the change").await;
    quiet(&app, ALICE).await;
    assert_eq!(recomputes(&app, "changed").await, changed + 1.0);
    // A change stored by a job that stopped before recomputing is recomputed by the next sync,
    // even one that finds nothing new: the calendar's state says so durably.
    resync_alice(&app).await;
    let pending = recomputes(&app, "pending").await;
    app.stop_gwsync().await.expect("gwsync stops");
    {
        use gwsync::store::Store;
        let store =
            gwsync::store::sled_store::SledStore::open(&app.data_path().join("db"), 8).expect("the store opens");
        let mut state = store.calendar_state(TENANT, ALICE).await.expect("read").expect("alice's state");
        assert!(!state.timeline_pending, "the quiet sync cleared it");
        state.timeline_pending = true;
        store.put_calendar_state(TENANT, ALICE, &state).await.expect("write");
        store.flush().await.expect("flush");
    }
    app.start_gwsync().await;
    quiet(&app, ALICE).await;
    resync_alice(&app).await;
    assert_eq!(recomputes(&app, "pending").await, 1.0, "recomputed once in the new process (was {pending} before)");
    app.stop().await;
}
