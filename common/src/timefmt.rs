//! Timestamps as people and programs read them: RFC 3339 in UTC (`2026-12-01T17:33:15Z`),
//! in CLI output, logs and the audit trail alike. `time`'s own `Display`
//! (`2026-12-01 17:33:15.0 +00:00:00`) is never shown to a user.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `t` in RFC 3339, UTC, whole seconds.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// A timestamp that displays as RFC 3339, for log fields (`not_after = %Rfc3339(t)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rfc3339Time(pub OffsetDateTime);

impl std::fmt::Display for Rfc3339Time {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&rfc3339(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_in_utc() {
        let t = OffsetDateTime::from_unix_timestamp(1_796_146_395).expect("time");
        assert_eq!(rfc3339(t), "2026-12-01T17:33:15Z");
        let later = t + time::Duration::milliseconds(250);
        assert_eq!(Rfc3339Time(later).to_string(), "2026-12-01T17:33:15Z");
        let cet = t.to_offset(time::UtcOffset::from_hms(1, 0, 0).expect("offset"));
        assert_eq!(rfc3339(cet), "2026-12-01T17:33:15Z");
    }
}
