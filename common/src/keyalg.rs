//! Key algorithms Lanyard will generate, accept in a CSR, or use for a CA.
//!
//! The list is CloudFront's: RSA 2048/3072/4096 and ECDSA P-256/P-384. P-521, Ed25519 and
//! RSA below 2048 are refused by CloudFront's trust store, so Lanyard never offers them.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A key algorithm by its CLI and config name (`ecdsa-p256`, `rsa-3072`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum KeyAlgorithm {
    EcdsaP256,
    EcdsaP384,
    Rsa2048,
    Rsa3072,
    Rsa4096,
}

impl KeyAlgorithm {
    pub const ALL: [KeyAlgorithm; 5] = [
        KeyAlgorithm::EcdsaP256,
        KeyAlgorithm::EcdsaP384,
        KeyAlgorithm::Rsa2048,
        KeyAlgorithm::Rsa3072,
        KeyAlgorithm::Rsa4096,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
            KeyAlgorithm::EcdsaP384 => "ecdsa-p384",
            KeyAlgorithm::Rsa2048 => "rsa-2048",
            KeyAlgorithm::Rsa3072 => "rsa-3072",
            KeyAlgorithm::Rsa4096 => "rsa-4096",
        }
    }

    /// RSA modulus size in bits, or `None` for ECDSA.
    pub fn rsa_bits(self) -> Option<usize> {
        match self {
            KeyAlgorithm::Rsa2048 => Some(2048),
            KeyAlgorithm::Rsa3072 => Some(3072),
            KeyAlgorithm::Rsa4096 => Some(4096),
            _ => None,
        }
    }

    /// The list of allowed names, for error messages.
    pub fn allowed_names() -> String {
        Self::ALL.map(Self::name).join(" | ")
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of [`KeyAlgorithm::ALL`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown key algorithm {given:?}: allowed are {}", KeyAlgorithm::allowed_names())]
pub struct UnknownKeyAlgorithm {
    pub given: String,
}

impl FromStr for KeyAlgorithm {
    type Err = UnknownKeyAlgorithm;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownKeyAlgorithm { given: s.to_owned() })
    }
}

impl TryFrom<String> for KeyAlgorithm {
    type Error = UnknownKeyAlgorithm;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<KeyAlgorithm> for String {
    fn from(a: KeyAlgorithm) -> String {
        a.name().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in KeyAlgorithm::ALL {
            assert_eq!(a.name().parse::<KeyAlgorithm>(), Ok(a));
        }
    }

    #[test]
    fn refuses_what_cloudfront_refuses() {
        for bad in ["ecdsa-p521", "ed25519", "rsa-1024", "ml-dsa-65", ""] {
            let err = bad.parse::<KeyAlgorithm>().unwrap_err();
            assert!(err.to_string().contains("allowed are ecdsa-p256"), "{err}");
        }
    }
}
