//! HTTPS clients toward upstreams: rustls (TLS 1.2+, 1.3 preferred), ALPN h2 and
//! http/1.1, connection pooling with keep-alive. One client per serial: when the agent's
//! certificate changes, the next request builds a fresh client, so pooled connections
//! made with the old certificate are no longer used (in-flight requests finish on them).

use super::resolver::CurrentCert;
use crate::config::Route;
use crate::credential::CredentialView;
use crate::error::{AgentError, Result};
use arc_swap::ArcSwapOption;
use http_body_util::combinators::BoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;

pub type Body = BoxBody<bytes::Bytes, hyper::Error>;
pub type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

struct Pooled {
    serial: String,
    client: HttpsClient,
}

pub struct Upstreams {
    tls: Arc<rustls::ClientConfig>,
    idle_timeout: std::time::Duration,
    current: ArcSwapOption<Pooled>,
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
        // ALPN (h2, http/1.1) is set by the connector's `enable_all_versions`.
        let tls = rustls::ClientConfig::builder_with_provider(crate::est::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| AgentError::Crypto(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_cert_resolver(Arc::new(CurrentCert(credential.clone())));
        Ok(Upstreams {
            tls: Arc::new(tls),
            idle_timeout: route.idle_timeout,
            current: ArcSwapOption::empty(),
        })
    }

    fn build(&self) -> HttpsClient {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(std::time::Duration::from_secs(10)));
        // A fresh session cache per certificate: a resumed TLS session would present the
        // certificate of the session it resumes, not the current one.
        let mut tls = (*self.tls).clone();
        tls.resumption = rustls::client::Resumption::in_memory_sessions(256);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_all_versions()
            .wrap_connector(http);
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(self.idle_timeout)
            .pool_max_idle_per_host(64)
            .build(https)
    }

    /// The client for the current certificate's serial.
    pub fn client(&self, serial: &str) -> HttpsClient {
        if let Some(p) = self.current.load().as_ref()
            && p.serial == serial
        {
            return p.client.clone();
        }
        let client = self.build();
        self.current
            .store(Some(Arc::new(Pooled { serial: serial.to_owned(), client: client.clone() })));
        client
    }
}
