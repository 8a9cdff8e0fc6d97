//! TLS for `serve`: the server certificate from the CA's own issuing CA, and optional
//! client authentication with device certificates (for `simplereenroll`, `/v1/`).
//!
//! The client verifier checks the chain to the issuing CA and the signatures, but lets an
//! expired device certificate through the handshake: whether it may still renew (within
//! the group's grace) is the authority's decision, which then refuses with a clear 403
//! instead of a bare TLS alert the device cannot explain.
//!
//! A certificate from another issuer (a factory certificate, IDevID) is let through the
//! handshake too, which still proves the client holds its key: the factory CAs are the
//! store's (they change while the CA runs), so the authority checks the chain against them
//! at `simpleenroll`, and every device route checks that a certificate is one this CA issued
//! (signature and the stored DER) before trusting it.

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};
use std::sync::Arc;

#[derive(Debug)]
struct DeviceCertVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for DeviceCertVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self.inner.verify_client_cert(end_entity, intermediates, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. },
            )) => {
                // Check everything else as of the last second of its validity.
                let (_, x) = x509_parser::parse_x509_certificate(end_entity).map_err(|_| {
                    rustls::Error::InvalidCertificate(CertificateError::BadEncoding)
                })?;
                let at = u64::try_from(x.validity().not_after.timestamp() - 1).unwrap_or(0);
                self.inner.verify_client_cert(
                    end_entity,
                    intermediates,
                    UnixTime::since_unix_epoch(std::time::Duration::from_secs(at)),
                )
            }
            // Not from the issuing CA: maybe a factory certificate; checked per request.
            Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
                Ok(ClientCertVerified::assertion())
            }
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The server config: `chain` is the server certificate then the issuing CA (DER), `key`
/// PKCS#8 DER; device certificates are verified against `issuing` (every issuing CA that
/// answers for its certificates, current first).
pub fn server_config(
    chain: Vec<Vec<u8>>,
    key: Vec<u8>,
    issuing: &[&[u8]],
) -> Result<rustls::ServerConfig, String> {
    let mut roots = RootCertStore::empty();
    for der in issuing {
        roots
            .add(CertificateDer::from(der.to_vec()))
            .map_err(|e| format!("issuing CA as client trust anchor: {e}"))?;
    }
    let inner = WebPkiClientVerifier::builder(Arc::new(roots))
        .allow_unauthenticated()
        .build()
        .map_err(|e| format!("client verifier: {e}"))?;
    let verifier = Arc::new(DeviceCertVerifier { inner });
    let certs = chain.into_iter().map(CertificateDer::from).collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key));
    let mut cfg = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| format!("server certificate: {e}"))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // A device that comes back (a check-in, a renewal) resumes with a session ticket instead
    // of a full handshake: stateless tickets (rustls's default cache holds 256 sessions, which a
    // fleet of any size evicts long before a device comes back), keys
    // rotated by rustls every few hours. A resumed session carries the client certificate
    // of the full handshake; what it may do is still decided per request against the store
    // (a revoked certificate is refused whether or not its session resumed).
    cfg.ticketer =
        rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| format!("session tickets: {e}"))?;
    Ok(cfg)
}
