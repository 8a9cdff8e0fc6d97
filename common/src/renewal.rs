//! When to renew: one pure function of what a device knows, shared by the agent's daemon
//! and by `lanyard-ca fleet simulate` (which runs it for every simulated device).
//!
//! No clock, no network, no randomness: [`decide`] answers "renew now", "sleep until T"
//! or "a new token is needed", and the caller carries it out. Rules:
//! - renew at the policy's fraction of the lifetime, minus a jitter that is stable per
//!   certificate (so restarts do not move it);
//! - a certificate obtained off schedule (an enrolment, a fleet-wide rotation, a renewal
//!   that needed retries) draws its renewal point over the whole renewal interval instead,
//!   so a fleet that got its certificates together (flashed and enrolled in one hour,
//!   rotated in one hour, back after an outage) is spread flat within one lifetime
//!   rather than renewing together again and again;
//! - after failures, back off exponentially between the policy's floor and cap, placed by
//!   a jitter drawn once when the failure was recorded (so every wake and every `status`
//!   sees the same next attempt, and a fleet that failed together retries spread out);
//! - the CA's `Retry-After` is a floor for the next attempt (bounded, so a CA cannot
//!   park a device for ever);
//! - never let a backoff carry the next try past expiry; an expired certificate still
//!   renews within the policy's grace;
//! - "rotate everything issued before T" makes matching certificates due at once;
//! - refusals that will not change (revoked, renewal conflict, expired beyond the grace,
//!   unknown certificate) need a new enrolment.

use crate::{GroupPolicy, ProblemCode};
use time::{Duration, OffsetDateTime};

/// The validity of the current certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// When the device obtained it. CAs backdate notBefore for clock skew (Lanyard's by
    /// five minutes), so notBefore is not the issuance time: measuring the lifetime from
    /// it would make a short-lived certificate due the moment it arrives.
    pub issued_at: OffsetDateTime,
}

impl Validity {
    /// `issued_at` from the device's record when it falls inside the validity, else
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

/// The record of consecutive failed renewals of the current certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Failures {
    pub count: u32,
    pub last_at: Option<OffsetDateTime>,
    /// In `[0, 1)`, drawn once when the last failure was recorded and stored with it: it
    /// places the retry inside the backoff window.
    pub jitter: f64,
    /// The CA's problem code with the last failure, when it refused.
    pub code: Option<ProblemCode>,
    /// The CA's `Retry-After` with the last failure, as an instant.
    pub retry_not_before: Option<OffsetDateTime>,
}

/// Everything [`decide`] looks at.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    pub now: OffsetDateTime,
    /// The current certificate; `None` when not enrolled.
    pub cert: Option<Validity>,
    /// The validated policy in force.
    pub policy: &'a GroupPolicy,
    /// In `[0, 1)`, stable per certificate (derived from its serial): places the renewal
    /// point.
    pub jitter: f64,
    pub failures: Failures,
    /// The CA reported the current certificate revoked (check-in).
    pub revoked: bool,
    /// The current certificate was obtained off schedule (see the module's rules).
    pub resync: bool,
    /// The CA reported the current certificate superseded: it renewed it, and the answer
    /// never arrived. Fetch the renewed certificate now (the CA answers the same key with
    /// the same certificate).
    pub superseded: bool,
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

/// The policy's retry floor, bounded by the longest lifetime: a policy that does not
/// validate (from a CA older than the bound) must not overflow an instant.
fn retry_floor_secs(policy: &GroupPolicy) -> u64 {
    policy.retry_floor_secs.min(crate::policy::MAX_LIFETIME.as_secs())
}

/// The longest `Retry-After` a device honours: the policy's retry cap, and at least an
/// hour. A CA answering "come back in a year" must not strand a device.
pub fn max_retry_after(policy: &GroupPolicy) -> Duration {
    let cap = policy.retry_cap_secs.clamp(3600, crate::policy::MAX_LIFETIME.as_secs());
    Duration::seconds(i64::try_from(cap).unwrap_or(3600))
}

/// Whether a CA refusal of a renewal is final for the certificate that was presented:
/// retrying with it cannot succeed, a new enrolment (token) is needed.
pub fn is_final_refusal(code: ProblemCode) -> bool {
    matches!(
        code,
        ProblemCode::Revoked
            | ProblemCode::RenewalConflict
            | ProblemCode::ExpiredBeyondGrace
            | ProblemCode::CertificateUnknown
    )
}

/// Whether the policy's "rotate everything issued before T" makes this certificate due:
/// once T has passed, for certificates obtained before T.
pub fn rotation_applies(policy: &GroupPolicy, v: Validity, now: OffsetDateTime) -> bool {
    policy.rotate_issued_before.is_some_and(|t| t <= now && v.issued_at < t)
}

/// The renewal time of a certificate: `issued_at + lifetime * fraction`, minus up to
/// `lifetime * jitter_fraction` chosen by `jitter` in `[0, 1)`.
///
/// For a certificate obtained off schedule (`resync`), that interval is scaled by a second
/// number in `(0, 1]`: the renewal point falls anywhere in it, with the distribution a
/// fleet renewing steadily has (the renewal process's equilibrium), so a fleet that got its
/// certificates in one hour is flat from the first renewal on. The second number comes from
/// the low bits of `jitter` (which carries 53 random bits): one stable input still gives
/// both.
pub fn renewal_time(
    v: Validity,
    policy: &GroupPolicy,
    jitter: f64,
    resync: bool,
) -> OffsetDateTime {
    let lifetime = v.not_after - v.issued_at;
    let jitter = jitter.clamp(0.0, 1.0);
    let (spread_jitter, scale) =
        if resync { ((jitter * 4096.0).fract(), 1.0 - jitter) } else { (jitter, 1.0) };
    let interval =
        lifetime * policy.renew_fraction - lifetime * (policy.jitter_fraction * spread_jitter);
    (v.issued_at + interval * scale).max(v.issued_at)
}

/// Backoff after `failures` consecutive failures: floor × 2^(n-1), capped, then scaled
/// by a jitter into `[0.5, 1.0]` of that (so a fleet that failed together spreads out),
/// never below the floor.
pub fn backoff(failures: u32, policy: &GroupPolicy, jitter: f64) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let floor = retry_floor_secs(policy).max(1) as f64;
    let cap = (policy.retry_cap_secs.min(crate::policy::MAX_LIFETIME.as_secs()) as f64).max(floor);
    let exp = floor * 2f64.powi(i32::try_from(failures.saturating_sub(1).min(30)).unwrap_or(30));
    let base = exp.min(cap);
    let scaled = (base * (0.5 + 0.5 * jitter.clamp(0.0, 1.0))).max(floor);
    Duration::seconds_f64(scaled)
}

/// The CA's `Retry-After` as honoured: no later than [`max_retry_after`] past the failure.
fn honoured_retry_after(
    failures: &Failures,
    policy: &GroupPolicy,
    last: OffsetDateTime,
) -> Option<OffsetDateTime> {
    failures.retry_not_before.map(|r| r.min(last + max_retry_after(policy)))
}

/// The earliest next attempt after the recorded failures, `None` without failures.
pub fn retry_at(failures: &Failures, policy: &GroupPolicy) -> Option<OffsetDateTime> {
    let last = failures.last_at.filter(|_| failures.count > 0)?;
    let at = last + backoff(failures.count, policy, failures.jitter);
    Some(honoured_retry_after(failures, policy, last).map_or(at, |ra| at.max(ra)))
}

fn final_refusal_message(code: ProblemCode) -> String {
    let why = match code {
        ProblemCode::Revoked => "the certificate is revoked",
        ProblemCode::RenewalConflict => {
            "this certificate was already renewed with another key (a copy of this device's key may exist)"
        }
        ProblemCode::ExpiredBeyondGrace => {
            "the certificate expired longer ago than the group's grace"
        }
        ProblemCode::CertificateUnknown => "the CA does not know this certificate",
        _ => "the refusal is final",
    };
    format!("the CA refused to renew ({}): {why}; enrol again with a new token", code.as_str())
}

/// The decision.
pub fn decide(i: &Inputs<'_>) -> Decision {
    let Inputs { now, cert, policy, jitter, failures, revoked, resync, superseded } = *i;
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
    if failures.count > 0
        && let Some(code) = failures.code
        && is_final_refusal(code)
    {
        return Decision::NeedsEnrolment(final_refusal_message(code));
    }
    let grace = Duration::seconds(i64::try_from(policy.expired_grace_secs).unwrap_or(0));
    if now > v.not_after + grace {
        return Decision::NeedsEnrolment(format!(
            "the certificate expired at {}{}; enrol again with a new token",
            crate::timefmt::rfc3339(v.not_after),
            if grace.is_zero() {
                String::new()
            } else {
                format!(
                    " and the grace of {} has passed",
                    crate::duration::format(grace.unsigned_abs())
                )
            }
        ));
    }
    // "Rotate everything issued before T" applies once T has passed, to certificates
    // obtained before T (so the renewed certificate does not match again).
    let rotate = rotation_applies(policy, v, now);
    let due = if rotate || superseded { now } else { renewal_time(v, policy, jitter, resync) };
    // Whatever the policy says, never renew again within the retry floor of the last
    // success: a misconfigured policy must not turn into a renewal storm.
    let due = due.max(
        v.issued_at + Duration::seconds(i64::try_from(retry_floor_secs(policy)).unwrap_or(10)),
    );
    if now < due {
        return Decision::SleepUntil { at: due, backing_off: false };
    }
    if let (Some(mut at), Some(last)) = (retry_at(&failures, policy), failures.last_at) {
        // Before expiry, never let the exponential backoff carry the next try past the
        // expiry itself: one last try a second before it. The CA's Retry-After still holds
        // (it is busy: an earlier try would only be refused again). Once that last try has
        // failed, the backoff runs its course (into the grace, if the policy gives one): a
        // failure in the last second must not be retried at once, again and again, until
        // the expiry.
        let last_chance = v.not_after - Duration::seconds(1);
        if now < v.not_after && last < last_chance {
            let floor = honoured_retry_after(&failures, policy, last).unwrap_or(last);
            at = at.min(last_chance).max(floor).max(last + Duration::seconds(1));
        }
        if now < at {
            return Decision::SleepUntil { at, backing_off: true };
        }
    }
    Decision::RenewNow(if superseded {
        "the CA says this certificate was renewed; fetching the renewed certificate"
    } else if rotate {
        "the policy rotates certificates issued before this one"
    } else if now >= v.not_after {
        "the certificate has expired (within the policy's grace)"
    } else {
        "the renewal time has come"
    })
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

    fn at(now: OffsetDateTime, policy: &GroupPolicy) -> Inputs<'_> {
        Inputs {
            now,
            cert: Some(cert()),
            policy,
            jitter: 0.0,
            failures: Failures::default(),
            revoked: false,
            resync: false,
            superseded: false,
        }
    }

    fn failed(count: u32, last: OffsetDateTime, jitter: f64) -> Failures {
        Failures { count, last_at: Some(last), jitter, ..Default::default() }
    }

    #[test]
    fn sleeps_until_the_renewal_point() {
        let p = policy();
        let d = decide(&at(datetime!(2026-01-01 00:10 UTC), &p));
        assert_eq!(
            d,
            Decision::SleepUntil { at: datetime!(2026-01-01 02:00 UTC), backing_off: false }
        );
    }

    #[test]
    fn jitter_moves_the_point_earlier_within_bounds() {
        let p = policy();
        let full = renewal_time(cert(), &p, 0.999_999, false);
        assert!(full < datetime!(2026-01-01 02:00 UTC));
        assert!(full >= datetime!(2026-01-01 01:42 UTC)); // 2h - 10% of 3h
    }

    #[test]
    fn an_off_schedule_certificate_spreads_over_the_whole_interval() {
        let p = policy();
        // Renewal interval 2 h (the low bits of 0.25 and 0.75 are zero, so no jitter
        // inside it): jitter 0.25 -> 1h30, 0.75 -> 30 min after issuance.
        assert_eq!(renewal_time(cert(), &p, 0.25, true), datetime!(2026-01-01 01:30 UTC));
        assert_eq!(renewal_time(cert(), &p, 0.75, true), datetime!(2026-01-01 00:30 UTC));
        // Spread over the whole interval, not only its last tenth.
        let xs: Vec<OffsetDateTime> = (1..1000)
            .map(|k| renewal_time(cert(), &p, f64::from(k) / 1000.0 + 1e-7, true))
            .collect();
        assert!(xs.iter().any(|t| *t < datetime!(2026-01-01 00:20 UTC)));
        assert!(xs.iter().any(|t| *t > datetime!(2026-01-01 01:40 UTC)));
        let d = decide(&Inputs {
            resync: true,
            jitter: 0.75,
            ..at(datetime!(2026-01-01 00:10 UTC), &p)
        });
        assert_eq!(
            d,
            Decision::SleepUntil { at: datetime!(2026-01-01 00:30 UTC), backing_off: false }
        );
        // Never sooner than the retry floor after issuance.
        let d = decide(&Inputs {
            resync: true,
            jitter: 0.999_999_9,
            ..at(datetime!(2026-01-01 00:00:01 UTC), &p)
        });
        assert_eq!(
            d,
            Decision::SleepUntil { at: datetime!(2026-01-01 00:00:10 UTC), backing_off: false }
        );
    }

    #[test]
    fn a_laptop_that_slept_past_the_point_renews_at_once() {
        let p = policy();
        let d = decide(&Inputs { jitter: 0.5, ..at(datetime!(2026-01-01 02:59 UTC), &p) });
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
        let f = failed(3, last, 1.0);
        let d = decide(&Inputs { failures: f, ..at(datetime!(2026-01-01 02:30:05 UTC), &p) });
        assert_eq!(d, Decision::SleepUntil { at: last + Duration::seconds(40), backing_off: true });
        let d = decide(&Inputs { failures: f, ..at(datetime!(2026-01-01 02:31 UTC), &p) });
        assert!(matches!(d, Decision::RenewNow(_)));
    }

    #[test]
    fn the_failure_jitter_is_stored_so_every_wake_sees_the_same_retry() {
        // The jitter is an input drawn once per failure: asking again (a wake every 30 s,
        // `lanyard status`) gives the same instant; different devices spread over
        // [0.5, 1.0] of the backoff instead of bunching at its middle.
        let p = policy();
        let last = datetime!(2026-01-01 02:30 UTC);
        let ask = |now, j| decide(&Inputs { failures: failed(6, last, j), ..at(now, &p) });
        let first = ask(datetime!(2026-01-01 02:30:01 UTC), 0.25);
        for s in [30, 60, 90, 120] {
            assert_eq!(ask(datetime!(2026-01-01 02:30:01 UTC) + Duration::seconds(s), 0.25), first);
        }
        let spread: Vec<OffsetDateTime> = (0..10)
            .map(|k| match ask(datetime!(2026-01-01 02:30:01 UTC), f64::from(k) / 10.0) {
                Decision::SleepUntil { at, .. } => at,
                other => panic!("{other:?}"),
            })
            .collect();
        // Base 320 s: retries from 160 s to 304 s after the failure, each distinct.
        assert_eq!(spread[0], last + Duration::seconds(160));
        assert_eq!(spread[9], last + Duration::seconds(304));
        assert!(spread.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn retry_after_is_a_floor_for_the_next_attempt() {
        let p = policy();
        let last = datetime!(2026-01-01 02:30 UTC);
        let f = Failures {
            code: Some(ProblemCode::Busy),
            retry_not_before: Some(last + Duration::seconds(120)),
            ..failed(1, last, 0.0)
        };
        // The backoff alone would allow a try after 10 s; the CA said 120 s.
        let d = decide(&Inputs { failures: f, ..at(last + Duration::seconds(11), &p) });
        assert_eq!(
            d,
            Decision::SleepUntil { at: last + Duration::seconds(120), backing_off: true }
        );
        let d = decide(&Inputs { failures: f, ..at(last + Duration::seconds(120), &p) });
        assert!(matches!(d, Decision::RenewNow(_)));
        // A Retry-After shorter than the backoff does not shorten it.
        let short = Failures {
            retry_not_before: Some(last + Duration::seconds(1)),
            ..failed(4, last, 1.0)
        };
        let d = decide(&Inputs { failures: short, ..at(last + Duration::seconds(2), &p) });
        assert_eq!(d, Decision::SleepUntil { at: last + Duration::seconds(80), backing_off: true });
    }

    #[test]
    fn retry_after_holds_near_expiry_but_is_bounded() {
        let p = policy();
        // Busy 30 s before expiry, come back in 5 minutes: the device waits (the grace
        // covers it) rather than knock again on a CA that said it cannot serve it.
        let last = datetime!(2026-01-01 02:59:30 UTC);
        let f = Failures {
            code: Some(ProblemCode::Busy),
            retry_not_before: Some(last + Duration::minutes(5)),
            ..failed(1, last, 0.0)
        };
        let d = decide(&Inputs { failures: f, ..at(last + Duration::seconds(15), &p) });
        assert_eq!(d, Decision::SleepUntil { at: last + Duration::minutes(5), backing_off: true });
        // "Come back in a year" is honoured for at most max(retry cap, 1 h).
        let year = Failures { retry_not_before: Some(last + Duration::days(365)), ..f };
        let d = decide(&Inputs { failures: year, ..at(last + Duration::seconds(15), &p) });
        assert_eq!(d, Decision::SleepUntil { at: last + Duration::hours(1), backing_off: true });
    }

    #[test]
    fn backoff_never_skips_past_expiry() {
        let p = GroupPolicy { retry_cap_secs: 86_400, retry_floor_secs: 3600, ..policy() };
        let last = datetime!(2026-01-01 02:50 UTC);
        let d = decide(&Inputs {
            failures: failed(10, last, 1.0),
            ..at(datetime!(2026-01-01 02:51 UTC), &p)
        });
        assert_eq!(
            d,
            Decision::SleepUntil { at: datetime!(2026-01-01 02:59:59 UTC), backing_off: true }
        );
    }

    /// The last try before expiry failed: no immediate retry (the spin the daemon's
    /// paused-time test found), the backoff runs on.
    #[test]
    fn a_failed_last_chance_is_not_retried_at_once() {
        let p = GroupPolicy { retry_cap_secs: 600, retry_floor_secs: 60, ..policy() };
        let last = datetime!(2026-01-01 02:59:59.2 UTC);
        let d = decide(&Inputs { failures: failed(6, last, 0.0), ..at(last, &p) });
        assert!(
            matches!(d, Decision::SleepUntil { at, backing_off: true } if at >= last + Duration::seconds(60)),
            "{d:?}"
        );
    }

    #[test]
    fn each_refusal_code_either_backs_off_or_needs_a_token() {
        let p = policy();
        let last = datetime!(2026-01-01 02:30 UTC);
        for &code in ProblemCode::ALL {
            let f = Failures { code: Some(code), ..failed(1, last, 0.0) };
            let d = decide(&Inputs { failures: f, ..at(last + Duration::seconds(1), &p) });
            if is_final_refusal(code) {
                assert!(
                    matches!(&d, Decision::NeedsEnrolment(m) if m.contains(code.as_str()) && m.contains("new token")),
                    "{code}: {d:?}"
                );
            } else {
                assert_eq!(
                    d,
                    Decision::SleepUntil { at: last + Duration::seconds(10), backing_off: true },
                    "{code}"
                );
            }
        }
        for code in [
            ProblemCode::Revoked,
            ProblemCode::RenewalConflict,
            ProblemCode::ExpiredBeyondGrace,
            ProblemCode::CertificateUnknown,
        ] {
            assert!(is_final_refusal(code));
        }
        for code in [
            ProblemCode::Busy,
            ProblemCode::RateLimited,
            ProblemCode::Internal,
            ProblemCode::KeyReused,
            ProblemCode::Unknown,
        ] {
            assert!(!is_final_refusal(code));
        }
    }

    #[test]
    fn expired_within_grace_renews_beyond_needs_a_token() {
        let p = policy();
        let d = decide(&at(datetime!(2026-01-01 03:30 UTC), &p));
        assert!(matches!(d, Decision::RenewNow(r) if r.contains("expired")));
        let d = decide(&at(datetime!(2026-01-01 04:01 UTC), &p));
        assert!(matches!(d, Decision::NeedsEnrolment(m) if m.contains("new token")));
        let no_grace = GroupPolicy { expired_grace_secs: 0, ..p };
        let d = decide(&at(datetime!(2026-01-01 03:00:01 UTC), &no_grace));
        assert!(matches!(d, Decision::NeedsEnrolment(_)));
    }

    #[test]
    fn revoked_and_missing_need_enrolment() {
        let p = policy();
        let now = datetime!(2026-01-01 00:10 UTC);
        assert!(
            matches!(decide(&Inputs { revoked: true, ..at(now, &p) }), Decision::NeedsEnrolment(m) if m.contains("revoked"))
        );
        assert!(matches!(
            decide(&Inputs { cert: None, ..at(now, &p) }),
            Decision::NeedsEnrolment(_)
        ));
    }

    #[test]
    fn superseded_fetches_at_once_unless_backing_off() {
        let p = policy();
        let now = datetime!(2026-01-01 00:10 UTC);
        let d = decide(&Inputs { superseded: true, ..at(now, &p) });
        assert!(matches!(d, Decision::RenewNow(r) if r.contains("renewed")));
        let d = decide(&Inputs { superseded: true, failures: failed(1, now, 0.0), ..at(now, &p) });
        assert_eq!(d, Decision::SleepUntil { at: now + Duration::seconds(10), backing_off: true });
    }

    #[test]
    fn rotate_before_makes_older_certificates_due() {
        let p =
            GroupPolicy { rotate_issued_before: Some(datetime!(2026-01-01 00:30 UTC)), ..policy() };
        let now = datetime!(2026-01-01 00:40 UTC);
        let d = decide(&at(now, &p));
        assert!(matches!(d, Decision::RenewNow(r) if r.contains("rotates")));
        // Obtained after T (even with a backdated notBefore): not rotated again.
        let newer = Validity::new(
            datetime!(2026-01-01 00:28 UTC),
            datetime!(2026-01-01 03:33 UTC),
            Some(datetime!(2026-01-01 00:33 UTC)),
        );
        let d = decide(&Inputs { cert: Some(newer), ..at(now, &p) });
        assert!(matches!(d, Decision::SleepUntil { .. }));
        // T in the future rotates nothing yet.
        let later =
            GroupPolicy { rotate_issued_before: Some(datetime!(2026-01-01 01:00 UTC)), ..policy() };
        let d = decide(&at(now, &later));
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
        let i = |now, p| Inputs { cert: Some(v), ..at(now, p) };
        let d = decide(&i(got + Duration::seconds(1), &p));
        assert_eq!(d, Decision::SleepUntil { at: got + Duration::seconds(30), backing_off: false });
        // Even a policy that asks for renewal at once waits for the floor.
        let eager =
            GroupPolicy { rotate_issued_before: Some(got + Duration::seconds(1)), ..p.clone() };
        let d = decide(&i(got + Duration::seconds(2), &eager));
        assert!(matches!(d, Decision::SleepUntil { at, .. } if at == got + Duration::seconds(10)));
    }
}
