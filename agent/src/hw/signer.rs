//! What lets the rest of the agent sign with a [`HardwareKey`]: rcgen's [`SigningKey`]
//! for the CSR, rustls' [`SigningKey`](rustls::sign::SigningKey) for TLS client handshakes
//! (toward the CA and through the proxy), and the DER helpers both backends share.
//!
//! Hardware keys are ECDSA P-256: a TLS 1.3 handshake signs with RSA only as RSA-PSS, which
//! PKCS#11 tokens and TPMs do not all offer for the same key, so the hardware stores
//! generate P-256 keys (the CA's default) and refuse a policy that asks for RSA.

use super::{HardwareKey, HwError};
use lanyard_proto::KeyAlgorithm;
use rustls::pki_types::SubjectPublicKeyInfoDer;
use rustls::{SignatureAlgorithm, SignatureScheme};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// DER of the P-256 SubjectPublicKeyInfo before the 65-byte uncompressed point:
/// SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (0 unused bits) }.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The DER `ECParameters` naming P-256 (the OID prime256v1), as PKCS#11's `CKA_EC_PARAMS`.
pub const P256_EC_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// The SPKI of a P-256 public key given as its uncompressed point (0x04 || X || Y).
pub fn p256_spki(point: &[u8]) -> Option<Vec<u8>> {
    if point.len() != 65 || point[0] != 0x04 {
        return None;
    }
    let mut spki = P256_SPKI_PREFIX.to_vec();
    spki.extend_from_slice(point);
    Some(spki)
}

use crate::x509::spki_key_bits;

/// An ECDSA signature as `r || s` (PKCS#11's form) to DER `ECDSA-Sig-Value`.
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return None;
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    Some(ecdsa_der(r, s))
}

/// The DER `ECDSA-Sig-Value` (SEQUENCE of r and s) of unsigned big-endian r and s (a TPM's
/// form).
pub fn ecdsa_der(r: &[u8], s: &[u8]) -> Vec<u8> {
    der(0x30, &[der_uint(r), der_uint(s)].concat())
}

/// A DER TLV.
pub fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// A DER INTEGER for an unsigned big-endian number: leading zeros gone, one put back if
/// the top bit is set.
pub fn der_uint(be: &[u8]) -> Vec<u8> {
    let skip = be.iter().take_while(|b| **b == 0).count();
    let digits = &be[skip..];
    let mut content = Vec::with_capacity(digits.len() + 1);
    if digits.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(digits);
    der(0x02, &content)
}

/// A DER BIT STRING of whole bytes.
pub fn bit_string(bytes: &[u8]) -> Vec<u8> {
    der(0x03, &[&[0u8][..], bytes].concat())
}

/// A hardware key as rcgen sees it, to sign a CSR.
pub struct CsrKey<'a> {
    key: &'a dyn HardwareKey,
    bits: Vec<u8>,
}

impl<'a> CsrKey<'a> {
    pub fn new(key: &'a dyn HardwareKey) -> Result<CsrKey<'a>, HwError> {
        let bits = spki_key_bits(key.spki_der()).ok_or_else(|| {
            HwError::KeyMissing("the hardware key's public key is not DER".into())
        })?;
        Ok(CsrKey { key, bits })
    }
}

impl rcgen::PublicKeyData for CsrKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.bits
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        match self.key.algorithm() {
            KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            _ => &rcgen::PKCS_RSA_SHA256,
        }
    }
}

impl rcgen::SigningKey for CsrKey<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.key.sign(msg).map_err(|e| {
            tracing::warn!(error = %e, "the hardware key did not sign the CSR");
            rcgen::Error::RemoteKeyError
        })
    }
}

/// A hardware key as rustls sees it. Remembers the last signing failure, so the proxy
/// can say why a handshake failed and answer 503 instead of a 502 that blames the upstream.
#[derive(Debug)]
pub struct TlsKey {
    key: Arc<dyn HardwareKey>,
    failure: Arc<Mutex<Option<(Instant, HwError)>>>,
}

impl TlsKey {
    pub fn new(key: Arc<dyn HardwareKey>) -> TlsKey {
        TlsKey { key, failure: Arc::new(Mutex::new(None)) }
    }

    /// The key's last signing failure (cleared by the next success), for the credential to
    /// keep after this key goes into a `CertifiedKey`.
    pub fn failure_cell(&self) -> Arc<Mutex<Option<(Instant, HwError)>>> {
        self.failure.clone()
    }

    fn scheme(&self) -> (SignatureScheme, SignatureAlgorithm) {
        match self.key.algorithm() {
            KeyAlgorithm::EcdsaP256 => {
                (SignatureScheme::ECDSA_NISTP256_SHA256, SignatureAlgorithm::ECDSA)
            }
            _ => (SignatureScheme::RSA_PKCS1_SHA256, SignatureAlgorithm::RSA),
        }
    }
}

impl rustls::sign::SigningKey for TlsKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn rustls::sign::Signer>> {
        let (scheme, _) = self.scheme();
        offered.contains(&scheme).then(|| {
            Box::new(TlsSigner { key: self.key.clone(), scheme, failure: self.failure.clone() })
                as Box<dyn rustls::sign::Signer>
        })
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(self.key.spki_der()))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        self.scheme().1
    }
}

#[derive(Debug)]
struct TlsSigner {
    key: Arc<dyn HardwareKey>,
    scheme: SignatureScheme,
    failure: Arc<Mutex<Option<(Instant, HwError)>>>,
}

impl rustls::sign::Signer for TlsSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let outcome = self.key.sign(message);
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Ok(sig) => {
                *failure = None;
                Ok(sig)
            }
            Err(e) => {
                tracing::warn!(error = %e, "the hardware key did not sign a TLS handshake");
                let msg = e.to_string();
                *failure = Some((Instant::now(), e));
                Err(rustls::Error::General(format!("the device key did not sign: {msg}")))
            }
        }
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_ecdsa_signatures_become_der() {
        // High bit set in r (padded), leading zeros in s (stripped).
        let mut raw = vec![0x80; 32];
        raw.extend([0u8, 0, 0x01].iter().chain([0x02; 29].iter()));
        let der = ecdsa_raw_to_der(&raw).expect("der");
        assert_eq!(&der[..5], &[0x30, 0x43, 0x02, 0x21, 0x00]);
        assert_eq!(&der[37..40], &[0x02, 0x1e, 0x01]);
        assert_eq!(der.len(), 2 + 0x43);
        assert!(ecdsa_raw_to_der(&[1, 2, 3]).is_none());
    }

    #[test]
    fn a_p256_point_becomes_an_spki_openssl_would_read() {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        use rcgen::PublicKeyData;
        let spki = kp.subject_public_key_info();
        let bits = spki_key_bits(&spki).expect("bits");
        assert_eq!(p256_spki(&bits).expect("spki"), spki);
        assert!(p256_spki(&bits[1..]).is_none());
    }
}
