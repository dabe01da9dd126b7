//! A real browser for the console tests: Debian's headless Chromium, driven over W3C WebDriver
//! by `fantoccini` through Debian's `chromedriver`.
//!
//! `Browser::start()` runs chromedriver on a free loopback port under a small shell watchdog in a
//! process group of its own (chromedriver and every Chromium process it starts are in that
//! group). The watchdog's stdin is a pipe from the test process: when the `Browser` is dropped —
//! also while a failing test unwinds — or the test binary dies however it dies, the pipe closes
//! and the watchdog kills the whole group. Each browser gets a fresh temporary profile.
//!
//! Without /usr/bin/chromium or /usr/bin/chromedriver the tests fail with the install command;
//! they never skip.
//!
//! The helpers wait by polling the page (`wait_for_text`), never by sleeping a fixed time.
#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::elements::{Element, ElementRef};
use fantoccini::{Client, ClientBuilder, Locator};
use serde::Deserialize;
use serde_json::{Value, json};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const INSTALL: &str = "apt-get update && apt-get install -y chromium chromium-driver";

/// A phone's viewport (CSS pixels).
pub const PHONE: (u32, u32) = (390, 844);
/// A desktop's viewport (CSS pixels).
pub const DESKTOP: (u32, u32) = (1280, 900);

/// How long `wait_for_text` and the other waits wait by default.
pub const WAIT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(50);

/// The accessibility checker, vendored (tests/assets/README.md): nothing is downloaded at run time.
const AXE: &str = include_str!("../assets/axe.min.js");

/// The WCAG 2.x levels A and AA that `axe_check` runs.
pub const AXE_TAGS: &[&str] = &["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"];

/// Chromium's command line. The background-networking flags matter: this machine's network is
/// closed, and without them Chromium keeps trying (and failing) to reach Google's services.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    // One screenshot pixel per CSS pixel, so a phone screenshot is 390 px wide.
    "--force-device-scale-factor=1",
    "--hide-scrollbars",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-default-browser-check",
    "--lang=en-US",
];

/// One rule axe found broken, with the elements that break it.
#[derive(Debug, Clone, Deserialize)]
pub struct Violation {
    /// The rule, e.g. `label`, `image-alt`, `color-contrast`.
    pub id: String,
    /// minor, moderate, serious or critical.
    pub impact: Option<String>,
    pub help: String,
    #[serde(rename = "helpUrl")]
    pub help_url: String,
    /// CSS selectors of the offending elements.
    pub targets: Vec<String>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} [{}]: {} — {} ({})",
            self.id,
            self.impact.as_deref().unwrap_or("?"),
            self.help,
            self.targets.join(", "),
            self.help_url
        )
    }
}

/// A cookie as the browser holds it (WebDriver sees HttpOnly cookies too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieInfo {
    pub name: String,
    pub value: String,
    pub http_only: bool,
    pub secure: bool,
    /// `Strict`, `Lax` or `None`, as the browser reports it.
    pub same_site: Option<String>,
    pub path: Option<String>,
    pub domain: Option<String>,
}

/// What a screenshot check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PngFacts {
    pub width: u32,
    pub height: u32,
    /// How many distinct colours (RGBA) the image has; 1 means blank.
    pub colours: usize,
}

/// A headless Chromium with its own chromedriver and profile; both go away on drop.
pub struct Browser {
    client: Client,
    watchdog: Option<Child>,
    pgid: u32,
    dir: tempfile::TempDir,
    driver_url: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

/// Fails the test unless Chromium and chromedriver are installed.
pub fn require_chromium() {
    if let Some(why) = missing(&[CHROMIUM, CHROMEDRIVER]) {
        panic!("{why}");
    }
}

/// What is wrong when one of `binaries` is missing: the message names the install command.
pub fn missing(binaries: &[&str]) -> Option<String> {
    let absent: Vec<&str> = binaries.iter().copied().filter(|b| !Path::new(b).is_file()).collect();
    (!absent.is_empty()).then(|| {
        format!(
            "{} missing: the browser tests need Debian's Chromium and ChromeDriver. Install them: {INSTALL}",
            absent.join(" and ")
        )
    })
}

/// Where screenshots go: `<target dir>/console-screenshots/` (the test binary lives in
/// `<target dir>/<profile>/deps/`; `target/` beside Cargo.toml when that cannot be told).
pub fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().ok();
    let deps = exe.as_deref().and_then(Path::parent).filter(|d| d.file_name() == Some("deps".as_ref()));
    let target = deps.and_then(Path::parent).and_then(Path::parent).map(Path::to_path_buf);
    target.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target")).join("console-screenshots")
}

/// Checks that `bytes` is a PNG of `width`×`height` that is not one flat colour; panics otherwise.
pub fn check_png(bytes: &[u8], width: u32, height: u32) -> PngFacts {
    let facts = png_facts(bytes).unwrap_or_else(|e| panic!("not a PNG: {e}"));
    assert_eq!((facts.width, facts.height), (width, height), "the screenshot's size");
    assert!(facts.colours > 1, "the screenshot is blank: every pixel has the same colour");
    facts
}

/// Decodes a PNG: its size and how many distinct colours it has.
pub fn png_facts(bytes: &[u8]) -> Result<PngFacts, String> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let (width, height) = {
        let info = reader.info();
        (info.width, info.height)
    };
    let mut buf = vec![0; reader.output_buffer_size().ok_or("image too large")?];
    let frame = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
    let channels = frame.color_type.samples();
    let mut colours = std::collections::HashSet::new();
    'rows: for row in buf[..frame.buffer_size()].chunks_exact(frame.line_size) {
        for px in row[..width as usize * channels].chunks_exact(channels) {
            colours.insert(px.to_vec());
            if colours.len() > 1000 {
                break 'rows;
            }
        }
    }
    Ok(PngFacts { width, height, colours: colours.len() })
}

impl Browser {
    /// Chromium at desktop size, ready for `goto`.
    pub async fn start() -> Browser {
        require_chromium();
        let dir = tempfile::Builder::new().prefix("gwsync-browser-").tempdir().expect("a temporary directory");
        let profile = dir.path().join("profile");
        std::fs::create_dir(&profile).expect("the profile directory");
        let log = dir.path().join("chromedriver.log");

        // $1 chromedriver, $2 port, $3 log. Kills its process group (itself, chromedriver and
        // every Chromium process) once stdin closes, or once chromedriver exits. (An
        // asynchronous list's stdin is /dev/null: the reader gets the pipe as fd 3.)
        let script = r#"
            exec 3<&0
            { read _ignored <&3; kill -KILL 0; } &
            "$1" --port="$2" --allowed-ips=127.0.0.1 --log-path="$3" </dev/null >/dev/null 2>&1 3<&-
            kill -KILL 0
        "#;
        // A free port can be taken between our look and chromedriver's bind: then try another.
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(5)).build().expect("client");
        let mut attempt = 0;
        let (mut watchdog, pgid, driver_url) = 'start: loop {
            attempt += 1;
            let port = free_port();
            let mut watchdog = Command::new("/bin/sh")
                .args(["-c", script, "sh", CHROMEDRIVER])
                .arg(port.to_string())
                .arg(&log)
                // Chromium's crash handler (which leaves the process group) keeps its database
                // under the XDG config directory, not the profile: keep it in ours too.
                .env("XDG_CONFIG_HOME", dir.path().join("config"))
                .env("XDG_CACHE_HOME", dir.path().join("cache"))
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .process_group(0)
                .spawn()
                .expect("starting chromedriver");
            let pgid = watchdog.id();
            let driver_url = format!("http://127.0.0.1:{port}");
            // Ready when /status says so.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            let exited = loop {
                if let Ok(Some(exit)) = watchdog.try_wait() {
                    break exit;
                }
                let ready = match http.get(format!("{driver_url}/status")).send().await {
                    Ok(r) => r.json::<Value>().await.is_ok_and(|v| v["value"]["ready"] == true),
                    Err(_) => false,
                };
                if ready {
                    break 'start (watchdog, pgid, driver_url);
                }
                if tokio::time::Instant::now() > deadline {
                    kill_group(pgid);
                    let _ = watchdog.wait();
                    panic!("chromedriver did not answer within 30 s on {driver_url}:\n{}", read(&log));
                }
                tokio::time::sleep(POLL).await;
            };
            if attempt == 3 {
                panic!("chromedriver exited ({exited}) before it was ready:\n{}", read(&log));
            }
        };

        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.push(format!("--window-size={},{}", DESKTOP.0, DESKTOP.1));
        let capabilities = json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": args,
                "prefs": {"credentials_enable_service": false, "profile.password_manager_enabled": false},
            },
        });
        let capabilities = match capabilities {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let connected = ClientBuilder::new(connector).capabilities(capabilities).connect(&driver_url).await;
        let client = match connected {
            Ok(c) => c,
            Err(e) => {
                // No `Browser` yet to clean up on drop: stop chromedriver here.
                kill_group(pgid);
                let _ = watchdog.wait();
                panic!("Chromium did not start through chromedriver: {e}\n{}", tail(&read(&log), 40));
            }
        };
        let browser = Browser { client, watchdog: Some(watchdog), pgid, dir, driver_url };
        browser.set_viewport(DESKTOP.0, DESKTOP.1).await;
        browser
    }

    /// The WebDriver client, for what the helpers do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// chromedriver's address.
    pub fn driver_url(&self) -> &str {
        &self.driver_url
    }

    /// chromedriver's process group (the watchdog's pid): every process of this browser.
    pub fn process_group(&self) -> u32 {
        self.pgid
    }

    /// The temporary directory of this browser: profile, crash database, chromedriver's log. Every
    /// process of the browser names it on its command line.
    pub fn temp_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The temporary profile directory (`--user-data-dir`).
    pub fn profile_dir(&self) -> PathBuf {
        self.dir.path().join("profile")
    }

    /// The browser's name and version as chromedriver reports them.
    pub fn version(&self) -> String {
        let caps = self.client.capabilities().cloned().unwrap_or_default();
        format!(
            "{} {}",
            caps.get("browserName").and_then(Value::as_str).unwrap_or("?"),
            caps.get("browserVersion").and_then(Value::as_str).unwrap_or("?")
        )
    }

    /// Opens `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("opening {url}: {e}"));
    }

    pub async fn current_url(&self) -> String {
        self.client.current_url().await.expect("the current URL").to_string()
    }

    pub async fn title(&self) -> String {
        self.client.title().await.expect("the page title")
    }

    /// The page's visible text (`document.body.innerText`).
    pub async fn page_text(&self) -> String {
        self.try_page_text().await.unwrap_or_else(|e| panic!("reading the page's text: {e}"))
    }

    async fn try_page_text(&self) -> Result<String, fantoccini::error::CmdError> {
        let v = self.client.execute("return document.body ? document.body.innerText : '';", vec![]).await?;
        Ok(v.as_str().unwrap_or_default().to_owned())
    }

    /// The page's HTML as the browser now has it.
    pub async fn source(&self) -> String {
        self.client.source().await.expect("the page source")
    }

    /// The visible text of the first element matching `css`.
    pub async fn text_of(&self, css: &str) -> String {
        let el = self.find(css).await;
        el.text().await.unwrap_or_else(|e| panic!("reading the text of {css}: {e}"))
    }

    /// The first element matching `css`; fails at once when there is none.
    pub async fn find(&self, css: &str) -> Element {
        self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no element matches {css:?}: {e}"))
    }

    /// Every element matching `css` (maybe none).
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        self.client.find_all(Locator::Css(css)).await.unwrap_or_else(|e| panic!("finding {css:?}: {e}"))
    }

    /// Waits until `text` is in the page's visible text; returns the text then.
    pub async fn wait_for_text(&self, text: &str) -> String {
        self.wait_for_text_within(text, WAIT).await
    }

    pub async fn wait_for_text_within(&self, text: &str, timeout: Duration) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // While a navigation is under way the script may fail: try again.
            let seen = self.try_page_text().await;
            match &seen {
                Ok(page) if page.contains(text) => return page.clone(),
                _ => {}
            }
            if tokio::time::Instant::now() > deadline {
                let url = self.client.current_url().await.map(|u| u.to_string()).unwrap_or_default();
                panic!(
                    "timed out after {timeout:?} waiting for {text:?} on {url}; the page says:\n{}",
                    match seen {
                        Ok(p) => p,
                        Err(e) => format!("(could not read it: {e})"),
                    }
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the element matching `css` is on the page.
    pub async fn wait_for(&self, css: &str) -> Element {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(el) = self.client.find(Locator::Css(css)).await {
                return el;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out after {WAIT:?} waiting for {css:?}");
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the URL's path (and query) is `path`, e.g. after a form's redirect.
    pub async fn wait_for_path(&self, path: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let url = self.client.current_url().await.ok();
            let now = url.as_ref().map(|u| match u.query() {
                Some(q) => format!("{}?{q}", u.path()),
                None => u.path().to_owned(),
            });
            if now.as_deref() == Some(path) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for the path {path}; at {url:?}");
            tokio::time::sleep(POLL).await;
        }
    }

    /// The form control labelled `label` (a `<label>`'s text, exact after collapsing white space;
    /// or, when no label has that text exactly, the one label that starts with it; or
    /// `aria-label`), else the control named `label`.
    pub async fn field(&self, label: &str) -> Element {
        const JS: &str = r#"
            const want = arguments[0];
            const norm = s => (s || '').replace(/\s+/g, ' ').trim();
            const controls = 'input, select, textarea, button';
            const labels = Array.from(document.querySelectorAll('label'));
            let hits = labels.filter(l => norm(l.textContent) === want);
            if (hits.length === 0) hits = labels.filter(l => norm(l.textContent).startsWith(want));
            let found = hits.map(l => l.control).filter(c => c);
            if (found.length === 0)
                found = Array.from(document.querySelectorAll(controls)).filter(c => norm(c.getAttribute('aria-label')) === want);
            if (found.length === 0) found = Array.from(document.getElementsByName(want));
            found = Array.from(new Set(found));
            if (found.length === 1) return {el: found[0]};
            return {error: (found.length ? found.length + ' controls match' : 'no control matches')
                + '; the labels are: ' + JSON.stringify(labels.map(l => norm(l.textContent)))};
        "#;
        self.pick(JS, label, "field").await
    }

    /// Fills the field labelled (or named) `label` with `value`, replacing what it held.
    pub async fn fill(&self, label: &str, value: &str) {
        let el = self.field(label).await;
        el.clear().await.unwrap_or_else(|e| panic!("clearing {label:?}: {e}"));
        el.send_keys(value).await.unwrap_or_else(|e| panic!("typing into {label:?}: {e}"));
    }

    /// Fills the field named `name` (its `name` attribute).
    pub async fn fill_by_name(&self, name: &str, value: &str) {
        let css = format!("[name=\"{}\"]", name.replace('\\', "\\\\").replace('"', "\\\""));
        let el = self.find(&css).await;
        el.clear().await.unwrap_or_else(|e| panic!("clearing {name:?}: {e}"));
        el.send_keys(value).await.unwrap_or_else(|e| panic!("typing into {name:?}: {e}"));
    }

    /// Chooses the file at `path` in the file input labelled (or named) `label`.
    pub async fn upload(&self, label: &str, path: &Path) {
        let el = self.field(label).await;
        let path = std::fs::canonicalize(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        el.send_keys(&path.to_string_lossy()).await.unwrap_or_else(|e| panic!("choosing a file in {label:?}: {e}"));
    }

    /// Picks the option whose text is `option` in the select labelled (or named) `label`.
    pub async fn select(&self, label: &str, option: &str) {
        let el = self.field(label).await;
        el.select_by_label(option).await.unwrap_or_else(|e| panic!("choosing {option:?} in {label:?}: {e}"));
    }

    /// Ticks (or unticks) the checkbox labelled (or named) `label`.
    pub async fn set_checked(&self, label: &str, checked: bool) {
        let el = self.field(label).await;
        if el.is_selected().await.expect("checkbox state") != checked {
            el.click().await.unwrap_or_else(|e| panic!("clicking {label:?}: {e}"));
        }
    }

    /// What the field labelled (or named) `label` now holds.
    pub async fn value_of(&self, label: &str) -> String {
        let el = self.field(label).await;
        el.prop("value").await.expect("the field's value").unwrap_or_default()
    }

    /// Clicks the one visible button (`<button>`, `<input type=submit|button>`, `role=button`)
    /// whose text (or value, or aria-label) is `text`.
    pub async fn click_button(&self, text: &str) {
        self.click_button_in("body", text).await
    }

    /// `click_button` among the descendants of the first element matching `scope` (a CSS selector),
    /// for pages with several buttons of the same text.
    pub async fn click_button_in(&self, scope: &str, text: &str) {
        const JS: &str = r#"
            const [want, scope] = [arguments[0], arguments[1]];
            const norm = s => (s || '').replace(/\s+/g, ' ').trim();
            const root = document.querySelector(scope);
            if (!root) return {error: 'nothing matches ' + scope};
            const all = Array.from(root.querySelectorAll('button, input[type=submit], input[type=button], [role=button]'));
            const name = b => b.tagName === 'INPUT' ? norm(b.value) : norm(b.innerText || b.textContent);
            const visible = b => !!(b.offsetWidth || b.offsetHeight || b.getClientRects().length);
            const found = all.filter(b => visible(b) && (name(b) === want || norm(b.getAttribute('aria-label')) === want));
            if (found.length === 1) return {el: found[0]};
            return {error: (found.length ? found.length + ' buttons match' : 'no button matches')
                + '; the buttons are: ' + JSON.stringify(all.filter(visible).map(name))};
        "#;
        let el = self.pick_with(JS, vec![json!(text), json!(scope)], text, "button").await;
        el.click().await.unwrap_or_else(|e| panic!("clicking the button {text:?}: {e}"));
    }

    /// Clicks the link whose visible text is `text`.
    pub async fn click_link(&self, text: &str) {
        let el = self.client.find(Locator::LinkText(text)).await.unwrap_or_else(|e| panic!("no link {text:?}: {e}"));
        el.click().await.unwrap_or_else(|e| panic!("clicking the link {text:?}: {e}"));
    }

    async fn pick(&self, js: &str, what: &str, kind: &str) -> Element {
        self.pick_with(js, vec![json!(what)], what, kind).await
    }

    /// Runs `js`, which returns `{el}` or `{error}`; the element it found.
    async fn pick_with(&self, js: &str, args: Vec<Value>, what: &str, kind: &str) -> Element {
        let v = self.client.execute(js, args).await.unwrap_or_else(|e| panic!("looking for the {kind} {what:?}: {e}"));
        if let Some(id) = v["el"].get(ELEMENT_KEY).and_then(Value::as_str) {
            return Element::from_element_id(self.client.clone(), ElementRef::from(id.to_owned()));
        }
        let url = self.client.current_url().await.map(|u| u.to_string()).unwrap_or_default();
        panic!("the {kind} {what:?} on {url}: {}", v["error"].as_str().unwrap_or("not found"));
    }

    /// Sets the viewport (the page's `innerWidth`×`innerHeight`) to `width`×`height` CSS pixels.
    pub async fn set_viewport(&self, width: u32, height: u32) {
        let inner = |c: &Client| {
            let c = c.clone();
            async move {
                let v = c.execute("return [window.innerWidth, window.innerHeight];", vec![]).await.expect("viewport");
                (v[0].as_u64().unwrap_or(0) as i64, v[1].as_u64().unwrap_or(0) as i64)
            }
        };
        // The window's outer size includes whatever frame the browser has: measure it once and
        // size the window so the viewport comes out right.
        self.client.set_window_size(width, height).await.expect("resizing the window");
        let (w, h) = inner(&self.client).await;
        if (w, h) != (width as i64, height as i64) {
            let (ow, oh) = self.client.get_window_size().await.expect("the window size");
            let (nw, nh) = (ow as i64 + width as i64 - w, oh as i64 + height as i64 - h);
            self.client.set_window_size(nw as u32, nh as u32).await.expect("resizing the window");
            let got = inner(&self.client).await;
            assert_eq!(got, (width as i64, height as i64), "the viewport after resizing the window");
        }
    }

    /// Phone width: a 390×844 viewport.
    pub async fn phone(&self) {
        self.set_viewport(PHONE.0, PHONE.1).await
    }

    /// Desktop: a 1280×900 viewport.
    pub async fn desktop(&self) {
        self.set_viewport(DESKTOP.0, DESKTOP.1).await
    }

    /// A screenshot of the viewport, saved as `<target>/console-screenshots/<name>.png`; checked
    /// to be a real PNG of the viewport's size that is not blank. Returns the PNG's bytes.
    pub async fn screenshot(&self, name: &str) -> Vec<u8> {
        let bytes = self.client.screenshot().await.unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
        let v = self.client.execute("return [window.innerWidth, window.innerHeight];", vec![]).await.expect("size");
        let (w, h) = (v[0].as_u64().unwrap_or(0) as u32, v[1].as_u64().unwrap_or(0) as u32);
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        check_png(&bytes, w, h);
        bytes
    }

    /// Every cookie the browser holds for the current page.
    pub async fn cookies(&self) -> Vec<CookieInfo> {
        let all = self.client.get_all_cookies().await.expect("the cookies");
        all.into_iter()
            .map(|c| CookieInfo {
                name: c.name().to_owned(),
                value: c.value().to_owned(),
                http_only: c.http_only().unwrap_or(false),
                secure: c.secure().unwrap_or(false),
                same_site: c.same_site().map(|s| s.to_string()),
                path: c.path().map(str::to_owned),
                domain: c.domain().map(str::to_owned),
            })
            .collect()
    }

    /// The cookie `name` for the current page, if the browser holds it.
    pub async fn cookie(&self, name: &str) -> Option<CookieInfo> {
        self.cookies().await.into_iter().find(|c| c.name == name)
    }

    /// Runs axe-core's WCAG 2.0/2.1 A and AA rules on the current page; the violations.
    ///
    /// axe goes in through WebDriver's Execute Script, which is not subject to the page's
    /// Content-Security-Policy (a `<script>` element with inline text would be).
    pub async fn axe_check(&self) -> Vec<Violation> {
        let loaded = self
            .client
            .execute(&format!("{AXE}\n;return typeof window.axe === 'object' && window.axe.version;"), vec![])
            .await
            .unwrap_or_else(|e| panic!("injecting axe-core: {e}"));
        assert!(loaded.is_string(), "axe-core did not load: {loaded}");
        const RUN: &str = r#"
            const [tags, done] = [arguments[0], arguments[arguments.length - 1]];
            window.axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']})
              .then(r => done({
                  passes: r.passes.length,
                  violations: r.violations.map(v => ({
                      id: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
                      targets: v.nodes.map(n => [].concat(n.target).flat(Infinity).join(' ')),
                  })),
              }))
              .catch(e => done({error: String(e && e.stack || e)}));
        "#;
        let r =
            self.client.execute_async(RUN, vec![json!(AXE_TAGS)]).await.unwrap_or_else(|e| panic!("running axe: {e}"));
        if let Some(e) = r.get("error") {
            panic!("axe failed on the page: {e}");
        }
        assert!(r["passes"].as_u64().unwrap_or(0) > 0, "axe checked nothing on the page: {r}");
        serde_json::from_value(r["violations"].clone()).expect("axe's violations")
    }

    /// Fails, listing every violation, unless axe finds the page accessible (WCAG 2.x A/AA).
    pub async fn assert_accessible(&self, page_name: &str) {
        let violations = self.axe_check().await;
        if !violations.is_empty() {
            let list: Vec<String> = violations.iter().map(|v| format!("  - {v}")).collect();
            panic!(
                "{page_name}: {} accessibility violation(s) (WCAG 2.x A/AA):\n{}",
                violations.len(),
                list.join("\n")
            );
        }
    }

    /// Ends the WebDriver session (Chromium quits), then stops chromedriver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.watchdog.take() {
            // Until it is reaped, the watchdog's pid (the group's id) cannot be reused: kill the
            // group first, then reap. (Closing its stdin would have the watchdog do the same.)
            kill_group(self.pgid);
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.stop();
    }
}

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The processes whose command line mentions `needle` (e.g. a profile directory): what a
/// browser left running.
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(format!("{}: {}", name.to_string_lossy(), cmdline.trim()));
            }
        }
    }
    found
}
