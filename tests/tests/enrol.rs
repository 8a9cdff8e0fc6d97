//! EST enrolment with curl and openssl alone, and the issued certificate's profile as
//! openssl and pkilint read it (DESIGN.md, "Issued certificates").

use lanyard_e2e::est::{self, Request};
use lanyard_e2e::pki::{self, KeyAlg};
use lanyard_e2e::{Ca, Server, peers, run};
use std::path::{Path, PathBuf};

/// Enrols `identity` with a fresh key of `alg` (token in `group`, if given); returns the
/// leaf (PEM) and the answer.
fn enrol(
    ca: &Ca,
    srv: &Server,
    identity: &str,
    alg: KeyAlg,
    group: Option<&str>,
) -> (PathBuf, PathBuf) {
    let token = match group {
        Some(g) => ca.token_with(identity, &["--group", g]),
        None => ca.token(identity),
    };
    let (key, csr) = pki::key_and_csr(&ca.work, alg, identity);
    let r = est::enroll(srv, identity, &token, &csr.b64).expect(200);
    assert!(
        r.content_type.starts_with("application/pkcs7-mime"),
        "EST answers certs-only PKCS#7: {}",
        r.content_type
    );
    assert!(!r.body.is_empty() && r.text().lines().all(|l| l.len() <= 76), "base64 lines: {r}");
    let leaf = pki::leaf_from_est(&r.body, &ca.work, &format!("leaf-{}", pki::unique()));
    (leaf, key)
}

/// The whole profile, as `openssl x509 -text` shows it.
fn check_profile(ca: &Ca, leaf: &Path, identity: &str, san: &str, key_line: &str) {
    let text = pki::x509_text(leaf);
    let ctx = format!("{}\n{text}", leaf.display());
    assert_eq!(pki::subject(leaf), format!("CN = {identity}"), "{ctx}");
    assert!(text.contains(key_line), "key is not {key_line}: {ctx}");

    let (_, san_lines) =
        pki::extension_lines(&text, "X509v3 Subject Alternative Name").expect("SAN");
    assert_eq!(san_lines, vec![san.to_owned()], "SAN names the identity and nothing else: {ctx}");

    let (head, eku) = pki::extension_lines(&text, "X509v3 Extended Key Usage").expect("EKU");
    assert_eq!(eku, vec!["TLS Web Client Authentication"], "EKU clientAuth only: {ctx}");
    assert!(!head.contains("critical"), "EKU should not be critical: {ctx}");

    let (head, ku) = pki::extension_lines(&text, "X509v3 Key Usage").expect("KU");
    assert_eq!(head, "X509v3 Key Usage: critical", "KU must be critical: {ctx}");
    assert_eq!(ku, vec!["Digital Signature"], "KU digitalSignature only: {ctx}");

    let (head, bc) = pki::extension_lines(&text, "X509v3 Basic Constraints").expect("BC");
    assert!(head.contains("critical"), "{ctx}");
    assert_eq!(bc, vec!["CA:FALSE"], "{ctx}");

    let base = format!("http://127.0.0.1:{}", ca.http_port);
    let (_, aia) = pki::extension_lines(&text, "Authority Information Access").expect("AIA");
    assert!(aia.contains(&format!("OCSP - URI:{base}/ocsp")), "AIA OCSP: {ctx}");
    assert!(
        aia.contains(&format!("CA Issuers - URI:{base}/ca/issuing.crt")),
        "AIA CA issuers: {ctx}"
    );
    let (_, dp) = pki::extension_lines(&text, "X509v3 CRL Distribution Points").expect("CRL DP");
    assert!(dp.contains(&format!("URI:{base}/crl")), "CRL DP: {ctx}");

    // SKI present; AKI is the issuing CA's SKI.
    let (_, ski) = pki::extension_lines(&text, "X509v3 Subject Key Identifier").expect("SKI");
    assert_eq!(ski.len(), 1, "{ctx}");
    let (_, aki) = pki::extension_lines(&text, "X509v3 Authority Key Identifier").expect("AKI");
    let issuing_text = pki::x509_text(&ca.issuing_crt());
    let (_, issuing_ski) =
        pki::extension_lines(&issuing_text, "X509v3 Subject Key Identifier").expect("issuing SKI");
    assert!(
        aki.iter().any(|l| l.trim_start_matches("keyid:") == issuing_ski[0]),
        "AKI {aki:?} is not the issuing CA's SKI {issuing_ski:?}"
    );

    let serial = pki::serial_hex(leaf);
    assert!(pki::serial_bits(&serial) >= 128, "serial {serial} has fewer than 128 bits");
    assert!(!text.to_lowercase().contains("sha1"), "no SHA-1: {ctx}");

    // Issued now (backdated a little), for the default 7 days.
    let l = leaf.display().to_string();
    run("openssl", &["x509", "-in", &l, "-noout", "-checkend", "0"]).ok();
    run("openssl", &["x509", "-in", &l, "-noout", "-checkend", &(6 * 86_400).to_string()]).ok();
    run("openssl", &["x509", "-in", &l, "-noout", "-checkend", &(8 * 86_400).to_string()]).fails();

    pki::verify(&ca.bundle(), leaf, &["-x509_strict", "-purpose", "sslclient"]).ok();
    // Not a server certificate: openssl refuses it for serverAuth.
    pki::verify(&ca.bundle(), leaf, &["-purpose", "sslserver"]).fails();
}

#[test]
fn enrol_p256_profile_and_pkilint() {
    if !peers::require_basics() || !peers::require_pkilint() {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let id = "dev-1.fleet.example.com";
    let (leaf, _) = enrol(&ca, &srv, id, KeyAlg::P256, None);
    check_profile(&ca, &leaf, id, &format!("DNS:{id}"), "NIST CURVE: P-256");
    assert!(pki::x509_text(&leaf).contains("Signature Algorithm: ecdsa-with-SHA256"));

    // pkilint: leaf, CAs, chain links, and both CRLs as published and as served.
    assert!(pki::lint_cert(&leaf, &[]).is_empty());
    pki::lint_cert(&ca.root_crt(), &[]);
    pki::lint_cert(&ca.issuing_crt(), &[]);
    pki::lint_chain(&ca.issuing_crt(), &leaf);
    pki::lint_chain(&ca.root_crt(), &ca.issuing_crt());
    pki::lint_crl(&ca.path("crl/issuing.crl"));
    pki::lint_crl(&ca.path("crl/root.crl"));
    for (path, issuer) in [("/crl", ca.issuing_crt()), ("/crl/root", ca.root_crt())] {
        let r = Request::get(srv.http_url(path)).send().expect(200);
        assert_eq!(r.content_type, "application/pkix-crl");
        let f = ca.work(&format!("served{}.crl", path.replace('/', "-")));
        std::fs::write(&f, &r.body).expect("write crl");
        let (fs, is) = (f.display().to_string(), issuer.display().to_string());
        let out = run("openssl", &["crl", "-inform", "DER", "-in", &fs, "-CAfile", &is, "-noout"]);
        assert!(out.ok().stderr.contains("verify OK"), "{path} does not verify under its CA");
        pki::lint_crl(&f);
    }
}

#[test]
fn enrol_p384() {
    if !peers::require_basics() || !peers::require_pkilint() {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let id = "dev-384.fleet.example.com";
    let (leaf, _) = enrol(&ca, &srv, id, KeyAlg::P384, None);
    check_profile(&ca, &leaf, id, &format!("DNS:{id}"), "NIST CURVE: P-384");
    pki::lint_cert(&leaf, &[]);
}

#[test]
fn enrol_rsa2048_where_the_policy_allows_it() {
    if !peers::require_basics() || !peers::require_pkilint() {
        return;
    }
    let ca = Ca::init();
    ca.policy_set("rsa", &["--key-algorithms", "rsa-2048,ecdsa-p256"]);
    let srv = ca.serve();
    let id = "dev-rsa.fleet.example.com";
    let (leaf, _) = enrol(&ca, &srv, id, KeyAlg::Rsa(2048), Some("rsa"));
    check_profile(&ca, &leaf, id, &format!("DNS:{id}"), "Public-Key: (2048 bit)");
    pki::lint_cert(&leaf, &[]);

    // The default group (P-256, P-384) refuses RSA, naming what it allows.
    let t = ca.token("dev-rsa2.fleet.example.com");
    let (_, csr) = pki::key_and_csr(&ca.work, KeyAlg::Rsa(2048), "dev-rsa2.fleet.example.com");
    let r = est::enroll(&srv, "dev-rsa2.fleet.example.com", &t, &csr.b64).expect(400);
    assert!(r.text().contains("rsa-2048") && r.text().contains("ecdsa-p256"), "{r}");
}

/// An RSA issuing CA signs leaves with sha256WithRSAEncryption that pass the same checks.
#[test]
fn enrol_under_rsa_issuing_ca() {
    if !peers::require_basics() || !peers::require_pkilint() {
        return;
    }
    let ca = Ca::init_with(&["--issuing-key", "rsa-2048"]);
    let srv = ca.serve();
    let id = "dev-2.fleet.example.com";
    let (leaf, _) = enrol(&ca, &srv, id, KeyAlg::P256, None);
    check_profile(&ca, &leaf, id, &format!("DNS:{id}"), "NIST CURVE: P-256");
    assert!(pki::x509_text(&leaf).contains("Signature Algorithm: sha256WithRSAEncryption"));
    pki::lint_cert(&leaf, &[]);
    pki::lint_chain(&ca.issuing_crt(), &leaf);
    pki::lint_crl(&ca.path("crl/issuing.crl"));
}

/// Identities that are not host names get a URI SAN (`urn:lanyard:device:...`) or an
/// email SAN. pkilint's one known false positive on URNs is tolerated, nothing else.
#[test]
fn enrol_identity_shapes_pick_the_san() {
    if !peers::require_basics() || !peers::require_pkilint() {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();

    let (leaf, _) = enrol(&ca, &srv, "dev-0042", KeyAlg::P256, None);
    check_profile(&ca, &leaf, "dev-0042", "URI:urn:lanyard:device:dev-0042", "P-256");
    let codes = pki::lint_cert(&leaf, &["pkix.invalid_uri_syntax"]);
    assert_eq!(codes, vec!["pkix.invalid_uri_syntax"], "only the URN false positive is expected");

    let (leaf, _) = enrol(&ca, &srv, "alice@example.com", KeyAlg::P256, None);
    check_profile(&ca, &leaf, "alice@example.com", "email:alice@example.com", "P-256");
    pki::lint_cert(&leaf, &[]);
}

/// The CA, not the CSR, decides the names: a CSR that asks for other SANs, or carries no
/// subject at all, gets the identity's profile.
#[test]
fn csr_names_are_ignored() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let id = "dev-3.fleet.example.com";
    let key = pki::genkey(&ca.work("k.key"), KeyAlg::P256);
    let csr = pki::csr(
        &ca.work,
        "san",
        &key,
        &format!("/CN={id}"),
        &["subjectAltName=DNS:evil.example.com,DNS:*.example.com"],
    );
    let r = est::enroll(&srv, id, &ca.token(id), &csr.b64).expect(200);
    let leaf = pki::leaf_from_est(&r.body, &ca.work, "san-leaf");
    check_profile(&ca, &leaf, id, &format!("DNS:{id}"), "P-256");
    assert!(!pki::x509_text(&leaf).contains("evil"), "a SAN from the CSR reached the certificate");

    let id = "dev-4.fleet.example.com";
    let key = pki::genkey(&ca.work("k4.key"), KeyAlg::P256);
    let csr = pki::csr(&ca.work, "nosubj", &key, "/", &[]);
    let r = est::enroll(&srv, id, &ca.token(id), &csr.b64).expect(200);
    let leaf = pki::leaf_from_est(&r.body, &ca.work, "nosubj-leaf");
    check_profile(&ca, &leaf, id, &format!("DNS:{id}"), "P-256");
}

/// The other EST endpoints: `cacerts` (both CAs, over HTTPS and HTTP), `csrattrs`
/// (the policy's key), `/v1/policy`, and the CA certificates named in AIA.
#[test]
fn cacerts_csrattrs_policy() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    ca.policy_set("p384", &["--key-algorithms", "ecdsa-p384"]);
    let srv = ca.serve();
    for url in [srv.url("/.well-known/est/cacerts"), srv.http_url("/.well-known/est/cacerts")] {
        let r = Request::get(&url).cacert(&srv.cacert).send().expect(200);
        let certs =
            pki::certs_from_pkcs7_b64(&r.body, &ca.work, &format!("cacerts-{}", pki::unique()));
        let subjects: Vec<String> = certs.iter().map(|c| pki::subject(c)).collect();
        assert_eq!(certs.len(), 2, "{url}: {subjects:?}");
        assert!(subjects.contains(&pki::subject(&ca.root_crt())), "{url}: no root");
        assert!(subjects.contains(&pki::subject(&ca.issuing_crt())), "{url}: no issuing CA");
    }

    // csrattrs and the policy are for devices: a device certificate or an unused token.
    let r = est::get(&srv, "/.well-known/est/csrattrs").expect(401);
    assert!(r.content_type.starts_with("application/problem+json"), "{r}");
    est::get(&srv, "/v1/policy?group=p384").expect(401);
    // The default group wants P-256; a token of group p384 learns P-384.
    let tok = ca.token("dev-4");
    let r = Request::get(srv.url("/.well-known/est/csrattrs"))
        .cacert(&srv.cacert)
        .basic("dev-4", &tok)
        .send()
        .expect(200);
    let parsed = asn1parse_b64(&ca.work, &r.body);
    assert!(parsed.contains("prime256v1"), "default csrattrs should ask for P-256:\n{parsed}");
    let tok = ca.token_with("dev-5", &["--group", "p384"]);
    let r = Request::get(srv.url("/.well-known/est/csrattrs"))
        .cacert(&srv.cacert)
        .basic("dev-5", &tok)
        .send()
        .expect(200);
    let parsed = asn1parse_b64(&ca.work, &r.body);
    assert!(parsed.contains("secp384r1"), "group p384 csrattrs should ask for P-384:\n{parsed}");

    let r = Request::get(srv.url("/v1/policy?group=p384"))
        .cacert(&srv.cacert)
        .basic("dev-5", &tok)
        .send()
        .expect(200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("policy JSON");
    assert_eq!(v["group"], "p384", "{v}");
    assert!(v.to_string().contains("ecdsa-p384"), "{v}");

    // The CA issuers URLs of AIA serve the certificates themselves.
    for (path, pem) in [("/ca/issuing.crt", ca.issuing_crt()), ("/ca/root.crt", ca.root_crt())] {
        let r = Request::get(srv.http_url(path)).send().expect(200);
        let f = ca.work(&format!("aia{}.der", path.replace('/', "-")));
        std::fs::write(&f, &r.body).expect("write");
        let (fs, out) = (f.display().to_string(), ca.work("aia.pem").display().to_string());
        run("openssl", &["x509", "-inform", "DER", "-in", &fs, "-out", &out]).ok();
        assert_eq!(
            std::fs::read_to_string(&out).expect("read"),
            std::fs::read_to_string(&pem).expect("read"),
            "{path} is not the CA certificate"
        );
    }
}

fn asn1parse_b64(dir: &Path, body: &[u8]) -> String {
    let b64 = dir.join(format!("attrs-{}.b64", pki::unique()));
    std::fs::write(&b64, body).expect("write");
    let b = b64.display().to_string();
    run("openssl", &["asn1parse", "-inform", "PEM", "-in", &b]).ok().stdout
}

/// The group's policy, not the CSR, sets the lifetime; out-of-range policies are refused
/// with the allowed range.
#[test]
fn policy_lifetime_applies_and_bad_policies_are_refused() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    ca.policy_set("short", &["--lifetime", "1h"]);
    let shown = ca.cli(&["policy", "show", "--group", "short"]).ok();
    let v: serde_json::Value = serde_json::from_str(&shown.stdout).expect("policy JSON");
    assert!(shown.stdout.contains("3600"), "lifetime not stored: {v}");
    let srv = ca.serve();
    let id = "dev-short.fleet.example.com";
    let (_, csr) = pki::key_and_csr(&ca.work, KeyAlg::P256, id);
    let tok = ca.token_with(id, &["--group", "short"]);
    let r = est::enroll(&srv, id, &tok, &csr.b64).expect(200);
    let leaf = pki::leaf_from_est(&r.body, &ca.work, "short");
    let l = leaf.display().to_string();
    run("openssl", &["x509", "-in", &l, "-noout", "-checkend", "3000"]).ok();
    run("openssl", &["x509", "-in", &l, "-noout", "-checkend", "3700"]).fails();

    for (args, says) in [
        (&["--lifetime", "1m"][..], "lifetime"),
        (&["--lifetime", "500d"][..], "lifetime"),
        (&["--renew-fraction", "1.5"][..], "renew"),
        (&["--key-algorithms", "ecdsa-p521"][..], "ecdsa-p256"),
    ] {
        let mut a = vec!["policy", "set", "--group", "short"];
        a.extend_from_slice(args);
        let out = ca.cli(&a).fails();
        assert!(out.stderr.contains(says), "{args:?}: {out}");
    }
    // The refused changes left the policy as it was.
    assert_eq!(ca.cli(&["policy", "show", "--group", "short"]).ok().stdout, shown.stdout);
}
