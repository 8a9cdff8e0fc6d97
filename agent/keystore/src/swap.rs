//! The store/load/remove flow that every backend shares, and [`open`].
//!
//! A backend ([`KeyVault`]) only knows how to put, get and delete a key under a name. This
//! module decides the order, and the order is what makes a swap crash-safe:
//!
//! 1. take the state lock (one swap at a time, across processes);
//! 2. pick a fresh key name and record it as possibly existing (keyrings: `pending.json`);
//! 3. store the new key under that name, read it back and compare;
//! 4. **commit**: atomically replace `credential.json` with a pointer to the new name that
//!    carries the new chain and the key's SHA-256;
//! 5. delete the previous key, then every other name that is not current (orphans of an
//!    earlier crash), best effort.
//!
//! Before step 4 completes, `credential.json` still names the old key, which is untouched;
//! after it, it names the new key, which was already stored and verified. Steps 2, 3 and 5
//! only ever create or delete keys that no pointer names. So a crash anywhere leaves one
//! complete pair, and the next swap removes whatever the crash left behind.
//!
//! What must never happen here: overwriting a key in place, deleting a key before the
//! pointer has moved off it, or returning a key with a chain from another generation.

use crate::credential::Credential;
use crate::error::StoreError;
use crate::file_store::FileVault;
use crate::fsio::{self, StateLock};
use crate::hardware_store::{HandleVault, HardwareKeys};
use crate::keyring_store::KeyringVault;
use crate::kind::StoreKind;
use crate::pointer::{POINTER_VERSION, Pointer, Staged, key_digest};
use std::fmt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

type Result<T> = std::result::Result<T, StoreError>;

/// The name of the pointer file in the state directory.
pub const POINTER_FILE: &str = "credential.json";
/// The name of the staged renewal key's file in the state directory.
pub const STAGED_FILE: &str = "renewal-key.json";

/// Where the agent keeps its credential. Every implementation replaces a credential
/// crash-safely (see the module docs); all methods block (run them off an async runtime's
/// worker threads, e.g. with `spawn_blocking`).
pub trait CredentialStore: Send + Sync + fmt::Debug {
    /// Which backend holds the key.
    fn kind(&self) -> StoreKind;

    /// One line for logs and `lanyard status`: the backend and where things are.
    fn describe(&self) -> String;

    /// The current credential, `Ok(None)` if none was ever stored (or it was removed).
    /// A pointer whose key is missing, or a corrupt pointer, is an error that names the
    /// file and says to enrol again; see [`StoreError::needs_reenrolment`].
    fn load(&self) -> std::result::Result<Option<Credential>, StoreError>;

    /// Replaces the current credential with `cred`. On `Err`, the previous credential is
    /// still the one [`load`](Self::load) returns, except when the error is about making
    /// the commit durable (an fsync of the state directory after the rename), in which case
    /// either may be current and both keys are kept.
    fn store(&self, cred: &Credential) -> std::result::Result<(), StoreError>;

    /// Checks, without touching the current credential, that this store can hold a new
    /// one: the state directory is created (0700) and locked, and a throwaway secret is
    /// written to the key store, read back, compared and deleted. Enrolment calls this
    /// before it spends its one-time token, so a keyring that cannot be reached, is locked
    /// or does not answer is found out while the token is still good.
    fn probe(&self) -> std::result::Result<(), StoreError>;

    /// Deletes the credential: the pointer first (so a crash cannot leave a pointer to a
    /// deleted key), then every key this store created.
    fn remove(&self) -> std::result::Result<(), StoreError>;

    /// A file that changes (is replaced by rename) on every successful `store` and goes
    /// away on `remove`. To follow it from another process with `notify`, watch its parent
    /// directory (non-recursively) and filter on this file name: the file is replaced, so a
    /// watch on the file itself would stay on the old inode.
    fn watch_path(&self) -> PathBuf;

    /// Keeps `key` (PKCS#8) as the key of a renewal of certificate `renews`, in the same
    /// backend as credentials, until [`store`](Self::store) commits a credential (which
    /// drops it) or [`clear_staged`](Self::clear_staged). Replaces an earlier staged key.
    fn stage(&self, key: &[u8], renews: &str) -> std::result::Result<(), StoreError>;

    /// Like [`stage`](Self::stage), for the key `generate` makes while the state lock is
    /// held; returns what it made. Hardware keys exist from the moment they are generated:
    /// under the lock, no other process's collection takes one for a crash's leftover
    /// before its handle is staged.
    fn stage_generated(
        &self,
        renews: &str,
        generate: &mut dyn FnMut() -> std::result::Result<Zeroizing<Vec<u8>>, StoreError>,
    ) -> std::result::Result<Zeroizing<Vec<u8>>, StoreError>;

    /// The staged key, if one is kept for a renewal of `renews`.
    fn staged(&self, renews: &str) -> std::result::Result<Option<Zeroizing<Vec<u8>>>, StoreError>;

    /// Drops the staged key (the CA refused the renewal for good).
    fn clear_staged(&self) -> std::result::Result<(), StoreError>;
}

/// Opens the credential store of `kind` with its state in `state_dir` (created 0700 on the
/// first `store`; refused if it exists with group or other access). `profile` names the
/// identity in keyring entries (`lanyard` / `<profile>/<id>`), so that several identities
/// of one user can share a keyring; give each profile its own `state_dir`.
///
/// Opening does not connect to a keyring service: a keyring that is not running or is
/// locked shows up as a transient error from the first call that needs it.
pub fn open(
    kind: StoreKind,
    state_dir: &Path,
    profile: &str,
) -> std::result::Result<Box<dyn CredentialStore>, StoreError> {
    check_profile(profile)?;
    fsio::check_private_dir(state_dir)?;
    Ok(match kind {
        StoreKind::File => Box::new(SwapStore::new(state_dir, FileVault::new(state_dir))),
        StoreKind::Keyring | StoreKind::KernelKeyring => {
            Box::new(SwapStore::new(state_dir, KeyringVault::new(kind, state_dir, profile)?))
        }
        StoreKind::Tpm | StoreKind::Pkcs11 => {
            return Err(StoreError::Hardware {
                store: kind,
                store_name: kind.platform_name(),
                op: "open",
                reason: "a hardware store is opened with its device (open_hardware)".into(),
                transient: false,
            });
        }
    })
}

/// Opens a hardware store (`tpm`, `pkcs11`): handles in `state_dir`, keys in `hw`.
pub fn open_hardware(
    state_dir: &Path,
    profile: &str,
    hw: std::sync::Arc<dyn HardwareKeys>,
) -> std::result::Result<Box<dyn CredentialStore>, StoreError> {
    check_profile(profile)?;
    fsio::check_private_dir(state_dir)?;
    Ok(Box::new(SwapStore::new(state_dir, HandleVault::new(state_dir, hw))))
}

/// Profile names go into keyring entry names and error messages: keep them plain.
fn check_profile(profile: &str) -> Result<()> {
    let ok = !profile.is_empty()
        && profile.len() <= 64
        && !profile.starts_with('.')
        && profile.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok { Ok(()) } else { Err(StoreError::InvalidProfile { profile: profile.to_string() }) }
}

/// Where keys are kept, by name. Names (`key_ref`s) are chosen by the vault and never
/// reused; the swap flow decides when each is created and deleted.
pub trait KeyVault: Send + Sync + fmt::Debug {
    /// Which backend this is.
    fn kind(&self) -> StoreKind;
    /// The backend and where keys go, for [`CredentialStore::describe`].
    fn describe(&self) -> String;
    /// Makes the vault ready for `put` (the file store creates `keys/`).
    fn prepare(&self) -> Result<()>;
    /// A fresh, never-used key name.
    fn new_ref(&self) -> Result<String>;
    /// Whether `key_ref` is a name this vault could have made: a pointer naming anything
    /// else is corrupt (and is never used as a path or entry name).
    fn is_valid_ref(&self, key_ref: &str) -> bool;
    /// Records, durably, that `key_ref` may exist from now on, before `put` creates it.
    fn intend(&self, key_ref: &str) -> Result<()>;
    /// Stores the key under a name that does not exist yet.
    fn put(&self, key_ref: &str, key: &[u8]) -> Result<()>;
    /// The key under `key_ref`, `Ok(None)` if there is none.
    fn get(&self, key_ref: &str) -> Result<Option<Zeroizing<Vec<u8>>>>;
    /// Deletes the key; a key that does not exist is not an error.
    fn delete(&self, key_ref: &str) -> Result<()>;
    /// Every name that may exist (the current one included).
    fn known_refs(&self) -> Result<Vec<String>>;
    /// After garbage collection: only `keep` may still exist.
    fn forget_all_but(&self, keep: &[String]) -> Result<()>;
    /// Why the pointer's key may have gone, for [`StoreError::KeyMissing`].
    fn missing_key_hint(&self) -> &'static str;
}

/// A [`CredentialStore`] made of a state directory (pointer, lock) and a [`KeyVault`].
#[derive(Debug)]
pub struct SwapStore<V> {
    dir: PathBuf,
    pointer_path: PathBuf,
    staged_path: PathBuf,
    vault: V,
}

impl<V: KeyVault> SwapStore<V> {
    /// A store over `vault` with its pointer in `dir`.
    pub fn new(dir: &Path, vault: V) -> Self {
        SwapStore {
            dir: dir.to_path_buf(),
            pointer_path: dir.join(POINTER_FILE),
            staged_path: dir.join(STAGED_FILE),
            vault,
        }
    }

    /// Removes the staged file (under the state lock) and returns the key name it held; the
    /// key itself is left to the caller or the garbage collection.
    fn unstage(&self) -> Result<Option<String>> {
        let staged = Staged::read(&self.staged_path).ok().flatten().map(|s| s.key_ref);
        if self.staged_path.exists() {
            fsio::remove_if_exists(&self.staged_path)?;
            fsio::sync_dir(&self.dir)?;
        }
        Ok(staged)
    }

    /// Stores `key` under a fresh name and reads it back (steps 2 and 3 of a swap).
    fn put_verified(&self, key: &[u8]) -> Result<String> {
        let new_ref = self.vault.new_ref()?;
        self.vault.intend(&new_ref)?;
        crash_point!("intended");
        if let Err(e) = self.vault.put(&new_ref, key) {
            self.discard(&new_ref);
            return Err(e);
        }
        crash_point!("key-stored");
        match self.vault.get(&new_ref) {
            Ok(Some(back)) if back.as_slice() == key => Ok(new_ref),
            Ok(_) => {
                self.discard(&new_ref);
                Err(StoreError::ReadBackMismatch {
                    key_ref: new_ref,
                    store_name: self.vault.kind().platform_name(),
                })
            }
            Err(e) => {
                self.discard(&new_ref);
                Err(e)
            }
        }
    }

    fn read_pointer(&self) -> Result<Option<Pointer>> {
        let Some(p) = Pointer::read(&self.pointer_path)? else { return Ok(None) };
        if !self.vault.is_valid_ref(&p.key_ref) {
            return Err(StoreError::CorruptPointer {
                path: self.pointer_path.clone(),
                reason: format!(
                    "key_ref {:?} is not a {} key name",
                    p.key_ref,
                    self.vault.kind().platform_name()
                ),
            });
        }
        Ok(Some(p))
    }

    /// Pairs the pointer's chain with the key it names, after checking the key is the one
    /// the pointer was written for.
    fn assemble(&self, pointer: Pointer, key: Zeroizing<Vec<u8>>) -> Result<Credential> {
        if key_digest(&key) != pointer.key_sha256 {
            return Err(StoreError::KeyMismatch {
                pointer: self.pointer_path.clone(),
                key_ref: pointer.key_ref,
                store_name: self.vault.kind().platform_name(),
            });
        }
        let chain_der = Credential::chain_from_pem(&pointer.chain_pem).map_err(|reason| {
            StoreError::CorruptPointer {
                path: self.pointer_path.clone(),
                reason: format!("chain_pem: {reason}"),
            }
        })?;
        Ok(Credential::new(key, chain_der))
    }

    /// Deletes every key but `keep`, and temp files left by a crashed atomic write.
    /// Returns the failures (each already logged); the caller decides whether they matter.
    fn collect_garbage(&self, keep: Option<&str>) -> Vec<StoreError> {
        let mut failures = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.')
                    && name.ends_with(fsio::TEMP_SUFFIX)
                    && let Err(e) = fsio::remove_if_exists(&entry.path())
                {
                    failures.push(e);
                }
            }
        }
        let refs = match self.vault.known_refs() {
            Ok(refs) => refs,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list stale keys; they stay until the next renewal");
                failures.push(e);
                return failures;
            }
        };
        let mut remaining: Vec<String> = keep.map(str::to_string).into_iter().collect();
        for key_ref in refs {
            if Some(key_ref.as_str()) == keep || remaining.contains(&key_ref) {
                continue;
            }
            crash_point!("gc:before-delete");
            if let Err(e) = self.vault.delete(&key_ref) {
                tracing::warn!(key_ref = %key_ref, error = %e, "cannot delete a stale key");
                remaining.push(key_ref);
                failures.push(e);
            }
        }
        if let Err(e) = self.vault.forget_all_but(&remaining) {
            tracing::warn!(error = %e, "cannot record which stale keys remain");
            failures.push(e);
        }
        failures
    }

    /// Stages `key` for a renewal of `renews`; the caller holds the state lock.
    fn stage_locked(&self, key: &[u8], renews: &str) -> Result<()> {
        let previous = Staged::read(&self.staged_path).ok().flatten().map(|s| s.key_ref);
        let key_ref = self.put_verified(key)?;
        let staged = Staged {
            version: POINTER_VERSION,
            key_ref: key_ref.clone(),
            key_sha256: key_digest(key),
            renews: renews.to_owned(),
            staged_at: crate::clock::unix_now(),
        };
        if let Err(e) = fsio::replace_file(&self.staged_path, &staged.to_json()?, "staged") {
            self.discard(&key_ref);
            return Err(e);
        }
        crash_point!("staged");
        let current = self.read_pointer().ok().flatten().map(|p| p.key_ref);
        if let Some(prev) = previous.filter(|p| *p != key_ref && Some(p) != current.as_ref()) {
            self.discard(&prev);
        }
        Ok(())
    }

    /// Deletes a key that was never committed; it stays listed for the next collection.
    fn discard(&self, key_ref: &str) {
        if let Err(e) = self.vault.delete(key_ref) {
            tracing::warn!(key_ref = %key_ref, error = %e, "cannot delete an uncommitted key");
        }
    }
}

impl<V: KeyVault> CredentialStore for SwapStore<V> {
    fn kind(&self) -> StoreKind {
        self.vault.kind()
    }

    fn describe(&self) -> String {
        format!("{}; chain and pointer in {}", self.vault.describe(), self.pointer_path.display())
    }

    fn load(&self) -> Result<Option<Credential>> {
        if !fsio::check_private_dir(&self.dir)? {
            return Ok(None);
        }
        // A swap in another process may move the pointer and delete the key it named
        // between our two reads; then the pointer has changed and we read again.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let Some(pointer) = self.read_pointer()? else { return Ok(None) };
            if let Some(key) = self.vault.get(&pointer.key_ref)? {
                return self.assemble(pointer, key).map(Some);
            }
            let moved = self.read_pointer()?.map(|p| p.key_ref) != Some(pointer.key_ref.clone());
            if !moved || attempts >= 3 {
                return Err(StoreError::KeyMissing {
                    pointer: self.pointer_path.clone(),
                    key_ref: pointer.key_ref,
                    store: self.vault.kind(),
                    store_name: self.vault.kind().platform_name(),
                    why: self.vault.missing_key_hint(),
                });
            }
        }
    }

    fn store(&self, cred: &Credential) -> Result<()> {
        cred.check_shape(self.vault.kind().is_hardware())
            .map_err(|reason| StoreError::InvalidCredential { reason })?;
        let key: &[u8] = &cred.key;
        let chain_pem = cred.chain_pem();

        fsio::ensure_private_dir(&self.dir)?;
        let _lock = StateLock::acquire(&self.dir)?;
        self.vault.prepare()?;

        // The pointer being replaced. If it is unreadable we are replacing it anyway (this
        // is how re-enrolment repairs a corrupt state); its key, if any, is left to the
        // garbage collection below.
        let previous = match self.read_pointer() {
            Ok(p) => p.map(|p| p.key_ref),
            Err(
                e @ (StoreError::CorruptPointer { .. } | StoreError::UnsupportedVersion { .. }),
            ) => {
                tracing::warn!(error = %e, "replacing an unreadable credential pointer");
                None
            }
            Err(e) => return Err(e),
        };

        // 2-3: the new key, under a fresh name, read back.
        let new_ref = self.put_verified(key)?;
        crash_point!("key-verified");

        // 4: the commit point.
        let pointer = Pointer {
            version: POINTER_VERSION,
            key_ref: new_ref.clone(),
            key_sha256: key_digest(key),
            chain_pem,
            stored_at: crate::clock::unix_now(),
        };
        if let Err(e) = fsio::replace_file(&self.pointer_path, &pointer.to_json()?, "pointer") {
            // If the rename happened (only the directory fsync failed), the new pointer is
            // visible and its key must stay; when unsure, keep the key: it is only an orphan.
            let committed = match Pointer::read(&self.pointer_path) {
                Ok(Some(p)) => p.key_ref == new_ref,
                Ok(None) => false,
                Err(_) => true,
            };
            if !committed {
                self.discard(&new_ref);
            }
            return Err(e);
        }

        // 5: clean-up. The new credential is in place; failures here only leave stale keys.
        // A staged renewal key has served its purpose (its copy is the new key, or the
        // credential was replaced some other way): its file goes first, its key with the
        // garbage below.
        if let Err(e) = self.unstage() {
            tracing::warn!(error = %e, "cannot remove the staged renewal key's file");
        }
        crash_point!("unstaged");
        if let Some(prev) = previous.filter(|p| *p != new_ref)
            && let Err(e) = self.vault.delete(&prev)
        {
            tracing::warn!(key_ref = %prev, error = %e, "cannot delete the previous key");
        }
        crash_point!("previous-deleted");
        self.collect_garbage(Some(&new_ref));
        crash_point!("collected");
        Ok(())
    }

    fn probe(&self) -> Result<()> {
        fsio::ensure_private_dir(&self.dir)?;
        let _lock = StateLock::acquire(&self.dir)?;
        self.vault.prepare()?;
        let probe_ref = self.vault.new_ref()?;
        self.vault.intend(&probe_ref)?;
        let secret = Zeroizing::new(fsio::random_hex_id()?.into_bytes());
        let outcome = self.vault.put(&probe_ref, &secret).and_then(|()| {
            match self.vault.get(&probe_ref)? {
                Some(back) if back.as_slice() == secret.as_slice() => Ok(()),
                _ => Err(StoreError::ReadBackMismatch {
                    key_ref: probe_ref.clone(),
                    store_name: self.vault.kind().platform_name(),
                }),
            }
        });
        // A store that gave no answer would only make the clean-up wait as long again; the
        // name stays recorded and the next store() collects it.
        if let Err(e @ StoreError::TimedOut { .. }) = outcome {
            return Err(e);
        }
        let cleaned = self.vault.delete(&probe_ref).and_then(|()| {
            let rest: Vec<String> =
                self.vault.known_refs()?.into_iter().filter(|r| *r != probe_ref).collect();
            self.vault.forget_all_but(&rest)
        });
        outcome.and(cleaned)
    }

    fn remove(&self) -> Result<()> {
        if !fsio::check_private_dir(&self.dir)? {
            return Ok(());
        }
        let _lock = StateLock::acquire(&self.dir)?;
        // The pointer goes first: from here on, no key is current, and a crash leaves only
        // orphans, which the next store() or remove() deletes.
        let current = self.read_pointer().ok().flatten().map(|p| p.key_ref);
        fsio::remove_if_exists(&self.pointer_path)?;
        fsio::remove_if_exists(&self.staged_path)?;
        fsio::sync_dir(&self.dir)?;
        crash_point!("pointer-removed");
        let mut failures = Vec::new();
        if let Some(current) = current
            && let Err(e) = self.vault.delete(&current)
        {
            failures.push(e);
        }
        failures.extend(self.collect_garbage(None));
        match failures.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn watch_path(&self) -> PathBuf {
        self.pointer_path.clone()
    }

    fn stage(&self, key: &[u8], renews: &str) -> Result<()> {
        fsio::ensure_private_dir(&self.dir)?;
        let _lock = StateLock::acquire(&self.dir)?;
        self.vault.prepare()?;
        self.stage_locked(key, renews)
    }

    fn stage_generated(
        &self,
        renews: &str,
        generate: &mut dyn FnMut() -> Result<Zeroizing<Vec<u8>>>,
    ) -> Result<Zeroizing<Vec<u8>>> {
        fsio::ensure_private_dir(&self.dir)?;
        let _lock = StateLock::acquire(&self.dir)?;
        self.vault.prepare()?;
        let key = generate()?;
        crash_point!("generated");
        self.stage_locked(&key, renews)?;
        Ok(key)
    }

    fn staged(&self, renews: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
        if !fsio::check_private_dir(&self.dir)? {
            return Ok(None);
        }
        let Some(s) = Staged::read(&self.staged_path)? else { return Ok(None) };
        if s.renews != renews || !self.vault.is_valid_ref(&s.key_ref) {
            return Ok(None);
        }
        match self.vault.get(&s.key_ref)? {
            Some(key) if key_digest(&key) == s.key_sha256 => Ok(Some(key)),
            _ => Ok(None),
        }
    }

    fn clear_staged(&self) -> Result<()> {
        if !fsio::check_private_dir(&self.dir)? {
            return Ok(());
        }
        let _lock = StateLock::acquire(&self.dir)?;
        let current = self.read_pointer().ok().flatten().map(|p| p.key_ref);
        if let Some(r) = self.unstage()?.filter(|r| Some(r) != current.as_ref()) {
            self.discard(&r);
        }
        Ok(())
    }
}
