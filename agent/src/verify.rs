//! Checks on what the CA sends back, before anything is stored: the certificate carries
//! our new public key, names our identity, is for client authentication, and chains to
//! the CA's roots now. A CA that answers with someone else's certificate, or garbage, is
//! caught here and nothing is replaced.

use crate::error::{AgentError, Result};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use std::sync::Arc;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

/// What the agent needs to know of a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    pub identity: String,
    pub serial: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub spki_der: Vec<u8>,
}

pub fn info(der: &[u8]) -> Result<CertInfo> {
    let (_, x) = X509Certificate::from_der(der)
        .map_err(|e| AgentError::BadAnswer(format!("certificate does not parse: {e}")))?;
    let identity = x
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    let ts = |t: x509_parser::time::ASN1Time| {
        OffsetDateTime::from_unix_timestamp(t.timestamp()).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    };
    Ok(CertInfo {
        identity,
        serial: lanyard_proto::serial::to_hex(x.raw_serial()),
        not_before: ts(x.validity().not_before),
        not_after: ts(x.validity().not_after),
        spki_der: x.tbs_certificate.subject_pki.raw.to_vec(),
    })
}

/// Splits the CA certificates from `/cacerts` into roots (self-signed) and intermediates.
pub fn split_ca_certs(
    ca: &[Vec<u8>],
) -> (Vec<CertificateDer<'static>>, Vec<CertificateDer<'static>>) {
    let mut roots = Vec::new();
    let mut inter = Vec::new();
    for c in ca {
        let self_signed =
            X509Certificate::from_der(c).map(|(_, x)| x.subject() == x.issuer()).unwrap_or(false);
        if self_signed {
            roots.push(CertificateDer::from(c.clone()))
        } else {
            inter.push(CertificateDer::from(c.clone()))
        }
    }
    (roots, inter)
}

/// Verifies an issued leaf against our key, the expected identity and the CA.
pub fn issued(
    leaf: &[u8],
    expected_spki: &[u8],
    expected_identity: Option<&str>,
    roots: &[CertificateDer<'static>],
    intermediates: &[CertificateDer<'static>],
    now: OffsetDateTime,
) -> Result<CertInfo> {
    let i = info(leaf)?;
    if i.spki_der != expected_spki {
        return Err(AgentError::Verification(
            "it does not carry the public key this device just generated".into(),
        ));
    }
    if let Some(expected) = expected_identity
        && i.identity != expected
    {
        return Err(AgentError::Verification(format!(
            "it names {:?}, not this device ({expected:?})",
            i.identity
        )));
    }
    let store = crate::trust::root_store(roots)?;
    let verifier = WebPkiClientVerifier::builder(Arc::new(store))
        .build()
        .map_err(|e| AgentError::Verification(format!("CA roots: {e}")))?;
    let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(now.unix_timestamp()).unwrap_or(0),
    ));
    verifier.verify_client_cert(&CertificateDer::from(leaf.to_vec()), intermediates, at).map_err(
        |e| {
            AgentError::Verification(format!(
                "it does not chain to the CA as a client certificate: {e}"
            ))
        },
    )?;
    Ok(i)
}
