//! The OS keystores, for real: the kernel keyring and Secret Service (gnome-keyring).
//!
//! These are `#[ignore]`d so that a plain `cargo test` without a keyring reports them as not
//! run instead of passing; `tests/run-keyring-tests.sh` starts each keyring and runs them
//! with `--ignored`, setting `LANYARD_TEST_KERNEL_KEYRING=1` or
//! `LANYARD_TEST_SECRET_SERVICE=1`. Run with `--ignored` but without that variable, a test
//! fails: it must not pass without having touched a keyring. What they store is checked
//! with the keyrings' own tools (`keyctl`, `secret-tool`), not only through this crate.

use super::crash::{crash_at_every_step, random_kills};
use super::support::{TestEnv, keyring_delete, keyring_entries, keyring_secret, same, sample};
use crate::pointer::Pointer;
use crate::{StoreError, StoreKind};

fn require(var: &str) {
    if std::env::var(var).as_deref() != Ok("1") {
        panic!(
            "{var} is not set: these tests need a real keyring; run \
             agent/keystore/tests/run-keyring-tests.sh, which starts one and sets it"
        );
    }
}

fn current_ref(env: &TestEnv) -> String {
    Pointer::read(&env.dir.join("credential.json")).expect("read").expect("pointer").key_ref
}

/// Store, cross-check with the keyring's tool, replace, lose the entry, remove.
fn round_trip(kind: StoreKind) {
    let env = TestEnv::new(kind);
    let store = env.open();
    assert_eq!(store.kind(), kind);
    assert!(store.load().expect("load").is_none());

    store.store(&sample(1)).expect("store");
    assert!(same(&store.load().expect("load").expect("some"), &sample(1)));
    let first = current_ref(&env);
    assert!(first.starts_with(&format!("{}/", env.profile)), "{first}");
    assert_eq!(
        keyring_secret(kind, &first).as_deref(),
        Some(sample(1).key.as_slice()),
        "the keyring's own tool reads the key under service=lanyard user={first}"
    );
    assert!(!env.dir.join("keys").exists(), "no key file for a keyring store");

    store.store(&sample(2)).expect("replace");
    assert!(same(&store.load().expect("load").expect("some"), &sample(2)));
    let second = current_ref(&env);
    assert_ne!(first, second);
    assert_eq!(keyring_secret(kind, &first), None, "the previous entry is deleted");
    env.assert_clean();
    // The probe enrolment makes before spending a token: it works, and leaves no entry.
    store.probe().expect("probe");
    assert_eq!(current_ref(&env), second);
    env.assert_clean();

    // An entry deleted behind the store's back (a reboot, for the kernel keyring).
    keyring_delete(kind, &second);
    let err = store.load().expect_err("missing entry");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::KeyMissing { .. }), "{msg}");
    assert!(msg.contains(&second) && msg.contains("enrol again"), "{msg}");

    // Re-enrolment repairs it; remove leaves nothing in the keyring.
    store.store(&sample(3)).expect("store after loss");
    assert!(same(&store.load().expect("load").expect("some"), &sample(3)));
    store.remove().expect("remove");
    assert!(store.load().expect("load").is_none());
    assert!(keyring_entries(kind, &env.profile).is_empty(), "entries left after remove");
}

/// An entry orphaned by a crash (listed in pending.json, never committed) is deleted by the
/// next swap.
fn orphan_collection(kind: StoreKind) {
    let env = TestEnv::new(kind);
    let store = env.open();
    store.store(&sample(1)).expect("store");
    let code = env.run_child("store:2", Some("key-stored#1"), None);
    assert_eq!(code, crate::failpoint::CRASH_EXIT_CODE);
    assert_eq!(keyring_entries(kind, &env.profile).len(), 2, "the crash left an orphan entry");
    assert!(same(&store.load().expect("load").expect("some"), &sample(1)));
    store.store(&sample(3)).expect("store");
    env.assert_clean();
    store.remove().expect("remove");
}

#[test]
#[ignore = "needs a kernel keyring: run agent/keystore/tests/run-keyring-tests.sh"]
fn kernel_keyring_round_trip() {
    require("LANYARD_TEST_KERNEL_KEYRING");
    round_trip(StoreKind::KernelKeyring);
}

#[test]
#[ignore = "needs a kernel keyring: run agent/keystore/tests/run-keyring-tests.sh"]
fn kernel_keyring_collects_orphans() {
    require("LANYARD_TEST_KERNEL_KEYRING");
    orphan_collection(StoreKind::KernelKeyring);
}

#[test]
#[ignore = "needs a kernel keyring: run agent/keystore/tests/run-keyring-tests.sh"]
fn kernel_keyring_survives_a_crash_at_every_step() {
    require("LANYARD_TEST_KERNEL_KEYRING");
    crash_at_every_step(StoreKind::KernelKeyring);
}

#[test]
#[ignore = "needs a kernel keyring: run agent/keystore/tests/run-keyring-tests.sh"]
fn kernel_keyring_survives_random_sigkills() {
    require("LANYARD_TEST_KERNEL_KEYRING");
    random_kills(StoreKind::KernelKeyring, 60);
}

#[test]
#[ignore = "needs Secret Service: run agent/keystore/tests/run-keyring-tests.sh"]
fn secret_service_round_trip() {
    require("LANYARD_TEST_SECRET_SERVICE");
    round_trip(StoreKind::Keyring);
}

#[test]
#[ignore = "needs Secret Service: run agent/keystore/tests/run-keyring-tests.sh"]
fn secret_service_collects_orphans() {
    require("LANYARD_TEST_SECRET_SERVICE");
    orphan_collection(StoreKind::Keyring);
}

#[test]
#[ignore = "needs Secret Service: run agent/keystore/tests/run-keyring-tests.sh"]
fn secret_service_survives_a_crash_at_every_step() {
    require("LANYARD_TEST_SECRET_SERVICE");
    crash_at_every_step(StoreKind::Keyring);
}

#[test]
#[ignore = "needs Secret Service: run agent/keystore/tests/run-keyring-tests.sh"]
fn secret_service_survives_random_sigkills() {
    require("LANYARD_TEST_SECRET_SERVICE");
    random_kills(StoreKind::Keyring, 30);
}
