//! `lanyard-loop`: the whole Lanyard loop on this machine, on embedded defaults, with the
//! real binaries: a CA, an enrolment, the key in a credential store, a local mTLS server
//! standing in for CloudFront, the proxy, a request through it, a renewal, a revocation.
//!
//! Run it with `./scripts/loop.sh` (which builds the binaries first). It prints each step
//! as the command a person would type, checks each outcome, and exits non-zero on the first
//! step that does not do what it should.
#![forbid(unsafe_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn bin(name: &str) -> PathBuf {
    let dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    dir.join(name)
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn show(args: &[&str]) {
    println!("\n$ {}", args.join(" "));
}

/// Runs a command to completion, printing its output; returns stdout.
fn run(args: &[&str]) -> Result<String, String> {
    show(args);
    let out = Command::new(bin(args[0]))
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stdout}");
    for line in stderr.lines().filter(|l| !l.contains(" INFO ")) {
        println!("{line}");
    }
    if !out.status.success() {
        return Err(format!("`{}` failed ({})", args.join(" "), out.status));
    }
    Ok(stdout)
}

fn spawn(args: &[&str], log: &Path) -> Result<Child, String> {
    show(&[&args.join(" "), "&"]);
    let f = std::fs::File::create(log).map_err(|e| e.to_string())?;
    let f2 = f.try_clone().map_err(|e| e.to_string())?;
    Command::new(bin(args[0]))
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(f)
        .stderr(f2)
        .spawn()
        .map_err(|e| format!("{}: {e}", args[0]))
}

fn wait_port(port: u16, what: &str) -> Result<(), String> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("{what} did not start listening on port {port}"))
}

/// GET through the proxy (plain HTTP on loopback, as any local program would).
async fn get(url: &str) -> Result<(u16, String), String> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let resp = client.get(uri).await.map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn field<'a>(body: &'a str, key: &str) -> Option<&'a str> {
    body.lines().find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

fn as_refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn check(ok: bool, what: &str) -> Result<(), String> {
    if ok {
        println!("  ok: {what}");
        Ok(())
    } else {
        Err(format!("expected: {what}"))
    }
}

async fn lanyard_loop(work: &Path) -> Result<(), String> {
    let ca = work.join("ca");
    let agent = work.join("agent");
    let (p_ca, p_pub, p_edge, p_proxy) = (free_port()?, free_port()?, free_port()?, free_port()?);
    let s = |p: &Path| p.display().to_string();
    let mut kids = Children(Vec::new());

    println!("== 1. A CA (embedded: key files and SQLite in {})", s(&ca));
    let public = format!("http://127.0.0.1:{p_pub}");
    run(&["lanyard-ca", "init", "--dir", &s(&ca), "--public-url", &public])?;
    run(&["lanyard-ca", "bundle", "--dir", &s(&ca)])?;
    kids.0.push(spawn(
        &[
            "lanyard-ca",
            "serve",
            "--dir",
            &s(&ca),
            "--listen",
            &format!("127.0.0.1:{p_ca}"),
            "--http-listen",
            &format!("127.0.0.1:{p_pub}"),
        ],
        &work.join("ca.log"),
    )?);
    wait_port(p_ca, "lanyard-ca")?;

    println!(
        "\n== 2. A one-time token, and the device enrols (key generated here, kept in the file store)"
    );
    let token = run(&[
        "lanyard-ca",
        "token",
        "create",
        "--dir",
        &s(&ca),
        "--identity",
        "device-0001.fleet.example.com",
        "--ttl",
        "1h",
    ])?;
    let token = token.trim();
    let agent_args = ["--store", "file", "--state-dir"];
    let lanyard = |rest: &[&str]| -> Vec<String> {
        let mut v = vec!["lanyard".to_owned()];
        v.extend(agent_args.iter().map(|x| x.to_string()));
        v.push(s(&agent));
        v.extend(rest.iter().map(|x| x.to_string()));
        v
    };
    let ca_url = format!("https://127.0.0.1:{p_ca}");
    run(&as_refs(&lanyard(&[
        "enrol",
        "--ca",
        &ca_url,
        "--token",
        token,
        "--ca-bundle",
        &s(&ca.join("root.crt")),
    ])))?;
    let status: serde_json::Value =
        serde_json::from_str(&run(&as_refs(&lanyard(&["status", "--json"])))?)
            .map_err(|e| e.to_string())?;
    check(status["state"] == "valid", "the agent reports a valid certificate")?;
    let first = status["serial"].as_str().unwrap_or_default().to_owned();

    println!(
        "\n== 3. A local mTLS server standing in for CloudFront (client certificate required, CRL checked)"
    );
    kids.0.push(spawn(
        &[
            "lanyard-edge-standin",
            "--listen",
            &format!("127.0.0.1:{p_edge}"),
            "--cert",
            &s(&ca.join("tls/server.crt")),
            "--key",
            &s(&ca.join("tls/server.key")),
            "--client-ca",
            &s(&ca.join("ca-bundle.pem")),
            "--crl",
            &s(&ca.join("crl/crl.pem")),
        ],
        &work.join("edge.log"),
    )?);
    wait_port(p_edge, "the edge stand-in")?;

    println!("\n== 4. The proxy: plain HTTP on loopback in, mTLS with the device certificate out");
    let upstream = format!("https://127.0.0.1:{p_edge}");
    kids.0.push(spawn(
        &as_refs(&lanyard(&[
            "proxy",
            "--listen",
            &format!("127.0.0.1:{p_proxy}"),
            "--upstream",
            &upstream,
            "--upstream-ca",
            &s(&ca.join("root.crt")),
        ])),
        &work.join("proxy.log"),
    )?);
    wait_port(p_proxy, "lanyard proxy")?;

    println!("\n== 5. A request through the proxy");
    let url = format!("http://127.0.0.1:{p_proxy}/hello");
    show(&["GET", &url]);
    let (code, body) = get(&url).await?;
    print!("{code}\n{body}");
    check(code == 200, "200 from the edge")?;
    let seen = field(&body, "serial").unwrap_or_default().replace(':', "");
    check(
        seen.trim_start_matches('0') == first.trim_start_matches('0'),
        "the edge saw the enrolled certificate",
    )?;

    println!("\n== 6. A renewal (new key, new certificate) while the proxy runs");
    run(&as_refs(&lanyard(&["renew", "--force"])))?;
    let status: serde_json::Value =
        serde_json::from_str(&run(&as_refs(&lanyard(&["status", "--json"])))?)
            .map_err(|e| e.to_string())?;
    let second = status["serial"].as_str().unwrap_or_default().to_owned();
    check(second != first && !second.is_empty(), "a new serial")?;
    let t = Instant::now();
    let mut now_seen = String::new();
    while t.elapsed() < Duration::from_secs(10) {
        let (code, body) = get(&url).await?;
        now_seen = field(&body, "serial").unwrap_or_default().replace(':', "");
        if code == 200 && now_seen.trim_start_matches('0') == second.trim_start_matches('0') {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    show(&["GET", &url]);
    println!("serial={now_seen}");
    check(
        now_seen.trim_start_matches('0') == second.trim_start_matches('0'),
        "the proxy presents the new certificate, without a restart",
    )?;

    println!("\n== 7. A revocation");
    run(&[
        "lanyard-ca",
        "revoke",
        "--dir",
        &s(&ca),
        "--serial",
        &second,
        "--reason",
        "keyCompromise",
    ])?;
    run(&["lanyard-ca", "revoked", "--dir", &s(&ca), "--format", "text"])?;
    let _ = run(&as_refs(&lanyard(&["status", "--refresh"])));
    let t = Instant::now();
    let (mut code, mut body) = (0, String::new());
    while t.elapsed() < Duration::from_secs(10) {
        (code, body) = get(&url).await?;
        if code == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    show(&["GET", &url]);
    print!("{code}\n{body}");
    check(
        code == 503 && body.contains("revoked"),
        "the proxy refuses to forward with a revoked certificate, and says why",
    )?;
    let renew = Command::new(bin("lanyard"))
        .args(&as_refs(&lanyard(&["renew", "--force"]))[1..])
        .output()
        .map_err(|e| e.to_string())?;
    check(!renew.status.success(), "a revoked device cannot renew")?;
    drop(kids);
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    for b in ["lanyard-ca", "lanyard", "lanyard-edge-standin"] {
        if !bin(b).exists() {
            eprintln!("lanyard-loop: {} is not built; run ./scripts/loop.sh", bin(b).display());
            return ExitCode::FAILURE;
        }
    }
    let keep = std::env::var_os("LANYARD_LOOP_DIR").map(PathBuf::from);
    let tmp = match tempfile::tempdir() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("lanyard-loop: {e}");
            return ExitCode::FAILURE;
        }
    };
    let work = keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let _ = std::fs::create_dir_all(&work);
    match lanyard_loop(&work).await {
        Ok(()) => {
            println!(
                "\nThe whole loop works: CA, enrolment, credential store, edge, proxy, request, renewal, revocation."
            );
            if keep.is_some() {
                println!("Files kept in {}", work.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "\nlanyard-loop: FAILED: {e}\n(logs: {}/*.log; set LANYARD_LOOP_DIR to keep them)",
                work.display()
            );
            if keep.is_none() {
                for l in ["ca.log", "edge.log", "proxy.log"] {
                    if let Ok(t) = std::fs::read_to_string(work.join(l)) {
                        eprintln!(
                            "--- {l}\n{}",
                            t.lines()
                                .rev()
                                .take(15)
                                .collect::<Vec<_>>()
                                .into_iter()
                                .rev()
                                .collect::<Vec<_>>()
                                .join("\n")
                        );
                    }
                }
            }
            ExitCode::FAILURE
        }
    }
}
