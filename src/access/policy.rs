//! Who may call which route: one table, every route of the app listed once with its rule and
//! the name its audit entries carry. The access middleware refuses (500 `no_access_decision`) a
//! matched route the table does not list, and `tests/access.rs` checks the table against every
//! route registered in `src/http`, so a new route cannot go live without a decision.

use super::Actor;
use crate::model::access::Role;

/// What a route demands of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// No token (health, Google's webhook, phonebook exports with their own token).
    Public,
    /// Any valid token; the handler shows a tenant token only its own tenant.
    AnyToken,
    /// Operators only.
    Operator,
    /// The route's `{tenant}`: any of its tokens (`integration` included), or an operator.
    TenantRead,
    /// The route's `{tenant}`: its `tenant_admin` tokens, or an operator.
    TenantAdmin,
}

#[derive(Debug, Clone, Copy)]
pub struct RouteRule {
    pub method: &'static str,
    /// actix's pattern of the route, as `HttpRequest::match_pattern` reports it.
    pub pattern: &'static str,
    pub rule: Rule,
    /// Stable name of the action in the audit log.
    pub action: &'static str,
}

const fn r(method: &'static str, pattern: &'static str, rule: Rule, action: &'static str) -> RouteRule {
    RouteRule { method, pattern, rule, action }
}

use Rule::*;

/// Every route of the app. DESIGN §4: `integration` reads users, their sync status and
/// presence, contacts search and lookup, and phonebook status — not events, not any write;
/// `tenant_admin` does everything under its tenant but delete it.
pub const ROUTES: &[RouteRule] = &[
    r("GET", "/healthz", Public, "health"),
    r("GET", "/readyz", Public, "ready"),
    r("GET", "/metrics", Public, "metrics"),
    r("POST", "/webhooks/google/calendar", Public, "webhook.calendar"),
    r("GET", "/phonebook/{tenant}/{file}", Public, "phonebook.export"),
    r("GET", "/api/v1/tenants", AnyToken, "tenant.list"),
    r("PUT", "/api/v1/tenants/{tenant}", TenantAdmin, "tenant.put"),
    r("GET", "/api/v1/tenants/{tenant}", TenantRead, "tenant.get"),
    r("DELETE", "/api/v1/tenants/{tenant}", Operator, "tenant.delete"),
    r("PUT", "/api/v1/tenants/{tenant}/credentials", TenantAdmin, "tenant.credentials.put"),
    r("GET", "/api/v1/tenants/{tenant}/users", TenantRead, "user.list"),
    r("PUT", "/api/v1/tenants/{tenant}/users/{email}", TenantAdmin, "user.put"),
    r("GET", "/api/v1/tenants/{tenant}/users/{email}", TenantRead, "user.get"),
    r("DELETE", "/api/v1/tenants/{tenant}/users/{email}", TenantAdmin, "user.delete"),
    r("GET", "/api/v1/tenants/{tenant}/users/{email}/events", TenantAdmin, "user.events"),
    r("GET", "/api/v1/tenants/{tenant}/users/{email}/presence", TenantRead, "user.presence"),
    r("POST", "/api/v1/tenants/{tenant}/users/{email}/resync", TenantAdmin, "user.resync"),
    r("GET", "/api/v1/tenants/{tenant}/diagnose", TenantAdmin, "tenant.diagnose"),
    r("POST", "/api/v1/channels/renew", Operator, "channels.renew"),
    // A tenant token sees only its own tenant's jobs (the handler answers 404 for others).
    r("GET", "/api/v1/jobs/{job}", AnyToken, "job.get"),
    r("GET", "/api/v1/tenants/{tenant}/contacts", TenantRead, "contacts.search"),
    r("GET", "/api/v1/tenants/{tenant}/contacts/lookup", TenantRead, "contacts.lookup"),
    r("POST", "/api/v1/tenants/{tenant}/contacts/sync", TenantAdmin, "contacts.sync"),
    r("GET", "/api/v1/tenants/{tenant}/contacts/status", TenantRead, "contacts.status"),
    r("POST", "/api/v1/tenants/{tenant}/contacts/export-token", TenantAdmin, "contacts.export_token"),
    r("POST", "/api/v1/tenants/{tenant}/phone-system/test", TenantAdmin, "phone_system.test"),
    r("GET", "/api/v1/tenants/{tenant}/phone-system/deliveries", TenantAdmin, "phone_system.deliveries"),
    r("POST", "/api/v1/tokens", Operator, "token.create"),
    r("GET", "/api/v1/tokens", Operator, "token.list"),
    r("DELETE", "/api/v1/tokens/{id}", Operator, "token.revoke"),
    r("POST", "/api/v1/tenants/{tenant}/tokens", TenantAdmin, "token.create"),
    r("GET", "/api/v1/tenants/{tenant}/tokens", TenantAdmin, "token.list"),
    r("DELETE", "/api/v1/tenants/{tenant}/tokens/{id}", TenantAdmin, "token.revoke"),
    r("GET", "/api/v1/audit", Operator, "audit.list"),
    r("GET", "/api/v1/tenants/{tenant}/audit", TenantAdmin, "audit.list"),
];

/// What the table says about a request.
#[derive(Debug, Clone, Copy)]
pub enum Lookup {
    Found(&'static RouteRule),
    /// No route matches the path: the default service answers (404).
    NoRoute,
    /// The path's pattern is listed, but not for this method: no such endpoint.
    OtherMethod,
    /// A route matches that the table does not list: refused until it gets a decision.
    Undecided,
}

pub fn lookup(method: &str, pattern: Option<&str>) -> Lookup {
    let Some(pattern) = pattern else { return Lookup::NoRoute };
    let mut listed = false;
    for row in ROUTES.iter().filter(|row| row.pattern == pattern) {
        if row.method == method {
            return Lookup::Found(row);
        }
        listed = true;
    }
    if listed { Lookup::OtherMethod } else { Lookup::Undecided }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// 403 `forbidden`: the caller's own tenant, beyond its role.
    Forbidden,
    /// 404 as if the tenant did not exist: another tenant's route.
    NotFound,
}

/// The decision for `actor` on a route with `rule`, whose path names `path_tenant` (if any).
pub fn decide(rule: Rule, actor: &Actor, path_tenant: Option<&str>) -> Decision {
    if rule == Public || actor.role == Role::Operator {
        return Decision::Allow;
    }
    // Signed-in users are decided by `decide_self_service`, which sees the path's email.
    if actor.role == Role::User {
        return Decision::Forbidden;
    }
    // A tenant token: another tenant's paths do not exist for it, whatever the rule.
    let own = match (&actor.tenant, path_tenant) {
        (Some(mine), Some(theirs)) if mine != theirs => return Decision::NotFound,
        (Some(_), Some(_)) => true,
        _ => false,
    };
    match rule {
        Public | AnyToken => Decision::Allow,
        Operator => Decision::Forbidden,
        TenantRead if own => Decision::Allow,
        TenantAdmin if own && actor.role == Role::TenantAdmin => Decision::Allow,
        TenantRead | TenantAdmin => Decision::Forbidden,
    }
}

/// What a signed-in user (`Role::User`) may do: read their own status and presence, and save
/// their own profiles (the handler lets only trigger words change).
const SELF_SERVICE_ACTIONS: &[&str] = &["user.get", "user.presence", "user.put"];

/// The decision for a `Role::User` actor (`actor.name` is their email) on `row`, whose path
/// parameters are `params`.
pub fn decide_self_service(row: &RouteRule, actor: &Actor, params: &[(String, String)]) -> Decision {
    let param = |name: &str| params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    match (param("tenant"), actor.tenant.as_deref()) {
        (Some(theirs), Some(mine)) if theirs != mine => return Decision::NotFound,
        (Some(_), Some(_)) => {}
        _ => return Decision::Forbidden,
    }
    let own = param("email").is_some_and(|e| e.trim().eq_ignore_ascii_case(&actor.name));
    if own && SELF_SERVICE_ACTIONS.contains(&row.action) { Decision::Allow } else { Decision::Forbidden }
}

/// The route's parameters from `path` (`{name}` segments of `pattern`), percent-decoded as
/// actix decodes them for the handlers (lossy UTF-8), so the tenant checked here is the tenant
/// the handler acts on. Empty if the path does not have the pattern's shape.
pub fn params(pattern: &str, path: &str) -> Vec<(String, String)> {
    let (p, s): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
    if p.len() != s.len() {
        return Vec::new();
    }
    p.iter()
        .zip(&s)
        .filter_map(|(p, s)| {
            let name = p.strip_prefix('{')?.strip_suffix('}')?;
            Some((name.to_owned(), percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(role: Role, tenant: Option<&str>) -> Actor {
        Actor { token_id: "t".into(), name: "n".into(), role, tenant: tenant.map(str::to_owned) }
    }

    #[test]
    fn every_route_is_listed_once() {
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(!(a.method == b.method && a.pattern == b.pattern), "{} {} twice", a.method, a.pattern);
            }
        }
    }

    #[test]
    fn tenant_tokens_see_their_tenant_only_and_within_their_role() {
        let admin = actor(Role::TenantAdmin, Some("acme"));
        let integration = actor(Role::Integration, Some("acme"));
        let operator = actor(Role::Operator, None);
        assert_eq!(decide(TenantAdmin, &admin, Some("acme")), Decision::Allow);
        assert_eq!(decide(TenantAdmin, &integration, Some("acme")), Decision::Forbidden);
        assert_eq!(decide(TenantRead, &integration, Some("acme")), Decision::Allow);
        assert_eq!(decide(TenantRead, &integration, Some("beta")), Decision::NotFound);
        assert_eq!(decide(Operator, &admin, Some("acme")), Decision::Forbidden);
        assert_eq!(decide(Operator, &admin, Some("beta")), Decision::NotFound);
        assert_eq!(decide(Operator, &admin, None), Decision::Forbidden);
        assert_eq!(decide(TenantAdmin, &admin, None), Decision::Forbidden, "a tenant rule without a tenant");
        assert_eq!(decide(Operator, &operator, Some("beta")), Decision::Allow);
    }

    #[test]
    fn parameters_are_decoded_like_the_handlers_see_them() {
        let p = params("/api/v1/tenants/{tenant}/users/{email}", "/api/v1/tenants/%61cme/users/a%2F..%40x");
        assert_eq!(p, [("tenant".to_owned(), "acme".to_owned()), ("email".to_owned(), "a/..@x".to_owned())]);
        assert!(params("/api/v1/tenants/{tenant}", "/api/v1/tenants/a/b").is_empty());
    }
}
