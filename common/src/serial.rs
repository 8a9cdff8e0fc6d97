//! Certificate serial numbers in the two forms Lanyard prints.
//!
//! - plain hex (`8f3a...`), what `openssl x509 -serial` and `lanyard-ca revoke --serial` use;
//! - CloudFront's colon hex (`00:8f:3a:...`): the DER INTEGER content bytes, so a leading
//!   `00` stays when the high bit of the first byte is set. Connection functions see this
//!   form, and the KeyValueStore of revoked serials is keyed by it.

/// Lowercase hex of the serial's DER INTEGER content bytes, without a leading zero byte.
pub fn to_hex(der_content: &[u8]) -> String {
    let trimmed = strip_leading_zeros(der_content);
    trimmed.iter().map(|b| format!("{b:02x}")).collect()
}

/// CloudFront's colon-hex form of a serial given as DER INTEGER content bytes.
pub fn to_colon_hex(der_content: &[u8]) -> String {
    canonical_der(der_content).iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Parses a serial given as hex, with or without colons, case-insensitive, and returns
/// the canonical DER INTEGER content bytes (leading zero only where the sign needs it).
pub fn parse_hex(s: &str) -> Result<Vec<u8>, InvalidSerial> {
    let err = || InvalidSerial { given: s.to_owned() };
    let mut digits: String = s.trim().chars().filter(|c| *c != ':').collect();
    if let Some(rest) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        digits = rest.to_owned();
    }
    if digits.is_empty() || digits.len() > 80 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(err());
    }
    if digits.len() % 2 == 1 {
        digits.insert(0, '0');
    }
    let bytes = (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| err())?;
    Ok(canonical_der(&bytes))
}

/// A serial that is not hex.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid serial {given:?}: give the serial in hex (colons allowed), as `lanyard-ca certs list` prints it"
)]
pub struct InvalidSerial {
    pub given: String,
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len().saturating_sub(1));
    &b[first..]
}

/// Minimal DER INTEGER content for a non-negative number.
fn canonical_der(b: &[u8]) -> Vec<u8> {
    let t = strip_leading_zeros(b);
    let mut out = Vec::with_capacity(t.len() + 1);
    if t.first().is_some_and(|x| x & 0x80 != 0) {
        out.push(0);
    }
    out.extend_from_slice(t);
    if out.is_empty() {
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colon_hex_keeps_sign_byte() {
        assert_eq!(to_colon_hex(&[0x8f, 0x01]), "00:8f:01");
        assert_eq!(to_colon_hex(&[0x00, 0x8f, 0x01]), "00:8f:01");
        assert_eq!(to_colon_hex(&[0x7f, 0x01]), "7f:01");
    }

    #[test]
    fn hex_parses_both_forms() {
        assert_eq!(parse_hex("00:8F:01"), Ok(vec![0, 0x8f, 0x01]));
        assert_eq!(parse_hex("8f01"), Ok(vec![0, 0x8f, 0x01]));
        assert_eq!(parse_hex("0x7f01"), Ok(vec![0x7f, 0x01]));
        assert_eq!(to_hex(&[0, 0x8f, 0x01]), "8f01");
    }

    #[test]
    fn refuses_junk() {
        for bad in ["", "xyz", "12 34", &"a".repeat(81)] {
            assert!(parse_hex(bad).is_err(), "{bad}");
        }
    }
}
