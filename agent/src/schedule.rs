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
    /// When the agent obtained it. CAs backdate notBefore for clock skew (Lanyard's by five
    /// minutes), so notBefore is not the issuance time: measuring the lifetime from it
    /// would make a short-lived certificate due the moment it arrives.
    pub issued_at: OffsetDateTime,
}

impl Validity {
    /// `issued_at` from the agent's record when it falls inside the validity, else
    /// notBefore.
    pub fn new(
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        obtained: Option<OffsetDateTime>,
    ) -> Self {
        let issued_at =
            obtained.filter(|t| *t >= not_before && *t <= not_after).unwrap_or(not_before);
        Validity { not_before, not_after, issued_at }
    }
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
    let lifetime = v.not_after - v.issued_at;
    let at = v.issued_at + lifetime * policy.renew_fraction
        - lifetime * (policy.jitter_fraction * jitter.clamp(0.0, 1.0));
    at.max(v.issued_at)
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
            "not enrolled: run `lanyard enrol --ca URL --token TOKEN --ca-fingerprint SHA256` (or --ca-bundle FILE)".into(),
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
    // "Rotate everything issued before T" applies once T has passed, to certificates
    // obtained before T (so the renewed certificate does not match again).
    let rotate = policy.rotate_issued_before.is_some_and(|t| t <= now && v.issued_at < t);
    let due = if rotate { now } else { renewal_time(v, policy, jitter) };
    // Whatever the policy says, never renew again within the retry floor of the last
    // success: a misconfigured policy must not turn into a renewal storm.
    let due = due
        .max(v.issued_at + Duration::seconds(i64::try_from(policy.retry_floor_secs).unwrap_or(10)));
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
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, serial_hex.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.as_ref()[..8]);
    (u64::from_be_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
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
        Validity::new(datetime!(2026-01-01 00:00 UTC), datetime!(2026-01-01 03:00 UTC), None)
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
        let d = decide(now, Some(cert()), false, &p, Failures::default(), 0.0, 0.0);
        assert!(matches!(d, Decision::RenewNow(r) if r.contains("rotates")));
        // Obtained after T (even with a backdated notBefore): not rotated again.
        let newer = Validity::new(
            datetime!(2026-01-01 00:28 UTC),
            datetime!(2026-01-01 03:33 UTC),
            Some(datetime!(2026-01-01 00:33 UTC)),
        );
        let d = decide(now, Some(newer), false, &p, Failures::default(), 0.0, 0.0);
        assert!(matches!(d, Decision::SleepUntil { .. }));
        // T in the future rotates nothing yet.
        let later =
            GroupPolicy { rotate_issued_before: Some(datetime!(2026-01-01 01:00 UTC)), ..policy() };
        let d = decide(now, Some(cert()), false, &later, Failures::default(), 0.0, 0.0);
        assert!(matches!(d, Decision::SleepUntil { .. }));
    }

    #[test]
    fn backdated_short_lived_certificates_do_not_storm() {
        // 5 minutes of life, notBefore backdated 5 minutes, renew at 10%.
        let p = GroupPolicy {
            lifetime_secs: 300,
            renew_fraction: 0.1,
            jitter_fraction: 0.0,
            ..policy()
        };
        let got = datetime!(2026-01-01 00:05 UTC);
        let v = Validity::new(
            datetime!(2026-01-01 00:00 UTC),
            datetime!(2026-01-01 00:10 UTC),
            Some(got),
        );
        let d =
            decide(got + Duration::seconds(1), Some(v), false, &p, Failures::default(), 0.0, 0.0);
        assert_eq!(d, Decision::SleepUntil { at: got + Duration::seconds(30), backing_off: false });
        // Even a policy that asks for renewal at once waits for the floor.
        let eager = GroupPolicy { rotate_issued_before: Some(got + Duration::seconds(1)), ..p };
        let d = decide(
            got + Duration::seconds(2),
            Some(v),
            false,
            &eager,
            Failures::default(),
            0.0,
            0.0,
        );
        assert!(matches!(d, Decision::SleepUntil { at, .. } if at == got + Duration::seconds(10)));
    }

    #[test]
    fn stable_jitter_is_stable_and_spread() {
        assert_eq!(stable_jitter("abc"), stable_jitter("abc"));
        let xs: Vec<f64> = (0..100).map(|i| stable_jitter(&format!("{i:x}"))).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(xs.iter().any(|x| *x < 0.3) && xs.iter().any(|x| *x > 0.7));
    }
}
