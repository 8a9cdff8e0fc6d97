//! `lanyard-ca-lambda`: the serverless CA's Lambda entry point (runtime `provided.al2023`,
//! arm64 or x86_64). `LANYARD_LAMBDA_MODE=http` (default) serves the EST and device
//! endpoints from API Gateway events; `LANYARD_LAMBDA_MODE=publish` is the scheduled
//! handler that regenerates CRLs, republishes the bundle and the revocation export, and
//! (with `LANYARD_AWS_KVS_ARN`) brings CloudFront's KeyValueStore of revoked serials in step.
#![forbid(unsafe_code)]

use lambda_http::{Error, Request, service_fn};
use lanyard_ca::admission::AdmissionLimits;
use lanyard_ca::aws::{AwsBackend, AwsLocation, KeyAccess, LiveAuthority};
use lanyard_ca::clock::SystemClock;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt().json().with_target(false).without_time().init();
    let backend = Arc::new(AwsBackend::connect(AwsLocation::from_env()?).await);
    // Issuance pacing: LANYARD_MAX_ISSUANCE_RATE for the deployment, shared by
    // LANYARD_ISSUANCE_INSTANCES instances (see lanyard_ca::admission).
    let admission = AdmissionLimits::from_env()?;
    let publisher = std::env::var("LANYARD_LAMBDA_MODE").as_deref() == Ok("publish");
    // The internet-facing handler never holds the root key (nor may its role use it).
    let access = if publisher { KeyAccess::All } else { KeyAccess::IssuingOnly };
    // A rotation reaches a warm instance within LANYARD_RELOAD_SECS (default 60).
    let live = Arc::new(
        LiveAuthority::open(
            backend.clone(),
            Arc::new(SystemClock),
            access,
            admission,
            LiveAuthority::interval_from_env()?,
        )
        .await?,
    );
    match std::env::var("LANYARD_LAMBDA_MODE").as_deref() {
        Ok("publish") => {
            lambda_http::lambda_runtime::run(lambda_http::lambda_runtime::service_fn(
                move |_event: lambda_http::lambda_runtime::LambdaEvent<serde_json::Value>| {
                    let (backend, live) = (backend.clone(), live.clone());
                    async move {
                        let auth = live.get().await;
                        let out = backend.publish(&auth).await?;
                        tracing::info!(objects = ?out.objects, revoked = out.revoked, "published");
                        // Revocation at the edge: CloudFront's KeyValueStore of revoked serials.
                        let synced = match std::env::var("LANYARD_AWS_KVS_ARN") {
                            Ok(arn) if !arn.is_empty() => {
                                let plan = backend.sync_kvs(&auth, &arn).await?;
                                tracing::info!(
                                    puts = plan.puts.len(),
                                    deletes = plan.deletes.len(),
                                    "KeyValueStore synced"
                                );
                                Some(plan)
                            }
                            _ => None,
                        };
                        Ok::<_, Error>(serde_json::json!({ "published": out, "kvs": synced }))
                    }
                },
            ))
            .await
        }
        _ => {
            lambda_http::run(service_fn(move |req: Request| {
                let live = live.clone();
                async move {
                    Ok::<_, Error>(lanyard_ca::aws_lambda::handle(live.get().await, req).await)
                }
            }))
            .await
        }
    }
}
