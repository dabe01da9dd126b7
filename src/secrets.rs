//! Secrets at rest: AES-256-GCM (aws-lc-rs) under the operator's master key.
//!
//! Sealed values are `version byte ‖ 96-bit random nonce ‖ ciphertext ‖ tag`, with the record's
//! identity (e.g. `credentials:acme`) as associated data, so a sealed value copied onto another
//! record does not open. Opened values come back as `SecretBox`es: never `Debug`-printed, wiped
//! on drop.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use secrecy::SecretBox;

const VERSION: u8 = 1;

pub struct MasterKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([REDACTED])")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("the master key must be 32 bytes")]
    KeyLength,
    #[error("a stored secret does not open with this master key (wrong GWSYNC_MASTER_KEY, or the data was altered)")]
    Open,
    #[error("the system random number generator failed")]
    Random,
}

impl MasterKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SecretError> {
        if bytes.len() != 32 {
            return Err(SecretError::KeyLength);
        }
        let key = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| SecretError::KeyLength)?;
        Ok(MasterKey { key: LessSafeKey::new(key) })
    }

    /// A fresh random key (tests, the demo).
    pub fn generate() -> Result<Self, SecretError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new().fill(&mut bytes).map_err(|_| SecretError::Random)?;
        Self::from_bytes(&bytes)
    }

    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Result<Vec<u8>, SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| SecretError::Random)?;
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| SecretError::Random)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + buf.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(out)
    }

    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<SecretBox<Vec<u8>>, SecretError> {
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != VERSION {
            return Err(SecretError::Open);
        }
        let nonce = Nonce::try_assume_unique_for_key(&sealed[1..1 + NONCE_LEN]).map_err(|_| SecretError::Open)?;
        let mut buf = sealed[1 + NONCE_LEN..].to_vec();
        let plain =
            self.key.open_in_place(nonce, Aad::from(context.as_bytes()), &mut buf).map_err(|_| SecretError::Open)?;
        let len = plain.len();
        buf.truncate(len);
        Ok(SecretBox::new(Box::new(buf)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let key = MasterKey::generate().unwrap();
        let sealed = key.seal("credentials:acme", b"-----BEGIN PRIVATE KEY-----").unwrap();
        assert!(!sealed.windows(5).any(|w| w == b"BEGIN"), "ciphertext must not hold the plaintext");
        assert_eq!(
            key.open("credentials:acme", &sealed).unwrap().expose_secret().as_slice(),
            b"-----BEGIN PRIVATE KEY-----"
        );
        assert_eq!(key.open("credentials:other", &sealed).err(), Some(SecretError::Open));
        assert_eq!(MasterKey::generate().unwrap().open("credentials:acme", &sealed).err(), Some(SecretError::Open));
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(key.open("credentials:acme", &tampered).err(), Some(SecretError::Open));
        assert_eq!(key.open("credentials:acme", b"").err(), Some(SecretError::Open));
        assert_eq!(format!("{key:?}"), "MasterKey([REDACTED])");
    }
}
