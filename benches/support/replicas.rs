//! Replicas of gwsync on one PostgreSQL database, each its own `gwsync serve` process (the
//! release build the benchmark was built with, so a SIGKILL is real), with a small round-robin
//! TCP proxy in front as their common public URL: where fake Google posts notifications and
//! the benchmark sends admin calls. Load generators go to the replicas directly.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::Value;

use super::process::{ADMIN, rss_mib, spawn, wait_ready};

/// A round-robin TCP proxy: each connection goes to the next backend that accepts it.
pub struct Proxy {
    pub port: u16,
    backends: Arc<Mutex<Vec<u16>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(backends: Vec<u16>) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let port = listener.local_addr().expect("addr").port();
        let backends = Arc::new(Mutex::new(backends));
        let next = Arc::new(AtomicUsize::new(0));
        let b = backends.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { continue };
                let (b, next) = (b.clone(), next.clone());
                tokio::spawn(async move {
                    let ports = b.lock().clone();
                    for _ in 0..ports.len() {
                        let port = ports[next.fetch_add(1, Ordering::Relaxed) % ports.len()];
                        // A killed replica refuses: the next one gets the connection.
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        Proxy { port, backends, task }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port()
}

/// `n` replicas on `database_url` against the fake Google at `fake`.
pub struct Replicas {
    pub ports: Vec<u16>,
    children: Vec<Option<Child>>,
    env: Vec<(String, String)>,
    fake: String,
    pub proxy: Proxy,
    dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

impl Replicas {
    /// Starts them all at once and waits until each is ready. `env` adds to their environment.
    pub async fn start(n: usize, database_url: &str, fake: &str, env: &[(&str, &str)]) -> Replicas {
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let proxy = Proxy::start(ports.clone()).await;
        let mut all: Vec<(String, String)> = vec![
            ("GWSYNC_DATABASE_URL".into(), database_url.into()),
            ("GWSYNC_PUBLIC_URL".into(), proxy.url()),
            // Fake Google (the keys' token endpoint) and the phone system are on loopback.
            ("GWSYNC_OUTBOUND_ALLOW".into(), "127.0.0.0/8".into()),
        ];
        all.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let http = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(0).build().expect("client");
        let mut r = Replicas {
            ports,
            children: (0..n).map(|_| None).collect(),
            env: all,
            fake: fake.to_owned(),
            proxy,
            dir: tempfile::tempdir().expect("tempdir"),
            http,
        };
        for i in 0..n {
            r.spawn(i);
        }
        r.ready_all().await;
        r
    }

    pub fn len(&self) -> usize {
        self.ports.len()
    }

    pub fn base(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.ports[i])
    }

    fn log(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("replica{i}.log"))
    }

    /// Starts replica `i` (its previous process must be gone).
    pub fn spawn(&mut self, i: usize) {
        let data = self.dir.path().join(format!("replica{i}"));
        std::fs::create_dir_all(&data).expect("data dir");
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.children[i] = Some(spawn(self.ports[i], &data, &self.log(i), &self.fake, &env));
    }

    /// Waits until replica `i` answers `/readyz` with 200; how long that took.
    pub async fn ready(&self, i: usize) -> Duration {
        wait_ready(&self.http, &self.base(i), &self.log(i)).await
    }

    /// Waits until every replica is ready; each one's time.
    pub async fn ready_all(&self) -> Vec<Duration> {
        futures_util::future::join_all((0..self.len()).map(|i| self.ready(i))).await
    }

    /// SIGKILL: no shutdown, the database session just ends.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and waits for the process to end.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let _ = c.wait();
        }
    }

    pub fn stop_all(&mut self) {
        // SIGTERM to all first, so they stop side by side.
        for c in self.children.iter().flatten() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        }
        for i in 0..self.len() {
            self.stop(i);
        }
    }

    /// The process ids of the replicas running now.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().flatten().map(|c| c.id()).collect()
    }

    pub fn rss_mib(&self, i: usize) -> f64 {
        self.children[i].as_ref().map_or(0.0, |c| rss_mib(c.id()))
    }

    pub async fn readyz(&self, i: usize) -> Value {
        match self.http.get(format!("{}/readyz", self.base(i))).send().await {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    /// The replica that leads now (waits until exactly one does).
    pub async fn leader(&self) -> usize {
        let started = Instant::now();
        loop {
            let mut leaders = Vec::new();
            for (i, child) in self.children.iter().enumerate() {
                if child.is_some()
                    && self.readyz(i).await["roles"].as_array().is_some_and(|r| r.iter().any(|x| x == "leader"))
                {
                    leaders.push(i);
                }
            }
            if let [one] = leaders[..] {
                return one;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "no single leader within 60 s: {leaders:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An admin-API call through the proxy (whichever replica gets it); its JSON.
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.proxy.url())).bearer_auth(ADMIN);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let r = req.send().await.expect("admin call");
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap_or(Value::Null)
    }

    /// The last lines of each replica's log (for a failure).
    pub fn logs(&self) -> String {
        let mut out = BTreeMap::new();
        for i in 0..self.len() {
            let text = std::fs::read_to_string(self.log(i)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            out.insert(i, tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        out.into_iter().map(|(i, t)| format!("--- replica {i}\n{t}\n")).collect()
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for i in 0..self.len() {
            self.kill(i);
        }
    }
}
