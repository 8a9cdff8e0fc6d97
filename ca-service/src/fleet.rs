//! `lanyard-ca fleet simulate`: a fleet's renewals in virtual time, for fleet managers
//! choosing a policy and a CA capacity.
//!
//! Every simulated device runs the agent's own decision ([`lanyard_proto::renewal`]) with
//! its own jitters, against a model of the CA's admission control (the same
//! [`lanyard_proto::admission::Pacer`] `serve --max-issuance-rate` uses). Devices learn a
//! pushed policy at their next check-in (each has its own phase in the check-in
//! interval), fail during an outage and back off, and obey `Retry-After`. Events run in
//! time order from one heap, so a million devices over a month take seconds.

use lanyard_proto::GroupPolicy;
use lanyard_proto::ProblemCode;
use lanyard_proto::admission::{Admission, Pacer};
use lanyard_proto::renewal::{self, Decision, Failures, Inputs, Validity};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use time::{Duration, OffsetDateTime};

/// What to simulate. Times are seconds from the start of the simulation.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub policy: GroupPolicy,
    pub devices: u32,
    pub days: u32,
    /// The CA's (or KMS's) issuances per second.
    pub capacity: f64,
    /// How long an admitted request may queue at the CA before it is refused as busy.
    pub max_queue_secs: f64,
    /// How often agents check in (`[renewal] check_interval`).
    pub checkin_interval_secs: u64,
    /// A "rotate everything issued before now" push at this time.
    pub rotate_at: Option<u64>,
    /// The CA is unreachable in `[from, to)`.
    pub outage: Option<(u64, u64)>,
    /// The whole fleet is flashed and enrolled within one hour from this time; without it
    /// the fleet starts in its steady state (certificates of every age).
    pub enrol_all_at: Option<u64>,
    /// KMS list price per 10,000 asymmetric signatures, in US dollars.
    pub usd_per_10k_signatures: f64,
    pub seed: u64,
}

/// What happened, as `fleet simulate --json` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub devices: u32,
    pub days: u32,
    pub capacity_per_sec: f64,
    pub checkin_interval_secs: u64,
    pub enrolments: u64,
    pub renewals: u64,
    /// Renewals per hour over the period, outside rotation and outage recovery hours.
    pub mean_per_hour: f64,
    pub peak_per_hour: u64,
    pub peak_to_mean: f64,
    /// Requests refused as busy (each came back after its `Retry-After`).
    pub busy_refusals: u64,
    /// Attempts that failed because the CA was down.
    pub failed_attempts: u64,
    /// The longest queue at the CA, in requests.
    pub max_queue: u64,
    /// The longest an admitted request waited at the CA.
    pub max_wait_secs: f64,
    /// The longest from a device's renewal time to its new certificate (retries included).
    pub max_delay_secs: f64,
    pub devices_expired: u64,
    /// From the push until the last device holds a certificate issued after it.
    pub rotation_complete_secs: Option<f64>,
    /// From the end of the outage until no device is still behind because of it.
    pub outage_recovery_secs: Option<f64>,
    pub signatures: u64,
    pub signing_cost_usd: f64,
    /// Renewals (enrolments apart) in each hour of the period.
    pub renewals_per_hour: Vec<u64>,
    pub enrolments_per_hour: Vec<u64>,
    /// Hours left out of the mean and peak (rotation and outage recovery).
    pub excluded_hours: Vec<u64>,
}

const EPOCH: OffsetDateTime = time::macros::datetime!(2026-01-01 00:00 UTC);
/// The CA backdates notBefore by five minutes.
const BACKDATE: f64 = 300.0;

fn at(t: f64) -> OffsetDateTime {
    EPOCH + Duration::seconds_f64(t)
}
fn secs(t: OffsetDateTime) -> f64 {
    (t - EPOCH).as_seconds_f64()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// The agent's loop wakes and decides.
    Wake,
    /// The device's first check-in after the rotation push.
    LearnRotation,
    /// The CA answers an admitted request.
    Issued,
    /// The device enrols (an `--enrol-all-at` fleet).
    Enrol,
}

#[derive(Clone, Copy, Debug, Default)]
struct Device {
    issued_at: f64,
    not_after: f64,
    jitter: f64,
    resync: bool,
    failures: u32,
    last_failure: f64,
    failure_jitter: f64,
    busy: bool,
    retry_not_before: Option<f64>,
    rotated: bool,
    enrolled: bool,
    /// When the current renewal became due (first RenewNow), for the delay figure.
    due_since: Option<f64>,
    /// When the request being answered arrived at the CA.
    requested_at: f64,
    /// A request is at the CA, its answer not yet in.
    pending: bool,
    /// The certificate ran out before a renewal arrived, at some point.
    expired_ever: bool,
    /// Needs a new token (beyond the grace): out of the simulation.
    lost: bool,
}

/// The heap holds (time in milliseconds, event, device).
type Heap = BinaryHeap<Reverse<(i64, Event, u32)>>;

fn push(heap: &mut Heap, t: f64, e: Event, d: u32) {
    heap.push(Reverse(((t * 1000.0).round() as i64, e, d)));
}

pub fn simulate(s: &Scenario) -> Report {
    let mut rng = rand::rngs::StdRng::seed_from_u64(s.seed);
    let end = f64::from(s.days) * 86_400.0;
    let hours = (s.days as usize) * 24;
    let lifetime = s.policy.lifetime_secs as f64;
    let rotated_policy = s
        .rotate_at
        .map(|t| GroupPolicy { rotate_issued_before: Some(at(t as f64)), ..s.policy.clone() });
    let mut pacer = Pacer::new(s.capacity, s.max_queue_secs);
    let mut heap: Heap = BinaryHeap::with_capacity(s.devices as usize + 16);
    let mut devices = vec![Device::default(); s.devices as usize];
    let checkin = s.checkin_interval_secs.max(1) as f64;

    for (i, d) in devices.iter_mut().enumerate() {
        let i = i as u32;
        if let Some(t0) = s.enrol_all_at {
            push(&mut heap, t0 as f64 + rng.random::<f64>() * 3600.0, Event::Enrol, i);
        } else {
            // Steady state: the certificate's age is a uniform share of its own renewal
            // interval (what a fleet renewing for a long time looks like).
            d.jitter = rng.random();
            let offset = lifetime * (s.policy.renew_fraction - s.policy.jitter_fraction * d.jitter);
            d.issued_at = -rng.random::<f64>() * offset;
            d.not_after = d.issued_at + lifetime;
            d.enrolled = true;
            push(&mut heap, 0.0, Event::Wake, i);
        }
        if let Some(t) = s.rotate_at {
            // The first check-in at or after the push, at this device's phase.
            let phase = rng.random::<f64>() * checkin;
            let t = t as f64;
            let k = ((t - phase) / checkin).ceil().max(0.0);
            push(&mut heap, phase + k * checkin, Event::LearnRotation, i);
        }
    }

    let mut r = Report {
        devices: s.devices,
        days: s.days,
        capacity_per_sec: s.capacity,
        checkin_interval_secs: s.checkin_interval_secs,
        enrolments: 0,
        renewals: 0,
        mean_per_hour: 0.0,
        peak_per_hour: 0,
        peak_to_mean: 0.0,
        busy_refusals: 0,
        failed_attempts: 0,
        max_queue: 0,
        max_wait_secs: 0.0,
        max_delay_secs: 0.0,
        devices_expired: 0,
        rotation_complete_secs: None,
        outage_recovery_secs: None,
        signatures: 0,
        signing_cost_usd: 0.0,
        renewals_per_hour: vec![0; hours],
        enrolments_per_hour: vec![0; hours],
        excluded_hours: Vec::new(),
    };
    // Devices still holding a certificate from before the push; devices behind because
    // of the outage (they failed during it and have not renewed since).
    let mut rotation = Rotation {
        unrotated: if s.rotate_at.is_some() { u64::from(s.devices) } else { 0 },
        done: None,
    };
    let mut behind = std::collections::HashSet::new();
    let mut recovery_done: Option<f64> = None;
    let down = |t: f64| s.outage.is_some_and(|(a, b)| t >= a as f64 && t < b as f64);

    let push_at = s.rotate_at.map(|t| t as f64);
    while let Some(Reverse((ms, ev, i))) = heap.pop() {
        let now = ms as f64 / 1000.0;
        if now >= end {
            break;
        }
        let d = &mut devices[i as usize];
        if d.lost {
            continue;
        }
        match ev {
            Event::LearnRotation => {
                d.rotated = true;
                if d.enrolled && !d.pending {
                    push(&mut heap, now, Event::Wake, i);
                }
            }
            Event::Enrol => {
                if down(now) {
                    r.failed_attempts += 1;
                    push(&mut heap, now + 60.0 + rng.random::<f64>() * 60.0, Event::Enrol, i);
                    continue;
                }
                match pacer.admit(now) {
                    Admission::At(slot) => {
                        r.admitted(pacer.queued(now), slot - now);
                        d.enrolled = true;
                        // Enrolment spreads the first renewal over the whole interval.
                        finish(d, slot, lifetime, &mut rng, true);
                        r.enrolments += 1;
                        r.signatures += 1;
                        if let Some(h) = hour(slot, hours) {
                            r.enrolments_per_hour[h] += 1;
                        }
                        if push_at.is_some_and(|t| slot >= t) {
                            rotation.one_more(slot);
                        }
                        push(&mut heap, slot, Event::Wake, i);
                    }
                    Admission::Busy { retry_after_secs } => {
                        r.busy_refusals += 1;
                        push(&mut heap, now + retry_after_secs as f64, Event::Enrol, i);
                    }
                }
            }
            Event::Issued => {
                d.pending = false;
                let before_push = push_at.is_some_and(|t| d.issued_at < t);
                if now > d.not_after {
                    d.expired_ever = true;
                }
                if let Some(since) = d.due_since.take() {
                    r.max_delay_secs = r.max_delay_secs.max(now - since);
                }
                let rotated = rotated_policy.as_ref().is_some_and(|p| {
                    d.rotated && renewal::rotation_applies(p, validity(d), at(d.requested_at))
                });
                finish(d, now, lifetime, &mut rng, d.failures > 0 || rotated);
                r.renewals += 1;
                r.signatures += 1;
                if let Some(h) = hour(now, hours) {
                    r.renewals_per_hour[h] += 1;
                }
                if before_push && push_at.is_some_and(|t| now >= t) {
                    rotation.one_more(now);
                }
                if behind.remove(&i)
                    && behind.is_empty()
                    && s.outage.is_some_and(|(_, b)| now >= b as f64)
                {
                    recovery_done = Some(now);
                }
                push(&mut heap, now, Event::Wake, i);
            }
            Event::Wake => {
                if !d.enrolled || d.pending {
                    continue;
                }
                let policy = match (&rotated_policy, d.rotated) {
                    (Some(p), true) => p,
                    _ => &s.policy,
                };
                let inputs = Inputs {
                    now: at(now),
                    cert: Some(validity(d)),
                    policy,
                    jitter: d.jitter,
                    failures: Failures {
                        count: d.failures,
                        last_at: (d.failures > 0).then(|| at(d.last_failure)),
                        jitter: d.failure_jitter,
                        code: d.busy.then_some(ProblemCode::Busy),
                        retry_not_before: d.retry_not_before.map(at),
                    },
                    revoked: false,
                    resync: d.resync,
                    superseded: false,
                };
                match renewal::decide(&inputs) {
                    Decision::SleepUntil { at: t, .. } => {
                        // The agent also wakes every 30 s to read the clock; the decision
                        // stays the same until `t`, so only `t` matters here.
                        push(&mut heap, secs(t).max(now + 0.001), Event::Wake, i);
                    }
                    Decision::NeedsEnrolment(_) => {
                        d.lost = true;
                        d.expired_ever = true;
                    }
                    Decision::RenewNow(_) => {
                        d.due_since.get_or_insert(now);
                        if now > d.not_after {
                            d.expired_ever = true;
                        }
                        if down(now) {
                            r.failed_attempts += 1;
                            fail(d, now, None, &mut rng);
                            behind.insert(i);
                            push(&mut heap, now + 0.001, Event::Wake, i);
                            continue;
                        }
                        match pacer.admit(now) {
                            Admission::At(slot) => {
                                r.admitted(pacer.queued(now), slot - now);
                                d.requested_at = now;
                                d.pending = true;
                                push(&mut heap, slot, Event::Issued, i);
                            }
                            Admission::Busy { retry_after_secs } => {
                                r.busy_refusals += 1;
                                fail(d, now, Some(now + retry_after_secs as f64), &mut rng);
                                push(&mut heap, now + 0.001, Event::Wake, i);
                            }
                        }
                    }
                }
            }
        }
    }
    r.devices_expired = devices
        .iter()
        .filter(|d| d.expired_ever || (d.enrolled && !d.pending && d.not_after < end))
        .count() as u64;

    // Hours of a rotation or an outage recovery are measured by their completion time;
    // they are left out of the steady-state figures. So are the enrolment hour's.
    let mut excluded = vec![false; hours];
    let mut exclude = |from: f64, to: f64| {
        let (a, b) = ((from / 3600.0).floor() as usize, (to / 3600.0).ceil() as usize);
        for h in excluded.iter_mut().take(b.min(hours)).skip(a) {
            *h = true;
        }
    };
    if let Some(t) = s.rotate_at {
        let done = rotation.done.unwrap_or(end);
        exclude(t as f64, done);
        r.rotation_complete_secs = rotation.done.map(|d| d - t as f64);
    }
    if let Some((a, b)) = s.outage {
        let done = recovery_done.unwrap_or(if behind.is_empty() { b as f64 } else { end });
        exclude(a as f64, done);
        r.outage_recovery_secs =
            Some(done - b as f64).filter(|_| behind.is_empty() || recovery_done.is_some());
    }
    let counted: Vec<u64> =
        r.renewals_per_hour.iter().zip(&excluded).filter(|(_, x)| !**x).map(|(n, _)| *n).collect();
    r.excluded_hours =
        excluded.iter().enumerate().filter(|(_, x)| **x).map(|(h, _)| h as u64).collect();
    if !counted.is_empty() {
        // With --enrol-all-at, the first renewal interval after the enrolment is the
        // fleet flattening out: it counts like any other.
        r.mean_per_hour = counted.iter().sum::<u64>() as f64 / counted.len() as f64;
        r.peak_per_hour = counted.iter().copied().max().unwrap_or(0);
        if r.mean_per_hour > 0.0 {
            r.peak_to_mean = r.peak_per_hour as f64 / r.mean_per_hour;
        }
    }
    r.signing_cost_usd = r.signatures as f64 / 10_000.0 * s.usd_per_10k_signatures;
    r
}

/// Devices still holding a certificate from before the push, and when the last one
/// stopped.
struct Rotation {
    unrotated: u64,
    done: Option<f64>,
}

impl Rotation {
    /// One more device holds a certificate issued after the push, at `t`.
    fn one_more(&mut self, t: f64) {
        self.unrotated = self.unrotated.saturating_sub(1);
        if self.unrotated == 0 {
            self.done.get_or_insert(t);
        }
    }
}

impl Report {
    /// A request admitted with `queued` ahead of it, to wait `wait` seconds.
    fn admitted(&mut self, queued: u64, wait: f64) {
        self.max_queue = self.max_queue.max(queued);
        self.max_wait_secs = self.max_wait_secs.max(wait);
    }
}

fn hour(t: f64, hours: usize) -> Option<usize> {
    let h = (t / 3600.0).floor();
    (h >= 0.0 && (h as usize) < hours).then_some(h as usize)
}

fn validity(d: &Device) -> Validity {
    Validity::new(at(d.issued_at - BACKDATE), at(d.not_after), Some(at(d.issued_at)))
}

/// A new certificate at `t`.
fn finish(d: &mut Device, t: f64, lifetime: f64, rng: &mut impl Rng, off_schedule: bool) {
    d.issued_at = t;
    d.not_after = t + lifetime;
    d.jitter = rng.random();
    d.resync = off_schedule;
    d.failures = 0;
    d.busy = false;
    d.retry_not_before = None;
}

fn fail(d: &mut Device, now: f64, retry_not_before: Option<f64>, rng: &mut impl Rng) {
    d.failures = d.failures.saturating_add(1);
    d.last_failure = now;
    d.failure_jitter = rng.random();
    d.busy = retry_not_before.is_some();
    d.retry_not_before = retry_not_before;
}

/// A policy file for `--policy-file`: JSON as `policy show` prints it (group and policy)
/// or the policy alone, or TOML with the same keys as the agent's `policy_file`.
pub fn parse_policy(text: &str) -> Result<GroupPolicy, String> {
    if text.trim_start().starts_with('{') {
        serde_json::from_str::<lanyard_proto::policy::PolicyDocument>(text)
            .map(|d| d.policy)
            .or_else(|_| serde_json::from_str(text))
            .map_err(|e| e.to_string())
    } else {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

/// A time from the start of the simulation: `0`, `36h`, `2d`.
pub fn parse_offset(s: &str) -> Result<u64, String> {
    lanyard_proto::duration::parse_or_zero(s)
        .map(|d| d.as_secs())
        .map_err(|e| format!("{s:?}: {e} (a time from the start, e.g. 0, 36h or 2d)"))
}

/// `FROM..TO`, each a time from the start.
pub fn parse_window(s: &str) -> Result<(u64, u64), String> {
    let (a, b) =
        s.split_once("..").ok_or_else(|| format!("{s:?}: expected FROM..TO, e.g. 2d..3d"))?;
    let (a, b) = (parse_offset(a)?, parse_offset(b)?);
    if b <= a {
        return Err(format!("{s:?}: the outage must end after it starts"));
    }
    Ok((a, b))
}

/// One line per figure, for people.
pub fn render_text(r: &Report) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<24} {v}\n"));
    line("devices", format!("{} over {} days", r.devices, r.days));
    line(
        "capacity",
        format!("{}/s, check-in every {}s", r.capacity_per_sec, r.checkin_interval_secs),
    );
    line("enrolments", r.enrolments.to_string());
    line("renewals", r.renewals.to_string());
    line(
        "renewals per hour",
        format!(
            "mean {:.1}, peak {} (peak/mean {:.2}; {} rotation/outage hours left out)",
            r.mean_per_hour,
            r.peak_per_hour,
            r.peak_to_mean,
            r.excluded_hours.len()
        ),
    );
    line("busy refusals", r.busy_refusals.to_string());
    line("failed (CA down)", r.failed_attempts.to_string());
    line("longest queue", format!("{} requests, {:.1}s wait", r.max_queue, r.max_wait_secs));
    line("longest delay", format!("{:.0}s from renewal time to certificate", r.max_delay_secs));
    if let Some(t) = r.rotation_complete_secs {
        line("rotation complete", format!("{t:.0}s after the push"));
    }
    if let Some(t) = r.outage_recovery_secs {
        line("outage recovered", format!("{t:.0}s after the CA came back"));
    }
    line("devices expired", r.devices_expired.to_string());
    line("signing cost", format!("${:.2} for {} signatures", r.signing_cost_usd, r.signatures));
    out
}

/// Renewals (and enrolments) per hour, as SVG.
pub fn plot_svg(r: &Report, path: &std::path::Path) -> Result<(), String> {
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Display| format!("plotting to {}: {e}", path.display());
    let root = SVGBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let hours = r.renewals_per_hour.len() as u64;
    let top =
        r.renewals_per_hour.iter().chain(&r.enrolments_per_hour).copied().max().unwrap_or(1).max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{} devices, {} days: renewals per hour", r.devices, r.days),
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0u64..hours.max(1), 0u64..top + top / 10 + 1)
        .map_err(|e| err(&e))?;
    chart.configure_mesh().x_desc("hour").y_desc("per hour").draw().map_err(|e| err(&e))?;
    chart
        .draw_series(LineSeries::new(
            r.renewals_per_hour.iter().enumerate().map(|(h, n)| (h as u64, *n)),
            &BLUE,
        ))
        .map_err(|e| err(&e))?
        .label("renewals")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    if r.enrolments > 0 {
        chart
            .draw_series(LineSeries::new(
                r.enrolments_per_hour.iter().enumerate().map(|(h, n)| (h as u64, *n)),
                &RED,
            ))
            .map_err(|e| err(&e))?
            .label("enrolments")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(devices: u32, days: u32) -> Scenario {
        Scenario {
            policy: GroupPolicy::default(),
            devices,
            days,
            capacity: 300.0,
            max_queue_secs: 2.0,
            checkin_interval_secs: 3600,
            rotate_at: None,
            outage: None,
            enrol_all_at: None,
            usd_per_10k_signatures: 0.15,
            seed: 7,
        }
    }

    #[test]
    fn a_steady_fleet_renews_flat_and_nobody_expires() {
        let r = simulate(&scenario(20_000, 20));
        // Each device renews about every 2/3 of 7 days minus jitter: 20 days ≈ 4.4 times.
        assert!((80_000..100_000).contains(&r.renewals), "{}", r.renewals);
        assert!(r.peak_to_mean < 1.5, "{}", r.peak_to_mean);
        assert_eq!(r.devices_expired, 0);
        assert_eq!(r.busy_refusals, 0);
        assert_eq!(r.enrolments, 0);
    }

    #[test]
    fn a_fleet_enrolled_at_once_flattens_within_one_lifetime() {
        let r = simulate(&Scenario { enrol_all_at: Some(0), ..scenario(20_000, 20) });
        assert_eq!(r.enrolments, 20_000);
        assert!(r.enrolments_per_hour[0] + r.enrolments_per_hour[1] == 20_000);
        assert!(r.peak_to_mean < 1.5, "peak/mean {}", r.peak_to_mean);
        assert_eq!(r.devices_expired, 0);
    }

    #[test]
    fn a_rotation_completes_within_the_checkin_interval_at_enough_capacity() {
        let r = simulate(&Scenario { rotate_at: Some(86_400), ..scenario(20_000, 4) });
        let t = r.rotation_complete_secs.expect("rotation completes");
        assert!(t <= 1.2 * 3600.0, "{t}");
        assert!(t >= 3000.0, "devices learn over one check-in interval: {t}");
    }

    #[test]
    fn a_rotation_beyond_capacity_is_paced_and_retries_obey_retry_after() {
        // 20,000 devices at 2/s with a 10 s check-in: the CA is the bottleneck.
        let r = simulate(&Scenario {
            rotate_at: Some(3600),
            capacity: 2.0,
            checkin_interval_secs: 10,
            ..scenario(2_000, 2)
        });
        let t = r.rotation_complete_secs.expect("rotation completes");
        assert!(r.busy_refusals > 0);
        assert!((1000.0..=1.2 * 1000.0 + 60.0).contains(&t), "{t}");
        assert_eq!(r.devices_expired, 0);
        assert!(r.max_wait_secs <= 2.0 + 1e-6);
    }

    #[test]
    fn an_outage_is_recovered_without_expiry() {
        let r = simulate(&Scenario { outage: Some((86_400, 2 * 86_400)), ..scenario(10_000, 6) });
        assert!(r.failed_attempts > 0);
        let t = r.outage_recovery_secs.expect("recovered");
        assert!(t < 3600.0, "{t}");
        assert_eq!(r.devices_expired, 0);
    }

    #[test]
    fn policy_files_parse_as_policy_show_prints_them_or_bare() {
        let doc = serde_json::to_string(&lanyard_proto::policy::PolicyDocument {
            group: "cams".into(),
            policy: GroupPolicy { lifetime_secs: 3600, ..GroupPolicy::default() },
        })
        .expect("json");
        assert_eq!(parse_policy(&doc).map(|p| p.lifetime_secs), Ok(3600));
        assert_eq!(parse_policy("{\"lifetime_secs\": 7200}").map(|p| p.lifetime_secs), Ok(7200));
        assert_eq!(parse_policy("lifetime_secs = 600\n").map(|p| p.lifetime_secs), Ok(600));
        assert!(parse_policy("{\"bogus\": 1}").unwrap_err().contains("bogus"));
    }

    #[test]
    fn windows_and_offsets_parse_and_name_their_problem() {
        assert_eq!(parse_offset("0"), Ok(0));
        assert_eq!(parse_offset("2d"), Ok(172_800));
        assert_eq!(parse_window("1d..36h"), Ok((86_400, 129_600)));
        assert!(parse_window("2d").unwrap_err().contains("FROM..TO"));
        assert!(parse_window("2d..1d").unwrap_err().contains("end after"));
        assert!(parse_offset("soon").is_err());
    }
}
