//! Proxy listeners: TCP (loopback unless the config consents) or a UNIX socket with the
//! configured mode, on the shared accept loop (`lanyard-net`: connection cap, timeouts).
//! Bounded shutdown: stop accepting, let open connections finish.

use super::handler::{self, Ctx};
use super::upstream::Upstreams;
use crate::config::{ListenAddr, Route};
use crate::credential::CredentialView;
use crate::error::{AgentError, Result};
use crate::metrics::Metrics;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Bounded shutdown: open connections get this long to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Binds the route's listener: TCP, or a UNIX socket with the route's mode.
async fn bind(route: &Route) -> Result<lanyard_net::Listener> {
    Ok(match &route.listen {
        ListenAddr::Tcp(a) => lanyard_net::Listener::Tcp(
            tokio::net::TcpListener::bind(a)
                .await
                .map_err(AgentError::io(format!("binding {a}")))?,
        ),
        ListenAddr::Unix(p) => {
            if p.exists() {
                std::fs::remove_file(p)
                    .map_err(AgentError::io(format!("removing stale socket {}", p.display())))?;
            }
            let l = tokio::net::UnixListener::bind(p)
                .map_err(AgentError::io(format!("binding {}", p.display())))?;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(route.socket_mode))
                .map_err(AgentError::io(format!("setting mode of {}", p.display())))?;
            lanyard_net::Listener::Unix(l)
        }
    })
}

/// Serves one route until `shutdown`: requests go out with the credential `credential`
/// holds at that moment; an upstream's refusal of it asks the identity side to recheck.
pub async fn serve_route(
    credential: CredentialView,
    metrics: Arc<Metrics>,
    route: Route,
    shutdown: CancellationToken,
) -> Result<()> {
    let name = match &route.upstream {
        Some(u) => format!("{}->{}", route.listen, u.authority()),
        None => format!("{}->forward", route.listen),
    };
    if !route.listen.is_loopback() {
        tracing::warn!(listen = %route.listen, "proxy listens beyond loopback: anyone who reaches it uses this device's identity");
    }
    let listener = bind(&route).await?;
    let local = listener.local_addr();
    tracing::info!(route = %name, listen = %local.map(|a| a.to_string()).unwrap_or_else(|| route.listen.to_string()), "proxy listening");
    let ctx = Arc::new(Ctx {
        upstreams: Upstreams::new(&credential, &route)?,
        credential,
        metrics,
        own_hosts: handler::own_hosts(local, &route),
        route: route.clone(),
        name: name.clone(),
    });
    let limits = lanyard_net::Limits {
        drain_timeout: SHUTDOWN_GRACE,
        max_connections: route.max_connections,
        ..lanyard_net::Limits::local()
    };
    lanyard_net::serve(
        listener,
        None,
        limits,
        move |conn: &lanyard_net::Conn| {
            let (ctx, peer) = (ctx.clone(), conn.remote.map(|r| r.ip().to_string()));
            hyper::service::service_fn(move |req| handler::handle(ctx.clone(), peer.clone(), req))
        },
        shutdown,
    )
    .await;
    if let ListenAddr::Unix(p) = &route.listen {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}
