//! The outbound URL policy (DESIGN §7): which addresses gwsync may call on a tenant's say-so —
//! its phone system's URL and its key file's `token_uri`.
//!
//! Those URLs come from tenants, and gwsync runs inside someone's network, so a URL could
//! point gwsync at the cloud metadata service, a database on the private network, or gwsync
//! itself. The rules:
//! - `https` only, no `user:password@` in the URL.
//! - No loopback, private (RFC 1918, IPv6 unique local), link-local, unspecified, shared
//!   (carrier-grade NAT), multicast, documentation or otherwise reserved address, and no cloud
//!   metadata host name (`metadata.google.internal`…).
//! - The operator lifts this for chosen targets with `GWSYNC_OUTBOUND_ALLOW` (config key
//!   `outbound_allow`): comma-separated CIDRs (`10.20.0.0/16`, a bare address) or host names.
//!   A target on that list may also be called over plain `http` (an on-premises phone system
//!   on the office network, the fakes of tests on loopback); `http` to anything else is
//!   refused, because a network attacker could read and change it. A host name on the list is
//!   trusted with whatever it resolves to; list CIDRs to pin addresses instead.
//!
//! Checked twice. When a URL is saved (`check`, then `check_resolved`, which resolves a host
//! name and refuses it if any address is refused), so the admin learns at once. And on every
//! connection, because DNS can change after the save (rebinding): the HTTP clients built here
//! resolve names through `Resolver`, which drops refused addresses (and fails when none is
//! left), and IP-literal hosts — which no resolver sees — are checked by `HttpClients::for_url`
//! before each send (and by the token source when it builds a key's authenticator). The clients
//! follow no redirects and use no proxy (a proxy would resolve the name where we cannot look).
//! A name that does not resolve at save time is accepted for `https`: the connect-time check
//! still holds.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use url::{Host, Url};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Resolves a host name to addresses (the system resolver; tests inject their own).
pub type Lookup = Arc<dyn Fn(String) -> BoxFuture<'static, io::Result<Vec<IpAddr>>> + Send + Sync>;

/// How long saving a URL waits for its name to resolve.
const SAVE_LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// Host names of cloud metadata services (their addresses are refused anyway; the names are
/// refused too, so a save off-cloud, where they do not resolve, is refused all the same).
const METADATA_NAMES: &[&str] =
    &["metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal"];

const HOW_TO_ALLOW: &str = "gwsync calls only public https addresses, unless the operator lists the target in \
     GWSYNC_OUTBOUND_ALLOW (config key outbound_allow: comma-separated CIDRs or host names)";

/// Why a URL is not called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefusalKind {
    /// Not an http(s) URL with a host.
    Malformed,
    /// `user:password@` in the URL.
    Credentials,
    /// The scheme or the target is not allowed by the policy.
    Policy,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub kind: RefusalKind,
    pub message: String,
}

fn refused(kind: RefusalKind, message: impl Into<String>) -> Refused {
    Refused { kind, message: message.into() }
}

/// Whether a connection may go to any public address, or only to allowed targets (plain http).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    PublicOrAllowed,
    AllowedOnly,
}

impl Mode {
    fn of(url: &Url) -> Mode {
        if url.scheme() == "https" { Mode::PublicOrAllowed } else { Mode::AllowedOnly }
    }
}

/// The allow list and the checks.
pub struct OutboundPolicy {
    nets: Vec<IpNet>,
    names: Vec<String>,
    lookup: Lookup,
}

impl std::fmt::Debug for OutboundPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundPolicy").field("nets", &self.nets).field("names", &self.names).finish_non_exhaustive()
    }
}

impl Default for OutboundPolicy {
    /// Nothing allowed beyond public https.
    fn default() -> Self {
        OutboundPolicy { nets: Vec::new(), names: Vec::new(), lookup: system_lookup() }
    }
}

fn system_lookup() -> Lookup {
    Arc::new(|host: String| {
        Box::pin(async move { Ok(tokio::net::lookup_host((host.as_str(), 0)).await?.map(|a| a.ip()).collect()) })
    })
}

/// A host name as compared: lower case, without the root's trailing dot.
fn normal_name(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// A DNS name (a last label of digits would be a mistyped address).
fn is_host_name(name: &str) -> bool {
    name.len() <= 253
        && !name.rsplit('.').next().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
        && !name.is_empty()
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl OutboundPolicy {
    /// Parses `outbound_allow`: comma-separated CIDRs, addresses or host names; empty allows
    /// nothing beyond public https.
    pub fn parse(list: &str) -> Result<OutboundPolicy, String> {
        let mut policy = OutboundPolicy::default();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if let Ok(net) = entry.parse::<IpNet>() {
                policy.nets.push(net.trunc());
            } else if let Ok(ip) = entry.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
                policy.nets.push(IpNet::from(ip));
            } else if is_host_name(&normal_name(entry)) {
                policy.names.push(normal_name(entry));
            } else {
                return Err(format!(
                    "'{entry}' is neither a CIDR (e.g. 127.0.0.0/8, 10.20.0.0/16, fd12::/48), an address nor a host name"
                ));
            }
        }
        Ok(policy)
    }

    /// The same list, resolving names with `lookup` (tests).
    pub fn with_lookup(mut self, lookup: Lookup) -> OutboundPolicy {
        self.lookup = lookup;
        self
    }

    fn allows_ip(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    fn allows_name(&self, name: &str) -> bool {
        let name = normal_name(name);
        self.names.contains(&name)
    }

    /// Whether `ip` may be called in `mode`.
    fn verdict(&self, ip: IpAddr, mode: Mode) -> Verdict {
        match (self.allows_ip(ip), special(ip), mode) {
            (true, _, _) => Verdict::Allowed,
            (false, Some(what), _) => Verdict::Special(what),
            (false, None, Mode::PublicOrAllowed) => Verdict::Allowed,
            (false, None, Mode::AllowedOnly) => Verdict::PlainHttp,
        }
    }

    /// The checks that need no DNS: an http(s) URL with a host and no credentials; an address
    /// host allowed; a name that is no metadata service's. Returns the parsed URL.
    pub fn check(&self, raw: &str) -> Result<Url, Refused> {
        let url = Url::parse(raw.trim()).map_err(|e| refused(RefusalKind::Malformed, format!("is not a URL: {e}")))?;
        self.check_url(&url)?;
        Ok(url)
    }

    /// `check` on a parsed URL; returns how its connections are screened.
    pub fn check_url(&self, url: &Url) -> Result<Mode, Refused> {
        if !matches!(url.scheme(), "https" | "http") {
            return Err(refused(RefusalKind::Malformed, "must be an https:// URL"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refused(
                RefusalKind::Credentials,
                "must not contain a user name or password (user:password@): nothing in a URL stays secret",
            ));
        }
        let mode = Mode::of(url);
        let ip = match url.host() {
            None => return Err(refused(RefusalKind::Malformed, "must name a host")),
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
            Some(Host::Domain(name)) => {
                let name = normal_name(name);
                return if self.allows_name(&name) {
                    Ok(mode)
                } else if METADATA_NAMES.contains(&name.as_str()) {
                    Err(refused(
                        RefusalKind::Policy,
                        format!("{name} is a cloud metadata service, which gwsync never calls; {HOW_TO_ALLOW}"),
                    ))
                } else if mode == Mode::AllowedOnly && self.nets.is_empty() {
                    Err(Verdict::PlainHttp.refusal(&name))
                } else {
                    // Over http, allowed only if it resolves to allowed addresses: see
                    // `check_resolved` and the resolver.
                    Ok(mode)
                };
            }
        };
        match self.verdict(ip, mode) {
            Verdict::Allowed => Ok(mode),
            v => Err(v.refusal(&ip.to_string())),
        }
    }

    /// When a URL is saved, after `check`: a host name must resolve to some address a
    /// connection may use — the same screening every connection gets. Names on the allow list
    /// pass, and so do https names that do not resolve (yet): connections are screened anyway.
    pub async fn check_resolved(&self, url: &Url) -> Result<(), Refused> {
        let mode = self.check_url(url)?;
        let Some(Host::Domain(name)) = url.host() else { return Ok(()) };
        let name = normal_name(name);
        if self.allows_name(&name) {
            return Ok(());
        }
        match tokio::time::timeout(SAVE_LOOKUP_TIMEOUT, (self.lookup)(name.clone())).await {
            Ok(Ok(addrs)) if !addrs.is_empty() => self.screen(&name, addrs, mode).map(drop),
            _ if mode == Mode::PublicOrAllowed => Ok(()),
            _ => Err(refused(
                RefusalKind::Policy,
                format!(
                    "must be https:// ({name} does not resolve, so plain http to it cannot be checked); {HOW_TO_ALLOW}"
                ),
            )),
        }
    }

    /// What a connection to `name` may use of `addrs`: the allowed ones, or an error when none
    /// is left.
    fn screen(&self, name: &str, addrs: Vec<IpAddr>, mode: Mode) -> Result<Vec<IpAddr>, Refused> {
        if self.allows_name(name) {
            return Ok(addrs);
        }
        let mut first_refusal = None;
        let kept: Vec<IpAddr> = addrs
            .into_iter()
            .filter(|ip| match self.verdict(*ip, mode) {
                Verdict::Allowed => true,
                v => {
                    first_refusal.get_or_insert(v);
                    false
                }
            })
            .collect();
        match (kept.is_empty(), first_refusal) {
            (false, _) => Ok(kept),
            // Addresses are not named: the name may be internal, and the message reaches tenants.
            (true, Some(Verdict::Special(what))) => Err(refused(
                RefusalKind::Policy,
                format!("{name} resolves only to refused addresses (such as {what}); {HOW_TO_ALLOW}"),
            )),
            (true, Some(v)) => Err(v.refusal(name)),
            (true, None) => Err(refused(RefusalKind::Policy, format!("{name} resolved to no address"))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Allowed,
    /// A non-public address, not allowed.
    Special(&'static str),
    /// A public address over plain http.
    PlainHttp,
}

impl Verdict {
    fn refusal(self, target: &str) -> Refused {
        match self {
            Verdict::Special(what) => refused(RefusalKind::Policy, format!("{target} is {what}; {HOW_TO_ALLOW}")),
            _ => refused(
                RefusalKind::Policy,
                format!(
                    "must be https:// (plain http to {target} is refused: it can be read and changed on the way); {HOW_TO_ALLOW}"
                ),
            ),
        }
    }
}

/// An IPv4 address written as IPv6 (`::ffff:127.0.0.1`) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(a, b, c, d), len).expect("constant prefix length")
}

fn v6(segments: [u16; 8], len: u8) -> Ipv6Net {
    let [a, b, c, d, e, f, g, h] = segments;
    Ipv6Net::new(Ipv6Addr::new(a, b, c, d, e, f, g, h), len).expect("constant prefix length")
}

/// What kind of non-public address `ip` is, or `None` for a public one (IANA's special-purpose
/// registries; IPv6 forms that embed an IPv4 address are judged by it).
pub fn special(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(ip) => special_v4(ip),
        IpAddr::V6(ip) => special_v6(ip),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let table: [(Ipv4Net, &'static str); 16] = [
        (v4(0, 0, 0, 0, 8), "an unspecified address (\"this network\")"),
        (v4(10, 0, 0, 0, 8), "a private address (RFC 1918)"),
        (v4(100, 64, 0, 0, 10), "a shared address (carrier-grade NAT; 100.100.100.200 is a cloud metadata service)"),
        (v4(127, 0, 0, 0, 8), "a loopback address"),
        (v4(169, 254, 0, 0, 16), "a link-local address (169.254.169.254 is the cloud metadata service)"),
        (v4(172, 16, 0, 0, 12), "a private address (RFC 1918)"),
        (
            v4(192, 0, 0, 0, 24),
            "a reserved address (IETF protocol assignments; 192.0.0.192 is a cloud metadata service)",
        ),
        (v4(192, 0, 2, 0, 24), "a documentation address"),
        (v4(192, 88, 99, 0, 24), "a reserved address (6to4 relay)"),
        (v4(192, 168, 0, 0, 16), "a private address (RFC 1918)"),
        (v4(198, 18, 0, 0, 15), "a reserved address (benchmarking)"),
        (v4(198, 51, 100, 0, 24), "a documentation address"),
        (v4(203, 0, 113, 0, 24), "a documentation address"),
        (v4(224, 0, 0, 0, 4), "a multicast address"),
        (v4(255, 255, 255, 255, 32), "the broadcast address"),
        (v4(240, 0, 0, 0, 4), "a reserved address"),
    ];
    table.iter().find(|(net, _)| net.contains(&ip)).map(|(_, what)| *what)
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) reach the IPv4 address inside them.
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96).contains(&ip) {
        return special_v4(embedded(s[6], s[7]));
    }
    if v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16).contains(&ip) {
        return special_v4(embedded(s[1], s[2]));
    }
    let table: [(Ipv6Net, &'static str); 12] = [
        (v6([0, 0, 0, 0, 0, 0, 0, 0], 128), "an unspecified address"),
        (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "a loopback address"),
        (v6([0, 0, 0, 0, 0, 0, 0, 0], 96), "a reserved address (IPv4-compatible)"),
        (v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), "a reserved address (local NAT64)"),
        (v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), "a reserved address (discard-only)"),
        (v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32), "a reserved address (Teredo tunnel)"),
        (v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), "a documentation address"),
        (v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), "a documentation address"),
        (
            v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
            "a private address (unique local; fd00:ec2::254 is a cloud metadata service)",
        ),
        (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), "a link-local address"),
        (v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), "a private address (site-local)"),
        (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "a multicast address"),
    ];
    table.iter().find(|(net, _)| net.contains(&ip)).map(|(_, what)| *what)
}

/// The `Refused` somewhere in an error's chain of causes: a connection the resolver refused.
pub fn refusal_in<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<Refused>() {
            return Some(r);
        }
        next = e.source();
    }
    None
}

/// Resolves host names for gwsync's outbound clients and drops the addresses the policy
/// refuses (for reqwest and for hyper's `HttpConnector`).
#[derive(Clone)]
pub struct Resolver {
    policy: Arc<OutboundPolicy>,
    mode: Mode,
}

impl Resolver {
    pub fn new(policy: Arc<OutboundPolicy>, mode: Mode) -> Resolver {
        Resolver { policy, mode }
    }

    fn resolve_name(&self, name: String) -> BoxFuture<'static, Result<Vec<SocketAddr>, BoxError>> {
        let (policy, mode) = (self.policy.clone(), self.mode);
        Box::pin(async move {
            let addrs = (policy.lookup)(name.clone()).await?;
            let kept = policy.screen(&name, addrs, mode)?;
            // Port 0: the client puts the URL's port in.
            Ok(kept.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect())
        })
    }
}

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let fut = self.resolve_name(name.as_str().to_owned());
        Box::pin(async move { Ok(Box::new(fut.await?.into_iter()) as reqwest::dns::Addrs) })
    }
}

impl tower_service::Service<hyper_util::client::legacy::connect::dns::Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let fut = self.resolve_name(name.as_str().to_owned());
        Box::pin(async move { Ok(fut.await?.into_iter()) })
    }
}

/// A TCP connector for hyper clients (yup-oauth2's) that resolves through the policy; wrap it
/// in TLS. IP-literal hosts bypass any resolver: check the URL with `check_url` first.
pub fn http_connector(
    policy: Arc<OutboundPolicy>,
    mode: Mode,
) -> hyper_util::client::legacy::connect::HttpConnector<Resolver> {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new_with_resolver(Resolver::new(policy, mode));
    // The TLS layer around it passes https URLs down.
    http.enforce_http(false);
    http
}

/// reqwest clients that call only what the policy allows: one for https (public or allowed
/// addresses) and one for plain http (allowed addresses only). No redirects, no proxy.
pub struct HttpClients {
    policy: Arc<OutboundPolicy>,
    https: reqwest::Client,
    http: reqwest::Client,
}

impl HttpClients {
    /// `configure` adds the caller's settings (timeouts, user agent) to both clients.
    pub fn new(
        policy: Arc<OutboundPolicy>,
        configure: impl Fn(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
    ) -> Result<HttpClients, String> {
        let build = |mode: Mode| {
            configure(reqwest::Client::builder())
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .https_only(mode == Mode::PublicOrAllowed)
                .dns_resolver(Arc::new(Resolver::new(policy.clone(), mode)))
                .build()
                .map_err(|e| format!("HTTP client: {e}"))
        };
        Ok(HttpClients { https: build(Mode::PublicOrAllowed)?, http: build(Mode::AllowedOnly)?, policy })
    }

    /// The client to send to `url` with, after checking it (the check before each send: the
    /// resolver never sees IP-literal hosts).
    pub fn for_url(&self, url: &Url) -> Result<&reqwest::Client, Refused> {
        match self.policy.check_url(url)? {
            Mode::PublicOrAllowed => Ok(&self.https),
            Mode::AllowedOnly => Ok(&self.http),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn policy(list: &str) -> OutboundPolicy {
        OutboundPolicy::parse(list).unwrap()
    }

    /// A lookup answering from a table, counting its calls.
    fn table(entries: &[(&str, &[&str])], calls: Arc<AtomicUsize>) -> Lookup {
        let entries: Vec<(String, Vec<IpAddr>)> =
            entries.iter().map(|(n, a)| (n.to_string(), a.iter().map(|a| a.parse().unwrap()).collect())).collect();
        Arc::new(move |name: String| {
            calls.fetch_add(1, Ordering::SeqCst);
            let found = entries.iter().find(|(n, _)| *n == name).map(|(_, a)| a.clone());
            Box::pin(async move { found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host")) })
        })
    }

    #[test]
    fn the_allow_list_takes_cidrs_addresses_and_names_and_refuses_the_rest_by_name() {
        let p = policy(" 127.0.0.0/8, 10.1.2.3 ,fd12:3456::/32, [::1], PBX.Corp.Example., ");
        assert_eq!(p.nets.len(), 4);
        assert_eq!(p.names, ["pbx.corp.example"]);
        assert!(p.allows_ip("10.1.2.3".parse().unwrap()) && !p.allows_ip("10.1.2.4".parse().unwrap()));
        assert!(p.allows_ip("::ffff:127.0.0.5".parse().unwrap()), "a mapped address is its IPv4 address");
        for bad in ["10.0.0.0/33", "not a host!", "1.5", "-x.example"] {
            let e = OutboundPolicy::parse(bad).unwrap_err();
            assert!(e.contains(bad) && e.contains("CIDR"), "{e}");
        }
        assert!(OutboundPolicy::parse("").unwrap().nets.is_empty());
    }

    #[test]
    fn every_kind_of_non_public_address_is_refused_and_public_ones_pass() {
        for (ip, what) in [
            ("127.0.0.1", "loopback"),
            ("10.0.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "metadata"),
            ("100.100.100.200", "shared"),
            ("100.64.0.1", "carrier-grade NAT"),
            ("0.0.0.0", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("192.0.0.192", "metadata"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fd00:ec2::254", "metadata"),
            ("fc00::1", "unique local"),
            ("ff02::1", "multicast"),
            ("::ffff:169.254.169.254", "metadata"),
            ("::ffff:10.0.0.1", "private"),
            ("64:ff9b::7f00:1", "loopback"),
            ("2002:a9fe:a9fe::1", "metadata"),
            ("2001:db8::1", "documentation"),
        ] {
            let got = special(ip.parse().unwrap()).unwrap_or_else(|| panic!("{ip} passed"));
            assert!(got.contains(what), "{ip}: {got}");
        }
        for ip in ["8.8.8.8", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "64:ff9b::808:808", "2002:808:808::1"] {
            assert_eq!(special(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[test]
    fn urls_are_https_with_a_public_or_allowed_host_and_no_credentials() {
        let none = policy("");
        assert!(none.check("https://pbx.example.com/hooks").is_ok());
        assert!(none.check("https://8.8.8.8/hooks").is_ok());
        for (url, kind, says) in [
            ("https://169.254.169.254/latest", RefusalKind::Policy, "metadata"),
            ("http://127.0.0.1:8080/hooks", RefusalKind::Policy, "loopback"),
            ("https://10.0.0.1/x", RefusalKind::Policy, "private"),
            ("https://[::1]/x", RefusalKind::Policy, "loopback"),
            ("https://0x7f.1/x", RefusalKind::Policy, "loopback"),
            ("https://2130706433/x", RefusalKind::Policy, "loopback"),
            ("https://[::ffff:7f00:1]/x", RefusalKind::Policy, "loopback"),
            ("http://pbx.example.com/hooks", RefusalKind::Policy, "https://"),
            ("http://8.8.8.8/hooks", RefusalKind::Policy, "https://"),
            ("https://metadata.google.internal/computeMetadata/v1/", RefusalKind::Policy, "metadata"),
            ("https://Metadata.Google.Internal./x", RefusalKind::Policy, "metadata"),
            ("https://user:hunter2@pbx.example.com/", RefusalKind::Credentials, "password"),
            ("https://token@pbx.example.com/", RefusalKind::Credentials, "password"),
            ("ftp://pbx.example.com/", RefusalKind::Malformed, "https"),
            ("pbx.example.com/hooks", RefusalKind::Malformed, "not a URL"),
        ] {
            let r = none.check(url).unwrap_err();
            assert_eq!(r.kind, kind, "{url}: {r}");
            assert!(r.message.contains(says), "{url}: {r}");
            assert!(!r.message.contains("hunter2"), "{url}: {r}");
            if kind == RefusalKind::Policy {
                assert!(r.message.contains("GWSYNC_OUTBOUND_ALLOW"), "{url}: {r}");
            }
        }
        let lo = policy("127.0.0.0/8,pbx.lan");
        assert!(lo.check("http://127.0.0.1:8080/hooks").is_ok(), "allowed targets may use plain http");
        assert!(lo.check("https://[::ffff:127.0.0.1]/").is_ok());
        assert!(lo.check("http://pbx.lan/").is_ok() && lo.check("http://PBX.lan./").is_ok());
        assert!(lo.check("https://[::1]/x").is_err(), "::1 is not in 127.0.0.0/8");
        assert!(lo.check("http://8.8.8.8/").is_err(), "plain http to a public address that is not listed");
        assert_eq!(lo.check("https://u:p@127.0.0.1/").unwrap_err().kind, RefusalKind::Credentials);
    }

    #[tokio::test]
    async fn a_saved_name_must_not_resolve_to_a_refused_address() {
        let calls = Arc::new(AtomicUsize::new(0));
        let lookup = table(
            &[
                ("public.example", &["93.184.215.14"]),
                ("mixed.example", &["93.184.215.14", "10.0.0.5"]),
                ("loop.example", &["127.0.0.1", "::1"]),
            ],
            calls.clone(),
        );
        let none = policy("").with_lookup(lookup.clone());
        let url = |s: &str| Url::parse(s).unwrap();
        assert!(none.check_resolved(&url("https://public.example/")).await.is_ok());
        // Connections would use only its public address.
        assert!(none.check_resolved(&url("https://mixed.example/")).await.is_ok());
        let e = none.check_resolved(&url("https://loop.example/")).await.unwrap_err();
        assert!(e.message.contains("loopback") && e.message.contains("GWSYNC_OUTBOUND_ALLOW"), "{e}");
        assert!(!e.message.contains("127.0.0.1"), "resolved addresses are not named: {e}");
        assert!(
            none.check_resolved(&url("https://unknown.example/")).await.is_ok(),
            "https to a name not (yet) in DNS"
        );

        let lo = policy("127.0.0.0/8").with_lookup(lookup);
        assert!(lo.check_resolved(&url("http://127.0.0.1:9/")).await.is_ok());
        assert!(lo.check_resolved(&url("http://loop.example/")).await.is_ok(), "127.0.0.1 is allowed (::1 is not)");
        let e = lo.check_resolved(&url("http://mixed.example/")).await.unwrap_err();
        assert!(e.message.contains("plain http") && e.message.contains("mixed.example"), "{e}");
        let e = lo.check_resolved(&url("http://unknown.example/")).await.unwrap_err();
        assert!(e.message.contains("does not resolve"), "{e}");
        assert!(lo.check_resolved(&url("http://public.example/")).await.is_err());
        assert!(calls.load(Ordering::SeqCst) >= 7, "the names were looked up");
    }

    /// A TCP listener on loopback that counts the connections it accepts.
    async fn counting_listener() -> (u16, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                drop(socket);
            }
        });
        (port, accepted)
    }

    /// Waits (up to 5 s) until the listener has accepted `n` connections.
    async fn accepted_soon(accepted: &AtomicUsize, n: usize) {
        for _ in 0..500 {
            if accepted.load(Ordering::SeqCst) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{} connections accepted, not {n}", accepted.load(Ordering::SeqCst));
    }

    /// DNS rebinding: a name that resolved to a public address when it was saved resolves to
    /// loopback when gwsync connects. The client connects nowhere and says why; the same client
    /// with loopback allowed does connect (so the refusal is the policy's).
    #[tokio::test]
    async fn a_name_resolving_to_a_refused_address_at_connect_time_is_not_connected() {
        let (port, accepted) = counting_listener().await;
        let answers = Arc::new(parking_lot::Mutex::new(vec!["127.0.0.1", "93.184.215.14"]));
        let lookup: Lookup = {
            let answers = answers.clone();
            Arc::new(move |_name: String| {
                let ip: IpAddr = answers.lock().pop().unwrap_or("127.0.0.1").parse().unwrap();
                Box::pin(async move { Ok(vec![ip]) })
            })
        };
        let url = Url::parse(&format!("https://pbx.rebind.example:{port}/hooks")).unwrap();
        let strict = Arc::new(policy("").with_lookup(lookup.clone()));
        strict.check_resolved(&url).await.expect("public at save time");

        let clients = HttpClients::new(strict, |b| b.timeout(Duration::from_secs(5))).unwrap();
        let err = clients.for_url(&url).unwrap().post(url.clone()).body("{}").send().await.unwrap_err();
        let r = refusal_in(&err).unwrap_or_else(|| panic!("not a policy refusal: {err:?}"));
        assert!(r.message.contains("loopback") && r.message.contains("pbx.rebind.example"), "{r}");
        assert_eq!(accepted.load(Ordering::SeqCst), 0, "nothing connected");

        let open = Arc::new(policy("127.0.0.0/8").with_lookup(lookup));
        let clients = HttpClients::new(open, |b| b.timeout(Duration::from_secs(5))).unwrap();
        let err = clients.for_url(&url).unwrap().post(url.clone()).body("{}").send().await.unwrap_err();
        assert!(refusal_in(&err).is_none(), "{err:?}");
        // Allowed, it connects (and the TLS handshake fails).
        accepted_soon(&accepted, 1).await;
    }

    #[tokio::test]
    async fn an_ip_literal_is_checked_before_the_send_and_plain_http_only_goes_to_allowed_targets() {
        let (port, accepted) = counting_listener().await;
        let clients = HttpClients::new(Arc::new(policy("")), |b| b).unwrap();
        let url = Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        assert_eq!(clients.for_url(&url).unwrap_err().kind, RefusalKind::Policy);
        // The https client refuses plain http even if a caller skipped `for_url`.
        assert!(clients.https.get(url.clone()).send().await.is_err());
        // A public name over plain http goes to the http client, whose resolver keeps only
        // allowed addresses.
        let lookup = table(&[("pbx.example", &["127.0.0.1"])], Arc::new(AtomicUsize::new(0)));
        let p = Arc::new(policy("192.0.2.0/24").with_lookup(lookup));
        let clients = HttpClients::new(p, |b| b).unwrap();
        let url = Url::parse(&format!("http://pbx.example:{port}/")).unwrap();
        let err = clients.for_url(&url).unwrap().get(url.clone()).send().await.unwrap_err();
        assert!(refusal_in(&err).is_some(), "{err:?}");
        assert_eq!(accepted.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn the_hyper_connector_screens_names_too() {
        use tower_service::Service;
        let (port, accepted) = counting_listener().await;
        let lookup = table(&[("token.example", &["127.0.0.1"])], Arc::new(AtomicUsize::new(0)));
        let mut strict = http_connector(Arc::new(policy("").with_lookup(lookup.clone())), Mode::PublicOrAllowed);
        let uri: http::Uri = format!("http://token.example:{port}/token").parse().unwrap();
        let err = strict.call(uri.clone()).await.unwrap_err();
        assert!(refusal_in(&err).is_some(), "{err:?}");
        assert_eq!(accepted.load(Ordering::SeqCst), 0);
        let mut open = http_connector(Arc::new(policy("127.0.0.0/8").with_lookup(lookup)), Mode::AllowedOnly);
        open.call(uri).await.expect("allowed, it connects");
        accepted_soon(&accepted, 1).await;
    }
}
