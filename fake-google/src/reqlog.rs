//! `GET /_fake/requests`: every request the fake received, for tests to assert on (how many
//! `events.list` calls did that burst of notifications cost?). Bounded, oldest dropped first.

use std::collections::VecDeque;

use serde::Serialize;

const CAPACITY: usize = 200_000;

/// Which API method a request was (a discovery id such as `calendar.events.list`, or
/// `oauth2.token`, or `control`) and on whose behalf. Handlers put it into the request's
/// extensions; the logging middleware reads it back after the response.
#[derive(Debug, Clone, Default)]
pub struct ApiCall {
    pub method: &'static str,
    pub user: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    pub seq: u64,
    pub time: String,
    pub fake_time: String,
    pub http_method: String,
    pub path: String,
    pub query: String,
    pub method: Option<String>,
    pub user: Option<String>,
    pub status: u16,
}

#[derive(Debug, Default)]
pub struct RequestLog {
    next_seq: u64,
    records: VecDeque<RequestRecord>,
    /// Counts since the last clear, however many records the log still holds.
    pub by_method: std::collections::BTreeMap<String, u64>,
    pub by_status: std::collections::BTreeMap<u16, u64>,
}

impl RequestLog {
    pub fn push(&mut self, mut record: RequestRecord) {
        if let Some(m) = record.method.as_deref().filter(|m| *m != "control") {
            *self.by_method.entry(m.to_owned()).or_default() += 1;
            *self.by_status.entry(record.status).or_default() += 1;
        }
        self.next_seq += 1;
        record.seq = self.next_seq;
        if self.records.len() == CAPACITY {
            self.records.pop_front();
        }
        self.records.push_back(record);
    }

    /// Records after `since`, optionally only of one API method and/or user.
    pub fn query(&self, since: u64, method: Option<&str>, user: Option<&str>) -> Vec<RequestRecord> {
        self.records
            .iter()
            .filter(|r| r.seq > since)
            .filter(|r| method.is_none_or(|m| r.method.as_deref() == Some(m)))
            .filter(|r| user.is_none_or(|u| r.user.as_deref() == Some(u)))
            .cloned()
            .collect()
    }

    pub fn last_seq(&self) -> u64 {
        self.next_seq
    }

    pub fn clear(&mut self) {
        self.records.clear();
        self.by_method.clear();
        self.by_status.clear();
    }
}
