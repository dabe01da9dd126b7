//! Calendar v3 events.insert / get / patch / update / delete / instances, calendarList.get,
//! settings.get and calendars.get, at the HTTP level: the resource shapes Google returns, its
//! validation errors, and how recurring series and their exceptions behave.
mod common;
use common::*;

use serde_json::{Value, json};

const EVENTS: &str = "/calendar/v3/calendars/primary/events";
const STOCKHOLM: &str = "Europe/Stockholm";

fn event_path(id: &str) -> String {
    format!("{EVENTS}/{id}")
}

/// A timed event body from two RFC 3339 instants.
fn timed(summary: &str, start: &str, end: &str) -> Value {
    json!({"summary": summary, "start": {"dateTime": start}, "end": {"dateTime": end}})
}

/// A weekly/daily series body whose start and end carry `zone`.
fn series(summary: &str, start: &str, end: &str, zone: &str, rule: &str) -> Value {
    json!({
        "summary": summary,
        "start": {"dateTime": start, "timeZone": zone},
        "end": {"dateTime": end, "timeZone": zone},
        "recurrence": [rule],
    })
}

async fn insert(env: &Env, token: &str, body: Value) -> Reply {
    env.call("POST", EVENTS, Some(token), Some(body)).await
}

async fn get_event(env: &Env, token: &str, id: &str) -> Reply {
    env.get(&event_path(id), token).await
}

async fn patch(env: &Env, token: &str, id: &str, body: Value) -> Reply {
    env.call("PATCH", &event_path(id), Some(token), Some(body)).await
}

async fn delete(env: &Env, token: &str, id: &str) -> Reply {
    env.call("DELETE", &event_path(id), Some(token), None).await
}

/// A request with an `If-Match` header.
async fn call_if_match(env: &Env, method: &str, path: &str, token: &str, etag: &str, body: Option<Value>) -> Reply {
    let mut req = env.http.request(method.parse().expect("method"), env.url(path)).bearer_auth(token);
    req = req.header("If-Match", etag);
    if let Some(b) = body {
        req = req.json(&b);
    }
    reply(req.send().await.expect("request")).await
}

async fn instances(env: &Env, token: &str, master: &str, query: &str) -> Reply {
    let r = env.get(&format!("{}/instances?{query}", event_path(master)), token).await;
    assert_eq!(r.status, 200, "{r:?}");
    r
}

fn ids(items: &Value) -> Vec<String> {
    items.as_array().expect("items").iter().map(|e| e["id"].as_str().expect("id").to_owned()).collect()
}

/// Asserts a 400 in Calendar's legacy envelope with `reason`.
fn assert_bad_request(r: &Reply, reason: &str) {
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.body["error"]["code"], 400, "{r:?}");
    assert_eq!(r.reason(), Some(reason), "{r:?}");
}

/// `2026-06-15T09:00:00.123Z`: what Google's `created`/`updated` look like.
fn is_google_timestamp(s: &str) -> bool {
    s.len() == 24 && s.ends_with('Z') && &s[19..20] == "." && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

async fn stockholm_env() -> Env {
    Env::with_domain(json!({"domain": DOMAIN, "users": [ALICE, BOB], "time_zone": STOCKHOLM})).await
}

// ---- the resource ----

#[tokio::test]
async fn an_inserted_event_has_googles_shape() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let mut body = timed("Planning", "2026-06-15T09:00:00+02:00", "2026-06-15T10:00:00+02:00");
    body["transparency"] = json!("opaque");
    body["attendees"] = json!([{"email": ALICE}, {"email": BOB}]);
    let r = insert(&env, &token, body).await;
    assert_eq!(r.status, 200, "{r:?}");
    let e = &r.body;

    assert_eq!(e["kind"], "calendar#event");
    let etag = e["etag"].as_str().expect("etag");
    assert!(etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'), "etag {etag}");
    let id = e["id"].as_str().expect("id");
    assert!((5..=1024).contains(&id.len()), "id {id}");
    assert!(id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'v')), "id {id} is not base32hex");
    assert_eq!(e["iCalUID"], format!("{id}@google.com"));
    assert_eq!(e["status"], "confirmed");
    assert!(is_google_timestamp(e["created"].as_str().expect("created")), "{e}");
    assert!(is_google_timestamp(e["updated"].as_str().expect("updated")), "{e}");
    assert_eq!(e["creator"]["email"], ALICE);
    assert_eq!(e["creator"]["self"], true);
    assert_eq!(e["organizer"]["email"], ALICE);
    assert_eq!(e["organizer"]["self"], true);
    // The calendar is in UTC and the event named no zone: shown in UTC.
    assert_eq!(e["start"]["dateTime"], "2026-06-15T07:00:00Z");
    assert_eq!(e["end"]["dateTime"], "2026-06-15T08:00:00Z");
    assert!(e["start"].get("date").is_none(), "{e}");
    assert!(e.get("transparency").is_none(), "opaque is the default and left out: {e}");
    assert_eq!(e["eventType"], "default");
    assert!(e.get("recurrence").is_none() && e.get("recurringEventId").is_none(), "{e}");
    let attendees = e["attendees"].as_array().expect("attendees");
    let me = attendees.iter().find(|a| a["email"] == ALICE).expect("owner among attendees");
    assert_eq!(me["self"], true, "{e}");
    let bob = attendees.iter().find(|a| a["email"] == BOB).expect("bob among attendees");
    assert!(bob.get("self").is_none_or(|s| s == false), "only the owner is self: {e}");
    assert_eq!(bob["responseStatus"], "needsAction");

    let g = get_event(&env, &token, id).await;
    assert_eq!(g.status, 200, "{g:?}");
    assert_eq!(g.body, r.body, "events.get returns what insert returned");
    env.fake.stop().await;
}

#[tokio::test]
async fn times_show_in_the_events_zone_else_the_calendars() {
    let env = stockholm_env().await;
    let token = env.token_all(ALICE).await;
    // No zone of its own: the calendar's zone (CET in January).
    let a = env.insert_event(&token, timed("a", "2026-01-15T08:00:00Z", "2026-01-15T09:00:00Z")).await;
    assert_eq!(a["start"]["dateTime"], "2026-01-15T09:00:00+01:00");
    assert_eq!(a["end"]["dateTime"], "2026-01-15T10:00:00+01:00");
    // Its own zone: shown there, and the zone is echoed.
    let b = env
        .insert_event(
            &token,
            json!({"start": {"dateTime": "2026-01-15T14:00:00Z", "timeZone": "America/New_York"},
                   "end": {"dateTime": "2026-01-15T15:00:00Z", "timeZone": "America/New_York"}}),
        )
        .await;
    assert_eq!(b["start"]["dateTime"], "2026-01-15T09:00:00-05:00");
    assert_eq!(b["start"]["timeZone"], "America/New_York");
    // A local time without offset is read in the given zone (CEST in July).
    let c = env
        .insert_event(
            &token,
            json!({"start": {"dateTime": "2026-07-01T09:00:00", "timeZone": STOCKHOLM},
                   "end": {"dateTime": "2026-07-01T09:30:00", "timeZone": STOCKHOLM}}),
        )
        .await;
    assert_eq!(c["start"]["dateTime"], "2026-07-01T09:00:00+02:00");
    assert_eq!(c["end"]["dateTime"], "2026-07-01T09:30:00+02:00");
    env.fake.stop().await;
}

#[tokio::test]
async fn all_day_events_use_dates_with_an_exclusive_end() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let e = env
        .insert_event(
            &token,
            json!({"summary": "Holiday", "start": {"date": "2026-09-02"}, "end": {"date": "2026-09-03"}}),
        )
        .await;
    assert_eq!(e["start"], json!({"date": "2026-09-02"}));
    assert_eq!(e["end"], json!({"date": "2026-09-03"}));
    // The end date is exclusive: a window starting at the end date's midnight misses the event.
    let after = env.get(&format!("{EVENTS}?timeMin=2026-09-03T00:00:00Z"), &token).await;
    assert_eq!(after.status, 200, "{after:?}");
    assert!(ids(&after.body["items"]).is_empty(), "{after:?}");
    let during = env.get(&format!("{EVENTS}?timeMin=2026-09-02T23:59:59Z"), &token).await;
    assert_eq!(ids(&during.body["items"]), vec![e["id"].as_str().unwrap().to_owned()]);
    // A zero-length all-day event is an empty range.
    let r = insert(&env, &token, json!({"start": {"date": "2026-09-02"}, "end": {"date": "2026-09-02"}})).await;
    assert_bad_request(&r, "timeRangeEmpty");
    env.fake.stop().await;
}

#[tokio::test]
async fn event_types_and_transparency_round_trip() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let mut body = timed("Away", "2026-06-15T09:00:00Z", "2026-06-15T17:00:00Z");
    body["eventType"] = json!("outOfOffice");
    body["outOfOfficeProperties"] = json!({"autoDeclineMode": "declineNone", "declineMessage": "Away"});
    let e = env.insert_event(&token, body).await;
    assert_eq!(e["eventType"], "outOfOffice");
    assert!(e.get("transparency").is_none(), "out of office is opaque, Google's default: {e}");
    assert_eq!(e["outOfOfficeProperties"]["autoDeclineMode"], "declineNone");
    let g = get_event(&env, &token, e["id"].as_str().unwrap()).await;
    assert_eq!(g.body["eventType"], "outOfOffice");
    let mut free = timed("Gym", "2026-06-15T17:00:00Z", "2026-06-15T18:00:00Z");
    free["transparency"] = json!("transparent");
    let e = env.insert_event(&token, free).await;
    assert_eq!((e["eventType"].as_str(), e["transparency"].as_str()), (Some("default"), Some("transparent")));
    let g = get_event(&env, &token, e["id"].as_str().unwrap()).await;
    assert_eq!(g.body["transparency"], "transparent");
    env.fake.stop().await;
}

// ---- validation ----

#[tokio::test]
async fn an_event_without_end_is_refused() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let r = insert(&env, &token, json!({"summary": "x", "start": {"dateTime": "2026-06-15T09:00:00Z"}})).await;
    assert_bad_request(&r, "required");
    assert_eq!(r.body["error"]["message"], "Missing end time.");
    env.fake.stop().await;
}

#[tokio::test]
async fn an_end_before_the_start_is_an_empty_time_range() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let r = insert(&env, &token, timed("x", "2026-06-15T10:00:00Z", "2026-06-15T09:00:00Z")).await;
    assert_bad_request(&r, "timeRangeEmpty");
    assert_eq!(r.body["error"]["message"], "The specified time range is empty.");
    // NOTES §5.1 (calendar / timeRangeEmpty) and a captured real insert answer (gdata-provider #12).
    assert_eq!(
        r.body["error"]["errors"][0],
        json!({"domain": "calendar", "reason": "timeRangeEmpty", "message": "The specified time range is empty.",
               "locationType": "parameter", "location": "timeMax"}),
        "{r:?}"
    );
    env.fake.stop().await;
}

#[tokio::test]
async fn date_and_date_time_cannot_be_mixed() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let r = insert(&env, &token, json!({"start": {"date": "2026-06-15"}, "end": {"dateTime": "2026-06-16T00:00:00Z"}}))
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    let both = json!({"start": {"date": "2026-06-15", "dateTime": "2026-06-15T09:00:00Z"},
                      "end": {"date": "2026-06-16", "dateTime": "2026-06-15T10:00:00Z"}});
    let r = insert(&env, &token, both).await;
    assert_eq!(r.status, 400, "{r:?}");
    env.fake.stop().await;
}

#[tokio::test]
async fn a_recurring_event_needs_a_start_time_zone() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let mut body = timed("Daily", "2026-06-15T09:00:00Z", "2026-06-15T09:15:00Z");
    body["recurrence"] = json!(["RRULE:FREQ=DAILY;COUNT=3"]);
    let r = insert(&env, &token, body).await;
    assert_bad_request(&r, "required");
    assert_eq!(r.body["error"]["message"], "Missing time zone definition for start time.");
    env.fake.stop().await;
}

#[tokio::test]
async fn a_bad_recurrence_rule_is_refused() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    for rule in ["RRULE:FREQ=SOMETIMES", "FOO:BAR", "RRULE:FREQ=DAILY;COUNT=x"] {
        let body = series("x", "2026-06-15T09:00:00", "2026-06-15T09:15:00", "UTC", rule);
        let r = insert(&env, &token, body).await;
        assert_bad_request(&r, "invalid");
        assert_eq!(r.body["error"]["message"], "Invalid recurrence rule.", "{rule}");
    }
    env.fake.stop().await;
}

#[tokio::test]
async fn client_ids_must_be_base32hex_and_unique() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    for bad in ["Meeting0001", "meeting_0001", "abc", "wxyz0123"] {
        let mut body = timed("x", "2026-06-15T09:00:00Z", "2026-06-15T10:00:00Z");
        body["id"] = json!(bad);
        let r = insert(&env, &token, body).await;
        assert_bad_request(&r, "invalid");
        assert_eq!(r.body["error"]["message"], "Invalid resource id value.", "{bad}");
    }
    let mut body = timed("x", "2026-06-15T09:00:00Z", "2026-06-15T10:00:00Z");
    body["id"] = json!("meeting0001");
    let e = env.insert_event(&token, body.clone()).await;
    assert_eq!(e["id"], "meeting0001");
    assert_eq!(e["iCalUID"], "meeting0001@google.com");
    let r = insert(&env, &token, body).await;
    assert_eq!(r.status, 409, "{r:?}");
    assert_eq!(r.reason(), Some("duplicate"));
    env.fake.stop().await;
}

#[tokio::test]
async fn invalid_json_is_a_parse_error() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let resp = env
        .http
        .post(env.url(EVENTS))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"summary\": \"x\", \"start\": ")
        .send()
        .await
        .expect("request");
    let r = reply(resp).await;
    assert_bad_request(&r, "parseError");
    env.fake.stop().await;
}

#[tokio::test]
async fn bad_enum_values_are_refused() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    for (field, value) in
        [("status", "maybe"), ("transparency", "clear"), ("visibility", "secret"), ("eventType", "party")]
    {
        let mut body = timed("x", "2026-06-15T09:00:00Z", "2026-06-15T10:00:00Z");
        body[field] = json!(value);
        let r = insert(&env, &token, body).await;
        assert_eq!(r.status, 400, "{field}={value}: {r:?}");
        assert_eq!(r.body["error"]["code"], 400, "{r:?}");
    }
    let mut body = timed("x", "2026-06-15T09:00:00Z", "2026-06-15T10:00:00Z");
    body["attendees"] = json!([{"email": BOB, "responseStatus": "perhaps"}]);
    assert_eq!(insert(&env, &token, body).await.status, 400);
    env.fake.stop().await;
}

// ---- patch, update, preconditions, delete ----

#[tokio::test]
async fn patch_merges_nested_objects_and_null_clears() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let e = env
        .insert_event(
            &token,
            json!({
                "summary": "Review", "description": "agenda", "location": "Room 1",
                "start": {"dateTime": "2026-06-15T09:00:00", "timeZone": STOCKHOLM},
                "end": {"dateTime": "2026-06-15T10:00:00", "timeZone": STOCKHOLM},
                "extendedProperties": {"private": {"a": "1"}},
            }),
        )
        .await;
    let id = e["id"].as_str().unwrap();
    env.advance("1s").await;
    let r = patch(
        &env,
        &token,
        id,
        json!({
            "description": null,
            "extendedProperties": {"private": {"b": "2"}},
            "start": {"dateTime": "2026-06-15T08:30:00"},
        }),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let p = &r.body;
    assert!(p.get("description").is_none(), "null clears: {p}");
    assert_eq!(p["location"], "Room 1", "untouched fields stay");
    assert_eq!(p["summary"], "Review");
    assert_eq!(p["extendedProperties"]["private"], json!({"a": "1", "b": "2"}), "nested objects merge");
    assert_eq!(p["start"]["timeZone"], STOCKHOLM, "start.timeZone survives a patch of start.dateTime");
    assert_eq!(p["start"]["dateTime"], "2026-06-15T08:30:00+02:00");
    assert_eq!(p["end"]["dateTime"], "2026-06-15T10:00:00+02:00");
    assert_eq!(p["id"], e["id"]);
    assert_ne!(p["etag"], e["etag"], "a change gives a new etag");
    assert_ne!(p["updated"], e["updated"]);
    assert_eq!(p["created"], e["created"]);
    assert_eq!(get_event(&env, &token, id).await.body, r.body);
    env.fake.stop().await;
}

#[tokio::test]
async fn update_replaces_the_whole_event() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let mut body = timed("Review", "2026-06-15T09:00:00Z", "2026-06-15T10:00:00Z");
    body["description"] = json!("agenda");
    body["location"] = json!("Room 1");
    body["transparency"] = json!("transparent");
    let e = env.insert_event(&token, body).await;
    let id = e["id"].as_str().unwrap();
    let r = env
        .call(
            "PUT",
            &event_path(id),
            Some(&token),
            Some(timed("Renamed", "2026-06-15T11:00:00Z", "2026-06-15T12:00:00Z")),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["summary"], "Renamed");
    assert_eq!(r.body["start"]["dateTime"], "2026-06-15T11:00:00Z");
    for gone in ["description", "location", "transparency"] {
        assert!(r.body.get(gone).is_none(), "update drops {gone}: {}", r.body);
    }
    assert_eq!(r.body["id"], e["id"]);
    assert_eq!(r.body["iCalUID"], e["iCalUID"]);
    // update needs the whole resource: without times it is refused.
    let r = env.call("PUT", &event_path(id), Some(&token), Some(json!({"summary": "only"}))).await;
    assert_eq!(r.status, 400, "{r:?}");
    env.fake.stop().await;
}

#[tokio::test]
async fn a_stale_if_match_is_a_failed_precondition() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let e = env.insert_event(&token, timed("x", "2026-06-15T09:00:00Z", "2026-06-15T10:00:00Z")).await;
    let id = e["id"].as_str().unwrap();
    let etag = e["etag"].as_str().unwrap();
    let path = event_path(id);

    let r = call_if_match(&env, "PATCH", &path, &token, "\"1234\"", Some(json!({"summary": "y"}))).await;
    assert_eq!(r.status, 412, "{r:?}");
    assert_eq!(r.reason(), Some("conditionNotMet"));
    assert_eq!(get_event(&env, &token, id).await.body["summary"], "x", "a refused patch changes nothing");

    let r = call_if_match(&env, "PATCH", &path, &token, etag, Some(json!({"summary": "y"}))).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["summary"], "y");

    // The old etag is stale now, for delete too.
    let r = call_if_match(&env, "DELETE", &path, &token, etag, None).await;
    assert_eq!(r.status, 412, "{r:?}");
    assert_eq!(get_event(&env, &token, id).await.body["status"], "confirmed");
    env.fake.stop().await;
}

#[tokio::test]
async fn a_deleted_event_is_cancelled_and_deleting_it_again_is_gone() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let e = env.insert_event(&token, timed("x", "2026-06-15T09:00:00Z", "2026-06-15T10:00:00Z")).await;
    let id = e["id"].as_str().unwrap();

    let r = delete(&env, &token, id).await;
    assert_eq!(r.status, 204, "{r:?}");
    assert!(r.text.is_empty(), "204 has no body: {r:?}");

    let g = get_event(&env, &token, id).await;
    assert_eq!(g.status, 200, "events.get still returns a deleted event: {g:?}");
    assert_eq!(g.body["status"], "cancelled");
    assert_eq!(g.body["id"], id);

    let r = delete(&env, &token, id).await;
    assert_eq!(r.status, 410, "{r:?}");
    assert_eq!(r.reason(), Some("deleted"));

    let r = get_event(&env, &token, "neverexisted0").await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.reason(), Some("notFound"));
    env.fake.stop().await;
}

// ---- recurring series ----

#[tokio::test]
async fn a_timed_series_has_instances_with_googles_ids() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let m = env
        .insert_event(
            &token,
            series("Standup", "2026-06-15T09:00:00Z", "2026-06-15T09:15:00Z", "UTC", "RRULE:FREQ=DAILY;COUNT=5"),
        )
        .await;
    let mid = m["id"].as_str().unwrap().to_owned();
    assert_eq!(m["recurrence"], json!(["RRULE:FREQ=DAILY;COUNT=5"]));
    assert_eq!(m["start"]["timeZone"], "UTC");

    let r = instances(&env, &token, &mid, "").await;
    let expected: Vec<String> = (15..20).map(|d| format!("{mid}_202606{d}T090000Z")).collect();
    assert_eq!(ids(&r.body["items"]), expected);
    for (i, inst) in r.body["items"].as_array().unwrap().iter().enumerate() {
        let day = 15 + i;
        assert_eq!(inst["recurringEventId"], mid.as_str());
        assert_eq!(inst["originalStartTime"]["dateTime"], format!("2026-06-{day}T09:00:00Z"));
        assert_eq!(inst["start"]["dateTime"], format!("2026-06-{day}T09:00:00Z"));
        assert_eq!(inst["end"]["dateTime"], format!("2026-06-{day}T09:15:00Z"));
        assert_eq!(inst["iCalUID"], m["iCalUID"], "instances share the series' iCalUID");
        assert_eq!(inst["summary"], "Standup");
        assert_eq!(inst["status"], "confirmed");
        assert!(inst.get("recurrence").is_none(), "only the master has recurrence: {inst}");
    }
    assert!(r.body.get("nextPageToken").is_none());

    // An instance id can be read on its own.
    let g = get_event(&env, &token, &expected[2]).await;
    assert_eq!(g.status, 200, "{g:?}");
    assert_eq!(g.body["id"], expected[2].as_str());
    assert_eq!(g.body["recurringEventId"], mid.as_str());

    // timeMin bounds the end (exclusive), timeMax the start (exclusive).
    let r = instances(&env, &token, &mid, "timeMin=2026-06-16T09:10:00Z&timeMax=2026-06-18T09:00:00Z").await;
    assert_eq!(ids(&r.body["items"]), expected[1..3].to_vec());

    // Paging.
    let mut seen = Vec::new();
    let mut page: Option<String> = None;
    for round in 0.. {
        assert!(round < 5, "paging does not end");
        let q = match &page {
            Some(p) => format!("maxResults=2&pageToken={p}"),
            None => "maxResults=2".to_owned(),
        };
        let r = instances(&env, &token, &mid, &q).await;
        let got = ids(&r.body["items"]);
        assert!(got.len() <= 2, "{r:?}");
        seen.extend(got);
        match r.body["nextPageToken"].as_str() {
            Some(p) => page = Some(p.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, expected);
    env.fake.stop().await;
}

#[tokio::test]
async fn an_all_day_series_has_date_instance_ids() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let m = env
        .insert_event(
            &token,
            json!({"summary": "On call", "start": {"date": "2026-09-01"}, "end": {"date": "2026-09-02"},
                   "recurrence": ["RRULE:FREQ=DAILY;COUNT=3"]}),
        )
        .await;
    let mid = m["id"].as_str().unwrap();
    let r = instances(&env, &token, mid, "").await;
    assert_eq!(
        ids(&r.body["items"]),
        vec![format!("{mid}_20260901"), format!("{mid}_20260902"), format!("{mid}_20260903")]
    );
    let second = &r.body["items"][1];
    assert_eq!(second["start"], json!({"date": "2026-09-02"}));
    assert_eq!(second["end"], json!({"date": "2026-09-03"}));
    assert_eq!(second["originalStartTime"], json!({"date": "2026-09-02"}));
    env.fake.stop().await;
}

#[tokio::test]
async fn patching_an_instance_makes_an_exception() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let m = env
        .insert_event(
            &token,
            series("Standup", "2026-06-15T09:00:00Z", "2026-06-15T09:15:00Z", "UTC", "RRULE:FREQ=DAILY;COUNT=5"),
        )
        .await;
    let mid = m["id"].as_str().unwrap();
    let iid = format!("{mid}_20260616T090000Z");
    let r = patch(
        &env,
        &token,
        &iid,
        json!({"summary": "Moved standup",
               "start": {"dateTime": "2026-06-16T10:00:00Z"}, "end": {"dateTime": "2026-06-16T10:15:00Z"}}),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["id"], iid.as_str());
    assert_eq!(r.body["recurringEventId"], mid);
    assert_eq!(r.body["originalStartTime"]["dateTime"], "2026-06-16T09:00:00Z");
    assert_eq!(r.body["start"]["dateTime"], "2026-06-16T10:00:00Z");
    assert_eq!(r.body["summary"], "Moved standup");
    assert!(r.body.get("recurrence").is_none(), "{}", r.body);

    let list = instances(&env, &token, mid, "").await;
    let items = list.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    let moved = items.iter().find(|i| i["id"] == iid.as_str()).expect("exception listed under its instance id");
    assert_eq!(moved["summary"], "Moved standup");
    assert_eq!(moved["start"]["dateTime"], "2026-06-16T10:00:00Z");
    let master = get_event(&env, &token, mid).await;
    assert_eq!(master.body["summary"], "Standup", "the series is untouched");
    assert_eq!(items.iter().filter(|i| i["summary"] == "Standup").count(), 4);
    env.fake.stop().await;
}

#[tokio::test]
async fn deleting_an_instance_cancels_only_that_instance() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let m = env
        .insert_event(
            &token,
            series("Standup", "2026-06-15T09:00:00Z", "2026-06-15T09:15:00Z", "UTC", "RRULE:FREQ=DAILY;COUNT=5"),
        )
        .await;
    let mid = m["id"].as_str().unwrap();
    let iid = format!("{mid}_20260617T090000Z");
    let r = delete(&env, &token, &iid).await;
    assert_eq!(r.status, 204, "{r:?}");

    let list = instances(&env, &token, mid, "").await;
    let got = ids(&list.body["items"]);
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(!got.contains(&iid), "a cancelled instance is not listed: {got:?}");

    let with_deleted = instances(&env, &token, mid, "showDeleted=true").await;
    let items = with_deleted.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    let cancelled = items.iter().find(|i| i["id"] == iid.as_str()).expect("listed with showDeleted=true");
    assert_eq!(cancelled["status"], "cancelled");

    let g = get_event(&env, &token, &iid).await;
    assert_eq!(g.status, 200, "{g:?}");
    assert_eq!(g.body["status"], "cancelled");
    assert_eq!(g.body["recurringEventId"], mid);
    assert_eq!(g.body["originalStartTime"]["dateTime"], "2026-06-17T09:00:00Z");
    assert_eq!(get_event(&env, &token, mid).await.body["status"], "confirmed", "the series lives on");
    assert_eq!(delete(&env, &token, &iid).await.status, 410, "deleting it again: gone");
    env.fake.stop().await;
}

#[tokio::test]
async fn deleting_the_series_cancels_its_exceptions() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let m = env
        .insert_event(
            &token,
            series("Standup", "2026-06-15T09:00:00Z", "2026-06-15T09:15:00Z", "UTC", "RRULE:FREQ=DAILY;COUNT=5"),
        )
        .await;
    let mid = m["id"].as_str().unwrap();
    let iid = format!("{mid}_20260616T090000Z");
    assert_eq!(patch(&env, &token, &iid, json!({"summary": "special"})).await.status, 200);

    assert_eq!(delete(&env, &token, mid).await.status, 204);
    assert_eq!(get_event(&env, &token, mid).await.body["status"], "cancelled");
    let ex = get_event(&env, &token, &iid).await;
    assert_eq!(ex.status, 200, "{ex:?}");
    assert_eq!(ex.body["status"], "cancelled", "the exception went with its series: {ex:?}");
    let list = env.get(&format!("{EVENTS}?singleEvents=true"), &token).await;
    assert!(ids(&list.body["items"]).is_empty(), "nothing of the series is left: {list:?}");
    env.fake.stop().await;
}

#[tokio::test]
async fn a_weekly_series_keeps_its_local_time_across_daylight_saving() {
    let env = stockholm_env().await;
    let token = env.token_all(ALICE).await;
    // Mondays at 09:00 Stockholm; summer time starts on Sunday 29 March 2026.
    let m = env
        .insert_event(
            &token,
            series("Weekly", "2026-03-23T09:00:00", "2026-03-23T09:30:00", STOCKHOLM, "RRULE:FREQ=WEEKLY;COUNT=3"),
        )
        .await;
    let mid = m["id"].as_str().unwrap();
    assert_eq!(m["start"]["dateTime"], "2026-03-23T09:00:00+01:00");
    let r = instances(&env, &token, mid, "").await;
    assert_eq!(
        ids(&r.body["items"]),
        vec![format!("{mid}_20260323T080000Z"), format!("{mid}_20260330T070000Z"), format!("{mid}_20260406T070000Z")]
    );
    let starts: Vec<&str> =
        r.body["items"].as_array().unwrap().iter().map(|i| i["start"]["dateTime"].as_str().unwrap()).collect();
    assert_eq!(starts, ["2026-03-23T09:00:00+01:00", "2026-03-30T09:00:00+02:00", "2026-04-06T09:00:00+02:00"]);
    let ends: Vec<&str> =
        r.body["items"].as_array().unwrap().iter().map(|i| i["end"]["dateTime"].as_str().unwrap()).collect();
    assert_eq!(ends, ["2026-03-23T09:30:00+01:00", "2026-03-30T09:30:00+02:00", "2026-04-06T09:30:00+02:00"]);
    let g = get_event(&env, &token, &format!("{mid}_20260330T070000Z")).await;
    assert_eq!(g.status, 200, "{g:?}");
    assert_eq!(g.body["start"]["timeZone"], STOCKHOLM);
    env.fake.stop().await;
}

// ---- calendar settings ----

#[tokio::test]
async fn the_primary_calendar_reports_its_time_zone() {
    let env = stockholm_env().await;
    let token = env.token_all(ALICE).await;

    let r = env.get("/calendar/v3/users/me/calendarList/primary", &token).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["kind"], "calendar#calendarListEntry");
    assert_eq!(r.body["id"], ALICE);
    assert_eq!(r.body["primary"], true);
    assert_eq!(r.body["timeZone"], STOCKHOLM);
    assert_eq!(r.body["accessRole"], "owner");

    let r = env.get("/calendar/v3/users/me/settings/timezone", &token).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["kind"], "calendar#setting");
    assert_eq!(r.body["id"], "timezone");
    assert_eq!(r.body["value"], STOCKHOLM);
    assert!(r.body["etag"].is_string());

    let r = env.get("/calendar/v3/calendars/primary", &token).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["kind"], "calendar#calendar");
    assert_eq!(r.body["id"], ALICE);
    assert_eq!(r.body["timeZone"], STOCKHOLM);

    let r = env.get(EVENTS, &token).await;
    assert_eq!(r.body["timeZone"], STOCKHOLM);
    env.fake.stop().await;
}

#[tokio::test]
async fn the_control_api_changes_a_calendars_time_zone() {
    let env = Env::new().await;
    let token = env.token_all(ALICE).await;
    let e = env.insert_event(&token, timed("x", "2026-01-15T14:00:00Z", "2026-01-15T15:00:00Z")).await;
    assert_eq!(e["start"]["dateTime"], "2026-01-15T14:00:00Z");
    assert_eq!(env.get("/calendar/v3/users/me/settings/timezone", &token).await.body["value"], "UTC");

    let r =
        env.control("PUT", &format!("/_fake/calendars/{ALICE}"), Some(json!({"time_zone": "America/New_York"}))).await;
    assert_eq!(r.status, 200, "{r:?}");

    assert_eq!(env.get("/calendar/v3/users/me/settings/timezone", &token).await.body["value"], "America/New_York");
    assert_eq!(env.get("/calendar/v3/calendars/primary", &token).await.body["timeZone"], "America/New_York");
    assert_eq!(
        env.get("/calendar/v3/users/me/calendarList/primary", &token).await.body["timeZone"],
        "America/New_York"
    );
    let g = get_event(&env, &token, e["id"].as_str().unwrap()).await;
    assert_eq!(g.body["start"]["dateTime"], "2026-01-15T09:00:00-05:00", "times follow the calendar's zone");
    // Bob's calendar is not affected.
    let bob = env.token_all(BOB).await;
    assert_eq!(env.get("/calendar/v3/users/me/settings/timezone", &bob).await.body["value"], "UTC");
    env.fake.stop().await;
}
