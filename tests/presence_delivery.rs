//! Profile switches delivered to the phone system, end to end (DESIGN §4 "Outbound", §5): events
//! written through the fake's Calendar API, gwsync's clock moved to their starts and ends, and
//! a receiver that verifies every message with the reference Standard Webhooks implementation
//! (the `standardwebhooks` crate) and answers the statuses a test chooses.
mod common;
use common::*;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, DurationRound, NaiveTime, SecondsFormat, TimeZone, Utc};
use common::receiver::{Attempt, Receiver};
use serde_json::{Value, json};

const SECRET_KEY: [u8; 32] = *b"gwsync-delivery-test-key-32bytes";

fn secret() -> String {
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(SECRET_KEY))
}

fn mins(n: i64) -> chrono::Duration {
    chrono::Duration::minutes(n)
}

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

// ---- time ----

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap_or_else(|e| panic!("not a time: {v}: {e}"))
        .with_timezone(&Utc)
}

/// gwsync's clock `ahead` from now, on a whole minute.
fn minute_ahead(app: &TestApp, ahead: chrono::Duration) -> DateTime<Utc> {
    (app.clock.now() + ahead).duration_trunc(mins(1)).expect("truncate")
}

/// Moves gwsync's and the fake's clock to `t` (a little past it: real time runs on).
async fn advance_to(app: &TestApp, t: DateTime<Utc>) {
    let ms = (t - app.clock.now()).num_milliseconds();
    if ms > 0 {
        app.advance(&format!("{ms}ms")).await;
    }
}

// ---- Google's side (the fake) ----

/// Inserts an event `[start, end)` with `extra` fields; returns its id.
async fn create(
    app: &TestApp,
    token: &str,
    summary: &str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    extra: Value,
) -> String {
    let mut body = json!({"summary": summary, "start": {"dateTime": rfc(start)}, "end": {"dateTime": rfc(end)}});
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            body[k] = v;
        }
    }
    let r = google(app, "POST", "events", token, Some(body)).await;
    assert_eq!(r.status, 200, "insert {summary}: {r:?}");
    r.body["id"].as_str().expect("id").to_owned()
}

async fn patch(app: &TestApp, token: &str, id: &str, body: Value) {
    let r = google(app, "PATCH", &format!("events/{id}"), token, Some(body)).await;
    assert_eq!(r.status, 200, "patch {id}: {r:?}");
}

// ---- gwsync's side ----

fn profiles() -> Value {
    json!([
        {"name": "Lunch", "triggers": ["lunch"]},
        {"name": "Meeting", "triggers": ["meeting", "standup"]},
    ])
}

fn external_id(user: &str) -> &'static str {
    match user {
        ALICE => "1042",
        BOB => "1043",
        _ => "1044",
    }
}

async fn add_user(app: &TestApp, user: &str) {
    let r = app.put_user(user, json!({"external_id": external_id(user), "profiles": profiles()})).await;
    assert_eq!(r.status, 201, "{r:?}");
}

/// Gives tenant `acme` the receiver as its phone system.
async fn connect_phone_system(app: &TestApp, rx: &Receiver) -> Reply {
    app.api(
        "PUT",
        &format!("/api/v1/tenants/{TENANT}"),
        Some(json!({"domain": DOMAIN, "directory_admin": IT, "phone_system": {"url": rx.url, "secret": secret()}})),
    )
    .await
}

/// gwsync and the fake, tenant `acme` with the receiver as its phone system, and `users`.
async fn setup(users: &[&str]) -> (TestApp, Receiver) {
    let app = TestApp::start().await;
    let rx = Receiver::start(&secret(), app.clock.clone()).await;
    app.setup_tenant().await;
    let r = connect_phone_system(&app, &rx).await;
    assert_eq!(r.status, 200, "{r:?}");
    for u in users {
        add_user(&app, u).await;
    }
    (app, rx)
}

async fn presence_at(app: &TestApp, base: &str, user: &str) -> Reply {
    reply(
        app.http
            .get(format!("{base}/api/v1/tenants/{TENANT}/users/{user}/presence"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("presence"),
    )
    .await
}

async fn presence(app: &TestApp, user: &str) -> Reply {
    presence_at(app, app.base(), user).await
}

/// The upcoming switches of a presence answer: (at, profile or "-").
fn upcoming(p: &Value) -> Vec<(DateTime<Utc>, String)> {
    p["upcoming"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| (time(&t["at"]), t["profile"].as_str().unwrap_or("-").to_owned()))
        .collect()
}

/// Waits until the presence API of `user` satisfies `check` (gwsync synced the calendar).
async fn wait_presence(app: &TestApp, user: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(what, async || {
        let p = presence(app, user).await;
        if p.status == 200 && check(&p.body) { Ok(p.body) } else { Err(format!("{} {}", p.status, p.body)) }
    })
    .await
}

/// Waits until the presence API lists exactly these upcoming starts of profiles.
async fn wait_upcoming_starts(app: &TestApp, user: &str, want: &[(DateTime<Utc>, &str)]) -> Value {
    let want: Vec<(DateTime<Utc>, String)> = want.iter().map(|(t, p)| (*t, p.to_string())).collect();
    let presence = wait_presence(app, user, &format!("upcoming starts {want:?}"), |p| {
        upcoming(p).into_iter().filter(|(_, profile)| profile != "-").collect::<Vec<_>>() == want
    })
    .await;
    // The presence API reads the store, which a sync writes before it hands the new timeline to
    // the scheduler: wait for the sync to end too, so what fires next is what the API showed.
    eventually("the syncs to end", async || {
        let pending = metric_at(app, app.base(), "gwsync_dirty_calendars").await;
        if pending == 0.0 { Ok(()) } else { Err(format!("{pending} calendars pending")) }
    })
    .await;
    presence
}

async fn metric_at(app: &TestApp, base: &str, series: &str) -> f64 {
    let text = app.http.get(format!("{base}/metrics")).send().await.expect("metrics").text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Waits until gwsync at `base` has finished `n` deliveries (message removed from its outbox).
async fn wait_delivered_metric(app: &TestApp, base: &str, n: usize) {
    eventually("gwsync to record its deliveries", async || {
        let got = metric_at(app, base, r#"gwsync_deliveries_total{outcome="delivered"}"#).await;
        if got >= n as f64 { Ok(()) } else { Err(format!("{got} of {n}")) }
    })
    .await;
}

// ---- checks on what the receiver got ----

/// The DESIGN §4 body fields, exactly.
fn assert_fields(m: &Value) {
    let keys: BTreeSet<&str> = m.as_object().expect("an object").keys().map(String::as_str).collect();
    let want: BTreeSet<&str> =
        ["type", "tenant", "user", "external_id", "sequence", "profile", "since", "until", "cause"].into();
    assert_eq!(keys, want, "body fields of {m}");
    assert_eq!(m["type"], "profile.changed", "{m}");
    assert_eq!(m["tenant"], TENANT, "{m}");
    assert!(m["sequence"].is_u64(), "{m}");
    if !m["cause"].is_null() {
        let keys: BTreeSet<&str> = m["cause"].as_object().expect("cause").keys().map(String::as_str).collect();
        assert_eq!(keys, ["event_id", "trigger"].into(), "cause fields of {m}");
    }
}

/// Checks every attempt the receiver saw: verified by the Standard Webhooks library, the
/// timestamp real time, one id per message (kept across retries), the DESIGN fields, and each
/// user's delivered sequence numbers rising (not consecutive: a superseded message is never
/// sent, and sequences keep rising across a user's deletion and re-creation).
fn check_all(rx: &Receiver) {
    let attempts = rx.attempts();
    let mut ids: HashMap<String, (String, u64)> = HashMap::new();
    for a in &attempts {
        assert!(a.verified.is_ok(), "not verified by standardwebhooks: {a:?}");
        let ts: i64 = a.timestamp.parse().unwrap_or_else(|_| panic!("webhook-timestamp: {a:?}"));
        assert!((ts - a.real_at.timestamp()).abs() <= 60, "webhook-timestamp {ts} is not real time: {a:?}");
        assert_fields(&a.json);
        let key = (a.user().to_owned(), a.seq());
        let prev = ids.entry(a.id.clone()).or_insert_with(|| key.clone());
        assert_eq!(*prev, key, "webhook-id {} used for two messages", a.id);
    }
    let mut by_message: HashMap<(String, u64), BTreeSet<String>> = HashMap::new();
    for a in &attempts {
        by_message.entry((a.user().to_owned(), a.seq())).or_default().insert(a.id.clone());
    }
    for (m, set) in &by_message {
        assert_eq!(set.len(), 1, "message {m:?} was sent under several webhook-ids: {set:?}");
    }
    let mut users: Vec<String> = attempts.iter().map(|a| a.user().to_owned()).collect();
    users.sort();
    users.dedup();
    for u in users {
        let seqs: Vec<u64> = rx.delivered_to(&u).iter().map(Attempt::seq).collect();
        for w in seqs.windows(2) {
            assert!(w[1] > w[0], "{u}'s delivered sequences do not rise: {seqs:?}");
        }
    }
}

/// One delivered message's profile, or "-" for null.
fn profile(a: &Attempt) -> String {
    a.json["profile"].as_str().unwrap_or("-").to_owned()
}

/// What was delivered to `user`: (sequence, profile).
fn summary_of(rx: &Receiver, user: &str) -> Vec<(u64, String)> {
    rx.delivered_to(user).iter().map(|a| (a.seq(), profile(a))).collect()
}

// ---- 1. the message ----

#[tokio::test]
async fn a_switch_is_a_verified_message_with_exactly_the_contract_fields_at_start_and_end() {
    let (app, rx) = setup(&[ALICE]).await;
    let writer = writer_token(&app, ALICE).await;
    // Days ahead: gwsync's clock runs days ahead of real time when it fires.
    let start = minute_ahead(&app, chrono::Duration::days(3));
    let end = start + mins(30);
    let id = create(&app, &writer, "Lunch with Zanzibar Holdings", start, end, json!({})).await;
    wait_upcoming_starts(&app, ALICE, &[(start, "Lunch")]).await;

    advance_to(&app, start - mins(1)).await;
    rx.assert_quiet("nothing before the start").await;

    advance_to(&app, start).await;
    let got = rx.wait_delivered_to(ALICE, 1).await;
    let m = &got[0].json;
    assert_fields(m);
    assert_eq!(m["user"], ALICE, "{m}");
    assert_eq!(m["external_id"], "1042", "{m}");
    assert_eq!(m["profile"], "Lunch", "{m}");
    assert_eq!(time(&m["since"]), start, "{m}");
    assert_eq!(time(&m["until"]), end, "{m}");
    assert_eq!(m["cause"], json!({"event_id": id, "trigger": "lunch"}), "{m}");
    let seq = got[0].seq();

    advance_to(&app, end).await;
    let got = rx.wait_delivered_to(ALICE, 2).await;
    let m = &got[1].json;
    assert_fields(m);
    assert_eq!(m["profile"], Value::Null, "{m}");
    assert!(got[1].seq() > seq, "{m}");
    assert_eq!(time(&m["since"]), end, "{m}");
    assert_eq!(m["until"], Value::Null, "{m}");
    assert_eq!(m["cause"], Value::Null, "{m}");
    assert_eq!(m["user"], ALICE, "{m}");
    assert_eq!(m["external_id"], "1042", "{m}");

    assert_ne!(got[0].id, got[1].id, "webhook-id must be unique per message");
    for a in &got {
        assert!(!a.body.contains("Zanzibar") && !a.body.contains("summary"), "the subject leaked: {}", a.body);
        assert!(a.status < 300 && a.verified.is_ok(), "{a:?}");
        let ts: i64 = a.timestamp.parse().expect("webhook-timestamp is Unix seconds");
        assert!(
            (ts - Utc::now().timestamp()).abs() <= 60,
            "webhook-timestamp {ts} is not real time (gwsync's clock is days ahead): {a:?}"
        );
    }
    rx.assert_quiet("no more messages").await;
    assert_eq!(rx.attempts().len(), 2, "{:#?}", rx.attempts());
    check_all(&rx);
    rx.stop().await;
    app.stop().await;
}

// ---- 2. retries ----

#[tokio::test]
async fn a_failing_receiver_gets_the_newest_message_with_growing_backoff_and_others_are_not_held_up() {
    let (app, rx) = setup(&[ALICE, BOB]).await;
    let alice_writer = writer_token(&app, ALICE).await;
    let bob_writer = writer_token(&app, BOB).await;
    let start = minute_ahead(&app, mins(10));
    // Short, so the end's message is queued while the start's is still being retried: after
    // the third attempt (retries 1-2 s, then 2-4 s apart: at most 6 s in) and no later than
    // the fourth (4-8 s after the third: at least 7 s in), so the fourth carries the end.
    // Google keeps event times to whole seconds.
    let end = start + secs(7);
    create(&app, &alice_writer, "Lunch", start, end, json!({})).await;
    create(&app, &bob_writer, "Lunch", start, end, json!({})).await;
    wait_upcoming_starts(&app, ALICE, &[(start, "Lunch")]).await;
    wait_upcoming_starts(&app, BOB, &[(start, "Lunch")]).await;

    rx.fail_next(ALICE, 3);
    advance_to(&app, start).await;
    // Time runs in small steps so the retry delays can be measured on gwsync's clock; it holds
    // a little past bob's end until bob's two messages are in (if alice's retries held bob up,
    // they would never come: alice's fourth attempt is due 7 s or more after the start).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (alice, bob) = (rx.delivered_to(ALICE).len(), rx.delivered_to(BOB).len());
        if alice >= 1 && bob >= 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {:#?}", rx.attempts());
        let hold = bob < 2 && app.clock.now() >= end + secs(1);
        if !hold {
            app.advance("100ms").await;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    rx.assert_quiet("no more attempts").await;

    let all = rx.attempts();
    let alice: Vec<(usize, &Attempt)> = all.iter().enumerate().filter(|(_, a)| a.user() == ALICE).collect();
    let statuses: Vec<u16> = alice.iter().map(|(_, a)| a.status).collect();
    // The lunch ended while its message was still failing: the end's message supersedes it (it
    // carries the whole state), so the phone system gets the current state, not the history.
    assert_eq!(statuses, [500, 500, 500, 204], "alice's attempts: {alice:#?}");
    let first = alice[0].1;
    assert_eq!(profile(first), "Lunch", "{first:?}");
    for (_, a) in &alice[..3] {
        assert_eq!(a.seq(), first.seq(), "{alice:#?}");
        assert_eq!(a.id, first.id, "a retry changed the webhook-id: {alice:#?}");
        assert_eq!(a.body, first.body, "a retry changed the body: {alice:#?}");
    }
    let second = alice[3].1;
    assert!(second.seq() > first.seq(), "{second:?}");
    assert_eq!(profile(second), "-", "{second:?}");
    assert_eq!(time(&second.json["since"]), end, "{second:?}");
    assert_ne!(second.id, first.id);
    assert_eq!(summary_of(&rx, ALICE), [(second.seq(), "-".into())], "the superseded lunch is never delivered");

    // Backoff: ~1 s, then doubling (jittered up to twice that), on gwsync's clock; the newer
    // message waits out the backoff of the one it superseded.
    let gaps: Vec<f64> = alice[..4].windows(2).map(|w| (w[1].1.clock_at - w[0].1.clock_at).as_seconds_f64()).collect();
    let slack = 0.25;
    assert!(gaps[0] >= 1.0 - slack && gaps[0] < 3.0, "first retry after {gaps:?}");
    assert!(gaps[1] >= 2.0 - slack, "second retry too soon: {gaps:?}");
    assert!(gaps[2] >= 4.0 - slack, "third retry too soon: {gaps:?}");
    assert!(gaps[2] > gaps[0], "backoff does not grow: {gaps:?}");

    // Bob's two messages went through while alice's were still failing.
    let alice_success = alice[3].0;
    let bob: Vec<(usize, &Attempt)> = all.iter().enumerate().filter(|(_, a)| a.user() == BOB).collect();
    assert_eq!(bob.len(), 2, "bob's attempts: {bob:#?}");
    for (i, a) in &bob {
        assert!(a.status < 300, "{a:?}");
        assert!(*i < alice_success, "bob's message waited for alice's retries: {all:#?}");
    }
    assert_eq!(summary_of(&rx, BOB).iter().map(|(_, p)| p.as_str()).collect::<Vec<_>>(), ["Lunch", "-"]);
    check_all(&rx);
    rx.stop().await;
    app.stop().await;
}

// ---- 3. restarts ----

#[tokio::test]
async fn a_restart_mid_event_sends_neither_a_duplicate_nor_the_missed_history() {
    let (mut app, rx) = setup(&[ALICE]).await;
    let writer = writer_token(&app, ALICE).await;
    let s1 = minute_ahead(&app, mins(10));
    let e1 = s1 + mins(30);
    let (s2, e2) = (s1 + mins(120), s1 + mins(150));
    let (s3, e3) = (s1 + mins(180), s1 + mins(240));
    let first = create(&app, &writer, "Lunch", s1, e1, json!({})).await;
    create(&app, &writer, "Meeting with sales", s2, e2, json!({})).await;
    let third = create(&app, &writer, "Late lunch", s3, e3, json!({})).await;
    wait_upcoming_starts(&app, ALICE, &[(s1, "Lunch"), (s2, "Meeting"), (s3, "Lunch")]).await;

    advance_to(&app, s1 + mins(1)).await;
    let got = rx.wait_delivered_to(ALICE, 1).await;
    assert_eq!(profile(&got[0]), "Lunch");
    assert_eq!(got[0].json["cause"]["event_id"], first.as_str(), "{:?}", got[0]);
    let seq = got[0].seq();
    wait_delivered_metric(&app, app.base(), 1).await;

    // Down for five minutes in the middle of the lunch: the lunch was told already.
    app.stop_gwsync().await.expect("clean stop");
    app.advance("5m").await;
    let gw = Instance::launch(&app).await;
    rx.assert_quiet("no duplicate of the lunch after the restart").await;
    advance_to(&app, e1).await;
    let got = rx.wait_delivered_to(ALICE, 2).await;
    assert!(got[1].seq() > seq && profile(&got[1]) == "-", "{got:#?}");
    wait_delivered_metric(&app, &gw.base, 1).await;
    gw.stop().await;

    // Down through the whole meeting and into the late lunch: only the late lunch is told.
    advance_to(&app, s3 + mins(10)).await;
    let gw = Instance::launch(&app).await;
    let got = rx.wait_delivered_to(ALICE, 3).await;
    let m = &got[2].json;
    assert!(got[2].seq() > got[1].seq(), "{m}");
    assert_eq!(m["profile"], "Lunch", "{m}");
    assert_eq!(m["cause"]["event_id"], third.as_str(), "{m}");
    assert_eq!(time(&m["since"]), s3, "{m}");
    assert_eq!(time(&m["until"]), e3, "{m}");
    rx.assert_quiet("only the current state after the restart").await;
    assert_eq!(summary_of(&rx, ALICE).len(), 3, "{:#?}", rx.attempts());
    check_all(&rx);
    gw.stop().await;
    rx.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn gwsync_down_at_the_start_tells_the_running_event_once_when_it_is_back() {
    let (mut app, rx) = setup(&[ALICE]).await;
    let writer = writer_token(&app, ALICE).await;
    let start = minute_ahead(&app, mins(10));
    let end = start + mins(60);
    let id = create(&app, &writer, "Team lunch", start, end, json!({})).await;
    wait_upcoming_starts(&app, ALICE, &[(start, "Lunch")]).await;

    app.stop_gwsync().await.expect("clean stop");
    advance_to(&app, start + mins(10)).await;
    let gw = Instance::launch(&app).await;
    let got = rx.wait_delivered_to(ALICE, 1).await;
    let m = &got[0].json;
    assert_eq!(m["profile"], "Lunch", "{m}");
    assert_eq!(time(&m["since"]), start, "{m}");
    assert_eq!(time(&m["until"]), end, "{m}");
    assert_eq!(m["cause"]["event_id"], id.as_str(), "{m}");
    rx.assert_quiet("the current state exactly once").await;
    assert_eq!(rx.attempts().len(), 1, "{:#?}", rx.attempts());

    advance_to(&app, end).await;
    let got = rx.wait_delivered_to(ALICE, 2).await;
    assert!(got[1].seq() > got[0].seq() && profile(&got[1]) == "-", "{got:#?}");
    rx.assert_quiet("no more messages").await;
    assert_eq!(rx.attempts().len(), 2, "{:#?}", rx.attempts());
    check_all(&rx);
    gw.stop().await;
    rx.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_message_still_failing_at_a_restart_is_delivered_after_it_once_with_the_same_id() {
    let (mut app, rx) = setup(&[ALICE]).await;
    let writer = writer_token(&app, ALICE).await;
    let start = minute_ahead(&app, mins(10));
    create(&app, &writer, "Lunch", start, start + mins(60), json!({})).await;
    wait_upcoming_starts(&app, ALICE, &[(start, "Lunch")]).await;

    rx.fail_next(ALICE, u32::MAX);
    advance_to(&app, start).await;
    eventually("two failed attempts", async || {
        let n = rx.attempts().len();
        if n >= 2 { Ok(()) } else { Err(format!("{n} attempts")) }
    })
    .await;
    app.stop_gwsync().await.expect("clean stop");
    let failed = rx.attempts();
    rx.fail_next(ALICE, 0);

    let gw = Instance::launch(&app).await;
    app.advance("10s").await;
    let got = rx.wait_delivered_to(ALICE, 1).await;
    assert_eq!(got[0].id, failed[0].id, "the retry after the restart changed the webhook-id: {got:#?} {failed:#?}");
    assert_eq!(got[0].body, failed[0].body, "the retry after the restart changed the body");
    assert_eq!(profile(&got[0]), "Lunch");
    rx.assert_quiet("delivered once").await;
    assert_eq!(rx.delivered_to(ALICE).len(), 1, "{:#?}", rx.attempts());
    assert!(rx.attempts().iter().all(|a| a.id == failed[0].id), "{:#?}", rx.attempts());
    check_all(&rx);
    gw.stop().await;
    rx.stop().await;
    app.stop().await;
}

// ---- 4. edits ----

#[tokio::test]
async fn edits_before_the_start_change_what_fires() {
    let (app, rx) = setup(&[ALICE]).await;
    let writer = writer_token(&app, ALICE).await;
    let s = minute_ahead(&app, mins(10));
    let moved = create(&app, &writer, "Lunch", s, s + mins(30), json!({})).await;
    let renamed = create(&app, &writer, "Team lunch", s + mins(60), s + mins(90), json!({})).await;
    let deleted = create(&app, &writer, "Lunch break", s + mins(120), s + mins(150), json!({})).await;
    wait_upcoming_starts(&app, ALICE, &[(s, "Lunch"), (s + mins(60), "Lunch"), (s + mins(120), "Lunch")]).await;

    let new_start = s + mins(240);
    patch(
        &app,
        &writer,
        &moved,
        json!({"start": {"dateTime": rfc(new_start)}, "end": {"dateTime": rfc(new_start + mins(30))}}),
    )
    .await;
    patch(&app, &writer, &renamed, json!({"summary": "Team sync"})).await;
    delete(&app, &writer, &deleted).await;
    wait_upcoming_starts(&app, ALICE, &[(new_start, "Lunch")]).await;

    for old in [s, s + mins(60), s + mins(120)] {
        advance_to(&app, old + secs(1)).await;
        rx.assert_quiet("nothing at an old start").await;
    }
    advance_to(&app, new_start).await;
    let got = rx.wait_delivered_to(ALICE, 1).await;
    let m = &got[0].json;
    assert_eq!(m["profile"], "Lunch", "{m}");
    assert_eq!(time(&m["since"]), new_start, "{m}");
    assert_eq!(time(&m["until"]), new_start + mins(30), "{m}");
    assert_eq!(m["cause"]["event_id"], moved.as_str(), "{m}");
    rx.assert_quiet("one message").await;
    assert_eq!(rx.attempts().len(), 1, "{:#?}", rx.attempts());
    check_all(&rx);
    rx.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn an_event_shortened_while_it_runs_ends_at_its_new_end() {
    let (app, rx) = setup(&[ALICE]).await;
    let writer = writer_token(&app, ALICE).await;
    let s = minute_ahead(&app, mins(10));
    let id = create(&app, &writer, "Lunch", s, s + mins(60), json!({})).await;
    wait_upcoming_starts(&app, ALICE, &[(s, "Lunch")]).await;
    advance_to(&app, s + mins(1)).await;
    let got = rx.wait_delivered_to(ALICE, 1).await;
    assert_eq!(time(&got[0].json["until"]), s + mins(60), "{:?}", got[0]);

    let new_end = s + mins(20);
    patch(&app, &writer, &id, json!({"end": {"dateTime": rfc(new_end)}})).await;
    wait_presence(&app, ALICE, "the new end", |p| p["until"].is_string() && time(&p["until"]) == new_end).await;
    // The phone system hears the new end of the running state (same profile, new `until`),
    // but no end yet.
    let got = rx.wait_delivered_to(ALICE, 2).await;
    assert_eq!(profile(&got[1]), "Lunch", "ended before the new end: {:?}", got[1]);
    assert_eq!(time(&got[1].json["until"]), new_end, "{:?}", got[1]);
    rx.assert_quiet("no end before the new end").await;
    let before = rx.delivered_to(ALICE).len();
    advance_to(&app, new_end).await;
    let got = rx.wait_delivered_to(ALICE, before + 1).await;
    let last = got.last().expect("a message");
    assert_eq!(profile(last), "-", "{last:?}");
    assert_eq!(time(&last.json["since"]), new_end, "{last:?}");
    rx.assert_quiet("nothing at the old end").await;
    advance_to(&app, s + mins(61)).await;
    rx.assert_quiet("nothing at the old end").await;
    assert_eq!(rx.delivered_to(ALICE).len(), before + 1, "{:#?}", rx.attempts());
    check_all(&rx);
    rx.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn an_event_deleted_while_it_runs_switches_back_at_once() {
    let (app, rx) = setup(&[ALICE]).await;
    let writer = writer_token(&app, ALICE).await;
    let s = minute_ahead(&app, mins(10));
    let id = create(&app, &writer, "Lunch", s, s + mins(60), json!({})).await;
    wait_upcoming_starts(&app, ALICE, &[(s, "Lunch")]).await;
    advance_to(&app, s + mins(1)).await;
    let got = rx.wait_delivered_to(ALICE, 1).await;
    assert_eq!(profile(&got[0]), "Lunch");

    // No clock movement: the sync after Google's notification is what ends it.
    delete(&app, &writer, &id).await;
    let got = rx.wait_delivered_to(ALICE, 2).await;
    assert!(got[1].seq() > got[0].seq() && profile(&got[1]) == "-", "{got:#?}");
    assert_eq!(got[1].json["cause"], Value::Null, "{:?}", got[1]);
    wait_presence(&app, ALICE, "the default profile", |p| p["profile"].is_null()).await;
    advance_to(&app, s + mins(61)).await;
    rx.assert_quiet("nothing at the deleted event's end").await;
    assert_eq!(rx.attempts().len(), 2, "{:#?}", rx.attempts());
    check_all(&rx);
    rx.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn an_event_renamed_while_it_runs_switches_to_the_other_profile() {
    let (app, rx) = setup(&[ALICE]).await;
    let writer = writer_token(&app, ALICE).await;
    let s = minute_ahead(&app, mins(10));
    let e = s + mins(60);
    let id = create(&app, &writer, "Lunch", s, e, json!({})).await;
    wait_upcoming_starts(&app, ALICE, &[(s, "Lunch")]).await;
    advance_to(&app, s + mins(1)).await;
    let got = rx.wait_delivered_to(ALICE, 1).await;
    assert_eq!(profile(&got[0]), "Lunch");

    patch(&app, &writer, &id, json!({"summary": "Meeting with the board"})).await;
    let got = rx.wait_delivered_to(ALICE, 2).await;
    let m = &got[1].json;
    assert!(got[1].seq() > got[0].seq(), "{m}");
    assert_eq!(m["profile"], "Meeting", "{m}");
    assert_eq!(m["cause"], json!({"event_id": id, "trigger": "meeting"}), "{m}");
    assert_eq!(time(&m["until"]), e, "{m}");
    assert!(!got[1].body.contains("board"), "the subject leaked: {}", got[1].body);

    advance_to(&app, e).await;
    let got = rx.wait_delivered_to(ALICE, 3).await;
    assert_eq!(profile(&got[2]), "-", "{got:#?}");
    rx.assert_quiet("no more messages").await;
    assert_eq!(rx.attempts().len(), 3, "{:#?}", rx.attempts());
    check_all(&rx);
    rx.stop().await;
    app.stop().await;
}

// ---- 5. recurring ----

#[tokio::test]
async fn a_daily_standup_fires_every_day_except_the_cancelled_one() {
    let (app, rx) = setup(&[ALICE]).await;
    let writer = writer_token(&app, ALICE).await;
    let zone = chrono_tz::Europe::Stockholm;
    let first_day = app.clock.now().with_timezone(&zone).date_naive() + chrono::Days::new(1);
    let nine = NaiveTime::from_hms_opt(9, 0, 0).expect("09:00");
    let local = |day: u64| (first_day + chrono::Days::new(day)).and_time(nine);
    let at = |day: u64| zone.from_local_datetime(&local(day)).single().expect("09:00 exists").with_timezone(&Utc);
    let fmt = |t: chrono::NaiveDateTime| t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let r = google(
        &app,
        "POST",
        "events",
        &writer,
        Some(json!({
            "summary": "Daily standup",
            "start": {"dateTime": fmt(local(0)), "timeZone": "Europe/Stockholm"},
            "end": {"dateTime": fmt(local(0) + chrono::Duration::minutes(15)), "timeZone": "Europe/Stockholm"},
            "recurrence": ["RRULE:FREQ=DAILY"],
        })),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let id = r.body["id"].as_str().expect("id").to_owned();
    let instance = |day: u64| format!("{id}_{}", at(day).format("%Y%m%dT%H%M%SZ"));
    wait_presence(&app, ALICE, "the series", |p| {
        upcoming(p).iter().take(6).filter(|(_, p)| p == "Meeting").count() == 3
    })
    .await;
    delete(&app, &writer, &instance(1)).await;
    wait_presence(&app, ALICE, "the cancelled instance gone", |p| {
        let starts: Vec<DateTime<Utc>> =
            upcoming(p).into_iter().filter(|(_, p)| p == "Meeting").map(|(t, _)| t).take(2).collect();
        starts == [at(0), at(2)]
    })
    .await;

    // Day 1: on at 09:00, off at 09:15.
    advance_to(&app, at(0)).await;
    let got = rx.wait_delivered_to(ALICE, 1).await;
    let m = &got[0].json;
    assert_eq!(m["profile"], "Meeting", "{m}");
    assert_eq!(time(&m["since"]), at(0), "{m}");
    assert_eq!(time(&m["until"]), at(0) + mins(15), "{m}");
    assert_eq!(m["cause"], json!({"event_id": instance(0), "trigger": "standup"}), "{m}");
    advance_to(&app, at(0) + mins(15)).await;
    let got = rx.wait_delivered_to(ALICE, 2).await;
    assert_eq!(profile(&got[1]), "-", "{got:#?}");

    // Day 2: cancelled.
    advance_to(&app, at(1) + secs(1)).await;
    rx.assert_quiet("the cancelled stand-up does not fire").await;
    advance_to(&app, at(1) + mins(15) + secs(1)).await;
    rx.assert_quiet("the cancelled stand-up does not end").await;
    assert_eq!(rx.attempts().len(), 2, "{:#?}", rx.attempts());

    // Day 3: on again.
    advance_to(&app, at(2)).await;
    let got = rx.wait_delivered_to(ALICE, 3).await;
    let m = &got[2].json;
    assert_eq!(m["profile"], "Meeting", "{m}");
    assert_eq!(time(&m["since"]), at(2), "{m}");
    assert_eq!(m["cause"]["event_id"], instance(2).as_str(), "{m}");
    advance_to(&app, at(2) + mins(15)).await;
    let got = rx.wait_delivered_to(ALICE, 4).await;
    assert_eq!(profile(&got[3]), "-", "{got:#?}");
    rx.assert_quiet("no more messages").await;
    assert_eq!(rx.attempts().len(), 4, "{:#?}", rx.attempts());
    check_all(&rx);
    rx.stop().await;
    app.stop().await;
}

// ---- 6. private events ----

#[tokio::test]
async fn a_private_event_switches_the_profile_without_its_subject_leaving_gwsync() {
    let (app, rx) = setup(&[ALICE]).await;
    let writer = writer_token(&app, ALICE).await;
    let s = minute_ahead(&app, mins(10));
    let e = s + mins(45);
    let subject = "Lunch with Zanzibar recruiter";
    let id = create(&app, &writer, subject, s, e, json!({"visibility": "private"})).await;
    let p = wait_upcoming_starts(&app, ALICE, &[(s, "Lunch")]).await;
    assert!(!p.to_string().contains("Zanzibar") && !p.to_string().contains("summary"), "{p}");

    advance_to(&app, s).await;
    let got = rx.wait_delivered_to(ALICE, 1).await;
    let m = &got[0].json;
    assert_eq!(m["profile"], "Lunch", "{m}");
    assert_eq!(m["cause"], json!({"event_id": id, "trigger": "lunch"}), "{m}");
    assert!(!got[0].body.contains("Zanzibar") && !got[0].body.contains("summary"), "{}", got[0].body);
    let p = presence(&app, ALICE).await;
    assert_eq!(p.body["profile"], "Lunch", "{p:?}");
    assert!(
        !p.text.contains("Zanzibar") && !p.text.contains("summary"),
        "the presence API shows the subject: {}",
        p.text
    );
    advance_to(&app, e).await;
    let got = rx.wait_delivered_to(ALICE, 2).await;
    assert_eq!(profile(&got[1]), "-");
    assert!(rx.attempts().iter().all(|a| !a.body.contains("Zanzibar")));
    check_all(&rx);
    rx.stop().await;
    app.stop().await;
}

// ---- 7. the presence API ----

#[tokio::test]
async fn the_presence_api_shows_the_state_its_cause_and_the_switches_ahead_in_order() {
    let (app, rx) = setup(&[ALICE]).await;
    let writer = writer_token(&app, ALICE).await;
    let s = minute_ahead(&app, mins(10));
    let lunch = create(&app, &writer, "Lunch", s, s + mins(30), json!({})).await;
    let meeting = create(&app, &writer, "Customer meeting", s + mins(30), s + mins(60), json!({})).await;
    let late = create(&app, &writer, "Late lunch", s + mins(120), s + mins(180), json!({})).await;
    let p =
        wait_upcoming_starts(&app, ALICE, &[(s, "Lunch"), (s + mins(30), "Meeting"), (s + mins(120), "Lunch")]).await;

    assert_eq!(p["profile"], Value::Null, "{p}");
    assert_eq!(p["cause"], Value::Null, "{p}");
    assert_eq!(time(&p["until"]), s, "{p}");
    let want = json!([
        {"at": s, "profile": "Lunch", "until": s + mins(30), "cause": {"event_id": lunch, "trigger": "lunch"}},
        {"at": s + mins(30), "profile": "Meeting", "until": s + mins(60), "cause": {"event_id": meeting, "trigger": "meeting"}},
        {"at": s + mins(60), "profile": null, "until": s + mins(120), "cause": null},
        {"at": s + mins(120), "profile": "Lunch", "until": s + mins(180), "cause": {"event_id": late, "trigger": "lunch"}},
        {"at": s + mins(180), "profile": null, "until": null, "cause": null},
    ]);
    assert_eq!(normalise(&p["upcoming"]), normalise(&want), "{p}");

    advance_to(&app, s + mins(5)).await;
    let p = presence(&app, ALICE).await.body;
    assert_eq!(p["profile"], "Lunch", "{p}");
    assert_eq!(time(&p["since"]), s, "{p}");
    assert_eq!(time(&p["until"]), s + mins(30), "{p}");
    assert_eq!(p["cause"], json!({"event_id": lunch, "trigger": "lunch"}), "{p}");
    assert_eq!(normalise(&p["upcoming"]), normalise(&json!(want.as_array().unwrap()[1..])), "{p}");
    // Each switch is heard before the clock moves on: the outbox sends a user's newest state
    // only, so one still queued when the next falls due is rightly never sent.
    rx.wait_delivered_to(ALICE, 1).await;

    advance_to(&app, s + mins(35)).await;
    let p = presence(&app, ALICE).await.body;
    assert_eq!(p["profile"], "Meeting", "{p}");
    assert_eq!(time(&p["since"]), s + mins(30), "{p}");
    assert_eq!(p["cause"], json!({"event_id": meeting, "trigger": "meeting"}), "{p}");
    assert_eq!(upcoming(&p).first().map(|(t, _)| *t), Some(s + mins(60)), "{p}");
    rx.wait_delivered_to(ALICE, 2).await;

    advance_to(&app, s + mins(65)).await;
    let p = presence(&app, ALICE).await.body;
    assert_eq!(p["profile"], Value::Null, "{p}");
    assert_eq!(time(&p["since"]), s + mins(60), "{p}");
    assert_eq!(time(&p["until"]), s + mins(120), "{p}");
    assert_eq!(p["cause"], Value::Null, "{p}");
    // The phone system heard the same story.
    let got = rx.wait_delivered_to(ALICE, 3).await;
    assert_eq!(got.iter().map(profile).collect::<Vec<_>>(), ["Lunch", "Meeting", "-"]);
    check_all(&rx);
    rx.stop().await;
    app.stop().await;
}

/// Times in a JSON tree parsed and written back in one form, for comparing.
fn normalise(v: &Value) -> Value {
    match v {
        Value::String(s) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => Value::String(rfc(t.with_timezone(&Utc))),
            Err(_) => v.clone(),
        },
        Value::Array(a) => Value::Array(a.iter().map(normalise).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), normalise(v))).collect()),
        _ => v.clone(),
    }
}

// ---- 8. a tenant without a phone system ----

#[tokio::test]
async fn a_phone_system_added_later_gets_each_users_current_state_once() {
    let app = TestApp::start().await;
    let rx = Receiver::start(&secret(), app.clock.clone()).await;
    app.setup_tenant().await;
    add_user(&app, ALICE).await;
    add_user(&app, BOB).await;
    let s = minute_ahead(&app, mins(10));
    let e = s + mins(60);
    let lunch = create(&app, &writer_token(&app, ALICE).await, "Lunch", s, e, json!({})).await;
    let meeting = create(&app, &writer_token(&app, BOB).await, "Project meeting", s, e, json!({})).await;
    wait_upcoming_starts(&app, ALICE, &[(s, "Lunch")]).await;
    wait_upcoming_starts(&app, BOB, &[(s, "Meeting")]).await;

    advance_to(&app, s + mins(1)).await;
    let p = wait_presence(&app, ALICE, "alice at lunch", |p| p["profile"] == "Lunch").await;
    assert_eq!(p["cause"]["event_id"], lunch.as_str(), "{p}");
    wait_presence(&app, BOB, "bob in a meeting", |p| p["profile"] == "Meeting").await;
    rx.assert_quiet("no phone system, no deliveries").await;
    assert_eq!(rx.attempts().len(), 0, "{:#?}", rx.attempts());

    let r = connect_phone_system(&app, &rx).await;
    assert_eq!(r.status, 200, "{r:?}");
    let alice = rx.wait_delivered_to(ALICE, 1).await;
    let bob = rx.wait_delivered_to(BOB, 1).await;
    let (a, b) = (&alice[0].json, &bob[0].json);
    assert_eq!(a["profile"], "Lunch", "{a}");
    assert_eq!(a["cause"]["event_id"], lunch.as_str(), "{a}");
    assert_eq!((time(&a["since"]), time(&a["until"])), (s, e), "{a}");
    assert_eq!(b["profile"], "Meeting", "{b}");
    assert_eq!(b["cause"]["event_id"], meeting.as_str(), "{b}");
    assert_eq!(b["external_id"], "1043", "{b}");

    // Saving the tenant again tells nobody anything new.
    let r = connect_phone_system(&app, &rx).await;
    assert_eq!(r.status, 200, "{r:?}");
    rx.assert_quiet("the current state once").await;
    assert_eq!(rx.attempts().len(), 2, "{:#?}", rx.attempts());

    advance_to(&app, e).await;
    rx.wait_delivered_to(ALICE, 2).await;
    rx.wait_delivered_to(BOB, 2).await;
    assert_eq!(summary_of(&rx, ALICE).iter().map(|(_, p)| p.as_str()).collect::<Vec<_>>(), ["Lunch", "-"]);
    assert_eq!(summary_of(&rx, BOB).iter().map(|(_, p)| p.as_str()).collect::<Vec<_>>(), ["Meeting", "-"]);
    rx.assert_quiet("no more messages").await;
    assert_eq!(rx.attempts().len(), 4, "{:#?}", rx.attempts());
    check_all(&rx);
    rx.stop().await;
    app.stop().await;
}

// ---- 9. a company deleted ----

#[tokio::test]
async fn a_company_deleted_while_a_switch_is_on_its_way_and_created_again_inherits_nothing() {
    // Long enough for the deletion and the new company to come while the attempt hangs.
    let app = TestApp::start_with(|c| c.presence.delivery_timeout = Duration::from_secs(3)).await;
    let rx = Receiver::start(&secret(), app.clock.clone()).await;
    app.setup_tenant().await;
    let r = connect_phone_system(&app, &rx).await;
    assert_eq!(r.status, 200, "{r:?}");
    add_user(&app, ALICE).await;
    let s = minute_ahead(&app, mins(10));
    create(&app, &writer_token(&app, ALICE).await, "Lunch", s, s + mins(30), json!({})).await;
    wait_upcoming_starts(&app, ALICE, &[(s, "Lunch")]).await;
    advance_to(&app, s).await;
    rx.wait_delivered_to(ALICE, 1).await;
    let deliveries = format!("/api/v1/tenants/{TENANT}/phone-system/deliveries");
    let listed = app.api("GET", &deliveries, None).await;
    assert_eq!(listed.body["deliveries"].as_array().map(Vec::len), Some(1), "{listed:?}");

    // A phone system that takes the connection and never answers: Alice's state goes there
    // (a new URL is told everyone's), and hangs until the delivery timeout.
    let hang = common::receiver::HangingServer::start().await;
    let r = app
        .api(
            "PUT",
            &format!("/api/v1/tenants/{TENANT}"),
            Some(json!({"domain": DOMAIN, "directory_admin": IT, "phone_system": {"url": hang.url("/phone"), "secret": secret()}})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    eventually("Alice's switch to be on its way", async || {
        if hang.open() == 1 { Ok(()) } else { Err(format!("{} open", hang.open())) }
    })
    .await;

    // Meanwhile the company is deleted and created again under its id.
    let r = app.api("DELETE", &format!("/api/v1/tenants/{TENANT}"), None).await;
    assert_eq!(r.status, 204, "{r:?}");
    app.setup_tenant().await;
    let r = connect_phone_system(&app, &rx).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(hang.open(), 1, "the old company's attempt ended before the new company came: this proves nothing");
    eventually("the old company's attempt to time out", async || {
        if hang.open() == 0 { Ok(()) } else { Err(format!("{} open", hang.open())) }
    })
    .await;
    // Its timeout is not the new company's failure, and neither its deliveries nor that
    // attempt are in the new company's list.
    never_within("the new company to show the old one's phone system", Duration::from_secs(1), async || {
        let r = app.api("GET", &format!("/api/v1/tenants/{TENANT}"), None).await;
        let phone = &r.body["status"]["phone_system"];
        let listed = app.api("GET", &deliveries, None).await;
        let empty = listed.body["deliveries"].as_array().is_some_and(Vec::is_empty);
        if phone["state"] == "ok" && phone["last_error"].is_null() && empty {
            None
        } else {
            Some(format!("{phone} {}", listed.body))
        }
    })
    .await;
    hang.stop();
    rx.stop().await;
    app.stop().await;
}

// ---- the phone system ----

#[tokio::test]
async fn a_phone_system_moved_to_a_new_address_is_told_the_current_state() {
    let app = TestApp::start().await;
    let first = Receiver::start(&secret(), app.clock.clone()).await;
    let second = Receiver::start(&secret(), app.clock.clone()).await;
    app.setup_tenant().await;
    add_user(&app, ALICE).await;
    let r = connect_phone_system(&app, &first).await;
    assert_eq!(r.status, 200, "{r:?}");
    let s = minute_ahead(&app, mins(10));
    let e = s + mins(60);
    create(&app, &writer_token(&app, ALICE).await, "Lunch", s, e, json!({})).await;
    wait_upcoming_starts(&app, ALICE, &[(s, "Lunch")]).await;
    advance_to(&app, s + mins(1)).await;
    let told = first.wait_delivered_to(ALICE, 1).await;
    assert_eq!(told[0].json["profile"], "Lunch");

    // The switchboard moves: the new address knows nothing yet, so it hears the state now.
    let r = connect_phone_system(&app, &second).await;
    assert_eq!(r.status, 200, "{r:?}");
    let heard = second.wait_delivered_to(ALICE, 1).await;
    assert_eq!(heard[0].json["profile"], "Lunch", "{:?}", heard[0].json);
    assert!(
        heard[0].json["sequence"].as_u64() > told[0].json["sequence"].as_u64(),
        "the sequence keeps rising across the move: {:?} after {:?}",
        heard[0].json,
        told[0].json
    );
    first.assert_quiet("the old address hears nothing more").await;
    assert_eq!(first.attempts().len(), 1);
    check_all(&second);
    first.stop().await;
    second.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_test_message_to_a_phone_system_that_refuses_or_hangs_says_which() {
    let app = TestApp::start_with(|c| c.presence.delivery_timeout = Duration::from_secs(1)).await;
    app.setup_tenant().await;
    let point_at = async |url: String| {
        let body = json!({"domain": DOMAIN, "directory_admin": IT, "phone_system": {"url": url, "secret": secret()}});
        let r = app.api("PUT", &format!("/api/v1/tenants/{TENANT}"), Some(body)).await;
        assert_eq!(r.status, 200, "{r:?}");
        let r = app.api("POST", &format!("/api/v1/tenants/{TENANT}/phone-system/test"), None).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body["delivered"], false, "{r:?}");
        r.body["error"].as_str().unwrap_or_default().to_owned()
    };
    // Nothing listens on this port: the connection is refused.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let refused = point_at(format!("http://127.0.0.1:{closed}/phone")).await;
    assert_eq!(refused, "could not connect to the phone system: connection refused");
    // Takes the connection and never answers: the time it had.
    let hang = common::receiver::HangingServer::start().await;
    let hung = point_at(hang.url("/phone")).await;
    assert_eq!(hung, "the phone system did not answer within 1s");
    hang.stop();
    app.stop().await;
}
