//! Every bad input the CA must refuse (issue 2, "Bad input"): each gets a 4xx whose body
//! names the problem, nothing is recorded, the token survives, and the server keeps
//! serving.

use lanyard_e2e::est::{self, Request};
use lanyard_e2e::pki::{self, KeyAlg};
use lanyard_e2e::{Ca, Server, peers, run};
use std::path::{Path, PathBuf};

struct Case {
    what: &'static str,
    body: PathBuf,
    content_type: &'static str,
    status: u16,
    /// Words the answer must contain (case-insensitive), naming the problem.
    says: &'static [&'static str],
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write");
    p
}

fn csr_b64_for(ca: &Ca, alg: KeyAlg, subj: &str, addext: &[&str]) -> PathBuf {
    let name = format!("bad{}", pki::unique());
    let key = pki::genkey(&ca.work(&format!("{name}.key")), alg);
    pki::csr(&ca.work, &name, &key, subj, addext).b64
}

fn post(srv: &Server, id: &str, token: &str, c: &Case) -> lanyard_e2e::Resp {
    Request::post(srv.url("/.well-known/est/simpleenroll"), c.content_type, &c.body)
        .cacert(&srv.cacert)
        .basic(id, token)
        .send()
}

#[test]
fn bad_enrolment_requests_are_refused_and_leave_nothing() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let id = "dev-1.fleet.example.com";
    let subj = format!("/CN={id}");
    let token = ca.token(id);
    let (_, good) = pki::key_and_csr(&ca.work, KeyAlg::P256, id);
    let good_b64 = std::fs::read_to_string(&good.b64).expect("b64");
    let good_der = std::fs::read(&good.der).expect("der");
    let compact: String = good_b64.split_whitespace().collect();

    let mut broken_sig = good_der.clone();
    let n = broken_sig.len();
    broken_sig[n - 1] ^= 0x01;
    let broken_sig = write(&ca.work, "broken-sig.der", &broken_sig);
    let broken_sig_b64 = ca.work("broken-sig.b64");
    pki::base64_file(&broken_sig, &broken_sig_b64);

    let mut trailing = good_der.clone();
    trailing.extend_from_slice(&[0u8; 8]);
    let trailing = write(&ca.work, "trailing.der", &trailing);
    let trailing_b64 = ca.work("trailing.b64");
    pki::base64_file(&trailing, &trailing_b64);

    // Base64 that decodes (length a multiple of 4) to the first half of a CSR, and base64
    // cut mid-quantum.
    let half = &compact[..(compact.len() / 2) / 4 * 4];
    let cut = &compact[..compact.len() / 2 / 4 * 4 + 1];

    let cases = vec![
        Case {
            what: "garbage base64",
            body: write(&ca.work, "garbage", b"this is *not* base64 at all!\n"),
            content_type: "application/pkcs10",
            status: 400,
            says: &["base64"],
        },
        Case {
            what: "empty body",
            body: write(&ca.work, "empty", b""),
            content_type: "application/pkcs10",
            status: 400,
            says: &["empty"],
        },
        Case {
            what: "truncated base64 (whole quanta)",
            body: write(&ca.work, "half", half.as_bytes()),
            content_type: "application/pkcs10",
            status: 400,
            says: &["pkcs#10"],
        },
        Case {
            what: "truncated base64 (mid-quantum)",
            body: write(&ca.work, "cut", cut.as_bytes()),
            content_type: "application/pkcs10",
            status: 400,
            says: &["base64"],
        },
        Case {
            what: "DER instead of base64",
            body: good.der.clone(),
            content_type: "application/pkcs10",
            status: 400,
            says: &["base64"],
        },
        Case {
            what: "CSR with broken signature",
            body: broken_sig_b64,
            content_type: "application/pkcs10",
            status: 400,
            says: &["signature"],
        },
        Case {
            what: "CSR with trailing bytes",
            body: trailing_b64,
            content_type: "application/pkcs10",
            status: 400,
            says: &["trailing"],
        },
        Case {
            what: "RSA-1024",
            body: csr_b64_for(&ca, KeyAlg::Rsa(1024), &subj, &[]),
            content_type: "application/pkcs10",
            status: 400,
            // Should name the key: see `refused_key_types_are_named`.
            says: &[],
        },
        Case {
            what: "P-521",
            body: csr_b64_for(&ca, KeyAlg::P521, &subj, &[]),
            content_type: "application/pkcs10",
            status: 400,
            // Should name the key: see `refused_key_types_are_named`.
            says: &[],
        },
        Case {
            what: "Ed25519",
            body: csr_b64_for(&ca, KeyAlg::Ed25519, &subj, &[]),
            content_type: "application/pkcs10",
            status: 400,
            says: &["ed25519"],
        },
        Case {
            what: "RSA-2048 where the group's policy wants ECDSA",
            body: csr_b64_for(&ca, KeyAlg::Rsa(2048), &subj, &[]),
            content_type: "application/pkcs10",
            status: 400,
            says: &["rsa-2048", "not allowed", "ecdsa-p256"],
        },
        Case {
            what: "CSR asking CA:TRUE",
            body: csr_b64_for(&ca, KeyAlg::P256, &subj, &["basicConstraints=critical,CA:TRUE"]),
            content_type: "application/pkcs10",
            status: 400,
            says: &["ca:true"],
        },
        Case {
            what: "CSR asking serverAuth",
            body: csr_b64_for(
                &ca,
                KeyAlg::P256,
                &subj,
                &["extendedKeyUsage=serverAuth,clientAuth"],
            ),
            content_type: "application/pkcs10",
            status: 400,
            says: &["clientauth"],
        },
        Case {
            what: "CSR asking keyCertSign",
            body: csr_b64_for(
                &ca,
                KeyAlg::P256,
                &subj,
                &["keyUsage=critical,keyCertSign,digitalSignature"],
            ),
            content_type: "application/pkcs10",
            status: 400,
            says: &["keycertsign"],
        },
        Case {
            what: "CSR for another CN",
            body: csr_b64_for(&ca, KeyAlg::P256, "/CN=dev-2.fleet.example.com", &[]),
            content_type: "application/pkcs10",
            status: 400,
            says: &["dev-2.fleet.example.com", "does not match"],
        },
        Case {
            what: "wrong content type",
            body: good.b64.clone(),
            content_type: "text/plain",
            status: 415,
            says: &["application/pkcs10", "text/plain"],
        },
        Case {
            what: "form content type (curl's default)",
            body: good.b64.clone(),
            content_type: "application/x-www-form-urlencoded",
            status: 415,
            says: &["application/pkcs10"],
        },
        Case {
            what: "body over 64 KiB",
            body: write(&ca.work, "big", &vec![b'A'; 70 * 1024]),
            content_type: "application/pkcs10",
            status: 413,
            says: &["limit"],
        },
    ];

    let mut failures = Vec::new();
    for c in &cases {
        let r = post(&srv, id, &token, c);
        let text = r.text().to_lowercase();
        let missing: Vec<_> = c.says.iter().filter(|w| !text.contains(*w)).collect();
        if r.status != c.status || !missing.is_empty() {
            failures.push(format!("{}: want {} naming {:?}, got\n{r}", c.what, c.status, c.says));
        }
        let n = ca.certs().len();
        if n != 0 {
            failures.push(format!("{}: {n} certificate(s) recorded", c.what));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));

    // Bad credentials.
    for (user, tok, status, says) in [
        ("../etc/passwd", token.as_str(), 400, "invalid identity"),
        ("", token.as_str(), 400, "invalid identity"),
        (id, "", 401, "unknown enrolment token"),
    ] {
        let r = est::enroll(&srv, user, tok, &good.b64);
        assert_eq!(r.status, status, "user {user:?}:\n{r}");
        assert!(r.text().contains(says), "user {user:?}:\n{r}");
    }
    let r =
        Request::post(srv.url("/.well-known/est/simpleenroll"), "application/pkcs10", &good.b64)
            .cacert(&srv.cacert)
            .send();
    assert_eq!(r.status, 401, "{r}");
    // Tokens never travel in clear: the plain-HTTP listener has no enrolment endpoint.
    for path in ["/.well-known/est/simpleenroll", "/.well-known/est/simplereenroll"] {
        let r = Request::post(srv.http_url(path), "application/pkcs10", &good.b64)
            .basic(id, &token)
            .send();
        assert!(r.status == 404 || r.status == 405, "{path} over plain HTTP:\n{r}");
    }

    // The audit trail records no issuance, the server is alive, and the token was never
    // burned: the good CSR still enrols.
    let audit = ca.cli(&["audit", "--json"]).ok();
    assert!(!audit.stdout.contains("\"issue\""), "audit shows an issuance:\n{audit}");
    assert_eq!(lanyard_e2e::ca::http_get_status(&srv.http, "/healthz"), Some(200));
    est::enroll(&srv, id, &token, &good.b64).expect(200);
    assert_eq!(ca.certs().len(), 1);
}

/// A CSR with a key CloudFront refuses is refused naming the key, not its signature.
/// openssl signs these CSRs correctly (`openssl req -verify` agrees); the CA's verifier
/// knows neither RSA-1024 nor P-521, so the key is classified before the signature.
#[test]
fn refused_key_types_are_named() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let id = "dev-1.fleet.example.com";
    let subj = format!("/CN={id}");
    let token = ca.token(id);
    for (alg, says) in [(KeyAlg::Rsa(1024), "RSA-1024"), (KeyAlg::P521, "P-521")] {
        let name = format!("k{}", pki::unique());
        let key = pki::genkey(&ca.work(&format!("{name}.key")), alg);
        let csr = pki::csr(&ca.work, &name, &key, &subj, &[]);
        let d = csr.der.display().to_string();
        run("openssl", &["req", "-inform", "DER", "-in", &d, "-verify", "-noout"]).ok();
        let r = est::enroll(&srv, id, &token, &csr.b64).expect(400);
        assert!(r.text().contains(says), "{alg:?}: {r}");
    }
}

/// A certificate from elsewhere: a self-signed one, another Lanyard CA's, and this CA's
/// own TLS server certificate (right issuer, but not a device's).
fn foreign_certs(ca: &Ca, other: &Ca) -> Vec<(&'static str, PathBuf, PathBuf)> {
    let mut out = Vec::new();
    let key = pki::genkey(&ca.work("self.key"), KeyAlg::P256);
    let crt = ca.work("self.crt");
    let (k, c) = (key.display().to_string(), crt.display().to_string());
    let id = "dev-1.fleet.example.com";
    let subj = format!("/CN={id}");
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            &k,
            "-subj",
            &subj,
            "-days",
            "1",
            "-addext",
            "extendedKeyUsage=clientAuth",
            "-out",
            &c,
        ],
    )
    .ok();
    out.push(("self-signed", crt, key));

    let srv = other.serve();
    let (key, csr) = pki::key_and_csr(&other.work, KeyAlg::P256, id);
    let r = est::enroll(&srv, id, &other.token(id), &csr.b64).expect(200);
    out.push(("another CA's", pki::leaf_from_est(&r.body, &other.work, "other"), key));

    out.push(("the CA's TLS server", ca.path("tls/server.crt"), ca.path("tls/server.key")));
    out
}

#[test]
fn reenrol_without_or_with_a_foreign_certificate_is_refused() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let id = "dev-1.fleet.example.com";
    let (_, csr) = pki::key_and_csr(&ca.work, KeyAlg::P256, id);

    let r =
        Request::post(srv.url("/.well-known/est/simplereenroll"), "application/pkcs10", &csr.b64)
            .cacert(&srv.cacert)
            .send();
    assert_eq!(r.status, 401, "{r}");
    assert!(r.text().contains("client certificate"), "{r}");
    // Basic credentials do not stand in for the certificate.
    let r =
        Request::post(srv.url("/.well-known/est/simplereenroll"), "application/pkcs10", &csr.b64)
            .cacert(&srv.cacert)
            .basic(id, &ca.token(id))
            .send();
    assert_eq!(r.status, 401, "{r}");

    let other = Ca::init();
    for (what, cert, key) in foreign_certs(&ca, &other) {
        let r = est::reenroll(&srv, &cert, &key, &csr.b64);
        eprintln!("{what} certificate: HTTP {} (curl exit {:?})", r.status, r.curl.code);
        // Refused in the TLS handshake (no HTTP status) or with 401: never a certificate.
        assert!(r.status == 0 || r.status == 401, "{what} certificate: {r}");
        if r.status == 401 {
            assert!(r.text().contains("not issued by this CA"), "{what}: {r}");
        }
    }
    assert!(ca.certs().is_empty());
    assert_eq!(lanyard_e2e::ca::http_get_status(&srv.http, "/healthz"), Some(200));
}
