//! The two People listings. They share one engine: validate the mask and sources, open the
//! page or sync token, list the visible persons in a stable order, and end the last page with a
//! sync token if one was requested.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Duration};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::model::{PERSON_FIELDS, PeopleBook, Person, SourceKind, Version};
use crate::auth::{Caller, authorize};
use crate::errors::{GoogleError, error_info};
use crate::params::{Api, Params, STANDARD};
use crate::quota::Bucket;
use crate::world::{Shared, World};

type Result<T> = std::result::Result<T, GoogleError>;

/// People sync tokens die this long after the full sync that began their chain.
const SYNC_TOKEN_LIFETIME_DAYS: i64 = 7;

#[derive(Serialize, Deserialize)]
struct SyncToken {
    /// Which book: `dir:<domain>` or `con:<user>`.
    b: String,
    s: u64,
    e: u32,
    f: String,
    /// When the chain's full sync happened (fake ms).
    t0: i64,
}

#[derive(Serialize, Deserialize)]
struct PageToken {
    b: String,
    f: String,
    snap: u64,
    after: Option<(String, String)>,
    /// The sync token's position when paging an incremental result.
    base: Option<u64>,
    t0: i64,
    short: bool,
}

#[derive(Clone, Copy)]
enum Sort {
    LastModifiedAsc,
    LastModifiedDesc,
    FirstName,
    LastName,
}

struct Spec {
    book: String,
    mask: Vec<String>,
    kinds: Vec<SourceKind>,
    sort: Sort,
    page_size: usize,
    items_key: &'static str,
    with_totals: bool,
}

fn bad(message: &str) -> GoogleError {
    GoogleError::rpc_invalid_argument(message)
}

fn parse_mask(params: &Params, name: &str, doc: &str) -> Result<Vec<String>> {
    let mask = params.all(name);
    if mask.is_empty() {
        return Err(bad(&format!(
            "{name} mask is required. Please specify one or more valid paths. Valid paths are documented at {doc}."
        )));
    }
    for f in &mask {
        if !PERSON_FIELDS.contains(&f.as_str()) {
            return Err(bad(&format!("Invalid {name} mask path: \"{f}\". Valid paths are documented at {doc}.")));
        }
    }
    Ok(mask)
}

fn parse_page_size(params: &Params) -> Result<usize> {
    match params.int(Api::People, "pageSize")? {
        None | Some(0) => Ok(100),
        Some(n) if (1..=1000).contains(&n) => Ok(n as usize),
        Some(n) => Err(bad(&format!("Invalid pageSize {n}: must be between 1 and 1000."))),
    }
}

pub async fn list_connections(
    shared: web::Data<Shared>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse> {
    let caller = authorize(&shared, &req, "people.people.connections.list").await?;
    if path.as_str() != "me" {
        return Err(bad("Must be a valid resource name: only people/me has connections."));
    }
    let params = Params::parse(req.query_string());
    let doc = "https://developers.google.com/people/api/rest/v1/people.connections/list";
    let mask = parse_mask(&params, "personFields", doc)?;
    let mut kinds = Vec::new();
    let sources = params.all("sources");
    for s in &sources {
        match s.as_str() {
            "READ_SOURCE_TYPE_CONTACT" => kinds.push(SourceKind::Contact),
            "READ_SOURCE_TYPE_PROFILE" | "READ_SOURCE_TYPE_DOMAIN_CONTACT" | "READ_SOURCE_TYPE_OTHER_CONTACT" => {}
            other => {
                return Err(bad(&format!(
                    "Invalid value at 'sources' (type.googleapis.com/google.people.v1.ReadSourceType), \"{other}\""
                )));
            }
        }
    }
    if sources.is_empty() {
        kinds.push(SourceKind::Contact);
    }
    let sort = match params.get("sortOrder") {
        None | Some("LAST_MODIFIED_ASCENDING") => Sort::LastModifiedAsc,
        Some("LAST_MODIFIED_DESCENDING") => Sort::LastModifiedDesc,
        Some("FIRST_NAME_ASCENDING") => Sort::FirstName,
        Some("LAST_NAME_ASCENDING") => Sort::LastName,
        Some(other) => {
            return Err(bad(&format!(
                "Invalid value at 'sort_order' (type.googleapis.com/google.people.v1.ListConnectionsRequest.SortOrder), \"{other}\""
            )));
        }
    };
    let spec = Spec {
        book: format!("con:{}", caller.user),
        mask,
        kinds,
        sort,
        page_size: parse_page_size(&params)?,
        items_key: "connections",
        with_totals: true,
    };
    run(&shared, &caller, &params, spec)
}

pub async fn list_directory_people(shared: web::Data<Shared>, req: HttpRequest) -> Result<HttpResponse> {
    let caller = authorize(&shared, &req, "people.people.listDirectoryPeople").await?;
    let params = Params::parse(req.query_string());
    let doc = "https://developers.google.com/people/api/rest/v1/people/listDirectoryPeople";
    let mask = parse_mask(&params, "readMask", doc)?;
    let sources = params.all("sources");
    if sources.is_empty() {
        return Err(bad(
            "sources is required: specify DIRECTORY_SOURCE_TYPE_DOMAIN_PROFILE and/or DIRECTORY_SOURCE_TYPE_DOMAIN_CONTACT.",
        ));
    }
    let mut kinds = Vec::new();
    for s in &sources {
        match s.as_str() {
            "DIRECTORY_SOURCE_TYPE_DOMAIN_PROFILE" => kinds.push(SourceKind::DomainProfile),
            "DIRECTORY_SOURCE_TYPE_DOMAIN_CONTACT" => kinds.push(SourceKind::DomainContact),
            other => {
                return Err(bad(&format!(
                    "Invalid value at 'sources' (type.googleapis.com/google.people.v1.DirectorySourceType), \"{other}\""
                )));
            }
        }
    }
    for m in params.all("mergeSources") {
        if m != "DIRECTORY_MERGE_SOURCE_TYPE_CONTACT" {
            return Err(bad(&format!(
                "Invalid value at 'merge_sources' (type.googleapis.com/google.people.v1.DirectoryMergeSourceType), \"{m}\""
            )));
        }
    }
    let domain = {
        let world = shared.world.lock();
        let Some(domain) = world.domain_for_user(&caller.user).filter(|d| d.users.contains(&caller.user)) else {
            return Err(GoogleError::rpc_with_status(
                400,
                "FAILED_PRECONDITION",
                "Must be a G Suite domain user.",
                vec![],
            ));
        };
        if !domain.directory_sharing {
            return Err(GoogleError::rpc(403, "The caller does not have permission", vec![]));
        }
        domain.domain.clone()
    };
    let spec = Spec {
        book: format!("dir:{domain}"),
        mask,
        kinds,
        sort: Sort::LastModifiedAsc,
        page_size: parse_page_size(&params)?,
        items_key: "people",
        with_totals: false,
    };
    run(&shared, &caller, &params, spec)
}

fn book_mut<'w>(world: &'w mut World, key: &str) -> &'w mut PeopleBook {
    let region_of = |world: &World, user_or_domain: &str| {
        world
            .domains
            .get(user_or_domain)
            .or_else(|| world.domain_for_user(user_or_domain))
            .map(|d| d.region.clone())
            .unwrap_or_else(|| "US".into())
    };
    match key.split_once(':') {
        Some(("dir", domain)) => {
            let region = region_of(world, domain);
            world.directory.entry(domain.to_owned()).or_insert_with(|| PeopleBook::new(&region))
        }
        Some((_, user)) => {
            let region = region_of(world, user);
            world.contacts.entry(user.to_owned()).or_insert_with(|| PeopleBook::new(&region))
        }
        None => unreachable!("book keys are built with a prefix above"),
    }
}

fn expired_sync_token() -> GoogleError {
    GoogleError::rpc_with_status(
        400,
        "FAILED_PRECONDITION",
        "Sync token is expired. Clear local cache and retry call without the sync token.",
        vec![error_info("EXPIRED_SYNC_TOKEN", "people.googleapis.com", Value::Null)],
    )
}

fn run(shared: &Shared, caller: &Caller, params: &Params, spec: Spec) -> Result<HttpResponse> {
    let now = shared.clock.now();
    let sync_fp = params.fingerprint(&[&["pageToken", "syncToken", "pageSize"], STANDARD].concat());
    let page_fp = params.fingerprint(&[&["pageToken"], STANDARD].concat());
    let request_sync_token = params.bool(Api::People, "requestSyncToken")?.unwrap_or(false);
    let codec = &shared.tokens;

    let mut world = shared.world.lock();
    let page: Option<PageToken> = match params.get("pageToken") {
        None => None,
        Some(raw) => Some(
            codec
                .open("people-page", raw)
                .filter(|p: &PageToken| p.b == spec.book && p.f == page_fp)
                .ok_or_else(|| bad("Page token is invalid, or was issued for a request with other parameters."))?,
        ),
    };
    let sync: Option<SyncToken> = match params.get("syncToken") {
        None => None,
        Some(raw) => {
            let tok: SyncToken = codec
                .open("people-sync", raw)
                .filter(|t: &SyncToken| t.b == spec.book)
                .ok_or_else(|| bad("Sync token is invalid."))?;
            Some(tok)
        }
    };
    // The first page of a full sync draws on a small fixed quota of its own.
    if sync.is_none()
        && page.is_none()
        && !world.quota.admit(Bucket::PeopleFullSync, &caller.user, now.timestamp_millis())
    {
        return Err(GoogleError::rpc(
            429,
            "Quota exceeded for quota metric 'Full sync requests' and limit 'Full sync requests per minute per user' of service 'people.googleapis.com'.",
            vec![error_info("RATE_LIMIT_EXCEEDED", "googleapis.com", json!({"service": "people.googleapis.com"}))],
        ));
    }
    let world_short_pages = world.behaviour.short_pages;
    let book = book_mut(&mut world, &spec.book);
    if let Some(tok) = &sync {
        let age = now - DateTime::from_timestamp_millis(tok.t0).unwrap_or(now);
        if tok.e != book.epoch || age > Duration::days(SYNC_TOKEN_LIFETIME_DAYS) {
            return Err(expired_sync_token());
        }
        if tok.f != sync_fp {
            return Err(bad("Parameters provided with a sync token must match the request that produced it."));
        }
    }
    let watermark = book.watermark(now);
    let snapshot = page.as_ref().map(|p| p.snap).unwrap_or(watermark);
    let base = page.as_ref().map(|p| p.base).unwrap_or(sync.as_ref().map(|t| t.s));
    let chain_start = page.as_ref().map(|p| p.t0).or(sync.as_ref().map(|t| t.t0)).unwrap_or(now.timestamp_millis());

    // Sort keys of every candidate, but only the page's people rendered: a directory of
    // 100,000 is listed in 100 pages, and rendering all of them for each page would make the
    // fake, not the client, the slow part of a benchmark.
    let after = page.as_ref().and_then(|p| p.after.as_ref());
    let mut candidates: Vec<((String, String), &Person, &Version)> = Vec::new();
    let mut total = 0usize;
    for person in book.people.values() {
        if !spec.kinds.contains(&person.kind) {
            continue;
        }
        let Some(v) = person.visible(now) else { continue };
        match base {
            Some(s) if v.seq <= s => continue,
            Some(_) => {}
            None if v.deleted => continue,
            None => {}
        }
        total += 1;
        let key = sort_key(spec.sort, person.id.as_str(), v.seq, &v.data);
        if after.is_none_or(|a| key > *a) {
            candidates.push((key, person, v));
        }
    }
    candidates.sort_by(|a, b| a.0.cmp(&b.0));
    let short_now = world_short_pages && !page.as_ref().is_some_and(|p| p.short) && !candidates.is_empty();
    let take = if short_now { 0 } else { spec.page_size };
    let more = candidates.len() > take;
    let last_key = if take == 0 {
        page.as_ref().and_then(|p| p.after.clone())
    } else {
        candidates.get(take.saturating_sub(1)).map(|(k, _, _)| k.clone())
    };
    let items: Vec<Value> = candidates.iter().take(take).map(|(_, person, v)| person.render(v, &spec.mask)).collect();
    let epoch = book.epoch;
    drop(candidates);
    drop(world);

    let mut body = Map::new();
    if !items.is_empty() {
        body.insert(spec.items_key.into(), Value::Array(items));
    }
    if more {
        let token = PageToken {
            b: spec.book.clone(),
            f: page_fp,
            snap: snapshot,
            after: last_key,
            base,
            t0: chain_start,
            short: page.as_ref().is_some_and(|p| p.short) || short_now,
        };
        body.insert("nextPageToken".into(), json!(codec.seal("people-page", &token)));
    } else if request_sync_token {
        let token = SyncToken { b: spec.book.clone(), s: snapshot, e: epoch, f: sync_fp, t0: chain_start };
        body.insert("nextSyncToken".into(), json!(codec.seal("people-sync", &token)));
    }
    if spec.with_totals && total > 0 {
        body.insert("totalPeople".into(), json!(total));
        body.insert("totalItems".into(), json!(total));
    }
    Ok(HttpResponse::Ok().json(Value::Object(body)))
}

fn sort_key(sort: Sort, id: &str, seq: u64, data: &Map<String, Value>) -> (String, String) {
    let name = |field: &str| {
        data.get("names")
            .and_then(|n| n.get(0))
            .and_then(|n| n.get(field))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_lowercase()
    };
    let primary = match sort {
        Sort::LastModifiedAsc => format!("{seq:020}"),
        Sort::LastModifiedDesc => format!("{:020}", u64::MAX - seq),
        Sort::FirstName => name("givenName"),
        Sort::LastName => name("familyName"),
    };
    (primary, id.to_owned())
}
