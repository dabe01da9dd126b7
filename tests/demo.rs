//! README's first command works: `gwsync demo` needs no key, config or network, serves the
//! API, and prints the first profile switch its built-in phone system verified.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

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
    let mut seen = Vec::new();
    let outcome = loop {
        match rx.recv_timeout(Duration::from_secs(90)) {
            Ok(line) => {
                let done = line.contains("cecilia@demo.test") && line.contains("→ Semester");
                seen.push(line);
                if done {
                    break Ok(());
                }
            }
            Err(e) => break Err(e),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(outcome.is_ok(), "no Semester switch within 90 s; the demo printed:\n{}", seen.join("\n"));
    let text = seen.join("\n");
    assert!(text.contains("gwsync API") && text.contains("fake Google"), "{text}");
    assert!(!text.contains("bad signature"), "{text}");
}
