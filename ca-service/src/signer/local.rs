//! Local key files: the embedded CA's signer. Keys are PKCS#8 PEM, written 0600 with
//! `create_new` (never overwriting), and read back on start.

use super::{Signer, rcgen_algorithm};
use crate::error::{CaError, Result};
use crate::fsutil;
use lanyard_proto::KeyAlgorithm;
use std::path::{Path, PathBuf};

pub struct LocalKeySigner {
    key: rcgen::KeyPair,
    alg: KeyAlgorithm,
    path: PathBuf,
}

impl std::fmt::Debug for LocalKeySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKeySigner")
            .field("alg", &self.alg)
            .field("path", &self.path)
            .field("key", &"...")
            .finish()
    }
}

/// Generates a fresh key pair of the given algorithm.
pub fn generate(alg: KeyAlgorithm) -> Result<rcgen::KeyPair> {
    let sig = rcgen_algorithm(alg);
    let kp = match alg {
        KeyAlgorithm::Rsa2048 => rcgen::KeyPair::generate_rsa_for(sig, rcgen::RsaKeySize::_2048),
        KeyAlgorithm::Rsa3072 => rcgen::KeyPair::generate_rsa_for(sig, rcgen::RsaKeySize::_3072),
        KeyAlgorithm::Rsa4096 => rcgen::KeyPair::generate_rsa_for(sig, rcgen::RsaKeySize::_4096),
        _ => rcgen::KeyPair::generate_for(sig),
    };
    kp.map_err(|e| CaError::Signing(format!("generating a {alg} key: {e}")))
}

impl LocalKeySigner {
    /// Generates a key and writes it to `path` (0600, refusing to overwrite).
    pub fn create(path: &Path, alg: KeyAlgorithm) -> Result<Self> {
        let key = generate(alg)?;
        let pem = zeroize::Zeroizing::new(key.serialize_pem());
        fsutil::write_new_private(path, pem.as_bytes())?;
        Ok(LocalKeySigner { key, alg, path: path.to_owned() })
    }

    /// Loads a key written by [`LocalKeySigner::create`].
    pub fn load(path: &Path, alg: KeyAlgorithm) -> Result<Self> {
        let pem = zeroize::Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(CaError::io(format!("reading CA key {}", path.display())))?,
        );
        let key =
            rcgen::KeyPair::from_pem_and_sign_algo(&pem, rcgen_algorithm(alg)).map_err(|e| {
                CaError::Config(format!("CA key {} is not a {alg} key: {e}", path.display()))
            })?;
        Ok(LocalKeySigner { key, alg, path: path.to_owned() })
    }

    pub fn key_pair(&self) -> &rcgen::KeyPair {
        &self.key
    }
}

impl rcgen::PublicKeyData for LocalKeySigner {
    fn der_bytes(&self) -> &[u8] {
        self.key.der_bytes()
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.key.algorithm()
    }
}

impl rcgen::SigningKey for LocalKeySigner {
    fn sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, rcgen::Error> {
        self.key.sign(msg)
    }
}

impl Signer for LocalKeySigner {
    fn key_algorithm(&self) -> KeyAlgorithm {
        self.alg
    }
    fn describe(&self) -> String {
        format!("file:{}", self.path.display())
    }
}
