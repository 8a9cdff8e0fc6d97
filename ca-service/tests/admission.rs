//! Issuance admission control over real HTTPS: a CA served with `--max-issuance-rate 5`
//! (the same `serve::start` the command runs), 40 devices enrolling at once.
//!
//! Every refusal is `503` problem+json `busy` with `Retry-After`; devices that obey it all
//! enrol in the end; the CA never issued more than its rate in any one second (from its
//! audit trail); and a check-in during the backlog is answered at once.

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use lanyard_ca::admission::AdmissionLimits;
use lanyard_ca::ca_dir::{CaDir, InitOptions};
use lanyard_ca::clock::SystemClock;
use lanyard_ca::serve::{Running, ServeOptions};
use lanyard_proto::KeyAlgorithm;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const RATE: f64 = 5.0;
const DEVICES: usize = 40;

struct Answer {
    status: u16,
    content_type: String,
    retry_after: Option<String>,
    body: Bytes,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HTTP {} ({}) Retry-After {:?}: {}",
            self.status,
            self.content_type,
            self.retry_after,
            String::from_utf8_lossy(&self.body)
        )
    }
}

/// One request on its own TLS connection, trusting the CA's root.
async fn send(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    req: http::Request<Full<Bytes>>,
) -> Answer {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("server name");
    let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.expect("TLS");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.expect("request");
    let header = |h: http::header::HeaderName| {
        resp.headers().get(h).and_then(|v| v.to_str().ok()).map(str::to_owned)
    };
    let content_type = header(http::header::CONTENT_TYPE).unwrap_or_default();
    let retry_after = header(http::header::RETRY_AFTER);
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Answer { status, content_type, retry_after, body }
}

fn basic(identity: &str, token: &str) -> String {
    let raw = format!("{identity}:{token}");
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
}

fn enrol_request(identity: &str, token: &str, csr_b64: &str) -> http::Request<Full<Bytes>> {
    http::Request::post("/.well-known/est/simpleenroll")
        .header(http::header::HOST, "127.0.0.1")
        .header(http::header::CONTENT_TYPE, "application/pkcs10")
        .header(http::header::AUTHORIZATION, basic(identity, token))
        .body(Full::new(Bytes::from(csr_b64.to_owned())))
        .expect("request")
}

fn get(path: &str, auth: Option<String>) -> http::Request<Full<Bytes>> {
    let mut b = http::Request::get(path).header(http::header::HOST, "127.0.0.1");
    if let Some(a) = auth {
        b = b.header(http::header::AUTHORIZATION, a);
    }
    b.body(Full::new(Bytes::new())).expect("request")
}

fn csr_der(identity: &str) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, identity);
    params.serialize_request(&key).expect("CSR").der().to_vec()
}

fn csr_b64(identity: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(csr_der(identity))
}

async fn init(tmp: &std::path::Path) -> CaDir {
    let dir = CaDir::new(tmp.join("ca"));
    dir.init(
        &InitOptions {
            name: "Admission".into(),
            root_key: KeyAlgorithm::EcdsaP256,
            issuing_key: KeyAlgorithm::EcdsaP256,
            public_url: "http://127.0.0.1:9".into(),
        },
        &SystemClock,
    )
    .await
    .expect("init");
    dir
}

async fn start(tmp: &std::path::Path) -> (Running, Arc<rustls::ClientConfig>) {
    let dir = init(tmp).await;
    let auth = dir
        .open(Arc::new(SystemClock))
        .expect("open")
        .with_admission(Some(AdmissionLimits::new(RATE, 2.0).expect("limits")));
    let root = auth.keys().root_der.clone();
    let running =
        lanyard_ca::serve::start(dir, auth, ServeOptions::new("127.0.0.1:0")).await.expect("serve");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pki_types::CertificateDer::from(root)).expect("root");
    let tls = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    (running, Arc::new(tls))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_enrolments_is_paced_refused_with_busy_and_check_ins_do_not_wait() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (running, tls) = start(tmp.path()).await;
    let addr = running.https;
    let auth = running.authority.clone();
    let ttl = Duration::from_secs(3_600);
    let mut devices = Vec::new();
    for i in 0..DEVICES {
        let id = format!("dev-{i}.fleet.example.com");
        let (token, _) = auth.create_token(&id, "default", ttl, "test").await.expect("token");
        devices.push((id.clone(), token.expose().to_owned(), csr_b64(&id)));
    }
    // An unused token for the check-in during the backlog.
    let spare = "spare.fleet.example.com";
    let (spare_token, _) = auth.create_token(spare, "default", ttl, "test").await.expect("token");
    let spare_auth = basic(spare, spare_token.expose());

    // Every device enrols at once, and obeys Retry-After until it has its certificate.
    let mut tasks = tokio::task::JoinSet::new();
    for (id, token, csr) in devices {
        let tls = tls.clone();
        tasks.spawn(async move {
            let mut refusals = Vec::new();
            for _ in 0..30 {
                let a = send(addr, tls.clone(), enrol_request(&id, &token, &csr)).await;
                if a.status == 200 {
                    return (id, refusals, true);
                }
                let wait = a.retry_after.as_deref().and_then(|s| s.parse::<u64>().ok());
                refusals.push(a);
                match wait {
                    Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
                    None => return (id, refusals, false),
                }
            }
            (id, refusals, false)
        });
    }

    // During the backlog, check-ins and health checks are answered at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let policy = send(addr, tls.clone(), get("/v1/policy", Some(spare_auth))).await;
    let policy_took = t.elapsed();
    assert_eq!(policy.status, 200, "{policy:?}");
    let t = Instant::now();
    let health = send(addr, tls.clone(), get("/healthz", None)).await;
    let health_took = t.elapsed();
    assert_eq!(health.status, 200, "{health:?}");
    let health: serde_json::Value = serde_json::from_slice(&health.body).expect("healthz JSON");
    let backlog = health["issuance"]["backlog_secs"].as_f64().unwrap_or_default();
    assert!(backlog > 0.5, "the burst should have left a backlog: {health}");
    for (what, took) in [("/v1/policy", policy_took), ("/healthz", health_took)] {
        assert!(took < Duration::from_millis(1_000), "{what} waited {took:?} behind issuance");
    }

    let mut first_round_retry_after = Vec::new();
    let mut refused = 0;
    while let Some(done) = tasks.join_next().await {
        let (id, refusals, enrolled) = done.expect("device task");
        assert!(enrolled, "{id} never enrolled: {refusals:#?}");
        for (n, a) in refusals.iter().enumerate() {
            assert_eq!(a.status, 503, "{id}: {a:?}");
            assert!(a.content_type.starts_with("application/problem+json"), "{id}: {a:?}");
            let p: serde_json::Value = serde_json::from_slice(&a.body).expect("problem JSON");
            assert_eq!(p["code"], "busy", "{id}: {a:?}");
            let secs = a.retry_after.as_deref().and_then(|s| s.parse::<u64>().ok());
            assert!(secs.is_some_and(|s| s >= 1), "{id}: Retry-After missing or 0: {a:?}");
            if n == 0 {
                first_round_retry_after.push(secs.unwrap_or_default());
            }
        }
        refused += refusals.len();
    }
    // The queue holds 2 s at 5/s: about 11 of 40 get in at first, the rest are refused.
    assert!(refused >= 20, "only {refused} refusals for 40 enrolments at 5/s");
    first_round_retry_after.sort_unstable();
    first_round_retry_after.dedup();
    assert!(
        first_round_retry_after.len() >= 3,
        "refused devices were told to come back at too few distinct times: {first_round_retry_after:?}"
    );

    // The audit trail: 40 issuances, never more than the rate (+1 at a second's boundary)
    // in one second.
    let log = auth.store().audit_log(10_000).await.expect("audit log");
    let issued: Vec<i64> =
        log.iter().filter(|e| e.action == "issue").map(|e| e.at.unix_timestamp()).collect();
    assert_eq!(issued.len(), DEVICES, "one issuance per device");
    let mut per_second: HashMap<i64, usize> = HashMap::new();
    for t in &issued {
        *per_second.entry(*t).or_default() += 1;
    }
    let peak = per_second.values().copied().max().unwrap_or_default();
    assert!(peak <= RATE as usize + 1, "{peak} issuances in one second at 5/s: {per_second:?}");
    let stats = auth.admission_stats().expect("paced");
    assert_eq!(stats.admitted, DEVICES as u64);
    assert_eq!(stats.refused, refused as u64);
    running.stop().await;
}

/// A retry answered with the certificate already issued takes no slot, nor does a request
/// refused for what it asks; a new issuance does.
#[tokio::test]
async fn replays_and_refusals_take_no_issuance_slot() {
    use lanyard_ca::authority::RequestMeta;
    let tmp = tempfile::tempdir().expect("tempdir");
    let auth = init(tmp.path())
        .await
        .open(Arc::new(SystemClock))
        .expect("open")
        // One issuance an hour and no queue: the first takes the only slot.
        .with_admission(Some(AdmissionLimits::new(1.0 / 3_600.0, 0.0).expect("limits")));
    let meta = RequestMeta::default();
    let ttl = Duration::from_secs(600);
    let (a, b) = ("a.fleet.example.com", "b.fleet.example.com");
    let (token_a, _) = auth.create_token(a, "default", ttl, "test").await.expect("token");
    let (token_b, _) = auth.create_token(b, "default", ttl, "test").await.expect("token");
    let csr_a = csr_der(a);
    let first = auth.enroll(a, &token_a, &csr_a, &meta).await.expect("first enrolment");
    assert!(!first.replayed);
    // The same request again (a device that lost the answer): the same certificate.
    let again = auth.enroll(a, &token_a, &csr_a, &meta).await.expect("replay");
    assert!(again.replayed && again.record.serial == first.record.serial);
    // A CSR naming someone else is refused for what it is, not as busy.
    let wrong = auth.enroll(b, &token_b, &csr_der(a), &meta).await.expect_err("wrong CN");
    assert_eq!(wrong.code(), lanyard_proto::ProblemCode::CsrInvalid, "{wrong}");
    // A new issuance has no slot left within the hour.
    let busy = auth.enroll(b, &token_b, &csr_der(b), &meta).await.expect_err("busy");
    assert_eq!(busy.code(), lanyard_proto::ProblemCode::Busy, "{busy}");
    assert_eq!(busy.status().as_u16(), 503);
    let stats = auth.admission_stats().expect("paced");
    assert_eq!((stats.admitted, stats.refused), (1, 1), "{stats:?}");
}

/// `lanyard-ca serve --max-issuance-rate` reaches the pacer (its counters show in
/// `/healthz`), and an impossible rate is refused with a message naming the flag.
#[tokio::test]
async fn the_serve_flags_configure_the_pacer() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = init(tmp.path()).await;
    let bin = env!("CARGO_BIN_EXE_lanyard-ca");
    let bad = std::process::Command::new(bin)
        .args(["serve", "--max-issuance-rate", "0", "--dir"])
        .arg(&dir.dir)
        .output()
        .expect("lanyard-ca");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{err}");
    assert!(err.contains("--max-issuance-rate"), "{err}");

    let addr_file = tmp.path().join("addr.json");
    let mut child = std::process::Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .args(["--max-issuance-rate", "5", "--max-issuance-queue", "1.5", "--dir"])
        .arg(&dir.dir)
        .arg("--addr-file")
        .arg(&addr_file)
        .env("LANYARD_LOG", "error")
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("lanyard-ca serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    let http = loop {
        let addrs = std::fs::read_to_string(&addr_file)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
        if let Some(h) = addrs.as_ref().and_then(|a| a["http"].as_str()) {
            break h.to_owned();
        }
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            panic!("lanyard-ca serve did not start");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let tcp = tokio::net::TcpStream::connect(&http).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.expect("handshake");
    tokio::spawn(conn);
    let resp = sender.send_request(get("/healthz", None)).await.expect("healthz");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let _ = child.kill();
    let _ = child.wait();
    let health: serde_json::Value = serde_json::from_slice(&body).expect("healthz JSON");
    assert_eq!(health["issuance"]["rate"], 5.0, "{health}");
    assert_eq!(health["issuance"]["max_queue_secs"], 1.5, "{health}");
    assert_eq!(health["issuance"]["refused"], 0, "{health}");
}
