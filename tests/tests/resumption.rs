//! TLS session resumption on the CA's HTTPS listener, checked with openssl as the client: a
//! device that connects again resumes with the ticket of its first handshake (no full
//! handshake, no certificate exchange) even after many other devices connected in between,
//! the resumed session still carries its client certificate (the device API answers for
//! it), and a revocation is still enforced on a resumed session.
//!
//! "Many other devices": rustls's default server-side session cache holds 256 sessions
//! (two tickets a handshake), so in a fleet a device's session is long gone when it comes
//! back. Stateless tickets keep nothing on the server; with the cache alone, this test's
//! resumption after 200 other handshakes fails.

use lanyard_e2e::pki::{self, KeyAlg};
use lanyard_e2e::{Ca, est, peers};

/// `GET path` over `openssl s_client`, with the session read from `sess_in` (if any) and
/// written to `sess_out`: (openssl's report, the HTTP answer).
fn s_client(
    srv: &lanyard_e2e::Server,
    cert: &std::path::Path,
    key: &std::path::Path,
    path: &str,
    sess_in: Option<&std::path::Path>,
    sess_out: &std::path::Path,
) -> String {
    let connect = srv.https.clone();
    let (cert, key, ca) =
        (cert.display().to_string(), key.display().to_string(), srv.cacert.display().to_string());
    let sess_out_s = sess_out.display().to_string();
    let mut args = vec![
        "s_client",
        "-connect",
        &connect,
        "-CAfile",
        &ca,
        "-cert",
        &cert,
        "-key",
        &key,
        "-alpn",
        "http/1.1",
        "-tls1_3",
        "-ign_eof",
        "-sess_out",
        &sess_out_s,
    ];
    let sess_in_s = sess_in.map(|p| p.display().to_string());
    if let Some(s) = &sess_in_s {
        args.extend(["-sess_in", s]);
    }
    let request = format!("GET {path} HTTP/1.1\r\nHost: ca\r\nConnection: close\r\n\r\n");
    let out = lanyard_e2e::cmd::run_stdin("openssl", &args, request.as_bytes());
    format!("{}{}", out.stdout, out.stderr)
}

#[test]
fn devices_resume_their_tls_session_and_keep_their_identity() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let id = "resume-1.fleet.example.com";
    let token = ca.token(id);
    let (key, csr) = pki::key_and_csr(&ca.work, KeyAlg::P256, id);
    let leaf = pki::leaf_from_est(
        &est::enroll(&srv, id, &token, &csr.b64).expect(200).body,
        &ca.work,
        "leaf",
    );
    // The CA's JSON spells serials in lowercase hex, openssl in uppercase.
    let serial = pki::serial_hex(&leaf).to_lowercase();
    let (s1, s2) = (ca.work.join("session-1.pem"), ca.work.join("session-2.pem"));

    let first = s_client(&srv, &leaf, &key, "/v1/certificate", None, &s1);
    assert!(first.contains("New, TLSv1.3"), "a full handshake first:\n{first}");
    assert!(first.contains("HTTP/1.1 200") && first.contains(&serial), "{first}");
    assert!(std::fs::metadata(&s1).is_ok_and(|m| m.len() > 0), "openssl kept no session:\n{first}");

    // 200 other handshakes (400 tickets) between the device's two connections.
    let (ck, kk, cf) =
        (leaf.display().to_string(), key.display().to_string(), srv.cacert.display().to_string());
    for _ in 0..200 {
        let args = [
            "s_client",
            "-connect",
            &srv.https,
            "-CAfile",
            &cf,
            "-cert",
            &ck,
            "-key",
            &kk,
            "-tls1_3",
            "-quiet",
            "-no_ign_eof",
        ];
        let out = lanyard_e2e::cmd::run_stdin("openssl", &args, b"");
        assert!(!out.all().contains("alert"), "a handshake in between failed:\n{}", out.all());
    }

    let again = s_client(&srv, &leaf, &key, "/v1/certificate", Some(&s1), &s2);
    assert!(again.contains("Reused, TLSv1.3"), "the session is resumed:\n{again}");
    assert!(
        again.contains("HTTP/1.1 200") && again.contains(&serial),
        "a resumed session still carries the device's certificate:\n{again}"
    );

    // Revoked: a resumed session is refused too (the decision is per request).
    ca.cli(&["revoke", "--serial", &serial, "--reason", "keyCompromise"]).ok();
    let revoked = s_client(&srv, &leaf, &key, "/v1/policy", Some(&s2), &s1);
    assert!(revoked.contains("Reused, TLSv1.3"), "{revoked}");
    assert!(
        !revoked.contains("HTTP/1.1 200"),
        "a revoked certificate on a resumed session:\n{revoked}"
    );
    assert!(revoked.contains("HTTP/1.1 403"), "{revoked}");
}
