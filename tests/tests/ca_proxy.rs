//! A device behind a corporate proxy reaches its CA through it: `HTTPS_PROXY` (an HTTP
//! `CONNECT` tunnel, through tinyproxy), `ALL_PROXY=socks5h://` (SOCKS5, through
//! microsocks), and `NO_PROXY` to bypass one. Both proxies are the real programs, started by
//! the test; their logs prove the agent's connections went through them.

use lanyard_e2e::ca::free_port;
use lanyard_e2e::cmd::{Out, run_cmd};
use lanyard_e2e::{Ca, Server, peers};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PROXY_VARS: [&str; 8] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// A proxy program, stopped when dropped.
struct Proxy {
    child: Child,
    log: PathBuf,
    port: u16,
}

impl Proxy {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_listening(&mut self) {
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the proxy exited ({status}): {}", self.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the proxy did not listen: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// tinyproxy in the foreground on a free port, allowing `CONNECT` to the CA's port only.
fn tinyproxy(dir: &Path, ca_port: u16) -> Proxy {
    let port = free_port();
    let log = dir.join("tinyproxy.log");
    let conf = dir.join("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 16\nLogLevel Connect\n\
             LogFile \"{}\"\nPidFile \"{}\"\nConnectPort {ca_port}\n",
            log.display(),
            dir.join("tinyproxy.pid").display()
        ),
    )
    .expect("tinyproxy.conf");
    let child = Command::new(peers::which("tinyproxy").expect("tinyproxy"))
        .args(["-d", "-c"])
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tinyproxy");
    let mut p = Proxy { child, log, port };
    p.wait_listening();
    p
}

/// microsocks on a free port, its connection log on stderr into a file.
fn microsocks(dir: &Path) -> Proxy {
    let port = free_port();
    let log = dir.join("microsocks.log");
    let child = Command::new(peers::which("microsocks").expect("microsocks"))
        .args(["-i", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("microsocks.out")).expect("log"))
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start microsocks");
    let mut p = Proxy { child, log, port };
    p.wait_listening();
    p
}

/// `lanyard ARGS` with the file store in `state`, no config file, and exactly the proxy
/// variables given (none of the test machine's).
fn lanyard(state: &Path, env: &[(&str, String)], args: &[&str]) -> Out {
    let mut cmd = Command::new(lanyard_e2e::bins::bin("lanyard"));
    cmd.args(["--store", "file", "--state-dir"]).arg(state).args(args);
    cmd.env("LANYARD_CONFIG", "/dev/null");
    for v in PROXY_VARS {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_cmd(&mut cmd, None)
}

fn enrol(ca: &Ca, srv: &Server, state: &Path, id: &str, env: &[(&str, String)]) -> Out {
    let token = ca.token(id);
    let root = srv.cacert.display().to_string();
    lanyard(state, env, &["enrol", "--ca", &srv.url(""), "--token", &token, "--ca-bundle", &root])
}

fn serial(state: &Path) -> String {
    let out = lanyard(state, &[], &["status", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("status JSON");
    assert_eq!(v["state"], "valid", "{v}");
    v["serial"].as_str().expect("serial").to_owned()
}

#[test]
fn the_agent_reaches_its_ca_through_http_connect_and_socks5_proxies() {
    if !peers::require_peers(&["tinyproxy", "microsocks"]) {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let ca_port: u16 = srv.https.rsplit(':').next().and_then(|p| p.parse().ok()).expect("CA port");
    let ca_host = format!("127.0.0.1:{ca_port}");

    // HTTP CONNECT: enrolment and renewal both go through the tunnel.
    let http = tinyproxy(&ca.work, ca_port);
    let via_http = [("HTTPS_PROXY", format!("http://127.0.0.1:{}", http.port))];
    let state = ca.work.join("http-state");
    enrol(&ca, &srv, &state, "proxied-http.fleet.example.com", &via_http).ok();
    let first = serial(&state);
    let tunnels = |log: &str| log.matches(&format!("CONNECT {ca_host}")).count();
    let after_enrol = tunnels(&http.log());
    assert!(after_enrol >= 1, "enrolment did not go through tinyproxy: {}", http.log());
    lanyard(&state, &via_http, &["renew", "--force"]).ok();
    assert_ne!(serial(&state), first, "renewal through the proxy gave no new certificate");
    assert!(
        tunnels(&http.log()) > after_enrol,
        "renewal did not go through tinyproxy: {}",
        http.log()
    );

    // A proxy that is not there: the enrolment fails and says it could not reach the CA,
    // with nothing stored.
    let dead = [("HTTPS_PROXY", format!("http://127.0.0.1:{}", free_port()))];
    let state = ca.work.join("dead-proxy-state");
    let out = enrol(&ca, &srv, &state, "dead-proxy.fleet.example.com", &dead);
    assert!(!out.success(), "enrolled through a proxy that does not exist:\n{out}");
    assert!(out.all().contains(&srv.url("")), "the error does not name the CA:\n{out}");
    let status = lanyard(&state, &[], &["status", "--json"]);
    assert!(
        status.stdout.contains("not_enrolled"),
        "a failed enrolment left a credential:\n{status}"
    );
    // NO_PROXY names the CA's host: the same dead proxy is bypassed.
    let mut bypass = dead.to_vec();
    bypass.push(("NO_PROXY", "127.0.0.1".to_owned()));
    enrol(&ca, &srv, &state, "bypass.fleet.example.com", &bypass).ok();
    serial(&state);

    // SOCKS5, the proxy resolving names (socks5h), from ALL_PROXY.
    let socks = microsocks(&ca.work);
    let via_socks = [("ALL_PROXY", format!("socks5h://127.0.0.1:{}", socks.port))];
    let state = ca.work.join("socks-state");
    enrol(&ca, &srv, &state, "proxied-socks.fleet.example.com", &via_socks).ok();
    let first = serial(&state);
    lanyard(&state, &via_socks, &["renew", "--force"]).ok();
    assert_ne!(serial(&state), first);
    let log = socks.log();
    assert!(
        log.matches(&format!("connected to {ca_host}")).count() >= 2,
        "enrolment and renewal did not both go through microsocks: {log}"
    );
}
