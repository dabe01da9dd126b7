//! JWT assertions of the OAuth2 JWT-bearer grant: verifying them (the token endpoint) and signing
//! them (for tests that need assertions no well-behaved client would make: expired, too long,
//! wrong audience, signed by the wrong key).

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the assertion is not a JWT")]
    Malformed,
    #[error("the assertion's algorithm is not RS256")]
    Algorithm,
    #[error("the signature does not verify")]
    Signature,
}

/// A decoded, not yet verified assertion.
#[derive(Debug, Clone)]
pub struct Assertion {
    pub header: Value,
    pub claims: Value,
    signed_part: String,
    signature: Vec<u8>,
}

impl Assertion {
    pub fn parse(token: &str) -> Result<Self, JwtError> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(JwtError::Malformed);
        };
        let decode = |p: &str| URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).map_err(|_| JwtError::Malformed);
        let header: Value = serde_json::from_slice(&decode(h)?).map_err(|_| JwtError::Malformed)?;
        let claims: Value = serde_json::from_slice(&decode(c)?).map_err(|_| JwtError::Malformed)?;
        if !header.is_object() || !claims.is_object() {
            return Err(JwtError::Malformed);
        }
        Ok(Assertion { header, claims, signed_part: format!("{h}.{c}"), signature: decode(s)? })
    }

    /// Checks the RS256 signature against an RSAPublicKey (DER).
    pub fn verify(&self, public_key_der: &[u8]) -> Result<(), JwtError> {
        if self.header["alg"].as_str() != Some("RS256") {
            return Err(JwtError::Algorithm);
        }
        UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, public_key_der)
            .verify(self.signed_part.as_bytes(), &self.signature)
            .map_err(|_| JwtError::Signature)
    }

    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims[name].as_str()
    }

    pub fn claim_i64(&self, name: &str) -> Option<i64> {
        self.claims[name].as_i64().or_else(|| self.claims[name].as_f64().map(|f| f as i64))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("the key file has no usable private_key: {0}")]
    Key(String),
    #[error("signing failed")]
    Sign,
}

/// Signs `claims` with the `private_key` of a service-account key file, RS256, as Google's client
/// libraries do. For tests; production clients use their own library.
pub fn sign(key_file: &Value, claims: &Value) -> Result<String, SignError> {
    let pem = key_file["private_key"].as_str().ok_or_else(|| SignError::Key("missing".into()))?;
    let der = pem_body(pem).ok_or_else(|| SignError::Key("not PEM".into()))?;
    let pair = aws_lc_rs::rsa::KeyPair::from_pkcs8(&der).map_err(|e| SignError::Key(e.to_string()))?;
    let header = serde_json::json!({
        "alg": "RS256",
        "typ": "JWT",
        "kid": key_file["private_key_id"],
    });
    let signed_part =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let mut sig = vec![0u8; pair.public_modulus_len()];
    pair.sign(&signature::RSA_PKCS1_SHA256, &aws_lc_rs::rand::SystemRandom::new(), signed_part.as_bytes(), &mut sig)
        .map_err(|_| SignError::Sign)?;
    Ok(format!("{signed_part}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).map(str::trim).collect();
    STANDARD.decode(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::new_service_account;
    use serde_json::json;

    #[test]
    fn a_signed_assertion_verifies_only_with_its_own_key() {
        let (account, key) = new_service_account("acme.test", "svc", "http://127.0.0.1/token").unwrap();
        let (other, _) = new_service_account("acme.test", "svc", "http://127.0.0.1/token").unwrap();
        let jwt = sign(&key, &json!({"iss": account.client_email, "sub": "a@acme.test"})).unwrap();
        let parsed = Assertion::parse(&jwt).unwrap();
        assert_eq!(parsed.claim_str("sub"), Some("a@acme.test"));
        assert_eq!(parsed.verify(&account.public_key), Ok(()));
        assert_eq!(parsed.verify(&other.public_key), Err(JwtError::Signature));
        assert!(key["private_key"].as_str().unwrap().starts_with("-----BEGIN PRIVATE KEY-----\n"));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for s in ["", "a.b", "a.b.c.d", "!!.??.**", "W10.W10.AA"] {
            assert!(Assertion::parse(s).is_err(), "{s}");
        }
        let (account, _) = new_service_account("acme.test", "svc", "http://127.0.0.1/token").unwrap();
        let unsigned = Assertion::parse("eyJhbGciOiJSUzI1NiJ9.e30.").unwrap();
        assert_eq!(unsigned.verify(&account.public_key), Err(JwtError::Signature));
        let none_alg = Assertion::parse("eyJhbGciOiJub25lIn0.e30.").unwrap();
        assert_eq!(none_alg.verify(&account.public_key), Err(JwtError::Algorithm));
    }
}
