//! Opaque, tamper-proof page and sync tokens.
//!
//! Google's tokens are opaque strings that encode where a listing stands. The fake's carry their
//! state inside (JSON, MAC-ed with a per-instance key), so a client cannot forge or edit one, and
//! the fake keeps no per-token memory however many syncs a benchmark runs.

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;

const TAG_LEN: usize = 12;

pub struct TokenCodec {
    key: hmac::Key,
}

impl TokenCodec {
    pub fn new() -> Self {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        // Key generation from the system RNG only fails if the OS has no entropy source.
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .unwrap_or_else(|_| hmac::Key::new(hmac::HMAC_SHA256, uuid::Uuid::new_v4().as_bytes()));
        TokenCodec { key }
    }

    /// Seals `payload` as a token of `kind` ("cal-sync", "cal-page", …).
    pub fn seal<T: Serialize>(&self, kind: &str, payload: &T) -> String {
        let body = serde_json::to_vec(payload).unwrap_or_default();
        let tag = hmac::sign(&self.key, &[kind.as_bytes(), b"\0", &body].concat());
        let mut raw = body;
        raw.extend_from_slice(&tag.as_ref()[..TAG_LEN]);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Opens a token of `kind`; `None` if it is garbled, forged or of another kind.
    pub fn open<T: DeserializeOwned>(&self, kind: &str, token: &str) -> Option<T> {
        let raw = URL_SAFE_NO_PAD.decode(token.trim_end_matches('=')).ok()?;
        if raw.len() <= TAG_LEN {
            return None;
        }
        let (body, tag) = raw.split_at(raw.len() - TAG_LEN);
        let expected = hmac::sign(&self.key, &[kind.as_bytes(), b"\0", body].concat());
        aws_lc_rs::constant_time::verify_slices_are_equal(&expected.as_ref()[..TAG_LEN], tag).ok()?;
        serde_json::from_slice(body).ok()
    }
}

impl Default for TokenCodec {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_tampering() {
        let codec = TokenCodec::new();
        let t = codec.seal("cal-sync", &(7u64, "x".to_string()));
        assert_eq!(codec.open::<(u64, String)>("cal-sync", &t), Some((7, "x".into())));
        assert_eq!(codec.open::<(u64, String)>("cal-page", &t), None);
        let mut bytes = t.into_bytes();
        bytes[2] = if bytes[2] == b'A' { b'B' } else { b'A' };
        assert_eq!(codec.open::<(u64, String)>("cal-sync", &String::from_utf8(bytes).unwrap()), None);
        assert_eq!(TokenCodec::new().open::<(u64, String)>("cal-sync", "garbage"), None);
    }
}
