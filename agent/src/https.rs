//! The agent's one HTTPS client type. The EST client and the proxy's HTTP/1.1 upstreams both
//! use hyper-util's pooled client over this connector and body type, so its code (and the
//! HTTP/1.1 and HTTP/2 client code inside it) is compiled once for both; a second body or
//! connector type would link a second copy (docs/BENCHMARKS.md, "Agent size and memory").

use crate::error::{AgentError, Result};
use bytes::Bytes;
use http::Uri;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::{SocksV5, Tunnel};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// A request or response body, on either side of the proxy and toward the CA.
pub type Body = BoxBody<Bytes, BoxError>;
/// hyper-util's pooled client over TLS (or plain TCP) through [`Connector`].
pub type HttpsClient = Client<hyper_rustls::HttpsConnector<Connector>, Body>;

/// A whole body held in memory (a request to the CA).
pub fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// TCP to a server: directly, through an HTTP `CONNECT` tunnel, or through SOCKS5. The EST
/// client decides once from the proxy environment and the CA's URL ([`Connector::for_url`]: a
/// client talks to one CA); the local proxy's upstreams are always [`Connector::Direct`].
#[derive(Clone)]
pub enum Connector {
    Direct(HttpConnector),
    Tunnel(Tunnel<HttpConnector>),
    Socks(SocksV5<HttpConnector>),
}

impl Connector {
    pub fn for_url(base: &Uri, connect_timeout: Duration) -> Result<Connector> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let Some(proxy) = hyper_util::client::proxy::matcher::Matcher::from_env().intercept(base)
        else {
            return Ok(Connector::Direct(http));
        };
        let uri = proxy.uri().clone();
        let scheme = uri.scheme_str().map(str::to_owned);
        match scheme.as_deref() {
            Some("http" | "https") => {
                let mut tunnel = Tunnel::new(uri, http);
                if let Some(auth) = proxy.basic_auth() {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                Ok(Connector::Tunnel(tunnel))
            }
            Some(scheme @ ("socks5" | "socks5h")) => {
                let local_dns = scheme == "socks5";
                // socks5: this device resolves the CA's name; socks5h: the proxy does.
                let mut socks = SocksV5::new(uri, http).local_dns(local_dns);
                if let Some((user, pass)) = proxy.raw_auth() {
                    socks = socks.with_auth(user.to_owned(), pass.to_owned());
                }
                Ok(Connector::Socks(socks))
            }
            other => Err(AgentError::Usage(format!(
                "proxy for {base}: scheme {} is not supported (http, https, socks5, socks5h)",
                other.unwrap_or("(none)")
            ))),
        }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = BoxError;
    type Future =
        Pin<Box<dyn Future<Output = std::result::Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), BoxError>> {
        match self {
            Connector::Direct(c) => c.poll_ready(cx).map_err(Into::into),
            Connector::Tunnel(c) => c.poll_ready(cx).map_err(Into::into),
            Connector::Socks(c) => c.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        match self {
            Connector::Direct(c) => {
                let f = c.call(dst);
                Box::pin(async move { f.await.map_err(Into::into) })
            }
            Connector::Tunnel(c) => {
                let f = c.call(dst);
                Box::pin(async move { f.await.map_err(Into::into) })
            }
            Connector::Socks(c) => {
                let f = c.call(dst);
                Box::pin(async move { f.await.map_err(Into::into) })
            }
        }
    }
}
