//! Issuance latency and rate through the CA's HTTP handler, embedded (SQLite, key files)
//! next to serverless (DynamoDB and KMS on a local moto server), in one run.
//!
//! ```sh
//! moto_server -H 127.0.0.1 -p 5005 &
//! cargo run --release -p lanyard-ca --features aws --example issuance-bench -- http://127.0.0.1:5005 200
//! ```
//! Each enrolment is a full `simpleenroll`: token lookup, CSR check, policy, signing,
//! conditional record of certificate and token, audit event. The CSRs are made before the
//! clock starts. moto is a Python process on loopback, so the serverless numbers measure
//! the SDK path and round trips, not AWS's latency: see docs/BENCHMARKS.md for the
//! estimate with AWS's published latencies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/enrol.rs"]
mod enrol;

use lanyard_ca::authority::Authority;
use lanyard_ca::ca_dir::{CaDir, InitOptions};
use lanyard_ca::clock::SystemClock;
use lanyard_proto::KeyAlgorithm;
use std::sync::Arc;

async fn run(name: &str, auth: Arc<Authority>, n: usize, concurrency: usize) {
    let (rate, p50, p99) = enrol::run(auth, &format!("bench-{name}"), n, concurrency).await;
    println!(
        "{name:<10} {n} enrolments, concurrency {concurrency}: {rate:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let endpoint = args.next().unwrap_or_else(|| "http://127.0.0.1:5005".into());
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let opts = InitOptions {
        name: "Bench".into(),
        root_key: KeyAlgorithm::EcdsaP384,
        issuing_key: KeyAlgorithm::EcdsaP256,
        public_url: "http://pki.example.com".into(),
    };

    let tmp = tempfile::tempdir().unwrap();
    let d = CaDir::new(tmp.path().join("ca"));
    d.init(&opts, &SystemClock).await.unwrap();
    let embedded = Arc::new(d.open(Arc::new(SystemClock)).unwrap());
    run("embedded", embedded, n, 4).await;

    let cfg = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "bench",
        ))
        .load()
        .await;
    let table = format!("bench-{}", std::process::id());
    aws_sdk_dynamodb::Client::new(&cfg)
        .create_table()
        .table_name(&table)
        .attribute_definitions(
            aws_sdk_dynamodb::types::AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(aws_sdk_dynamodb::types::ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            aws_sdk_dynamodb::types::KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(aws_sdk_dynamodb::types::KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    let backend = lanyard_ca::aws::AwsBackend::connect_with(
        &cfg,
        lanyard_ca::aws::AwsLocation {
            table,
            bucket: None,
            root_key_id: None,
            issuing_key_id: None,
        },
    );
    backend.init(&opts, &SystemClock).await.unwrap();
    let serverless = Arc::new(backend.open(Arc::new(SystemClock)).await.unwrap());
    run("serverless", serverless, n, 4).await;
}
