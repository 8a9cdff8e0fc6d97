//! `lanyard-ca serve` as a library call: the HTTPS listener (EST, `/v1/`, publication),
//! the plain-HTTP publication listener, and the task that keeps `DIR/crl` fresh. Tests and
//! tools start a CA in-process with it.

use crate::authority::Authority;
use crate::ca_dir::CaDir;
use crate::error::{CaError, Result};
use crate::http;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub listen: String,
    /// Names for the HTTPS certificate; 127.0.0.1 and ::1 are added.
    pub tls_names: Vec<String>,
    /// `None` for no plain-HTTP publication listener.
    pub http_listen: Option<String>,
    /// Timeouts, connection caps and HTTP/2 limits of both listeners.
    pub limits: http::server::Limits,
}

impl ServeOptions {
    /// Listen on `listen` (HTTPS only) with the default limits.
    pub fn new(listen: impl Into<String>) -> Self {
        ServeOptions {
            listen: listen.into(),
            tls_names: Vec::new(),
            http_listen: None,
            limits: http::server::Limits::server(),
        }
    }
}

/// A CA being served. Dropping it does not stop it: call [`Running::stop`].
pub struct Running {
    pub https: SocketAddr,
    pub http: Option<SocketAddr>,
    pub authority: Arc<Authority>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl Running {
    /// Stops accepting, lets open requests finish (bounded), and returns.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

pub async fn start(dir: CaDir, auth: Authority, opts: ServeOptions) -> Result<Running> {
    let auth = Arc::new(auth);
    let mut names = opts.tls_names.clone();
    // The operator's names first (the first becomes the CN), then loopback.
    for n in ["127.0.0.1", "::1"] {
        if !names.iter().any(|x| x == n) {
            names.push(n.to_owned());
        }
    }
    let (chain, key) = dir.tls_identity(&auth, &names)?;
    let tls =
        http::tls::server_config(chain, key, &auth.keys().issuing_der).map_err(CaError::Config)?;

    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(&opts.listen)
        .await
        .map_err(CaError::io(format!("binding {}", opts.listen)))?;
    let https = listener.local_addr().map_err(CaError::io("local address"))?;
    let mut tasks = JoinSet::new();
    tasks.spawn(http::server::serve_with(
        listener,
        Some(Arc::new(tls)),
        http::router(auth.clone()),
        opts.limits.clone(),
        shutdown.clone(),
    ));
    let mut http_addr = None;
    if let Some(h) = &opts.http_listen {
        let l =
            tokio::net::TcpListener::bind(h).await.map_err(CaError::io(format!("binding {h}")))?;
        http_addr = Some(l.local_addr().map_err(CaError::io("local address"))?);
        tasks.spawn(http::server::serve_with(
            l,
            None,
            http::publication_app(auth.clone()),
            opts.limits.clone(),
            shutdown.clone(),
        ));
    }
    // Keep DIR/crl fresh: after revocations (also those made by the CLI) and before expiry.
    {
        let (auth, shutdown) = (auth.clone(), shutdown.clone());
        tasks.spawn(async move {
            let mut last = u64::MAX;
            let mut published_at = auth.now();
            let mut swept_at = auth.now() - time::Duration::HOUR;
            loop {
                // Renewed certificates whose successor has not been used within the group's
                // superseded grace are revoked as `superseded` (about once a minute).
                if auth.now() - swept_at >= time::Duration::MINUTE {
                    swept_at = auth.now();
                    match auth.retire_superseded().await {
                        Ok(r) if !r.is_empty() => {
                            tracing::info!(count = r.len(), "revoked superseded certificates")
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "retiring superseded certificates failed")
                        }
                    }
                }
                let generation = auth.store().revocation_generation().await.unwrap_or(last);
                let stale = auth.now() - published_at > auth.publication().crl_validity / 2;
                if generation != last || stale {
                    match dir.publish_crls(&auth).await {
                        Ok(_) => {
                            last = generation;
                            published_at = auth.now();
                        }
                        Err(e) => tracing::error!(error = %e, "publishing CRLs failed"),
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
                }
            }
        });
    }
    tracing::info!(https = %https, http = ?http_addr, signer = %auth.keys().issuing.0.describe(), "lanyard-ca serving");
    Ok(Running { https, http: http_addr, authority: auth, shutdown, tasks })
}
