//! The browser harness itself (tests/common/browser.rs), against a tiny site on loopback that
//! sends the console's strict Content-Security-Policy: axe finds nothing on a good page and the
//! specific rules on a bad one, a form is filled and submitted, screenshots have the viewport's
//! size, cookie attributes read back, and no browser process outlives its `Browser`.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, middleware::DefaultHeaders, web};
use common::browser::{self, Browser, DESKTOP, PHONE};

/// The console's policy: no inline script or style, nothing from elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'";

const GOOD: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign up — harness</title>
<link rel="stylesheet" href="/style.css">
<script src="/app.js" defer></script>
</head>
<body>
<main>
<h1>Sign up</h1>
<p id="enhanced">Script from self: not run</p>
<p id="inline">Inline script: blocked</p>
<script>document.getElementById('inline').textContent = 'Inline script: RAN';</script>
<form method="post" action="/submit">
  <label for="name">Your name</label>
  <input id="name" name="name" autocomplete="name" required>
  <label>Email address <input name="email" type="email" autocomplete="email"></label>
  <label for="plan">Plan</label>
  <select id="plan" name="plan"><option>Basic</option><option>Pro</option></select>
  <label><input type="checkbox" name="news" value="yes"> Send me news</label>
  <button type="submit">Send</button>
  <button type="button">Cancel</button>
</form>
</main>
</body>
</html>"#;

/// Three WCAG failures: an input with no label, an image with no alt text, grey on white.
const BAD: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Broken — harness</title>
<link rel="stylesheet" href="/style.css">
</head>
<body>
<main>
<h1>Broken</h1>
<p class="faint">This text is hard to read.</p>
<img src="/logo.png">
<form><input name="q" type="text"><button type="submit">Search</button></form>
</main>
</body>
</html>"#;

const STYLE: &str = "body { font-family: sans-serif; margin: 1rem; color: #111; background: #fff; }
h1 { color: #1a4d8f; }
label, input, select, button { display: block; margin: .4rem 0; font-size: 1rem; }
button { background: #1a4d8f; color: #fff; border: 0; padding: .5rem 1rem; }
.faint { color: #c8c8c8; }
";

const APP_JS: &str = "document.getElementById('enhanced').textContent = 'Script from self: ran';";

/// Serves the site on a free loopback port; its base URL.
async fn site() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let html = |body: &'static str| {
        move || async move { HttpResponse::Ok().content_type("text/html; charset=utf-8").body(body) }
    };
    let server = HttpServer::new(move || {
        App::new()
            .wrap(DefaultHeaders::new().add(("Content-Security-Policy", CSP)))
            .route("/good", web::get().to(html(GOOD)))
            .route("/bad", web::get().to(html(BAD)))
            .route("/style.css", web::get().to(|| async { HttpResponse::Ok().content_type("text/css").body(STYLE) }))
            .route(
                "/app.js",
                web::get().to(|| async { HttpResponse::Ok().content_type("text/javascript").body(APP_JS) }),
            )
            .route("/submit", web::post().to(submit))
            .route("/start", web::get().to(start))
            .route("/callback", web::get().to(callback_redirect))
            .route("/callback-page", web::get().to(callback_page))
            .route("/whoami", web::get().to(whoami))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .expect("listen")
    .run();
    tokio::spawn(server);
    format!("http://{addr}")
}

/// The form's result page; sets a session cookie as the console will, and a looser one.
async fn submit(form: web::Form<std::collections::HashMap<String, String>>) -> HttpResponse {
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Thanks</title></head>\
         <body><main><h1>Thanks</h1><p id=\"result\">Signed up {} &lt;{}&gt; on {}, news: {}</p></main></body></html>",
        html_escape(&get("name")),
        html_escape(&get("email")),
        html_escape(&get("plan")),
        if get("news") == "yes" { "yes" } else { "no" },
    );
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .append_header(("Set-Cookie", "session=s3cr3t; Path=/; HttpOnly; Secure; SameSite=Strict"))
        .append_header(("Set-Cookie", "theme=dark; Path=/; SameSite=Lax"))
        .body(body)
}

fn page(title: &str, main: &str) -> HttpResponse {
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><main><h1>{title}</h1>{main}</main></body></html>"
    ))
}

/// Another site's page (an identity provider's) with a link back to `next`.
async fn start(q: web::Query<std::collections::HashMap<String, String>>) -> HttpResponse {
    let next = html_escape(q.get("next").map(String::as_str).unwrap_or("/"));
    page("Identity provider", &format!("<p><a href=\"{next}\">Continue to the app</a></p>"))
}

/// A sign-in callback that sets the session and redirects (303) to the app.
async fn callback_redirect() -> HttpResponse {
    HttpResponse::SeeOther()
        .append_header(("Set-Cookie", "sid=by-redirect; Path=/; HttpOnly; Secure; SameSite=Strict"))
        .append_header(("Location", "/whoami"))
        .finish()
}

/// A sign-in callback that sets the session and answers a page that moves on by itself.
async fn callback_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .append_header(("Set-Cookie", "sid2=by-page; Path=/; HttpOnly; Secure; SameSite=Strict"))
        .body(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta http-equiv=\"refresh\" content=\"0;url=/whoami\"><title>Signing in</title></head>\
             <body><main><p><a href=\"/whoami\">Continue</a></p></main></body></html>",
        )
}

/// The cookies the request carried.
async fn whoami(req: actix_web::HttpRequest) -> HttpResponse {
    let cookies = req.headers().get("cookie").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    page("Who am I", &format!("<p id=\"cookies\">Cookies: [{}]</p>", html_escape(&cookies)))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[tokio::test]
async fn axe_passes_the_good_page_and_names_the_rules_the_bad_page_breaks() {
    let base = site().await;
    let b = Browser::start().await;

    b.goto(&format!("{base}/good")).await;
    // The policy is in force: the page's own script runs, its inline script does not.
    b.wait_for_text("Script from self: ran").await;
    assert!(b.page_text().await.contains("Inline script: blocked"), "the CSP did not block the inline script");
    // …and axe runs under it all the same (it goes in through WebDriver, not a <script>).
    let good = b.axe_check().await;
    assert!(good.is_empty(), "violations on the good page: {good:#?}");
    b.assert_accessible("the good page").await;

    b.goto(&format!("{base}/bad")).await;
    let bad = b.axe_check().await;
    let ids: BTreeSet<&str> = bad.iter().map(|v| v.id.as_str()).collect();
    for rule in ["label", "image-alt", "color-contrast"] {
        assert!(ids.contains(rule), "axe missed {rule} on the bad page; it found: {bad:#?}");
    }
    // Each names the one element at fault.
    for (rule, culprit) in [("label", "input[name=q]"), ("image-alt", "img"), ("color-contrast", "p.faint")] {
        let v = bad.iter().find(|v| v.id == rule).expect("found above");
        assert_eq!(v.targets.len(), 1, "{v:?}");
        let same = b
            .client()
            .execute(
                "return document.querySelector(arguments[0]) === document.querySelector(arguments[1]);",
                vec![v.targets[0].clone().into(), culprit.into()],
            )
            .await
            .expect("comparing elements");
        assert_eq!(same, true, "{rule} points at {:?}, not {culprit}", v.targets);
    }
    assert!(bad.iter().all(|v| !v.help.is_empty() && v.help_url.starts_with("https://")), "{bad:#?}");

    // assert_accessible fails, and says what is wrong.
    let failure = tokio::spawn(async move {
        b.assert_accessible("the bad page").await;
    })
    .await
    .expect_err("assert_accessible passed the bad page");
    let message = failure.into_panic();
    let message = message.downcast_ref::<String>().expect("a panic message");
    for rule in ["label", "image-alt", "color-contrast", "the bad page"] {
        assert!(message.contains(rule), "{message}");
    }
}

#[tokio::test]
async fn a_form_is_filled_by_label_and_name_submitted_by_its_button_and_its_cookies_read_back() {
    let base = site().await;
    let b = Browser::start().await;
    b.goto(&format!("{base}/good")).await;
    assert_eq!(b.title().await, "Sign up — harness");

    b.fill("Your name", "Ada <Lovelace>").await;
    b.fill("Email address", "ada@example.test").await; // a label around its input
    b.fill("email", "ada@example.org").await; // by name, replacing what was typed
    assert_eq!(b.value_of("Email address").await, "ada@example.org");
    b.select("Plan", "Pro").await;
    b.set_checked("Send me news", true).await;
    b.click_button("Send").await;
    let page = b.wait_for_text("Signed up").await;
    assert!(page.contains("Signed up Ada <Lovelace> <ada@example.org> on Pro, news: yes"), "{page}");
    assert_eq!(b.text_of("#result").await, "Signed up Ada <Lovelace> <ada@example.org> on Pro, news: yes");

    let session = b.cookie("session").await.expect("the session cookie (Secure, over http://127.0.0.1)");
    assert_eq!(session.value, "s3cr3t");
    assert!(session.http_only && session.secure, "{session:?}");
    assert_eq!(session.same_site.as_deref(), Some("Strict"), "{session:?}");
    let theme = b.cookie("theme").await.expect("the theme cookie");
    assert!(!theme.http_only && !theme.secure, "{theme:?}");
    assert_eq!(theme.same_site.as_deref(), Some("Lax"), "{theme:?}");

    // A control that is not there fails with the labels the page has.
    let b2 = std::sync::Arc::new(b);
    let b3 = b2.clone();
    let err =
        tokio::spawn(async move { b3.fill("Phone number", "1").await }).await.expect_err("filled a missing field");
    let err = err.into_panic();
    let err = err.downcast_ref::<String>().expect("message");
    assert!(err.contains("Phone number") && err.contains("no control matches"), "{err}");
    // The same for a wait that times out: it shows the page.
    let b3 = b2.clone();
    let err = tokio::spawn(async move { b3.wait_for_text_within("never there", Duration::from_millis(300)).await })
        .await
        .expect_err("found text that is not there");
    let err = err.into_panic();
    let err = err.downcast_ref::<String>().expect("message");
    assert!(err.contains("never there") && err.contains("Signed up"), "{err}");
}

/// What the console's sign-in must allow for: Google's redirect back is a navigation from another
/// site, and a SameSite=Strict cookie set by the callback is then withheld from the redirect that
/// follows — the first page looks signed out. A page that moves on by itself (meta refresh) is a
/// same-site navigation, which carries it. fake-google on `localhost` and the app on `127.0.0.1`
/// are two sites, as Google and gwsync are; two ports of 127.0.0.1 are one site.
#[tokio::test]
async fn a_strict_cookie_set_at_the_end_of_a_cross_site_sign_in_is_withheld_from_its_redirect() {
    let base = site().await;
    let port = base.rsplit(':').next().expect("port");
    let other_site = format!("http://localhost:{port}");
    let b = Browser::start().await;

    b.goto(&format!("{other_site}/start?next={base}/callback")).await;
    b.click_link("Continue to the app").await;
    let arrived = b.wait_for_text("Cookies: [").await;
    assert!(b.current_url().await.starts_with(&format!("{base}/whoami")), "{}", b.current_url().await);
    assert!(!arrived.contains("sid=by-redirect"), "the Strict cookie came on the redirect: {arrived}");
    let sid = b.cookie("sid").await.expect("the cookie was stored all the same");
    assert!(sid.secure && sid.http_only && sid.same_site.as_deref() == Some("Strict"), "{sid:?}");
    b.goto(&format!("{base}/whoami")).await;
    assert!(b.wait_for_text("Cookies: [").await.contains("sid=by-redirect"), "nor on the next same-site load");

    b.goto(&format!("{other_site}/start?next={base}/callback-page")).await;
    b.click_link("Continue to the app").await;
    let arrived = b.wait_for_text("Cookies: [").await;
    assert!(arrived.contains("sid2=by-page"), "the page's refresh did not carry the Strict cookie: {arrived}");
}

#[tokio::test]
async fn screenshots_have_the_viewports_size_and_are_not_blank() {
    let base = site().await;
    let b = Browser::start().await;
    b.phone().await;
    b.goto(&format!("{base}/good")).await;
    b.wait_for_text("Script from self: ran").await;
    let phone = b.screenshot("harness-good-phone").await;
    let facts = browser::png_facts(&phone).expect("a PNG");
    assert_eq!((facts.width, facts.height), PHONE, "{facts:?}");
    assert!(facts.colours > 1);
    let saved = std::fs::read(browser::screenshot_dir().join("harness-good-phone.png")).expect("the saved file");
    assert_eq!(saved, phone);

    b.desktop().await;
    let desktop = b.screenshot("harness-good-desktop").await;
    let facts = browser::png_facts(&desktop).expect("a PNG");
    assert_eq!((facts.width, facts.height), DESKTOP, "{facts:?}");

    // The check itself: a flat image and a wrong size are refused.
    let mut flat = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut flat, 4, 3);
        enc.set_color(png::ColorType::Rgb);
        enc.write_header().expect("header").write_image_data(&[255; 36]).expect("data");
    }
    assert_eq!(browser::png_facts(&flat).expect("a PNG").colours, 1);
    assert!(std::panic::catch_unwind(|| browser::check_png(&flat, 4, 3)).is_err(), "a blank image passed");
    assert!(std::panic::catch_unwind(|| browser::check_png(&phone, 391, 844)).is_err(), "a wrong size passed");
    assert!(browser::png_facts(b"not a png").is_err());
    b.close().await;
}

#[tokio::test]
async fn no_browser_process_outlives_its_browser_even_when_the_test_panics() {
    let base = site().await;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let failed = tokio::spawn(async move {
        let b = Browser::start().await;
        b.goto(&format!("{base}/good")).await;
        let profile = b.temp_dir().to_string_lossy().into_owned();
        let running = browser::processes_mentioning(&profile);
        assert!(running.len() > 1, "Chromium is not running with its profile: {running:?}");
        // The crash handler leaves the process group; it goes when Chromium goes.
        assert!(running.iter().any(|p| p.contains("crashpad")), "no crash handler: {running:#?}");
        let _ = tx.send((profile, b.version()));
        panic!("a test fails with its browser open");
    })
    .await;
    assert!(failed.is_err(), "the task was to panic");
    let (profile, version) = rx.await.expect("the profile directory");
    eprintln!("browser: {version}");
    // Killed processes take a moment to go: poll.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = browser::processes_mentioning(&profile);
        if left.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "processes outlived the browser: {left:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!std::path::Path::new(&profile).exists(), "the profile directory {profile} was left behind");
}

#[test]
fn without_chromium_the_tests_fail_with_the_install_command() {
    let why = browser::missing(&["/nonexistent/chromium", browser::CHROMEDRIVER]).expect("reported missing");
    assert!(why.contains("/nonexistent/chromium"), "{why}");
    assert!(why.contains("apt-get update && apt-get install -y chromium chromium-driver"), "{why}");
    assert_eq!(browser::missing(&[]), None);
}
