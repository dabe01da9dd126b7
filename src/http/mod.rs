//! The HTTP surface: health (public), and the admin API under `/api/v1` (bearer token). One file
//! per area, each with its own `configure`.

pub mod body;
pub mod channels;
pub mod contacts;
pub mod diagnose;
pub mod error;
pub mod health;
pub mod jobs;
pub mod tenants;
pub mod users;
pub mod webhook;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::{Next, from_fn};
use actix_web::{HttpResponse, web};

use crate::app::AppState;
use error::ApiError;

/// Routes of the whole app; `serve` and tests mount the same thing.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.configure(health::configure).configure(webhook::configure).configure(contacts::configure_public).service(
        web::scope("/api/v1")
            .wrap(from_fn(require_admin_token))
            .configure(tenants::configure)
            .configure(users::configure)
            .configure(diagnose::configure)
            .configure(channels::configure)
            .configure(jobs::configure)
            .configure(contacts::configure_api)
            .default_service(web::to(no_such_endpoint)),
    );
}

async fn no_such_endpoint() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found("no_such_endpoint", "no such endpoint; see README.md for the API"))
}

/// `Authorization: Bearer <admin token>`, compared in constant time.
async fn require_admin_token(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let ok =
        match (req.app_data::<web::Data<AppState>>(), req.headers().get("authorization").and_then(|v| v.to_str().ok()))
        {
            (Some(state), Some(h)) => match h.split_once(' ') {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                    state.admin_token_matches(token.trim())
                }
                _ => false,
            },
            _ => false,
        };
    if !ok {
        let err = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send the admin token as `Authorization: Bearer <GWSYNC_ADMIN_TOKEN>`",
        );
        let resp: HttpResponse = actix_web::ResponseError::error_response(&err);
        return Ok(req.into_response(resp).map_into_right_body());
    }
    next.call(req).await.map(ServiceResponse::map_into_left_body)
}
