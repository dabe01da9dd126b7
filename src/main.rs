//! The `gwsync` command: parses the command line and dispatches; the work lives in the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "Keeps a business phone system in step with Google Workspace calendars and contacts")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve {
        /// TOML configuration file (defaults, then this file, then GWSYNC_* environment).
        #[arg(long)]
        config: Option<std::path::PathBuf>,
    },
    /// Run against a bundled fake Google, with sample data, so you can see it work.
    Demo {
        /// Where the bundled fake Google listens (default: a free loopback port).
        #[arg(long)]
        fake_listen: Option<std::net::SocketAddr>,
    },
    /// Ask the running server to renew push channels that expire soon.
    Renew {
        /// Renew channels expiring within this long.
        #[arg(long, default_value = "48h")]
        within: String,
    },
    /// Walk a tenant's Google setup step by step and say what is wrong and how to fix it.
    Diagnose {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        user: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo { fake_listen } => gwsync::demo::run(fake_listen),
        Command::Serve { .. } => Err(anyhow::anyhow!("`gwsync serve` is not built yet (issue #3)")),
        Command::Renew { .. } => Err(anyhow::anyhow!("`gwsync renew` is not built yet (issue #6)")),
        Command::Diagnose { .. } => Err(anyhow::anyhow!("`gwsync diagnose` is not built yet (issue #3)")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gwsync: {e:#}");
            ExitCode::FAILURE
        }
    }
}
