//! Enrolment tokens: 256 random bits, shown once, stored as SHA-256.
//!
//! Tokens are high-entropy, so a plain SHA-256 (no slow KDF) is enough to make a stolen
//! database useless for enrolment.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const PREFIX: &str = "lyt_";

/// A token secret. `Debug` and `Display` never print it; [`TokenSecret::expose`] does,
/// for the one place that must show it (the `token create` output).
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecret(zeroize::Zeroizing<String>);

impl std::fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSecret(...)")
    }
}

impl TokenSecret {
    pub fn generate() -> Self {
        let mut b = [0u8; 32];
        rand::fill(&mut b);
        TokenSecret(zeroize::Zeroizing::new(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(b))))
    }

    pub fn from_presented(s: &str) -> Self {
        TokenSecret(zeroize::Zeroizing::new(s.trim().to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The stored form: hex SHA-256 of the token string.
    pub fn hash(&self) -> String {
        hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, self.0.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_hidden() {
        let a = TokenSecret::generate();
        let b = TokenSecret::generate();
        assert_ne!(a, b);
        assert!(a.expose().starts_with(PREFIX));
        assert_eq!(format!("{a:?}"), "TokenSecret(...)");
        assert_eq!(a.hash(), TokenSecret::from_presented(&format!(" {} ", a.expose())).hash());
        assert_ne!(a.hash(), b.hash());
    }
}
