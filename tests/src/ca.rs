//! A CA under test: `lanyard-ca init` in a scratch directory, its CLI, and `serve` as a
//! child process.
//!
//! The plain-HTTP publication port is chosen before `init`, because `init` writes it into
//! every certificate (AIA OCSP and CA issuers, CRL distribution point): a test can then
//! follow those URLs as a relying party would.

use crate::bins::lanyard_ca;
use crate::cmd::{Out, run_cmd};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1: bound, read and released. Another process could take
/// it before it is used again; with the kernel's random ephemeral ports that is rare.
pub fn free_port() -> u16 {
    reserve_port().1
}

/// A port held by a listener until the listener is dropped: nothing else binds it by
/// accident in between (drop it just before the real server binds).
pub fn reserve_port() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    let port = l.local_addr().expect("local address").port();
    (l, port)
}

/// A CA directory plus a scratch folder for keys, CSRs and answers.
pub struct Ca {
    /// The CA directory (`--dir`).
    pub dir: PathBuf,
    /// Scratch space owned by the test.
    pub work: PathBuf,
    /// Port of the publication listener, as written into the certificates.
    pub http_port: u16,
    /// Holds `http_port` from `init` until `serve` binds it.
    port_guard: std::sync::Mutex<Option<TcpListener>>,
    tmp: tempfile::TempDir,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// Runs `lanyard-ca ARGS...` and captures its output.
pub fn lanyard_ca_cmd<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Out {
    run_cmd(Command::new(lanyard_ca()).args(args).env("LANYARD_LOG", "warn"), None)
}

impl Ca {
    /// A CA with the default algorithms (root P-384, issuing P-256).
    #[track_caller]
    pub fn init() -> Ca {
        Ca::init_with(&[])
    }

    /// A CA made by `init` with extra flags (e.g. `["--issuing-key", "rsa-2048"]`).
    #[track_caller]
    pub fn init_with(extra: &[&str]) -> Ca {
        let tmp = tempfile::Builder::new().prefix("lanyard-e2e-").tempdir().expect("tempdir");
        let dir = tmp.path().join("ca");
        let work = tmp.path().join("work");
        std::fs::create_dir(&work).expect("work dir");
        let (guard, http_port) = reserve_port();
        let url = format!("http://127.0.0.1:{http_port}");
        let mut args: Vec<String> = vec!["init".into(), "--dir".into(), dir.display().to_string()];
        args.extend(["--public-url".into(), url]);
        args.extend(extra.iter().map(|s| s.to_string()));
        lanyard_ca_cmd(&args).ok();
        Ca { dir, work, http_port, port_guard: std::sync::Mutex::new(Some(guard)), tmp }
    }

    /// The scratch root (parent of `dir` and `work`).
    pub fn root(&self) -> &Path {
        self.tmp.path()
    }

    /// A file in the CA directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A file in the scratch folder.
    pub fn work(&self, name: &str) -> PathBuf {
        self.work.join(name)
    }

    pub fn bundle(&self) -> PathBuf {
        self.path("ca-bundle.pem")
    }
    pub fn root_crt(&self) -> PathBuf {
        self.path("root.crt")
    }
    pub fn issuing_crt(&self) -> PathBuf {
        self.path("issuing.crt")
    }

    /// `lanyard-ca ARGS... --dir DIR`.
    pub fn cli(&self, args: &[&str]) -> Out {
        let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        a.extend(["--dir".into(), self.dir.display().to_string()]);
        lanyard_ca_cmd(&a)
    }

    /// A one-time token for `identity` in the default group, valid 24 h.
    #[track_caller]
    pub fn token(&self, identity: &str) -> String {
        self.token_with(identity, &[])
    }

    /// A token with extra flags (`--group G`, `--ttl 1s`).
    #[track_caller]
    pub fn token_with(&self, identity: &str, extra: &[&str]) -> String {
        let mut a = vec!["token", "create", "--identity", identity];
        a.extend_from_slice(extra);
        let out = self.cli(&a).ok();
        let t = out.stdout.trim().to_owned();
        assert!(
            !t.is_empty() && !t.contains('\n'),
            "token create printed more than a token:\n{out}"
        );
        t
    }

    /// `certs list --json`, parsed.
    #[track_caller]
    pub fn certs(&self) -> Vec<serde_json::Value> {
        let out = self.cli(&["certs", "list", "--json"]).ok();
        match serde_json::from_str(&out.stdout) {
            Ok(serde_json::Value::Array(v)) => v,
            _ => panic!("certs list --json is not a JSON array:\n{out}"),
        }
    }

    /// Sets a group's policy: `policy set --group G ARGS...`.
    #[track_caller]
    pub fn policy_set(&self, group: &str, args: &[&str]) {
        let mut a = vec!["policy", "set", "--group", group];
        a.extend_from_slice(args);
        self.cli(&a).ok();
    }

    /// `lanyard-ca serve` on port 0 (HTTPS) and the publication port (HTTP).
    #[track_caller]
    pub fn serve(&self) -> Server {
        Server::start(self, &[])
    }

    /// `serve` with more flags (e.g. `--admin-listen 127.0.0.1:0`).
    pub fn serve_with(&self, extra: &[&str]) -> Server {
        Server::start(self, extra)
    }
}

/// A running `lanyard-ca serve`; killed (and reaped) on drop.
pub struct Server {
    child: Child,
    /// `ip:port` of the HTTPS listener.
    pub https: String,
    /// `ip:port` of the plain-HTTP publication listener.
    pub http: String,
    /// `ip:port` of the admin listener, when `--admin-listen` was given.
    pub admin: Option<String>,
    /// The root certificate the HTTPS server certificate chains to (for `--cacert`).
    pub cacert: PathBuf,
    log: PathBuf,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("https", &self.https).field("http", &self.http).finish()
    }
}

impl Server {
    #[track_caller]
    fn start(ca: &Ca, extra: &[&str]) -> Server {
        drop(ca.port_guard.lock().map(|mut g| g.take()));
        let addr_file = ca.root().join(format!("addr-{}.json", crate::pki::unique()));
        let log = ca.root().join(format!("serve-{}.log", crate::pki::unique()));
        let log_file = std::fs::File::create(&log).expect("serve log");
        let child = Command::new(lanyard_ca())
            .args(["serve", "--dir"])
            .arg(&ca.dir)
            .args(["--listen", "127.0.0.1:0", "--http-listen"])
            .arg(format!("127.0.0.1:{}", ca.http_port))
            .arg("--addr-file")
            .arg(&addr_file)
            .args(extra)
            .env("LANYARD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log fd"))
            .stderr(log_file)
            .spawn()
            .expect("starting lanyard-ca serve");
        let mut s = Server {
            child,
            https: String::new(),
            http: String::new(),
            admin: None,
            cacert: ca.root_crt(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let addrs = loop {
            if let Ok(text) = std::fs::read_to_string(&addr_file)
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
            {
                break v;
            }
            if let Ok(Some(st)) = s.child.try_wait() {
                panic!("lanyard-ca serve exited ({st}) before listening:\n{}", s.log());
            }
            assert!(Instant::now() < deadline, "serve wrote no addr file in 30s:\n{}", s.log());
            std::thread::sleep(Duration::from_millis(50));
        };
        s.https = addrs["https"].as_str().expect("https address").to_owned();
        s.http = addrs["http"].as_str().expect("http address").to_owned();
        s.admin = addrs["admin"].as_str().map(str::to_owned);
        assert_eq!(
            s.http,
            format!("127.0.0.1:{}", ca.http_port),
            "publication listener not on the port written into certificates"
        );
        loop {
            if http_get_status(&s.http, "/healthz") == Some(200) {
                break;
            }
            assert!(Instant::now() < deadline, "/healthz never answered 200:\n{}", s.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    /// `https://ADDR/PATH`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.https)
    }

    /// `http://ADDR/PATH` (publication listener).
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// The server's process id (to read its memory use).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for the server to exit on its own; its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A bare HTTP/1.1 GET, for readiness checks: the status code, or `None` if nothing
/// answered.
pub fn http_get_status(addr: &str, path: &str) -> Option<u16> {
    http_get(addr, path).map(|(status, _)| status)
}

/// A bare HTTP/1.1 GET: the status code and the body, or `None` if nothing answered.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}
