//! Conformance of "Sign in with Google" (OpenID Connect, authorization code flow with PKCE) as a
//! relying party sees it on the wire: discovery, the account chooser, the token endpoint's
//! authorization_code grant and its errors, ID tokens, userinfo, key rotation.
//!
//! ID tokens are verified with `jsonwebtoken` on its RustCrypto backend — a JWT library and an RSA
//! implementation that share no code with the fake's signer (hand-rolled JWS over aws-lc-rs) — so
//! a token that passes here passes a real relying party's checks: the signature against the JWKS
//! key named by `kid`, `iss`, `aud`, `exp`.
mod common;
use common::*;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

const REDIRECT: &str = "http://127.0.0.1:9/console/auth/callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

struct Rp {
    env: Env,
    /// A client that does not follow redirects, as a browser's address bar would show them.
    http: reqwest::Client,
    client_id: String,
    client_secret: String,
}

fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()))
}

impl Rp {
    async fn new() -> Rp {
        let env = Env::new().await;
        let http =
            reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        let r = env.control("POST", "/_fake/oauth-clients", Some(json!({"redirect_uris": [REDIRECT]}))).await;
        assert_eq!(r.status, 201, "{r:?}");
        let client_id = r.body["client_id"].as_str().expect("client_id").to_owned();
        let client_secret = r.body["client_secret"].as_str().expect("client_secret").to_owned();
        Rp { env, http, client_id, client_secret }
    }

    fn auth_url(&self, extra: &[(&str, &str)]) -> String {
        let challenge = s256(VERIFIER);
        let mut pairs: Vec<(&str, &str)> = vec![
            ("client_id", &self.client_id),
            ("redirect_uri", REDIRECT),
            ("response_type", "code"),
            ("scope", "openid email profile"),
            ("state", "st-123"),
            ("nonce", "n-456"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ];
        for (k, v) in extra {
            pairs.retain(|(pk, _)| pk != k);
            if !v.is_empty() {
                pairs.push((k, v));
            }
        }
        let q: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
        format!("{}/o/oauth2/v2/auth?{q}", self.env.base)
    }

    async fn get(&self, url: &str) -> Reply {
        reply(self.http.get(url).send().await.expect("GET")).await
    }

    /// Opens the chooser (must be 200) and picks `account`; returns the redirect's query pairs.
    async fn sign_in_with(&self, extra: &[(&str, &str)], account: &str) -> Vec<(String, String)> {
        let page = self.get(&self.auth_url(extra)).await;
        assert_eq!(page.status, 200, "{}", page.text);
        let r = self.choose(&hidden_request(&page.text), &[("account", account)]).await;
        assert_eq!(r.status, 302, "{}", r.text);
        redirect_query(&r)
    }

    async fn choose(&self, sealed: &str, extra: &[(&str, &str)]) -> Reply {
        let mut form = vec![("request", sealed)];
        form.extend_from_slice(extra);
        let url = format!("{}/o/oauth2/v2/auth/choose", self.env.base);
        reply(self.http.post(url).form(&form).send().await.expect("POST choose")).await
    }

    async fn code_for(&self, account: &str) -> String {
        let q = self.sign_in_with(&[], account).await;
        param(&q, "code").expect("code").to_owned()
    }

    async fn exchange(&self, pairs: &[(&str, &str)]) -> Reply {
        let url = format!("{}/token", self.env.base);
        reply(self.http.post(url).form(pairs).send().await.expect("POST /token")).await
    }

    async fn exchange_code(&self, code: &str, verifier: Option<&str>) -> Reply {
        let mut pairs = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.as_str()),
        ];
        if let Some(v) = verifier {
            pairs.push(("code_verifier", v));
        }
        self.exchange(&pairs).await
    }

    async fn jwks(&self) -> JwkSet {
        let r = self.get(&format!("{}/oauth2/v3/certs", self.env.base)).await;
        assert_eq!(r.status, 200, "{r:?}");
        serde_json::from_value(r.body).expect("a JWK set")
    }

    /// Verifies an ID token as a relying party does and returns its claims.
    async fn verify(&self, id_token: &str, issuer: &str) -> Result<Value, jsonwebtoken::errors::Error> {
        let header = jsonwebtoken::decode_header(id_token)?;
        assert_eq!(header.alg, Algorithm::RS256);
        let kid = header.kid.expect("kid");
        let jwks = self.jwks().await;
        let jwk = jwks.find(&kid).unwrap_or_else(|| panic!("kid {kid} is published"));
        let key = DecodingKey::from_jwk(jwk)?;
        let mut v = Validation::new(Algorithm::RS256);
        v.set_audience(&[&self.client_id]);
        v.set_issuer(&[issuer]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        Ok(jsonwebtoken::decode::<Value>(id_token, &key, &v)?.claims)
    }
}

fn hidden_request(html: &str) -> String {
    let start = html.find(r#"name="request" value=""#).expect("the chooser carries the request") + 22;
    let end = html[start..].find('"').expect("closing quote") + start;
    html[start..end].to_owned()
}

fn accounts_listed(html: &str) -> Vec<String> {
    html.match_indices(r#"name="account" value=""#)
        .map(|(i, m)| {
            let s = i + m.len();
            html[s..s + html[s..].find('"').expect("quote")].to_owned()
        })
        .collect()
}

fn redirect_query(r: &Reply) -> Vec<(String, String)> {
    let loc = r.headers.get("location").and_then(|v| v.to_str().ok()).expect("Location");
    assert!(loc.starts_with(REDIRECT), "redirects to the registered URI: {loc}");
    let url = url::Url::parse(loc).expect("absolute");
    url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn assert_oauth_error(r: &Reply, status: u16, error: &str, description: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.body["error"], error, "{r:?}");
    assert_eq!(r.body["error_description"], description, "{r:?}");
    assert!(r.body.get("access_token").is_none() && r.body.get("id_token").is_none(), "{r:?}");
}

/// An error page: the status, `Error <status>: <error>` on it, and no redirect.
fn assert_error_page(r: &Reply, status: u16, error: &str) {
    assert_eq!(r.status, status, "{}", r.text);
    assert!(r.headers.get("location").is_none(), "Google does not redirect then: {r:?}");
    assert!(r.text.contains(&format!("Error {status}: {error}")), "{}", r.text);
    assert!(r.headers["content-type"].to_str().unwrap_or_default().starts_with("text/html"));
}

// ---- discovery and keys ----

#[tokio::test]
async fn discovery_document_has_googles_fields_and_points_at_the_fake() {
    let rp = Rp::new().await;
    let base = rp.env.base.clone();
    let r = rp.get(&format!("{base}/.well-known/openid-configuration")).await;
    assert_eq!(r.status, 200, "{r:?}");
    let d = &r.body;
    assert_eq!(d["issuer"], base);
    assert_eq!(d["authorization_endpoint"], format!("{base}/o/oauth2/v2/auth"));
    assert_eq!(d["token_endpoint"], format!("{base}/token"));
    assert_eq!(d["userinfo_endpoint"], format!("{base}/v1/userinfo"));
    assert_eq!(d["jwks_uri"], format!("{base}/oauth2/v3/certs"));
    assert_eq!(d["revocation_endpoint"], format!("{base}/revoke"));
    assert_eq!(d["code_challenge_methods_supported"], json!(["plain", "S256"]));
    assert_eq!(d["authorization_response_iss_parameter_supported"], true);
    assert_eq!(d["id_token_signing_alg_values_supported"], json!(["RS256"]));
    assert_eq!(d["subject_types_supported"], json!(["public"]));
    assert_eq!(d["scopes_supported"], json!(["openid", "email", "profile"]));
    assert_eq!(d["token_endpoint_auth_methods_supported"], json!(["client_secret_post", "client_secret_basic"]));
    for v in ["code", "none"] {
        assert!(d["response_types_supported"].as_array().unwrap().iter().any(|x| x == v), "{d}");
    }
    for g in ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:jwt-bearer"] {
        assert!(d["grant_types_supported"].as_array().unwrap().iter().any(|x| x == g), "{d}");
    }
    for c in ["aud", "email", "email_verified", "exp", "iat", "iss", "sub", "name", "picture"] {
        assert!(d["claims_supported"].as_array().unwrap().iter().any(|x| x == c), "{d}");
    }

    // The JWKS: RSA signing keys with a kid.
    let r = rp.get(&format!("{base}/oauth2/v3/certs")).await;
    let keys = r.body["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1);
    let k = &keys[0];
    assert_eq!((k["kty"].as_str(), k["alg"].as_str(), k["use"].as_str()), (Some("RSA"), Some("RS256"), Some("sig")));
    assert_eq!(k["e"], "AQAB");
    assert_eq!(URL_SAFE_NO_PAD.decode(k["n"].as_str().unwrap()).unwrap().len(), 256, "2048-bit modulus");
    assert_eq!(k["kid"].as_str().unwrap().len(), 40);
    // The keys do not change by themselves.
    let again = rp.get(&format!("{base}/oauth2/v3/certs")).await;
    assert_eq!(again.body, r.body);
}

#[tokio::test]
async fn the_issuer_is_configurable() {
    let rp = Rp::new().await;
    assert_eq!(rp.env.fake.issuer(), rp.env.base);
    let r = rp.env.control("PUT", "/_fake/oidc", Some(json!({"issuer": "https://accounts.google.com"}))).await;
    assert_eq!(r.status, 200, "{r:?}");
    let d = rp.get(&format!("{}/.well-known/openid-configuration", rp.env.base)).await;
    assert_eq!(d.body["issuer"], "https://accounts.google.com");
    let q = rp.sign_in_with(&[], ALICE).await;
    assert_eq!(param(&q, "iss"), Some("https://accounts.google.com"));
    let t = rp.exchange_code(param(&q, "code").unwrap(), Some(VERIFIER)).await;
    let claims = rp.verify(t.body["id_token"].as_str().unwrap(), "https://accounts.google.com").await.unwrap();
    assert_eq!(claims["iss"], "https://accounts.google.com");
    // A relying party expecting the other issuer refuses it.
    let code = rp.code_for(ALICE).await;
    let t = rp.exchange_code(&code, Some(VERIFIER)).await;
    assert!(rp.verify(t.body["id_token"].as_str().unwrap(), &rp.env.base).await.is_err());
    // Back to the base URL.
    let r = rp.env.control("PUT", "/_fake/oidc", Some(json!({"issuer": null}))).await;
    assert_eq!(r.body["issuer"], rp.env.base);
    let r = rp.env.control("PUT", "/_fake/oidc", Some(json!({"issuer": "not a url"}))).await;
    assert_eq!(r.status, 400);
}

// ---- the whole flow ----

#[tokio::test]
async fn the_whole_flow_gives_a_verifiable_id_token_with_googles_claims() {
    let rp = Rp::new().await;
    let page = rp.get(&rp.auth_url(&[])).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("Choose an account"), "{}", page.text);
    assert_eq!(accounts_listed(&page.text), [ALICE, BOB]);
    assert!(page.text.contains(r#"<html lang="en">"#));
    assert!(page.text.contains(r#"<button type="submit" name="cancel""#));

    let r = rp.choose(&hidden_request(&page.text), &[("account", ALICE)]).await;
    assert_eq!(r.status, 302, "{}", r.text);
    let q = redirect_query(&r);
    assert_eq!(param(&q, "state"), Some("st-123"));
    let code = param(&q, "code").expect("code");
    assert!(code.starts_with("4/0A"), "{code}");
    assert_eq!(
        param(&q, "scope"),
        Some(
            "email profile https://www.googleapis.com/auth/userinfo.email https://www.googleapis.com/auth/userinfo.profile openid"
        )
    );
    assert_eq!(param(&q, "authuser"), Some("0"));
    assert_eq!(param(&q, "hd"), Some(DOMAIN));
    assert_eq!(param(&q, "prompt"), Some("none"));
    assert_eq!(param(&q, "iss"), Some(rp.env.base.as_str()), "RFC 9207");

    let t = rp.exchange_code(code, Some(VERIFIER)).await;
    assert_eq!(t.status, 200, "{t:?}");
    assert_eq!(t.body["token_type"], "Bearer");
    assert_eq!(t.body["expires_in"], 3599);
    assert_eq!(
        t.body["scope"],
        "https://www.googleapis.com/auth/userinfo.email https://www.googleapis.com/auth/userinfo.profile openid"
    );
    assert!(t.body.get("refresh_token").is_none());
    assert!(t.headers["cache-control"].to_str().unwrap().contains("no-store"));
    let access_token = t.body["access_token"].as_str().expect("access_token");
    let id_token = t.body["id_token"].as_str().expect("id_token");

    let c = rp.verify(id_token, &rp.env.base).await.expect("the ID token verifies");
    assert_eq!(c["iss"], rp.env.base);
    assert_eq!(c["aud"], rp.client_id);
    assert_eq!(c["azp"], rp.client_id);
    assert_eq!(c["email"], ALICE);
    assert_eq!(c["email_verified"], true);
    assert_eq!(c["hd"], DOMAIN);
    assert_eq!(c["nonce"], "n-456");
    assert_eq!(c["name"], "Alice");
    assert_eq!(c["given_name"], "Alice");
    assert!(c["picture"].as_str().unwrap().starts_with("https://lh3.googleusercontent.com/"));
    let sub = c["sub"].as_str().unwrap();
    assert!(sub.len() >= 20 && sub.bytes().all(|b| b.is_ascii_digit()), "{sub}");
    let (iat, exp) = (c["iat"].as_i64().unwrap(), c["exp"].as_i64().unwrap());
    assert_eq!(exp - iat, 3600);
    assert!((iat - chrono::Utc::now().timestamp()).abs() < 60);
    // at_hash: the left half of SHA-256 of the access token.
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, access_token.as_bytes());
    assert_eq!(c["at_hash"], URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16]));

    // A tampered token does not verify.
    let mut parts: Vec<String> = id_token.split('.').map(str::to_owned).collect();
    let mut payload: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
    payload["email"] = json!(BOB);
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap());
    assert!(rp.verify(&parts.join("."), &rp.env.base).await.is_err());
    // Nor one for another client.
    let other = Rp { client_id: "123-other.apps.googleusercontent.com".into(), ..rp };
    assert!(other.verify(id_token, &other.env.base).await.is_err());
    let rp = other;

    // userinfo with the access token.
    let u = reply(rp.http.get(format!("{}/v1/userinfo", rp.env.base)).bearer_auth(access_token).send().await.unwrap())
        .await;
    assert_eq!(u.status, 200, "{u:?}");
    assert_eq!(u.body["sub"], sub);
    assert_eq!(u.body["email"], ALICE);
    assert_eq!(u.body["email_verified"], true);
    assert_eq!(u.body["hd"], DOMAIN);
    let u =
        reply(rp.http.get(format!("{}/v1/userinfo", rp.env.base)).bearer_auth("ya29.nope").send().await.unwrap()).await;
    assert_eq!(u.status, 401);
    assert_eq!(u.body["error"], "invalid_request");
    // A sign-in token opens no Calendar.
    let cal = rp.env.get("/calendar/v3/calendars/primary/events", access_token).await;
    assert_eq!(cal.status, 403, "{cal:?}");
    assert_eq!(cal.reason(), Some("insufficientPermissions"));

    // The request log names the steps.
    for m in ["oauth2.authorize", "oauth2.token", "oauth2.certs", "oauth2.userinfo"] {
        assert!(!rp.env.requests(m).await.is_empty(), "{m} logged");
    }
    let tokens = rp.env.requests("oauth2.token").await;
    assert_eq!(tokens[0]["user"], ALICE);
    assert_eq!(tokens[0]["status"], 200);
}

#[tokio::test]
async fn sub_is_stable_per_account_and_differs_between_accounts() {
    let rp = Rp::new().await;
    let mut subs = Vec::new();
    for user in [ALICE, ALICE, BOB] {
        let code = rp.code_for(user).await;
        let t = rp.exchange_code(&code, Some(VERIFIER)).await;
        let c = rp.verify(t.body["id_token"].as_str().unwrap(), &rp.env.base).await.unwrap();
        subs.push(c["sub"].as_str().unwrap().to_owned());
    }
    assert_eq!(subs[0], subs[1]);
    assert_ne!(subs[0], subs[2]);
    // A deleted and re-created account is a new account.
    assert_eq!(rp.env.control("DELETE", &format!("/_fake/domains/{DOMAIN}/users/{ALICE}"), None).await.status, 204);
    assert_eq!(
        rp.env.control("POST", &format!("/_fake/domains/{DOMAIN}/users"), Some(json!({"email": ALICE}))).await.status,
        201
    );
    let code = rp.code_for(ALICE).await;
    let t = rp.exchange_code(&code, Some(VERIFIER)).await;
    let c = rp.verify(t.body["id_token"].as_str().unwrap(), &rp.env.base).await.unwrap();
    assert_ne!(c["sub"], subs[0]);
}

#[tokio::test]
async fn claims_follow_scopes_and_the_control_api() {
    let rp = Rp::new().await;
    // Unverified address and a changed name.
    let r = rp
        .env
        .control(
            "PUT",
            &format!("/_fake/oidc/users/{BOB}"),
            Some(json!({"email_verified": false, "name": "Bob Builder", "family_name": "Builder"})),
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    let code = rp.code_for(BOB).await;
    let t = rp.exchange_code(&code, Some(VERIFIER)).await;
    let c = rp.verify(t.body["id_token"].as_str().unwrap(), &rp.env.base).await.unwrap();
    assert_eq!(c["email_verified"], false);
    assert_eq!(c["name"], "Bob Builder");
    assert_eq!(c["family_name"], "Builder");
    assert_eq!(
        rp.env
            .control("PUT", "/_fake/oidc/users/nobody@acme.test", Some(json!({"email_verified": false})))
            .await
            .status,
        404
    );
    assert_eq!(rp.env.control("PUT", &format!("/_fake/oidc/users/{BOB}"), Some(json!({"bogus": 1}))).await.status, 400);

    // openid only: no email, no profile; no nonce when none was sent.
    let q = rp.sign_in_with(&[("scope", "openid"), ("nonce", "")], ALICE).await;
    let t = rp.exchange_code(param(&q, "code").unwrap(), Some(VERIFIER)).await;
    assert_eq!(t.body["scope"], "openid");
    let c = rp.verify(t.body["id_token"].as_str().unwrap(), &rp.env.base).await.unwrap();
    for absent in ["email", "email_verified", "name", "picture", "nonce"] {
        assert!(c.get(absent).is_none(), "{absent}: {c}");
    }
    assert_eq!(c["hd"], DOMAIN);
    // Without openid there is no ID token.
    let q = rp.sign_in_with(&[("scope", "email")], ALICE).await;
    let t = rp.exchange_code(param(&q, "code").unwrap(), Some(VERIFIER)).await;
    assert_eq!(t.status, 200, "{t:?}");
    assert!(t.body.get("id_token").is_none());
}

// ---- the chooser ----

#[tokio::test]
async fn login_hint_preselects_and_hd_restricts_the_chooser() {
    let rp = Rp::new().await;
    let other = json!({"domain": "other.test", "users": ["carol@other.test"]});
    assert_eq!(rp.env.control("POST", "/_fake/domains", Some(other)).await.status, 201);

    let page = rp.get(&rp.auth_url(&[])).await;
    assert_eq!(accounts_listed(&page.text), [ALICE, BOB, "carol@other.test"]);

    let page = rp.get(&rp.auth_url(&[("login_hint", BOB)])).await;
    assert_eq!(accounts_listed(&page.text)[0], BOB);
    assert!(
        page.text.contains(&format!(r#"value="{BOB}" class="account selected" aria-current="true" autofocus"#)),
        "{}",
        page.text
    );

    let page = rp.get(&rp.auth_url(&[("hd", "other.test")])).await;
    assert_eq!(accounts_listed(&page.text), ["carol@other.test"]);
    // An account outside hd cannot be chosen even by a hand-made form.
    let r = rp.choose(&hidden_request(&page.text), &[("account", ALICE)]).await;
    assert_eq!(r.status, 400);
    assert!(r.headers.get("location").is_none());
    let r = rp.choose(&hidden_request(&page.text), &[("account", "carol@other.test")]).await;
    assert_eq!(param(&redirect_query(&r), "hd"), Some("other.test"));

    let page = rp.get(&rp.auth_url(&[("hd", "nowhere.test")])).await;
    assert!(accounts_listed(&page.text).is_empty());
    assert!(page.text.contains("No accounts in nowhere.test"));
}

#[tokio::test]
async fn cancelling_redirects_with_access_denied() {
    let rp = Rp::new().await;
    let page = rp.get(&rp.auth_url(&[])).await;
    let r = rp.choose(&hidden_request(&page.text), &[("cancel", "1")]).await;
    assert_eq!(r.status, 302);
    let q = redirect_query(&r);
    assert_eq!(param(&q, "error"), Some("access_denied"));
    assert_eq!(param(&q, "state"), Some("st-123"));
    assert_eq!(param(&q, "iss"), Some(rp.env.base.as_str()));
    assert!(param(&q, "code").is_none());
}

#[tokio::test]
async fn prompt_none_signs_in_the_hinted_account_or_answers_login_required() {
    let rp = Rp::new().await;
    let r = rp.get(&rp.auth_url(&[("prompt", "none"), ("login_hint", ALICE)])).await;
    assert_eq!(r.status, 302, "{}", r.text);
    let q = redirect_query(&r);
    let t = rp.exchange_code(param(&q, "code").unwrap(), Some(VERIFIER)).await;
    assert_eq!(rp.verify(t.body["id_token"].as_str().unwrap(), &rp.env.base).await.unwrap()["email"], ALICE);
    let r = rp.get(&rp.auth_url(&[("prompt", "none")])).await;
    assert_eq!(param(&redirect_query(&r), "error"), Some("login_required"));
    let q = rp.sign_in_with(&[("prompt", "consent")], ALICE).await;
    assert_eq!(param(&q, "prompt"), Some("consent"));
}

#[tokio::test]
async fn unknown_clients_and_unregistered_redirect_uris_get_an_error_page_not_a_redirect() {
    let rp = Rp::new().await;
    let r = rp.get(&rp.auth_url(&[("client_id", "999-nope.apps.googleusercontent.com")])).await;
    assert_error_page(&r, 401, "invalid_client");
    assert!(r.text.contains("The OAuth client was not found."));
    let r = rp.get(&rp.auth_url(&[("client_id", "")])).await;
    assert_error_page(&r, 400, "invalid_request");
    assert!(r.text.contains("Missing required parameter: client_id"));

    for uri in [
        "https://evil.example/callback",
        "http://127.0.0.1:9/console/auth/callback/",
        "http://127.0.0.1:9/console/auth/CALLBACK",
    ] {
        let r = rp.get(&rp.auth_url(&[("redirect_uri", uri)])).await;
        assert_error_page(&r, 400, "redirect_uri_mismatch");
        assert!(r.text.contains("redirect_uri="), "the page names the URI");
    }
    let r = rp.get(&rp.auth_url(&[("redirect_uri", "")])).await;
    assert_error_page(&r, 400, "invalid_request");

    // Other bad requests: a page too, with Google's error codes.
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: &[Case] = &[
        (&[("response_type", "")], "invalid_request", "response_type"),
        (&[("response_type", "token")], "unsupported_response_type", "response_type=code"),
        (&[("scope", "")], "invalid_request", "Missing required parameter: scope"),
        (&[("scope", "openid bogus")], "invalid_scope", "{invalid=[bogus]}"),
        (&[("code_challenge_method", "S512")], "invalid_request", "Invalid code_challenge_method."),
        (&[("code_challenge", "short")], "invalid_request", "Invalid code_challenge."),
        (&[("code_challenge", "")], "invalid_request", "Missing code_challenge."),
        (&[("prompt", "none consent")], "invalid_request", "prompt"),
    ];
    for (extra, error, text) in cases {
        let r = rp.get(&rp.auth_url(extra)).await;
        assert_error_page(&r, 400, error);
        assert!(r.text.contains(text), "{extra:?}: {}", r.text);
    }

    // A tampered chooser form.
    let page = rp.get(&rp.auth_url(&[])).await;
    let mut sealed = hidden_request(&page.text);
    sealed.replace_range(3..4, if &sealed[3..4] == "A" { "B" } else { "A" });
    let r = rp.choose(&sealed, &[("account", ALICE)]).await;
    assert_error_page(&r, 400, "invalid_request");
    let r = reply(
        rp.http.post(format!("{}/o/oauth2/v2/auth/choose", rp.env.base)).body(vec![0xff, 0xfe]).send().await.unwrap(),
    )
    .await;
    assert_error_page(&r, 400, "invalid_request");

    // A deleted client.
    assert_eq!(rp.env.control("DELETE", &format!("/_fake/oauth-clients/{}", rp.client_id), None).await.status, 204);
    let r = rp.get(&rp.auth_url(&[])).await;
    assert_error_page(&r, 401, "deleted_client");
    // The open chooser no longer works either.
    let r = rp.choose(&hidden_request(&page.text), &[("account", ALICE)]).await;
    assert_error_page(&r, 401, "invalid_client");
}

// ---- the token endpoint ----

#[tokio::test]
async fn pkce_is_enforced_for_s256_and_plain() {
    let rp = Rp::new().await;
    // Wrong verifier, missing verifier.
    let code = rp.code_for(ALICE).await;
    assert_oauth_error(
        &rp.exchange_code(&code, Some(&format!("{VERIFIER}x"))).await,
        400,
        "invalid_grant",
        "Invalid code verifier.",
    );
    let code = rp.code_for(ALICE).await;
    assert_oauth_error(&rp.exchange_code(&code, None).await, 400, "invalid_grant", "Missing code verifier.");
    // The S256 challenge itself as the verifier is wrong.
    let code = rp.code_for(ALICE).await;
    assert_oauth_error(
        &rp.exchange_code(&code, Some(&s256(VERIFIER))).await,
        400,
        "invalid_grant",
        "Invalid code verifier.",
    );

    // plain: the verifier is the challenge.
    let plain = "plain-verifier-0123456789-0123456789-0123456789";
    let q = rp.sign_in_with(&[("code_challenge", plain), ("code_challenge_method", "plain")], ALICE).await;
    assert_eq!(rp.exchange_code(param(&q, "code").unwrap(), Some(plain)).await.status, 200);
    let q = rp.sign_in_with(&[("code_challenge", plain), ("code_challenge_method", "")], ALICE).await;
    assert_eq!(rp.exchange_code(param(&q, "code").unwrap(), Some(plain)).await.status, 200, "plain is the default");
    let q = rp.sign_in_with(&[("code_challenge", plain), ("code_challenge_method", "plain")], ALICE).await;
    assert_oauth_error(
        &rp.exchange_code(param(&q, "code").unwrap(), Some(&s256(plain))).await,
        400,
        "invalid_grant",
        "Invalid code verifier.",
    );

    // No challenge: a verifier is refused, none is fine.
    let q = rp.sign_in_with(&[("code_challenge", ""), ("code_challenge_method", "")], ALICE).await;
    assert_oauth_error(
        &rp.exchange_code(param(&q, "code").unwrap(), Some(VERIFIER)).await,
        400,
        "invalid_grant",
        "code_verifier or verifier is not needed.",
    );
    let q = rp.sign_in_with(&[("code_challenge", ""), ("code_challenge_method", "")], ALICE).await;
    assert_eq!(rp.exchange_code(param(&q, "code").unwrap(), None).await.status, 200);
}

#[tokio::test]
async fn codes_are_single_use_and_a_replay_revokes_the_first_token() {
    let rp = Rp::new().await;
    let code = rp.code_for(ALICE).await;
    let t = rp.exchange_code(&code, Some(VERIFIER)).await;
    assert_eq!(t.status, 200);
    let access = t.body["access_token"].as_str().unwrap().to_owned();
    let userinfo = || async {
        reply(rp.http.get(format!("{}/v1/userinfo", rp.env.base)).bearer_auth(&access).send().await.unwrap())
            .await
            .status
    };
    assert_eq!(userinfo().await, 200);
    assert_oauth_error(&rp.exchange_code(&code, Some(VERIFIER)).await, 400, "invalid_grant", "Bad Request");
    assert_eq!(userinfo().await, 401, "the replay revoked the token");

    // A failed exchange spends the code too.
    let code = rp.code_for(ALICE).await;
    assert_eq!(rp.exchange_code(&code, Some("wrong-verifier-wrong-verifier-wrong-verifier-x")).await.status, 400);
    assert_oauth_error(&rp.exchange_code(&code, Some(VERIFIER)).await, 400, "invalid_grant", "Bad Request");
}

#[tokio::test]
async fn codes_expire_on_the_fake_clock() {
    let rp = Rp::new().await;
    let code = rp.code_for(ALICE).await;
    let r = rp.env.control("POST", "/_fake/clock", Some(json!({"advance": "9m"}))).await;
    assert_eq!(r.status, 200);
    assert_eq!(rp.exchange_code(&code, Some(VERIFIER)).await.status, 200, "still valid after 9 minutes");
    let code = rp.code_for(ALICE).await;
    rp.env.control("POST", "/_fake/clock", Some(json!({"advance": "10m"}))).await;
    assert_oauth_error(&rp.exchange_code(&code, Some(VERIFIER)).await, 400, "invalid_grant", "Bad Request");
    // The lifetime is a knob.
    let r = rp.env.control("PUT", "/_fake/oidc", Some(json!({"code_lifetime": "30s"}))).await;
    assert_eq!(r.body["code_lifetime_secs"], 30);
    let code = rp.code_for(ALICE).await;
    rp.env.control("POST", "/_fake/clock", Some(json!({"advance": "31s"}))).await;
    assert_oauth_error(&rp.exchange_code(&code, Some(VERIFIER)).await, 400, "invalid_grant", "Bad Request");
    assert_eq!(rp.env.control("PUT", "/_fake/oidc", Some(json!({"code_lifetime": "soon"}))).await.status, 400);
}

#[tokio::test]
async fn token_endpoint_errors_have_googles_shape() {
    let rp = Rp::new().await;
    let (id, secret) = (rp.client_id.as_str(), rp.client_secret.as_str());
    let code = rp.code_for(ALICE).await;
    let base = |extra: &[(&'static str, String)]| {
        let mut p: Vec<(&str, String)> = vec![
            ("grant_type", "authorization_code".into()),
            ("code", code.clone()),
            ("redirect_uri", REDIRECT.into()),
            ("client_id", id.into()),
            ("client_secret", secret.into()),
            ("code_verifier", VERIFIER.into()),
        ];
        for (k, v) in extra {
            p.retain(|(pk, _)| pk != k);
            if !v.is_empty() {
                p.push((k, v.clone()));
            }
        }
        p
    };
    async fn post(rp: &Rp, p: Vec<(&str, String)>) -> Reply {
        reply(rp.http.post(format!("{}/token", rp.env.base)).form(&p).send().await.unwrap()).await
    }
    // Client authentication comes first and does not spend the code.
    assert_oauth_error(
        &post(&rp, base(&[("client_id", String::new())])).await,
        400,
        "invalid_request",
        "Could not determine client ID from request.",
    );
    assert_oauth_error(
        &post(&rp, base(&[("client_id", "1-x.apps.googleusercontent.com".into())])).await,
        401,
        "invalid_client",
        "The OAuth client was not found.",
    );
    assert_oauth_error(
        &post(&rp, base(&[("client_secret", String::new())])).await,
        400,
        "invalid_request",
        "client_secret is missing.",
    );
    assert_oauth_error(
        &post(&rp, base(&[("client_secret", "GOCSPX-wrong".into())])).await,
        401,
        "invalid_client",
        "Unauthorized",
    );
    assert_oauth_error(
        &post(&rp, base(&[("code", String::new())])).await,
        400,
        "invalid_request",
        "Missing required parameter: code",
    );
    assert_oauth_error(
        &post(&rp, base(&[("code", "garbage".into())])).await,
        400,
        "invalid_grant",
        "Malformed auth code.",
    );
    assert_oauth_error(&post(&rp, base(&[("code", "4/0Aunknown".into())])).await, 400, "invalid_grant", "Bad Request");
    assert_oauth_error(
        &post(&rp, base(&[("grant_type", "password".into())])).await,
        400,
        "unsupported_grant_type",
        "Invalid grant_type: password",
    );
    // client_secret_basic works as well as client_secret_post.
    let basic = reply(
        rp.http
            .post(format!("{}/token", rp.env.base))
            .basic_auth(id, Some(secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(basic.status, 200, "{basic:?}");

    // redirect_uri must be the one the code was issued for.
    let code = rp.code_for(ALICE).await;
    let r = rp
        .exchange(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:9/other"),
            ("client_id", id),
            ("client_secret", secret),
            ("code_verifier", VERIFIER),
        ])
        .await;
    assert_oauth_error(&r, 400, "redirect_uri_mismatch", "Bad Request");
    let code = rp.code_for(ALICE).await;
    let r = rp
        .exchange(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", id),
            ("client_secret", secret),
            ("code_verifier", VERIFIER),
        ])
        .await;
    assert_oauth_error(&r, 400, "invalid_request", "Missing parameter: redirect_uri");

    // A code is bound to its client.
    let r = rp.env.control("POST", "/_fake/oauth-clients", Some(json!({"redirect_uris": [REDIRECT]}))).await;
    let (id2, secret2) = (r.body["client_id"].as_str().unwrap(), r.body["client_secret"].as_str().unwrap());
    let code = rp.code_for(ALICE).await;
    let r = rp
        .exchange(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", id2),
            ("client_secret", secret2),
            ("code_verifier", VERIFIER),
        ])
        .await;
    assert_oauth_error(&r, 400, "invalid_grant", "Bad Request");

    // A deleted client.
    let code = rp.code_for(ALICE).await;
    rp.env.control("DELETE", &format!("/_fake/oauth-clients/{id}"), None).await;
    assert_oauth_error(
        &rp.exchange_code(&code, Some(VERIFIER)).await,
        401,
        "deleted_client",
        "The OAuth client was deleted.",
    );
}

// ---- keys ----

#[tokio::test]
async fn keys_rotate_only_by_the_control_call() {
    let rp = Rp::new().await;
    let code = rp.code_for(ALICE).await;
    let old = rp.exchange_code(&code, Some(VERIFIER)).await.body["id_token"].as_str().unwrap().to_owned();
    let old_kid = jsonwebtoken::decode_header(&old).unwrap().kid.unwrap();

    let r = rp.env.control("POST", "/_fake/oidc/keys/rotate", None).await;
    assert_eq!(r.status, 200, "{r:?}");
    let new_kid = r.body["signing_kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid);
    let jwks = rp.jwks().await;
    assert_eq!(jwks.keys.len(), 2, "the previous key stays published");
    assert!(rp.verify(&old, &rp.env.base).await.is_ok(), "tokens signed before still verify");
    let code = rp.code_for(ALICE).await;
    let new = rp.exchange_code(&code, Some(VERIFIER)).await.body["id_token"].as_str().unwrap().to_owned();
    assert_eq!(jsonwebtoken::decode_header(&new).unwrap().kid.unwrap(), new_kid);
    assert!(rp.verify(&new, &rp.env.base).await.is_ok());

    // An emergency rotation drops every older key.
    let r = rp.env.control("POST", "/_fake/oidc/keys/rotate", Some(json!({"keep_previous": false}))).await;
    assert_eq!(r.body["keys"].as_array().unwrap().len(), 1);
    let jwks = rp.jwks().await;
    assert!(jwks.find(&old_kid).is_none() && jwks.find(&new_kid).is_none());
    let info = rp.env.control("GET", "/_fake/oidc", None).await;
    assert_eq!(info.body["keys"].as_array().unwrap().len(), 1);
}

// ---- OAuth clients ----

#[tokio::test]
async fn oauth_clients_are_created_listed_changed_and_deleted() {
    let rp = Rp::new().await;
    let id = &rp.client_id;
    let (number, rest) = id.split_once('-').expect("<digits>-<random>");
    assert!(number.len() >= 12 && number.bytes().all(|b| b.is_ascii_digit()), "{id}");
    assert!(rest.ends_with(".apps.googleusercontent.com"), "{id}");
    assert!(rp.client_secret.starts_with("GOCSPX-") && rp.client_secret.len() == 35, "{}", rp.client_secret);

    let r = rp.env.control("GET", "/_fake/oauth-clients", None).await;
    assert_eq!(r.body["clients"][0]["client_id"], *id);
    assert_eq!(r.body["clients"][0]["web"]["token_uri"], rp.env.fake.token_uri());
    assert_eq!(r.body["clients"][0]["redirect_uris"], json!([REDIRECT]));

    // Google's rules for redirect URIs.
    for bad in [
        json!([]),
        json!(["http://example.com/cb"]),
        json!(["https://x.test/cb#frag"]),
        json!(["relative/cb"]),
        json!(["https://*.x.test/cb"]),
    ] {
        let r = rp.env.control("POST", "/_fake/oauth-clients", Some(json!({"redirect_uris": bad}))).await;
        assert_eq!(r.status, 400, "{bad}: {r:?}");
    }
    let r = rp.env.control("POST", "/_fake/oauth-clients", Some(json!({"redirect_uris": ["https://console.acme.test/cb", "http://localhost:8080/cb"], "name": "Console"}))).await;
    assert_eq!(r.status, 201, "{r:?}");

    // A fixed id and secret (for demos configured before the fake starts), in Google's formats.
    const FIXED: &str = "123456789012-demo0console.apps.googleusercontent.com";
    let fixed =
        json!({"redirect_uris": [REDIRECT], "client_id": FIXED, "client_secret": "GOCSPX-demo-secret-0123456789"});
    let r = rp.env.control("POST", "/_fake/oauth-clients", Some(fixed.clone())).await;
    assert_eq!((r.status, r.body["client_id"].as_str()), (201, Some(FIXED)), "{r:?}");
    assert_eq!(rp.env.control("POST", "/_fake/oauth-clients", Some(fixed)).await.status, 409);
    for (id, secret) in [("demo.apps.googleusercontent.com", "GOCSPX-demo-secret-0123456789"), (FIXED, "secret")] {
        let body = json!({"redirect_uris": [REDIRECT], "client_id": id, "client_secret": secret});
        assert_eq!(rp.env.control("POST", "/_fake/oauth-clients", Some(body)).await.status, 400, "{id} {secret}");
    }
    // The library call does the same.
    let lib = rp.env.fake.add_oauth_client("lib", &[REDIRECT]).expect("a client");
    assert!(lib.client_secret.starts_with("GOCSPX-"));
    assert!(rp.env.fake.add_oauth_client("lib", &["ftp://x"]).is_err());
    assert_eq!(rp.env.control("GET", "/_fake", None).await.body["issuer"], rp.env.base);

    // Changing the redirect URIs takes effect at once.
    const NEW: &str = "http://127.0.0.1:9/new";
    let r = rp.env.control("PUT", &format!("/_fake/oauth-clients/{id}"), Some(json!({"redirect_uris": [NEW]}))).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_error_page(&rp.get(&rp.auth_url(&[])).await, 400, "redirect_uri_mismatch");
    assert_eq!(rp.get(&rp.auth_url(&[("redirect_uri", NEW)])).await.status, 200);
    assert_eq!(rp.env.control("PUT", "/_fake/oauth-clients/nope", Some(json!({"name": "x"}))).await.status, 404);

    // Deleting revokes the client's tokens.
    rp.env.control("PUT", &format!("/_fake/oauth-clients/{id}"), Some(json!({"redirect_uris": [REDIRECT]}))).await;
    let code = rp.code_for(ALICE).await;
    let access = rp.exchange_code(&code, Some(VERIFIER)).await.body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(rp.env.control("DELETE", &format!("/_fake/oauth-clients/{id}"), None).await.status, 204);
    let u = reply(rp.http.get(format!("{}/v1/userinfo", rp.env.base)).bearer_auth(&access).send().await.unwrap()).await;
    assert_eq!(u.status, 401);
    assert_eq!(rp.env.control("DELETE", &format!("/_fake/oauth-clients/{id}"), None).await.status, 404);
    assert_eq!(rp.env.control("GET", &format!("/_fake/oauth-clients/{id}"), None).await.status, 404);
}

#[tokio::test]
async fn revocation_ends_an_access_token() {
    let rp = Rp::new().await;
    let code = rp.code_for(ALICE).await;
    let access = rp.exchange_code(&code, Some(VERIFIER)).await.body["access_token"].as_str().unwrap().to_owned();
    let r = reply(
        rp.http.post(format!("{}/revoke", rp.env.base)).form(&[("token", access.as_str())]).send().await.unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = reply(
        rp.http.post(format!("{}/revoke", rp.env.base)).form(&[("token", access.as_str())]).send().await.unwrap(),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"], "invalid_token");
}

#[tokio::test]
async fn garbage_gets_a_4xx_never_a_panic() {
    let rp = Rp::new().await;
    let base = rp.env.base.clone();
    let gets = [
        format!("{base}/o/oauth2/v2/auth?%%%&&==&client_id=%FF%FE"),
        format!("{base}/o/oauth2/v2/auth?client_id={}&redirect_uri=%00", rp.client_id),
        format!("{base}/o/oauth2/v2/auth?{}", "a=b&".repeat(2000)),
        format!("{base}/v1/userinfo?access_token="),
    ];
    for url in &gets {
        let r = rp.get(url).await;
        assert!((400..500).contains(&r.status), "{url}: {r:?}");
    }
    let token = format!("{base}/token");
    let bodies: [&[u8]; 4] = [
        b"grant_type=authorization_code&client_id=%FF&client_secret=%FE&code=4/%00",
        &[0xff, 0xfe, 0x00, 0x3d],
        b"grant_type=authorization_code&&&==&code",
        b"",
    ];
    for body in bodies {
        for auth in [None, Some("Basic !!!"), Some("Basic Og=="), Some("Basic w7w6w7w=")] {
            let mut req =
                rp.http.post(&token).header("content-type", "application/x-www-form-urlencoded").body(body.to_vec());
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let r = reply(req.send().await.unwrap()).await;
            assert!((400..500).contains(&r.status), "{body:?} {auth:?}: {r:?}");
            assert!(r.body["error"].is_string(), "OAuth2 JSON: {r:?}");
        }
    }
    for body in [&b""[..], b"token=", &[0xff, 0xfe]] {
        let r = reply(rp.http.post(format!("{base}/revoke")).body(body.to_vec()).send().await.unwrap()).await;
        assert_eq!(r.status, 400, "{r:?}");
    }
    // Still serving.
    assert_eq!(rp.get(&format!("{base}/.well-known/openid-configuration")).await.status, 200);
}
