//! Admin sign-in for the console: bearer tokens made by `lanyard-ca admin token`.
//!
//! A token names its admin and its expiry and is signed with HMAC-SHA256 under a key kept
//! in the CA directory (`admin.key`, 0600, made on first use). Nothing is stored per token:
//! the key verifies them all, and replacing the key (`admin token --rotate-key`) signs every
//! admin out. Format: `lya1.<name, base64url>.<expiry, unix seconds>.<mac, base64url>`.
//! CSRF tokens of the console's forms are derived from the session's token under the same
//! key, so a page from another origin can neither read nor forge one.

use crate::error::{CaError, Result};
use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use std::path::Path;
use time::OffsetDateTime;

const PREFIX: &str = "lya1";
/// The admin key's file in the CA directory.
pub const KEY_FILE: &str = "admin.key";
/// Longest admin name: it is shown in the console and written to the audit trail.
const MAX_NAME: usize = 64;

/// The key that signs admin tokens. `Debug` never prints it.
pub struct AdminKey(hmac::Key);

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminKey(...)")
    }
}

/// A signed-in admin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admin {
    pub name: String,
    pub expires_at: OffsetDateTime,
}

impl Admin {
    /// How the audit trail names this admin.
    pub fn actor(&self) -> String {
        format!("admin:{}", self.name)
    }
}

/// Checks an admin's name: letters, digits and `.-_@`, at most 64 characters.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(CaError::BadRequest(format!(
            "admin name {name:?}: use 1 to {MAX_NAME} letters, digits and . _ - @"
        )))
    }
}

impl AdminKey {
    pub fn from_bytes(bytes: &[u8]) -> Self {
        AdminKey(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    /// Reads `path`, or makes a new random key there (0600) when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self> {
        match std::fs::read(path) {
            Ok(b) if b.len() >= 32 => Ok(Self::from_bytes(&b)),
            Ok(_) => Err(CaError::Config(format!(
                "{} is shorter than 32 bytes: remove it to make a new admin key (signs every admin out)",
                path.display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(path),
            Err(e) => {
                Err(CaError::Io { context: format!("reading {}", path.display()), source: e })
            }
        }
    }

    /// Makes a new random key at `path`, replacing any (every token it signed stops working).
    pub fn create(path: &Path) -> Result<Self> {
        let mut b = zeroize::Zeroizing::new([0u8; 32]);
        rand::fill(&mut *b);
        crate::fsutil::write_atomic(path, &*b, 0o600)?;
        Ok(Self::from_bytes(&*b))
    }

    fn mac(&self, data: &str) -> String {
        B64.encode(hmac::sign(&self.0, data.as_bytes()).as_ref())
    }

    /// A token for `name`, valid until `expires_at`.
    pub fn issue(&self, name: &str, expires_at: OffsetDateTime) -> Result<String> {
        validate_name(name)?;
        let body = format!("{PREFIX}.{}.{}", B64.encode(name), expires_at.unix_timestamp());
        Ok(format!("{body}.{}", self.mac(&body)))
    }

    /// The admin a token names, if its signature holds and it has not expired at `now`.
    pub fn verify(&self, token: &str, now: OffsetDateTime) -> Option<Admin> {
        let (body, mac) = token.trim().rsplit_once('.')?;
        let mac = B64.decode(mac).ok()?;
        hmac::verify(&self.0, body.as_bytes(), &mac).ok()?;
        let mut parts = body.split('.');
        let (prefix, name, expiry) = (parts.next()?, parts.next()?, parts.next()?);
        if prefix != PREFIX || parts.next().is_some() {
            return None;
        }
        let name = String::from_utf8(B64.decode(name).ok()?).ok()?;
        let expires_at = OffsetDateTime::from_unix_timestamp(expiry.parse().ok()?).ok()?;
        (now < expires_at && validate_name(&name).is_ok()).then_some(Admin { name, expires_at })
    }

    /// The CSRF token of a session (the forms carry it; a POST must give it back).
    pub fn csrf(&self, session_token: &str) -> String {
        self.mac(&format!("csrf.{session_token}"))
    }

    /// Whether `given` is the CSRF token of `session_token` (constant time).
    pub fn csrf_ok(&self, session_token: &str, given: &str) -> bool {
        B64.decode(given.trim()).is_ok_and(|mac| {
            hmac::verify(&self.0, format!("csrf.{session_token}").as_bytes(), &mac).is_ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn tokens_verify_until_they_expire_and_only_under_their_key() {
        let k = AdminKey::from_bytes(&[7; 32]);
        let now = datetime!(2026-06-01 12:00 UTC);
        let t = k.issue("alice@ops", now + time::Duration::hours(1)).unwrap_or_default();
        let a = k.verify(&t, now).expect("valid");
        assert_eq!((a.name.as_str(), a.actor().as_str()), ("alice@ops", "admin:alice@ops"));
        assert!(k.verify(&t, now + time::Duration::hours(2)).is_none(), "expired");
        assert!(AdminKey::from_bytes(&[8; 32]).verify(&t, now).is_none(), "other key");
        // A changed name or expiry breaks the signature.
        let parts: Vec<&str> = t.split('.').collect();
        let forged = format!("{}.{}.{}.{}", parts[0], B64.encode("root"), parts[2], parts[3]);
        assert!(k.verify(&forged, now).is_none());
        let later = format!("{}.{}.{}.{}", parts[0], parts[1], 9_999_999_999i64, parts[3]);
        assert!(k.verify(&later, now).is_none());
        assert!(k.verify("lya1.x", now).is_none() && k.verify("", now).is_none());
        assert!(k.issue("<script>", now).is_err());
        // CSRF tokens are per session.
        let c = k.csrf(&t);
        assert!(k.csrf_ok(&t, &c));
        assert!(!k.csrf_ok("another-session", &c) && !k.csrf_ok(&t, "AAAA"));
    }
}
