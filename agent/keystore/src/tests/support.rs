//! Test credentials, state directories, child processes and outside views of the keyrings.

use crate::failpoint::{CRASH_EXIT_CODE, FAILPOINT_ENV, TRACE_ENV};
use crate::{Credential, CredentialStore, StoreKind};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use zeroize::Zeroizing;

/// The child-process test (see `crash::crash_child`) and how it is told what to do.
pub const CHILD_TEST: &str = "tests::crash::crash_child";
pub const CHILD_ENV: &str = "LANYARD_KEYSTORE_TEST_CHILD";
/// What a looping child prints once its store is open.
pub const READY: &str = "lanyard-keystore-child-ready";

/// A credential that differs from every other seed in key and chain. Not real keys or
/// certificates: this crate treats them as opaque DER, which is all the test needs.
pub fn sample(seed: u8) -> Credential {
    let mut key = vec![0x30, 0x81, 0x87];
    key.extend((0..135u32).map(|i| ((i * 7 + u32::from(seed) * 13) % 251) as u8));
    let mut leaf = vec![0x30, 0x82, 0x01, 0x2c, seed];
    leaf.extend((0..299u32).map(|i| ((i * 3 + u32::from(seed) * 29) % 256) as u8));
    let mut ca = vec![0x30, 0x82, 0x01, 0x00];
    ca.extend((0..256u32).map(|i| (i % 256) as u8));
    Credential::new(Zeroizing::new(key), vec![leaf, ca])
}

/// Whether two credentials are the same pair, byte for byte.
pub fn same(a: &Credential, b: &Credential) -> bool {
    a.key.as_slice() == b.key.as_slice() && a.chain_der == b.chain_der
}

/// Which of `candidates` (by seed) `got` is; panics if none, which means a key was paired
/// with another generation's chain or bytes changed.
pub fn which(got: &Credential, candidates: &[u8]) -> u8 {
    candidates.iter().copied().find(|s| same(got, &sample(*s))).unwrap_or_else(|| {
        panic!("loaded credential {got:?} is none of the stored ones {candidates:?}")
    })
}

/// A state directory and a profile of their own for one test.
pub struct TestEnv {
    pub kind: StoreKind,
    pub root: tempfile::TempDir,
    pub dir: PathBuf,
    pub profile: String,
}

impl TestEnv {
    pub fn new(kind: StoreKind) -> TestEnv {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("state");
        let profile = format!("t-{}", &crate::fsio::random_hex_id().expect("random")[..12]);
        TestEnv { kind, root, dir, profile }
    }

    pub fn open(&self) -> Box<dyn CredentialStore> {
        crate::open(self.kind, &self.dir, &self.profile).expect("open")
    }

    /// Starts this test executable as a child that acts on this environment.
    pub fn child(&self, action: &str, failpoint: Option<&str>, trace: Option<&Path>) -> Command {
        let exe = std::env::current_exe().expect("current_exe");
        let mut cmd = Command::new(exe);
        cmd.args([CHILD_TEST, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env(
                CHILD_ENV,
                format!("{}|{}|{}|{action}", self.kind, self.dir.display(), self.profile),
            )
            .env_remove(FAILPOINT_ENV)
            .env_remove(TRACE_ENV)
            .stdin(Stdio::null());
        if let Some(fp) = failpoint {
            cmd.env(FAILPOINT_ENV, fp);
        }
        if let Some(t) = trace {
            cmd.env(TRACE_ENV, t);
        }
        cmd
    }

    /// Runs a child to completion and returns its exit code.
    pub fn run_child(&self, action: &str, failpoint: Option<&str>, trace: Option<&Path>) -> i32 {
        let out = self
            .child(action, failpoint, trace)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("spawn child");
        let code = out.status.code().unwrap_or(-1);
        if code != 0 && code != CRASH_EXIT_CODE {
            panic!(
                "child {action} (failpoint {failpoint:?}) failed with {:?}:\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        code
    }

    /// Starts a child that swaps credentials in a loop; returns once it is running.
    pub fn spawn_looping_child(&self, action: &str) -> Child {
        let mut child = self
            .child(action, None, None)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                // libtest may print `test <name> ... ` on the same line before the child's
                // own output, so match the end of the line.
                Some(Ok(line)) if line.trim().ends_with(READY) => break,
                Some(Ok(_)) => continue,
                _ => panic!("the child exited before it was ready"),
            }
        }
        // Keep draining so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        child
    }

    /// Asserts that nothing but the current key is left: no orphan keys or entries, no
    /// temp files, and (keyrings) `pending.json` lists only the current entry.
    pub fn assert_clean(&self) {
        let pointer = crate::pointer::Pointer::read(&self.dir.join("credential.json"))
            .expect("pointer")
            .expect("a stored credential");
        let temps: Vec<_> = std::fs::read_dir(&self.dir)
            .expect("state dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(temps.is_empty(), "temp files left: {temps:?}");
        match self.kind {
            StoreKind::File | StoreKind::Tpm | StoreKind::Pkcs11 => {
                let keys: Vec<String> = std::fs::read_dir(self.dir.join("keys"))
                    .expect("keys dir")
                    .flatten()
                    .map(|e| format!("keys/{}", e.file_name().to_string_lossy()))
                    .collect();
                assert_eq!(keys, vec![pointer.key_ref.clone()], "key files left");
            }
            StoreKind::Keyring | StoreKind::KernelKeyring => {
                let pending = crate::pointer::Pending::read(&self.dir.join("pending.json"))
                    .expect("pending.json");
                assert_eq!(pending.refs, vec![pointer.key_ref.clone()], "pending entries");
                let mut entries = keyring_entries(self.kind, &self.profile);
                entries.sort();
                entries.dedup();
                assert_eq!(entries, vec![pointer.key_ref.clone()], "entries in the keyring");
            }
        }
    }
}

/// The users (`<profile>/<id>`) of this profile's entries, as the keyring's own tools see
/// them: `keyctl show @s` for the kernel keyring, `secret-tool search` for Secret Service.
pub fn keyring_entries(kind: StoreKind, profile: &str) -> Vec<String> {
    let prefix = format!("{profile}/");
    match kind {
        StoreKind::KernelKeyring => {
            let out = Command::new("keyctl").args(["show", "@s"]).output().expect("keyctl show");
            assert!(out.status.success(), "keyctl show @s: {out:?}");
            // Lines end in "user: keyring:<user>@lanyard". A key linked into both the session
            // and the persistent keyring shows twice: count it once.
            let set: std::collections::BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.split("user: keyring:").nth(1))
                .filter_map(|d| d.trim().strip_suffix("@lanyard"))
                .filter(|u| u.starts_with(&prefix))
                .map(str::to_string)
                .collect();
            set.into_iter().collect()
        }
        StoreKind::Keyring => {
            let out = Command::new("secret-tool")
                .args(["search", "--all", "service", "lanyard"])
                .output()
                .expect("secret-tool search");
            // secret-tool prints the attributes of each item on stdout or stderr by version.
            let text = format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            text.lines()
                .filter_map(|l| l.trim().strip_prefix("attribute.username = "))
                .filter(|u| u.starts_with(&prefix))
                .map(str::to_string)
                .collect()
        }
        StoreKind::File | StoreKind::Tpm | StoreKind::Pkcs11 => Vec::new(),
    }
}

/// The secret of one entry, read with the keyring's own tool (not this crate).
pub fn keyring_secret(kind: StoreKind, key_ref: &str) -> Option<Vec<u8>> {
    match kind {
        StoreKind::KernelKeyring => {
            let desc = format!("keyring:{key_ref}@lanyard");
            let id = Command::new("keyctl").args(["search", "@s", "user", &desc]).output().ok()?;
            if !id.status.success() {
                return None;
            }
            let id = String::from_utf8_lossy(&id.stdout).trim().to_string();
            let out = Command::new("keyctl").args(["pipe", &id]).output().ok()?;
            out.status.success().then_some(out.stdout)
        }
        StoreKind::Keyring => {
            let out = Command::new("secret-tool")
                .args(["lookup", "service", "lanyard", "username", key_ref])
                .output()
                .ok()?;
            (out.status.success() && !out.stdout.is_empty()).then_some(out.stdout)
        }
        StoreKind::File | StoreKind::Tpm | StoreKind::Pkcs11 => None,
    }
}

/// Deletes one entry with the keyring's own tool.
pub fn keyring_delete(kind: StoreKind, key_ref: &str) {
    let status = match kind {
        StoreKind::KernelKeyring => {
            let desc = format!("keyring:{key_ref}@lanyard");
            let id = Command::new("keyctl").args(["search", "@s", "user", &desc]).output();
            let id = id.expect("keyctl search");
            let id = String::from_utf8_lossy(&id.stdout).trim().to_string();
            Command::new("keyctl").args(["invalidate", &id]).status()
        }
        StoreKind::Keyring => Command::new("secret-tool")
            .args(["clear", "service", "lanyard", "username", key_ref])
            .status(),
        StoreKind::File | StoreKind::Tpm | StoreKind::Pkcs11 => return,
    };
    assert!(status.expect("keyring tool").success(), "deleting {key_ref} from the {kind}");
}

/// A few random bytes as a number, for kill timings.
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("random");
    u64::from_le_bytes(b)
}
