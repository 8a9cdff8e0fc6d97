//! The binaries under test.
//!
//! `LANYARD_BIN_DIR` points at a folder holding them (a release build, an installed
//! package). Without it, the debug build of this workspace is used, and brought up to
//! date once per test process with `cargo build -p lanyard-ca`: a test of a stale binary
//! would check code that no longer exists. `LANYARD_E2E_NO_BUILD=1` skips that build.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The workspace's root (this crate lives in `tests/`).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.is_absolute() { d } else { workspace_root().join(d) }
        }
        None => workspace_root().join("target"),
    }
}

fn build_once() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        if std::env::var("LANYARD_E2E_NO_BUILD").is_ok_and(|v| v == "1") {
            return;
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = crate::cmd::run_cmd(
            Command::new(cargo)
                .args(["build", "--quiet", "-p", "lanyard-ca"])
                .current_dir(workspace_root()),
            None,
        );
        assert!(out.success(), "building lanyard-ca for the end-to-end tests failed:\n{out}");
    });
}

/// Path of the binary `name` (e.g. `lanyard-ca`).
pub fn bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("LANYARD_BIN_DIR") {
        let p = PathBuf::from(dir).join(name);
        assert!(p.is_file(), "LANYARD_BIN_DIR is set but {} does not exist", p.display());
        return p;
    }
    build_once();
    let p = target_dir().join("debug").join(name);
    assert!(p.is_file(), "{} not found; build it with `cargo build -p {name}`", p.display());
    p
}

/// Path of `lanyard-ca`.
pub fn lanyard_ca() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| bin("lanyard-ca")).clone()
}
