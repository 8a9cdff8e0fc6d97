//! A new user's first hour with `lanyard-ca`: the root fingerprint a device pins is printed
//! where they look (init, serve, `ca fingerprint`) and is what openssl computes; a mistyped
//! group is refused; listings piped into `head` end quietly; a busy port names its flag;
//! a public URL that cannot reach the publication listener is warned about; default ports
//! do not clash with the agent's proxy; output is RFC 3339 and free of colour codes.

use lanyard_e2e::ca::{lanyard_ca_cmd, reserve_port};
use lanyard_e2e::{Ca, bins, peers, run};
use std::process::{Command, Stdio};

/// The root's SHA-256 as openssl computes it: 64 lowercase hex digits.
fn openssl_fingerprint(ca: &Ca) -> String {
    let root = ca.root_crt().display().to_string();
    let out = run("openssl", &["x509", "-in", &root, "-noout", "-fingerprint", "-sha256"]).ok();
    let hex = out.stdout.trim().rsplit('=').next().unwrap_or_default().replace(':', "");
    assert_eq!(hex.len(), 64, "openssl fingerprint:\n{out}");
    hex.to_ascii_lowercase()
}

#[test]
fn the_root_fingerprint_is_printed_by_init_serve_and_ca_fingerprint() {
    if !peers::require_basics() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("ca").display().to_string();
    let init = lanyard_ca_cmd(&["init", "--dir", &dir]).ok();
    let ca = Ca::init();
    let want = openssl_fingerprint(&ca);
    let printed = ca.cli(&["ca", "fingerprint"]).ok();
    assert_eq!(printed.stdout.trim(), want, "ca fingerprint prints the hex alone:\n{printed}");
    assert!(init.stderr.contains("--ca-fingerprint"), "init names the flag:\n{init}");
    let other = lanyard_ca_cmd(&["ca", "fingerprint", "--dir", &dir]).ok();
    assert!(init.stderr.contains(other.stdout.trim()), "init prints it:\n{init}");
    let srv = ca.serve();
    let log = srv.log();
    assert!(log.contains(&want) && log.contains("--ca-fingerprint"), "serve prints it:\n{log}");
    assert!(!log.contains('\u{1b}'), "no colour codes in a log that is not a terminal:\n{log}");
}

#[test]
fn a_token_for_a_group_without_a_policy_is_refused() {
    let ca = Ca::init();
    let out = ca.cli(&["token", "create", "--identity", "s-1", "--group", "sensosr"]).fails();
    assert_eq!(out.code, Some(2), "a usage error:\n{out}");
    for needle in ["\"sensosr\"", "no policy", "default", "policy set"] {
        assert!(out.stderr.contains(needle), "no {needle:?} in:\n{out}");
    }
    assert!(out.stdout.is_empty(), "no token printed:\n{out}");
    ca.policy_set("sensors", &["--lifetime", "7d"]);
    let out = ca.cli(&["token", "create", "--identity", "s-1", "--group", "sensosr"]).fails();
    assert!(out.stderr.contains("sensors"), "known groups listed:\n{out}");
    ca.token_with("s-1", &["--group", "sensors"]);
    // "default" needs no policy of its own.
    ca.token_with("s-2", &["--group", "default"]);
    let groups = ca.cli(&["policy", "list"]).ok();
    assert_eq!(groups.stdout.lines().collect::<Vec<_>>(), ["default", "sensors"], "{groups}");
    let json = ca.cli(&["policy", "list", "--json"]).ok();
    let parsed: serde_json::Value = serde_json::from_str(&json.stdout).expect("policy list --json");
    assert_eq!(parsed[1]["group"], "sensors", "{json}");
}

#[test]
fn listings_piped_into_a_closed_pipe_end_quietly() {
    let ca = Ca::init();
    ca.token("dev-1");
    let dir = ca.dir.display().to_string();
    for args in [
        &["policy", "show"][..],
        &["audit"][..],
        &["audit", "--json"][..],
        &["certs", "list"][..],
        &["ca", "fingerprint"][..],
    ] {
        let mut child = Command::new(bins::lanyard_ca())
            .args(args)
            .args(["--dir", &dir])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        // The reader is gone before the first line is written, as after `| head`.
        drop(child.stdout.take());
        let o = child.wait_with_output().expect("wait");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_ne!(o.status.code(), Some(101), "{args:?}: {err}");
    }
}

#[test]
fn a_busy_publication_port_names_its_flag() {
    let ca = Ca::init();
    let (_held, port) = reserve_port();
    let out = ca
        .cli(&["serve", "--listen", "127.0.0.1:0", "--http-listen", &format!("127.0.0.1:{port}")])
        .fails();
    assert!(out.stderr.contains("--http-listen"), "{out}");
    let (_held2, port2) = reserve_port();
    let out = ca.cli(&["serve", "--listen", &format!("127.0.0.1:{port2}")]).fails();
    assert!(out.stderr.contains("--listen"), "{out}");
}

#[test]
fn a_public_url_that_cannot_reach_the_publication_listener_is_warned_about() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("ca").display().to_string();
    let init =
        lanyard_ca_cmd(&["init", "--dir", &dir, "--public-url", "http://ca.example.com"]).ok();
    assert!(init.stderr.contains("port 80") && init.stderr.contains("--http-listen"), "{init}");
    let addr = tmp.path().join("addr.json");
    let mut serve = Command::new(bins::lanyard_ca())
        .args(["serve", "--dir", &dir, "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .arg("--addr-file")
        .arg(&addr)
        .env("LANYARD_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !addr.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = serve.kill();
    let o = serve.wait_with_output().expect("wait");
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(log.contains("WARN") && log.contains("http://ca.example.com"), "{log}");
    assert!(log.contains("--http-listen"), "{log}");

    // Made and served on the defaults, the two agree, and neither is the proxy's 8080.
    let help = |args: &[&str]| lanyard_ca_cmd(args).ok().stdout;
    let default_of = |text: &str, flag: &str| -> String {
        let line = text.lines().skip_while(|l| !l.contains(flag)).find(|l| l.contains("[default:"));
        let line = line.unwrap_or_else(|| panic!("no default for {flag} in:\n{text}"));
        let d = line.split("[default: ").nth(1).unwrap_or_default();
        d.trim_end_matches(']').rsplit(':').next().unwrap_or_default().to_owned()
    };
    let init_port = default_of(&help(&["init", "--help"]), "--public-url");
    let serve_port = default_of(&help(&["serve", "--help"]), "--http-listen");
    assert_eq!(init_port, serve_port, "init's public URL and serve's listener agree");
    assert_ne!(serve_port, "8080", "8080 is the agent proxy's default listener");
}

#[test]
fn output_is_rfc3339_and_the_audit_names_the_uid_without_user() {
    let ca = Ca::init();
    let out = Command::new(bins::lanyard_ca())
        .args(["token", "create", "--identity", "dev-1", "--dir"])
        .arg(&ca.dir)
        .env_remove("USER")
        .env_remove("LOGNAME")
        .output()
        .expect("token create");
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let until = err.rsplit("valid until ").next().unwrap_or_default().trim();
    assert!(until.len() == 20 && until.ends_with('Z') && until.contains('T'), "{err}");
    let audit = ca.cli(&["audit"]).ok();
    let first = audit.stdout.lines().next().unwrap_or_default().to_owned();
    let at = first.split_whitespace().next().unwrap_or_default();
    assert!(at.len() == 20 && at.ends_with('Z') && at.contains('T'), "{audit}");
    assert!(!first.contains("cli:unknown") && first.contains("cli:"), "{audit}");
}

#[test]
fn the_ca_directory_may_come_before_the_command() {
    let ca = Ca::init();
    let dir = ca.dir.display().to_string();
    let before = lanyard_ca_cmd(&["--dir", &dir, "ca", "fingerprint"]).ok();
    let after = lanyard_ca_cmd(&["ca", "fingerprint", "--dir", &dir]).ok();
    assert_eq!(before.stdout, after.stdout);
    for listing in [&["certs", "list"][..], &["audit"][..], &["revoked"][..]] {
        let mut args = vec!["--dir", dir.as_str()];
        args.extend_from_slice(listing);
        args.push("--json");
        let out = lanyard_ca_cmd(&args).ok();
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(&out.stdout);
        assert!(parsed.is_ok(), "{listing:?} --json is JSON:\n{out}");
    }
    let missing = Command::new(bins::lanyard_ca())
        .args(["certs", "list"])
        .env_remove("LANYARD_CA_DIR")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(2), "a usage error: {err}");
    assert!(err.contains("--dir"), "{err}");
}

#[test]
fn a_serial_typed_in_any_form_is_shown_in_the_one_form_certs_list_uses() {
    use lanyard_e2e::est;
    use lanyard_e2e::pki::{self, KeyAlg};
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let id = "a-rather-long-device-name-0042.sensors.fleet.example.com";
    let (_, csr) = pki::key_and_csr(&ca.work, KeyAlg::P256, id);
    let r = est::enroll(&srv, id, &ca.token(id), &csr.b64).expect(200);
    let leaf = pki::leaf_from_est(&r.body, &ca.work, "leaf");
    let serial = pki::serial_hex(&leaf).to_ascii_lowercase();
    let listed = ca.cli(&["certs", "list"]).ok();
    let row = listed.stdout.lines().find(|l| l.contains(id)).unwrap_or_default().to_owned();
    assert!(row.starts_with(&serial), "certs list shows plain lowercase hex:\n{listed}");
    let header = listed.stdout.lines().next().unwrap_or_default();
    assert_eq!(
        header.find("GROUP"),
        row.find("default"),
        "columns stay aligned with a long identity:\n{listed}"
    );
    let colon = serial
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(":");
    let out = ca.cli(&["revoke", "--serial", &colon]).ok();
    assert!(out.stderr.contains(&format!("revoked {serial} ")), "{out}");
}
