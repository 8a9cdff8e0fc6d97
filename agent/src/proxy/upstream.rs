//! HTTPS clients toward upstreams: rustls (TLS 1.2+, 1.3 preferred) with the device's
//! certificate, ALPN h2 and http/1.1, connections kept alive.
//!
//! HTTP/2 (what CloudFront speaks) is driven with the `h2` crate from the task that serves
//! the request: one multiplexed connection per upstream, the request's headers and the
//! response's frames handled where they are awaited, the connection's own task the only
//! other one involved. (hyper's pooled client hands each request to a dispatch task and
//! spawns another to await its answer: at 64 connections the proxy did 54k requests a
//! second with it and 64k without, see `docs/BENCHMARKS.md`.) An upstream that answers
//! ALPN with http/1.1 is remembered as such and served by hyper-util's pooled HTTP/1.1
//! client.
//!
//! One pool per serial: when the agent's certificate changes, the next request builds a
//! fresh pool, so connections made with the old certificate are no longer used (in-flight
//! requests finish on them, and the connections close when the last one does).

use super::resolver::CurrentCert;
use crate::config::Route;
use crate::credential::CredentialView;
use crate::error::{AgentError, Result};
use crate::https::{Connector, HttpsClient};
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

pub use crate::https::{Body, BoxError};

/// A TCP connection and TLS handshake to an upstream may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Upstreams {
    credential: CredentialView,
    tls: Arc<rustls::ClientConfig>,
    idle_timeout: Duration,
    current: ArcSwapOption<Pool>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Upstreams")
    }
}

impl Upstreams {
    pub fn new(credential: &CredentialView, route: &Route) -> Result<Upstreams> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(extra) = &route.upstream_ca {
            for c in crate::trust::read_pem_certs(extra)? {
                roots.add(c).map_err(|e| AgentError::Usage(format!("{}: {e}", extra.display())))?;
            }
        }
        if roots.is_empty() {
            return Err(AgentError::Usage(
                "no CA certificates to verify upstreams: install the system CA bundle or set upstream_ca".into(),
            ));
        }
        let tls = rustls::ClientConfig::builder_with_provider(crate::est::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| AgentError::Crypto(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_cert_resolver(Arc::new(CurrentCert(credential.clone())));
        Ok(Upstreams {
            credential: credential.clone(),
            tls: Arc::new(tls),
            idle_timeout: route.idle_timeout,
            current: ArcSwapOption::empty(),
        })
    }

    /// The connections made with the certificate of this moment. Looked up per attempt:
    /// a retry after a renewal uses the new certificate's pool, and a request admitted just
    /// before a renewal does not bring the old certificate's pool back.
    pub fn pool(&self) -> Arc<Pool> {
        let current = self.credential.current();
        let serial = current.as_ref().map_or("", |c| c.info.serial.as_str());
        if let Some(p) = self.current.load_full()
            && p.serial == serial
        {
            return p;
        }
        let pool = Arc::new(Pool::new(serial, &self.tls, self.idle_timeout));
        self.current.store(Some(pool.clone()));
        pool
    }
}

/// What is known of one upstream authority.
#[derive(Clone)]
enum Known {
    /// A live HTTP/2 connection: its handle, its id (so that only its own task removes
    /// it), and its count of requests (the idle check's clock).
    H2 { send: h2::client::SendRequest<Bytes>, id: u64, used: Arc<AtomicU64> },
    /// The upstream chose HTTP/1.1: requests go through the HTTP/1.1 client.
    Http1,
}

/// Upstream connections for one certificate serial.
pub struct Pool {
    serial: String,
    /// The TLS configuration of this serial's connections: its own session cache, since a
    /// resumed session would present the certificate of the session it resumes.
    tls: tokio_rustls::TlsConnector,
    idle_timeout: Duration,
    /// Read on every request, written when a connection opens or closes: swapped whole
    /// rather than locked, so that the two workers' requests never wait on each other here.
    known: arc_swap::ArcSwap<HashMap<String, Known>>,
    /// One connection attempt at a time per authority: concurrent first requests wait for
    /// it and share the connection (or its failure) rather than each opening their own.
    /// An entry lives while its attempt does.
    connecting: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<SharedError>>>>>,
    next_id: AtomicU64,
    /// TCP connections for the HTTP/2 side; the HTTP/1.1 client has its own copy.
    tcp: HttpConnector,
    /// HTTP/1.1 upstreams: the EST client's type, so its code is linked once.
    http1: HttpsClient,
}

impl Pool {
    fn new(serial: &str, tls: &rustls::ClientConfig, idle_timeout: Duration) -> Pool {
        let mut tls = tls.clone();
        tls.resumption = rustls::client::Resumption::in_memory_sessions(256);
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_only()
            .enable_http1()
            .wrap_connector(Connector::Direct(tcp.clone()));
        let http1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(idle_timeout)
            .pool_max_idle_per_host(64)
            .build(https);
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Pool {
            serial: serial.to_owned(),
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            idle_timeout,
            known: arc_swap::ArcSwap::from_pointee(HashMap::new()),
            connecting: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            tcp,
            http1,
        }
    }

    fn known(&self, authority: &str) -> Option<Known> {
        self.known.load().get(authority).cloned()
    }

    fn remember(&self, authority: &str, known: Known) {
        self.known.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.insert(authority.to_owned(), known.clone());
            map
        });
    }

    /// Forgets the connection `id` to `authority` (closed, failed or idle).
    fn forget(&self, authority: &str, id: u64) {
        self.known.rcu(|map| {
            let mut map = HashMap::clone(map);
            if matches!(map.get(authority), Some(Known::H2 { id: i, .. }) if *i == id) {
                map.remove(authority);
            }
            map
        });
    }

    /// Sends `req` (its URI `https://authority/...`) to `authority` and returns the answer
    /// as it starts to arrive; the body streams on.
    ///
    /// The returned future is part of every proxied request's allocation: an `async` block
    /// (an `async fn` would hold `req` twice) that holds only the request and then the
    /// response's future across its awaits.
    #[expect(clippy::manual_async_fn, reason = "an `async fn` would hold `req` twice")]
    pub fn send<'a>(
        self: &'a Arc<Self>,
        authority: &'a str,
        req: Request<Body>,
    ) -> impl Future<Output = std::result::Result<Response<Body>, BoxError>> + Send + 'a {
        async move {
            let Some(send) = self.h2_sender(authority).await? else {
                let resp = self.http1.request(req).await?;
                return Ok(resp.map(|b| b.map_err(Into::into).boxed()));
            };
            let (head, recv) = start(send, req)?.await?.into_parts();
            Ok(Response::from_parts(head, H2Body { recv, data_done: false }.boxed()))
        }
    }

    /// A ready HTTP/2 handle to `authority`, or `None` when it speaks HTTP/1.1. A kept
    /// connection found closed is replaced once, before anything of the request is sent.
    async fn h2_sender(
        self: &Arc<Self>,
        authority: &str,
    ) -> std::result::Result<Option<h2::client::SendRequest<Bytes>>, BoxError> {
        let mut replaced = false;
        loop {
            let known = match self.known(authority) {
                Some(k) => k,
                // Boxed: connecting is rare, and its state (DNS, TCP, the TLS handshake)
                // would otherwise make every request's future larger.
                None => Box::pin(self.connect(authority)).await?,
            };
            let Known::H2 { send, id, used } = known else { return Ok(None) };
            used.fetch_add(1, Ordering::Relaxed);
            match send.ready().await {
                Ok(send) => return Ok(Some(send)),
                Err(e) => {
                    self.forget(authority, id);
                    // The new connection closed too: its reason (a refused certificate, a
                    // GOAWAY) is what the answer and the retry decision need.
                    if replaced {
                        return Err(e.into());
                    }
                    tracing::debug!(upstream = %authority, error = %e, "kept connection closed; connecting again");
                    replaced = true;
                }
            }
        }
    }

    /// Connects to `authority` unless a concurrent request has just done it. Requests that
    /// waited on an attempt share its outcome: when it failed they fail with its error at
    /// once, rather than each trying again in turn (a black-holed upstream would otherwise
    /// hold the last of them for one connect timeout per request ahead of it).
    async fn connect(self: &Arc<Self>, authority: &str) -> std::result::Result<Known, BoxError> {
        let gate = self
            .connecting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(authority.to_owned())
            .or_default()
            .clone();
        let mut outcome = gate.lock().await;
        if let Some(failed) = outcome.as_ref() {
            return Err(Box::new(Shared(failed.clone())));
        }
        if let Some(k) = self.known(authority) {
            return Ok(k);
        }
        let result = self.connect_now(authority).await;
        // Later requests start from a fresh gate (and a fresh attempt); those queued on this
        // one see its outcome.
        {
            let mut gates = self.connecting.lock().unwrap_or_else(|p| p.into_inner());
            if gates.get(authority).is_some_and(|g| Arc::ptr_eq(g, &gate)) {
                gates.remove(authority);
            }
        }
        match result {
            Ok(k) => Ok(k),
            Err(e) => {
                let e: SharedError = Arc::from(e);
                *outcome = Some(e.clone());
                Err(Box::new(Shared(e)))
            }
        }
    }

    async fn connect_now(
        self: &Arc<Self>,
        authority: &str,
    ) -> std::result::Result<Known, BoxError> {
        let io = tokio::time::timeout(CONNECT_TIMEOUT, self.handshake(authority))
            .await
            .map_err(|_| format!("connecting to {authority} timed out"))??;
        if io.get_ref().1.alpn_protocol() != Some(b"h2") {
            // This connection is dropped: the HTTP/1.1 client keeps its own.
            self.remember(authority, Known::Http1);
            return Ok(Known::Http1);
        }
        // hyper's defaults for a client: windows large enough for a download over a long
        // round trip, no server push, and at most 100 streams before the server's SETTINGS
        // say how many it takes (the requests that waited for this connection all start on
        // it at once; beyond the server's limit they would be refused).
        let (send, connection) = h2::client::Builder::new()
            .initial_max_send_streams(100)
            .initial_window_size(2 << 20)
            .initial_connection_window_size(5 << 20)
            .max_send_buffer_size(1 << 20)
            .max_header_list_size(16 << 10)
            .enable_push(false)
            .handshake::<_, Bytes>(io)
            .await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let used = Arc::new(AtomicU64::new(0));
        let known = Known::H2 { send, id, used: used.clone() };
        self.remember(authority, known.clone());
        tokio::spawn(drive(
            Arc::downgrade(self),
            authority.to_owned(),
            id,
            used,
            self.idle_timeout,
            connection,
        ));
        Ok(known)
    }

    /// TCP through hyper-util's connector (DNS off the runtime, IPv6 and IPv4 raced as RFC
    /// 8305 says, the connect timeout, no Nagle), then TLS with this serial's configuration.
    async fn handshake(
        &self,
        authority: &str,
    ) -> std::result::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, BoxError> {
        let uri: http::Uri = format!("https://{authority}/").parse()?;
        let host = uri.host().unwrap_or_default();
        let name = rustls::pki_types::ServerName::try_from(
            host.trim_start_matches('[').trim_end_matches(']').to_owned(),
        )?;
        let mut tcp = self.tcp.clone();
        std::future::poll_fn(|cx| tower_service::Service::poll_ready(&mut tcp, cx)).await?;
        let io = tower_service::Service::call(&mut tcp, uri).await?;
        Ok(self.tls.connect(name, io.into_inner()).await?)
    }
}

/// Sends `req`'s head on an HTTP/2 connection and leaves its body, if any, to [`pipe`].
fn start(
    mut send: h2::client::SendRequest<Bytes>,
    req: Request<Body>,
) -> std::result::Result<h2::client::ResponseFuture, h2::Error> {
    let (mut head, body) = req.into_parts();
    let eos = body.is_end_stream();
    if eos {
        say_no_content(&mut head);
    }
    let (response, stream) = send.send_request(Request::from_parts(head, ()), eos)?;
    if !eos {
        tokio::spawn(pipe(body, stream));
    }
    Ok(response)
}

/// What hyper's client did for a request without a body: a method that carries content
/// says it has none (`content-length: 0`), for origins that answer 411 otherwise.
fn say_no_content(head: &mut http::request::Parts) {
    if matches!(head.method, http::Method::POST | http::Method::PUT | http::Method::PATCH)
        && !head.headers.contains_key(http::header::CONTENT_LENGTH)
    {
        head.headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from_static("0"));
    }
}

type SharedError = Arc<dyn std::error::Error + Send + Sync>;

/// The failure of a connection attempt, as each request that waited on it reports it.
#[derive(Debug)]
struct Shared(SharedError);

impl std::fmt::Display for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connecting failed")
    }
}

impl std::error::Error for Shared {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// An upstream connection in use must answer a PING within this long (or the idle timeout,
/// if shorter) at each idle check, or it is given up.
const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs one HTTP/2 connection until it ends, and retires it from its pool when nothing was
/// sent on it for the idle timeout or when it ends (closed by the upstream, a GOAWAY, an
/// error). A retired connection, or one whose pool is gone (the certificate was renewed),
/// says GOAWAY and closes once its open streams finish. A connection still in use is asked
/// for a PING at each idle check: one that does not answer (a laptop that changed networks,
/// a path that now drops everything) is dropped, failing its open streams, rather than
/// holding every request until TCP gives up minutes later.
async fn drive<T>(
    pool: std::sync::Weak<Pool>,
    authority: String,
    id: u64,
    used: Arc<AtomicU64>,
    idle_timeout: Duration,
    mut connection: h2::client::Connection<T, Bytes>,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut ping = connection.ping_pong();
    tokio::pin!(connection);
    let mut seen = used.load(Ordering::Relaxed);
    let forget = || {
        if let Some(pool) = pool.upgrade() {
            pool.forget(&authority, id);
        }
    };
    let result = loop {
        tokio::select! {
            r = &mut connection => break r,
            () = tokio::time::sleep(idle_timeout) => {
                let now = used.load(Ordering::Relaxed);
                if now == seen {
                    forget();
                    break connection.await;
                }
                seen = now;
                let Some(ping) = ping.as_mut() else { continue };
                let answered = tokio::select! {
                    r = &mut connection => break r,
                    r = tokio::time::timeout(
                        PING_TIMEOUT.min(idle_timeout),
                        ping.ping(h2::Ping::opaque()),
                    ) => matches!(r, Ok(Ok(_))),
                };
                if !answered {
                    forget();
                    tracing::warn!(upstream = %authority, "upstream connection did not answer a PING; dropping it");
                    return;
                }
            }
        }
    };
    forget();
    if let Err(e) = result {
        tracing::debug!(upstream = %authority, error = %e, "upstream connection ended");
    }
}

/// How long the rest of a client's body is still read, and dropped, after the upstream
/// answered without it ([`linger`]), and the longest wait for each piece of it: nginx's
/// `lingering_time` and `lingering_timeout`.
const LINGER: Duration = Duration::from_secs(30);
const LINGER_GAP: Duration = Duration::from_secs(5);

/// Streams a request body into its HTTP/2 stream as the upstream's flow control allows.
/// Stops (resetting the stream) when the client's body fails or the upstream resets it;
/// a reset with NO_ERROR, the upstream's "answered, send no more", lingers.
async fn pipe(mut body: Body, mut stream: h2::SendStream<Bytes>) {
    loop {
        let frame = std::future::poll_fn(|cx| {
            if let Poll::Ready(reason) = stream.poll_reset(cx) {
                return Poll::Ready(Err(reason.ok()));
            }
            Pin::new(&mut body).poll_frame(cx).map(Ok)
        })
        .await;
        let frame = match frame {
            Err(Some(h2::Reason::NO_ERROR)) => return linger(body).await,
            Err(_) => return, // the upstream reset the stream: nothing more to send
            Ok(None) => {
                let _ = stream.send_data(Bytes::new(), true);
                return;
            }
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, "request body failed; resetting the upstream stream");
                stream.send_reset(h2::Reason::CANCEL);
                return;
            }
            Ok(Some(Ok(f))) => f,
        };
        let frame = match frame.into_data() {
            Ok(mut data) => {
                while !data.is_empty() {
                    stream.reserve_capacity(data.len());
                    match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
                        Some(Ok(0)) => {}
                        Some(Ok(n)) => {
                            let chunk = data.split_to(n.min(data.len()));
                            if stream.send_data(chunk, false).is_err() {
                                return stop(body, &mut stream).await;
                            }
                        }
                        Some(Err(_)) | None => return stop(body, &mut stream).await,
                    }
                }
                continue;
            }
            Err(frame) => frame,
        };
        if let Ok(trailers) = frame.into_trailers() {
            let _ = stream.send_trailers(trailers);
            return;
        }
    }
}

/// The stream can take no more: if the upstream reset it with NO_ERROR, [`linger`].
async fn stop(body: Body, stream: &mut h2::SendStream<Bytes>) {
    let reason = std::future::poll_fn(|cx| Poll::Ready(stream.poll_reset(cx))).await;
    if matches!(reason, Poll::Ready(Ok(h2::Reason::NO_ERROR))) {
        linger(body).await;
    }
}

/// The upstream has answered and needs no more of the request body (it reset the stream
/// with NO_ERROR, RFC 9113 section 8.1, as nginx does for a `return` before an upload ends).
/// The client may still be sending it: reading on, and dropping what comes, lets it finish
/// and read the answer, where dropping the body would close its HTTP/1.1 connection with
/// unread data and reset it, the answer lost (nginx's lingering close, with its bounds).
async fn linger(mut body: Body) {
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(Some(Ok(_))) = tokio::time::timeout(LINGER_GAP, body.frame()).await {}
    })
    .await;
}

/// An HTTP/2 response body: data frames as they arrive (each one's window handed back to
/// the upstream as it is passed on), then the trailers.
struct H2Body {
    recv: h2::RecvStream,
    data_done: bool,
}

impl hyper::body::Body for H2Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, BoxError>>> {
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => self.data_done = true,
            }
        }
        match ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(t)) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e.into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Accepted = (Request<h2::RecvStream>, h2::server::SendResponse<Bytes>);

    /// An HTTP/2 client and server over an in-memory pipe, with h2's default 64 KiB windows,
    /// so that a body of megabytes has to wait for window updates. The server's connection
    /// runs in its own task and hands over the streams it accepts.
    async fn pair() -> (h2::client::SendRequest<Bytes>, tokio::sync::mpsc::Receiver<Accepted>) {
        let (c, s) = tokio::io::duplex(16 << 10);
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut server = h2::server::handshake(s).await.expect("server handshake");
            while let Some(Ok(accepted)) = server.accept().await {
                let _ = tx.send(accepted).await;
            }
        });
        let (send, conn) = h2::client::handshake(c).await.expect("client handshake");
        tokio::spawn(conn);
        (send, rx)
    }

    fn chain(e: &(dyn std::error::Error + 'static)) -> String {
        let mut text = e.to_string();
        let mut src = e.source();
        while let Some(s) = src {
            text = format!("{text}: {s}");
            src = s.source();
        }
        text
    }

    /// Connection failures say what failed, in the words the proxy's answers are chosen by
    /// (`handler::classify`: "dns error" means the name did not resolve).
    #[tokio::test]
    async fn connection_failures_name_dns_or_the_connection() {
        let pool = pool();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = closed.local_addr().expect("addr").port();
        drop(closed);
        let get =
            |a: &str| Request::get(format!("https://{a}/")).body(Body::default()).expect("request");
        let authority = format!("127.0.0.1:{port}");
        // Concurrent first requests share one attempt's outcome, each told why.
        let tries: Vec<_> = (0..8)
            .map(|_| {
                let (pool, authority) = (pool.clone(), authority.clone());
                tokio::spawn(async move { pool.send(&authority, get(&authority)).await })
            })
            .collect();
        for t in tries {
            let e = t.await.expect("join").expect_err("nothing listens");
            let text = chain(e.as_ref());
            assert!(text.contains("tcp connect error") && !text.contains("dns error"), "{text}");
        }
        assert!(pool.connecting.lock().expect("gates").is_empty(), "no gate outlives its attempt");
        let e = pool
            .send("no-such-host.invalid", get("no-such-host.invalid"))
            .await
            .expect_err("no such name");
        assert!(chain(e.as_ref()).contains("dns error"), "{}", chain(e.as_ref()));
    }

    fn pool() -> Arc<Pool> {
        let tls = rustls::ClientConfig::builder_with_provider(crate::est::provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        Arc::new(Pool::new("01", &tls, Duration::from_secs(1)))
    }

    /// A connection in use that stops answering PINGs (the server here stops reading, as a
    /// path that drops everything would look) is given up within an idle check and a PING
    /// timeout; while it answers, it stays.
    #[tokio::test(start_paused = true)]
    async fn a_connection_in_use_that_stops_answering_pings_is_dropped() {
        let (c, s) = tokio::io::duplex(16 << 10);
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let mut server = h2::server::handshake(s).await.expect("server handshake");
            loop {
                tokio::select! {
                    r = server.accept() => if r.is_none() { return },
                    _ = &mut stopped => break,
                }
            }
            // Still open, never read again.
            std::future::pending::<()>().await;
            drop(server);
        });
        let (send, connection) = h2::client::handshake(c).await.expect("client handshake");
        let pool = pool();
        let used = Arc::new(AtomicU64::new(0));
        pool.remember("up.example", Known::H2 { send, id: 7, used: used.clone() });
        tokio::spawn(drive(
            Arc::downgrade(&pool),
            "up.example".into(),
            7,
            used.clone(),
            pool.idle_timeout,
            connection,
        ));
        for _ in 0..8 {
            used.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(pool.known("up.example").is_some(), "answering PINGs, the connection stays");
        let _ = stop.send(());
        for _ in 0..8 {
            used.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert!(
            pool.known("up.example").is_none(),
            "a connection that stopped answering is dropped"
        );
    }

    #[test]
    fn an_empty_post_says_content_length_0_and_a_get_says_nothing() {
        let head =
            |m: http::Method| Request::builder().method(m).body(()).expect("req").into_parts().0;
        let mut post = head(http::Method::POST);
        say_no_content(&mut post);
        assert_eq!(post.headers.get("content-length").map(|v| v.as_bytes()), Some(&b"0"[..]));
        let mut get = head(http::Method::GET);
        say_no_content(&mut get);
        assert!(get.headers.get("content-length").is_none());
    }

    /// An upstream that answers before the upload ends and resets the stream with
    /// NO_ERROR: the rest of the client's body is still read (and dropped), so that an
    /// HTTP/1.1 client finishes sending and reads the answer instead of a reset connection.
    #[tokio::test]
    async fn the_rest_of_a_body_is_read_after_the_upstream_answered_without_it() {
        let (send, mut server) = pair().await;
        let (answered, reset) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let (_req, mut respond) = server.recv().await.expect("a stream");
            respond.send_response(Response::new(()), true).expect("respond");
            // After the answer is out (a reset drops what is still queued for the stream).
            let _ = reset.await;
            respond.send_reset(h2::Reason::NO_ERROR);
        });
        const CHUNKS: usize = 64;
        let read = Arc::new(AtomicU64::new(0));
        let counted = read.clone();
        let chunks = (0..CHUNKS).map(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok::<_, BoxError>(Frame::data(Bytes::from(vec![1u8; 256 << 10])))
        });
        let body: Body =
            http_body_util::StreamBody::new(futures_util::stream::iter(chunks)).boxed();
        let mut send = send.ready().await.expect("ready");
        let req = Request::post("https://up.example/upload").body(()).expect("request");
        let (response, stream) = send.send_request(req, false).expect("send");
        let piped = tokio::spawn(pipe(body, stream));
        let resp = response.await.expect("response");
        assert_eq!(resp.status(), 200);
        let _ = answered.send(());
        tokio::time::timeout(Duration::from_secs(10), piped)
            .await
            .expect("the body ended well within the linger time")
            .expect("pipe");
        assert_eq!(
            read.load(Ordering::SeqCst),
            CHUNKS as u64,
            "every chunk of the client's body was read, though the upstream took only the first"
        );
    }

    #[tokio::test]
    async fn a_request_body_streams_through_flow_control_with_its_trailers() {
        let (send, mut server) = pair().await;
        let received = tokio::spawn(async move {
            let (req, mut respond) = server.recv().await.expect("a stream");
            let mut body = req.into_body();
            let mut bytes = 0usize;
            while let Some(data) = body.data().await {
                let data = data.expect("data");
                bytes += data.len();
                body.flow_control().release_capacity(data.len()).expect("release");
            }
            let trailers = body.trailers().await.expect("trailers");
            respond.send_response(Response::new(()), true).expect("respond");
            (bytes, trailers)
        });
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-checksum", http::HeaderValue::from_static("abc"));
        let chunks: Vec<std::result::Result<Frame<Bytes>, BoxError>> = (0..3)
            .map(|_| Ok(Frame::data(Bytes::from(vec![1u8; 1 << 20]))))
            .chain(std::iter::once(Ok(Frame::trailers(trailers))))
            .collect();
        let body: Body =
            http_body_util::StreamBody::new(futures_util::stream::iter(chunks)).boxed();
        let mut send = send.ready().await.expect("ready");
        let req = Request::post("https://up.example/upload").body(()).expect("request");
        let (response, stream) = send.send_request(req, false).expect("send");
        tokio::spawn(pipe(body, stream));
        let resp = tokio::time::timeout(Duration::from_secs(20), response)
            .await
            .expect("the server answered once the whole body was in")
            .expect("response");
        assert_eq!(resp.status(), 200);
        let (bytes, trailers) = received.await.expect("server");
        assert_eq!(bytes, 3 << 20, "every byte of the body arrived");
        assert_eq!(
            trailers.and_then(|t| t.get("x-checksum").cloned()),
            Some(http::HeaderValue::from_static("abc")),
            "the trailers followed the data"
        );
    }

    #[tokio::test]
    async fn a_response_body_passes_its_data_and_trailers_and_returns_the_window() {
        let (send, mut server) = pair().await;
        tokio::spawn(async move {
            let (_req, mut respond) = server.recv().await.expect("a stream");
            let mut stream = respond.send_response(Response::new(()), false).expect("respond");
            let mut left = Bytes::from(vec![2u8; 1 << 20]);
            // More than the client's window: this only finishes if the client's body hands
            // the window back as it is read.
            for _ in 0..4 {
                let mut data = left.clone();
                while !data.is_empty() {
                    stream.reserve_capacity(data.len());
                    let n = std::future::poll_fn(|cx| stream.poll_capacity(cx))
                        .await
                        .expect("capacity")
                        .expect("ok");
                    stream.send_data(data.split_to(n.min(data.len())), false).expect("data");
                }
                left = left.clone();
            }
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            stream.send_trailers(trailers).expect("trailers");
        });
        let mut send = send.ready().await.expect("ready");
        let req = Request::get("https://up.example/big").body(()).expect("request");
        let (response, _) = send.send_request(req, true).expect("send");
        let (_, recv) = response.await.expect("response").into_parts();
        // Without the window handed back, the transfer stalls at 64 KiB.
        let collected = tokio::time::timeout(
            Duration::from_secs(20),
            H2Body { recv, data_done: false }.collect(),
        )
        .await
        .expect("the body arrived: its window went back to the server")
        .expect("body");
        let trailers = collected.trailers().cloned();
        assert_eq!(collected.to_bytes().len(), 4 << 20);
        assert_eq!(
            trailers.and_then(|t| t.get("grpc-status").cloned()),
            Some(http::HeaderValue::from_static("0"))
        );
    }
}
