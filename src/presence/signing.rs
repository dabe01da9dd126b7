//! Standard Webhooks signatures (https://www.standardwebhooks.com): the tenant's secret is
//! `whsec_` + base64 of the key bytes; the signature is `v1,` + base64 of
//! HMAC-SHA256(key, "{id}.{timestamp}.{body}"). Any Standard Webhooks library verifies it.

use aws_lc_rs::hmac;
use base64::Engine;

pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = hmac::sign(&k, format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(tag.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        // From the Standard Webhooks specification's test suite.
        let key = base64::engine::general_purpose::STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, r#"{"test": 2432232314}"#);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
