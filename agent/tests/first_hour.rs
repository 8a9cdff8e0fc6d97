//! A new user's first hour with the agent, against a real CA (in-process on loopback):
//! a keystore that cannot write is found out before the one-time token is spent; a token
//! cut off in copying, a malformed or wrong pin and an untrusted CA are each named as what
//! they are, with the flag that fixes them; `[ca] url` in the config is enough to enrol;
//! output into a closed pipe ends quietly.

mod common;

use common::{Ca, status, text};
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `lanyard ARGS...` with no config file and extra environment. A run that has not ended
/// after a minute is a hang (the bug these tests are about), not a slow machine.
async fn lanyard_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_lanyard"));
    cmd.args(args).env("LANYARD_CONFIG", "/dev/null").env("LANYARD_LOG", "warn");
    cmd.kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    match tokio::time::timeout(Duration::from_secs(60), cmd.output()).await {
        Ok(o) => o.expect("run lanyard"),
        // The command line holds the token: name the command only.
        Err(_) => {
            let cmd = args.iter().find(|a| ["enrol", "status", "run", "proxy"].contains(*a));
            panic!("lanyard {cmd:?} hung for 60 s")
        }
    }
}

fn state_arg(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Enrols `state` with the file store and `token`; panics on failure.
async fn enrol_file(ca: &Ca, state: &Path, token: &str) {
    let o = lanyard_env(
        &[
            "--store",
            "file",
            "--state-dir",
            state_arg(state),
            "enrol",
            "--ca",
            &ca.url,
            "--token",
            token,
            "--ca-bundle",
            &ca.root(),
        ],
        &[],
    )
    .await;
    assert!(o.status.success(), "enrol with the file store: {}", text(&o));
    assert_eq!(status(state).await["state"], "valid");
}

/// `lanyard --store keyring enrol` with the session bus at `bus`.
async fn enrol_keyring(ca: &Ca, state: &Path, token: &str, bus: &str) -> (Output, Duration) {
    let started = Instant::now();
    let o = lanyard_env(
        &[
            "--store",
            "keyring",
            "--state-dir",
            state_arg(state),
            "enrol",
            "--ca",
            &ca.url,
            "--token",
            token,
            "--ca-bundle",
            &ca.root(),
        ],
        &[("DBUS_SESSION_BUS_ADDRESS", bus)],
    )
    .await;
    (o, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyring_without_a_session_bus_fails_at_once_and_the_token_still_enrols() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = Ca::start(tmp.path()).await;
    let token = ca.token("laptop-1.fleet.example.com").await;
    let state = tmp.path().join("agent");
    let bus = format!("unix:path={}", tmp.path().join("no-such-bus").display());
    let (o, took) = enrol_keyring(&ca, &state, &token, &bus).await;
    let msg = text(&o);
    assert!(!o.status.success(), "{msg}");
    assert!(took < Duration::from_secs(5), "took {took:?}: {msg}");
    for needle in ["keyring", "Secret Service", "--store file", "session bus", "still unused"] {
        assert!(msg.contains(needle), "no {needle:?} in: {msg}");
    }
    assert_eq!(status(&state).await["state"], "not_enrolled");
    // The token was never sent: the same token enrols with the file store.
    enrol_file(&ca, &state, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_bus_that_never_answers_times_out_naming_the_store() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = Ca::start(tmp.path()).await;
    let token = ca.token("laptop-2.fleet.example.com").await;
    // A bus that accepts connections and never says a word.
    let sock = tmp.path().join("mute-bus");
    let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming() {
            held.push(c);
        }
    });
    let state = tmp.path().join("agent");
    let bus = format!("unix:path={}", sock.display());
    let (o, took) = enrol_keyring(&ca, &state, &token, &bus).await;
    let msg = text(&o);
    assert!(!o.status.success(), "{msg}");
    assert!(took < Duration::from_secs(30), "took {took:?}: {msg}");
    for needle in ["Secret Service", "no answer after", "--store file", "still unused"] {
        assert!(msg.contains(needle), "no {needle:?} in: {msg}");
    }
    enrol_file(&ca, &state, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_token_and_a_bad_pin_are_named_before_anything_is_spent() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = Ca::start(tmp.path()).await;
    let state = tmp.path().join("agent");
    let s = state_arg(&state);
    let token = ca.token("dev-6.fleet.example.com").await;
    let cut = &token[..token.len() - 8];
    let o = lanyard_env(
        &["--store", "file", "--state-dir", s, "enrol", "--ca", &ca.url, "--token", cut],
        &[],
    )
    .await;
    let msg = text(&o);
    assert!(!o.status.success() && msg.contains("malformed"), "{msg}");
    assert_eq!(o.status.code(), Some(2), "a usage error: {msg}");
    assert!(!msg.contains("--identity"), "no advice to give --identity: {msg}");
    assert!(!msg.contains(cut), "the token is not echoed: {msg}");

    // A malformed pin is refused without a network call (nothing listens on port 9).
    let o = lanyard_env(
        &[
            "--store",
            "file",
            "--state-dir",
            s,
            "enrol",
            "--ca",
            "https://127.0.0.1:9",
            "--token",
            &token,
            "--ca-fingerprint",
            "12:34:ab",
        ],
        &[],
    )
    .await;
    let msg = text(&o);
    assert!(!o.status.success(), "{msg}");
    assert!(msg.contains("--ca-fingerprint") && msg.contains("64 hex"), "{msg}");
    assert!(!msg.contains("cannot reach"), "checked before any connection: {msg}");

    // A wrong pin: the CA was reached but is not the pinned one; nothing was issued.
    let o = lanyard_env(
        &[
            "--store",
            "file",
            "--state-dir",
            s,
            "enrol",
            "--ca",
            &ca.url,
            "--token",
            &token,
            "--ca-fingerprint",
            &"ab".repeat(32),
        ],
        &[],
    )
    .await;
    let msg = text(&o);
    assert!(!o.status.success(), "{msg}");
    assert!(msg.contains("did not trust") && msg.contains("fingerprint"), "{msg}");
    assert!(!msg.contains("issued certificate was rejected"), "{msg}");
    enrol_file(&ca, &state, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_ca_is_reported_as_reached_but_not_trusted_with_the_flags_that_fix_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = Ca::start(tmp.path()).await;
    let state = tmp.path().join("agent");
    let s = state_arg(&state);
    let token = ca.token("dev-7.fleet.example.com").await;
    // No --ca-bundle: the system roots do not know a private CA.
    let o = lanyard_env(
        &["--store", "file", "--state-dir", s, "enrol", "--ca", &ca.url, "--token", &token],
        &[],
    )
    .await;
    let msg = text(&o);
    assert!(!o.status.success(), "{msg}");
    for needle in ["reached the CA", "did not trust", "--ca-bundle", "--ca-fingerprint"] {
        assert!(msg.contains(needle), "no {needle:?} in: {msg}");
    }
    assert!(!msg.contains("cannot reach"), "{msg}");

    // A name the CA's TLS certificate does not carry: --tls-name is the fix.
    let by_name = ca.url.replace("127.0.0.1", "localhost");
    let o = lanyard_env(
        &[
            "--store",
            "file",
            "--state-dir",
            s,
            "enrol",
            "--ca",
            &by_name,
            "--token",
            &token,
            "--ca-bundle",
            &ca.root(),
        ],
        &[],
    )
    .await;
    let msg = text(&o);
    assert!(!o.status.success() && msg.contains("--tls-name"), "{msg}");

    // Not enrolled: the hint names the trust flags too.
    let o = lanyard_env(&["--store", "file", "--state-dir", s, "status"], &[]).await;
    let msg = text(&o);
    assert!(msg.contains("--ca-fingerprint") && msg.contains("--ca-bundle"), "{msg}");
    enrol_file(&ca, &state, &token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_ca_url_is_enough_to_enrol() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = Ca::start(tmp.path()).await;
    let state = tmp.path().join("agent");
    let cfg = tmp.path().join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[ca]\nurl = \"{}\"\nca_bundle = \"{}\"\n[store]\nbackend = \"file\"\npath = \"{}\"\n",
            ca.url,
            ca.root(),
            state.display()
        ),
    )
    .expect("config");
    let token = ca.token("dev-8.fleet.example.com").await;
    let o = tokio::process::Command::new(env!("CARGO_BIN_EXE_lanyard"))
        .args(["--config", cfg.to_str().expect("utf-8"), "enrol", "--token", &token])
        .env("LANYARD_LOG", "warn")
        .output()
        .await
        .expect("run lanyard");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(status(&state).await["state"], "valid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_into_a_closed_pipe_ends_quietly() {
    let tmp = tempfile::tempdir().expect("tmp");
    let state = tmp.path().join("agent");
    for args in [&["status", "--json"][..], &["status"][..]] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lanyard"))
            .args(["--store", "file", "--state-dir", state_arg(&state)])
            .args(args)
            .env("LANYARD_CONFIG", "/dev/null")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        // The reader goes away before the first line is written, as `| head -0` does.
        drop(child.stdout.take());
        let o = child.wait_with_output().expect("wait");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_ne!(o.status.code(), Some(101), "{args:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_with_nothing_to_serve_says_so() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = Ca::start(tmp.path()).await;
    let state = tmp.path().join("agent");
    enrol_file(&ca, &state, &ca.token("dev-9.fleet.example.com").await).await;
    let cfg = tmp.path().join("agent.toml");
    std::fs::write(&cfg, format!("[store]\nbackend = \"file\"\npath = \"{}\"\n", state.display()))
        .expect("config");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_lanyard"))
        .args(["--config", cfg.to_str().expect("utf-8"), "run"])
        .env("LANYARD_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run");
    let mut stderr = child.stderr.take().expect("stderr");
    let mut seen = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 4096];
        while !seen.contains("[[proxy.routes]]") {
            match stderr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
    })
    .await;
    let _ = child.kill().await;
    assert!(seen.contains("no proxy routes and no status listener"), "{seen}");
    assert!(seen.contains(cfg.to_str().expect("utf-8")), "names the config file: {seen}");
}

/// `GET /` through the proxy at `port`: the status code and the body.
async fn get_via(port: u16) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return (0, String::new());
    };
    let req = format!("GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_refuses_the_certificate_makes_the_proxy_check_in_at_once() {
    use lanyard_ca::authority::RequestMeta;
    use lanyard_ca::revocation::Reason;
    use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = Ca::start(tmp.path()).await;
    let state = tmp.path().join("agent");
    enrol_file(&ca, &state, &ca.token("dev-10.fleet.example.com").await).await;
    let serial = status(&state).await["serial"].as_str().expect("serial").to_owned();
    ca.auth()
        .revoke(&serial, Reason::KeyCompromise, false, "test", &RequestMeta::default())
        .await
        .expect("revoke");

    // An upstream that checks the CA's CRL in the handshake, as CloudFront checks its
    // revocation list at the edge: it refuses the device's certificate with a TLS alert.
    let crl = ca.auth().issuing_crl().await.expect("crl");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.auth().keys().root_der.clone())).expect("root");
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .with_crls(vec![CertificateRevocationListDer::from(crl)])
        .only_check_end_entity_revocation()
        .build()
        .expect("verifier");
    let (chain, key) = lanyard_ca::ca_dir::CaDir::new(&ca.dir)
        .tls_identity(&ca.auth(), &["127.0.0.1".into()])
        .expect("tls identity");
    let server = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            chain.into_iter().map(CertificateDer::from).collect(),
            PrivateKeyDer::try_from(key).expect("key"),
        )
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let up_port = upstream.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = upstream.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ =
                        tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n").await;
                }
            });
        }
    });

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let _proxy = tokio::process::Command::new(env!("CARGO_BIN_EXE_lanyard"))
        .args(["--store", "file", "--state-dir", state_arg(&state), "proxy", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--upstream")
        .arg(format!("https://127.0.0.1:{up_port}"))
        .args(["--upstream-ca", &ca.root()])
        .env("LANYARD_CONFIG", "/dev/null")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("proxy");

    // No `status --refresh`: the refusal itself makes the proxy ask the CA.
    let started = Instant::now();
    let (mut code, mut body) = (0, String::new());
    while started.elapsed() < Duration::from_secs(20) {
        (code, body) = get_via(port).await;
        if code == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("revoked"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dash_v_shows_lanyards_debug_logs_and_dash_vv_the_libraries_too() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = Ca::start(tmp.path()).await;
    let mut logs = Vec::new();
    for (i, v) in ["-v", "-vv"].into_iter().enumerate() {
        let state = tmp.path().join(format!("agent-{i}"));
        let token = ca.token(&format!("dev-v{i}.fleet.example.com")).await;
        let o = tokio::process::Command::new(env!("CARGO_BIN_EXE_lanyard"))
            .args([v, "--store", "file", "--state-dir", state_arg(&state), "enrol", "--ca"])
            .args([&ca.url, "--token", &token, "--ca-bundle", &ca.root()])
            .env("LANYARD_CONFIG", "/dev/null")
            .env_remove("LANYARD_LOG")
            .output()
            .await
            .expect("run lanyard");
        assert!(o.status.success(), "{}", text(&o));
        logs.push(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    assert!(
        logs[0].contains("DEBUG") && logs[0].contains("credential store can hold"),
        "{}",
        logs[0]
    );
    assert!(!logs[0].contains("frame="), "-v shows no HTTP/2 frames:\n{}", logs[0]);
    assert!(logs[1].contains("frame="), "-vv shows the libraries' debug logs:\n{}", logs[1]);
    assert!(!logs[1].contains('\u{1b}'), "no colour codes when stderr is not a terminal");
}
