//! OS keystores, through `keyring-core` and its store crates: each key generation is one
//! entry with service `lanyard` and user `<profile>/<32 hex>`, holding the PKCS#8 bytes.
//!
//! | kind             | Linux                         | macOS                 | Windows                    |
//! |------------------|-------------------------------|-----------------------|----------------------------|
//! | `keyring`        | Secret Service (D-Bus)        | login Keychain        | Credential Manager (Local) |
//! | `kernel-keyring` | keyutils (session+persistent) | -                     | -                          |
//!
//! The chain and the pointer stay in the state directory (they are public); `pending.json`
//! there lists the entries that may exist, because keyrings cannot be listed portably.
//!
//! Notes per keystore:
//! - Secret Service: needs the user's session bus and an unlocked collection, so it is for
//!   desktop sessions; a system service has neither. Items go to the default collection,
//!   labelled `Lanyard device key <user>`; attributes `service` and `username`.
//! - Kernel keyring: the key is linked into the session keyring and the user's persistent
//!   keyring. Nothing survives a reboot, and the persistent keyring expires after
//!   `/proc/sys/kernel/keys/persistent_keyring_expiry` seconds without use (3 days by
//!   default). A process needs a session keyring (systemd services get a private one; in a
//!   shell, `keyctl session -`).
//! - Windows: entries use `Local` persistence, so a device key does not roam to other
//!   machines with an Enterprise roaming profile. Credential Manager holds at most 2560
//!   bytes per entry: enough for EC and RSA-4096 PKCS#8 keys, not more.
//!
//! Connections are made on first use and dropped after a transient failure, so a keyring
//! daemon that starts after the agent, or restarts, is picked up on the next call.
//!
//! Every call into a keystore (connect, store, read, delete) runs on its own thread and is
//! given [`CALL_TIMEOUT`]: a Secret Service that waits on a password prompt nobody can
//! answer, or a bus that accepts a connection and never replies, becomes a
//! [`StoreError::TimedOut`] that names the store and the fix, not a hang. A call that
//! timed out is abandoned (its thread ends whenever the keystore answers, if ever).

use crate::error::StoreError;
use crate::fsio;
use crate::kind::StoreKind;
use crate::pointer::Pending;
use crate::swap::KeyVault;
use keyring_core::Entry;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use zeroize::Zeroizing;

type Result<T> = std::result::Result<T, StoreError>;

/// The keyring service name of every Lanyard entry.
pub const SERVICE: &str = "lanyard";

/// The name of the pending-entries file in the state directory.
pub const PENDING_FILE: &str = "pending.json";

/// How long one keystore call may take. Secret Service answers in milliseconds when it
/// works; a call still waiting after this is waiting for something that will not come
/// (an unanswerable unlock prompt, a hung daemon).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why [`with_deadline`] has no answer.
#[derive(Debug)]
pub enum Deadline {
    /// The call did not return in time; it is left running on its own thread.
    TimedOut,
    /// No thread could be started for the call.
    NoThread(std::io::Error),
}

/// Runs `f` on a new thread and waits at most `timeout` for its result. A call that
/// blocks forever costs one parked thread, not the caller.
pub fn with_deadline<T: Send + 'static>(
    timeout: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::result::Result<T, Deadline> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("lanyard-keystore".into())
        .spawn(move || {
            // The receiver is gone when the caller gave up: nothing left to do.
            let _ = tx.send(f());
        })
        .map_err(Deadline::NoThread)?;
    rx.recv_timeout(timeout).map_err(|_| Deadline::TimedOut)
}

/// Keys in an OS keystore.
pub struct KeyringVault {
    kind: StoreKind,
    profile: String,
    pending_path: PathBuf,
    backend: Mutex<Option<Arc<keyring_core::CredentialStore>>>,
    /// The limit of every keystore call ([`CALL_TIMEOUT`] unless a test sets it).
    timeout: Duration,
}

impl std::fmt::Debug for KeyringVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyringVault")
            .field("kind", &self.kind)
            .field("profile", &self.profile)
            .field("pending_path", &self.pending_path)
            .finish_non_exhaustive()
    }
}

/// Whether `kind` is a keyring this build of the crate can use.
pub const fn is_supported(kind: StoreKind) -> bool {
    match kind {
        StoreKind::File => true,
        StoreKind::Keyring => cfg!(any(target_os = "linux", target_os = "macos", windows)),
        StoreKind::KernelKeyring => cfg!(target_os = "linux"),
        // The agent's `tpm` and `pkcs11` features decide these; they are not keyrings.
        StoreKind::Tpm | StoreKind::Pkcs11 => false,
    }
}

impl KeyringVault {
    /// The `kind` keyring for `profile`, with `pending.json` in `state_dir`. Does not
    /// connect yet.
    pub fn new(kind: StoreKind, state_dir: &Path, profile: &str) -> Result<Self> {
        if matches!(kind, StoreKind::File | StoreKind::Tpm | StoreKind::Pkcs11)
            || !is_supported(kind)
        {
            return Err(StoreError::Unsupported {
                kind,
                os: std::env::consts::OS,
                alternative: if is_supported(StoreKind::Keyring) { " or \"keyring\"" } else { "" },
            });
        }
        Ok(KeyringVault {
            kind,
            profile: profile.to_string(),
            pending_path: state_dir.join(PENDING_FILE),
            backend: Mutex::new(None),
            timeout: CALL_TIMEOUT,
        })
    }

    /// The same vault with another limit per keystore call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn backend(&self, key_ref: &str) -> Result<Arc<keyring_core::CredentialStore>> {
        let mut guard = self.backend.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(store) = guard.as_ref() {
            return Ok(store.clone());
        }
        let kind = self.kind;
        let connected = with_deadline(self.timeout, move || connect(kind));
        if let Ok(Ok(store)) = &connected {
            *guard = Some(store.clone());
        }
        // `error` and `no_answer` take the lock to drop a broken connection: release it.
        drop(guard);
        match connected {
            Ok(Ok(store)) => Ok(store),
            Ok(Err(e)) => Err(self.error("connect for", key_ref, e)),
            Err(d) => Err(self.no_answer("connect for", key_ref, d)),
        }
    }

    /// One keystore call on the entry `key_ref`, within the deadline.
    fn call<T: Send + 'static>(
        &self,
        op: &'static str,
        key_ref: &str,
        f: impl FnOnce(&Entry) -> keyring_core::Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.backend(key_ref)?;
        let kind = self.kind;
        let user = key_ref.to_string();
        let outcome = with_deadline(self.timeout, move || {
            let label = format!("Lanyard device key {user}");
            let mut modifiers: HashMap<&str, &str> = HashMap::new();
            if cfg!(target_os = "linux") && kind == StoreKind::Keyring {
                modifiers.insert("label", &label);
            }
            if cfg!(windows) {
                modifiers.insert("persistence", "Local");
            }
            let entry = Entry::new_in_store_with_modifiers(&store, SERVICE, &user, &modifiers)?;
            f(&entry)
        });
        match outcome {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.error(op, key_ref, e)),
            Err(d) => Err(self.no_answer(op, key_ref, d)),
        }
    }

    /// A call that gave no answer: the connection is dropped, so that the next call
    /// starts afresh instead of queueing behind the stuck one.
    fn no_answer(&self, op: &'static str, key_ref: &str, d: Deadline) -> StoreError {
        let mut guard = self.backend.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *guard = None;
        drop(guard);
        let entry = format!("service={SERVICE} user={key_ref}");
        match d {
            Deadline::TimedOut => StoreError::TimedOut {
                store: self.kind,
                store_name: self.kind.platform_name(),
                op,
                entry,
                after: self.timeout,
                hint: match self.kind {
                    StoreKind::Keyring if cfg!(target_os = "linux") => {
                        "; the keyring may be locked and waiting for a password prompt that \
                         nobody can answer, or its daemon is stuck: unlock the keyring (log in \
                         to the desktop session), or use the file store (--store file, or \
                         [store] backend = \"file\")"
                    }
                    _ => "; use the file store (--store file, or [store] backend = \"file\")",
                },
            },
            Deadline::NoThread(e) => StoreError::Keyring {
                store: self.kind,
                store_name: self.kind.platform_name(),
                op,
                entry,
                reason: format!("cannot start a thread for the call: {e}"),
                hint: "",
                transient: true,
            },
        }
    }

    /// A keyring error as a [`StoreError`], without the data some variants carry; a
    /// transient one also drops the connection so the next call reconnects.
    fn error(&self, op: &'static str, key_ref: &str, e: keyring_core::Error) -> StoreError {
        use keyring_core::Error as K;
        let ipc = self.kind == StoreKind::Keyring;
        let (reason, transient, hint) = match &e {
            K::NoStorageAccess(err) => (
                format!("no access to the keystore: {err}"),
                ipc,
                if ipc {
                    "; unlock the keyring, or use the file store (--store file, or [store] \
                     backend = \"file\"; a system service has no user keyring)"
                } else {
                    "; the process has no session keyring (systemd services get one; in a shell \
                     run under `keyctl session -`), or use the file store (--store file)"
                },
            ),
            K::PlatformFailure(err) => (
                err.to_string(),
                ipc,
                if ipc && cfg!(target_os = "linux") {
                    "; is a Secret Service (gnome-keyring, KWallet) running on this user's session \
                     D-Bus (DBUS_SESSION_BUS_ADDRESS)? Start a session bus and unlock the keyring \
                     (a desktop login does both), or use the file store (--store file, or \
                     [store] backend = \"file\"); a system service has no session bus"
                } else {
                    "; use the file store (--store file)"
                },
            ),
            K::NoEntry => ("no such entry".to_string(), false, ""),
            K::BadEncoding(_) => ("the entry is not valid UTF-8".to_string(), false, ""),
            K::BadDataFormat(_, err) => (format!("the entry is malformed: {err}"), false, ""),
            K::BadStoreFormat(reason) => {
                (format!("the keystore is malformed: {reason}"), false, "")
            }
            K::TooLong(what, limit) => (
                format!("{what} is longer than the keystore's limit of {limit}"),
                false,
                "; use an EC key, or the file store",
            ),
            K::Invalid(what, reason) => (format!("{what} is invalid: {reason}"), false, ""),
            K::Ambiguous(matches) => (
                format!("{} entries have this name; delete the duplicates", matches.len()),
                false,
                "",
            ),
            K::NoDefaultStore => {
                ("no keystore configured".to_string(), false, "; use the file store (--store file)")
            }
            K::NotSupportedByStore(what) => {
                (format!("not supported: {what}"), false, "; use the file store (--store file)")
            }
            _ => ("keystore error".to_string(), false, ""),
        };
        if transient {
            let mut guard = self.backend.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            *guard = None;
        }
        StoreError::Keyring {
            store: self.kind,
            store_name: self.kind.platform_name(),
            op,
            entry: format!("service={SERVICE} user={key_ref}"),
            reason,
            hint,
            transient,
        }
    }

    fn read_pending(&self) -> Pending {
        match Pending::read(&self.pending_path) {
            Ok(p) => p,
            Err(e) => {
                // Losing track of orphans leaves stale entries; refusing to store would stop
                // renewals. The current entry is still named by the pointer.
                tracing::warn!(error = %e, "starting a new list of pending keyring entries");
                Pending { version: 1, refs: Vec::new() }
            }
        }
    }
}

/// The platform's keystore for `kind`.
fn connect(kind: StoreKind) -> keyring_core::Result<Arc<keyring_core::CredentialStore>> {
    let store: Arc<keyring_core::CredentialStore> = match kind {
        #[cfg(all(target_os = "linux", feature = "secret-service"))]
        StoreKind::Keyring => zbus_secret_service_keyring_store::Store::new()?,
        #[cfg(all(target_os = "linux", not(feature = "secret-service")))]
        StoreKind::Keyring => {
            return Err(keyring_core::Error::NotSupportedByStore(
                "Secret Service in this build (the device build leaves it out): use the file or kernel-keyring store".into(),
            ));
        }
        #[cfg(target_os = "linux")]
        StoreKind::KernelKeyring => linux_keyutils_keyring_store::Store::new()?,
        #[cfg(target_os = "macos")]
        StoreKind::Keyring => apple_native_keyring_store::keychain::Store::new()?,
        #[cfg(windows)]
        StoreKind::Keyring => windows_native_keyring_store::Store::new()?,
        #[allow(unreachable_patterns)] // every kind is matched above on Linux
        other => {
            return Err(keyring_core::Error::NotSupportedByStore(format!(
                "{other} on {}",
                std::env::consts::OS
            )));
        }
    };
    Ok(store)
}

impl KeyVault for KeyringVault {
    fn kind(&self) -> StoreKind {
        self.kind
    }

    fn describe(&self) -> String {
        format!(
            "{}: entries service={SERVICE} user={}/<id>",
            self.kind.platform_name(),
            self.profile
        )
    }

    fn prepare(&self) -> Result<()> {
        Ok(())
    }

    fn new_ref(&self) -> Result<String> {
        Ok(format!("{}/{}", self.profile, fsio::random_hex_id()?))
    }

    fn is_valid_ref(&self, key_ref: &str) -> bool {
        key_ref
            .strip_prefix(self.profile.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .is_some_and(fsio::is_hex_id)
    }

    fn intend(&self, key_ref: &str) -> Result<()> {
        let mut pending = self.read_pending();
        if !pending.refs.iter().any(|r| r == key_ref) {
            pending.refs.push(key_ref.to_string());
        }
        pending.write(&self.pending_path)
    }

    fn put(&self, key_ref: &str, key: &[u8]) -> Result<()> {
        let key = Zeroizing::new(key.to_vec());
        self.call("store", key_ref, move |entry| entry.set_secret(&key))
    }

    fn get(&self, key_ref: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
        self.call("read", key_ref, |entry| match entry.get_secret() {
            Ok(secret) => Ok(Some(Zeroizing::new(secret))),
            Err(keyring_core::Error::NoEntry) => Ok(None),
            Err(e) => Err(e),
        })
    }

    fn delete(&self, key_ref: &str) -> Result<()> {
        self.call("delete", key_ref, |entry| match entry.delete_credential() {
            Ok(()) | Err(keyring_core::Error::NoEntry) => Ok(()),
            Err(e) => Err(e),
        })
    }

    fn known_refs(&self) -> Result<Vec<String>> {
        let pending = Pending::read(&self.pending_path)?;
        Ok(pending.refs.into_iter().filter(|r| self.is_valid_ref(r)).collect())
    }

    fn forget_all_but(&self, keep: &[String]) -> Result<()> {
        let pending = Pending { version: 1, refs: keep.to_vec() };
        if self.read_pending() == pending {
            return Ok(());
        }
        pending.write(&self.pending_path)
    }

    fn missing_key_hint(&self) -> &'static str {
        match self.kind {
            StoreKind::KernelKeyring => {
                " (the kernel keyring is emptied on reboot, and its persistent keyring expires \
                 after days without use)"
            }
            _ => " (the entry was deleted from the keyring, or this is another user's keyring)",
        }
    }
}
