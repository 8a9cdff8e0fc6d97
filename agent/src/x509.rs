//! The parts of an X.509 certificate (RFC 5280) the agent reads itself: names, validity,
//! serial, public key, and whether one certificate's key signed another. Parsed with the
//! ASN.1 stack the EST formats already use (RustCrypto's `der` and `x509-cert`, through
//! `lanyard-proto`); signatures checked with the verification algorithms of the TLS
//! provider (the ones rustls and webpki check chains with). One certificate parser and one
//! set of signature algorithms in the binary. Chains themselves are validated by webpki
//! ([`crate::verify::issued`]); this module answers the narrower questions around it.

use der::asn1::{AnyRef, BitStringRef};
use der::{Decode, Encode, Reader, SliceReader, Tag, Tagged};
use rustls::pki_types::SignatureVerificationAlgorithm;
use time::OffsetDateTime;
use x509_cert::Certificate;
use x509_cert::name::Name;
use x509_cert::spki::{SubjectPublicKeyInfoOwned, SubjectPublicKeyInfoRef};

/// A parsed certificate with the bytes its signature covers.
pub struct Cert<'a> {
    der: &'a [u8],
    /// The `tbsCertificate` exactly as received (what the signature is over).
    tbs: &'a [u8],
    /// The contents of the outer `signatureAlgorithm` (its `AlgorithmIdentifier` without the
    /// SEQUENCE header, the form webpki's algorithm identifiers take).
    signature_algorithm: &'a [u8],
    signature: &'a [u8],
    cert: Certificate,
}

impl std::fmt::Debug for Cert<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The common name only: printing a whole name would link const-oid's table of
        // attribute names (tens of KB) into the agent for a Debug line.
        f.debug_struct("Cert").field("common_name", &self.common_name()).finish()
    }
}

impl<'a> Cert<'a> {
    /// Parses a DER certificate; trailing bytes are an error.
    pub fn parse(der: &'a [u8]) -> der::Result<Self> {
        let cert = Certificate::from_der(der)?;
        let mut r = SliceReader::new(der)?;
        let (tbs, signature_algorithm, signature) = r.sequence(|r| {
            let tbs = r.tlv_bytes()?;
            let alg = AnyRef::decode(r)?.value();
            let sig = BitStringRef::decode(r)?;
            let sig = sig.as_bytes().ok_or_else(|| Tag::BitString.value_error())?;
            Ok((tbs, alg, sig))
        })?;
        let parts = r.finish((tbs, signature_algorithm, signature))?;
        Ok(Cert { der, tbs: parts.0, signature_algorithm: parts.1, signature: parts.2, cert })
    }

    pub fn der(&self) -> &'a [u8] {
        self.der
    }

    pub fn subject(&self) -> &Name {
        &self.cert.tbs_certificate.subject
    }

    pub fn issuer(&self) -> &Name {
        &self.cert.tbs_certificate.issuer
    }

    /// The first common name of the subject, if it is a string.
    pub fn common_name(&self) -> Option<&str> {
        self.subject()
            .0
            .iter()
            .flat_map(|rdn| rdn.0.iter())
            .find(|atv| atv.oid == const_oid::db::rfc4519::CN)
            .and_then(|atv| match atv.value.tag() {
                // Each of these is ASCII or UTF-8.
                Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::VisibleString => {
                    std::str::from_utf8(atv.value.value()).ok()
                }
                _ => None,
            })
    }

    /// The serial number's content bytes as encoded (a leading zero kept).
    pub fn serial(&self) -> &[u8] {
        self.cert.tbs_certificate.serial_number.as_bytes()
    }

    pub fn not_before(&self) -> OffsetDateTime {
        unix(self.cert.tbs_certificate.validity.not_before)
    }

    pub fn not_after(&self) -> OffsetDateTime {
        unix(self.cert.tbs_certificate.validity.not_after)
    }

    pub fn is_valid_at(&self, t: OffsetDateTime) -> bool {
        self.not_before() <= t && t <= self.not_after()
    }

    pub fn public_key(&self) -> &SubjectPublicKeyInfoOwned {
        &self.cert.tbs_certificate.subject_public_key_info
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> der::Result<Vec<u8>> {
        self.public_key().to_der()
    }

    pub fn is_self_issued(&self) -> bool {
        self.subject() == self.issuer()
    }

    /// Whether `issuer`'s public key made this certificate's signature, with an algorithm
    /// the TLS provider verifies chains with (the algorithm named in the certificate and the
    /// issuer key's algorithm must both match it, as webpki requires).
    pub fn signed_by(&self, issuer: &Cert<'_>) -> bool {
        let key = issuer.public_key();
        let Some(key_bits) = key.subject_public_key.as_bytes() else { return false };
        let Ok(key_alg) = key.algorithm.to_der() else { return false };
        let Ok(key_alg) = AnyRef::from_der(&key_alg) else { return false };
        ALGORITHMS.iter().any(|alg| {
            alg.signature_alg_id().as_ref() == self.signature_algorithm
                && alg.public_key_alg_id().as_ref() == key_alg.value()
                && alg.verify_signature(key_bits, self.tbs, self.signature).is_ok()
        })
    }
}

fn unix(t: x509_cert::time::Time) -> OffsetDateTime {
    i64::try_from(t.to_unix_duration().as_secs())
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The signature algorithms webpki validates chains with, from the TLS provider.
static ALGORITHMS: std::sync::LazyLock<&'static [&'static dyn SignatureVerificationAlgorithm]> =
    std::sync::LazyLock::new(|| {
        rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms.all
    });

/// The public key bits of a DER SubjectPublicKeyInfo (its BIT STRING's contents).
pub fn spki_key_bits(spki: &[u8]) -> Option<Vec<u8>> {
    let info = SubjectPublicKeyInfoRef::from_der(spki).ok()?;
    Some(info.subject_public_key.as_bytes()?.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SignatureAlgorithm,
    };
    use x509_parser::prelude::FromDer;

    fn ca(cn: &str, alg: &'static SignatureAlgorithm) -> (CertificateParams, KeyPair) {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let k = if alg == &rcgen::PKCS_RSA_SHA256 {
            KeyPair::generate_rsa_for(alg, rcgen::RsaKeySize::_2048).expect("rsa key")
        } else {
            KeyPair::generate_for(alg).expect("key")
        };
        (p, k)
    }

    fn leaf(issuer: &Issuer<'_, &KeyPair>, alg: &'static SignatureAlgorithm) -> Vec<u8> {
        let mut p = CertificateParams::new(vec!["device.example".into()]).expect("params");
        p.distinguished_name.push(DnType::CommonName, "device-0042");
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x80, 1, 2, 3, 4, 5, 6, 7]));
        let k = KeyPair::generate_for(alg).expect("key");
        p.signed_by(&k, issuer).expect("leaf").der().to_vec()
    }

    /// Each field against x509-parser's reading of the same certificate.
    #[test]
    fn fields_read_as_another_parser_reads_them() {
        let (p, k) = ca("Root CA", &rcgen::PKCS_ECDSA_P256_SHA256);
        let issuer = Issuer::from_params(&p, &k);
        let der = leaf(&issuer, &rcgen::PKCS_ECDSA_P384_SHA384);
        let c = Cert::parse(&der).expect("parses");
        let (_, x) = x509_parser::certificate::X509Certificate::from_der(&der).expect("x509");
        assert_eq!(
            c.common_name(),
            x.subject().iter_common_name().next().and_then(|n| n.as_str().ok())
        );
        assert_eq!(c.common_name(), Some("device-0042"));
        assert_eq!(c.serial(), x.raw_serial());
        assert_eq!(c.serial()[0], 0, "a serial with its high bit set keeps its leading zero");
        assert_eq!(c.not_before().unix_timestamp(), x.validity().not_before.timestamp());
        assert_eq!(c.not_after().unix_timestamp(), x.validity().not_after.timestamp());
        assert_eq!(c.spki_der().expect("spki"), x.public_key().raw);
        assert_eq!(
            spki_key_bits(x.public_key().raw).as_deref(),
            Some(&*x.public_key().subject_public_key.data)
        );
        assert_eq!(c.issuer().to_string(), "CN=Root CA");
        assert!(!c.is_self_issued());
    }

    #[test]
    fn signatures_are_checked_for_each_algorithm_and_key() {
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
            &rcgen::PKCS_RSA_SHA256,
        ] {
            let (p, k) = ca("Root CA", alg);
            let root = p.self_signed(&k).expect("root");
            let root = Cert::parse(root.der()).expect("root parses");
            let der = leaf(&Issuer::from_params(&p, &k), &rcgen::PKCS_ECDSA_P256_SHA256);
            let child = Cert::parse(&der).expect("leaf parses");
            assert!(child.signed_by(&root), "{alg:?}: signed by the root");
            assert!(root.signed_by(&root), "{alg:?}: the root signed itself");
            assert!(!root.signed_by(&child), "{alg:?}: not by the leaf's key");

            // The same name on another key.
            let (p2, k2) = ca("Root CA", alg);
            let other = p2.self_signed(&k2).expect("other root");
            let other = Cert::parse(other.der()).expect("parses");
            assert!(!child.signed_by(&other), "{alg:?}: another key of the same name");

            // One bit of the signed part changed (the serial's last byte).
            let mut bad = der.clone();
            let at = bad.windows(8).position(|w| w == [0x80, 1, 2, 3, 4, 5, 6, 7]).expect("serial");
            bad[at + 7] ^= 1;
            let bad = Cert::parse(&bad).expect("still parses");
            assert!(!bad.signed_by(&root), "{alg:?}: a changed certificate");
        }
    }

    #[test]
    fn garbage_and_trailing_bytes_are_refused() {
        let (p, k) = ca("Root CA", &rcgen::PKCS_ECDSA_P256_SHA256);
        let root = p.self_signed(&k).expect("root").der().to_vec();
        assert!(Cert::parse(&root).is_ok());
        let mut long = root.clone();
        long.push(0);
        assert!(Cert::parse(&long).is_err(), "trailing byte");
        assert!(Cert::parse(&root[..root.len() - 1]).is_err(), "truncated");
        assert!(Cert::parse(b"not a certificate").is_err());
        assert!(spki_key_bits(b"\x30\x03\x02\x01\x00").is_none());
    }
}
