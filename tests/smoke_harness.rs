//! The harness works: gwsync answers health checks and refuses the admin API without a token.
mod common;

use common::*;

#[tokio::test]
async fn gwsync_serves_health_and_guards_the_admin_api() {
    let app = TestApp::start().await;
    let r = app.raw("GET", "/healthz", &[], vec![]).await;
    assert_eq!(r.status, 200);
    let r = app.raw("GET", "/api/v1/tenants", &[], vec![]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.code(), "unauthorized");
    let r = app.api("GET", "/api/v1/tenants", None).await;
    assert_eq!(r.status, 200, "{r:?}");
    app.stop().await;
}
