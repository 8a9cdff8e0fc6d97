//! `lanyard`: command line of the device agent. Commands parse, call the library, print.
#![forbid(unsafe_code)]

#[cfg(feature = "docs")]
use clap::CommandFactory;
use clap::{Parser, Subcommand};
use lanyard_agent::agent::{Agent, CredentialState, EnrolArgs};
use lanyard_agent::clock::SystemClock;
use lanyard_agent::config::{Config, ListenAddr, Route, Upstream};
use lanyard_agent::daemon::{self, Exit};
use lanyard_agent::error::AgentError;
use lanyard_agent::schedule::Decision;
use lanyard_keystore::StoreKind;
use lanyard_proto::timefmt::rfc3339;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

#[derive(Parser)]
#[command(
    name = "lanyard",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("LANYARD_COMMIT"), ")"),
    about = "Lanyard device agent: a client certificate per device, renewed before expiry, and a local mTLS proxy"
)]
struct Cli {
    /// Config file (default: /etc/lanyard/agent.toml for root, else $XDG_CONFIG_HOME/lanyard/agent.toml).
    #[arg(long, global = true, env = "LANYARD_CONFIG")]
    config: Option<PathBuf>,
    /// Override [store] backend: file | keyring | kernel-keyring.
    #[arg(long, global = true)]
    store: Option<StoreKind>,
    /// Override [store] path (state directory).
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
    /// More logs: -v for Lanyard's debug logs, -vv for the HTTP and TLS libraries' too.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate a key on this device and enrol with the CA using a one-time token.
    Enrol {
        /// The CA's URL, e.g. https://ca.example.com:8443 (default: [ca] url in the config).
        #[arg(long)]
        ca: Option<String>,
        /// The enrolment token (or --token-file, or LANYARD_TOKEN).
        #[arg(long, env = "LANYARD_TOKEN", hide_env_values = true, conflicts_with = "token_file")]
        token: Option<String>,
        /// A file holding the enrolment token.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// The identity, when the token does not carry it.
        #[arg(long, conflicts_with = "identity_template")]
        identity: Option<String>,
        /// With a batch claim: the claim's identity template (e.g.
        /// 'sensor-{id}.fleet.example.com'); `{id}` becomes this device's ID.
        #[arg(long)]
        identity_template: Option<String>,
        /// With --identity-template: a file holding this device's serial number (default: a
        /// hash of /etc/machine-id).
        #[arg(long, requires = "identity_template")]
        device_id_file: Option<PathBuf>,
        /// Enrol with the factory certificate the manufacturer installed (PEM; IDevID)
        /// instead of a token: the CA names the device from it.
        #[arg(long, requires = "factory_key", conflicts_with_all = ["token", "token_file", "identity", "identity_template"])]
        factory_cert: Option<PathBuf>,
        /// The factory certificate's key (PEM).
        #[arg(long, requires = "factory_cert")]
        factory_key: Option<PathBuf>,
        /// Trust the CA's TLS certificate through this PEM bundle.
        #[arg(long, conflicts_with = "ca_fingerprint")]
        ca_bundle: Option<PathBuf>,
        /// Trust the CA whose root certificate has this SHA-256 fingerprint (64 hex digits;
        /// `lanyard-ca ca fingerprint` prints it).
        #[arg(long)]
        ca_fingerprint: Option<String>,
        /// Enrol even if a valid certificate is already stored.
        #[arg(long)]
        force: bool,
    },
    /// Run the daemon: renew on schedule, serve status and the configured proxy routes.
    Run,
    /// Show the credential's state.
    Status {
        /// JSON instead of one line per field.
        #[arg(long)]
        json: bool,
        /// Ask the CA first (policy, revocation).
        #[arg(long)]
        refresh: bool,
    },
    /// Renew now if due (or always, with --force).
    Renew {
        /// Renew even if the schedule says it is not due.
        #[arg(long)]
        force: bool,
    },
    /// Run one proxy route in the foreground.
    Proxy {
        /// Loopback address or unix:/path to accept plain HTTP on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// https://host[:port]
        #[arg(long)]
        upstream: String,
        /// Extra CA certificates (PEM) to trust for the upstream.
        #[arg(long)]
        upstream_ca: Option<PathBuf>,
        /// Also accept forward-proxy requests for these hosts (`*.domain` allowed).
        #[arg(long = "allow")]
        allow: Vec<String>,
    },
    /// Write the certificate chain and key as PEM files (for curl --cert/--key). A key in
    /// a TPM or token cannot be exported: --cert alone works for every store.
    Export {
        /// Where to write the certificate chain (PEM, leaf first).
        #[arg(long)]
        cert: PathBuf,
        /// Where to write the private key (PEM, 0600); refused for a hardware store.
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Print shell completions.
    #[cfg(feature = "docs")]
    #[command(hide = true)]
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    #[cfg(feature = "docs")]
    #[command(hide = true)]
    Manpage,
}

use lanyard_proto::outln;

fn load_config(cli: &Cli) -> Result<Config, AgentError> {
    let mut cfg = Config::load(cli.config.as_deref())?;
    if let Some(s) = cli.store {
        if s != cfg.store.backend {
            // A hardware store's device comes from the config file; the TPM has a default.
            cfg.store.hardware = match s {
                lanyard_keystore::StoreKind::Tpm => {
                    Some(lanyard_agent::config::HardwareConfig::Tpm {
                        tcti: lanyard_agent::config::DEFAULT_TCTI.to_owned(),
                    })
                }
                lanyard_keystore::StoreKind::Pkcs11 => {
                    return Err(AgentError::Usage(
                        "--store pkcs11 needs the token: set backend = \"pkcs11\", module, token_label and pin_file in [store] of the config file".into(),
                    ));
                }
                _ => None,
            };
        }
        cfg.store.backend = s;
    }
    if let Some(d) = &cli.state_dir {
        cfg.store.path = d.clone();
    }
    Ok(cfg)
}

fn open(cli: &Cli) -> Result<Agent, AgentError> {
    Agent::open(load_config(cli)?, Arc::new(SystemClock))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    lanyard_agent::logging::init(cli.verbose);
    let rt =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("lanyard: cannot start the runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lanyard: {e}");
            // 2 for what the user gave (as clap does for bad flags), 1 for what happened.
            match e {
                AgentError::Usage(_) | AgentError::Config(_) | AgentError::MalformedToken(_) => {
                    ExitCode::from(2)
                }
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn terminate_token() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut term), Ok(mut int)) =
            (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        {
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        } else {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutting down");
        t.cancel();
    });
    token
}

async fn run(cli: Cli) -> Result<ExitCode, AgentError> {
    match &cli.cmd {
        Cmd::Enrol {
            ca,
            token,
            token_file,
            identity,
            identity_template,
            device_id_file,
            factory_cert,
            factory_key,
            ca_bundle,
            ca_fingerprint,
            force,
        } => {
            let agent = open(&cli)?;
            // Without --token or --token-file, the config's [enrol] token_file (or claim_file),
            // removed after success as `lanyard run` would.
            let configured =
                agent.cfg.enrol.file().filter(|_| token.is_none() && token_file.is_none());
            let identity = match (identity, identity_template) {
                (Some(i), _) => Some(i.clone()),
                (None, Some(t)) => {
                    let id = lanyard_agent::device_id::read(device_id_file.as_deref())
                        .map_err(AgentError::Usage)?;
                    Some(lanyard_proto::claim::identity(t, &id).map_err(AgentError::Usage)?)
                }
                (None, None) => agent.cfg.enrol.identity().map_err(AgentError::Usage)?,
            };
            // A factory certificate: given, or configured (method "factory-cert").
            let factory = match (factory_cert, factory_key) {
                (Some(cert), Some(key)) => {
                    Some(lanyard_agent::agent::FactoryCert { cert: cert.clone(), key: key.clone() })
                }
                _ if token.is_none() && token_file.is_none() => agent.cfg.enrol.factory.clone(),
                _ => None,
            };
            let token = match (token, token_file.as_ref().or(configured)) {
                _ if factory.is_some() => Zeroizing::new(String::new()),
                (Some(t), _) => Zeroizing::new(t.trim().to_owned()),
                (None, Some(f)) => lanyard_agent::token_file::read(f)?.ok_or_else(|| {
                    AgentError::Usage(format!("{} holds no enrolment token", f.display()))
                })?,
                (None, None) => {
                    return Err(AgentError::Usage(
                        "give the enrolment token with --token, --token-file or LANYARD_TOKEN (or set [enrol] token_file)"
                            .into(),
                    ));
                }
            };
            let info = agent
                .enrol(EnrolArgs {
                    ca_url: ca.clone(),
                    token,
                    identity,
                    ca_bundle: ca_bundle.clone(),
                    ca_fingerprint: ca_fingerprint.clone(),
                    force: *force,
                    once: false,
                    factory: factory.clone(),
                })
                .await?;
            if let Some(f) = configured.filter(|_| factory.is_none()) {
                lanyard_agent::token_file::consume(f);
            }
            outln!(
                "enrolled as {} (serial {}, valid until {}); key in {}",
                info.identity,
                info.serial,
                rfc3339(info.not_after),
                agent.store_description()
            );
        }
        Cmd::Run => loop {
            let agent = Arc::new(open(&cli)?);
            let terminate = terminate_token();
            match daemon::run(agent, terminate.child_token()).await {
                Exit::Shutdown => break,
                Exit::Reload => continue,
            }
        },
        Cmd::Status { json, refresh } => {
            let agent = open(&cli)?;
            if *refresh
                && agent.current().is_some()
                && let Err(e) = agent.check_in().await
            {
                eprintln!("lanyard: could not reach the CA: {e}");
            }
            let s = agent.status_checked().await;
            if *json {
                outln!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            } else {
                outln!(
                    "state:         {}",
                    serde_json::to_value(s.state)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                );
                let show = |k: &str, v: Option<String>| {
                    outln!("{k:<14} {}", v.unwrap_or_else(|| "-".into()))
                };
                show("identity:", s.identity.clone());
                show("serial:", s.serial.clone());
                show("not after:", s.not_after.map(rfc3339));
                show("next renewal:", s.next_renewal.map(rfc3339));
                show("store:", Some(s.store.clone()));
                show("key:", s.key_protection.clone());
                if let Some(p) = &s.key_problem {
                    outln!("key problem:   {p}");
                }
                show("CA:", s.ca_url.clone());
                show("last error:", s.last_error.clone());
                if let Some(a) = &s.action {
                    outln!("action:        {a}");
                }
            }
            return Ok(if matches!(s.state, CredentialState::Valid | CredentialState::Renewing) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        Cmd::Renew { force } => {
            let agent = open(&cli)?;
            let st = agent.state();
            if !*force {
                match agent.decide(&st) {
                    Decision::RenewNow(_) => {}
                    Decision::SleepUntil { at, .. } => {
                        outln!("not due until {}; use --force to renew now", rfc3339(at));
                        return Ok(ExitCode::SUCCESS);
                    }
                    Decision::NeedsEnrolment(m) => return Err(AgentError::Usage(m)),
                }
            }
            let info = agent.renew().await?;
            outln!("renewed: serial {}, valid until {}", info.serial, rfc3339(info.not_after));
        }
        Cmd::Proxy { listen, upstream, upstream_ca, allow } => {
            let mut cfg = load_config(&cli)?;
            let route = Route {
                listen: ListenAddr::parse(listen).map_err(AgentError::Usage)?,
                upstream: Some(Upstream::parse(upstream).map_err(AgentError::Usage)?),
                upstream_ca: upstream_ca.clone(),
                forward_allow: allow.iter().map(|h| h.to_ascii_lowercase()).collect(),
                socket_mode: 0o600,
                x_forwarded_for: false,
                request_timeout: Duration::from_secs(300),
                idle_timeout: Duration::from_secs(90),
                hosts: Vec::new(),
                max_connections: 1024,
            };
            if !route.listen.is_loopback() {
                return Err(AgentError::Usage(format!(
                    "--listen {listen}: not a loopback address; whoever reaches it borrows this device's identity (configure allow_non_loopback in a route to accept that)"
                )));
            }
            cfg.routes = vec![route.clone()];
            let agent = Arc::new(Agent::open(cfg, Arc::new(SystemClock))?);
            if agent.current().is_none() {
                eprintln!(
                    "lanyard: warning: not enrolled yet; the proxy answers 503 until `lanyard enrol` succeeds"
                );
            }
            let terminate = terminate_token();
            let (recheck, rechecks) = lanyard_agent::credential::recheck_channel();
            let (view, metrics) = (agent.view(recheck), agent.metrics.clone());
            let watcher = watch_store(agent, daemon::Rechecks::new(rechecks), terminate.clone());
            lanyard_agent::proxy::serve_route(view, metrics, route, terminate).await?;
            watcher.abort();
        }
        Cmd::Export { cert, key } => {
            let agent = open(&cli)?;
            let cur = agent.current().ok_or(AgentError::NotEnrolled)?;
            // Refused before anything is written: no half export.
            let key_pem = match key {
                Some(_) => Some(cur.key_pem().map_err(AgentError::Usage)?),
                None => None,
            };
            write_private(cert, cur.chain_pem().as_bytes())?;
            match (key, key_pem) {
                (Some(key), Some(key_pem)) => {
                    write_private(key, key_pem.as_bytes())?;
                    eprintln!(
                        "lanyard: wrote {} and {}. The exported key is outside the keystore's protection: delete it when done, and it will not follow renewals (serial {}, valid until {}).",
                        cert.display(),
                        key.display(),
                        cur.info.serial,
                        rfc3339(cur.info.not_after)
                    );
                }
                _ => eprintln!(
                    "lanyard: wrote {} (serial {}, valid until {}); it will not follow renewals.",
                    cert.display(),
                    cur.info.serial,
                    rfc3339(cur.info.not_after)
                ),
            }
        }
        #[cfg(feature = "docs")]
        Cmd::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "lanyard", &mut std::io::stdout());
        }
        #[cfg(feature = "docs")]
        Cmd::Manpage => {
            clap_mangen::Man::new(Cli::command())
                .render(&mut std::io::stdout())
                .map_err(AgentError::io("writing the man page"))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// In foreground proxy mode, pick up renewals made by another process (`lanyard renew`,
/// the daemon): reload when the store changes, and every few seconds as a fallback.
fn watch_store(
    agent: Arc<Agent>,
    mut rechecks: daemon::Rechecks,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(4);
        let _watcher = daemon::watch(&agent, tx);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = rx.recv() => { tokio::time::sleep(Duration::from_millis(50)).await; while rx.try_recv().is_ok() {} }
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                Some(()) = rechecks.recv() => { rechecks.check_in(&agent).await; continue; }
            }
            match agent.reload_all().await {
                Ok(true) => {
                    tracing::info!("credential changed in the store; new handshakes use it")
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "could not reload the credential"),
            }
        }
    })
}

fn write_private(path: &std::path::Path, data: &[u8]) -> Result<(), AgentError> {
    lanyard_agent::fsutil::write_atomic(path, data, 0o600)
}
