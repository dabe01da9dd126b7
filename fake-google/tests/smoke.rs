//! The harness itself works: a fake with a domain and a key, a token, an API call.
mod common;

use common::*;

#[tokio::test]
async fn a_service_account_signs_in_and_reads_its_calendar() {
    let env = Env::new().await;
    assert_eq!(env.key["type"], "service_account");
    let token = env.token(ALICE, &[CALENDAR_READONLY]).await;
    let r = env.get("/calendar/v3/calendars/primary/events", &token).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["kind"], "calendar#events");
    assert_eq!(r.body["summary"], ALICE);
    env.fake.stop().await;
}
