//! The CA under attack on loopback: 1,100 idle TCP connections and 200 half-sent requests
//! from one address (127.0.0.2) while a device enrols from another (127.0.0.1) in under
//! 2 s; the per-address cap; idle connections closed after the handshake timeout; failed
//! authentications audited and limited (429 with Retry-After).

use lanyard_e2e::est::{self, Request};
use lanyard_e2e::pki::{self, KeyAlg};
use lanyard_e2e::{Ca, peers};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Enough file descriptors for the flood in this process (and the CA it starts).
fn raise_fd_limit(want: u64) {
    let soft = lanyard_e2e::cmd::raise_fd_limit(want);
    assert!(soft >= want, "the flood test needs {want} file descriptors; the limit is {soft}");
}

async fn connect_from(src: &str, to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let s = tokio::net::TcpSocket::new_v4()?;
    s.bind(format!("{src}:0").parse().expect("source"))?;
    s.connect(to).await
}

/// True if the server closed the connection within `within`.
async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[test]
fn a_flood_from_one_address_does_not_stop_others() {
    if !peers::require_basics() {
        return;
    }
    raise_fd_limit(4096);
    let ca = Ca::init();
    let srv = ca.serve();
    let https: SocketAddr = srv.https.parse().expect("addr");
    let http: SocketAddr = srv.http.parse().expect("addr");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");

    let (mut idle, mut half) = rt.block_on(async {
        let mut idle = Vec::new();
        for _ in 0..1100 {
            idle.push(connect_from("127.0.0.2", https).await.expect("connect"));
        }
        let mut half = Vec::new();
        for _ in 0..200 {
            let mut s = connect_from("127.0.0.2", http).await.expect("connect");
            let _ = s.write_all(b"GET /crl HTTP/1.1\r\nHost: ca\r\nX-Slow: ").await;
            half.push(s);
        }
        (idle, half)
    });

    // Meanwhile a device enrols, from another address, in under 2 s.
    let id = "flooded.fleet.example.com";
    let token = ca.token(id);
    let (_key, csr) = pki::key_and_csr(&ca.work, KeyAlg::P256, id);
    let t = Instant::now();
    est::enroll(&srv, id, &token, &csr.b64).expect(200);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(2), "enrolment under the flood took {took:?}");

    rt.block_on(async {
        // The per-address cap (64): all but 64 of each flood were closed at once.
        let mut closed = 0;
        for s in idle.iter_mut() {
            if closed_within(s, Duration::from_millis(5)).await {
                closed += 1;
            }
        }
        assert_eq!(closed, 1100 - 64, "idle connections beyond the per-address cap");
        let mut closed_half = 0;
        for s in half.iter_mut() {
            if closed_within(s, Duration::from_millis(5)).await {
                closed_half += 1;
            }
        }
        assert_eq!(closed_half, 200 - 64, "half-sent requests beyond the per-address cap");
        // The rest go at the handshake timeout (10 s) and header-read timeout (10 s).
        let t = Instant::now();
        for s in idle.iter_mut().chain(half.iter_mut()) {
            assert!(closed_within(s, Duration::from_secs(15)).await, "held past the timeouts");
        }
        assert!(t.elapsed() < Duration::from_secs(15));
    });
    drop((idle, half));
    let log = srv.log();
    assert!(log.contains("connection cap reached"), "the refusals are logged:\n{log}");
    assert!(log.matches("connection cap reached").count() < 10, "...but not once each:\n{log}");
}

#[test]
fn failed_authentications_are_audited_and_limited() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let id = "guessed.fleet.example.com";
    let (_key, csr) = pki::key_and_csr(&ca.work, KeyAlg::P256, id);
    let real = ca.token(id);
    for i in 0..10 {
        let r = est::enroll(&srv, id, &format!("lyt.Z3Vlc3M.wrong-{i}"), &csr.b64);
        assert_eq!(r.status, 401, "attempt {i}: {r}");
    }
    let r = Request::post(srv.url("/.well-known/est/simpleenroll"), "application/pkcs10", &csr.b64)
        .cacert(&srv.cacert)
        .basic(id, &real)
        .send()
        .expect(429);
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("problem+json");
    assert_eq!(v["code"], "rate-limited", "{v}");
    let audit = ca.cli(&["audit"]).ok();
    assert_eq!(audit.stdout.matches("auth_failed").count(), 10, "{audit}");
    assert!(audit.stdout.contains("auth_rate_limited"), "{audit}");
    assert!(audit.stdout.contains("127.0.0.1"), "the audit names the address: {audit}");
    assert!(!audit.stdout.contains("wrong-"), "no secret in the audit: {audit}");
    assert!(!audit.all().contains(&real), "no token in the audit");
}
