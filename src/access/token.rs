//! API token secrets: `gws_` + 256 random bits (base64url), shown once at creation; gwsync keeps
//! only their SHA-256 digest and recognises a presented token by it.

use base64::Engine;
use rand::Rng;
use secrecy::SecretString;

pub const PREFIX: &str = "gws_";

/// A new secret (256 bits from the OS-seeded generator).
pub fn generate() -> SecretString {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    SecretString::from(format!("{PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
}

/// SHA-256 of the presented token, hex: the key tokens are stored and looked up under.
pub fn digest(presented: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, presented.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a value looks like one of our token secrets (kept out of audit entries and logs).
pub fn looks_like_secret(value: &str) -> bool {
    value.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    #[test]
    fn secrets_are_long_random_and_prefixed() {
        let (a, b) = (super::generate(), super::generate());
        let a = a.expose_secret();
        assert!(a.starts_with("gws_") && a.len() == 4 + 43, "{}", a.len());
        assert_ne!(a, b.expose_secret());
        assert_eq!(super::digest(a).len(), 64);
        assert_ne!(super::digest(a), super::digest(b.expose_secret()));
    }
}
