//! The operator commands (`gwsync tenant …`, `gwsync user …`, `gwsync diagnose`) talk to the
//! running server's admin API — sled allows one process per database, so they never open it.

use anyhow::{Context, Result, bail};
use serde_json::Value;
use url::Url;

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

pub struct AdminClient {
    base: Url,
    token: Option<String>,
    http: reqwest::Client,
}

pub enum Body {
    Json(Value),
    Raw(Vec<u8>),
}

impl AdminClient {
    pub fn new(server: &str, token: Option<String>) -> Result<Self> {
        let mut base =
            Url::parse(server).with_context(|| format!("--server / GWSYNC_SERVER '{server}' is not a URL"))?;
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(120)).build()?;
        Ok(AdminClient { base, token, http })
    }

    /// Calls the admin API; the JSON body on success, the server's error message otherwise.
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Body>) -> Result<Value> {
        let url = self.base.join(path.trim_start_matches('/')).context("building the URL")?;
        let mut req = self.http.request(method, url.clone());
        match &self.token {
            Some(t) => req = req.bearer_auth(t),
            None => bail!("set GWSYNC_ADMIN_TOKEN to the server's admin token"),
        }
        req = match body {
            Some(Body::Json(v)) => req.json(&v),
            Some(Body::Raw(bytes)) => req.header("content-type", "application/json").body(bytes),
            None => req,
        };
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach gwsync at {}: {}", self.base, e.without_url()))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let value: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            let code = value["error"]["code"].as_str().unwrap_or("error");
            let message = value["error"]["message"].as_str().map(str::to_owned).unwrap_or_else(|| value.to_string());
            bail!("{status} {code}: {message}");
        }
        Ok(value)
    }
}

/// Parses `--profile "Lunch: lunch, lunchmöte"` into a profile object.
pub fn parse_profile(s: &str) -> Result<Value> {
    let (name, triggers) = s.split_once(':').unwrap_or((s, ""));
    let name = name.trim();
    if name.is_empty() {
        bail!("--profile '{s}': write it as \"Name: trigger, trigger\"");
    }
    let triggers: Vec<&str> = triggers.split(',').map(str::trim).filter(|t| !t.is_empty()).collect();
    Ok(serde_json::json!({ "name": name, "triggers": triggers }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_parse_from_the_command_line() {
        assert_eq!(
            parse_profile("Lunch: lunch, lunchmöte").unwrap(),
            serde_json::json!({"name": "Lunch", "triggers": ["lunch", "lunchmöte"]})
        );
        assert_eq!(parse_profile("Semester").unwrap(), serde_json::json!({"name": "Semester", "triggers": []}));
        assert!(parse_profile(": x").is_err());
    }
}
