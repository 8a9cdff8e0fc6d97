//! `lanyard-ca serve` as a library call: the HTTPS listener (EST, `/v1/`, publication),
//! the plain-HTTP publication listener, and the task that keeps `DIR/crl` fresh. Tests and
//! tools start a CA in-process with it.

use crate::authority::Authority;
use crate::ca_dir::CaDir;
use crate::console::{ConsoleOptions, Publication};
use crate::error::{CaError, Result};
use crate::http;
use std::net::SocketAddr;
use std::path::PathBuf;
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
    /// `None` for no admin listener (the console and `/metrics`). Plain HTTP on loopback
    /// addresses only, unless `admin_mtls`.
    pub admin_listen: Option<String>,
    /// The admin listener speaks HTTPS and asks for an admin client certificate
    /// (`lanyard-ca admin issue`); then it may listen on any address.
    pub admin_mtls: bool,
    /// Where the admin key and admin CA live; `None`: the CA directory.
    pub admin_dir: Option<PathBuf>,
    /// Timeouts, connection caps and HTTP/2 limits of every listener.
    pub limits: http::server::Limits,
}

impl ServeOptions {
    /// Listen on `listen` (HTTPS only) with the default limits.
    pub fn new(listen: impl Into<String>) -> Self {
        ServeOptions {
            listen: listen.into(),
            tls_names: Vec::new(),
            http_listen: None,
            admin_listen: None,
            admin_mtls: false,
            admin_dir: None,
            limits: http::server::Limits::server(),
        }
    }
}

/// Whether the URLs that `init --public-url` wrote into every certificate (CRL
/// distribution point, OCSP, CA issuers) can reach the publication listener at `http`
/// (`None`: turned off). A warning when they cannot match, `None` when they can (or when a
/// front end in between cannot be ruled out: an https URL, or another host).
pub fn publication_mismatch(public_url: &str, http: Option<SocketAddr>) -> Option<String> {
    let url = url::Url::parse(public_url).ok()?;
    let port = url.port_or_known_default()?;
    let Some(bound) = http else {
        return Some(format!(
            "the publication listener is off (--http-listen off), but the certificates name {public_url} for CRLs, OCSP and CA certificates: serve those URLs some other way"
        ));
    };
    if url.scheme() == "https" {
        return Some(format!(
            "the certificates name {public_url} (https) for CRLs, OCSP and CA certificates, but the publication listener {bound} speaks plain HTTP: something in front must end TLS on port {port} and forward to it"
        ));
    }
    (port != bound.port()).then(|| {
        format!(
            "the certificates name {public_url} (port {port}) for CRLs, OCSP and CA certificates, but the publication listener is on {bound}: nothing answers there unless port {port} is forwarded to {}; serve with --http-listen ADDR:{port}, or make the CA again with a matching --public-url",
            bound.port()
        )
    })
}

/// A CA being served. Dropping it does not stop it: call [`Running::stop`].
pub struct Running {
    pub https: SocketAddr,
    pub http: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub authority: Arc<Authority>,
    shutdown: CancellationToken,
    /// Cancelled when `ca.toml` names another issuing CA than the one loaded.
    rotated: CancellationToken,
    tasks: JoinSet<()>,
}

impl Running {
    /// Resolves when the issuing CA was rotated (`lanyard-ca ca rotate-issuing`) under this
    /// running CA: it must be started again to issue from the new one.
    pub async fn rotated(&self) {
        self.rotated.cancelled().await
    }

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
    let tls = http::tls::server_config(
        chain,
        key,
        &auth.issuer_certificates().into_iter().map(|(_, d)| d).collect::<Vec<_>>(),
    )
    .map_err(CaError::Config)?;

    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(&opts.listen).await.map_err(CaError::io(
        format!("cannot listen for HTTPS on {} (--listen, LANYARD_CA_LISTEN)", opts.listen),
    ))?;
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
        let l = tokio::net::TcpListener::bind(h).await.map_err(CaError::io(format!(
            "cannot listen for plain-HTTP publication on {h} (--http-listen, LANYARD_CA_HTTP_LISTEN; \"off\" turns it off)"
        )))?;
        http_addr = Some(l.local_addr().map_err(CaError::io("local address"))?);
        tasks.spawn(http::server::serve_with(
            l,
            None,
            http::publication_app(auth.clone()),
            opts.limits.clone(),
            shutdown.clone(),
        ));
    }
    let mut admin_addr = None;
    if let Some(a) = &opts.admin_listen {
        let admin_dir = opts.admin_dir.clone().unwrap_or_else(|| dir.dir.clone());
        let console = ConsoleOptions {
            key_path: admin_dir.join(crate::admin::KEY_FILE),
            bundle: Some(dir.bundle_path()),
            publication: Some(Publication::Files(dir.path("crl").join("crl.pem"))),
            mtls: opts.admin_mtls,
        };
        let admin = AdminListener {
            listen: a.clone(),
            admin_dir,
            tls_names: opts.tls_names.clone(),
            limits: opts.limits.clone(),
        };
        admin_addr = Some(start_admin(auth.clone(), console, &admin, &shutdown, &mut tasks).await?);
    }
    // Keep DIR/crl fresh: after revocations (also those made by the CLI) and before expiry.
    let rotated = CancellationToken::new();
    {
        let (auth, shutdown, rotated) = (auth.clone(), shutdown.clone(), rotated.clone());
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
                if let Ok(s) = dir.settings()
                    && s.issuing_generation != auth.issuing_generation()
                {
                    // Publishing with the old set would undo the rotation's bundle.
                    tracing::warn!(
                        loaded = auth.issuing_generation(),
                        now = s.issuing_generation,
                        "the issuing CA was rotated: this server must start again to load it"
                    );
                    rotated.cancel();
                    break;
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
    let http_shown = http_addr.map_or_else(|| "off".to_owned(), |a| a.to_string());
    let root_sha256 = crate::ca_dir::fingerprint(&auth.keys().root_der);
    tracing::info!(https = %https, http = %http_shown, root_sha256 = %root_sha256, signer = %auth.keys().issuing.0.describe(), "lanyard-ca serving");
    tracing::info!(
        "devices trust this CA with: lanyard enrol --ca https://<this host>:{} --ca-fingerprint {root_sha256}",
        https.port()
    );
    let public_url =
        auth.publication().urls.root_crl.strip_suffix("/crl/root").unwrap_or_default().to_owned();
    if let Some(warning) = publication_mismatch(&public_url, http_addr) {
        tracing::warn!("{warning}");
    }
    Ok(Running {
        https,
        http: http_addr,
        admin: admin_addr,
        authority: auth,
        shutdown,
        rotated,
        tasks,
    })
}

/// Where the admin listener (console and `/metrics`) listens, and with what.
#[derive(Clone, Debug)]
pub struct AdminListener {
    pub listen: String,
    /// Where the admin CA lives (`admin issue` makes it): the CA directory for the
    /// embedded backend.
    pub admin_dir: PathBuf,
    /// Extra names for the mTLS listener's certificate (loopback names are always in).
    pub tls_names: Vec<String>,
    pub limits: http::server::Limits,
}

/// Starts the admin listener (into `tasks`, stopped by `shutdown`): plain HTTP on a
/// loopback address, sign-in with admin tokens; or, with `console.mtls`, HTTPS on any
/// address that asks every client for a certificate from the admin CA.
pub async fn start_admin(
    auth: Arc<Authority>,
    console: ConsoleOptions,
    at: &AdminListener,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Result<SocketAddr> {
    let a = &at.listen;
    let l = tokio::net::TcpListener::bind(a).await.map_err(CaError::io(format!(
        "cannot listen for the admin listener on {a} (--admin-listen, LANYARD_CA_ADMIN_LISTEN; \"off\" turns it off)"
    )))?;
    let bound = l.local_addr().map_err(CaError::io("local address"))?;
    let tls = if console.mtls {
        let ca = crate::admin_pki::AdminCa::load(&at.admin_dir)?;
        let mut names: Vec<String> = Vec::new();
        let bound_ip = (!bound.ip().is_unspecified()).then(|| bound.ip().to_string());
        let wanted =
            at.tls_names.iter().cloned().chain(
                ["localhost", "127.0.0.1", "::1"].map(String::from).into_iter().chain(bound_ip),
            );
        for n in wanted {
            // Each name once: a listener bound to 127.0.0.1 would name it twice.
            if !names.contains(&n) {
                names.push(n);
            }
        }
        Some(Arc::new(ca.server_config(&names, auth.now())?))
    } else {
        if !bound.ip().is_loopback() {
            return Err(CaError::Config(format!(
                "--admin-listen {a}: without client certificates the admin listener listens on loopback only (127.0.0.1, ::1); add --admin-mtls (admins sign in with certificates from `lanyard-ca admin issue`), or reach it through an SSH tunnel"
            )));
        }
        None
    };
    let mtls = console.mtls;
    let console = crate::console::Console::open(auth, console)?;
    tasks.spawn(console.clone().keep_fresh(shutdown.clone()));
    tasks.spawn(http::server::serve_with(
        l,
        tls,
        crate::console::router(console),
        at.limits.clone(),
        shutdown.clone(),
    ));
    if mtls {
        tracing::info!(admin = %bound, "console at https://{bound}/ (admins present a certificate from `lanyard-ca admin issue`), metrics at https://{bound}/metrics");
    } else {
        tracing::info!(admin = %bound, "console at http://{bound}/ (sign in with `lanyard-ca admin token`), metrics at http://{bound}/metrics");
    }
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::publication_mismatch;
    use std::net::SocketAddr;

    fn at(s: &str) -> Option<SocketAddr> {
        s.parse().ok()
    }

    #[test]
    fn a_public_url_on_the_listeners_port_matches() {
        assert_eq!(publication_mismatch("http://127.0.0.1:8081", at("0.0.0.0:8081")), None);
        assert_eq!(publication_mismatch("http://ca.example.com", at("0.0.0.0:80")), None);
    }

    #[test]
    fn a_public_url_that_cannot_reach_the_listener_is_explained() {
        let w = publication_mismatch("http://ca.example.com", at("0.0.0.0:8080"));
        let w = w.unwrap_or_default();
        assert!(w.contains("port 80") && w.contains("--http-listen ADDR:80"), "{w}");
        let w = publication_mismatch("https://ca.example.com", at("0.0.0.0:443"));
        assert!(w.unwrap_or_default().contains("plain HTTP"));
        let w = publication_mismatch("http://ca.example.com:8081", None);
        assert!(w.unwrap_or_default().contains("--http-listen off"));
    }
}
