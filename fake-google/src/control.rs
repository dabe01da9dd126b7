//! The control API under `/_fake/` (no Google path starts so): tests, the demo and outside
//! scripts set up domains, service accounts and delegation, change directory entries and
//! contacts, arm faults, tune push delivery, move the clock, and read back what the fake saw.
//!
//! Bodies are JSON; errors are `{"error": {"code", "message"}}`. Settings endpoints (`delivery`,
//! `behaviour`, `quota`) merge the given fields into the current settings.

use std::collections::BTreeSet;

use actix_web::{HttpRequest, HttpResponse, ResponseError, http::StatusCode, web};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::calendar::model::Calendar;
use crate::clock::google_timestamp;
use crate::keys::new_service_account;
use crate::params::Params;
use crate::people::model::{PeopleBook, SourceKind, new_person_id, normalise};
use crate::quota::Bucket;
use crate::world::{Domain, Fault, Shared, World};

#[derive(Debug)]
pub struct ControlError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)
    }
}

impl ResponseError for ControlError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(json!({ "error": { "code": self.code, "message": self.message } }))
    }
}

fn bad(message: impl Into<String>) -> ControlError {
    ControlError { status: StatusCode::BAD_REQUEST, code: "bad_request", message: message.into() }
}

fn not_found(message: impl Into<String>) -> ControlError {
    ControlError { status: StatusCode::NOT_FOUND, code: "not_found", message: message.into() }
}

fn conflict(message: impl Into<String>) -> ControlError {
    ControlError { status: StatusCode::CONFLICT, code: "conflict", message: message.into() }
}

type Result<T> = std::result::Result<T, ControlError>;

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON body: {e}")))
}

/// Merges the JSON object `body` into `current` and reads it back, so a settings PUT may name
/// only the fields it changes.
fn merge_settings<T: serde::Serialize + DeserializeOwned>(current: &T, body: &[u8]) -> Result<T> {
    let Value::Object(changes) = parse::<Value>(body)? else { return Err(bad("expected a JSON object")) };
    let mut v = serde_json::to_value(current).map_err(|e| bad(e.to_string()))?;
    if let Value::Object(m) = &mut v {
        for (k, val) in changes {
            m.insert(k, val);
        }
    }
    serde_json::from_value(v).map_err(|e| bad(format!("invalid settings: {e}")))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/_fake")
            .route("", web::get().to(index))
            .route("/domains", web::get().to(list_domains))
            .route("/domains", web::post().to(create_domain))
            .route("/domains/{domain}", web::put().to(update_domain))
            .route("/domains/{domain}/users", web::post().to(add_user))
            .route("/domains/{domain}/users/{email}", web::delete().to(remove_user))
            .route("/service-accounts", web::post().to(create_service_account))
            .route("/service-accounts/{email}", web::delete().to(delete_service_account))
            .route("/delegation/{client_id}", web::put().to(put_delegation))
            .route("/apis/{api}", web::put().to(put_api))
            .route("/sync-tokens/invalidate", web::post().to(invalidate_sync_tokens))
            .route("/faults", web::get().to(list_faults))
            .route("/faults", web::post().to(add_fault))
            .route("/faults", web::delete().to(clear_faults))
            .route("/delivery", web::get().to(get_delivery))
            .route("/delivery", web::put().to(put_delivery))
            .route("/behaviour", web::get().to(get_behaviour))
            .route("/behaviour", web::put().to(put_behaviour))
            .route("/quota", web::get().to(get_quota))
            .route("/quota", web::put().to(put_quota))
            .route("/clock", web::get().to(get_clock))
            .route("/clock", web::post().to(advance_clock))
            .route("/calendars/{user}", web::put().to(put_calendar))
            .route("/calendars/{user}/events", web::get().to(calendar_events))
            .route("/calendars/{user}/events", web::post().to(plant_event))
            .route("/calendars/{user}/secondary", web::post().to(add_secondary_calendar))
            .route("/directory/{domain}/people", web::get().to(list_directory))
            .route("/directory/{domain}/people", web::post().to(add_directory_person))
            .route("/directory/{domain}/people/{id}", web::put().to(put_directory_person))
            .route("/directory/{domain}/people/{id}", web::delete().to(delete_directory_person))
            .route("/contacts/{user}", web::get().to(list_contacts))
            .route("/contacts/{user}", web::post().to(add_contact))
            .route("/contacts/{user}/{id}", web::put().to(put_contact))
            .route("/contacts/{user}/{id}", web::delete().to(delete_contact))
            .route("/requests", web::get().to(get_requests))
            .route("/requests", web::delete().to(clear_requests))
            .route("/channels", web::get().to(get_channels))
            .route("/notifications", web::get().to(get_notifications))
            .route("/stats", web::get().to(get_stats))
            .route("/oauth-clients", web::get().to(list_oauth_clients))
            .route("/oauth-clients", web::post().to(create_oauth_client))
            .route("/oauth-clients/{client_id}", web::get().to(get_oauth_client))
            .route("/oauth-clients/{client_id}", web::put().to(put_oauth_client))
            .route("/oauth-clients/{client_id}", web::delete().to(delete_oauth_client))
            .route("/oidc", web::get().to(get_oidc))
            .route("/oidc", web::put().to(put_oidc))
            .route("/oidc/keys/rotate", web::post().to(rotate_oidc_keys))
            .route("/oidc/users/{email}", web::put().to(put_oidc_user)),
    );
}

async fn index(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "fake": "fake-google",
        "base_url": shared.base_url,
        "token_uri": shared.token_uri(),
        "calendar": format!("{}/calendar/v3/", shared.base_url),
        "people": format!("{}/v1/", shared.base_url),
        "openid_configuration": format!("{}/.well-known/openid-configuration", shared.base_url),
        "issuer": crate::oidc::issuer(&shared),
        "now": google_timestamp(shared.clock.now()),
    }))
}

// ---- domains and users ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewDomain {
    domain: String,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default = "yes")]
    directory_sharing: bool,
    #[serde(default = "utc")]
    time_zone: String,
    #[serde(default = "se")]
    region: String,
}

fn yes() -> bool {
    true
}
fn utc() -> String {
    "UTC".into()
}
fn se() -> String {
    "SE".into()
}

fn check_zone(tz: &str) -> Result<()> {
    tz.parse::<chrono_tz::Tz>()
        .map(|_| ())
        .map_err(|_| bad(format!("unknown time zone '{tz}': use an IANA name such as Europe/Stockholm")))
}

fn check_user(domain: &str, email: &str) -> Result<String> {
    let email = email.trim().to_ascii_lowercase();
    match email.rsplit_once('@') {
        Some((local, d)) if !local.is_empty() && d == domain => Ok(email),
        _ => Err(bad(format!("'{email}' is not an address in {domain}"))),
    }
}

/// A directory profile for a new user, its name derived from the address.
fn add_user_to(world: &mut World, domain: &str, email: &str, now: chrono::DateTime<chrono::Utc>) {
    let d = &world.domains[domain];
    let (tz, region) = (d.time_zone.clone(), d.region.clone());
    world.calendars.entry(email.to_owned()).or_insert_with(|| Calendar::new(email, &tz, now));
    let local = email.split('@').next().unwrap_or_default();
    let mut parts = local.split(['.', '_', '-']).filter(|p| !p.is_empty()).map(|p| {
        let mut c = p.chars();
        c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
    });
    let given = parts.next().unwrap_or_default();
    let family: Vec<String> = parts.collect();
    let mut name = Map::new();
    name.insert("givenName".into(), json!(given));
    if !family.is_empty() {
        name.insert("familyName".into(), json!(family.join(" ")));
    }
    let input = json!({
        "names": [Value::Object(name)],
        "emailAddresses": [{ "value": email, "type": "work" }],
    });
    let data = normalise(input.as_object().unwrap_or(&Map::new()), &region).unwrap_or_default();
    let book = world.directory.entry(domain.to_owned()).or_insert_with(|| PeopleBook::new(&region));
    let id = new_person_id(SourceKind::DomainProfile);
    book.put(&id, SourceKind::DomainProfile, data, false, now, chrono::Duration::zero());
}

async fn list_domains(shared: web::Data<Shared>) -> HttpResponse {
    let world = shared.world.lock();
    HttpResponse::Ok().json(json!({ "domains": world.domains.values().collect::<Vec<_>>() }))
}

async fn create_domain(shared: web::Data<Shared>, body: web::Bytes) -> Result<HttpResponse> {
    let req: NewDomain = parse(&body)?;
    let domain = req.domain.trim().to_ascii_lowercase();
    if domain.is_empty() || !domain.contains('.') || domain.contains('@') {
        return Err(bad(format!("'{domain}' is not a domain name")));
    }
    check_zone(&req.time_zone)?;
    let users: BTreeSet<String> = req.users.iter().map(|u| check_user(&domain, u)).collect::<Result<_>>()?;
    let now = shared.clock.now();
    let mut world = shared.world.lock();
    if world.domains.contains_key(&domain) {
        return Err(conflict(format!("domain {domain} exists; PUT /_fake/domains/{domain} changes it")));
    }
    world.domains.insert(
        domain.clone(),
        Domain {
            domain: domain.clone(),
            users: BTreeSet::new(),
            directory_sharing: req.directory_sharing,
            time_zone: req.time_zone,
            region: req.region.to_ascii_uppercase(),
        },
    );
    for u in &users {
        add_user_to(&mut world, &domain, u, now);
    }
    if let Some(d) = world.domains.get_mut(&domain) {
        d.users = users;
    }
    Ok(HttpResponse::Created().json(&world.domains[&domain]))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DomainChange {
    directory_sharing: Option<bool>,
    time_zone: Option<String>,
    region: Option<String>,
}

async fn update_domain(shared: web::Data<Shared>, path: web::Path<String>, body: web::Bytes) -> Result<HttpResponse> {
    let change: DomainChange = parse(&body)?;
    if let Some(tz) = &change.time_zone {
        check_zone(tz)?;
    }
    let mut world = shared.world.lock();
    let d = world.domains.get_mut(path.as_str()).ok_or_else(|| not_found(format!("no domain {path}")))?;
    if let Some(s) = change.directory_sharing {
        d.directory_sharing = s;
    }
    if let Some(tz) = change.time_zone {
        d.time_zone = tz;
    }
    if let Some(r) = change.region {
        d.region = r.to_ascii_uppercase();
    }
    Ok(HttpResponse::Ok().json(&*d))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    email: String,
}

async fn add_user(shared: web::Data<Shared>, path: web::Path<String>, body: web::Bytes) -> Result<HttpResponse> {
    let req: NewUser = parse(&body)?;
    let email = check_user(&path, &req.email)?;
    let now = shared.clock.now();
    let mut world = shared.world.lock();
    if !world.domains.contains_key(path.as_str()) {
        return Err(not_found(format!("no domain {path}")));
    }
    if world.user_exists(&email) {
        return Err(conflict(format!("{email} exists")));
    }
    add_user_to(&mut world, &path, &email, now);
    if let Some(d) = world.domains.get_mut(path.as_str()) {
        d.users.insert(email.clone());
    }
    Ok(HttpResponse::Created().json(json!({ "email": email })))
}

async fn remove_user(shared: web::Data<Shared>, path: web::Path<(String, String)>) -> Result<HttpResponse> {
    let (domain, email) = path.into_inner();
    let email = email.to_ascii_lowercase();
    let now = shared.clock.now();
    let mut world = shared.world.lock();
    let d = world.domains.get_mut(&domain).ok_or_else(|| not_found(format!("no domain {domain}")))?;
    if !d.users.remove(&email) {
        return Err(not_found(format!("no user {email}")));
    }
    // A deleted account's tokens stop working at once.
    world.access_tokens.retain(|_, t| t.user != email);
    world.oidc.forget_user(&email);
    if let Some(book) = world.directory.get_mut(&domain) {
        let profile = book.people.values().find(|p| {
            p.kind == SourceKind::DomainProfile
                && !p.latest().deleted
                && p.latest()
                    .data
                    .get("emailAddresses")
                    .and_then(|e| e.get(0))
                    .and_then(|e| e.get("value"))
                    .and_then(Value::as_str)
                    == Some(email.as_str())
        });
        if let Some(id) = profile.map(|p| p.id.clone()) {
            book.put(&id, SourceKind::DomainProfile, Map::new(), true, now, chrono::Duration::zero());
        }
    }
    Ok(HttpResponse::NoContent().finish())
}

// ---- service accounts, delegation, APIs ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewServiceAccount {
    domain: String,
    #[serde(default = "default_account_name")]
    name: String,
}

fn default_account_name() -> String {
    "gwsync".into()
}

async fn create_service_account(shared: web::Data<Shared>, body: web::Bytes) -> Result<HttpResponse> {
    let req: NewServiceAccount = parse(&body)?;
    let domain = req.domain.to_ascii_lowercase();
    if !shared.world.lock().domains.contains_key(&domain) {
        return Err(not_found(format!("no domain {domain}: POST /_fake/domains first")));
    }
    if req.name.is_empty() || !req.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err(bad("name must be lower-case letters, digits and dashes"));
    }
    // RSA key generation takes a moment; keep it off the lock.
    let (account, key) = web::block({
        let token_uri = shared.token_uri();
        move || new_service_account(&domain, &req.name, &token_uri)
    })
    .await
    .map_err(|e| bad(e.to_string()))?
    .map_err(|e| bad(e.to_string()))?;
    shared.world.lock().accounts.insert(account.client_email.clone(), account);
    Ok(HttpResponse::Created().json(key))
}

async fn delete_service_account(shared: web::Data<Shared>, path: web::Path<String>) -> Result<HttpResponse> {
    let mut world = shared.world.lock();
    let account =
        world.accounts.remove(path.as_str()).ok_or_else(|| not_found(format!("no service account {path}")))?;
    world.access_tokens.retain(|_, t| t.client_email != account.client_email);
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Delegation {
    scopes: Vec<String>,
}

async fn put_delegation(shared: web::Data<Shared>, path: web::Path<String>, body: web::Bytes) -> Result<HttpResponse> {
    let req: Delegation = parse(&body)?;
    let mut world = shared.world.lock();
    if !world.accounts.values().any(|a| a.client_id == *path) {
        return Err(not_found(format!("no service account with client id {path}")));
    }
    let scopes: BTreeSet<String> =
        req.scopes.into_iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
    if scopes.is_empty() {
        world.delegation.remove(path.as_str());
    } else {
        world.delegation.insert(path.to_string(), scopes.clone());
    }
    Ok(HttpResponse::Ok().json(json!({ "client_id": *path, "scopes": scopes })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiSwitch {
    enabled: bool,
}

async fn put_api(shared: web::Data<Shared>, path: web::Path<String>, body: web::Bytes) -> Result<HttpResponse> {
    let req: ApiSwitch = parse(&body)?;
    let mut world = shared.world.lock();
    match path.as_str() {
        "calendar" => world.apis.calendar = req.enabled,
        "people" => world.apis.people = req.enabled,
        other => return Err(not_found(format!("no API '{other}': use calendar or people"))),
    }
    Ok(HttpResponse::Ok().json(json!({ "api": *path, "enabled": req.enabled })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Invalidate {
    user: Option<String>,
    api: Option<String>,
}

async fn invalidate_sync_tokens(shared: web::Data<Shared>, body: web::Bytes) -> Result<HttpResponse> {
    let req: Invalidate = if body.is_empty() { Invalidate::default() } else { parse(&body)? };
    let (calendar, people) = match req.api.as_deref() {
        None => (true, true),
        Some("calendar") => (true, false),
        Some("people") => (false, true),
        Some(other) => return Err(bad(format!("api must be calendar or people, not '{other}'"))),
    };
    let user = req.user.map(|u| u.to_ascii_lowercase());
    let mut world = shared.world.lock();
    let mut count = 0;
    if calendar {
        for cal in world.calendars.values_mut().filter(|c| user.as_ref().is_none_or(|u| *u == c.owner)) {
            cal.epoch += 1;
            count += 1;
        }
    }
    if people {
        let domain = user.as_deref().and_then(World::domain_of);
        for (owner, book) in world.contacts.iter_mut() {
            if user.as_ref().is_none_or(|u| u == owner) {
                book.epoch += 1;
                count += 1;
            }
        }
        for (d, book) in world.directory.iter_mut() {
            if domain.as_ref().is_none_or(|dom| dom == d) {
                book.epoch += 1;
                count += 1;
            }
        }
    }
    Ok(HttpResponse::Ok().json(json!({ "invalidated": count })))
}

// ---- faults and settings ----

async fn list_faults(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "faults": shared.world.lock().faults }))
}

async fn add_fault(shared: web::Data<Shared>, body: web::Bytes) -> Result<HttpResponse> {
    let mut fault: Fault = parse(&body)?;
    match fault.status {
        Some(status) if !(100..=599).contains(&status) => return Err(bad("status must be an HTTP status code")),
        None if fault.delay_ms == 0 => return Err(bad("a fault needs a status, a delay_ms, or both")),
        _ => {}
    }
    if fault.count == 0 {
        return Err(bad("count must be at least 1"));
    }
    fault.method = crate::world::normalise_method(&fault.method);
    fault.user = fault.user.map(|u| u.to_ascii_lowercase());
    let mut world = shared.world.lock();
    world.faults.push(fault.clone());
    Ok(HttpResponse::Created().json(fault))
}

async fn clear_faults(shared: web::Data<Shared>) -> HttpResponse {
    shared.world.lock().faults.clear();
    HttpResponse::NoContent().finish()
}

async fn get_delivery(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(&shared.world.lock().delivery)
}

async fn put_delivery(shared: web::Data<Shared>, body: web::Bytes) -> Result<HttpResponse> {
    let mut world = shared.world.lock();
    let new = merge_settings(&world.delivery, &body)?;
    if !(0.0..=1.0).contains(&new.drop) {
        return Err(bad("drop is a probability between 0 and 1"));
    }
    world.delivery = new;
    Ok(HttpResponse::Ok().json(&world.delivery))
}

async fn get_behaviour(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(&shared.world.lock().behaviour)
}

async fn put_behaviour(shared: web::Data<Shared>, body: web::Bytes) -> Result<HttpResponse> {
    let mut world = shared.world.lock();
    let new = merge_settings(&world.behaviour, &body)?;
    if new.tombstone_retention_days == 0 || new.push_max_attempts == 0 {
        return Err(bad("tombstone_retention_days and push_max_attempts must be at least 1"));
    }
    world.behaviour = new;
    Ok(HttpResponse::Ok().json(&world.behaviour))
}

async fn get_quota(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(&shared.world.lock().quota.settings)
}

async fn put_quota(shared: web::Data<Shared>, body: web::Bytes) -> Result<HttpResponse> {
    let mut world = shared.world.lock();
    let new = merge_settings(&world.quota.settings, &body)?;
    if !matches!(new.rate_limit_status, 403 | 429) {
        return Err(bad("rate_limit_status must be 403 or 429"));
    }
    world.quota.settings = new;
    Ok(HttpResponse::Ok().json(&world.quota.settings))
}

fn clock_json(shared: &Shared) -> Value {
    json!({ "now": google_timestamp(shared.clock.now()), "offset_ms": shared.clock.offset().num_milliseconds() })
}

async fn get_clock(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(clock_json(&shared))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Advance {
    advance: String,
}

async fn advance_clock(shared: web::Data<Shared>, body: web::Bytes) -> Result<HttpResponse> {
    let req: Advance = parse(&body)?;
    let by = humantime::parse_duration(&req.advance)
        .map_err(|e| bad(format!("advance must be a duration such as 90s, 2h or 8d: {e}")))?;
    shared.clock.advance(by);
    Ok(HttpResponse::Ok().json(clock_json(&shared)))
}

// ---- calendars ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CalendarChange {
    time_zone: String,
}

async fn put_calendar(shared: web::Data<Shared>, path: web::Path<String>, body: web::Bytes) -> Result<HttpResponse> {
    let req: CalendarChange = parse(&body)?;
    check_zone(&req.time_zone)?;
    let user = path.to_ascii_lowercase();
    let mut world = shared.world.lock();
    if !world.user_exists(&user) {
        return Err(not_found(format!("no user {user}")));
    }
    let now = shared.clock.now();
    let cal = crate::calendar::calendar_mut(&mut world, &user, now);
    cal.time_zone = req.time_zone;
    Ok(HttpResponse::Ok().json(json!({ "user": user, "time_zone": cal.time_zone })))
}

/// Every stored event of a calendar, cancelled ones included, as events.get shows them.
async fn calendar_events(shared: web::Data<Shared>, path: web::Path<String>) -> Result<HttpResponse> {
    let user = path.to_ascii_lowercase();
    let world = shared.world.lock();
    let cal = world.calendars.get(&user).ok_or_else(|| not_found(format!("no calendar for {user}")))?;
    let items: Vec<Value> = cal.events.values().map(|e| e.render(cal, None, None)).collect();
    Ok(HttpResponse::Ok()
        .json(json!({ "owner": cal.owner, "time_zone": cal.time_zone, "seq": cal.seq, "items": items })))
}

/// A secondary calendar for a user (an id like Google's `c_…@group.calendar.google.com`), in
/// their domain's time zone: where status events cannot go.
async fn add_secondary_calendar(shared: web::Data<Shared>, path: web::Path<String>) -> Result<HttpResponse> {
    let user = path.to_ascii_lowercase();
    let now = shared.clock.now();
    let mut world = shared.world.lock();
    if !world.user_exists(&user) {
        return Err(not_found(format!("no user {user}")));
    }
    let tz = world.domain_for_user(&user).map(|d| d.time_zone.clone()).unwrap_or_else(utc);
    let id = format!("c_{}@group.calendar.google.com", crate::calendar::model::new_event_id());
    let mut cal = Calendar::new(&id, &tz, now);
    cal.primary = false;
    world.calendars.insert(id.clone(), cal);
    world.secondary_calendars.entry(user.clone()).or_default().insert(id.clone());
    Ok(HttpResponse::Created().json(json!({ "id": id, "user": user, "time_zone": tz, "primary": false })))
}

/// An event as Google itself puts it on a calendar (Gmail's `fromGmail` events, Contacts'
/// birthdays), past the rules for what a client may create; watching channels are notified as
/// for any change. Times and fields are checked as events.insert checks them.
async fn plant_event(shared: web::Data<Shared>, path: web::Path<String>, body: web::Bytes) -> Result<HttpResponse> {
    let calendar = path.to_ascii_lowercase();
    let body: Map<String, Value> = parse(&body)?;
    let mut world = shared.world.lock();
    if !world.calendars.contains_key(&calendar) && !world.user_exists(&calendar) {
        return Err(not_found(format!("no calendar {calendar}")));
    }
    let event =
        crate::calendar::events::create(&mut world, &shared, &calendar, &body, crate::calendar::events::Origin::Google)
            .map_err(|e| bad(format!("Google would not store this event: {e}")))?;
    let cal = crate::calendar::calendar_mut(&mut world, &calendar, shared.clock.now());
    Ok(HttpResponse::Created().json(event.render(cal, None, None)))
}

// ---- directory and contacts ----

enum BookRef {
    Directory(String),
    Contacts(String),
}

fn book_for<'w>(world: &'w mut World, which: &BookRef) -> Result<&'w mut PeopleBook> {
    match which {
        BookRef::Directory(domain) => {
            let region = world
                .domains
                .get(domain)
                .map(|d| d.region.clone())
                .ok_or_else(|| not_found(format!("no domain {domain}")))?;
            Ok(world.directory.entry(domain.clone()).or_insert_with(|| PeopleBook::new(&region)))
        }
        BookRef::Contacts(user) => {
            if !world.user_exists(user) {
                return Err(not_found(format!("no user {user}")));
            }
            let region = world.domain_for_user(user).map(|d| d.region.clone()).unwrap_or_else(|| "US".into());
            Ok(world.contacts.entry(user.clone()).or_insert_with(|| PeopleBook::new(&region)))
        }
    }
}

fn list_book(shared: &Shared, which: BookRef) -> Result<HttpResponse> {
    let now = shared.clock.now();
    let mut world = shared.world.lock();
    let book = book_for(&mut world, &which)?;
    let all_fields: Vec<String> = crate::people::model::PERSON_FIELDS.iter().map(|s| s.to_string()).collect();
    let people: Vec<Value> = book
        .people
        .values()
        .map(|p| {
            let v = p.latest();
            let mut r = p.render(v, &all_fields);
            r["source"] = json!(p.kind.source_type());
            r["visible"] = json!(v.visible_at <= now);
            r
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "people": people })))
}

/// Adds one person (a JSON object) or many (an array), each a People API Person plus an
/// optional `source`.
fn add_people(shared: &Shared, which: BookRef, body: &[u8]) -> Result<HttpResponse> {
    let value: Value = parse(body)?;
    let (inputs, many) = match value {
        Value::Array(items) => (items, true),
        other => (vec![other], false),
    };
    let now = shared.clock.now();
    let mut world = shared.world.lock();
    let delay = chrono::Duration::milliseconds(world.behaviour.people_propagation_delay_ms as i64);
    let book = book_for(&mut world, &which)?;
    let mut prepared = Vec::with_capacity(inputs.len());
    for input in &inputs {
        let Value::Object(map) = input else { return Err(bad("each person must be a JSON object")) };
        let kind = match (&which, map.get("source").and_then(Value::as_str)) {
            (BookRef::Contacts(_), None | Some("CONTACT")) => SourceKind::Contact,
            (BookRef::Directory(_), None) => SourceKind::DomainContact,
            (BookRef::Directory(_), Some(s @ ("DOMAIN_PROFILE" | "DOMAIN_CONTACT"))) => {
                SourceKind::parse(s).unwrap_or(SourceKind::DomainContact)
            }
            (_, Some(s)) => return Err(bad(format!("source '{s}' does not belong in this address book"))),
        };
        let data = normalise(map, &book.region).map_err(|e| bad(e.0))?;
        prepared.push((kind, data));
    }
    let all_fields: Vec<String> = crate::people::model::PERSON_FIELDS.iter().map(|s| s.to_string()).collect();
    let mut out = Vec::with_capacity(prepared.len());
    for (kind, data) in prepared {
        let id = new_person_id(kind);
        book.put(&id, kind, data, false, now, delay);
        let p = &book.people[&id];
        out.push(p.render(p.latest(), &all_fields));
    }
    Ok(HttpResponse::Created().json(if many { Value::Array(out) } else { out.pop().unwrap_or(Value::Null) }))
}

fn put_person(shared: &Shared, which: BookRef, id: &str, body: &[u8]) -> Result<HttpResponse> {
    let Value::Object(map) = parse::<Value>(body)? else { return Err(bad("a person is a JSON object")) };
    let id = id.trim_start_matches("people/");
    let now = shared.clock.now();
    let mut world = shared.world.lock();
    let delay = chrono::Duration::milliseconds(world.behaviour.people_propagation_delay_ms as i64);
    let book = book_for(&mut world, &which)?;
    let kind = match book.people.get(id) {
        Some(p) if !p.latest().deleted => p.kind,
        _ => return Err(not_found(format!("no person people/{id}"))),
    };
    let data = normalise(&map, &book.region).map_err(|e| bad(e.0))?;
    book.put(id, kind, data, false, now, delay);
    let p = &book.people[id];
    let all_fields: Vec<String> = crate::people::model::PERSON_FIELDS.iter().map(|s| s.to_string()).collect();
    Ok(HttpResponse::Ok().json(p.render(p.latest(), &all_fields)))
}

fn delete_person(shared: &Shared, which: BookRef, id: &str) -> Result<HttpResponse> {
    let id = id.trim_start_matches("people/");
    let now = shared.clock.now();
    let mut world = shared.world.lock();
    let delay = chrono::Duration::milliseconds(world.behaviour.people_propagation_delay_ms as i64);
    let book = book_for(&mut world, &which)?;
    let kind = match book.people.get(id) {
        Some(p) if !p.latest().deleted => p.kind,
        _ => return Err(not_found(format!("no person people/{id}"))),
    };
    book.put(id, kind, Map::new(), true, now, delay);
    Ok(HttpResponse::NoContent().finish())
}

async fn list_directory(shared: web::Data<Shared>, path: web::Path<String>) -> Result<HttpResponse> {
    list_book(&shared, BookRef::Directory(path.to_ascii_lowercase()))
}
async fn add_directory_person(
    shared: web::Data<Shared>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse> {
    add_people(&shared, BookRef::Directory(path.to_ascii_lowercase()), &body)
}
async fn put_directory_person(
    shared: web::Data<Shared>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse> {
    let (domain, id) = path.into_inner();
    put_person(&shared, BookRef::Directory(domain.to_ascii_lowercase()), &id, &body)
}
async fn delete_directory_person(shared: web::Data<Shared>, path: web::Path<(String, String)>) -> Result<HttpResponse> {
    let (domain, id) = path.into_inner();
    delete_person(&shared, BookRef::Directory(domain.to_ascii_lowercase()), &id)
}
async fn list_contacts(shared: web::Data<Shared>, path: web::Path<String>) -> Result<HttpResponse> {
    list_book(&shared, BookRef::Contacts(path.to_ascii_lowercase()))
}
async fn add_contact(shared: web::Data<Shared>, path: web::Path<String>, body: web::Bytes) -> Result<HttpResponse> {
    add_people(&shared, BookRef::Contacts(path.to_ascii_lowercase()), &body)
}
async fn put_contact(
    shared: web::Data<Shared>,
    path: web::Path<(String, String)>,
    body: web::Bytes,
) -> Result<HttpResponse> {
    let (user, id) = path.into_inner();
    put_person(&shared, BookRef::Contacts(user.to_ascii_lowercase()), &id, &body)
}
async fn delete_contact(shared: web::Data<Shared>, path: web::Path<(String, String)>) -> Result<HttpResponse> {
    let (user, id) = path.into_inner();
    delete_person(&shared, BookRef::Contacts(user.to_ascii_lowercase()), &id)
}

// ---- what the fake saw ----

async fn get_requests(shared: web::Data<Shared>, req: HttpRequest) -> Result<HttpResponse> {
    let params = Params::parse(req.query_string());
    let since = params
        .get("since")
        .map(|s| s.parse::<u64>().map_err(|_| bad("since must be a number")))
        .transpose()?
        .unwrap_or(0);
    let method = params.get("method").map(crate::world::normalise_method);
    let world = shared.world.lock();
    let requests = world.requests.query(since, method.as_deref(), params.get("user"));
    Ok(HttpResponse::Ok().json(json!({ "requests": requests, "last_seq": world.requests.last_seq() })))
}

async fn clear_requests(shared: web::Data<Shared>) -> HttpResponse {
    let mut world = shared.world.lock();
    world.requests.clear();
    world.quota.reset_peaks();
    HttpResponse::NoContent().finish()
}

async fn get_channels(shared: web::Data<Shared>, req: HttpRequest) -> HttpResponse {
    let params = Params::parse(req.query_string());
    let now = shared.clock.now();
    let world = shared.world.lock();
    let mut channels: Vec<Value> = world
        .channels
        .by_id
        .values()
        .filter(|c| params.get("user").is_none_or(|u| c.calendar == u.to_ascii_lowercase()))
        .filter(|c| params.get("state").is_none_or(|s| c.state(now) == s))
        .map(|c| {
            let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
            v["state"] = json!(c.state(now));
            v["expiration"] = json!(c.expiration.timestamp_millis().to_string());
            v
        })
        .collect();
    channels.sort_by(|a, b| a["created"].as_str().cmp(&b["created"].as_str()));
    HttpResponse::Ok().json(json!({ "channels": channels }))
}

async fn get_notifications(shared: web::Data<Shared>, req: HttpRequest) -> HttpResponse {
    let params = Params::parse(req.query_string());
    let world = shared.world.lock();
    let records: Vec<_> = world
        .notifications
        .records
        .iter()
        .filter(|r| params.get("channel").is_none_or(|c| r.channel_id == c))
        .cloned()
        .collect();
    HttpResponse::Ok().json(json!({ "notifications": records }))
}

async fn get_stats(shared: web::Data<Shared>) -> HttpResponse {
    let world = shared.world.lock();
    let by_method = &world.requests.by_method;
    let by_status: std::collections::BTreeMap<String, u64> =
        world.requests.by_status.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    HttpResponse::Ok().json(json!({
        "requests_by_method": by_method,
        "google_responses_by_status": by_status,
        "peak_requests_per_minute": {
            "project": world.quota.peak(Bucket::Project),
            "calendar_user": world.quota.peak(Bucket::CalendarUser),
            "people_user": world.quota.peak(Bucket::PeopleUser),
        },
        "channels": world.channels.by_id.len(),
        "live_channels": world.channels.by_id.values().filter(|c| c.is_live(shared.clock.now())).count(),
        "access_tokens": world.access_tokens.len(),
    }))
}

// ---- Sign in with Google: OAuth clients and the provider ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOAuthClient {
    #[serde(default = "default_client_name")]
    name: String,
    redirect_uris: Vec<String>,
    /// A fixed id and secret (in Google's formats) instead of random ones, for demos and
    /// configuration written before the fake starts.
    client_id: Option<String>,
    client_secret: Option<String>,
}

fn default_client_name() -> String {
    "gwsync".into()
}

fn check_redirect_uris(uris: &[String]) -> Result<()> {
    if uris.is_empty() {
        return Err(bad("redirect_uris: give at least one"));
    }
    uris.iter().try_for_each(|u| crate::oidc::check_redirect_uri(u).map_err(bad))
}

/// The client as the Cloud console's "Download JSON" gives it, plus its fields at the top level.
fn client_json(shared: &Shared, c: &crate::oidc::OAuthClient) -> Value {
    json!({
        "client_id": c.client_id,
        "client_secret": c.client_secret,
        "name": c.name,
        "redirect_uris": c.redirect_uris,
        "created_at": c.created_at,
        "web": {
            "client_id": c.client_id,
            "project_id": c.project_id,
            "auth_uri": format!("{}/o/oauth2/v2/auth", shared.base_url),
            "token_uri": shared.token_uri(),
            "auth_provider_x509_cert_url": format!("{}/oauth2/v3/certs", shared.base_url),
            "client_secret": c.client_secret,
            "redirect_uris": c.redirect_uris,
        },
    })
}

async fn create_oauth_client(shared: web::Data<Shared>, body: web::Bytes) -> Result<HttpResponse> {
    let req: NewOAuthClient = parse(&body)?;
    check_redirect_uris(&req.redirect_uris)?;
    if req.name.trim().is_empty() {
        return Err(bad("name must not be empty"));
    }
    let mut client = crate::oidc::new_client(req.name.trim(), req.redirect_uris, shared.clock.now());
    if let Some(id) = req.client_id {
        crate::oidc::check_client_id(&id).map_err(bad)?;
        client.client_id = id;
    }
    if let Some(secret) = req.client_secret {
        crate::oidc::check_client_secret(&secret).map_err(bad)?;
        client.client_secret = secret;
    }
    let out = client_json(&shared, &client);
    let mut world = shared.world.lock();
    if world.oidc.clients.contains_key(&client.client_id) || world.oidc.deleted_clients.contains(&client.client_id) {
        return Err(conflict(format!("OAuth client {} exists or was deleted", client.client_id)));
    }
    world.oidc.clients.insert(client.client_id.clone(), client);
    Ok(HttpResponse::Created().json(out))
}

async fn list_oauth_clients(shared: web::Data<Shared>) -> HttpResponse {
    let world = shared.world.lock();
    let clients: Vec<Value> = world.oidc.clients.values().map(|c| client_json(&shared, c)).collect();
    HttpResponse::Ok().json(json!({ "clients": clients }))
}

async fn get_oauth_client(shared: web::Data<Shared>, path: web::Path<String>) -> Result<HttpResponse> {
    let world = shared.world.lock();
    let c = world.oidc.clients.get(path.as_str()).ok_or_else(|| not_found(format!("no OAuth client {path}")))?;
    Ok(HttpResponse::Ok().json(client_json(&shared, c)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OAuthClientChange {
    redirect_uris: Option<Vec<String>>,
    name: Option<String>,
}

async fn put_oauth_client(
    shared: web::Data<Shared>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse> {
    let change: OAuthClientChange = parse(&body)?;
    if let Some(uris) = &change.redirect_uris {
        check_redirect_uris(uris)?;
    }
    let mut world = shared.world.lock();
    let c = world.oidc.clients.get_mut(path.as_str()).ok_or_else(|| not_found(format!("no OAuth client {path}")))?;
    if let Some(uris) = change.redirect_uris {
        c.redirect_uris = uris;
    }
    if let Some(name) = change.name.filter(|n| !n.trim().is_empty()) {
        c.name = name.trim().to_owned();
    }
    let c = c.clone();
    Ok(HttpResponse::Ok().json(client_json(&shared, &c)))
}

async fn delete_oauth_client(shared: web::Data<Shared>, path: web::Path<String>) -> Result<HttpResponse> {
    let mut world = shared.world.lock();
    world.oidc.delete_client(path.as_str()).ok_or_else(|| not_found(format!("no OAuth client {path}")))?;
    world.access_tokens.retain(|_, t| t.client_id != *path || !t.client_email.is_empty());
    Ok(HttpResponse::NoContent().finish())
}

fn oidc_json(shared: &Shared) -> Value {
    let issuer = crate::oidc::issuer(shared);
    let world = shared.world.lock();
    json!({
        "issuer": issuer,
        "discovery": format!("{}/.well-known/openid-configuration", shared.base_url),
        "keys": world.oidc.keys.iter().map(|k| k.kid.clone()).collect::<Vec<_>>(),
        "signing_kid": world.oidc.keys.last().map(|k| k.kid.clone()),
        "code_lifetime_secs": world.oidc.code_lifetime_secs,
        "pending_codes": world.oidc.pending_codes(),
        "clients": world.oidc.clients.len(),
    })
}

async fn get_oidc(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().json(oidc_json(&shared))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OidcChange {
    /// The issuer to put into ID tokens and discovery; null goes back to the base URL.
    #[serde(default, with = "double_option")]
    issuer: Option<Option<String>>,
    /// How long a code can be exchanged, e.g. "10m".
    code_lifetime: Option<String>,
}

mod double_option {
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
        Option::<String>::deserialize(d).map(Some)
    }
}

async fn put_oidc(shared: web::Data<Shared>, body: web::Bytes) -> Result<HttpResponse> {
    let change: OidcChange = parse(&body)?;
    let lifetime = change
        .code_lifetime
        .map(|l| {
            humantime::parse_duration(&l)
                .map_err(|e| bad(format!("code_lifetime must be a duration such as 10m: {e}")))
                .and_then(|d| i64::try_from(d.as_secs()).map_err(|_| bad("code_lifetime is too long")))
        })
        .transpose()?;
    if let Some(Some(iss)) = &change.issuer
        && url::Url::parse(iss).is_err()
    {
        return Err(bad(format!("issuer '{iss}' is not an absolute URL")));
    }
    {
        let mut world = shared.world.lock();
        if let Some(iss) = change.issuer {
            world.oidc.issuer = iss.map(|i| i.trim_end_matches('/').to_owned());
        }
        if let Some(l) = lifetime {
            world.oidc.code_lifetime_secs = l;
        }
    }
    Ok(HttpResponse::Ok().json(oidc_json(&shared)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Rotate {
    #[serde(default = "yes")]
    keep_previous: bool,
}

async fn rotate_oidc_keys(shared: web::Data<Shared>, body: web::Bytes) -> Result<HttpResponse> {
    let req: Rotate = if body.is_empty() { Rotate { keep_previous: true } } else { parse(&body)? };
    let keys = crate::oidc::rotate_keys(&shared, req.keep_previous).await.map_err(|e| bad(e.to_string()))?;
    Ok(HttpResponse::Ok().json(json!({ "signing_kid": keys.last(), "keys": keys })))
}

async fn put_oidc_user(shared: web::Data<Shared>, path: web::Path<String>, body: web::Bytes) -> Result<HttpResponse> {
    let change: crate::oidc::ProfileOverride = parse(&body)?;
    let email = path.to_ascii_lowercase();
    let mut world = shared.world.lock();
    if !world.user_exists(&email) {
        return Err(not_found(format!("no user {email}")));
    }
    let sub = world.oidc.subject(&email);
    let entry = world.oidc.profiles.entry(email.clone()).or_default();
    macro_rules! merge {
        ($($f:ident),*) => { $( if change.$f.is_some() { entry.$f = change.$f.clone(); } )* };
    }
    merge!(email_verified, name, given_name, family_name, picture);
    let out = json!({ "email": email, "sub": sub, "profile": entry.clone() });
    Ok(HttpResponse::Ok().json(out))
}
