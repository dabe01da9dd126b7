//! Calendar status events end to end (DESIGN §4 "Calendar status events", NOTES §2.8): events of
//! Google's types written through fake-google, gwsync syncing them, and what the presence API
//! and the user's status then say. Out of office and focus time switch to the profile the user's
//! (or the tenant's) `status_events` names, whatever their title; unmapped ones go through trigger
//! words; working locations, birthdays and Gmail's events never switch; gwsync asks Google only
//! for the types it uses, on every list and watch, and syncs a calendar from an older gwsync in
//! full once.
mod common;
use common::*;

use chrono::{DateTime, Datelike, Duration, DurationRound, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::{Value, json};

const SE: Tz = chrono_tz::Europe::Stockholm;
const SE_NAME: &str = "Europe/Stockholm";
/// What gwsync sends as `eventTypes`, in the order it sends them.
const ASKED_FOR: [&str; 3] = ["default", "focusTime", "outOfOffice"];

// ---- time ----

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap_or_else(|e| panic!("not a time: {v}: {e}"))
        .with_timezone(&Utc)
}

/// gwsync's clock `ahead` from now, on a whole minute.
fn minute_ahead(app: &TestApp, ahead: Duration) -> DateTime<Utc> {
    (app.clock.now() + ahead).duration_trunc(Duration::minutes(1)).expect("truncate")
}

/// Today in Stockholm, on gwsync's clock.
fn today(app: &TestApp) -> NaiveDate {
    app.clock.now().with_timezone(&SE).date_naive()
}

/// A Stockholm wall-clock time on `day` as an instant.
fn se(day: NaiveDate, h: u32, m: u32) -> DateTime<Utc> {
    SE.with_ymd_and_hms(day.year(), day.month(), day.day(), h, m, 0).single().expect("unambiguous").with_timezone(&Utc)
}

/// A local Stockholm time as Google's `EventDateTime` with its zone.
fn local(day: NaiveDate, h: u32, m: u32) -> Value {
    json!({"dateTime": format!("{}T{h:02}:{m:02}:00", day.format("%Y-%m-%d")), "timeZone": SE_NAME})
}

// ---- Google's side: events as Google Calendar makes them ----

fn timed(summary: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> Value {
    json!({"summary": summary, "start": {"dateTime": rfc(start)}, "end": {"dateTime": rfc(end)}})
}

fn with(mut body: Value, extra: Value) -> Value {
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            body[k] = v;
        }
    }
    body
}

/// An out-of-office event: Google stores an all-day one as a timed span from local midnight.
fn out_of_office(summary: &str, start: Value, end: Value) -> Value {
    json!({"summary": summary, "eventType": "outOfOffice", "start": start, "end": end,
           "outOfOfficeProperties": {"autoDeclineMode": "declineOnlyNewConflictingInvitations", "declineMessage": "Borta"}})
}

fn focus_time(summary: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> Value {
    with(
        timed(summary, start, end),
        json!({"eventType": "focusTime", "focusTimeProperties": {"chatStatus": "doNotDisturb", "autoDeclineMode": "declineNone"}}),
    )
}

/// Inserts an event into the user's primary calendar through the fake's Calendar API.
async fn insert(app: &TestApp, token: &str, body: Value) -> String {
    let r = google(app, "POST", "events", token, Some(body)).await;
    assert_eq!(r.status, 200, "insert: {r:?}");
    r.body["id"].as_str().expect("id").to_owned()
}

// ---- gwsync's side ----

fn profile(name: &str, triggers: &[&str]) -> Value {
    json!({"name": name, "triggers": triggers})
}

async fn add_user(app: &TestApp, user: &str, body: Value) {
    let r = app.put_user(user, body).await;
    assert_eq!(r.status, 201, "{r:?}");
}

async fn presence(app: &TestApp, user: &str) -> Value {
    let r = app.api("GET", &format!("/api/v1/tenants/{TENANT}/users/{user}/presence"), None).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body
}

/// A switch the presence API shows coming: when, to which profile, until when, and why.
#[derive(Debug, Clone, PartialEq)]
struct Switch {
    at: DateTime<Utc>,
    profile: Option<String>,
    until: Option<DateTime<Utc>>,
    cause: Value,
}

fn switch(at: DateTime<Utc>, profile: &str, until: DateTime<Utc>, cause: Value) -> Switch {
    Switch { at, profile: Some(profile.into()), until: Some(until), cause }
}

fn back(at: DateTime<Utc>, until: Option<DateTime<Utc>>) -> Switch {
    Switch { at, profile: None, until, cause: Value::Null }
}

fn upcoming(p: &Value) -> Vec<Switch> {
    p["upcoming"]
        .as_array()
        .expect("upcoming")
        .iter()
        .map(|t| Switch {
            at: time(&t["at"]),
            profile: t["profile"].as_str().map(str::to_owned),
            until: (!t["until"].is_null()).then(|| time(&t["until"])),
            cause: t["cause"].clone(),
        })
        .collect()
}

/// Waits until the presence API shows `n` profile switches coming (starts of runs).
async fn wait_for_switches(app: &TestApp, user: &str, n: usize) -> Vec<Switch> {
    eventually(&format!("{n} switches ahead for {user}"), async || {
        let p = presence(app, user).await;
        let all = upcoming(&p);
        if all.iter().filter(|s| s.profile.is_some()).count() >= n { Ok(all) } else { Err(p.to_string()) }
    })
    .await
}

/// The cause of a status event the user's mapping switches.
fn status_cause(event_id: &str, event_type: &str) -> Value {
    json!({"event_id": event_id, "event_type": event_type, "trigger": null})
}

/// The cause of an event whose summary matched a trigger (`event_type` left out for `default`).
fn trigger_cause(event_id: &str, event_type: Option<&str>, trigger: &str) -> Value {
    match event_type {
        Some(t) => json!({"event_id": event_id, "event_type": t, "trigger": trigger}),
        None => json!({"event_id": event_id, "trigger": trigger}),
    }
}

/// The values of `eventTypes` in a logged request's query, in order.
fn event_types_of(request: &Value) -> Vec<String> {
    let query = request["query"].as_str().unwrap_or_default();
    url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "eventTypes")
        .map(|(_, v)| v.into_owned())
        .collect()
}

fn has_param(request: &Value, name: &str) -> bool {
    let query = request["query"].as_str().unwrap_or_default();
    url::form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k == name)
}

async fn setup() -> TestApp {
    let app = TestApp::start().await;
    app.setup_tenant().await;
    app
}

// =============================================================================================

#[tokio::test]
async fn out_of_office_timed_all_day_multi_day_and_recurring_switches_to_the_mapped_profile() {
    let app = setup().await;
    add_user(
        &app,
        ALICE,
        json!({"profiles": [profile("Semester", &["semester"]), profile("Lunch", &["lunch"])],
               "status_events": {"out_of_office": "Semester"}}),
    )
    .await;
    let writer = writer_token(&app, ALICE).await;
    let d = today(&app);
    let (t0, t1) = (minute_ahead(&app, Duration::minutes(10)), minute_ahead(&app, Duration::minutes(40)));
    // Titles no trigger matches ("Borta" is Swedish for away), or Google's default title.
    let timed_id =
        insert(&app, &writer, out_of_office("Borta", json!({"dateTime": rfc(t0)}), json!({"dateTime": rfc(t1)}))).await;
    // Days apart, so no two runs meet whatever the hour the test runs at.
    let day = d + Duration::days(2);
    let all_day_id =
        insert(&app, &writer, out_of_office("Out of office", local(day, 0, 0), local(day + Duration::days(1), 0, 0)))
            .await;
    let (first, last) = (d + Duration::days(4), d + Duration::days(7));
    let multi_id =
        insert(&app, &writer, out_of_office("Tandläkare och ledig", local(first, 0, 0), local(last, 0, 0))).await;
    let series_day = d + Duration::days(9);
    let series = with(
        out_of_office("Föräldraledig förmiddag", local(series_day, 8, 0), local(series_day, 12, 0)),
        json!({"recurrence": ["RRULE:FREQ=DAILY;COUNT=2"]}),
    );
    let series_id = insert(&app, &writer, series).await;
    let instance = |day: NaiveDate| format!("{series_id}_{}", se(day, 8, 0).format("%Y%m%dT%H%M%SZ"));
    let next_day = series_day + Duration::days(1);

    let got = wait_for_switches(&app, ALICE, 5).await;
    let ooo = |id: &str| status_cause(id, "outOfOffice");
    assert_eq!(
        got,
        [
            switch(t0, "Semester", t1, ooo(&timed_id)),
            back(t1, Some(se(day, 0, 0))),
            switch(se(day, 0, 0), "Semester", se(day + Duration::days(1), 0, 0), ooo(&all_day_id)),
            back(se(day + Duration::days(1), 0, 0), Some(se(first, 0, 0))),
            switch(se(first, 0, 0), "Semester", se(last, 0, 0), ooo(&multi_id)),
            back(se(last, 0, 0), Some(se(series_day, 8, 0))),
            switch(se(series_day, 8, 0), "Semester", se(series_day, 12, 0), ooo(&instance(series_day))),
            back(se(series_day, 12, 0), Some(se(next_day, 8, 0))),
            switch(se(next_day, 8, 0), "Semester", se(next_day, 12, 0), ooo(&instance(next_day))),
            back(se(next_day, 12, 0), None),
        ]
    );

    // During the timed one, the presence API says so, with the event type as the cause.
    let ms = (t0 - app.clock.now()).num_milliseconds() + 1000;
    app.advance(&format!("{ms}ms")).await;
    let now = presence(&app, ALICE).await;
    assert_eq!(now["profile"], "Semester", "{now}");
    assert_eq!((time(&now["since"]), time(&now["until"])), (t0, t1), "{now}");
    assert_eq!(now["cause"], json!({"event_id": timed_id, "event_type": "outOfOffice", "trigger": null}));
    app.stop().await;
}

#[tokio::test]
async fn focus_time_switches_to_its_profile_and_unmapped_status_events_go_through_triggers() {
    let app = setup().await;
    let profiles = json!([profile("Semester", &["semester"]), profile("Stör ej", &[]), profile("Lunch", &["lunch"])]);
    add_user(&app, ALICE, json!({"profiles": profiles, "status_events": {"focus_time": "stör ej"}})).await;
    add_user(&app, BOB, json!({"profiles": profiles})).await;
    let (t0, t1) = (minute_ahead(&app, Duration::minutes(30)), minute_ahead(&app, Duration::minutes(90)));
    let (t2, t3) = (minute_ahead(&app, Duration::hours(3)), minute_ahead(&app, Duration::hours(5)));

    let alice = writer_token(&app, ALICE).await;
    let deep = insert(&app, &alice, focus_time("Deep work", t0, t1)).await;
    // Alice maps focus time only: her out of office goes through trigger words.
    let away =
        insert(&app, &alice, out_of_office("Semester", json!({"dateTime": rfc(t2)}), json!({"dateTime": rfc(t3)})))
            .await;

    let bob = writer_token(&app, BOB).await;
    let borta =
        insert(&app, &bob, out_of_office("Borta", json!({"dateTime": rfc(t0)}), json!({"dateTime": rfc(t1)}))).await;
    let planning = insert(&app, &bob, focus_time("Lunch planning", t2, t3)).await;

    let got = wait_for_switches(&app, ALICE, 2).await;
    assert_eq!(
        got,
        [
            switch(t0, "Stör ej", t1, status_cause(&deep, "focusTime")),
            back(t1, Some(t2)),
            switch(t2, "Semester", t3, trigger_cause(&away, Some("outOfOffice"), "semester")),
            back(t3, None),
        ]
    );
    let got = wait_for_switches(&app, BOB, 1).await;
    assert_eq!(
        got,
        [switch(t2, "Lunch", t3, trigger_cause(&planning, Some("focusTime"), "lunch")), back(t3, None)],
        "Bob's unmapped 'Borta' matches no trigger and switches nothing"
    );
    // It was synced, so it could have switched.
    quiet(&app, BOB).await;
    assert!(stored(&app, BOB).await.iter().any(|e| e["id"] == borta.as_str()), "Borta is stored");
    app.stop().await;
}

#[tokio::test]
async fn working_locations_birthdays_and_gmail_events_never_switch_whatever_their_title() {
    let app = setup().await;
    add_user(
        &app,
        ALICE,
        json!({"profiles": [profile("Kontor", &["office"]), profile("Hemma", &["home"]), profile("Födelsedag", &["birthday"]),
                            profile("Resa", &["flight"]), profile("Lunch", &["lunch"])],
               "status_events": {"out_of_office": "Resa", "focus_time": "Kontor"}}),
    )
    .await;
    let writer = writer_token(&app, ALICE).await;
    let d = today(&app) + Duration::days(1);
    let day = |d: NaiveDate| json!({"date": d.format("%Y-%m-%d").to_string()});
    insert(
        &app,
        &writer,
        json!({"summary": "Office", "eventType": "workingLocation", "visibility": "public", "transparency": "transparent",
               "start": day(d), "end": day(d + Duration::days(1)),
               "workingLocationProperties": {"type": "officeLocation", "officeLocation": {"label": "Office"}}}),
    )
    .await;
    insert(
        &app,
        &writer,
        json!({"summary": "Home", "eventType": "workingLocation", "visibility": "public", "transparency": "transparent",
               "start": local(d + Duration::days(1), 8, 0), "end": local(d + Duration::days(1), 17, 0),
               "workingLocationProperties": {"type": "homeOffice", "homeOffice": {}}}),
    )
    .await;
    insert(
        &app,
        &writer,
        json!({"summary": "Bob's birthday", "eventType": "birthday", "visibility": "private", "transparency": "transparent",
               "start": day(d + Duration::days(2)), "end": day(d + Duration::days(3)), "recurrence": ["RRULE:FREQ=YEARLY"],
               "birthdayProperties": {"type": "birthday"}}),
    )
    .await;
    // Gmail puts a flight it found in an email on the calendar itself.
    let flight = with(
        timed("Flight to Berlin", se(d + Duration::days(3), 7, 0), se(d + Duration::days(3), 9, 0)),
        json!({"eventType": "fromGmail"}),
    );
    let r = app.fake_control("POST", &format!("/_fake/calendars/{ALICE}/events"), flight).await;
    assert_eq!(r.status, 201, "{r:?}");
    // Written last: once gwsync shows it, it has synced everything before it.
    let (l0, l1) = (se(d + Duration::days(4), 12, 0), se(d + Duration::days(4), 13, 0));
    let lunch = insert(&app, &writer, timed("Lunch", l0, l1)).await;

    let got = wait_for_switches(&app, ALICE, 1).await;
    assert_eq!(got, [switch(l0, "Lunch", l1, trigger_cause(&lunch, None, "lunch")), back(l1, None)]);
    quiet(&app, ALICE).await;
    let held: Vec<Value> = stored(&app, ALICE).await;
    assert_eq!(held.len(), 1, "gwsync neither fetches nor keeps them: {held:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_status_event_and_a_trigger_event_overlap_by_the_order_of_the_users_profiles() {
    let app = setup().await;
    let status = json!({"out_of_office": "Semester"});
    // Alice puts Lunch above Semester, Bob below.
    add_user(
        &app,
        ALICE,
        json!({"profiles": [profile("Lunch", &["lunch"]), profile("Semester", &[])], "status_events": status}),
    )
    .await;
    add_user(
        &app,
        BOB,
        json!({"profiles": [profile("Semester", &[]), profile("Lunch", &["lunch"])], "status_events": status}),
    )
    .await;
    let d = today(&app) + Duration::days(1);
    let (start, lunch_start, lunch_end, end) = (se(d, 8, 0), se(d, 12, 0), se(d, 13, 0), se(d, 17, 0));
    let mut ids = Vec::new();
    for user in [ALICE, BOB] {
        let writer = writer_token(&app, user).await;
        let away = insert(&app, &writer, out_of_office("Borta", local(d, 8, 0), local(d, 17, 0))).await;
        let lunch = insert(&app, &writer, timed("Lunch med kund", lunch_start, lunch_end)).await;
        ids.push((away, lunch));
    }
    let (away, lunch) = &ids[0];
    assert_eq!(
        wait_for_switches(&app, ALICE, 3).await,
        [
            switch(start, "Semester", lunch_start, status_cause(away, "outOfOffice")),
            switch(lunch_start, "Lunch", lunch_end, trigger_cause(lunch, None, "lunch")),
            switch(lunch_end, "Semester", end, status_cause(away, "outOfOffice")),
            back(end, None),
        ],
        "Lunch outranks Semester for Alice"
    );
    let (away, _) = &ids[1];
    // Bob's lunch is synced with his out of office (written after it), yet never shows.
    eventually("Bob's lunch stored", async || {
        let n = stored(&app, BOB).await.len();
        if n == 2 { Ok(()) } else { Err(format!("{n} events")) }
    })
    .await;
    assert_eq!(
        upcoming(&presence(&app, BOB).await),
        [switch(start, "Semester", end, status_cause(away, "outOfOffice")), back(end, None)],
        "Semester outranks Lunch for Bob"
    );
    app.stop().await;
}

#[tokio::test]
async fn every_list_and_watch_asks_for_the_same_event_types() {
    let app = setup().await;
    let since = last_seq(&app).await;
    add_user(&app, ALICE, json!({"profiles": [profile("Lunch", &["lunch"])]})).await;
    let writer = writer_token(&app, ALICE).await;
    eventually("a full sync and a channel", async || {
        let lists = requests(&app, Some("calendar.events.list"), since).await;
        let watches = requests(&app, Some("calendar.events.watch"), since).await;
        if !lists.is_empty() && !watches.is_empty() { Ok(()) } else { Err(format!("{lists:?} {watches:?}")) }
    })
    .await;
    // A change: Google notifies, gwsync syncs incrementally with its token.
    let (t0, t1) = (minute_ahead(&app, Duration::hours(1)), minute_ahead(&app, Duration::hours(2)));
    insert(&app, &writer, timed("Lunch", t0, t1)).await;
    let lists = eventually("an incremental sync", async || {
        let lists = requests(&app, Some("calendar.events.list"), since).await;
        let mine: Vec<Value> = lists.into_iter().filter(|r| r["user"] == ALICE).collect();
        if mine.iter().any(|r| has_param(r, "syncToken")) { Ok(mine) } else { Err(format!("{mine:?}")) }
    })
    .await;
    assert!(lists.iter().any(|r| !has_param(r, "syncToken")), "the chain started with a full sync: {lists:?}");
    for r in &lists {
        assert_eq!(event_types_of(r), ASKED_FOR, "events.list {}", r["query"]);
        assert_eq!(r["status"], 200, "{r}");
    }
    let watches = requests(&app, Some("calendar.events.watch"), since).await;
    assert!(!watches.is_empty());
    for r in &watches {
        assert_eq!(event_types_of(r), ASKED_FOR, "events.watch {}", r["query"]);
    }
    let channels = app.fake_control("GET", &format!("/_fake/channels?user={ALICE}&state=live"), Value::Null).await;
    let live = channels.body["channels"].as_array().expect("channels");
    assert!(!live.is_empty() && live.iter().all(|c| c["event_types"] == json!(ASKED_FOR)), "{live:?}");
    app.stop().await;
}

/// gwsync's admin API at `base` (an `Instance` the test started itself).
async fn api_at(app: &TestApp, base: &str, method: &str, path: &str) -> Reply {
    let req = app.http.request(method.parse().expect("method"), format!("{base}{path}")).bearer_auth(ADMIN_TOKEN);
    reply(req.send().await.expect("api call")).await
}

#[tokio::test]
async fn a_calendar_synced_by_an_older_gwsync_without_event_types_is_synced_in_full_once() {
    let mut app = setup().await;
    add_user(&app, ALICE, json!({"profiles": [profile("Kontor", &["office"]), profile("Lunch", &["lunch"])]})).await;
    let writer = writer_token(&app, ALICE).await;
    let d = today(&app) + Duration::days(1);
    let date = |d: NaiveDate| json!({"date": d.format("%Y-%m-%d").to_string()});
    let office = insert(
        &app,
        &writer,
        json!({"summary": "Office", "eventType": "workingLocation", "visibility": "public", "transparency": "transparent",
               "start": date(d), "end": date(d + Duration::days(1)),
               "workingLocationProperties": {"type": "officeLocation", "officeLocation": {"label": "Office"}}}),
    )
    .await;
    let (l0, l1) = (se(d, 12, 0), se(d, 13, 0));
    let lunch = insert(&app, &writer, timed("Lunch", l0, l1)).await;
    wait_for_switches(&app, ALICE, 1).await;
    quiet(&app, ALICE).await;
    app.stop_gwsync().await.expect("a clean stop");

    // What an older gwsync held: every type listed without eventTypes, the token of that
    // listing, and a calendar state that knows no event-type set.
    let mut items = Vec::new();
    let mut page: Option<String> = None;
    let old_token = loop {
        let q = match &page {
            Some(p) => format!("events?singleEvents=false&pageToken={p}"),
            None => "events?singleEvents=false".to_owned(),
        };
        let r = google(&app, "GET", &q, &writer, None).await;
        assert_eq!(r.status, 200, "{r:?}");
        items.extend(r.body["items"].as_array().expect("items").iter().cloned());
        match (r.body["nextPageToken"].as_str(), r.body["nextSyncToken"].as_str()) {
            (Some(p), _) => page = Some(p.to_owned()),
            (None, Some(t)) => break t.to_owned(),
            _ => panic!("{r:?}"),
        }
    };
    assert!(items.iter().any(|e| e["id"] == office.as_str()), "Google lists the working location without eventTypes");
    {
        use gwsync::model::event::StoredEvent;
        use gwsync::store::{EventChange, Store};
        let store =
            gwsync::store::sled_store::SledStore::open(&app.data_path().join("db"), 8).expect("the store opens");
        let mut state = store.calendar_state(TENANT, ALICE).await.expect("read").expect("a synced calendar");
        assert!(state.event_types.is_some(), "this gwsync records the set it synced with");
        state.event_types = None;
        state.sync_token = Some(old_token);
        let changes: Vec<EventChange> = items
            .iter()
            .map(|v| EventChange::Upsert(Box::new(StoredEvent::from_google(v).expect("readable"))))
            .collect();
        store.apply_sync(TENANT, ALICE, true, &changes, &state).await.expect("written");
        store.flush().await.expect("flushed");
    }

    let since = last_seq(&app).await;
    let gwsync = Instance::launch(&app).await;
    let lists = eventually("the sync after the upgrade", async || {
        let lists: Vec<Value> = requests(&app, Some("calendar.events.list"), since)
            .await
            .into_iter()
            .filter(|r| r["user"] == ALICE)
            .collect();
        if lists.iter().any(|r| r["status"] == 200) { Ok(lists) } else { Err(format!("{lists:?}")) }
    })
    .await;
    assert!(!has_param(&lists[0], "syncToken"), "a full sync, not the old token: {}", lists[0]["query"]);
    assert_eq!(event_types_of(&lists[0]), ASKED_FOR);
    let events_path = format!("/api/v1/tenants/{TENANT}/users/{ALICE}/events");
    let held = eventually("the working location gone from the store", async || {
        let r = api_at(&app, &gwsync.base, "GET", &events_path).await;
        let held = r.body["events"].as_array().cloned().unwrap_or_default();
        if held.iter().all(|e| e["id"] != office.as_str()) { Ok(held) } else { Err(format!("{held:?}")) }
    })
    .await;
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["id"], lunch.as_str());
    let p = api_at(&app, &gwsync.base, "GET", &format!("/api/v1/tenants/{TENANT}/users/{ALICE}/presence")).await;
    assert_eq!(upcoming(&p.body), [switch(l0, "Lunch", l1, trigger_cause(&lunch, None, "lunch")), back(l1, None)]);

    // Once: the next sync goes on with the new chain's token.
    let r = api_at(&app, &gwsync.base, "POST", &format!("/api/v1/tenants/{TENANT}/users/{ALICE}/resync")).await;
    assert_eq!(r.status, 202, "{r:?}");
    let lists = eventually("the next sync", async || {
        let lists: Vec<Value> = requests(&app, Some("calendar.events.list"), since)
            .await
            .into_iter()
            .filter(|r| r["user"] == ALICE)
            .collect();
        if lists.iter().any(|r| has_param(r, "syncToken")) { Ok(lists) } else { Err(format!("{lists:?}")) }
    })
    .await;
    let full = lists.iter().filter(|r| !has_param(r, "syncToken") && !has_param(r, "pageToken")).count();
    assert_eq!(full, 1, "one full sync after the upgrade: {lists:?}");
    assert!(lists.iter().all(|r| event_types_of(r) == ASKED_FOR && r["status"] == 200), "{lists:?}");
    gwsync.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_tenant_default_applies_to_users_with_that_profile_and_their_status_says_when_not() {
    let app = setup().await;
    let r = app
        .api(
            "PUT",
            &format!("/api/v1/tenants/{TENANT}"),
            Some(json!({"domain": DOMAIN, "directory_admin": IT, "status_events": {"out_of_office": "Semester", "focus_time": "Stör ej"}})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["status_events"], json!({"out_of_office": "Semester", "focus_time": "Stör ej"}));
    // Alice has Semester but no Stör ej; Bob chooses his own focus-time profile.
    add_user(&app, ALICE, json!({"profiles": [profile("semester", &[]), profile("Lunch", &["lunch"])]})).await;
    add_user(
        &app,
        BOB,
        json!({"profiles": [profile("Semester", &[]), profile("Fokus", &[])], "status_events": {"focus_time": "Fokus"}}),
    )
    .await;

    let alice = user_status(&app, ALICE).await;
    assert_eq!(alice["status_events"], json!({"out_of_office": null, "focus_time": null}));
    assert_eq!(
        alice["status_events_in_effect"],
        json!({"out_of_office": {"profile": "semester", "set_by": "tenant"}, "focus_time": null})
    );
    let not_applied = alice["status_events_not_applied"].as_array().expect("a list");
    assert_eq!(not_applied.len(), 1, "{alice}");
    assert_eq!(
        (not_applied[0]["status"].as_str(), not_applied[0]["profile"].as_str()),
        (Some("focus_time"), Some("Stör ej"))
    );
    assert!(not_applied[0]["reason"].as_str().unwrap_or("").contains(ALICE), "{alice}");
    let bob = user_status(&app, BOB).await;
    assert_eq!(
        bob["status_events_in_effect"],
        json!({"out_of_office": {"profile": "Semester", "set_by": "tenant"}, "focus_time": {"profile": "Fokus", "set_by": "user"}})
    );
    assert_eq!(bob["status_events_not_applied"], json!([]));

    // The default switches Alice; her focus time, unmapped, goes through triggers (none match).
    let writer = writer_token(&app, ALICE).await;
    let (t0, t1) = (minute_ahead(&app, Duration::hours(1)), minute_ahead(&app, Duration::hours(2)));
    let (t2, t3) = (minute_ahead(&app, Duration::hours(3)), minute_ahead(&app, Duration::hours(4)));
    let deep = insert(&app, &writer, focus_time("Deep work", t0, t1)).await;
    let away =
        insert(&app, &writer, out_of_office("Borta", json!({"dateTime": rfc(t2)}), json!({"dateTime": rfc(t3)}))).await;
    let got = wait_for_switches(&app, ALICE, 1).await;
    assert_eq!(got, [switch(t2, "semester", t3, status_cause(&away, "outOfOffice")), back(t3, None)]);
    assert!(stored(&app, ALICE).await.iter().any(|e| e["id"] == deep.as_str()), "the focus time was synced");

    // Changing the tenant's default re-evaluates its users at once.
    let r = app
        .api(
            "PUT",
            &format!("/api/v1/tenants/{TENANT}"),
            Some(json!({"domain": DOMAIN, "directory_admin": IT, "status_events": {"focus_time": "Lunch"}})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        upcoming(&presence(&app, ALICE).await),
        [switch(t0, "Lunch", t1, status_cause(&deep, "focusTime")), back(t1, None)],
        "focus time → Lunch now; out of office unmapped and 'Borta' matches nothing"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_status_event_naming_a_profile_the_user_lacks_is_a_400_that_changes_nothing() {
    let app = setup().await;
    add_user(
        &app,
        ALICE,
        json!({"profiles": [profile("Semester", &[])], "status_events": {"out_of_office": "Semester"}}),
    )
    .await;
    let r = app
        .put_user(ALICE, json!({"profiles": [profile("Semester", &[])], "status_events": {"focus_time": "Stör ej"}}))
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.code(), "invalid_request", "{r:?}");
    assert!(r.message().contains("status_events.focus_time") && r.message().contains("'Stör ej'"), "{r:?}");
    let r = app.put_user(ALICE, json!({"profiles": [], "status_events": {"out_of_office": "Semester"}})).await;
    assert_eq!(r.status, 400, "a profile cannot be removed while the mapping names it: {r:?}");
    let r = app
        .put_user(ALICE, json!({"profiles": [profile("Semester", &[])], "status_events": {"birthday": "Semester"}}))
        .await;
    assert_eq!(r.status, 400, "only out_of_office and focus_time can be mapped: {r:?}");
    let alice = user_status(&app, ALICE).await;
    assert_eq!(alice["status_events"], json!({"out_of_office": "Semester", "focus_time": null}), "unchanged: {alice}");

    let r = app
        .api(
            "PUT",
            &format!("/api/v1/tenants/{TENANT}"),
            Some(json!({"domain": DOMAIN, "directory_admin": IT, "status_events": {"out_of_office": " "}})),
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.message().contains("status_events.out_of_office"), "{r:?}");
    let tenant = app.api("GET", &format!("/api/v1/tenants/{TENANT}"), None).await;
    assert_eq!(
        tenant.body["status_events"],
        json!({"out_of_office": null, "focus_time": null}),
        "unchanged: {tenant:?}"
    );
    app.stop().await;
}

// ---- the timeline itself, for events an older gwsync may still hold ----

#[test]
fn stored_working_locations_birthdays_and_gmail_events_never_switch_even_when_mapped_or_triggered() {
    use gwsync::model::event::{EventTime, Status, StoredEvent};
    use gwsync::model::user::{Profile, StatusEvents};
    use gwsync::presence::timeline::{Profiles, Timeline};

    let day = NaiveDate::from_ymd_opt(2026, 6, 15).expect("a date");
    let event = |id: &str, event_type: &str, summary: Option<&str>| StoredEvent {
        id: id.into(),
        status: Status::Confirmed,
        summary: summary.map(str::to_owned),
        start: Some(EventTime::DateTime { at: se(day, 9, 0), tz: None }),
        end: Some(EventTime::DateTime { at: se(day, 10, 0), tz: None }),
        recurrence: Vec::new(),
        recurring_event_id: None,
        original_start: None,
        transparent: event_type == "workingLocation",
        event_type: event_type.into(),
        visibility: "default".into(),
        self_response: None,
        updated: None,
    };
    let profiles = [
        Profile { name: "Kontor".into(), triggers: vec!["office".into(), "birthday".into(), "flight".into()] },
        Profile { name: "Semester".into(), triggers: vec![] },
    ];
    let mapping = StatusEvents { out_of_office: Some("Semester".into()), focus_time: Some("Kontor".into()) };
    let p = Profiles::with_status_events(&profiles, &mapping);
    let at = se(day, 9, 30);
    let (from, until) = (se(day, 0, 0), se(day + Duration::days(1), 0, 0));
    for (event_type, title) in [("workingLocation", "Office"), ("birthday", "Bob's birthday"), ("fromGmail", "Flight")]
    {
        let tl = Timeline::compute(&[event("x", event_type, Some(title))], &p, SE, from, until);
        assert_eq!(tl.state_at(at).profile, None, "{event_type} '{title}'");
    }
    // The same titles on ordinary events do switch, and a mapped out of office needs no title.
    let tl = Timeline::compute(&[event("x", "default", Some("Office"))], &p, SE, from, until);
    assert_eq!(tl.state_at(at).profile.as_deref(), Some("Kontor"));
    let tl = Timeline::compute(&[event("x", "outOfOffice", None)], &p, SE, from, until);
    let state = tl.state_at(at);
    assert_eq!(state.profile.as_deref(), Some("Semester"));
    let cause = state.cause.expect("a cause");
    assert_eq!((cause.event_type.as_deref(), cause.trigger), (Some("outOfOffice"), None));
    // Without a mapping the same untitled out of office switches nothing.
    let tl = Timeline::compute(&[event("x", "outOfOffice", None)], &Profiles::new(&profiles), SE, from, until);
    assert_eq!(tl.state_at(at).profile, None);
}
