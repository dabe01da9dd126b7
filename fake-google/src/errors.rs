//! Google's error bodies, in each API's own envelope.
//!
//! Calendar speaks the legacy envelope (`error.errors[]` with domain, reason, message, location)
//! with the newer `status` beside it; People speaks google.rpc (`code`, `message`, `status`,
//! `details[]`) with no `errors[]`; the token endpoint speaks OAuth2 (`error`,
//! `error_description`). Clients parse these exact shapes, so every refusal the fake makes goes
//! through one of the constructors here.

use actix_web::{HttpResponse, ResponseError, http::StatusCode};
use serde_json::{Value, json};

/// An error response, ready to send: status, JSON body and any extra headers.
#[derive(Debug, Clone)]
pub struct GoogleError {
    pub status: u16,
    pub body: Value,
    pub headers: Vec<(String, String)>,
    /// A non-JSON body (content type, text), for the HTML pages Google's front end serves on 502.
    pub raw_body: Option<(String, String)>,
}

impl std::fmt::Display for GoogleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.body)
    }
}

impl ResponseError for GoogleError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status_code());
        for (k, v) in &self.headers {
            resp.insert_header((k.as_str(), v.as_str()));
        }
        match &self.raw_body {
            Some((content_type, text)) => resp.content_type(content_type.as_str()).body(text.clone()),
            None => resp
                .content_type("application/json; charset=UTF-8")
                .body(serde_json::to_vec_pretty(&self.body).unwrap_or_default()),
        }
    }
}

/// The canonical google.rpc status name for an HTTP status.
pub fn rpc_status_name(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        410 => "NOT_FOUND",
        412 => "FAILED_PRECONDITION",
        429 => "RESOURCE_EXHAUSTED",
        500 => "INTERNAL",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    }
}

impl GoogleError {
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// A Calendar error: legacy `errors[]` entry plus `status`.
    pub fn calendar(status: u16, domain: &str, reason: &str, message: &str) -> Self {
        Self::calendar_full(status, domain, reason, message, None, message, None)
    }

    /// A Calendar error whose `errors[0]` names the offending parameter or header.
    pub fn calendar_at(
        status: u16,
        domain: &str,
        reason: &str,
        message: &str,
        location_type: &str,
        location: &str,
    ) -> Self {
        Self::calendar_full(status, domain, reason, message, Some((location_type, location)), message, None)
    }

    /// The general form: `top_message` is `error.message`, `message` is `errors[0].message`
    /// (Google sometimes words them differently), `details` the google.rpc details if any.
    pub fn calendar_full(
        status: u16,
        domain: &str,
        reason: &str,
        message: &str,
        location: Option<(&str, &str)>,
        top_message: &str,
        details: Option<Value>,
    ) -> Self {
        let mut item = json!({ "domain": domain, "reason": reason, "message": message });
        if let Some((lt, l)) = location {
            item["locationType"] = json!(lt);
            item["location"] = json!(l);
        }
        let mut error = json!({
            "errors": [item],
            "code": status,
            "message": top_message,
        });
        if status != 410 {
            // Google's 410 fullSyncRequired body carries no status; the others do.
            error["status"] = json!(rpc_status_name(status));
        }
        if let Some(d) = details {
            error["details"] = d;
        }
        GoogleError { status, body: json!({ "error": error }), headers: vec![], raw_body: None }
    }

    /// Calendar's 400 for a parameter with a bad value.
    pub fn calendar_invalid_param(param: &str, message: &str) -> Self {
        Self::calendar_at(400, "global", "invalid", message, "parameter", param)
    }

    /// Calendar's 400 for a missing required field or parameter.
    pub fn calendar_required(message: &str, location: Option<(&str, &str)>) -> Self {
        Self::calendar_full(400, "global", "required", message, location, message, None)
    }

    pub fn calendar_not_found() -> Self {
        Self::calendar(404, "global", "notFound", "Not Found")
    }

    pub fn calendar_parse_error() -> Self {
        Self::calendar(400, "global", "parseError", "Parse Error")
    }

    /// A People (google.rpc) error.
    pub fn rpc(status: u16, message: &str, details: Vec<Value>) -> Self {
        let mut error = json!({
            "code": status,
            "message": message,
            "status": rpc_status_name(status),
        });
        if !details.is_empty() {
            error["details"] = Value::Array(details);
        }
        GoogleError { status, body: json!({ "error": error }), headers: vec![], raw_body: None }
    }

    /// A People error with an explicit google.rpc status name (e.g. FAILED_PRECONDITION on 400).
    pub fn rpc_with_status(status: u16, rpc_status: &str, message: &str, details: Vec<Value>) -> Self {
        let mut e = Self::rpc(status, message, details);
        e.body["error"]["status"] = json!(rpc_status);
        e
    }

    pub fn rpc_invalid_argument(message: &str) -> Self {
        Self::rpc(400, message, vec![])
    }

    /// The OAuth2 token endpoint's error shape.
    pub fn oauth(status: u16, error: &str, description: &str) -> Self {
        GoogleError {
            status,
            body: json!({ "error": error, "error_description": description }),
            headers: vec![],
            raw_body: None,
        }
    }
}

/// A google.rpc.ErrorInfo detail.
pub fn error_info(reason: &str, domain: &str, metadata: Value) -> Value {
    let mut v = json!({
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": domain,
    });
    if !metadata.is_null() {
        v["metadata"] = metadata;
    }
    v
}
