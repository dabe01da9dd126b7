//! The users pages: every phone user with their sync state, profile now and next switch; adding
//! users by address or from the company directory; the profile editor (profiles in priority
//! order, trigger words added one at a time and saved together, the status-event mapping, and
//! a "test a title" box that runs the real matcher); and a signed-in user's own page.
//!
//! The editor keeps its unsaved state in the form itself: Add, Remove and Move up answer the
//! page again with the change (and "Not saved yet"); Save sends it all to the API. A word typed
//! but not added yet is added by any button, so Enter and Save never lose it.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};

use super::api::{ApiFailure, Body, seg};
use super::viewer::{Standing, Viewer};
use super::{Console, Form, Need, admin_post, base, done, read_form, render, show_failure, tenant_page};
use crate::access::Actor;
use crate::app::AppState;
use crate::model::tenant::TenantRecord;
use crate::presence::matcher::{Summary, Trigger};

/// Users shown on one page of the list.
const PAGE: usize = 50;
/// The profiles a new user starts with (renamed or removed in the editor).
const STARTING_PROFILES: [(&str, &str); 2] = [("Lunch", "lunch"), ("Meeting", "*möte")];

pub async fn list(
    req: HttpRequest,
    app: web::Data<AppState>,
    console: web::Data<Console>,
    path: web::Path<String>,
) -> HttpResponse {
    done(
        async {
            let (viewer, t, standing) = tenant_page(&req, &app, &console, &path, Need::Admin).await?;
            let ctx = list_context(&app, &console, &viewer, &t, standing).await?;
            Ok(console.templates.render(StatusCode::OK, "users.html", ctx))
        }
        .await,
    )
}

async fn list_context(
    app: &AppState,
    console: &Console,
    viewer: &Viewer,
    t: &TenantRecord,
    standing: Standing,
) -> Result<Value, HttpResponse> {
    let actor = viewer.actor(Some(&t.id), standing);
    let base_path = format!("/tenants/{}/users", seg(&t.id));
    let listed = console.api.get(app, &actor, &base_path).await.map_err(|f| page_error(console, &f))?;
    let emails: Vec<String> = listed["users"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|u| u["email"].as_str().map(str::to_owned))
        .collect();
    let rows = join_all(emails.iter().take(PAGE).map(|e| user_row(app, console, &actor, &base_path, e))).await;
    let mut ctx = base(Some(viewer), Some((&t.id, standing)), "users", "Users");
    ctx["domain"] = json!(t.domain);
    ctx["users"] = json!(rows);
    if emails.len() > PAGE {
        ctx["notice"] = json!(format!("Showing the first {PAGE} of {} users.", emails.len()));
    }
    // The directory, from the phonebook gwsync keeps (synced after the key upload).
    let found = console.api.get(app, &actor, &format!("/tenants/{}/contacts?page_size=500", seg(&t.id))).await;
    let suffix = format!("@{}", t.domain);
    let directory: Vec<Value> = match &found {
        Ok(v) => v["contacts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["source"]["kind"] == "directory")
            .filter_map(|c| {
                let email = c["emails"].as_array()?.iter().filter_map(Value::as_str).find(|e| e.ends_with(&suffix))?;
                let email = email.to_lowercase();
                (!emails.contains(&email))
                    .then(|| json!({ "email": email, "name": c["name"].as_str().unwrap_or(&email) }))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    ctx["directory_note"] = json!(if found.is_err() {
        "The directory could not be read."
    } else {
        "Nobody in the directory is left to add (the directory is read after the key is uploaded; see Phonebook)."
    });
    ctx["directory"] = json!(directory);
    Ok(ctx)
}

async fn user_row(app: &AppState, console: &Console, actor: &Actor, base_path: &str, email: &str) -> Value {
    let path = format!("{base_path}/{}", seg(email));
    let presence_path = format!("{path}/presence");
    let (user, presence) =
        futures_util::join!(console.api.get(app, actor, &path), console.api.get(app, actor, &presence_path));
    let user = user.unwrap_or(Value::Null);
    let presence = presence.unwrap_or(Value::Null);
    let error = &user["sync"]["last_error"];
    json!({
        "email": email,
        "external_id": user["external_id"],
        "channel": user["sync"]["channel"]["expiration"],
        "last_sync": user["sync"]["last_sync"],
        "error": error["message"].as_str().or(error.as_str()),
        "hint": error["hint"],
        "profile": presence["profile"],
        "until": presence["until"],
        "next": presence["upcoming"].get(0),
    })
}

fn page_error(console: &Console, f: &ApiFailure) -> HttpResponse {
    super::message(
        console,
        StatusCode::from_u16(f.status).unwrap_or(StatusCode::BAD_GATEWAY),
        "Could not load this page",
        &f.message,
        None,
    )
}

/// Adds one user by address, or the ones picked from the directory.
pub async fn add(
    req: HttpRequest,
    app: web::Data<AppState>,
    console: web::Data<Console>,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    done(
        async {
            let (viewer, t, standing, actor, form) = admin_post(&req, &app, &console, &path, body).await?;
            let picked: Vec<String> = if form.get("action") == Some("picked") {
                form.all("pick").into_iter().map(str::to_owned).collect()
            } else {
                vec![form.text("email")]
            };
            let field = if form.get("action") == Some("picked") { "pick" } else { "email" };
            if picked.is_empty() || picked.iter().all(String::is_empty) {
                let mut ctx = list_context(&app, &console, &viewer, &t, standing).await?;
                ctx["errors"][field] =
                    json!(if field == "pick" { "select at least one person" } else { "enter an address" });
                return Ok(console.templates.render(StatusCode::BAD_REQUEST, "users.html", ctx));
            }
            let profiles: Vec<Value> =
                STARTING_PROFILES.iter().map(|(name, word)| json!({ "name": name, "triggers": [word] })).collect();
            let mut added = 0;
            for email in &picked {
                let path = format!("/tenants/{}/users/{}", seg(&t.id), seg(email));
                // An existing user keeps their profiles.
                if console.api.get(&app, &actor, &path).await.is_ok() {
                    continue;
                }
                let body = json!({ "profiles": profiles });
                if let Err(f) = console.api.call(&app, &actor, Method::PUT, &path, Some(Body::Json(body))).await {
                    let mut ctx = list_context(&app, &console, &viewer, &t, standing).await?;
                    ctx["form"]["email"] = json!(email);
                    ctx["errors"][field] = json!(format!("{email}: {}", f.text()));
                    if added > 0 {
                        ctx["notice"] = json!(format!("Added {added} before this one."));
                    }
                    return Ok(console.templates.render(StatusCode::BAD_REQUEST, "users.html", ctx));
                }
                added += 1;
            }
            Ok(render::see_other(&format!("/console/t/{}/users", t.id)))
        }
        .await,
    )
}

/// One profile as the editor holds it.
#[derive(Clone)]
struct Draft {
    name: String,
    words: Vec<String>,
}

/// The editor's state as the form carries it, with the button pressed applied.
struct Editor {
    external_id: String,
    profiles: Vec<Draft>,
    status: Vec<(String, String)>,
    title: String,
    dirty: bool,
}

const STATUS_FIELDS: [(&str, &str); 2] =
    [("out_of_office", "Out of office switches to"), ("focus_time", "Focus time switches to")];

impl Editor {
    fn from_user(user: &Value) -> Editor {
        let profiles = user["profiles"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| Draft {
                name: p["name"].as_str().unwrap_or_default().to_owned(),
                words: p["triggers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
            })
            .collect();
        let status = STATUS_FIELDS
            .iter()
            .map(|(f, _)| (f.to_string(), user["status_events"][f].as_str().unwrap_or("").to_owned()))
            .collect();
        Editor {
            external_id: user["external_id"].as_str().unwrap_or("").to_owned(),
            profiles,
            status,
            title: String::new(),
            dirty: false,
        }
    }

    /// The form's state; `own`: a user editing themselves (names and order are not theirs).
    fn from_form(form: &Form, own: bool) -> Editor {
        let mut profiles = Vec::new();
        for i in 0.. {
            let Some(name) = form.get(&format!("name.{i}")) else { break };
            let mut words: Vec<String> = form.all(&format!("words.{i}")).into_iter().map(str::to_owned).collect();
            let new = form.text(&format!("new.{i}"));
            if !new.is_empty() {
                words.push(new);
            }
            profiles.push(Draft { name: name.to_owned(), words });
            if i >= crate::model::user::MAX_PROFILES {
                break;
            }
        }
        let status = STATUS_FIELDS.iter().map(|(f, _)| (f.to_string(), form.text(f))).collect();
        let mut e =
            Editor { external_id: form.text("external_id"), profiles, status, title: form.text("title"), dirty: true };
        let action = form.get("action").unwrap_or("");
        let index = |s: &str| s.parse::<usize>().ok();
        match action.split('.').collect::<Vec<_>>().as_slice() {
            ["remove", i, j] => {
                if let (Some(i), Some(j)) = (index(i), index(j))
                    && let Some(p) = e.profiles.get_mut(i)
                    && j < p.words.len()
                {
                    p.words.remove(j);
                }
            }
            ["up", i] if !own => {
                if let Some(i) = index(i)
                    && i > 0
                    && i < e.profiles.len()
                {
                    e.profiles.swap(i - 1, i);
                }
            }
            ["delete", i] if !own => {
                if let Some(i) = index(i)
                    && i < e.profiles.len()
                {
                    let gone = e.profiles.remove(i);
                    for (_, v) in e.status.iter_mut() {
                        if *v == gone.name {
                            v.clear();
                        }
                    }
                }
            }
            ["add_profile"] if !own => {
                let name = form.text("new_profile");
                if !name.is_empty() {
                    e.profiles.push(Draft { name, words: Vec::new() });
                }
            }
            _ => {}
        }
        e
    }

    fn body(&self) -> Value {
        let mut status = serde_json::Map::new();
        for (f, v) in &self.status {
            if !v.is_empty() {
                status.insert(f.clone(), json!(v));
            }
        }
        json!({
            "external_id": if self.external_id.is_empty() { Value::Null } else { json!(self.external_id) },
            "profiles": self.profiles.iter().map(|p| json!({ "name": p.name, "triggers": p.words })).collect::<Vec<_>>(),
            "status_events": status,
        })
    }

    /// Which profile an event titled `title` would switch to, by the real matcher and the
    /// profiles' order.
    fn test(&self) -> String {
        let summary = Summary::new(&self.title);
        for p in &self.profiles {
            for w in &p.words {
                if Trigger::new(w).is_some_and(|t| t.matches(&summary)) {
                    return format!("“{}” switches to {} (trigger word “{w}”).", self.title, p.name);
                }
            }
        }
        format!("“{}” switches nothing: no trigger word of these profiles is in it.", self.title)
    }
}

struct EditorPage<'a> {
    viewer: &'a Viewer,
    tenant: &'a TenantRecord,
    standing: Standing,
    email: String,
    own: bool,
    saved: bool,
}

impl EditorPage<'_> {
    fn action_url(&self) -> String {
        if self.own {
            format!("/console/t/{}/me", self.tenant.id)
        } else {
            format!("/console/t/{}/users/{}", self.tenant.id, seg(&self.email))
        }
    }

    fn render(
        &self,
        console: &Console,
        status: StatusCode,
        e: &Editor,
        failure: Option<&ApiFailure>,
        presence: Option<&Value>,
    ) -> HttpResponse {
        let current = if self.own { "me" } else { "users" };
        let mut ctx = base(
            Some(self.viewer),
            Some((&self.tenant.id, self.standing)),
            current,
            if self.own { "My profiles" } else { "Profiles" },
        );
        ctx["email"] = json!(self.email);
        ctx["own"] = json!(self.own);
        ctx["action_url"] = json!(self.action_url());
        ctx["external_id"] = json!(e.external_id);
        ctx["dirty"] = json!(e.dirty && failure.is_none());
        if self.saved {
            ctx["notice"] = json!("Saved.");
        }
        ctx["test_title"] = json!(e.title);
        let (mut name_errors, mut word_errors, mut words_errors) = (Vec::new(), Vec::new(), Vec::new());
        if let Some(f) = failure {
            show_failure(&mut ctx, f, &[]);
            // profiles[i].name, profiles[i].triggers, profiles[i].triggers[j]
            if let Some(field) = f.field() {
                let parts: Vec<usize> =
                    field.split(|c: char| !c.is_ascii_digit()).filter_map(|s| s.parse().ok()).collect();
                match (field.contains(".name"), field.contains(".triggers["), parts.as_slice()) {
                    (true, _, [i]) => name_errors.push((*i, f.text().to_owned())),
                    (_, true, [i, j]) => word_errors.push((*i, *j, f.text().to_owned())),
                    (_, false, [i]) if field.contains(".triggers") => words_errors.push((*i, f.text().to_owned())),
                    _ => {}
                }
            }
        }
        ctx["profiles"] = e
            .profiles
            .iter()
            .enumerate()
            .map(|(i, p)| {
                json!({
                    "name": p.name,
                    "name_error": name_errors.iter().find(|(k, _)| *k == i).map(|(_, m)| m),
                    "words_error": words_errors.iter().find(|(k, _)| *k == i).map(|(_, m)| m),
                    "words": p.words.iter().enumerate().map(|(j, w)| json!({
                        "text": w,
                        "error": word_errors.iter().find(|(k, l, _)| *k == i && *l == j).map(|(_, _, m)| m),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        ctx["status_fields"] = STATUS_FIELDS
            .iter()
            .map(|(f, label)| {
                json!({
                    "field": f,
                    "label": label,
                    "value": e.status.iter().find(|(k, _)| k == f).map(|(_, v)| v.as_str()).unwrap_or(""),
                    "default": self.tenant.status_events.get(f),
                })
            })
            .collect();
        if !e.title.is_empty() {
            ctx["test_result"] = json!(e.test());
        }
        ctx["upcoming"] = match presence {
            Some(p) => {
                ctx["now_profile"] = p["profile"].clone();
                json!(p["upcoming"].as_array().into_iter().flatten().take(10).collect::<Vec<_>>())
            }
            None => Value::Null,
        };
        console.templates.render(status, "profiles.html", ctx)
    }
}

async fn load_user(
    app: &AppState,
    console: &Console,
    actor: &Actor,
    tenant: &str,
    email: &str,
) -> Result<Value, HttpResponse> {
    let path = format!("/tenants/{}/users/{}", seg(tenant), seg(email));
    console.api.get(app, actor, &path).await.map_err(|f| page_error(console, &f))
}

async fn load_presence(app: &AppState, console: &Console, actor: &Actor, tenant: &str, email: &str) -> Option<Value> {
    let path = format!("/tenants/{}/users/{}/presence", seg(tenant), seg(email));
    console.api.get(app, actor, &path).await.ok()
}

async fn show(
    req: HttpRequest,
    app: &AppState,
    console: &Console,
    tenant: &str,
    email: Option<&str>,
    saved: bool,
) -> Result<HttpResponse, HttpResponse> {
    let need = if email.is_some() { Need::Admin } else { Need::Any };
    let (viewer, t, standing) = tenant_page(&req, app, console, tenant, need).await?;
    let own = email.is_none();
    let email = email.map(str::to_owned).unwrap_or_else(|| viewer.email().to_owned());
    let actor = viewer.actor(Some(&t.id), if own { Standing::User } else { standing });
    let user = load_user(app, console, &actor, &t.id, &email).await?;
    let presence = load_presence(app, console, &actor, &t.id, &email).await;
    let page = EditorPage { viewer: &viewer, tenant: &t, standing, email, own, saved };
    Ok(page.render(console, StatusCode::OK, &Editor::from_user(&user), None, presence.as_ref()))
}

async fn submit(
    req: HttpRequest,
    app: &AppState,
    console: &Console,
    tenant: &str,
    email: Option<&str>,
    body: web::Bytes,
) -> Result<HttpResponse, HttpResponse> {
    let need = if email.is_some() { Need::Admin } else { Need::Any };
    let (viewer, t, standing) = tenant_page(&req, app, console, tenant, need).await?;
    let form = read_form(&req, &viewer, console, body).await?;
    let own = email.is_none();
    let email = email.map(str::to_owned).unwrap_or_else(|| viewer.email().to_owned());
    // Users edit themselves as users, whatever else they are (the API then lets only words change).
    let actor = viewer.actor(Some(&t.id), if own { Standing::User } else { standing });
    let editor = Editor::from_form(&form, own);
    let page = EditorPage { viewer: &viewer, tenant: &t, standing, email: email.clone(), own, saved: false };
    let presence = if own { load_presence(app, console, &actor, &t.id, &email).await } else { None };
    if form.get("action") != Some("save") {
        return Ok(page.render(console, StatusCode::OK, &editor, None, presence.as_ref()));
    }
    let path = format!("/tenants/{}/users/{}", seg(&t.id), seg(&email));
    let mut body = editor.body();
    if own {
        // What a user may not change is sent back as stored.
        let user = load_user(app, console, &actor, &t.id, &email).await?;
        body["external_id"] = user["external_id"].clone();
        body["status_events"] = user["status_events"].clone();
    }
    match console.api.call(app, &actor, Method::PUT, &path, Some(Body::Json(body))).await {
        Ok(_) => Ok(render::see_other(&format!("{}?saved=1", page.action_url()))),
        Err(f) => Ok(page.render(console, StatusCode::BAD_REQUEST, &editor, Some(&f), presence.as_ref())),
    }
}

pub async fn editor(
    req: HttpRequest,
    app: web::Data<AppState>,
    console: web::Data<Console>,
    path: web::Path<(String, String)>,
    query: web::Query<std::collections::HashMap<String, String>>,
) -> HttpResponse {
    let (tenant, email) = path.into_inner();
    done(show(req, &app, &console, &tenant, Some(&email), query.contains_key("saved")).await)
}

pub async fn edit(
    req: HttpRequest,
    app: web::Data<AppState>,
    console: web::Data<Console>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> HttpResponse {
    let (tenant, email) = path.into_inner();
    done(submit(req, &app, &console, &tenant, Some(&email), body).await)
}

pub async fn me(
    req: HttpRequest,
    app: web::Data<AppState>,
    console: web::Data<Console>,
    path: web::Path<String>,
    query: web::Query<std::collections::HashMap<String, String>>,
) -> HttpResponse {
    done(show(req, &app, &console, &path, None, query.contains_key("saved")).await)
}

pub async fn edit_me(
    req: HttpRequest,
    app: web::Data<AppState>,
    console: web::Data<Console>,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    done(submit(req, &app, &console, &path, None, body).await)
}
