//! The HTTP surface: health (public), and the admin API under `/api/v1` (bearer token; who may
//! do what is `access`). One file per area, each with its own `configure`.

pub mod access;
pub mod audit;
pub mod body;
pub mod channels;
pub mod contacts;
pub mod diagnose;
pub mod error;
pub mod health;
pub mod jobs;
pub mod phone_system;
pub mod tenants;
pub mod tokens;
pub mod users;
pub mod webhook;

use actix_web::middleware::from_fn;
use actix_web::{HttpResponse, web};

use error::ApiError;

/// Routes of the whole app; `serve` and tests mount the same thing. Who may call each one is
/// `access::policy::ROUTES`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    extractor_errors(cfg);
    cfg.configure(health::configure)
        .configure(webhook::configure)
        .configure(contacts::configure_public)
        .configure(crate::console::configure)
        .service(
            web::scope("/api/v1")
                .wrap(from_fn(access::guard))
                .configure(tenants::configure)
                .configure(users::configure)
                .configure(diagnose::configure)
                .configure(channels::configure)
                .configure(jobs::configure)
                .configure(phone_system::configure)
                .configure(contacts::configure_api)
                .configure(tokens::configure)
                .configure(audit::configure)
                .default_service(web::to(no_such_endpoint)),
        );
}

/// A path, query string or JSON body that does not fit its extractor answers in the API's
/// error shape, like every other error, with a stable code.
pub fn extractor_errors(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PathConfig::default().error_handler(|e, _| {
        let cause = match e {
            actix_web::error::PathError::Deserialize(e) => e.to_string(),
            other => other.to_string(),
        };
        let message = format!("the path does not fit this endpoint: {}", body::without_quoted_strings(&cause));
        ApiError::bad_request("invalid_path", message).into()
    }))
    .app_data(web::QueryConfig::default().error_handler(|e, _| {
        let cause = match e {
            actix_web::error::QueryPayloadError::Deserialize(e) => e.to_string(),
            other => other.to_string(),
        };
        let message = format!("the query string does not fit this endpoint: {}", body::without_quoted_strings(&cause));
        ApiError::bad_request("invalid_query", message).into()
    }))
    .app_data(web::JsonConfig::default().error_handler(|e, _| {
        use actix_web::error::JsonPayloadError as E;
        use actix_web::http::StatusCode;
        match e {
            E::OverflowKnownLength { limit, .. } | E::Overflow { limit } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body is larger than {limit} bytes"),
            ),
            E::ContentType => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send JSON with Content-Type: application/json",
            ),
            E::Deserialize(e) => ApiError::bad_request(
                "invalid_json",
                format!("the body is not valid for this request: {}", body::without_quoted_strings(&e.to_string())),
            ),
            other => ApiError::bad_request("bad_body", format!("could not read the request body: {other}")),
        }
        .into()
    }));
}

async fn no_such_endpoint() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found("no_such_endpoint", "no such endpoint; see README.md for the API"))
}
