//! The CA survives SIGKILL in the middle of issuance. Eight clients (openssl + curl)
//! enrol and renew at once against `lanyard-ca serve`; the CA is killed at a random point
//! and restarted, `LANYARD_CRASH_ROUNDS` times (30 by default; docs/RELIABILITY.md records
//! the 200-kill run). After every restart and at the end:
//! - every certificate a client received is in the database, and no serial twice;
//! - a token is consumed if and only if the certificate it paid for is recorded;
//! - `PRAGMA integrity_check` is ok;
//! - the restarted CA answers within 1 s.

use lanyard_e2e::est;
use lanyard_e2e::pki::{self, KeyAlg};
use lanyard_e2e::{Ca, peers};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a client was handed: the serial, and for an enrolment the identity (one token
/// per identity).
#[derive(Clone, Debug)]
struct Received {
    serial: String,
    identity: String,
    renewal: bool,
}

fn rounds() -> usize {
    std::env::var("LANYARD_CRASH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(30)
}

/// One client: enrol with a fresh token, then renew what it got, until told to stop.
fn client(
    ca: &Ca,
    srv_url: &Mutex<(String, PathBuf)>,
    n: usize,
    stop: &AtomicBool,
    got: &Mutex<Vec<Received>>,
    seq: &AtomicUsize,
) {
    while !stop.load(Ordering::Relaxed) {
        let i = seq.fetch_add(1, Ordering::Relaxed);
        let id = format!("crash-{n}-{i}.fleet.example.com");
        let token = ca.token(&id);
        let (key, csr) = pki::key_and_csr(&ca.work, KeyAlg::P256, &id);
        let (url, cacert) = srv_url.lock().map(|g| g.clone()).unwrap_or_default();
        let r = est::Request::post(
            format!("{url}/.well-known/est/simpleenroll"),
            "application/pkcs10",
            &csr.b64,
        )
        .cacert(&cacert)
        .basic(&id, &token)
        .send();
        if r.status != 200 {
            continue;
        }
        let leaf = pki::leaf_from_est(&r.body, &ca.work, &format!("e-{n}-{i}"));
        let serial = pki::serial_hex(&leaf).to_ascii_lowercase();
        if let Ok(mut g) = got.lock() {
            g.push(Received { serial, identity: id.clone(), renewal: false });
        }
        let (_k2, csr2) = pki::key_and_csr(&ca.work, KeyAlg::P256, &id);
        let r = est::Request::post(
            format!("{url}/.well-known/est/simplereenroll"),
            "application/pkcs10",
            &csr2.b64,
        )
        .cacert(&cacert)
        .client(&leaf, &key)
        .send();
        if r.status == 200 {
            let leaf2 = pki::leaf_from_est(&r.body, &ca.work, &format!("r-{n}-{i}"));
            let serial = pki::serial_hex(&leaf2).to_ascii_lowercase();
            if let Ok(mut g) = got.lock() {
                g.push(Received { serial, identity: id, renewal: true });
            }
        }
    }
}

/// Checks the database against what the clients received.
#[track_caller]
fn check(db: &std::path::Path, got: &[Received]) {
    let c = rusqlite::Connection::open(db).expect("open the CA database");
    let ok: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("pragma");
    assert_eq!(ok, "ok", "integrity_check");
    let mut certs: BTreeMap<String, (String, Option<String>)> = BTreeMap::new();
    let mut st = c.prepare("SELECT serial, identity, renewed_from FROM certs").expect("certs");
    for row in st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?)))
        .expect("query")
    {
        let (serial, identity, parent) = row.expect("row");
        assert!(certs.insert(serial.clone(), (identity, parent)).is_none(), "{serial} twice");
    }
    for r in got {
        assert!(certs.contains_key(&r.serial), "received {r:?} but the CA forgot it");
    }
    // A token is used if and only if the enrolment it paid for is recorded, as its own.
    let mut st = c.prepare("SELECT identity, used_serial FROM tokens").expect("tokens");
    let tokens: Vec<(String, Option<String>)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect();
    let enrolled: BTreeSet<&str> =
        certs.values().filter(|(_, parent)| parent.is_none()).map(|(id, _)| id.as_str()).collect();
    for (identity, used) in &tokens {
        match used {
            Some(serial) => {
                let (id, parent) = certs.get(serial).unwrap_or_else(|| {
                    panic!("token of {identity} consumed for {serial}, not recorded")
                });
                assert!(
                    id == identity && parent.is_none(),
                    "token of {identity} paid for {serial}"
                );
            }
            None => {
                assert!(!enrolled.contains(identity.as_str()), "{identity} enrolled, token unused")
            }
        }
    }
    for r in got.iter().filter(|r| !r.renewal) {
        assert!(
            tokens.iter().any(|(id, used)| *id == r.identity && used.as_deref() == Some(&r.serial)),
            "{r:?}: its token does not name it"
        );
    }
}

#[test]
fn the_ca_survives_sigkill_during_issuance() {
    if !peers::require_basics() {
        return;
    }
    let ca = Arc::new(Ca::init());
    let mut srv = ca.serve();
    let target = Arc::new(Mutex::new((srv.url(""), srv.cacert.clone())));
    let got = Arc::new(Mutex::new(Vec::<Received>::new()));
    let seq = Arc::new(AtomicUsize::new(0));
    let mut slowest = Duration::ZERO;
    for round in 0..rounds() {
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..8)
            .map(|n| {
                let (ca, target, stop, got, seq) =
                    (ca.clone(), target.clone(), stop.clone(), got.clone(), seq.clone());
                std::thread::spawn(move || client(&ca, &target, n, &stop, &got, &seq))
            })
            .collect();
        // Kill somewhere in the middle of the traffic.
        std::thread::sleep(Duration::from_millis(300 + (round as u64 * 7919) % 900));
        drop(srv); // SIGKILL, then reaped
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().expect("client");
        }
        check(&ca.path("lanyard-ca.db"), &got.lock().expect("lock"));
        let t = Instant::now();
        srv = ca.serve();
        slowest = slowest.max(t.elapsed());
        if let Ok(mut g) = target.lock() {
            *g = (srv.url(""), srv.cacert.clone());
        }
    }
    let received = got.lock().expect("lock").len();
    eprintln!("{} kills, {received} certificates received, slowest restart {slowest:?}", rounds());
    assert!(received >= rounds(), "the clients got certificates between kills: {received}");
    assert!(slowest < Duration::from_secs(1), "a restart took {slowest:?}");
    drop(srv);
    check(&ca.path("lanyard-ca.db"), &got.lock().expect("lock"));
}
