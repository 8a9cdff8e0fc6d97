//! Batch claims: one secret shared by a batch of identical images, for when a per-device
//! token cannot be flashed. The claim is `lyc.<256-bit secret, base64url>`; each device
//! enrols with it under an identity of its own, made from the claim's identity template
//! (`sensor-{id}.fleet.example.com`) and a device ID (a serial number, or a hash of
//! `/etc/machine-id`). The CA enrols each identity once through a claim, and a claim only
//! as many times as it was made for.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

pub const PREFIX: &str = "lyc.";

/// The placeholder for the device ID in an identity template.
pub const PLACEHOLDER: &str = "{id}";

/// The longest device ID: one DNS label.
pub const MAX_DEVICE_ID: usize = 63;

/// Builds a claim string from 32 random bytes.
pub fn format(secret: &[u8; 32]) -> String {
    format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(secret))
}

/// Whether a presented credential is a batch claim (rather than a one-time token).
pub fn is_claim(s: &str) -> bool {
    s.trim().starts_with(PREFIX)
}

/// Checks an identity template: exactly one `{id}`, and an identity (with a device ID in
/// its place) that is a DNS name.
pub fn check_template(template: &str) -> Result<(), String> {
    match template.matches(PLACEHOLDER).count() {
        1 => {}
        0 => {
            return Err(format!(
                "identity template {template:?} has no {PLACEHOLDER}: each device needs an identity of its own (e.g. 'sensor-{{id}}.fleet.example.com')"
            ));
        }
        _ => return Err(format!("identity template {template:?} has more than one {PLACEHOLDER}")),
    }
    let sample = template.replace(PLACEHOLDER, "a0");
    let dns_ok = sample.len() <= 253
        && sample.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if !dns_ok {
        return Err(format!(
            "identity template {template:?} does not make DNS names (lowercase letters, digits, '-' and '.')"
        ));
    }
    Ok(())
}

/// A device ID as read from a file (a serial number): trimmed of whitespace and NULs (device
/// tree strings end in one), lowercased; letters, digits and '-' only, up to 63.
pub fn device_id(raw: &str) -> Result<String, String> {
    let id = raw.trim_matches(|c: char| c.is_whitespace() || c == '\0').to_ascii_lowercase();
    if id.is_empty() {
        return Err("the device ID is empty".into());
    }
    if id.len() > MAX_DEVICE_ID
        || !id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || id.starts_with('-')
        || id.ends_with('-')
    {
        return Err(format!(
            "the device ID {id:?} is not 1 to {MAX_DEVICE_ID} letters, digits and inner '-'"
        ));
    }
    Ok(id)
}

/// The identity a device with this ID enrols as.
pub fn identity(template: &str, device_id: &str) -> Result<String, String> {
    check_template(template)?;
    let id = self::device_id(device_id)?;
    Ok(template.replace(PLACEHOLDER, &id))
}

/// The device ID of `identity` under `template`, if the identity is one the template makes.
pub fn device_id_of<'a>(template: &str, identity: &'a str) -> Option<&'a str> {
    let (head, tail) = template.split_once(PLACEHOLDER)?;
    let id = identity.strip_prefix(head)?.strip_suffix(tail)?;
    self::device_id(id).ok().filter(|d| d == id).map(|_| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_come_from_the_template_and_back() {
        let t = "sensor-{id}.fleet.example.com";
        assert_eq!(identity(t, " SN-0042\n\0").unwrap(), "sensor-sn-0042.fleet.example.com");
        assert_eq!(device_id_of(t, "sensor-sn-0042.fleet.example.com"), Some("sn-0042"));
        assert_eq!(device_id_of(t, "sensor-.fleet.example.com"), None);
        assert_eq!(device_id_of(t, "sensor-a.b.fleet.example.com"), None, "one label only");
        assert_eq!(device_id_of(t, "other-a.fleet.example.com"), None);
        assert_eq!(
            device_id_of(t, "sensor-A1.fleet.example.com"),
            None,
            "as the template makes it"
        );
    }

    #[test]
    fn bad_templates_and_ids_are_named() {
        for (t, want) in [
            ("sensor.example.com", "has no {id}"),
            ("{id}-{id}.example.com", "more than one"),
            ("Sensor-{id}.example.com", "DNS names"),
            ("sensor-{id}..example.com", "DNS names"),
        ] {
            let e = check_template(t).unwrap_err();
            assert!(e.contains(want), "{t}: {e}");
        }
        for (raw, want) in [("", "empty"), ("a b", "letters"), ("-a", "letters")] {
            let e = device_id(raw).unwrap_err();
            assert!(e.contains(want), "{raw:?}: {e}");
        }
        assert!(device_id(&"a".repeat(64)).is_err());
    }

    #[test]
    fn claims_are_told_from_tokens() {
        let c = format(&[1u8; 32]);
        assert!(is_claim(&c) && c.len() == PREFIX.len() + crate::token::SECRET_CHARS);
        assert!(!is_claim(&crate::token::format("d", &[1u8; 32])));
    }
}
