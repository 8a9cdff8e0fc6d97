//! Every way the store can fail, each with the file or keyring entry involved and what to
//! do about it. No variant carries key bytes: keyring errors are reduced to a message
//! before they get here (some of them hold the raw secret).

use crate::kind::StoreKind;
use std::io;
use std::path::PathBuf;

/// A credential store failure.
///
/// [`StoreError::is_transient`] says whether the same call may succeed later (keyring
/// locked, D-Bus not up yet, disk full) or needs a person (bad permissions, corrupt or
/// missing credential: re-enrol).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done: "create", "write", "fsync", "rename", "read", ...
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A file or directory that holds or guards a key is open to others, or is not what it
    /// should be (a symlink, a directory where a file belongs). Nothing is read from it.
    #[error("refusing to use {path}: {problem}; {fix}")]
    Insecure { path: PathBuf, problem: String, fix: String },

    /// `credential.json` cannot be parsed or names an impossible key reference.
    #[error(
        "credential pointer {path} is corrupt ({reason}); the stored credential cannot be \
         used: remove {path} and enrol again"
    )]
    CorruptPointer { path: PathBuf, reason: String },

    /// `credential.json` was written by a newer Lanyard.
    #[error(
        "credential pointer {path} has format version {version}, newer than this Lanyard \
         understands (1); upgrade Lanyard, or remove {path} and enrol again"
    )]
    UnsupportedVersion { path: PathBuf, version: u64 },

    /// The pointer names a key that is not in the store.
    #[error(
        "the key {key_ref:?} named by {pointer} is missing from the {store_name}{why}; \
         the certificate cannot be used without it: enrol again"
    )]
    KeyMissing {
        pointer: PathBuf,
        key_ref: String,
        store: StoreKind,
        /// `store.platform_name()`, kept for the message.
        store_name: &'static str,
        /// A likely cause, e.g. " (the kernel keyring is emptied on reboot)".
        why: &'static str,
    },

    /// The key in the store is not the one the pointer was written for (its SHA-256
    /// differs): the key was altered or replaced behind the store's back.
    #[error(
        "the key {key_ref:?} in the {store_name} does not match the digest recorded in \
         {pointer}: it was changed outside Lanyard; enrol again"
    )]
    KeyMismatch { pointer: PathBuf, key_ref: String, store_name: &'static str },

    /// A new key was written but reading it back gave other bytes. The previous credential
    /// is still in place.
    #[error(
        "the {store_name} returned different bytes for the key {key_ref:?} than were just \
         written; the previous credential is kept"
    )]
    ReadBackMismatch { key_ref: String, store_name: &'static str },

    /// An OS keystore operation failed.
    #[error("{store_name}: {op} entry {entry:?} failed: {reason}{hint}")]
    Keyring {
        store: StoreKind,
        store_name: &'static str,
        /// "store", "read", "delete", "connect".
        op: &'static str,
        /// The entry, as `service=lanyard user=<profile>/<id>`.
        entry: String,
        /// The keystore's message (never the secret).
        reason: String,
        /// Advice for this kind of failure, starting with "; " (or empty).
        hint: &'static str,
        transient: bool,
    },

    /// An OS keystore call gave no answer within its deadline (a locked keyring waiting on
    /// a prompt, a hung daemon or bus). The call was abandoned.
    #[error("{store_name}: {op} entry {entry:?}: no answer after {}s{hint}", after.as_secs())]
    TimedOut {
        store: StoreKind,
        store_name: &'static str,
        /// "store", "read", "delete", "connect for".
        op: &'static str,
        entry: String,
        after: std::time::Duration,
        /// Advice, starting with "; ".
        hint: &'static str,
    },

    /// This store kind does not exist on this operating system.
    #[error("the {kind} credential store is not available on {os}; use \"file\"{alternative}")]
    Unsupported { kind: StoreKind, os: &'static str, alternative: &'static str },

    /// The profile name cannot be used in a keyring entry name.
    #[error(
        "invalid profile name {profile:?}: use 1 to 64 characters from A-Z a-z 0-9 . _ - \
         (not starting with '.')"
    )]
    InvalidProfile { profile: String },

    /// The credential handed to `store()` is not storable (empty key or chain, not DER).
    #[error("refusing to store the credential: {reason}")]
    InvalidCredential { reason: String },

    /// A TPM or PKCS#11 token refused or did not answer (destroying a key, finding the
    /// keys a crash left).
    #[error("{store_name}: {op}: {reason}")]
    Hardware {
        store: StoreKind,
        store_name: &'static str,
        /// "destroy a key", "list keys".
        op: &'static str,
        /// The backend's message (names the device and what to do; never a PIN).
        reason: String,
        transient: bool,
    },

    /// The operating system gave no randomness for a fresh key name.
    #[error("no randomness for a new key name: {reason}")]
    Entropy { reason: String },
}

impl StoreError {
    /// True if the same call may succeed later without anyone changing anything: a locked
    /// or not-yet-running keyring service, D-Bus unavailable, a full disk, an interrupted
    /// call. False if a person must act (permissions, corrupt or missing credential,
    /// unsupported configuration).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::Interrupted
                    | io::ErrorKind::WouldBlock
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::StorageFull
                    | io::ErrorKind::QuotaExceeded
                    | io::ErrorKind::ResourceBusy
            ),
            StoreError::Keyring { transient, .. } | StoreError::Hardware { transient, .. } => {
                *transient
            }
            StoreError::TimedOut { .. } | StoreError::Entropy { .. } => true,
            StoreError::Insecure { .. }
            | StoreError::CorruptPointer { .. }
            | StoreError::UnsupportedVersion { .. }
            | StoreError::KeyMissing { .. }
            | StoreError::KeyMismatch { .. }
            | StoreError::ReadBackMismatch { .. }
            | StoreError::Unsupported { .. }
            | StoreError::InvalidProfile { .. }
            | StoreError::InvalidCredential { .. } => false,
        }
    }

    /// True if the stored credential is unusable and only a new enrolment fixes it.
    pub fn needs_reenrolment(&self) -> bool {
        matches!(
            self,
            StoreError::CorruptPointer { .. }
                | StoreError::KeyMissing { .. }
                | StoreError::KeyMismatch { .. }
        )
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| StoreError::Io { op, path, source }
    }
}
