//! `POST /api/v1/channels/renew?within=48h`: renews every push channel expiring within the
//! given time (and registers one for users who have none live). It answers `202 Accepted` at
//! once with the job to watch (`GET /api/v1/jobs/{id}`, `Location`): a sweep over 100,000
//! users takes minutes, longer than a reverse proxy waits. `gwsync renew` and
//! `scripts/renew-channels.sh` start it and wait for the report.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::jobs::accepted;
use crate::app::AppState;
use crate::sync::SyncService;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/channels/renew", web::post().to(renew));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Query {
    within: Option<String>,
}

async fn renew(
    state: web::Data<AppState>,
    sync: web::Data<SyncService>,
    query: web::Query<Query>,
) -> Result<HttpResponse, ApiError> {
    let within = match &query.within {
        None => Duration::from_secs(48 * 3600),
        Some(w) => humantime::parse_duration(w).map_err(|_| {
            ApiError::bad_request("invalid_request", format!("within: '{w}' is not a duration such as 48h"))
        })?,
    };
    // No channel lives longer than 7 days, so a longer window just means every channel.
    let within = within.min(Duration::from_secs(7 * 24 * 3600));
    let sync = sync.into_inner();
    let job = state
        .jobs
        .start("channels.renew", None, async move {
            crate::sync::renewal::renew_due(sync, within)
                .await
                .map_err(|e| json!({"code": "database", "message": format!("the renewal stopped: {e}")}))
        })
        .await;
    Ok(accepted(&job))
}
