//! openssl and pkilint, as the tests use them: device keys and CSRs made by openssl,
//! EST answers unpacked by openssl, certificate fields read from `openssl x509`, and
//! pkilint findings checked against an explicit list of tolerated codes.

use crate::cmd::{Out, run};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A string unique within this process, for file names.
pub fn unique() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Key types a device (or an attacker) might send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlg {
    P256,
    P384,
    P521,
    Rsa(u32),
    Ed25519,
}

/// Generates a private key (PEM, PKCS#8) at `path` with openssl.
#[track_caller]
pub fn genkey(path: &Path, alg: KeyAlg) -> PathBuf {
    let p = path.display().to_string();
    let out = match alg {
        KeyAlg::P256 | KeyAlg::P384 | KeyAlg::P521 => {
            let curve = match alg {
                KeyAlg::P256 => "P-256",
                KeyAlg::P384 => "P-384",
                _ => "P-521",
            };
            let curve_opt = format!("ec_paramgen_curve:{curve}");
            run("openssl", &["genpkey", "-algorithm", "EC", "-pkeyopt", &curve_opt, "-out", &p])
        }
        KeyAlg::Rsa(bits) => {
            let bits_opt = format!("rsa_keygen_bits:{bits}");
            run("openssl", &["genpkey", "-algorithm", "RSA", "-pkeyopt", &bits_opt, "-out", &p])
        }
        KeyAlg::Ed25519 => run("openssl", &["genpkey", "-algorithm", "ed25519", "-out", &p]),
    };
    out.ok();
    path.into()
}

/// A CSR on disk: DER and the base64 body EST sends.
#[derive(Debug, Clone)]
pub struct Csr {
    pub der: PathBuf,
    pub b64: PathBuf,
}

/// Makes a CSR with `openssl req` for `key`, subject `subj` (e.g. `/CN=dev-1`, or `/`
/// for none) and `-addext` values, under `dir` with the file stem `name`.
#[track_caller]
pub fn csr(dir: &Path, name: &str, key: &Path, subj: &str, addext: &[&str]) -> Csr {
    let der = dir.join(format!("{name}.csr.der"));
    let b64 = dir.join(format!("{name}.csr.b64"));
    let key_s = key.display().to_string();
    let der_s = der.display().to_string();
    let mut args = vec!["req", "-new", "-key", &key_s, "-subj", subj, "-outform", "DER"];
    args.extend(["-out", &der_s]);
    for e in addext {
        args.extend(["-addext", e]);
    }
    run("openssl", &args).ok();
    base64_file(&der, &b64);
    Csr { der, b64 }
}

/// A new key and a CSR for it with subject CN = `cn`: returns (key, csr).
#[track_caller]
pub fn key_and_csr(dir: &Path, alg: KeyAlg, cn: &str) -> (PathBuf, Csr) {
    let name = format!("k{}", unique());
    let key = genkey(&dir.join(format!("{name}.key")), alg);
    let c = csr(dir, &name, &key, &format!("/CN={cn}"), &[]);
    (key, c)
}

/// `openssl base64` of a file (64-column lines, as EST bodies customarily are).
#[track_caller]
pub fn base64_file(input: &Path, output: &Path) {
    let (i, o) = (input.display().to_string(), output.display().to_string());
    run("openssl", &["base64", "-in", &i, "-out", &o]).ok();
}

/// Unpacks an EST certs-only PKCS#7 answer (base64 body) with openssl, writing each
/// certificate to `stem-N.pem` (clean PEM, through `openssl x509`, without the
/// subject/issuer lines `pkcs7 -print_certs` adds). Returns their paths in order.
#[track_caller]
pub fn certs_from_pkcs7_b64(body: &[u8], dir: &Path, stem: &str) -> Vec<PathBuf> {
    let b64 = dir.join(format!("{stem}.p7.b64"));
    let der = dir.join(format!("{stem}.p7.der"));
    let pem = dir.join(format!("{stem}.p7.pem"));
    std::fs::write(&b64, body).expect("write p7 body");
    let (b, d, p) =
        (b64.display().to_string(), der.display().to_string(), pem.display().to_string());
    run("openssl", &["base64", "-d", "-in", &b, "-out", &d]).ok();
    run("openssl", &["pkcs7", "-inform", "DER", "-in", &d, "-print_certs", "-out", &p]).ok();
    let text = std::fs::read_to_string(&pem).expect("read p7 pem");
    split_pem_certs(&text)
        .iter()
        .enumerate()
        .map(|(i, block)| {
            let out = dir.join(format!("{stem}-{i}.pem"));
            let o = out.display().to_string();
            crate::cmd::run_stdin("openssl", &["x509", "-out", &o], block.as_bytes()).ok();
            out
        })
        .collect()
}

/// The single certificate of an EST enrolment answer, as `dir/stem.pem`.
#[track_caller]
pub fn leaf_from_est(body: &[u8], dir: &Path, stem: &str) -> PathBuf {
    let certs = certs_from_pkcs7_b64(body, dir, stem);
    assert_eq!(certs.len(), 1, "an enrolment answer carries the leaf alone");
    let leaf = dir.join(format!("{stem}.pem"));
    std::fs::copy(&certs[0], &leaf).expect("copy leaf");
    leaf
}

/// The `-----BEGIN CERTIFICATE-----` blocks of a PEM text.
pub fn split_pem_certs(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        if line.starts_with("-----BEGIN CERTIFICATE-----") {
            cur = Some(String::new());
        }
        if let Some(c) = cur.as_mut() {
            c.push_str(line);
            c.push('\n');
        }
        if line.starts_with("-----END CERTIFICATE-----")
            && let Some(c) = cur.take()
        {
            out.push(c);
        }
    }
    out
}

/// `openssl x509 -text -noout`.
#[track_caller]
pub fn x509_text(cert: &Path) -> String {
    let c = cert.display().to_string();
    run("openssl", &["x509", "-in", &c, "-noout", "-text"]).ok().stdout
}

/// The serial as openssl prints it: upper-case hex, no colons.
#[track_caller]
pub fn serial_hex(cert: &Path) -> String {
    let c = cert.display().to_string();
    let out = run("openssl", &["x509", "-in", &c, "-noout", "-serial"]).ok();
    out.stdout.trim().trim_start_matches("serial=").to_owned()
}

/// The subject as openssl prints it (`CN = ...`).
#[track_caller]
pub fn subject(cert: &Path) -> String {
    let c = cert.display().to_string();
    let out = run("openssl", &["x509", "-in", &c, "-noout", "-subject"]).ok();
    out.stdout.trim().trim_start_matches("subject=").to_owned()
}

/// Bit length of a hex serial (positive INTEGER, leading zero octets ignored).
pub fn serial_bits(hex: &str) -> usize {
    let h = hex.trim_start_matches('0');
    let Some(first) = h.chars().next().and_then(|c| c.to_digit(16)) else { return 0 };
    (h.len() - 1) * 4 + (32 - first.leading_zeros() as usize)
}

/// The lines under an extension's heading in `openssl x509 -text` (indented deeper than
/// the heading), trimmed; empty if the extension is absent.
pub fn extension_lines(text: &str, heading: &str) -> Option<(String, Vec<String>)> {
    let mut lines = text.lines();
    let head = lines.by_ref().find(|l| l.trim_start().starts_with(heading))?;
    let indent = head.len() - head.trim_start().len();
    let body = lines
        .take_while(|l| l.len() - l.trim_start().len() > indent)
        .map(|l| l.trim().to_owned())
        .collect();
    Some((head.trim().to_owned(), body))
}

/// `openssl verify -CAfile BUNDLE CERT` (plus extra flags such as `-crl_check_all
/// -CRLfile crl.pem`).
pub fn verify(bundle: &Path, cert: &Path, extra: &[&str]) -> Out {
    let (b, c) = (bundle.display().to_string(), cert.display().to_string());
    let mut args = vec!["verify", "-CAfile", &b];
    args.extend_from_slice(extra);
    args.push(&c);
    run("openssl", &args)
}

/// pkilint codes found in a JSON report (`-f JSON`).
fn pkilint_codes(out: &Out) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("pkilint output is not JSON ({e}):\n{out}"));
    let mut codes = Vec::new();
    for r in v["results"].as_array().map(Vec::as_slice).unwrap_or_default() {
        for f in r["finding_descriptions"].as_array().map(Vec::as_slice).unwrap_or_default() {
            codes.push(f["code"].as_str().unwrap_or("?").to_owned());
        }
    }
    codes
}

#[track_caller]
fn assert_lint_clean(out: Out, tolerated: &[&str]) -> Vec<String> {
    let codes = pkilint_codes(&out);
    let bad: Vec<&String> = codes.iter().filter(|c| !tolerated.contains(&c.as_str())).collect();
    assert!(bad.is_empty(), "pkilint findings at WARNING or above: {bad:?}\n{out}");
    codes
}

/// `lint_pkix_cert lint -s WARNING`: no finding except the `tolerated` codes; returns
/// the codes found (so a test can insist a tolerated one really was the only one).
#[track_caller]
pub fn lint_cert(cert: &Path, tolerated: &[&str]) -> Vec<String> {
    let c = cert.display().to_string();
    assert_lint_clean(
        run("lint_pkix_cert", &["lint", "-s", "WARNING", "-f", "JSON", &c]),
        tolerated,
    )
}

/// `lint_crl lint -t CRL -p PKIX -s WARNING` (DER or PEM): no finding.
#[track_caller]
pub fn lint_crl(crl: &Path) {
    let c = crl.display().to_string();
    let args = ["lint", "-t", "CRL", "-p", "PKIX", "-s", "WARNING", "-f", "JSON", &c];
    assert_lint_clean(run("lint_crl", &args), &[]);
}

/// `lint_pkix_signer_signee_cert_chain lint -s WARNING ISSUER SUBJECT`: no finding.
#[track_caller]
pub fn lint_chain(issuer: &Path, subject: &Path) {
    let (i, s) = (issuer.display().to_string(), subject.display().to_string());
    let args = ["lint", "-s", "WARNING", "-f", "JSON", &i, &s];
    assert_lint_clean(run("lint_pkix_signer_signee_cert_chain", &args), &[]);
}

/// File mode bits (e.g. 0o600).
pub fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777).unwrap_or(0)
}
