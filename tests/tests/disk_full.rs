//! Disk full: the CA's directory on a small tmpfs (needs root to mount it: CI runs as root;
//! elsewhere the test says it checked nothing, and under `CI=true` it fails instead).
//! With the disk full, an enrolment answers 503 `busy` (problem+json), nothing is recorded
//! and its token stays unused; once space returns the same token enrols, the database
//! passes `PRAGMA integrity_check`, and the token paid for exactly that certificate.

use lanyard_e2e::pki::{self, KeyAlg};
use lanyard_e2e::{Ca, est, peers};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted over a directory, unmounted on drop (also when the test panics).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(over: &Path, size: &str) -> Option<Tmpfs> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(over)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(over.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&dest).expect("mkdir");
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).expect("copy");
        }
    }
}

/// Writes zeros to `path` until the filesystem is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 64 * 1024];
    loop {
        if f.write_all(&chunk).is_err() {
            break;
        }
    }
    // The last bytes, one page at a time.
    let page = vec![0u8; 4096];
    while f.write_all(&page).is_ok() {}
    let _ = f.sync_all();
}

fn token_used(db: &Path, identity: &str) -> Option<String> {
    let c = rusqlite::Connection::open(db).expect("open the CA database");
    c.query_row("SELECT used_serial FROM tokens WHERE identity = ?1", [identity], |r| r.get(0))
        .expect("token row")
}

fn enrol(srv: &lanyard_e2e::ca::Server, ca: &Ca, id: &str, token: &str) -> est::Resp {
    let (_key, csr) = pki::key_and_csr(&ca.work, KeyAlg::P256, id);
    est::enroll(srv, id, token, &csr.b64)
}

#[test]
fn a_full_disk_refuses_issuance_with_503_and_recovers() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    // Move the CA directory onto a 16 MiB tmpfs mounted in its place.
    let saved = ca.work.join("ca-saved");
    std::fs::create_dir_all(&saved).expect("mkdir");
    copy_dir(&ca.dir, &saved);
    let Some(_mount) = Tmpfs::mount(&ca.dir, "16m") else {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(!ci, "cannot mount a tmpfs (root needed) and CI=true");
        eprintln!("SKIPPED: cannot mount a tmpfs here (root needed); this test checks nothing");
        return;
    };
    copy_dir(&saved, &ca.dir);
    let db = ca.dir.join("lanyard-ca.db");

    let srv = ca.serve();
    let before = ca.token("before-full.fleet.example.com");
    let during = ca.token("during-full.fleet.example.com");
    enrol(&srv, &ca, "before-full.fleet.example.com", &before).expect(200);

    // Empty the write-ahead log first: SQLite reuses a checkpointed log's space, so a write
    // could otherwise still land on a full disk (which would be fine, and prove nothing).
    let c = rusqlite::Connection::open(&db).expect("open");
    let busy: i64 =
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0)).expect("checkpoint");
    assert_eq!(busy, 0, "the checkpoint could not finish");
    drop(c);
    fill(&ca.dir.join("filler"));
    let r = enrol(&srv, &ca, "during-full.fleet.example.com", &during);
    assert_eq!(r.status, 503, "a full disk is the CA's problem, not the device's:\n{r}");
    assert!(r.content_type.starts_with("application/problem+json"), "{r}");
    assert!(r.text().contains("\"busy\""), "{r}");
    // The CA still answers what needs no write.
    est::get(&srv, "/healthz").expect(200);

    std::fs::remove_file(ca.dir.join("filler")).expect("free the space");
    assert_eq!(token_used(&db, "during-full.fleet.example.com"), None, "nothing partial");
    let r = enrol(&srv, &ca, "during-full.fleet.example.com", &during).expect(200);
    let leaf = pki::leaf_from_est(&r.body, &ca.work, "after-full");
    let serial = pki::serial_hex(&leaf).to_ascii_lowercase();
    assert_eq!(token_used(&db, "during-full.fleet.example.com").as_deref(), Some(serial.as_str()));
    let c = rusqlite::Connection::open(&db).expect("open");
    let ok: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("pragma");
    assert_eq!(ok, "ok");
    drop(srv);
}
