//! A phone system for the delivery tests: a receiver that verifies every message with the
//! reference Standard Webhooks implementation (the `standardwebhooks` crate) and answers the
//! statuses a test chooses; and a hostile one, a TCP listener that accepts connections and never
//! answers (until told to pass new connections on to a receiver).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use chrono::{DateTime, Utc};
use gwsync::clock::Clock;
use parking_lot::Mutex;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::WAIT;

/// How long a test watches for a message that must not come.
pub const QUIET: Duration = Duration::from_millis(1200);

/// One delivery attempt as the phone system saw it.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub id: String,
    pub timestamp: String,
    pub body: String,
    pub json: Value,
    /// What the reference Standard Webhooks implementation said.
    pub verified: Result<(), String>,
    /// What the receiver answered.
    pub status: u16,
    /// gwsync's clock when it arrived.
    pub clock_at: DateTime<Utc>,
    pub real_at: DateTime<Utc>,
}

impl Attempt {
    pub fn user(&self) -> &str {
        self.json["user"].as_str().unwrap_or("")
    }
    pub fn seq(&self) -> u64 {
        self.json["sequence"].as_u64().unwrap_or(0)
    }
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Default)]
struct Shared {
    attempts: Vec<Attempt>,
    /// How many more attempts of each user's messages to answer 500.
    fail: HashMap<String, u32>,
}

/// A phone system: verifies each message, answers 204 (or 500 when told to fail, 401 when
/// the signature does not verify), and records every attempt.
pub struct Receiver {
    pub url: String,
    /// Where it listens (a hostile front can pass connections on to it).
    pub addr: std::net::SocketAddr,
    shared: Arc<Mutex<Shared>>,
    handle: actix_web::dev::ServerHandle,
}

impl Receiver {
    pub async fn start(secret: &str, clock: Clock) -> Receiver {
        let webhook = Arc::new(standardwebhooks::Webhook::new(secret).expect("a Standard Webhooks secret"));
        let shared: Arc<Mutex<Shared>> = Arc::default();
        let s = shared.clone();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = HttpServer::new(move || {
            let (s, webhook, clock) = (s.clone(), webhook.clone(), clock.clone());
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let (s, webhook, clock) = (s.clone(), webhook.clone(), clock.clone());
                async move {
                    let mut headers = HeaderMap::new();
                    for (k, v) in req.headers() {
                        if let (Ok(k), Ok(v)) =
                            (HeaderName::from_bytes(k.as_str().as_bytes()), HeaderValue::from_bytes(v.as_bytes()))
                        {
                            headers.append(k, v);
                        }
                    }
                    let header =
                        |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                    let verified = webhook.verify(&body, &headers).map_err(|e| format!("{e:?}"));
                    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let mut shared = s.lock();
                    let user = json["user"].as_str().unwrap_or("").to_owned();
                    let status = match shared.fail.get_mut(&user) {
                        _ if verified.is_err() => 401,
                        Some(n) if *n > 0 => {
                            *n -= 1;
                            500
                        }
                        _ => 204,
                    };
                    shared.attempts.push(Attempt {
                        id: header("webhook-id"),
                        timestamp: header("webhook-timestamp"),
                        body: String::from_utf8_lossy(&body).into_owned(),
                        json,
                        verified,
                        status,
                        clock_at: clock.now(),
                        real_at: Utc::now(),
                    });
                    drop(shared);
                    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("status")).finish()
                }
            }))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Receiver { url: format!("http://{addr}/hooks/gwsync"), addr, shared, handle }
    }

    /// Answers the next `n` attempts of `user`'s messages with 500.
    pub fn fail_next(&self, user: &str, n: u32) {
        self.shared.lock().fail.insert(user.to_owned(), n);
    }

    pub fn attempts(&self) -> Vec<Attempt> {
        self.shared.lock().attempts.clone()
    }

    /// The attempts of `user`'s messages that were accepted, in arrival order.
    pub fn delivered_to(&self, user: &str) -> Vec<Attempt> {
        self.shared.lock().attempts.iter().filter(|a| a.ok() && a.user() == user).cloned().collect()
    }

    /// Waits until `n` of `user`'s messages were accepted.
    pub async fn wait_delivered_to(&self, user: &str, n: usize) -> Vec<Attempt> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got = self.delivered_to(user);
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected {n} deliveries to {user}; all attempts: {:#?}",
                self.attempts()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Fails if any attempt arrives within `QUIET`.
    pub async fn assert_quiet(&self, what: &str) {
        let before = self.attempts().len();
        let deadline = tokio::time::Instant::now() + QUIET;
        while tokio::time::Instant::now() < deadline {
            let now = self.attempts();
            assert_eq!(now.len(), before, "{what}: unexpected attempts {:#?}", &now[before..]);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }
}

/// A hostile server: a TCP listener on 127.0.0.1 that accepts every connection and never
/// answers, holding it until the client gives up — a token endpoint or phone system that hangs.
/// After `forward_to`, new connections are passed on to a real server instead (it "recovers");
/// connections already held keep hanging.
pub struct HangingServer {
    pub addr: std::net::SocketAddr,
    state: Arc<HangState>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct HangState {
    accepted: std::sync::atomic::AtomicUsize,
    open: std::sync::atomic::AtomicUsize,
    forward: Mutex<Option<std::net::SocketAddr>>,
}

impl HangingServer {
    pub async fn start() -> HangingServer {
        use std::sync::atomic::Ordering::SeqCst;
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state: Arc<HangState> = Arc::default();
        let s = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                // Counted before the accept loop goes on, so a test sees every attempt.
                s.open.fetch_add(1, SeqCst);
                s.accepted.fetch_add(1, SeqCst);
                let forward = *s.forward.lock();
                let s = s.clone();
                tokio::spawn(async move {
                    match forward {
                        Some(to) => {
                            if let Ok(mut upstream) = tokio::net::TcpStream::connect(to).await {
                                let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
                            }
                        }
                        None => {
                            // Read (and drop) whatever comes until the client hangs up.
                            let mut buf = [0u8; 4096];
                            while let Ok(n) = conn.read(&mut buf).await {
                                if n == 0 {
                                    break;
                                }
                            }
                        }
                    }
                    s.open.fetch_sub(1, SeqCst);
                });
            }
        });
        HangingServer { addr, state, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Connections still held open (the client has not given up on them yet).
    pub fn open(&self) -> usize {
        self.state.open.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// From now on, passes new connections on to `to` (answered by a real server there).
    pub fn forward_to(&self, to: std::net::SocketAddr) {
        *self.state.forward.lock() = Some(to);
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}
