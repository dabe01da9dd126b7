//! The `gwsync` command: parses the command line and dispatches; the work lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use gwsync::client::{AdminClient, Body, DEFAULT_SERVER, api_path, parse_profile};
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(version, about = "Keeps a business phone system in step with Google Workspace calendars and contacts")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the operator commands find the running server; the token comes from GWSYNC_TOKEN or
/// else GWSYNC_ADMIN_TOKEN (never from the command line, where `ps` would show it).
#[derive(Args, Clone)]
struct ServerArgs {
    /// The gwsync server's address.
    #[arg(long, env = "GWSYNC_SERVER", default_value = DEFAULT_SERVER, global = true)]
    server: String,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve {
        /// TOML configuration file (defaults, then this file, then GWSYNC_* environment).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the service against a bundled fake Google with a demo company, and watch the
    /// profile switches arrive (no key, no config, no network).
    Demo {
        /// Where gwsync's API listens (default 127.0.0.1:8080, or a free port if taken).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Ask the running server to renew push channels that expire soon (for cron).
    Renew {
        /// Renew channels expiring within this long.
        #[arg(long, default_value = "48h")]
        within: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Walk a tenant's Google setup step by step and say what is wrong and how to fix it.
    Diagnose {
        #[arg(long)]
        tenant: String,
        /// The user to check as (default: the tenant's directory admin, else its first user).
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Manage tenants (companies) on the running server.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Manage phone users on the running server.
    User {
        #[command(subcommand)]
        command: UserCommand,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Manage API tokens: operator tokens, and a tenant's tenant_admin and integration tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Work on a stopped store's data directly (no server).
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Show the audit log (newest first): changes made through the API and refused requests.
    Audit {
        /// Only this tenant's entries (what its tenant_admin tokens may read).
        #[arg(long)]
        tenant: Option<String>,
        /// Entries to show (1-1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Entries older than this entry id (the previous page's `next_before`).
        #[arg(long)]
        before: Option<u64>,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Copy everything from a stopped store into an empty one (sled ↔ PostgreSQL), then verify
    /// by counting each kind of record on both sides. Each side is a data_dir or a
    /// postgres:// URL (a password in it shows in `ps`: prefer ~/.pgpass).
    Copy {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Make a token; its secret is printed this once (as `token`).
    Create {
        /// What it is for, e.g. pbx.
        #[arg(long)]
        name: String,
        /// operator (without --tenant), or tenant_admin / integration (with --tenant).
        #[arg(long, value_parser = ["operator", "tenant_admin", "integration"])]
        role: String,
        /// The tenant the token belongs to.
        #[arg(long)]
        tenant: Option<String>,
        /// It expires after this long, e.g. 90d (default: never; revoke it instead).
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// List tokens (all of them, or one tenant's), without their secrets.
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a token: its next use is refused.
    Revoke {
        id: String,
        /// The tenant the token belongs to (needed with a tenant_admin token).
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// List tenants.
    List,
    /// Show a tenant.
    Get { tenant: String },
    /// Create or change a tenant.
    Put {
        tenant: String,
        /// The whole tenant as a JSON file (`-` for stdin); the flags below are the alternative.
        #[arg(long, conflicts_with_all = ["domain", "directory_admin", "region", "phone_url", "phone_secret_file", "poll_interval", "personal_contacts"])]
        file: Option<PathBuf>,
        /// The Workspace domain, e.g. acme.se.
        #[arg(long, required_unless_present = "file")]
        domain: Option<String>,
        /// The user whose view of the directory is synced as the phonebook.
        #[arg(long)]
        directory_admin: Option<String>,
        /// Region for phone numbers written without a country code (ISO code, e.g. SE).
        #[arg(long)]
        region: Option<String>,
        /// Where profile switches are posted.
        #[arg(long, requires = "phone_secret_file")]
        phone_url: Option<String>,
        /// A file holding the phone system's webhook secret (whsec_…).
        #[arg(long, requires = "phone_url")]
        phone_secret_file: Option<PathBuf>,
        /// How often contacts are polled, e.g. 15m.
        #[arg(long)]
        poll_interval: Option<String>,
        /// Also sync every user's own contacts.
        #[arg(long)]
        personal_contacts: Option<bool>,
    },
    /// Delete a tenant with its users and key.
    Delete { tenant: String },
    /// Upload the service account's JSON key file.
    Credentials { tenant: String, key_file: PathBuf },
}

#[derive(Subcommand)]
enum UserCommand {
    /// List a tenant's users.
    List { tenant: String },
    /// Show a user.
    Get { tenant: String, email: String },
    /// Create or change a user.
    Put {
        tenant: String,
        /// The user's Google address (the "Google alias").
        email: String,
        /// The phone system's id of the user.
        #[arg(long)]
        external_id: Option<String>,
        /// A profile and its triggers, highest priority first: --profile "Lunch: lunch, lunchmöte".
        #[arg(long = "profile")]
        profiles: Vec<String>,
        /// The whole user as a JSON file (`-` for stdin) instead of the flags.
        #[arg(long, conflicts_with_all = ["external_id", "profiles"])]
        file: Option<PathBuf>,
    },
    /// Delete a user.
    Delete { tenant: String, email: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo { listen } => gwsync::demo::run(listen),
        Command::Serve { config } => serve(config),
        Command::Store { command: StoreCommand::Copy { from, to } } => store_copy(&from, &to),
        other => operator(other),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gwsync: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Option<PathBuf>) -> Result<ExitCode> {
    let config = gwsync::config::Config::load(config.as_deref())?;
    gwsync::logging::init(config.log_format);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener =
            std::net::TcpListener::bind(config.listen).with_context(|| format!("listening on {}", config.listen))?;
        gwsync::serve(config, listener, shutdown_signal()).await
    })?;
    Ok(ExitCode::SUCCESS)
}

fn store_copy(from: &str, to: &str) -> Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    print!("{}", runtime.block_on(gwsync::store::copy::run(from, to))?);
    Ok(ExitCode::SUCCESS)
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

fn read_input(path: &PathBuf) -> Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
        Ok(buf)
    } else {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    }
}

fn read_json(path: &PathBuf) -> Result<Value> {
    serde_json::from_slice(&read_input(path)?).with_context(|| format!("{} is not JSON", path.display()))
}

fn print(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn operator(command: Command) -> Result<ExitCode> {
    let token = ["GWSYNC_TOKEN", "GWSYNC_ADMIN_TOKEN"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|t| !t.is_empty()));
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        match command {
            Command::Diagnose { tenant, user, server } => {
                let client = AdminClient::new(&server.server, token)?;
                let query: Vec<(&str, &str)> = user.iter().map(|u| ("user", u.as_str())).collect();
                let path = api_path(&["tenants", &tenant, "diagnose"], &query)?;
                let report: gwsync::diagnose::Report =
                    serde_json::from_value(client.call(Method::GET, &path, None).await?)?;
                print!("{}", report.render());
                Ok(if report.passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
            }
            Command::Renew { within, server } => {
                let client = AdminClient::new(&server.server, token)?;
                let path = api_path(&["channels", "renew"], &[("within", &within)])?;
                // The sweep runs as a job on the server (minutes for 100,000 users): wait for it.
                let started = client.call(Method::POST, &path, None).await?;
                let status = started["status"].as_str().context("the server named no job to watch")?.to_owned();
                let v = loop {
                    let job = client.call(Method::GET, &status, None).await?;
                    match job["state"].as_str() {
                        Some("running") => tokio::time::sleep(std::time::Duration::from_secs(1)).await,
                        Some("done") => break job["result"].clone(),
                        _ => anyhow::bail!("the renewal failed: {}", job["result"]["message"].as_str().unwrap_or("?")),
                    }
                };
                let renewed = v["renewed"].as_array().map_or(0, Vec::len);
                let failed = v["failed"].as_array().cloned().unwrap_or_default();
                for f in &failed {
                    eprintln!(
                        "failed: {} {}: {} — {}",
                        f["tenant"].as_str().unwrap_or("?"),
                        f["user"].as_str().unwrap_or("?"),
                        f["message"].as_str().unwrap_or("?"),
                        f["hint"].as_str().unwrap_or("")
                    );
                }
                println!("renewed {renewed}, failed {}, users checked {}", failed.len(), v["users_checked"]);
                Ok(if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
            }
            Command::Tenant { command, server } => {
                let client = AdminClient::new(&server.server, token)?;
                tenant(&client, command).await.map(|()| ExitCode::SUCCESS)
            }
            Command::User { command, server } => {
                let client = AdminClient::new(&server.server, token)?;
                user(&client, command).await.map(|()| ExitCode::SUCCESS)
            }
            Command::Token { command, server } => {
                let client = AdminClient::new(&server.server, token)?;
                tokens(&client, command).await.map(|()| ExitCode::SUCCESS)
            }
            Command::Audit { tenant, limit, before, server } => {
                let client = AdminClient::new(&server.server, token)?;
                let limit = limit.to_string();
                let before = before.map(|b| b.to_string());
                let mut query = vec![("limit", limit.as_str())];
                if let Some(b) = &before {
                    query.push(("before", b));
                }
                let path = match &tenant {
                    Some(t) => api_path(&["tenants", t, "audit"], &query)?,
                    None => api_path(&["audit"], &query)?,
                };
                print(&client.call(Method::GET, &path, None).await?);
                Ok(ExitCode::SUCCESS)
            }
            _ => bail!("not an operator command"),
        }
    })
}

async fn tenant(client: &AdminClient, command: TenantCommand) -> Result<()> {
    match command {
        TenantCommand::List => print(&client.call(Method::GET, &api_path(&["tenants"], &[])?, None).await?),
        TenantCommand::Get { tenant } => {
            print(&client.call(Method::GET, &api_path(&["tenants", &tenant], &[])?, None).await?)
        }
        TenantCommand::Put {
            tenant,
            file,
            domain,
            directory_admin,
            region,
            phone_url,
            phone_secret_file,
            poll_interval,
            personal_contacts,
        } => {
            let body = match file {
                Some(f) => read_json(&f)?,
                None => {
                    let mut b = json!({ "domain": domain });
                    if let Some(a) = directory_admin {
                        b["directory_admin"] = json!(a);
                    }
                    if let Some(r) = region {
                        b["default_region"] = json!(r);
                    }
                    if let (Some(url), Some(secret_file)) = (phone_url, phone_secret_file) {
                        let secret =
                            String::from_utf8(read_input(&secret_file)?).context("the secret file is not text")?;
                        b["phone_system"] = json!({ "url": url, "secret": secret.trim() });
                    }
                    if poll_interval.is_some() || personal_contacts.is_some() {
                        let mut c = json!({});
                        if let Some(p) = poll_interval {
                            c["poll_interval"] = json!(p);
                        }
                        if let Some(p) = personal_contacts {
                            c["personal_contacts"] = json!(p);
                        }
                        b["contacts"] = c;
                    }
                    b
                }
            };
            print(&client.call(Method::PUT, &api_path(&["tenants", &tenant], &[])?, Some(Body::Json(body))).await?);
        }
        TenantCommand::Delete { tenant } => {
            client.call(Method::DELETE, &api_path(&["tenants", &tenant], &[])?, None).await?;
            println!("deleted tenant {tenant}");
        }
        TenantCommand::Credentials { tenant, key_file } => {
            let bytes = read_input(&key_file)?;
            let v = client
                .call(Method::PUT, &api_path(&["tenants", &tenant, "credentials"], &[])?, Some(Body::Raw(bytes)))
                .await?;
            println!(
                "stored the key of {} (client ID {}); grant that client ID domain-wide delegation, then run: gwsync diagnose --tenant {tenant}",
                v["client_email"].as_str().unwrap_or("?"),
                v["client_id"].as_str().unwrap_or("?")
            );
        }
    }
    Ok(())
}

async fn user(client: &AdminClient, command: UserCommand) -> Result<()> {
    match command {
        UserCommand::List { tenant } => {
            print(&client.call(Method::GET, &api_path(&["tenants", &tenant, "users"], &[])?, None).await?)
        }
        UserCommand::Get { tenant, email } => {
            print(&client.call(Method::GET, &api_path(&["tenants", &tenant, "users", &email], &[])?, None).await?)
        }
        UserCommand::Put { tenant, email, external_id, profiles, file } => {
            let body = match file {
                Some(f) => read_json(&f)?,
                None => {
                    let profiles = profiles.iter().map(|p| parse_profile(p)).collect::<Result<Vec<_>>>()?;
                    let mut b = json!({ "profiles": profiles });
                    if let Some(x) = external_id {
                        b["external_id"] = json!(x);
                    }
                    b
                }
            };
            print(
                &client
                    .call(Method::PUT, &api_path(&["tenants", &tenant, "users", &email], &[])?, Some(Body::Json(body)))
                    .await?,
            );
        }
        UserCommand::Delete { tenant, email } => {
            client.call(Method::DELETE, &api_path(&["tenants", &tenant, "users", &email], &[])?, None).await?;
            println!("deleted user {email}");
        }
    }
    Ok(())
}

async fn tokens(client: &AdminClient, command: TokenCommand) -> Result<()> {
    let base = |tenant: &Option<String>, rest: &[&str]| -> Result<String> {
        let mut segments: Vec<&str> = Vec::new();
        if let Some(t) = tenant {
            segments.extend(["tenants", t.as_str()]);
        }
        segments.push("tokens");
        segments.extend_from_slice(rest);
        api_path(&segments, &[])
    };
    match command {
        TokenCommand::Create { name, role, tenant, expires_in } => {
            let mut body = json!({ "name": name, "role": role });
            if let Some(e) = expires_in {
                body["expires_in"] = json!(e);
            }
            print(&client.call(Method::POST, &base(&tenant, &[])?, Some(Body::Json(body))).await?);
        }
        TokenCommand::List { tenant } => print(&client.call(Method::GET, &base(&tenant, &[])?, None).await?),
        TokenCommand::Revoke { id, tenant } => {
            client.call(Method::DELETE, &base(&tenant, &[&id])?, None).await?;
            println!("revoked token {id}");
        }
    }
    Ok(())
}

/// jemalloc keeps the resident memory of a long-running service close to its live heap (see
/// Cargo.toml for why).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
