//! The EST client (RFC 7030) and the CA's `/v1/` device API.
//!
//! TLS is rustls with the roots from [`crate::trust`]; for `simplereenroll` and `/v1/`
//! the current certificate authenticates the device. HTTP is hyper's client, the same
//! stack the proxy uses toward upstreams. Proxies between the device and the CA are
//! honoured as corporate networks need them: `HTTPS_PROXY` / `HTTP_PROXY` (an HTTP
//! `CONNECT` tunnel, with the proxy URL's credentials), `ALL_PROXY=socks5://` or
//! `socks5h://` (SOCKS5), and `NO_PROXY`.

use crate::error::{AgentError, Result};
use crate::https::{Body, Connector, HttpsClient};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use lanyard_proto::api::{CertificateStatus, CheckinReport};
use lanyard_proto::{KeyAlgorithm, est};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use std::time::Duration;

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// How the client authenticates itself to the CA.
pub enum ClientAuth {
    None,
    /// Certificate chain (leaf first) and its PKCS#8 key.
    Certificate(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
    /// The credential in use, whose key may be in hardware.
    Certified(Arc<rustls::sign::CertifiedKey>),
}

/// Always the same client certificate.
#[derive(Debug)]
pub struct FixedCert(pub Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for FixedCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

pub struct EstClient {
    base: String,
    http: HttpsClient,
    timeout: Duration,
}

/// The largest answer read from the CA: certificates, policy and status are a few KiB.
const MAX_ANSWER: usize = est::MAX_BODY * 4;

/// An answer from the CA: its status, headers and whole body.
struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T> {
        serde_json::from_slice(&self.body)
            .map_err(|e| AgentError::BadAnswer(format!("{what}: {e}")))
    }
}

impl std::fmt::Debug for EstClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EstClient").field("base", &self.base).finish_non_exhaustive()
    }
}

pub enum Trust {
    Roots(rustls::RootCertStore),
    /// Only to fetch `/cacerts` before checking a pinned fingerprint.
    AcceptAnyForBootstrap,
}

impl EstClient {
    pub fn new(base: &str, trust: Trust, auth: ClientAuth, timeout: Duration) -> Result<Self> {
        let provider = provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| AgentError::Crypto(e.to_string()))?;
        let builder = match trust {
            Trust::Roots(r) => builder.with_root_certificates(r),
            Trust::AcceptAnyForBootstrap => builder.dangerous().with_custom_certificate_verifier(
                Arc::new(crate::trust::AcceptAnyServer(provider)),
            ),
        };
        let cfg = match auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Certificate(chain, key) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| AgentError::Crypto(format!("client certificate: {e}")))?,
            ClientAuth::Certified(ck) => builder.with_client_cert_resolver(Arc::new(FixedCert(ck))),
        };
        let base = base.trim_end_matches('/').to_owned();
        let uri: Uri =
            base.parse().map_err(|e| AgentError::Usage(format!("CA URL {base}: {e}")))?;
        let connector = Connector::for_url(&uri, Duration::from_secs(10).min(timeout))?;
        // ALPN (h2, http/1.1) is set by the connector's `enable_all_versions`. Plain http://
        // is allowed: the CA refuses enrolment there itself, and tests name its listener.
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(cfg)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(connector);
        let http = Client::builder(TokioExecutor::new()).build(https);
        Ok(EstClient { base, http, timeout })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        basic: Option<(&str, &str)>,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Request<Body>> {
        let mut req = Request::builder()
            .method(method)
            .uri(self.url(path))
            .header(USER_AGENT, concat!("lanyard/", env!("CARGO_PKG_VERSION")));
        if let Some(ct) = content_type {
            req = req.header(CONTENT_TYPE, ct);
        }
        if let Some((id, secret)) = basic {
            use base64::Engine;
            let creds = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
            let mut value =
                http::HeaderValue::from_str(&format!("Basic {creds}")).map_err(|_| {
                    AgentError::Usage(
                        "the identity or token holds characters a header cannot".into(),
                    )
                })?;
            value.set_sensitive(true);
            req = req.header(AUTHORIZATION, value);
        }
        req.body(crate::https::full(body))
            .map_err(|e| AgentError::Usage(format!("request to {}{path}: {e}", self.base)))
    }

    /// Sends the request and reads the whole answer, within the client's timeout.
    async fn exchange(&self, req: Request<Body>) -> Result<Answer> {
        let unreachable =
            |reason: String| AgentError::Unreachable { url: self.base.clone(), reason };
        let call = async {
            let resp = self.http.request(req).await.map_err(|e| match tls_refusal(&e) {
                Some(rustls::Error::InvalidCertificate(c)) => untrusted(&self.base, c),
                _ => unreachable(error_chain(&e)),
            })?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        AgentError::BadAnswer("answer too large".into())
                    } else {
                        unreachable(error_chain(&*e))
                    }
                })?
                .to_bytes();
            Ok(Answer { status: parts.status, headers: parts.headers, body })
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| unreachable(format!("no answer within {}s", self.timeout.as_secs_f64())))?
    }

    async fn send(&self, req: Request<Body>) -> Result<Answer> {
        let resp = self.exchange(req).await?;
        let status = resp.status;
        if status.is_success() {
            return Ok(resp);
        }
        let retry_after = resp
            .headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = &resp.body;
        // A problem+json body (RFC 9457) carries the code to decide on; anything else (an
        // older CA, a proxy in between) is judged by its status.
        let (code, text) = match lanyard_proto::Problem::parse(body) {
            Some(p) => (p.code, p.detail),
            None => (
                lanyard_proto::ProblemCode::from_status(status.as_u16()),
                String::from_utf8_lossy(body).into_owned(),
            ),
        };
        let message: String = text.trim().chars().take(300).collect();
        Err(AgentError::Refused {
            status: status.as_u16(),
            code,
            message: if message.is_empty() { status.to_string() } else { message },
            retry_after,
        })
    }

    fn get(&self, path: &str, basic: Option<(&str, &str)>) -> Result<Request<Body>> {
        self.request(Method::GET, path, basic, None, Bytes::new())
    }

    fn pkcs7_certs(resp: Answer) -> Result<Vec<Vec<u8>>> {
        let der =
            est::decode_base64(&resp.body).map_err(|e| AgentError::BadAnswer(e.to_string()))?;
        est::parse_certs_only_pkcs7(&der).map_err(|e| AgentError::BadAnswer(e.to_string()))
    }

    /// `GET /cacerts`: the CA certificates (issuing and root), DER.
    pub async fn cacerts(&self) -> Result<Vec<Vec<u8>>> {
        let r = self.send(self.get("/.well-known/est/cacerts", None)?).await?;
        Self::pkcs7_certs(r)
    }

    /// `GET /csrattrs`: the key algorithm the CA wants, if it says.
    pub async fn csrattrs(&self, basic: Option<(&str, &str)>) -> Result<Option<KeyAlgorithm>> {
        let r = match self.send(self.get("/.well-known/est/csrattrs", basic)?).await {
            Ok(r) => r,
            // csrattrs is optional in EST: a CA without it leaves the choice to us.
            Err(AgentError::Refused { status: 404 | 501, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let der = est::decode_base64(&r.body)
            .map_err(|e| AgentError::BadAnswer(format!("csrattrs {e}")))?;
        lanyard_proto::csrattrs::decode(&der)
            .map_err(|e| AgentError::BadAnswer(format!("csrattrs: {e}")))
    }

    fn csr_body(csr: &[u8]) -> String {
        est::encode_base64(csr)
    }

    fn leaf_of(certs: Vec<Vec<u8>>, spki: &[u8]) -> Result<Vec<u8>> {
        certs
            .into_iter()
            .find(|c| crate::verify::info(c).map(|i| i.spki_der == spki).unwrap_or(false))
            .ok_or_else(|| {
                AgentError::Verification(
                    "the CA's answer holds no certificate for this device's new key".into(),
                )
            })
    }

    /// `POST /simpleenroll` with the one-time token.
    pub async fn simpleenroll(
        &self,
        identity: &str,
        token: &str,
        csr: &[u8],
        spki: &[u8],
    ) -> Result<Vec<u8>> {
        self.post_csr("/.well-known/est/simpleenroll", Some((identity, token)), csr, spki).await
    }

    /// `POST /simpleenroll` with no token: authenticated by the client certificate this
    /// client was made with (a factory certificate).
    pub async fn simpleenroll_with_certificate(&self, csr: &[u8], spki: &[u8]) -> Result<Vec<u8>> {
        self.post_csr("/.well-known/est/simpleenroll", None, csr, spki).await
    }

    /// `POST /simplereenroll`, authenticated by the current certificate.
    pub async fn simplereenroll(&self, csr: &[u8], spki: &[u8]) -> Result<Vec<u8>> {
        self.post_csr("/.well-known/est/simplereenroll", None, csr, spki).await
    }

    async fn post_csr(
        &self,
        path: &str,
        basic: Option<(&str, &str)>,
        csr: &[u8],
        spki: &[u8],
    ) -> Result<Vec<u8>> {
        let mut req = self.request(
            Method::POST,
            path,
            basic,
            Some(est::CT_PKCS10),
            Self::csr_body(csr).into(),
        )?;
        req.headers_mut()
            .insert("content-transfer-encoding", http::HeaderValue::from_static("base64"));
        let r = self.send(req).await?;
        Self::leaf_of(Self::pkcs7_certs(r)?, spki)
    }

    /// `POST /v1/checkin`: reports the agent's state, and gets what `GET /v1/certificate`
    /// gives. `None` from a CA that has no check-in endpoint (older than the report).
    pub async fn checkin(&self, report: &CheckinReport) -> Result<Option<CertificateStatus>> {
        let body = serde_json::to_vec(report)
            .map_err(|e| AgentError::BadAnswer(format!("check-in report: {e}")))?;
        let req =
            self.request(Method::POST, "/v1/checkin", None, Some("application/json"), body.into())?;
        match self.send(req).await {
            Ok(r) => r.json("/v1/checkin").map(Some),
            Err(AgentError::Refused { status: 404 | 405, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /v1/certificate`: status and policy for the presented certificate.
    pub async fn certificate_status(&self) -> Result<CertificateStatus> {
        self.send(self.get("/v1/certificate", None)?).await?.json("/v1/certificate")
    }
}

/// The rustls error under a request error, if the TLS handshake is what failed. An
/// `io::Error` hides its inner error from `source()`, so it is opened with `get_ref`.
fn tls_refusal<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(t) = c.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(t) = tls_refusal(inner)
        {
            return Some(t);
        }
        cur = c.source();
    }
    None
}

/// A server certificate the handshake refused, as what a person can act on: the CA was
/// reached, but not trusted.
fn untrusted(url: &str, e: &rustls::CertificateError) -> AgentError {
    use rustls::CertificateError as C;
    let fix = match e {
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "the CA's TLS certificate does not name the host in this URL: use a name it has in --ca, or start the CA with `lanyard-ca serve --tls-name HOST`"
        }
        C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. } => {
            "check this device's clock, or restart `lanyard-ca serve` for a fresh TLS certificate"
        }
        _ => {
            "give the CA's root certificate with --ca-bundle FILE (root.crt or ca-bundle.pem from the CA's directory) or pin it with --ca-fingerprint SHA256 (`lanyard-ca ca fingerprint --dir DIR` prints it); or set [ca] ca_bundle / ca_fingerprint in the config"
        }
    };
    let reason = match e {
        C::UnknownIssuer => {
            "its TLS certificate is issued by a CA this device does not trust (UnknownIssuer)"
                .into()
        }
        _ => format!("its TLS certificate: {e}"),
    };
    AgentError::Untrusted { url: url.to_owned(), reason, fix: fix.to_owned() }
}

/// The error and its causes on one line (hyper's errors hide the TLS reason in `source()`).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}
