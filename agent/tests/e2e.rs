//! The agent against a real CA (lanyard-ca, in-process on loopback), driven through the
//! `lanyard` binary as a user would: enrolment, status, forced and scheduled renewal,
//! a CA that goes away and comes back, revocation, expiry with and without grace, a CA
//! that answers garbage, wrong fingerprints and used tokens, and SIGKILL at random points
//! during renewal.

mod common;

use common::{Ca, enrol, enrol_in, lanyard, spki_of_pem, status, text};
use lanyard_ca::authority::RequestMeta;
use lanyard_ca::ca_dir::CaDir;
use lanyard_ca::revocation::Reason;
use lanyard_proto::GroupPolicy;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrol_status_renew_and_export() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = Ca::start(tmp.path()).await;
    let state = tmp.path().join("agent");
    let s = enrol(&ca, &state, "dev-1.fleet.example.com").await;
    assert_eq!(s["state"], "valid");
    assert_eq!(s["identity"], "dev-1.fleet.example.com");
    for key in ["serial", "not_before", "not_after", "next_renewal", "store"] {
        assert!(!s[key].is_null(), "status lacks {key}: {s}");
    }
    let first = s["serial"].as_str().expect("serial").to_owned();

    let (c1, k1) = (tmp.path().join("c1.pem"), tmp.path().join("k1.pem"));
    let o = lanyard(
        &state,
        &["export", "--cert", c1.to_str().expect("p"), "--key", k1.to_str().expect("p")],
    )
    .await;
    assert!(o.status.success() && text(&o).contains("outside the keystore"), "{}", text(&o));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&k1).expect("key").permissions().mode() & 0o777, 0o600);

    let o = lanyard(&state, &["renew"]).await;
    assert!(o.status.success() && text(&o).contains("not due"), "{}", text(&o));
    let o = lanyard(&state, &["renew", "--force"]).await;
    assert!(o.status.success(), "{}", text(&o));
    let s = status(&state).await;
    assert_ne!(s["serial"].as_str(), Some(first.as_str()), "renewal gives a new serial");
    let c2 = tmp.path().join("c2.pem");
    let o = lanyard(
        &state,
        &[
            "export",
            "--cert",
            c2.to_str().expect("p"),
            "--key",
            tmp.path().join("k2.pem").to_str().expect("p"),
        ],
    )
    .await;
    assert!(o.status.success());
    assert_ne!(spki_of_pem(&c1), spki_of_pem(&c2), "renewal re-keys");
    // The CA recorded the renewal as coming from the first certificate.
    let rec = ca
        .auth()
        .store()
        .cert(s["serial"].as_str().expect("serial"))
        .await
        .expect("db")
        .expect("record");
    assert_eq!(rec.parent_serial.as_deref(), Some(first.as_str()));

    // Enrolling again over a valid credential needs --force.
    let token = ca.token("dev-1.fleet.example.com").await;
    let o =
        lanyard(&state, &["enrol", "--ca", &ca.url, "--token", &token, "--ca-bundle", &ca.root()])
            .await;
    assert!(!o.status.success() && text(&o).contains("--force"), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn used_tokens_wrong_pins_and_bad_cas_are_refused_cleanly() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = Ca::start(tmp.path()).await;
    let token = ca.token("dev-2").await;
    let a = tmp.path().join("a");
    let o = lanyard(&a, &["enrol", "--ca", &ca.url, "--token", &token, "--ca-bundle", &ca.root()])
        .await;
    assert!(o.status.success(), "{}", text(&o));
    // The same token on another device (another key): refused, nothing stored.
    let b = tmp.path().join("b");
    let o = lanyard(&b, &["enrol", "--ca", &ca.url, "--token", &token, "--ca-bundle", &ca.root()])
        .await;
    assert!(!o.status.success() && text(&o).contains("already used"), "{}", text(&o));
    assert_eq!(status(&b).await["state"], "not_enrolled");

    // A pinned fingerprint: wrong is refused by name, right works.
    let root_der = pem::parse(std::fs::read(ca.dir.join("root.crt")).expect("root"))
        .expect("pem")
        .into_contents();
    let right = hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &root_der));
    let c = tmp.path().join("c");
    let t = ca.token("dev-3").await;
    let o = lanyard(
        &c,
        &["enrol", "--ca", &ca.url, "--token", &t, "--ca-fingerprint", &"ab".repeat(32)],
    )
    .await;
    assert!(!o.status.success() && text(&o).contains("fingerprint"), "{}", text(&o));
    let o =
        lanyard(&c, &["enrol", "--ca", &ca.url, "--token", &t, "--ca-fingerprint", &right]).await;
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(status(&c).await["state"], "valid");

    // No CA at that address: a clear error, nothing stored.
    let d = tmp.path().join("d");
    let o = lanyard(
        &d,
        &[
            "enrol",
            "--ca",
            "https://127.0.0.1:9",
            "--token",
            &ca.token("dev-4").await,
            "--ca-bundle",
            &ca.root(),
        ],
    )
    .await;
    assert!(!o.status.success() && text(&o).contains("cannot reach the CA"), "{}", text(&o));

    // A server with the right TLS certificate that answers garbage.
    let (chain, key) =
        CaDir::new(&ca.dir).tls_identity(&ca.auth(), &["127.0.0.1".into()]).expect("tls");
    let tls = lanyard_ca::http::tls::server_config(chain, key, &[&ca.auth().keys().issuing_der])
        .expect("tls");
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let stop = tokio_util::sync::CancellationToken::new();
    let app = axum::Router::new().fallback(|| async { "this is not EST" });
    tokio::spawn(lanyard_ca::http::server::serve(l, Some(Arc::new(tls)), app, stop.clone()));
    let o = lanyard(
        &d,
        &[
            "enrol",
            "--ca",
            &format!("https://{addr}"),
            "--token",
            &ca.token("dev-4").await,
            "--ca-bundle",
            &ca.root(),
        ],
    )
    .await;
    assert!(!o.status.success() && text(&o).contains("not usable"), "{}", text(&o));
    assert_eq!(status(&d).await["state"], "not_enrolled");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_that_goes_away_and_comes_back() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut ca = Ca::start(tmp.path()).await;
    let state = tmp.path().join("agent");
    let first = enrol(&ca, &state, "dev-5").await["serial"].as_str().expect("serial").to_owned();
    ca.down().await;
    let o = lanyard(&state, &["renew", "--force"]).await;
    assert!(!o.status.success() && text(&o).contains("cannot reach the CA"), "{}", text(&o));
    let s = status(&state).await;
    assert_eq!(s["state"], "valid", "the current certificate stays: {s}");
    assert_eq!(s["serial"], first.as_str());
    assert_eq!(s["consecutive_failures"], 1);
    assert!(s["last_error"].as_str().is_some_and(|e| e.contains("cannot reach")), "{s}");
    assert!(s["seconds_until_expiry"].as_i64().is_some_and(|x| x > 0));
    ca.up().await; // same port
    let o = lanyard(&state, &["renew", "--force"]).await;
    assert!(o.status.success(), "{}", text(&o));
    let s = status(&state).await;
    assert_eq!(s["consecutive_failures"], 0);
    assert!(s["last_error"].is_null());
    assert_ne!(s["serial"], first.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_cannot_renew_and_says_so() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = Ca::start(tmp.path()).await;
    let state = tmp.path().join("agent");
    let serial = enrol(&ca, &state, "dev-6").await["serial"].as_str().expect("serial").to_owned();
    ca.auth()
        .revoke(&serial, Reason::KeyCompromise, false, "test", &RequestMeta::default())
        .await
        .expect("revoke");
    let o = lanyard(&state, &["renew", "--force"]).await;
    assert!(!o.status.success() && text(&o).contains("revoked"), "{}", text(&o));
    let s = status(&state).await;
    assert_eq!(s["state"], "revoked");
    assert!(s["action"].as_str().is_some_and(|a| a.contains("new token")), "{s}");
    assert!(s["next_renewal"].is_null());
    // `status --refresh` learns it from the CA too (a fresh state dir would not know).
    let o = lanyard(&state, &["status", "--refresh"]).await;
    assert!(!o.status.success() && text(&o).contains("revoked"), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_renews_on_schedule_runs_hooks_and_stops_on_sigterm() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = Ca::start(tmp.path()).await;
    // Five-minute certificates renewed at 10% of their life: every 30 s.
    let p = GroupPolicy {
        lifetime_secs: 300,
        renew_fraction: 0.1,
        jitter_fraction: 0.0,
        ..Default::default()
    };
    ca.auth().set_policy("default", p, "test").await.expect("policy");
    let state = tmp.path().join("agent");
    let first = enrol(&ca, &state, "dev-7").await["serial"].as_str().expect("serial").to_owned();
    let hook_log = tmp.path().join("hook.log");
    let cfg = tmp.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[ca]\nurl = \"{}\"\nca_bundle = \"{}\"\n[store]\nbackend = \"file\"\npath = \"{}\"\n[renewal]\ncheck_interval = \"10s\"\n[hooks]\npost_renew = [\"sh\", \"-c\", \"echo \\\"$LANYARD_SERIAL\\\" >> '{}'\"]\n",
            ca.url,
            ca.root(),
            state.display(),
            hook_log.display()
        ),
    )
    .expect("config");
    let mut daemon = tokio::process::Command::new(env!("CARGO_BIN_EXE_lanyard"))
        .args(["--config", cfg.to_str().expect("p"), "run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("daemon");
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(75)
        && std::fs::read_to_string(&hook_log).unwrap_or_default().lines().count() < 1
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let renewed = std::fs::read_to_string(&hook_log).unwrap_or_default();
    assert!(!renewed.trim().is_empty(), "the daemon did not renew within 75 s");
    let s = status(&state).await;
    assert_ne!(s["serial"], first.as_str());
    assert_eq!(
        Some(renewed.lines().last().unwrap_or("").trim()),
        s["serial"].as_str(),
        "the hook saw the new serial"
    );
    let pid = nix::unistd::Pid::from_raw(i32::try_from(daemon.id().expect("pid")).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let exit = tokio::time::timeout(Duration::from_secs(15), daemon.wait())
        .await
        .expect("stops within 15 s")
        .expect("wait");
    assert!(exit.success(), "{exit}");
}

/// `lanyard renew --force` as a child process, for the tests that kill it.
fn spawn_forced_renewal(state: &std::path::Path) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_lanyard"))
        .args(["--store", "file", "--state-dir"])
        .arg(state)
        .args(["renew", "--force"])
        .env("LANYARD_CONFIG", "/dev/null")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("renew")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_renewal_always_leaves_a_valid_matching_credential() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = Ca::start(tmp.path()).await;
    let state = tmp.path().join("agent");
    enrol(&ca, &state, "dev-8").await;
    // How long one renewal takes here, so the kills land all over it; twice that, so that
    // some renewals complete between kills even when the machine is busier than it was
    // during this one.
    let t = Instant::now();
    assert!(lanyard(&state, &["renew", "--force"]).await.status.success());
    let span = u64::try_from(t.elapsed().as_millis()).unwrap_or(200).max(20) * 2;
    let mut serials = std::collections::BTreeSet::new();
    for i in 0..30u64 {
        let mut child = spawn_forced_renewal(&state);
        // Spread the kills over the renewal: key generation, the request, the swap.
        let delay = (i * 7919) % span;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let _ = child.start_kill();
        let _ = child.wait().await;
        // `status` loads the credential and checks that key and certificate match.
        let s = status(&state).await;
        assert_eq!(s["state"], "valid", "after a kill at {delay} ms: {s}");
        serials.insert(s["serial"].as_str().unwrap_or_default().to_owned());
    }
    assert!(serials.len() > 1, "some renewals completed between kills: {serials:?}");
    let o = lanyard(&state, &["renew", "--force"]).await;
    assert!(o.status.success(), "the store still works after 30 kills: {}", text(&o));
}

/// libfaketime's wrapper: the agent is run an hour ahead of the wall clock. With CI=true
/// its absence fails the test instead of skipping it.
fn faketime() -> Option<&'static str> {
    if std::path::Path::new("/usr/bin/faketime").exists() {
        return Some("/usr/bin/faketime");
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "faketime is missing (apt-get install faketime)"
    );
    eprintln!("SKIPPED: faketime is not installed");
    None
}

async fn lanyard_an_hour_later(
    faketime: &str,
    state: &std::path::Path,
    args: &[&str],
) -> std::process::Output {
    tokio::process::Command::new(faketime)
        .args(["-f", "+1h", env!("CARGO_BIN_EXE_lanyard"), "--store", "file", "--state-dir"])
        .arg(state)
        .args(args)
        .env("LANYARD_CONFIG", "/dev/null")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .output()
        .await
        .expect("run lanyard under faketime")
}

/// A device offline through its certificate's expiry: an hour later (the CA's clock moved
/// on, the agent run under libfaketime), a group with an expiry grace renews with the
/// expired certificate without `--force`; a group without grace says a new token is
/// needed, and keeps the credential it has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_renews_within_the_grace_only() {
    let Some(faketime) = faketime() else { return };
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = Ca::start(tmp.path()).await;
    let short = |grace| GroupPolicy {
        lifetime_secs: 300,
        expired_grace_secs: grace,
        ..GroupPolicy::default()
    };
    ca.auth().set_policy("grace", short(86_400), "test").await.expect("policy");
    ca.auth().set_policy("nograce", short(0), "test").await.expect("policy");
    let (g, n) = (tmp.path().join("grace"), tmp.path().join("nograce"));
    let first =
        enrol_in(&ca, &g, "dev-g", "grace").await["serial"].as_str().expect("serial").to_owned();
    let other =
        enrol_in(&ca, &n, "dev-n", "nograce").await["serial"].as_str().expect("serial").to_owned();

    ca.clock.set_offset(Duration::from_secs(3600));
    for state in [&g, &n] {
        let o = lanyard_an_hour_later(faketime, state, &["status", "--json"]).await;
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).expect("status json");
        assert_eq!(s["state"], "expired", "{s}");
        assert!(!o.status.success(), "status exits non-zero for an expired credential");
    }

    let o = lanyard_an_hour_later(faketime, &g, &["renew"]).await;
    assert!(o.status.success(), "within the grace: {}", text(&o));
    let o = lanyard_an_hour_later(faketime, &g, &["status", "--json"]).await;
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).expect("status json");
    assert_eq!(s["state"], "valid", "{s}");
    assert_ne!(s["serial"], first.as_str());

    let o = lanyard_an_hour_later(faketime, &n, &["renew"]).await;
    assert!(!o.status.success() && text(&o).contains("new token"), "{}", text(&o));
    let o = lanyard_an_hour_later(faketime, &n, &["renew", "--force"]).await;
    assert!(!o.status.success(), "the CA refuses it too: {}", text(&o));
    assert!(text(&o).contains("expired"), "{}", text(&o));
    let o = lanyard_an_hour_later(faketime, &n, &["status", "--json"]).await;
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).expect("status json");
    assert_eq!(s["serial"], other.as_str(), "the credential is kept: {s}");
    assert!(s["action"].as_str().is_some_and(|a| a.contains("new token")), "{s}");
}

/// Copies a state directory as an attacker copying a device's files would (0700 kept).
fn copy_state(from: &std::path::Path, to: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to).expect("mkdir");
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_state(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).expect("copy");
        }
    }
}

/// Two agents hold one copied credential. The first renews; the second is refused with
/// `renewal-conflict`, says so in `status --json`, keeps its still-valid certificate (its
/// proxy gate stays open), and the CA's audit names the conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloned_credential_is_caught_at_renewal() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = Ca::start(tmp.path()).await;
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let s = enrol(&ca, &a, "twin.fleet.example.com").await;
    let shared = s["serial"].as_str().expect("serial").to_owned();
    copy_state(&a, &b);
    assert_eq!(status(&b).await["serial"].as_str(), Some(shared.as_str()));

    let o = lanyard(&a, &["renew", "--force"]).await;
    assert!(o.status.success(), "{}", text(&o));
    let o = lanyard(&b, &["renew", "--force"]).await;
    assert!(!o.status.success(), "the clone must not renew: {}", text(&o));
    assert!(text(&o).contains("renewal-conflict"), "{}", text(&o));

    let s = status(&b).await;
    assert_eq!(s["last_error_code"], "renewal-conflict", "{s}");
    assert_eq!(s["serial"].as_str(), Some(shared.as_str()), "the clone keeps its certificate");
    assert_eq!(s["state"], "valid", "{s}");
    assert!(s["action"].as_str().is_some_and(|a| a.contains("refused")), "{s}");
    // Retrying does not loop on the CA: the refusal is final until a new token.
    let o = lanyard(&b, &["renew"]).await;
    assert!(!o.status.success(), "{}", text(&o));
    assert_eq!(status(&b).await["last_error_code"], "renewal-conflict");

    let conflicts = ca.auth().conflicts().await.expect("audit");
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(conflicts[0].subject, shared);
    assert!(conflicts[0].remote.is_some(), "{conflicts:?}");
    // The original renewed normally and goes on.
    assert_eq!(status(&a).await["state"], "valid");
    assert!(status(&a).await["last_error_code"].is_null());
}

/// SIGKILL in the window after the CA recorded (and answered) a renewal and before the
/// agent committed it: the next renewal uses the staged key and gets that same
/// certificate. Over all runs: no conflict, no lost or mismatched credential, no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_the_ca_answered_retries_with_the_same_key() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = Ca::start(tmp.path()).await;
    let state = tmp.path().join("agent");
    let id = "window.fleet.example.com";
    enrol(&ca, &state, id).await;
    let count = || async {
        ca.auth().certs(lanyard_ca::store::CertFilter::identity(id)).await.expect("certs")
    };
    let (mut in_window, mut runs) = (0, 0);
    while runs < 12 && (in_window < 3 || runs < 6) {
        runs += 1;
        let before = status(&state).await["serial"].as_str().expect("serial").to_owned();
        let known = count().await.len();
        let mut child = spawn_forced_renewal(&state);
        // Kill as soon as the CA has recorded the renewal: the answer is on its way or read,
        // and the agent still has the CA-certificates request, checks and the swap to do.
        let t = Instant::now();
        while count().await.len() == known && t.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let _ = child.start_kill();
        let _ = child.wait().await;
        let certs = count().await;
        let child_serial = certs
            .iter()
            .find(|c| c.parent_serial.as_deref() == Some(before.as_str()))
            .map(|c| c.serial.clone())
            .expect("the CA recorded a renewal");
        let s = status(&state).await;
        assert_eq!(s["state"], "valid", "after the kill: {s}");
        if s["serial"].as_str() == Some(before.as_str()) {
            // The kill landed in the window: the CA has a child the agent never stored.
            in_window += 1;
            let o = lanyard(&state, &["renew", "--force"]).await;
            assert!(o.status.success(), "the retry renews: {}", text(&o));
            assert_eq!(
                status(&state).await["serial"].as_str(),
                Some(child_serial.as_str()),
                "the retry gets the certificate the CA issued before the kill"
            );
        } else {
            assert_eq!(s["serial"].as_str(), Some(child_serial.as_str()));
        }
    }
    eprintln!("{in_window} of {runs} kills landed between the CA's answer and the commit");
    assert!(in_window >= 1, "no kill landed between the CA's answer and the commit in {runs} runs");
    assert!(ca.auth().conflicts().await.expect("audit").is_empty(), "no renewal conflict");
    let o = lanyard(&state, &["renew", "--force"]).await;
    assert!(o.status.success(), "{}", text(&o));
}

/// The status endpoint keeps serving after its accept loop ran out of file descriptors
/// (EMFILE): the daemon runs with a small descriptor limit, a burst of connections
/// exhausts it, and once they close `/healthz` answers again. It also refuses a foreign
/// `Host` (DNS rebinding).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_endpoint_survives_running_out_of_descriptors() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = Ca::start(tmp.path()).await;
    let state = tmp.path().join("agent");
    enrol(&ca, &state, "fd.fleet.example.com").await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let cfg = tmp.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[ca]\nurl = \"{}\"\nca_bundle = \"{}\"\n[store]\nbackend = \"file\"\npath = \"{}\"\n[status]\nlisten = \"127.0.0.1:{port}\"\n",
            ca.url,
            ca.root(),
            state.display()
        ),
    )
    .expect("config");
    let _daemon = tokio::process::Command::new("prlimit")
        .args(["--nofile=64:64", "--"])
        .arg(env!("CARGO_BIN_EXE_lanyard"))
        .args(["--config", cfg.to_str().expect("p"), "run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("daemon under prlimit");
    async fn get(port: u16, host: &str) -> Option<String> {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        s.write_all(
            format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .ok()?;
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(3), s.read_to_string(&mut out))
            .await
            .ok()?
            .ok()?;
        Some(out)
    }
    let own = format!("127.0.0.1:{port}");
    let t = Instant::now();
    while get(port, &own).await.is_none_or(|r| !r.contains("200 OK")) {
        assert!(t.elapsed() < Duration::from_secs(20), "status endpoint never answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // More connections than the daemon has descriptors for.
    let mut burst = Vec::new();
    for _ in 0..120 {
        if let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            burst.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(burst);
    let t = Instant::now();
    let mut answered = None;
    while t.elapsed() < Duration::from_secs(20) {
        if let Some(r) = get(port, &own).await
            && r.contains("200 OK")
        {
            answered = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(answered.is_some(), "the status endpoint did not recover after EMFILE");
    let r = get(port, "attacker.example").await.unwrap_or_default();
    assert!(r.contains("403"), "a foreign Host is refused: {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_ca_is_obeyed_and_status_shows_one_next_attempt() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut ca = Ca::start(tmp.path()).await;
    // One issuance per 60 s and no queue: the enrolment takes the slot, the renewal right
    // after it is refused as busy with a Retry-After near a minute.
    ca.down().await;
    ca.admission =
        Some(lanyard_ca::admission::AdmissionLimits::new(1.0 / 60.0, 0.0).expect("limits"));
    ca.up().await;
    let state = tmp.path().join("agent");
    enrol(&ca, &state, "busy-1.fleet.example.com").await;
    let refused_at = lanyard_agent::clock::Clock::now(&lanyard_agent::clock::SystemClock);
    let o = lanyard(&state, &["renew", "--force"]).await;
    assert!(!o.status.success() && text(&o).contains("busy"), "{}", text(&o));

    let s = status(&state).await;
    assert_eq!(s["last_error_code"], "busy", "{s}");
    assert_eq!(s["consecutive_failures"], 1, "{s}");
    let next = time::OffsetDateTime::parse(
        s["next_renewal"].as_str().expect("next_renewal"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("rfc3339");
    // The backoff alone (10 s floor) would allow a try within 10 s; Retry-After says ~60.
    assert!(
        next - refused_at >= time::Duration::seconds(45),
        "next attempt {next}, refused {refused_at}"
    );
    // The same answer on every call: the failure's jitter was drawn once and stored.
    for _ in 0..3 {
        assert_eq!(status(&state).await["next_renewal"], s["next_renewal"]);
    }
    // An unforced renewal waits for it instead of knocking again.
    let o = lanyard(&state, &["renew"]).await;
    assert!(o.status.success() && text(&o).contains("not due"), "{}", text(&o));
    let busy = ca.auth().admission_stats().expect("admission on").refused;
    assert_eq!(busy, 1, "only the forced renewal reached the CA's pacer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_state_file_is_reported_not_swallowed() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = Ca::start(tmp.path()).await;
    let state = tmp.path().join("agent");
    enrol(&ca, &state, "corrupt-1.fleet.example.com").await;
    std::fs::write(state.join("agent-state.json"), b"{ not json").expect("corrupt");
    let s = status(&state).await;
    let err = s["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("agent-state.json") && err.contains("remove the file"), "{s}");
    // The credential is elsewhere and still in use; the CA's URL was in the lost state,
    // so renewal says what to do instead of failing somewhere obscure.
    assert_eq!(s["state"], "valid");
    let o = lanyard(&state, &["renew", "--force"]).await;
    assert!(!o.status.success() && text(&o).contains("[ca] url"), "{}", text(&o));
}

/// An enrolment whose answer was lost (the CA signed and recorded it, the device never
/// stored it: a timeout while the CA's queue held the request, a crash, retries used up)
/// is completed by enrolling again with the same token: the key was staged before the
/// request, so the CA answers the same token and key with the same certificate, where a
/// new key would be refused as token-used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolment_whose_answer_was_lost_is_completed_with_its_staged_key() {
    use lanyard_agent::keys::DeviceKey;
    use std::os::unix::fs::DirBuilderExt;
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = Ca::start(tmp.path()).await;
    let id = "lost-1.fleet.example.com";
    let token = ca.token(id).await;
    let state = tmp.path().join("agent");
    std::fs::DirBuilder::new().mode(0o700).create(&state).expect("state dir");

    // What the interrupted enrolment left: its key staged in the device's store...
    let key = DeviceKey::generate(lanyard_proto::KeyAlgorithm::EcdsaP256).expect("key");
    let store = lanyard_keystore::open(lanyard_keystore::StoreKind::File, &state, "default")
        .expect("store");
    let mark = format!("enrol:{}", &lanyard_agent::trust::sha256_hex(token.as_bytes())[..16]);
    store.stage(&key.stored(), &mark).expect("stage");
    // ...and the certificate the CA signed for it, whose answer never arrived.
    let issued = ca
        .auth()
        .enroll(
            id,
            &lanyard_ca::tokens::TokenSecret::from_presented(&token),
            &key.csr(id).expect("csr"),
            &RequestMeta::default(),
        )
        .await
        .expect("the CA signs");

    let o =
        lanyard(&state, &["enrol", "--ca", &ca.url, "--token", &token, "--ca-bundle", &ca.root()])
            .await;
    assert!(o.status.success(), "enrolling again with the same token: {}", text(&o));
    let s = status(&state).await;
    assert_eq!(s["serial"], issued.record.serial.as_str(), "{s}");
    assert_eq!(s["state"], "valid", "{s}");

    // Another device directory, without the staged key, gets what a new key gets.
    let other = tmp.path().join("other");
    let o =
        lanyard(&other, &["enrol", "--ca", &ca.url, "--token", &token, "--ca-bundle", &ca.root()])
            .await;
    assert!(!o.status.success() && text(&o).contains("token-used"), "{}", text(&o));
}

/// A device configured with `[enrol] token_file`, for the zero-touch tests: its config,
/// state directory, token file and daemon log.
struct ZeroTouch {
    cfg: std::path::PathBuf,
    state: std::path::PathBuf,
    token_file: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl ZeroTouch {
    fn new(tmp: &std::path::Path, ca: &Ca, name: &str) -> ZeroTouch {
        let dir = tmp.join(name);
        std::fs::create_dir_all(&dir).expect("dir");
        let d = ZeroTouch {
            cfg: dir.join("agent.toml"),
            state: dir.join("state"),
            token_file: dir.join("enrol.token"),
            log: dir.join("daemon.log"),
        };
        std::fs::write(
            &d.cfg,
            format!(
                "[ca]\nurl = \"{}\"\nca_bundle = \"{}\"\n[store]\nbackend = \"file\"\npath = \"{}\"\n[enrol]\ntoken_file = \"{}\"\n",
                ca.url,
                ca.root(),
                d.state.display(),
                d.token_file.display()
            ),
        )
        .expect("config");
        d
    }

    /// A device flashed with a batch claim and a serial number: `[enrol] method = "claim"`.
    fn with_claim(tmp: &std::path::Path, ca: &Ca, name: &str, serial: &str) -> ZeroTouch {
        let d = ZeroTouch::new(tmp, ca, name);
        let serial_file = d.state.with_file_name("serial-number");
        // As a device tree gives it: NUL-terminated.
        std::fs::write(&serial_file, format!("{serial}\0")).expect("serial");
        std::fs::write(
            &d.cfg,
            format!(
                "[ca]\nurl = \"{}\"\nca_bundle = \"{}\"\n[store]\nbackend = \"file\"\npath = \"{}\"\n[enrol]\nmethod = \"claim\"\nclaim_file = \"{}\"\nidentity_template = \"{CLAIM_TEMPLATE}\"\ndevice_id_file = \"{}\"\n",
                ca.url,
                ca.root(),
                d.state.display(),
                d.token_file.display(),
                serial_file.display()
            ),
        )
        .expect("config");
        d
    }

    fn run(&self) -> tokio::process::Child {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_lanyard"))
            // -v: Lanyard's own debug lines too (each wake by a watched file is one).
            .args(["-v", "--config", self.cfg.to_str().expect("p"), "run"])
            .env_remove("LANYARD_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&self.log).expect("log"))
            .kill_on_drop(true)
            .spawn()
            .expect("daemon")
    }

    async fn status(&self) -> serde_json::Value {
        let o = tokio::process::Command::new(env!("CARGO_BIN_EXE_lanyard"))
            .args(["--config", self.cfg.to_str().expect("p"), "status", "--json"])
            .output()
            .await
            .expect("status");
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("status --json: {e}: {}", text(&o)))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the used token file is gone (it is removed after the enrolment's
    /// check-in, a moment after the certificate is stored).
    async fn token_file_gone_within(&self, limit: Duration) {
        let t = Instant::now();
        while self.token_file.exists() {
            assert!(t.elapsed() < limit, "the used token file is still there:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the device holds a valid certificate.
    async fn enrolled_within(&self, limit: Duration) -> serde_json::Value {
        let t = Instant::now();
        loop {
            let s = self.status().await;
            if s["state"] == "valid" {
                return s;
            }
            assert!(t.elapsed() < limit, "not enrolled within {limit:?}: {s}\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_enrols_from_a_token_file_retries_an_absent_ca_and_waits_out_a_refused_token() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut ca = Ca::start(tmp.path()).await;

    // A token in the file and no credential: `lanyard run` enrols, and the token is gone.
    let first = ZeroTouch::new(tmp.path(), &ca, "first");
    let token = ca.token("zt-1.fleet.example.com").await;
    std::fs::write(&first.token_file, format!("{token}\n")).expect("token file");
    let _first_daemon = first.run();
    let s = first.enrolled_within(Duration::from_secs(30)).await;
    assert_eq!(s["identity"], "zt-1.fleet.example.com", "{s}");
    first.token_file_gone_within(Duration::from_secs(10)).await;
    assert!(!first.log().contains(token.as_str()), "the token reached the log");

    // The same token on another device: refused for good (used). One journal entry, a
    // status that says what to do, and no busy loop while the file holds that token...
    let second = ZeroTouch::new(tmp.path(), &ca, "second");
    std::fs::write(&second.token_file, &token).expect("token file");
    let _second_daemon = second.run();
    let t = Instant::now();
    while !second.log().contains("enrolment refused") {
        assert!(t.elapsed() < Duration::from_secs(20), "no refusal logged:\n{}", second.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Idle means idle: the daemon reads the token file on each wake, and must not wake on
    // its own reads (inotify reports every open): no wake in 3 s when nothing changes.
    let wakes = || second.log().matches("a watched file changed").count();
    let before = wakes();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let woken = wakes() - before;
    assert!(
        woken == 0,
        "the waiting daemon woke {woken} times in 3 s with no change:\n{}",
        second.log()
    );
    let log = second.log();
    assert_eq!(log.matches("enrolling with the token file").count(), 1, "{log}");
    assert_eq!(log.matches("enrolment refused").count(), 1, "{log}");
    let s = second.status().await;
    assert_eq!(s["state"], "not_enrolled", "{s}");
    let action = s["action"].as_str().unwrap_or_default();
    assert!(action.contains("put a new token in the file") && action.contains("token-used"), "{s}");
    assert!(!log.contains(token.as_str()) && !s.to_string().contains(token.as_str()));
    // ...until a new token is put there: the daemon sees the file change and enrols.
    let fresh = ca.token("zt-2.fleet.example.com").await;
    std::fs::write(&second.token_file, &fresh).expect("token file");
    let s = second.enrolled_within(Duration::from_secs(20)).await;
    assert_eq!(s["identity"], "zt-2.fleet.example.com", "{s}");
    second.token_file_gone_within(Duration::from_secs(10)).await;

    // The CA is down when the device starts: retried with back-off (the default policy's
    // 10 s floor), never in a busy loop, and enrolled once the CA is back.
    let third = ZeroTouch::new(tmp.path(), &ca, "third");
    std::fs::write(&third.token_file, ca.token("zt-3.fleet.example.com").await).expect("token");
    ca.down().await;
    let _third_daemon = third.run();
    let t = Instant::now();
    while !third.log().contains("enrolment failed; will retry") {
        assert!(t.elapsed() < Duration::from_secs(20), "no failure logged:\n{}", third.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let s = third.status().await;
    assert_eq!(s["state"], "not_enrolled", "{s}");
    assert!(s["last_error"].as_str().unwrap_or_default().contains("retrying at"), "{s}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    ca.up().await;
    let s = third.enrolled_within(Duration::from_secs(40)).await;
    assert_eq!(s["identity"], "zt-3.fleet.example.com", "{s}");
    assert!(s["last_error"].is_null(), "{s}");
    let attempts = third.log().matches("enrolling with the token file").count();
    assert!((2..=4).contains(&attempts), "{attempts} attempts in about 10 s:\n{}", third.log());
    third.token_file_gone_within(Duration::from_secs(10)).await;
}

const CLAIM_TEMPLATE: &str = "sensor-{id}.fleet.example.com";

/// A manufacturer's CA and a factory certificate (IDevID) it signed for `sn`, written as
/// PEM files under `dir`: (CA PEM, certificate file, key file).
fn factory_pki(
    dir: &std::path::Path,
    sns: &[&str],
) -> (String, Vec<(std::path::PathBuf, std::path::PathBuf)>) {
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name.push(rcgen::DnType::CommonName, "Acme Factory CA");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let ca_pem = p.self_signed(&ca_key).expect("factory CA").pem();
    let issuer = rcgen::Issuer::new(p, ca_key);
    std::fs::create_dir_all(dir).expect("dir");
    let devices = sns
        .iter()
        .map(|sn| {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
            let mut d = rcgen::CertificateParams::default();
            d.distinguished_name.push(rcgen::DnType::CommonName, *sn);
            d.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
            d.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            let cert = d.signed_by(&key, &issuer).expect("factory certificate");
            let (c, k) = (dir.join(format!("{sn}.crt")), dir.join(format!("{sn}.key")));
            std::fs::write(&c, cert.pem()).expect("cert");
            std::fs::write(&k, key.serialize_pem()).expect("key");
            (c, k)
        })
        .collect();
    (ca_pem, devices)
}

/// Devices with factory certificates: the daemon of a device whose factory CA is not trusted
/// yet backs off with `factory-ca-unknown` in its status, and enrols by itself once the fleet
/// manager trusts the CA; `lanyard enrol --factory-cert` enrols another. The factory
/// certificate is left in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_enrol_with_factory_certificates_once_their_ca_is_trusted() {
    use lanyard_ca::store::IdentityFrom;
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = Ca::start(tmp.path()).await;
    let (ca_pem, devices) = factory_pki(&tmp.path().join("factory"), &["SN-9001", "SN-9002"]);
    let (cert1, key1) = &devices[0];
    let dev = ZeroTouch::new(tmp.path(), &ca, "idevid-1");
    std::fs::write(
        &dev.cfg,
        format!(
            "[ca]\nurl = \"{}\"\nca_bundle = \"{}\"\n[store]\nbackend = \"file\"\npath = \"{}\"\n[enrol]\nmethod = \"factory-cert\"\nfactory_cert = \"{}\"\nfactory_key = \"{}\"\n",
            ca.url,
            ca.root(),
            dev.state.display(),
            cert1.display(),
            key1.display()
        ),
    )
    .expect("config");
    let _daemon = dev.run();
    let t = Instant::now();
    while !dev.log().contains("enrolment failed; will retry") {
        assert!(t.elapsed() < Duration::from_secs(20), "no failure:\n{}", dev.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let s = dev.status().await;
    assert_eq!(s["state"], "not_enrolled", "{s}");
    let why = s["last_error"].as_str().unwrap_or_default().to_owned();
    assert!(why.contains("factory-ca-unknown") && why.contains("retrying at"), "{s}");

    ca.auth()
        .trust_factory_ca(
            "default",
            ca_pem.as_bytes(),
            IdentityFrom::Cn,
            Some(CLAIM_TEMPLATE.into()),
            "test",
        )
        .await
        .expect("trust");
    let s = dev.enrolled_within(Duration::from_secs(40)).await;
    assert_eq!(s["identity"], "sensor-sn-9001.fleet.example.com", "{s}");
    assert!(cert1.exists() && key1.exists(), "the factory certificate stays");
    let attempts = dev.log().matches("enrolling with the factory certificate").count();
    assert!((2..=4).contains(&attempts), "{attempts} attempts:\n{}", dev.log());

    // By hand on a second device; then the same factory certificate on a third (a copy):
    // refused.
    let (cert2, key2) = &devices[1];
    let enrol_by_hand = |state: &'static str| {
        let (url, root, tmp) = (ca.url.clone(), ca.root(), tmp.path().to_owned());
        async move {
            let args = [
                "enrol",
                "--ca",
                &url,
                "--ca-bundle",
                &root,
                "--factory-cert",
                cert2.to_str().expect("p"),
                "--factory-key",
                key2.to_str().expect("p"),
            ];
            lanyard(&tmp.join(state), &args).await
        }
    };
    let o = enrol_by_hand("idevid-2").await;
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("enrolled as sensor-sn-9002.fleet.example.com"), "{}", text(&o));
    let o = enrol_by_hand("idevid-2-copy").await;
    assert!(!o.status.success() && text(&o).contains("already-provisioned"), "{}", text(&o));
}

/// Identical images with one batch claim of 3 uses: three devices enrol by themselves, each
/// under its own serial number, and remove the claim; the fourth is refused
/// (`claim-exhausted`), says so in its status and waits. `lanyard enrol` takes a claim
/// with `--identity-template`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_images_enrol_through_a_batch_claim_each_under_its_own_identity() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = Ca::start(tmp.path()).await;
    let (claim, rec) = ca
        .auth()
        .create_claim("default", CLAIM_TEMPLATE, 3, Duration::from_secs(86_400), "test")
        .await
        .expect("claim");
    let claim = claim.expose().to_owned();
    let mut daemons = Vec::new();
    let devices: Vec<ZeroTouch> = ["SN-0001", "SN-0002", "SN-0003"]
        .iter()
        .map(|sn| {
            let d = ZeroTouch::with_claim(tmp.path(), &ca, &format!("dev-{sn}"), sn);
            std::fs::write(&d.token_file, format!("{claim}\n")).expect("claim file");
            daemons.push(d.run());
            d
        })
        .collect();
    for (d, sn) in devices.iter().zip(["sn-0001", "sn-0002", "sn-0003"]) {
        let s = d.enrolled_within(Duration::from_secs(40)).await;
        assert_eq!(s["identity"], format!("sensor-{sn}.fleet.example.com"), "{s}");
        d.token_file_gone_within(Duration::from_secs(10)).await;
        assert!(!d.log().contains(&claim), "the claim reached the log");
    }
    let claims = ca.auth().claims().await.expect("claims");
    assert_eq!((claims[0].id.as_str(), claims[0].uses), (rec.id.as_str(), 3));

    // The fourth image: the claim is used up.
    let fourth = ZeroTouch::with_claim(tmp.path(), &ca, "dev-4", "SN-0004");
    std::fs::write(&fourth.token_file, &claim).expect("claim file");
    let _fourth_daemon = fourth.run();
    let t = Instant::now();
    while !fourth.log().contains("enrolment refused") {
        assert!(t.elapsed() < Duration::from_secs(20), "no refusal:\n{}", fourth.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let s = fourth.status().await;
    assert_eq!(s["state"], "not_enrolled", "{s}");
    assert!(s["action"].as_str().unwrap_or_default().contains("claim-exhausted"), "{s}");
    assert_eq!(fourth.log().matches("enrolling with the token file").count(), 1);

    // By hand: `lanyard enrol` with a new claim, the template and the serial file.
    let (claim2, _) = ca
        .auth()
        .create_claim("default", CLAIM_TEMPLATE, 1, Duration::from_secs(3600), "test")
        .await
        .expect("claim");
    let hand = tmp.path().join("by-hand");
    let serial = tmp.path().join("by-hand-serial");
    std::fs::write(&serial, "SN-0005\n").expect("serial");
    let o = lanyard(
        &hand,
        &[
            "enrol",
            "--ca",
            &ca.url,
            "--ca-bundle",
            &ca.root(),
            "--token",
            claim2.expose(),
            "--identity-template",
            CLAIM_TEMPLATE,
            "--device-id-file",
            serial.to_str().expect("p"),
        ],
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("enrolled as sensor-sn-0005.fleet.example.com"), "{}", text(&o));
    // Without an identity, a claim is refused before anything is sent, saying what to give.
    let o = lanyard(
        &tmp.path().join("no-identity"),
        &["enrol", "--ca", &ca.url, "--ca-bundle", &ca.root(), "--token", claim2.expose()],
    )
    .await;
    assert!(!o.status.success() && text(&o).contains("--identity-template"), "{}", text(&o));
    assert!(!text(&o).contains(claim2.expose()), "the claim reached the output");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_check_in_and_the_inventory_shows_failing_and_stale_devices() {
    use lanyard_ca::inventory::DeviceFilter;
    let tmp = tempfile::tempdir().expect("tmp");
    let mut ca = Ca::start(tmp.path()).await;
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    enrol(&ca, &a, "inv-a.fleet.example.com").await;
    enrol(&ca, &b, "inv-b.fleet.example.com").await;
    for state in [&a, &b] {
        let o = lanyard(state, &["status", "--refresh"]).await;
        assert!(o.status.success(), "{}", text(&o));
    }
    let rows = ca.auth().devices(&DeviceFilter::default()).await.expect("devices");
    assert_eq!(rows.len(), 2, "{rows:?}");
    for d in &rows {
        assert_eq!(d.state, "valid", "{d:?}");
        assert_eq!(d.agent_version.as_deref(), Some(env!("CARGO_PKG_VERSION")), "{d:?}");
        assert_eq!(d.arch.as_deref(), Some(std::env::consts::ARCH), "{d:?}");
        assert!(d.store.as_deref().is_some_and(|s| !s.is_empty()), "{d:?}");
        assert_eq!(d.policy_current, Some(true), "the agent reports the version it was given");
        assert!(d.next_renewal.is_some() && !d.failing, "{d:?}");
    }

    // One issuance a minute, no queue: a's renewal takes the slot, b's is refused as busy.
    ca.down().await;
    ca.admission =
        Some(lanyard_ca::admission::AdmissionLimits::new(1.0 / 60.0, 0.0).expect("limits"));
    ca.up().await;
    let o = lanyard(&a, &["renew", "--force"]).await;
    assert!(o.status.success(), "{}", text(&o));
    let o = lanyard(&b, &["renew", "--force"]).await;
    assert!(!o.status.success() && text(&o).contains("busy"), "{}", text(&o));
    lanyard(&b, &["status", "--refresh"]).await;
    let failing = ca
        .auth()
        .devices(&DeviceFilter { failing: true, ..Default::default() })
        .await
        .expect("devices");
    assert_eq!(failing.len(), 1, "{failing:?}");
    assert_eq!(failing[0].identity, "inv-b.fleet.example.com");
    assert_eq!(failing[0].last_error_code.as_deref(), Some("busy"));
    assert_eq!(failing[0].consecutive_failures, 1);

    // A day later (the CA's clock moved) only a checks in: b is stale, a is not.
    ca.clock.set_offset(Duration::from_secs(25 * 3600));
    let o = lanyard(&a, &["status", "--refresh"]).await;
    assert!(o.status.success(), "{}", text(&o));
    let stale = ca
        .auth()
        .devices(&DeviceFilter { stale: Some(time::Duration::hours(24)), ..Default::default() })
        .await
        .expect("devices");
    assert_eq!(
        stale.iter().map(|d| d.identity.as_str()).collect::<Vec<_>>(),
        ["inv-b.fleet.example.com"]
    );
    // a checked in with its renewed certificate: the inventory has the new serial.
    let a_now = status(&a).await["serial"].as_str().expect("serial").to_owned();
    let rows = ca.auth().devices(&DeviceFilter::default()).await.expect("devices");
    assert!(rows.iter().any(|d| d.serial == a_now && d.cert_status == "valid"), "{rows:?}");
}

/// A CA from before check-in reports: the real CA's routes, but `POST /v1/checkin` is
/// unknown (404), as it is on a CA of an earlier release.
async fn older_ca(ca: &Ca) -> (tokio_util::sync::CancellationToken, tokio::task::JoinHandle<()>) {
    use axum::response::IntoResponse;
    let d = CaDir::new(&ca.dir);
    let auth = Arc::new(d.open(ca.clock.clone()).expect("open"));
    let (chain, key) = d.tls_identity(&auth, &["127.0.0.1".into()]).expect("tls identity");
    let tls = lanyard_ca::http::tls::server_config(chain, key, &[&auth.keys().issuing_der])
        .expect("tls config");
    let app = lanyard_ca::http::router(auth).layer(axum::middleware::from_fn(
        |req: axum::extract::Request, next: axum::middleware::Next| async move {
            if req.uri().path() == "/v1/checkin" {
                return axum::http::StatusCode::NOT_FOUND.into_response();
            }
            next.run(req).await
        },
    ));
    let listener = tokio::net::TcpListener::bind(&ca.listen).await.expect("bind");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(lanyard_ca::http::server::serve_with(
        listener,
        Some(Arc::new(tls)),
        app,
        lanyard_ca::http::server::Limits::server(),
        shutdown.clone(),
    ));
    (shutdown, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_ca_without_check_in_reports_the_agent_asks_for_its_status_instead() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut ca = Ca::start(tmp.path()).await;
    let state = tmp.path().join("agent");
    let serial = enrol(&ca, &state, "old-ca.fleet.example.com").await["serial"]
        .as_str()
        .expect("serial")
        .to_owned();
    ca.auth()
        .revoke(&serial, Reason::KeyCompromise, false, "test", &RequestMeta::default())
        .await
        .expect("revoke");
    ca.down().await;
    let (stop, task) = older_ca(&ca).await;
    // The check-in is refused as unknown; the agent falls back to GET /v1/certificate and
    // learns the revocation from it.
    let o = lanyard(&state, &["status", "--refresh"]).await;
    assert!(!o.status.success() && text(&o).contains("revoked"), "{}", text(&o));
    assert!(!text(&o).contains("/v1/checkin"), "the 404 is not shown as an error: {}", text(&o));
    assert_eq!(status(&state).await["state"], "revoked");
    stop.cancel();
    task.await.expect("older CA");
}
