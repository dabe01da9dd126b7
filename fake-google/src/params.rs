//! Query-string access with Google's rules: repeated parameters, strict booleans and integers,
//! and the error each API returns for a malformed value.

use crate::errors::GoogleError;

/// Which envelope a parameter error is reported in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Calendar,
    People,
}

#[derive(Debug, Clone, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    pub fn parse(query: &str) -> Self {
        Params {
            pairs: form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn has(&self, name: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == name)
    }

    /// Every value of a repeatable parameter, also accepting comma-separated lists.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned))
            .collect()
    }

    pub fn bool(&self, api: Api, name: &str) -> Result<Option<bool>, GoogleError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(invalid(
                api,
                name,
                &format!("Invalid value '{v}'. Values must match the following regular expression: 'true|false'"),
            )),
        }
    }

    pub fn int(&self, api: Api, name: &str) -> Result<Option<i64>, GoogleError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
                invalid(api, name, &format!("Invalid value '{v}' for parameter '{name}'. Expected an integer."))
            }),
        }
    }

    /// A canonical text of every parameter except those named, sorted, so that a page or sync
    /// token can insist on being replayed with the same request.
    pub fn fingerprint(&self, except: &[&str]) -> String {
        let mut kept: Vec<String> =
            self.pairs.iter().filter(|(k, _)| !except.contains(&k.as_str())).map(|(k, v)| format!("{k}={v}")).collect();
        kept.sort();
        kept.join("&")
    }
}

pub fn invalid(api: Api, name: &str, message: &str) -> GoogleError {
    match api {
        Api::Calendar => GoogleError::calendar_invalid_param(name, message),
        Api::People => GoogleError::rpc_invalid_argument(message),
    }
}

/// Parameters that every Google API accepts and that change nothing here.
pub const STANDARD: &[&str] = &[
    "alt",
    "prettyPrint",
    "fields",
    "quotaUser",
    "userIp",
    "key",
    "oauth_token",
    "access_token",
    "$.xgafv",
    "callback",
    "upload_protocol",
    "uploadType",
];
