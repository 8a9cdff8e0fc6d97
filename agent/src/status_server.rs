//! The local status endpoint (loopback or a UNIX socket): `/healthz` (200 while the
//! credential is valid), `/status` (the JSON of `lanyard status`), `/metrics` (Prometheus).

use crate::agent::{Agent, CredentialState};
use crate::config::ListenAddr;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

fn respond(status: StatusCode, ct: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(ct) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

fn handle(agent: &Agent, path: &str) -> Response<Full<Bytes>> {
    match path {
        "/healthz" => {
            let s = agent.status();
            let ok = matches!(s.state, CredentialState::Valid | CredentialState::Renewing);
            let body = serde_json::json!({"state": s.state, "action": s.action}).to_string();
            respond(
                if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE },
                "application/json",
                body,
            )
        }
        "/status" => respond(
            StatusCode::OK,
            "application/json",
            serde_json::to_string_pretty(&agent.status()).unwrap_or_default(),
        ),
        "/metrics" => respond(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            agent.metrics.render(agent.clock.now()),
        ),
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /healthz, /status, /metrics\n".into(),
        ),
    }
}

pub async fn serve(
    agent: Arc<Agent>,
    addr: ListenAddr,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let svc = move |req: http::Request<Incoming>| {
        let agent = agent.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(&agent, req.uri().path())) }
    };
    match addr {
        ListenAddr::Tcp(a) => {
            let l = tokio::net::TcpListener::bind(a).await?;
            tracing::info!(listen = %a, "status endpoint listening");
            loop {
                let (s, _) = tokio::select! { _ = shutdown.cancelled() => return Ok(()), r = l.accept() => r? };
                let svc = svc.clone();
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), hyper::service::service_fn(svc))
                        .await;
                });
            }
        }
        ListenAddr::Unix(p) => {
            let _ = std::fs::remove_file(&p);
            let l = tokio::net::UnixListener::bind(&p)?;
            tracing::info!(listen = %p.display(), "status endpoint listening");
            loop {
                let (s, _) = tokio::select! { _ = shutdown.cancelled() => return Ok(()), r = l.accept() => r? };
                let svc = svc.clone();
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), hyper::service::service_fn(svc))
                        .await;
                });
            }
        }
    }
}
