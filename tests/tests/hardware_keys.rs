//! Device keys in hardware: `[store] backend = "pkcs11"` on a SoftHSM2 token (the test
//! makes its own token directory) and `backend = "tpm"` on swtpm (a software TPM 2.0 the
//! test starts). The agent generates the key in the hardware, enrols, renews with a new key
//! each time (the old key gone), proxies to nginx requiring client certificates, survives
//! SIGKILLs during renewal with one matching pair, and says clearly what is wrong with a
//! wrong PIN, a missing token, a deleted key or a TPM that stopped answering (503 from the
//! proxy until it is back). From outside, `pkcs11-tool` (OpenSC) checks the token's key is
//! sensitive and never extractable, and `tpm2_print` (tpm2-tools) that the TPM's key is
//! fixedTPM, fixedParent and generated inside.

use lanyard_e2e::ca::free_port;
use lanyard_e2e::cmd::{Out, run_cmd};
use lanyard_e2e::nginx::Nginx;
use lanyard_e2e::{Ca, Server, peers};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian and others put SoftHSM2's module.
fn softhsm_module() -> Option<PathBuf> {
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib64/pkcs11/libsofthsm2.so",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

/// A SoftHSM2 token labelled `lanyard` (user PIN 1234) in a directory of its own.
struct Token {
    conf: PathBuf,
    module: PathBuf,
}

impl Token {
    fn new(dir: &Path) -> Token {
        let module = softhsm_module().expect("libsofthsm2.so (Debian: apt-get install softhsm2)");
        let tokens = dir.join("softhsm-tokens");
        std::fs::create_dir_all(&tokens).expect("token dir");
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!("directories.tokendir = {}\nobjectstore.backend = file\n", tokens.display()),
        )
        .expect("softhsm2.conf");
        let t = Token { conf, module };
        t.cmd(
            "softhsm2-util",
            &["--init-token", "--free", "--label", "lanyard", "--pin", "1234", "--so-pin", "5678"],
        )
        .ok();
        t
    }

    fn cmd(&self, program: &str, args: &[&str]) -> Out {
        let mut c = Command::new(peers::which(program).expect(program));
        c.args(args).env("SOFTHSM2_CONF", &self.conf);
        run_cmd(&mut c, None)
    }

    /// `pkcs11-tool` logged in to the token as the user, with `args` after.
    fn user_tool(&self, args: &[&str]) -> Out {
        let m = self.module.display().to_string();
        let mut all = vec!["--module", &m, "--token-label", "lanyard", "--login", "--pin", "1234"];
        all.extend_from_slice(args);
        self.cmd("pkcs11-tool", &all)
    }

    /// `pkcs11-tool --list-objects` as the user: every object with its flags.
    fn objects(&self) -> String {
        self.user_tool(&["--list-objects"]).ok().stdout
    }

    /// The private keys on the token: (label, id hex, the block pkcs11-tool printed).
    fn private_keys(&self) -> Vec<(String, String, String)> {
        let listing = self.objects();
        listing
            .split("Private Key Object")
            .skip(1)
            .map(|block| {
                let block = block.split("Public Key Object").next().unwrap_or(block);
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_owned()))
                        .unwrap_or_default()
                };
                (field("label:"), field("ID:"), block.to_owned())
            })
            .collect()
    }
}

/// An agent whose config file names the token.
struct Device {
    token_conf: PathBuf,
    config: PathBuf,
    state: PathBuf,
}

impl Device {
    /// A device whose key is in the TPM at `tcti`.
    fn tpm(dir: &Path, name: &str, tcti: &str) -> Device {
        let state = dir.join(format!("{name}-state"));
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[store]\nbackend = \"tpm\"\npath = \"{}\"\ntcti = \"{tcti}\"\n",
                state.display()
            ),
        )
        .expect("agent config");
        Device { token_conf: dir.join("no-softhsm.conf"), config, state }
    }

    /// The handle files in the state directory.
    fn handles(&self) -> Vec<serde_json::Value> {
        std::fs::read_dir(self.state.join("keys"))
            .expect("keys dir")
            .flatten()
            .map(|e| {
                let text = std::fs::read_to_string(e.path()).expect("handle");
                serde_json::from_str(&text).expect("handle JSON")
            })
            .collect()
    }

    fn new(dir: &Path, token: &Token, name: &str, token_label: &str, pin: &str) -> Device {
        let state = dir.join(format!("{name}-state"));
        let pin_file = dir.join(format!("{name}.pin"));
        std::fs::write(&pin_file, format!("{pin}\n")).expect("pin file");
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[store]\nbackend = \"pkcs11\"\npath = \"{}\"\nmodule = \"{}\"\ntoken_label = \"{token_label}\"\npin_file = \"{}\"\n",
                state.display(),
                token.module.display(),
                pin_file.display()
            ),
        )
        .expect("agent config");
        Device { token_conf: token.conf.clone(), config, state }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(lanyard_e2e::bins::bin("lanyard"));
        cmd.args(args).env("LANYARD_CONFIG", &self.config).env("SOFTHSM2_CONF", &self.token_conf);
        cmd
    }

    fn run(&self, args: &[&str]) -> Out {
        run_cmd(&mut self.command(args), None)
    }

    fn enrol(&self, srv: &Server, token: &str) -> Out {
        let root = srv.cacert.display().to_string();
        self.run(&["enrol", "--ca", &srv.url(""), "--token", token, "--ca-bundle", &root])
    }

    fn status(&self) -> serde_json::Value {
        let out = self.run(&["status", "--json"]);
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("status JSON: {e}\n{out}"))
    }

    fn serial(&self) -> String {
        let v = self.status();
        assert_eq!(v["state"], "valid", "{v}");
        v["serial"].as_str().expect("serial").to_owned()
    }
}

/// A running `lanyard proxy`, killed when dropped.
struct Proxy {
    child: Child,
    port: u16,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    fn start(dev: &Device, upstream: &str, upstream_ca: &Path) -> Proxy {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let ca = upstream_ca.display().to_string();
        let child = dev
            .command(&["proxy", "--listen", &listen, "--upstream", upstream, "--upstream-ca", &ca])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start lanyard proxy");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "the proxy did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Proxy { child, port }
    }

    /// A new connection each time (`curl`), so each request is a new upstream handshake
    /// only when the proxy has no pooled connection; returns (status, body).
    fn get(&self) -> (u16, String) {
        let out = run_cmd(
            Command::new("curl").args([
                "-sS",
                "-w",
                "\n%{http_code}",
                &format!("http://127.0.0.1:{}/", self.port),
            ]),
            None,
        );
        let (body, code) = out.stdout.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }
}

fn same_serial(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.replace(':', "").trim().trim_start_matches('0').to_ascii_lowercase();
    norm(a) == norm(b)
}

/// `lanyard renew --force` SIGKILLed `rounds` times at moments spread over a renewal
/// (`from` ms in, then `step` ms later each round, wrapping at `from + span`); after each,
/// status must load a valid, matching pair. Returns the serials seen.
fn sigkill_renewals(dev: &Device, rounds: u64, from: u64, step: u64, span: u64) -> Vec<String> {
    let mut serials = Vec::new();
    for round in 0..rounds {
        let mut child = dev
            .command(&["renew", "--force"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn renew");
        std::thread::sleep(Duration::from_millis(from + (round * step) % span));
        let _ = child.kill();
        let _ = child.wait();
        let v = dev.status();
        if v["state"] != "valid" {
            eprintln!("{}", dev.run(&["-vv", "status"]));
        }
        assert_eq!(v["state"], "valid", "round {round}: after SIGKILL: {v}");
        serials.push(v["serial"].as_str().expect("serial").to_owned());
    }
    serials
}

#[test]
fn a_pkcs11_token_holds_the_device_key_through_enrolment_renewal_and_crashes() {
    if !peers::require_peers(&["softhsm2-util", "pkcs11-tool", "nginx", "curl"]) {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let token = Token::new(&ca.work);

    // A token that is not there, then a wrong PIN: each says so, and the enrolment token
    // is still good afterwards (the store is checked before it is spent).
    let id = "hsm-1.fleet.example.com";
    let enrol_token = ca.token(id);
    let absent = Device::new(&ca.work, &token, "absent", "no-such-token", "1234");
    let out = absent.enrol(&srv, &enrol_token);
    assert!(!out.success(), "enrolled without a token:\n{out}");
    assert!(
        out.all().contains("no token \"no-such-token\"") && out.all().contains("\"lanyard\""),
        "the error does not name the missing token and the ones present:\n{out}"
    );
    let wrong = Device::new(&ca.work, &token, "wrong-pin", "lanyard", "9999");
    let out = wrong.enrol(&srv, &enrol_token);
    assert!(!out.success(), "enrolled with a wrong PIN:\n{out}");
    assert!(
        out.all().contains("PIN") && out.all().contains("wrong") && !out.all().contains("9999"),
        "the error does not say the PIN is wrong (or shows it):\n{out}"
    );
    assert!(token.private_keys().is_empty(), "a failed enrolment left a key on the token");

    // Enrolment: the key is generated on the token, sensitive and never extractable.
    let dev = Device::new(&ca.work, &token, "device", "lanyard", "1234");
    dev.enrol(&srv, &enrol_token).ok();
    let first = dev.serial();
    let keys = token.private_keys();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let (label, first_id, block) = &keys[0];
    assert!(label.starts_with("lanyard/default/"), "{label}");
    assert!(
        block.contains("never extractable") && block.contains("sensitive"),
        "the key on the token is not sensitive and never extractable:\n{block}"
    );
    let status = dev.status();
    assert_eq!(status["key_protection"], "PKCS#11 token, non-extractable", "{status}");
    assert!(status["store"].as_str().is_some_and(|s| s.contains("PKCS#11 token \"lanyard\"")));

    // The state directory holds a handle, not a key.
    let handles: Vec<_> = std::fs::read_dir(dev.state.join("keys"))
        .expect("keys dir")
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).expect("handle"))
        .collect();
    assert_eq!(handles.len(), 1);
    assert!(handles[0].contains("\"backend\":\"pkcs11\"") && !handles[0].contains("PRIVATE"));

    // Export: the certificate yes, the key no (and nothing written when refused).
    let cert = ca.work.join("exported.pem");
    let key = ca.work.join("exported.key");
    let (c, k) = (cert.display().to_string(), key.display().to_string());
    let out = dev.run(&["export", "--cert", &c, "--key", &k]);
    assert!(!out.success() && out.all().contains("cannot be exported"), "{out}");
    assert!(!cert.exists() && !key.exists(), "a refused export wrote files");
    dev.run(&["export", "--cert", &c]).ok();
    assert!(std::fs::read_to_string(&cert).expect("cert").contains("BEGIN CERTIFICATE"));

    // Through the proxy to nginx requiring client certificates: the handshake is signed on
    // the token.
    let nginx = Nginx::for_ca(&ca);
    let proxy = Proxy::start(&dev, &nginx.url(), &ca.root_crt());
    let (code, body) = proxy.get();
    assert_eq!(code, 200, "{body}\n{}", nginx.error_log());
    assert!(same_serial(&body, &first), "nginx saw {body}, enrolled {first}");

    // Renewal: a new key on the token, the old one destroyed.
    dev.run(&["renew", "--force"]).ok();
    let second = dev.serial();
    assert_ne!(second, first);
    let keys = token.private_keys();
    assert_eq!(keys.len(), 1, "the old key is still on the token: {keys:?}");
    assert_ne!(&keys[0].1, first_id, "the renewal kept the old key");
    let started = Instant::now();
    loop {
        let (code, body) = proxy.get();
        if code == 200 && same_serial(&body, &second) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "proxy still at {code} {body}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // SIGKILL at random moments of a renewal: one matching pair every time (status loads
    // the pair and checks the certificate's key is the token's), and the next renewal
    // leaves exactly one key on the token.
    let mut serials = vec![second.clone()];
    serials.extend(sigkill_renewals(&dev, 12, 20, 37, 260));
    dev.run(&["renew", "--force"]).ok();
    let last = dev.serial();
    // SoftHSM2 runs inside the killed process: a SIGKILL in the middle of its
    // C_GenerateKeyPair can leave its own half-written object (no label, no id, none of
    // the attributes the agent asked for). A token that generates inside the device has no
    // such middle; nothing identifies that debris as ours, so the agent leaves it alone, and
    // the test counts the agent's keys (the label it gives every key) and reports the rest.
    let keys = token.private_keys();
    let ours: Vec<_> = keys.iter().filter(|(label, _, _)| label.starts_with("lanyard/")).collect();
    assert_eq!(ours.len(), 1, "keys left on the token after the kills: {keys:?}");
    let debris = keys.iter().filter(|(label, id, _)| label.is_empty() && id.is_empty()).count();
    assert_eq!(keys.len(), ours.len() + debris, "a labelled key that is not the agent's: {keys:?}");
    serials.dedup();
    eprintln!(
        "SIGKILL rounds: serials seen in order {serials:?}, then {last}; SoftHSM2 objects half-written by a kill: {debris}"
    );

    // The key deleted from the token behind the agent's back: status says so, and the
    // proxy answers 503 with the reason instead of blaming the upstream.
    let id = ours[0].1.clone();
    token.user_tool(&["--delete-object", "--type", "privkey", "--id", &id]).ok();
    let v = dev.status();
    assert_eq!(v["state"], "key_unavailable", "{v}");
    assert!(v["key_problem"].as_str().is_some_and(|p| p.contains("enrol again")), "{v}");
    drop(proxy);
    let proxy = Proxy::start(&dev, &nginx.url(), &ca.root_crt());
    let (code, body) = proxy.get();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("device key cannot sign"), "{body}");
}

/// swtpm on free ports (server P, control P+1), killed when dropped.
struct Swtpm {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

impl Swtpm {
    /// Starts on a fresh pair of free ports. A port found free can be taken by another
    /// connection before swtpm binds it (ephemeral client ports come from the same range), so
    /// an early exit is retried on another pair.
    fn start(dir: &Path) -> Swtpm {
        std::fs::create_dir_all(dir).expect("swtpm state dir");
        let mut last = String::new();
        for _ in 0..5 {
            let port = loop {
                let p = free_port();
                if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
                    break p;
                }
            };
            match Swtpm::try_start_at(dir, port) {
                Ok(tpm) => return tpm,
                Err(e) => last = e,
            }
        }
        panic!("swtpm did not start on five port pairs; last: {last}");
    }

    /// Starts again on the same ports (a restart); a port briefly held by another test's
    /// connection is waited for, up to two seconds.
    fn start_at(dir: &Path, port: u16) -> Swtpm {
        let mut tries = 0;
        loop {
            match Swtpm::try_start_at(dir, port) {
                Ok(tpm) => return tpm,
                Err(e) if tries == 10 => panic!("{e}"),
                Err(_) => tries += 1,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Starts swtpm on `port` and `port + 1`; `Err` if it exits before listening.
    fn try_start_at(dir: &Path, port: u16) -> Result<Swtpm, String> {
        let mut child = Command::new(peers::which("swtpm").expect("swtpm"))
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", dir.display()))
            .args(["--server", &format!("type=tcp,port={port}")])
            .args(["--ctrl", &format!("type=tcp,port={}", port + 1)])
            .args(["--flags", "not-need-init,startup-clear"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start swtpm");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait().expect("swtpm status") {
                return Err(format!("swtpm exited before listening on {port}: {status}"));
            }
            assert!(started.elapsed() < Duration::from_secs(10), "swtpm did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Swtpm { child: Some(child), dir: dir.to_owned(), port })
    }

    fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn restart(&mut self) {
        self.stop();
        *self = Swtpm::start_at(&self.dir, self.port);
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn a_tpm_holds_the_device_key_and_the_proxy_waits_for_it() {
    if !peers::require_peers(&["swtpm", "tpm2_print", "nginx", "curl"]) {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let mut tpm = Swtpm::start(&ca.work.join("swtpm"));
    let dev = Device::tpm(&ca.work, "tpm-device", &tpm.tcti());

    dev.enrol(&srv, &ca.token("tpm-1.fleet.example.com")).ok();
    let first = dev.serial();
    let status = dev.status();
    assert_eq!(status["key_protection"], "TPM 2.0, non-exportable", "{status}");
    assert!(status["store"].as_str().is_some_and(|s| s.contains("TPM 2.0 at swtpm:")), "{status}");

    // From outside: the key's public area says it was made inside this TPM and cannot
    // leave it (not even wrapped for another parent).
    let handles = dev.handles();
    assert_eq!(handles.len(), 1);
    let public = handles[0]["public"].as_str().expect("public blob");
    let blob = ca.work.join("key.pub");
    std::fs::write(&blob, base64_decode(public)).expect("blob");
    let printed = lanyard_e2e::cmd::run(
        peers::which("tpm2_print").expect("tpm2_print"),
        &["-t", "TPM2B_PUBLIC", &blob.display().to_string()],
    )
    .ok()
    .stdout;
    for attr in ["fixedtpm", "fixedparent", "sensitivedataorigin", "sign"] {
        assert!(printed.contains(attr), "the TPM key lacks {attr}:\n{printed}");
    }
    assert!(!printed.contains("decrypt") && !printed.contains("restricted"), "{printed}");

    let cert = ca.work.join("tpm-exported.pem");
    let out = dev.run(&[
        "export",
        "--cert",
        &cert.display().to_string(),
        "--key",
        &ca.work.join("tpm.key").display().to_string(),
    ]);
    assert!(!out.success() && out.all().contains("TPM 2.0, non-exportable"), "{out}");

    let nginx = Nginx::for_ca(&ca);
    let proxy = Proxy::start(&dev, &nginx.url(), &ca.root_crt());
    let (code, body) = proxy.get();
    assert_eq!(code, 200, "{body}\n{}", nginx.error_log());
    assert!(same_serial(&body, &first), "nginx saw {body}, enrolled {first}");

    // Renewal: a new key; the old handle (the only way to load the old key) is gone.
    let before = handles[0]["private"].clone();
    dev.run(&["renew", "--force"]).ok();
    let second = dev.serial();
    let handles = dev.handles();
    assert_eq!(handles.len(), 1, "{handles:?}");
    assert_ne!(handles[0]["private"], before, "the renewal kept the old key");

    // SIGKILLs during renewals: one matching pair every time.
    sigkill_renewals(&dev, 8, 30, 53, 300);
    dev.run(&["renew", "--force"]).ok();
    let last = dev.serial();
    assert_ne!(last, second);
    assert_eq!(dev.handles().len(), 1, "handles left after the kills");

    // The TPM stops answering: the proxy says why with a 503 (a new upstream connection
    // needs a signature), status names the problem; when the TPM is back, 200 again.
    drop(proxy);
    let proxy = Proxy::start(&dev, &nginx.url(), &ca.root_crt());
    tpm.stop();
    let (code, body) = proxy.get();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("device key cannot sign") && body.contains("swtpm:"), "{body}");
    let v = dev.status();
    assert_eq!(v["state"], "key_unavailable", "{v}");
    tpm.restart();
    let started = Instant::now();
    loop {
        let (code, body) = proxy.get();
        if code == 200 && same_serial(&body, &last) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "still {code} {body} with the TPM back"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(dev.status()["state"], "valid");
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).expect("base64")
}
