//! Device keys and CSRs. Keys are generated here, on the device: in software, leaving this
//! module only as PKCS#8 bytes handed to the credential store, or inside a TPM or token
//! ([`crate::hw`]), leaving it only as a handle.

use crate::error::{AgentError, Result};
use crate::hw::{HardwareBackend, HardwareKey};
use lanyard_proto::KeyAlgorithm;
use std::sync::Arc;
use zeroize::Zeroizing;

/// A freshly generated key. `Debug` never shows it.
pub enum DeviceKey {
    Software { key: rcgen::KeyPair, algorithm: KeyAlgorithm },
    Hardware(Arc<dyn HardwareKey>),
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKey")
            .field("algorithm", &self.algorithm())
            .field("hardware", &matches!(self, DeviceKey::Hardware(_)))
            .field("key", &"...")
            .finish()
    }
}

impl DeviceKey {
    /// A new key: inside `hw` when the store is a TPM or token, else in software.
    pub fn generate_in(hw: Option<&dyn HardwareBackend>, alg: KeyAlgorithm) -> Result<Self> {
        match hw {
            // TLS 1.3 signs with RSA only as RSA-PSS, which the hardware keys are not made
            // for (see crate::hw::signer): refused here, before a key is made.
            Some(_) if alg != KeyAlgorithm::EcdsaP256 => {
                Err(AgentError::Hardware(crate::hw::HwError::Refused(format!(
                    "hardware stores make ecdsa-p256 keys, and the CA's policy asks for {alg}: set the group's key algorithm to ecdsa-p256 (`lanyard-ca policy set GROUP --key-algorithm ecdsa-p256`)"
                ))))
            }
            Some(hw) => hw.generate(alg).map(DeviceKey::Hardware).map_err(AgentError::Hardware),
            None => Self::generate(alg),
        }
    }

    /// A key as the store keeps it (PKCS#8, or a hardware key's handle).
    pub fn from_stored(bytes: &[u8], hw: Option<&dyn HardwareBackend>) -> Result<Self> {
        match hw {
            Some(hw) => hw.open(bytes).map(DeviceKey::Hardware).map_err(AgentError::Hardware),
            None => Self::from_pkcs8(bytes),
        }
    }

    /// What the store keeps: PKCS#8 DER, or the hardware key's handle.
    pub fn stored(&self) -> Zeroizing<Vec<u8>> {
        match self {
            DeviceKey::Software { key, .. } => Zeroizing::new(key.serialize_der()),
            DeviceKey::Hardware(k) => k.handle(),
        }
    }

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
        Ok(DeviceKey::Software { key, algorithm: alg })
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        match self {
            DeviceKey::Software { algorithm, .. } => *algorithm,
            DeviceKey::Hardware(k) => k.algorithm(),
        }
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
        Ok(DeviceKey::Software { key, algorithm })
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
        let csr = match self {
            DeviceKey::Software { key, .. } => p.serialize_request(key)?,
            DeviceKey::Hardware(k) => {
                let signer =
                    crate::hw::signer::CsrKey::new(k.as_ref()).map_err(AgentError::Hardware)?;
                p.serialize_request(&signer).map_err(|e| match k.sign(b"lanyard key check") {
                    Err(hw) => AgentError::Hardware(hw),
                    Ok(_) => AgentError::Crypto(format!("signing the CSR: {e}")),
                })?
            }
        };
        Ok(csr.der().to_vec())
    }

    /// DER SubjectPublicKeyInfo, to match against the issued certificate.
    pub fn spki_der(&self) -> Vec<u8> {
        match self {
            DeviceKey::Software { key, .. } => {
                use rcgen::PublicKeyData;
                key.subject_public_key_info()
            }
            DeviceKey::Hardware(k) => k.spki_der().to_vec(),
        }
    }
}
