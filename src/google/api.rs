//! Calendar v3 and People v1 calls over one shared reqwest client, with Google's errors
//! classified (`error::ApiError`) and the per-user quota charged to the user (`quotaUser`), not
//! to the service account.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use url::Url;

use super::error::ApiError;
use crate::metrics::Metrics;

const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct GoogleApi {
    http: reqwest::Client,
    calendar: Url,
    people: Url,
    metrics: Option<Arc<Metrics>>,
}

/// Google caps `quotaUser` at 40 characters; longer addresses are shortened to a stable digest.
pub fn quota_user(user: &str) -> String {
    if user.len() <= 40 {
        return user.to_owned();
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, user.as_bytes());
    digest.as_ref().iter().take(20).map(|b| format!("{b:02x}")).collect()
}

fn with_trailing_slash(mut u: Url) -> Url {
    if !u.path().ends_with('/') {
        let p = format!("{}/", u.path());
        u.set_path(&p);
    }
    u
}

impl GoogleApi {
    /// `api_url` is the Calendar root (`https://www.googleapis.com`), `people_url` People's.
    pub fn new(api_url: &Url, people_url: &Url) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .user_agent(concat!("gwsync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let calendar = with_trailing_slash(api_url.clone()).join("calendar/v3/").map_err(|e| e.to_string())?;
        let people = with_trailing_slash(people_url.clone()).join("v1/").map_err(|e| e.to_string())?;
        Ok(GoogleApi { http, calendar, people, metrics: None })
    }

    /// Counts every call in `metrics` (by method and status).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// A Calendar URL from path segments (each percent-encoded).
    pub fn calendar_url(&self, segments: &[&str]) -> Url {
        let mut u = self.calendar.clone();
        if let Ok(mut s) = u.path_segments_mut() {
            s.pop_if_empty().extend(segments);
        }
        u
    }

    /// A People URL from a path relative to `v1/` (e.g. `people:listDirectoryPeople`).
    pub fn people_url(&self, path: &str) -> Url {
        // "./" keeps `people:` in `people:listDirectoryPeople` from reading as a URL scheme.
        self.people.join(&format!("./{path}")).unwrap_or_else(|_| self.people.clone())
    }

    /// GET with a bearer token; JSON on success, a classified error otherwise. `method` names
    /// the call in metrics (`events.list`, …).
    pub async fn get(
        &self,
        method: &str,
        url: Url,
        query: &[(&str, &str)],
        token: &SecretString,
        user: &str,
    ) -> Result<Value, ApiError> {
        let req = self.http.get(url).query(query);
        self.send(method, req, token, user).await
    }

    /// POST a JSON body.
    pub async fn post(
        &self,
        method: &str,
        url: Url,
        body: &Value,
        token: &SecretString,
        user: &str,
    ) -> Result<Value, ApiError> {
        let req = self.http.post(url).json(body);
        self.send(method, req, token, user).await
    }

    async fn send(
        &self,
        method: &str,
        req: reqwest::RequestBuilder,
        token: &SecretString,
        user: &str,
    ) -> Result<Value, ApiError> {
        let sent = req.bearer_auth(token.expose_secret()).header("x-goog-quota-user", quota_user(user)).send().await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                self.count(method, "network");
                return Err(ApiError::Network(e.without_url().to_string()));
            }
        };
        let status = resp.status().as_u16();
        self.count(method, &status.to_string());
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            // Google asks for seconds or minutes; anything beyond a day is not a real request.
            .map(|s| Duration::from_secs(s.min(24 * 3600)));
        let body = resp.bytes().await.map_err(|e| ApiError::Network(e.without_url().to_string()))?;
        if (200..300).contains(&status) {
            if body.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&body).map_err(|e| ApiError::Decode(e.to_string()));
        }
        Err(ApiError::from_response(status, &body, retry_after))
    }

    fn count(&self, method: &str, status: &str) {
        if let Some(m) = &self.metrics {
            m.google_call(method, status);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_encode_each_segment() {
        let api =
            GoogleApi::new(&Url::parse("http://127.0.0.1:9").unwrap(), &Url::parse("http://127.0.0.1:9/").unwrap())
                .unwrap();
        assert_eq!(
            api.calendar_url(&["calendars", "primary", "events"]).as_str(),
            "http://127.0.0.1:9/calendar/v3/calendars/primary/events"
        );
        assert_eq!(
            api.calendar_url(&["calendars", "a/b@x", "events"]).as_str(),
            "http://127.0.0.1:9/calendar/v3/calendars/a%2Fb@x/events"
        );
        assert_eq!(
            api.people_url("people:listDirectoryPeople").as_str(),
            "http://127.0.0.1:9/v1/people:listDirectoryPeople"
        );
        assert_eq!(quota_user("alice@acme.se"), "alice@acme.se");
        assert_eq!(quota_user(&format!("{}@acme.se", "a".repeat(40))).len(), 40);
    }
}
