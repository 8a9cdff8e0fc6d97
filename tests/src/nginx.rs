//! nginx as a stand-in for CloudFront viewer mTLS: `ssl_verify_client on` with a CA
//! bundle as `ssl_client_certificate` and CRLs as `ssl_crl` (which makes nginx check every
//! level of the chain, as `openssl verify -crl_check_all` does).

use crate::ca::reserve_port;
use crate::est::{Request, Resp};
use crate::{peers, run};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// nginx in a private prefix, unprivileged paths, `daemon off`; stopped with SIGQUIT.
pub struct Nginx {
    child: Child,
    prefix: PathBuf,
    port: u16,
}

impl Nginx {
    /// nginx in front of `ca`'s clients: the server certificate `serve` made for itself
    /// (SAN 127.0.0.1) with the issuing CA as chain, `ca`'s bundle as the client CAs and
    /// its CRLs (`lanyard-ca crl --out`, issuing and root) in `<ca root>/nginx/crl.pem`,
    /// which [`Nginx::crl_path`] names for a later refresh.
    pub fn for_ca(ca: &crate::Ca) -> Nginx {
        let prefix = ca.root().join("nginx");
        std::fs::create_dir_all(&prefix).expect("prefix");
        let chain = prefix.join("server-chain.pem");
        let chain_pem = format!(
            "{}{}",
            std::fs::read_to_string(ca.path("tls/server.crt")).expect("server.crt"),
            std::fs::read_to_string(ca.issuing_crt()).expect("issuing.crt")
        );
        std::fs::write(&chain, chain_pem).expect("chain");
        let crl = prefix.join("crl.pem");
        ca.cli(&["crl", "--out", &crl.display().to_string()]).ok();
        Nginx::start(&prefix, &chain, &ca.path("tls/server.key"), &ca.bundle(), &crl)
    }

    /// The CRL file nginx reads (after [`Nginx::for_ca`]); refresh it, then `signal("HUP")`.
    pub fn crl_path(&self) -> PathBuf {
        self.prefix.join("crl.pem")
    }

    pub fn start(prefix: &Path, cert_chain: &Path, key: &Path, bundle: &Path, crl: &Path) -> Nginx {
        let (guard, port) = reserve_port();
        let p = prefix.display();
        for d in ["logs", "tmp"] {
            std::fs::create_dir_all(prefix.join(d)).expect("nginx dirs");
        }
        let conf = format!(
            r#"worker_processes 1;
error_log {p}/logs/error.log info;
pid {p}/logs/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log {p}/logs/access.log;
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {chain};
        ssl_certificate_key {key};
        ssl_verify_client on;
        ssl_client_certificate {bundle};
        ssl_verify_depth 2;
        ssl_crl {crl};
        default_type text/plain;
        location / {{ return 200 "$ssl_client_serial\n"; }}
    }}
}}
"#,
            chain = cert_chain.display(),
            key = key.display(),
            bundle = bundle.display(),
            crl = crl.display(),
        );
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("nginx.conf");
        let nginx = peers::which("nginx").expect("nginx");
        let test = run(
            &nginx,
            &["-t", "-c", &conf_path.display().to_string(), "-p", &prefix.display().to_string()],
        );
        assert!(test.success(), "nginx -t refuses the config:\n{test}");
        drop(guard);
        let child = Command::new(nginx)
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(prefix)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nginx");
        let n = Nginx { child, prefix: prefix.into(), port };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not listen:\n{}", n.error_log());
            std::thread::sleep(Duration::from_millis(50));
        }
        n
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/", self.port)
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("logs/error.log")).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        run("kill", &[format!("-{sig}"), self.child.id().to_string()]).ok();
    }

    pub fn get(&self, cacert: &Path, client: Option<(&Path, &Path)>) -> Resp {
        let mut r = Request::get(self.url()).cacert(cacert).http2();
        if let Some((c, k)) = client {
            r = r.client(c, k);
        }
        r.send()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // Graceful stop; then make sure.
        let _ = Command::new("kill").arg("-QUIT").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
