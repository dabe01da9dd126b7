//! `fake-google --listen 127.0.0.1:8085`: the fake as a standalone server, for the demo, manual
//! checks with Google's own client libraries, and scripts.

use std::net::SocketAddr;

use clap::Parser;

#[derive(Parser)]
#[command(version, about = "A faithful fake of Google's OAuth2, Calendar v3 and People v1 endpoints")]
struct Args {
    /// Address to listen on. Keep it on loopback: the control API has no authentication.
    #[arg(long, default_value = "127.0.0.1:8085")]
    listen: SocketAddr,
    /// The OpenID Connect issuer to put into ID tokens and the discovery document (default: the
    /// fake's own base URL, which is where its discovery document is served).
    #[arg(long)]
    issuer: Option<String>,
    /// Registers an OAuth client for Sign in with Google with this redirect URI (repeatable) and
    /// prints its client_id and client_secret.
    #[arg(long = "oauth-redirect-uri")]
    oauth_redirect_uris: Vec<String>,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .init();
    let args = Args::parse();
    let fake = fake_google::FakeGoogle::start_on(args.listen).await?;
    if args.issuer.is_some() {
        fake.set_issuer(args.issuer);
    }
    println!("fake-google listening on {}", fake.base_url());
    println!("  token endpoint  {}", fake.token_uri());
    println!("  Calendar v3     {}/calendar/v3/", fake.base_url());
    println!("  People v1       {}/v1/", fake.base_url());
    println!("  OpenID issuer   {} (discovery: {}/.well-known/openid-configuration)", fake.issuer(), fake.base_url());
    if !args.oauth_redirect_uris.is_empty() {
        let client = fake
            .add_oauth_client("gwsync", &args.oauth_redirect_uris.iter().map(String::as_str).collect::<Vec<_>>())
            .map_err(std::io::Error::other)?;
        println!("  OAuth client    client_id={} client_secret={}", client.client_id, client.client_secret);
    }
    println!("  control API     {}/_fake/", fake.base_url());
    tokio::signal::ctrl_c().await?;
    fake.stop().await;
    Ok(())
}
