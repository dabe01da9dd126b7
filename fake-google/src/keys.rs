//! Service accounts and their JSON key files, as Google's Cloud console hands them out.
//!
//! Each key is a real 2048-bit RSA key: the private half goes into the key file (PKCS#8 PEM, as
//! Google writes it) and is then forgotten; the fake keeps only the public half to verify the
//! client's signed JWT assertions.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use base64::Engine;
use rand::RngExt;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct ServiceAccount {
    pub client_email: String,
    pub client_id: String,
    pub project_id: String,
    pub project_number: u64,
    pub domain: String,
    pub private_key_id: String,
    /// DER RSAPublicKey (RFC 8017) of the one key this account has.
    pub public_key: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
#[error("RSA key generation failed")]
pub struct KeyGenError;

/// Creates a service account for `domain` and returns it with its key file.
pub fn new_service_account(domain: &str, name: &str, token_uri: &str) -> Result<(ServiceAccount, Value), KeyGenError> {
    let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyGenError)?;
    let pkcs8 = pair.as_der().map_err(|_| KeyGenError)?;
    let public_key = aws_lc_rs::signature::KeyPair::public_key(&pair).as_ref().to_vec();

    let mut rng = rand::rng();
    let slug: String =
        domain.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let project_id = format!("{}-{}", slug.trim_matches('-'), rng.random_range(100_000..1_000_000));
    let project_number: u64 = rng.random_range(100_000_000_000..1_000_000_000_000);
    let client_id = format!("1{:020}", rng.random_range(0..10u128.pow(20)));
    let private_key_id: String =
        (0..40).map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0')).collect();
    let client_email = format!("{name}@{project_id}.iam.gserviceaccount.com");
    let encoded_email = client_email.replace('@', "%40");

    let key_file = json!({
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": private_key_id,
        "private_key": pem("PRIVATE KEY", pkcs8.as_ref()),
        "client_email": client_email,
        "client_id": client_id,
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": format!("https://www.googleapis.com/robot/v1/metadata/x509/{encoded_email}"),
        "universe_domain": "googleapis.com",
    });
    let account = ServiceAccount {
        client_email,
        client_id,
        project_id,
        project_number,
        domain: domain.to_owned(),
        private_key_id,
        public_key,
    };
    Ok((account, key_file))
}

/// PEM armour with 64-character lines, as OpenSSL and Google write it.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
