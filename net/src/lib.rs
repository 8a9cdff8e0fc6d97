//! The one accept loop of Lanyard's servers: the CA's HTTPS and plain-HTTP listeners, the
//! agent's proxy listeners and its status endpoint.
//!
//! Every connection gets the same protection, whoever serves it:
//! - a cap on connections in all and per source address: over it, a new connection is
//!   closed at once (it never waits holding a file descriptor);
//! - a TLS handshake timeout, an HTTP/1 header-read timeout, a keep-alive idle timeout
//!   (no bytes either way and no request in flight), and optionally a whole-request
//!   timeout;
//! - HTTP/2: few concurrent streams and small flow-control windows, so unfinished streams
//!   cannot make the server buffer much before a handler has authenticated anything;
//! - accept errors (EMFILE, ENFILE, ...) back off and recover; they never end the loop.
#![forbid(unsafe_code)]

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The limits one listener enforces.
#[derive(Clone, Debug)]
pub struct Limits {
    /// TLS handshake, from accept to the end of the handshake.
    pub handshake_timeout: Duration,
    /// HTTP/1: from the first byte of a request head to its end.
    pub header_read_timeout: Duration,
    /// No bytes either way and no request in flight for this long: the connection closes.
    pub idle_timeout: Duration,
    /// A request (head, body, handler) that takes longer is aborted. `None` for the proxy,
    /// whose transfers may be long and which has its own upstream timeouts.
    pub request_timeout: Option<Duration>,
    /// Connections open at once on this listener.
    pub max_connections: usize,
    /// Connections open at once from one source address; `None` where every client shares
    /// one address (loopback listeners).
    pub max_per_source: Option<usize>,
    /// HTTP/2 streams a client may have open at once on one connection.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 flow-control window of a stream and of the connection: what a client can
    /// make the server buffer.
    pub h2_stream_window: u32,
    pub h2_connection_window: u32,
    /// How long open connections get to finish after shutdown begins.
    pub drain_timeout: Duration,
}

impl Limits {
    /// A server facing a network (the CA).
    pub fn server() -> Self {
        Limits {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Some(Duration::from_secs(30)),
            max_connections: 4096,
            max_per_source: Some(64),
            h2_max_concurrent_streams: 32,
            h2_stream_window: 64 * 1024,
            h2_connection_window: 256 * 1024,
            drain_timeout: Duration::from_secs(10),
        }
    }

    /// A listener for local clients (the agent's proxy and status endpoint): no
    /// per-source cap (every client is 127.0.0.1) and no whole-request timeout.
    pub fn local() -> Self {
        Limits {
            max_connections: 4096,
            max_per_source: None,
            request_timeout: None,
            h2_max_concurrent_streams: 128,
            h2_stream_window: 1024 * 1024,
            h2_connection_window: 4 * 1024 * 1024,
            ..Limits::server()
        }
    }
}

/// A bound listener.
pub enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl Listener {
    /// The TCP address, for logs and for checking `Host` against.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().ok(),
            Listener::Unix(_) => None,
        }
    }
}

/// What a service is told about its connection.
#[derive(Clone, Debug, Default)]
pub struct Conn {
    /// The peer's address (TCP).
    pub remote: Option<SocketAddr>,
    /// The listener's own address (TCP).
    pub local: Option<SocketAddr>,
    /// The TLS client certificate (DER), if the client presented one.
    pub peer_cert: Option<Vec<u8>>,
}

/// Counts open connections, in all and per source; a slot is given back when its guard
/// drops.
#[derive(Default)]
struct Slots {
    total: AtomicUsize,
    per_source: Mutex<HashMap<IpAddr, usize>>,
}

struct Slot {
    slots: Arc<Slots>,
    source: Option<IpAddr>,
}

impl Slots {
    fn take(self: &Arc<Self>, source: Option<IpAddr>, limits: &Limits) -> Option<Slot> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= limits.max_connections {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let source = match (source, limits.max_per_source) {
            (Some(ip), Some(max)) => {
                let Ok(mut m) = self.per_source.lock() else {
                    self.total.fetch_sub(1, Ordering::AcqRel);
                    return None;
                };
                let n = m.entry(ip).or_insert(0);
                if *n >= max {
                    self.total.fetch_sub(1, Ordering::AcqRel);
                    return None;
                }
                *n += 1;
                Some(ip)
            }
            _ => None,
        };
        Some(Slot { slots: self.clone(), source })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.source
            && let Ok(mut m) = self.slots.per_source.lock()
            && let Some(n) = m.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                m.remove(&ip);
            }
        }
    }
}

/// Logs a refusal at most once every 10 s per listener, so a flood does not flood the log.
struct Throttled {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl Throttled {
    fn new() -> Self {
        Throttled { last: Mutex::new(None), suppressed: AtomicU64::new(0) }
    }
    fn warn(&self, what: &str, detail: &str) {
        let Ok(mut last) = self.last.lock() else { return };
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        *last = Some(Instant::now());
        let more = self.suppressed.swap(0, Ordering::Relaxed);
        tracing::warn!(more_since_last = more, detail, "{what}");
    }
}

/// Serves `make`'s services on `listener` (over TLS when `tls` is given) until `shutdown`,
/// then lets open connections finish for `limits.drain_timeout`.
pub async fn serve<F, S, B>(
    listener: Listener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    make: F,
    shutdown: CancellationToken,
) where
    F: Fn(&Conn) -> S + Send + Sync + 'static,
    S: Service<http::Request<Incoming>, Response = http::Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let make = Arc::new(make);
    let limits = Arc::new(limits);
    let slots = Arc::new(Slots::default());
    let refusals = Arc::new(Throttled::new());
    let tracker = TaskTracker::new();
    let local = listener.local_addr();
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = accept(&listener) => r,
        };
        let (io, remote) = match accepted {
            Ok(x) => {
                backoff = Duration::from_millis(10);
                x
            }
            Err(e) => {
                // Out of file descriptors and the like: pause instead of spinning, then go
                // on; connections closing meanwhile free what is needed.
                refusals.warn("accept failed; backing off", &e.to_string());
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Some(slot) = slots.take(remote.map(|r| r.ip()), &limits) else {
            refusals.warn(
                "connection refused: connection cap reached",
                &format!(
                    "from {}; caps {} in all, {} per source",
                    remote.map(|r| r.to_string()).unwrap_or_else(|| "a local socket".into()),
                    limits.max_connections,
                    limits.max_per_source.map(|n| n.to_string()).unwrap_or_else(|| "none".into())
                ),
            );
            drop(io);
            continue;
        };
        let (make, limits, tls, shutdown) =
            (make.clone(), limits.clone(), tls.clone(), shutdown.clone());
        tracker.spawn(async move {
            let _slot = slot;
            let mut conn = Conn { remote, local, peer_cert: None };
            match (io, tls) {
                (Accepted::Tcp(s), Some(acc)) => {
                    let tls =
                        match tokio::time::timeout(limits.handshake_timeout, acc.accept(s)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(?remote, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(?remote, "TLS handshake timed out");
                                return;
                            }
                        };
                    conn.peer_cert = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| c.to_vec());
                    let svc = make(&conn);
                    serve_conn(Box::new(tls), svc, &limits, shutdown).await
                }
                (Accepted::Tcp(s), None) => {
                    serve_conn(Box::new(s), make(&conn), &limits, shutdown).await
                }
                (Accepted::Unix(s), _) => {
                    serve_conn(Box::new(s), make(&conn), &limits, shutdown).await
                }
            }
        });
    }
    tracker.close();
    if tokio::time::timeout(limits.drain_timeout, tracker.wait()).await.is_err() {
        tracing::warn!("connections still open after the drain timeout; closing them");
    }
}

enum Accepted {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(l: &Listener) -> std::io::Result<(Accepted, Option<SocketAddr>)> {
    match l {
        Listener::Tcp(l) => {
            let (s, peer) = l.accept().await?;
            let _ = s.set_nodelay(true);
            Ok((Accepted::Tcp(s), Some(peer)))
        }
        Listener::Unix(l) => Ok((Accepted::Unix(l.accept().await?.0), None)),
    }
}

/// Milliseconds since the connection started, of its last byte either way.
#[derive(Clone)]
struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
    in_flight: Arc<AtomicUsize>,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }
    fn idle_for(&self) -> Duration {
        self.start
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

pin_project_lite::pin_project! {
    /// An I/O stream that records when bytes last moved.
    struct Tracked<I> {
        #[pin]
        inner: I,
        activity: Activity,
    }
}

impl<I: AsyncRead> AsyncRead for Tracked<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        r
    }
}

impl<I: AsyncWrite> AsyncWrite for Tracked<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// An accepted connection, whatever the listener (TCP, Unix socket, TLS): one type, so that
/// the HTTP/1.1 and HTTP/2 server code is compiled once per service rather than once per
/// service and socket kind (docs/BENCHMARKS.md, "Agent size and memory"). One allocation per
/// connection and an indirect call per read or write, nothing next to the system call behind
/// it; tokio's `Box` forwards every method, vectored writes and shutdown included.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}
type Stream = Box<dyn Io>;

/// A service that counts requests in flight and bounds how long each may take.
struct Guarded<S> {
    inner: S,
    activity: Activity,
    request_timeout: Option<Duration>,
}

struct InFlight(Arc<AtomicUsize>);
impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request that took longer than the listener's request timeout.
#[derive(Debug)]
pub struct RequestTimedOut(pub Duration);
impl std::fmt::Display for RequestTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "request not finished within {:?}; connection closed", self.0)
    }
}
impl std::error::Error for RequestTimedOut {}

impl<S, B> Service<http::Request<Incoming>> for Guarded<S>
where
    S: Service<http::Request<Incoming>, Response = http::Response<B>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<B>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        self.activity.in_flight.fetch_add(1, Ordering::AcqRel);
        let guard = InFlight(self.activity.in_flight.clone());
        Box::pin(Counted {
            fut: self.inner.call(req),
            // Unconstrained, as in `tokio::time::timeout`: the deadline still fires when the
            // request's own future has used up the task's budget.
            deadline: self
                .request_timeout
                .map(|d| (Box::pin(tokio::task::unconstrained(tokio::time::sleep(d))), d)),
            _guard: guard,
        })
    }
}

pin_project_lite::pin_project! {
    /// A request's future, counted in flight until it finishes or is dropped, and bounded
    /// by the listener's request timeout. A struct, not an `async` block: a block would hold
    /// the service's future twice (captured, and again as the value it awaits), and this
    /// box is allocated for every request.
    struct Counted<F> {
        #[pin]
        fut: F,
        // Boxed: only listeners with a request timeout pay for the timer's size.
        deadline: Option<(Pin<Box<tokio::task::Unconstrained<tokio::time::Sleep>>>, Duration)>,
        _guard: InFlight,
    }
}

impl<F, R, E> Future for Counted<F>
where
    F: Future<Output = Result<R, E>>,
    E: Into<BoxError>,
{
    type Output = Result<R, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(r) = this.fut.poll(cx) {
            return Poll::Ready(r.map_err(Into::into));
        }
        if let Some((sleep, d)) = this.deadline
            && sleep.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(Box::new(RequestTimedOut(*d))));
        }
        Poll::Pending
    }
}

async fn serve_conn<S, B>(io: Stream, svc: S, limits: &Limits, shutdown: CancellationToken)
where
    S: Service<http::Request<Incoming>, Response = http::Response<B>> + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let activity = Activity::new();
    let io = TokioIo::new(Tracked { inner: io, activity: activity.clone() });
    let svc =
        Guarded { inner: svc, activity: activity.clone(), request_timeout: limits.request_timeout };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .initial_stream_window_size(limits.h2_stream_window)
        .initial_connection_window_size(limits.h2_connection_window)
        .max_header_list_size(32 * 1024)
        .max_pending_accept_reset_streams(Some(limits.h2_max_concurrent_streams as usize));
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let idle = limits.idle_timeout;
    let watch = async {
        let tick = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            tokio::time::sleep(tick).await;
            if activity.in_flight.load(Ordering::Acquire) == 0 && activity.idle_for() >= idle {
                return;
            }
        }
    };
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(limits.drain_timeout, conn.as_mut()).await;
        }
        _ = watch => {
            tracing::debug!("closing an idle connection");
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.as_mut()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a panic is the failure message
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits() -> Limits {
        Limits {
            handshake_timeout: Duration::from_millis(300),
            header_read_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(400),
            request_timeout: Some(Duration::from_millis(500)),
            max_connections: 8,
            max_per_source: Some(3),
            drain_timeout: Duration::from_millis(200),
            ..Limits::server()
        }
    }

    async fn start(limits: Limits) -> (SocketAddr, CancellationToken) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve(
            Listener::Tcp(l),
            None,
            limits,
            |_c: &Conn| {
                hyper::service::service_fn(|req: http::Request<Incoming>| async move {
                    if req.uri().path() == "/slow" {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                        Bytes::from_static(b"ok"),
                    )))
                })
            },
            stop.clone(),
        ));
        (addr, stop)
    }

    /// Reads until EOF or `within`; true if the server closed the connection.
    async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 1024];
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        out
    }

    #[tokio::test]
    async fn per_source_cap_closes_the_extra_connections_at_once() {
        let (addr, _stop) = start(limits()).await;
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(closed_within(&mut extra, Duration::from_millis(200)).await, "over the cap");
        // The held ones are closed by the header-read or idle timeout, freeing the slots.
        for s in &mut held {
            assert!(closed_within(s, Duration::from_secs(2)).await, "idle connection kept");
        }
        assert!(get(addr, "/").await.ends_with("ok"), "serves again once slots are free");
    }

    #[tokio::test]
    async fn half_sent_heads_and_slow_requests_are_cut_off() {
        let (addr, _stop) = start(limits()).await;
        let mut half = tokio::net::TcpStream::connect(addr).await.unwrap();
        half.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
        let t = Instant::now();
        assert!(closed_within(&mut half, Duration::from_secs(2)).await, "header timeout");
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        // A request whose handler outlives the request timeout: the connection is dropped.
        let t = Instant::now();
        let out = get(addr, "/slow").await;
        assert!(!out.contains("200 OK"), "{out}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }

    #[tokio::test]
    async fn total_cap_and_keep_alive_idle_timeout() {
        let l = Limits { max_per_source: None, max_connections: 2, ..limits() };
        let (addr, _stop) = start(l).await;
        // A kept-alive connection that made one request is closed once idle.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).contains("200 OK"));
        let t = Instant::now();
        assert!(closed_within(&mut s, Duration::from_secs(2)).await, "idle keep-alive kept");
        assert!(t.elapsed() >= Duration::from_millis(300), "{:?}", t.elapsed());
        let _a = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _b = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(closed_within(&mut c, Duration::from_millis(200)).await, "over the total cap");
    }
}
