//! Names, formats and messages: no store involved.

use super::support::sample;
use crate::pointer::Pointer;
use crate::{Credential, StoreError, StoreKind};
use std::path::Path;

#[test]
fn store_kinds_parse_from_their_config_names() {
    for kind in StoreKind::ALL {
        assert_eq!(kind.as_str().parse::<StoreKind>(), Ok(kind));
        assert_eq!(kind.to_string(), kind.as_str());
    }
    let err = "keychain".parse::<StoreKind>().expect_err("unknown name");
    let msg = err.to_string();
    assert!(msg.contains("\"keychain\""), "{msg}");
    for name in ["\"file\"", "\"keyring\"", "\"kernel-keyring\""] {
        assert!(msg.contains(name), "{msg} lists {name}");
    }
    let from_json: StoreKind = serde_json::from_str("\"kernel-keyring\"").expect("json");
    assert_eq!(from_json, StoreKind::KernelKeyring);
    let bad = serde_json::from_str::<StoreKind>("\"File\"").expect_err("case matters");
    assert!(bad.to_string().contains("expected one of"), "{bad}");
    assert_eq!(serde_json::to_string(&StoreKind::Keyring).expect("json"), "\"keyring\"");
}

#[test]
fn defaults_are_file_for_services_and_keyring_for_desktops() {
    assert_eq!(StoreKind::default_for(true), StoreKind::File);
    assert_eq!(StoreKind::default_for(false), StoreKind::Keyring);
}

#[test]
fn debug_never_shows_the_key() {
    let cred = sample(7);
    let dbg = format!("{cred:?}");
    assert!(dbg.contains("key: \"...\""), "{dbg}");
    let key_bytes = format!("{:?}", &cred.key[3..10]);
    let inner = key_bytes.trim_matches(|c| c == '[' || c == ']');
    assert!(!dbg.contains(inner), "{dbg} contains key bytes {inner}");
    assert!(!format!("{cred:#?}").contains(inner));
}

#[test]
fn chain_pem_round_trips_leaf_first() {
    let cred = sample(3);
    let pem = cred.chain_pem();
    assert_eq!(pem.matches("-----BEGIN CERTIFICATE-----").count(), 2);
    assert!(!pem.contains('\r'), "LF line endings");
    assert!(pem.lines().all(|l| l.len() <= 64));
    assert_eq!(Credential::chain_from_pem(&pem).expect("parse"), cred.chain_der);
    assert_eq!(cred.leaf_der(), Some(cred.chain_der[0].as_slice()));

    assert!(Credential::chain_from_pem("").is_err());
    let key_block = "-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n";
    let err = Credential::chain_from_pem(key_block).expect_err("a key is not a chain");
    assert!(err.contains("PRIVATE KEY"), "{err}");
}

#[test]
fn pointer_parsing_names_the_file_and_the_problem() {
    let path = Path::new("/state/credential.json");
    let good = Pointer {
        version: 1,
        key_ref: "keys/00112233445566778899aabbccddeeff.key".into(),
        key_sha256: "ab".repeat(32),
        chain_pem: sample(1).chain_pem(),
        stored_at: 1_700_000_000,
    };
    let json = good.to_json().expect("json");
    assert_eq!(Pointer::parse(path, &json).expect("parse"), good);

    for (bytes, expect) in [
        (&b"{not json"[..], "not valid JSON"),
        (br#"{"version":1}"#, "bad field"),
        (
            br#"{"version":1,"key_ref":"k","key_sha256":"zz","chain_pem":"","stored_at":0}"#,
            "64 hex",
        ),
        (br#"{"version":1,"key_ref":"k","key_sha256":"","chain_pem":"","stored_at":0,"x":1}"#, "x"),
    ] {
        let err = Pointer::parse(path, bytes).expect_err("corrupt");
        let msg = err.to_string();
        assert!(matches!(err, StoreError::CorruptPointer { .. }), "{msg}");
        assert!(msg.contains("/state/credential.json") && msg.contains(expect), "{msg}");
        assert!(msg.contains("enrol again"), "{msg}");
        assert!(err.needs_reenrolment() && !err.is_transient());
    }
    let newer = Pointer::parse(path, br#"{"version":2,"whatever":true}"#).expect_err("v2");
    assert!(matches!(newer, StoreError::UnsupportedVersion { version: 2, .. }), "{newer}");
}

#[test]
fn profiles_must_be_plain_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
    }
    for bad in ["", "a/b", "../x", ".hidden", "white space", &"x".repeat(65)] {
        let err = crate::open(StoreKind::File, dir.path(), bad).expect_err(bad);
        assert!(matches!(err, StoreError::InvalidProfile { .. }), "{bad}: {err}");
    }
    for good in ["default", "edge-01", "a.b_c"] {
        crate::open(StoreKind::File, dir.path(), good).expect(good);
    }
}

#[test]
fn transient_and_fatal_errors_are_told_apart() {
    let keyring = |transient| StoreError::Keyring {
        store: StoreKind::Keyring,
        store_name: "Secret Service",
        op: "read",
        entry: "service=lanyard user=p/0".into(),
        reason: "locked".into(),
        hint: "",
        transient,
    };
    assert!(keyring(true).is_transient());
    assert!(!keyring(false).is_transient());
    let io = |kind| StoreError::Io {
        op: "write",
        path: "/x".into(),
        source: std::io::Error::from(kind),
    };
    assert!(io(std::io::ErrorKind::StorageFull).is_transient());
    assert!(!io(std::io::ErrorKind::PermissionDenied).is_transient());
    let missing = StoreError::KeyMissing {
        pointer: "/s/credential.json".into(),
        key_ref: "p/0".into(),
        store: StoreKind::KernelKeyring,
        store_name: "kernel keyring",
        why: " (the kernel keyring is emptied on reboot)",
    };
    assert!(!missing.is_transient() && missing.needs_reenrolment());
    let msg = missing.to_string();
    assert!(msg.contains("/s/credential.json") && msg.contains("reboot"), "{msg}");
    assert!(msg.contains("enrol again"), "{msg}");
}

#[test]
fn a_keystore_call_that_never_answers_is_abandoned_at_its_deadline() {
    use crate::keyring_store::{Deadline, with_deadline};
    use std::time::{Duration, Instant};
    let started = Instant::now();
    let hung = with_deadline(Duration::from_millis(200), || {
        std::thread::sleep(Duration::from_secs(30));
    });
    assert!(matches!(hung, Err(Deadline::TimedOut)), "{hung:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "waited {:?}", started.elapsed());
    let quick = with_deadline(Duration::from_secs(5), || 42);
    assert!(matches!(quick, Ok(42)), "{quick:?}");
}

#[test]
fn a_keystore_timeout_names_the_store_and_the_fix() {
    let err = StoreError::TimedOut {
        store: StoreKind::Keyring,
        store_name: StoreKind::Keyring.platform_name(),
        op: "store",
        entry: "service=lanyard user=p/0".into(),
        after: std::time::Duration::from_secs(10),
        hint: "; use the file store (--store file)",
    };
    let msg = err.to_string();
    assert!(msg.contains(StoreKind::Keyring.platform_name()) && msg.contains("10s"), "{msg}");
    assert!(msg.contains("--store file"), "{msg}");
    assert!(err.is_transient());
}
