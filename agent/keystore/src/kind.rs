//! Which backend holds the key, by its configuration name.

use std::fmt;
use std::str::FromStr;

/// The backend that holds the private key. The chain and the pointer to the current key
/// always live in the state directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreKind {
    /// `file`: `keys/<id>.key`, 0600, in the 0700 state directory.
    File,
    /// `keyring`: the user's OS keystore: Secret Service on Linux, the login Keychain on
    /// macOS, Credential Manager on Windows.
    Keyring,
    /// `kernel-keyring`: the Linux kernel keyring (keyutils). Lost on reboot.
    KernelKeyring,
    /// `tpm`: a key generated inside a TPM 2.0 that never leaves it; the state directory
    /// keeps its TPM-wrapped handle.
    Tpm,
    /// `pkcs11`: a key generated on a PKCS#11 token (HSM, smart card, YubiKey) as
    /// non-extractable; the state directory keeps the object's id.
    Pkcs11,
}

impl StoreKind {
    /// Every kind, in the order the error message lists them.
    pub const ALL: [StoreKind; 5] = [
        StoreKind::File,
        StoreKind::Keyring,
        StoreKind::KernelKeyring,
        StoreKind::Tpm,
        StoreKind::Pkcs11,
    ];

    /// The name used in configuration files and on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            StoreKind::File => "file",
            StoreKind::Keyring => "keyring",
            StoreKind::KernelKeyring => "kernel-keyring",
            StoreKind::Tpm => "tpm",
            StoreKind::Pkcs11 => "pkcs11",
        }
    }

    /// Whether the key lives in hardware (and the store keeps only its handle).
    pub const fn is_hardware(self) -> bool {
        matches!(self, StoreKind::Tpm | StoreKind::Pkcs11)
    }

    /// The default store: `file` for a system service (no user session, so no Secret
    /// Service and no unlocked keychain), `keyring` for a desktop user. The kernel keyring
    /// is never a default: it is emptied on reboot.
    pub const fn default_for(system_service: bool) -> StoreKind {
        if system_service { StoreKind::File } else { StoreKind::Keyring }
    }

    /// What this kind is on the platform the crate was built for, for messages.
    pub const fn platform_name(self) -> &'static str {
        match self {
            StoreKind::File => "file store",
            StoreKind::Keyring => {
                if cfg!(target_os = "macos") {
                    "macOS Keychain"
                } else if cfg!(windows) {
                    "Windows Credential Manager"
                } else {
                    "Secret Service"
                }
            }
            StoreKind::KernelKeyring => "kernel keyring",
            StoreKind::Tpm => "TPM 2.0",
            StoreKind::Pkcs11 => "PKCS#11 token",
        }
    }
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown store name; the message lists the allowed ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown credential store {given:?}: expected one of \"file\", \"keyring\", \"kernel-keyring\", \"tpm\", \"pkcs11\""
)]
pub struct ParseStoreKindError {
    /// What was given.
    pub given: String,
}

impl FromStr for StoreKind {
    type Err = ParseStoreKindError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StoreKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| ParseStoreKindError { given: s.to_string() })
    }
}

impl serde::Serialize for StoreKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for StoreKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
