//! Phone numbers of the phonebook: put into E.164 with the tenant's default region by
//! libphonenumber's rules (the `phonenumber` crate), extensions kept apart, the written form
//! kept as it was. Numbers that are not valid are kept and shown but not indexed.

use phonenumber::country::Id;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phone {
    /// As written in Google.
    pub raw: String,
    /// E.164, when the number is valid.
    pub e164: Option<String>,
    pub extension: Option<String>,
    /// Google's type (`mobile`, `work`, …) and its label.
    pub kind: Option<String>,
    pub label: Option<String>,
}

/// Reads a `00` international prefix as `+` (libphonenumber takes `+46 (0)8 …` as it is).
fn tidy(raw: &str) -> String {
    let s = raw.trim();
    match s.strip_prefix("00") {
        Some(rest) => format!("+{rest}"),
        None => s.to_owned(),
    }
}

/// E.164 and extension of `raw`, read in `region` unless it carries a country code.
pub fn normalise(raw: &str, region: &str) -> (Option<String>, Option<String>) {
    let id = region.parse::<Id>().ok();
    let Ok(number) = phonenumber::parse(id, tidy(raw)) else { return (None, None) };
    if !phonenumber::is_valid(&number) {
        return (None, None);
    }
    let e164 = number.format().mode(phonenumber::Mode::E164).to_string();
    let ext = number.extension().map(|e| e.to_string()).filter(|e| !e.is_empty());
    (Some(e164), ext)
}

/// The digits of a number as typed in a search box or sent by a phone system, for lookups
/// that accept partial or unusual forms.
pub fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swedish_numbers_written_every_common_way() {
        let cases = [
            // Stockholm fixed line
            ("08-123 456 78", Some("+46812345678")),
            ("08 123 456 78", Some("+46812345678")),
            ("08123 45678", Some("+46812345678")),
            ("0812345678", Some("+46812345678")),
            ("08/12345678", Some("+46812345678")),
            ("+46 8 123 456 78", Some("+46812345678")),
            ("+46 (0)8 123 456 78", Some("+46812345678")),
            ("+46812345678", Some("+46812345678")),
            ("0046812345678", Some("+46812345678")),
            ("+46-8-123 456 78", Some("+46812345678")),
            // Göteborg
            ("031-123 45 67", Some("+46311234567")),
            // mobile
            ("070-123 45 67", Some("+46701234567")),
            ("070 123 4567", Some("+46701234567")),
            ("+46 70 123 45 67", Some("+46701234567")),
            ("0701234567", Some("+46701234567")),
            // service number
            ("0771-123 456", Some("+46771123456")),
            // international written with their own country code
            ("+1 (650) 253-0000", Some("+16502530000")),
            ("+44 20 7946 0958", Some("+442079460958")),
            ("0049 30 1234567", Some("+49301234567")),
            // garbage
            ("12", None),
            ("call reception", None),
            ("", None),
            ("+46 8", None),
        ];
        for (raw, want) in cases {
            assert_eq!(normalise(raw, "SE").0.as_deref(), want, "{raw}");
        }
    }

    #[test]
    fn extensions_are_kept_apart() {
        let (e164, ext) = normalise("08-123 456 78 ext. 12", "SE");
        assert_eq!((e164.as_deref(), ext.as_deref()), (Some("+46812345678"), Some("12")));
        let (e164, ext) = normalise("+1 650 253 0000 x 42", "SE");
        assert_eq!((e164.as_deref(), ext.as_deref()), (Some("+16502530000"), Some("42")));
    }

    #[test]
    fn the_region_decides_national_numbers() {
        assert_eq!(normalise("(650) 253-0000", "US").0.as_deref(), Some("+16502530000"));
        assert_eq!(normalise("030 1234567", "DE").0.as_deref(), Some("+49301234567"));
    }
}
