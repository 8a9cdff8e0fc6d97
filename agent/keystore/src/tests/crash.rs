//! Crash safety: a swap killed at any point leaves exactly one complete pair, and the next
//! swap removes what the crash left.
//!
//! Two ways in, both in a child process (this test executable, run again on
//! [`crash_child`]):
//! - every step: a trace run lists each `crash_point!` a replacement (or removal) passes,
//!   then one child per step exits at exactly that step, with no cleanup;
//! - random SIGKILLs: a child swaps two credentials in a loop and is killed at a random
//!   moment, many times.
//!
//! Process death leaves the page cache intact, so these tests check the order of
//! operations (and the absence of in-place writes); the fsyncs, which make that order hold
//! across a power cut, are checked by reading the code, not by these tests.

use super::support::{CHILD_ENV, READY, TestEnv, random_u64, same, sample, which};
use crate::failpoint::CRASH_EXIT_CODE;
use crate::{CredentialStore, StoreKind};
use std::time::{Duration, Instant};

/// Not a test on its own: what a child process runs. `LANYARD_KEYSTORE_TEST_CHILD` is
/// `kind|state_dir|profile|action` with action `store:<seed>`, `loop:<seed>,<seed>` or
/// `remove`.
#[test]
#[ignore = "runs only as the child process of the crash tests"]
fn crash_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let parts: Vec<&str> = spec.splitn(4, '|').collect();
    let [kind, dir, profile, action] = parts[..] else { panic!("bad child spec {spec:?}") };
    let kind: StoreKind = kind.parse().expect("kind");
    let store = crate::open(kind, std::path::Path::new(dir), profile).expect("open");
    if let Some(seed) = action.strip_prefix("store:") {
        store.store(&sample(seed.parse().expect("seed"))).expect("store");
    } else if let Some(seeds) = action.strip_prefix("loop:") {
        let seeds: Vec<u8> = seeds.split(',').map(|s| s.parse().expect("seed")).collect();
        let creds: Vec<_> = seeds.iter().map(|s| sample(*s)).collect();
        println!("{READY}");
        for i in 0usize.. {
            store.store(&creds[i % creds.len()]).expect("store in loop");
        }
    } else if action == "remove" {
        store.remove().expect("remove");
    } else {
        panic!("unknown child action {action:?}");
    }
}

/// The steps a child passes doing `action` on `env`, in order (`name#n`).
fn trace_steps(env: &TestEnv, action: &str) -> Vec<String> {
    let trace = env.root.path().join(format!("trace-{}", random_u64()));
    assert_eq!(env.run_child(action, None, Some(&trace)), 0, "trace run of {action}");
    std::fs::read_to_string(&trace).expect("trace file").lines().map(str::to_string).collect()
}

/// For every step of replacing credential 1 by credential 2: crash there, check that
/// load() returns 1 before the pointer's rename and 2 from it on, then check that the next
/// store() (credential 3) leaves nothing behind. Then the same for remove().
pub fn crash_at_every_step(kind: StoreKind) {
    let started = Instant::now();
    // Steps of a replacement that also has an orphan to collect (from an earlier crash).
    let probe = TestEnv::new(kind);
    probe.open().store(&sample(1)).expect("store 1");
    let steps = trace_steps(&probe, "store:2");
    let commit = steps
        .iter()
        .position(|s| s == "pointer:renamed#1")
        .unwrap_or_else(|| panic!("no commit step in {steps:?}"));
    assert!(steps.len() >= 8, "too few steps traced: {steps:?}");
    eprintln!("{kind}: {} steps in a replacement: {steps:?}", steps.len());

    for (i, step) in steps.iter().enumerate() {
        let env = TestEnv::new(kind);
        let store = env.open();
        store.store(&sample(1)).expect("store 1");
        let code = env.run_child("store:2", Some(step), None);
        assert_eq!(code, CRASH_EXIT_CODE, "the child did not reach step {step}");
        let loaded = store.load().unwrap_or_else(|e| panic!("load after crash at {step}: {e}"));
        let loaded = loaded.unwrap_or_else(|| panic!("nothing loadable after crash at {step}"));
        let want = if i < commit { 1 } else { 2 };
        assert_eq!(which(&loaded, &[1, 2]), want, "after a crash at {step}");
        store.store(&sample(3)).unwrap_or_else(|e| panic!("store after crash at {step}: {e}"));
        assert!(same(&store.load().expect("load").expect("some"), &sample(3)));
        env.assert_clean();
        cleanup(&*store);
    }

    // Removal: the pointer goes first, so a crash leaves the credential or nothing.
    let probe = TestEnv::new(kind);
    probe.open().store(&sample(1)).expect("store 1");
    let steps = trace_steps(&probe, "remove");
    let gone = steps
        .iter()
        .position(|s| s == "pointer-removed#1")
        .unwrap_or_else(|| panic!("no pointer-removed step in {steps:?}"));
    for (i, step) in steps.iter().enumerate() {
        let env = TestEnv::new(kind);
        let store = env.open();
        store.store(&sample(1)).expect("store 1");
        assert_eq!(env.run_child("remove", Some(step), None), CRASH_EXIT_CODE, "step {step}");
        let loaded = store.load().unwrap_or_else(|e| panic!("load after crash at {step}: {e}"));
        match loaded {
            Some(c) => assert!(i < gone && same(&c, &sample(1)), "after a crash at {step}"),
            None => assert!(i >= gone, "credential lost before the pointer went, at {step}"),
        }
        store.store(&sample(3)).expect("store after crashed remove");
        env.assert_clean();
        cleanup(&*store);
    }
    eprintln!("{kind}: crash at every step passed in {:?}", started.elapsed());
}

/// SIGKILLs a child that swaps credentials 11 and 12 in a loop, `rounds` times, at random
/// moments; after each kill, load() must return one of 10 (stored first), 11 or 12,
/// complete. Returns how often each was found.
pub fn random_kills(kind: StoreKind, rounds: u32) -> [u32; 3] {
    let started = Instant::now();
    let env = TestEnv::new(kind);
    let store = env.open();
    // How long a swap takes here, to spread the kills over a few of them.
    let t = Instant::now();
    store.store(&sample(10)).expect("store 10");
    store.store(&sample(10)).expect("store 10 again");
    let swap = t.elapsed() / 2;
    let window = (swap * 4).max(Duration::from_millis(2));

    let mut seen = [0u32; 3];
    for round in 0..rounds {
        let mut child = env.spawn_looping_child("loop:11,12");
        let delay = Duration::from_micros(random_u64() % (window.as_micros() as u64 + 1));
        std::thread::sleep(delay);
        child.kill().expect("SIGKILL the child");
        child.wait().expect("reap the child");
        let loaded = store
            .load()
            .unwrap_or_else(|e| panic!("round {round}: load after SIGKILL: {e}"))
            .unwrap_or_else(|| panic!("round {round}: nothing loadable after SIGKILL"));
        seen[usize::from(which(&loaded, &[10, 11, 12]) - 10)] += 1;
    }
    store.store(&sample(13)).expect("store after the kills");
    env.assert_clean();
    cleanup(&*store);
    eprintln!(
        "{kind}: {rounds} SIGKILLs (swap {swap:?}, window {window:?}) in {:?}; loaded 10/11/12: {seen:?}",
        started.elapsed()
    );
    seen
}

fn cleanup(store: &dyn CredentialStore) {
    store.remove().expect("remove at the end of a test");
}

#[test]
fn file_store_survives_a_crash_at_every_step() {
    crash_at_every_step(StoreKind::File);
}

#[test]
fn file_store_survives_random_sigkills() {
    let seen = random_kills(StoreKind::File, 150);
    // Kills that all landed before the child's first commit would test little.
    assert!(seen[1] + seen[2] > 0, "no kill landed after a swap: {seen:?}");
}
