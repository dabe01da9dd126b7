//! Log setup: `RUST_LOG` (default `info`) in plain or JSON lines. Whatever `RUST_LOG` says,
//! yup-oauth2 is held at `warn`: at debug it prints signed assertions and access tokens.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Directives that always win over `RUST_LOG`.
const PINNED: &[&str] = &["yup_oauth2=warn", "hyper_util=info", "sled=info"];

pub fn filter(default: &str) -> EnvFilter {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    for d in PINNED {
        if let Ok(d) = d.parse() {
            filter = filter.add_directive(d);
        }
    }
    filter
}

/// Installs the global subscriber at `info` unless `RUST_LOG` says otherwise; a second call
/// (tests) is a no-op.
pub fn init(format: LogFormat) {
    init_with_default(format, "info");
}

/// Like `init`, with another default level (the demo keeps its screen for profile switches).
pub fn init_with_default(format: LogFormat, default: &str) {
    let builder = tracing_subscriber::fmt().with_env_filter(filter(default)).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Plain => builder.try_init(),
    };
}
