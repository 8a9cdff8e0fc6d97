//! The EST client (RFC 7030) and the CA's `/v1/` device API.
//!
//! TLS is rustls with the roots from [`crate::trust`]; for `simplereenroll` and `/v1/`
//! the current certificate authenticates the device. Proxies between the device and the
//! CA (`HTTPS_PROXY`, `ALL_PROXY` with socks5) are honoured, as corporate networks need.

use crate::error::{AgentError, Result};
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
}

pub struct EstClient {
    base: String,
    http: reqwest::Client,
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
        let mut cfg = match auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Certificate(chain, key) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| AgentError::Crypto(format!("client certificate: {e}")))?,
        };
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(cfg)
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10).min(timeout))
            .user_agent(concat!("lanyard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| AgentError::Crypto(format!("HTTP client: {e}")))?;
        Ok(EstClient { base: base.trim_end_matches('/').to_owned(), http })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = req.send().await.map_err(|e| match tls_refusal(&e) {
            Some(rustls::Error::InvalidCertificate(c)) => untrusted(&self.base, c),
            _ => AgentError::Unreachable { url: self.base.clone(), reason: error_chain(&e) },
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp.bytes().await.unwrap_or_default();
        // A problem+json body (RFC 9457) carries the code to decide on; anything else (an
        // older CA, a proxy in between) is judged by its status.
        let (code, text) = match lanyard_proto::Problem::parse(&body) {
            Some(p) => (p.code, p.detail),
            None => (
                lanyard_proto::ProblemCode::from_status(status.as_u16()),
                String::from_utf8_lossy(&body).into_owned(),
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

    async fn pkcs7_certs(&self, resp: reqwest::Response) -> Result<Vec<Vec<u8>>> {
        let body = resp.bytes().await.map_err(|e| AgentError::Unreachable {
            url: self.base.clone(),
            reason: e.to_string(),
        })?;
        if body.len() > est::MAX_BODY * 4 {
            return Err(AgentError::BadAnswer("answer too large".into()));
        }
        let der = est::decode_base64(&body).map_err(|e| AgentError::BadAnswer(e.to_string()))?;
        est::parse_certs_only_pkcs7(&der).map_err(|e| AgentError::BadAnswer(e.to_string()))
    }

    /// `GET /cacerts`: the CA certificates (issuing and root), DER.
    pub async fn cacerts(&self) -> Result<Vec<Vec<u8>>> {
        let r = self.send(self.http.get(self.url("/.well-known/est/cacerts"))).await?;
        self.pkcs7_certs(r).await
    }

    /// `GET /csrattrs`: the key algorithm the CA wants, if it says.
    pub async fn csrattrs(&self, basic: Option<(&str, &str)>) -> Result<Option<KeyAlgorithm>> {
        let mut req = self.http.get(self.url("/.well-known/est/csrattrs"));
        if let Some((id, tok)) = basic {
            req = req.basic_auth(id, Some(tok));
        }
        let r = match self.send(req).await {
            Ok(r) => r,
            // csrattrs is optional in EST: a CA without it leaves the choice to us.
            Err(AgentError::Refused { status: 404 | 501, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let body = r.bytes().await.map_err(|e| AgentError::BadAnswer(e.to_string()))?;
        let der = est::decode_base64(&body)
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
        let mut req = self
            .http
            .post(self.url(path))
            .header(reqwest::header::CONTENT_TYPE, est::CT_PKCS10)
            .header("content-transfer-encoding", "base64")
            .body(Self::csr_body(csr));
        if let Some((identity, token)) = basic {
            req = req.basic_auth(identity, Some(token));
        }
        let r = self.send(req).await?;
        Self::leaf_of(self.pkcs7_certs(r).await?, spki)
    }

    /// `POST /v1/checkin`: reports the agent's state, and gets what `GET /v1/certificate`
    /// gives. `None` from a CA that has no check-in endpoint (older than the report).
    pub async fn checkin(&self, report: &CheckinReport) -> Result<Option<CertificateStatus>> {
        match self.send(self.http.post(self.url("/v1/checkin")).json(report)).await {
            Ok(r) => r
                .json()
                .await
                .map(Some)
                .map_err(|e| AgentError::BadAnswer(format!("/v1/checkin: {e}"))),
            Err(AgentError::Refused { status: 404 | 405, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /v1/certificate`: status and policy for the presented certificate.
    pub async fn certificate_status(&self) -> Result<CertificateStatus> {
        let r = self.send(self.http.get(self.url("/v1/certificate"))).await?;
        r.json().await.map_err(|e| AgentError::BadAnswer(format!("/v1/certificate: {e}")))
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

/// The error and its causes on one line (reqwest hides the TLS reason in `source()`).
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
