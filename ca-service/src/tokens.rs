//! Enrolment tokens: 256 random bits, shown once, stored as SHA-256.
//!
//! Tokens are high-entropy, so a plain SHA-256 (no slow KDF) is enough to make a stolen
//! database useless for enrolment.

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
    /// A new token for `identity` (see `lanyard_proto::token` for the format).
    pub fn generate(identity: &str) -> Self {
        let mut b = zeroize::Zeroizing::new([0u8; 32]);
        rand::fill(&mut *b);
        TokenSecret(zeroize::Zeroizing::new(lanyard_proto::token::format(identity, &b)))
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
        let a = TokenSecret::generate("dev-1");
        let b = TokenSecret::generate("dev-1");
        assert_ne!(a, b);
        assert_eq!(lanyard_proto::token::identity_of(a.expose()).as_deref(), Some("dev-1"));
        assert_eq!(format!("{a:?}"), "TokenSecret(...)");
        assert_eq!(a.hash(), TokenSecret::from_presented(&format!(" {} ", a.expose())).hash());
        assert_ne!(a.hash(), b.hash());
    }
}
