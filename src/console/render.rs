//! Pages from templates (minijinja, HTML auto-escaped; the templates and assets are compiled
//! into the binary, so `cargo run` serves the console with no front-end build), and the headers
//! every console answer carries: a strict Content-Security-Policy (scripts and styles only from
//! the console's own files, no inline code, forms only to itself, no framing), no caching, no
//! referrer to other sites (the sign-in callback's URL holds a code).

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, HttpResponseBuilder};
use minijinja::Environment;
use serde::Serialize;

pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("templates/layout.html")),
    ("signin.html", include_str!("templates/signin.html")),
    ("home.html", include_str!("templates/home.html")),
    ("setup.html", include_str!("templates/setup.html")),
    ("users.html", include_str!("templates/users.html")),
    ("profiles.html", include_str!("templates/profiles.html")),
    ("phone.html", include_str!("templates/phone.html")),
    ("phonebook.html", include_str!("templates/phonebook.html")),
    ("audit.html", include_str!("templates/audit.html")),
    ("message.html", include_str!("templates/message.html")),
];

pub const ASSETS: &[(&str, &str, &str)] = &[
    ("console.css", "text/css; charset=utf-8", include_str!("assets/console.css")),
    ("console.js", "text/javascript; charset=utf-8", include_str!("assets/console.js")),
];

pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    pub fn new() -> Result<Templates, String> {
        let mut env = Environment::new();
        env.add_filter("when", when);
        // A missing value (JSON null) prints as nothing, not as "none".
        env.set_formatter(
            |out, state, value| {
                if value.is_none() { Ok(()) } else { minijinja::escape_formatter(out, state, value) }
            },
        );
        for (name, source) in TEMPLATES {
            env.add_template(name, source).map_err(|e| format!("console template {name}: {e}"))?;
        }
        Ok(Templates { env })
    }

    pub fn render<S: Serialize>(&self, status: StatusCode, name: &str, ctx: S) -> HttpResponse {
        let html = self.env.get_template(name).and_then(|t| t.render(minijinja::value::Serde(&ctx)));
        match html {
            Ok(body) => with_headers(HttpResponse::build(status)).content_type("text/html; charset=utf-8").body(body),
            Err(e) => {
                tracing::error!(error = %e, template = name, "a console page could not be rendered");
                with_headers(HttpResponse::InternalServerError())
                    .content_type("text/plain; charset=utf-8")
                    .body("this page could not be shown; see the server log")
            }
        }
    }
}

/// An RFC 3339 time as people read it: `2026-12-02 11:00 UTC` (anything else as it is).
fn when(value: String) -> String {
    match chrono::DateTime::parse_from_rfc3339(&value) {
        Ok(t) => t.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M UTC").to_string(),
        Err(_) => value,
    }
}

/// The console's headers on any answer.
pub fn with_headers(mut b: HttpResponseBuilder) -> HttpResponseBuilder {
    b.insert_header((header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)))
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .insert_header((header::REFERRER_POLICY, HeaderValue::from_static("same-origin")))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .insert_header((header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")));
    b
}

/// 303 to `location` (after a form: the browser then GETs it).
pub fn see_other(location: &str) -> HttpResponse {
    with_headers(HttpResponse::SeeOther()).insert_header((header::LOCATION, location.to_owned())).finish()
}

pub fn asset(name: &str) -> HttpResponse {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, mime, body)) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, *mime))
            .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
            .body(*body),
        None => HttpResponse::NotFound().content_type("text/plain; charset=utf-8").body("no such file"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_template_compiles() {
        super::Templates::new().expect("templates compile");
    }
}
