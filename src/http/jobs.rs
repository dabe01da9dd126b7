//! `GET /api/v1/jobs/{id}`: a long admin request's progress and report (`jobs`).

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::error::ApiError;
use crate::access::Actor;
use crate::app::AppState;
use crate::jobs::Job;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/jobs/{job}", web::get().to(get));
}

/// `202 Accepted` for a job just started: where to watch it, in the body and in `Location`.
pub fn accepted(job: &Job) -> HttpResponse {
    let status = format!("/api/v1/jobs/{}", job.id);
    HttpResponse::Accepted().insert_header(("Location", status.clone())).json(json!({ "job": job, "status": status }))
}

async fn get(
    state: web::Data<AppState>,
    actor: web::ReqData<Actor>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    // A tenant token sees its own tenant's jobs only; others' are as unknown as a wrong id.
    let visible = |job: &Job| actor.tenant.is_none() || actor.tenant == job.tenant;
    let found = state.jobs.get(&id).await.map_err(|e| ApiError::internal("reading the job", &e))?;
    match found.filter(visible) {
        Some(job) => Ok(HttpResponse::Ok().json(job)),
        None => Err(ApiError::not_found(
            "job_not_found",
            format!(
                "no job '{id}': job reports are kept for a while (in memory until the server restarts; with replicas, the last 1,000 in the database)"
            ),
        )),
    }
}
