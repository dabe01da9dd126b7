//! The phonebook at scale: 100,000 directory entries at fake Google. Reports the full sync's
//! time and Google calls (paced under People's per-user read quota, 1,000 entries per page), an
//! incremental sync after 100 changes, caller-ID lookups (index and HTTP, p50/p99) and the
//! memory of the index.
//!
//!     cargo bench --bench contacts

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Bench, ms, percentile};

const ENTRIES: usize = 100_000;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()).unwrap_or(0) * 4096
}

fn number(i: usize) -> String {
    // Stockholm numbers 08-1xx xxx xx, written the way people write them.
    format!("08-{} {:03} {:02}", 100 + i / 100_000 % 900, i / 100 % 1000, i % 100)
}

#[tokio::main]
async fn main() {
    gwsync::logging::init_with_default(gwsync::config::LogFormat::Plain, "warn");
    let bench = Bench::start(1).await;
    bench
        .admin("PUT", "/api/v1/tenants/bench", Some(json!({"domain": "bench.test", "directory_admin": bench.users[0]})))
        .await;
    let fake = bench.fake.base_url();
    for chunk in 0..ENTRIES / 10_000 {
        let people: Vec<Value> = (chunk * 10_000..(chunk + 1) * 10_000)
            .map(|i| {
                json!({
                    "names": [{"givenName": format!("Kund{i}"), "familyName": "Testsson"}],
                    "organizations": [{"name": format!("Företag {}", i % 500)}],
                    "phoneNumbers": [{"value": number(i), "type": "work"}],
                })
            })
            .collect();
        let r = bench
            .http
            .post(format!("{fake}/_fake/directory/bench.test/people"))
            .json(&people)
            .send()
            .await
            .expect("bulk");
        assert!(r.status().is_success(), "{}", r.status());
    }
    let calls = |v: Value| v["requests"].as_array().map_or(0, Vec::len);
    let before = calls(bench.fake("GET", "/_fake/requests?method=people.people.listDirectoryPeople", None).await);

    let started = Instant::now();
    let full = bench.admin_job("POST", "/api/v1/tenants/bench/contacts/sync").await;
    let full_time = started.elapsed();
    let after_full = calls(bench.fake("GET", "/_fake/requests?method=people.people.listDirectoryPeople", None).await);

    // 100 changes: 50 numbers changed, 50 entries deleted.
    let listed = bench.fake("GET", "/_fake/directory/bench.test/people", None).await;
    let ids: Vec<String> = listed["people"]
        .as_array()
        .expect("people")
        .iter()
        .filter_map(|p| p["resourceName"].as_str())
        .take(100)
        .map(|r| r.trim_start_matches("people/").to_owned())
        .collect();
    for (k, id) in ids.iter().enumerate() {
        if k < 50 {
            bench.http.put(format!("{fake}/_fake/directory/bench.test/people/{id}")).json(&json!({"names": [{"givenName": "Ändrad"}], "phoneNumbers": [{"value": format!("070-{k:03} 00 00")}]})).send().await.expect("change");
        } else {
            bench.http.delete(format!("{fake}/_fake/directory/bench.test/people/{id}")).send().await.expect("delete");
        }
    }
    let started = Instant::now();
    let incremental = bench.admin_job("POST", "/api/v1/tenants/bench/contacts/sync").await;
    let incremental_time = started.elapsed();
    let after_incremental =
        calls(bench.fake("GET", "/_fake/requests?method=people.people.listDirectoryPeople", None).await);

    // Lookups over HTTP, as a phone system would make them.
    let mut http_times = Vec::with_capacity(2000);
    let mut found = 0;
    for k in 0..2000 {
        let n = number((k * 4_999) % ENTRIES).replace([' ', '-'], "");
        let t = Instant::now();
        let v: Value = bench
            .http
            .get(format!("{}/api/v1/tenants/bench/contacts/lookup?number={n}", bench.gwsync))
            .bearer_auth(support::ADMIN)
            .send()
            .await
            .expect("lookup")
            .json()
            .await
            .expect("json");
        http_times.push(t.elapsed());
        // A few of the numbers were changed or deleted above.
        found += usize::from(v["matches"].as_array().is_some_and(|m| !m.is_empty()));
    }
    http_times.sort();

    // The index alone, and its memory, built from the same entries as the service holds them.
    let entries: Vec<gwsync::contacts::model::Contact> = (0..ENTRIES)
        .map(|i| {
            let raw = number(i);
            let (e164, extension) = gwsync::contacts::numbers::normalise(&raw, "SE");
            gwsync::contacts::model::Contact {
                resource_name: format!("people/c{i}"),
                source: gwsync::contacts::model::Source::Shared,
                name: Some(format!("Kund{i} Testsson")),
                given_name: Some(format!("Kund{i}")),
                family_name: Some("Testsson".into()),
                organization: Some(format!("Företag {}", i % 500)),
                title: None,
                department: None,
                emails: vec![],
                phones: vec![gwsync::contacts::numbers::Phone {
                    raw,
                    e164,
                    extension,
                    kind: Some("work".into()),
                    label: Some("Work".into()),
                }],
            }
        })
        .collect();
    let rss_before = rss_bytes();
    let index = gwsync::contacts::index::TenantBook::build(entries, 8);
    let rss_after = rss_bytes();
    let mut index_times = Vec::with_capacity(100_000);
    for k in 0..100_000 {
        let n = number((k * 7_919) % ENTRIES);
        let t = Instant::now();
        let (_, hits) = index.lookup(&n, "SE");
        index_times.push(t.elapsed());
        assert!(!hits.is_empty());
    }
    index_times.sort();

    println!("phonebook of {ENTRIES} directory entries (+ the domain's profiles):");
    println!(
        "  full sync: {:.1} s, {} listDirectoryPeople calls (1,000 per page, paced under People's 60 reads/min/user), {} entries",
        full_time.as_secs_f64(),
        after_full - before,
        full["entries"]
    );
    println!(
        "  incremental sync after 100 changes: {}, {} call(s), {} changes applied",
        ms(incremental_time),
        after_incremental - after_full,
        incremental["books"][0]["changes"]
    );
    println!(
        "  lookup, index only: p50 {:.1} µs, p99 {:.1} µs (target p99 < 1 ms)",
        micros(percentile(&index_times, 50.0)),
        micros(percentile(&index_times, 99.0))
    );
    println!(
        "  lookup over HTTP (admin API on loopback): p50 {}, p99 {} ({found} of {} numbers found; some were changed or deleted)",
        ms(percentile(&http_times, 50.0)),
        ms(percentile(&http_times, 99.0)),
        http_times.len()
    );
    println!(
        "  index memory: {:.1} MiB ({:.0} bytes per entry)",
        (rss_after.saturating_sub(rss_before)) as f64 / 1048576.0,
        (rss_after.saturating_sub(rss_before)) as f64 / ENTRIES as f64
    );
    bench.stop().await;
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
