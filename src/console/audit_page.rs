//! The audit log page: the tenant's entries, newest first, paged.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::api::seg;
use super::{Console, Need, base, done, tenant_page};
use crate::app::AppState;

const PAGE: usize = 50;

#[derive(Deserialize)]
pub struct Query {
    before: Option<u64>,
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
            let actor = viewer.actor(Some(&t.id), standing);
            let mut api_path = format!("/tenants/{}/audit?limit={PAGE}", seg(&t.id));
            if let Some(b) = query.before {
                api_path.push_str(&format!("&before={b}"));
            }
            let mut ctx = base(Some(&viewer), Some((&t.id, standing)), "audit", "Audit log");
            match console.api.get(&app, &actor, &api_path).await {
                Ok(v) => {
                    ctx["entries"] = v["entries"].clone();
                    ctx["next"] = v["next_before"].clone();
                }
                Err(f) => ctx["error"] = json!(f.message),
            }
            Ok(console.templates.render(StatusCode::OK, "audit.html", ctx))
        }
        .await,
    )
}
