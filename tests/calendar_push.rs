//! The near-real-time path end to end: a user added → full sync and a push channel; an event
//! written through Google's API → Google's notification → gwsync's store, with no backstop tick.
mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// Waits (up to 10 s) until `check` holds for the user's stored events.
async fn wait_for_store(app: &TestApp, user: &str, what: &str, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let events = stored(app, user).await;
        if check(&events) {
            return events;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: store holds {events:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_new_user_gets_a_channel_and_changes_arrive_by_push() {
    let app = TestApp::start().await;
    app.setup_tenant().await;
    let writer = writer_token(&app, ALICE).await;
    let before = google(&app, "POST", "events", &writer, Some(json!({
        "summary": "Existing lunch", "start": {"dateTime": "2030-01-01T11:00:00Z"}, "end": {"dateTime": "2030-01-01T12:00:00Z"}
    })))
    .await;
    assert_eq!(before.status, 200);
    let r = app.put_user(ALICE, json!({"profiles": [{"name": "Lunch", "triggers": ["lunch"]}]})).await;
    assert_eq!(r.status, 201, "{r:?}");

    // The full sync brings the existing event; a channel is registered.
    wait_for_store(&app, ALICE, "full sync", |e| e.iter().any(|x| x["summary"] == "Existing lunch")).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while user_status(&app, ALICE).await["sync"]["channel"].is_null() {
        assert!(tokio::time::Instant::now() < deadline, "no channel registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let channels = app.fake_control("GET", &format!("/_fake/channels?user={ALICE}&state=live"), Value::Null).await;
    assert_eq!(channels.body["channels"].as_array().map(Vec::len), Some(1), "{channels:?}");
    let list_calls =
        app.fake_control("GET", "/_fake/requests?method=calendar.events.list", Value::Null).await.body["requests"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0);

    // Insert, rename, move, delete: each arrives through the notification alone.
    let created = google(&app, "POST", "events", &writer, Some(json!({
        "summary": "Lunch with a customer", "start": {"dateTime": "2030-01-02T11:00:00Z"}, "end": {"dateTime": "2030-01-02T12:00:00Z"}
    })))
    .await;
    let id = created.body["id"].as_str().expect("id").to_owned();
    wait_for_store(&app, ALICE, "inserted", |e| e.iter().any(|x| x["id"] == id.as_str())).await;
    google(&app, "PATCH", &format!("events/{id}"), &writer, Some(json!({"summary": "Lunch moved", "start": {"dateTime": "2030-01-03T11:00:00Z"}, "end": {"dateTime": "2030-01-03T12:00:00Z"}}))).await;
    wait_for_store(&app, ALICE, "renamed and moved", |e| {
        e.iter().any(|x| {
            x["id"] == id.as_str()
                && x["summary"] == "Lunch moved"
                && x["start"]["date_time"]["at"] == "2030-01-03T11:00:00Z"
        })
    })
    .await;
    let r = google(&app, "DELETE", &format!("events/{id}"), &writer, None).await;
    assert_eq!(r.status, 204);
    wait_for_store(&app, ALICE, "deleted", |e| !e.iter().any(|x| x["id"] == id.as_str()) && e.len() == 1).await;

    let after =
        app.fake_control("GET", "/_fake/requests?method=calendar.events.list", Value::Null).await.body["requests"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0);
    assert!(
        after > list_calls && after <= list_calls + 6,
        "each change cost one or two list calls, not a poll: {list_calls} → {after}"
    );
    let status = user_status(&app, ALICE).await;
    assert_eq!(status["sync"]["events_stored"], 1, "{status}");
    assert!(status["sync"]["last_notification"].is_string() && status["sync"]["last_sync"].is_string(), "{status}");
    app.stop().await;
}

#[tokio::test]
async fn resync_on_request_brings_a_change_whose_notification_was_lost() {
    let app = TestApp::start().await;
    app.setup_tenant().await;
    let writer = writer_token(&app, ALICE).await;
    let r = app.put_user(ALICE, json!({"profiles": [{"name": "Lunch", "triggers": ["lunch"]}]})).await;
    assert_eq!(r.status, 201, "{r:?}");
    wait_for_store(&app, ALICE, "the first sync", |_| true).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while user_status(&app, ALICE).await["sync"]["last_sync"].is_null() {
        assert!(tokio::time::Instant::now() < deadline, "never synced");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.fake_control("PUT", "/_fake/delivery", json!({"drop": 1.0})).await;
    let created = google(&app, "POST", "events", &writer, Some(json!({
        "summary": "Lunch, unannounced", "start": {"dateTime": "2030-01-02T11:00:00Z"}, "end": {"dateTime": "2030-01-02T12:00:00Z"}
    })))
    .await;
    let id = created.body["id"].as_str().expect("id").to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!stored(&app, ALICE).await.iter().any(|e| e["id"] == id.as_str()), "the notification was dropped");
    let r = app.api("POST", &format!("/api/v1/tenants/{TENANT}/users/{ALICE}/resync"), None).await;
    assert_eq!(r.status, 202, "{r:?}");
    wait_for_store(&app, ALICE, "resynced", |e| e.iter().any(|x| x["id"] == id.as_str())).await;
    app.stop().await;
}
