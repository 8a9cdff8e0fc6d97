//! Where the Lanyard agent keeps its credential: the device's private key (PKCS#8 DER,
//! opaque bytes here) and the certificate chain the CA issued for it.
//!
//! This crate owns one promise: **replacing a credential is crash-safe.** The old key and
//! chain stay loadable until the new key is stored and read back and the new chain is
//! written; a crash (SIGKILL, power cut) at any point leaves exactly one complete,
//! matching pair that [`CredentialStore::load`] returns. It does no cryptography beyond
//! the key's SHA-256 in the pointer file, and by default nothing that compiles C (the pure
//! Rust `sha2`; the agent's `aws-lc` feature takes aws-lc-rs's SHA-256 instead, the one it
//! links anyway), so it is `cargo check`ed for macOS and Windows from Linux, and it never
//! prints, logs or puts a key into an error.
//!
//! # Layout
//!
//! - [`credential`]: [`Credential`], the key and chain pair, whose `Debug` hides the key.
//! - [`kind`]: [`StoreKind`], the `file` / `keyring` / `kernel-keyring` config names.
//! - [`error`]: [`StoreError`], each variant with the path or keyring entry and what to do,
//!   and whether retrying can help ([`StoreError::is_transient`]).
//! - [`swap`]: the one store/load/remove flow shared by every backend, around a single
//!   commit point: the atomic replacement of the pointer file `credential.json`.
//! - [`pointer`]: the on-disk formats of `credential.json` and `pending.json`.
//! - [`file_store`]: keys as `keys/<random-id>.key` files (0600) in the state dir (0700).
//! - [`hardware_store`]: `tpm` and `pkcs11`: key handles as files, keys in the hardware,
//!   destroyed through the agent's [`HardwareKeys`].
//! - [`keyring_store`]: keys as OS keystore entries (service `lanyard`, user
//!   `<profile>/<random-id>`): Secret Service, macOS Keychain, Windows Credential Manager,
//!   Linux kernel keyring.
//! - [`fsio`]: private files and directories, fsync, atomic replace, the state lock.
//! - `clock`: the one place this crate reads the wall clock (for `stored_at`, which is
//!   informational: no decision depends on it).
//!
//! On disk, for a state dir `S` (one per profile):
//!
//! ```text
//! S/                    0700  refused if group or others have any access
//!   credential.json     0600  the pointer: {"version":1,"key_ref","key_sha256","chain_pem","stored_at"}
//!   lock                0600  advisory lock held by store() and remove()
//!   keys/               0700  file store only
//!     <32 hex>.key      0600  PKCS#8 DER, a fresh name for every generation
//!   pending.json        0600  keyring stores only: entries that may exist in the keyring
//! ```
//!
//! # Which store, and why
//!
//! - **`file`** is the default for system services and headless devices. A system service
//!   has no Secret Service (there is no user session bus) and usually no unlocked user
//!   keychain; file permissions (0600 key in a 0700 directory, checked on every use) are the
//!   protection, as for sshd's host keys.
//! - **`keyring`** is the default for desktop users: Secret Service (GNOME Keyring, KWallet)
//!   on Linux, the login Keychain on macOS, Credential Manager on Windows. The key is
//!   encrypted at rest by the user's login and other users' processes cannot read it.
//! - **`kernel-keyring`** (Linux keyutils) keeps the key in kernel memory only: it **does not
//!   survive a reboot**, and the per-user persistent keyring expires after
//!   `/proc/sys/kernel/keys/persistent_keyring_expiry` seconds without use (3 days by
//!   default). After either, [`CredentialStore::load`] reports the key missing and the
//!   device must enrol again. Use it where that is what you want (a key that must not reach
//!   disk) and a fresh enrolment after boot is possible.
//!
//! [`StoreKind::default_for`] encodes this choice.

#![forbid(unsafe_code)]

#[macro_use]
mod failpoint;

mod clock;
pub mod credential;
pub mod error;
pub mod file_store;
pub mod fsio;
pub mod hardware_store;
pub mod keyring_store;
pub mod kind;
pub mod pointer;
pub mod swap;

#[cfg(test)]
mod tests;

pub use credential::Credential;
pub use error::StoreError;
pub use hardware_store::{HardwareFailure, HardwareKeys};
pub use kind::{ParseStoreKindError, StoreKind};
pub use swap::{CredentialStore, open, open_hardware};
