//! Which CA certificates the agent trusts for its TLS connections to the CA.
//!
//! In order: `[ca] ca_bundle` (a PEM file), the roots saved at enrolment (state dir
//! `ca-roots.pem`, fixed by `--ca-bundle` or `--ca-fingerprint`), else the system roots
//! (a CA behind AWS has a public certificate).
//!
//! `--ca-fingerprint` works like step's: the CA's certificates are fetched once over an
//! unverified connection, the root whose SHA-256 matches the pin is kept (and the issuing
//! CA must chain to it), and every later connection is verified against that root.

use crate::error::{AgentError, Result};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use std::path::Path;
use std::sync::Arc;

/// Reads every certificate of a PEM file.
pub fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let data =
        std::fs::read(path).map_err(AgentError::io(format!("reading {}", path.display())))?;
    let certs: Vec<CertificateDer<'static>> = pem::parse_many(&data)
        .map_err(|e| AgentError::Usage(format!("{}: not PEM: {e}", path.display())))?
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| CertificateDer::from(p.into_contents()))
        .collect();
    if certs.is_empty() {
        return Err(AgentError::Usage(format!("{}: holds no CERTIFICATE", path.display())));
    }
    Ok(certs)
}

pub fn to_pem(certs: &[CertificateDer<'_>]) -> String {
    certs.iter().map(|c| pem::encode(&pem::Pem::new("CERTIFICATE", c.to_vec()))).collect()
}

pub fn root_store(certs: &[CertificateDer<'static>]) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for c in certs {
        roots.add(c.clone()).map_err(|e| {
            AgentError::Usage(format!("CA certificate not usable as trust anchor: {e}"))
        })?;
    }
    Ok(roots)
}

pub fn system_roots() -> Result<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(AgentError::Usage(
            "no system CA certificates found; give --ca-bundle or --ca-fingerprint".into(),
        ));
    }
    Ok(roots)
}

/// SHA-256 (hex), through the workspace's one crypto library.
pub fn sha256_hex(der: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der))
}

/// Finds the pinned root among certificates fetched from `/cacerts` and checks that every
/// other certificate there chains to it.
pub fn select_pinned_root(certs: &[Vec<u8>], fingerprint: &str) -> Result<CertificateDer<'static>> {
    let want = fingerprint.replace(':', "").to_ascii_lowercase();
    let root = certs.iter().find(|c| sha256_hex(c) == want).ok_or_else(|| {
        AgentError::Verification(format!(
            "no CA certificate at this URL has the SHA-256 fingerprint {want}; check the fingerprint (`openssl x509 -noout -fingerprint -sha256 -in root.crt`) or the URL"
        ))
    })?;
    let (_, r) = x509_parser::parse_x509_certificate(root)
        .map_err(|e| AgentError::BadAnswer(format!("pinned root does not parse: {e}")))?;
    for c in certs.iter().filter(|c| *c != root) {
        let (_, x) = x509_parser::parse_x509_certificate(c)
            .map_err(|e| AgentError::BadAnswer(format!("CA certificate does not parse: {e}")))?;
        if x.issuer() == r.subject() {
            x.verify_signature(Some(r.public_key())).map_err(|_| {
                AgentError::Verification(format!(
                    "{} does not chain to the pinned root",
                    x.subject()
                ))
            })?;
        }
    }
    Ok(CertificateDer::from(root.clone()))
}

/// A verifier that accepts any server certificate: used ONLY to fetch the CA's public
/// certificates once, before they are checked against a pinned fingerprint.
#[derive(Debug)]
pub struct AcceptAnyServer(pub Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
