//! Revocation as relying parties see it: `openssl verify -crl_check_all` with the CRLs
//! from `lanyard-ca crl`, `openssl ocsp` against the URL in the certificate's AIA (POST)
//! and the GET form, the CloudFront KeyValueStore export, and renewal refused.

use lanyard_e2e::est::{self, Request};
use lanyard_e2e::pki::{self, KeyAlg};
use lanyard_e2e::{Ca, Out, Server, peers, run};
use std::path::{Path, PathBuf};

/// `openssl ocsp` over POST to the URL the certificate names in its AIA.
fn ocsp_post(ca: &Ca, leaf: &Path) -> Out {
    let l = leaf.display().to_string();
    let uri = run("openssl", &["x509", "-in", &l, "-noout", "-ocsp_uri"]).ok().stdout;
    let uri = uri.trim();
    assert_eq!(uri, format!("http://127.0.0.1:{}/ocsp", ca.http_port));
    let (i, b) = (ca.issuing_crt().display().to_string(), ca.bundle().display().to_string());
    run(
        "openssl",
        &["ocsp", "-issuer", &i, "-cert", &l, "-url", uri, "-CAfile", &b, "-timeout", "10"],
    )
}

/// The GET form (RFC 6960 A.1): the base64 request in the URL path.
fn ocsp_get(ca: &Ca, srv: &Server, leaf: &Path, stem: &str) -> Out {
    let req = ca.work(&format!("{stem}.ocsp-req.der"));
    let l = leaf.display().to_string();
    let (i, b) = (ca.issuing_crt().display().to_string(), ca.bundle().display().to_string());
    let r = req.display().to_string();
    run("openssl", &["ocsp", "-issuer", &i, "-cert", &l, "-no_nonce", "-reqout", &r]).ok();
    let b64 = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        std::fs::read(&req).expect("request"),
    );
    // Percent-encode what base64 has that a path must not carry raw.
    let enc = b64.replace('%', "%25").replace('+', "%2B").replace('/', "%2F").replace('=', "%3D");
    let resp = Request::get(srv.http_url(&format!("/ocsp/{enc}"))).send().expect(200);
    assert_eq!(resp.content_type, "application/ocsp-response");
    let resp_file = ca.work(&format!("{stem}.ocsp-resp.der"));
    std::fs::write(&resp_file, &resp.body).expect("write");
    let rf = resp_file.display().to_string();
    run("openssl", &["ocsp", "-issuer", &i, "-cert", &l, "-respin", &rf, "-CAfile", &b])
}

fn crl_out(ca: &Ca, name: &str) -> PathBuf {
    let out = ca.work(name);
    let o = out.display().to_string();
    ca.cli(&["crl", "--out", &o]).ok();
    let text = std::fs::read_to_string(&out).expect("crl.pem");
    assert_eq!(text.matches("-----BEGIN X509 CRL-----").count(), 2, "issuing and root CRLs");
    out
}

#[test]
fn revoke_shows_in_crl_ocsp_export_and_renewal() {
    if !peers::require_basics() || !peers::require_pkilint() {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let id = "dev-1.fleet.example.com";
    let (key, csr) = pki::key_and_csr(&ca.work, KeyAlg::P256, id);
    let token = ca.token(id);
    let r = est::enroll(&srv, id, &token, &csr.b64).expect(200);
    let leaf = pki::leaf_from_est(&r.body, &ca.work, "leaf");
    let serial = pki::serial_hex(&leaf);
    // A second device, never revoked: its status must stay good throughout.
    let id2 = "dev-2.fleet.example.com";
    let (_, csr2) = pki::key_and_csr(&ca.work, KeyAlg::P256, id2);
    let r = est::enroll(&srv, id2, &ca.token(id2), &csr2.b64).expect(200);
    let other = pki::leaf_from_est(&r.body, &ca.work, "other");

    // Before: CRLs pass, OCSP says good (nonce echoed, response signature checked).
    let crl = crl_out(&ca, "crl-before.pem");
    let c = crl.display().to_string();
    pki::verify(&ca.bundle(), &leaf, &["-crl_check_all", "-CRLfile", &c]).ok();
    let out = ocsp_post(&ca, &leaf).ok();
    assert!(out.all().contains("Response verify OK"), "{out}");
    assert!(out.stdout.contains(": good"), "{out}");
    assert!(!out.all().contains("WARNING"), "nonce not echoed?\n{out}");
    let out = ocsp_get(&ca, &srv, &leaf, "before").ok();
    assert!(out.stdout.contains(": good"), "{out}");
    // The issuing CA's own status, answered by the root.
    let (root, issuing) =
        (ca.root_crt().display().to_string(), ca.issuing_crt().display().to_string());
    let b = ca.bundle().display().to_string();
    let url = srv.http_url("/ocsp");
    let out =
        run("openssl", &["ocsp", "-issuer", &root, "-cert", &issuing, "-url", &url, "-CAfile", &b])
            .ok();
    assert!(out.stdout.contains(": good") && out.all().contains("Response verify OK"), "{out}");

    // Revoke (serial as openssl prints it: upper case, no colons).
    let out = ca.cli(&["revoke", "--serial", &serial, "--reason", "keyCompromise"]).ok();
    assert!(out.stderr.contains("revoked"), "{out}");
    let out = ca.cli(&["revoke", "--serial", &serial]).ok();
    assert!(out.stderr.contains("already revoked"), "{out}");
    let out = ca.cli(&["revoke", "--serial", "0123456789abcdef0123456789abcdef"]);
    assert!(!out.success() && out.stderr.contains("no certificate"), "{out}");

    // CRL: openssl says revoked; the untouched device still verifies.
    let crl = crl_out(&ca, "crl-after.pem");
    let c = crl.display().to_string();
    let out = pki::verify(&ca.bundle(), &leaf, &["-crl_check_all", "-CRLfile", &c]).fails();
    assert!(out.all().contains("certificate revoked"), "{out}");
    let out = pki::verify(&ca.bundle(), &leaf, &["-crl_check", "-CRLfile", &c]).fails();
    assert!(out.all().contains("certificate revoked"), "{out}");
    pki::verify(&ca.bundle(), &other, &["-crl_check_all", "-CRLfile", &c]).ok();
    // The CRL the CLI published, and the one the running server serves (it learns of
    // the CLI's revocation through the store), list the serial with its reason.
    let served = Request::get(srv.http_url("/crl")).send().expect(200);
    let served_file = ca.work("served.crl");
    std::fs::write(&served_file, &served.body).expect("write");
    for (f, form) in [(ca.path("crl/issuing.crl"), "DER"), (served_file.clone(), "DER")] {
        let fs = f.display().to_string();
        let text =
            run("openssl", &["crl", "-inform", form, "-in", &fs, "-noout", "-text"]).ok().stdout;
        assert!(
            text.contains(&format!("Serial Number: {serial}")),
            "{} lacks {serial}:\n{text}",
            f.display()
        );
        assert!(text.contains("Key Compromise"), "reason missing:\n{text}");
        pki::lint_crl(&f);
    }

    // OCSP: revoked, with reason, by POST and GET; the other device is still good.
    let out = ocsp_post(&ca, &leaf).ok();
    assert!(out.stdout.contains(": revoked") && out.stdout.contains("keyCompromise"), "{out}");
    let out = ocsp_get(&ca, &srv, &leaf, "after").ok();
    assert!(out.stdout.contains(": revoked"), "{out}");
    let out = ocsp_post(&ca, &other).ok();
    assert!(out.stdout.contains(": good"), "{out}");

    // CloudFront's KeyValueStore export: colon-hex, leading zeros kept, lower case.
    let out = ca.cli(&["revoked", "--format", "json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    let rows = v.as_array().expect("array");
    assert_eq!(rows.len(), 1, "{v}");
    let colon = serial
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_lowercase())
        .collect::<Vec<_>>()
        .join(":");
    assert_eq!(rows[0]["serial"], colon, "{v}");
    assert_eq!(rows[0]["reason"], "keyCompromise", "{v}");
    let out = ca.cli(&["revoked", "--format", "text"]).ok();
    assert_eq!(out.stdout.trim(), colon);

    // Renewal with the revoked certificate, and a replay of its token, are refused.
    let (_, new_csr) = pki::key_and_csr(&ca.work, KeyAlg::P256, id);
    let r = est::reenroll(&srv, &leaf, &key, &new_csr.b64).expect(403);
    assert!(r.text().contains("revoked"), "{r}");
    let r = est::enroll(&srv, id, &token, &csr.b64).expect(403);
    assert!(r.text().contains("revoked"), "{r}");
    let r = Request::get(srv.url("/v1/certificate")).cacert(&srv.cacert).client(&leaf, &key).send();
    // Either a refusal or a status that says revoked; never "valid".
    assert!(!r.text().contains("\"valid\""), "{r}");
    assert_eq!(ca.certs().len(), 2);

    // `revoke` takes the colon-hex form the export prints, too.
    let other_serial = pki::serial_hex(&other);
    let other_colon = other_serial
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_lowercase())
        .collect::<Vec<_>>()
        .join(":");
    ca.cli(&["revoke", "--serial", &other_colon, "--reason", "superseded"]).ok();
    let out = ca.cli(&["revoked", "--format", "text"]).ok();
    assert_eq!(out.stdout.lines().count(), 2, "{out}");
    assert!(out.stdout.contains(&other_colon), "{out}");
    let out = ocsp_post(&ca, &other).ok();
    assert!(out.stdout.contains(": revoked") && out.stdout.contains("superseded"), "{out}");
}
