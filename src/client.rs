//! The operator commands (`gwsync tenant …`, `gwsync user …`, `gwsync diagnose`) talk to the
//! running server's admin API — sled allows one process per database, so they never open it.
//! Every argument that goes into a path is percent-encoded as one segment (DESIGN §7).

use anyhow::{Context, Result, bail};
use serde_json::Value;
use url::Url;

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// Everything but RFC 3986's unreserved characters is percent-encoded in a path segment: `/`,
/// `%`, `?` and `#` included, so no argument can reach another path or smuggle a query.
const SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// One path segment, percent-encoded. `.` and `..` (which a URL resolves) and empty segments
/// are refused.
pub fn segment(s: &str) -> Result<String> {
    if matches!(s, "" | "." | "..") {
        bail!("'{s}' cannot be used as a name in a path");
    }
    Ok(percent_encoding::utf8_percent_encode(s, SEGMENT).to_string())
}

/// `api/v1/<segments>`, each segment percent-encoded, and the query (form-encoded) if any.
pub fn api_path(segments: &[&str], query: &[(&str, &str)]) -> Result<String> {
    let mut path = String::from("api/v1");
    for s in segments {
        path.push('/');
        path.push_str(&segment(s)?);
    }
    if !query.is_empty() {
        path.push('?');
        path.push_str(&url::form_urlencoded::Serializer::new(String::new()).extend_pairs(query).finish());
    }
    Ok(path)
}

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
            None => bail!(
                "set GWSYNC_ADMIN_TOKEN to the server's admin token (or GWSYNC_TOKEN to a token made with `gwsync token create`)"
            ),
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

    #[test]
    fn arguments_stay_one_path_segment() {
        assert_eq!(
            api_path(&["tenants", "acme", "users", "nobody@acme.test/../../../victim"], &[]).unwrap(),
            "api/v1/tenants/acme/users/nobody%40acme.test%2F..%2F..%2F..%2Fvictim"
        );
        assert_eq!(segment("%2e%2e").unwrap(), "%252e%252e", "a pre-encoded dot segment stays literal");
        assert_eq!(segment("a?b#c").unwrap(), "a%3Fb%23c");
        for bad in ["", ".", ".."] {
            assert!(segment(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            api_path(&["channels", "renew"], &[("within", "48 h&x=1")]).unwrap(),
            "api/v1/channels/renew?within=48+h%26x%3D1"
        );
        let base = Url::parse("http://127.0.0.1:8080/").unwrap();
        let url = base.join(&api_path(&["tenants", "acme", "users", "x/../../../victim"], &[]).unwrap()).unwrap();
        let segments: Vec<&str> = url.path_segments().unwrap().collect();
        assert_eq!(segments, ["api", "v1", "tenants", "acme", "users", "x%2F..%2F..%2F..%2Fvictim"], "{url}");
    }
}
