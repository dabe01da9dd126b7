//! Authorising Calendar and People calls: the bearer token, the API's enablement in the Cloud
//! project, the token's scopes against the method's (from discovery), the per-minute quotas, and
//! any fault a test armed — in that order, each refused with the body Google sends.

use std::collections::BTreeSet;

use actix_web::{HttpMessage, HttpRequest};
use serde_json::{Value, json};

use crate::discovery;
use crate::errors::{GoogleError, error_info};
use crate::params::Api;
use crate::quota::Bucket;
use crate::reqlog::ApiCall;
use crate::world::{Fault, Shared};

const INVALID_CREDENTIALS: &str = "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.";
const MISSING_CREDENTIALS: &str = "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.";

/// Who is calling: the impersonated user (or the service account itself) and its project.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: String,
    /// The secondary calendars the user owns (ids, lower-case).
    pub secondary_calendars: BTreeSet<String>,
    pub client_id: String,
    pub client_email: String,
    pub project_number: u64,
}

pub fn api_of(method: &str) -> Api {
    if method.starts_with("people.") { Api::People } else { Api::Calendar }
}

fn service_name(api: Api) -> &'static str {
    match api {
        Api::Calendar => "calendar-json.googleapis.com",
        Api::People => "people.googleapis.com",
    }
}

/// `calendar.events.list` → `calendar.v3.Events.List`; People ids → their RPC names.
fn rpc_method(method: &str) -> String {
    match method {
        "people.people.connections.list" => "google.people.v1.PeopleService.ListConnections".into(),
        "people.people.listDirectoryPeople" => "google.people.v1.PeopleService.ListDirectoryPeople".into(),
        m => {
            let mut parts = m.split('.');
            let api = parts.next().unwrap_or_default();
            let rest: Vec<String> = parts
                .map(|p| {
                    let mut c = p.chars();
                    c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
                })
                .collect();
            format!("{api}.v3.{}", rest.join("."))
        }
    }
}

/// Authorises a call; an armed fault may first hold it for a while (`delay_ms`).
pub async fn authorize(shared: &Shared, req: &HttpRequest, method: &'static str) -> Result<Caller, GoogleError> {
    let mut delay = None;
    let result = authorize_now(shared, req, method, &mut delay);
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    result
}

fn authorize_now(
    shared: &Shared,
    req: &HttpRequest,
    method: &'static str,
    delay: &mut Option<std::time::Duration>,
) -> Result<Caller, GoogleError> {
    let api = api_of(method);
    req.extensions_mut().insert(ApiCall { method, user: None });

    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_owned())
        .or_else(|| crate::params::Params::parse(req.query_string()).get("access_token").map(str::to_owned));

    let mut world = shared.world.lock();
    let now = shared.clock.now();
    let Some(bearer) = bearer else {
        return Err(unauthenticated(api, method, true));
    };
    let token = match world.access_tokens.get(&bearer) {
        Some(t) if t.expires_at > now => t.clone(),
        Some(_) => {
            world.access_tokens.remove(&bearer);
            return Err(unauthenticated(api, method, false));
        }
        None => return Err(unauthenticated(api, method, false)),
    };
    if let Some(call) = req.extensions_mut().get_mut::<ApiCall>() {
        call.user = Some(token.user.clone());
    }
    if token.client_email.is_empty() {
        // A user's sign-in token (openid, email, profile): no Calendar or People scope.
        return Err(insufficient_scopes(api, method));
    }
    let Some(account) = world.accounts.get(&token.client_email).cloned() else {
        // The service account was deleted after the token was minted.
        return Err(unauthenticated(api, method, false));
    };
    let enabled = match api {
        Api::Calendar => world.apis.calendar,
        Api::People => world.apis.people,
    };
    if !enabled {
        return Err(service_disabled(api, account.project_number));
    }
    let allowed = discovery::scopes_for(method);
    if !allowed.iter().any(|s| token.scopes.contains(s)) {
        return Err(insufficient_scopes(api, method));
    }

    let quota_user = crate::params::Params::parse(req.query_string())
        .get("quotaUser")
        .map(str::to_owned)
        .or_else(|| req.headers().get("x-goog-quota-user").and_then(|v| v.to_str().ok()).map(str::to_owned))
        .unwrap_or_else(|| account.client_email.clone());
    let now_ms = now.timestamp_millis();
    let user_bucket = match api {
        Api::Calendar => Bucket::CalendarUser,
        Api::People => Bucket::PeopleUser,
    };
    // Google counts a project's per-minute quota separately for each API.
    let project_key = format!("{}:{}", service_name(api), account.project_number);
    let admitted_user = world.quota.would_admit(user_bucket, &quota_user, now_ms);
    let admitted_project = world.quota.would_admit(Bucket::Project, &project_key, now_ms);
    if !admitted_user || !admitted_project {
        let status = world.quota.settings.rate_limit_status;
        return Err(rate_limited(api, status, account.project_number, !admitted_user));
    }
    world.quota.admit(user_bucket, &quota_user, now_ms);
    world.quota.admit(Bucket::Project, &project_key, now_ms);

    if let Some(fault) = world.take_fault(method, Some(&token.user)) {
        if fault.delay_ms > 0 {
            *delay = Some(std::time::Duration::from_millis(fault.delay_ms));
        }
        if fault.status.is_some() {
            return Err(fault_response(&fault, api));
        }
    }
    Ok(Caller {
        secondary_calendars: world.secondary_calendars.get(&token.user).cloned().unwrap_or_default(),
        user: token.user,
        client_id: token.client_id,
        client_email: token.client_email,
        project_number: account.project_number,
    })
}

fn unauthenticated(api: Api, method: &str, missing: bool) -> GoogleError {
    let www = "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"";
    let err = match (api, missing) {
        (Api::Calendar, true) => GoogleError::calendar_full(
            401,
            "global",
            "required",
            "Login Required.",
            Some(("header", "Authorization")),
            MISSING_CREDENTIALS,
            Some(json!([error_info(
                "CREDENTIALS_MISSING",
                "googleapis.com",
                json!({"service": service_name(api), "method": rpc_method(method)})
            )])),
        ),
        (Api::Calendar, false) => GoogleError::calendar_full(
            401,
            "global",
            "authError",
            "Invalid Credentials",
            Some(("header", "Authorization")),
            INVALID_CREDENTIALS,
            None,
        ),
        (Api::People, missing) => GoogleError::rpc(
            401,
            if missing { MISSING_CREDENTIALS } else { INVALID_CREDENTIALS },
            vec![error_info(
                if missing { "CREDENTIALS_MISSING" } else { "ACCESS_TOKEN_EXPIRED" },
                "googleapis.com",
                json!({"service": service_name(api), "method": rpc_method(method)}),
            )],
        ),
    };
    err.with_header("WWW-Authenticate", www)
}

fn service_disabled(api: Api, project: u64) -> GoogleError {
    let (name, service) = match api {
        Api::Calendar => ("Google Calendar API", "calendar-json.googleapis.com"),
        Api::People => ("People API", "people.googleapis.com"),
    };
    let link = format!("https://console.developers.google.com/apis/api/{service}/overview?project={project}");
    let message = format!(
        "{name} has not been used in project {project} before or it is disabled. Enable it by visiting {link} then retry. If you enabled this API recently, wait a few minutes for the action to propagate to our systems and retry."
    );
    let details = json!([
        error_info("SERVICE_DISABLED", "googleapis.com", json!({
            "consumer": format!("projects/{project}"),
            "service": service,
            "serviceTitle": name,
            "containerInfo": project.to_string(),
            "activationUrl": link,
        })),
        { "@type": "type.googleapis.com/google.rpc.Help",
          "links": [{ "description": "Google developers console API activation", "url": link }] },
    ]);
    match api {
        Api::Calendar => {
            let mut e = GoogleError::calendar_full(
                403,
                "usageLimits",
                "accessNotConfigured",
                &message,
                None,
                &message,
                Some(details),
            );
            e.body["error"]["errors"][0]["extendedHelp"] = json!(link);
            e
        }
        Api::People => {
            let Value::Array(d) = details else { unreachable!("details is an array literal") };
            GoogleError::rpc(403, &message, d)
        }
    }
}

fn insufficient_scopes(api: Api, method: &str) -> GoogleError {
    let message = "Request had insufficient authentication scopes.";
    let details = json!([error_info(
        "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
        "googleapis.com",
        json!({"service": service_name(api), "method": rpc_method(method)}),
    )]);
    match api {
        Api::Calendar => GoogleError::calendar_full(
            403,
            "global",
            "insufficientPermissions",
            "Insufficient Permission",
            None,
            message,
            Some(details),
        ),
        Api::People => {
            let Value::Array(d) = details else { unreachable!("details is an array literal") };
            GoogleError::rpc(403, message, d)
        }
    }
}

fn rate_limited(api: Api, status: u16, project: u64, per_user: bool) -> GoogleError {
    let service = service_name(api);
    let (limit_name, metric_limit) = if per_user {
        ("defaultPerMinutePerUser", "per minute per user")
    } else {
        ("defaultPerMinutePerProject", "per minute")
    };
    // People names its read bucket; Calendar's is plain "Queries".
    let metric = match api {
        Api::Calendar => "Queries",
        Api::People => "Critical read requests (Contact and Profile Reads)",
    };
    let message = format!(
        "Quota exceeded for quota metric '{metric}' and limit '{metric} {metric_limit}' of service '{service}' for consumer 'project_number:{project}'."
    );
    let details = json!([error_info(
        "RATE_LIMIT_EXCEEDED",
        "googleapis.com",
        json!({
            "consumer": format!("projects/{project}"),
            "quota_limit": limit_name,
            "quota_metric": format!("{service}/default"),
            "service": service,
        })
    )]);
    match api {
        Api::Calendar => {
            let reason = if per_user { "userRateLimitExceeded" } else { "rateLimitExceeded" };
            let text = if per_user { "User Rate Limit Exceeded" } else { "Rate Limit Exceeded" };
            GoogleError::calendar_full(status, "usageLimits", reason, text, None, &message, Some(details))
        }
        Api::People => {
            let Value::Array(d) = details else { unreachable!("details is an array literal") };
            GoogleError::rpc(429, &message, d)
        }
    }
}

/// The response of an armed fault: its own body if given, else the body Google sends with
/// that status in that API.
pub fn fault_response(fault: &Fault, api: Api) -> GoogleError {
    let mut err = match (&fault.body, api, fault.status.unwrap_or(500)) {
        (Some(Value::String(text)), _, status) => GoogleError {
            status,
            body: Value::Null,
            headers: vec![],
            raw_body: Some(("text/plain; charset=UTF-8".into(), text.clone())),
        },
        (Some(body), _, status) => GoogleError { status, body: body.clone(), headers: vec![], raw_body: None },
        (None, _, 502) => GoogleError {
            status: 502,
            body: Value::Null,
            headers: vec![],
            raw_body: Some(("text/html; charset=UTF-8".into(), BAD_GATEWAY_PAGE.into())),
        },
        (None, Api::Calendar, status) => {
            let (domain, reason, message) = match status {
                400 => ("global", "badRequest", "Bad Request"),
                401 => ("global", "authError", "Invalid Credentials"),
                403 => ("usageLimits", "rateLimitExceeded", "Rate Limit Exceeded"),
                404 => ("global", "notFound", "Not Found"),
                409 => ("global", "conflict", "Conflict"),
                410 => ("calendar", "fullSyncRequired", "Sync token is no longer valid, a full sync is required."),
                412 => ("global", "conditionNotMet", "Precondition Failed"),
                429 => ("usageLimits", "rateLimitExceeded", "Rate Limit Exceeded"),
                503 => ("global", "backendError", "The service is currently unavailable."),
                _ => ("global", "backendError", "Backend Error"),
            };
            GoogleError::calendar(status, domain, reason, message)
        }
        (None, Api::People, status) => {
            let message = match status {
                429 => {
                    "Quota exceeded for quota metric 'Critical read requests (Contact and Profile Reads)' and limit 'Critical read requests (Contact and Profile Reads) per minute per user' of service 'people.googleapis.com'."
                }
                503 => "The service is currently unavailable.",
                500 => "Internal error encountered.",
                403 => "The caller does not have permission",
                404 => "Requested entity was not found.",
                _ => "Request contains an invalid argument.",
            };
            GoogleError::rpc(status, message, vec![])
        }
    };
    for (k, v) in &fault.headers {
        err.headers.push((k.clone(), v.clone()));
    }
    err
}

const BAD_GATEWAY_PAGE: &str = "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  <title>Error 502 (Server Error)!!1</title>\n  <p><b>502.</b> <ins>That’s an error.</ins>\n  <p>The server encountered a temporary error and could not complete your request.<p>Please try again in 30 seconds.  <ins>That’s all we know.</ins>\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_method_names_follow_googles_pattern() {
        assert_eq!(rpc_method("calendar.events.list"), "calendar.v3.Events.List");
        assert_eq!(rpc_method("people.people.connections.list"), "google.people.v1.PeopleService.ListConnections");
    }
}
