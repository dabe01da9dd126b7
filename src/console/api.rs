//! The console is a client of gwsync's own API: every page reads and every form writes through
//! `/api/v1` on this process's listen address, as the signed-in person
//! (`access::console_authorization`). So what a form accepts, who may submit it, and what the
//! audit log records are the API's own — there is no second copy of any of it to drift.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::access::{Actor, console_authorization};
use crate::app::AppState;

/// Longest an API call from the console may take (the API answers long work with 202).
const TIMEOUT: Duration = Duration::from_secs(30);

/// An API answer that is not a 2xx: its status, stable code and message.
#[derive(Debug, Clone)]
pub struct ApiFailure {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl ApiFailure {
    /// The field a validation message names (`phone_system.url: …`), if any.
    pub fn field(&self) -> Option<&str> {
        let (field, _) = self.message.split_once(": ")?;
        (!field.is_empty() && field.chars().all(|c| c.is_ascii_alphanumeric() || "._[]".contains(c))).then_some(field)
    }

    /// The message without the field it names.
    pub fn text(&self) -> &str {
        match self.field() {
            Some(f) => self.message[f.len() + 2..].trim(),
            None => &self.message,
        }
    }
}

pub struct SelfApi {
    base: String,
    http: reqwest::Client,
}

/// Where this process answers its own API: its listen address, on loopback if it listens on
/// every interface.
fn own_address(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}

impl SelfApi {
    pub fn new(listen: SocketAddr) -> Result<SelfApi, String> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .no_proxy()
            .build()
            .map_err(|e| format!("building the console's API client: {e}"))?;
        Ok(SelfApi { base: own_address(listen), http })
    }

    /// Calls `path` (under `/api/v1`, segments already percent-encoded) as `actor`.
    pub async fn call(
        &self,
        app: &AppState,
        actor: &Actor,
        method: Method,
        path: &str,
        body: Option<Body>,
    ) -> Result<Value, ApiFailure> {
        let auth = console_authorization(app, actor).ok_or_else(|| internal("sealing the console's credentials"))?;
        let mut req = self.http.request(method, format!("{}/api/v1{path}", self.base)).header("Authorization", auth);
        req = match body {
            None => req,
            Some(Body::Json(v)) => req.json(&v),
            Some(Body::Bytes(b)) => req.header("Content-Type", "application/json").body(b),
        };
        let resp = req.send().await.map_err(|e| {
            tracing::error!(error = %e.without_url(), "the console could not reach its own API");
            internal("reaching the API")
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|_| internal("reading the API's answer"))?;
        let value: Value =
            if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        if status.is_success() {
            return Ok(value);
        }
        let err = &value["error"];
        Err(ApiFailure {
            status: status.as_u16(),
            code: err["code"].as_str().unwrap_or("error").to_owned(),
            message: err["message"].as_str().unwrap_or("the request failed").to_owned(),
        })
    }

    pub async fn get(&self, app: &AppState, actor: &Actor, path: &str) -> Result<Value, ApiFailure> {
        self.call(app, actor, Method::GET, path, None).await
    }
}

pub enum Body {
    Json(Value),
    /// Sent as is (a key file exactly as uploaded).
    Bytes(Vec<u8>),
}

fn internal(what: &str) -> ApiFailure {
    ApiFailure { status: 500, code: "internal".into(), message: format!("{what} failed; see the server log") }
}

/// A path segment, percent-encoded (emails carry `@` and `+`).
pub fn seg(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_naming_a_field_is_shown_beside_that_field() {
        let f = ApiFailure {
            status: 400,
            code: "invalid_request".into(),
            message: "phone_system.url: must be https".into(),
        };
        assert_eq!(f.field(), Some("phone_system.url"));
        assert_eq!(f.text(), "must be https");
        let g = ApiFailure { status: 409, code: "x".into(), message: "tenant 'a' has users: delete them".into() };
        assert_eq!(g.field(), None);
    }

    #[test]
    fn a_wildcard_listen_address_is_called_on_loopback() {
        assert_eq!(own_address("0.0.0.0:8080".parse().unwrap()), "http://127.0.0.1:8080");
        assert_eq!(own_address("127.0.0.1:9".parse().unwrap()), "http://127.0.0.1:9");
    }
}
