//! CSR checks: proof of possession, key type and size, and no request for powers the CA
//! does not grant. What the CSR asks for beyond its key is otherwise ignored: the CA, not
//! the CSR, decides subject, SANs, EKU and lifetime.

use crate::error::{CaError, Result};
use lanyard_proto::{KeyAlgorithm, ProblemCode};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

/// A CSR that parsed and whose signature verifies.
#[derive(Debug, Clone)]
pub struct CheckedCsr {
    /// DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
    pub key_algorithm: KeyAlgorithm,
    /// Subject common name, if the CSR has one.
    pub common_name: Option<String>,
    /// SHA-256 of the SPKI, hex.
    pub spki_sha256: String,
}

fn bad(msg: impl Into<String>) -> CaError {
    CaError::refused(ProblemCode::CsrInvalid, msg)
}

fn key_refused(msg: impl Into<String>) -> CaError {
    CaError::refused(ProblemCode::KeyNotAllowed, msg)
}

/// Classifies a SubjectPublicKeyInfo, refusing what CloudFront would refuse.
pub fn key_algorithm_of(
    spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>,
) -> Result<KeyAlgorithm> {
    use x509_parser::oid_registry as oids;
    let alg = &spki.algorithm.algorithm;
    if *alg == oids::OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .ok_or_else(|| bad("EC key without a named curve"))?;
        return if curve == oids::OID_EC_P256 {
            Ok(KeyAlgorithm::EcdsaP256)
        } else if curve == oids::OID_NIST_EC_P384 {
            Ok(KeyAlgorithm::EcdsaP384)
        } else if curve == oids::OID_NIST_EC_P521 {
            Err(key_refused(
                "key is ECDSA P-521, which CloudFront does not accept; use ecdsa-p256 or ecdsa-p384",
            ))
        } else {
            Err(key_refused(format!(
                "key is on EC curve {curve}, which is not allowed; use ecdsa-p256 or ecdsa-p384"
            )))
        };
    }
    if *alg == oids::OID_PKCS1_RSAENCRYPTION {
        let bits = match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => rsa.key_size(),
            _ => return Err(bad("RSA public key does not parse")),
        };
        return match bits {
            2048 => Ok(KeyAlgorithm::Rsa2048),
            3072 => Ok(KeyAlgorithm::Rsa3072),
            4096 => Ok(KeyAlgorithm::Rsa4096),
            b => Err(key_refused(format!(
                "key is RSA-{b}; allowed RSA sizes are 2048, 3072 and 4096"
            ))),
        };
    }
    if *alg == oids::OID_SIG_ED25519 {
        return Err(key_refused(
            "key is Ed25519, which CloudFront does not accept; use ecdsa-p256",
        ));
    }
    Err(key_refused(format!(
        "key algorithm {alg} is not allowed; allowed are {}",
        KeyAlgorithm::allowed_names()
    )))
}

fn only_client_auth(eku: &x509_parser::extensions::ExtendedKeyUsage<'_>) -> bool {
    !(eku.any
        || eku.server_auth
        || eku.code_signing
        || eku.email_protection
        || eku.time_stamping
        || eku.ocsp_signing
        || !eku.other.is_empty())
}

/// Parses and checks a DER CSR.
pub fn check(der: &[u8]) -> Result<CheckedCsr> {
    let (rest, csr) = X509CertificationRequest::from_der(der)
        .map_err(|e| bad(format!("body is not a PKCS#10 CSR: {e}")))?;
    if !rest.is_empty() {
        return Err(bad("CSR has trailing bytes after the request"));
    }
    let info = &csr.certification_request_info;
    // Name a refused key first: the verifier does not know RSA-1024 or P-521 and would only
    // say that the signature does not verify.
    let key_algorithm = key_algorithm_of(&info.subject_pki)?;
    csr.verify_signature().map_err(|_| {
        bad("CSR signature does not verify: the request must be signed by the key it carries")
    })?;

    // Every extensionRequest attribute, not only the first (a second one must not slip a
    // CA:TRUE past the check).
    let requested = info.iter_attributes().filter_map(|a| match a.parsed_attribute() {
        x509_parser::cri_attributes::ParsedCriAttribute::ExtensionRequest(r) => Some(r),
        _ => None,
    });
    for request in requested {
        for ext in request.extensions.iter().map(|e| e.parsed_extension()) {
            match ext {
                ParsedExtension::BasicConstraints(bc) if bc.ca => {
                    return Err(bad("CSR asks for CA:TRUE; device certificates are never CAs"));
                }
                ParsedExtension::ExtendedKeyUsage(eku) if !only_client_auth(eku) => {
                    return Err(bad(
                        "CSR asks for extended key usages other than clientAuth; only clientAuth is issued",
                    ));
                }
                ParsedExtension::KeyUsage(ku) if ku.key_cert_sign() || ku.crl_sign() => {
                    return Err(bad(
                        "CSR asks for keyCertSign or cRLSign; device certificates cannot sign certificates",
                    ));
                }
                ParsedExtension::NameConstraints(_) => {
                    return Err(bad("CSR asks for name constraints, a CA extension"));
                }
                _ => {}
            }
        }
    }

    let mut common_name = None;
    for cn in info.subject.iter_common_name() {
        let s = cn.as_str().map_err(|_| bad("CSR subject CN is not a string"))?;
        if common_name.replace(s.to_owned()).is_some() {
            return Err(bad("CSR subject has more than one CN"));
        }
    }
    let spki_der = info.subject_pki.raw.to_vec();
    let spki_sha256 = hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &spki_der));
    Ok(CheckedCsr { spki_der, key_algorithm, common_name, spki_sha256 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr_with(params: rcgen::CertificateParams, key: &rcgen::KeyPair) -> Vec<u8> {
        params.serialize_request(key).map(|c| c.der().to_vec()).unwrap_or_default()
    }

    #[test]
    fn accepts_plain_p256() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name.push(rcgen::DnType::CommonName, "dev-1");
        let c = check(&csr_with(p, &key)).expect("valid CSR");
        assert_eq!(c.key_algorithm, KeyAlgorithm::EcdsaP256);
        assert_eq!(c.common_name.as_deref(), Some("dev-1"));
    }

    #[test]
    fn refuses_ca_and_extra_eku() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut p = rcgen::CertificateParams::default();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let e = check(&csr_with(p, &key)).unwrap_err();
        assert!(e.to_string().contains("CA:TRUE"), "{e}");

        let mut p = rcgen::CertificateParams::default();
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let e = check(&csr_with(p, &key)).unwrap_err();
        assert!(e.to_string().contains("clientAuth"), "{e}");
    }

    #[test]
    fn refuses_ed25519_and_tampering() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
        let e = check(&csr_with(rcgen::CertificateParams::default(), &key)).unwrap_err();
        assert!(e.to_string().contains("Ed25519"), "{e}");

        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name.push(rcgen::DnType::CommonName, "dev-1");
        let mut der = csr_with(p, &key);
        let pos = der.windows(5).position(|w| w == b"dev-1").expect("CN in DER");
        der[pos] = b'x';
        let e = check(&der).unwrap_err();
        assert!(e.to_string().contains("signature"), "{e}");
        assert!(check(b"garbage").is_err());
    }
}
