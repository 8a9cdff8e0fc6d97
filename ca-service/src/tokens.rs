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

    /// A new batch claim (see `lanyard_proto::claim`): the same kind of secret, shared by
    /// a batch of devices.
    pub fn generate_claim() -> Self {
        let mut b = zeroize::Zeroizing::new([0u8; 32]);
        rand::fill(&mut *b);
        TokenSecret(zeroize::Zeroizing::new(lanyard_proto::claim::format(&b)))
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

/// The most tokens one `token create --count` makes.
pub const MAX_BULK: u64 = 1_000_000;

/// Expands an identity template for bulk tokens: `{seq}` is the sequence number, and
/// `{seq:05}` the same padded with zeros to five digits (any width up to 20). The template
/// must hold exactly one `{seq...}`; numbers run from `start` for `count` identities.
pub fn expand_identities(template: &str, start: u64, count: u64) -> Result<Vec<String>, String> {
    if count == 0 || count > MAX_BULK {
        return Err(format!("--count must be between 1 and {MAX_BULK}"));
    }
    let open = template.find("{seq").ok_or_else(|| {
        format!("identity template {template:?} has no {{seq}}: every token needs an identity of its own (e.g. 'sensor-{{seq:05}}.fleet.example.com')")
    })?;
    let close = template[open..]
        .find('}')
        .map(|c| open + c)
        .ok_or_else(|| format!("identity template {template:?}: {{seq is not closed"))?;
    let spec = &template[open + 4..close];
    let width = match spec {
        "" => 0,
        _ => spec
            .strip_prefix(':')
            .filter(|w| w.starts_with('0') && w.len() >= 2)
            .and_then(|w| w.parse::<usize>().ok())
            .filter(|w| *w <= 20)
            .ok_or_else(|| {
                format!("identity template {template:?}: {{seq{spec}}} is not {{seq}} or {{seq:0N}} (N up to 20)")
            })?,
    };
    let (head, tail) = (&template[..open], &template[close + 1..]);
    if tail.contains("{seq") {
        return Err(format!("identity template {template:?} has more than one {{seq}}"));
    }
    let last = start.checked_add(count - 1).ok_or("--start plus --count is too large")?;
    Ok((start..=last).map(|n| format!("{head}{n:0width$}{tail}")).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn identity_templates_expand_with_padding() {
        let ids = super::expand_identities("sensor-{seq:05}.fleet.example.com", 1, 3).unwrap();
        assert_eq!(
            ids,
            [
                "sensor-00001.fleet.example.com",
                "sensor-00002.fleet.example.com",
                "sensor-00003.fleet.example.com"
            ]
        );
        assert_eq!(
            super::expand_identities("d{seq}.example", 98, 3).unwrap(),
            ["d98.example", "d99.example", "d100.example"]
        );
    }

    #[test]
    fn bad_identity_templates_are_named() {
        for (t, want) in [
            ("sensor.example.com", "has no {seq}"),
            ("s-{seq:5}.example", "is not {seq} or {seq:0N}"),
            ("s-{seq:0x}.example", "is not {seq} or {seq:0N}"),
            ("s-{seq.example", "is not closed"),
            ("s-{seq}-{seq}.example", "more than one"),
        ] {
            let e = super::expand_identities(t, 1, 2).unwrap_err();
            assert!(e.contains(want), "{t}: {e}");
        }
        assert!(super::expand_identities("s{seq}", 1, 0).unwrap_err().contains("--count"));
        assert!(super::expand_identities("s{seq}", u64::MAX, 2).is_err());
    }

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
