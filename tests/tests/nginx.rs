//! nginx as a stand-in for CloudFront viewer mTLS: `ssl_verify_client on` with the CA's
//! bundle accepts an issued certificate over HTTP/2, refuses a missing or foreign one,
//! and, with `ssl_crl` from `lanyard-ca crl`, refuses it once revoked.

use lanyard_e2e::ca::reserve_port;
use lanyard_e2e::est::{self, Request, Resp};
use lanyard_e2e::pki::{self, KeyAlg};
use lanyard_e2e::{Ca, peers, run};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// nginx in a private prefix, unprivileged paths, `daemon off`; stopped with SIGQUIT.
struct Nginx {
    child: Child,
    prefix: PathBuf,
    port: u16,
}

impl Nginx {
    fn start(prefix: &Path, cert_chain: &Path, key: &Path, bundle: &Path, crl: &Path) -> Nginx {
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

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/", self.port)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("logs/error.log")).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        run("kill", &[format!("-{sig}"), self.child.id().to_string()]).ok();
    }

    fn get(&self, cacert: &Path, client: Option<(&Path, &Path)>) -> Resp {
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

#[test]
fn nginx_accepts_issued_and_refuses_revoked_certificates() {
    if !peers::require_basics() || !peers::require_peer("nginx") {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let id = "dev-1.fleet.example.com";
    let (key, csr) = pki::key_and_csr(&ca.work, KeyAlg::P256, id);
    let r = est::enroll(&srv, id, &ca.token(id), &csr.b64).expect(200);
    let leaf = pki::leaf_from_est(&r.body, &ca.work, "leaf");
    let serial = pki::serial_hex(&leaf);

    // nginx's server certificate: the one `serve` made for itself (SAN 127.0.0.1), with
    // the issuing CA as chain. Its CRLs: `lanyard-ca crl --out` (issuing and root).
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
    let nginx = Nginx::start(&prefix, &chain, &ca.path("tls/server.key"), &ca.bundle(), &crl);

    // The issued certificate: 200 over HTTP/2, and nginx saw the right serial.
    let r = nginx.get(&ca.root_crt(), Some((&leaf, &key)));
    assert_eq!(r.status, 200, "{r}\n{}", nginx.error_log());
    assert_eq!(r.http_version, "2", "{r}");
    assert!(
        r.text().trim().eq_ignore_ascii_case(&serial),
        "nginx saw {:?}, issued {serial}",
        r.text()
    );

    // No certificate: 400 (CloudFront would fail the handshake instead).
    let r = nginx.get(&ca.root_crt(), None);
    assert_eq!(r.status, 400, "{r}");
    assert!(r.text().contains("No required SSL certificate"), "{r}");

    // A certificate from another Lanyard CA: 400.
    let other = Ca::init();
    let other_srv = other.serve();
    let (okey, ocsr) = pki::key_and_csr(&other.work, KeyAlg::P256, id);
    let r = est::enroll(&other_srv, id, &other.token(id), &ocsr.b64).expect(200);
    let oleaf = pki::leaf_from_est(&r.body, &other.work, "other");
    let r = nginx.get(&ca.root_crt(), Some((&oleaf, &okey)));
    assert_eq!(r.status, 400, "{r}");

    // Revoke, publish, reload: 400, and the log says why.
    ca.cli(&["revoke", "--serial", &serial, "--reason", "keyCompromise"]).ok();
    ca.cli(&["crl", "--out", &crl.display().to_string()]).ok();
    nginx.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(15);
    let r = loop {
        let r = nginx.get(&ca.root_crt(), Some((&leaf, &key)));
        if r.status == 400 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(r.status, 400, "revoked certificate still accepted after reload:\n{r}");
    assert!(
        r.text().contains("The SSL certificate error"),
        "nginx should refuse for a certificate error: {r}"
    );
    let log = nginx.error_log();
    assert!(log.contains("certificate revoked"), "error log:\n{log}");

    // A certificate issued after the revocation still passes.
    let id2 = "dev-2.fleet.example.com";
    let (key2, csr2) = pki::key_and_csr(&ca.work, KeyAlg::P256, id2);
    let r = est::enroll(&srv, id2, &ca.token(id2), &csr2.b64).expect(200);
    let leaf2 = pki::leaf_from_est(&r.body, &ca.work, "leaf2");
    let r = nginx.get(&ca.root_crt(), Some((&leaf2, &key2)));
    assert_eq!(r.status, 200, "{r}\n{}", nginx.error_log());
}
