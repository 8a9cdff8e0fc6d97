//! `lanyard-ca init`: every root/issuing algorithm pair CloudFront accepts gives a CA whose
//! bundle openssl reads and `lanyard-ca bundle` passes, with private keys 0600; a second
//! init changes nothing; algorithms CloudFront refuses are refused with the allowed list.

use lanyard_e2e::ca::lanyard_ca_cmd;
use lanyard_e2e::pki::{self, split_pem_certs};
use lanyard_e2e::{Ca, peers, run};
use std::collections::BTreeMap;
use std::path::Path;

/// What `openssl x509 -text` says about a key of each algorithm.
fn key_line(alg: &str) -> &'static str {
    match alg {
        "ecdsa-p256" => "NIST CURVE: P-256",
        "ecdsa-p384" => "NIST CURVE: P-384",
        "rsa-2048" => "Public-Key: (2048 bit)",
        "rsa-3072" => "Public-Key: (3072 bit)",
        "rsa-4096" => "Public-Key: (4096 bit)",
        other => panic!("unknown algorithm {other}"),
    }
}

/// The signature algorithm a CA key of `alg` signs with, as openssl names it.
fn sig_name(alg: &str) -> &'static str {
    match alg {
        "ecdsa-p256" => "ecdsa-with-SHA256",
        "ecdsa-p384" => "ecdsa-with-SHA384",
        _ => "sha256WithRSAEncryption",
    }
}

fn check_init(root_alg: &str, issuing_alg: &str) {
    if !peers::require_basics() || !peers::require_pkilint() {
        return;
    }
    let ca = Ca::init_with(&["--root-key", root_alg, "--issuing-key", issuing_alg]);

    for f in ["ca.toml", "root.crt", "issuing.crt", "ca-bundle.pem", "lanyard-ca.db"] {
        assert!(ca.path(f).is_file(), "init did not write {f}");
    }
    for f in ["crl/issuing.crl", "crl/root.crl", "crl/crl.pem"] {
        assert!(ca.path(f).is_file(), "init did not publish {f}");
    }
    for k in ["root.key", "issuing.key"] {
        assert_eq!(pki::mode(&ca.path(k)), 0o600, "{k} must be readable by its owner only");
    }

    // The seed's own bundle check, and CloudFront's rules as lanyard-ca knows them.
    let bundle = ca.bundle().display().to_string();
    let p7 = run("openssl", &["crl2pkcs7", "-nocrl", "-certfile", &bundle]).ok();
    let printed = lanyard_e2e::cmd::run_stdin(
        "openssl",
        &["pkcs7", "-print_certs", "-noout"],
        p7.stdout.as_bytes(),
    )
    .ok();
    assert_eq!(
        printed.stdout.matches("subject=").count(),
        2,
        "bundle holds root and issuing:\n{printed}"
    );
    ca.cli(&["bundle"]).ok();

    // Root first, then issuing; each the algorithm asked for; issuing chains to root.
    let text = std::fs::read_to_string(ca.bundle()).expect("bundle");
    assert!(!text.contains("\n\n"), "CloudFront refuses blank lines in a bundle");
    let blocks = split_pem_certs(&text);
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0], std::fs::read_to_string(ca.root_crt()).expect("root.crt"));
    assert_eq!(blocks[1], std::fs::read_to_string(ca.issuing_crt()).expect("issuing.crt"));
    let root_text = pki::x509_text(&ca.root_crt());
    let issuing_text = pki::x509_text(&ca.issuing_crt());
    assert!(root_text.contains(key_line(root_alg)), "root key is not {root_alg}:\n{root_text}");
    assert!(
        issuing_text.contains(key_line(issuing_alg)),
        "issuing key is not {issuing_alg}:\n{issuing_text}"
    );
    let want_sig = format!("Signature Algorithm: {}", sig_name(root_alg));
    assert!(issuing_text.contains(&want_sig), "issuing CA not signed with {want_sig}");
    assert!(!issuing_text.contains("sha1"), "no SHA-1 anywhere:\n{issuing_text}");
    let root_s = ca.root_crt().display().to_string();
    let issuing_s = ca.issuing_crt().display().to_string();
    run("openssl", &["verify", "-x509_strict", "-CAfile", &root_s, &issuing_s]).ok();

    // Both CRLs verify under their issuer and lint clean.
    for (crl, issuer) in [("crl/issuing.crl", &issuing_s), ("crl/root.crl", &root_s)] {
        let c = ca.path(crl).display().to_string();
        let out =
            run("openssl", &["crl", "-inform", "DER", "-in", &c, "-CAfile", issuer, "-noout"]);
        assert!(out.ok().stderr.contains("verify OK"), "{crl} does not verify");
        pki::lint_crl(&ca.path(crl));
    }
    pki::lint_cert(&ca.root_crt(), &[]);
    pki::lint_cert(&ca.issuing_crt(), &[]);
    pki::lint_chain(&ca.root_crt(), &ca.issuing_crt());
}

#[test]
fn init_default_p384_root_p256_issuing() {
    check_init("ecdsa-p384", "ecdsa-p256");
}

#[test]
fn init_defaults_are_p384_and_p256() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    assert!(pki::x509_text(&ca.root_crt()).contains("NIST CURVE: P-384"));
    assert!(pki::x509_text(&ca.issuing_crt()).contains("NIST CURVE: P-256"));
}

/// A certs-only PKCS#7 as openssl writes it reads back to the bundle's certificates, byte for
/// byte: without CRLs, and with one, which the reader goes past.
#[test]
fn openssl_certs_only_pkcs7_reads_back() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    let bundle = ca.bundle();
    let mut want: Vec<Vec<u8>> =
        rustls_pemfile::certs(&mut std::io::BufReader::new(std::fs::File::open(&bundle).unwrap()))
            .map(|c| c.unwrap().to_vec())
            .collect();
    want.sort();
    assert_eq!(want.len(), 2);
    let crl = ca.path("crl/crl.pem");
    for (name, extra, crls) in
        [("no-crl.p7b", vec!["-nocrl"], 0), ("crl.p7b", vec!["-in", path_str(&crl)], 1)]
    {
        let out = ca.path(name);
        let mut args = vec!["crl2pkcs7", "-certfile", path_str(&bundle), "-outform", "DER"];
        args.extend(["-out", path_str(&out)]);
        args.extend(extra);
        run("openssl", &args).ok();
        let printed = run("openssl", &["pkcs7", "-inform", "DER", "-print", "-in", path_str(&out)]);
        assert_eq!(printed.ok().stdout.matches("lastUpdate:").count(), crls, "CRLs in {name}");
        let der = std::fs::read(&out).unwrap();
        let mut got = lanyard_proto::est::parse_certs_only_pkcs7(&der)
            .unwrap_or_else(|e| panic!("{name} as openssl wrote it: {e}"));
        got.sort();
        assert_eq!(got, want, "{name}");
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

#[test]
fn init_p384_root_rsa2048_issuing() {
    check_init("ecdsa-p384", "rsa-2048");
}

#[test]
fn init_p384_root_rsa4096_issuing() {
    check_init("ecdsa-p384", "rsa-4096");
}

#[test]
fn init_rsa4096_root_rsa2048_issuing() {
    check_init("rsa-4096", "rsa-2048");
}

#[test]
fn init_rsa3072_root_p384_issuing() {
    check_init("rsa-3072", "ecdsa-p384");
}

#[test]
fn init_p256_root_p256_issuing() {
    check_init("ecdsa-p256", "ecdsa-p256");
}

/// Every file's bytes and modification time.
fn snapshot(dir: &Path) -> BTreeMap<String, (Vec<u8>, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let m = std::fs::metadata(&p).and_then(|m| m.modified()).expect("mtime");
                let key = p.strip_prefix(dir).expect("prefix").display().to_string();
                out.insert(key, (std::fs::read(&p).expect("read"), m));
            }
        }
    }
    out
}

#[test]
fn second_init_fails_and_changes_nothing() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    let before = snapshot(&ca.dir);
    std::thread::sleep(std::time::Duration::from_millis(20));
    for extra in [&[][..], &["--issuing-key", "rsa-2048"][..], &["--name", "Other"][..]] {
        let mut args = vec!["init"];
        args.extend_from_slice(extra);
        let out = ca.cli(&args).fails();
        assert!(out.stderr.contains("refusing to overwrite"), "{out}");
    }
    let after = snapshot(&ca.dir);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "a refused init added or removed files"
    );
    for (k, v) in &before {
        assert!(after[k] == *v, "a refused init touched {k}");
    }
}

#[test]
fn unsupported_algorithms_are_refused_with_the_allowed_list() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for (flag, alg) in [
        ("--root-key", "ecdsa-p521"),
        ("--issuing-key", "ecdsa-p521"),
        ("--root-key", "ed25519"),
        ("--issuing-key", "ed25519"),
        ("--issuing-key", "rsa-1024"),
        ("--root-key", "ml-dsa-65"),
    ] {
        let dir = tmp.path().join(format!("ca-{alg}"));
        let d = dir.display().to_string();
        let out = lanyard_ca_cmd(&["init", "--dir", &d, flag, alg]).fails();
        for allowed in ["ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072", "rsa-4096"] {
            assert!(
                out.stderr.contains(allowed),
                "{flag} {alg}: message does not name {allowed}:\n{out}"
            );
        }
        assert!(out.stderr.contains(alg), "message does not name the refused value:\n{out}");
        assert!(
            !dir.join("ca.toml").exists() && !dir.join("root.key").exists(),
            "{alg}: a CA was left behind"
        );
    }
}

/// `bundle --check` explains every CloudFront rule a bundle breaks, one line each.
#[test]
fn bundle_check_lists_each_broken_rule() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    // A blank line, then a P-521 self-signed CA (refused key type), then a comment with '-'.
    let key = pki::genkey(&ca.work("p521.key"), pki::KeyAlg::P521);
    let crt = ca.work("p521.crt");
    let (k, c) = (key.display().to_string(), crt.display().to_string());
    let args =
        ["req", "-x509", "-new", "-key", &k, "-subj", "/CN=P521 CA", "-days", "30", "-out", &c];
    run("openssl", &args).ok();
    let good = std::fs::read_to_string(ca.bundle()).expect("bundle");
    let p521 = std::fs::read_to_string(&crt).expect("p521");
    let bad = ca.work("bad-bundle.pem");
    std::fs::write(&bad, format!("{good}\n{p521}# a comment - with a dash\n")).expect("write");
    let b = bad.display().to_string();
    let out = ca.cli(&["bundle", "--check", &b]);
    assert_eq!(out.code, Some(1), "bundle --check must exit 1 on a broken bundle:\n{out}");
    let msg = out.stderr.to_lowercase();
    assert!(msg.contains("p-521"), "P-521 key not reported:\n{out}");
    assert!(msg.contains("blank"), "blank line not reported:\n{out}");
    assert!(msg.contains("comment"), "comment with '-' not reported:\n{out}");
    // A blank line between certificates is refused even when a comment follows it.
    let root = std::fs::read_to_string(ca.root_crt()).expect("root");
    let issuing = std::fs::read_to_string(ca.issuing_crt()).expect("issuing");
    let sneaky = ca.work("blank-then-comment.pem");
    std::fs::write(&sneaky, format!("{root}\n# issuing CA\n{issuing}")).expect("write");
    let out = ca.cli(&["bundle", "--check", &sneaky.display().to_string()]);
    assert_eq!(out.code, Some(1), "blank line before a comment between certificates:\n{out}");
    assert!(out.stderr.contains("blank line"), "{out}");
    // Comments alone (no blank line) are fine.
    std::fs::write(&sneaky, format!("# root CA\n{root}# issuing CA\n{issuing}")).expect("write");
    ca.cli(&["bundle", "--check", &sneaky.display().to_string()]).ok();
    // The good bundle, given explicitly, still passes.
    let g = ca.bundle().display().to_string();
    ca.cli(&["bundle", "--check", &g]).ok();
}
