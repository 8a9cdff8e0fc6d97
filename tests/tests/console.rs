//! The web console in a real browser: headless Chromium driven through chromedriver
//! (WebDriver), against `lanyard-ca serve --admin-listen` with 20 devices enrolled and
//! checked in over EST and mTLS with curl. Sign in, see the 20 devices, filter, open a
//! device, edit a policy (an invalid value refused with a message), revoke a device after
//! confirming and see it revoked; a request without credentials gets 401; text a device
//! supplied (`<script>` in its report) is shown as text. Screenshots of each page are kept
//! in `target/console-screenshots/` (the overview's is in the README).

use fantoccini::{Client, ClientBuilder, Locator};
use lanyard_e2e::est::{self, Request};
use lanyard_e2e::pki::{self, KeyAlg};
use lanyard_e2e::{Ca, peers};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const XSS: &str = "<script>window.__pwned=1</script><b>bold</b>";

/// chromedriver on a free port; killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> Driver {
    let port = lanyard_e2e::ca::free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting chromedriver");
    let d = Driver { child, url: format!("http://127.0.0.1:{port}") };
    let deadline = Instant::now() + Duration::from_secs(20);
    // curl, not a bare socket: chromedriver keeps the connection open after answering.
    let ready = || {
        Command::new("curl")
            .args(["-sf", "-o", "/dev/null", &format!("http://127.0.0.1:{port}/status")])
            .status()
            .is_ok_and(|s| s.success())
    };
    while !ready() {
        assert!(Instant::now() < deadline, "chromedriver did not answer on port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
    d
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": peers::which("chromium").map(|p| p.display().to_string()).unwrap_or_default(),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--window-size=1280,900"]
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

fn screenshots() -> PathBuf {
    let d = lanyard_e2e::bins::workspace_root().join("target/console-screenshots");
    std::fs::create_dir_all(&d).expect("screenshot dir");
    d
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(screenshots().join(format!("{name}.png")), png).expect("write screenshot");
}

/// The page's text; a page still loading (its body replaced meanwhile) is read again.
async fn text(c: &Client) -> String {
    let mut last = None;
    for _ in 0..50 {
        match c.find(Locator::Css("body")).await {
            Ok(b) => match b.text().await {
                Ok(t) => return t,
                Err(e) => last = Some(e),
            },
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot read the page: {last:?}")
}

/// The page's text once it contains `needle` (a form's answer is loading); panics after
/// 10 s with the text it has.
async fn text_with(c: &Client, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = text(c).await;
        if t.contains(needle) {
            return t;
        }
        assert!(Instant::now() < deadline, "the page never showed {needle:?}:\n{t}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The HTTP status curl gets for `url` with `extra` options.
fn http_status(extra: &[&str], url: &str) -> String {
    let mut args = vec!["-s", "-o", "/dev/null", "-w", "%{http_code}"];
    args.extend_from_slice(extra);
    args.push(url);
    lanyard_e2e::run("curl", &args).ok().stdout
}

/// 20 devices enrolled with curl; each checks in over mTLS. Device 3 reports failing
/// renewals with `busy` and a message with markup in it.
fn fleet(ca: &Ca, srv: &lanyard_e2e::Server) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 1..=20 {
        let id = format!("console-{i:02}.fleet.example.com");
        let token = ca.token(&id);
        let (key, csr) = pki::key_and_csr(&ca.work, KeyAlg::P256, &id);
        let resp = est::enroll(srv, &id, &token, &csr.b64).expect(200);
        let leaf = pki::leaf_from_est(&resp.body, &ca.work, &format!("leaf-{i}"));
        let failing = i == 3;
        let report = serde_json::json!({
            "serial": pki::serial_hex(&leaf).to_ascii_lowercase(),
            "state": "valid",
            "agent_version": if i % 2 == 0 { "0.1.0" } else { "0.2.0" },
            "os": if failing { XSS } else { "Debian GNU/Linux 12 (bookworm)" },
            "arch": "aarch64",
            "store": "file",
            "policy_source": "ca",
            "consecutive_failures": if failing { 4 } else { 0 },
            "last_error_code": if failing { Some("busy") } else { None },
            "last_error": if failing { Some(XSS) } else { None },
        });
        let body = ca.work.join(format!("report-{i}.json"));
        std::fs::write(&body, report.to_string()).expect("write");
        Request::post(srv.url("/v1/checkin"), "application/json", &body)
            .cacert(&srv.cacert)
            .client(&leaf, &key)
            .send()
            .expect(200);
        ids.push(id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_headless_chromium() {
    if !peers::require_basics() || !peers::require_peers(&["chromium", "chromedriver"]) {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve_with(&["--admin-listen", "127.0.0.1:0"]);
    let admin = format!("http://{}", srv.admin.clone().expect("admin listener"));
    let ids = fleet(&ca, &srv);
    // Identities cannot carry markup at all: the CA refuses them at token creation.
    let refused = ca.cli(&["token", "create", "--identity", "<script>x</script>"]);
    assert!(!refused.success() && refused.stderr.contains("invalid identity"), "{refused}");

    // Without credentials: 401 on every page, and on forms.
    for path in ["/", "/devices", "/groups", "/tokens", "/audit", "/status"] {
        assert_eq!(
            http_status(&[], &format!("{admin}{path}")),
            "401",
            "{path} without credentials"
        );
    }
    let revoke_url = format!("{admin}/devices/{}/revoke", ids[0]);
    let form = ["-d", "reason=keyCompromise&confirm=yes"];
    assert_eq!(http_status(&form, &revoke_url), "401", "a revocation without credentials");
    let token = ca.cli(&["admin", "token", "--name", "alice"]).ok().stdout.trim().to_owned();
    // With a bearer token but no CSRF token, a form is refused.
    let bearer = format!("Authorization: Bearer {token}");
    let with_bearer = ["-H", bearer.as_str(), form[0], form[1]];
    assert_eq!(http_status(&with_bearer, &revoke_url), "403", "a form without its CSRF token");

    let driver = chromedriver();
    let c = browser(&driver).await;
    let run = async {
        // Sign in: a wrong token is refused, the right one lands on the overview.
        c.goto(&format!("{admin}/devices")).await?;
        assert!(text(&c).await.contains("Admin token"), "the sign-in form on a 401");
        shot(&c, "sign-in").await;
        let f = c.form(Locator::Css("form[action='/login']")).await?;
        f.set_by_name("token", "lya1.bm9ib2R5.9999999999.AAAA").await?.submit().await?;
        text_with(&c, "not valid").await;
        let f = c.form(Locator::Css("form[action='/login']")).await?;
        f.set_by_name("token", &token).await?.submit().await?;
        let mut body = text_with(&c, "Renewals due per hour").await;
        assert!(body.contains("Overview") && body.contains("alice"), "{body}");
        // The console shows a snapshot of the inventory at most 5 s old (SNAPSHOT_TTL): the
        // last check-ins may need one more rebuild.
        let deadline = Instant::now() + Duration::from_secs(15);
        while !body.contains("20\ndevices") {
            assert!(Instant::now() < deadline, "the overview never counted 20 devices:\n{body}");
            tokio::time::sleep(Duration::from_millis(500)).await;
            c.goto(&format!("{admin}/")).await?;
            body = text_with(&c, "Renewals due per hour").await;
        }
        shot(&c, "overview").await;

        // The devices table: 20 devices, then filters.
        c.goto(&format!("{admin}/devices")).await?;
        let rows = c.find_all(Locator::Css("table.devices tbody tr")).await?;
        assert_eq!(rows.len(), 20, "the devices page lists the 20 devices");
        assert!(text(&c).await.contains("of 20 devices"));
        shot(&c, "devices").await;
        c.find(Locator::Css("input[name='failing']")).await?.click().await?;
        c.find(Locator::Css("form.filters button")).await?.click().await?;
        text_with(&c, "of 1 devices").await;
        let rows = c.find_all(Locator::Css("table.devices tbody tr")).await?;
        assert_eq!(rows.len(), 1, "one device is failing");
        assert!(text(&c).await.contains("console-03"), "the failing device is device 3");
        c.goto(&format!("{admin}/devices?q=console-1&sort=identity&desc=1")).await?;
        let rows = c.find_all(Locator::Css("table.devices tbody tr")).await?;
        assert_eq!(rows.len(), 10, "console-10 to console-19");
        assert!(rows[0].text().await?.contains("console-19"), "sorted descending");

        // A device's page: its report, markup in it shown as text and never run.
        c.goto(&format!("{admin}/devices?failing=1")).await?;
        c.find(Locator::LinkText(&ids[2])).await?.click().await?;
        let body = text_with(&c, "Certificates").await;
        assert!(body.contains(XSS), "the report's markup is shown as text:\n{body}");
        assert_eq!(
            c.execute("return window.__pwned === undefined", vec![]).await?,
            serde_json::json!(true)
        );
        assert!(
            c.find_all(Locator::Css("main b")).await?.is_empty(),
            "no element made from a report"
        );
        shot(&c, "device").await;

        // Policies: an invalid lifetime is refused with a message; a valid one is saved.
        c.goto(&format!("{admin}/groups")).await?;
        let f = c.form(Locator::Css("form.policy")).await?;
        f.set_by_name("lifetime", "1m").await?.submit().await?;
        text_with(&c, "invalid policy: lifetime is 1m").await;
        let f = c.form(Locator::Css("form.policy")).await?;
        f.set_by_name("renew_fraction", "lots").await?.submit().await?;
        text_with(&c, "renew fraction: \"lots\" is not a number").await;
        let f = c.form(Locator::Css("form.policy")).await?;
        f.set_by_name("lifetime", "2d").await?;
        f.set_by_name("renew_fraction", "0.7").await?.submit().await?;
        text_with(&c, "Renewal load").await;
        let lifetime =
            c.find(Locator::Css("form.policy input[name='lifetime']")).await?.prop("value").await?;
        assert_eq!(lifetime.as_deref(), Some("2d"), "the new policy is saved and shown");
        shot(&c, "groups").await;

        // Revocation: refused without the confirmation, done with it.
        c.goto(&format!("{admin}/devices/{}", ids[4])).await?;
        c.find(Locator::Css("form.revoke button")).await?.click().await?;
        text_with(&c, "Tick the confirmation box").await;
        c.find(Locator::Css("form.revoke select[name='reason']"))
            .await?
            .select_by_value("cessationOfOperation")
            .await?;
        c.find(Locator::Css("form.revoke input[name='confirm']")).await?.click().await?;
        c.find(Locator::Css("form.revoke button")).await?.click().await?;
        let body = text_with(&c, "No live certificate to revoke").await;
        assert!(body.contains("revoked") && body.contains("cessationOfOperation"), "{body}");
        assert!(body.contains("No live certificate to revoke"), "{body}");
        shot(&c, "revoked").await;

        // Tokens, the audit trail (the admin's changes under their name) and the CA status.
        c.goto(&format!("{admin}/tokens")).await?;
        let f = c.form(Locator::Css("form.token")).await?;
        f.set_by_name("identity", "batch-{seq:02}.fleet.example.com").await?;
        f.set_by_name("count", "3").await?.submit().await?;
        let body = text_with(&c, "token(s) made").await;
        assert!(
            body.contains("3 token(s) made") && body.contains("batch-03.fleet.example.com,lyt."),
            "{body}"
        );
        shot(&c, "tokens").await;
        c.goto(&format!("{admin}/audit")).await?;
        let body = text(&c).await;
        assert!(
            body.contains("admin:alice") && body.contains("policy.set") && body.contains("revoke"),
            "{body}"
        );
        shot(&c, "audit").await;
        c.goto(&format!("{admin}/status")).await?;
        assert!(text(&c).await.contains("CloudFront's rules hold"));
        shot(&c, "status").await;
        Ok::<(), fantoccini::error::CmdError>(())
    };
    let outcome = run.await;
    let _ = c.close().await;
    outcome.expect("browser session");

    // The CA agrees: the certificate is revoked, by alice, with the reason chosen.
    let certs = ca.certs();
    let revoked: Vec<_> = certs.iter().filter(|c| c["identity"] == ids[4].as_str()).collect();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["revocation"]["reason"], "cessationOfOperation", "{revoked:?}");
    let audit = ca.cli(&["audit", "--json", "--limit", "20"]).ok();
    assert!(audit.stdout.contains("\"admin:alice\""), "{audit}");
}
