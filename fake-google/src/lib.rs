//! fake-google: a faithful stand-in for the Google endpoints gwsync uses — the OAuth2 token
//! endpoint (JWT-bearer grant with domain-wide delegation), Calendar v3 (events, push channels,
//! sync tokens) and People v1 (connections, directory) — plus a control API under `/_fake/`.
//!
//! Nothing here can reach Google, so every test of gwsync stands on this fake; it is as strict as
//! Google where Google is documented (see `../shared/google/NOTES.md`) and configurable where
//! Google varies. Start it inside a test:
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let fake = fake_google::FakeGoogle::start().await?;
//! println!("token endpoint: {}", fake.token_uri());
//! fake.stop().await;
//! # Ok(()) }
//! ```

pub mod auth;
pub mod calendar;
pub mod clock;
pub mod control;
pub mod discovery;
pub mod errors;
pub mod jwt;
pub mod keys;
pub mod oauth;
pub mod oidc;
pub mod params;
pub mod people;
pub mod push;
pub mod quota;
pub mod recurrence;
pub mod reqlog;
pub mod tokens;
pub mod world;

use std::net::{SocketAddr, TcpListener};

use actix_web::dev::{ServerHandle, Service};
use actix_web::{App, HttpMessage, HttpRequest, HttpResponse, HttpServer, web};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::{FakeClock, google_timestamp};
use crate::reqlog::{ApiCall, RequestRecord};
use crate::tokens::TokenCodec;
use crate::world::{Shared, World};

/// Largest request body the fake reads (Google's own limits are larger; nothing we send is).
const MAX_BODY: usize = 8 * 1024 * 1024;

/// A running fake. Dropping it without `stop` leaves the server running until the runtime ends.
pub struct FakeGoogle {
    shared: web::Data<Shared>,
    addr: SocketAddr,
    handle: ServerHandle,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
}

impl FakeGoogle {
    /// Starts on a free loopback port.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0".parse().map_err(std::io::Error::other)?).await
    }

    /// Starts on `addr`; must be called inside a Tokio runtime.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let (push_tx, push_rx) = mpsc::unbounded_channel();
        let shared = web::Data::new(Shared {
            base_url: format!("http://{addr}"),
            clock: FakeClock::default(),
            world: Mutex::new(World::new()),
            push_tx,
            tokens: TokenCodec::new(),
        });
        let shutdown = CancellationToken::new();
        tokio::spawn(push::run_delivery(shared.clone(), push_rx, shutdown.clone()));

        let app_shared = shared.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(app_shared.clone())
                .app_data(web::PayloadConfig::new(MAX_BODY))
                .wrap_fn(|req, srv| {
                    let shared = req.app_data::<web::Data<Shared>>().cloned();
                    let (http_method, path, query) =
                        (req.method().to_string(), req.path().to_owned(), req.query_string().to_owned());
                    let fut = srv.call(req);
                    async move {
                        let res = fut.await?;
                        if let Some(shared) = shared
                            && path != "/_fake/requests"
                        {
                            let call = res.request().extensions().get::<ApiCall>().cloned();
                            let is_control = path.starts_with("/_fake");
                            let record = RequestRecord {
                                seq: 0,
                                time: google_timestamp(shared.clock.real_now()),
                                fake_time: google_timestamp(shared.clock.now()),
                                http_method,
                                path,
                                query,
                                method: call
                                    .as_ref()
                                    .map(|c| c.method.to_owned())
                                    .or(is_control.then(|| "control".to_owned())),
                                user: call.and_then(|c| c.user),
                                status: res.status().as_u16(),
                            };
                            shared.world.lock().requests.push(record);
                        }
                        Ok(res)
                    }
                })
                .route("/token", web::post().to(oauth::token))
                .route("/.well-known/openid-configuration", web::get().to(oidc::discovery))
                .route("/o/oauth2/v2/auth", web::get().to(oidc::authorize))
                .route("/o/oauth2/auth", web::get().to(oidc::authorize))
                .route("/o/oauth2/v2/auth/choose", web::post().to(oidc::choose))
                .route("/oauth2/v3/certs", web::get().to(oidc::jwks))
                .route("/v1/userinfo", web::get().to(oidc::userinfo))
                .route("/v1/userinfo", web::post().to(oidc::userinfo))
                .route("/oauth2/v3/userinfo", web::get().to(oidc::userinfo))
                .route("/revoke", web::post().to(oidc::revoke))
                .route("/discovery/v1/apis/{api}/{version}/rest", web::get().to(discovery_document))
                .route("/$discovery/rest", web::get().to(people_discovery_document))
                .configure(control::configure)
                .configure(calendar::configure)
                .configure(people::configure)
                .default_service(web::to(|| async {
                    HttpResponse::NotFound()
                        .json(json!({"error": {"code": 404, "message": "Not Found", "status": "NOT_FOUND"}}))
                }))
        })
        .workers(2)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)?
        .run();
        let handle = server.handle();
        let server = tokio::spawn(server);
        Ok(FakeGoogle { shared, addr, handle, shutdown, server })
    }

    /// `http://127.0.0.1:<port>` — the Calendar and People base URL, and the token URL's root.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the key files it hands out carry as `token_uri`.
    pub fn token_uri(&self) -> String {
        self.shared.token_uri()
    }

    /// The OpenID Connect issuer: the base URL unless [`FakeGoogle::set_issuer`] changed it.
    /// Its discovery document is at `{base_url}/.well-known/openid-configuration`.
    pub fn issuer(&self) -> String {
        oidc::issuer(&self.shared)
    }

    /// Sets the `iss` of ID tokens and the discovery document's `issuer` (None: the base URL).
    pub fn set_issuer(&self, issuer: Option<String>) {
        self.shared.world.lock().oidc.issuer = issuer;
    }

    /// Registers an OAuth client (Web application) for Sign in with Google and returns it; the
    /// same as `POST /_fake/oauth-clients`.
    pub fn add_oauth_client(&self, name: &str, redirect_uris: &[&str]) -> Result<oidc::OAuthClient, String> {
        oidc::add_client(&self.shared, name, redirect_uris.iter().map(|u| (*u).to_owned()).collect())
    }

    /// The fake's clock; `advance` it to age channels and tokens.
    pub fn clock(&self) -> &FakeClock {
        &self.shared.clock
    }

    /// Stops serving and delivering; returns when the server has shut down.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.stop(true).await;
        let _ = self.server.await;
    }
}

async fn discovery_document(shared: web::Data<Shared>, path: web::Path<(String, String)>) -> HttpResponse {
    let (api, version) = path.into_inner();
    let wanted = matches!((api.as_str(), version.as_str()), ("calendar", "v3") | ("people", "v1"));
    match discovery::document(&api, &shared.base_url).filter(|_| wanted) {
        Some(doc) => HttpResponse::Ok().json(doc),
        None => HttpResponse::NotFound()
            .json(json!({"error": {"code": 404, "message": "Not Found", "status": "NOT_FOUND"}})),
    }
}

async fn people_discovery_document(shared: web::Data<Shared>, req: HttpRequest) -> HttpResponse {
    let version = params::Params::parse(req.query_string()).get("version").unwrap_or("v1").to_owned();
    discovery_document(shared, web::Path::from(("people".to_owned(), version))).await
}
