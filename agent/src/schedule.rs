//! When to renew: a pure function of (now, current certificate, policy, failures).
//!
//! No clock, no network, no tokio: [`decide`] answers "renew now", "sleep until T" or
//! "a new token is needed", and the daemon carries it out. Rules (see ANCHORS in the docs
//! for why): renew at the policy's fraction of the lifetime, minus a jitter that is stable
//! per certificate (so restarts do not move it); after failures, back off exponentially
//! with jitter between the policy's floor and cap, but never past the point where the
//! certificate would expire; an expired certificate still renews within the policy's
//! grace; "rotate everything issued before T" makes matching certificates due at once.

use lanyard_proto::GroupPolicy;
use time::{Duration, OffsetDateTime};

/// The validity of the current certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// Consecutive failed renewals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Failures {
    pub count: u32,
    pub last_at: Option<OffsetDateTime>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Renew now; the reason is for the log.
    RenewNow(&'static str),
    /// Nothing to do before this instant (renewal time, or the end of a backoff).
    SleepUntil { at: OffsetDateTime, backing_off: bool },
    /// Renewal cannot succeed any more: the operator must enrol again with a new token.
    NeedsEnrolment(String),
}

/// The renewal time of a certificate: `not_before + lifetime * fraction`, minus up to
/// `lifetime * jitter_fraction` chosen by `jitter` in `[0, 1)`.
pub fn renewal_time(v: Validity, policy: &GroupPolicy, jitter: f64) -> OffsetDateTime {
    let lifetime = v.not_after - v.not_before;
    let at = v.not_before + lifetime * policy.renew_fraction
        - lifetime * (policy.jitter_fraction * jitter.clamp(0.0, 1.0));
    at.max(v.not_before)
}

/// Backoff after `failures` consecutive failures: floor × 2^(n-1), capped, then scaled
/// by a jitter in `[0.5, 1.0]` (so a fleet that failed together spreads out), never below
/// the floor.
pub fn backoff(failures: u32, policy: &GroupPolicy, jitter: f64) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let floor = policy.retry_floor_secs.max(1) as f64;
    let cap = (policy.retry_cap_secs as f64).max(floor);
    let exp = floor * 2f64.powi(i32::try_from(failures.saturating_sub(1).min(30)).unwrap_or(30));
    let base = exp.min(cap);
    let scaled = (base * (0.5 + 0.5 * jitter.clamp(0.0, 1.0))).max(floor);
    Duration::seconds_f64(scaled)
}

/// The decision. `jitter` places the renewal point; `backoff_jitter` spreads retries.
pub fn decide(
    now: OffsetDateTime,
    cert: Option<Validity>,
    revoked: bool,
    policy: &GroupPolicy,
    failures: Failures,
    jitter: f64,
    backoff_jitter: f64,
) -> Decision {
    let Some(v) = cert else {
        return Decision::NeedsEnrolment(
            "not enrolled: run `lanyard enrol --ca URL --token TOKEN`".into(),
        );
    };
    if revoked {
        return Decision::NeedsEnrolment(
            "the certificate was revoked by the CA; enrol again with a new token".into(),
        );
    }
    let grace = Duration::seconds(i64::try_from(policy.expired_grace_secs).unwrap_or(0));
    if now > v.not_after + grace {
        return Decision::NeedsEnrolment(format!(
            "the certificate expired at {}{}; enrol again with a new token",
            v.not_after,
            if grace.is_zero() {
                String::new()
            } else {
                format!(" and the grace of {grace} has passed")
            }
        ));
    }
    let rotate = policy.rotate_issued_before.is_some_and(|t| v.not_before < t);
    let due = if rotate { now } else { renewal_time(v, policy, jitter) };
    if now < due {
        return Decision::SleepUntil { at: due, backing_off: false };
    }
    if failures.count > 0
        && let Some(last) = failures.last_at
    {
        let mut retry_at = last + backoff(failures.count, policy, backoff_jitter);
        // Before expiry, never let the backoff carry the next try past the expiry itself.
        if now < v.not_after {
            retry_at = retry_at.min(v.not_after - Duration::seconds(1)).max(last);
        }
        if now < retry_at {
            return Decision::SleepUntil { at: retry_at, backing_off: true };
        }
    }
    Decision::RenewNow(if rotate {
        "the policy rotates certificates issued before this one"
    } else if now >= v.not_after {
        "the certificate has expired (within the policy's grace)"
    } else {
        "the renewal time has come"
    })
}

/// A number in `[0, 1)` derived from a serial, so a certificate's renewal point is the same
/// after every restart yet differs between devices.
pub fn stable_jitter(serial_hex: &str) -> f64 {
    // FNV-1a: a spread, not a secret.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in serial_hex.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn policy() -> GroupPolicy {
        GroupPolicy {
            lifetime_secs: 3 * 3600,
            renew_fraction: 2.0 / 3.0,
            jitter_fraction: 0.1,
            retry_floor_secs: 10,
            retry_cap_secs: 600,
            expired_grace_secs: 3600,
            ..Default::default()
        }
    }

    fn cert() -> Validity {
        Validity {
            not_before: datetime!(2026-01-01 00:00 UTC),
            not_after: datetime!(2026-01-01 03:00 UTC),
        }
    }

    #[test]
    fn sleeps_until_the_renewal_point() {
        let d = decide(
            datetime!(2026-01-01 00:10 UTC),
            Some(cert()),
            false,
            &policy(),
            Failures::default(),
            0.0,
            0.0,
        );
        assert_eq!(
            d,
            Decision::SleepUntil { at: datetime!(2026-01-01 02:00 UTC), backing_off: false }
        );
    }

    #[test]
    fn jitter_moves_the_point_earlier_within_bounds() {
        let p = policy();
        let full = renewal_time(cert(), &p, 0.999_999);
        assert!(full < datetime!(2026-01-01 02:00 UTC));
        assert!(full >= datetime!(2026-01-01 01:42 UTC)); // 2h - 10% of 3h
    }

    #[test]
    fn a_laptop_that_slept_past_the_point_renews_at_once() {
        let d = decide(
            datetime!(2026-01-01 02:59 UTC),
            Some(cert()),
            false,
            &policy(),
            Failures::default(),
            0.5,
            0.0,
        );
        assert!(matches!(d, Decision::RenewNow(_)));
    }

    #[test]
    fn failures_back_off_exponentially_with_floor_and_cap() {
        let p = policy();
        assert_eq!(backoff(1, &p, 1.0), Duration::seconds(10));
        assert_eq!(backoff(2, &p, 1.0), Duration::seconds(20));
        assert_eq!(backoff(5, &p, 1.0), Duration::seconds(160));
        assert_eq!(backoff(30, &p, 1.0), Duration::seconds(600));
        assert_eq!(backoff(1, &p, 0.0), Duration::seconds(10)); // never under the floor
        assert_eq!(backoff(30, &p, 0.0), Duration::seconds(300));
        let last = datetime!(2026-01-01 02:30 UTC);
        let f = Failures { count: 3, last_at: Some(last) };
        let d = decide(datetime!(2026-01-01 02:30:05 UTC), Some(cert()), false, &p, f, 0.0, 1.0);
        assert_eq!(d, Decision::SleepUntil { at: last + Duration::seconds(40), backing_off: true });
        let d = decide(datetime!(2026-01-01 02:31 UTC), Some(cert()), false, &p, f, 0.0, 1.0);
        assert!(matches!(d, Decision::RenewNow(_)));
    }

    #[test]
    fn backoff_never_skips_past_expiry() {
        let p = GroupPolicy { retry_cap_secs: 86_400, retry_floor_secs: 3600, ..policy() };
        let last = datetime!(2026-01-01 02:50 UTC);
        let f = Failures { count: 10, last_at: Some(last) };
        let d = decide(datetime!(2026-01-01 02:51 UTC), Some(cert()), false, &p, f, 0.0, 1.0);
        assert_eq!(
            d,
            Decision::SleepUntil { at: datetime!(2026-01-01 02:59:59 UTC), backing_off: true }
        );
    }

    #[test]
    fn expired_within_grace_renews_beyond_needs_a_token() {
        let p = policy();
        let d = decide(
            datetime!(2026-01-01 03:30 UTC),
            Some(cert()),
            false,
            &p,
            Failures::default(),
            0.0,
            0.0,
        );
        assert!(matches!(d, Decision::RenewNow(r) if r.contains("expired")));
        let d = decide(
            datetime!(2026-01-01 04:01 UTC),
            Some(cert()),
            false,
            &p,
            Failures::default(),
            0.0,
            0.0,
        );
        assert!(matches!(d, Decision::NeedsEnrolment(m) if m.contains("new token")));
        let no_grace = GroupPolicy { expired_grace_secs: 0, ..p };
        let d = decide(
            datetime!(2026-01-01 03:00:01 UTC),
            Some(cert()),
            false,
            &no_grace,
            Failures::default(),
            0.0,
            0.0,
        );
        assert!(matches!(d, Decision::NeedsEnrolment(_)));
    }

    #[test]
    fn revoked_and_missing_need_enrolment() {
        let p = policy();
        let now = datetime!(2026-01-01 00:10 UTC);
        assert!(
            matches!(decide(now, Some(cert()), true, &p, Failures::default(), 0.0, 0.0), Decision::NeedsEnrolment(m) if m.contains("revoked"))
        );
        assert!(matches!(
            decide(now, None, false, &p, Failures::default(), 0.0, 0.0),
            Decision::NeedsEnrolment(_)
        ));
    }

    #[test]
    fn rotate_before_makes_older_certificates_due() {
        let p =
            GroupPolicy { rotate_issued_before: Some(datetime!(2026-01-01 00:30 UTC)), ..policy() };
        let now = datetime!(2026-01-01 00:40 UTC);
        assert!(
            matches!(decide(now, Some(cert()), false, &p, Failures::default(), 0.0, 0.0), Decision::RenewNow(r) if r.contains("rotates"))
        );
        let newer = Validity {
            not_before: datetime!(2026-01-01 00:35 UTC),
            not_after: datetime!(2026-01-01 03:35 UTC),
        };
        assert!(matches!(
            decide(now, Some(newer), false, &p, Failures::default(), 0.0, 0.0),
            Decision::SleepUntil { .. }
        ));
    }

    #[test]
    fn stable_jitter_is_stable_and_spread() {
        assert_eq!(stable_jitter("abc"), stable_jitter("abc"));
        let xs: Vec<f64> = (0..100).map(|i| stable_jitter(&format!("{i:x}"))).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(xs.iter().any(|x| *x < 0.3) && xs.iter().any(|x| *x > 0.7));
    }
}
