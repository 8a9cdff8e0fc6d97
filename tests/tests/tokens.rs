//! One-time enrolment tokens over EST, with curl: retries, reuse, wrong identity, unknown
//! and expired tokens, and failed attempts that must not burn the token.

use lanyard_e2e::est;
use lanyard_e2e::pki::{self, KeyAlg};
use lanyard_e2e::{Ca, peers};

#[test]
fn retry_with_same_token_and_key_returns_the_same_certificate() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let id = "dev-1.fleet.example.com";
    let token = ca.token(id);
    let (key, csr) = pki::key_and_csr(&ca.work, KeyAlg::P256, id);
    let first = est::enroll(&srv, id, &token, &csr.b64).expect(200);
    let leaf1 = pki::leaf_from_est(&first.body, &ca.work, "first");

    // The same CSR again, and a new CSR for the same key (ECDSA signatures differ).
    let again = est::enroll(&srv, id, &token, &csr.b64).expect(200);
    let leaf2 = pki::leaf_from_est(&again.body, &ca.work, "again");
    let csr2 = pki::csr(&ca.work, "second-csr", &key, &format!("/CN={id}"), &[]);
    assert_ne!(std::fs::read(&csr.der).ok(), std::fs::read(&csr2.der).ok());
    let other_csr = est::enroll(&srv, id, &token, &csr2.b64).expect(200);
    let leaf3 = pki::leaf_from_est(&other_csr.body, &ca.work, "third");

    let s1 = pki::serial_hex(&leaf1);
    assert_eq!(pki::serial_hex(&leaf2), s1, "a retry got another certificate");
    assert_eq!(
        pki::serial_hex(&leaf3),
        s1,
        "a retry with a new CSR for the same key got another certificate"
    );
    assert_eq!(std::fs::read(&leaf1).ok(), std::fs::read(&leaf3).ok(), "byte-identical answer");
    assert_eq!(ca.certs().len(), 1, "retries recorded extra certificates");
}

#[test]
fn used_token_with_another_key_is_forbidden() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let id = "dev-2.fleet.example.com";
    let token = ca.token(id);
    let (_, csr) = pki::key_and_csr(&ca.work, KeyAlg::P256, id);
    est::enroll(&srv, id, &token, &csr.b64).expect(200);
    let (_, other) = pki::key_and_csr(&ca.work, KeyAlg::P256, id);
    let r = est::enroll(&srv, id, &token, &other.b64).expect(403);
    assert!(r.text().contains("already used"), "{r}");
    assert_eq!(ca.certs().len(), 1);
}

#[test]
fn token_for_another_identity_is_forbidden() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let token = ca.token("dev-3.fleet.example.com");
    let (_, csr) = pki::key_and_csr(&ca.work, KeyAlg::P256, "dev-4.fleet.example.com");
    let r = est::enroll(&srv, "dev-4.fleet.example.com", &token, &csr.b64).expect(403);
    assert!(r.text().contains("another identity"), "{r}");
    assert!(ca.certs().is_empty());
    // The token still works for its own identity.
    let (_, csr) = pki::key_and_csr(&ca.work, KeyAlg::P256, "dev-3.fleet.example.com");
    est::enroll(&srv, "dev-3.fleet.example.com", &token, &csr.b64).expect(200);
}

#[test]
fn unknown_token_is_unauthorized() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let id = "dev-5.fleet.example.com";
    let real = ca.token(id);
    let (_, csr) = pki::key_and_csr(&ca.work, KeyAlg::P256, id);
    // A made-up token, and the real one with its last character changed.
    let mut tampered = real.clone();
    let last = tampered.pop().expect("token");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    for t in ["lyt.bm9wZQ.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "nope", tampered.as_str()] {
        let r = est::enroll(&srv, id, t, &csr.b64).expect(401);
        assert!(r.text().contains("unknown enrolment token"), "{r}");
        assert!(!r.text().contains(&real) && !r.text().contains(t), "the answer echoes a token");
    }
    // No credentials at all.
    let r = lanyard_e2e::est::Request::post(
        srv.url("/.well-known/est/simpleenroll"),
        "application/pkcs10",
        &csr.b64,
    )
    .cacert(&srv.cacert)
    .send()
    .expect(401);
    assert!(r.text().contains("HTTP Basic"), "{r}");
    assert!(ca.certs().is_empty());
}

#[test]
fn expired_token_is_forbidden() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let id = "dev-6.fleet.example.com";
    let token = ca.token_with(id, &["--ttl", "1s"]);
    let (_, csr) = pki::key_and_csr(&ca.work, KeyAlg::P256, id);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let r = est::enroll(&srv, id, &token, &csr.b64).expect(403);
    assert!(r.text().contains("expired"), "{r}");
    assert!(ca.certs().is_empty());
}

#[test]
fn failed_attempts_do_not_burn_the_token() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let id = "dev-7.fleet.example.com";
    let token = ca.token(id);

    // A CSR with a broken signature, a refused key, a CN for someone else.
    let (_, good) = pki::key_and_csr(&ca.work, KeyAlg::P256, id);
    let mut der = std::fs::read(&good.der).expect("csr");
    let n = der.len();
    der[n - 1] ^= 0x01;
    let broken = ca.work("broken.der");
    std::fs::write(&broken, &der).expect("write");
    let broken_b64 = ca.work("broken.b64");
    pki::base64_file(&broken, &broken_b64);
    est::enroll(&srv, id, &token, &broken_b64).expect(400);
    let (_, rsa1024) = pki::key_and_csr(&ca.work, KeyAlg::Rsa(1024), id);
    est::enroll(&srv, id, &token, &rsa1024.b64).expect(400);
    let (_, other_cn) = pki::key_and_csr(&ca.work, KeyAlg::P256, "someone-else");
    est::enroll(&srv, id, &token, &other_cn.b64).expect(400);
    assert!(ca.certs().is_empty());

    // The token is still good.
    est::enroll(&srv, id, &token, &good.b64).expect(200);
    assert_eq!(ca.certs().len(), 1);
}

#[test]
fn a_thousand_tokens_in_bulk_each_enrols_its_own_identity_once() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    let out = ca
        .cli(&[
            "token",
            "create",
            "--count",
            "1000",
            "--identity-template",
            "sensor-{seq:05}.fleet.example.com",
            "--ttl",
            "2h",
        ])
        .ok();
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some("identity,token,expires_at"), "{out}");
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 1000, "{out}");
    assert!(rows.iter().all(|r| r.len() == 3), "a row is not identity,token,expires_at");
    assert_eq!(rows[0][0], "sensor-00001.fleet.example.com");
    assert_eq!(rows[999][0], "sensor-01000.fleet.example.com");
    let tokens: std::collections::BTreeSet<&str> = rows.iter().map(|r| r[1]).collect();
    assert_eq!(tokens.len(), 1000, "tokens repeat");

    // The tokens work, each for its own identity only.
    let srv = ca.serve();
    let id = rows[41][0];
    let (_, csr) = pki::key_and_csr(&ca.work, KeyAlg::P256, id);
    est::enroll(&srv, rows[7][0], rows[41][1], &csr.b64).expect(403);
    est::enroll(&srv, id, rows[41][1], &csr.b64).expect(200);

    // JSON, and a template that would give one bad identity makes none at all.
    let json = ca
        .cli(&[
            "token",
            "create",
            "--count",
            "2",
            "--identity-template",
            "gw{seq}.example.com",
            "--format",
            "json",
        ])
        .ok();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON array");
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{json}");
    assert_eq!(v[1]["identity"], "gw2.example.com");
    let before = ca.cli(&["audit", "--limit", "5000", "--json"]).ok().stdout;
    let bad = ca
        .cli(&[
            "token",
            "create",
            "--count",
            "3",
            "--start",
            "9",
            "--identity-template",
            "Cam{seq}.example.com",
        ])
        .fails();
    assert!(bad.stderr.contains("lower case"), "{bad}");
    let no_seq = ca
        .cli(&["token", "create", "--count", "3", "--identity-template", "cam.example.com"])
        .fails();
    assert!(no_seq.stderr.contains("has no {seq}"), "{no_seq}");
    assert_eq!(
        ca.cli(&["audit", "--limit", "5000", "--json"]).ok().stdout,
        before,
        "a refused batch made tokens"
    );
}

#[test]
fn tokens_are_listed_and_an_unused_one_is_revoked_so_that_it_enrols_nothing() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let (used_id, spare_id) = ("dev-8.fleet.example.com", "dev-9.fleet.example.com");
    let used = ca.token(used_id);
    let spare = ca.token(spare_id);
    let (_, csr) = pki::key_and_csr(&ca.work, KeyAlg::P256, used_id);
    est::enroll(&srv, used_id, &used, &csr.b64).expect(200);

    // The list names tokens by a hash prefix, never by the token.
    let list = ca.cli(&["token", "list"]).ok();
    assert!(list.stdout.starts_with("ID"), "{list}");
    assert!(!list.stdout.contains(&used) && !list.stdout.contains(&spare), "{list}");
    let row = |id: &str| list.stdout.lines().find(|l| l.contains(id)).unwrap_or("").to_owned();
    assert!(row(used_id).contains("used ("), "{list}");
    assert!(row(spare_id).ends_with("unused"), "{list}");
    let json = ca.cli(&["token", "list", "--unused", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{json}");
    assert_eq!(v[0]["identity"], spare_id);
    assert_eq!(v[0]["state"], "unused");
    let spare_token_id = v[0]["id"].as_str().expect("id").to_owned();

    // A used token is not revoked (the certificate is), and says so; a bad ID is refused.
    let out = ca.cli(&["token", "revoke", "--identity", used_id]).fails();
    assert!(out.stderr.contains("has no unused token"), "{out}");
    let used_token_id = row(used_id).split_whitespace().next().unwrap_or("").to_owned();
    let out = ca.cli(&["token", "revoke", "--id", &used_token_id]).fails();
    assert!(out.stderr.contains("revoke the certificate instead"), "{out}");
    let out = ca.cli(&["token", "revoke", "--id", "xyz"]).fails();
    assert!(out.stderr.contains("hex digits"), "{out}");
    let out = ca.cli(&["token", "revoke", "--id", "00000000"]).fails();
    assert!(out.stderr.contains("no token with ID"), "{out}");

    // Revoked by its ID: the device is refused with token-revoked, at csrattrs and at
    // enrolment alike.
    let out = ca.cli(&["token", "revoke", "--id", &spare_token_id[..10]]).ok();
    assert!(out.stderr.contains("revoked token") && out.stderr.contains(spare_id), "{out}");
    let (_, csr) = pki::key_and_csr(&ca.work, KeyAlg::P256, spare_id);
    let r = est::enroll(&srv, spare_id, &spare, &csr.b64).expect(403);
    assert!(r.text().contains("token-revoked"), "{r}");
    let r = est::Request::get(srv.url("/.well-known/est/csrattrs"))
        .cacert(&srv.cacert)
        .basic(spare_id, &spare)
        .send()
        .expect(403);
    assert!(r.text().contains("token-revoked"), "{r}");
    let list = ca.cli(&["token", "list", "--identity", spare_id, "--json"]).ok();
    assert!(list.stdout.contains("\"state\":\"revoked\""), "{list}");
    let audit = ca.cli(&["audit", "--json"]).ok();
    assert!(audit.stdout.contains("token.revoke"), "{audit}");
    assert!(!audit.stdout.contains(&spare), "the token reached the audit trail");
    assert_eq!(ca.certs().len(), 1);
}
