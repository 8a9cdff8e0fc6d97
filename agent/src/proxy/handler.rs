//! One proxied request: check the credential, pick the target, forward, map failures to
//! answers that say what went wrong.

use super::upstream::{Body, Upstreams};
use crate::config::Route;
use crate::credential::CredentialView;
use crate::metrics::Metrics;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Body as _;
use hyper::body::Incoming;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

pub struct Ctx {
    /// The device's credential, read-only (see [`crate::credential`]).
    pub credential: CredentialView,
    pub metrics: Arc<Metrics>,
    pub route: Route,
    pub name: String,
    pub upstreams: Upstreams,
    /// The `Host` values this listener answers (see [`own_hosts`]); `None` on a UNIX
    /// socket, which no web page can reach.
    pub own_hosts: Option<Vec<String>>,
}

pub fn text(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut body = msg.into();
    body.push('\n');
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r.headers_mut()
        .insert(HeaderName::from_static("x-lanyard-proxy"), HeaderValue::from_static("1"));
    r
}

const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

fn strip_hop_by_hop(h: &mut http::HeaderMap) {
    let listed: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in listed {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(n);
    }
}

/// Whether `host:port` may be reached through this listener: the route's upstream, or an
/// allow-list entry `host[:port]` (443 when the entry names no port).
pub fn allowed(route: &Route, host: &str, port: u16) -> bool {
    let host = host.to_ascii_lowercase();
    if route.upstream.as_ref().is_some_and(|u| u.host == host && u.port == port) {
        return true;
    }
    route.forward_allow.iter().any(|entry| {
        let (pattern, entry_port) = match entry.rsplit_once(':') {
            Some((p, n)) => (p, n.parse::<u16>().unwrap_or(0)),
            None => (entry.as_str(), 443),
        };
        entry_port == port
            && match pattern.strip_prefix("*.") {
                Some(suffix) => {
                    host.len() > suffix.len() + 1
                        && host.ends_with(suffix)
                        && host[..host.len() - suffix.len()].ends_with('.')
                }
                None => pattern == host,
            }
    })
}

/// The `Host` values a TCP listener answers: its own port under the loopback names
/// (`127.0.0.1`, `localhost`, `[::1]`), its own address if it is not loopback, and the
/// route's `hosts`. `None` for a UNIX socket.
pub fn own_hosts(local: Option<std::net::SocketAddr>, route: &Route) -> Option<Vec<String>> {
    listener_hosts(local, &route.hosts)
}

/// The `Host` values a local TCP listener answers: its port under the loopback names, its
/// own address if it is not loopback, and `extra`. `None` for a UNIX socket. The status
/// endpoint uses it too.
pub fn listener_hosts(
    local: Option<std::net::SocketAddr>,
    extra: &[String],
) -> Option<Vec<String>> {
    let a = local?;
    let p = a.port();
    let mut v = vec![format!("127.0.0.1:{p}"), format!("localhost:{p}"), format!("[::1]:{p}")];
    if !a.ip().is_loopback() && !a.ip().is_unspecified() {
        v.push(a.to_string());
    }
    v.extend(extra.iter().cloned());
    Some(v)
}

/// Whether `host` (as a `Host` header or `:authority` gives it) is one of `own`: exactly,
/// or by name alone for entries configured without a port.
pub fn host_is_own(own: &[String], host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let name = match host.rsplit_once(':') {
        Some((n, p)) if !p.contains(']') && p.parse::<u16>().is_ok() => n,
        _ => host.as_str(),
    };
    own.iter().any(|o| *o == host || (!o.contains(':') && o == name))
}

/// Refuses what a web page could make a browser send to a proxy on this machine: a request
/// naming another host (DNS rebinding), a cross-site `Origin` or `Sec-Fetch-Site`, and
/// asterisk-form targets. The answers say why, for the person who finds them in a log.
pub fn admit<B>(own: Option<&[String]>, req: &Request<B>) -> Result<(), Refusal> {
    if req.uri() == "*" {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            "asterisk-form requests (OPTIONS *) are not proxied".into(),
        ));
    }
    let absolute = req.version() != http::Version::HTTP_2 && req.uri().host().is_some();
    if let Some(own) = own
        && !absolute
    {
        let host = match req.uri().authority() {
            Some(a) if req.version() == http::Version::HTTP_2 => Some(a.as_str().to_owned()),
            _ => req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned),
        };
        match host {
            None => {
                return Err(Refusal(
                    StatusCode::BAD_REQUEST,
                    "the request names no Host; send Host: 127.0.0.1:PORT".into(),
                ));
            }
            Some(h) if !host_is_own(own, &h) => {
                return Err(Refusal(
                    StatusCode::FORBIDDEN,
                    format!(
                        "Host {h:?} is not this proxy ({}): a web page may be trying to use this device's certificate through DNS rebinding. If the name is yours, add it to the route's `hosts`",
                        own.join(", ")
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    let h = req.headers();
    if h.get("sec-fetch-site").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site")) {
        return Err(Refusal(
            StatusCode::FORBIDDEN,
            "cross-site browser request refused: a web page may not use this device's certificate"
                .into(),
        ));
    }
    if let Some(origin) = h.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("").to_ascii_lowercase();
        let own_origin = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| own.is_some_and(|own| host_is_own(own, o)));
        if !own_origin {
            return Err(Refusal(
                StatusCode::FORBIDDEN,
                format!(
                    "browser request from origin {origin:?} refused: only pages served by this proxy itself may use it"
                ),
            ));
        }
    }
    Ok(())
}

fn allow_list(route: &Route) -> String {
    let mut v: Vec<String> = route.upstream.iter().map(|u| u.host.clone()).collect();
    v.extend(route.forward_allow.iter().cloned());
    if v.is_empty() { "(empty)".into() } else { v.join(", ") }
}

/// The upstream authority (`host[:port]`) for a request, or the answer that refuses it.
/// A request the proxy answers itself, without a connection upstream.
pub struct Refusal(pub StatusCode, pub String);

fn target(route: &Route, req: &Request<Incoming>) -> Result<String, Refusal> {
    if req.method() == Method::CONNECT {
        let host = req.uri().host().unwrap_or("").to_owned();
        let port = req.uri().port_u16().unwrap_or(443);
        if !allowed(route, &host, port) {
            return Err(Refusal(
                StatusCode::FORBIDDEN,
                format!(
                    "\"{host}:{port}\" is not on this listener's allow-list ({})",
                    allow_list(route)
                ),
            ));
        }
        return Err(Refusal(
            StatusCode::NOT_IMPLEMENTED,
            "CONNECT tunnels cannot carry the device certificate; send plain http:// URLs through this proxy and it connects with TLS and the client certificate".into(),
        ));
    }
    // HTTP/2 requests always carry an authority; only an HTTP/1 absolute-form target is a
    // forward-proxy request.
    let forward_host = if req.version() == http::Version::HTTP_2 { None } else { req.uri().host() };
    match forward_host {
        // Absolute form: forward-proxy mode.
        Some(host) => {
            // http:// URLs are sent with TLS: port 80 (or none) means 443.
            let port = match req.uri().port_u16() {
                None | Some(80) | Some(443) => 443,
                Some(p) => p,
            };
            if !allowed(route, host, port) {
                return Err(Refusal(
                    StatusCode::FORBIDDEN,
                    format!(
                        "\"{host}:{port}\" is not on this listener's allow-list ({})",
                        allow_list(route)
                    ),
                ));
            }
            Ok(if port == 443 {
                host.to_ascii_lowercase()
            } else {
                format!("{}:{port}", host.to_ascii_lowercase())
            })
        }
        // Origin form: the route's upstream.
        None => match &route.upstream {
            Some(u) => Ok(u.authority()),
            None => Err(Refusal(
                StatusCode::BAD_REQUEST,
                format!(
                    "this listener is a forward proxy: request absolute URLs (http://host/path) for {}",
                    allow_list(route)
                ),
            )),
        },
    }
}

/// How an upstream failure is reported.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// The upstream's TLS rejected our client certificate (revoked, expired, unknown CA).
    CertificateRefused,
    /// The upstream's server certificate is not trusted.
    UntrustedUpstream,
    Tls,
    Dns,
    Connect,
}

fn classify(tls: Option<&rustls::Error>, msg: &str) -> Failure {
    match tls {
        Some(rustls::Error::AlertReceived(_)) => Failure::CertificateRefused,
        Some(rustls::Error::InvalidCertificate(_)) => Failure::UntrustedUpstream,
        Some(_) => Failure::Tls,
        // Some layers flatten the TLS error into text; recognise it there too.
        None if msg.contains("received fatal alert") || msg.contains("AlertReceived") => {
            Failure::CertificateRefused
        }
        None if msg.contains("invalid peer certificate") => Failure::UntrustedUpstream,
        None if msg.contains("dns error") || msg.contains("failed to lookup") => Failure::Dns,
        None => Failure::Connect,
    }
}

/// A hardware key's signing failure this recent explains a failed handshake.
const KEY_FAILURE_FRESH: std::time::Duration = std::time::Duration::from_secs(5);

/// What the client learns when the upstream fails.
fn upstream_error(
    ctx: &Ctx,
    authority: &str,
    e: &(dyn std::error::Error + 'static),
) -> Response<Body> {
    let mut tls: Option<&rustls::Error> = None;
    let mut msg = String::new();
    let mut src: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = src {
        if let Some(r) = s.downcast_ref::<rustls::Error>() {
            tls = Some(r);
        } else if let Some(io) = s.downcast_ref::<std::io::Error>()
            && let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
        {
            tls = Some(r);
        }
        let m = s.to_string();
        if msg.is_empty() {
            msg = m;
        } else if !msg.contains(&m) {
            msg = format!("{msg}: {m}");
        }
        src = s.source();
    }
    // The device key could not sign this handshake (TPM or token gone): not the upstream's
    // fault, and it passes when the hardware is back.
    if let Some(key) = ctx.credential.current().and_then(|c| c.key_failure(Some(KEY_FAILURE_FRESH)))
    {
        let why = crate::credential::key_unusable(&key);
        tracing::warn!(route = %ctx.name, upstream = %authority, status = 503, reason = %why, "the device key did not sign");
        return text(StatusCode::SERVICE_UNAVAILABLE, why);
    }
    let explained = match classify(tls, &msg) {
        Failure::CertificateRefused => {
            // Perhaps revoked: ask the CA soon, so the proxy can say so.
            ctx.credential.request_recheck();
            format!("{authority} refused the device certificate ({msg})")
        }
        Failure::UntrustedUpstream => {
            format!(
                "{authority}'s TLS certificate is not trusted ({msg}); set upstream_ca for a private upstream"
            )
        }
        Failure::Tls => format!("TLS with {authority} failed: {msg}"),
        Failure::Dns => format!("cannot resolve {authority}: {msg}"),
        Failure::Connect => format!("cannot reach {authority}: {msg}"),
    };
    tracing::warn!(route = %ctx.name, upstream = %authority, status = 502, reason = %explained, "upstream failed");
    text(StatusCode::BAD_GATEWAY, explained)
}

/// Answers one request. The checks and rewrites that need no await happen here, before
/// the future is made: lanyard-net boxes that future for every request, and what it holds
/// across its awaits (the head kept for a retry, the upstream exchange) is its whole size,
/// kept within what the allocator serves from its per-thread cache (glibc's stops at
/// 1,032 B). An `async` block rather than an `async fn`: the latter copies its arguments
/// into locals and holds both.
pub fn handle(
    ctx: Arc<Ctx>,
    peer: Option<String>,
    req: Request<Incoming>,
) -> impl Future<Output = Result<Response<Body>, Infallible>> + Send + 'static {
    let started = Instant::now();
    let mut outbound = outbound(&ctx, peer, req);
    async move {
        let resp = match outbound {
            Err(refused) => refused,
            Ok(ref mut out) => exchange(&ctx, out).await,
        };
        ctx.metrics.proxy_request(
            &ctx.name,
            resp.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
        Ok(resp)
    }
}

/// A request ready for the upstream: its head rewritten, its URL absolute.
struct Outbound {
    authority: String,
    /// Taken by the last (or only) attempt; the ones before send clones.
    head: http::request::Parts,
    /// The body, taken by the one attempt that streams it. `None` from the start for a
    /// request without a body whose method is idempotent: it can be sent again when the
    /// upstream turned it away unprocessed (an HTTP/2 GOAWAY or REFUSED_STREAM, as a server
    /// sends when it retires a connection).
    body: Option<Body>,
}

async fn exchange(ctx: &Ctx, out: &mut Outbound) -> Response<Body> {
    let deadline = tokio::time::Instant::now() + ctx.route.request_timeout;
    let mut attempt = 1;
    let result = loop {
        let last = out.body.is_some() || attempt == MAX_ATTEMPTS;
        let (head, body) = if last {
            let taken = std::mem::replace(&mut out.head, Request::new(()).into_parts().0);
            (taken, out.body.take().unwrap_or_else(empty))
        } else {
            (out.head.clone(), empty())
        };
        let pool = ctx.upstreams.pool();
        let sent = pool.send(&out.authority, Request::from_parts(head, body));
        match tokio::time::timeout_at(deadline, sent).await {
            Ok(Err(e)) if !last && unprocessed(e.as_ref()) => {
                tracing::debug!(route = %ctx.name, upstream = %out.authority, error = %e, attempt, "upstream turned the request away unprocessed; sending it again");
                attempt += 1;
            }
            r => break r,
        }
    };
    let authority = &out.authority;
    match result {
        Err(_) => {
            tracing::warn!(route = %ctx.name, upstream = %authority, "upstream timed out");
            text(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "{authority} did not answer within {}s",
                    ctx.route.request_timeout.as_secs()
                ),
            )
        }
        Ok(Err(e)) => upstream_error(ctx, authority, e.as_ref()),
        Ok(Ok(resp)) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body)
        }
    }
}

/// Checks `req` and rewrites its head for the upstream, or the answer that refuses it.
#[expect(clippy::result_large_err, reason = "the refusal is the answer itself, made once")]
fn outbound(
    ctx: &Ctx,
    peer: Option<String>,
    req: Request<Incoming>,
) -> Result<Outbound, Response<Body>> {
    if let Err(Refusal(status, message)) = admit(ctx.own_hosts.as_deref(), &req) {
        return Err(text(status, message));
    }
    let authority = match target(&ctx.route, &req) {
        Ok(a) => a,
        Err(Refusal(status, message)) => return Err(text(status, message)),
    };
    if let Err(why) = ctx.credential.usable() {
        return Err(text(StatusCode::SERVICE_UNAVAILABLE, why));
    }

    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();
    let uri: Uri = match format!("https://{authority}{path}").parse() {
        Ok(u) => u,
        Err(e) => {
            return Err(text(
                StatusCode::BAD_REQUEST,
                format!("cannot build the upstream URL: {e}"),
            ));
        }
    };
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::HOST);
    // What a client says it forwarded is not to be trusted; neither is its Host.
    parts.headers.remove("x-forwarded-for");
    parts.headers.remove(header::FORWARDED);
    if ctx.route.x_forwarded_for {
        // Only what the proxy knows: the client's address and the listener's own.
        let client = peer.unwrap_or_else(|| "unix".into());
        if let Ok(v) = HeaderValue::from_str(&client) {
            parts.headers.insert(HeaderName::from_static("x-forwarded-for"), v);
        }
        let own = ctx.own_hosts.as_ref().and_then(|h| h.first());
        let fwd = format!(
            "for=\"{client}\";proto=http{}",
            own.map(|h| format!(";host=\"{h}\"")).unwrap_or_default()
        );
        if let Ok(v) = HeaderValue::from_str(&fwd) {
            parts.headers.insert(header::FORWARDED, v);
        }
    }
    parts.uri = uri;
    parts.version = http::Version::HTTP_11; // the client negotiates h2 by ALPN itself
    let replay = body.is_end_stream() && idempotent(&parts.method);
    Ok(Outbound {
        authority,
        head: parts,
        body: (!replay).then(|| body.map_err(Into::into).boxed()),
    })
}

/// How many times a replayable request is sent before its failure is reported.
const MAX_ATTEMPTS: u32 = 3;

fn empty() -> Body {
    http_body_util::Empty::<Bytes>::new().map_err(|never| match never {}).boxed()
}

/// RFC 9110 §9.2.2.
fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Whether the upstream refused the request before processing it: the stream was above a
/// GOAWAY's last stream id, or reset with REFUSED_STREAM (RFC 9113 §8.7), or an HTTP/1.1
/// keep-alive connection closed before any of the response arrived.
fn unprocessed(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut src: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = src {
        if let Some(h) = s.downcast_ref::<h2::Error>() {
            return (h.is_go_away() && h.is_remote())
                || h.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        if let Some(h) = s.downcast_ref::<hyper::Error>()
            && h.is_incomplete_message()
        {
            return true;
        }
        src = s.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ListenAddr, Upstream};
    use std::time::Duration;

    fn route(up: Option<&str>, allow: &[&str]) -> Route {
        Route {
            listen: ListenAddr::Tcp("127.0.0.1:0".parse().unwrap()),
            upstream: up.map(|h| Upstream { host: h.into(), port: 443 }),
            upstream_ca: None,
            forward_allow: allow.iter().map(|s| s.to_string()).collect(),
            socket_mode: 0o600,
            x_forwarded_for: false,
            request_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            hosts: vec!["devbox.internal".into()],
            max_connections: 16,
        }
    }

    #[test]
    fn allow_list_matching() {
        let r = route(
            Some("web.example.com"),
            &["*.apps.example.com", "api.example.org", "alt.example.org:8443"],
        );
        assert!(allowed(&r, "web.example.com", 443));
        assert!(allowed(&r, "WEB.example.com", 443));
        assert!(!allowed(&r, "web.example.com", 8443), "the upstream's port only");
        assert!(allowed(&r, "a.apps.example.com", 443));
        assert!(allowed(&r, "api.example.org", 443));
        assert!(!allowed(&r, "api.example.org", 22), "no port means 443");
        assert!(allowed(&r, "alt.example.org", 8443));
        assert!(!allowed(&r, "alt.example.org", 443));
        assert!(!allowed(&r, "apps.example.com", 443));
        assert!(!allowed(&r, "evilapps.example.com", 443));
        assert!(!allowed(&r, "example.com", 443));
        assert!(!allowed(&route(None, &[]), "anything", 443));
    }

    #[test]
    fn own_hosts_and_host_matching() {
        let r = route(Some("web.example.com"), &[]);
        let own = own_hosts(Some("127.0.0.1:8181".parse().unwrap()), &r).unwrap();
        for h in ["127.0.0.1:8181", "localhost:8181", "LOCALHOST:8181", "[::1]:8181"] {
            assert!(host_is_own(&own, h), "{h}");
        }
        assert!(host_is_own(&own, "devbox.internal:8181"), "a configured bare name, any port");
        for h in ["attacker.example:8181", "127.0.0.1:8182", "localhost", "127.0.0.1"] {
            assert!(!host_is_own(&own, h), "{h}");
        }
        assert!(own_hosts(None, &r).is_none(), "UNIX sockets have no Host to check");
    }

    fn req(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn requests_a_web_page_could_send_are_refused() {
        let own = own_hosts(Some("127.0.0.1:8181".parse().unwrap()), &route(Some("u"), &[]));
        let own = own.as_deref();
        let ok = |r: &Request<()>| admit(own, r).is_ok();
        let status = |r: &Request<()>| admit(own, r).err().map(|Refusal(s, _)| s.as_u16());
        assert!(ok(&req("/x", &[("host", "127.0.0.1:8181")])));
        assert!(ok(&req("/x", &[("host", "localhost:8181"), ("origin", "http://localhost:8181")])));
        assert!(ok(&req("/x", &[("host", "localhost:8181"), ("sec-fetch-site", "same-origin")])));
        assert_eq!(status(&req("/x", &[("host", "attacker.example:8181")])), Some(403));
        assert_eq!(status(&req("/x", &[])), Some(400), "no Host at all");
        assert_eq!(
            status(&req(
                "/x",
                &[("host", "127.0.0.1:8181"), ("origin", "http://attacker.example")]
            )),
            Some(403)
        );
        assert_eq!(
            status(&req("/x", &[("host", "127.0.0.1:8181"), ("origin", "null")])),
            Some(403)
        );
        assert_eq!(
            status(&req("/x", &[("host", "127.0.0.1:8181"), ("sec-fetch-site", "cross-site")])),
            Some(403)
        );
        assert_eq!(status(&req("*", &[("host", "127.0.0.1:8181")])), Some(400));
        // Absolute-form (forward proxy): the allow-list decides, not Host; UNIX sockets have
        // no Host to check.
        assert!(ok(&req("http://api.example.org/x", &[("host", "api.example.org")])));
        assert!(admit(None, &req("/x", &[("host", "anything")])).is_ok());
    }

    #[test]
    fn failures_are_classified() {
        assert_eq!(
            classify(
                Some(&rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRevoked)),
                ""
            ),
            Failure::CertificateRefused
        );
        assert_eq!(
            classify(None, "invalid peer certificate: UnknownIssuer"),
            Failure::UntrustedUpstream
        );
        assert_eq!(
            classify(None, "received fatal alert: BadCertificate"),
            Failure::CertificateRefused
        );
        assert_eq!(classify(None, "dns error: failed to lookup address"), Failure::Dns);
        assert_eq!(classify(None, "Connection refused"), Failure::Connect);
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = http::HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }
}
