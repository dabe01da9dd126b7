//! Reading request bodies at the edge: a size limit, the right content type, strict JSON
//! (unknown fields refused) — each failure a 4xx in the API's error shape.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, web};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Reads at most `limit` bytes of the body.
pub async fn read_limited(mut payload: web::Payload, limit: usize) -> Result<web::Bytes, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request("bad_body", format!("could not read the request body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body is larger than {limit} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// A JSON body of type `T`: `Content-Type: application/json`, within `limit`, no unknown fields.
pub async fn json<T: DeserializeOwned>(req: &HttpRequest, payload: web::Payload, limit: usize) -> Result<T, ApiError> {
    let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if mime != "application/json" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("send JSON with Content-Type: application/json (got '{content_type}')"),
        ));
    }
    let body = read_limited(payload, limit).await?;
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("the body is not valid for this request: {}", without_quoted_strings(&e.to_string())),
        )
    })
}

/// serde quotes offending string values (`invalid type: string "…"`); a value in the wrong
/// place may be a secret, so error messages keep only the shape.
pub fn without_quoted_strings(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find("string \"") {
        out.push_str(&rest[..i]);
        out.push_str("a string");
        let after = &rest[i + "string \"".len()..];
        rest = match after.find('"') {
            Some(j) => &after[j + 1..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn quoted_values_are_dropped_from_messages() {
        assert_eq!(
            super::without_quoted_strings("invalid type: string \"whsec_abc\", expected struct X at line 1 column 9"),
            "invalid type: a string, expected struct X at line 1 column 9"
        );
        assert_eq!(super::without_quoted_strings("unknown field `foo`"), "unknown field `foo`");
    }
}
