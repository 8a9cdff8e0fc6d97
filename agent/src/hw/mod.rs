//! Hardware-backed device keys: a TPM 2.0 (`[store] backend = "tpm"`, feature `tpm`) or a
//! PKCS#11 token (`backend = "pkcs11"`, feature `pkcs11`). The key is generated inside the
//! hardware and never leaves it; what the agent keeps is the key's **handle**: a small JSON
//! document (a TPM-wrapped blob that only this TPM can load, or the token object's id and
//! label). The credential store keeps handles exactly as it keeps a file store's keys
//! (written once, committed by the pointer, deleted after the swap), and asks the backend
//! ([`lanyard_keystore::HardwareKeys`]) to destroy the object a handle names when that handle
//! goes.
//!
//! - [`HardwareBackend`]: generates, opens and destroys keys; one per configured store.
//! - [`HardwareKey`]: one key, signing in the hardware.
//! - [`signer`]: the adapters that let rcgen (CSRs) and rustls (TLS client handshakes) sign
//!   with a [`HardwareKey`].
//! - [`handle`]: the handle document, shared by both backends.

use lanyard_proto::KeyAlgorithm;
use std::fmt;
use std::sync::Arc;
use zeroize::Zeroizing;

pub mod handle;
#[cfg(feature = "pkcs11")]
pub mod pkcs11;
pub mod signer;
#[cfg(feature = "tpm")]
pub mod tpm;

/// What went wrong with a hardware key. The message names the device (TCTI, module, token)
/// and what to do; never a PIN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HwError {
    /// The TPM or token cannot be reached now (TPM daemon gone, token removed, socket
    /// refused): worth retrying; the proxy answers 503 meanwhile.
    #[error("{0}")]
    Unreachable(String),
    /// The handle names a key the hardware does not have (deleted, token re-initialised,
    /// TPM cleared): enrol again.
    #[error("{0}")]
    KeyMissing(String),
    /// Refused for good until the configuration changes: a wrong PIN, no such token, an
    /// algorithm the hardware does not do.
    #[error("{0}")]
    Refused(String),
}

impl HwError {
    /// Worth trying again without a configuration change.
    pub fn is_transient(&self) -> bool {
        matches!(self, HwError::Unreachable(_))
    }
}

pub type HwResult<T> = std::result::Result<T, HwError>;

/// One key inside the hardware.
pub trait HardwareKey: Send + Sync + fmt::Debug {
    /// The key's algorithm (ECDSA P-256, or RSA-2048 where the hardware and policy allow).
    fn algorithm(&self) -> KeyAlgorithm;
    /// DER SubjectPublicKeyInfo, as it goes into the CSR and must come back in the
    /// certificate.
    fn spki_der(&self) -> &[u8];
    /// Signs `message` with SHA-256: ECDSA (a DER `ECDSA-Sig-Value`) or RSASSA-PKCS1-v1_5.
    /// The digest is computed here, the signature in the hardware.
    fn sign(&self, message: &[u8]) -> HwResult<Vec<u8>>;
    /// The handle the store keeps (see [`handle`]).
    fn handle(&self) -> Zeroizing<Vec<u8>>;
    /// Whether the key can sign now, for `lanyard status`: a signature of a fixed message.
    fn check(&self) -> HwResult<()> {
        self.sign(b"lanyard: is the device key there?").map(|_| ())
    }
}

/// A configured TPM or token.
pub trait HardwareBackend: Send + Sync + fmt::Debug {
    /// Generates a new, non-exportable key inside the hardware.
    fn generate(&self, alg: KeyAlgorithm) -> HwResult<Arc<dyn HardwareKey>>;
    /// The key a stored handle names.
    fn open(&self, handle: &[u8]) -> HwResult<Arc<dyn HardwareKey>>;
    /// Destroys the key a handle names; a key already gone is not an error.
    fn destroy(&self, handle: &[u8]) -> HwResult<()>;
    /// Destroys every key this profile made that none of `keep` names (a crash between
    /// generating a key and staging its handle leaves one). Called under the store's lock.
    fn sweep(&self, keep: &[Zeroizing<Vec<u8>>]) -> HwResult<()>;
    /// Checks the hardware answers and accepts our credentials (PIN), without a key.
    fn probe(&self) -> HwResult<()>;
    /// Where keys go, for logs and `lanyard status`: "TPM 2.0 at device:/dev/tpmrm0".
    fn describe(&self) -> String;
    /// The key's protection, for `lanyard status`: "TPM 2.0, non-exportable".
    fn protection(&self) -> &'static str;
}

/// The hardware backend `[store]` configures, if it is a hardware store.
pub fn open(cfg: &crate::config::StoreConfig) -> HwResult<Option<Arc<dyn HardwareBackend>>> {
    #[cfg(any(feature = "pkcs11", feature = "tpm"))]
    use crate::config::HardwareConfig;
    match &cfg.hardware {
        None => Ok(None),
        #[cfg(feature = "pkcs11")]
        Some(HardwareConfig::Pkcs11 { module, token_label, slot, pin_file }) => {
            let c = pkcs11::Pkcs11Config {
                module: module.clone(),
                token_label: token_label.clone(),
                slot: *slot,
                pin_file: pin_file.clone(),
            };
            Ok(Some(Arc::new(pkcs11::Pkcs11Backend::new(c, &cfg.profile))))
        }
        #[cfg(feature = "tpm")]
        Some(HardwareConfig::Tpm { tcti }) => Ok(Some(Arc::new(tpm::TpmBackend::new(tcti)?))),
        #[allow(unreachable_patterns)]
        Some(other) => Err(HwError::Refused(format!(
            "{other:?}: this lanyard was built without that hardware store's feature"
        ))),
    }
}

/// The hardware's part of the credential store ([`lanyard_keystore::HardwareKeys`]).
#[derive(Debug)]
pub struct StoreBridge {
    pub backend: Arc<dyn HardwareBackend>,
    pub kind: lanyard_keystore::StoreKind,
}

fn failure(e: HwError) -> lanyard_keystore::HardwareFailure {
    lanyard_keystore::HardwareFailure { transient: e.is_transient(), reason: e.to_string() }
}

impl lanyard_keystore::HardwareKeys for StoreBridge {
    fn kind(&self) -> lanyard_keystore::StoreKind {
        self.kind
    }

    fn describe(&self) -> String {
        self.backend.describe()
    }

    fn destroy(&self, handle: &[u8]) -> Result<(), lanyard_keystore::HardwareFailure> {
        self.backend.destroy(handle).map_err(failure)
    }

    fn sweep(&self, keep: &[Zeroizing<Vec<u8>>]) -> Result<(), lanyard_keystore::HardwareFailure> {
        self.backend.sweep(keep).map_err(failure)
    }
}
