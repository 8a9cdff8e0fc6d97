//! The state directory's two small JSON files.
//!
//! `credential.json`, the **pointer**, names the current key and carries the chain. It is
//! replaced atomically and that replacement is the single commit point of a swap: before
//! it, the old pair is current; after it, the new one. It holds the key's SHA-256 so a key
//! changed behind the store's back is caught instead of being paired with the wrong chain.
//!
//! `pending.json` (keyring stores only) lists every keyring entry this state directory may
//! have created and not yet deleted, the current one included. A name is added *before*
//! its entry is created, so an entry orphaned by a crash is always listed and the next
//! swap deletes it; keyrings cannot be listed portably (keyutils has no search).

use crate::error::StoreError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The only pointer format this version writes and reads.
pub const POINTER_VERSION: u64 = 1;

/// Refuse to parse a pointer larger than this: a chain is a few KiB.
const MAX_POINTER_BYTES: u64 = 1 << 20;

/// `credential.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pointer {
    /// Always [`POINTER_VERSION`].
    pub version: u64,
    /// Where the key is: `keys/<id>.key` (file store) or `<profile>/<id>` (keyring user).
    pub key_ref: String,
    /// SHA-256 of the key bytes, lowercase hex: proves the key found is the one this chain
    /// was stored with.
    pub key_sha256: String,
    /// The certificate chain, PEM, leaf first.
    pub chain_pem: String,
    /// When this pointer was written, Unix seconds. Informational.
    pub stored_at: u64,
}

#[derive(Deserialize)]
struct VersionOnly {
    version: u64,
}

impl Pointer {
    /// Reads and parses the pointer at `path`; `Ok(None)` if there is none.
    pub fn read(path: &Path) -> Result<Option<Pointer>, StoreError> {
        let Some(bytes) = crate::fsio::read_bounded(path, MAX_POINTER_BYTES)? else {
            return Ok(None);
        };
        Self::parse(path, &bytes).map(Some)
    }

    /// Parses pointer bytes; errors name `path`.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Pointer, StoreError> {
        let corrupt =
            |reason: String| StoreError::CorruptPointer { path: path.to_path_buf(), reason };
        // The version first, so a newer format is reported as such, not as unknown fields.
        let v: VersionOnly =
            serde_json::from_slice(bytes).map_err(|e| corrupt(format!("not valid JSON: {e}")))?;
        if v.version != POINTER_VERSION {
            return Err(StoreError::UnsupportedVersion {
                path: path.to_path_buf(),
                version: v.version,
            });
        }
        let p: Pointer =
            serde_json::from_slice(bytes).map_err(|e| corrupt(format!("bad field: {e}")))?;
        if p.key_sha256.len() != 64 || !p.key_sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(corrupt("key_sha256 is not 64 hex digits".to_string()));
        }
        Ok(p)
    }

    /// The JSON written to disk.
    pub fn to_json(&self) -> Result<Vec<u8>, StoreError> {
        to_json(self)
    }
}

/// `renewal-key.json`: the key of a renewal in flight, kept until its certificate is
/// stored, so a renewal interrupted after the CA answered (a crash, a lost answer) is
/// retried with the same key and gets the same certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Staged {
    pub version: u64,
    pub key_ref: String,
    pub key_sha256: String,
    /// Serial of the certificate this key renews.
    pub renews: String,
    pub staged_at: u64,
}

impl Staged {
    pub fn read(path: &Path) -> Result<Option<Staged>, StoreError> {
        let Some(bytes) = crate::fsio::read_bounded(path, MAX_POINTER_BYTES)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| StoreError::CorruptPointer {
            path: path.to_path_buf(),
            reason: format!("not a staged renewal key: {e}"),
        })
    }

    pub fn to_json(&self) -> Result<Vec<u8>, StoreError> {
        to_json(self)
    }
}

/// `pending.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pending {
    /// Always 1.
    pub version: u64,
    /// Keyring users (`<profile>/<id>`) that may exist.
    pub refs: Vec<String>,
}

impl Pending {
    /// Reads `pending.json`. A missing file is an empty list; a corrupt one is reported so
    /// the caller can decide (a swap goes on and warns: losing track of an orphan leaves a
    /// stale entry behind, refusing to renew would be worse).
    pub fn read(path: &Path) -> Result<Pending, StoreError> {
        let Some(bytes) = crate::fsio::read_bounded(path, MAX_POINTER_BYTES)? else {
            return Ok(Pending { version: 1, refs: Vec::new() });
        };
        serde_json::from_slice(&bytes).map_err(|e| StoreError::CorruptPointer {
            path: path.to_path_buf(),
            reason: format!("not a pending-entries list: {e}"),
        })
    }

    /// Writes `pending.json` atomically.
    pub fn write(&self, path: &Path) -> Result<(), StoreError> {
        crate::fsio::replace_file(path, &to_json(self)?, "pending")
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = serde_json::to_vec_pretty(value).map_err(|e| StoreError::InvalidCredential {
        reason: format!("cannot encode JSON: {e}"),
    })?;
    out.push(b'\n');
    Ok(out)
}

/// SHA-256 of the key, lowercase hex: aws-lc-rs's with the `aws-lc` feature, `sha2`'s otherwise.
#[cfg(any(feature = "aws-lc", feature = "sha2"))]
pub fn key_digest(key: &[u8]) -> String {
    #[cfg(feature = "aws-lc")]
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key);
    #[cfg(not(feature = "aws-lc"))]
    let digest = <sha2::Sha256 as sha2::Digest>::digest(key);
    crate::fsio::hex(digest.as_ref())
}

#[cfg(not(any(feature = "aws-lc", feature = "sha2")))]
compile_error!("lanyard-keystore needs a SHA-256: enable its `aws-lc` or `sha2` feature");

#[cfg(test)]
mod tests {
    /// Pointer files written by either digest (older agents used `sha2` only) must keep
    /// matching their keys: both give FIPS 180-4's SHA-256 (its "abc" and empty vectors).
    #[test]
    fn key_digest_is_sha256() {
        assert_eq!(
            super::key_digest(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            super::key_digest(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
