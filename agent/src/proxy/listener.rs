//! Proxy listeners: TCP (loopback unless the config consents) or a UNIX socket with the
//! configured mode. Bounded shutdown: stop accepting, let open connections finish.

use super::handler::{self, Ctx};
use super::upstream::Upstreams;
use crate::agent::Agent;
use crate::config::{ListenAddr, Route};
use crate::error::{AgentError, Result};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often the proxy re-reads whether the credential is usable (expiry, revocation).
const GATE_REFRESH: Duration = Duration::from_secs(1);

async fn serve_conn<I>(ctx: Arc<Ctx>, io: I, peer: Option<String>, shutdown: CancellationToken)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let (ctx, peer) = (ctx.clone(), peer.clone());
        async move { Ok::<_, std::convert::Infallible>(handler::handle(ctx, peer, req).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => { if let Err(e) = r { tracing::debug!(error = %e, "client connection ended"); } }
        _ = shutdown.cancelled() => { conn.as_mut().graceful_shutdown(); let _ = conn.await; }
    }
}

/// Keeps the gate current, and asks the CA when an upstream refused our certificate.
async fn refresh(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    let mut last_recheck: Option<tokio::time::Instant> = None;
    loop {
        ctx.gate.store(Arc::new(handler::gate(&ctx.agent)));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(GATE_REFRESH) => {}
            _ = ctx.recheck.notified() => {
                if last_recheck.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    last_recheck = Some(tokio::time::Instant::now());
                    if let Err(e) = ctx.agent.check_in().await {
                        tracing::debug!(error = %e, "check-in after an upstream refusal failed");
                    }
                }
            }
        }
    }
}

pub async fn serve_route(
    agent: Arc<Agent>,
    route: Route,
    shutdown: CancellationToken,
) -> Result<()> {
    let name = match &route.upstream {
        Some(u) => format!("{}->{}", route.listen, u.authority()),
        None => format!("{}->forward", route.listen),
    };
    let ctx = Arc::new(Ctx {
        upstreams: Upstreams::new(&agent, &route)?,
        gate: arc_swap::ArcSwap::from_pointee(handler::gate(&agent)),
        agent: agent.clone(),
        route: route.clone(),
        name: name.clone(),
        recheck: tokio::sync::Notify::new(),
    });
    if !route.listen.is_loopback() {
        tracing::warn!(listen = %route.listen, "proxy listens beyond loopback: anyone who reaches it uses this device's identity");
    }
    let tracker = TaskTracker::new();
    tracker.spawn(refresh(ctx.clone(), shutdown.clone()));
    match &route.listen {
        ListenAddr::Tcp(a) => {
            let l = tokio::net::TcpListener::bind(a)
                .await
                .map_err(AgentError::io(format!("binding {a}")))?;
            tracing::info!(route = %name, listen = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "proxy listening");
            loop {
                let (s, peer) = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    r = l.accept() => match r { Ok(x) => x, Err(e) => { tracing::warn!(error = %e, "accept failed"); tokio::time::sleep(Duration::from_millis(100)).await; continue; } },
                };
                let _ = s.set_nodelay(true);
                tracker.spawn(serve_conn(
                    ctx.clone(),
                    TokioIo::new(s),
                    Some(peer.ip().to_string()),
                    shutdown.clone(),
                ));
            }
        }
        ListenAddr::Unix(p) => {
            if p.exists() {
                std::fs::remove_file(p)
                    .map_err(AgentError::io(format!("removing stale socket {}", p.display())))?;
            }
            let l = tokio::net::UnixListener::bind(p)
                .map_err(AgentError::io(format!("binding {}", p.display())))?;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(route.socket_mode))
                .map_err(AgentError::io(format!("setting mode of {}", p.display())))?;
            tracing::info!(route = %name, listen = %p.display(), "proxy listening");
            loop {
                let (s, _) = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    r = l.accept() => match r { Ok(x) => x, Err(e) => { tracing::warn!(error = %e, "accept failed"); tokio::time::sleep(Duration::from_millis(100)).await; continue; } },
                };
                tracker.spawn(serve_conn(ctx.clone(), TokioIo::new(s), None, shutdown.clone()));
            }
        }
    }
    tracker.close();
    let _ = tokio::time::timeout(crate::daemon::SHUTDOWN_GRACE, tracker.wait()).await;
    if let ListenAddr::Unix(p) = &route.listen {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}
