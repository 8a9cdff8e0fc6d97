//! `lanyard-fleet`: the real-traffic fleet test.
//!
//! One process plays thousands of devices against a real `lanyard-ca serve
//! --max-issuance-rate R`: each device is a real [`Agent`] (its own key, file store and
//! state, real EST over TLS) turned by the daemon's own renewal loop ([`Renewer`]), with
//! lifetimes compressed to minutes. Devices enrol together from bulk tokens; then the
//! group's policy pushes "rotate everything issued before now", and the CA is killed and
//! restarted after an outage. At the end it checks, and exits non-zero when one fails:
//! - every device holds a valid certificate (not expired, the CA's newest for it, active);
//! - no device's certificate ever expired while it ran;
//! - the CA never issued more than its rate in any one-second window of its audit trail;
//! - every 503 the devices saw carried `Retry-After`, and no device retried before it.
//!
//! (Inside one `lanyard enrol`, the agent retries a busy CA itself, after its
//! `Retry-After`; those retries are the agent's own and not seen here. Every renewal attempt
//! is: the daemon's loop makes one per turn.)
//!
//! `cargo run -p lanyard-e2e --bin lanyard-fleet -- --help` for the knobs; the CI form is
//! `tests/tests/fleet.rs`, the full run is recorded in `docs/BENCHMARKS.md` ("Fleet").
#![forbid(unsafe_code)]

use clap::Parser;
use lanyard_agent::agent::{Agent, EnrolArgs};
use lanyard_agent::clock::SystemClock;
use lanyard_agent::config::Config;
use lanyard_agent::daemon::{Renewer, Turn};
use lanyard_agent::error::AgentError;
use lanyard_proto::duration;
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

#[derive(Parser, Debug, Clone)]
#[command(
    about = "Thousands of real agents renewing against a real, rate-limited lanyard-ca serve"
)]
struct Args {
    /// Devices (each a real agent with its own key, store and state).
    #[arg(long, default_value_t = 2000)]
    devices: usize,
    /// Certificate lifetime (the group's policy; 5m at least).
    #[arg(long, default_value = "10m", value_parser = duration::parse)]
    lifetime: Duration,
    /// How long the fleet runs after the first enrolment starts.
    #[arg(long, default_value = "15m", value_parser = duration::parse)]
    duration: Duration,
    /// `lanyard-ca serve --max-issuance-rate`: issuances per second.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// `lanyard-ca serve --max-issuance-queue`: the longest wait for a slot before 503.
    #[arg(long, default_value = "2s", value_parser = duration::parse)]
    queue: Duration,
    /// The agents' `[renewal] check_interval`.
    #[arg(long, default_value = "60s", value_parser = duration::parse)]
    checkin: Duration,
    /// Devices start enrolling at random within this window from the start.
    #[arg(long, default_value = "30s", value_parser = duration::parse)]
    enrol_within: Duration,
    /// When the group's policy pushes "rotate everything issued before now".
    #[arg(long, default_value = "5m", value_parser = duration::parse)]
    rotate_at: Duration,
    /// When the CA is killed (SIGKILL)...
    #[arg(long, default_value = "9m", value_parser = duration::parse)]
    outage_at: Duration,
    /// ...and for how long it stays down before it is started again.
    #[arg(long, default_value = "60s", value_parser = duration::parse)]
    outage_for: Duration,
    /// The policy's retry floor and cap.
    #[arg(long, default_value = "5s", value_parser = duration::parse)]
    retry_floor: Duration,
    #[arg(long, default_value = "60s", value_parser = duration::parse)]
    retry_cap: Duration,
    /// Keep the CA and the devices here (default: a temporary directory, removed).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Print the figures as one JSON object.
    #[arg(long)]
    json: bool,
}

/// What the devices share with the conductor.
#[derive(Default)]
struct Shared {
    /// Per device: when it obtained its current certificate (unix seconds; 0 before).
    obtained: Vec<AtomicI64>,
    /// Devices whose last attempt (enrolment or renewal) failed.
    failing: AtomicUsize,
    enrolled: AtomicUsize,
    renewals: AtomicU64,
    attempts: AtomicU64,
    busy: AtomicU64,
    unreachable: AtomicU64,
    other_failures: AtomicU64,
    violations: Mutex<Vec<String>>,
    /// Per device, the serial it holds at the end.
    serials: Mutex<HashMap<String, String>>,
}

impl Shared {
    fn violation(&self, v: String) {
        if let Ok(mut l) = self.violations.lock() {
            if l.len() < 50 {
                eprintln!("VIOLATION: {v}");
            }
            l.push(v);
        }
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lanyard-fleet: cannot start the runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match rt.block_on(run(args)) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("lanyard-fleet: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

/// The `lanyard-ca` this run uses: a copy taken at the start, so that a build replacing
/// the one in the target directory (another test step) cannot pull it away mid-run.
static CA_BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

fn ca_bin() -> PathBuf {
    CA_BIN.get().cloned().unwrap_or_else(lanyard_e2e::bins::lanyard_ca)
}

fn lanyard_ca(args: &[&str], dir: &Path) -> Result<String, String> {
    let out = Command::new(ca_bin())
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .map_err(|e| format!("lanyard-ca {args:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "lanyard-ca {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| format!("lanyard-ca {args:?}: {e}"))
}

/// `lanyard-ca serve` on fixed ports (devices keep its URL across the outage), with a
/// connection cap per source that fits a fleet behind one loopback address.
fn start_ca(dir: &Path, https: u16, http: u16, a: &Args, log: &Path) -> Result<CaProcess, String> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let err_file = log_file.try_clone().map_err(|e| e.to_string())?;
    let child = CaProcess(
        Command::new(ca_bin())
            .args(["serve", "--dir"])
            .arg(dir)
            .args(["--listen", &format!("127.0.0.1:{https}")])
            .args(["--http-listen", &format!("127.0.0.1:{http}")])
            .args(["--max-issuance-rate", &a.rate.to_string()])
            .args(["--max-issuance-queue", &a.queue.as_secs_f64().to_string()])
            .args(["--max-connections-per-source", "4096"])
            .env("LANYARD_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(err_file)
            .spawn()
            .map_err(|e| format!("starting lanyard-ca serve: {e}"))?,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = format!("127.0.0.1:{http}");
    while lanyard_e2e::ca::http_get_status(&addr, "/healthz") != Some(200) {
        if Instant::now() > deadline {
            return Err(format!(
                "lanyard-ca serve did not answer /healthz within 30 s (log: {})",
                log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(child)
}

/// The CA process, killed (and reaped) however the run ends.
struct CaProcess(Child);

impl Drop for CaProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn unix(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

/// The wall clock: the devices' (they run on `SystemClock`) and the CA's.
fn now() -> OffsetDateTime {
    use lanyard_agent::clock::Clock;
    SystemClock.now()
}

/// One device: enrol (obeying the CA's `Retry-After`), then the daemon's renewal loop until
/// `end`, with every 503 and every retry checked.
async fn device(
    i: usize,
    agent: Agent,
    token: String,
    start_after: Duration,
    end: Instant,
    shared: Arc<Shared>,
) {
    tokio::time::sleep(start_after).await;
    let mut failing = false;
    let set_failing = |f: bool, failing: &mut bool| {
        if f != *failing {
            if f {
                shared.failing.fetch_add(1, Ordering::SeqCst);
            } else {
                shared.failing.fetch_sub(1, Ordering::SeqCst);
            }
            *failing = f;
        }
    };
    let mut not_before = now();
    loop {
        if Instant::now() >= end {
            shared.violation(format!("device {i} never enrolled"));
            return;
        }
        if now() < not_before {
            shared.violation(format!("device {i} retried its enrolment before Retry-After"));
        }
        let args = EnrolArgs {
            ca_url: None,
            token: token.clone().into(),
            identity: None,
            ca_bundle: None,
            ca_fingerprint: None,
            force: false,
            // Every attempt is this loop's, so each is checked against Retry-After.
            once: true,
            factory: None,
        };
        shared.attempts.fetch_add(1, Ordering::Relaxed);
        match agent.enrol(args).await {
            Ok(_) => break,
            Err(AgentError::Refused { status: 503, retry_after, .. }) => {
                shared.busy.fetch_add(1, Ordering::Relaxed);
                set_failing(true, &mut failing);
                let Some(ra) = retry_after else {
                    shared.violation(format!(
                        "device {i}: a 503 to its enrolment had no Retry-After"
                    ));
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                };
                not_before = now() + ra;
                tokio::time::sleep(ra.min(end.saturating_duration_since(Instant::now()))).await;
            }
            Err(e) if e.retryable() => {
                shared.unreachable.fetch_add(1, Ordering::Relaxed);
                set_failing(true, &mut failing);
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Err(e) => {
                shared.violation(format!("device {i} could not enrol: {e}"));
                return;
            }
        }
    }
    shared.enrolled.fetch_add(1, Ordering::SeqCst);
    set_failing(false, &mut failing);
    shared.obtained[i].store(unix(now()), Ordering::SeqCst);

    let mut renewer = Renewer::default();
    let mut expired_seen = false;
    while Instant::now() < end {
        let before = agent.state();
        let held_until = agent.current().map(|c| c.info.not_after);
        if let Some(c) = agent.current()
            && now() > c.info.not_after
            && !expired_seen
        {
            expired_seen = true;
            shared.violation(format!(
                "device {i}: certificate {} expired while the device ran",
                c.info.serial
            ));
        }
        match renewer.turn(&agent).await {
            Turn::Again => {
                shared.attempts.fetch_add(1, Ordering::Relaxed);
                let after = agent.state();
                if before.failures > 0
                    && let (Some(rnb), Some(at)) = (before.retry_not_before, renewer.last_attempt())
                    && at < rnb
                {
                    shared.violation(format!(
                        "device {i} retried at {at} before the CA's Retry-After ({rnb})"
                    ));
                }
                if after.failures == 0 {
                    // A renewal that waited (in the CA's queue, say) past the old
                    // certificate's expiry left the device without a valid one meanwhile.
                    if let (Some(exp), Some(got)) = (held_until, after.last_renewal)
                        && got > exp
                        && !expired_seen
                    {
                        expired_seen = true;
                        shared.violation(format!(
                            "device {i}: renewed at {got}, after its certificate expired at {exp}"
                        ));
                    }
                    shared.renewals.fetch_add(1, Ordering::Relaxed);
                    if let Some(t) = after.last_renewal {
                        shared.obtained[i].store(unix(t), Ordering::SeqCst);
                    }
                    set_failing(false, &mut failing);
                } else {
                    set_failing(true, &mut failing);
                    match after.last_error_code.as_deref() {
                        Some("busy") => {
                            shared.busy.fetch_add(1, Ordering::Relaxed);
                            if after.retry_not_before.is_none() {
                                shared.violation(format!(
                                    "device {i}: a 503 busy had no Retry-After"
                                ));
                            }
                        }
                        None => {
                            shared.unreachable.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(code) => {
                            shared.other_failures.fetch_add(1, Ordering::Relaxed);
                            shared.violation(format!(
                                "device {i}: renewal refused ({code}): {}",
                                after.last_error.unwrap_or_default()
                            ));
                        }
                    }
                }
            }
            Turn::Wait(w) => {
                let left = end.saturating_duration_since(Instant::now());
                tokio::time::sleep(w.min(left)).await;
            }
        }
    }
    if let Some(c) = agent.current()
        && let Ok(mut s) = shared.serials.lock()
    {
        s.insert(c.info.identity.clone(), c.info.serial.clone());
        if c.info.not_after <= now() {
            shared.violation(format!("device {i} ends with an expired certificate"));
        }
    }
}

async fn run(args: Args) -> Result<bool, String> {
    // Thousands of devices hold sockets and files at once: the soft limit goes to the hard.
    lanyard_e2e::cmd::raise_fd_limit(u64::MAX);
    let tmp;
    let work = match &args.work {
        Some(w) => {
            std::fs::create_dir_all(w).map_err(|e| format!("{}: {e}", w.display()))?;
            w.clone()
        }
        None => {
            tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
            tmp.path().to_owned()
        }
    };
    let bin = work.join("lanyard-ca");
    std::fs::copy(lanyard_e2e::bins::lanyard_ca(), &bin)
        .map_err(|e| format!("copying lanyard-ca to {}: {e}", bin.display()))?;
    let _ = CA_BIN.set(bin);
    let ca_dir = work.join("ca");
    let secs = |d: Duration| format!("{}s", d.as_secs());
    lanyard_ca(&["init"], &ca_dir)?;
    lanyard_ca(
        &[
            "policy",
            "set",
            "--lifetime",
            &secs(args.lifetime),
            "--retry-floor",
            &secs(args.retry_floor),
            "--retry-cap",
            &secs(args.retry_cap),
        ],
        &ca_dir,
    )?;
    let csv = lanyard_ca(
        &[
            "token",
            "create",
            "--count",
            &args.devices.to_string(),
            "--identity-template",
            "dev-{seq:05}.fleet.test",
            "--ttl",
            "24h",
        ],
        &ca_dir,
    )?;
    let tokens: Vec<(String, String)> = csv
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split(',');
            Some((f.next()?.to_owned(), f.next()?.to_owned()))
        })
        .collect();
    if tokens.len() != args.devices {
        return Err(format!("token create made {} tokens, not {}", tokens.len(), args.devices));
    }
    let (https, http) = (lanyard_e2e::ca::free_port(), lanyard_e2e::ca::free_port());
    let log = work.join("serve.log");
    let mut ca = start_ca(&ca_dir, https, http, &args, &log)?;

    let shared = Arc::new(Shared {
        obtained: (0..args.devices).map(|_| AtomicI64::new(0)).collect(),
        ..Default::default()
    });
    let t0 = Instant::now();
    let started = now();
    let end = t0 + args.duration;
    let bundle = ca_dir.join("ca-bundle.pem");
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (_, token)) in tokens.into_iter().enumerate() {
        let dir = work.join("devices").join(format!("{i:05}"));
        // A device's store is its own: mode 0700, as the agent requires.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let toml = format!(
            "[ca]\nurl = \"https://127.0.0.1:{https}\"\nca_bundle = \"{}\"\ntimeout = \"30s\"\n\n[store]\nbackend = \"file\"\npath = \"{}\"\n\n[renewal]\ncheck_interval = \"{}\"\n",
            bundle.display(),
            dir.display(),
            secs(args.checkin),
        );
        let cfg = Config::parse(&toml, None).map_err(|e| format!("device config: {e}"))?;
        let agent =
            Agent::open(cfg, Arc::new(SystemClock)).map_err(|e| format!("device {i}: {e}"))?;
        let start_after = args.enrol_within.mul_f64(rand::random::<f64>());
        tasks.spawn(device(i, agent, token, start_after, end, shared.clone()));
    }

    // The conductor: the rotation push, the outage, and the figures they are measured by.
    let mut rotation_pushed: Option<OffsetDateTime> = None;
    let mut rotation_complete: Option<f64> = None;
    let mut outage: Option<(Instant, Option<Instant>)> = None;
    let mut outage_recovered: Option<f64> = None;
    let mut all_enrolled: Option<f64> = None;
    let mut max_failing = 0usize;
    // The CA's 503s (its /healthz counters), summed over its two lives.
    let (mut refused_before, mut refused_now) = (0u64, 0u64);
    let http_addr = format!("127.0.0.1:{http}");
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let a = http_addr.clone();
        if let Ok(Some((200, body))) =
            tokio::task::spawn_blocking(move || lanyard_e2e::ca::http_get(&a, "/healthz")).await
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&body)
            && let Some(r) = v["issuance"]["refused"].as_u64()
        {
            refused_now = r;
        }
        let el = t0.elapsed();
        let failing = shared.failing.load(Ordering::SeqCst);
        max_failing = max_failing.max(failing);
        if all_enrolled.is_none() && shared.enrolled.load(Ordering::SeqCst) == args.devices {
            all_enrolled = Some(el.as_secs_f64());
        }
        if rotation_pushed.is_none() && el >= args.rotate_at {
            let at = now();
            let d = ca_dir.clone();
            tokio::task::spawn_blocking(move || {
                lanyard_ca(&["policy", "set", "--rotate-issued-before", "now"], &d)
            })
            .await
            .map_err(|e| e.to_string())??;
            eprintln!("{:>6.0}s rotation pushed", el.as_secs_f64());
            rotation_pushed = Some(at);
        }
        if let Some(at) = rotation_pushed
            && rotation_complete.is_none()
            && shared.obtained.iter().all(|o| o.load(Ordering::SeqCst) >= unix(at))
        {
            let secs = (now() - at).as_seconds_f64();
            eprintln!("{:>6.0}s rotation complete in {secs:.0}s", el.as_secs_f64());
            rotation_complete = Some(secs);
        }
        match outage {
            None if el >= args.outage_at => {
                refused_before = refused_now;
                refused_now = 0;
                let _ = ca.0.kill();
                let _ = ca.0.wait();
                eprintln!("{:>6.0}s CA killed", el.as_secs_f64());
                outage = Some((Instant::now(), None));
            }
            Some((down, None)) if down.elapsed() >= args.outage_for => {
                let (d, l, a) = (ca_dir.clone(), log.clone(), args.clone());
                ca = tokio::task::spawn_blocking(move || start_ca(&d, https, http, &a, &l))
                    .await
                    .map_err(|e| e.to_string())??;
                eprintln!("{:>6.0}s CA restarted", t0.elapsed().as_secs_f64());
                outage = Some((down, Some(Instant::now())));
            }
            Some((_, Some(up))) if outage_recovered.is_none() && failing == 0 => {
                let secs = up.elapsed().as_secs_f64();
                eprintln!(
                    "{:>6.0}s every device recovered, {secs:.0}s after the restart",
                    el.as_secs_f64()
                );
                outage_recovered = Some(secs);
            }
            _ => {}
        }
    }
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r {
            shared.violation(format!("a device task failed: {e}"));
        }
    }

    // The CA's side: its newest certificate per device is the one the device holds, and it
    // is active; its audit trail never shows more issuances in a second than its rate.
    let certs: serde_json::Value =
        serde_json::from_str(&lanyard_ca(&["certs", "list", "--json"], &ca_dir)?)
            .map_err(|e| format!("certs list --json: {e}"))?;
    let serials = shared.serials.lock().map(|s| s.clone()).unwrap_or_default();
    // identity -> (serial, issued_at, revocation reason if revoked)
    let mut newest: HashMap<String, (String, String, String)> = HashMap::new();
    for c in certs.as_array().into_iter().flatten() {
        let (Some(id), Some(serial), Some(issued)) =
            (c["identity"].as_str(), c["serial"].as_str(), c["issued_at"].as_str())
        else {
            continue;
        };
        let status = match c["revocation"]["reason"].as_str() {
            Some(r) => format!("revoked: {r}"),
            None => "active".to_owned(),
        };
        let e = newest.entry(id.to_owned()).or_default();
        // RFC 3339 in UTC with whole seconds: text order is time order; the later serial
        // wins a tie only if it is the one the device holds.
        if issued > e.1.as_str() || (issued == e.1 && serials.get(id).is_some_and(|s| s == serial))
        {
            *e = (serial.to_owned(), issued.to_owned(), status);
        }
    }
    for (id, serial) in &serials {
        match newest.get(id) {
            Some((s, _, status)) if s == serial && status == "active" => {}
            Some((s, _, status)) => shared.violation(format!(
                "{id} holds {serial}, but the CA's newest for it is {s} ({status})"
            )),
            None => shared.violation(format!("{id}: the CA has no certificate")),
        }
    }
    if serials.len() != args.devices {
        shared.violation(format!(
            "{} of {} devices end with a certificate",
            serials.len(),
            args.devices
        ));
    }
    let audit: serde_json::Value =
        serde_json::from_str(&lanyard_ca(&["audit", "--limit", "100000000", "--json"], &ca_dir)?)
            .map_err(|e| format!("audit --json: {e}"))?;
    let mut per_second: BTreeMap<String, u64> = BTreeMap::new();
    for e in audit.as_array().into_iter().flatten() {
        if matches!(e["action"].as_str(), Some("issue" | "renew"))
            && let Some(at) = e["at"].as_str()
        {
            *per_second.entry(at.to_owned()).or_default() += 1;
        }
    }
    let issued: u64 = per_second.values().sum();
    let (peak_second, peak) = per_second
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(s, n)| (s.clone(), *n))
        .unwrap_or_default();
    // The CA spaces the grants it records at least 1/rate apart, so no whole second of the
    // audit trail can hold more than the rate (rounded up for a fractional rate).
    let bound = args.rate.ceil() as u64;
    if peak > bound {
        shared.violation(format!(
            "the CA issued {peak} certificates in the second {peak_second}, above its rate of {}",
            args.rate
        ));
    }
    drop(ca);

    let violations = shared.violations.lock().map(|v| v.clone()).unwrap_or_default();
    let figures = serde_json::json!({
        "devices": args.devices,
        "lifetime_secs": args.lifetime.as_secs(),
        "duration_secs": args.duration.as_secs(),
        "rate_per_sec": args.rate,
        "checkin_interval_secs": args.checkin.as_secs(),
        "all_enrolled_secs": all_enrolled,
        "issued": issued,
        "renewals": shared.renewals.load(Ordering::Relaxed),
        "attempts": shared.attempts.load(Ordering::Relaxed),
        "ca_refused_503": refused_before + refused_now,
        "busy_503_seen_by_devices": shared.busy.load(Ordering::Relaxed),
        "unreachable": shared.unreachable.load(Ordering::Relaxed),
        "other_failures": shared.other_failures.load(Ordering::Relaxed),
        "peak_issued_in_one_second": peak,
        "rotation_complete_secs": rotation_complete,
        "outage_secs": args.outage_for.as_secs(),
        "outage_recovered_secs": outage_recovered,
        "max_devices_failing": max_failing,
        "started": lanyard_proto::timefmt::rfc3339(started),
        "violations": violations.len(),
    });
    if rotation_complete.is_none() {
        eprintln!("VIOLATION: the rotation did not complete before the end");
    }
    if outage_recovered.is_none() {
        eprintln!("VIOLATION: the fleet did not recover from the outage before the end");
    }
    if args.json {
        println!("{figures}");
    } else {
        println!("{}", serde_json::to_string_pretty(&figures).unwrap_or_default());
    }
    Ok(violations.is_empty() && rotation_complete.is_some() && outage_recovered.is_some())
}
