//! `gwsync diagnose`: walks a tenant's Google setup in the order a Workspace admin did it and
//! says, for each step, whether it works and what to change if not.
//!
//! Steps: the key → a token for each scope (delegation) → Calendar API enabled → People API
//! enabled → directory sharing → the user's calendar readable → the webhook address is https →
//! the phone system receiving switches.
//! A step that needs what an earlier one failed to give is skipped, not failed twice.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::app::{AppState, CredentialsError};
use crate::google::Scope;
use crate::google::error::ApiError;
use crate::google::error::DIRECTORY_SHARING_FIX;
use crate::model::tenant::TenantRecord;
use crate::presence::outbox::PhoneSystemHealth;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Passed,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    pub check: String,
    pub outcome: Outcome,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// A step of the server's set-up (the operator's to fix), not of the company's.
    #[serde(default)]
    pub operator: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub tenant: String,
    pub user: String,
    pub passed: bool,
    pub steps: Vec<Step>,
}

struct Steps(Vec<Step>);

impl Steps {
    fn pass(&mut self, check: impl Into<String>, detail: impl Into<String>) {
        self.0.push(Step {
            check: check.into(),
            outcome: Outcome::Passed,
            detail: detail.into(),
            fix: None,
            operator: false,
        });
    }
    fn fail(&mut self, check: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) {
        self.0.push(Step {
            check: check.into(),
            outcome: Outcome::Failed,
            detail: detail.into(),
            fix: Some(fix.into()),
            operator: false,
        });
    }
    fn skip(&mut self, check: impl Into<String>, why: impl Into<String>) {
        self.0.push(Step {
            check: check.into(),
            outcome: Outcome::Skipped,
            detail: why.into(),
            fix: None,
            operator: false,
        });
    }
    fn api_result(&mut self, check: &str, result: Result<String, ApiError>, on_forbidden: Option<&str>) {
        match result {
            Ok(detail) => self.pass(check, detail),
            Err(ApiError::Forbidden { message }) if on_forbidden.is_some() => {
                self.fail(check, format!("Google answered 403: {message}"), on_forbidden.unwrap_or_default())
            }
            Err(e) => self.fail(check, e.to_string(), e.hint()),
        }
    }
}

/// `phone`: how deliveries to the tenant's phone system are going (none: nothing sent yet).
pub async fn run(state: &AppState, tenant: &TenantRecord, user: &str, phone: Option<PhoneSystemHealth>) -> Report {
    let mut steps = Steps(Vec::new());
    let directory_user = tenant.directory_admin.clone().unwrap_or_else(|| user.to_owned());

    let account = match state.service_account(&tenant.id).await {
        Ok(a) => {
            steps.pass("Service-account key", format!("{} (client ID {})", a.info.client_email, a.info.client_id));
            Some(a)
        }
        Err(CredentialsError::Missing) => {
            steps.fail(
                "Service-account key",
                "no key uploaded",
                format!("Upload the service account's JSON key: gwsync tenant credentials {} key.json", tenant.id),
            );
            None
        }
        Err(e) => {
            steps.fail(
                "Service-account key",
                e.to_string(),
                "Upload the JSON key again, and check that GWSYNC_MASTER_KEY is the key it was stored with",
            );
            None
        }
    };

    let mut tokens: Vec<(Scope, Option<SecretString>)> = Vec::new();
    for scope in Scope::ALL {
        let subject = if scope == Scope::Directory { directory_user.as_str() } else { user };
        let check = format!("Domain-wide delegation: token for {subject} with {}", scope.url());
        let Some(account) = &account else {
            steps.skip(check, "needs the service-account key");
            tokens.push((scope, None));
            continue;
        };
        match state.tokens.fresh_token(account, subject, scope).await {
            Ok(t) => {
                steps.pass(check, "granted");
                tokens.push((scope, Some(t)));
            }
            Err(e) => {
                steps.fail(check, e.to_string(), e.hint());
                tokens.push((scope, None));
            }
        }
    }
    let token = |s: Scope| tokens.iter().find(|(x, _)| *x == s).and_then(|(_, t)| t.clone());
    let google = &state.google;

    match token(Scope::Calendar) {
        Some(t) => {
            let r = google
                .get("settings.get", google.calendar_url(&["users", "me", "settings", "timezone"]), &[], &t, user)
                .await;
            steps.api_result(
                "Google Calendar API enabled",
                r.map(|v| format!("calendar time zone {}", v["value"].as_str().unwrap_or("?"))),
                None,
            );
        }
        None => steps.skip("Google Calendar API enabled", "needs a Calendar token"),
    }
    match token(Scope::Contacts) {
        Some(t) => {
            let r = google
                .get(
                    "people.connections.list",
                    google.people_url("people/me/connections"),
                    &[("personFields", "names"), ("pageSize", "1")],
                    &t,
                    user,
                )
                .await;
            steps.api_result("People API enabled", r.map(|_| "contacts readable".to_owned()), None);
        }
        None => steps.skip("People API enabled", "needs a Contacts token"),
    }
    match token(Scope::Directory) {
        Some(t) => {
            let r = google
                .get(
                    "people.listDirectoryPeople",
                    google.people_url("people:listDirectoryPeople"),
                    &[("readMask", "names"), ("sources", "DIRECTORY_SOURCE_TYPE_DOMAIN_PROFILE"), ("pageSize", "1")],
                    &t,
                    &directory_user,
                )
                .await;
            steps.api_result(
                "Directory sharing",
                r.map(|_| format!("the directory is readable as {directory_user}")),
                Some(DIRECTORY_SHARING_FIX),
            );
        }
        None => steps.skip("Directory sharing", "needs a Directory token"),
    }
    match token(Scope::Calendar) {
        Some(t) => {
            let r = google
                .get(
                    "events.list",
                    google.calendar_url(&["calendars", "primary", "events"]),
                    &[("maxResults", "1")],
                    &t,
                    user,
                )
                .await;
            steps.api_result(&format!("Calendar of {user} readable"), r.map(|_| "events listed".to_owned()), None);
        }
        None => steps.skip(format!("Calendar of {user} readable"), "needs a Calendar token"),
    }
    let url = &state.public_url;
    if url.scheme() == "https" {
        steps.pass("Webhook address is HTTPS", format!("{url}webhooks/google/calendar"));
    } else {
        steps.fail(
            "Webhook address is HTTPS",
            format!("GWSYNC_PUBLIC_URL is {url}"),
            "Set GWSYNC_PUBLIC_URL to the https:// address of your reverse proxy: Google delivers notifications only over HTTPS with a valid certificate",
        );
    }
    if let Some(last) = steps.0.last_mut() {
        last.operator = true;
    }

    let check = "Phone system receives profile switches";
    match (&tenant.phone_system, phone) {
        (None, _) => steps.pass(check, "no phone system configured (phone_system.url): switches are not sent"),
        (Some(p), Some(h)) if h.state == "failing" => steps.fail(
            check,
            format!(
                "deliveries to {} fail since {}: {}",
                p.url,
                h.failing_since.map(|t| t.to_rfc3339()).unwrap_or_default(),
                h.last_error.unwrap_or_default()
            ),
            "Check that the phone system is up at that URL and answers gwsync's signed POSTs with 2xx; \
             gwsync keeps retrying and sends every user's current state once it answers",
        ),
        (Some(p), Some(h)) if h.state == "retrying" => steps.pass(
            check,
            format!("{}: recent deliveries failed ({}); retrying", p.url, h.last_error.unwrap_or_default()),
        ),
        (Some(p), Some(h)) => steps.pass(
            check,
            match h.last_delivered {
                Some(t) => format!("{}: last delivered {}", p.url, t.to_rfc3339()),
                None => format!("{}: nothing has failed", p.url),
            },
        ),
        (Some(p), None) => steps.pass(check, format!("{}: nothing has failed", p.url)),
    }

    let passed = steps.0.iter().all(|s| s.outcome == Outcome::Passed);
    Report { tenant: tenant.id.clone(), user: user.to_owned(), passed, steps: steps.0 }
}

impl Report {
    /// The report as the CLI prints it.
    pub fn render(&self) -> String {
        let mut out = format!("Diagnose tenant {} as {}\n", self.tenant, self.user);
        for s in &self.steps {
            let tag = match s.outcome {
                Outcome::Passed => "PASS",
                Outcome::Failed => "FAIL",
                Outcome::Skipped => "SKIP",
            };
            out.push_str(&format!("  {tag}  {}: {}\n", s.check, s.detail));
            if let Some(fix) = &s.fix {
                out.push_str(&format!("        fix: {fix}\n"));
            }
        }
        let failed = self.steps.iter().filter(|s| s.outcome == Outcome::Failed).count();
        out.push_str(&if failed == 0 {
            "All checks passed.\n".to_owned()
        } else {
            format!("{failed} check(s) failed.\n")
        });
        out
    }
}
