//! `lanyard run`: the long-running task. A loop over the pure renewal decision, waking on
//! a deadline, a change in the store or the policy file, a signal, or shutdown.
//!
//! Sleeps are cut into short slices and the wall clock is read again after each, because
//! timers do not run while a laptop is suspended: a device that slept past its renewal
//! time renews as soon as it wakes. READY=1 goes to systemd once the loop has made its
//! first decision (a device waiting for enrolment is up, not failing); WATCHDOG=1 while
//! the loop turns; STATUS= says what the agent holds or waits for. A device without a
//! usable credential enrols from `[enrol] token_file` when one is configured
//! ([`crate::token_file`]).

use crate::agent::Agent;
use crate::schedule::Decision;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The longest single sleep before the wall clock is read again.
const SLICE: Duration = Duration::from_secs(30);
pub use crate::proxy::SHUTDOWN_GRACE;
/// The shortest time between two check-ins asked for by the proxy.
const RECHECK_SPACING: Duration = Duration::from_secs(10);

/// Why the loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    Shutdown,
    /// SIGHUP: re-read the config and start again.
    Reload,
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    let _ = sd_notify::notify(states);
}

/// Watches the store, the state file, the local policy file and the enrolment token file;
/// sends a wake-up when one of them changes.
pub fn watch(agent: &Agent, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let mut paths = vec![agent.watch_path(), crate::state::path(agent.state_dir())];
    if let Some(p) = &agent.cfg.renewal.policy_file {
        paths.push(p.clone());
    }
    if let Some(p) = agent.cfg.enrol.file() {
        paths.push(p.to_path_buf());
    }
    let names: Vec<std::ffi::OsString> =
        paths.iter().filter_map(|p| p.file_name().map(|n| n.to_owned())).collect();
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && is_change(&ev, &names)
        {
            let _ = tx.try_send(());
        }
    })
    .map_err(|e| tracing::warn!(error = %e, "cannot watch files; changes apply at the next check"))
    .ok()?;
    let dirs: std::collections::BTreeSet<_> =
        paths.iter().filter_map(|p| p.parent()).filter(|d| d.exists()).collect();
    for dir in dirs {
        if let Err(e) = w.watch(dir, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(path = %dir.display(), error = %e, "cannot watch");
        }
    }
    Some(w)
}

/// Whether a watcher event is a change to one of the watched files. Reads are not: the
/// agent reads these files itself on every wake, and inotify reports each open, so a
/// watcher that woke on them would wake itself without end.
fn is_change(ev: &notify::Event, names: &[std::ffi::OsString]) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode};
    let change = match ev.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    };
    change && ev.paths.iter().any(|p| p.file_name().is_some_and(|n| names.iter().any(|w| w == n)))
}

/// What a daemon with this config serves, in one line for the start-up log; a warning
/// when it serves nothing (it then only renews, which is rarely what was meant).
pub fn describe_services(agent: &Agent) -> (String, Option<String>) {
    let mut parts: Vec<String> = agent
        .cfg
        .routes
        .iter()
        .map(|r| match &r.upstream {
            Some(u) => format!("proxy {} -> https://{}:{}", r.listen, u.host, u.port),
            None => format!("proxy {} (forward only)", r.listen),
        })
        .collect();
    if let Some(s) = &agent.cfg.status {
        parts.push(format!("status {s}"));
    }
    let config = agent
        .cfg
        .source
        .as_ref()
        .map_or_else(|| "the config file".to_owned(), |p| p.display().to_string());
    let warning = parts.is_empty().then(|| {
        format!(
            "no proxy routes and no status listener in {config}: this daemon only renews the certificate; add [[proxy.routes]] (listen, upstream) or [status] listen"
        )
    });
    (if parts.is_empty() { "nothing".to_owned() } else { parts.join(", ") }, warning)
}

/// Check-ins the proxy asks for (through [`crate::credential::CredentialView::request_recheck`])
/// when an upstream refused the device certificate: perhaps it was revoked, and the proxy
/// should say so. At most one every [`RECHECK_SPACING`]; the others are dropped.
#[derive(Debug)]
pub struct Rechecks {
    rx: mpsc::Receiver<()>,
    last: Option<tokio::time::Instant>,
}

impl Rechecks {
    pub fn new(rx: mpsc::Receiver<()>) -> Rechecks {
        Rechecks { rx, last: None }
    }

    /// The next request; `None` once no proxy can send one.
    pub async fn recv(&mut self) -> Option<()> {
        self.rx.recv().await
    }

    /// Checks in with the CA unless the last recheck was less than [`RECHECK_SPACING`] ago;
    /// what it learns (revoked, policy) is published to the proxy by the agent.
    pub async fn check_in(&mut self, agent: &Agent) {
        if self.last.is_some_and(|t| t.elapsed() < RECHECK_SPACING) {
            return;
        }
        self.last = Some(tokio::time::Instant::now());
        if let Err(e) = agent.check_in().await {
            tracing::debug!(error = %e, "check-in after an upstream refusal failed");
        }
    }
}

/// What one turn of the renewal loop asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// A renewal was attempted: decide again at once.
    Again,
    /// Nothing to do for this long (at most [`SLICE`]), unless something wakes the loop.
    Wait(Duration),
}

/// The renewal side of `lanyard run`, one turn at a time: check in with the CA when due,
/// take the decision, renew or say how long to wait. The daemon turns it in its loop; the
/// fleet test turns thousands of them in one process (each device its own [`Agent`]).
#[derive(Debug, Default)]
pub struct Renewer {
    last_checkin: Option<time::OffsetDateTime>,
    announced: String,
    ready: bool,
    last_attempt: Option<time::OffsetDateTime>,
    token_file: crate::token_file::TokenFileEnrolment,
}

impl Renewer {
    /// When the last renewal attempt started (on the agent's clock).
    pub fn last_attempt(&self) -> Option<time::OffsetDateTime> {
        self.last_attempt
    }

    pub async fn turn(&mut self, agent: &Agent) -> Turn {
        if !self.ready {
            // Up, before any call to the CA: systemd may go on. Whether a valid certificate
            // is held is what STATUS= (and `lanyard status`) says; a device waiting for its
            // first enrolment, or a CA slow to answer, must not fail its start.
            notify(&[sd_notify::NotifyState::Ready]);
            self.ready = true;
        }
        let now = agent.clock.now();
        let enrolled = agent.current().is_some();
        let checkin_due =
            self.last_checkin.is_none_or(|t| now - t >= agent.cfg.renewal.check_interval);
        if enrolled && checkin_due {
            self.last_checkin = Some(now);
            if let Err(e) = agent.check_in().await {
                tracing::warn!(error = %e, "check-in with the CA failed; keeping the current policy");
            }
        }
        let st = agent.state();
        let decision = agent.decide(&st);
        let mut wait = SLICE;
        match &decision {
            Decision::RenewNow(reason) => {
                notify(&[sd_notify::NotifyState::Status("renewing")]);
                tracing::info!(reason, "renewing");
                self.last_attempt = Some(agent.clock.now());
                if let Err(e) = agent.renew().await {
                    let left = agent
                        .current()
                        .map(|c| (c.info.not_after - agent.clock.now()).whole_seconds());
                    tracing::warn!(error = %e, retryable = e.retryable(), seconds_until_expiry = left.unwrap_or_default(), "renewal failed; keeping the current certificate");
                }
                return Turn::Again;
            }
            Decision::SleepUntil { at, backing_off } => {
                let line = format!(
                    "{} until {at}",
                    if *backing_off { "backing off" } else { "next renewal" }
                );
                if line != self.announced {
                    if let Some(c) = agent.current() {
                        tracing::info!(identity = %c.info.identity, serial = %c.info.serial, not_after = %lanyard_proto::timefmt::Rfc3339Time(c.info.not_after), next_renewal = %lanyard_proto::timefmt::Rfc3339Time(*at), backing_off, "waiting");
                    }
                    notify(&[sd_notify::NotifyState::Status(&line)]);
                    self.announced = line;
                }
                let until = (*at - now).max(time::Duration::ZERO);
                wait = wait.min(until.try_into().unwrap_or(SLICE));
            }
            Decision::NeedsEnrolment(msg) => {
                let mut msg = msg.clone();
                if let Some(path) = agent.cfg.enrol.file() {
                    use crate::token_file::Next;
                    match self.token_file.step(agent, path).await {
                        Next::Enrolled => return Turn::Again,
                        Next::RetryAt(at) => {
                            let until = (at - agent.clock.now()).max(time::Duration::ZERO);
                            wait = wait.min(until.try_into().unwrap_or(SLICE));
                            msg = format!(
                                "enrolling with the token file {}: next try at {}",
                                path.display(),
                                lanyard_proto::timefmt::rfc3339(at)
                            );
                        }
                        Next::Idle(why) => msg = why,
                    }
                }
                if msg != self.announced {
                    tracing::warn!(action = %msg, "waiting for enrolment");
                    notify(&[sd_notify::NotifyState::Status(&msg)]);
                    self.announced = msg;
                }
            }
        }
        Turn::Wait(wait)
    }
}

pub async fn run(agent: Arc<Agent>, shutdown: CancellationToken) -> Exit {
    let tasks = tokio_util::task::TaskTracker::new();
    let (serving, warning) = describe_services(&agent);
    tracing::info!(serving = %serving, "lanyard daemon starting");
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }
    if let Some(addr) = agent.cfg.status.clone() {
        let (a, s) = (agent.clone(), shutdown.clone());
        tasks.spawn(async move {
            if let Err(e) = crate::status_server::serve(a, addr.clone(), s).await {
                tracing::error!(listen = %addr, error = %e, "status endpoint failed");
            }
        });
    }
    let (recheck, rx) = crate::credential::recheck_channel();
    let mut rechecks = Rechecks::new(rx);
    for route in agent.cfg.routes.clone() {
        let (view, metrics, s) =
            (agent.view(recheck.clone()), agent.metrics.clone(), shutdown.clone());
        tasks.spawn(async move {
            if let Err(e) = crate::proxy::serve_route(view, metrics, route.clone(), s).await {
                tracing::error!(listen = %route.listen, error = %e, "proxy listener failed");
            }
        });
    }

    let (tx, mut rx) = mpsc::channel::<()>(8);
    let _watcher = watch(&agent, tx);
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
    let mut renewer = Renewer::default();

    let exit = loop {
        if let Some(d) = watchdog
            && !d.is_zero()
        {
            notify(&[sd_notify::NotifyState::Watchdog]);
        }
        let mut wait = match renewer.turn(&agent).await {
            Turn::Again => continue,
            Turn::Wait(w) => w,
        };
        if let Some(d) = watchdog
            && !d.is_zero()
        {
            wait = wait.min(d);
        }
        tokio::select! {
            _ = shutdown.cancelled() => break Exit::Shutdown,
            _ = tokio::time::sleep(wait) => {}
            Some(()) = rx.recv() => {
                // Another process renewed or enrolled, or the policy or token file changed.
                tracing::debug!("a watched file changed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                while rx.try_recv().is_ok() {}
                // The state and policy files are read into memory here, not on every
                // tick; the keystore call runs off the async workers.
                match agent.reload_all().await {
                    Ok(true) => tracing::info!("credential changed in the store; now in use"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "could not reload the credential"),
                }
            }
            Some(()) = rechecks.recv() => rechecks.check_in(&agent).await,
            Some(_) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                tracing::info!("SIGHUP: reloading the configuration");
                notify(&[sd_notify::NotifyState::Reloading]);
                break Exit::Reload;
            }
        }
    };
    notify(&[sd_notify::NotifyState::Stopping]);
    shutdown.cancel();
    tasks.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tasks.wait()).await.is_err() {
        tracing::warn!("listeners did not stop within the shutdown grace");
    }
    exit
}

#[cfg(test)]
mod tests {
    use super::is_change;
    use notify::event::{
        AccessKind, AccessMode, CreateKind, DataChange, EventKind, ModifyKind, RenameMode,
    };
    use std::path::PathBuf;

    fn event(kind: EventKind, path: &str) -> notify::Event {
        notify::Event::new(kind).add_path(PathBuf::from(path))
    }

    #[test]
    fn reads_and_other_files_do_not_wake_the_loop() {
        let names = vec!["agent-state.json".into(), "enrol.token".into()];
        let yes = [
            event(EventKind::Modify(ModifyKind::Data(DataChange::Any)), "/etc/lanyard/enrol.token"),
            event(EventKind::Create(CreateKind::File), "/etc/lanyard/enrol.token"),
            event(EventKind::Access(AccessKind::Close(AccessMode::Write)), "/s/agent-state.json"),
            event(EventKind::Modify(ModifyKind::Name(RenameMode::To)), "/s/agent-state.json"),
        ];
        for e in &yes {
            assert!(is_change(e, &names), "{e:?}");
        }
        let no = [
            event(EventKind::Access(AccessKind::Open(AccessMode::Any)), "/etc/lanyard/enrol.token"),
            event(EventKind::Access(AccessKind::Close(AccessMode::Read)), "/s/agent-state.json"),
            event(EventKind::Modify(ModifyKind::Data(DataChange::Any)), "/etc/lanyard/agent.toml"),
        ];
        for e in &no {
            assert!(!is_change(e, &names), "{e:?}");
        }
    }
}
