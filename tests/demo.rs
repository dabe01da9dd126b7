//! README's first command works: `gwsync demo` needs no key, config or network, serves the
//! API, and prints the profile switches its built-in phone system verified — among them Anna's
//! out-of-office (by its event type, at +3 min), while her working location "Office" switches
//! nothing although her profile Kontor has the trigger `office`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const ANNA: &str = "anna@demo.test";

/// Anna's out-of-office starts 5 minutes after the demo does.
const DEADLINE: Duration = Duration::from_secs(7 * 60);

/// The first `http://…` word of a line.
fn url_in(line: &str) -> Option<String> {
    line.split_whitespace().find(|w| w.starts_with("http://")).map(str::to_owned)
}

fn get(rt: &tokio::runtime::Runtime, url: &str, token: Option<&str>) -> Value {
    rt.block_on(async {
        let http = reqwest::Client::builder().no_proxy().build().expect("client");
        let mut req = http.get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert!(r.status().is_success(), "GET {url}: {}", r.status());
        r.json().await.expect("json")
    })
}

#[test]
fn the_demo_runs_the_service_and_prints_verified_profile_switches() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gwsync"))
        .args(["demo", "--listen", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("gwsync demo starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let started = Instant::now();
    let mut seen: Vec<String> = Vec::new();
    let (mut api, mut admin_token, mut fake) = (None, None, None);
    let mut checked_setup = false;
    let (mut cecilia_semester, mut anna_out_of_office) = (false, false);
    let outcome = loop {
        let left = DEADLINE.saturating_sub(started.elapsed());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if line.contains("gwsync API") {
                    api = url_in(&line);
                    admin_token = line.split("admin token: ").nth(1).map(|t| t.trim_end_matches(')').trim().to_owned());
                }
                if line.contains("fake Google") {
                    fake = url_in(&line);
                }
                cecilia_semester |= line.contains("cecilia@demo.test") && line.contains("→ Semester");
                anna_out_of_office |=
                    line.contains(ANNA) && line.contains("→ Semester") && line.contains("event type outOfOffice");
                seen.push(line);
                // Once the demo is up: Anna's working location is there at Google, titled with
                // one of her triggers, for all of today — were it to count, she would switch to
                // Kontor at once.
                if !checked_setup
                    && let (Some(api), Some(token), Some(fake)) = (&api, &admin_token, &fake)
                    && seen.iter().any(|l| l.starts_with("Profile switches"))
                {
                    let user = get(&rt, &format!("{api}/api/v1/tenants/demo/users/{ANNA}"), Some(token));
                    let kontor = user["profiles"].as_array().into_iter().flatten().find(|p| p["name"] == "Kontor");
                    assert!(
                        kontor.is_some_and(|p| p["triggers"].as_array().is_some_and(|t| t.contains(&"office".into()))),
                        "Anna's profile Kontor with the trigger office: {user}"
                    );
                    let events = get(&rt, &format!("{fake}/_fake/calendars/{ANNA}/events"), None);
                    let items = events["items"].as_array().cloned().unwrap_or_default();
                    assert!(
                        items.iter().any(|e| e["eventType"] == "workingLocation" && e["summary"] == "Office"),
                        "Anna's working location at Google: {events}"
                    );
                    checked_setup = true;
                }
                if cecilia_semester && anna_out_of_office {
                    break Ok(());
                }
            }
            Err(e) => break Err(e),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let text = seen.join("\n");
    assert!(
        outcome.is_ok(),
        "no Semester switch for cecilia and for Anna's out-of-office within {DEADLINE:?}; the demo printed:\n{text}"
    );
    assert!(checked_setup, "{text}");
    assert!(text.contains("gwsync API") && text.contains("fake Google"), "{text}");
    assert!(!text.contains("bad signature"), "{text}");
    // Anna switched (her lunch, then out of office), never by her working location.
    let anna: Vec<&String> = seen.iter().filter(|l| l.contains(ANNA) && l.contains('→')).collect();
    assert!(anna.iter().any(|l| l.contains("→ Lunch")), "{text}");
    assert!(anna.iter().all(|l| !l.contains("Kontor") && !l.contains("trigger \"office\"")), "{text}");
}
