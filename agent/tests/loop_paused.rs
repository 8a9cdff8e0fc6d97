//! The daemon's renewal loop ([`Renewer`]) in paused time: a device enrolled with a real
//! CA (in-process, real time), then the CA goes away and the clock is handed to tokio's
//! paused timer, so a whole certificate lifetime of renewal attempts, back-off and expiry
//! passes in milliseconds and every attempt's instant is exact.

mod common;

use common::{Ca, enrol};
use lanyard_agent::agent::Agent;
use lanyard_agent::clock::{Clock, SystemClock};
use lanyard_agent::config::Config;
use lanyard_agent::daemon::{Renewer, Turn};
use lanyard_proto::GroupPolicy;
use std::sync::Arc;
use time::OffsetDateTime;

/// The agent's clock, following tokio's (paused) time from a real starting instant.
struct TokioClock {
    base: OffsetDateTime,
    start: tokio::time::Instant,
}

impl Clock for TokioClock {
    fn now(&self) -> OffsetDateTime {
        self.base + (tokio::time::Instant::now() - self.start)
    }
}

#[tokio::test]
async fn the_loop_renews_on_time_backs_off_and_stops_at_expiry() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut ca = Ca::start(tmp.path()).await;
    let policy = GroupPolicy {
        lifetime_secs: 600,
        retry_floor_secs: 10,
        retry_cap_secs: 80,
        expired_grace_secs: 0,
        ..GroupPolicy::default()
    };
    ca.auth().set_policy("default", policy.clone(), "test").await.expect("policy");
    let state = tmp.path().join("agent");
    enrol(&ca, &state, "paused-1.fleet.example.com").await;
    // The CA is gone for good: every check-in and renewal from here fails at once
    // (connection refused on loopback), and only the loop's own timing is left to see.
    ca.down().await;

    tokio::time::pause();
    let clock =
        Arc::new(TokioClock { base: SystemClock.now(), start: tokio::time::Instant::now() });
    let toml = format!("[store]\nbackend = \"file\"\npath = \"{}\"\n", state.display());
    let cfg = Config::parse(&toml, None).expect("config");
    let agent = Agent::open(cfg, clock.clone()).expect("agent");
    let cert = agent.current().expect("enrolled").info.clone();
    let issued = agent.state().last_renewal.expect("enrolment time");

    let mut renewer = Renewer::default();
    let mut attempts: Vec<OffsetDateTime> = Vec::new();
    let stop = cert.not_after + time::Duration::minutes(10);
    while clock.now() < stop {
        match renewer.turn(&agent).await {
            Turn::Again => {
                attempts.push(renewer.last_attempt().expect("an attempt"));
                assert!(attempts.len() < 1000, "the loop retries without end at {}", clock.now());
            }
            Turn::Wait(w) => {
                assert!(!w.is_zero(), "the loop spins without waiting");
                tokio::time::sleep(w).await;
            }
        }
    }

    // The first attempt at the renewal point: not before the retry floor after the
    // enrolment, no later than the policy's fraction of the lifetime.
    let first = *attempts.first().expect("the loop never tried to renew");
    let lifetime = cert.not_after - issued;
    assert!(first >= issued + time::Duration::seconds(10), "renewed at once: {first}");
    assert!(first <= issued + lifetime * policy.renew_fraction, "renewed late: {first}");

    // Then exponential back-off placed by a stored jitter: each wait in
    // [max(floor, base / 2), base] with base = min(cap, floor * 2^(n-1)), except the last
    // one before expiry, which is cut to end a second before it (or a second after the try
    // before it, if that is later). (Timers fire on the next millisecond: 5 ms of slack.)
    let slack = 0.005;
    let last_chance = cert.not_after - time::Duration::seconds(1);
    for (n, w) in attempts.windows(2).enumerate() {
        let gap = (w[1] - w[0]).as_seconds_f64();
        let base = (10.0 * 2f64.powi(n as i32)).min(80.0);
        // The try cut short by expiry: at the last chance, or a second after the previous
        // try when that one came less than a second before it.
        let cut_at = last_chance.max(w[0] + time::Duration::seconds(1));
        let cut = (w[1] - cut_at).as_seconds_f64().abs() < slack;
        assert!(
            gap >= (base / 2.0).max(10.0) || cut,
            "retry {} after {gap}s (base {base}s); attempts {:?}, not after {}",
            n + 1,
            attempts.iter().map(|a| (*a - issued).as_seconds_f64()).collect::<Vec<_>>(),
            (cert.not_after - issued).as_seconds_f64()
        );
        assert!(
            gap <= base + slack,
            "retry {} after {gap}s, beyond its back-off of {base}s",
            n + 1
        );
    }
    // Never past expiry (no grace): the last try is before it, and after it nothing.
    let last = *attempts.last().expect("attempts");
    assert!(last < cert.not_after, "an attempt after expiry: {last}");
    let st = agent.state();
    assert_eq!(st.failures as usize, attempts.len(), "every attempt is one recorded failure");
    assert!(
        attempts.len() >= 4,
        "the back-off should have been seen for a while: {} attempts",
        attempts.len()
    );
    let d = agent.decide(&st);
    assert!(
        matches!(d, lanyard_agent::schedule::Decision::NeedsEnrolment(ref m) if m.contains("expired")),
        "{d:?}"
    );
}
