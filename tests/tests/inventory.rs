//! The fleet inventory through the wire and the CLI: a device checks in with curl over
//! mTLS (`POST /v1/checkin`), `lanyard-ca devices list --json` and `devices show` show its
//! report; a check-in without a client certificate, or with a report out of bounds, is
//! refused with problem+json naming the problem; a revoked device still checks in and is
//! listed as revoked.

use lanyard_e2e::est::{self, Request};
use lanyard_e2e::pki::{self, KeyAlg};
use lanyard_e2e::{Ca, peers};

fn report(serial: &str, os: &str) -> String {
    serde_json::json!({
        "serial": serial,
        "state": "valid",
        "agent_version": "0.9.1",
        "os": os,
        "arch": "armv7",
        "store": "file",
        "policy_source": "ca",
        "consecutive_failures": 2,
        "last_error_code": "busy",
        "last_error": "the CA is busy",
        "routes": [{"name": "api", "requests": 12, "errors": 1, "last_status": 200}]
    })
    .to_string()
}

#[test]
fn a_device_checks_in_over_mtls_and_the_inventory_shows_its_report() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let id = "inv-1.fleet.example.com";
    let token = ca.token(id);
    let (key, csr) = pki::key_and_csr(&ca.work, KeyAlg::P256, id);
    let leaf = pki::leaf_from_est(
        &est::enroll(&srv, id, &token, &csr.b64).expect(200).body,
        &ca.work,
        "leaf",
    );
    let serial = pki::serial_hex(&leaf).to_ascii_lowercase();

    // Before any check-in the device is listed from its certificate.
    let list = ca.cli(&["devices", "list", "--json"]).ok();
    let rows: Vec<serde_json::Value> = serde_json::from_str(&list.stdout).expect("json");
    assert_eq!(rows.len(), 1, "{list}");
    assert_eq!(rows[0]["state"], "enrolled", "{list}");
    assert!(rows[0]["last_seen"].is_null(), "{list}");

    let body = ca.work.join("report.json");
    // An identity-supplied string that a console must escape is stored as given.
    std::fs::write(&body, report(&serial, "<script>alert(1)</script> Linux")).expect("write");
    let checkin = |b: &std::path::Path| {
        Request::post(srv.url("/v1/checkin"), "application/json", b)
            .cacert(&srv.cacert)
            .client(&leaf, &key)
            .send()
    };
    let r = checkin(&body).expect(200);
    let answer: serde_json::Value = serde_json::from_slice(&r.body).expect("json answer");
    assert_eq!(answer["status"], "valid", "{r}");
    assert_eq!(answer["serial"].as_str(), Some(serial.as_str()), "{r}");
    assert!(answer["policy_version"].as_str().is_some_and(|v| v.len() == 12), "{r}");
    assert!(answer["policy"]["lifetime_secs"].is_u64(), "{r}");

    let list = ca.cli(&["devices", "list", "--json"]).ok();
    let rows: Vec<serde_json::Value> = serde_json::from_str(&list.stdout).expect("json");
    let d = &rows[0];
    for field in [
        "identity",
        "group",
        "serial",
        "state",
        "last_seen",
        "agent_version",
        "last_error_code",
        "not_after",
    ] {
        assert!(!d[field].is_null(), "devices list --json lacks {field}: {d}");
    }
    assert_eq!((d["identity"].as_str(), d["group"].as_str()), (Some(id), Some("default")));
    assert_eq!(d["agent_version"], "0.9.1");
    assert_eq!(d["last_error_code"], "busy");
    assert_eq!(d["failing"], true);
    assert_eq!(d["os"], "<script>alert(1)</script> Linux");
    let failing = ca.cli(&["devices", "list", "--failing"]).ok();
    assert!(
        failing.stdout.contains(id) && failing.stdout.contains("busy (2 failures)"),
        "{failing}"
    );
    let other = ca.cli(&["devices", "list", "--version", "1.0.0", "--json"]).ok();
    assert_eq!(other.stdout.trim(), "[]", "{other}");
    let show = ca.cli(&["devices", "show", id]).ok();
    for want in [serial.as_str(), "0.9.1", "armv7", "route api: 12 requests, 1 errors", "issue"] {
        assert!(show.stdout.contains(want), "devices show lacks {want:?}:\n{show}");
    }
    let missing = ca.cli(&["devices", "show", "nobody"]);
    assert!(!missing.success() && missing.stderr.contains("nobody"), "{missing}");

    // No client certificate: 401. A report out of bounds: 400 naming the field. Not JSON:
    // 400. Nothing of these reaches the inventory.
    let anon = Request::post(srv.url("/v1/checkin"), "application/json", &body)
        .cacert(&srv.cacert)
        .send()
        .expect(401);
    assert!(anon.text().contains("client certificate"), "{anon}");
    std::fs::write(&body, report(&serial, &"x".repeat(5000))).expect("write");
    let long = checkin(&body).expect(400);
    assert!(long.text().contains("os is longer"), "{long}");
    assert!(long.content_type.contains("problem+json"), "{long}");
    std::fs::write(&body, "{not json").expect("write");
    checkin(&body).expect(400);
    let list = ca.cli(&["devices", "list", "--json"]).ok();
    assert!(
        list.stdout.contains("<script>alert(1)</script> Linux"),
        "a refused report replaced the record:\n{list}"
    );

    // Revoked, the device still checks in: the answer and the inventory say revoked.
    ca.cli(&["revoke", "--serial", &serial, "--reason", "keyCompromise"]).ok();
    std::fs::write(&body, report(&serial, "Debian GNU/Linux 12 (bookworm)")).expect("write");
    let r = checkin(&body).expect(200);
    assert!(r.text().contains("\"revoked\""), "{r}");
    let list = ca.cli(&["devices", "list", "--json"]).ok();
    let rows: Vec<serde_json::Value> = serde_json::from_str(&list.stdout).expect("json");
    assert_eq!(rows[0]["state"], "revoked", "{list}");
    assert_eq!(rows[0]["os"], "Debian GNU/Linux 12 (bookworm)", "{list}");
}

/// Parses an OpenMetrics exposition with the Prometheus project's own parser (the Python
/// client's, strict: a malformed exposition raises) and returns its samples as
/// `(name, labels, value)`.
fn parse_openmetrics(text: &str) -> Vec<(String, serde_json::Map<String, serde_json::Value>, f64)> {
    let program = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;
    let out = lanyard_e2e::cmd::run_cmd(
        std::process::Command::new("python3").args(["-c", program]),
        Some(text.as_bytes()),
    )
    .ok();
    let rows: Vec<(String, serde_json::Map<String, serde_json::Value>, f64)> =
        serde_json::from_str(out.stdout.trim()).expect("parser output");
    rows
}

#[test]
fn the_admin_listener_serves_metrics_that_a_prometheus_parser_reads() {
    if !peers::require_basics()
        || !peers::require_python_module("prometheus_client", "prometheus-client")
    {
        return;
    }
    let ca = Ca::init();
    // Not on loopback: refused, naming the reason.
    let out = ca.cli(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        "off",
        "--admin-listen",
        "0.0.0.0:0",
    ]);
    assert!(!out.success() && out.stderr.contains("loopback only"), "{out}");

    let srv = ca.serve_with(&["--admin-listen", "127.0.0.1:0"]);
    let admin = srv.admin.clone().expect("the addr file names the admin listener");
    let id = "metrics-1.fleet.example.com";
    let token = ca.token(id);
    let (key, csr) = pki::key_and_csr(&ca.work, KeyAlg::P256, id);
    // A refused enrolment (a token that does not exist), then the real one.
    est::enroll(&srv, id, "lyt.bogus.bogus", &csr.b64).expect(401);
    let leaf = pki::leaf_from_est(
        &est::enroll(&srv, id, &token, &csr.b64).expect(200).body,
        &ca.work,
        "leaf",
    );
    let body = ca.work.join("report.json");
    std::fs::write(&body, report(&pki::serial_hex(&leaf), "Debian")).expect("write");
    Request::post(srv.url("/v1/checkin"), "application/json", &body)
        .cacert(&srv.cacert)
        .client(&leaf, &key)
        .send()
        .expect(200);
    // The CRL is made by the serve loop (DIR/crl) right after start.
    est::get(&srv, "/crl").expect(200);

    // The inventory's gauges come from the console's snapshot, at most 5 s old: scrape
    // until it has the device (counters are live).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let (text, samples) = loop {
        let scrape = lanyard_e2e::run(
            "curl",
            &["-sS", "--fail", "-D", "-", &format!("http://{admin}/metrics")],
        )
        .ok();
        let (head, text) = scrape.stdout.split_once("\r\n\r\n").expect("headers and body");
        assert!(
            head.to_ascii_lowercase().contains("content-type: application/openmetrics-text"),
            "{head}"
        );
        let samples = parse_openmetrics(text);
        let seen = samples.iter().any(|(n, l, v)| {
            n == "lanyard_ca_devices"
                && l.get("state").and_then(|x| x.as_str()) == Some("valid")
                && *v == 1.0
        });
        if seen {
            break (text.to_owned(), samples);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the device never reached the gauges:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    let value = |name: &str, labels: &[(&str, &str)]| -> Option<f64> {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels.iter().all(|(k, v)| l.get(*k).and_then(|x| x.as_str()) == Some(*v))
            })
            .map(|s| s.2)
    };
    // Requests for another host name (a DNS name rebound to 127.0.0.1) are refused.
    let rebound = lanyard_e2e::run(
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Host: evil.example",
            &format!("http://{admin}/metrics"),
        ],
    )
    .ok();
    assert_eq!(rebound.stdout, "421", "{rebound}");
    let issued = [("kind", "enrol"), ("group", "default"), ("result", "issued")];
    assert_eq!(value("lanyard_ca_issuances_total", &issued), Some(1.0), "{text}");
    assert_eq!(
        value("lanyard_ca_issuances_total", &[("kind", "enrol"), ("result", "token-invalid")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value("lanyard_ca_refusals_total", &[("code", "token-invalid")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(value("lanyard_ca_checkins_total", &[("result", "ok")]), Some(1.0), "{text}");
    assert_eq!(
        value("lanyard_ca_issuance_duration_seconds_count", &[("kind", "enrol")]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(value("lanyard_ca_devices", &[("state", "valid")]), Some(1.0), "{text}");
    assert_eq!(value("lanyard_ca_devices", &[("state", "revoked")]), Some(0.0), "{text}");
    assert_eq!(
        value("lanyard_ca_devices_failing", &[]),
        Some(1.0),
        "the report says 2 failures:\n{text}"
    );
    assert_eq!(value("lanyard_ca_certificates_expiring", &[("within", "7d")]), Some(1.0), "{text}");
    assert_eq!(
        value("lanyard_ca_certificates_expiring", &[("within", "24h")]),
        Some(0.0),
        "{text}"
    );
    assert!(
        value("lanyard_ca_crl_age_seconds", &[]).is_some_and(|a| (0.0..60.0).contains(&a)),
        "{text}"
    );
    assert_eq!(value("lanyard_ca_unavailable_total", &[]), Some(0.0), "{text}");
}

/// curl against the admin listener over mTLS: `-w` status, body to `out`.
fn admin_curl(admin: &str, tls: &[&str], path: &str, extra: &[&str]) -> lanyard_e2e::Out {
    let url = format!("https://{admin}{path}");
    let mut a: Vec<&str> = vec!["-sS", "-w", "\n%{http_code}"];
    a.extend_from_slice(tls);
    a.extend_from_slice(extra);
    a.push(&url);
    lanyard_e2e::run("curl", &a)
}

#[test]
fn admins_use_the_console_over_mtls_with_certificates_from_admin_issue() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    let listen = ["serve", "--listen", "127.0.0.1:0", "--http-listen", "off"];
    // No admin CA yet: serve says how to make one.
    let mut a = listen.to_vec();
    a.extend(["--admin-listen", "127.0.0.1:0", "--admin-mtls"]);
    let out = ca.cli(&a);
    assert!(!out.success() && out.stderr.contains("admin issue"), "{out}");

    let certs = ca.work.join("admin");
    let certs_s = certs.display().to_string();
    let out =
        ca.cli(&["admin", "issue", "--name", "ops@example", "--out", &certs_s, "--ttl", "7d"]);
    assert!(out.success(), "{out}");
    assert!(!out.stdout.contains("PRIVATE") && !out.stderr.contains("PRIVATE"), "{out}");
    use std::os::unix::fs::PermissionsExt;
    let key_mode =
        std::fs::metadata(certs.join("ops@example.key")).expect("key").permissions().mode();
    assert_eq!(key_mode & 0o777, 0o600);
    // An admin certificate is not a device certificate: the device CA did not sign it.
    let v = lanyard_e2e::run(
        "openssl",
        &[
            "verify",
            "-CAfile",
            &ca.root_crt().display().to_string(),
            "-untrusted",
            &ca.issuing_crt().display().to_string(),
            &certs.join("ops@example.crt").display().to_string(),
        ],
    );
    assert!(!v.success(), "the device CA must not verify an admin certificate: {v}");
    let bad = ca.cli(&["admin", "issue", "--name", "<script>", "--out", &certs_s]);
    assert!(!bad.success() && bad.stderr.contains("admin name"), "{bad}");

    // Any address may be used with --admin-mtls (0.0.0.0 here), reached on loopback.
    let srv = ca.serve_with(&["--admin-listen", "0.0.0.0:0", "--admin-mtls"]);
    let port = srv.admin.clone().expect("admin").rsplit_once(':').expect("port").1.to_owned();
    let admin = format!("127.0.0.1:{port}");
    let cacert = certs.join("admin-ca.crt").display().to_string();
    let (crt, key) = (
        certs.join("ops@example.crt").display().to_string(),
        certs.join("ops@example.key").display().to_string(),
    );
    let tls = ["--cacert", &cacert, "--cert", &crt, "--key", &key];

    // A device enrols and checks in; the admin sees it.
    let id = "mtls-admin-1.fleet.example.com";
    let token = ca.token(id);
    let (dkey, csr) = pki::key_and_csr(&ca.work, KeyAlg::P256, id);
    let leaf = pki::leaf_from_est(
        &est::enroll(&srv, id, &token, &csr.b64).expect(200).body,
        &ca.work,
        "leaf",
    );
    let page = admin_curl(&admin, &tls, "/", &[]);
    assert!(page.success() && page.stdout.ends_with("\n200"), "{page}");
    assert!(page.stdout.contains("ops@example"), "the console names the admin: {page}");

    // No certificate, or a device's certificate: the handshake is refused.
    let none = admin_curl(&admin, &["--cacert", &cacert], "/", &[]);
    assert!(!none.success(), "without a certificate: {none}");
    let (leaf_s, dkey_s) = (leaf.display().to_string(), dkey.display().to_string());
    let device =
        admin_curl(&admin, &["--cacert", &cacert, "--cert", &leaf_s, "--key", &dkey_s], "/", &[]);
    assert!(!device.success(), "with a device certificate: {device}");

    // A change: revoke the device through the form, with the CSRF token from its page.
    let path = format!("/devices/{id}");
    let page = admin_curl(&admin, &tls, &path, &[]);
    assert!(page.stdout.ends_with("\n200"), "{page}");
    let csrf = page
        .stdout
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("the page's CSRF token")
        .to_owned();
    let forged = admin_curl(
        &admin,
        &tls,
        &format!("{path}/revoke"),
        &["--data", "csrf=AAAA&reason=keyCompromise&confirm=yes"],
    );
    assert!(forged.stdout.ends_with("\n403"), "a wrong CSRF token: {forged}");
    let done = admin_curl(
        &admin,
        &tls,
        &format!("{path}/revoke"),
        &["--data", &format!("csrf={csrf}&reason=keyCompromise&confirm=yes")],
    );
    assert!(done.stdout.ends_with("\n303"), "{done}");
    let audit = ca.cli(&["audit", "--json"]).ok();
    let events: Vec<serde_json::Value> = serde_json::from_str(&audit.stdout).expect("audit json");
    let by =
        |action: &str| events.iter().find(|e| e["action"] == action).cloned().unwrap_or_default();
    assert_eq!(by("revoke")["actor"], "admin:ops@example", "{audit}");
    assert_eq!(by("admin.issue")["subject"], "admin:ops@example", "{audit}");

    // /metrics over the same listener, with the age of the last publication (DIR/crl).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let m = admin_curl(&admin, &tls, "/metrics", &[]);
        if m.stdout.contains("lanyard_ca_publication_age_seconds") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no publication age: {m}");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}
