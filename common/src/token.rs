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

/// Length of the secret part: 32 bytes in unpadded base64url.
pub const SECRET_CHARS: usize = 43;

/// What is wrong with a string that starts like a Lanyard token but is not one. The
/// messages never repeat the token (it is a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("it does not start with \"lyt.\"")]
    NotLanyard,
    #[error("it has no secret part after the identity (expected lyt.<identity>.<secret>)")]
    NoSecret,
    #[error("its secret part has {got} characters instead of {SECRET_CHARS}")]
    SecretLength { got: usize },
    #[error("its secret part holds characters other than A-Z a-z 0-9 - _")]
    SecretCharacters,
    #[error("its identity part is not base64url-encoded UTF-8")]
    Identity,
}

/// The identity a well-formed token was made for, or what is wrong with it.
pub fn parse_identity(token: &str) -> Result<String, Malformed> {
    let rest = token.trim().strip_prefix(PREFIX).ok_or(Malformed::NotLanyard)?;
    let (id, secret) = rest.rsplit_once('.').ok_or(Malformed::NoSecret)?;
    if secret.len() != SECRET_CHARS {
        return Err(Malformed::SecretLength { got: secret.len() });
    }
    if !secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(Malformed::SecretCharacters);
    }
    let id = URL_SAFE_NO_PAD.decode(id).map_err(|_| Malformed::Identity)?;
    match String::from_utf8(id) {
        Ok(id) if !id.is_empty() => Ok(id),
        _ => Err(Malformed::Identity),
    }
}

/// The identity a token was made for, if the token has Lanyard's format.
pub fn identity_of(token: &str) -> Option<String> {
    parse_identity(token).ok()
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

    #[test]
    fn a_cut_off_token_is_malformed_and_says_how() {
        let t = format("dev-1.fleet.example.com", &[7u8; 32]);
        assert_eq!(parse_identity(&t).as_deref(), Ok("dev-1.fleet.example.com"));
        assert_eq!(parse_identity(&t[..t.len() - 5]), Err(Malformed::SecretLength { got: 38 }));
        let head = &t[..t.rfind('.').unwrap_or(0)];
        assert_eq!(parse_identity(head), Err(Malformed::NoSecret));
        assert!(matches!(
            parse_identity(&format!("{head}.")),
            Err(Malformed::SecretLength { got: 0 })
        ));
        assert_eq!(parse_identity("lyt.ZGV2"), Err(Malformed::NoSecret));
        assert_eq!(parse_identity("abc.def"), Err(Malformed::NotLanyard));
        let bad_id = format!("lyt.%%%.{}", "A".repeat(SECRET_CHARS));
        assert_eq!(parse_identity(&bad_id), Err(Malformed::Identity));
        let bad_secret = format!("lyt.ZGV2.{}", "*".repeat(SECRET_CHARS));
        assert_eq!(parse_identity(&bad_secret), Err(Malformed::SecretCharacters));
        for e in [Malformed::SecretLength { got: 3 }, Malformed::Identity] {
            assert!(!e.to_string().contains(&t[t.len() - 10..]), "no secret in {e}");
        }
    }
}
