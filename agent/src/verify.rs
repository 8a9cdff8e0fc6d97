//! Checks on what the CA sends back, before anything is stored: the certificate carries
//! our new public key, names our identity, is for client authentication, and chains to
//! the CA's roots now. A CA that answers with someone else's certificate, or garbage, is
//! caught here and nothing is replaced.

use crate::error::{AgentError, Result};
use crate::x509::Cert;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use std::sync::Arc;
use time::OffsetDateTime;

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
    let bad = |e: der::Error| AgentError::BadAnswer(format!("certificate does not parse: {e}"));
    let x = Cert::parse(der).map_err(bad)?;
    Ok(CertInfo {
        identity: x.common_name().unwrap_or_default().to_owned(),
        serial: lanyard_proto::serial::to_hex(x.serial()),
        not_before: x.not_before(),
        not_after: x.not_after(),
        spki_der: x.spki_der().map_err(bad)?,
    })
}

/// Splits the CA certificates from `/cacerts` into roots (self-signed) and intermediates.
pub fn split_ca_certs(
    ca: &[Vec<u8>],
) -> (Vec<CertificateDer<'static>>, Vec<CertificateDer<'static>>) {
    let mut roots = Vec::new();
    let mut inter = Vec::new();
    for c in ca {
        if Cert::parse(c).is_ok_and(|x| x.is_self_issued()) {
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

/// What follows the leaf in the chain the device presents: the CA certificates from
/// `/cacerts` that name the leaf's issuer as their subject (after a root rotation `/cacerts`
/// also carries roots and cross-certificates, which an edge that trusts the CA's bundle
/// does not need and whose extra length CloudFront's chain depth limit counts against).
/// All of them if none matches.
pub fn issuers_of(
    leaf: &[u8],
    intermediates: &[CertificateDer<'static>],
) -> Vec<CertificateDer<'static>> {
    let Ok(leaf) = Cert::parse(leaf) else { return intermediates.to_vec() };
    let direct: Vec<CertificateDer<'static>> = intermediates
        .iter()
        .filter(|c| Cert::parse(c).is_ok_and(|x| x.subject() == leaf.issuer()))
        .cloned()
        .collect();
    if direct.is_empty() { intermediates.to_vec() } else { direct }
}

/// The roots a CA introduces at a root rotation that a root this device trusts vouches for:
/// each self-signed `candidate` (from `/cacerts`) whose subject and public key a
/// cross-certificate among `intermediates` carries, that cross-certificate signed by one of
/// `anchors` and valid `now`, and the candidate's own signature sound. Those already
/// trusted are left out. A CA cannot introduce a root this way without a trusted root's
/// signature on it.
pub fn vouched_roots(
    anchors: &[CertificateDer<'static>],
    candidates: &[CertificateDer<'static>],
    intermediates: &[CertificateDer<'static>],
    now: OffsetDateTime,
) -> Vec<CertificateDer<'static>> {
    fn parsed<'a>(d: &'a CertificateDer<'static>) -> Option<Cert<'a>> {
        Cert::parse(d).ok()
    }
    let anchors: Vec<Cert> = anchors.iter().filter_map(parsed).collect();
    let intermediates: Vec<Cert> = intermediates.iter().filter_map(parsed).collect();
    candidates
        .iter()
        .filter(|c| {
            let Some(root) = parsed(c) else { return false };
            let known = anchors.iter().any(|a| a.der() == root.der());
            let self_signed = root.is_self_issued() && root.signed_by(&root);
            let vouched = intermediates.iter().any(|x| {
                x.subject() == root.subject()
                    && x.public_key() == root.public_key()
                    && x.is_valid_at(now)
                    && anchors.iter().any(|a| x.issuer() == a.subject() && x.signed_by(a))
            });
            !known && self_signed && vouched
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    fn root_params(cn: &str) -> CertificateParams {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(2));
        p
    }

    fn der(c: &rcgen::Certificate) -> CertificateDer<'static> {
        CertificateDer::from(c.der().to_vec())
    }

    #[test]
    fn a_new_root_is_trusted_only_when_a_trusted_root_vouches_for_it() {
        // rcgen's default validity runs from 1975 to 4096.
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("2027");
        let (k1, k2, k3) = (
            KeyPair::generate().expect("key"),
            KeyPair::generate().expect("key"),
            KeyPair::generate().expect("key"),
        );
        let (p1, p2) = (root_params("Root CA"), root_params("Root CA 2"));
        let r1 = p1.self_signed(&k1).expect("root 1");
        let r2 = p2.self_signed(&k2).expect("root 2");
        let old = Issuer::from_params(&p1, &k1);
        let cross = p2.signed_by(&k2, &old).expect("cross");
        // Signed by a stranger posing as root 1 (same name, other key).
        let stranger = Issuer::from_params(&p1, &k3);
        let forged = p2.signed_by(&k2, &stranger).expect("forged cross");
        // Root 2's name on another key.
        let impostor = p2.self_signed(&k3).expect("impostor");

        let anchors = vec![der(&r1)];
        let learned = vouched_roots(&anchors, &[der(&r2)], &[der(&cross)], now);
        assert_eq!(learned, vec![der(&r2)]);
        assert!(vouched_roots(&anchors, &[der(&r2)], &[], now).is_empty(), "no cross-certificate");
        assert!(vouched_roots(&anchors, &[der(&r2)], &[der(&forged)], now).is_empty(), "forged");
        assert!(
            vouched_roots(&anchors, &[der(&impostor)], &[der(&cross)], now).is_empty(),
            "the cross-certificate carries another key"
        );
        assert!(
            vouched_roots(&[der(&r1), der(&r2)], &[der(&r2)], &[der(&cross)], now).is_empty(),
            "already trusted"
        );
        let later = OffsetDateTime::from_unix_timestamp(70_000_000_000).expect("year 4188");
        assert!(vouched_roots(&anchors, &[der(&r2)], &[der(&cross)], later).is_empty(), "expired");
    }
}
