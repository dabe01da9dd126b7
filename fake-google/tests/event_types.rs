//! Calendar event types at the HTTP level (NOTES §2.8; Google's calendar-status and event-types
//! guides): an unset `eventTypes` lists every type, a set one filters full and incremental
//! listings, watches and the notifications they cause; out of office, focus time and working
//! location are accepted only on primary calendars and only with the fields Google requires;
//! birthdays are yearly one-day events; Gmail's events cannot be created; a type never changes.
mod common;
use common::*;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

const EVENTS: &str = "/calendar/v3/calendars/primary/events";
const WATCH: &str = "/calendar/v3/calendars/primary/events/watch";

fn timed(summary: &str, start: &str, end: &str) -> Value {
    json!({"summary": summary, "start": {"dateTime": start}, "end": {"dateTime": end}})
}

fn with(mut body: Value, extra: Value) -> Value {
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            body[k] = v;
        }
    }
    body
}

/// A valid out-of-office event, as Google's guide writes one.
fn out_of_office(summary: &str, start: &str, end: &str) -> Value {
    with(
        timed(summary, start, end),
        json!({"eventType": "outOfOffice", "outOfOfficeProperties": {"autoDeclineMode": "declineOnlyNewConflictingInvitations", "declineMessage": "On vacation"}}),
    )
}

fn focus_time(start: &str, end: &str) -> Value {
    with(
        timed("Focus time", start, end),
        json!({"eventType": "focusTime", "focusTimeProperties": {"chatStatus": "doNotDisturb", "autoDeclineMode": "declineNone"}}),
    )
}

fn working_location(day: &str, next_day: &str) -> Value {
    json!({
        "summary": "Office", "eventType": "workingLocation", "visibility": "public", "transparency": "transparent",
        "start": {"date": day}, "end": {"date": next_day},
        "workingLocationProperties": {"type": "officeLocation", "officeLocation": {"label": "Office"}},
    })
}

fn birthday(day: &str, next_day: &str) -> Value {
    json!({
        "summary": "Bob's birthday", "eventType": "birthday", "visibility": "private", "transparency": "transparent",
        "start": {"date": day}, "end": {"date": next_day}, "recurrence": ["RRULE:FREQ=YEARLY"],
        "birthdayProperties": {"type": "birthday"},
    })
}

/// A flight Gmail found in an email, as Google itself puts it on the calendar.
fn from_gmail() -> Value {
    with(timed("Flight to Berlin", "2026-06-16T07:00:00Z", "2026-06-16T09:00:00Z"), json!({"eventType": "fromGmail"}))
}

async fn insert(env: &Env, token: &str, body: Value) -> Reply {
    env.call("POST", EVENTS, Some(token), Some(body)).await
}

async fn inserted(env: &Env, token: &str, body: Value) -> String {
    let r = insert(env, token, body).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body["id"].as_str().expect("id").to_owned()
}

/// Pages a listing to its end; returns the items and the sync token.
async fn list_all(env: &Env, token: &str, path: &str, query: &str) -> (Vec<Value>, Option<String>) {
    let mut items = Vec::new();
    let mut page: Option<String> = None;
    loop {
        let q = page.as_ref().map(|p| format!("{query}&pageToken={p}")).unwrap_or_else(|| query.to_owned());
        let r = env.get(&format!("{path}?{q}"), token).await;
        assert_eq!(r.status, 200, "{q}: {r:?}");
        items.extend(r.body["items"].as_array().expect("items").iter().cloned());
        match r.body["nextPageToken"].as_str() {
            Some(p) => page = Some(p.to_owned()),
            None => return (items, r.body["nextSyncToken"].as_str().map(str::to_owned)),
        }
    }
}

fn types(items: &[Value]) -> BTreeSet<String> {
    items.iter().map(|e| e["eventType"].as_str().expect("eventType").to_owned()).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Asserts a 400 in Calendar's legacy envelope with `reason` and, if given, `message`.
fn refused(r: &Reply, reason: &str, message: Option<&str>) {
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.body["error"]["code"], 400, "{r:?}");
    assert_eq!(r.reason(), Some(reason), "{r:?}");
    if let Some(m) = message {
        assert_eq!(r.body["error"]["message"], m, "{r:?}");
        assert_eq!(r.body["error"]["errors"][0]["message"], m, "{r:?}");
    }
}

/// Alice's calendar with one event of every type (Gmail's put there by Google itself).
async fn one_of_each(env: &Env, token: &str) {
    inserted(env, token, timed("Lunch", "2026-06-15T11:00:00Z", "2026-06-15T12:00:00Z")).await;
    inserted(env, token, out_of_office("Borta", "2026-06-17T00:00:00Z", "2026-06-19T00:00:00Z")).await;
    inserted(env, token, focus_time("2026-06-15T13:00:00Z", "2026-06-15T15:00:00Z")).await;
    inserted(env, token, working_location("2026-06-15", "2026-06-16")).await;
    inserted(env, token, birthday("2026-06-20", "2026-06-21")).await;
    let r = env.control("POST", &format!("/_fake/calendars/{ALICE}/events"), Some(from_gmail())).await;
    assert_eq!(r.status, 201, "{r:?}");
}

// ---- listing ----

#[tokio::test]
async fn an_unset_event_types_lists_every_type_and_a_set_one_only_those() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    one_of_each(&env, &token).await;
    let (all, _) = list_all(&env, &token, EVENTS, "").await;
    assert_eq!(
        types(&all),
        set(&["birthday", "default", "focusTime", "fromGmail", "outOfOffice", "workingLocation"]),
        "since March 2024 every type comes back unless eventTypes is given"
    );
    let (some, _) =
        list_all(&env, &token, EVENTS, "eventTypes=default&eventTypes=outOfOffice&eventTypes=focusTime").await;
    assert_eq!(types(&some), set(&["default", "focusTime", "outOfOffice"]));
    assert_eq!(some.len(), 3, "{some:?}");
    // Birthdays recur: expanded instances are filtered with their series.
    let (single, _) =
        list_all(&env, &token, EVENTS, "eventTypes=birthday&singleEvents=true&timeMax=2028-12-31T00:00:00Z").await;
    assert_eq!(single.len(), 3, "2026, 2027 and 2028: {single:?}");
    assert!(single.iter().all(|e| e["eventType"] == "birthday"));
    env.fake.stop().await;
}

#[tokio::test]
async fn an_unknown_event_type_is_refused_where_it_is_given() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let r = env.get(&format!("{EVENTS}?eventTypes=meeting"), &token).await;
    refused(&r, "invalid", None);
    assert_eq!(r.body["error"]["errors"][0]["location"], "eventTypes", "{r:?}");
    let rx = Receiver::start().await;
    let r = env
        .call(
            "POST",
            &format!("{WATCH}?eventTypes=holiday"),
            Some(&token),
            Some(json!({"id": "bad-types", "type": "web_hook", "address": rx.url})),
        )
        .await;
    refused(&r, "invalid", None);
    env.fake.stop().await;
}

#[tokio::test]
async fn an_incremental_sync_keeps_its_full_syncs_types_and_refuses_another_set() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let query = "eventTypes=default&eventTypes=outOfOffice";
    let (_, sync) = list_all(&env, &token, EVENTS, query).await;
    let sync = sync.expect("a sync token");
    let lunch = inserted(&env, &token, timed("Lunch", "2026-06-15T11:00:00Z", "2026-06-15T12:00:00Z")).await;
    let away = inserted(&env, &token, out_of_office("Borta", "2026-06-17T08:00:00Z", "2026-06-17T17:00:00Z")).await;
    let office = inserted(&env, &token, working_location("2026-06-15", "2026-06-16")).await;
    let r = env.call("DELETE", &format!("{EVENTS}/{office}"), Some(&token), None).await;
    assert_eq!(r.status, 204, "{r:?}");
    let (changes, next) = list_all(&env, &token, EVENTS, &format!("{query}&syncToken={sync}")).await;
    let ids: BTreeSet<String> = changes.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, set(&[&lunch, &away]), "the working location, made and deleted, is not of the types asked for");
    assert!(next.is_some());
    // The same token with another set (here: none, i.e. every type) needs a full sync instead.
    let r = env.get(&format!("{EVENTS}?syncToken={sync}"), &token).await;
    refused(&r, "invalid", None);
    assert_eq!(r.body["error"]["errors"][0]["location"], "eventTypes", "{r:?}");
    let r = env.get(&format!("{EVENTS}?eventTypes=outOfOffice&syncToken={sync}"), &token).await;
    refused(&r, "invalid", None);
    // The order of the repeated parameter does not matter.
    let r = env.get(&format!("{EVENTS}?eventTypes=outOfOffice&eventTypes=default&syncToken={sync}"), &token).await;
    assert_eq!(r.status, 200, "{r:?}");
    env.fake.stop().await;
}

// ---- watching ----

async fn watch(env: &Env, token: &str, query: &str, id: &str, address: &str) {
    let r = env
        .call(
            "POST",
            &format!("{WATCH}{query}"),
            Some(token),
            Some(json!({"id": id, "type": "web_hook", "address": address, "token": "t"})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
}

fn states(rx: &Receiver) -> Vec<String> {
    rx.all().iter().map(|m| m.header("x-goog-resource-state").unwrap_or("?").to_owned()).collect()
}

#[tokio::test]
async fn a_watch_with_event_types_is_notified_only_of_changes_to_those_types() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let (everything, filtered) = (Receiver::start().await, Receiver::start().await);
    watch(&env, &token, "", "all-types", &everything.url).await;
    watch(&env, &token, "?eventTypes=default&eventTypes=outOfOffice", "some-types", &filtered.url).await;
    everything.wait_for(1).await;
    filtered.wait_for(1).await;
    let r = env.control("GET", "/_fake/channels", None).await;
    let ch = r.body["channels"].as_array().expect("channels").iter().find(|c| c["id"] == "some-types").cloned();
    assert_eq!(ch.expect("listed")["event_types"], json!(["default", "outOfOffice"]));

    // A working location notifies the unfiltered channel only.
    let office = inserted(&env, &token, working_location("2026-06-15", "2026-06-16")).await;
    everything.wait_for(2).await;
    // An out-of-office event notifies both. Each channel's messages arrive in order, so had the
    // working location notified the filtered channel, that message would come first.
    inserted(&env, &token, out_of_office("Borta", "2026-06-17T08:00:00Z", "2026-06-17T17:00:00Z")).await;
    filtered.wait_for(2).await;
    everything.wait_for(3).await;
    assert_eq!(states(&filtered), ["sync", "exists"]);
    // Deleting the working location, too, concerns the unfiltered channel only.
    let r = env.call("DELETE", &format!("{EVENTS}/{office}"), Some(&token), None).await;
    assert_eq!(r.status, 204, "{r:?}");
    everything.wait_for(4).await;
    inserted(&env, &token, timed("Lunch", "2026-06-15T11:00:00Z", "2026-06-15T12:00:00Z")).await;
    filtered.wait_for(3).await;
    assert_eq!(states(&filtered), ["sync", "exists", "exists"]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(states(&everything), ["sync", "exists", "exists", "exists", "exists"]);
    env.fake.stop().await;
}

// ---- what Google accepts ----

#[tokio::test]
async fn out_of_office_is_timed_opaque_and_carries_its_properties() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let ok = out_of_office("Semester", "2026-07-06T00:00:00+02:00", "2026-07-18T00:00:00+02:00");
    let r = insert(&env, &token, ok.clone()).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["eventType"], "outOfOffice");
    assert_eq!(r.body["outOfOfficeProperties"]["declineMessage"], "On vacation");
    assert!(r.body.get("transparency").is_none(), "opaque, Google's default, is left out: {r:?}");
    // Properties may be empty; the event may recur; transparency may be given as opaque.
    let weekly = with(
        timed("Ledig fredag", "2026-06-19T08:00:00", "2026-06-19T17:00:00"),
        json!({"eventType": "outOfOffice", "outOfOfficeProperties": {}, "transparency": "opaque",
               "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=4"]}),
    );
    let weekly = with(
        weekly,
        json!({"start": {"dateTime": "2026-06-19T08:00:00", "timeZone": "Europe/Stockholm"},
               "end": {"dateTime": "2026-06-19T17:00:00", "timeZone": "Europe/Stockholm"}}),
    );
    assert_eq!(insert(&env, &token, weekly).await.status, 200);

    let mut no_props = ok.clone();
    no_props.as_object_mut().unwrap().remove("outOfOfficeProperties");
    refused(&insert(&env, &token, no_props).await, "required", None);
    let all_day = with(ok.clone(), json!({"start": {"date": "2026-07-06"}, "end": {"date": "2026-07-18"}}));
    refused(
        &insert(&env, &token, all_day).await,
        "invalid",
        Some("An out of office event cannot be an all-day event."),
    );
    refused(&insert(&env, &token, with(ok.clone(), json!({"transparency": "transparent"}))).await, "invalid", None);
    refused(
        &insert(&env, &token, with(ok.clone(), json!({"description": "Mallorca"}))).await,
        "invalid",
        Some("An out of office event must not have a description."),
    );
    refused(&insert(&env, &token, with(ok.clone(), json!({"attendees": [{"email": BOB}]}))).await, "invalid", None);
    let bad_mode = with(ok.clone(), json!({"outOfOfficeProperties": {"autoDeclineMode": "declineSome"}}));
    refused(&insert(&env, &token, bad_mode).await, "invalid", None);
    env.fake.stop().await;
}

#[tokio::test]
async fn focus_time_is_timed_opaque_and_carries_its_properties() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let ok = focus_time("2026-06-15T13:00:00Z", "2026-06-15T15:00:00Z");
    let r = insert(&env, &token, ok.clone()).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        (r.body["eventType"].as_str(), r.body["focusTimeProperties"]["chatStatus"].as_str()),
        (Some("focusTime"), Some("doNotDisturb"))
    );
    let mut no_props = ok.clone();
    no_props.as_object_mut().unwrap().remove("focusTimeProperties");
    refused(&insert(&env, &token, no_props).await, "required", None);
    let all_day = with(ok.clone(), json!({"start": {"date": "2026-06-15"}, "end": {"date": "2026-06-16"}}));
    refused(&insert(&env, &token, all_day).await, "invalid", Some("A focus time event cannot be an all-day event."));
    refused(&insert(&env, &token, with(ok.clone(), json!({"transparency": "transparent"}))).await, "invalid", None);
    let chat = with(ok, json!({"focusTimeProperties": {"chatStatus": "busy"}}));
    refused(&insert(&env, &token, chat).await, "invalid", None);
    env.fake.stop().await;
}

#[tokio::test]
async fn a_working_location_is_public_transparent_and_one_day_if_all_day() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let ok = working_location("2026-06-15", "2026-06-16");
    let r = insert(&env, &token, ok.clone()).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["workingLocationProperties"]["type"], "officeLocation");
    assert_eq!((r.body["visibility"].as_str(), r.body["transparency"].as_str()), (Some("public"), Some("transparent")));
    // Timed ones may span days.
    let timed_days = with(
        ok.clone(),
        json!({"start": {"dateTime": "2026-06-15T08:00:00Z"}, "end": {"dateTime": "2026-06-17T16:00:00Z"}}),
    );
    assert_eq!(insert(&env, &token, timed_days).await.status, 200);
    let two_days = with(ok.clone(), json!({"end": {"date": "2026-06-17"}}));
    refused(
        &insert(&env, &token, two_days).await,
        "invalid",
        Some("An all-day working location event must span exactly one day."),
    );
    let mut private = ok.clone();
    private.as_object_mut().unwrap().remove("visibility");
    refused(&insert(&env, &token, private).await, "invalid", Some("A working location event must be public."));
    refused(&insert(&env, &token, with(ok.clone(), json!({"transparency": "opaque"}))).await, "invalid", None);
    refused(&insert(&env, &token, with(ok.clone(), json!({"workingLocationProperties": {}}))).await, "required", None);
    let bad = with(ok, json!({"workingLocationProperties": {"type": "beach"}}));
    refused(&insert(&env, &token, bad).await, "invalid", None);
    env.fake.stop().await;
}

#[tokio::test]
async fn a_birthday_is_one_private_day_a_year_and_gmails_events_come_only_from_google() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let ok = birthday("2026-06-20", "2026-06-21");
    assert_eq!(insert(&env, &token, ok.clone()).await.status, 200);
    refused(
        &insert(&env, &token, with(ok.clone(), json!({"recurrence": ["RRULE:FREQ=MONTHLY"]}))).await,
        "invalid",
        None,
    );
    refused(&insert(&env, &token, with(ok.clone(), json!({"end": {"date": "2026-06-22"}}))).await, "invalid", None);
    refused(&insert(&env, &token, with(ok.clone(), json!({"visibility": "public"}))).await, "invalid", None);
    let anniversary = with(ok, json!({"birthdayProperties": {"type": "anniversary"}}));
    refused(&insert(&env, &token, anniversary).await, "eventTypeRestriction", None);

    refused(&insert(&env, &token, from_gmail()).await, "eventTypeRestriction", None);
    let r = env.control("POST", &format!("/_fake/calendars/{ALICE}/events"), Some(from_gmail())).await;
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.body["eventType"], "fromGmail");
    let (items, _) = list_all(&env, &token, EVENTS, "eventTypes=fromGmail").await;
    assert_eq!(items.len(), 1, "{items:?}");
    env.fake.stop().await;
}

#[tokio::test]
async fn status_events_exist_only_on_primary_calendars() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let r = env.control("POST", &format!("/_fake/calendars/{ALICE}/secondary"), None).await;
    assert_eq!(r.status, 201, "{r:?}");
    let id = r.body["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("c_") && id.ends_with("@group.calendar.google.com"), "{id}");
    let secondary = format!("/calendar/v3/calendars/{id}/events");
    let r = env
        .call(
            "POST",
            &secondary,
            Some(&token),
            Some(timed("Team lunch", "2026-06-15T11:00:00Z", "2026-06-15T12:00:00Z")),
        )
        .await;
    assert_eq!(r.status, 200, "an ordinary event is fine there: {r:?}");
    let cases = [
        (
            out_of_office("Borta", "2026-06-17T08:00:00Z", "2026-06-17T17:00:00Z"),
            "Out of office events can only be created on the primary calendar.",
        ),
        (
            focus_time("2026-06-15T13:00:00Z", "2026-06-15T15:00:00Z"),
            "Focus time events can only be created on the primary calendar.",
        ),
        (
            working_location("2026-06-15", "2026-06-16"),
            "Working location events can only be created on the primary calendar.",
        ),
    ];
    for (body, message) in cases {
        let r = env.call("POST", &secondary, Some(&token), Some(body)).await;
        refused(&r, "eventTypeRestriction", Some(message));
        assert_eq!(r.body["error"]["errors"][0]["domain"], "calendar", "{r:?}");
    }
    let (items, _) = list_all(&env, &token, &secondary, "").await;
    assert_eq!(items.len(), 1, "nothing refused was stored: {items:?}");
    // The same events are fine on the primary calendar, by `primary` or by the owner's address.
    let own = format!("/calendar/v3/calendars/{ALICE}/events");
    let body = out_of_office("Borta", "2026-06-17T08:00:00Z", "2026-06-17T17:00:00Z");
    assert_eq!(env.call("POST", &own, Some(&token), Some(body)).await.status, 200);
    // Another user cannot reach Alice's secondary calendar.
    let bob = env.token_all(BOB).await;
    assert_eq!(env.get(&secondary, &bob).await.status, 404);
    env.fake.stop().await;
}

#[tokio::test]
async fn an_events_type_never_changes_and_an_update_keeps_its_required_fields() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let body = out_of_office("Borta", "2026-06-17T08:00:00Z", "2026-06-17T17:00:00Z");
    let id = inserted(&env, &token, body.clone()).await;
    let path = format!("{EVENTS}/{id}");
    let r = env.call("PATCH", &path, Some(&token), Some(json!({"eventType": "default"}))).await;
    refused(&r, "eventTypeRestriction", Some("The event type cannot be changed."));
    let r = env.call("PATCH", &path, Some(&token), Some(json!({"summary": "Semester"}))).await;
    assert_eq!((r.status, r.body["eventType"].as_str()), (200, Some("outOfOffice")), "{r:?}");
    // A whole-event update without the type keeps it, and so must keep its properties.
    let mut bare = timed("Semester", "2026-06-17T08:00:00Z", "2026-06-17T18:00:00Z");
    let r = env.call("PUT", &path, Some(&token), Some(bare.clone())).await;
    refused(&r, "required", None);
    bare["outOfOfficeProperties"] = json!({});
    let r = env.call("PUT", &path, Some(&token), Some(bare)).await;
    assert_eq!((r.status, r.body["eventType"].as_str()), (200, Some("outOfOffice")), "{r:?}");
    let lunch = inserted(&env, &token, timed("Lunch", "2026-06-15T11:00:00Z", "2026-06-15T12:00:00Z")).await;
    let r = env
        .call(
            "PATCH",
            &format!("{EVENTS}/{lunch}"),
            Some(&token),
            Some(json!({"eventType": "focusTime", "focusTimeProperties": {}})),
        )
        .await;
    refused(&r, "eventTypeRestriction", None);
    env.fake.stop().await;
}
