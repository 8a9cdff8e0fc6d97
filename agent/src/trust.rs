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

/// A private key from a PEM file: PKCS#8 (`PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`) or PKCS#1
/// (`RSA PRIVATE KEY`). Errors name the file, never the key.
pub fn read_pem_key(path: &Path) -> Result<rustls::pki_types::PrivateKeyDer<'static>> {
    use rustls::pki_types::{
        PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
    };
    let data = zeroize::Zeroizing::new(
        std::fs::read(path).map_err(AgentError::io(format!("reading {}", path.display())))?,
    );
    let blocks = pem::parse_many(&*data)
        .map_err(|_| AgentError::Usage(format!("{}: not a PEM private key", path.display())))?;
    blocks
        .into_iter()
        .find_map(|p| match p.tag() {
            "PRIVATE KEY" => {
                Some(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(p.into_contents())))
            }
            "EC PRIVATE KEY" => {
                Some(PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(p.into_contents())))
            }
            "RSA PRIVATE KEY" => {
                Some(PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(p.into_contents())))
            }
            _ => None,
        })
        .ok_or_else(|| {
            AgentError::Usage(format!(
                "{}: holds no PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY",
                path.display()
            ))
        })
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

/// Where a fingerprint comes from, for messages.
pub const FINGERPRINT_SOURCE: &str =
    "`lanyard-ca ca fingerprint --dir DIR` prints it, as do `lanyard-ca init` and `serve`";

/// A SHA-256 fingerprint as 64 lowercase hex digits, from hex with or without colons
/// (`openssl x509 -fingerprint` style), or `None` when it is not one.
pub fn normalize_fingerprint(s: &str) -> Option<String> {
    let hexs: String = s.trim().chars().filter(|c| *c != ':').collect::<String>();
    let hexs = hexs.strip_prefix("sha256:").unwrap_or(&hexs).to_ascii_lowercase();
    (hexs.len() == 64 && hexs.chars().all(|c| c.is_ascii_hexdigit())).then_some(hexs)
}

/// `--ca-fingerprint` checked before anything goes on the network.
pub fn parse_fingerprint(s: &str) -> Result<String> {
    normalize_fingerprint(s).ok_or_else(|| {
        AgentError::Usage(format!(
            "--ca-fingerprint {s:?}: not a SHA-256 fingerprint; give the CA root certificate's SHA-256 as 64 hex digits (colons allowed): {FINGERPRINT_SOURCE}"
        ))
    })
}

/// Finds the pinned root among certificates fetched from `/cacerts` at `url` and checks
/// that each other certificate there that names it as issuer carries its signature (the
/// others, such as a new root during a rotation, are trusted only through
/// [`crate::verify::vouched_roots`]; the leaf is validated against the pinned root alone).
pub fn select_pinned_root(
    certs: &[Vec<u8>],
    fingerprint: &str,
    url: &str,
) -> Result<CertificateDer<'static>> {
    let want = normalize_fingerprint(fingerprint).unwrap_or_default();
    let root = certs.iter().find(|c| sha256_hex(c) == want).ok_or_else(|| {
        AgentError::Untrusted {
            url: url.to_owned(),
            reason: format!("none of its CA certificates has the pinned SHA-256 fingerprint {want}"),
            fix: format!(
                "nothing was issued and the token is still unused; check the URL and --ca-fingerprint: {FINGERPRINT_SOURCE}"
            ),
        }
    })?;
    let r = crate::x509::Cert::parse(root)
        .map_err(|e| AgentError::BadAnswer(format!("pinned root does not parse: {e}")))?;
    for c in certs.iter().filter(|c| *c != root) {
        let x = crate::x509::Cert::parse(c)
            .map_err(|e| AgentError::BadAnswer(format!("CA certificate does not parse: {e}")))?;
        if x.issuer() == r.subject() && !x.signed_by(&r) {
            return Err(AgentError::Verification(format!(
                "CA certificate {:?} does not chain to the pinned root",
                x.common_name().unwrap_or_default()
            )));
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
