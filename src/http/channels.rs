//! `POST /api/v1/channels/renew?within=48h`: renews now every push channel expiring within the
//! given time (and registers one for users who have none live), the user's job lock ensuring
//! no renewal overlaps another. `gwsync renew` and `scripts/renew-channels.sh` call it from cron.

use std::collections::BTreeSet;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use crate::app::AppState;
use crate::model::CalendarKey;
use crate::sync::SyncService;
use crate::sync::channels::{Ensured, is_live};

/// Renewals run this many at a time (each is paced under Google's quotas anyway).
const PARALLEL: usize = 8;

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
    let now = sync.clock.now();
    let horizon = now + chrono::Duration::from_std(within).unwrap_or_default();
    let store = &state.store;
    let mut due: BTreeSet<CalendarKey> = BTreeSet::new();
    let mut checked = 0;
    for t in store.tenants()? {
        for u in store.users(&t.id)? {
            checked += 1;
            let live: Vec<_> = store.channels_of(&t.id, &u.email)?.into_iter().filter(|c| is_live(c, now)).collect();
            let newest = live.iter().filter_map(|c| c.expiration).max();
            if newest.is_none_or(|e| e <= horizon) {
                due.insert(CalendarKey::new(&t.id, &u.email));
            }
        }
    }
    let results: Vec<(CalendarKey, Result<Ensured, crate::sync::error::SyncError>)> = futures_util::stream::iter(due)
        .map(|key| {
            let sync = sync.clone();
            async move {
                let r = sync.renew_user(&key, within).await;
                (key, r)
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let mut renewed: Vec<Value> = Vec::new();
    let mut failed: Vec<Value> = Vec::new();
    for (key, result) in results {
        match result {
            Ok(Ensured::Renewed { new, old }) => {
                renewed.push(json!({"tenant": key.tenant, "user": key.user, "channel": new.id, "expiration": new.expiration, "replaced": old}))
            }
            Ok(Ensured::Registered(new)) => {
                renewed.push(json!({"tenant": key.tenant, "user": key.user, "channel": new.id, "expiration": new.expiration, "replaced": []}))
            }
            Ok(Ensured::Fine) => {}
            Err(e) => failed.push(json!({"tenant": key.tenant, "user": key.user, "code": e.code(), "message": e.to_string(), "hint": e.hint()})),
        }
    }
    tracing::info!(checked, renewed = renewed.len(), failed = failed.len(), "channel renewal on request");
    Ok(HttpResponse::Ok().json(json!({
        "within": humantime::format_duration(within).to_string(),
        "users_checked": checked,
        "renewed": renewed,
        "failed": failed,
    })))
}
