//! The webhook's promise under its fast path: a notification answered 200 is covered by a
//! durable dirty mark, so a `kill -9` right after the answer still leads to a sync; and a
//! calendar that already holds an unconsumed mark takes no new durable write however many
//! notifications follow.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use gwsync::clock::Clock;
use gwsync::store::group_flush::GroupFlush;
use gwsync::store::sled_store::SledStore;
use gwsync::store::{SharedStore, Store};
use gwsync::sync::queue::{CalendarKey, Finish, SyncQueue};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The generation of the calendar's durable mark (how many durable writes it took), if any.
async fn mark(store: &SledStore, key: &CalendarKey) -> Option<u64> {
    store
        .dirty_calendars()
        .await
        .expect("marks")
        .into_iter()
        .find(|(t, u, _)| *t == key.tenant && *u == key.user)
        .map(|m| m.2)
}

#[tokio::test]
async fn a_held_durable_mark_covers_later_notifications_without_a_new_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sled = Arc::new(SledStore::open(dir.path(), 8).expect("open"));
    let store: SharedStore = sled.clone();
    let stop = CancellationToken::new();
    let flush = GroupFlush::start(store.clone(), stop.clone());
    let queue = SyncQueue::new(store, flush, Duration::from_millis(250), 4, Clock::system());
    let key = CalendarKey::new("acme", "alice@acme.test");

    queue.notify(&key).await.expect("notify");
    assert_eq!(mark(&sled, &key).await, Some(1), "the first notification writes a durable mark");
    for _ in 0..50 {
        queue.notify(&key).await.expect("notify");
    }
    assert_eq!(mark(&sled, &key).await, Some(1), "while queued, the held mark covers later notifications");

    let claim = queue.take().await;
    for _ in 0..50 {
        queue.notify(&key).await.expect("notify");
    }
    assert_eq!(mark(&sled, &key).await, Some(1), "while syncing too: the held mark stays until a sync after them");
    queue.finish(&claim, Finish::Done).await.expect("finish");
    assert_eq!(mark(&sled, &key).await, Some(1), "the sync that may have missed them does not consume the mark");
    assert!(queue.contains(&key), "it runs again");
    assert_eq!(queue.release_due(chrono::Utc::now() + chrono::Duration::milliseconds(250)), 1);
    let rerun = queue.take().await;
    queue.finish(&rerun, Finish::Done).await.expect("finish");
    assert_eq!(mark(&sled, &key).await, None, "the rerun consumes it");

    queue.notify(&key).await.expect("notify");
    assert_eq!(mark(&sled, &key).await, Some(1), "once consumed, the next notification writes a new mark");
    stop.cancel();
}

const NOTIFIED: usize = 24;
const CONTROL: usize = 8;
const PER_CALENDAR: usize = 30;
const CONCURRENT: usize = 16;
/// The kill comes after this many answers, about the middle of the burst.
const KILL_AFTER: usize = NOTIFIED * PER_CALENDAR / 2;

/// After a restart the backstop syncs every calendar, paced by this share of the project quota:
/// at 0.0001 that is one sync right away and the next a minute later, so within the test only
/// durable marks can explain a synced calendar.
const SLOW_STARTUP_SWEEP: (&str, &str) = ("GWSYNC_SYNC__STARTUP_SHARE", "0.0001");

#[tokio::test]
async fn every_notification_answered_200_before_a_kill_9_is_synced_after_the_restart() {
    let mut app = TestApp::start().await;
    app.stop_gwsync().await.expect("the in-process gwsync stops");
    let users: Vec<String> = (0..NOTIFIED + CONTROL).map(|i| format!("u{i:02}@{DOMAIN}")).collect();
    for u in &users {
        let r = app.fake_control("POST", &format!("/_fake/domains/{DOMAIN}/users"), json!({"email": u})).await;
        assert_eq!(r.status, 201, "{r:?}");
    }
    let data = tempfile::tempdir().expect("tempdir");
    let data_dir = data.path().join("gwsync");
    let port = free_port();
    let master_key = random_master_key();
    let env = [SLOW_STARTUP_SWEEP];
    let mut gw = ServeProcess::spawn(&app, &data_dir, port, &master_key, &env).await;
    let r = gw
        .api(&app, "PUT", &format!("/api/v1/tenants/{TENANT}"), Some(json!({"domain": DOMAIN, "directory_admin": IT})))
        .await;
    assert_eq!(r.status, 201, "{r:?}");
    let r = gw.api(&app, "PUT", &format!("/api/v1/tenants/{TENANT}/credentials"), Some(app.key.clone())).await;
    assert_eq!(r.status, 200, "{r:?}");
    for u in &users {
        let body = json!({"profiles": [{"name": "Lunch", "triggers": ["lunch"]}]});
        let r = gw.api(&app, "PUT", &format!("/api/v1/tenants/{TENANT}/users/{u}"), Some(body)).await;
        assert_eq!(r.status, 201, "{r:?}");
    }
    // Every user synced once, with a live channel: (id, token, resource id) by user.
    let channels: BTreeMap<String, (String, String, String)> = app.live_channels(&users).await;
    for u in &users {
        eventually("every first sync to finish", async || {
            let r = gw.api(&app, "GET", &format!("/api/v1/tenants/{TENANT}/users/{u}"), None).await;
            let s = &r.body["sync"];
            if !s["last_sync"].is_null() && s["pending"].is_null() { Ok(()) } else { Err(format!("{}", r.body)) }
        })
        .await;
    }

    // A change in every calendar. Google's own notifications are dropped: the test sends them,
    // so it knows which were answered. Every sync that starts before the kill hangs in
    // events.list, so nothing but a durable mark can carry a notification across the kill.
    let r = app.fake_control("PUT", "/_fake/delivery", json!({"drop": 1.0})).await;
    assert_eq!(r.status, 200, "{r:?}");
    let mut changes = BTreeMap::new();
    for u in &users {
        let writer = writer_token(&app, u).await;
        let event = json!({"summary": format!("Burst {u}"), "start": {"dateTime": "2030-03-04T11:00:00Z"},
            "end": {"dateTime": "2030-03-04T12:00:00Z"}});
        let r = google(&app, "POST", "events", &writer, Some(event)).await;
        assert_eq!(r.status, 200, "{r:?}");
        changes.insert(u.clone(), r.body["id"].as_str().expect("id").to_owned());
    }
    arm_fault(&app, json!({"method": "calendar.events.list", "delay_ms": 60_000, "count": 100_000})).await;

    // The burst: PER_CALENDAR notifications for each of the first NOTIFIED calendars, one
    // calendar after another, CONCURRENT at a time; kill -9 once KILL_AFTER are answered.
    let webhook = format!("http://127.0.0.1:{port}/webhooks/google/calendar");
    let next = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let halfway = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENT {
        let (http, webhook, next, answered, halfway) =
            (app.http.clone(), webhook.clone(), next.clone(), answered.clone(), halfway.clone());
        let targets: Vec<(String, (String, String, String))> =
            users[..NOTIFIED].iter().map(|u| (u.clone(), channels[u].clone())).collect();
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut refused) = (BTreeSet::new(), Vec::new());
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some((user, (id, token, resource))) = targets.get(i / PER_CALENDAR) else { break };
                let sent = http
                    .post(&webhook)
                    .header("X-Goog-Channel-ID", id)
                    .header("X-Goog-Channel-Token", token)
                    .header("X-Goog-Resource-ID", resource)
                    .header("X-Goog-Resource-State", "exists")
                    .header("X-Goog-Message-Number", (1_302_465 + i).to_string())
                    .header("Content-Length", "0")
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 200 => {
                        ok.insert(user.clone());
                        if answered.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER {
                            halfway.notify_one();
                        }
                    }
                    Ok(r) => refused.push(format!("{user}: {}", r.status())),
                    // The process is gone: the rest of the burst goes unanswered.
                    Err(_) => break,
                }
            }
            (ok, refused)
        }));
    }
    tokio::time::timeout(WAIT, halfway.notified()).await.expect("half the burst answered");
    gw.kill();
    let mut acknowledged = BTreeSet::new();
    for t in tasks {
        let (ok, refused) = t.await.expect("burst task");
        assert!(refused.is_empty(), "every notification before the kill was answered 200: {refused:?}");
        acknowledged.extend(ok);
    }
    let answered = answered.load(Ordering::SeqCst);
    assert!(answered < NOTIFIED * PER_CALENDAR, "the kill came in the middle of the burst ({answered} answered)");
    assert!(acknowledged.len() >= KILL_AFTER / PER_CALENDAR, "{acknowledged:?}");

    // On disk, before anything restarts: a mark for every acknowledged calendar.
    {
        let store = SledStore::open(&data_dir.join("db"), 8).expect("the killed process's database opens");
        let marked: BTreeSet<String> =
            store.dirty_calendars().await.expect("marks").into_iter().map(|(_, user, _)| user).collect();
        let missing: Vec<&String> = acknowledged.iter().filter(|u| !marked.contains(*u)).collect();
        assert!(missing.is_empty(), "answered 200 without a durable mark: {missing:?}");
    }

    let r = app.fake_control("DELETE", "/_fake/faults", Value::Null).await;
    assert_eq!(r.status, 204, "{r:?}");
    let gw = ServeProcess::spawn(&app, &data_dir, port, &master_key, &env).await;
    let holds = async |user: &str| -> bool {
        let r = gw.api(&app, "GET", &format!("/api/v1/tenants/{TENANT}/users/{user}/events"), None).await;
        assert_eq!(r.status, 200, "{r:?}");
        r.body["events"].as_array().is_some_and(|a| a.iter().any(|e| e["id"] == changes[user].as_str()))
    };
    for u in &acknowledged {
        eventually("every acknowledged calendar synced after the restart", async || {
            if holds(u).await { Ok(()) } else { Err(format!("{u} does not hold its change")) }
        })
        .await;
    }
    // What proves the marks did it: the calendars changed at the same time but never notified
    // are not synced yet (the startup sweep may have taken one of them).
    let mut synced_unnotified = Vec::new();
    for u in &users[NOTIFIED..] {
        if holds(u).await {
            synced_unnotified.push(u.clone());
        }
    }
    assert!(synced_unnotified.len() <= 1, "the startup sweep is paced to one sync a minute: {synced_unnotified:?}");
    drop(gw);
    app.stop().await;
}

/// The calendar's dirty mark in `database`, read on a runtime of this thread's own (the
/// service's may be stuck).
fn dirty_generation(database: &str) -> Option<i64> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        use sqlx::Connection as _;
        let mut db = sqlx::PgConnection::connect(database).await.expect("connect");
        sqlx::query_scalar("SELECT generation FROM dirty WHERE tenant = $1 AND email = $2")
            .bind(TENANT)
            .bind(ALICE)
            .fetch_optional(&mut db)
            .await
            .expect("read the mark")
    })
}

/// A notification sent by hand over a socket of its own (the test's runtime may be stuck):
/// the answer's status line and body.
fn post_by_hand(addr: &str, channel: &(String, String, String), number: u32) -> String {
    use std::io::{Read, Write};
    let (id, token, resource) = channel;
    let mut socket = std::net::TcpStream::connect(addr).expect("connect");
    socket.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let request = format!(
        "POST /webhooks/google/calendar HTTP/1.1\r\nHost: {addr}\r\nX-Goog-Channel-ID: {id}\r\n\
         X-Goog-Channel-Token: {token}\r\nX-Goog-Resource-ID: {resource}\r\nX-Goog-Resource-State: exists\r\n\
         X-Goog-Message-Number: {number}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).expect("send");
    let mut answer = String::new();
    match socket.read_to_string(&mut answer) {
        Ok(_) => answer,
        Err(e) => format!("no answer: {e}"),
    }
}

/// On PostgreSQL the HTTP worker that takes a notification writes its mark itself, with
/// connections of its own: with every thread of the runtime that syncs calendars stuck (as
/// when a storm of syncs starts, in milder form), Google's notification is still answered,
/// and only once its mark is committed; the sync follows when the runtime runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_a_notification_is_answered_while_the_runtime_that_syncs_is_stuck() {
    let database = common::pg::fresh_database().await;
    let url = database.clone();
    let app = TestApp::start_with(move |c| c.store.database_url = Some(url.clone().into())).await;
    app.setup_tenant().await;
    let r = app.put_user(ALICE, json!({"profiles": [{"name": "Lunch", "triggers": ["lunch"]}]})).await;
    assert_eq!(r.status, 201, "{r:?}");
    let channel = app.live_channels(&[ALICE]).await[ALICE].clone();
    // Google's own notifications are dropped: the test sends the one that counts.
    let r = app.fake_control("PUT", "/_fake/delivery", json!({"drop": 1.0})).await;
    assert_eq!(r.status, 200, "{r:?}");
    // A first notification (the channel is then known in memory), and its sync.
    let addr = app.base().trim_start_matches("http://").to_owned();
    let first = tokio::task::spawn_blocking({
        let (addr, channel) = (addr.clone(), channel.clone());
        move || post_by_hand(&addr, &channel, 1)
    })
    .await
    .expect("first notification");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    quiet(&app, ALICE).await;
    let writer = writer_token(&app, ALICE).await;
    let event = json!({"summary": "Lunch while stuck", "start": {"dateTime": "2030-03-04T11:00:00Z"},
        "end": {"dateTime": "2030-03-04T12:00:00Z"}});
    let r = google(&app, "POST", "events", &writer, Some(event)).await;
    assert_eq!(r.status, 200, "{r:?}");

    // The mark the first notification left is gone with its sync: a mark found below is new.
    let before = std::thread::spawn({
        let database = database.clone();
        move || dirty_generation(&database)
    })
    .join()
    .expect("reading the mark");
    assert_eq!(before, None, "the first notification's mark is cleared by its sync");

    // Every thread of the runtime held until the answer has come (each says when it is).
    let (held, holding) = std::sync::mpsc::channel::<()>();
    let release = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let holders: Vec<_> = (0..2)
        .map(|_| {
            let (held, release) = (held.clone(), release.clone());
            tokio::spawn(async move {
                let _ = held.send(());
                let (released, wake) = &*release;
                let mut released = released.lock().expect("lock");
                while !*released {
                    released = wake.wait(released).expect("wait");
                }
            })
        })
        .collect();
    for _ in 0..2 {
        holding.recv_timeout(Duration::from_secs(30)).expect("both runtime threads held");
    }
    let answered = std::thread::spawn({
        let database = database.clone();
        move || {
            let answer = post_by_hand(&addr, &channel, 2);
            (answer, dirty_generation(&database))
        }
    })
    .join()
    .expect("the notification's thread");
    *release.0.lock().expect("lock") = true;
    release.1.notify_all();
    for h in holders {
        h.await.expect("holder");
    }
    let (answer, marked) = answered;
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("accepted"), "{answer}");
    assert!(marked.is_some(), "answered before its new mark was committed");
    eventually("the notified change synced once the runtime runs", async || {
        let events = stored(&app, ALICE).await;
        if events.iter().any(|e| e["summary"] == "Lunch while stuck") { Ok(()) } else { Err(format!("{events:?}")) }
    })
    .await;
    app.stop().await;
}
