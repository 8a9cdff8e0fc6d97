//! The real-traffic fleet test at CI size: 300 real agents (keys, file stores, EST over
//! TLS, the daemon's own renewal loop) against `lanyard-ca serve --max-issuance-rate 5`
//! with a 2 s queue, so that enrolment, the rotation push and the recovery from a 20 s CA
//! outage all meet 503 `busy`. `lanyard-fleet` checks, and fails on, any device without a
//! valid certificate at the end, any certificate that expired while its device ran, any
//! second of the audit trail above the rate, any 503 without `Retry-After` and any retry
//! before it; this test also checks that those situations were really exercised. The full
//! run (2,000 devices at 100/s, a 60 s outage) is in docs/BENCHMARKS.md, "Fleet".
//!
//! About 5 minutes of mostly waiting: `#[ignore]`d so that a plain `cargo test` stays fast;
//! `scripts/test-all.sh` runs it in the background beside the other steps.

use std::process::Command;

#[test]
#[ignore = "5 minutes of real time; scripts/test-all.sh runs it in the background"]
fn a_fleet_renews_through_pacing_a_rotation_and_an_outage() {
    let out = Command::new(env!("CARGO_BIN_EXE_lanyard-fleet"))
        .args(["--devices", "300", "--lifetime", "5m", "--duration", "270s"])
        .args(["--rate", "5", "--queue", "2s", "--checkin", "30s", "--enrol-within", "10s"])
        .args(["--rotate-at", "100s", "--outage-at", "190s", "--outage-for", "20s", "--json"])
        .output()
        .expect("running lanyard-fleet");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "lanyard-fleet failed:\n{stderr}\n{stdout}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(v["violations"], 0, "{v}");
    // What was to be survived really happened.
    assert!(v["ca_refused_503"].as_u64() > Some(0), "the CA never answered 503: {v}");
    assert!(v["busy_503_seen_by_devices"].as_u64() > Some(0), "no renewal met a 503: {v}");
    assert!(v["unreachable"].as_u64() > Some(0), "no device noticed the outage: {v}");
    assert_eq!(v["peak_issued_in_one_second"], 5, "the pacing was never reached: {v}");
    assert!(v["rotation_complete_secs"].is_number(), "{v}");
    assert!(v["outage_recovered_secs"].is_number(), "{v}");
    // The rotation alone renews every device once.
    assert!(v["renewals"].as_u64() >= Some(300), "{v}");
}
