//! The access middleware on `/api/v1`: resolves the bearer token to an `Actor`, looks the route
//! up in `access::policy::ROUTES` and applies its decision, and writes the audit log — every
//! non-GET request that gets through (before its handler runs, then with its outcome) and every
//! refusal. The actor is left in the request's extensions (`web::ReqData<Actor>`) for handlers
//! that show different callers different things. Handlers may attach an `AuditNote` to their
//! response to name what they made (a new token's id) or say how (`replaced`).
//!
//! Answers: no token or an unknown one → 401 `unauthorized`; an expired or revoked one → 401
//! `invalid_token`; another tenant's path → 404 exactly as for a tenant that does not exist;
//! beyond the role → 403 `forbidden`; a route missing from the table → 500
//! `no_access_decision` (a bug: the table is incomplete).

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse, ResponseError, web};

use super::error::ApiError;
use super::tenants::tenant_not_found;
use crate::access::audit::Event;
use crate::access::policy::{self, Decision, Lookup};
use crate::access::{Access, Actor, Authn};
use crate::model::access::AuditActor;

/// What a handler adds to its entry in the audit log (never a secret).
#[derive(Debug, Clone, Default)]
pub struct AuditNote {
    pub target: Option<String>,
    pub detail: Option<String>,
}

type Reply<B> = Result<ServiceResponse<EitherBody<B>>, actix_web::Error>;

fn refuse<B>(req: ServiceRequest, err: &ApiError) -> Reply<B> {
    let resp: HttpResponse = err.error_response();
    Ok(req.into_response(resp).map_into_right_body())
}

pub async fn guard<B: MessageBody + 'static>(req: ServiceRequest, next: Next<B>) -> Reply<B> {
    let Some(access) = req.app_data::<web::Data<Access>>().cloned() else {
        let err = ApiError::internal("access control", &"the access service is not configured");
        return refuse(req, &err);
    };
    let method = req.method().as_str().to_owned();
    let pattern = req.match_pattern();
    let params = pattern.as_deref().map(|p| policy::params(p, req.path())).unwrap_or_default();
    let path_tenant = params.iter().find(|(n, _)| n == "tenant").map(|(_, v)| v.clone());
    let lookup = policy::lookup(&method, pattern.as_deref());
    let route = pattern.as_ref().map(|p| format!("{method} {p}"));
    let event = |actor: AuditActor, tenant: Option<String>| Event {
        actor,
        action: match lookup {
            Lookup::Found(row) => row.action.to_owned(),
            _ => "unknown".to_owned(),
        },
        route: route.clone(),
        tenant: tenant.map(|t| access.redacted(&t)),
        target: access.target(&params),
    };
    let header = req.headers().get(actix_web::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let actor = match access.authenticate(header).await {
        Err(e) => return refuse(req, &ApiError::internal("checking the token", &e)),
        Ok(Authn::Valid(actor)) => actor,
        Ok(Authn::Missing) => {
            let err = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send a token as `Authorization: Bearer <token>`: GWSYNC_ADMIN_TOKEN, or one made with POST /api/v1/tokens or POST /api/v1/tenants/{tenant}/tokens",
            );
            record_refusal(&access, event(AuditActor::default(), None), &err).await;
            return refuse(req, &err);
        }
        Ok(Authn::Invalid(record)) => {
            let err = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "this token has expired or was revoked; ask for a new one",
            );
            let actor = Actor::from(record.as_ref());
            let tenant = path_tenant.clone().filter(|t| actor.tenant.as_deref() == Some(t.as_str()));
            record_refusal(&access, event(actor.audit(), tenant), &err).await;
            return refuse(req, &err);
        }
    };
    let row = match lookup {
        // The default service answers (404 `no_such_endpoint`).
        Lookup::NoRoute => return call(req, next, actor).await,
        Lookup::OtherMethod => {
            return refuse(
                req,
                &ApiError::not_found("no_such_endpoint", "no such endpoint; see README.md for the API"),
            );
        }
        Lookup::Undecided => {
            let err = ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "no_access_decision",
                "this route has no access decision yet; see the server log",
            );
            tracing::error!(route = ?route, "a route missing from access::policy::ROUTES was refused: add it to the table");
            record_refusal(&access, event(actor.audit(), None), &err).await;
            return refuse(req, &err);
        }
        Lookup::Found(row) => row,
    };
    let decision = if actor.role == crate::model::access::Role::User {
        policy::decide_self_service(row, &actor, &params)
    } else {
        policy::decide(row.rule, &actor, path_tenant.as_deref())
    };
    match decision {
        Decision::Allow => {}
        Decision::Forbidden => {
            let err = ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("a {} token may not do this ({})", actor.role, row.action),
            );
            record_refusal(&access, event(actor.audit(), path_tenant.clone()), &err).await;
            return refuse(req, &err);
        }
        Decision::NotFound => {
            let theirs = path_tenant.clone().unwrap_or_default();
            let err = tenant_not_found(&theirs);
            // Recorded for operators only: the other tenant's admins do not learn of it.
            record_refusal(&access, event(actor.audit(), None), &err).await;
            return refuse(req, &err);
        }
    }
    if matches!(row.method, "GET" | "HEAD") {
        return call(req, next, actor).await;
    }
    let entry = match access.audit.begin(event(actor.audit(), path_tenant.clone())).await {
        Ok(e) => e,
        Err(e) => return refuse(req, &ApiError::internal("writing the audit log", &e)),
    };
    let res = call(req, next, actor).await?;
    let note = res.response().extensions().get::<AuditNote>().cloned().unwrap_or_default();
    let status = res.status().as_u16();
    if let Err(e) = access.audit.finish(entry, status, note.target, note.detail).await {
        tracing::error!(error = %e, route = ?route, status, "could not record the outcome in the audit log");
    }
    Ok(res)
}

async fn call<B: MessageBody + 'static>(req: ServiceRequest, next: Next<B>, actor: Actor) -> Reply<B> {
    req.extensions_mut().insert(actor);
    next.call(req).await.map(ServiceResponse::map_into_left_body)
}

async fn record_refusal(access: &Access, ev: Event, err: &ApiError) {
    tracing::info!(
        route = ?ev.route,
        actor = ?ev.actor.token_id,
        status = err.status.as_u16(),
        code = err.code,
        "request refused"
    );
    if let Err(e) = access.audit.refusal(ev, err.status.as_u16(), err.code).await {
        tracing::error!(error = %e, "could not record a refused request in the audit log");
    }
}
