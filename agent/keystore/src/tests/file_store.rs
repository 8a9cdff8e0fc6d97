//! The file store: permissions, round trip, replacement, bad states, clean-up, concurrency.

use super::support::{TestEnv, same, sample, which};
use crate::pointer::Pointer;
use crate::{CredentialStore, StoreError, StoreKind};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn pointer(env: &TestEnv) -> Pointer {
    Pointer::read(&env.dir.join("credential.json")).expect("read").expect("pointer")
}

fn key_files(env: &TestEnv) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(env.dir.join("keys"))
        .expect("keys dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn round_trip() {
    let env = TestEnv::new(StoreKind::File);
    let store = env.open();
    assert_eq!(store.kind(), StoreKind::File);
    assert!(store.load().expect("load before any store").is_none());
    assert!(!env.dir.exists(), "opening and loading create nothing");

    store.store(&sample(1)).expect("store");
    let loaded = store.load().expect("load").expect("a credential");
    assert!(same(&loaded, &sample(1)));
    assert_eq!(loaded.chain_pem(), sample(1).chain_pem());
    assert_eq!(store.watch_path(), env.dir.join("credential.json"));
    assert!(store.describe().contains(&env.dir.display().to_string()), "{}", store.describe());

    // Another handle (another process, in effect) sees the same.
    let again = crate::open(StoreKind::File, &env.dir, &env.profile).expect("reopen");
    assert!(same(&again.load().expect("load").expect("some"), &sample(1)));
    env.assert_clean();
}

#[test]
fn keys_are_0600_in_0700_directories() {
    let env = TestEnv::new(StoreKind::File);
    let store = env.open();
    store.store(&sample(1)).expect("store");
    let p = pointer(&env);
    assert_eq!(mode(&env.dir), 0o700);
    assert_eq!(mode(&env.dir.join("keys")), 0o700);
    assert_eq!(mode(&env.dir.join(&p.key_ref)), 0o600);
    assert_eq!(mode(&env.dir.join("credential.json")), 0o600);
    assert_eq!(mode(&env.dir.join("lock")), 0o600);
    assert_eq!(fs::read(env.dir.join(&p.key_ref)).expect("key"), *sample(1).key);
    // The key is not in the pointer; its digest is.
    let json = fs::read_to_string(env.dir.join("credential.json")).expect("pointer");
    assert!(json.contains("\"key_sha256\"") && json.contains("BEGIN CERTIFICATE"));
}

#[test]
fn refuses_a_state_dir_open_to_others() {
    let env = TestEnv::new(StoreKind::File);
    fs::create_dir_all(&env.dir).expect("mkdir");
    chmod(&env.dir, 0o755);
    let err = crate::open(StoreKind::File, &env.dir, &env.profile).expect_err("0755 refused");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Insecure { .. }), "{msg}");
    assert!(msg.contains(&env.dir.display().to_string()) && msg.contains("0755"), "{msg}");
    assert!(msg.contains("chmod 700"), "{msg}");
    assert!(!err.is_transient());

    // A store opened earlier refuses too, for load and for store.
    chmod(&env.dir, 0o700);
    let store = env.open();
    store.store(&sample(1)).expect("store");
    chmod(&env.dir, 0o750);
    assert!(matches!(store.load(), Err(StoreError::Insecure { .. })));
    assert!(matches!(store.store(&sample(2)), Err(StoreError::Insecure { .. })));
    chmod(&env.dir, 0o700);
    assert!(same(&store.load().expect("load").expect("some"), &sample(1)));
}

#[test]
fn refuses_a_key_file_or_keys_dir_open_to_others() {
    let env = TestEnv::new(StoreKind::File);
    let store = env.open();
    store.store(&sample(1)).expect("store");
    let key = env.dir.join(pointer(&env).key_ref);

    chmod(&key, 0o644);
    let err = store.load().expect_err("0644 key refused");
    let msg = err.to_string();
    assert!(msg.contains(&key.display().to_string()) && msg.contains("0644"), "{msg}");
    chmod(&key, 0o600);

    chmod(&env.dir.join("keys"), 0o711);
    let err = store.load().expect_err("0711 keys dir refused");
    assert!(err.to_string().contains("keys"), "{err}");
    chmod(&env.dir.join("keys"), 0o700);

    // A symlink in place of the key is not followed.
    let elsewhere = env.root.path().join("elsewhere.key");
    fs::write(&elsewhere, &*sample(1).key).expect("write");
    chmod(&elsewhere, 0o600);
    fs::remove_file(&key).expect("rm");
    std::os::unix::fs::symlink(&elsewhere, &key).expect("symlink");
    let err = store.load().expect_err("symlink refused");
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

#[test]
fn replacing_keeps_one_key_and_changes_the_watched_file() {
    let env = TestEnv::new(StoreKind::File);
    let store = env.open();
    store.store(&sample(1)).expect("store 1");
    let first = pointer(&env);
    let watched = fs::metadata(store.watch_path()).expect("watch path");

    store.store(&sample(2)).expect("store 2");
    let second = pointer(&env);
    assert!(same(&store.load().expect("load").expect("some"), &sample(2)));
    assert_ne!(first.key_ref, second.key_ref, "a new key gets a new name");
    assert!(!env.dir.join(&first.key_ref).exists(), "the previous key is deleted");
    assert_eq!(key_files(&env).len(), 1);
    let now = fs::metadata(store.watch_path()).expect("watch path");
    assert_ne!(watched.ino(), now.ino(), "the pointer is replaced, not edited");

    // Storing the same credential again is a full swap too.
    store.store(&sample(2)).expect("store 2 again");
    assert_ne!(pointer(&env).key_ref, second.key_ref);
    env.assert_clean();
}

#[test]
fn corrupt_pointer_is_a_clear_error_and_a_new_store_repairs_it() {
    let env = TestEnv::new(StoreKind::File);
    let store = env.open();
    store.store(&sample(1)).expect("store");
    let path = env.dir.join("credential.json");
    fs::write(&path, b"{\"version\":1,\"key_ref\":").expect("truncate pointer");

    let err = store.load().expect_err("corrupt");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::CorruptPointer { .. }), "{msg}");
    assert!(msg.contains(&path.display().to_string()) && msg.contains("enrol again"), "{msg}");
    assert!(err.needs_reenrolment());

    // Re-enrolment: storing replaces the corrupt pointer and collects the old key.
    store.store(&sample(2)).expect("store over a corrupt pointer");
    assert!(same(&store.load().expect("load").expect("some"), &sample(2)));
    env.assert_clean();
}

#[test]
fn pointer_naming_a_path_outside_keys_is_corrupt() {
    let env = TestEnv::new(StoreKind::File);
    let store = env.open();
    store.store(&sample(1)).expect("store");
    let mut p = pointer(&env);
    for bad in ["../../etc/shadow", "/etc/shadow", "keys/../credential.json", "keys/x.key"] {
        p.key_ref = bad.to_string();
        fs::write(env.dir.join("credential.json"), p.to_json().expect("json")).expect("write");
        let err = store.load().expect_err(bad);
        assert!(matches!(err, StoreError::CorruptPointer { .. }), "{bad}: {err}");
    }
}

#[test]
fn missing_or_altered_key_is_a_clear_error() {
    let env = TestEnv::new(StoreKind::File);
    let store = env.open();
    store.store(&sample(1)).expect("store");
    let key = env.dir.join(pointer(&env).key_ref);

    fs::write(&key, &*sample(2).key).expect("overwrite key");
    let err = store.load().expect_err("altered key");
    assert!(matches!(err, StoreError::KeyMismatch { .. }), "{err}");
    assert!(err.to_string().contains("enrol again"));

    fs::remove_file(&key).expect("rm key");
    let err = store.load().expect_err("missing key");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::KeyMissing { .. }), "{msg}");
    assert!(msg.contains("credential.json") && msg.contains("enrol again"), "{msg}");
    assert!(err.needs_reenrolment() && !err.is_transient());
}

#[test]
fn orphans_of_a_crash_are_collected_by_the_next_store() {
    let env = TestEnv::new(StoreKind::File);
    let store = env.open();
    store.store(&sample(1)).expect("store");
    let keys = env.dir.join("keys");
    let orphan = keys.join("0123456789abcdef0123456789abcdef.key");
    fs::write(&orphan, b"half a key").expect("orphan");
    let temp = env.dir.join(".credential.json.0011.tmp");
    fs::write(&temp, b"{\"vers").expect("temp");
    let foreign = keys.join("README");
    fs::write(&foreign, b"not ours").expect("foreign");

    // Orphans do not disturb loading.
    assert!(same(&store.load().expect("load").expect("some"), &sample(1)));

    store.store(&sample(2)).expect("store");
    assert!(!orphan.exists() && !temp.exists(), "orphans collected");
    assert!(foreign.exists(), "files the store did not make are left alone");
    let mut expected = vec!["README".to_string(), pointer(&env).key_ref[5..].to_string()];
    expected.sort();
    assert_eq!(key_files(&env), expected);
}

#[test]
fn remove_deletes_pointer_then_keys() {
    let env = TestEnv::new(StoreKind::File);
    let store = env.open();
    store.remove().expect("remove with nothing stored");
    store.store(&sample(1)).expect("store");
    fs::write(env.dir.join("keys/ffffffffffffffffffffffffffffffff.key"), b"x").expect("orphan");
    store.remove().expect("remove");
    assert!(store.load().expect("load").is_none());
    assert!(key_files(&env).is_empty());
    store.store(&sample(2)).expect("store after remove");
    assert!(same(&store.load().expect("load").expect("some"), &sample(2)));
}

#[test]
fn refuses_unstorable_credentials_without_touching_the_current_one() {
    let env = TestEnv::new(StoreKind::File);
    let store = env.open();
    store.store(&sample(1)).expect("store");
    let mut empty_key = sample(2);
    empty_key.key.clear();
    let mut no_chain = sample(2);
    no_chain.chain_der.clear();
    let mut pem_not_der = sample(2);
    pem_not_der.chain_der[0] = b"-----BEGIN CERTIFICATE-----".to_vec();
    for bad in [empty_key, no_chain, pem_not_der] {
        let err = store.store(&bad).expect_err("refused");
        assert!(matches!(err, StoreError::InvalidCredential { .. }), "{err}");
    }
    assert!(same(&store.load().expect("load").expect("some"), &sample(1)));
    env.assert_clean();
}

#[test]
fn concurrent_swaps_and_loads_always_see_a_complete_pair() {
    let env = TestEnv::new(StoreKind::File);
    let store: Arc<dyn CredentialStore> = Arc::from(env.open());
    store.store(&sample(1)).expect("store");
    let writers: Vec<_> = [2u8, 3]
        .into_iter()
        .map(|seed| {
            // A separate handle per writer, as two processes would have.
            let other: Arc<dyn CredentialStore> = Arc::from(env.open());
            std::thread::spawn(move || {
                for _ in 0..25 {
                    other.store(&sample(seed)).expect("concurrent store");
                }
            })
        })
        .collect();
    let reader = {
        let store = store.clone();
        std::thread::spawn(move || {
            for _ in 0..200 {
                let got = store.load().expect("load during swaps").expect("some");
                which(&got, &[1, 2, 3]);
            }
        })
    };
    for w in writers {
        w.join().expect("writer");
    }
    reader.join().expect("reader");
    which(&store.load().expect("load").expect("some"), &[2, 3]);
    env.assert_clean();
}

#[test]
fn a_probe_writes_reads_back_and_leaves_nothing_behind() {
    let env = TestEnv::new(StoreKind::File);
    let store = env.open();
    // Before any credential: the probe makes the private state directory, and no key.
    store.probe().expect("probe an empty store");
    assert_eq!(mode(&env.dir), 0o700);
    assert!(key_files(&env).is_empty(), "probe key left: {:?}", key_files(&env));
    assert!(store.load().expect("load").is_none());
    // With a credential: it stays current, untouched.
    store.store(&sample(1)).expect("store");
    store.probe().expect("probe a store in use");
    assert!(same(&store.load().expect("load").expect("some"), &sample(1)));
    env.assert_clean();
}

#[test]
fn a_lock_held_by_a_stuck_process_is_given_up_on_with_a_clear_error() {
    let env = TestEnv::new(StoreKind::File);
    fs::create_dir(&env.dir).expect("mkdir");
    chmod(&env.dir, 0o700);
    let _held = crate::fsio::StateLock::acquire(&env.dir).expect("first lock");
    let started = std::time::Instant::now();
    let err =
        crate::fsio::StateLock::acquire_within(&env.dir, std::time::Duration::from_millis(300))
            .expect_err("second lock in the same process must wait, then give up");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let msg = err.to_string();
    assert!(msg.contains("another lanyard process") && msg.contains("lock"), "{msg}");
    assert!(err.is_transient(), "{msg}");
}
