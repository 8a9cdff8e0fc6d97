//! Hardware stores (`tpm`, `pkcs11`): the key lives in a TPM or on a token and the state
//! directory keeps its **handle** (opaque bytes to this crate: a TPM-wrapped blob, a token
//! object's id) as `keys/<32 hex>.key`, 0600, exactly as the file store keeps a key. The
//! swap is the file store's, with one addition: when a handle goes (the previous generation
//! after a commit, an abandoned staged key, a crash's leftovers), the key it names is
//! destroyed first, by the agent's [`HardwareKeys`], which does the hardware's part (this
//! crate does no cryptography and links no hardware library).
//!
//! A hardware key exists from the moment it is generated, before any handle names it. The
//! agent therefore generates under the state lock ([`CredentialStore::stage_generated`]), and
//! each garbage collection asks the hardware to sweep the keys this profile made that no
//! handle names: a crash between generating a key and staging its handle leaves one.
//!
//! [`CredentialStore::stage_generated`]: crate::CredentialStore::stage_generated

use crate::error::StoreError;
use crate::file_store::FileVault;
use crate::kind::StoreKind;
use crate::swap::KeyVault;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use zeroize::Zeroizing;

type Result<T> = std::result::Result<T, StoreError>;

/// Why the hardware refused: the backend's message and whether retrying may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HardwareFailure {
    /// Names the device and what to do; never a PIN.
    pub reason: String,
    /// The device did not answer (retry later), as opposed to refusing.
    pub transient: bool,
}

/// The hardware's part of a hardware store, implemented by the agent.
pub trait HardwareKeys: Send + Sync + fmt::Debug {
    /// `Tpm` or `Pkcs11`.
    fn kind(&self) -> StoreKind;
    /// Where keys are: "PKCS#11 token \"lanyard\" (module /usr/lib/.../libsofthsm2.so)".
    fn describe(&self) -> String;
    /// Destroys the key `handle` names. A key already gone, or bytes that name no key (the
    /// store's probe writes a throwaway secret), are not errors.
    fn destroy(&self, handle: &[u8]) -> std::result::Result<(), HardwareFailure>;
    /// Destroys every key this profile made that none of `keep` names.
    fn sweep(&self, keep: &[Zeroizing<Vec<u8>>]) -> std::result::Result<(), HardwareFailure>;
}

/// Key handles in `<state_dir>/keys`, keys in the hardware.
#[derive(Debug)]
pub struct HandleVault {
    files: FileVault,
    hw: Arc<dyn HardwareKeys>,
}

impl HandleVault {
    /// The vault of the state directory `state_dir` over `hw`.
    pub fn new(state_dir: &Path, hw: Arc<dyn HardwareKeys>) -> Self {
        HandleVault { files: FileVault::new(state_dir), hw }
    }

    fn failed(&self, op: &'static str) -> impl FnOnce(HardwareFailure) -> StoreError {
        let store = self.hw.kind();
        move |f| StoreError::Hardware {
            store,
            store_name: store.platform_name(),
            op,
            reason: f.reason,
            transient: f.transient,
        }
    }
}

impl KeyVault for HandleVault {
    fn kind(&self) -> StoreKind {
        self.hw.kind()
    }

    fn describe(&self) -> String {
        format!("{}; key handles in {}", self.hw.describe(), self.files.keys_dir().display())
    }

    fn prepare(&self) -> Result<()> {
        self.files.prepare()
    }

    fn new_ref(&self) -> Result<String> {
        self.files.new_ref()
    }

    fn is_valid_ref(&self, key_ref: &str) -> bool {
        self.files.is_valid_ref(key_ref)
    }

    fn intend(&self, key_ref: &str) -> Result<()> {
        self.files.intend(key_ref)
    }

    fn put(&self, key_ref: &str, key: &[u8]) -> Result<()> {
        self.files.put(key_ref, key)
    }

    fn get(&self, key_ref: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
        self.files.get(key_ref)
    }

    /// The key first, then its handle: a crash in between leaves a handle to a destroyed
    /// key, which is not current (the pointer moved off it first) and goes with the next
    /// collection. One key can have two handle files (the staged copy and the committed
    /// one, until the swap's clean-up): the key is destroyed only with its last handle.
    fn delete(&self, key_ref: &str) -> Result<()> {
        if let Some(handle) = self.files.get(key_ref)? {
            let mut shared = false;
            for other in self.files.known_refs()? {
                if other != key_ref
                    && self.files.get(&other)?.is_some_and(|h| h.as_slice() == handle.as_slice())
                {
                    shared = true;
                    break;
                }
            }
            if !shared {
                self.hw.destroy(&handle).map_err(self.failed("destroy a key"))?;
            }
        }
        self.files.delete(key_ref)
    }

    fn known_refs(&self) -> Result<Vec<String>> {
        self.files.known_refs()
    }

    /// After a collection only `keep`'s handles remain: any other key of this profile in
    /// the hardware is a crash's leftover.
    fn forget_all_but(&self, keep: &[String]) -> Result<()> {
        let mut handles = Vec::with_capacity(keep.len());
        for key_ref in keep {
            if let Some(h) = self.files.get(key_ref)? {
                handles.push(h);
            }
        }
        self.hw.sweep(&handles).map_err(self.failed("find keys left by a crash"))
    }

    fn missing_key_hint(&self) -> &'static str {
        " (the key handle file was deleted or the state directory was restored from an old backup)"
    }
}
