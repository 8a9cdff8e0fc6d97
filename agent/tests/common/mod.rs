//! Shared by the agent's integration tests: a real CA (lanyard-ca, in-process on
//! loopback) and the `lanyard` binary driven as a user would.
#![allow(dead_code)]

use lanyard_ca::ca_dir::{CaDir, InitOptions};
use lanyard_ca::clock::{Clock, SystemClock};
use lanyard_ca::serve::{Running, ServeOptions};
use lanyard_proto::KeyAlgorithm;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

/// The wall clock moved by a settable offset, to make the CA see the future.
#[derive(Debug, Default)]
pub struct OffsetClock(pub std::sync::atomic::AtomicI64);

impl OffsetClock {
    pub fn set_offset(&self, d: Duration) {
        self.0.store(
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            std::sync::atomic::Ordering::SeqCst,
        );
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> time::OffsetDateTime {
        SystemClock.now()
            + time::Duration::seconds(self.0.load(std::sync::atomic::Ordering::SeqCst))
    }
}

pub struct Ca {
    pub dir: PathBuf,
    pub clock: Arc<OffsetClock>,
    pub running: Option<Running>,
    pub url: String,
    pub listen: String,
    /// `serve --max-issuance-rate/--max-issuance-queue`, applied at the next `up`.
    pub admission: Option<lanyard_ca::admission::AdmissionLimits>,
}

impl Ca {
    pub async fn start(tmp: &Path) -> Ca {
        let dir = tmp.join("ca");
        CaDir::new(&dir)
            .init(
                &InitOptions {
                    name: "Test".into(),
                    root_key: KeyAlgorithm::EcdsaP384,
                    issuing_key: KeyAlgorithm::EcdsaP256,
                    public_url: "http://127.0.0.1:9".into(),
                },
                &SystemClock,
            )
            .await
            .expect("init");
        let mut ca = Ca {
            dir,
            clock: Arc::new(OffsetClock::default()),
            running: None,
            url: String::new(),
            listen: "127.0.0.1:0".into(),
            admission: None,
        };
        ca.up().await;
        ca
    }

    pub async fn up(&mut self) {
        let d = CaDir::new(&self.dir);
        let auth = d.open(self.clock.clone()).expect("open").with_admission(self.admission);
        let opts = ServeOptions::new(self.listen.clone());
        let r = lanyard_ca::serve::start(d, auth, opts).await.expect("serve");
        self.listen = r.https.to_string();
        self.url = format!("https://{}", r.https);
        self.running = Some(r);
    }

    pub async fn down(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }

    pub fn auth(&self) -> Arc<lanyard_ca::Authority> {
        self.running.as_ref().expect("running").authority.clone()
    }

    pub async fn token(&self, id: &str) -> String {
        self.token_in(id, "default").await
    }

    pub async fn token_in(&self, id: &str, group: &str) -> String {
        let (t, _) = self
            .auth()
            .create_token(id, group, Duration::from_secs(600), "test")
            .await
            .expect("token");
        t.expose().to_owned()
    }

    pub fn root(&self) -> String {
        self.dir.join("root.crt").display().to_string()
    }
}

pub async fn lanyard(state: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_lanyard"))
        .args(["--store", "file", "--state-dir"])
        .arg(state)
        .args(args)
        .env("LANYARD_CONFIG", "/dev/null")
        .output()
        .await
        .expect("run lanyard")
}

pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

pub async fn status(state: &Path) -> serde_json::Value {
    let o = lanyard(state, &["status", "--json"]).await;
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("status --json: {e}: {}", text(&o)))
}

pub async fn enrol(ca: &Ca, state: &Path, id: &str) -> serde_json::Value {
    enrol_in(ca, state, id, "default").await
}

pub async fn enrol_in(ca: &Ca, state: &Path, id: &str, group: &str) -> serde_json::Value {
    let token = ca.token_in(id, group).await;
    let o =
        lanyard(state, &["enrol", "--ca", &ca.url, "--token", &token, "--ca-bundle", &ca.root()])
            .await;
    assert!(o.status.success(), "enrol: {}", text(&o));
    status(state).await
}

pub fn spki_of_pem(path: &Path) -> Vec<u8> {
    let data = std::fs::read(path).expect("read");
    let p = pem::parse(&data).expect("pem");
    let (_, x) = x509_parser::parse_x509_certificate(p.contents()).expect("x509");
    x.tbs_certificate.subject_pki.raw.to_vec()
}
