//! Configuration in layers: built-in defaults → a TOML file (`--config`) → `GWSYNC_*`
//! environment variables (nested keys with `__`, e.g. `GWSYNC_STORE__CACHE_CAPACITY_MB`).
//! `config/gwsync.example.toml` documents every key. Everything is validated once, at start,
//! and every error names the key and how to fix it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use crate::secrets::MasterKey;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(String),
    #[error("configuration key `{key}` (env {env}): {message}")]
    Invalid { key: &'static str, env: &'static str, message: String },
}

fn invalid(key: &'static str, env: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, env, message: message.into() }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Plain,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// sled's page cache, in MiB (sled's own default is 1 GiB).
    pub cache_capacity_mb: u64,
    /// A PostgreSQL URL (`postgres://user:password@host/db`): keep everything there instead of
    /// sled under `data_dir` (env `GWSYNC_DATABASE_URL`). Secret: it may hold a password, so
    /// Debug output and logs never show it.
    pub database_url: Option<SecretString>,
    /// Connections to PostgreSQL at most.
    pub pool_size: u32,
    /// How long connecting to PostgreSQL (or waiting for a free connection) may take.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            cache_capacity_mb: 64,
            database_url: None,
            pool_size: 10,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// Calendars synced at once (jobs calling Google; a job waiting for its tenant's token
    /// holds none).
    pub workers: usize,
    /// Jobs one tenant may have at once: one tenant's hanging Google project or token endpoint
    /// holds at most this many, never another tenant's.
    pub tenant_workers: usize,
    /// How long minting one access token may take before the tenant's token endpoint counts
    /// as failing.
    #[serde(with = "humantime_serde")]
    pub token_timeout: Duration,
    /// How often every calendar is synced even without notifications (Google drops some).
    #[serde(with = "humantime_serde")]
    pub backstop_interval: Duration,
    /// Share of the project quota the backstop may use in steady state…
    pub backstop_share: f64,
    /// …and right after start, when every calendar is synced once.
    pub startup_share: f64,
    /// Google's per-project quota (Calendar: 10,000 requests per minute).
    pub project_requests_per_minute: u32,
    /// Google's per-user quota (Calendar: 600 requests per minute).
    pub user_requests_per_minute: u32,
    /// events.list page size (Google's maximum is 2500).
    pub page_size: u32,
    /// A full sync lists events that end after now minus this.
    #[serde(with = "humantime_serde")]
    pub full_sync_lookback: Duration,
    /// Push channels are asked to live this long (Google's maximum: 7 days).
    #[serde(with = "humantime_serde")]
    pub channel_ttl: Duration,
    /// Retry delay for failures only a Workspace admin can fix (delegation, a disabled API).
    #[serde(with = "humantime_serde")]
    pub slow_retry: Duration,
    /// Longest backoff after transient failures (rate limits, 5xx).
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// A calendar starts syncing at most once per this window, so a burst of notifications
    /// costs two syncs.
    #[serde(with = "humantime_serde")]
    pub rerun_delay: Duration,
    /// Channels expiring within this are replaced (new channel first, then the old one stopped).
    #[serde(with = "humantime_serde")]
    pub renew_within: Duration,
    /// How often the channel keeper looks for channels to renew or stop.
    #[serde(with = "humantime_serde")]
    pub keeper_interval: Duration,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            workers: 16,
            tenant_workers: 4,
            token_timeout: Duration::from_secs(10),
            backstop_interval: Duration::from_secs(3600),
            backstop_share: 0.2,
            startup_share: 0.5,
            project_requests_per_minute: 10_000,
            user_requests_per_minute: 600,
            page_size: 2500,
            full_sync_lookback: Duration::from_secs(24 * 3600),
            channel_ttl: Duration::from_secs(7 * 24 * 3600),
            slow_retry: Duration::from_secs(3600),
            max_backoff: Duration::from_secs(15 * 60),
            rerun_delay: Duration::from_millis(250),
            renew_within: Duration::from_secs(48 * 3600),
            keeper_interval: Duration::from_secs(600),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    /// How far ahead each user's profile switches are computed (recurring series expanded).
    #[serde(with = "humantime_serde")]
    pub horizon: Duration,
    /// A phone system failing for longer than this shows as failing (status, metrics, diagnose).
    #[serde(with = "humantime_serde")]
    pub delivery_alert_after: Duration,
    /// Deliveries in flight at once to one tenant's phone system: one hanging receiver holds
    /// at most this many, never another tenant's.
    pub deliveries_per_tenant: usize,
    /// How long one delivery attempt may take.
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// Failed attempts in a row after which a tenant's phone system is backed off as a whole
    /// (one probe at a time until it answers again).
    pub breaker_threshold: u32,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig {
            horizon: Duration::from_secs(14 * 24 * 3600),
            delivery_alert_after: Duration::from_secs(15 * 60),
            deliveries_per_tenant: 4,
            delivery_timeout: Duration::from_secs(10),
            breaker_threshold: 3,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContactsConfig {
    /// A number without an exact match matches entries ending in the same this many digits
    /// (0: off).
    pub match_last_digits: usize,
    /// People API reads per minute per user (Google's "critical read" bucket).
    pub user_requests_per_minute: u32,
    /// People listing page size (Google's maximum is 1000).
    pub page_size: u32,
    /// Tenants polled at the same time. Each tenant is its own Google project and quota, so a
    /// large directory (minutes at quota pace) holds up no other tenant.
    pub parallel_tenants: usize,
}

impl Default for ContactsConfig {
    fn default() -> Self {
        ContactsConfig { match_last_digits: 8, user_requests_per_minute: 60, page_size: 1000, parallel_tenants: 4 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// How long audit entries are kept; older ones are pruned by the service.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { retention: Duration::from_secs(90 * 24 * 3600) }
    }
}

/// Replicas sharing one PostgreSQL database (`cluster` module); unused with sled.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// How often a replica that is not the leader tries to become it.
    #[serde(with = "humantime_serde")]
    pub leader_retry: Duration,
    /// How long a sync claim lasts without being extended (a dead replica's claims fall out
    /// after it); orphaned dirty marks are looked for every half of it.
    #[serde(with = "humantime_serde")]
    pub claim_lease: Duration,
    /// This replica's name in claims and the member table (default: host, pid and a random
    /// suffix, so a restarted process is a new member).
    pub replica_id: Option<String>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig { leader_retry: Duration::from_secs(1), claim_lease: Duration::from_secs(30), replica_id: None }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the HTTP server listens. Loopback by default: TLS is the reverse proxy's job.
    pub listen: SocketAddr,
    /// The public HTTPS base URL the reverse proxy serves gwsync at; Google posts to
    /// `<public_url>/webhooks/google/calendar`.
    pub public_url: Option<Url>,
    /// Where the database lives.
    pub data_dir: PathBuf,
    /// Bearer token of the admin API.
    pub admin_token: Option<SecretString>,
    /// 32 random bytes, base64 (`openssl rand -base64 32`): encrypts keys and secrets at rest.
    pub master_key: Option<SecretString>,
    /// A file holding the master key instead (first line, base64).
    pub master_key_file: Option<PathBuf>,
    /// Calendar API root (the fake in tests).
    pub google_api_url: Url,
    /// People API root.
    pub google_people_url: Url,
    /// Targets tenant-supplied URLs (phone systems, key files' `token_uri`) may reach although
    /// they are loopback, private or link-local: comma-separated CIDRs or host names (a TOML
    /// list works too). See `outbound`.
    #[serde(deserialize_with = "comma_list")]
    pub outbound_allow: String,
    pub log_format: LogFormat,
    /// Largest request body the API reads.
    pub max_body_bytes: usize,
    /// How long shutdown may take before in-flight work is abandoned.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    pub store: StoreConfig,
    pub sync: SyncConfig,
    pub presence: PresenceConfig,
    pub contacts: ContactsConfig,
    pub audit: AuditConfig,
    pub cluster: ClusterConfig,
    /// The console's "Sign in with Google": the OpenID Connect issuer (env `GWSYNC_OIDC_ISSUER`).
    pub oidc_issuer: Url,
    /// The OAuth client ("Web application") the console signs in with; none: only operator
    /// tokens sign in.
    pub oidc_client_id: Option<String>,
    pub oidc_client_secret: Option<SecretString>,
    /// Who signs in to the console as an operator: comma-separated emails (`GWSYNC_OPERATORS`).
    #[serde(deserialize_with = "comma_list")]
    pub operators: String,
    pub console: ConsoleConfig,
}

/// The web console (`console` module).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// How long a console sign-in lasts.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig { session_ttl: Duration::from_secs(8 * 3600) }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            data_dir: PathBuf::from("data"),
            admin_token: None,
            master_key: None,
            master_key_file: None,
            google_api_url: Url::parse("https://www.googleapis.com").expect("constant URL parses"),
            google_people_url: Url::parse("https://people.googleapis.com").expect("constant URL parses"),
            outbound_allow: String::new(),
            log_format: LogFormat::Plain,
            max_body_bytes: 64 * 1024,
            shutdown_timeout: Duration::from_secs(10),
            store: StoreConfig::default(),
            sync: SyncConfig::default(),
            presence: PresenceConfig::default(),
            contacts: ContactsConfig::default(),
            audit: AuditConfig::default(),
            cluster: ClusterConfig::default(),
            oidc_issuer: Url::parse("https://accounts.google.com").expect("constant URL parses"),
            oidc_client_id: None,
            oidc_client_secret: None,
            operators: String::new(),
            console: ConsoleConfig::default(),
        }
    }
}

/// `GWSYNC_*` variables that are not configuration keys (the operator commands' server address
/// and API token).
const NOT_KEYS: &[&str] = &["server", "token", "database_url"];

impl Config {
    /// Defaults, then `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Load(format!("config file {} does not exist", path.display())));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(Env::prefixed("GWSYNC_").split("__").ignore(NOT_KEYS));
        // The documented short name of `store.database_url` (GWSYNC_STORE__DATABASE_URL works too).
        figment = figment.merge(Env::raw().only(&["GWSYNC_DATABASE_URL"]).map(|_| "store.database_url".into()));
        let config: Config = figment.extract().map_err(|e| ConfigError::Load(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what any command needs; `serve` adds `serve_settings`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, env, url) in [
            ("google_api_url", "GWSYNC_GOOGLE_API_URL", &self.google_api_url),
            ("google_people_url", "GWSYNC_GOOGLE_PEOPLE_URL", &self.google_people_url),
        ] {
            if !matches!(url.scheme(), "https" | "http") {
                return Err(invalid(key, env, "must be an http(s) URL"));
            }
        }
        crate::outbound::OutboundPolicy::parse(&self.outbound_allow)
            .map_err(|e| invalid("outbound_allow", "GWSYNC_OUTBOUND_ALLOW", e))?;
        if self.max_body_bytes < 1024 {
            return Err(invalid("max_body_bytes", "GWSYNC_MAX_BODY_BYTES", "must be at least 1024"));
        }
        let sync = &self.sync;
        if sync.workers == 0 || sync.workers > 256 {
            return Err(invalid("sync.workers", "GWSYNC_SYNC__WORKERS", "must be 1 to 256"));
        }
        if sync.tenant_workers == 0 || sync.tenant_workers > sync.workers {
            return Err(invalid("sync.tenant_workers", "GWSYNC_SYNC__TENANT_WORKERS", "must be 1 to sync.workers"));
        }
        if sync.token_timeout < Duration::from_millis(100) || sync.token_timeout > Duration::from_secs(120) {
            return Err(invalid("sync.token_timeout", "GWSYNC_SYNC__TOKEN_TIMEOUT", "must be between 100ms and 2m"));
        }
        if !(1..=2500).contains(&sync.page_size) {
            return Err(invalid("sync.page_size", "GWSYNC_SYNC__PAGE_SIZE", "must be 1 to 2500 (Google's maximum)"));
        }
        for (key, env, share) in [
            ("sync.backstop_share", "GWSYNC_SYNC__BACKSTOP_SHARE", sync.backstop_share),
            ("sync.startup_share", "GWSYNC_SYNC__STARTUP_SHARE", sync.startup_share),
        ] {
            if !(share > 0.0 && share <= 1.0) {
                return Err(invalid(key, env, "must be a share above 0 and at most 1 (e.g. 0.2)"));
            }
        }
        if sync.project_requests_per_minute == 0 || sync.user_requests_per_minute == 0 {
            return Err(invalid(
                "sync.project_requests_per_minute",
                "GWSYNC_SYNC__PROJECT_REQUESTS_PER_MINUTE",
                "quotas must be positive",
            ));
        }
        if sync.channel_ttl < Duration::from_secs(3600) || sync.channel_ttl > Duration::from_secs(7 * 24 * 3600) {
            return Err(invalid(
                "sync.channel_ttl",
                "GWSYNC_SYNC__CHANNEL_TTL",
                "must be between 1h and 7d (Google's maximum)",
            ));
        }
        let day = Duration::from_secs(24 * 3600);
        for (key, env, value, max) in [
            ("sync.full_sync_lookback", "GWSYNC_SYNC__FULL_SYNC_LOOKBACK", sync.full_sync_lookback, 365 * day),
            ("sync.slow_retry", "GWSYNC_SYNC__SLOW_RETRY", sync.slow_retry, 7 * day),
            ("sync.max_backoff", "GWSYNC_SYNC__MAX_BACKOFF", sync.max_backoff, day),
            ("sync.rerun_delay", "GWSYNC_SYNC__RERUN_DELAY", sync.rerun_delay, Duration::from_secs(3600)),
            ("sync.backstop_interval", "GWSYNC_SYNC__BACKSTOP_INTERVAL", sync.backstop_interval, 7 * day),
            ("shutdown_timeout", "GWSYNC_SHUTDOWN_TIMEOUT", self.shutdown_timeout, Duration::from_secs(3600)),
            (
                "cluster.leader_retry",
                "GWSYNC_CLUSTER__LEADER_RETRY",
                self.cluster.leader_retry,
                Duration::from_secs(60),
            ),
            ("cluster.claim_lease", "GWSYNC_CLUSTER__CLAIM_LEASE", self.cluster.claim_lease, Duration::from_secs(3600)),
        ] {
            if value > max {
                return Err(invalid(key, env, format!("must be at most {}", humantime::format_duration(max))));
            }
        }
        if self.cluster.leader_retry < Duration::from_millis(100) {
            return Err(invalid("cluster.leader_retry", "GWSYNC_CLUSTER__LEADER_RETRY", "must be at least 100ms"));
        }
        if self.cluster.claim_lease < Duration::from_secs(2) {
            return Err(invalid("cluster.claim_lease", "GWSYNC_CLUSTER__CLAIM_LEASE", "must be at least 2s"));
        }
        if let Some(id) = &self.cluster.replica_id
            && (id.is_empty() || id.len() > 200)
        {
            return Err(invalid("cluster.replica_id", "GWSYNC_CLUSTER__REPLICA_ID", "must be 1 to 200 characters"));
        }
        if self.store.cache_capacity_mb == 0 || self.store.cache_capacity_mb > 65_536 {
            return Err(invalid("store.cache_capacity_mb", "GWSYNC_STORE__CACHE_CAPACITY_MB", "must be 1 to 65536"));
        }
        if self.store.pool_size == 0 || self.store.pool_size > 1000 {
            return Err(invalid("store.pool_size", "GWSYNC_STORE__POOL_SIZE", "must be 1 to 1000"));
        }
        if self.store.connect_timeout < Duration::from_millis(100)
            || self.store.connect_timeout > Duration::from_secs(600)
        {
            return Err(invalid(
                "store.connect_timeout",
                "GWSYNC_STORE__CONNECT_TIMEOUT",
                "must be between 100ms and 10m",
            ));
        }
        if let Some(url) = &self.store.database_url {
            // Only the scheme is named: the rest may hold a password.
            let url = url.expose_secret();
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(invalid(
                    "store.database_url",
                    "GWSYNC_DATABASE_URL",
                    "must be a postgres:// or postgresql:// URL",
                ));
            }
        }
        if sync.renew_within >= sync.channel_ttl {
            return Err(invalid(
                "sync.renew_within",
                "GWSYNC_SYNC__RENEW_WITHIN",
                "must be shorter than sync.channel_ttl, or every channel would be renewed at once",
            ));
        }
        if sync.keeper_interval < Duration::from_secs(1) || sync.keeper_interval > sync.renew_within / 4 {
            return Err(invalid(
                "sync.keeper_interval",
                "GWSYNC_SYNC__KEEPER_INTERVAL",
                "must be at least 1s and at most a quarter of sync.renew_within",
            ));
        }
        if sync.backstop_interval < Duration::from_secs(60) {
            return Err(invalid("sync.backstop_interval", "GWSYNC_SYNC__BACKSTOP_INTERVAL", "must be at least 1m"));
        }
        let horizon = self.presence.horizon;
        if horizon < Duration::from_secs(2 * 24 * 3600) || horizon > Duration::from_secs(90 * 24 * 3600) {
            return Err(invalid("presence.horizon", "GWSYNC_PRESENCE__HORIZON", "must be between 2d and 90d"));
        }
        let presence = &self.presence;
        if !(1..=64).contains(&presence.deliveries_per_tenant) {
            return Err(invalid(
                "presence.deliveries_per_tenant",
                "GWSYNC_PRESENCE__DELIVERIES_PER_TENANT",
                "must be 1 to 64",
            ));
        }
        if presence.delivery_timeout < Duration::from_millis(100)
            || presence.delivery_timeout > Duration::from_secs(120)
        {
            return Err(invalid(
                "presence.delivery_timeout",
                "GWSYNC_PRESENCE__DELIVERY_TIMEOUT",
                "must be between 100ms and 2m",
            ));
        }
        if presence.delivery_alert_after > 7 * day {
            return Err(invalid(
                "presence.delivery_alert_after",
                "GWSYNC_PRESENCE__DELIVERY_ALERT_AFTER",
                "must be at most 7d",
            ));
        }
        if !(1..=100).contains(&presence.breaker_threshold) {
            return Err(invalid(
                "presence.breaker_threshold",
                "GWSYNC_PRESENCE__BREAKER_THRESHOLD",
                "must be 1 to 100",
            ));
        }
        if !(1..=1000).contains(&self.contacts.page_size) {
            return Err(invalid(
                "contacts.page_size",
                "GWSYNC_CONTACTS__PAGE_SIZE",
                "must be 1 to 1000 (Google's maximum)",
            ));
        }
        if self.contacts.user_requests_per_minute == 0 {
            return Err(invalid(
                "contacts.user_requests_per_minute",
                "GWSYNC_CONTACTS__USER_REQUESTS_PER_MINUTE",
                "must be positive",
            ));
        }
        if !(1..=64).contains(&self.contacts.parallel_tenants) {
            return Err(invalid("contacts.parallel_tenants", "GWSYNC_CONTACTS__PARALLEL_TENANTS", "must be 1 to 64"));
        }
        if self.contacts.match_last_digits > 15 || (1..6).contains(&self.contacts.match_last_digits) {
            return Err(invalid(
                "contacts.match_last_digits",
                "GWSYNC_CONTACTS__MATCH_LAST_DIGITS",
                "must be 0 (off) or 6 to 15",
            ));
        }
        let retention = self.audit.retention;
        if retention < Duration::from_secs(24 * 3600) || retention > Duration::from_secs(3650 * 24 * 3600) {
            return Err(invalid("audit.retention", "GWSYNC_AUDIT__RETENTION", "must be between 1d and 3650d"));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "GWSYNC_DATA_DIR", "must name a directory"));
        }
        if !is_https_or_loopback(&self.oidc_issuer) {
            return Err(invalid(
                "oidc_issuer",
                "GWSYNC_OIDC_ISSUER",
                "must be https:// (plain http only for a loopback address in tests)",
            ));
        }
        if self.oidc_client_id.is_some() != self.oidc_client_secret.is_some() {
            return Err(invalid(
                "oidc_client_id",
                "GWSYNC_OIDC_CLIENT_ID",
                "and GWSYNC_OIDC_CLIENT_SECRET are set together (the OAuth client of type Web application)",
            ));
        }
        for email in self.operator_emails() {
            if !email_address::EmailAddress::is_valid(&email) {
                return Err(invalid("operators", "GWSYNC_OPERATORS", format!("'{email}' is not an email address")));
            }
        }
        if self.console.session_ttl < Duration::from_secs(60)
            || self.console.session_ttl > Duration::from_secs(30 * 24 * 3600)
        {
            return Err(invalid("console.session_ttl", "GWSYNC_CONSOLE__SESSION_TTL", "must be between 1m and 30d"));
        }
        Ok(())
    }

    /// The operators' emails, lower-cased.
    pub fn operator_emails(&self) -> Vec<String> {
        self.operators.split(',').map(|e| e.trim().to_lowercase()).filter(|e| !e.is_empty()).collect()
    }

    /// What `serve` needs beyond `validate`: an admin token, a master key and a public URL.
    pub fn serve_settings(&self) -> Result<(SecretString, MasterKey, Url), ConfigError> {
        let token = self.admin_token.clone().ok_or_else(|| {
            invalid(
                "admin_token",
                "GWSYNC_ADMIN_TOKEN",
                "is required: the admin API's bearer token (e.g. `openssl rand -hex 32`)",
            )
        })?;
        if token.expose_secret().len() < 16 {
            return Err(invalid("admin_token", "GWSYNC_ADMIN_TOKEN", "must be at least 16 characters"));
        }
        let master_key = self.master_key()?;
        let public_url = self.public_url.clone().ok_or_else(|| {
            invalid("public_url", "GWSYNC_PUBLIC_URL", "is required: the https:// address your reverse proxy serves gwsync at, where Google posts notifications")
        })?;
        if !is_https_or_loopback(&public_url) {
            return Err(invalid(
                "public_url",
                "GWSYNC_PUBLIC_URL",
                "must be https:// (Google posts only to https; plain http only for a loopback address in tests)",
            ));
        }
        Ok((token, master_key, public_url))
    }

    fn master_key(&self) -> Result<MasterKey, ConfigError> {
        let text = match (&self.master_key, &self.master_key_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "master_key",
                    "GWSYNC_MASTER_KEY",
                    "set either master_key or master_key_file, not both",
                ));
            }
            (Some(k), None) => k.expose_secret().trim().to_owned(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| {
                    invalid("master_key_file", "GWSYNC_MASTER_KEY_FILE", format!("cannot read {}: {e}", path.display()))
                })?
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned(),
            (None, None) => {
                return Err(invalid(
                    "master_key",
                    "GWSYNC_MASTER_KEY",
                    "is required: it encrypts service-account keys at rest; create one with `openssl rand -base64 32` (or point GWSYNC_MASTER_KEY_FILE at a file holding it)",
                ));
            }
        };
        let bytes = base64::engine::general_purpose::STANDARD.decode(text.as_bytes()).map_err(|_| {
            invalid("master_key", "GWSYNC_MASTER_KEY", "is not base64 (create one with `openssl rand -base64 32`)")
        })?;
        MasterKey::from_bytes(&bytes).map_err(|_| {
            invalid("master_key", "GWSYNC_MASTER_KEY", format!("must be 32 bytes; this one is {}", bytes.len()))
        })
    }
}

/// A comma-separated string, or a list of strings (joined with commas).
fn comma_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum List {
        One(String),
        Many(Vec<String>),
    }
    Ok(match List::deserialize(d)? {
        List::One(s) => s,
        List::Many(v) => v.join(","),
    })
}

/// https anywhere, or http to a loopback host (tests, the demo).
pub fn is_https_or_loopback(url: &Url) -> bool {
    match url.scheme() {
        "https" => url.host().is_some(),
        "http" => match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        _ => false,
    }
}

#[cfg(test)]
// figment's Jail closures return its own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    const KEY: &str = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=";

    #[test]
    fn the_example_file_is_the_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("gwsync.toml", include_str!("../config/gwsync.example.toml"))?;
            let c = Config::load(Some(Path::new("gwsync.toml"))).map_err(|e| e.to_string())?;
            let d = Config::default();
            assert_eq!(
                (c.listen, c.data_dir.clone(), c.max_body_bytes, c.shutdown_timeout),
                (d.listen, d.data_dir, d.max_body_bytes, d.shutdown_timeout)
            );
            assert_eq!(c.google_api_url, d.google_api_url);
            assert_eq!(c.outbound_allow, d.outbound_allow);
            assert_eq!(c.store.cache_capacity_mb, d.store.cache_capacity_mb);
            assert_eq!(c.audit.retention, d.audit.retention);
            Ok(())
        });
    }

    #[test]
    fn the_environment_wins_over_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("gwsync.toml", "listen = \"127.0.0.1:9000\"\n[store]\ncache_capacity_mb = 8\n")?;
            jail.set_env("GWSYNC_LISTEN", "127.0.0.1:9100");
            jail.set_env("GWSYNC_STORE__CACHE_CAPACITY_MB", "16");
            jail.set_env("GWSYNC_SERVER", "http://elsewhere:8080");
            jail.set_env("GWSYNC_SYNC__PAGE_SIZE", "2");
            jail.set_env("GWSYNC_PRESENCE__HORIZON", "3d");
            let c = Config::load(Some(Path::new("gwsync.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.listen.port(), 9100);
            assert_eq!(c.store.cache_capacity_mb, 16);
            assert_eq!(c.sync.page_size, 2, "every section reads the environment");
            assert_eq!(c.presence.horizon, Duration::from_secs(3 * 24 * 3600));
            jail.set_env("GWSYNC_SYNC__PAGESIZE", "2");
            let e = Config::load(None).unwrap_err().to_string();
            assert!(e.contains("pagesize"), "a misspelt variable is refused by name: {e}");
            Ok(())
        });
    }

    #[test]
    fn the_database_url_comes_from_gwsync_database_url_and_never_shows() {
        figment::Jail::expect_with(|jail| {
            assert!(Config::load(None).map_err(|e| e.to_string())?.store.database_url.is_none(), "sled by default");
            jail.set_env("GWSYNC_DATABASE_URL", "postgres://gw:s3cr3t-pw@db.internal/gwsync");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            let url = c.store.database_url.as_ref().map(|u| u.expose_secret().to_owned());
            assert_eq!(url.as_deref(), Some("postgres://gw:s3cr3t-pw@db.internal/gwsync"));
            assert!(!format!("{c:?}").contains("s3cr3t-pw"), "Debug output keeps the password out");
            jail.set_env("GWSYNC_DATABASE_URL", "mysql://gw:s3cr3t-pw@db.internal/gwsync");
            let e = Config::load(None).unwrap_err().to_string();
            assert!(e.contains("GWSYNC_DATABASE_URL") && !e.contains("s3cr3t-pw"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn the_outbound_allow_list_comes_from_the_environment_or_a_toml_list_and_is_checked() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("GWSYNC_OUTBOUND_ALLOW", "127.0.0.0/8,pbx.corp.example");
            assert_eq!(Config::load(None).map_err(|e| e.to_string())?.outbound_allow, "127.0.0.0/8,pbx.corp.example");
            jail.set_env("GWSYNC_OUTBOUND_ALLOW", "10.0.0.1");
            assert_eq!(Config::load(None).map_err(|e| e.to_string())?.outbound_allow, "10.0.0.1");
            jail.set_env("GWSYNC_OUTBOUND_ALLOW", "10.0.0.0/33");
            let e = Config::load(None).unwrap_err().to_string();
            assert!(e.contains("GWSYNC_OUTBOUND_ALLOW") && e.contains("10.0.0.0/33"), "{e}");
            jail.clear_env();
            jail.create_file("gwsync.toml", "outbound_allow = [\"10.20.0.0/16\", \"pbx.lan\"]\n")?;
            let c = Config::load(Some(Path::new("gwsync.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.outbound_allow, "10.20.0.0/16,pbx.lan");
            assert_eq!(Config::default().outbound_allow, "", "nothing is allowed by default");
            Ok(())
        });
    }

    #[test]
    fn errors_name_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "listen = \"127.0.0.1:9000\"\nlisten_port = 3\n")?;
            let e = Config::load(Some(Path::new("bad.toml"))).unwrap_err().to_string();
            assert!(e.contains("listen_port"), "{e}");
            jail.set_env("GWSYNC_MAX_BODY_BYTES", "12");
            let e = Config::load(None).unwrap_err().to_string();
            assert!(e.contains("max_body_bytes"), "{e}");
            jail.clear_env();
            jail.set_env("GWSYNC_CONTACTS__PARALLEL_TENANTS", "0");
            let e = Config::load(None).unwrap_err().to_string();
            assert!(e.contains("GWSYNC_CONTACTS__PARALLEL_TENANTS") && e.contains("1 to 64"), "{e}");
            Ok(())
        });
        let mut c = Config { admin_token: Some("0123456789abcdef".to_owned().into()), ..Config::default() };
        let e = c.serve_settings().unwrap_err().to_string();
        assert!(e.contains("GWSYNC_MASTER_KEY") && e.contains("openssl rand -base64 32"), "{e}");
        c.master_key = Some("c2hvcnQ=".to_owned().into());
        assert!(c.serve_settings().unwrap_err().to_string().contains("must be 32 bytes"));
        c.master_key = Some(KEY.to_owned().into());
        assert!(c.serve_settings().unwrap_err().to_string().contains("GWSYNC_PUBLIC_URL"));
        c.public_url = Some("http://gwsync.example.com".parse().unwrap());
        assert!(c.serve_settings().unwrap_err().to_string().contains("https"));
        c.public_url = Some("https://gwsync.example.com".parse().unwrap());
        assert!(c.serve_settings().is_ok());
    }
}
