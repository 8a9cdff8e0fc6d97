//! nginx as a stand-in for CloudFront viewer mTLS: `ssl_verify_client on` with the CA's
//! bundle accepts an issued certificate over HTTP/2, refuses a missing or foreign one,
//! and, with `ssl_crl` from `lanyard-ca crl`, refuses it once revoked.

use lanyard_e2e::est;
use lanyard_e2e::nginx::Nginx;
use lanyard_e2e::pki::{self, KeyAlg};
use lanyard_e2e::{Ca, peers};
use std::time::{Duration, Instant};

#[test]
fn nginx_accepts_issued_and_refuses_revoked_certificates() {
    if !peers::require_basics() || !peers::require_peer("nginx") {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let id = "dev-1.fleet.example.com";
    let (key, csr) = pki::key_and_csr(&ca.work, KeyAlg::P256, id);
    let r = est::enroll(&srv, id, &ca.token(id), &csr.b64).expect(200);
    let leaf = pki::leaf_from_est(&r.body, &ca.work, "leaf");
    let serial = pki::serial_hex(&leaf);

    // nginx's server certificate: the one `serve` made for itself (SAN 127.0.0.1), with
    // the issuing CA as chain. Its CRLs: `lanyard-ca crl --out` (issuing and root).
    let nginx = Nginx::for_ca(&ca);
    let crl = nginx.crl_path();

    // The issued certificate: 200 over HTTP/2, and nginx saw the right serial.
    let r = nginx.get(&ca.root_crt(), Some((&leaf, &key)));
    assert_eq!(r.status, 200, "{r}\n{}", nginx.error_log());
    assert_eq!(r.http_version, "2", "{r}");
    assert!(
        r.text().trim().eq_ignore_ascii_case(&serial),
        "nginx saw {:?}, issued {serial}",
        r.text()
    );

    // No certificate: 400 (CloudFront would fail the handshake instead).
    let r = nginx.get(&ca.root_crt(), None);
    assert_eq!(r.status, 400, "{r}");
    assert!(r.text().contains("No required SSL certificate"), "{r}");

    // A certificate from another Lanyard CA: 400.
    let other = Ca::init();
    let other_srv = other.serve();
    let (okey, ocsr) = pki::key_and_csr(&other.work, KeyAlg::P256, id);
    let r = est::enroll(&other_srv, id, &other.token(id), &ocsr.b64).expect(200);
    let oleaf = pki::leaf_from_est(&r.body, &other.work, "other");
    let r = nginx.get(&ca.root_crt(), Some((&oleaf, &okey)));
    assert_eq!(r.status, 400, "{r}");

    // Revoke, publish, reload: 400, and the log says why.
    ca.cli(&["revoke", "--serial", &serial, "--reason", "keyCompromise"]).ok();
    ca.cli(&["crl", "--out", &crl.display().to_string()]).ok();
    nginx.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(15);
    let r = loop {
        let r = nginx.get(&ca.root_crt(), Some((&leaf, &key)));
        if r.status == 400 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(r.status, 400, "revoked certificate still accepted after reload:\n{r}");
    assert!(
        r.text().contains("The SSL certificate error"),
        "nginx should refuse for a certificate error: {r}"
    );
    let log = nginx.error_log();
    assert!(log.contains("certificate revoked"), "error log:\n{log}");

    // A certificate issued after the revocation still passes.
    let id2 = "dev-2.fleet.example.com";
    let (key2, csr2) = pki::key_and_csr(&ca.work, KeyAlg::P256, id2);
    let r = est::enroll(&srv, id2, &ca.token(id2), &csr2.b64).expect(200);
    let leaf2 = pki::leaf_from_est(&r.body, &ca.work, "leaf2");
    let r = nginx.get(&ca.root_crt(), Some((&leaf2, &key2)));
    assert_eq!(r.status, 200, "{r}\n{}", nginx.error_log());
}
