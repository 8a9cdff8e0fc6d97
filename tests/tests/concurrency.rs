//! Parallel enrolments with one token: the same key gets one certificate, whoever wins;
//! different keys get exactly one certificate between them.

use lanyard_e2e::est::{self, Resp};
use lanyard_e2e::pki::{self, KeyAlg};
use lanyard_e2e::{Ca, Server, peers};
use std::path::PathBuf;
use std::sync::Barrier;

const N: usize = 8;

/// Sends every CSR at once (one curl each, released together).
fn race(srv: &Server, id: &str, token: &str, csrs: &[PathBuf]) -> Vec<Resp> {
    let barrier = Barrier::new(csrs.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = csrs
            .iter()
            .map(|csr| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    est::enroll(srv, id, token, csr)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("enrol thread")).collect()
    })
}

#[test]
fn same_token_same_key_in_parallel_gets_one_certificate() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let id = "dev-1.fleet.example.com";
    let token = ca.token(id);
    let key = pki::genkey(&ca.work("k.key"), KeyAlg::P256);
    // Distinct CSRs (ECDSA signatures are randomized) for the one key.
    let csrs: Vec<PathBuf> = (0..N)
        .map(|i| pki::csr(&ca.work, &format!("c{i}"), &key, &format!("/CN={id}"), &[]).b64)
        .collect();
    let answers = race(&srv, id, &token, &csrs);
    let mut serials = Vec::new();
    for (i, r) in answers.iter().enumerate() {
        assert_eq!(r.status, 200, "request {i}:\n{r}\n{}", srv.log());
        let leaf = pki::leaf_from_est(&r.body, &ca.work, &format!("leaf{i}"));
        serials.push(pki::serial_hex(&leaf));
    }
    serials.dedup();
    assert_eq!(serials.len(), 1, "parallel retries got different certificates: {serials:?}");
    let certs = ca.certs();
    assert_eq!(certs.len(), 1, "exactly one certificate recorded: {certs:?}");
    let audit = ca.cli(&["audit", "--json", "--limit", "100"]).ok();
    assert_eq!(audit.stdout.matches("\"issue\"").count(), 1, "one issuance audited:\n{audit}");
}

#[test]
fn same_token_different_keys_in_parallel_gets_exactly_one() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let id = "dev-2.fleet.example.com";
    let token = ca.token(id);
    let csrs: Vec<PathBuf> =
        (0..N).map(|_| pki::key_and_csr(&ca.work, KeyAlg::P256, id).1.b64).collect();
    let answers = race(&srv, id, &token, &csrs);
    let ok: Vec<_> = answers.iter().filter(|r| r.status == 200).collect();
    assert_eq!(
        ok.len(),
        1,
        "one winner; statuses: {:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in answers.iter().filter(|r| r.status != 200) {
        assert_eq!(r.status, 403, "{r}");
        assert!(r.text().contains("already used"), "{r}");
    }
    assert_eq!(ca.certs().len(), 1);
}
