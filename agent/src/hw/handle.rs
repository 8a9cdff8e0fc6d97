//! The handle document a hardware store keeps in place of a key: JSON, one per key
//! generation, in `keys/<id>.key` (0600) like a file store's key. It holds nothing secret
//! by itself: a TPM's wrapped private blob can be loaded only by the TPM that made it, and a
//! token's object id is useless without the token and its PIN. It is still kept private:
//! it says which key is the device's.
//!
//! ```json
//! {"version":1,"backend":"pkcs11","algorithm":"ecdsa-p256","spki":"<base64 DER>",
//!  "id":"<hex CKA_ID>","label":"lanyard/<profile>/<hex>"}
//! {"version":1,"backend":"tpm","algorithm":"ecdsa-p256","spki":"<base64 DER>",
//!  "public":"<base64 TPM2B_PUBLIC>","private":"<base64 TPM2B_PRIVATE>"}
//! ```

use super::{HwError, HwResult};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use lanyard_proto::KeyAlgorithm;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The only handle format this version writes and reads.
pub const HANDLE_VERSION: u64 = 1;

/// A hardware key's handle.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Handle {
    pub version: u64,
    /// `tpm` or `pkcs11`: a handle of another backend is refused, not misread.
    pub backend: String,
    /// [`KeyAlgorithm::name`].
    pub algorithm: String,
    /// The public key (DER SubjectPublicKeyInfo), base64.
    pub spki: String,
    /// PKCS#11: the object's `CKA_ID`, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// PKCS#11: the object's `CKA_LABEL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// TPM: the key's public area (marshalled `TPM2B_PUBLIC`), base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public: Option<String>,
    /// TPM: the key's private area wrapped by the TPM's storage key (marshalled
    /// `TPM2B_PRIVATE`), base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private: Option<String>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("backend", &self.backend)
            .field("algorithm", &self.algorithm)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl Handle {
    /// A handle of `backend` for a key of `alg` with public key `spki`.
    pub fn new(backend: &str, alg: KeyAlgorithm, spki: &[u8]) -> Handle {
        Handle {
            version: HANDLE_VERSION,
            backend: backend.to_owned(),
            algorithm: alg.name().to_owned(),
            spki: B64.encode(spki),
            id: None,
            label: None,
            public: None,
            private: None,
        }
    }

    /// Parses a stored handle of `backend`; errors say the key must be enrolled again.
    pub fn parse(bytes: &[u8], backend: &str) -> HwResult<Handle> {
        let bad = |why: String| {
            HwError::KeyMissing(format!(
                "the stored key handle is not a {backend} handle ({why}); enrol again"
            ))
        };
        let h: Handle = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if h.version != HANDLE_VERSION {
            return Err(bad(format!("version {} (this agent reads {HANDLE_VERSION})", h.version)));
        }
        if h.backend != backend {
            return Err(bad(format!("it was made by the {} store", h.backend)));
        }
        Ok(h)
    }

    /// The handle as stored.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        // Serializing a struct of strings cannot fail.
        Zeroizing::new(serde_json::to_vec(self).unwrap_or_default())
    }

    pub fn algorithm(&self) -> HwResult<KeyAlgorithm> {
        self.algorithm.parse().map_err(|e| HwError::KeyMissing(format!("stored key handle: {e}")))
    }

    pub fn spki_der(&self) -> HwResult<Vec<u8>> {
        B64.decode(&self.spki)
            .map_err(|e| HwError::KeyMissing(format!("stored key handle: spki: {e}")))
    }

    /// A base64 field of the handle, decoded; `name` for the error.
    pub fn blob(field: &Option<String>, name: &str) -> HwResult<Vec<u8>> {
        let s = field
            .as_deref()
            .ok_or_else(|| HwError::KeyMissing(format!("stored key handle has no {name}")))?;
        B64.decode(s).map_err(|e| HwError::KeyMissing(format!("stored key handle: {name}: {e}")))
    }

    pub fn encode(bytes: &[u8]) -> String {
        B64.encode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_round_trips_and_another_backends_is_refused() {
        let mut h = Handle::new("tpm", KeyAlgorithm::EcdsaP256, b"\x30\x01\x00");
        h.public = Some(Handle::encode(b"pub"));
        let bytes = h.to_bytes();
        let back = Handle::parse(&bytes, "tpm").expect("parses");
        assert_eq!(back, h);
        assert_eq!(Handle::blob(&back.public, "public").expect("blob"), b"pub");
        let e = Handle::parse(&bytes, "pkcs11").expect_err("other backend");
        assert!(e.to_string().contains("made by the tpm store"), "{e}");
        assert!(Handle::parse(b"not json", "tpm").is_err());
    }
}
