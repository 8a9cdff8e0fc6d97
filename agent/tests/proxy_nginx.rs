//! The proxy against nginx standing in for CloudFront (client certificates required from
//! the CA's bundle, CRL checked): HTTP/2 and HTTP/1.1 upstreams, the certificate nginx
//! sees, refusal without a certificate, the forward-proxy allow-list, a renewal under load
//! with no failed request, streaming a large download and upload in bounded memory, and a
//! revoked credential answered with 503.
//!
//! nginx is a peer: with CI=true its absence fails these tests instead of skipping them.

mod common;

use bytes::Bytes;
use common::{Ca, enrol, lanyard, status, text};
use http_body_util::{BodyExt, Empty, StreamBody};
use lanyard_ca::authority::RequestMeta;
use lanyard_ca::revocation::Reason;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Nginx {
    child: Child,
    h2: u16,
    h1: u16,
}
impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(0)),
            nix::sys::signal::Signal::SIGQUIT,
        );
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

fn wait_port(port: u16) {
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(20), "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn nginx_binary() -> Option<PathBuf> {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(p).exists() {
            return Some(PathBuf::from(p));
        }
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "nginx is missing (apt-get install nginx-light)"
    );
    eprintln!("SKIPPED: nginx is not installed");
    None
}

fn start_nginx(tmp: &Path, ca: &Ca) -> Option<Nginx> {
    let bin = nginx_binary()?;
    let prefix = tmp.join("nginx");
    std::fs::create_dir_all(prefix.join("logs")).expect("nginx dir");
    // A sparse 1 GiB file for the streaming test.
    let big = std::fs::File::create(prefix.join("big.bin")).expect("big");
    big.set_len(1 << 30).expect("sparse");
    let (h2, h1) = (free_port(), free_port());
    let d = ca.dir.display();
    let p = prefix.display();
    let server = |port: u16, http2: &str| {
        format!(
            "server {{
                listen 127.0.0.1:{port} ssl{http2};
                ssl_certificate {d}/tls/server.crt;
                ssl_certificate_key {d}/tls/server.key;
                ssl_verify_client on;
                ssl_client_certificate {d}/ca-bundle.pem;
                ssl_verify_depth 2;
                ssl_crl {d}/crl/crl.pem;
                client_max_body_size 0;
                # Retire connections often, as CloudFront does: HTTP/2 GOAWAY, HTTP/1.1 close.
                keepalive_requests 100;
                location = /big {{ alias {p}/big.bin; }}
                location = /upload {{ return 200 \"uploaded\\n\"; }}
                location / {{ return 200 \"$ssl_client_serial $server_protocol\\n\"; }}
            }}"
        )
    };
    let conf = format!(
        "daemon off; worker_processes 1; pid {p}/nginx.pid; error_log {p}/logs/error.log;
         events {{ worker_connections 1024; }}
         http {{
            access_log off;
            client_body_temp_path {p}/body; proxy_temp_path {p}/proxy; fastcgi_temp_path {p}/fcgi;
            uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;
            {}
            {}
         }}",
        server(h2, " http2"),
        server(h1, "")
    );
    std::fs::write(prefix.join("nginx.conf"), conf).expect("conf");
    let child = Command::new(bin)
        .args([
            "-c",
            &format!("{p}/nginx.conf"),
            "-p",
            &p.to_string(),
            "-e",
            &format!("{p}/logs/error.log"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx");
    wait_port(h2);
    wait_port(h1);
    Some(Nginx { child, h2, h1 })
}

/// A TLS server that refuses a revoked or unknown client certificate in the handshake (a
/// fatal alert), as CloudFront's viewer mTLS does, and answers `-www` status pages.
fn s_server(ca: &Ca, port: u16) -> Kill {
    let d = ca.dir.display();
    let child = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept", &format!("127.0.0.1:{port}")])
        .args(["-cert", &format!("{d}/tls/server.crt"), "-key", &format!("{d}/tls/server.key")])
        .args(["-Verify", "2", "-verify_return_error", "-CAfile", &format!("{d}/ca-bundle.pem")])
        .args(["-crl_check", "-CRLform", "DER", "-CRL", &format!("{d}/crl/issuing.crl")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    wait_port(port);
    Kill(child)
}

fn proxy(ca: &Ca, state: &Path, upstream_port: u16, allow: &[&str]) -> (Kill, u16) {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lanyard"));
    cmd.args(["--store", "file", "--state-dir"])
        .arg(state)
        .args([
            "proxy",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--upstream",
            &format!("https://127.0.0.1:{upstream_port}"),
            "--upstream-ca",
            &ca.root(),
        ])
        .env("LANYARD_CONFIG", "/dev/null")
        .env("LANYARD_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(proxy_log(state, port)).expect("proxy log"));
    for a in allow {
        cmd.args(["--allow", a]);
    }
    let child = Kill(cmd.spawn().expect("proxy"));
    wait_port(port);
    (child, port)
}

/// Where a proxy's log goes, so that a failed assertion can show it.
fn proxy_log(state: &Path, port: u16) -> PathBuf {
    state.with_file_name(format!("proxy-{port}.log"))
}

fn read_log(state: &Path, port: u16) -> String {
    std::fs::read_to_string(proxy_log(state, port)).unwrap_or_default()
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Empty<Bytes>,
>;

fn client() -> Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

async fn get(c: &Client, url: &str) -> (u16, String) {
    let resp = c.get(url.parse().expect("url")).await.expect("GET");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmHWM:")
                .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxy_against_nginx() {
    let tmp = tempfile::tempdir().expect("tmp");
    let ca = Ca::start(tmp.path()).await;
    let state = tmp.path().join("agent");
    let first = enrol(&ca, &state, "dev-p1.fleet.example.com").await["serial"]
        .as_str()
        .expect("serial")
        .to_owned();
    let Some(nginx) = start_nginx(tmp.path(), &ca) else { return };
    let (proxy2, p2) = proxy(&ca, &state, nginx.h2, &[]);
    let (proxy1, p1) = proxy(&ca, &state, nginx.h1, &[]);
    let c = client();

    // HTTP/2 and HTTP/1.1 toward the upstream; nginx sees this device's certificate.
    let (code, body) = get(&c, &format!("http://127.0.0.1:{p2}/hello")).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("HTTP/2.0"), "{body}");
    assert_eq!(body.split_whitespace().next().unwrap_or("").to_ascii_lowercase(), first, "{body}");
    let (code, body) = get(&c, &format!("http://127.0.0.1:{p1}/hello")).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("HTTP/1.1"), "{body}");

    // Without a client certificate nginx answers 400 (CloudFront would fail the handshake).
    let out = Command::new("curl")
        .args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("https://127.0.0.1:{}/", nginx.h2),
        ])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "400");

    // `lanyard export` gives PEM files that curl presents as they are.
    let (crt, key) = (tmp.path().join("dev.crt"), tmp.path().join("dev.key"));
    let o = lanyard(
        &state,
        &["export", "--cert", crt.to_str().expect("p"), "--key", key.to_str().expect("p")],
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let out = Command::new("curl")
        .args(["-s", "--cacert", &ca.root(), "--cert"])
        .arg(&crt)
        .arg("--key")
        .arg(&key)
        .args(["-w", "\n%{http_code}", &format!("https://127.0.0.1:{}/exported", nginx.h2)])
        .output()
        .expect("curl");
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.ends_with("200") && s.to_ascii_lowercase().starts_with(&first),
        "curl with the exported files: {s}"
    );

    // Forward proxy: only allow-listed hosts; nothing else is even connected to.
    let out = Command::new("curl")
        .args([
            "-s",
            "-x",
            &format!("http://127.0.0.1:{p2}"),
            "-w",
            "\n%{http_code}",
            "http://not-allowed.example/",
        ])
        .output()
        .expect("curl");
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.ends_with("403") && s.contains("allow-list"), "{s}");
    let out = Command::new("curl")
        .args([
            "-s",
            "-x",
            &format!("http://127.0.0.1:{p2}"),
            "-w",
            "\n%{http_code}",
            &format!("http://127.0.0.1:{}/fwd", nginx.h2),
        ])
        .output()
        .expect("curl");
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.ends_with("200"), "an allow-listed absolute URL is fetched: {s}");

    // What a web page could make a browser send (DNS rebinding, cross-site requests) is
    // refused with 403 and says why; the proxy's own names are served.
    let curl = |extra: &[&str], url: String| {
        let out = Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}"])
            .args(extra)
            .arg(url)
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let own = format!("http://127.0.0.1:{p2}/own");
    let s = curl(&["-H", &format!("Host: attacker.example:{p2}")], own.clone());
    assert!(s.ends_with("403") && s.contains("DNS rebinding"), "{s}");
    let s = curl(&["-H", "Origin: http://attacker.example"], own.clone());
    assert!(s.ends_with("403") && s.contains("origin"), "{s}");
    let s = curl(&["-H", "Sec-Fetch-Site: cross-site"], own.clone());
    assert!(s.ends_with("403") && s.contains("cross-site"), "{s}");
    let s = curl(
        &["-H", &format!("Host: localhost:{p2}"), "-H", &format!("Origin: http://localhost:{p2}")],
        own.clone(),
    );
    assert!(s.ends_with("200"), "the proxy's own name and origin are served: {s}");
    let s = curl(&["-X", "OPTIONS", "--request-target", "*"], format!("http://127.0.0.1:{p2}"));
    assert!(s.ends_with("400"), "OPTIONS * is not proxied: {s}");
    // The allow-list is host and port: the upstream's host on another port is refused.
    let s = curl(&["-x", &format!("http://127.0.0.1:{p2}")], "http://127.0.0.1:1/".into());
    assert!(s.ends_with("403") && s.contains("allow-list"), "{s}");

    // A renewal by another process while requests run, with nginx retiring connections every
    // 100 requests: none fails, and new connections carry the new certificate within seconds.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, url) = (stop.clone(), format!("http://127.0.0.1:{p2}/load"));
        load.push(tokio::spawn(async move {
            let c = client();
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match c.get(url.parse().expect("url")).await {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.into_body().collect().await;
                        ok += 1;
                    }
                    Ok(r) => failed.push(r.status().to_string()),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let o = lanyard(&state, &["renew", "--force"]).await;
    assert!(o.status.success(), "{}", text(&o));
    let second = status(&state).await["serial"].as_str().expect("serial").to_owned();
    assert_ne!(second, first);
    let t = Instant::now();
    let mut seen = String::new();
    while t.elapsed() < Duration::from_secs(15) {
        let (_, body) = get(&client(), &format!("http://127.0.0.1:{p2}/new")).await;
        seen = body.split_whitespace().next().unwrap_or("").to_ascii_lowercase();
        if seen == second {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(seen, second, "new connections carry the renewed certificate");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for l in load {
        let (o, f) = l.await.expect("load task");
        ok += o;
        failed.extend(f);
    }
    assert!(ok > 20, "the load ran: {ok}");
    assert!(
        failed.is_empty(),
        "requests failed during the renewal: {failed:?}\nproxy log:\n{}",
        read_log(&state, p2)
    );

    // Streaming: 1 GiB down and 256 MiB up through each route (HTTP/2 upstream: the h2
    // streams' flow control; HTTP/1.1: the pooled client), in bounded memory.
    for (route, pid, port) in [("HTTP/2", proxy2.0.id(), p2), ("HTTP/1.1", proxy1.0.id(), p1)] {
        let resp = c
            .get(format!("http://127.0.0.1:{port}/big").parse().expect("url"))
            .await
            .expect("GET big");
        assert_eq!(resp.status(), 200, "{route}");
        let mut body = resp.into_body();
        let mut total: u64 = 0;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("frame").into_data() {
                total += data.len() as u64;
            }
        }
        assert_eq!(total, 1 << 30, "{route}");
        let chunk = Bytes::from(vec![7u8; 1 << 20]);
        let stream = futures_util::stream::iter(
            (0..256).map(move |_| Ok::<_, std::io::Error>(hyper::body::Frame::data(chunk.clone()))),
        );
        let upload =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<StreamBody<_>>()
                .request(
                    http::Request::post(format!("http://127.0.0.1:{port}/upload"))
                        .header("content-length", (256u64 << 20).to_string())
                        .body(StreamBody::new(stream))
                        .expect("request"),
                )
                .await
                .expect("upload");
        assert_eq!(upload.status(), 200, "{route}");
        let peak = peak_rss_kib(pid);
        eprintln!(
            "{route} route: proxy peak RSS {peak} KiB after 1 GiB down and 256 MiB up; {ok} requests during the renewal, none failed"
        );
        assert!(
            peak > 0 && peak < 64 * 1024,
            "{route} route: proxy peak RSS {peak} KiB after 1 GiB down and 256 MiB up (limit 64 MiB)"
        );
    }

    // Revoked, and nobody tells the proxy. The upstream refuses the certificate in the TLS
    // handshake, as CloudFront does (nginx would finish the handshake and answer 400, so
    // `openssl s_server -verify_return_error` with the CA's CRL stands in for CloudFront
    // here). The proxy answers 502 saying so and asks the identity side to check in now
    // (`lanyard proxy` has no check-ins of its own), which learns of the revocation: from
    // then on 503 naming the reason, before any request leaves.
    let tls_port = free_port();
    let crls = lanyard_ca::ca_dir::CaDir::new(&ca.dir);
    crls.publish_crls(&ca.auth()).await.expect("crl");
    let refuser = s_server(&ca, tls_port);
    let (_proxy3, p3) = proxy(&ca, &state, tls_port, &[]);
    let (code, body) = get(&client(), &format!("http://127.0.0.1:{p3}/before")).await;
    assert_eq!(code, 200, "{body}; {}", read_log(&state, p3));
    ca.auth()
        .revoke(&second, Reason::KeyCompromise, false, "test", &RequestMeta::default())
        .await
        .expect("revoke");
    crls.publish_crls(&ca.auth()).await.expect("crl");
    drop(refuser);
    let _refuser = s_server(&ca, tls_port);
    let t = Instant::now();
    let mut seen = Vec::new();
    let (mut code, mut body) = (0, String::new());
    while t.elapsed() < Duration::from_secs(30) {
        (code, body) = get(&client(), &format!("http://127.0.0.1:{p3}/after")).await;
        if seen.last() != Some(&code) {
            seen.push(code);
        }
        if code == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(code, 503, "answers {seen:?}; {body}; {}", read_log(&state, p3));
    assert!(body.contains("revoked") && body.contains("keyCompromise"), "{body}");
    assert_eq!(seen, [502, 503], "a refusal, then the gate closed");
    // The proxy in front of nginx shares the state directory: it learns it from the store,
    // not from the CA, and never sends the revoked certificate.
    let t = Instant::now();
    loop {
        (code, body) = get(&client(), &format!("http://127.0.0.1:{p2}/after")).await;
        if code == 503 || t.elapsed() > Duration::from_secs(10) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("revoked"), "{body}");
    drop(nginx);
}
