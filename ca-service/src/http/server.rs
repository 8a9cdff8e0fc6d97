//! The CA's listeners: HTTPS (the peer's certificate handed to handlers) and plain HTTP
//! (publication only), both on the shared accept loop of `lanyard-net`, with its
//! timeouts, connection caps and HTTP/2 limits.

use super::{PeerCert, Remote};
use axum::Router;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub use lanyard_net::Limits;

/// Serves `app` on `listener` with the default limits ([`Limits::server`]); with `tls`,
/// over HTTPS.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    shutdown: CancellationToken,
) {
    serve_with(listener, tls, app, Limits::server(), shutdown).await
}

/// [`serve`] with explicit limits.
pub async fn serve_with(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    lanyard_net::serve(
        lanyard_net::Listener::Tcp(listener),
        acceptor,
        limits,
        move |conn: &lanyard_net::Conn| {
            let peer = PeerCert(conn.peer_cert.clone());
            let remote = Remote(conn.remote.map(|r| r.to_string()));
            let svc = app.clone().map_request(
                move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(peer.clone());
                    req.extensions_mut().insert(remote.clone());
                    req
                },
            );
            TowerToHyperService::new(svc)
        },
        shutdown,
    )
    .await
}
