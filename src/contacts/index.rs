//! The in-memory phonebook of each tenant, for caller-ID lookups in well under a millisecond:
//! entries by E.164 number and by the last N digits, ranked directory person → shared contact
//! → personal contact; and search by name, company or number prefix.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use super::model::{Contact, Source};
use super::numbers::{self, Phone};

#[derive(Debug, Default)]
pub struct TenantBook {
    pub entries: Vec<Arc<Contact>>,
    by_e164: HashMap<String, Vec<usize>>,
    by_suffix: HashMap<String, Vec<usize>>,
    suffix_digits: usize,
}

/// A lookup or search hit.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    #[serde(flatten)]
    pub contact: Arc<Contact>,
    /// The number that matched (lookups).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<Phone>,
    /// `exact` or `last_digits` (lookups).
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub matched: Option<&'static str>,
}

fn sort_key(c: &Contact) -> (Source, String) {
    let source = match &c.source {
        // Rank only by kind, whoever owns it.
        Source::Personal { .. } => Source::Personal { owner: String::new() },
        s => s.clone(),
    };
    (source, c.name.clone().unwrap_or_default().to_lowercase())
}

impl TenantBook {
    pub fn build(mut contacts: Vec<Contact>, suffix_digits: usize) -> Self {
        contacts.sort_by_key(sort_key);
        let entries: Vec<Arc<Contact>> = contacts.into_iter().map(Arc::new).collect();
        let mut by_e164: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_suffix: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, c) in entries.iter().enumerate() {
            for p in &c.phones {
                let Some(e) = &p.e164 else { continue };
                let list = by_e164.entry(e.clone()).or_default();
                if list.last() != Some(&i) {
                    list.push(i);
                }
                let d = numbers::digits(e);
                if suffix_digits > 0 && d.len() >= suffix_digits {
                    let list = by_suffix.entry(d[d.len() - suffix_digits..].to_owned()).or_default();
                    if list.last() != Some(&i) {
                        list.push(i);
                    }
                }
            }
        }
        TenantBook { entries, by_e164, by_suffix, suffix_digits }
    }

    /// Everyone with `number` (any common written form, read in `region`): exact E.164 matches,
    /// else matches on the last digits; in rank order.
    pub fn lookup(&self, number: &str, region: &str) -> (Option<String>, Vec<Hit>) {
        let (e164, _) = numbers::normalise(number, region);
        let phone_of = |c: &Contact, f: &dyn Fn(&Phone) -> bool| c.phones.iter().find(|p| f(p)).cloned();
        if let Some(e) = &e164
            && let Some(ids) = self.by_e164.get(e)
        {
            let hits = ids
                .iter()
                .map(|&i| {
                    let c = self.entries[i].clone();
                    let phone = phone_of(&c, &|p| p.e164.as_deref() == Some(e.as_str()));
                    Hit { contact: c, phone, matched: Some("exact") }
                })
                .collect();
            return (e164, hits);
        }
        let d = numbers::digits(e164.as_deref().unwrap_or(number));
        if self.suffix_digits == 0 || d.len() < self.suffix_digits {
            return (e164, Vec::new());
        }
        let suffix = &d[d.len() - self.suffix_digits..];
        let hits = self
            .by_suffix
            .get(suffix)
            .map(|ids| {
                ids.iter()
                    .map(|&i| {
                        let c = self.entries[i].clone();
                        let phone =
                            phone_of(&c, &|p| p.e164.as_deref().is_some_and(|x| numbers::digits(x).ends_with(suffix)));
                        Hit { contact: c, phone, matched: Some("last_digits") }
                    })
                    .collect()
            })
            .unwrap_or_default();
        (e164, hits)
    }

    /// Entries whose name, company or number matches `q` (words of a name or company by
    /// prefix; a number by the prefix of its E.164 form or of its written digits), in rank
    /// order; `None` lists everyone.
    pub fn search(&self, q: Option<&str>, region: &str) -> Vec<Arc<Contact>> {
        let Some(q) = q.map(str::trim).filter(|q| !q.is_empty()) else { return self.entries.clone() };
        let looks_numeric =
            q.chars().all(|c| c.is_ascii_digit() || " +-()/.".contains(c)) && q.chars().any(|c| c.is_ascii_digit());
        if looks_numeric {
            let qd = numbers::digits(q);
            // A national prefix ("08…") becomes the international one ("+468…").
            let international = if q.trim_start().starts_with('+') || q.starts_with("00") {
                qd.trim_start_matches("00").to_owned()
            } else {
                match (qd.strip_prefix('0'), phonenumber::metadata::DATABASE.by_id(region).map(|m| m.country_code())) {
                    (Some(rest), Some(cc)) => format!("{cc}{rest}"),
                    _ => qd.clone(),
                }
            };
            return self
                .entries
                .iter()
                .filter(|c| {
                    c.phones.iter().any(|p| {
                        p.e164.as_deref().is_some_and(|e| numbers::digits(e).starts_with(&international))
                            || numbers::digits(&p.raw).starts_with(&qd)
                    })
                })
                .cloned()
                .collect();
        }
        let needles: Vec<String> = q.to_lowercase().split_whitespace().map(str::to_owned).collect();
        self.entries
            .iter()
            .filter(|c| {
                let hay: Vec<String> = [&c.name, &c.given_name, &c.family_name, &c.organization, &c.department]
                    .iter()
                    .filter_map(|x| x.as_deref())
                    .flat_map(|s| {
                        s.to_lowercase().split(|ch: char| !ch.is_alphanumeric()).map(str::to_owned).collect::<Vec<_>>()
                    })
                    .collect();
                needles.iter().all(|n| hay.iter().any(|w| w.starts_with(n.as_str())))
            })
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, source: Source, numbers: &[&str]) -> Contact {
        Contact {
            resource_name: format!("people/{name}"),
            source,
            name: Some(name.into()),
            given_name: None,
            family_name: None,
            organization: Some("Acme AB".into()),
            title: None,
            department: None,
            emails: vec![],
            phones: numbers
                .iter()
                .map(|n| {
                    let (e164, extension) = numbers::normalise(n, "SE");
                    Phone { raw: (*n).into(), e164, extension, kind: None, label: None }
                })
                .collect(),
        }
    }

    #[test]
    fn lookups_rank_and_fall_back_to_the_last_digits() {
        let book = TenantBook::build(
            vec![
                c("Per Personlig", Source::Personal { owner: "a@x".into() }, &["08-123 456 78"]),
                c("Anna Andersson", Source::Directory, &["+46 8 123 456 78"]),
                c("Växeln", Source::Shared, &["08-12345678", "070-111 22 33"]),
                c("Utland", Source::Shared, &["+47 22 12 34 56"]),
                c("Trasig", Source::Shared, &["ring receptionen"]),
            ],
            8,
        );
        let (e164, hits) = book.lookup("0812345678", "SE");
        assert_eq!(e164.as_deref(), Some("+46812345678"));
        let names: Vec<_> = hits.iter().map(|h| h.contact.name.clone().unwrap()).collect();
        assert_eq!(names, ["Anna Andersson", "Växeln", "Per Personlig"], "directory, shared, personal");
        assert!(hits.iter().all(|h| h.matched == Some("exact")));
        // A Norwegian caller seen without country code: the last eight digits still find it.
        let (_, hits) = book.lookup("22123456", "SE");
        assert_eq!(hits.iter().map(|h| h.contact.name.clone().unwrap()).collect::<Vec<_>>(), ["Utland"]);
        assert_eq!(hits[0].matched, Some("last_digits"));
        assert!(book.lookup("0709999999", "SE").1.is_empty());
        assert!(book.lookup("not a number", "SE").1.is_empty());
    }

    #[test]
    fn search_by_name_company_and_number_prefix() {
        let book = TenantBook::build(
            vec![
                c("Anna Andersson", Source::Directory, &["08-123 456 78"]),
                c("Bo Berg", Source::Shared, &["070-111 22 33"]),
            ],
            8,
        );
        let names = |v: Vec<Arc<Contact>>| v.iter().map(|c| c.name.clone().unwrap()).collect::<Vec<_>>();
        assert_eq!(names(book.search(Some("ann"), "SE")), ["Anna Andersson"]);
        assert_eq!(names(book.search(Some("acme"), "SE")), ["Anna Andersson", "Bo Berg"]);
        assert_eq!(names(book.search(Some("070"), "SE")), ["Bo Berg"]);
        assert_eq!(names(book.search(Some("+46 8 123"), "SE")), ["Anna Andersson"]);
        assert_eq!(book.search(None, "SE").len(), 2);
    }
}
