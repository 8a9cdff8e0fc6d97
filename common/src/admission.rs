//! The CA's issuance pacing, as a pure state machine over time in seconds: used by
//! `lanyard-ca serve --max-issuance-rate` and by the model of the CA inside
//! `lanyard-ca fleet simulate`, so the simulator predicts what the CA does.
//!
//! Each admitted issuance takes the next free slot, `1 / rate` seconds after the previous
//! one, and waits for it. A request whose slot lies further ahead than the queue bound is
//! refused at once (503 `busy`); its `Retry-After` is a reservation past the queue, at the
//! same rate, so that refused clients come back spread over the time the backlog needs
//! instead of landing together in the next second.

/// The longest `Retry-After` the pacer gives.
pub const MAX_RETRY_AFTER_SECS: u64 = 3600;

/// What the pacer answers a request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Admission {
    /// Admitted: issue at this instant (seconds, on the caller's clock), which is `now`
    /// or later, within the queue bound.
    At(f64),
    /// Refused: come back after this many whole seconds (at least one).
    Busy { retry_after_secs: u64 },
}

/// Issuance pacing at a fixed rate with a bounded queue.
#[derive(Clone, Debug)]
pub struct Pacer {
    interval: f64,
    max_queue: f64,
    next_free: f64,
    next_reservation: f64,
}

impl Pacer {
    /// `rate`: issuances per second (> 0); `max_queue_secs`: the longest an admitted
    /// request may wait for its slot.
    pub fn new(rate: f64, max_queue_secs: f64) -> Pacer {
        let rate = if rate.is_finite() && rate > 0.0 { rate } else { f64::MAX };
        Pacer {
            interval: 1.0 / rate,
            max_queue: max_queue_secs.max(0.0),
            next_free: f64::MIN,
            next_reservation: f64::MIN,
        }
    }

    /// Admits or refuses a request arriving at `now`.
    pub fn admit(&mut self, now: f64) -> Admission {
        let slot = self.next_free.max(now);
        // (A nanosecond of slack: slots are sums of floats.)
        if slot - now <= self.max_queue + 1e-9 {
            self.next_free = slot + self.interval;
            return Admission::At(slot);
        }
        // Past the queue: reserve a later instant at the same rate. Reservations are
        // advice (nothing is held for them); they keep refused clients from coming back
        // together.
        let latest = now + MAX_RETRY_AFTER_SECS as f64;
        let at = self.next_reservation.max(slot).min(latest);
        self.next_reservation = (at + self.interval).min(latest);
        Admission::Busy {
            // (Less a microsecond before rounding up: hints are sums of floats.)
            retry_after_secs: ((at - now - 1e-6).ceil() as u64).clamp(1, MAX_RETRY_AFTER_SECS),
        }
    }

    /// An admitted request was let through at `t` (later than its slot when the caller
    /// woke late): the next slot is no earlier than one interval after it, so that
    /// lateness counts against the queue bound and the hints given to refused requests.
    pub fn granted(&mut self, t: f64) {
        self.next_free = self.next_free.max(t + self.interval);
    }

    /// Seconds of issuance already queued at `now`.
    pub fn backlog_secs(&self, now: f64) -> f64 {
        (self.next_free - now).max(0.0)
    }

    /// Requests waiting at `now` (the backlog in slots).
    pub fn queued(&self, now: f64) -> u64 {
        (self.backlog_secs(now) / self.interval).ceil() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admitted_requests_are_spaced_at_the_rate_and_the_queue_is_bounded() {
        let mut p = Pacer::new(10.0, 2.0);
        let answers: Vec<Admission> = (0..50).map(|_| p.admit(100.0)).collect();
        let slots: Vec<f64> = answers
            .iter()
            .filter_map(|a| match a {
                Admission::At(t) => Some(*t),
                Admission::Busy { .. } => None,
            })
            .collect();
        // 2 s of queue at 10/s: the one at once plus 20 waiting.
        assert_eq!(slots.len(), 21);
        assert!(slots.windows(2).all(|w| (w[1] - w[0] - 0.1).abs() < 1e-9));
        assert!(slots.iter().all(|t| *t - 100.0 <= 2.0 + 1e-9));
        assert_eq!(p.queued(100.0), 21);
    }

    #[test]
    fn refusals_do_not_take_slots_and_their_retry_after_spreads_at_the_rate() {
        let mut p = Pacer::new(10.0, 2.0);
        let mut busy = Vec::new();
        for _ in 0..121 {
            if let Admission::Busy { retry_after_secs } = p.admit(0.0) {
                busy.push(retry_after_secs);
            }
        }
        assert_eq!(busy.len(), 100);
        // 100 refused at 10/s: told to come back over the 10 s after the queue drains,
        // about 10 per second, not all at once.
        assert!(busy.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(busy[0], 3);
        assert!((12..=13).contains(&busy[99]));
        for s in 4..=11 {
            let n = busy.iter().filter(|b| **b == s).count();
            assert!((9..=11).contains(&n), "{n} told to come back after {s}s");
        }
        // The queue drained: a request 3 s later is admitted at once.
        assert_eq!(p.admit(3.0), Admission::At(3.0));
    }

    #[test]
    fn an_idle_pacer_admits_at_once_and_an_unlimited_one_always() {
        let mut p = Pacer::new(1.0, 0.0);
        assert_eq!(p.admit(5.0), Admission::At(5.0));
        assert!(matches!(p.admit(5.5), Admission::Busy { retry_after_secs: 1 }));
        assert_eq!(p.admit(6.0), Admission::At(6.0));
        let mut u = Pacer::new(f64::INFINITY, 0.0);
        assert!((0..1000).all(|_| matches!(u.admit(1.0), Admission::At(t) if t == 1.0)));
    }
}
