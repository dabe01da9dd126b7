//! The web console at `/console/` (DESIGN §4, §7): the Workspace admin's setup in the order of
//! the switchboard vendors' portals (domain and key → delegation → check), the users and their
//! profiles, the phone system, the phonebook and the audit log; and each user's own trigger
//! words. Server-rendered pages with plain forms (a small script only adds copy buttons).
//!
//! - `session`: sealed cookies, CSRF tokens; `oidc`: Sign in with Google; `viewer`: who may
//!   do what, decided per request.
//! - `api`: every read and write goes through gwsync's own `/api/v1` as the signed-in person,
//!   so validation, access decisions and the audit log are the API's.
//! - `render`: templates, assets and the security headers; one module per page group.

// Console handlers answer a page, or the page that stops them (sign in, not found): both are
// responses handed straight to actix, so an `Err(HttpResponse)` is the answer, not an error to
// keep small.
#![allow(clippy::result_large_err)]

pub mod api;
mod audit_page;
mod company;
pub mod oidc;
mod people;
mod phone;
mod phonebook;
pub mod render;
pub mod session;
mod signin;
pub mod viewer;

use std::net::SocketAddr;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use crate::app::AppState;
use crate::model::tenant::TenantRecord;
use api::{ApiFailure, SelfApi};
use render::Templates;
use session::Session;
use viewer::{Standing, Viewer};

/// Largest form body the console reads (a key file upload is separately limited).
const MAX_FORM_BYTES: usize = 64 * 1024;

pub struct Console {
    pub oidc: Option<oidc::Oidc>,
    pub templates: Templates,
    pub api: SelfApi,
}

impl Console {
    /// The console of a server answering on `listen`.
    pub fn new(app: &AppState, listen: SocketAddr) -> Result<Console, String> {
        let oidc = match (&app.config.oidc_client_id, &app.config.oidc_client_secret) {
            (Some(id), Some(secret)) => {
                let redirect = app.public_url.join("console/auth/callback").map_err(|e| e.to_string())?;
                Some(oidc::Oidc::new(&app.config.oidc_issuer, id, secret.clone(), redirect)?)
            }
            _ => None,
        };
        Ok(Console { oidc, templates: Templates::new()?, api: SelfApi::new(listen)? })
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/console")
            .app_data(web::PayloadConfig::new(MAX_FORM_BYTES))
            .route("", web::get().to(|| async { render::see_other("/console/") }))
            .route("/", web::get().to(company::home))
            .route("/assets/{file}", web::get().to(|p: web::Path<String>| async move { render::asset(&p) }))
            .route("/signin", web::get().to(signin::page))
            .route("/signin/google", web::get().to(signin::google))
            .route("/signin/token", web::post().to(signin::token))
            .route("/auth/callback", web::get().to(signin::callback))
            .route("/signout", web::post().to(signin::signout))
            .route("/tenants", web::post().to(company::create))
            .route("/t/{tenant}/setup", web::get().to(company::setup))
            .route("/t/{tenant}/setup", web::post().to(company::save))
            .route("/t/{tenant}/key", web::post().to(company::key))
            .route("/t/{tenant}/users", web::get().to(people::list))
            .route("/t/{tenant}/users", web::post().to(people::add))
            .route("/t/{tenant}/users/{email}", web::get().to(people::editor))
            .route("/t/{tenant}/users/{email}", web::post().to(people::edit))
            .route("/t/{tenant}/me", web::get().to(people::me))
            .route("/t/{tenant}/me", web::post().to(people::edit_me))
            .route("/t/{tenant}/phone", web::get().to(phone::page))
            .route("/t/{tenant}/phone", web::post().to(phone::save))
            .route("/t/{tenant}/phone/test", web::post().to(phone::test))
            .route("/t/{tenant}/tokens", web::post().to(phone::create_token))
            .route("/t/{tenant}/tokens/{id}/revoke", web::post().to(phone::revoke_token))
            .route("/t/{tenant}/phonebook", web::get().to(phonebook::page))
            .route("/t/{tenant}/phonebook/sync", web::post().to(phonebook::sync))
            .route("/t/{tenant}/phonebook/export", web::post().to(phonebook::export))
            .route("/t/{tenant}/audit", web::get().to(audit_page::page))
            .default_service(web::to(not_found)),
    );
}

/// What a console handler answers: a page, or the page that stops it (sign in, not found).
type Answer = Result<HttpResponse, HttpResponse>;

fn done(a: Answer) -> HttpResponse {
    a.unwrap_or_else(|r| r)
}

async fn not_found(console: web::Data<Console>) -> HttpResponse {
    message(&console, StatusCode::NOT_FOUND, "Not found", "There is no such page.", None)
}

/// A page that only says something (an error, a refusal).
fn message(console: &Console, status: StatusCode, title: &str, text: &str, viewer: Option<&Viewer>) -> HttpResponse {
    let mut ctx = base(viewer, None, "", title);
    ctx["message"] = json!(text);
    console.templates.render(status, "message.html", ctx)
}

/// The context every page has: who is signed in, their CSRF token, the tenant's navigation.
fn base(viewer: Option<&Viewer>, tenant: Option<(&str, Standing)>, current: &str, title: &str) -> Value {
    let nav: Vec<Value> = match tenant.map(|(_, s)| s) {
        Some(Standing::Operator | Standing::Admin) => [
            ("setup", "Setup"),
            ("users", "Users"),
            ("phone", "Phone system"),
            ("phonebook", "Phonebook"),
            ("audit", "Audit log"),
        ]
        .iter()
        .map(|(path, label)| json!({ "path": path, "label": label }))
        .collect(),
        Some(Standing::User) => vec![json!({ "path": "me", "label": "My profiles" })],
        None => Vec::new(),
    };
    json!({
        "title": title,
        "viewer": viewer.map(|v| v.session.name.clone().unwrap_or_else(|| v.email().to_owned())),
        "csrf": viewer.map(|v| v.session.csrf.clone()),
        "tenant": tenant.map(|(t, _)| t),
        "nav": nav,
        "current": current,
        "errors": {},
        "form": {},
    })
}

/// The signed-in viewer, or a redirect to the sign-in page.
async fn signed_in(req: &HttpRequest, app: &AppState) -> Result<Viewer, HttpResponse> {
    let session = Session::from_request(req, &app.master_key, app.clock.now());
    let Some(session) = session else { return Err(render::see_other("/console/signin")) };
    match Viewer::of(app, session).await {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(render::see_other("/console/signin")),
        Err(e) => Err(server_error(&e)),
    }
}

fn server_error(e: &dyn std::fmt::Display) -> HttpResponse {
    tracing::error!(error = %e, "a console page failed");
    render::with_headers(HttpResponse::InternalServerError())
        .content_type("text/plain; charset=utf-8")
        .body("this page could not be shown; see the server log")
}

/// What the viewer needs on a tenant's page.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    /// The tenant's admin or an operator.
    Admin,
    /// Any standing (a self-service user too).
    Any,
}

/// A tenant page's viewer, tenant and standing; a tenant they have no standing in is answered
/// exactly like one that does not exist.
async fn tenant_page(
    req: &HttpRequest,
    app: &AppState,
    console: &Console,
    tenant: &str,
    need: Need,
) -> Result<(Viewer, TenantRecord, Standing), HttpResponse> {
    let viewer = signed_in(req, app).await?;
    let nothing = |v: &Viewer| {
        message(
            console,
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such company, or you may not open it.",
            Some(v),
        )
    };
    let record = match crate::model::tenant::validate_tenant_id(tenant) {
        Ok(()) => app.store.tenant(tenant).await.map_err(|e| server_error(&e))?,
        Err(_) => None,
    };
    let Some(record) = record else { return Err(nothing(&viewer)) };
    let standing = viewer.standing(app, &record).await.map_err(|e| server_error(&e))?;
    match standing {
        Some(Standing::User) if need == Need::Admin => Err(render::see_other(&format!("/console/t/{tenant}/me"))),
        Some(s) => Ok((viewer, record, s)),
        None => Err(nothing(&viewer)),
    }
}

/// A form posted to one of a tenant's admin pages: who sent it (their CSRF token checked), the
/// tenant, their standing in it, the API actor they are, and the form.
async fn admin_post(
    req: &HttpRequest,
    app: &AppState,
    console: &Console,
    tenant: &str,
    body: web::Bytes,
) -> Result<(Viewer, TenantRecord, Standing, crate::access::Actor, Form), HttpResponse> {
    let (viewer, t, standing) = tenant_page(req, app, console, tenant, Need::Admin).await?;
    let form = read_form(req, &viewer, console, body).await?;
    let actor = viewer.actor(Some(&t.id), standing);
    Ok((viewer, t, standing, actor, form))
}

/// A form's fields, in order (a name may repeat).
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn parse(body: &[u8]) -> Form {
        Form(url::form_urlencoded::parse(body).into_owned().collect())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// A field's value, trimmed, or "".
    pub fn text(&self, name: &str) -> String {
        self.get(name).unwrap_or("").trim().to_owned()
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
    }
}

/// Every console form carries the session's CSRF token; a request from another origin is
/// refused even with one (SameSite=Strict already keeps the cookie off cross-site requests).
fn check_form(req: &HttpRequest, viewer: &Viewer, form: &Form, console: &Console) -> Result<(), HttpResponse> {
    let token_ok = form.get("csrf").is_some_and(|t| viewer.session.csrf_matches(t));
    if token_ok && same_origin(req) {
        return Ok(());
    }
    Err(message(
        console,
        StatusCode::FORBIDDEN,
        "Form expired",
        "This form was not sent from this page (or your session changed). Go back, reload the page and try again.",
        Some(viewer),
    ))
}

/// Whether the request's `Origin`, if any, is this server as the browser reached it.
fn same_origin(req: &HttpRequest) -> bool {
    let Some(origin) = req.headers().get(actix_web::http::header::ORIGIN) else { return true };
    let Ok(origin) = origin.to_str() else { return false };
    // Sent by privacy settings that hide the origin: the CSRF token decides alone.
    if origin == "null" {
        return true;
    }
    let Ok(url) = url::Url::parse(origin) else { return false };
    let Some(host) = req.headers().get(actix_web::http::header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let origin_host = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or("")),
        None => url.host_str().unwrap_or("").to_owned(),
    };
    origin_host.eq_ignore_ascii_case(host)
}

/// The API's refusal as the console shows it: beside the field it names (`errors`), or on top.
fn show_failure(ctx: &mut Value, f: &ApiFailure, field_map: &[(&str, &str)]) {
    if let Some(field) = f.field() {
        let form_field = field_map.iter().find(|(api, _)| *api == field).map(|(_, form)| *form).unwrap_or(field);
        ctx["errors"][form_field] = json!(f.text());
        ctx["error"] = json!("Not saved: see the message beside the field.");
    } else {
        ctx["error"] = json!(f.message);
    }
}

/// The body of a POST, read as a form.
async fn read_form(
    req: &HttpRequest,
    viewer: &Viewer,
    console: &Console,
    body: web::Bytes,
) -> Result<Form, HttpResponse> {
    let form = Form::parse(&body);
    check_form(req, viewer, &form, console)?;
    Ok(form)
}
