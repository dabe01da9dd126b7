//! The company pages: the list of companies (and adding one, for operators), and the setup in
//! the seed's order — domain and admins, the key upload, domain-wide delegation with the exact
//! client ID and scopes to paste, the API links for the key's own project, and the diagnose
//! report with a Check again button.

use actix_multipart::Multipart;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::api::{Body, seg};
use super::viewer::Standing;
use super::{Console, Need, admin_post, base, done, read_form, render, show_failure, signed_in, tenant_page};
use crate::app::AppState;
use crate::google::Scope;
use crate::model::key_file::MAX_KEY_FILE_BYTES;

pub async fn home(req: HttpRequest, app: web::Data<AppState>, console: web::Data<Console>) -> HttpResponse {
    done(
        async {
            let viewer = signed_in(&req, &app).await?;
            let tenants = viewer.tenants(&app).await.map_err(|e| super::server_error(&e))?;
            // One company and no operator: straight to it.
            if !viewer.operator && tenants.len() == 1 {
                let (t, s) = &tenants[0];
                return Ok(render::see_other(&format!("/console/t/{}/{}", t.id, start_page(*s))));
            }
            let mut ctx = base(Some(&viewer), None, "", "Companies");
            ctx["operator"] = json!(viewer.operator);
            ctx["tenants"] = tenants
                .iter()
                .map(|(t, s)| json!({ "id": t.id, "domain": t.domain, "role": role_name(*s), "start": start_page(*s) }))
                .collect();
            Ok(console.templates.render(StatusCode::OK, "home.html", ctx))
        }
        .await,
    )
}

fn start_page(s: Standing) -> &'static str {
    match s {
        Standing::User => "me",
        _ => "setup",
    }
}

fn role_name(s: Standing) -> &'static str {
    match s {
        Standing::Operator => "operator",
        Standing::Admin => "admin",
        Standing::User => "user (self-service)",
    }
}

/// A comma-separated list of addresses, as the API takes it.
fn list(text: &str) -> Vec<String> {
    text.split([',', ' ', '\n']).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// An operator adds a company.
pub async fn create(
    req: HttpRequest,
    app: web::Data<AppState>,
    console: web::Data<Console>,
    body: web::Bytes,
) -> HttpResponse {
    done(
        async {
            let viewer = signed_in(&req, &app).await?;
            let form = read_form(&req, &viewer, &console, body).await?;
            if !viewer.operator {
                return Err(super::message(
                    &console,
                    StatusCode::FORBIDDEN,
                    "Not allowed",
                    "Only operators add companies.",
                    Some(&viewer),
                ));
            }
            let (id, domain, admins) = (form.text("id"), form.text("domain"), form.text("admins"));
            let actor = viewer.actor(None, Standing::Operator);
            let spec = json!({ "domain": domain, "admins": list(&admins) });
            let failure = match crate::model::tenant::validate_tenant_id(&id) {
                Err(e) => Some(super::api::ApiFailure {
                    status: 400,
                    code: "invalid_request".into(),
                    message: format!("id: {}", e.message),
                }),
                Ok(()) => match app.store.tenant(&id).await.map_err(|e| super::server_error(&e))? {
                    Some(_) => Some(super::api::ApiFailure {
                        status: 409,
                        code: "exists".into(),
                        message: format!("id: a company '{id}' exists already"),
                    }),
                    None => console
                        .api
                        .call(&app, &actor, Method::PUT, &format!("/tenants/{}", seg(&id)), Some(Body::Json(spec)))
                        .await
                        .err(),
                },
            };
            if let Some(f) = failure {
                let tenants = viewer.tenants(&app).await.map_err(|e| super::server_error(&e))?;
                let mut ctx = base(Some(&viewer), None, "", "Companies");
                ctx["operator"] = json!(true);
                ctx["tenants"] = tenants
                .iter()
                .map(|(t, s)| json!({ "id": t.id, "domain": t.domain, "role": role_name(*s), "start": start_page(*s) }))
                .collect();
                ctx["form"] = json!({ "id": id, "domain": domain, "admins": admins });
                show_failure(
                    &mut ctx,
                    &f,
                    &[("admins[0]", "admins"), ("admins[1]", "admins"), ("admins[2]", "admins")],
                );
                if let Some(field) = f.field()
                    && field.starts_with("admins")
                {
                    ctx["errors"]["admins"] = json!(f.text());
                }
                return Ok(console.templates.render(StatusCode::BAD_REQUEST, "home.html", ctx));
            }
            Ok(render::see_other(&format!("/console/t/{id}/setup")))
        }
        .await,
    )
}

#[derive(Deserialize)]
pub struct SetupQuery {
    check: Option<String>,
    saved: Option<String>,
}

pub async fn setup(
    req: HttpRequest,
    app: web::Data<AppState>,
    console: web::Data<Console>,
    path: web::Path<String>,
    query: web::Query<SetupQuery>,
) -> HttpResponse {
    done(
        async {
            let (viewer, t, standing) = tenant_page(&req, &app, &console, &path, Need::Admin).await?;
            let actor = viewer.actor(Some(&t.id), standing);
            let view = console
                .api
                .get(&app, &actor, &format!("/tenants/{}", seg(&t.id)))
                .await
                .map_err(|f| api_page_error(&console, &f))?;
            let mut ctx = setup_context(&viewer, standing, &view);
            if query.saved.is_some() {
                ctx["notice"] = json!("Saved.");
            }
            if query.check.is_some() || !view["credentials"].is_null() {
                diagnose_into(&app, &console, &viewer, &actor, &t.id, &t.domain, &mut ctx).await;
            }
            if query.check.is_some() {
                ctx["notice"] = json!("Checked again just now.");
                // The key was uploaded before the delegation was right: read the directory now.
                if ctx["report"]["passed"] == true {
                    let status_path = format!("/tenants/{}/contacts/status", seg(&t.id));
                    let status = console.api.get(&app, &actor, &status_path).await;
                    if status.is_ok_and(|s| s["entries"].as_u64() == Some(0)) {
                        let sync = format!("/tenants/{}/contacts/sync", seg(&t.id));
                        let _ = console.api.call(&app, &actor, Method::POST, &sync, None).await;
                    }
                }
            }
            Ok(console.templates.render(StatusCode::OK, "setup.html", ctx))
        }
        .await,
    )
}

fn setup_context(viewer: &super::viewer::Viewer, standing: Standing, view: &Value) -> Value {
    let tenant = view["id"].as_str().unwrap_or_default();
    let mut ctx = base(Some(viewer), Some((tenant, standing)), "setup", "Company setup");
    ctx["form"] = json!({
        "domain": view["domain"],
        "directory_admin": view["directory_admin"],
        "admins": view["admins"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")).unwrap_or_default(),
        "self_service": view["self_service"],
    });
    ctx["credentials"] = view["credentials"].clone();
    ctx["scopes"] = json!(Scope::delegation_list());
    ctx
}

/// Runs the diagnose report (as the directory user, else as the signed-in admin if they are in
/// the domain) into the page.
async fn diagnose_into(
    app: &AppState,
    console: &Console,
    viewer: &super::viewer::Viewer,
    actor: &crate::access::Actor,
    tenant: &str,
    domain: &str,
    ctx: &mut Value,
) {
    let mut path = format!("/tenants/{}/diagnose", seg(tenant));
    if ctx["form"]["directory_admin"].is_null() && crate::model::email_domain(viewer.email()) == domain {
        path.push_str(&format!("?user={}", seg(viewer.email())));
    }
    match console.api.get(app, actor, &path).await {
        Ok(report) => {
            let steps = report["steps"].as_array().cloned().unwrap_or_default();
            let (server, company): (Vec<Value>, Vec<Value>) = steps.into_iter().partition(|s| s["operator"] == true);
            let passed = company.iter().all(|s| s["outcome"] == "passed");
            ctx["report"] = json!({ "passed": passed, "steps": company, "server": server, "user": report["user"] });
        }
        Err(f) => ctx["diagnose_error"] = json!(f.message),
    }
}

fn api_page_error(console: &Console, f: &super::api::ApiFailure) -> HttpResponse {
    let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::BAD_GATEWAY);
    super::message(console, status, "Could not load this page", &f.message, None)
}

/// Saves domain, directory user, admins and self-service; everything else stays as it is.
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
            let view = console.api.get(&app, &actor, &tenant_path).await.map_err(|f| api_page_error(&console, &f))?;
            let mut directory_admin = form.text("directory_admin");
            // Left empty by an admin of the domain: they are the directory user.
            if directory_admin.is_empty() && crate::model::email_domain(viewer.email()) == form.text("domain") {
                directory_admin = viewer.email().to_owned();
            }
            let mut spec = spec_of(&view);
            spec["domain"] = json!(form.text("domain"));
            spec["directory_admin"] = if directory_admin.is_empty() { Value::Null } else { json!(directory_admin) };
            spec["admins"] = json!(list(&form.text("admins")));
            spec["self_service"] = json!(form.get("self_service") == Some("on"));
            match console.api.call(&app, &actor, Method::PUT, &tenant_path, Some(Body::Json(spec))).await {
                Ok(_) => Ok(render::see_other(&format!("/console/t/{}/setup?saved=1", t.id))),
                Err(f) => {
                    let mut ctx = setup_context(&viewer, standing, &view);
                    ctx["form"]["domain"] = json!(form.text("domain"));
                    ctx["form"]["directory_admin"] = json!(directory_admin);
                    ctx["form"]["admins"] = json!(form.text("admins"));
                    ctx["form"]["self_service"] = json!(form.get("self_service") == Some("on"));
                    show_failure(&mut ctx, &f, &[]);
                    if let Some(field) = f.field()
                        && field.starts_with("admins")
                    {
                        ctx["errors"]["admins"] = json!(f.text());
                    }
                    Ok(console.templates.render(StatusCode::BAD_REQUEST, "setup.html", ctx))
                }
            }
        }
        .await,
    )
}

/// The tenant's current settings as a `PUT` body (the phone system without its secret: it
/// stays as stored).
pub fn spec_of(view: &Value) -> Value {
    let mut spec = json!({
        "domain": view["domain"],
        "directory_admin": view["directory_admin"],
        "default_region": view["default_region"],
        "contacts": view["contacts"],
        "status_events": view["status_events"],
        "admins": view["admins"],
        "self_service": view["self_service"],
    });
    if let Some(url) = view["phone_system"]["url"].as_str() {
        spec["phone_system"] = json!({ "url": url });
    }
    spec
}

/// The key file upload (multipart): stored through the API, then the phonebook is synced and the
/// report shown.
pub async fn key(
    req: HttpRequest,
    app: web::Data<AppState>,
    console: web::Data<Console>,
    path: web::Path<String>,
    mut payload: Multipart,
) -> HttpResponse {
    done(
        async {
            let (viewer, t, standing) = tenant_page(&req, &app, &console, &path, Need::Admin).await?;
            let actor = viewer.actor(Some(&t.id), standing);
            let mut csrf = String::new();
            let mut key: Vec<u8> = Vec::new();
            let mut too_large = false;
            while let Some(field) = payload.next().await {
                let Ok(mut field) = field else { break };
                let name = field.name().unwrap_or("").to_owned();
                let limit = if name == "key" { MAX_KEY_FILE_BYTES } else { 256 };
                let mut data = Vec::new();
                while let Some(chunk) = field.next().await {
                    let Ok(chunk) = chunk else { break };
                    if data.len() + chunk.len() > limit {
                        too_large = true;
                        break;
                    }
                    data.extend_from_slice(&chunk);
                }
                match name.as_str() {
                    "csrf" => csrf = String::from_utf8_lossy(&data).into_owned(),
                    "key" => key = data,
                    _ => {}
                }
            }
            let form = super::Form(vec![("csrf".into(), csrf)]);
            super::check_form(&req, &viewer, &form, &console)?;
            let tenant_path = format!("/tenants/{}", seg(&t.id));
            let view = console.api.get(&app, &actor, &tenant_path).await.map_err(|f| api_page_error(&console, &f))?;
            let failure = if too_large {
                Some(format!("the key file is larger than {MAX_KEY_FILE_BYTES} bytes; upload the JSON key Google made"))
            } else if key.is_empty() {
                Some("choose the JSON key file to upload".to_owned())
            } else {
                match console
                    .api
                    .call(&app, &actor, Method::PUT, &format!("{tenant_path}/credentials"), Some(Body::Bytes(key)))
                    .await
                {
                    Ok(_) => None,
                    Err(f) => Some(f.message),
                }
            };
            if let Some(message) = failure {
                let mut ctx = setup_context(&viewer, standing, &view);
                ctx["errors"]["key"] = json!(message);
                ctx["error"] = json!("The key was not saved.");
                return Ok(console.templates.render(StatusCode::BAD_REQUEST, "setup.html", ctx));
            }
            // The directory is what "add from the directory" offers: fetch it now.
            let _ = console.api.call(&app, &actor, Method::POST, &format!("{tenant_path}/contacts/sync"), None).await;
            Ok(render::see_other(&format!("/console/t/{}/setup?check=1", t.id)))
        }
        .await,
    )
}
