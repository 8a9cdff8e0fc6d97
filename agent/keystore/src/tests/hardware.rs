//! Hardware stores (`tpm`, `pkcs11`) over a stand-in token: objects are files in a
//! directory, as a token's objects are entries on the token. It stands for what the store
//! asks of real hardware (destroy one key, sweep the keys no handle names); the agent's
//! tests run the same flow on SoftHSM2 and swtpm.
//!
//! A renewal here is what the agent does: generate a key under the lock and stage its
//! handle (`stage_generated`), then store the credential. A crash at every step of it
//! leaves one loadable pair, and after the next renewal the token holds exactly the current
//! key: no key lost, none left behind.

use super::support::{CHILD_ENV, random_u64, sample};
use crate::failpoint::{CRASH_EXIT_CODE, FAILPOINT_ENV, TRACE_ENV};
use crate::{Credential, CredentialStore, HardwareFailure, HardwareKeys, StoreError, StoreKind};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use zeroize::Zeroizing;

const CHILD_TEST: &str = "tests::hardware::hardware_child";

/// A token whose objects are files `<dir>/<id>`; a handle is `fake:<id>:<seed>`.
#[derive(Debug)]
struct FakeToken {
    dir: PathBuf,
}

impl FakeToken {
    fn objects(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.dir)
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Generates a key for credential `seed`: the object first, as hardware does.
    fn generate(&self, seed: u8) -> Zeroizing<Vec<u8>> {
        std::fs::create_dir_all(&self.dir).expect("token dir");
        let id = format!("{:016x}", random_u64());
        std::fs::write(self.dir.join(&id), [seed]).expect("object");
        Zeroizing::new(format!("fake:{id}:{seed}").into_bytes())
    }
}

fn object_of(handle: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(handle).ok()?;
    let mut parts = s.strip_prefix("fake:")?.split(':');
    parts.next().map(str::to_owned)
}

impl HardwareKeys for FakeToken {
    fn kind(&self) -> StoreKind {
        StoreKind::Pkcs11
    }
    fn describe(&self) -> String {
        format!("stand-in token at {}", self.dir.display())
    }
    fn destroy(&self, handle: &[u8]) -> Result<(), HardwareFailure> {
        if let Some(id) = object_of(handle) {
            let _ = std::fs::remove_file(self.dir.join(id));
        }
        Ok(())
    }
    fn sweep(&self, keep: &[Zeroizing<Vec<u8>>]) -> Result<(), HardwareFailure> {
        let keep: Vec<String> = keep.iter().filter_map(|h| object_of(h)).collect();
        for id in self.objects() {
            if !keep.contains(&id) {
                let _ = std::fs::remove_file(self.dir.join(id));
            }
        }
        Ok(())
    }
}

struct Env {
    _root: tempfile::TempDir,
    dir: PathBuf,
    token: Arc<FakeToken>,
}

impl Env {
    fn new() -> Env {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("state");
        let token = Arc::new(FakeToken { dir: root.path().join("token") });
        Env { _root: root, dir, token }
    }
    fn at(dir: &Path, token: &Path) -> Box<dyn CredentialStore> {
        crate::open_hardware(dir, "hw", Arc::new(FakeToken { dir: token.to_path_buf() }))
            .expect("open")
    }
    fn open(&self) -> Box<dyn CredentialStore> {
        crate::open_hardware(&self.dir, "hw", self.token.clone()).expect("open")
    }
    fn child(&self, action: &str, failpoint: Option<&str>, trace: Option<&Path>) -> i32 {
        let mut cmd = Command::new(std::env::current_exe().expect("exe"));
        cmd.args([CHILD_TEST, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, format!("{}|{}|{action}", self.dir.display(), self.token.dir.display()))
            .env_remove(FAILPOINT_ENV)
            .env_remove(TRACE_ENV)
            .stdin(Stdio::null());
        if let Some(fp) = failpoint {
            cmd.env(FAILPOINT_ENV, fp);
        }
        if let Some(t) = trace {
            cmd.env(TRACE_ENV, t);
        }
        let out = cmd.output().expect("spawn child");
        let code = out.status.code().unwrap_or(-1);
        assert!(
            code == 0 || code == CRASH_EXIT_CODE,
            "child {action} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        code
    }
}

/// A renewal to credential `seed`: generate and stage under the lock, then store.
fn renew(store: &dyn CredentialStore, token: &FakeToken, seed: u8) {
    let mut generate = || -> Result<Zeroizing<Vec<u8>>, StoreError> { Ok(token.generate(seed)) };
    let handle = store.stage_generated("renewal", &mut generate).expect("stage");
    store.store(&Credential::new(handle, sample(seed).chain_der)).expect("store");
}

/// Which seed a loaded credential is, checking its chain is that seed's.
fn seed_of(c: &Credential) -> u8 {
    let s = std::str::from_utf8(&c.key).expect("utf-8 handle");
    let seed: u8 = s.rsplit(':').next().and_then(|n| n.parse().ok()).expect("seed");
    assert_eq!(c.chain_der, sample(seed).chain_der, "key and chain of different generations");
    seed
}

#[test]
#[ignore = "runs only as the child process of the hardware crash test"]
fn hardware_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let [dir, token, action] = spec.splitn(3, '|').collect::<Vec<_>>()[..] else {
        panic!("bad spec {spec:?}")
    };
    let store = Env::at(Path::new(dir), Path::new(token));
    let seed: u8 = action.strip_prefix("renew:").and_then(|s| s.parse().ok()).expect("action");
    renew(&*store, &FakeToken { dir: PathBuf::from(token) }, seed);
}

#[test]
fn a_renewal_destroys_the_previous_key_and_a_crashs_leftover() {
    let env = Env::new();
    let store = env.open();
    renew(&*store, &env.token, 1);
    assert_eq!(env.token.objects().len(), 1);
    // A crash between generating a key and staging its handle: an object no handle names.
    let _orphan = env.token.generate(9);
    renew(&*store, &env.token, 2);
    let loaded = store.load().expect("load").expect("some");
    assert_eq!(seed_of(&loaded), 2);
    assert_eq!(env.token.objects(), vec![object_of(&loaded.key).expect("id")]);
    // Removal destroys the key too.
    store.remove().expect("remove");
    assert!(env.token.objects().is_empty(), "{:?}", env.token.objects());
    // A plain `open` of a hardware kind says how it is opened.
    let e = crate::open(StoreKind::Tpm, &env.dir, "hw").expect_err("needs its device");
    assert!(e.to_string().contains("open_hardware"), "{e}");
}

#[test]
fn a_hardware_store_survives_a_crash_at_every_step_of_a_renewal() {
    let probe = Env::new();
    renew(&*probe.open(), &probe.token, 1);
    let trace = probe.dir.parent().expect("root").join("trace");
    assert_eq!(probe.child("renew:2", None, Some(&trace)), 0);
    let steps: Vec<String> =
        std::fs::read_to_string(&trace).expect("trace").lines().map(str::to_owned).collect();
    let commit = steps.iter().position(|s| s == "pointer:renamed#1").expect("commit step");
    assert!(steps.iter().any(|s| s == "generated#1"), "{steps:?}");
    for (i, step) in steps.iter().enumerate() {
        let env = Env::new();
        let store = env.open();
        renew(&*store, &env.token, 1);
        assert_eq!(env.child("renew:2", Some(step), None), CRASH_EXIT_CODE, "{step}");
        let loaded = store.load().expect("load after crash").expect("a credential");
        assert_eq!(seed_of(&loaded), if i < commit { 1 } else { 2 }, "after a crash at {step}");
        let id = object_of(&loaded.key).expect("id");
        assert!(env.token.objects().contains(&id), "the current key was destroyed at {step}");
        renew(&*store, &env.token, 3);
        let now = store.load().expect("load").expect("some");
        assert_eq!(seed_of(&now), 3);
        assert_eq!(
            env.token.objects(),
            vec![object_of(&now.key).expect("id")],
            "keys left after a crash at {step} and one more renewal"
        );
    }
    eprintln!("hardware store: {} crash points, each left one usable pair", steps.len());
}
