//! Push-channel lifecycle end to end, one test per item of the issue's "Done when" list:
//! renewal before expiry with an overlap that loses no change, a renewal that fails and
//! recovers, a restart after eight days down, channels stopped when users and tenants go, an
//! orphaned channel the keeper stops later, `POST /api/v1/channels/renew`,
//! `scripts/renew-channels.sh`, the channel metrics and `/readyz`, and a graceful SIGTERM.
mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use serde_json::{Value, json};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

// ---- Google's side (the fake) ----

/// Inserts an event into `user`'s primary calendar (the writer token is that user's).
async fn insert_event(app: &TestApp, token: &str, summary: &str, start: &str, end: &str) -> String {
    let r = reply(
        app.http
            .post(format!("{}/calendar/v3/calendars/primary/events", app.fake.base_url()))
            .bearer_auth(token)
            .json(&json!({"summary": summary, "start": {"dateTime": start}, "end": {"dateTime": end}}))
            .send()
            .await
            .expect("google call"),
    )
    .await;
    assert_eq!(r.status, 200, "insert {summary}: {r:?}");
    r.body["id"].as_str().expect("id").to_owned()
}

/// Inserts a one-hour event on March `day` 2030; returns its id.
async fn insert(app: &TestApp, token: &str, summary: &str, day: u32) -> String {
    let (start, end) = (format!("2030-03-{day:02}T11:00:00Z"), format!("2030-03-{day:02}T12:00:00Z"));
    insert_event(app, token, summary, &start, &end).await
}

/// Requests of one method after `since` that got `status`.
async fn calls_with(app: &TestApp, method: &str, since: u64, status: u16) -> Vec<Value> {
    requests(app, Some(method), since).await.into_iter().filter(|r| r["status"] == status).collect()
}

/// `exists` messages of a channel, as the fake finally settled them (no `retrying` attempts).
async fn exists_deliveries(app: &TestApp, channel: &str) -> Vec<Value> {
    deliveries(app, channel)
        .await
        .into_iter()
        .filter(|d| d["state"] == "exists" && d["outcome"] != "retrying")
        .collect()
}

/// The fake's channels on `user`'s calendar, oldest first; `state`: live, stopped, expired.
async fn fake_channels(app: &TestApp, user: &str, state: Option<&str>) -> Vec<Value> {
    let filter = state.map(|s| format!("&state={s}")).unwrap_or_default();
    let r = app.fake_control("GET", &format!("/_fake/channels?user={user}{filter}"), Value::Null).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body["channels"].as_array().cloned().unwrap_or_default()
}

async fn live_ids(app: &TestApp, user: &str) -> Vec<String> {
    fake_channels(app, user, Some("live")).await.iter().map(|c| c["id"].as_str().unwrap_or("").to_owned()).collect()
}

async fn fake_channel(app: &TestApp, id: &str) -> Value {
    let r = app.fake_control("GET", "/_fake/channels", Value::Null).await;
    r.body["channels"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("the fake never saw channel {id}"))
}

async fn clear_faults(app: &TestApp) {
    let r = app.fake_control("DELETE", "/_fake/faults", Value::Null).await;
    assert_eq!(r.status, 204, "{r:?}");
}

fn id_of(channel: &Value) -> String {
    channel["id"].as_str().unwrap_or_else(|| panic!("no id: {channel}")).to_owned()
}

/// A channel's expiry in Unix ms (the fake and Google send a string).
fn expiry_ms(channel: &Value) -> i64 {
    channel["expiration"].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no expiration: {channel}"))
}

fn time_ms(v: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap_or_else(|e| panic!("not a time: {v}: {e}"))
        .timestamp_millis()
}

// ---- gwsync's side ----

async fn api_at(app: &TestApp, base: &str, method: &str, path: &str) -> Reply {
    let req = app.http.request(method.parse().expect("method"), format!("{base}{path}")).bearer_auth(ADMIN_TOKEN);
    reply(req.timeout(Duration::from_secs(20)).send().await.expect("gwsync answers")).await
}

async fn user_status_at(app: &TestApp, base: &str, user: &str) -> Value {
    let r = api_at(app, base, "GET", &format!("/api/v1/tenants/{TENANT}/users/{user}")).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body
}

async fn store_map_at(app: &TestApp, base: &str, user: &str) -> BTreeMap<String, String> {
    let r = api_at(app, base, "GET", &format!("/api/v1/tenants/{TENANT}/users/{user}/events")).await;
    assert_eq!(r.status, 200, "{r:?}");
    summaries(r.body["events"].as_array().map(Vec::as_slice).unwrap_or_default())
}

async fn store_map(app: &TestApp, user: &str) -> BTreeMap<String, String> {
    store_map_at(app, app.base(), user).await
}

async fn wait_stored(app: &TestApp, user: &str, id: &str, what: &str) {
    eventually(what, async || {
        let have = store_map(app, user).await;
        if have.contains_key(id) { Ok(()) } else { Err(format!("store holds {have:?}")) }
    })
    .await;
}

/// Waits until gwsync's store (at `base`) holds exactly Google's calendar as it is now.
async fn wait_store_matches_google_at(app: &TestApp, base: &str, user: &str, what: &str) -> BTreeMap<String, String> {
    let want = google_calendar(app, user).await;
    eventually(what, async || {
        let have = store_map_at(app, base, user).await;
        if have == want { Ok(have) } else { Err(format!("\n store:  {have:?}\n google: {want:?}")) }
    })
    .await
}

/// Waits until the user is synced, idle, with a live channel whose `sync` message Google
/// delivered; returns the fake's channel.
async fn wait_ready(app: &TestApp, user: &str) -> Value {
    eventually("a first sync and a live channel", async || {
        let status = user_status(app, user).await;
        let sync = &status["sync"];
        let Some(id) = sync["channel"]["id"].as_str() else { return Err(format!("no channel: {status}")) };
        if sync["last_sync"].is_null() || !sync["pending"].is_null() {
            return Err(format!("not synced yet: {status}"));
        }
        let channel = fake_channel(app, id).await;
        if channel["state"] != "live" {
            return Err(format!("channel not live: {channel}"));
        }
        if !deliveries(app, id).await.iter().any(|d| d["state"] == "sync" && d["outcome"] == "delivered") {
            return Err("the channel's sync message is not delivered yet".into());
        }
        Ok(channel)
    })
    .await
}

/// Tenant `acme` with its key, and `users` added, each synced with a live channel; returns
/// the fake's channel of each user, in order.
async fn users_ready(app: &TestApp, users: &[&str]) -> Vec<Value> {
    app.setup_tenant().await;
    for user in users {
        let r = app.put_user(user, json!({"profiles": [{"name": "Lunch", "triggers": ["lunch"]}]})).await;
        assert_eq!(r.status, 201, "{r:?}");
    }
    let mut channels = Vec::new();
    for user in users {
        channels.push(wait_ready(app, user).await);
    }
    for user in users {
        quiet(app, user).await;
    }
    channels
}

/// The value of one series (`name{labels}`) in Prometheus text, `None` if absent.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// `POST /api/v1/channels/renew`: answered 202 with the job to watch; waits for its report
/// (returned as a 200 with the report as body), or returns the refusal as it came.
async fn renew(app: &TestApp, within: &str) -> Reply {
    let r = app.api("POST", &format!("/api/v1/channels/renew?within={within}"), None).await;
    if r.status != 202 {
        return r;
    }
    let status = r.body["status"].as_str().expect("where to watch").to_owned();
    assert_eq!(r.headers.get("location").and_then(|v| v.to_str().ok()), Some(status.as_str()), "{r:?}");
    assert_eq!(r.body["job"]["kind"], "channels.renew", "{r:?}");
    let job = eventually("the renewal job to finish", async || {
        let j = app.api("GET", &status, None).await;
        if j.status == 200 && j.body["state"] != "running" { Ok(j) } else { Err(format!("{j:?}")) }
    })
    .await;
    assert_eq!(job.body["state"], "done", "{job:?}");
    Reply { status: 200, body: job.body["result"].clone(), ..job }
}

/// Revokes delegation and lets an hour pass, so the access tokens gwsync holds die too.
async fn revoke_delegation(app: &TestApp) {
    let r = app.fake_control("PUT", &format!("/_fake/delegation/{}", app.client_id), json!({"scopes": []})).await;
    assert_eq!(r.status, 200, "{r:?}");
    app.advance("61m").await;
}

// ---- 1. renewal before expiry ----

#[tokio::test]
async fn a_channel_near_expiry_is_replaced_before_it_expires_and_no_change_is_lost() {
    let app = TestApp::start().await;
    let old = users_ready(&app, &[ALICE]).await.remove(0);
    let old_id = id_of(&old);
    let old_expiry = expiry_ms(&old);
    let created_ms = app.clock.now().timestamp_millis();
    assert!((old_expiry - created_ms - 7 * DAY_MS).abs() < 60_000, "a 7-day channel: {old}");
    let since = last_seq(&app).await;

    // Four days on, three left: not due yet (renewal starts 48 h before expiry, spread by up to 12 h).
    app.advance("4d").await;
    never_within("a channel with three days left must not be renewed yet", Duration::from_secs(1), async || {
        let watches = requests(&app, Some("calendar.events.watch"), since).await;
        let live = live_ids(&app, ALICE).await;
        if !watches.is_empty() {
            Some(format!("events.watch was called: {watches:#?}"))
        } else if live != [old_id.clone()] {
            Some(format!("live channels: {live:?}"))
        } else {
            None
        }
    })
    .await;

    // The old channel's stop is held for 5 s: the overlap in which both channels are live.
    arm_fault(&app, json!({"method": "calendar.channels.stop", "delay_ms": 5000, "count": 1})).await;
    let mut hours = 96;
    let new = loop {
        assert!(hours < 96 + 30, "no renewal by {hours} h after registration: {}", user_status(&app, ALICE).await);
        app.advance("1h").await;
        hours += 1;
        let deadline = Instant::now() + Duration::from_millis(500);
        let mut found = None;
        while found.is_none() && Instant::now() < deadline {
            let all = fake_channels(&app, ALICE, None).await;
            assert!(
                all.iter().any(|c| c["state"] == "live"),
                "at {hours} h the user has no live channel at Google: {all:#?}"
            );
            found = all.iter().find(|c| c["id"] != old_id.as_str()).cloned();
            if found.is_none() {
                tokio::time::sleep(POLL).await;
            }
        }
        if let Some(c) = found {
            break c;
        }
    };
    let new_id = id_of(&new);
    let left = old_expiry - app.clock.now().timestamp_millis();
    assert!(
        (47 * HOUR_MS..=61 * HOUR_MS).contains(&left),
        "renewed {hours} h after registration, {} h before the old channel expires; expected within the \
         renewal window (48 h + up to 12 h spread) and before it",
        left / HOUR_MS
    );
    assert_eq!(new["resourceId"], old["resourceId"], "the same calendar is watched: {new}");
    assert!(expiry_ms(&new) > old_expiry, "the new channel outlives the old: {new} vs {old}");

    // During the overlap both channels fire, and gwsync accepts both.
    let writer = writer_token(&app, ALICE).await;
    let live = live_ids(&app, ALICE).await;
    assert!(
        live.contains(&old_id) && live.contains(&new_id),
        "the new channel is created before the old one is stopped: live {live:?}"
    );
    let during = insert(&app, &writer, "During the overlap", 2).await;
    for (which, id) in [("old", &old_id), ("new", &new_id)] {
        let got = eventually(&format!("the {which} channel's notification"), async || {
            let d = exists_deliveries(&app, id).await;
            if d.is_empty() { Err("none settled yet".to_owned()) } else { Ok(d) }
        })
        .await;
        assert!(
            got.len() == 1 && got[0]["outcome"] == "delivered" && got[0]["status"] == 200,
            "the {which} channel is valid until stopped: gwsync must answer its notification 200: {got:#?}"
        );
    }
    wait_stored(&app, ALICE, &during, "the change made during the overlap").await;

    // Then the old one is stopped (the fake stops only on a matching id and resourceId).
    let stopped = eventually("the old channel stopped at Google", async || {
        let c = fake_channel(&app, &old_id).await;
        if c["state"] == "stopped" { Ok(c) } else { Err(format!("{c}")) }
    })
    .await;
    assert_eq!(stopped["resourceId"], old["resourceId"]);
    let stops = calls_with(&app, "calendar.channels.stop", since, 204).await;
    assert_eq!(stops.len(), 1, "one channels.stop: {stops:#?}");
    let status = eventually("the user's status to show the new channel alone", async || {
        let s = user_status(&app, ALICE).await;
        if s["sync"]["channel"]["id"] == new_id.as_str() && s["sync"]["channels"] == 1 {
            Ok(s)
        } else {
            Err(format!("{s}"))
        }
    })
    .await;
    assert_eq!(time_ms(&status["sync"]["channel"]["expiration"]), expiry_ms(&new), "{status}");

    // Right after the switch, changes come through the new channel.
    let after = insert(&app, &writer, "Right after the switch", 3).await;
    wait_stored(&app, ALICE, &after, "the change made right after the switch").await;
    let got = eventually("the new channel's second notification", async || {
        let d = exists_deliveries(&app, &new_id).await;
        if d.len() >= 2 { Ok(d) } else { Err(format!("{d:#?}")) }
    })
    .await;
    assert!(got.iter().all(|d| d["status"] == 200), "{got:#?}");
    assert_eq!(exists_deliveries(&app, &old_id).await.len(), 1, "nothing more goes to the stopped channel");
    assert_eq!(live_ids(&app, ALICE).await, std::slice::from_ref(&new_id));
    let watches = calls_with(&app, "calendar.events.watch", since, 200).await;
    assert_eq!(watches.len(), 1, "one renewal, not one per keeper sweep: {watches:#?}");
    wait_store_matches_google_at(&app, app.base(), ALICE, "the store after the renewal").await;
    assert!(user_status(&app, ALICE).await["sync"]["last_error"].is_null());
    app.stop().await;
}

// ---- 2. a renewal that fails, then succeeds ----

#[tokio::test]
async fn a_renewal_that_fails_twice_is_shown_with_a_hint_and_then_succeeds() {
    let app = TestApp::start().await;
    let old = users_ready(&app, &[ALICE]).await.remove(0);
    let old_id = id_of(&old);
    let since = last_seq(&app).await;
    arm_fault(&app, json!({"method": "calendar.events.watch", "status": 503, "count": 2})).await;
    // Five days on the channel is due whatever its spread.
    app.advance("5d").await;

    let failing = eventually("the failed renewal in the user's status", async || {
        let s = user_status(&app, ALICE).await;
        if s["sync"]["last_error"]["code"] == "google_unavailable" { Ok(s) } else { Err(format!("{s}")) }
    })
    .await;
    let error = &failing["sync"]["last_error"];
    assert!(error["hint"].as_str().is_some_and(|h| !h.is_empty()), "with a hint: {failing}");
    assert!(error["retry_at"].is_string(), "with the time of the retry: {failing}");
    assert_eq!(failing["sync"]["channel"]["id"], old_id.as_str(), "the old channel still serves: {failing}");
    assert_eq!(
        live_ids(&app, ALICE).await,
        std::slice::from_ref(&old_id),
        "a failed renewal leaves the old channel live"
    );

    // Release the backoff on gwsync's clock.
    let mut minutes = 0;
    let new_id = loop {
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut found = None;
        while found.is_none() && Instant::now() < deadline {
            let live = live_ids(&app, ALICE).await;
            assert!(!live.is_empty(), "after {minutes} min the user has no live channel");
            found = live.into_iter().find(|id| *id != old_id);
            if found.is_none() {
                tokio::time::sleep(POLL).await;
            }
        }
        if let Some(id) = found {
            break id;
        }
        assert!(minutes < 15, "no new channel after {minutes} min: {}", user_status(&app, ALICE).await);
        app.advance("1m").await;
        minutes += 1;
    };
    eventually("the old channel stopped and the error cleared", async || {
        let s = user_status(&app, ALICE).await;
        let old = fake_channel(&app, &old_id).await;
        if old["state"] == "stopped"
            && s["sync"]["channel"]["id"] == new_id.as_str()
            && s["sync"]["last_error"].is_null()
        {
            Ok(())
        } else {
            Err(format!("old channel {old}\nstatus {s}"))
        }
    })
    .await;
    assert_eq!(faults_left(&app).await, 0, "both 503s were met");
    assert_eq!(calls_with(&app, "calendar.events.watch", since, 503).await.len(), 2);
    assert_eq!(calls_with(&app, "calendar.events.watch", since, 200).await.len(), 1);
    assert_eq!(live_ids(&app, ALICE).await, [new_id]);
    app.stop().await;
}

// ---- 3. eight days down ----

#[tokio::test]
async fn after_eight_days_down_every_user_is_registered_again_and_synced() {
    let mut app = TestApp::start().await;
    let old = users_ready(&app, &[ALICE, BOB]).await;
    app.stop_gwsync().await.expect("a clean stop");

    // Changes while gwsync is down: one Google cannot deliver, one after the channels expired.
    let writer = writer_token(&app, ALICE).await;
    let missed = insert(&app, &writer, "While gwsync was down", 2).await;
    app.advance("8d").await;
    for c in &old {
        let c = fake_channel(&app, &id_of(c)).await;
        assert_eq!(c["state"], "expired", "{c}");
    }
    let writer = writer_token(&app, ALICE).await;
    let later = insert(&app, &writer, "After the channels expired", 3).await;
    let since = last_seq(&app).await;

    let server = Instance::launch(&app).await;
    for (user, old) in [ALICE, BOB].iter().zip(&old) {
        let new = eventually(&format!("a new live channel for {user}"), async || {
            let live = fake_channels(&app, user, Some("live")).await;
            match live.as_slice() {
                [c] => Ok(c.clone()),
                _ => Err(format!("{live:#?}")),
            }
        })
        .await;
        assert_ne!(new["id"], old["id"]);
        assert!(expiry_ms(&new) - app.clock.now().timestamp_millis() > 6 * DAY_MS, "a fresh 7-day channel: {new}");
        eventually(&format!("{user}'s status to show the new channel"), async || {
            let s = user_status_at(&app, &server.base, user).await;
            if s["sync"]["channel"]["id"] == new["id"] && s["sync"]["last_error"].is_null() {
                Ok(())
            } else {
                Err(format!("{s}"))
            }
        })
        .await;
    }
    let store = wait_store_matches_google_at(&app, &server.base, ALICE, "alice's store after the restart").await;
    assert!(store.contains_key(&missed) && store.contains_key(&later), "{store:?}");
    let watches = calls_with(&app, "calendar.events.watch", since, 200).await;
    assert_eq!(watches.len(), 2, "one registration per user: {watches:#?}");
    server.stop().await;
    app.stop().await;
}

// ---- 4. users and tenants removed ----

#[tokio::test]
async fn deleting_a_user_or_a_tenant_stops_their_channels() {
    let app = TestApp::start().await;
    let channels = users_ready(&app, &[ALICE, BOB, IT]).await;
    let since = last_seq(&app).await;

    let r = app.api("DELETE", &format!("/api/v1/tenants/{TENANT}/users/{ALICE}"), None).await;
    assert_eq!(r.status, 204, "{r:?}");
    // The deletion answers once it is durable; the keeper stops the channel in the background.
    // The fake stops a channel only when given its id and its resourceId.
    eventually("alice's channel stopped", async || {
        let alice = fake_channel(&app, &id_of(&channels[0])).await;
        if alice["state"] == "stopped" { Ok(()) } else { Err(format!("{alice}")) }
    })
    .await;
    assert_eq!(calls_with(&app, "calendar.channels.stop", since, 204).await.len(), 1);
    for c in &channels[1..] {
        assert_eq!(fake_channel(&app, &id_of(c)).await["state"], "live", "other users keep theirs: {c}");
    }

    let since = last_seq(&app).await;
    let r = app.api("DELETE", &format!("/api/v1/tenants/{TENANT}"), None).await;
    assert_eq!(r.status, 204, "{r:?}");
    let r = app.api("GET", &format!("/api/v1/tenants/{TENANT}"), None).await;
    assert_eq!(r.status, 404, "gone at once: {r:?}");
    // Stopped with the deleted tenant's key, which stays until they are.
    for c in &channels[1..] {
        eventually("the tenant's channels stopped", async || {
            let c = fake_channel(&app, &id_of(c)).await;
            if c["state"] == "stopped" { Ok(()) } else { Err(format!("{c}")) }
        })
        .await;
    }
    assert_eq!(calls_with(&app, "calendar.channels.stop", since, 204).await.len(), 2);
    for user in [ALICE, BOB, IT] {
        assert!(live_ids(&app, user).await.is_empty(), "{user} has no live channel left");
    }
    let r = app.api("GET", &format!("/api/v1/tenants/{TENANT}"), None).await;
    assert_eq!(r.status, 404, "{r:?}");
    app.stop().await;
}

// ---- 5. a stop that fails ----

#[tokio::test]
async fn a_channel_whose_stop_fails_is_orphaned_ignored_and_stopped_by_the_keeper() {
    let app = TestApp::start().await;
    let channel = users_ready(&app, &[ALICE]).await.remove(0);
    let id = id_of(&channel);
    arm_fault(&app, json!({"method": "calendar.channels.stop", "status": 503, "count": 100})).await;
    let r = app.api("DELETE", &format!("/api/v1/tenants/{TENANT}/users/{ALICE}"), None).await;
    assert_eq!(r.status, 204, "the user is deleted even when Google cannot be told: {r:?}");
    assert_eq!(fake_channel(&app, &id).await["state"], "live", "Google still has the channel");
    let since = last_seq(&app).await;
    let before = metrics(&app).await;
    let unknown = r#"gwsync_notifications_total{outcome="unknown_channel"}"#;

    // Google keeps sending on it: gwsync answers 404 (not retried) and syncs nothing.
    let writer = writer_token(&app, ALICE).await;
    insert(&app, &writer, "After the user was deleted", 2).await;
    let got = eventually("the orphaned channel's notification", async || {
        let d = exists_deliveries(&app, &id).await;
        if d.is_empty() { Err("none settled yet".to_owned()) } else { Ok(d) }
    })
    .await;
    assert!(got.len() == 1 && got[0]["status"] == 404 && got[0]["outcome"] == "failed", "{got:#?}");
    never_within("a notification on an orphaned channel must cause no sync", Duration::from_secs(1), async || {
        let lists = requests(&app, Some("calendar.events.list"), since).await;
        (!lists.is_empty()).then(|| format!("{lists:#?}"))
    })
    .await;
    let after = metrics(&app).await;
    assert_eq!(
        metric(&after, unknown).unwrap_or(0.0) - metric(&before, unknown).unwrap_or(0.0),
        1.0,
        "counted as unknown: {after}"
    );

    // The keeper retries while Google still fails, and shows the orphan.
    app.advance("10m").await;
    eventually("the keeper's failed retry", async || {
        let text = metrics(&app).await;
        let retried = !calls_with(&app, "calendar.channels.stop", since, 503).await.is_empty();
        if retried && metric(&text, r#"gwsync_channels{state="orphaned"}"#) == Some(1.0) { Ok(()) } else { Err(text) }
    })
    .await;
    assert_eq!(fake_channel(&app, &id).await["state"], "live");

    // Google recovers; the next sweep stops it.
    clear_faults(&app).await;
    app.advance("10m").await;
    eventually("the keeper to stop the orphaned channel", async || {
        let c = fake_channel(&app, &id).await;
        if c["state"] == "stopped" { Ok(()) } else { Err(format!("{c}")) }
    })
    .await;
    assert!(!calls_with(&app, "calendar.channels.stop", since, 204).await.is_empty());
    app.advance("10m").await;
    eventually("no orphan left in the metrics", async || {
        let text = metrics(&app).await;
        if metric(&text, r#"gwsync_channels{state="orphaned"}"#) == Some(0.0) { Ok(()) } else { Err(text) }
    })
    .await;
    app.stop().await;
}

// ---- 6. POST /api/v1/channels/renew ----

#[tokio::test]
async fn renew_with_a_window_longer_than_any_channel_renews_every_channel_now() {
    let app = TestApp::start().await;
    let old = users_ready(&app, &[ALICE, BOB]).await;
    let since = last_seq(&app).await;
    let r = renew(&app, "8d").await;
    assert_eq!(r.status, 200, "within=8d covers every channel (none lives longer than 7 days): {r:?}");
    assert_eq!(r.body["users_checked"], 2, "{r:?}");
    assert_eq!(r.body["failed"], json!([]), "{r:?}");
    let renewed = r.body["renewed"].as_array().cloned().unwrap_or_default();
    assert_eq!(renewed.len(), 2, "{r:?}");
    for (user, old) in [ALICE, BOB].iter().zip(&old) {
        let entry = renewed.iter().find(|e| e["user"] == *user).unwrap_or_else(|| panic!("{user} renewed: {r:?}"));
        assert_eq!(entry["tenant"], TENANT);
        assert_eq!(entry["replaced"], json!([old["id"]]), "{entry}");
        assert_eq!(live_ids(&app, user).await, [entry["channel"].as_str().unwrap_or("").to_owned()]);
        assert_eq!(fake_channel(&app, &id_of(old)).await["state"], "stopped");
    }
    assert_eq!(calls_with(&app, "calendar.events.watch", since, 200).await.len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn renew_renews_what_is_due_and_refuses_a_bad_window() {
    let app = TestApp::start().await;
    let old = users_ready(&app, &[ALICE, BOB]).await;
    let since = last_seq(&app).await;

    // Fresh channels: nothing expires within the hour.
    let r = renew(&app, "1h").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["users_checked"], 2, "{r:?}");
    assert_eq!((&r.body["renewed"], &r.body["failed"]), (&json!([]), &json!([])), "{r:?}");
    assert_eq!(r.body["within"], "1h", "{r:?}");
    assert!(requests(&app, Some("calendar.events.watch"), since).await.is_empty(), "no Google call");

    for bad in ["soon", "48", "-1h", ""] {
        let r = renew(&app, bad).await;
        assert_eq!((r.status, r.code()), (400, "invalid_request"), "within={bad}: {r:?}");
        assert!(r.message().contains("within"), "the message names the parameter: {r:?}");
    }
    let r = app.api("POST", "/api/v1/channels/renew?whithin=1h", None).await;
    assert_eq!(r.status, 400, "a misspelt parameter is refused, not ignored: {r:?}");
    assert!(requests(&app, Some("calendar.events.watch"), since).await.is_empty(), "no Google call");

    // Every channel expires within seven days.
    let r = renew(&app, "7d").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["renewed"].as_array().map(Vec::len), Some(2), "{r:?}");
    for old in &old {
        assert_eq!(fake_channel(&app, &id_of(old)).await["state"], "stopped");
    }
    for user in [ALICE, BOB] {
        let live = live_ids(&app, user).await;
        assert_eq!(live.len(), 1, "{user}: {live:?}");
        let s = user_status(&app, user).await;
        assert_eq!(s["sync"]["channel"]["id"], live[0].as_str(), "{s}");
    }
    app.stop().await;
}

#[tokio::test]
async fn renew_with_delegation_revoked_lists_each_failure_with_code_and_hint() {
    let app = TestApp::start().await;
    let old = users_ready(&app, &[ALICE, BOB]).await;
    revoke_delegation(&app).await;
    let r = renew(&app, "7d").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["renewed"], json!([]), "{r:?}");
    let failed = r.body["failed"].as_array().cloned().unwrap_or_default();
    assert_eq!(failed.len(), 2, "{r:?}");
    for user in [ALICE, BOB] {
        let f = failed.iter().find(|f| f["user"] == user).unwrap_or_else(|| panic!("{user} failed: {r:?}"));
        assert_eq!(f["tenant"], TENANT, "{f}");
        assert_eq!(f["code"], "delegation_missing", "{f}");
        assert!(f["message"].as_str().is_some_and(|m| !m.is_empty()), "{f}");
        let hint = f["hint"].as_str().unwrap_or_default();
        assert!(hint.contains(&app.client_id), "the hint names the client ID to delegate to: {f}");
    }
    for c in &old {
        assert_eq!(fake_channel(&app, &id_of(c)).await["state"], "live", "a failed renewal keeps the old channel");
    }
    app.stop().await;
}

// ---- 7. scripts/renew-channels.sh ----

#[derive(Debug)]
struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs the script with only `envs` (and PATH) set; killed if it runs for more than 20 s.
async fn run_script(envs: &[(&str, &str)]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/renew-channels.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script).env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default()).env("NO_COLOR", "1");
    cmd.envs(envs.iter().copied()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn the script");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the script ran for more than 20 s");
        }
        tokio::time::sleep(POLL).await;
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child.stdout.take().expect("stdout").read_to_string(&mut stdout).expect("read stdout");
    child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("read stderr");
    Output { status, stdout, stderr }
}

#[tokio::test]
async fn the_renew_script_reports_renewals_and_each_failure() {
    let app = TestApp::start().await;
    let old = users_ready(&app, &[ALICE, BOB]).await;
    let bin = env!("CARGO_BIN_EXE_gwsync");
    let base = app.base().to_owned();
    let env = |within: &'static str| -> Vec<(&'static str, String)> {
        vec![
            ("GWSYNC_SERVER", base.clone()),
            ("GWSYNC_BIN", bin.to_owned()),
            ("GWSYNC_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
            ("GWSYNC_RENEW_WITHIN", within.to_owned()),
        ]
    };
    let run = async |vars: &[(&'static str, String)]| {
        let v: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run_script(&v).await
    };

    // Fresh channels and the default window: nothing to do.
    let out = run(&env("48h")[..]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.contains("renewed 0, failed 0"), "{out:?}");

    let out = run(&env("7d")[..]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.contains("renewed 2, failed 0"), "{out:?}");
    for (user, c) in [ALICE, BOB].iter().zip(&old) {
        assert_eq!(fake_channel(&app, &id_of(c)).await["state"], "stopped");
        assert_eq!(live_ids(&app, user).await.len(), 1);
    }

    // No admin token: exit 2 with one line saying so.
    let mut vars = env("7d");
    vars.retain(|(k, _)| *k != "GWSYNC_ADMIN_TOKEN");
    let out = run(&vars).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "{out:?}");
    assert!(out.stderr.contains("GWSYNC_ADMIN_TOKEN"), "{out:?}");

    // A server that is not there.
    let mut vars = env("7d");
    vars[0].1 = format!("http://127.0.0.1:{}", free_port());
    let out = run(&vars).await;
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stderr.contains("cannot reach"), "{out:?}");
    assert_eq!(out.stderr.trim().lines().count(), 1, "{out:?}");

    // Delegation revoked: each failed user on a line of its own, with the fix.
    revoke_delegation(&app).await;
    let out = run(&env("7d")[..]).await;
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stdout.contains("renewed 0, failed 2"), "{out:?}");
    for user in [ALICE, BOB] {
        let line = out.stderr.lines().find(|l| l.contains(user)).unwrap_or_else(|| panic!("{user}: {out:?}"));
        assert!(line.contains(&app.client_id), "the line carries the hint (delegate to the client ID): {line}");
    }
    app.stop().await;
}

// ---- 8. metrics and readiness ----

#[tokio::test]
async fn metrics_show_live_channels_their_soonest_expiry_and_renewals() {
    let app = TestApp::start().await;
    let r = app.raw("GET", "/readyz", &[], Vec::new()).await;
    assert_eq!(r.status, 200, "ready while serving: {r:?}");
    users_ready(&app, &[ALICE, BOB]).await;
    // The keeper publishes at each sweep.
    app.advance("10m").await;
    let text = eventually("the keeper's sweep to count both channels", async || {
        let text = metrics(&app).await;
        if metric(&text, r#"gwsync_channels{state="live"}"#) == Some(2.0) { Ok(text) } else { Err(text) }
    })
    .await;
    let soonest = metric(&text, "gwsync_channel_soonest_expiry_seconds").unwrap_or(0.0);
    let week = 7.0 * 86_400.0;
    assert!(soonest <= week && soonest >= week - 15.0 * 60.0, "soonest expiry {soonest} s, about 7 days: {text}");
    assert_eq!(metric(&text, r#"gwsync_channels{state="orphaned"}"#), Some(0.0), "{text}");

    let r = renew(&app, "7d").await;
    assert_eq!(r.body["renewed"].as_array().map(Vec::len), Some(2), "{r:?}");
    let text = metrics(&app).await;
    assert_eq!(metric(&text, r#"gwsync_channel_renewals_total{outcome="renewed"}"#), Some(2.0), "{text}");
    app.advance("10m").await;
    eventually("the next sweep to count the new channels only", async || {
        let text = metrics(&app).await;
        let soonest = metric(&text, "gwsync_channel_soonest_expiry_seconds").unwrap_or(0.0);
        if metric(&text, r#"gwsync_channels{state="live"}"#) == Some(2.0) && soonest > week - 15.0 * 60.0 {
            Ok(())
        } else {
            Err(text)
        }
    })
    .await;
    let r = app.raw("GET", "/readyz", &[], Vec::new()).await;
    assert_eq!(r.status, 200, "{r:?}");
    app.stop().await;
}

// ---- 9. SIGTERM ----

/// A phone system that records every request and answers with the status it is set to.
struct PhoneSystem {
    url: String,
    status: Arc<AtomicU16>,
    got: Arc<parking_lot::Mutex<Vec<(u16, String, Value)>>>,
    server: actix_web::dev::ServerHandle,
}

impl PhoneSystem {
    fn start(status: u16) -> PhoneSystem {
        use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
        let status = Arc::new(AtomicU16::new(status));
        let got: Arc<parking_lot::Mutex<Vec<(u16, String, Value)>>> = Arc::default();
        let (s, g) = (status.clone(), got.clone());
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = HttpServer::new(move || {
            let (s, g) = (s.clone(), g.clone());
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let (s, g) = (s.clone(), g.clone());
                async move {
                    let answer = s.load(Ordering::SeqCst);
                    let id = req.headers().get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                    g.lock().push((answer, id, serde_json::from_slice(&body).unwrap_or(Value::Null)));
                    HttpResponse::build(actix_web::http::StatusCode::from_u16(answer).expect("status")).finish()
                }
            }))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        PhoneSystem { url: format!("http://{addr}/hooks/gwsync"), status, got, server: handle }
    }

    fn got(&self) -> Vec<(u16, String, Value)> {
        self.got.lock().clone()
    }
}

#[tokio::test]
async fn sigterm_exits_within_shutdown_timeout_and_keeps_a_dirty_mark_and_an_undelivered_switch() {
    let mut app = TestApp::start().await;
    app.stop_gwsync().await.expect("the in-process gwsync stops");
    let phone = PhoneSystem::start(500);
    let data = tempfile::tempdir().expect("tempdir");
    let data_dir = data.path().join("gwsync");
    let port = free_port();
    let master_key = random_master_key();
    let shutdown = [("GWSYNC_SHUTDOWN_TIMEOUT", "4s")];
    let mut gw = ServeProcess::spawn(&app, &data_dir, port, &master_key, &shutdown).await;
    let r = gw.api(&app, "GET", "/readyz", None).await;
    assert_eq!(r.status, 200, "ready while serving: {r:?}");

    let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(b"0123456789abcdefghijklmn"));
    let tenant = json!({"domain": DOMAIN, "directory_admin": IT, "phone_system": {"url": phone.url, "secret": secret}});
    let r = gw.api(&app, "PUT", &format!("/api/v1/tenants/{TENANT}"), Some(tenant)).await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = gw.api(&app, "PUT", &format!("/api/v1/tenants/{TENANT}/credentials"), Some(app.key.clone())).await;
    assert_eq!(r.status, 200, "{r:?}");
    let user = json!({"external_id": "1042", "profiles": [{"name": "Lunch", "triggers": ["lunch"]}]});
    let r = gw.api(&app, "PUT", &format!("/api/v1/tenants/{TENANT}/users/{ALICE}"), Some(user)).await;
    assert_eq!(r.status, 201, "{r:?}");
    let channel = eventually("a first sync and a channel", async || {
        let s = gw.api(&app, "GET", &format!("/api/v1/tenants/{TENANT}/users/{ALICE}"), None).await.body;
        match s["sync"]["channel"]["id"].as_str() {
            Some(id) if !s["sync"]["last_sync"].is_null() && s["sync"]["pending"].is_null() => Ok(id.to_owned()),
            _ => Err(format!("{s}")),
        }
    })
    .await;

    // A lunch running now: the switch to "Lunch" is due, and the phone system answers 500.
    let writer = writer_token(&app, ALICE).await;
    let now = chrono::Utc::now();
    let (start, end) =
        ((now - chrono::Duration::minutes(5)).to_rfc3339(), (now + chrono::Duration::hours(2)).to_rfc3339());
    insert_event(&app, &writer, "Lunch with a customer", &start, &end).await;
    let first = eventually("a refused delivery of the switch", async || {
        match phone.got().into_iter().find(|(status, _, body)| *status == 500 && body["profile"] == "Lunch") {
            Some(got) => Ok(got),
            None => Err(format!("{:?}", phone.got())),
        }
    })
    .await;
    eventually("the lunch sync to finish", async || {
        let s = gw.api(&app, "GET", &format!("/api/v1/tenants/{TENANT}/users/{ALICE}"), None).await.body;
        if s["sync"]["pending"].is_null() && s["sync"]["events_stored"] == 1 { Ok(()) } else { Err(format!("{s}")) }
    })
    .await;

    // A change whose sync hangs at Google: its notification is acknowledged, the sync is not done.
    arm_fault(&app, json!({"method": "calendar.events.list", "delay_ms": 60000, "count": 1})).await;
    let planning = insert(&app, &writer, "Planning", 2).await;
    eventually("the notification acknowledged and its sync hanging", async || {
        let acked = exists_deliveries(&app, &channel).await.iter().filter(|d| d["status"] == 200).count();
        let left = faults_left(&app).await;
        if acked >= 2 && left == 0 { Ok(()) } else { Err(format!("{acked} acknowledged, {left} faults armed")) }
    })
    .await;

    let (status, took) = gw.terminate().await;
    assert!(status.success(), "SIGTERM is a clean stop (exit 0), got {status}: {}", gw.log_text());
    assert!(took < Duration::from_secs(4), "stopped within shutdown_timeout (4 s): took {took:?}");
    drop(gw);
    clear_faults(&app).await;
    assert!(phone.got().iter().all(|(status, _, _)| *status == 500), "nothing was delivered yet");

    // The phone system is back; gwsync starts again on the same data.
    phone.status.store(204, Ordering::SeqCst);
    let gw = ServeProcess::spawn(&app, &data_dir, port, &master_key, &shutdown).await;
    let delivered = eventually("the held switch delivered after the restart", async || {
        match phone.got().into_iter().find(|(status, _, _)| *status == 204) {
            Some(got) => Ok(got),
            None => Err(format!("{:?}", phone.got())),
        }
    })
    .await;
    assert_eq!(delivered.2["profile"], "Lunch", "{delivered:?}");
    assert_eq!(delivered.1, first.1, "the same message (webhook-id kept across retries and restarts)");
    eventually("the change whose sync was cut short", async || {
        let r = gw.api(&app, "GET", &format!("/api/v1/tenants/{TENANT}/users/{ALICE}/events"), None).await;
        let have = summaries(r.body["events"].as_array().map(Vec::as_slice).unwrap_or_default());
        if have.contains_key(&planning) { Ok(()) } else { Err(format!("{have:?}")) }
    })
    .await;
    assert!(
        gw.log_text().contains("resuming syncs marked before the last stop"),
        "the dirty mark survived the stop: {}",
        gw.log_text()
    );
    drop(gw);
    phone.server.stop(false).await;
    app.stop().await;
}
