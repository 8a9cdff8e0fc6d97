//! The file store: each key generation in its own file, `keys/<32 hex>.key` (0600) in the
//! 0700 state directory, written once and never modified.
//!
//! For system services and headless devices, which have no user keyring. The protection is
//! the file mode, checked on every read: a key file or directory that group or others can
//! access is refused, not used (and not silently fixed: someone may have read it already).
//! Leftovers of a crash are plain unreferenced `*.key` files, found by listing `keys/`.

use crate::error::StoreError;
use crate::fsio;
use crate::kind::StoreKind;
use crate::swap::KeyVault;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

type Result<T> = std::result::Result<T, StoreError>;

/// Keys larger than this are refused on read: PKCS#8 for RSA-8192 is under 5 KiB.
const MAX_KEY_BYTES: u64 = 64 * 1024;

/// Key files in `<state_dir>/keys`.
#[derive(Debug)]
pub struct FileVault {
    state_dir: PathBuf,
    keys_dir: PathBuf,
}

impl FileVault {
    /// The vault of the state directory `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        FileVault { state_dir: state_dir.to_path_buf(), keys_dir: state_dir.join("keys") }
    }

    /// `<state_dir>/keys`.
    pub fn keys_dir(&self) -> &Path {
        &self.keys_dir
    }

    fn path_of(&self, key_ref: &str) -> PathBuf {
        self.state_dir.join(key_ref)
    }
}

impl KeyVault for FileVault {
    fn kind(&self) -> StoreKind {
        StoreKind::File
    }

    fn describe(&self) -> String {
        format!("file store: keys in {}", self.keys_dir.display())
    }

    fn prepare(&self) -> Result<()> {
        fsio::ensure_private_dir(&self.keys_dir)
    }

    fn new_ref(&self) -> Result<String> {
        Ok(format!("keys/{}.key", fsio::random_hex_id()?))
    }

    fn is_valid_ref(&self, key_ref: &str) -> bool {
        key_ref
            .strip_prefix("keys/")
            .and_then(|r| r.strip_suffix(".key"))
            .is_some_and(fsio::is_hex_id)
    }

    fn intend(&self, _key_ref: &str) -> Result<()> {
        // Nothing to record: listing keys/ finds every file a crash may have left.
        Ok(())
    }

    fn put(&self, key_ref: &str, key: &[u8]) -> Result<()> {
        fsio::write_new_private(&self.path_of(key_ref), key, "key")
    }

    fn get(&self, key_ref: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
        if !fsio::check_private_dir(&self.keys_dir)? {
            return Ok(None);
        }
        fsio::read_bounded(&self.path_of(key_ref), MAX_KEY_BYTES)
    }

    fn delete(&self, key_ref: &str) -> Result<()> {
        fsio::remove_if_exists(&self.path_of(key_ref))
    }

    fn known_refs(&self) -> Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.keys_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::io("list", &self.keys_dir)(e)),
        };
        let mut refs = Vec::new();
        for entry in entries {
            let entry = entry.map_err(StoreError::io("list", &self.keys_dir))?;
            if let Some(name) = entry.file_name().to_str() {
                let key_ref = format!("keys/{name}");
                // Only names this store makes: anything else in keys/ is not ours to delete.
                if self.is_valid_ref(&key_ref) {
                    refs.push(key_ref);
                }
            }
        }
        Ok(refs)
    }

    fn forget_all_but(&self, _keep: &[String]) -> Result<()> {
        Ok(())
    }

    fn missing_key_hint(&self) -> &'static str {
        " (the key file was deleted or the state directory was restored from an old backup)"
    }
}
