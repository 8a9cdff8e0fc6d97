//! Renewal integrity from outside, with openssl and curl as the EST client: a certificate
//! renews once, a retry with the same key gets the same certificate, a second key is a
//! `renewal-conflict` (409, problem+json) that the audit and `certs list --conflicts` show,
//! a key is certified once, keyCompromise revokes the lineage (CRL and OCSP), and every
//! refusal is RFC 9457 problem+json with a stable code.

use lanyard_e2e::cmd::run;
use lanyard_e2e::est::{self, Request, Resp};
use lanyard_e2e::pki::{self, KeyAlg};
use lanyard_e2e::{Ca, peers};
use std::path::Path;

/// The problem document of a refusal, checked for the fields RFC 9457 and Lanyard promise.
#[track_caller]
fn problem(r: &Resp) -> serde_json::Value {
    assert_eq!(r.content_type, "application/problem+json", "{r}");
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("problem+json parses");
    assert_eq!(v["status"].as_u64(), Some(u64::from(r.status)), "{v}");
    for k in ["type", "title", "detail", "code"] {
        assert!(v[k].as_str().is_some_and(|s| !s.is_empty()), "{k} in {v}");
    }
    assert_eq!(
        v["type"].as_str(),
        Some(format!("urn:lanyard:problem:{}", v["code"].as_str().unwrap_or("")).as_str())
    );
    v
}

/// What `openssl ocsp` says of `leaf` (`good` or `revoked`), asked at the CA's URL.
#[track_caller]
fn ocsp_status(ca: &Ca, srv: &lanyard_e2e::ca::Server, leaf: &Path) -> String {
    let (i, l, b) = (ca.issuing_crt(), leaf.display().to_string(), ca.bundle());
    let url = srv.http_url("/ocsp");
    let (i, b) = (i.display().to_string(), b.display().to_string());
    let out =
        run("openssl", &["ocsp", "-issuer", &i, "-cert", &l, "-url", &url, "-CAfile", &b]).ok();
    let line = format!("{l}: ");
    out.stdout
        .lines()
        .find_map(|x| x.strip_prefix(&line))
        .unwrap_or_else(|| panic!("no status for {l}:\n{out}"))
        .trim()
        .to_owned()
}

#[test]
fn a_certificate_renews_once_and_a_second_key_is_a_conflict() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let id = "clone-1.fleet.example.com";
    let (key1, csr1) = pki::key_and_csr(&ca.work, KeyAlg::P256, id);
    let leaf1 = pki::leaf_from_est(
        &est::enroll(&srv, id, &ca.token(id), &csr1.b64).expect(200).body,
        &ca.work,
        "l1",
    );
    let serial1 = pki::serial_hex(&leaf1);

    // The device renews; the answer is "lost" and it asks again with the same key.
    let (key2, csr2) = pki::key_and_csr(&ca.work, KeyAlg::P256, id);
    let leaf2 = pki::leaf_from_est(
        &est::reenroll(&srv, &leaf1, &key1, &csr2.b64).expect(200).body,
        &ca.work,
        "l2",
    );
    let again = pki::leaf_from_est(
        &est::reenroll(&srv, &leaf1, &key1, &csr2.b64).expect(200).body,
        &ca.work,
        "l2b",
    );
    assert_eq!(
        pki::serial_hex(&again),
        pki::serial_hex(&leaf2),
        "a retry gets the same certificate"
    );

    // A clone holding key1 renews with its own key: refused, nothing issued.
    let (_key3, csr3) = pki::key_and_csr(&ca.work, KeyAlg::P256, id);
    let r = est::reenroll(&srv, &leaf1, &key1, &csr3.b64).expect(409);
    let p = problem(&r);
    assert_eq!(p["code"], "renewal-conflict", "{p}");
    assert!(
        p["serial"].as_str().is_some_and(|s| s.eq_ignore_ascii_case(&pki::serial_hex(&leaf2))),
        "{p}"
    );
    assert_eq!(ca.certs().len(), 2);
    let certs = ca.certs();
    let first = certs
        .iter()
        .find(|c| c["serial"].as_str().is_some_and(|s| s.eq_ignore_ascii_case(&serial1)))
        .expect("first");
    assert!(
        first["superseded_by"]
            .as_str()
            .is_some_and(|s| s.eq_ignore_ascii_case(&pki::serial_hex(&leaf2))),
        "{first}"
    );
    assert!(first["parent_serial"].is_null(), "{first}");

    // The fleet manager sees the conflict: CLI and audit.
    let out = ca.cli(&["certs", "list", "--conflicts", "--json"]).ok();
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(rows.len(), 1, "{out}");
    assert_eq!(rows[0]["action"], "renewal_conflict");
    assert!(rows[0]["remote"].as_str().is_some_and(|r| r.starts_with("127.0.0.1")), "{}", rows[0]);
    assert!(
        rows[0]["detail"].as_str().is_some_and(|d| d.contains("presented_key_sha256=")),
        "{}",
        rows[0]
    );

    // A key is certified once: leaf2 renewing back to key1 is refused, naming serial1.
    let back = pki::csr(&ca.work, "back", &key1, &format!("/CN={id}"), &[]);
    let r = est::reenroll(&srv, &leaf2, &key2, &back.b64).expect(400);
    let p = problem(&r);
    assert_eq!(p["code"], "key-reused", "{p}");
    assert!(
        p["detail"].as_str().is_some_and(|d| d.to_lowercase().contains(&serial1.to_lowercase())),
        "{p}"
    );

    // leaf2 renews on to leaf3; then keyCompromise on serial1 revokes 1, 2 and 3.
    let (_key4, csr4) = pki::key_and_csr(&ca.work, KeyAlg::P256, id);
    let leaf3 = pki::leaf_from_est(
        &est::reenroll(&srv, &leaf2, &key2, &csr4.b64).expect(200).body,
        &ca.work,
        "l3",
    );
    assert_eq!(ocsp_status(&ca, &srv, &leaf3), "good");
    ca.cli(&["revoke", "--serial", &serial1, "--reason", "keyCompromise"]).ok();
    for leaf in [&leaf1, &leaf2, &leaf3] {
        assert_eq!(ocsp_status(&ca, &srv, leaf), "revoked", "{}", leaf.display());
    }
    let crl = ca.work("lineage.crl.pem");
    ca.cli(&["crl", "--out", &crl.display().to_string()]).ok();
    let text = run("openssl", &["crl", "-in", &crl.display().to_string(), "-noout", "-text"])
        .ok()
        .stdout
        .to_uppercase();
    for leaf in [&leaf1, &leaf2, &leaf3] {
        assert!(
            text.contains(&pki::serial_hex(leaf).to_uppercase()),
            "{} on the CRL:\n{text}",
            pki::serial_hex(leaf)
        );
    }
}

#[test]
fn revoke_identity_and_problem_documents_for_every_refusal() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let id = "dev-31.fleet.example.com";
    let token = ca.token(id);
    let (key1, csr1) = pki::key_and_csr(&ca.work, KeyAlg::P256, id);

    // Refusals before any issuance, each with its code.
    let r = est::enroll(&srv, id, "lyt.bogus.bogus", &csr1.b64).expect(401);
    assert_eq!(problem(&r)["code"], "token-invalid");
    let r = est::enroll(&srv, "someone-else.example.com", &token, &csr1.b64).expect(403);
    assert_eq!(problem(&r)["code"], "identity-mismatch");
    let junk = ca.work("junk.b64");
    std::fs::write(&junk, "bm90IGEgQ1NS").expect("write");
    let r = est::enroll(&srv, id, &token, &junk).expect(400);
    assert_eq!(problem(&r)["code"], "csr-invalid");
    let (_k, ed) = pki::key_and_csr(&ca.work, KeyAlg::Ed25519, id);
    let r = est::enroll(&srv, id, &token, &ed.b64).expect(400);
    assert_eq!(problem(&r)["code"], "key-not-allowed");
    let r = Request::post(srv.url("/.well-known/est/simpleenroll"), "text/plain", &csr1.b64)
        .cacert(&srv.cacert)
        .basic(id, &token)
        .send()
        .expect(415);
    assert_eq!(problem(&r)["code"], "unsupported-media-type");
    // Refusals made outside the handlers too: an unknown path, a wrong method.
    assert_eq!(problem(&est::get(&srv, "/no/such/path").expect(404))["code"], "not-found");
    let r = est::get(&srv, "/.well-known/est/simpleenroll").expect(405);
    problem(&r);
    let big = ca.work("big.b64");
    std::fs::write(&big, vec![b'A'; 70 * 1024]).expect("write");
    let r = est::enroll(&srv, id, &token, &big).expect(413);
    problem(&r);

    // The token was never spent by any of those.
    let leaf1 = pki::leaf_from_est(
        &est::enroll(&srv, id, &token, &csr1.b64).expect(200).body,
        &ca.work,
        "a1",
    );
    let (_key2, csr2) = pki::key_and_csr(&ca.work, KeyAlg::P256, id);
    let r = est::enroll(&srv, id, &token, &csr2.b64).expect(403);
    assert_eq!(problem(&r)["code"], "token-used");
    let (key3, csr3) = pki::key_and_csr(&ca.work, KeyAlg::P256, id);
    let leaf2 = pki::leaf_from_est(
        &est::reenroll(&srv, &leaf1, &key1, &csr3.b64).expect(200).body,
        &ca.work,
        "a2",
    );

    // revoke --identity: every live certificate of the identity.
    let out = ca.cli(&["revoke", "--identity", id, "--reason", "affiliationChanged"]).ok();
    for leaf in [&leaf1, &leaf2] {
        assert!(out.stderr.to_lowercase().contains(&pki::serial_hex(leaf).to_lowercase()), "{out}");
        assert_eq!(ocsp_status(&ca, &srv, leaf), "revoked");
    }
    let (_k, csr4) = pki::key_and_csr(&ca.work, KeyAlg::P256, id);
    let r = est::reenroll(&srv, &leaf2, &key3, &csr4.b64).expect(403);
    assert_eq!(problem(&r)["code"], "revoked");
}
