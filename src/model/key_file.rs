//! Service-account JSON key files, checked field by field before they are sealed and stored.
//! Error messages name fields and never quote the key's contents.

use aws_lc_rs::rsa::KeyPair;
use base64::Engine;
use serde_json::Value;
use url::Url;

use super::{Invalid, invalid, refused_url};
use crate::outbound::OutboundPolicy;

/// The public facts of a valid key file (the private key stays in the sealed file).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyInfo {
    pub client_email: String,
    pub client_id: String,
    pub project_id: Option<String>,
    pub private_key_id: Option<String>,
    pub token_uri: String,
}

pub const MAX_KEY_FILE_BYTES: usize = 16 * 1024;

/// Checks the file field by field, its `token_uri` against `outbound` without DNS (see
/// `check_outbound` for the rest).
pub fn validate(bytes: &[u8], outbound: &OutboundPolicy) -> Result<KeyInfo, Invalid> {
    if bytes.len() > MAX_KEY_FILE_BYTES {
        return Err(invalid("key file", format!("is {} bytes; a service-account key file is about 2 KB", bytes.len())));
    }
    let v: Value = serde_json::from_slice(bytes).map_err(|e| {
        invalid(
            "key file",
            format!(
                "is not JSON (line {}, column {}): upload the .json file exactly as Google's console saved it",
                e.line(),
                e.column()
            ),
        )
    })?;
    let obj = v.as_object().ok_or_else(|| invalid("key file", "must be a JSON object"))?;
    let text = |name: &'static str| obj.get(name).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());

    match text("type") {
        Some("service_account") => {}
        Some(_) => {
            return Err(invalid(
                "type",
                "must be \"service_account\": create a key for a service account (APIs & Services › Credentials), not an OAuth client",
            ));
        }
        None => return Err(invalid("type", "is missing: this is not a service-account key file")),
    }
    let client_email = text("client_email").ok_or_else(|| invalid("client_email", "is missing"))?;
    if !client_email.contains('@') {
        return Err(invalid("client_email", "is not a service-account address"));
    }
    let client_id = text("client_id").ok_or_else(|| {
        invalid("client_id", "is missing: it is the Unique ID the Admin console needs for domain-wide delegation")
    })?;
    if !client_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid("client_id", "must be the numeric Unique ID of the service account"));
    }
    let pem = text("private_key").ok_or_else(|| invalid("private_key", "is missing"))?;
    if !pem.starts_with("-----BEGIN PRIVATE KEY-----") {
        return Err(invalid("private_key", "must be a PEM PKCS#8 private key (-----BEGIN PRIVATE KEY-----)"));
    }
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).map(str::trim).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| invalid("private_key", "is not valid PEM: the base64 body is damaged"))?;
    KeyPair::from_pkcs8(&der).map_err(|_| invalid("private_key", "does not parse as an RSA private key"))?;
    let token_uri = text("token_uri").ok_or_else(|| invalid("token_uri", "is missing"))?;
    outbound.check(token_uri).map_err(|r| {
        let mut e = refused_url("token_uri", r);
        e.message.push_str(" (Google's is https://oauth2.googleapis.com/token)");
        e
    })?;
    // yup-oauth2 builds its request from the text as it is, and panics if that is no URI.
    let raw_uri = obj.get("token_uri").and_then(Value::as_str).unwrap_or(token_uri);
    if raw_uri.parse::<http::Uri>().is_err() {
        return Err(invalid("token_uri", "is not a plain URL (Google's is https://oauth2.googleapis.com/token)"));
    }
    Ok(KeyInfo {
        client_email: client_email.to_owned(),
        client_id: client_id.to_owned(),
        project_id: text("project_id").map(str::to_owned),
        private_key_id: text("private_key_id").map(str::to_owned),
        token_uri: token_uri.to_owned(),
    })
}

/// The outbound policy's check that needs DNS: the `token_uri`'s host name must not resolve
/// only to refused addresses.
pub async fn check_outbound(info: &KeyInfo, outbound: &OutboundPolicy) -> Result<(), Invalid> {
    let url = Url::parse(&info.token_uri).map_err(|_| invalid("token_uri", "is not a URL"))?;
    outbound.check_resolved(&url).await.map_err(|r| refused_url("token_uri", r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Value {
        fake_google::keys::new_service_account("acme.se", "gwsync", "https://oauth2.googleapis.com/token").unwrap().1
    }

    #[test]
    fn a_console_key_file_is_valid() {
        let k = key();
        let info = validate(k.to_string().as_bytes(), &OutboundPolicy::default()).unwrap();
        assert_eq!(info.client_id, k["client_id"].as_str().unwrap());
    }

    #[test]
    fn each_broken_field_is_named_without_quoting_the_key() {
        let cases: Vec<(&str, Value, &str)> = vec![
            ("type", Value::from("authorized_user"), "type"),
            ("client_email", Value::Null, "client_email"),
            ("client_id", Value::from("abc"), "client_id"),
            (
                "private_key",
                Value::from("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
                "private_key",
            ),
            ("private_key", Value::from("ssh-rsa AAAA"), "private_key"),
            ("token_uri", Value::from("http://oauth2.googleapis.com/token"), "token_uri"),
            ("token_uri", Value::from("https://169.254.169.254/token"), "token_uri"),
            ("token_uri", Value::from("https://u:p@oauth2.googleapis.com/token"), "token_uri"),
            ("token_uri", Value::from("https://oauth2.googleapis.com/to ken"), "token_uri"),
        ];
        for (name, value, field) in cases {
            let mut k = key();
            if value.is_null() {
                k.as_object_mut().unwrap().remove(name);
            } else {
                k[name] = value;
            }
            let err = validate(k.to_string().as_bytes(), &OutboundPolicy::default()).unwrap_err();
            assert_eq!(err.field, field);
            let secret_line = key()["private_key"].as_str().unwrap().lines().nth(1).unwrap().to_owned();
            assert!(!err.to_string().contains(&secret_line));
        }
        assert_eq!(validate(b"{not json", &OutboundPolicy::default()).unwrap_err().field, "key file");
        assert_eq!(validate(b"[]", &OutboundPolicy::default()).unwrap_err().field, "key file");
    }
}
