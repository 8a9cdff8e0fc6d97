//! Device keys and CSRs. Keys are generated here, on the device, and leave this module
//! only as PKCS#8 bytes handed to the credential store.

use crate::error::{AgentError, Result};
use lanyard_proto::KeyAlgorithm;
use zeroize::Zeroizing;

/// A freshly generated key. `Debug` never shows it.
pub struct DeviceKey {
    key: rcgen::KeyPair,
    pub algorithm: KeyAlgorithm,
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKey")
            .field("algorithm", &self.algorithm)
            .field("key", &"...")
            .finish()
    }
}

impl DeviceKey {
    pub fn generate(alg: KeyAlgorithm) -> Result<Self> {
        let key = match alg {
            KeyAlgorithm::EcdsaP256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyAlgorithm::EcdsaP384 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            KeyAlgorithm::Rsa2048 => {
                rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            }
            KeyAlgorithm::Rsa3072 => {
                rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_3072)
            }
            KeyAlgorithm::Rsa4096 => {
                rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_4096)
            }
        }
        .map_err(|e| AgentError::Crypto(format!("generating a {alg} key: {e}")))?;
        Ok(DeviceKey { key, algorithm: alg })
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// A key kept before (the staged key of an interrupted renewal or enrolment), from
    /// PKCS#8 DER.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self> {
        let key = rcgen::KeyPair::try_from(der).map_err(|e| {
            AgentError::Crypto(format!("the staged renewal key is not usable: {e}"))
        })?;
        let alg = key.algorithm();
        let algorithm = if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
            KeyAlgorithm::EcdsaP256
        } else if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
            KeyAlgorithm::EcdsaP384
        } else {
            use rcgen::PublicKeyData;
            // RSA: the modulus length sets the size (SPKI of 2048-bit keys is ~294 bytes).
            match key.subject_public_key_info().len() {
                0..=350 => KeyAlgorithm::Rsa2048,
                351..=480 => KeyAlgorithm::Rsa3072,
                _ => KeyAlgorithm::Rsa4096,
            }
        };
        Ok(DeviceKey { key, algorithm })
    }

    /// A PKCS#10 CSR (DER) with subject CN = identity and no extensions: the CA decides the
    /// rest of the profile.
    pub fn csr(&self, identity: &str) -> Result<Vec<u8>> {
        self.csr_named(Some(identity))
    }

    /// A CSR with the identity as its CN, or with an empty subject when the CA names the
    /// device (a factory certificate's enrolment).
    pub fn csr_named(&self, identity: Option<&str>) -> Result<Vec<u8>> {
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(identity) = identity {
            p.distinguished_name.push(rcgen::DnType::CommonName, identity);
        }
        Ok(p.serialize_request(&self.key)?.der().to_vec())
    }

    /// DER SubjectPublicKeyInfo, to match against the issued certificate.
    pub fn spki_der(&self) -> Vec<u8> {
        use rcgen::PublicKeyData;
        self.key.subject_public_key_info()
    }

    pub fn pkcs8(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.key.serialize_der())
    }
}
