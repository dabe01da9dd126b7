//! Signing in and out: Sign in with Google (the callback verifies state, then `oidc` the code,
//! PKCE and ID token), or an operator token. Someone with no standing anywhere gets no session.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Duration;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::session::{self, Session, SignedInVia, Signin};
use super::viewer::Viewer;
use super::{Console, base, done, message, render, same_origin};
use crate::access::{Access, Authn};
use crate::app::AppState;
use crate::model::access::Role;

pub async fn page(req: HttpRequest, app: web::Data<AppState>, console: web::Data<Console>) -> HttpResponse {
    if let Some(s) = Session::from_request(&req, &app.master_key, app.clock.now())
        && let Ok(Some(_)) = Viewer::of(&app, s).await
    {
        return render::see_other("/console/");
    }
    signin_page(&console, StatusCode::OK, None)
}

fn signin_page(console: &Console, status: StatusCode, token_error: Option<&str>) -> HttpResponse {
    let mut ctx = base(None, None, "", "Sign in");
    ctx["google"] = json!(console.oidc.is_some());
    ctx["token_error"] = json!(token_error);
    console.templates.render(status, "signin.html", ctx)
}

pub async fn google(app: web::Data<AppState>, console: web::Data<Console>) -> HttpResponse {
    let Some(oidc) = &console.oidc else {
        return message(
            &console,
            StatusCode::NOT_FOUND,
            "Not configured",
            "Sign in with Google is not configured on this server.",
            None,
        );
    };
    match oidc.start().await {
        Ok(start) => {
            let signin = Signin {
                state: start.state,
                nonce: start.nonce,
                pkce_verifier: start.pkce_verifier,
                expires_at: app.clock.now() + Duration::seconds(session::SIGNIN_TTL_SECS),
            };
            let Some(cookie) = signin.cookie(&app.master_key) else {
                return super::server_error(&"sealing the sign-in cookie");
            };
            render::with_headers(HttpResponse::Found())
                .cookie(cookie)
                .insert_header((actix_web::http::header::LOCATION, start.url.to_string()))
                .finish()
        }
        Err(e) => {
            tracing::warn!(error = %e, "sign-in could not start");
            message(&console, StatusCode::BAD_GATEWAY, "Sign-in unavailable", &e.to_string(), None)
        }
    }
}

#[derive(Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

pub async fn callback(
    req: HttpRequest,
    app: web::Data<AppState>,
    console: web::Data<Console>,
    query: web::Query<Callback>,
) -> HttpResponse {
    let refuse = |status: StatusCode, title: &str, text: &str| {
        let mut r = message(&console, status, title, text, None);
        let _ = r.add_removal_cookie(&session::removal(session::SIGNIN_COOKIE));
        r
    };
    let Some(oidc) = &console.oidc else {
        return refuse(StatusCode::NOT_FOUND, "Not configured", "Sign in with Google is not configured.");
    };
    if let Some(e) = &query.error {
        let text = if e == "access_denied" {
            "The sign-in was cancelled.".to_owned()
        } else {
            format!("Google answered: {e}")
        };
        return refuse(StatusCode::BAD_REQUEST, "Not signed in", &text);
    }
    let now = app.clock.now();
    let Some(signin) = Signin::from_request(&req, &app.master_key, now) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "Sign-in expired",
            "This sign-in took too long or was started elsewhere: sign in again.",
        );
    };
    let (Some(code), Some(state)) = (&query.code, &query.state) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "Not signed in",
            "The answer from Google is incomplete: sign in again.",
        );
    };
    if !bool::from(state.as_bytes().ct_eq(signin.state.as_bytes())) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "Sign-in refused",
            "The answer from Google does not belong to this sign-in: sign in again.",
        );
    }
    let identity = match oidc.finish(code, &signin.nonce, &signin.pkce_verifier).await {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "a console sign-in was refused");
            return refuse(StatusCode::FORBIDDEN, "Sign-in refused", &e.to_string());
        }
    };
    let expires = now + Duration::from_std(app.config.console.session_ttl).unwrap_or(Duration::hours(8));
    let s = Session::new(identity.email.clone(), identity.name, SignedInVia::Google, expires);
    let viewer = match Viewer::of(&app, s.clone()).await {
        Ok(Some(v)) => v,
        Ok(None) => return refuse(StatusCode::FORBIDDEN, "Sign-in refused", "This account may not sign in."),
        Err(e) => return super::server_error(&e),
    };
    match viewer.tenants(&app).await {
        Ok(t) if t.is_empty() && !viewer.operator => {
            tracing::info!(email = %identity.email, "a console sign-in by someone with no company was refused");
            return refuse(
                StatusCode::FORBIDDEN,
                "No access",
                &format!(
                    "{} is not an operator, nor an admin or a self-service user of any company here. Ask your Workspace admin to add you.",
                    identity.email
                ),
            );
        }
        Ok(_) => {}
        Err(e) => return super::server_error(&e),
    }
    tracing::info!(email = %identity.email, "signed in to the console");
    signed_in_answer(&app, &s)
}

/// The answer that sets the session and moves on to the console. A page, not a redirect: the
/// callback is a navigation from Google's site, and a SameSite=Strict cookie set on it is sent
/// only on the next navigation that starts on our own pages.
fn signed_in_answer(app: &AppState, s: &Session) -> HttpResponse {
    let Some(cookie) = s.cookie(&app.master_key, app.clock.now()) else {
        return super::server_error(&"sealing the session");
    };
    let body = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Signed in · gwsync</title>\
        <meta http-equiv=\"refresh\" content=\"0;url=/console/\"></head>\
        <body><main><p>Signed in. <a href=\"/console/\">Continue to the console</a></p></main></body></html>";
    let mut r =
        render::with_headers(HttpResponse::Ok()).cookie(cookie).content_type("text/html; charset=utf-8").body(body);
    let _ = r.add_removal_cookie(&session::removal(session::SIGNIN_COOKIE));
    r
}

/// An operator signs in with a token (GWSYNC_ADMIN_TOKEN or an operator token).
pub async fn token(
    req: HttpRequest,
    app: web::Data<AppState>,
    access: web::Data<Access>,
    console: web::Data<Console>,
    body: web::Bytes,
) -> HttpResponse {
    done(
        async {
            if !same_origin(&req) {
                return Err(signin_page(
                    &console,
                    StatusCode::FORBIDDEN,
                    Some("This form was not sent from this page."),
                ));
            }
            let form = super::Form::parse(&body);
            let presented = form.text("token");
            let header = format!("Bearer {presented}");
            let wrong = || signin_page(&console, StatusCode::UNAUTHORIZED, Some("This is not a live operator token."));
            let actor = match access.authenticate(Some(&header)).await {
                Ok(Authn::Valid(a)) if a.role == Role::Operator => a,
                Ok(Authn::Valid(_)) => {
                    return Err(signin_page(
                        &console,
                        StatusCode::FORBIDDEN,
                        Some("Only operator tokens sign in here; a company's admins sign in with Google."),
                    ));
                }
                Ok(_) => return Err(wrong()),
                Err(e) => return Err(super::server_error(&e)),
            };
            let expires =
                app.clock.now() + Duration::from_std(app.config.console.session_ttl).unwrap_or(Duration::hours(8));
            let s = Session::new(
                actor.name.clone(),
                None,
                SignedInVia::Token { token_id: actor.token_id.clone() },
                expires,
            );
            let Some(cookie) = s.cookie(&app.master_key, app.clock.now()) else {
                return Err(super::server_error(&"sealing the session"));
            };
            tracing::info!(token = %actor.token_id, "an operator signed in to the console with a token");
            Ok(render::with_headers(HttpResponse::SeeOther())
                .cookie(cookie)
                .insert_header((actix_web::http::header::LOCATION, "/console/"))
                .finish())
        }
        .await,
    )
}

pub async fn signout(
    req: HttpRequest,
    app: web::Data<AppState>,
    console: web::Data<Console>,
    body: web::Bytes,
) -> HttpResponse {
    done(
        async {
            let viewer = super::signed_in(&req, &app).await?;
            super::read_form(&req, &viewer, &console, body).await?;
            let mut r = render::see_other("/console/signin");
            let _ = r.add_removal_cookie(&session::removal(session::SESSION_COOKIE));
            Ok(r)
        }
        .await,
    )
}
