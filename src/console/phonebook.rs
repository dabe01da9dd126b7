//! The phonebook page: its status, search, a number lookup as the phone system does it for
//! caller ID, a sync now, and the export addresses for desk phones.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::api::seg;
use super::viewer::{Standing, Viewer};
use super::{Console, Need, admin_post, base, done, tenant_page};
use crate::app::AppState;
use crate::model::tenant::TenantRecord;

#[derive(Deserialize, Default)]
pub struct Query {
    q: Option<String>,
    number: Option<String>,
}

async fn context(
    app: &AppState,
    console: &Console,
    viewer: &Viewer,
    t: &TenantRecord,
    standing: Standing,
    query: &Query,
) -> Value {
    let actor = viewer.actor(Some(&t.id), standing);
    let base_path = format!("/tenants/{}/contacts", seg(&t.id));
    let mut ctx = base(Some(viewer), Some((&t.id, standing)), "phonebook", "Phonebook");
    let status = console.api.get(app, &actor, &format!("{base_path}/status")).await.unwrap_or(Value::Null);
    let books = status["books"].as_array().cloned().unwrap_or_default();
    let last = books.iter().filter_map(|b| b["last_poll"].as_str()).max().map(str::to_owned);
    let error = books.iter().filter_map(|b| b["last_error"].as_str()).next().map(str::to_owned);
    ctx["status"] = json!({ "entries": status["entries"].as_u64().unwrap_or(0), "last_sync": last, "error": error });
    let q = query.q.clone().unwrap_or_default();
    ctx["q"] = json!(q);
    ctx["results"] = Value::Null;
    if !q.trim().is_empty() {
        let path = format!("{base_path}?page_size=50&q={}", seg(q.trim()));
        if let Ok(found) = console.api.get(app, &actor, &path).await {
            ctx["results"] = found["contacts"].clone();
            ctx["total"] = found["total"].clone();
        }
    }
    let number = query.number.clone().unwrap_or_default();
    ctx["number"] = json!(number);
    ctx["matches"] = Value::Null;
    if !number.trim().is_empty() {
        match console.api.get(app, &actor, &format!("{base_path}/lookup?number={}", seg(number.trim()))).await {
            Ok(found) => ctx["matches"] = found["matches"].clone(),
            Err(f) => ctx["lookup_error"] = json!(f.text()),
        }
    }
    ctx
}

pub async fn page(
    req: HttpRequest,
    app: web::Data<AppState>,
    console: web::Data<Console>,
    path: web::Path<String>,
    query: web::Query<Query>,
) -> HttpResponse {
    done(
        async {
            let (viewer, t, standing) = tenant_page(&req, &app, &console, &path, Need::Admin).await?;
            let ctx = context(&app, &console, &viewer, &t, standing, &query).await;
            Ok(console.templates.render(StatusCode::OK, "phonebook.html", ctx))
        }
        .await,
    )
}

pub async fn sync(
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
                .call(&app, &actor, Method::POST, &format!("/tenants/{}/contacts/sync", seg(&t.id)), None)
                .await;
            let mut ctx = context(&app, &console, &viewer, &t, standing, &Query::default()).await;
            match result {
                Ok(_) => ctx["notice"] = json!("The phonebook is being synced; reload in a moment to see it."),
                Err(f) => ctx["error"] = json!(f.message),
            }
            Ok(console.templates.render(StatusCode::OK, "phonebook.html", ctx))
        }
        .await,
    )
}

/// Makes (or replaces) the export token and shows the addresses once.
pub async fn export(
    req: HttpRequest,
    app: web::Data<AppState>,
    console: web::Data<Console>,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    done(async {
        let (viewer, t, standing, actor, _form) = admin_post(&req, &app, &console, &path, body).await?;
        let result = console.api.call(&app, &actor, Method::POST, &format!("/tenants/{}/contacts/export-token", seg(&t.id)), None).await;
        let mut ctx = context(&app, &console, &viewer, &t, standing, &Query::default()).await;
        match result {
            Ok(made) => {
                ctx["export"] = json!([
                    { "label": "vCard", "url": made["urls"]["vcard"] },
                    { "label": "Yealink", "url": made["urls"]["yealink"] },
                    { "label": "Snom", "url": made["urls"]["snom"] },
                ]);
                ctx["notice"] = json!("New export addresses: copy them into the phones now; they are not shown again, and the old ones stop working.");
            }
            Err(f) => ctx["error"] = json!(f.message),
        }
        Ok(console.templates.render(StatusCode::OK, "phonebook.html", ctx))
    }
    .await)
}
