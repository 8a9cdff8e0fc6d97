//! Human durations for flags and config: `90s`, `15m`, `24h`, `7d`, `1d 12h`.

use std::time::Duration;

/// A duration string that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid duration {given:?}: use a number with a unit, e.g. 90s, 15m, 24h, 7d")]
pub struct InvalidDuration {
    pub given: String,
}

/// Parses `24h`, `7d`, `1h 30m`. A bare number is refused: the unit must be explicit.
pub fn parse(s: &str) -> Result<Duration, InvalidDuration> {
    let err = || InvalidDuration { given: s.to_owned() };
    let t = s.trim();
    if t.is_empty() || t.chars().all(|c| c.is_ascii_digit()) {
        return Err(err());
    }
    humantime::parse_duration(t).map_err(|_| err())
}

/// Like [`parse`], but also takes `0` (for "never" settings such as a grace period).
pub fn parse_or_zero(s: &str) -> Result<Duration, InvalidDuration> {
    if s.trim() == "0" { Ok(Duration::ZERO) } else { parse(s) }
}

/// Formats as the shortest exact unit (`7d`, `36h`, `90s`).
pub fn format(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "0s".to_owned(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Formats an elapsed time roughly, in its largest whole unit (`3d`, `5h`, `12m`, `40s`),
/// for "last seen 5h ago". A negative span (a clock ahead) shows as `0s`.
pub fn format_approx(d: time::Duration) -> String {
    let s = d.whole_seconds().max(0);
    match s {
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3_600 => format!("{}h", s / 3_600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approximate_spans_use_the_largest_whole_unit() {
        assert_eq!(format_approx(time::Duration::seconds(40)), "40s");
        assert_eq!(format_approx(time::Duration::seconds(3 * 3600 + 59 * 60)), "3h");
        assert_eq!(format_approx(time::Duration::days(3)), "3d");
        assert_eq!(format_approx(time::Duration::seconds(-5)), "0s");
    }

    #[test]
    fn parses_units() {
        assert_eq!(parse("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse("1h 30m"), Ok(Duration::from_secs(5_400)));
    }

    #[test]
    fn refuses_bare_numbers_and_junk() {
        for bad in ["", "24", "h", "-1h", "soon"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_round_trip() {
        for s in ["7d", "36h", "90s", "15m"] {
            assert_eq!(format(parse(s).unwrap_or_default()), s);
        }
    }
}
