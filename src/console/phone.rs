//! The phone-system page: where switches go (URL, a signing secret generated here and shown
//! once), a test message, the last deliveries with their outcome, and the tenant's tokens
//! (integration tokens for the phone system; created and revoked here).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};

use super::api::{Body, seg};
use super::viewer::{Standing, Viewer};
use super::{Console, Need, admin_post, base, done, render, show_failure, tenant_page};
use crate::app::AppState;
use crate::model::tenant::TenantRecord;

/// Key bytes of a secret made here (Standard Webhooks allows 24 to 64).
const SECRET_BYTES: usize = 32;

async fn context(
    app: &AppState,
    console: &Console,
    viewer: &Viewer,
    t: &TenantRecord,
    standing: Standing,
) -> Result<Value, HttpResponse> {
    let actor = viewer.actor(Some(&t.id), standing);
    let tenant_path = format!("/tenants/{}", seg(&t.id));
    let view =
        console.api.get(app, &actor, &tenant_path).await.map_err(|f| {
            super::message(console, StatusCode::BAD_GATEWAY, "Could not load this page", &f.message, None)
        })?;
    let mut ctx = base(Some(viewer), Some((&t.id, standing)), "phone", "Phone system");
    ctx["has_phone"] = json!(view["phone_system"].is_object());
    ctx["form"] = json!({ "url": view["phone_system"]["url"] });
    if view["phone_system"].is_object()
        && let Ok(d) = console.api.get(app, &actor, &format!("{tenant_path}/phone-system/deliveries")).await
    {
        ctx["health"] = d["health"].clone();
        ctx["deliveries"] = d["deliveries"].clone();
    }
    if let Ok(tokens) = console.api.get(app, &actor, &format!("{tenant_path}/tokens")).await {
        ctx["tokens"] = tokens["tokens"].clone();
    }
    Ok(ctx)
}

pub async fn page(
    req: HttpRequest,
    app: web::Data<AppState>,
    console: web::Data<Console>,
    path: web::Path<String>,
) -> HttpResponse {
    done(
        async {
            let (viewer, t, standing) = tenant_page(&req, &app, &console, &path, Need::Admin).await?;
            let ctx = context(&app, &console, &viewer, &t, standing).await?;
            Ok(console.templates.render(StatusCode::OK, "phone.html", ctx))
        }
        .await,
    )
}

/// Saves the URL; with "new secret" (always for a first phone system) makes a secret and shows
/// it once.
pub async fn save(
    req: HttpRequest,
    app: web::Data<AppState>,
    console: web::Data<Console>,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    done(
        async {
            let (viewer, t, standing, actor, form) = admin_post(&req, &app, &console, &path, body).await?;
            let tenant_path = format!("/tenants/{}", seg(&t.id));
            let view =
                console.api.get(&app, &actor, &tenant_path).await.map_err(|f| {
                    super::message(&console, StatusCode::BAD_GATEWAY, "Could not save", &f.message, None)
                })?;
            let url = form.text("url");
            let mut spec = super::company::spec_of(&view);
            let mut secret = None;
            if url.is_empty() {
                spec["phone_system"] = Value::Null;
            } else {
                let mut ps = json!({ "url": url });
                if form.get("new_secret") == Some("on") || !view["phone_system"].is_object() {
                    use rand::Rng;
                    let mut bytes = [0u8; SECRET_BYTES];
                    rand::rng().fill_bytes(&mut bytes);
                    let s = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes));
                    ps["secret"] = json!(s);
                    secret = Some(s);
                }
                spec["phone_system"] = ps;
            }
            let result = console.api.call(&app, &actor, Method::PUT, &tenant_path, Some(Body::Json(spec))).await;
            let t = app.store.tenant(&t.id).await.map_err(|e| super::server_error(&e))?.unwrap_or(t);
            let mut ctx = context(&app, &console, &viewer, &t, standing).await?;
            match result {
                Ok(_) => {
                    ctx["notice"] = json!("Saved.");
                    ctx["secret"] = json!(secret);
                    Ok(console.templates.render(StatusCode::OK, "phone.html", ctx))
                }
                Err(f) => {
                    ctx["form"]["url"] = json!(url);
                    show_failure(&mut ctx, &f, &[("phone_system.url", "url"), ("phone_system.secret", "url")]);
                    Ok(console.templates.render(StatusCode::BAD_REQUEST, "phone.html", ctx))
                }
            }
        }
        .await,
    )
}

pub async fn test(
    req: HttpRequest,
    app: web::Data<AppState>,
    console: web::Data<Console>,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    done(
        async {
            let (viewer, t, standing, actor, _form) = admin_post(&req, &app, &console, &path, body).await?;
            let result = console
                .api
                .call(&app, &actor, Method::POST, &format!("/tenants/{}/phone-system/test", seg(&t.id)), None)
                .await;
            let mut ctx = context(&app, &console, &viewer, &t, standing).await?;
            let (ok, text) = match result {
                Ok(o) if o["delivered"] == true => (
                    true,
                    format!(
                        "The phone system accepted the test message (HTTP {}, {} ms).",
                        o["status"], o["elapsed_ms"]
                    ),
                ),
                Ok(o) => (
                    false,
                    format!("The test message was not accepted: {}", o["error"].as_str().unwrap_or("no answer")),
                ),
                Err(f) => (false, f.message),
            };
            ctx["test_ok"] = json!(ok);
            ctx["test_result"] = json!(text);
            Ok(console.templates.render(StatusCode::OK, "phone.html", ctx))
        }
        .await,
    )
}

pub async fn create_token(
    req: HttpRequest,
    app: web::Data<AppState>,
    console: web::Data<Console>,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    done(
        async {
            let (viewer, t, standing, actor, form) = admin_post(&req, &app, &console, &path, body).await?;
            let expires = form.text("expires_in");
            let spec = json!({
                "name": form.text("name"),
                "role": form.text("role"),
                "expires_in": if expires.is_empty() { Value::Null } else { json!(expires) },
            });
            let result = console
                .api
                .call(&app, &actor, Method::POST, &format!("/tenants/{}/tokens", seg(&t.id)), Some(Body::Json(spec)))
                .await;
            let mut ctx = context(&app, &console, &viewer, &t, standing).await?;
            match result {
                Ok(made) => {
                    ctx["new_token"] = made["token"].clone();
                    ctx["notice"] = json!(format!("Token {} made.", made["name"].as_str().unwrap_or("")));
                    Ok(console.templates.render(StatusCode::OK, "phone.html", ctx))
                }
                Err(f) => {
                    ctx["form"]["name"] = json!(form.text("name"));
                    ctx["form"]["expires_in"] = json!(expires);
                    show_failure(&mut ctx, &f, &[]);
                    Ok(console.templates.render(StatusCode::BAD_REQUEST, "phone.html", ctx))
                }
            }
        }
        .await,
    )
}

pub async fn revoke_token(
    req: HttpRequest,
    app: web::Data<AppState>,
    console: web::Data<Console>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> HttpResponse {
    let (tenant, id) = path.into_inner();
    done(
        async {
            let (viewer, t, standing, actor, _form) = admin_post(&req, &app, &console, &tenant, body).await?;
            let result = console
                .api
                .call(&app, &actor, Method::DELETE, &format!("/tenants/{}/tokens/{}", seg(&t.id), seg(&id)), None)
                .await;
            match result {
                Ok(_) => Ok(render::see_other(&format!("/console/t/{}/phone", t.id))),
                Err(f) => {
                    let mut ctx = context(&app, &console, &viewer, &t, standing).await?;
                    ctx["error"] = json!(f.message);
                    Ok(console.templates.render(StatusCode::BAD_REQUEST, "phone.html", ctx))
                }
            }
        }
        .await,
    )
}
