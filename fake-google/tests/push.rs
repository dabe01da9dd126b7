//! Conformance of Calendar push: events.watch, the channel's messages, channels.stop, expiry,
//! retries and the delivery knobs (NOTES §1, §6; checklist 12-17).
mod common;
use common::*;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Value, json};

const WATCH: &str = "/calendar/v3/calendars/primary/events/watch";
const STOP: &str = "/calendar/v3/channels/stop";
const EVENTS: &str = "/calendar/v3/calendars/primary/events";
const DAY_MS: i64 = 86_400_000;

// ---- helpers ----

fn channel(id: &str, address: &str) -> Value {
    json!({ "id": id, "type": "web_hook", "address": address })
}

async fn watch(env: &Env, token: &str, body: Value) -> Reply {
    env.call("POST", WATCH, Some(token), Some(body)).await
}

/// A channel that Google accepted; the response body.
async fn open_channel(env: &Env, token: &str, body: Value) -> Value {
    let r = watch(env, token, body).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body
}

/// A channel to `rx` whose `sync` message has arrived (so later messages come after it).
async fn synced_channel(env: &Env, token: &str, id: &str, rx: &Receiver) -> Value {
    let before = rx.count();
    let ch = open_channel(env, token, channel(id, &rx.url)).await;
    rx.wait_for(before + 1).await;
    ch
}

async fn stop(env: &Env, token: &str, body: Value) -> Reply {
    env.call("POST", STOP, Some(token), Some(body)).await
}

fn event(summary: &str) -> Value {
    json!({
        "summary": summary,
        "start": { "dateTime": "2030-01-07T10:00:00Z" },
        "end": { "dateTime": "2030-01-07T11:00:00Z" },
    })
}

async fn patch_event(env: &Env, token: &str, id: &str, patch: Value) {
    let r = env.call("PATCH", &format!("{EVENTS}/{id}"), Some(token), Some(patch)).await;
    assert_eq!(r.status, 200, "{r:?}");
}

async fn delete_event(env: &Env, token: &str, id: &str) {
    let r = env.call("DELETE", &format!("{EVENTS}/{id}"), Some(token), None).await;
    assert_eq!(r.status, 204, "{r:?}");
}

fn hdr<'a>(m: &'a Received, name: &str) -> &'a str {
    m.header(name).unwrap_or_else(|| panic!("no {name} in {m:?}"))
}

fn message_number(m: &Received) -> u64 {
    hdr(m, "X-Goog-Message-Number").parse().expect("message number is an integer")
}

fn state(m: &Received) -> &str {
    hdr(m, "X-Goog-Resource-State")
}

fn expiration_ms(ch: &Value) -> i64 {
    let s = ch["expiration"].as_str().unwrap_or_else(|| panic!("expiration must be a string: {ch}"));
    s.parse().expect("expiration is milliseconds")
}

async fn fake_now_ms(env: &Env) -> i64 {
    let r = env.control("GET", "/_fake/clock", None).await;
    let now = r.body["now"].as_str().expect("now");
    DateTime::parse_from_rfc3339(now).expect("rfc3339").timestamp_millis()
}

async fn put_settings(env: &Env, what: &str, body: Value) {
    let r = env.control("PUT", &format!("/_fake/{what}"), Some(body)).await;
    assert_eq!(r.status, 200, "{r:?}");
}

async fn notifications(env: &Env, channel_id: &str) -> Vec<Value> {
    let r = env.control("GET", &format!("/_fake/notifications?channel={channel_id}"), None).await;
    r.body["notifications"].as_array().cloned().unwrap_or_default()
}

async fn channels(env: &Env, query: &str) -> Vec<Value> {
    let r = env.control("GET", &format!("/_fake/channels{query}"), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body["channels"].as_array().cloned().unwrap_or_default()
}

/// Long enough for a message that was going to come to have come (nothing delays it here).
async fn quiet() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

fn assert_bad_request(r: &Reply, reason: Option<&str>) {
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.body["error"]["code"], 400, "{r:?}");
    assert!(r.reason().is_some(), "Calendar errors carry errors[0].reason: {r:?}");
    if let Some(reason) = reason {
        assert_eq!(r.reason(), Some(reason), "{r:?}");
    }
}

// ---- the watch call ----

#[tokio::test]
async fn watch_answers_with_a_google_shaped_channel() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let rx = Receiver::start().await;

    let mut body = channel("chan-a-1", &rx.url);
    body["token"] = json!("target=alice&v=1");
    let ch = open_channel(&env, &alice, body).await;
    assert_eq!(ch["kind"], "api#channel");
    assert_eq!(ch["id"], "chan-a-1");
    assert_eq!(ch["token"], "target=alice&v=1");
    assert!(ch["expiration"].is_string(), "expiration is an int64 string: {ch}");
    let resource_id = ch["resourceId"].as_str().expect("resourceId");
    assert!(!resource_id.is_empty());
    let uri = ch["resourceUri"].as_str().expect("resourceUri");
    assert!(uri.contains("alice@acme.test") || uri.contains("alice%40acme.test"), "{uri}");
    assert!(uri.ends_with("?alt=json"), "{uri}");

    // A second channel on the same calendar watches the same resource.
    let ch2 = open_channel(&env, &alice, channel("chan-a-2", &rx.url)).await;
    assert_eq!(ch2["resourceId"], resource_id);
    assert_eq!(ch2["resourceUri"], uri);
    assert!(ch2.get("token").is_none(), "no token asked, none echoed: {ch2}");

    // Another calendar is another resource.
    let bob = env.token_all(BOB).await;
    let ch3 = open_channel(&env, &bob, channel("chan-b-1", &rx.url)).await;
    assert_ne!(ch3["resourceId"], resource_id);
    let uri3 = ch3["resourceUri"].as_str().expect("resourceUri");
    assert!(uri3.contains("bob@acme.test") || uri3.contains("bob%40acme.test"), "{uri3}");

    // The resource id survives its channels.
    let r = stop(&env, &alice, json!({"id": "chan-a-1", "resourceId": resource_id})).await;
    assert_eq!(r.status, 204, "{r:?}");
    let ch4 = open_channel(&env, &alice, channel("chan-a-3", &rx.url)).await;
    assert_eq!(ch4["resourceId"], resource_id);
    env.fake.stop().await;
}

#[tokio::test]
async fn channels_live_seven_days_by_default() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let rx = Receiver::start().await;
    let before = fake_now_ms(&env).await;
    let ch = open_channel(&env, &alice, channel("ttl-default", &rx.url)).await;
    let after = fake_now_ms(&env).await;
    let exp = expiration_ms(&ch);
    assert!(exp >= before + 7 * DAY_MS - 1000 && exp <= after + 7 * DAY_MS, "{exp} vs {before}..{after}");
    env.fake.stop().await;
}

#[tokio::test]
async fn a_shorter_ttl_is_honoured() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let rx = Receiver::start().await;
    let before = fake_now_ms(&env).await;
    let mut body = channel("ttl-hour", &rx.url);
    body["params"] = json!({ "ttl": "3600" });
    let ch = open_channel(&env, &alice, body).await;
    let after = fake_now_ms(&env).await;
    let exp = expiration_ms(&ch);
    assert!(exp >= before + 3_600_000 - 1000 && exp <= after + 3_600_000, "{exp} vs {before}..{after}");
    env.fake.stop().await;
}

#[tokio::test]
async fn an_earlier_requested_expiration_is_honoured() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let rx = Receiver::start().await;
    let requested = fake_now_ms(&env).await + 2 * 3_600_000;
    let mut body = channel("exp-2h", &rx.url);
    body["expiration"] = json!(requested.to_string());
    let ch = open_channel(&env, &alice, body).await;
    assert_eq!(expiration_ms(&ch), requested, "{ch}");
    env.fake.stop().await;
}

#[tokio::test]
async fn longer_lifetimes_are_capped_at_seven_days() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let rx = Receiver::start().await;

    let mut by_ttl = channel("ttl-30d", &rx.url);
    by_ttl["params"] = json!({ "ttl": (30 * 86_400).to_string() });
    let ch = open_channel(&env, &alice, by_ttl).await;
    let cap = fake_now_ms(&env).await + 7 * DAY_MS;
    assert!(expiration_ms(&ch) <= cap, "ttl of 30 days must be capped: {ch}");
    assert!(expiration_ms(&ch) >= cap - 60_000, "{ch}");

    let mut by_expiration = channel("exp-30d", &rx.url);
    by_expiration["expiration"] = json!((fake_now_ms(&env).await + 30 * DAY_MS).to_string());
    let ch = open_channel(&env, &alice, by_expiration).await;
    let cap = fake_now_ms(&env).await + 7 * DAY_MS;
    assert!(expiration_ms(&ch) <= cap, "expiration in 30 days must be capped: {ch}");
    assert!(expiration_ms(&ch) >= cap - 60_000, "{ch}");
    env.fake.stop().await;
}

#[tokio::test]
async fn a_channel_id_is_required_and_at_most_64_characters() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let rx = Receiver::start().await;

    let r = watch(&env, &alice, json!({ "type": "web_hook", "address": rx.url })).await;
    assert_bad_request(&r, None);
    let r = watch(&env, &alice, channel(&"a".repeat(65), &rx.url)).await;
    assert_bad_request(&r, None);
    let r = watch(&env, &alice, channel(&"a".repeat(64), &rx.url)).await;
    assert_eq!(r.status, 200, "64 characters are allowed: {r:?}");
    assert_eq!(channels(&env, "").await.len(), 1, "refused channels are not created");
    env.fake.stop().await;
}

#[tokio::test]
async fn a_live_channel_id_cannot_be_reused_until_stopped() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let rx = Receiver::start().await;
    let ch = open_channel(&env, &alice, channel("same-id", &rx.url)).await;

    let r = watch(&env, &alice, channel("same-id", &rx.url)).await;
    assert_bad_request(&r, Some("channelIdNotUnique"));

    let r = stop(&env, &alice, json!({ "id": "same-id", "resourceId": ch["resourceId"] })).await;
    assert_eq!(r.status, 204, "{r:?}");
    let r = watch(&env, &alice, channel("same-id", &rx.url)).await;
    assert_eq!(r.status, 200, "a stopped channel's id may be used again: {r:?}");
    env.fake.stop().await;
}

#[tokio::test]
async fn only_web_hook_channels_are_accepted() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let rx = Receiver::start().await;
    for (i, bad) in ["email", "sms"].into_iter().enumerate() {
        let mut body = channel(&format!("type-{i}"), &rx.url);
        body["type"] = json!(bad);
        let r = watch(&env, &alice, body).await;
        assert_bad_request(&r, None);
    }
    let mut missing = channel("type-missing", &rx.url);
    missing.as_object_mut().expect("object").remove("type");
    assert_bad_request(&watch(&env, &alice, missing).await, None);

    let mut alias = channel("type-alias", &rx.url);
    alias["type"] = json!("webhook");
    let r = watch(&env, &alice, alias).await;
    assert_eq!(r.status, 200, "webhook is an accepted alias: {r:?}");
    env.fake.stop().await;
}

#[tokio::test]
async fn the_address_must_be_https() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    for (i, address) in ["http://example.com/hook", "http://10.1.2.3/hook"].into_iter().enumerate() {
        let r = watch(&env, &alice, channel(&format!("addr-http-{i}"), address)).await;
        assert_bad_request(&r, Some("push.webhookUrlNotHttps"));
    }
    for (i, address) in ["ftp://example.com/hook", "not a url"].into_iter().enumerate() {
        let r = watch(&env, &alice, channel(&format!("addr-other-{i}"), address)).await;
        assert_bad_request(&r, None);
    }
    let r = watch(&env, &alice, json!({ "id": "addr-missing", "type": "web_hook" })).await;
    assert_bad_request(&r, None);
    let r = watch(&env, &alice, channel("addr-https", "https://hooks.example.com/google")).await;
    assert_eq!(r.status, 200, "{r:?}");
    env.fake.stop().await;
}

#[tokio::test]
async fn a_channel_token_is_at_most_256_characters() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let rx = Receiver::start().await;
    let mut long = channel("tok-257", &rx.url);
    long["token"] = json!("t".repeat(257));
    assert_bad_request(&watch(&env, &alice, long).await, None);

    let mut max = channel("tok-256", &rx.url);
    max["token"] = json!("t".repeat(256));
    let ch = open_channel(&env, &alice, max).await;
    assert_eq!(ch["token"], "t".repeat(256));
    env.fake.stop().await;
}

// ---- messages ----

#[tokio::test]
async fn a_new_channel_first_gets_a_sync_message() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let rx = Receiver::start().await;
    let mut body = channel("sync-1", &rx.url);
    body["token"] = json!("route=1");
    let ch = open_channel(&env, &alice, body).await;
    let got = rx.wait_for(1).await;
    let m = &got[0];
    assert_eq!(state(m), "sync");
    assert_eq!(message_number(m), 1);
    assert_eq!(hdr(m, "X-Goog-Channel-ID"), "sync-1");
    assert_eq!(hdr(m, "X-Goog-Resource-ID"), ch["resourceId"]);
    assert_eq!(hdr(m, "X-Goog-Resource-URI"), ch["resourceUri"]);
    assert_eq!(hdr(m, "X-Goog-Channel-Token"), "route=1");
    assert!(m.body.is_empty(), "{m:?}");
    env.fake.stop().await;
}

#[tokio::test]
async fn every_event_change_notifies_with_googles_headers() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let rx = Receiver::start().await;
    let mut body = channel("changes-1", &rx.url);
    body["token"] = json!("tenant=acme&sig=abc");
    let ch = open_channel(&env, &alice, body).await;
    rx.wait_for(1).await;

    // A refused write changes nothing and notifies nobody; a message for it would come first.
    let r = env.call("POST", EVENTS, Some(&alice), Some(json!({ "summary": "no times" }))).await;
    assert_eq!(r.status, 400, "{r:?}");
    let ev = env.insert_event(&alice, event("Lunch with a customer")).await;
    let id = ev["id"].as_str().expect("event id");
    rx.wait_for(2).await;
    patch_event(&env, &alice, id, json!({ "summary": "Lunch" })).await;
    rx.wait_for(3).await;
    // The calendar by its address is the same calendar as `primary`.
    let r = env
        .call("PUT", &format!("/calendar/v3/calendars/{ALICE}/events/{id}"), Some(&alice), Some(event("Brunch")))
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    rx.wait_for(4).await;
    delete_event(&env, &alice, id).await;
    let got = rx.wait_for(5).await;

    let expiry = DateTime::<Utc>::from_timestamp_millis(expiration_ms(&ch)).expect("expiry");
    let mut last = 0;
    for m in &got {
        assert!(m.body.is_empty(), "notifications carry no body: {m:?}");
        if let Some(len) = m.header("Content-Length") {
            assert_eq!(len, "0", "{m:?}");
        }
        assert!(m.user_agent.starts_with("APIs-Google"), "{m:?}");
        assert_eq!(hdr(m, "X-Goog-Channel-ID"), "changes-1");
        assert_eq!(hdr(m, "X-Goog-Resource-ID"), ch["resourceId"]);
        assert_eq!(hdr(m, "X-Goog-Resource-URI"), ch["resourceUri"]);
        assert_eq!(hdr(m, "X-Goog-Channel-Token"), "tenant=acme&sig=abc");
        let when = hdr(m, "X-Goog-Channel-Expiration");
        let parsed = NaiveDateTime::parse_from_str(when, "%a, %d %b %Y %H:%M:%S GMT")
            .unwrap_or_else(|e| panic!("{when} is not RFC 1123: {e}"));
        assert_eq!(parsed.and_utc().timestamp(), expiry.timestamp(), "{when} vs {expiry}");
        assert_eq!(parsed.format("%a, %d %b %Y %H:%M:%S GMT").to_string(), when, "canonical RFC 1123");
        let n = message_number(m);
        assert!(n > last, "message numbers rise: {n} after {last}");
        if last > 0 {
            assert!(n > last + 1, "message numbers are not consecutive: {n} after {last}");
        }
        last = n;
    }
    let states: Vec<&str> = got.iter().map(state).collect();
    assert_eq!(states, ["sync", "exists", "exists", "exists", "exists"], "insert, patch, update, delete each notify");
    quiet().await;
    assert_eq!(rx.count(), 5);
    env.fake.stop().await;
}

#[tokio::test]
async fn no_channel_token_header_without_a_token() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let rx = Receiver::start().await;
    synced_channel(&env, &alice, "no-token", &rx).await;
    env.insert_event(&alice, event("x")).await;
    for m in rx.wait_for(2).await {
        assert!(m.header("X-Goog-Channel-Token").is_none(), "{m:?}");
        assert!(m.header("X-Goog-Channel-Expiration").is_some(), "{m:?}");
    }
    env.fake.stop().await;
}

#[tokio::test]
async fn overlapping_channels_on_one_calendar_both_fire() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let (rx1, rx2) = (Receiver::start().await, Receiver::start().await);
    let old = synced_channel(&env, &alice, "overlap-old", &rx1).await;
    let new = synced_channel(&env, &alice, "overlap-new", &rx2).await;
    assert_eq!(old["resourceId"], new["resourceId"]);

    env.insert_event(&alice, event("Standup")).await;
    let a = rx1.wait_for(2).await;
    let b = rx2.wait_for(2).await;
    assert_eq!((state(&a[1]), hdr(&a[1], "X-Goog-Channel-ID")), ("exists", "overlap-old"));
    assert_eq!((state(&b[1]), hdr(&b[1], "X-Goog-Channel-ID")), ("exists", "overlap-new"));
    quiet().await;
    assert_eq!((rx1.count(), rx2.count()), (2, 2), "one message per change per channel");
    env.fake.stop().await;
}

#[tokio::test]
async fn changes_to_another_users_calendar_do_not_notify() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let bob = env.token_all(BOB).await;
    let (rx_a, rx_b) = (Receiver::start().await, Receiver::start().await);
    synced_channel(&env, &alice, "alice-cal", &rx_a).await;
    synced_channel(&env, &bob, "bob-cal", &rx_b).await;

    env.insert_event(&bob, event("Bob's dentist")).await;
    // Alice's own change comes after; a message for Bob's change would have come first.
    env.insert_event(&alice, event("Alice's lunch")).await;
    rx_b.wait_for(2).await;
    let got = rx_a.wait_for(2).await;
    quiet().await;
    assert_eq!(rx_a.count(), 2, "only Alice's change reaches Alice's channel: {got:?}");
    assert_eq!(rx_b.count(), 2, "only Bob's change reaches Bob's channel: {:?}", rx_b.all());
    assert!(rx_b.all().iter().all(|m| hdr(m, "X-Goog-Channel-ID") == "bob-cal"));
    env.fake.stop().await;
}

// ---- channels.stop and expiry ----

#[tokio::test]
async fn channels_stop_needs_id_and_resource_id() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let rx = Receiver::start().await;
    let ch = open_channel(&env, &alice, channel("stop-me", &rx.url)).await;
    let rid = ch["resourceId"].clone();

    assert_bad_request(&stop(&env, &alice, json!({ "id": "stop-me" })).await, Some("required"));
    assert_bad_request(&stop(&env, &alice, json!({ "resourceId": rid })).await, Some("required"));

    let r = stop(&env, &alice, json!({ "id": "no-such-channel", "resourceId": rid })).await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.reason(), Some("notFound"), "{r:?}");
    let r = stop(&env, &alice, json!({ "id": "stop-me", "resourceId": "wrongResourceId" })).await;
    assert_eq!(r.status, 404, "{r:?}");

    let r = stop(&env, &alice, json!({ "id": "stop-me", "resourceId": rid })).await;
    assert_eq!(r.status, 204, "{r:?}");
    assert!(r.text.is_empty(), "stop answers with an empty body: {r:?}");
    let r = stop(&env, &alice, json!({ "id": "stop-me", "resourceId": rid })).await;
    assert_eq!(r.status, 404, "a stopped channel is gone: {r:?}");
    env.fake.stop().await;
}

#[tokio::test]
async fn a_stopped_channel_delivers_nothing() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let (rx_stopped, rx_live) = (Receiver::start().await, Receiver::start().await);
    let ch = synced_channel(&env, &alice, "to-stop", &rx_stopped).await;
    synced_channel(&env, &alice, "kept", &rx_live).await;

    let r = stop(&env, &alice, json!({ "id": "to-stop", "resourceId": ch["resourceId"] })).await;
    assert_eq!(r.status, 204, "{r:?}");
    env.insert_event(&alice, event("after stop")).await;
    rx_live.wait_for(2).await;
    quiet().await;
    assert_eq!(rx_stopped.count(), 1, "only the sync message: {:?}", rx_stopped.all());
    env.fake.stop().await;
}

#[tokio::test]
async fn a_channel_stops_delivering_after_its_expiration() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let rx = Receiver::start().await;
    let ch = synced_channel(&env, &alice, "ages", &rx).await;

    env.advance("8d").await;
    let alice = env.token_all(ALICE).await;
    env.insert_event(&alice, event("next week")).await;
    quiet().await;
    assert_eq!(rx.count(), 1, "an expired channel is silent: {:?}", rx.all());

    let r = stop(&env, &alice, json!({ "id": "ages", "resourceId": ch["resourceId"] })).await;
    assert_eq!(r.status, 404, "an expired channel cannot be stopped: {r:?}");
    let r = watch(&env, &alice, channel("ages", &rx.url)).await;
    assert_eq!(r.status, 200, "an expired channel's id is free again: {r:?}");
    env.fake.stop().await;
}

#[tokio::test]
async fn the_control_api_lists_channels_by_state() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let rx = Receiver::start().await;
    let mut short = channel("st-expired", &rx.url);
    short["params"] = json!({ "ttl": "3600" });
    open_channel(&env, &alice, short).await;
    open_channel(&env, &alice, channel("st-live", &rx.url)).await;
    let stopped = open_channel(&env, &alice, channel("st-stopped", &rx.url)).await;
    let r = stop(&env, &alice, json!({ "id": "st-stopped", "resourceId": stopped["resourceId"] })).await;
    assert_eq!(r.status, 204, "{r:?}");
    env.advance("2h").await;

    let all = channels(&env, "").await;
    let state_of =
        |id: &str| all.iter().find(|c| c["id"] == id).map(|c| c["state"].as_str().unwrap_or_default().to_owned());
    assert_eq!(state_of("st-expired").as_deref(), Some("expired"), "{all:?}");
    assert_eq!(state_of("st-live").as_deref(), Some("live"), "{all:?}");
    assert_eq!(state_of("st-stopped").as_deref(), Some("stopped"), "{all:?}");
    let live = channels(&env, "?state=live").await;
    assert_eq!(live.iter().map(|c| c["id"].clone()).collect::<Vec<_>>(), [json!("st-live")]);
    env.fake.stop().await;
}

// ---- retries ----

#[tokio::test]
async fn server_errors_are_retried_until_delivered() {
    let env = Env::new().await;
    put_settings(&env, "behaviour", json!({ "push_retry_base_ms": 10 })).await;
    let alice = env.token_all(ALICE).await;
    let rx = Receiver::start().await;
    synced_channel(&env, &alice, "retry", &rx).await;

    rx.answer_with(&[503, 503]);
    env.insert_event(&alice, event("retried")).await;
    let got = rx.wait_for(4).await;
    let numbers: BTreeSet<u64> = got[1..].iter().map(message_number).collect();
    assert_eq!(numbers.len(), 1, "every attempt is the same message: {got:?}");
    quiet().await;
    assert_eq!(rx.count(), 4, "no attempts after success");
    let outcomes: Vec<Value> = notifications(&env, "retry")
        .await
        .into_iter()
        .filter(|n| n["state"] == "exists")
        .map(|n| n["outcome"].clone())
        .collect();
    assert_eq!(outcomes, [json!("retrying"), json!("retrying"), json!("delivered")]);
    env.fake.stop().await;
}

#[tokio::test]
async fn every_retryable_status_is_retried() {
    let env = Env::new().await;
    put_settings(&env, "behaviour", json!({ "push_retry_base_ms": 10 })).await;
    let alice = env.token_all(ALICE).await;
    let rx = Receiver::start().await;
    synced_channel(&env, &alice, "retry-all", &rx).await;

    rx.answer_with(&[500, 502, 504]);
    env.insert_event(&alice, event("retried thrice")).await;
    let got = rx.wait_for(5).await;
    assert_eq!(got[1..].iter().map(message_number).collect::<BTreeSet<_>>().len(), 1, "{got:?}");
    quiet().await;
    assert_eq!(rx.count(), 5);
    env.fake.stop().await;
}

#[tokio::test]
async fn every_success_status_counts_as_delivered() {
    let env = Env::new().await;
    put_settings(&env, "behaviour", json!({ "push_retry_base_ms": 10 })).await;
    let alice = env.token_all(ALICE).await;
    let rx = Receiver::start().await;
    synced_channel(&env, &alice, "ok-statuses", &rx).await;

    rx.answer_with(&[201, 202, 204]);
    for i in 0..3 {
        env.insert_event(&alice, event(&format!("ok {i}"))).await;
    }
    let got = rx.wait_for(4).await;
    quiet().await;
    assert_eq!(rx.count(), 4, "nothing sent twice: {got:?}");
    let outcomes: Vec<Value> = notifications(&env, "ok-statuses")
        .await
        .into_iter()
        .filter(|n| n["state"] == "exists")
        .map(|n| n["outcome"].clone())
        .collect();
    assert_eq!(outcomes, [json!("delivered"), json!("delivered"), json!("delivered")]);
    env.fake.stop().await;
}

#[tokio::test]
async fn other_failures_are_not_retried() {
    let env = Env::new().await;
    put_settings(&env, "behaviour", json!({ "push_retry_base_ms": 10 })).await;
    let alice = env.token_all(ALICE).await;
    let rx = Receiver::start().await;
    synced_channel(&env, &alice, "no-retry", &rx).await;

    rx.answer_with(&[404, 429, 301]);
    for i in 0..3 {
        env.insert_event(&alice, event(&format!("lost {i}"))).await;
    }
    // A fourth change shows the channel still works, and that nothing was sent again meanwhile.
    env.insert_event(&alice, event("delivered")).await;
    let got = rx.wait_for(5).await;
    quiet().await;
    assert_eq!(rx.count(), 5, "each failed message was tried once: {got:?}");
    let numbers: BTreeSet<u64> = got.iter().map(message_number).collect();
    assert_eq!(numbers.len(), 5, "five different messages: {got:?}");
    let failed: Vec<Value> = notifications(&env, "no-retry")
        .await
        .into_iter()
        .filter(|n| n["outcome"] == "failed")
        .map(|n| n["status"].clone())
        .collect();
    assert_eq!(failed, [json!(404), json!(429), json!(301)]);
    env.fake.stop().await;
}

// ---- delivery knobs ----

#[tokio::test]
async fn drop_loses_every_notification() {
    let env = Env::new().await;
    put_settings(&env, "delivery", json!({ "drop": 1.0 })).await;
    let alice = env.token_all(ALICE).await;
    let rx = Receiver::start().await;
    open_channel(&env, &alice, channel("lossy", &rx.url)).await;
    env.insert_event(&alice, event("unheard")).await;

    let deadline = Instant::now() + Duration::from_secs(5);
    let log = loop {
        let log = notifications(&env, "lossy").await;
        if log.len() >= 2 || Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log.iter().all(|n| n["outcome"] == "dropped"), "{log:?}");
    quiet().await;
    assert_eq!(rx.count(), 0, "{:?}", rx.all());
    env.fake.stop().await;
}

#[tokio::test]
async fn duplicate_sends_extra_copies_of_a_message() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let rx = Receiver::start().await;
    synced_channel(&env, &alice, "dups", &rx).await;
    put_settings(&env, "delivery", json!({ "duplicate": 2 })).await;

    env.insert_event(&alice, event("thrice")).await;
    let got = rx.wait_for(4).await;
    quiet().await;
    assert_eq!(rx.count(), 4, "the message and two copies: {got:?}");
    let numbers: BTreeSet<u64> = got[1..].iter().map(message_number).collect();
    assert_eq!(numbers.len(), 1, "copies share the message number: {got:?}");
    env.fake.stop().await;
}

#[tokio::test]
async fn delay_holds_notifications_back() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let rx = Receiver::start().await;
    synced_channel(&env, &alice, "late", &rx).await;
    put_settings(&env, "delivery", json!({ "delay_ms": 400 })).await;

    let t0 = Instant::now();
    env.insert_event(&alice, event("late news")).await;
    rx.wait_for(2).await;
    assert!(t0.elapsed() >= Duration::from_millis(400), "arrived after {:?}", t0.elapsed());
    env.fake.stop().await;
}

#[tokio::test]
async fn reordered_notifications_all_arrive() {
    let env = Env::new().await;
    let alice = env.token_all(ALICE).await;
    let rx = Receiver::start().await;
    synced_channel(&env, &alice, "shuffled", &rx).await;
    put_settings(&env, "delivery", json!({ "reorder": true })).await;

    for i in 0..6 {
        env.insert_event(&alice, event(&format!("burst {i}"))).await;
    }
    let got = rx.wait_for(7).await;
    quiet().await;
    assert_eq!(rx.count(), 7, "{got:?}");
    let received: BTreeSet<u64> = got[1..].iter().map(message_number).collect();
    let sent: BTreeSet<u64> = notifications(&env, "shuffled")
        .await
        .iter()
        .filter(|n| n["state"] == "exists")
        .filter_map(|n| n["message_number"].as_u64())
        .collect();
    assert_eq!(received.len(), 6, "six different messages: {got:?}");
    assert_eq!(received, sent);
    env.fake.stop().await;
}

#[tokio::test]
async fn the_sync_message_can_beat_the_watch_response() {
    let env = Env::new().await;
    put_settings(&env, "behaviour", json!({ "sync_before_watch_response": true })).await;
    let alice = env.token_all(ALICE).await;
    let rx = Receiver::start().await;
    open_channel(&env, &alice, channel("racer", &rx.url)).await;
    let got = rx.all();
    assert_eq!(got.len(), 1, "the sync message arrived before the watch response: {got:?}");
    assert_eq!(state(&got[0]), "sync");
    assert_eq!(hdr(&got[0], "X-Goog-Channel-ID"), "racer");
    env.fake.stop().await;
}
