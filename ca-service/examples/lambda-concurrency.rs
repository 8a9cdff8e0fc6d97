//! How many Lambda instances hold a given issuance rate, when each signature costs what a
//! KMS `Sign` costs (about 10 ms in-region) rather than a local key's 0.05 ms.
//!
//! ```sh
//! cargo run --release -p lanyard-ca --example lambda-concurrency -- 10 300
//! #                                     remote latency per issuance (ms) ^   ^ target rate
//! ```
//! The issuing key is wrapped in a signer that blocks its thread for the given latency
//! before signing, the way the KMS signer blocks on its `Sign` call; the store is SQLite.
//! Enrolments go through the same axum router the Lambda serves. A Lambda instance handles
//! one request at a time, so "concurrency C" here is C instances: the run measures the rate
//! at C = 1, 2, 4, 8, 16 and 32 and names the smallest C that holds the target. DynamoDB's
//! round trips (two per issuance, single-digit milliseconds each) are not in the store; add
//! them to the latency argument (`-- 20 300` models 10 ms of KMS plus 2 x 5 ms of DynamoDB).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/enrol.rs"]
mod enrol;

use lanyard_ca::authority::{Authority, CaKeys, PublicationSettings};
use lanyard_ca::ca_dir::{CaDir, InitOptions};
use lanyard_ca::clock::SystemClock;
use lanyard_ca::signer::{SharedSigner, Signer};
use lanyard_ca::store::sqlite::SqliteStore;
use lanyard_proto::KeyAlgorithm;
use std::sync::Arc;
use std::time::Duration;

/// The issuing key behind a remote call's latency: blocks its thread, as the KMS signer's
/// `block_in_place` does, then signs locally.
#[derive(Debug)]
struct Remote {
    inner: Arc<dyn Signer>,
    latency: Duration,
}

impl rcgen::PublicKeyData for Remote {
    fn der_bytes(&self) -> &[u8] {
        self.inner.der_bytes()
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.inner.algorithm()
    }
}

impl rcgen::SigningKey for Remote {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        tokio::task::block_in_place(|| std::thread::sleep(self.latency));
        self.inner.sign(msg)
    }
}

impl Signer for Remote {
    fn key_algorithm(&self) -> KeyAlgorithm {
        self.inner.key_algorithm()
    }
    fn describe(&self) -> String {
        format!("{} behind {} ms", self.inner.describe(), self.latency.as_millis())
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let latency_ms: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let target: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(300.0);
    let latency = Duration::from_millis(latency_ms);

    let tmp = tempfile::tempdir().unwrap();
    let d = CaDir::new(tmp.path().join("ca"));
    let opts = InitOptions {
        name: "Bench".into(),
        root_key: KeyAlgorithm::EcdsaP384,
        issuing_key: KeyAlgorithm::EcdsaP256,
        public_url: "http://pki.example.com".into(),
    };
    d.init(&opts, &SystemClock).await.unwrap();
    let local = d.open(Arc::new(SystemClock)).unwrap();
    let k = local.keys();
    let keys = CaKeys {
        issuing: SharedSigner(Arc::new(Remote { inner: k.issuing.0.clone(), latency })),
        issuing_der: k.issuing_der.clone(),
        generation: k.generation,
        retired: Vec::new(),
        root_der: k.root_der.clone(),
        root: k.root.clone(),
        root_generation: k.root_generation,
        retired_roots: Vec::new(),
        cross: k.cross.clone(),
    };
    let store = Arc::new(SqliteStore::open(&tmp.path().join("ca").join("lanyard-ca.db")).unwrap());
    let auth = Arc::new(
        Authority::new(
            store,
            Arc::new(SystemClock),
            keys,
            PublicationSettings::new("http://pki.example.com", 604_800, 3_600),
        )
        .unwrap(),
    );

    println!("remote signing latency {latency_ms} ms per issuance; target {target:.0} issuances/s");
    println!(
        "{:>11} {:>9} {:>9} {:>9} {:>12}",
        "concurrency", "rate/s", "p50 ms", "p99 ms", "rate/C/s"
    );
    let mut holds = None;
    for c in [1usize, 2, 4, 8, 16, 32] {
        // Enough enrolments for about a second at the rate C instances can reach.
        let n = ((c as f64 * 1000.0 / (latency_ms as f64 + 1.0)) as usize).clamp(100, 2000);
        let (rate, p50, p99) = enrol::run(auth.clone(), &format!("lambda-c{c}"), n, c).await;
        println!(
            "{c:>11} {rate:>9.0} {:>9.2} {:>9.2} {:>12.1}",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            rate / c as f64
        );
        if holds.is_none() && rate >= target {
            holds = Some(c);
        }
    }
    match holds {
        Some(c) => {
            println!("{target:.0}/s holds from concurrency {c} (reserved_concurrency >= {c})")
        }
        None => println!("{target:.0}/s not reached at concurrency 32 on this machine"),
    }
}
