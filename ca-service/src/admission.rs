//! Admission control for issuance: at most `rate` signatures a second, a bounded queue in
//! front of them, and `503 busy` with a spread-out `Retry-After` beyond it.
//!
//! The pacer keeps a virtual schedule ([`lanyard_proto::admission::Pacer`], which
//! `fleet simulate` also runs as its model of the CA). Each admitted issuance takes the next free slot
//! (`max(now, last slot + 1/rate)`) and waits until it. A request whose slot would lie
//! further ahead than the queue horizon (`--max-issuance-queue`, 2 s by default, so at most
//! `rate × horizon` requests wait) is refused at once and takes no slot.
//!
//! A refusal's `Retry-After` comes from a second schedule of retry hints, one per refusal,
//! `1/rate` apart and starting where the backlog ends: the n-th request refused in a burst
//! is told to come back after `backlog + n/rate` seconds (rounded up, at least 1, at most
//! [`MAX_RETRY_AFTER_SECS`]). Refused devices thus return spread over the time the CA needs
//! to serve them, at the rate it can serve them, instead of landing in the same second.
//!
//! Only enrolment and renewal go through the pacer, and only once every check has passed
//! (authentication, replays of an earlier answer, policy, the profile): a retry answered
//! with the certificate already issued, or a request refused for what it asks, is never
//! charged a slot. A request that gave up while waiting (its client went away) leaves its
//! slot unused. Check-ins, CRLs, OCSP and CA certificates never wait here.
//!
//! Refusals are not audited one by one (they carry no decision about a device); they are
//! counted ([`AdmissionStats`], shown by `/healthz`) and logged once per 10 s.

use crate::error::CaError;
use lanyard_proto::admission::Admission;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Default queue horizon (`--max-issuance-queue`), in seconds.
pub const DEFAULT_MAX_QUEUE_SECS: f64 = 2.0;
/// Longest queue horizon accepted: a queued request must still finish within the CA's
/// whole-request timeout (30 s) and a Lambda's (10 s).
pub const MAX_QUEUE_SECS_LIMIT: f64 = 8.0;
/// Longest `Retry-After` a refusal gives, however long the backlog of refusals.
pub use lanyard_proto::admission::MAX_RETRY_AFTER_SECS;
/// Highest rate accepted (a pacer above this would be no limit at all).
pub const MAX_RATE: f64 = 100_000.0;
/// Refusals are logged at most this often (with their count).
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// What the pacer allows: `rate` issuances a second, `max_queue` ahead at most.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdmissionLimits {
    pub rate: f64,
    pub max_queue: Duration,
}

impl AdmissionLimits {
    /// Checks a rate (issuances a second) and a queue horizon (seconds).
    pub fn new(rate: f64, max_queue_secs: f64) -> Result<Self, String> {
        if !rate.is_finite() || rate <= 0.0 || rate > MAX_RATE {
            return Err(format!(
                "the issuance rate must be a number of issuances a second above 0 and at most {MAX_RATE}, not {rate}"
            ));
        }
        if !max_queue_secs.is_finite() || !(0.0..=MAX_QUEUE_SECS_LIMIT).contains(&max_queue_secs) {
            return Err(format!(
                "the issuance queue must be between 0 and {MAX_QUEUE_SECS_LIMIT} seconds, not {max_queue_secs}"
            ));
        }
        Ok(AdmissionLimits { rate, max_queue: Duration::from_secs_f64(max_queue_secs) })
    }

    /// The serverless CA's limits from its environment: `LANYARD_MAX_ISSUANCE_RATE` (for
    /// the whole deployment; unset, empty or 0: unlimited), shared evenly by
    /// `LANYARD_ISSUANCE_INSTANCES` concurrent instances (the function's reserved
    /// concurrency; default 1), and `LANYARD_MAX_ISSUANCE_QUEUE` seconds (default 2).
    pub fn from_env() -> Result<Option<Self>, CaError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`Self::from_env`] with the variables read by `get`.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, CaError> {
        let var = |k: &str| get(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let number = |k: &str, v: String| {
            v.parse::<f64>().map_err(|_| CaError::Config(format!("{k}={v:?} is not a number")))
        };
        let Some(rate) = var("LANYARD_MAX_ISSUANCE_RATE") else { return Ok(None) };
        let rate = number("LANYARD_MAX_ISSUANCE_RATE", rate)?;
        if rate == 0.0 {
            return Ok(None);
        }
        let instances = match var("LANYARD_ISSUANCE_INSTANCES") {
            Some(v) => number("LANYARD_ISSUANCE_INSTANCES", v)?,
            None => 1.0,
        };
        if instances.is_nan() || instances < 1.0 {
            return Err(CaError::Config(format!(
                "LANYARD_ISSUANCE_INSTANCES must be at least 1, not {instances}"
            )));
        }
        let queue = match var("LANYARD_MAX_ISSUANCE_QUEUE") {
            Some(v) => number("LANYARD_MAX_ISSUANCE_QUEUE", v)?,
            None => DEFAULT_MAX_QUEUE_SECS,
        };
        AdmissionLimits::new(rate / instances, queue)
            .map(Some)
            .map_err(|e| CaError::Config(format!("LANYARD_MAX_ISSUANCE_RATE: {e}")))
    }
}

/// Counters since start, for `/healthz` and the logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct AdmissionStats {
    /// Issuances a second allowed.
    pub rate: f64,
    /// Seconds a request may wait for its slot.
    pub max_queue_secs: f64,
    /// Requests given a slot (at once or after waiting).
    pub admitted: u64,
    /// Of those, the ones that had to wait.
    pub queued: u64,
    /// Requests refused with `503 busy`.
    pub refused: u64,
    /// Seconds of issuance already promised (how far ahead the last slot lies).
    pub backlog_secs: f64,
}

/// A refusal: how long the backlog is and when this request should come back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Refusal {
    pub retry_after_secs: u64,
    pub backlog: Duration,
}

impl From<Refusal> for CaError {
    fn from(r: Refusal) -> CaError {
        CaError::Unavailable {
            reason: format!(
                "issuance is at its limit, with {:.1}s of requests queued",
                r.backlog.as_secs_f64()
            ),
            retry_after_secs: r.retry_after_secs,
        }
    }
}

#[derive(Debug)]
struct Schedule {
    /// The slots and retry hints, in seconds since `Pacer::epoch` (the same state machine
    /// `fleet simulate` models the CA with).
    pacer: lanyard_proto::admission::Pacer,
    /// Refusals not yet logged, and when the last log line was written.
    unreported: u64,
    reported_at: Option<Instant>,
}

/// The issuance pacer (see the module documentation).
#[derive(Debug)]
pub struct Pacer {
    limits: AdmissionLimits,
    epoch: Instant,
    /// `1 / rate`, rounded up to the nanosecond (so `rate` of them never fit in less than
    /// a second).
    spacing: Duration,
    /// When the last issuance was let through (see [`Pacer::admit`]). An async mutex,
    /// which is fair: admitted requests pass one by one in the order they reach it.
    last_grant: tokio::sync::Mutex<Option<Instant>>,
    schedule: Mutex<Schedule>,
    admitted: AtomicU64,
    queued: AtomicU64,
    refused: AtomicU64,
}

impl Pacer {
    pub fn new(limits: AdmissionLimits) -> Self {
        let spacing = if limits.rate.is_finite() && limits.rate > 0.0 {
            Duration::from_nanos((1e9 / limits.rate).ceil().min(u64::MAX as f64) as u64)
        } else {
            Duration::ZERO
        };
        Pacer {
            limits,
            epoch: Instant::now(),
            spacing,
            schedule: Mutex::new(Schedule {
                pacer: lanyard_proto::admission::Pacer::new(
                    limits.rate,
                    limits.max_queue.as_secs_f64(),
                ),
                unreported: 0,
                reported_at: None,
            }),
            last_grant: tokio::sync::Mutex::new(None),
            admitted: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    pub fn limits(&self) -> AdmissionLimits {
        self.limits
    }

    /// Takes the next slot and returns how long to wait for it, or refuses without
    /// taking one. Does not sleep.
    pub fn reserve(&self, now: Instant) -> Result<Duration, Refusal> {
        // A poisoned lock still holds a consistent schedule (plain values, no invariants
        // across fields), so keep using it.
        let mut s = self.schedule.lock().unwrap_or_else(|p| p.into_inner());
        let t = now.saturating_duration_since(self.epoch).as_secs_f64();
        let retry_after_secs = match s.pacer.admit(t) {
            Admission::At(slot) => {
                let wait = Duration::from_secs_f64((slot - t).max(0.0));
                self.admitted.fetch_add(1, Ordering::Relaxed);
                if !wait.is_zero() {
                    self.queued.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(wait);
            }
            // Refused: no slot taken; the hint comes after the backlog and after the hints
            // already given.
            Admission::Busy { retry_after_secs } => retry_after_secs,
        };
        let backlog = Duration::from_secs_f64(s.pacer.backlog_secs(t));
        self.refused.fetch_add(1, Ordering::Relaxed);
        s.unreported += 1;
        if s.reported_at.is_none_or(|t| now - t >= REPORT_EVERY) {
            tracing::warn!(
                refused = s.unreported,
                backlog_secs = format_args!("{:.1}", backlog.as_secs_f64()),
                rate = self.limits.rate,
                retry_after_secs,
                "issuance over its rate (--max-issuance-rate): requests refused with 503 busy"
            );
            s.unreported = 0;
            s.reported_at = Some(now);
        }
        Err(Refusal { retry_after_secs, backlog })
    }

    /// Waits for the next slot, or refuses at once with `503 busy` and `Retry-After`.
    ///
    /// Admitted, it returns `stamp()` read at the instant the issuance is let through: the
    /// caller signs and records with that time. Slots are `1 / rate` apart, but a task can
    /// wake late (a busy machine), and two late ones would then go through together; so
    /// the admitted pass one at a time, in order, each held `1 / rate` after the previous
    /// grant as measured when it is made. The recorded times are therefore never closer
    /// than `1 / rate`, and no second of the audit trail holds more issuances than the
    /// rate. Real grant times go back into the schedule, so lateness counts against the
    /// queue bound and lengthens the `Retry-After` of those refused.
    pub async fn admit<T>(&self, stamp: impl Fn() -> T) -> Result<T, CaError> {
        let wait = self.reserve(Instant::now())?;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let mut last = self.last_grant.lock().await;
        if let Some(l) = *last {
            tokio::time::sleep_until(l + self.spacing).await;
        }
        let now = Instant::now();
        *last = Some(now);
        {
            let mut s = self.schedule.lock().unwrap_or_else(|p| p.into_inner());
            let t = now.saturating_duration_since(self.epoch).as_secs_f64();
            s.pacer.granted(t);
        }
        Ok(stamp())
    }

    pub fn stats(&self) -> AdmissionStats {
        let backlog = {
            let s = self.schedule.lock().unwrap_or_else(|p| p.into_inner());
            s.pacer.backlog_secs(Instant::now().saturating_duration_since(self.epoch).as_secs_f64())
        };
        AdmissionStats {
            rate: self.limits.rate,
            max_queue_secs: self.limits.max_queue.as_secs_f64(),
            admitted: self.admitted.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            backlog_secs: backlog,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn pacer(rate: f64, queue: f64) -> Arc<Pacer> {
        Arc::new(Pacer::new(AdmissionLimits::new(rate, queue).expect("limits")))
    }

    #[test]
    fn limits_are_checked() {
        assert!(AdmissionLimits::new(0.0, 2.0).is_err());
        assert!(AdmissionLimits::new(-1.0, 2.0).is_err());
        assert!(AdmissionLimits::new(f64::NAN, 2.0).is_err());
        assert!(AdmissionLimits::new(5.0, -1.0).is_err());
        assert!(AdmissionLimits::new(5.0, 60.0).is_err());
        let l = AdmissionLimits::new(2.5, 0.0).expect("a fraction of a second is a rate");
        assert_eq!(l.max_queue, Duration::ZERO);
    }

    #[test]
    fn the_serverless_limits_come_from_the_environment() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())
        };
        assert_eq!(AdmissionLimits::from_vars(env(&[])).ok(), Some(None));
        assert_eq!(
            AdmissionLimits::from_vars(env(&[("LANYARD_MAX_ISSUANCE_RATE", "0")])).ok(),
            Some(None)
        );
        let shared = AdmissionLimits::from_vars(env(&[
            ("LANYARD_MAX_ISSUANCE_RATE", "50"),
            ("LANYARD_ISSUANCE_INSTANCES", "25"),
        ]));
        assert_eq!(shared.ok().flatten(), AdmissionLimits::new(2.0, DEFAULT_MAX_QUEUE_SECS).ok());
        let e = AdmissionLimits::from_vars(env(&[("LANYARD_MAX_ISSUANCE_RATE", "fast")]));
        assert!(e.is_err_and(|e| e.to_string().contains("LANYARD_MAX_ISSUANCE_RATE")));
        let e = AdmissionLimits::from_vars(env(&[
            ("LANYARD_MAX_ISSUANCE_RATE", "50"),
            ("LANYARD_ISSUANCE_INSTANCES", "0"),
        ]));
        assert!(e.is_err_and(|e| e.to_string().contains("LANYARD_ISSUANCE_INSTANCES")));
    }

    /// At 10/s with a 2 s queue, 100 requests at once: those admitted run 100 ms apart,
    /// the rest are refused at once with spread-out `Retry-After`, and take no slot.
    #[tokio::test(start_paused = true)]
    async fn a_burst_is_paced_and_the_excess_refused_with_spread_retry_after() {
        let p = pacer(10.0, 2.0);
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..100 {
            let p = p.clone();
            tasks.spawn(async move {
                let asked = Instant::now();
                let r = p.admit(Instant::now).await;
                (r, asked.elapsed())
            });
        }
        let mut admitted_at = Vec::new();
        let mut retry_after = Vec::new();
        while let Some(done) = tasks.join_next().await {
            let (r, took) = done.expect("task");
            match r {
                Ok(at) => admitted_at.push(at),
                Err(CaError::Unavailable { retry_after_secs, .. }) => {
                    assert!(took.is_zero(), "a refusal must not wait: it took {took:?}");
                    retry_after.push(retry_after_secs);
                }
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        // Slots at 0, 0.1, ..., 2.0 s: 21 admitted, the queue never longer than 2 s.
        assert_eq!(admitted_at.len(), 21, "admitted: {}", admitted_at.len());
        admitted_at.sort();
        for w in admitted_at.windows(2) {
            assert!(w[1] - w[0] >= Duration::from_millis(100), "two issuances closer than 100 ms");
        }
        let last = admitted_at.last().copied().unwrap_or(start) - start;
        assert!(last <= Duration::from_secs(2), "waited {last:?}, beyond the 2 s queue");

        assert_eq!(retry_after.len(), 79);
        assert!(retry_after.iter().all(|&s| s >= 1), "{retry_after:?}");
        retry_after.sort_unstable();
        // 79 refusals at 10/s need 7.9 s after the 2.1 s backlog: hints 3 s ... 10 s,
        // no more than 10 (the rate) in any one second.
        assert_eq!(retry_after.first(), Some(&3), "{retry_after:?}");
        assert_eq!(retry_after.last(), Some(&10), "{retry_after:?}");
        for s in 3..=10 {
            let n = retry_after.iter().filter(|&&x| x == s).count();
            assert!(n <= 10, "{n} refusals told to come back after {s}s: {retry_after:?}");
        }

        // Refusals took no slot: once the queue has drained (2.1 s), a request runs at once.
        tokio::time::sleep_until(start + Duration::from_millis(2_100)).await;
        let t = Instant::now();
        p.admit(|| ()).await.expect("the queue has drained");
        assert!(t.elapsed().is_zero(), "waited {:?} for slots refused requests took", t.elapsed());

        let stats = p.stats();
        assert_eq!((stats.admitted, stats.refused, stats.queued), (22, 79, 20));
    }

    /// Tasks that wake late (a busy machine) do not go through together: each grant is
    /// held `1 / rate` after the previous one, so the recorded times keep the rate.
    #[tokio::test(start_paused = true)]
    async fn late_wakeups_do_not_bunch_issuances() {
        let p = pacer(10.0, 5.0);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let p = p.clone();
            tasks.spawn(async move { p.admit(Instant::now).await });
        }
        // Every task takes its slot (0, 0.1, ..., 0.9 s) and sleeps...
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        // ...and all of them wake 2 s late, together.
        tokio::time::advance(Duration::from_secs(2)).await;
        let mut at = Vec::new();
        while let Some(done) = tasks.join_next().await {
            at.push(done.expect("task").expect("admitted"));
        }
        at.sort();
        assert_eq!(at.len(), 10);
        for w in at.windows(2) {
            assert!(w[1] - w[0] >= Duration::from_millis(100), "grants {:?} apart", w[1] - w[0]);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_pacer_admits_at_once_and_forgets_old_hints() {
        let p = pacer(1.0, 0.0);
        let t0 = Instant::now();
        assert_eq!(p.reserve(t0), Ok(Duration::ZERO));
        // No queue: the second request in the same second is refused.
        let r = p.reserve(t0).expect_err("refused");
        assert_eq!(r.retry_after_secs, 1);
        let r = p.reserve(t0).expect_err("refused");
        assert_eq!(r.retry_after_secs, 2, "the second refusal comes back a slot later");
        // Much later the hints are in the past: a refusal starts again from the backlog.
        let t1 = t0 + Duration::from_secs(100);
        assert_eq!(p.reserve(t1), Ok(Duration::ZERO));
        assert_eq!(p.reserve(t1).expect_err("refused").retry_after_secs, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_capped() {
        let p = pacer(0.001, 0.0);
        let t0 = Instant::now();
        assert_eq!(p.reserve(t0), Ok(Duration::ZERO));
        let hints: Vec<u64> =
            (0..5).map(|_| p.reserve(t0).map_or_else(|r| r.retry_after_secs, |_| 0)).collect();
        assert_eq!(hints, [1_000, 2_000, 3_000, MAX_RETRY_AFTER_SECS, MAX_RETRY_AFTER_SECS]);
    }
}
