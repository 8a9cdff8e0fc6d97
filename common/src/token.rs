//! Enrolment token format: `lyt.<identity, base64url>.<256-bit secret, base64url>`.
//!
//! The identity travels inside the token so that a device needs one string to enrol
//! (`lanyard enrol --token ...`); the CA still binds the token to that identity by the
//! hash of the whole string, so editing the identity part makes the token unknown.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub const PREFIX: &str = "lyt.";

/// Builds a token string from an identity and 32 random bytes.
pub fn format(identity: &str, secret: &[u8; 32]) -> String {
    format!("{PREFIX}{}.{}", URL_SAFE_NO_PAD.encode(identity), URL_SAFE_NO_PAD.encode(secret))
}

/// The identity a token was made for, if the token has Lanyard's format.
pub fn identity_of(token: &str) -> Option<String> {
    let rest = token.trim().strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('.')?;
    if secret.len() < 43 {
        return None;
    }
    String::from_utf8(URL_SAFE_NO_PAD.decode(id).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips() {
        let t = format("dev-1.fleet.example.com", &[7u8; 32]);
        assert_eq!(identity_of(&t).as_deref(), Some("dev-1.fleet.example.com"));
        assert_eq!(identity_of("lyt.zzz"), None);
        assert_eq!(identity_of("nope"), None);
    }
}
