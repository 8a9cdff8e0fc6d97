//! Shared by the issuance benchmarks: CSRs made before the clock starts, and `simpleenroll`
//! requests through the CA's router with a given number in flight.

use base64::Engine;
use lanyard_ca::authority::Authority;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

pub fn csr(cn: &str) -> Vec<u8> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.serialize_request(&key).unwrap().der().to_vec()
}

/// `n` enrolments (identities `TAG-i`) with `concurrency` in flight: (rate per second, p50, p99).
pub async fn run(
    auth: Arc<Authority>,
    tag: &str,
    n: usize,
    concurrency: usize,
) -> (f64, Duration, Duration) {
    let mut jobs = Vec::new();
    for i in 0..n {
        let id = format!("{tag}-{i}");
        let (t, _) =
            auth.create_token(&id, "default", Duration::from_secs(3600), "bench").await.unwrap();
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("{id}:{}", t.expose()));
        jobs.push((basic, lanyard_proto::est::encode_base64(&csr(&id))));
    }
    let app = lanyard_ca::http::router(auth);
    let jobs = Arc::new(std::sync::Mutex::new(jobs));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (app, jobs) = (app.clone(), jobs.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let Some((basic, body)) = jobs.lock().unwrap().pop() else { break };
                let req = http::Request::post("/.well-known/est/simpleenroll")
                    .header("content-type", "application/pkcs10")
                    .header("authorization", format!("Basic {basic}"))
                    .body(axum::body::Body::from(body))
                    .unwrap();
                let t = Instant::now();
                let resp = app.clone().oneshot(req).await.unwrap();
                assert_eq!(resp.status(), 200);
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for w in workers {
        lat.extend(w.await.unwrap());
    }
    let wall = started.elapsed();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    (n as f64 / wall.as_secs_f64(), pct(0.50), pct(0.99))
}
