//! The local status endpoint (loopback or a UNIX socket): `/healthz` (200 while the
//! credential is valid), `/status` (the JSON of `lanyard status`), `/metrics` (Prometheus).

use crate::agent::{Agent, CredentialState};
use crate::config::ListenAddr;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
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
    let listener = match &addr {
        ListenAddr::Tcp(a) => lanyard_net::Listener::Tcp(tokio::net::TcpListener::bind(a).await?),
        ListenAddr::Unix(p) => {
            let _ = std::fs::remove_file(p);
            lanyard_net::Listener::Unix(tokio::net::UnixListener::bind(p)?)
        }
    };
    let own: Option<Arc<Vec<String>>> =
        crate::proxy::handler::listener_hosts(listener.local_addr(), &[]).map(Arc::new);
    tracing::info!(listen = %addr, "status endpoint listening");
    lanyard_net::serve(
        listener,
        None,
        lanyard_net::Limits { max_connections: 256, ..lanyard_net::Limits::local() },
        move |_conn: &lanyard_net::Conn| {
            let (agent, own) = (agent.clone(), own.clone());
            hyper::service::service_fn(move |req: http::Request<Incoming>| {
                let (agent, own) = (agent.clone(), own.clone());
                async move {
                    // The same rule as the proxy: a page that rebinds a name to 127.0.0.1
                    // must not read this device's status.
                    let host = req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok());
                    if let Some(own) = &own
                        && !host.is_some_and(|h| crate::proxy::handler::host_is_own(own, h))
                    {
                        return Ok::<_, std::convert::Infallible>(respond(
                            StatusCode::FORBIDDEN,
                            "text/plain",
                            format!(
                                "Host {host:?} is not this status endpoint ({})\n",
                                own.join(", ")
                            ),
                        ));
                    }
                    Ok(handle(&agent, req.uri().path()))
                }
            })
        },
        shutdown,
    )
    .await;
    Ok(())
}
