//! EST `simplereenroll` with curl `--cert/--key` over TLS: renewal with a new key, the
//! refusal of a renewal that keeps the old key, and `/v1/certificate`.

use lanyard_e2e::est::{self, Request};
use lanyard_e2e::pki::{self, KeyAlg};
use lanyard_e2e::{Ca, peers};

#[test]
fn reenrol_with_a_new_key() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let id = "dev-1.fleet.example.com";
    let (key1, csr1) = pki::key_and_csr(&ca.work, KeyAlg::P256, id);
    let r = est::enroll(&srv, id, &ca.token(id), &csr1.b64).expect(200);
    let leaf1 = pki::leaf_from_est(&r.body, &ca.work, "leaf1");
    let serial1 = pki::serial_hex(&leaf1);

    // A new key (and a key type change within the policy: P-256 to P-384).
    let (key2, csr2) = pki::key_and_csr(&ca.work, KeyAlg::P384, id);
    let r = est::reenroll(&srv, &leaf1, &key1, &csr2.b64).expect(200);
    assert!(r.content_type.starts_with("application/pkcs7-mime"), "{r}");
    let leaf2 = pki::leaf_from_est(&r.body, &ca.work, "leaf2");
    let serial2 = pki::serial_hex(&leaf2);
    assert_ne!(serial1, serial2, "renewal must issue a new certificate");
    assert_eq!(pki::subject(&leaf2), pki::subject(&leaf1));
    assert_eq!(pki::subject(&leaf2), format!("CN = {id}"));
    assert!(pki::x509_text(&leaf2).contains("NIST CURVE: P-384"));
    pki::verify(&ca.bundle(), &leaf2, &["-x509_strict", "-purpose", "sslclient"]).ok();

    // The store links the renewal to its predecessor; the old one stays valid.
    let certs = ca.certs();
    assert_eq!(certs.len(), 2);
    let new = certs
        .iter()
        .find(|c| c["serial"].as_str().is_some_and(|s| s.eq_ignore_ascii_case(&serial2)))
        .expect("renewed certificate recorded");
    assert!(
        new["parent_serial"].as_str().is_some_and(|s| s.eq_ignore_ascii_case(&serial1)),
        "parent_serial should name {serial1}: {new}"
    );
    assert!(certs.iter().all(|c| c["revocation"].is_null()), "{certs:?}");

    // The renewed certificate renews in turn (the CSR's CN may be left out).
    let key3 = pki::genkey(&ca.work("k3.key"), KeyAlg::P256);
    let csr3 = pki::csr(&ca.work, "k3", &key3, "/", &[]);
    let r = est::reenroll(&srv, &leaf2, &key2, &csr3.b64).expect(200);
    let leaf3 = pki::leaf_from_est(&r.body, &ca.work, "leaf3");
    assert_eq!(pki::subject(&leaf3), format!("CN = {id}"));

    // /v1/certificate reports on the presented certificate.
    let r = Request::get(srv.url("/v1/certificate"))
        .cacert(&srv.cacert)
        .client(&leaf3, &key3)
        .send()
        .expect(200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
    assert_eq!(v["identity"], id, "{v}");
    assert_eq!(v["status"], "valid", "{v}");
    assert!(v["serial"].as_str().is_some_and(|s| s.eq_ignore_ascii_case(&pki::serial_hex(&leaf3))));
}

#[test]
fn reenrol_with_the_same_key_is_refused() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let id = "dev-2.fleet.example.com";
    let (key, csr) = pki::key_and_csr(&ca.work, KeyAlg::P256, id);
    let r = est::enroll(&srv, id, &ca.token(id), &csr.b64).expect(200);
    let leaf = pki::leaf_from_est(&r.body, &ca.work, "leaf");
    // A fresh CSR for the same key, so only the key is the same.
    let again = pki::csr(&ca.work, "again", &key, &format!("/CN={id}"), &[]);
    let r = est::reenroll(&srv, &leaf, &key, &again.b64).expect(400);
    assert!(r.text().contains("new key"), "{r}");
    assert_eq!(ca.certs().len(), 1);

    // A renewal CSR must be for the certificate's identity.
    let (_, other) = pki::key_and_csr(&ca.work, KeyAlg::P256, "dev-3.fleet.example.com");
    let r = est::reenroll(&srv, &leaf, &key, &other.b64).expect(400);
    assert!(r.text().contains("does not match"), "{r}");
    assert_eq!(ca.certs().len(), 1);
}

/// A certificate past its notAfter renews only within the group's grace. The shortest
/// lifetime a policy allows is 5 minutes, so this waits that long: run it with
/// `cargo test -p lanyard-e2e --test reenrol -- --ignored` (`scripts/test-all.sh` does, in
/// the background beside its other steps).
#[test]
#[ignore = "5 minutes of real time; scripts/test-all.sh runs it in the background"]
fn reenrol_after_expiry_only_within_grace() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    ca.policy_set("nograce", &["--lifetime", "5m", "--expired-grace", "0s"]);
    ca.policy_set("grace", &["--lifetime", "5m", "--expired-grace", "1h"]);
    let srv = ca.serve();
    let mut held = Vec::new();
    for group in ["nograce", "grace"] {
        let id = format!("dev-{group}.fleet.example.com");
        let (key, csr) = pki::key_and_csr(&ca.work, KeyAlg::P256, &id);
        let tok = ca.token_with(&id, &["--group", group]);
        let r = est::enroll(&srv, &id, &tok, &csr.b64).expect(200);
        let leaf = pki::leaf_from_est(&r.body, &ca.work, group);
        held.push((group, id, leaf, key));
    }
    // Wait until openssl agrees both have expired.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(420);
    for (_, _, leaf, _) in &held {
        let l = leaf.display().to_string();
        while lanyard_e2e::run("openssl", &["x509", "-in", &l, "-noout", "-checkend", "0"])
            .success()
        {
            assert!(std::time::Instant::now() < deadline, "certificate never expired");
            std::thread::sleep(std::time::Duration::from_secs(5));
        }
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    for (group, id, leaf, key) in &held {
        let (_, csr) = pki::key_and_csr(&ca.work, KeyAlg::P256, id);
        let r = est::reenroll(&srv, leaf, key, &csr.b64);
        if *group == "nograce" {
            assert_eq!(r.status, 403, "{r}");
            assert!(r.text().contains("expired"), "{r}");
        } else {
            assert_eq!(r.status, 200, "renewal within the grace:\n{r}");
        }
    }
    assert_eq!(ca.certs().len(), 3);
}
