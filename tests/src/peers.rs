//! Peers (openssl, curl, nginx, pkilint) are found on `PATH`. A developer without one
//! sees the test skip with a notice; CI (`CI=true`) must have them all, so there a
//! missing peer fails the test instead of letting it pass without checking anything.

use std::path::PathBuf;

/// The full path of `name` on `PATH` (or in /usr/sbin, where Debian puts nginx).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into(), "/usr/local/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// True when `name` can be run. When it cannot: under `CI=true` the test fails here;
/// otherwise a notice is printed and `false` returned, and the test should return early.
#[track_caller]
pub fn require_peer(name: &str) -> bool {
    if which(name).is_some() {
        return true;
    }
    let hint = match name {
        "nginx" => "apt-get install -y nginx-light",
        "openssl" => "apt-get install -y openssl",
        "curl" => "apt-get install -y curl",
        "tinyproxy" => "apt-get install -y tinyproxy-bin",
        "microsocks" => "apt-get install -y microsocks",
        "softhsm2-util" => "apt-get install -y softhsm2",
        "pkcs11-tool" => "apt-get install -y opensc",
        "swtpm" => "apt-get install -y swtpm swtpm-tools",
        n if n.starts_with("tpm2_") => "apt-get install -y tpm2-tools",
        n if n.starts_with("lint_") => "pip install pkilint",
        _ => "install it",
    };
    assert!(!in_ci(), "peer `{name}` is missing and CI=true: {hint}");
    eprintln!("SKIPPED: peer `{name}` is not installed ({hint}); this test checks nothing here");
    false
}

/// `require_peer` for each name; true when all are present.
#[track_caller]
pub fn require_peers(names: &[&str]) -> bool {
    names.iter().all(|n| require_peer(n))
}

/// True when python3 can import `module` (pip package `package`); under `CI=true` a
/// missing one fails the test, as a missing peer does.
#[track_caller]
pub fn require_python_module(module: &str, package: &str) -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return true;
    }
    let hint = format!("python3 -m pip install {package}");
    assert!(!in_ci(), "python module `{module}` is missing and CI=true: {hint}");
    eprintln!(
        "SKIPPED: python module `{module}` is not installed ({hint}); this test checks nothing here"
    );
    false
}

/// The peers nearly every test needs.
#[track_caller]
pub fn require_basics() -> bool {
    require_peers(&["openssl", "curl"])
}

/// pkilint's three entry points.
#[track_caller]
pub fn require_pkilint() -> bool {
    require_peers(&["lint_pkix_cert", "lint_crl", "lint_pkix_signer_signee_cert_chain"])
}
