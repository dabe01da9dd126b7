//! A throwaway PostgreSQL cluster for tests: `initdb` into a temporary directory, `postgres` on
//! a free loopback port, one cluster per test binary and one database per test. No container
//! runtime, no shared server.
//!
//! The server runs under a small shell watchdog whose stdin is a pipe from the test process:
//! when the test binary exits (however it exits) the pipe closes, and the watchdog stops the
//! server and removes the directory. A `PgCluster` dropped earlier does the same at once.
//!
//! Without the server binaries the tests fail with the install command; they never skip.
#![allow(dead_code)]

use std::io::Write as _;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const INSTALL: &str = "apt-get install postgresql-15 (or: apt-get install postgresql)";

/// The unprivileged account the server runs as when the tests run as root (initdb and postgres
/// refuse root).
const SERVER_USER: &str = "postgres";

pub struct PgCluster {
    pub port: u16,
    dir: PathBuf,
    watchdog: Option<Child>,
}

/// The cluster of this test binary, started on first use.
pub fn cluster() -> &'static PgCluster {
    static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
    CLUSTER.get_or_init(PgCluster::start)
}

/// A new, empty database on this binary's cluster; returns its URL.
pub async fn fresh_database() -> String {
    database_on(cluster()).await
}

/// A new, empty database on `cluster`; returns its URL.
pub async fn database_on(cluster: &PgCluster) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!("t{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
    use sqlx::Connection as _;
    let mut admin =
        sqlx::PgConnection::connect(&cluster.url("postgres")).await.expect("connecting to the test cluster");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("creating a test database");
    admin.close().await.ok();
    cluster.url(&name)
}

/// Finds `name` on PATH, or in the Debian/Ubuntu server directory.
fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .collect::<Vec<_>>();
    std::env::split_paths(&path).chain(debian).map(|d| d.join(name)).find(|p| p.is_file())
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// `program args` as the server user when we are root.
fn as_server_user(program: &Path) -> Command {
    if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", SERVER_USER, "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

impl PgCluster {
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// A cluster for tests: durability off (nothing here must survive the machine).
    pub fn start() -> PgCluster {
        Self::start_with("-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
    }

    /// A cluster as deployed: every commit on disk before it returns (benchmarks).
    pub fn start_durable() -> PgCluster {
        Self::start_with("-c fsync=on -c synchronous_commit=on")
    }

    /// `start_durable` with `pg_stat_statements` loaded, to see what the server spends its time on.
    pub fn start_durable_profiled() -> PgCluster {
        Self::start_with(
            "-c fsync=on -c synchronous_commit=on -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all",
        )
    }

    fn start_with(durability: &str) -> PgCluster {
        let initdb = find_binary("initdb").unwrap_or_else(|| {
            panic!("PostgreSQL server binaries (initdb, postgres) are not on PATH. Install them: {INSTALL}")
        });
        // Symlinks on PATH (/usr/local/bin/initdb) lead to the directory with the rest.
        let bin =
            std::fs::canonicalize(&initdb).ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_default();
        let postgres = bin.join("postgres");
        assert!(postgres.is_file(), "no postgres next to {}. Install the server: {INSTALL}", initdb.display());

        let dir = std::env::temp_dir().join(format!(
            "gwsync-pg-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
        ));
        std::fs::create_dir(&dir).expect("creating the cluster directory");
        if running_as_root() {
            let ok =
                Command::new("id").args(["-u", SERVER_USER]).stdout(Stdio::null()).status().is_ok_and(|s| s.success());
            assert!(
                ok,
                "running as root needs an unprivileged `{SERVER_USER}` user for the server: useradd {SERVER_USER}"
            );
            let chown = Command::new("chown").arg(format!("{SERVER_USER}:")).arg(&dir).status().expect("running chown");
            assert!(chown.success(), "chown of {} failed", dir.display());
        }
        let data = dir.join("data");
        let out = as_server_user(&initdb)
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--no-locale"])
            .output()
            .expect("running initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        let port = free_port();
        // $1 postgres, $2 dir, $3 port, $4 durability settings. Stops the server (fast shutdown) and removes the
        // directory once stdin closes.
        let script = r#"
            "$1" -D "$2/data" -p "$3" -k "$2" -c listen_addresses=127.0.0.1 $4 -c max_connections=300 \
                >"$2/server.log" 2>&1 &
            pid=$!
            read _ignored
            kill -INT "$pid"
            wait "$pid"
            rm -rf "$2"
        "#;
        let mut sh = as_server_user(Path::new("/bin/sh"));
        let watchdog = sh
            .args(["-c", script, "sh"])
            .arg(&postgres)
            .arg(&dir)
            .arg(port.to_string())
            .arg(durability)
            .stdin(Stdio::piped())
            .spawn()
            .expect("starting postgres");
        let cluster = PgCluster { port, dir, watchdog: Some(watchdog) };
        cluster.wait_ready(&bin);
        cluster
    }

    fn wait_ready(&self, bin: &Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let isready = bin.join("pg_isready");
        loop {
            let ready = if isready.is_file() {
                Command::new(&isready)
                    .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres"])
                    .status()
                    .is_ok_and(|s| s.success())
            } else {
                std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            };
            if ready {
                return;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                panic!("the test PostgreSQL did not start within 60 s:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some(mut child) = self.watchdog.take() {
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(b"\n");
            }
            let _ = child.wait();
        }
    }
}
