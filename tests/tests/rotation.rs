//! Issuing CA rotation as relying parties and devices see it: `lanyard-ca ca rotate-issuing`
//! with nginx (the CloudFront stand-in) configured with the new bundle accepting the
//! certificates of both issuing CAs, a device renewing onto the new one with its old
//! certificate, OCSP answers for both, per-issuer CRLs checked by `openssl verify
//! -crl_check_all`, the old CA leaving the bundle once its last certificate is gone (and,
//! with libfaketime, once the clock passes its last expiry), and the emergency rotation that
//! revokes the old CA in the root's CRL.

use lanyard_e2e::est::{self, Request};
use lanyard_e2e::nginx::Nginx;
use lanyard_e2e::pki::{self, KeyAlg};
use lanyard_e2e::{Ca, Out, Server, peers, run};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn status(ca: &Ca) -> Vec<serde_json::Value> {
    let out = ca.cli(&["ca", "status", "--json"]).ok();
    serde_json::from_str::<Vec<serde_json::Value>>(&out.stdout).expect("ca status JSON")
}

fn row(rows: &[serde_json::Value], generation: u64) -> &serde_json::Value {
    rows.iter().find(|r| r["generation"] == generation).expect("an issuing CA row")
}

fn enrol(ca: &Ca, srv: &Server, id: &str, stem: &str) -> (PathBuf, PathBuf) {
    let (key, csr) = pki::key_and_csr(&ca.work, KeyAlg::P256, id);
    let r = est::enroll(srv, id, &ca.token(id), &csr.b64).expect(200);
    (pki::leaf_from_est(&r.body, &ca.work, stem), key)
}

fn issuer_cn(cert: &Path) -> String {
    let c = cert.display().to_string();
    run("openssl", &["x509", "-in", &c, "-noout", "-issuer", "-nameopt", "multiline"])
        .ok()
        .stdout
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("commonName")
                .map(|v| v.trim_start_matches([' ', '=']).trim().to_owned())
        })
        .unwrap_or_default()
}

fn check_bundle(ca: &Ca) {
    let out = ca.cli(&["bundle", "--check", &ca.bundle().display().to_string()]).ok();
    assert!(out.stdout.contains("OK for CloudFront"), "{out}");
}

fn bundle_certs(ca: &Ca) -> usize {
    std::fs::read_to_string(ca.bundle()).expect("bundle").matches("BEGIN CERTIFICATE").count()
}

/// `openssl ocsp` against the publication listener, checking the response's signature.
fn ocsp(ca: &Ca, srv: &Server, issuer: &Path, cert: &Path) -> Out {
    let (i, c, b) = (
        issuer.display().to_string(),
        cert.display().to_string(),
        ca.bundle().display().to_string(),
    );
    let url = srv.http_url("/ocsp");
    run(
        "openssl",
        &["ocsp", "-issuer", &i, "-cert", &c, "-url", &url, "-CAfile", &b, "-timeout", "10"],
    )
}

/// The server restarts itself after a rotation (systemd's Restart=on-failure): the old
/// process exits non-zero, saying why, and a new one serves the new issuing CA.
fn restarted(ca: &Ca, mut srv: Server) -> Server {
    let st = srv.wait_exit(Duration::from_secs(20)).expect("serve kept running after a rotation");
    assert!(!st.success(), "serve should exit non-zero after a rotation: {st}");
    assert!(srv.log().contains("issuing CA was rotated"), "{}", srv.log());
    drop(srv);
    ca.serve()
}

fn nginx_for(ca: &Ca, name: &str, bundle: &Path) -> Nginx {
    let prefix = ca.root().join(name);
    std::fs::create_dir_all(&prefix).expect("prefix");
    let crl = prefix.join("crl.pem");
    ca.cli(&["crl", "--out", &crl.display().to_string()]).ok();
    Nginx::start(&prefix, &ca.path("tls/server.crt"), &ca.path("tls/server.key"), bundle, &crl)
}

/// A `lanyard` agent with the file store in the test's scratch space, its config pointing at
/// a CA server (rewritten when the server comes back on another port).
struct Agent {
    state: PathBuf,
    config: PathBuf,
}

impl Agent {
    fn new(ca: &Ca, name: &str, srv: &Server) -> Agent {
        let a = Agent {
            state: ca.work.join(format!("{name}-state")),
            config: ca.work.join(format!("{name}.toml")),
        };
        a.point_at(srv);
        a
    }

    fn point_at(&self, srv: &Server) {
        let text = format!(
            "[ca]\nurl = \"{}\"\n[store]\nbackend = \"file\"\npath = \"{}\"\n",
            srv.url(""),
            self.state.display()
        );
        std::fs::write(&self.config, text).expect("agent.toml");
    }

    fn run(&self, args: &[&str]) -> Out {
        let mut a = args.to_vec();
        let c = self.config.display().to_string();
        a.extend_from_slice(&["--config", &c]);
        run(lanyard_e2e::bins::bin("lanyard"), &a)
    }

    fn status(&self) -> serde_json::Value {
        let out = self.run(&["status", "--json"]).ok();
        serde_json::from_str(&out.stdout).expect("status JSON")
    }
}

#[test]
fn rotating_the_issuing_ca_leaves_no_device_behind() {
    if !peers::require_basics() || !peers::require_peers(&["nginx", "faketime"]) {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let (leaf1, key1) = enrol(&ca, &srv, "dev-1.fleet.example.com", "leaf1");
    assert_eq!(issuer_cn(&leaf1), "Lanyard Issuing CA");
    let rows = status(&ca);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0]["role"], "root");
    assert_eq!(row(&rows, 1)["role"], "current");
    let out = ca.cli(&["ca", "status"]).ok();
    assert!(out.stdout.contains("current") && out.stdout.contains("Lanyard Issuing CA"), "{out}");

    // Without the root key the rotation is refused and nothing changes.
    let root_key = ca.path("root.key");
    let aside = ca.root().join("root.key.offline");
    std::fs::rename(&root_key, &aside).expect("move root key");
    let out = ca.cli(&["ca", "rotate-issuing"]).fails();
    assert!(out.stderr.contains("root key is offline"), "{out}");
    std::fs::rename(&aside, &root_key).expect("restore root key");
    assert_eq!(status(&ca).len(), 2);

    let out = ca.cli(&["ca", "rotate-issuing"]).ok();
    assert!(out.stdout.contains("issuing CA 1 -> 2"), "{out}");
    assert!(out.stdout.contains("Lanyard Issuing CA 2"), "{out}");
    let srv = restarted(&ca, srv);

    // The bundle carries the root and both issuing CAs, and passes CloudFront's rules.
    assert_eq!(bundle_certs(&ca), 3);
    check_bundle(&ca);
    let rows = status(&ca);
    assert_eq!(row(&rows, 2)["role"], "current");
    assert_eq!(row(&rows, 1)["role"], "retired");
    assert_eq!(row(&rows, 1)["live_leaves"], 1, "{rows:?}");
    assert_eq!(row(&rows, 1)["in_bundle"], true);
    assert!(row(&rows, 1)["leaves_bundle"].is_string(), "{rows:?}");
    let issuing2 = ca.path("issuers/issuing-2.crt");
    pki::verify(&ca.root_crt(), &issuing2, &[]).ok();
    pki::lint_chain(&ca.root_crt(), &issuing2);

    // A new device gets the new issuer; its certificate points at the new CA's CRL.
    let (leaf2, key2) = enrol(&ca, &srv, "dev-2.fleet.example.com", "leaf2");
    assert_eq!(issuer_cn(&leaf2), "Lanyard Issuing CA 2");
    let text = pki::x509_text(&leaf2);
    assert!(text.contains(&format!("http://127.0.0.1:{}/crl/issuing-2", ca.http_port)), "{text}");
    assert!(text.contains("/ca/issuing-2.crt"), "{text}");
    let served = Request::get(srv.http_url("/ca/issuing-2.crt")).send().expect(200);
    assert_eq!(served.content_type, "application/pkix-cert");
    Request::get(srv.http_url("/crl/issuing-2")).send().expect(200);
    Request::get(srv.http_url("/crl")).send().expect(200);
    Request::get(srv.http_url("/crl/issuing-9")).send().expect(404);

    // nginx with the new bundle accepts both issuers' certificates.
    let nginx = nginx_for(&ca, "nginx", &ca.bundle());
    for (leaf, key) in [(&leaf1, &key1), (&leaf2, &key2)] {
        let r = nginx.get(&ca.root_crt(), Some((leaf, key)));
        assert_eq!(r.status, 200, "{}: {r}\n{}", leaf.display(), nginx.error_log());
    }

    // The old device renews with its issuer-1 certificate and gets issuer 2.
    let (rkey, rcsr) = pki::key_and_csr(&ca.work, KeyAlg::P256, "dev-1.fleet.example.com");
    let r = est::reenroll(&srv, &leaf1, &key1, &rcsr.b64).expect(200);
    let renewed = pki::leaf_from_est(&r.body, &ca.work, "renewed");
    assert_eq!(issuer_cn(&renewed), "Lanyard Issuing CA 2");
    let r = nginx.get(&ca.root_crt(), Some((&renewed, &rkey)));
    assert_eq!(r.status, 200, "{r}");

    // OCSP answers for both issuers, each signed by its own CA.
    for (issuer, leaf) in [(ca.issuing_crt(), &leaf1), (issuing2.clone(), &leaf2)] {
        let out = ocsp(&ca, &srv, &issuer, leaf).ok();
        assert!(out.all().contains("Response verify OK") && out.stdout.contains(": good"), "{out}");
    }
    // The root answers for both issuing CAs.
    for issuer in [ca.issuing_crt(), issuing2.clone()] {
        let out = ocsp(&ca, &srv, &ca.root_crt(), &issuer).ok();
        assert!(out.stdout.contains(": good"), "{out}");
    }

    // Per-issuer CRLs: a revocation under issuer 2 shows in its CRL only.
    let serial2 = pki::serial_hex(&leaf2);
    ca.cli(&["revoke", "--serial", &serial2, "--reason", "keyCompromise"]).ok();
    let crl = ca.work("crl-all.pem");
    let c = crl.display().to_string();
    ca.cli(&["crl", "--out", &c]).ok();
    let crls = std::fs::read_to_string(&crl).expect("crl.pem");
    assert_eq!(crls.matches("BEGIN X509 CRL").count(), 3, "two issuing CAs and the root");
    let out = pki::verify(&ca.bundle(), &leaf2, &["-crl_check_all", "-CRLfile", &c]).fails();
    assert!(out.all().contains("certificate revoked"), "{out}");
    pki::verify(&ca.bundle(), &renewed, &["-crl_check_all", "-CRLfile", &c]).ok();
    pki::verify(&ca.bundle(), &leaf1, &["-crl_check_all", "-CRLfile", &c]).ok();
    let out = ocsp(&ca, &srv, &issuing2, &leaf2).ok();
    assert!(out.stdout.contains(": revoked"), "{out}");
    pki::lint_crl(&ca.path("crl/issuing-2.crl"));

    // Past the last issuer-1 certificate's expiry (libfaketime), issuer 1 leaves the bundle
    // when the CA publishes; the bundle still passes.
    let bin = lanyard_e2e::bins::lanyard_ca().display().to_string();
    let later = ["-f", "+30d", bin.as_str()];
    let dir = ca.dir.display().to_string();
    let faked = |args: &[&str]| {
        let mut a: Vec<&str> = later.to_vec();
        a.extend_from_slice(args);
        a.extend_from_slice(&["--dir", &dir]);
        run("faketime", &a)
    };
    let out = faked(&["ca", "status", "--json"]).ok();
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(row(&rows, 1)["in_bundle"], false, "{rows:?}");
    assert_eq!(row(&rows, 1)["live_leaves"], 0, "{rows:?}");
    assert_eq!(bundle_certs(&ca), 3, "not yet published");
    faked(&["crl"]).ok();
    assert_eq!(bundle_certs(&ca), 2, "issuer 1 should have left the bundle");
    check_bundle(&ca);
    let text = std::fs::read_to_string(ca.bundle()).expect("bundle");
    assert!(!text.contains(&std::fs::read_to_string(ca.issuing_crt()).expect("issuing.crt")));
}

#[test]
fn revoking_the_old_issuing_ca_cuts_off_its_certificates() {
    if !peers::require_basics() || !peers::require_peers(&["nginx"]) {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let (leaf1, key1) = enrol(&ca, &srv, "dev-1.fleet.example.com", "leaf1");
    let old_bundle = ca.root().join("bundle-before.pem");
    std::fs::copy(ca.bundle(), &old_bundle).expect("copy bundle");
    let issuing1_serial = pki::serial_hex(&ca.issuing_crt());

    let out = ca.cli(&["ca", "rotate-issuing", "--revoke-old", "keyCompromise"]).ok();
    assert!(out.stdout.contains("revoked (keyCompromise)"), "{out}");
    assert!(out.stdout.contains("its 1 live certificate(s) were revoked"), "{out}");
    // Its certificates are in the revocation export (CloudFront's KeyValueStore).
    let serial1 = pki::serial_hex(&leaf1);
    let out = ca.cli(&["revoked", "--json"]).ok();
    assert!(out.stdout.replace(':', "").to_lowercase().contains(&serial1.to_lowercase()), "{out}");
    assert!(out.stdout.contains("cACompromise"), "{out}");
    let srv = restarted(&ca, srv);

    // The root's CRL lists issuer 1; the bundle no longer carries it.
    let root_crl = ca.path("crl/root.crl").display().to_string();
    let text =
        run("openssl", &["crl", "-inform", "DER", "-in", &root_crl, "-noout", "-text"]).ok().stdout;
    assert!(text.contains(&format!("Serial Number: {issuing1_serial}")), "{text}");
    assert!(text.contains("Key Compromise"), "{text}");
    assert_eq!(bundle_certs(&ca), 2);
    let rows = status(&ca);
    assert_eq!(row(&rows, 1)["role"], "revoked");
    assert_eq!(row(&rows, 1)["in_bundle"], false);

    // nginx still trusting the old bundle, with the root CRL: issuer-1 certificates refused.
    let nginx = nginx_for(&ca, "nginx-old-bundle", &old_bundle);
    let r = nginx.get(&ca.root_crt(), Some((&leaf1, &key1)));
    assert_eq!(r.status, 400, "{r}");
    assert!(nginx.error_log().contains("certificate revoked"), "{}", nginx.error_log());

    // OCSP from the root says issuer 1 is revoked.
    let out = ocsp(&ca, &srv, &ca.root_crt(), &ca.issuing_crt()).ok();
    assert!(out.stdout.contains(": revoked"), "{out}");

    // The device cannot renew with its certificate; it enrols again with a token.
    let (_, csr) = pki::key_and_csr(&ca.work, KeyAlg::P256, "dev-1.fleet.example.com");
    let r = est::reenroll(&srv, &leaf1, &key1, &csr.b64);
    assert!(r.status == 401 || r.status == 403, "{r}");
    assert!(r.text().contains("revoked") && r.text().contains("enrol again"), "{r}");
    let (again, key) = enrol(&ca, &srv, "dev-1.fleet.example.com", "again");
    assert_eq!(issuer_cn(&again), "Lanyard Issuing CA 2");
    let r = nginx_for(&ca, "nginx-new", &ca.bundle()).get(&ca.root_crt(), Some((&again, &key)));
    assert_eq!(r.status, 200, "{r}");
}

#[test]
fn no_certificate_outlives_its_issuing_ca() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    let out = ca.cli(&["ca", "rotate-issuing", "--validity", "1h"]).fails();
    assert!(out.stderr.contains("--validity"), "{out}");
    assert_eq!(status(&ca).len(), 2, "a refused rotation changes nothing");
    // What a rotation interrupted before it rewrote ca.toml leaves: files the CA ignores
    // and the next rotation replaces.
    std::fs::create_dir_all(ca.path("issuers")).expect("issuers/");
    std::fs::write(ca.path("issuers/issuing-2.key"), "half-written").expect("stale key");
    assert_eq!(status(&ca).len(), 2);
    // An issuing CA with one day left, and the default 7-day lifetime: the certificate
    // ends with its issuer.
    let out = ca.cli(&["ca", "rotate-issuing", "--validity", "1d"]).ok();
    assert!(out.stdout.contains("issuing CA 1 -> 2"), "{out}");
    let srv = ca.serve();
    let (leaf, _) = enrol(&ca, &srv, "dev-1.fleet.example.com", "leaf");
    let end = |p: &Path| {
        let f = p.display().to_string();
        run("openssl", &["x509", "-in", &f, "-noout", "-enddate"]).ok().stdout
    };
    assert_eq!(end(&leaf), end(&ca.path("issuers/issuing-2.crt")));
    pki::verify(&ca.bundle(), &leaf, &[]).ok();
    // A policy whose certificates would outlive the issuing CA is refused.
    let out = ca.cli(&["policy", "set", "--group", "default", "--lifetime", "7d"]).fails();
    assert!(out.stderr.contains("outlive the issuing CA"), "{out}");
    ca.cli(&["policy", "set", "--group", "default", "--lifetime", "12h"]).ok();
    // /metrics reports the days left of each CA certificate.
    drop(srv);
    let srv = ca.serve_with(&["--admin-listen", "127.0.0.1:0"]);
    let admin = srv.admin.clone().expect("admin listener");
    let (code, body) = lanyard_e2e::ca::http_get(&admin, "/metrics").expect("metrics");
    assert_eq!(code, 200);
    assert!(body.contains(r#"lanyard_ca_ca_days_left{role="current",generation="2"} 0"#), "{body}");
    assert!(
        body.contains(r#"lanyard_ca_ca_days_left{role="retired",generation="1"} 3649"#),
        "{body}"
    );
    assert!(body.contains(r#"lanyard_ca_ca_days_left{role="root",generation="1"} 7299"#), "{body}");
}

/// The agent (`lanyard`, file store) enrolled under issuing CA 1 renews across the rotation
/// with the certificate it has: no new token, the new chain verified against the root it
/// pinned at enrolment.
#[test]
fn an_agent_renews_onto_the_new_issuing_ca_without_a_new_token() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let agent = Agent::new(&ca, "agent", &srv);
    let id = "dev-1.fleet.example.com";
    let token = ca.token(id);
    let root = ca.root_crt().display().to_string();
    agent.run(&["enrol", "--token", &token, "--identity", id, "--ca-bundle", &root]).ok();
    let first = agent.status();
    assert_eq!(first["state"], "valid", "{first}");

    ca.cli(&["ca", "rotate-issuing"]).ok();
    let srv = restarted(&ca, srv);
    agent.point_at(&srv);
    agent.run(&["renew", "--force"]).ok();
    let second = agent.status();
    assert_eq!(second["state"], "valid", "{second}");
    assert_ne!(second["serial"], first["serial"]);
    let (cert, key) = (ca.work.join("exported.crt"), ca.work.join("exported.key"));
    let (c, k) = (cert.display().to_string(), key.display().to_string());
    agent.run(&["export", "--cert", &c, "--key", &k]).ok();
    assert_eq!(issuer_cn(&cert), "Lanyard Issuing CA 2");
    // The chain the agent presents is leaf then issuing CA 2, which the bundle verifies.
    let chain = std::fs::read_to_string(&cert).expect("chain");
    let certs = pki::split_pem_certs(&chain);
    assert_eq!(certs.len(), 2, "{chain}");
    assert_eq!(
        certs[1].trim(),
        std::fs::read_to_string(ca.path("issuers/issuing-2.crt")).expect("issuing-2").trim()
    );
    pki::verify(&ca.bundle(), &cert, &[]).ok();
}

/// `ca rotate-root`: a new root, cross-certificates both ways and a new issuing CA under the
/// new root. Checked by openssl with each root alone, by nginx with the bundle, by pkilint,
/// and by an agent that pinned the old root: it renews across the rotation without a new
/// token and learns the new root from the CA.
#[test]
fn rotating_the_root_keeps_both_roots_verifying() {
    if !peers::require_basics() || !peers::require_peer("nginx") {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    // An agent that pinned root 1 by its fingerprint.
    let agent = Agent::new(&ca, "agent", &srv);
    let fp = ca.cli(&["ca", "fingerprint"]).ok().stdout.trim().to_owned();
    let id = "laptop-1.fleet.example.com";
    let token = ca.token(id);
    agent.run(&["enrol", "--token", &token, "--identity", id, "--ca-fingerprint", &fp]).ok();
    let roots_file = agent.state.join("ca-roots.pem");
    let pinned = std::fs::read_to_string(&roots_file).expect("pinned roots");
    assert_eq!(pinned.matches("BEGIN CERTIFICATE").count(), 1);
    // A device under root 1.
    let (old_leaf, old_key) = enrol(&ca, &srv, "dev-old.fleet.example.com", "old");

    let out = ca.cli(&["ca", "rotate-root"]).ok();
    assert!(out.stdout.contains("root 1 -> 2: Lanyard Root CA 2"), "{out}");
    assert!(out.stdout.contains("issuing CA 1 -> 2"), "{out}");
    let srv = restarted(&ca, srv);
    agent.point_at(&srv);

    let (root1, root2) = (ca.root_crt(), ca.path("roots/root-2.crt"));
    let (forward, backward) = (ca.path("roots/root-2-by-1.crt"), ca.path("roots/root-1-by-2.crt"));
    let (issuing1, issuing2) = (ca.issuing_crt(), ca.path("issuers/issuing-2.crt"));
    assert_eq!(issuer_cn(&issuing2), "Lanyard Root CA 2");
    assert_eq!(issuer_cn(&forward), "Lanyard Root CA");
    assert_eq!(issuer_cn(&backward), "Lanyard Root CA 2");
    for (issuer, subject) in [(&root1, &forward), (&root2, &backward), (&root2, &issuing2)] {
        pki::lint_chain(issuer, subject);
    }
    let concat = |name: &str, parts: &[&Path]| {
        let p = ca.work.join(name);
        let text: String = parts.iter().map(|f| std::fs::read_to_string(f).expect("PEM")).collect();
        std::fs::write(&p, text).expect("write");
        p.display().to_string()
    };

    // A new device under root 2: verified by root 1 alone through the cross-certificate,
    // and by root 2 alone; without the cross-certificate root 1 cannot.
    let (new_leaf, new_key) = enrol(&ca, &srv, "dev-new.fleet.example.com", "new");
    assert_eq!(issuer_cn(&new_leaf), "Lanyard Issuing CA 2");
    let via_cross = concat("untrusted-new.pem", &[&issuing2, &forward]);
    pki::verify(&root1, &new_leaf, &["-untrusted", &via_cross]).ok();
    let i2 = issuing2.display().to_string();
    pki::verify(&root2, &new_leaf, &["-untrusted", &i2]).ok();
    pki::verify(&root1, &new_leaf, &["-untrusted", &i2]).fails();
    // The old device: root 2 alone verifies it through the reverse cross-certificate.
    let back = concat("untrusted-old.pem", &[&issuing1, &backward]);
    pki::verify(&root2, &old_leaf, &["-untrusted", &back]).ok();
    let i1 = issuing1.display().to_string();
    pki::verify(&root1, &old_leaf, &["-untrusted", &i1]).ok();
    // With every CRL (both issuing CAs, both roots).
    let crl = ca.work("crl-all.pem");
    let c = crl.display().to_string();
    ca.cli(&["crl", "--out", &c]).ok();
    let crls = std::fs::read_to_string(&crl).expect("crls");
    assert_eq!(crls.matches("BEGIN X509 CRL").count(), 4, "two issuing CAs, two roots");
    pki::verify(&root1, &new_leaf, &["-untrusted", &via_cross, "-crl_check_all", "-CRLfile", &c])
        .ok();

    // The bundle carries both roots and both issuing CAs and passes; nginx accepts both.
    assert_eq!(bundle_certs(&ca), 4);
    check_bundle(&ca);
    let rows = status(&ca);
    assert_eq!(rows.iter().filter(|r| r["role"] == "root").count(), 1, "{rows:?}");
    assert_eq!(rows.iter().filter(|r| r["role"] == "retired root").count(), 1, "{rows:?}");
    let nginx = nginx_for(&ca, "nginx", &ca.bundle());
    for (leaf, key) in [(&old_leaf, &old_key), (&new_leaf, &new_key)] {
        let r = nginx.get(&root1, Some((leaf, key)));
        assert_eq!(r.status, 200, "{}: {r}\n{}", leaf.display(), nginx.error_log());
    }
    // The root answers OCSP about the issuing CA it signed.
    let out = ocsp(&ca, &srv, &root2, &issuing2).ok();
    assert!(out.stdout.contains(": good"), "{out}");
    let out = ocsp(&ca, &srv, &root1, &issuing1).ok();
    assert!(out.stdout.contains(": good"), "{out}");

    // The agent renews across the rotation with no new token, and now trusts root 2 too.
    agent.run(&["renew", "--force"]).ok();
    let v = agent.status();
    assert_eq!(v["state"], "valid", "{v}");
    let (cert, key) = (ca.work.join("agent.crt"), ca.work.join("agent.key"));
    let (cf, kf) = (cert.display().to_string(), key.display().to_string());
    agent.run(&["export", "--cert", &cf, "--key", &kf]).ok();
    assert_eq!(issuer_cn(&cert), "Lanyard Issuing CA 2");
    let roots = std::fs::read_to_string(&roots_file).expect("roots").replace('\r', "");
    assert_eq!(roots.matches("BEGIN CERTIFICATE").count(), 2, "root 2 learned:\n{roots}");
    assert!(
        roots.contains(std::fs::read_to_string(&root2).expect("root 2").trim()),
        "the learned root is root 2"
    );
    // The chain it presents (leaf, issuing CA 2) passes nginx (which trusts the bundle).
    let chain = std::fs::read_to_string(&cert).expect("chain");
    assert_eq!(pki::split_pem_certs(&chain).len(), 2, "{chain}");
    let r = nginx.get(&root1, Some((&cert, &key)));
    assert_eq!(r.status, 200, "{r}\n{}", nginx.error_log());

    // A device whose image pinned root 1 before the rotation still enrols after it: the CA
    // lists both roots and the cross-certificates (RFC 7030 rollover certificates).
    let agent2 = Agent::new(&ca, "agent-2", &srv);
    let id2 = "laptop-2.fleet.example.com";
    let token2 = ca.token(id2);
    agent2.run(&["enrol", "--token", &token2, "--identity", id2, "--ca-fingerprint", &fp]).ok();
    let v = agent2.status();
    assert_eq!(v["state"], "valid", "{v}");
}
