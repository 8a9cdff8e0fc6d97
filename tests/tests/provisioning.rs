//! Batch claims through the CLI and EST, with curl and openssl from outside: a claim with 3
//! uses enrols three devices and refuses the fourth (`claim-exhausted`), each identity once
//! (`already-provisioned` for another key, the same certificate for the same key), only
//! identities its template makes; `provisioning claim list`, `revoke` and `reset`, and the
//! audit trail, which names the claim by its ID and never holds it.

use lanyard_e2e::est;
use lanyard_e2e::pki::{self, KeyAlg};
use lanyard_e2e::{Ca, peers};

const TEMPLATE: &str = "sensor-{id}.fleet.example.com";

fn problem_code(r: &est::Resp) -> String {
    serde_json::from_slice::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no problem document: {r}"))
}

#[test]
fn a_batch_claim_enrols_three_devices_and_refuses_the_fourth() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let create = ca
        .cli(&["provisioning", "claim", "create", "--identity-template", TEMPLATE, "--uses", "3"])
        .ok();
    let claim = create.stdout.trim().to_owned();
    assert!(claim.starts_with("lyc.") && !claim.contains('\n'), "{}", create.all());
    assert!(create.stderr.contains("enrols up to 3 devices"), "{}", create.all());

    let mut first = None;
    for sn in ["sn-1", "sn-2", "sn-3"] {
        let id = TEMPLATE.replace("{id}", sn);
        let (_key, csr) = pki::key_and_csr(&ca.work, KeyAlg::P256, &id);
        let r = est::enroll(&srv, &id, &claim, &csr.b64).expect(200);
        let leaf = pki::leaf_from_est(&r.body, &ca.work, sn);
        let subject = lanyard_e2e::run(
            "openssl",
            &[
                "x509",
                "-in",
                leaf.to_str().unwrap_or_default(),
                "-noout",
                "-subject",
                "-ext",
                "subjectAltName",
            ],
        )
        .ok();
        assert!(subject.stdout.contains(&id), "{}", subject.all());
        first.get_or_insert((id, csr, pki::serial_hex(&leaf)));
    }
    let (id1, csr1, serial1) = first.expect("a first device");
    // The same device again with its key (a lost answer): the same certificate.
    let again = est::enroll(&srv, &id1, &claim, &csr1.b64).expect(200);
    assert_eq!(pki::serial_hex(&pki::leaf_from_est(&again.body, &ca.work, "again")), serial1);
    // ... with another key: refused.
    let (_k, other) = pki::key_and_csr(&ca.work, KeyAlg::P256, &id1);
    let r = est::enroll(&srv, &id1, &claim, &other.b64).expect(409);
    assert_eq!(problem_code(&r), "already-provisioned", "{r}");
    // The fourth device: the claim is used up.
    let id4 = TEMPLATE.replace("{id}", "sn-4");
    let (_k, csr4) = pki::key_and_csr(&ca.work, KeyAlg::P256, &id4);
    let r = est::enroll(&srv, &id4, &claim, &csr4.b64).expect(403);
    assert_eq!(problem_code(&r), "claim-exhausted", "{r}");
    // An identity the template does not make.
    let r = est::enroll(&srv, "gateway.fleet.example.com", &claim, &csr4.b64).expect(403);
    assert_eq!(problem_code(&r), "identity-mismatch", "{r}");
    assert_eq!(ca.certs().len(), 3);

    let list = ca.cli(&["provisioning", "claim", "list", "--json"]).ok();
    let claims: serde_json::Value = serde_json::from_str(&list.stdout).expect("json");
    assert_eq!(claims[0]["uses"], 3, "{claims}");
    assert_eq!(claims[0]["max_uses"], 3, "{claims}");
    assert_eq!(claims[0]["state"], "used up", "{claims}");
    let claim_id = claims[0]["id"].as_str().expect("id").to_owned();
    assert!(!list.stdout.contains(&claim), "the claim itself is not stored");
    let table = ca.cli(&["provisioning", "claim", "list"]).ok();
    assert!(table.stdout.contains(&claim_id) && table.stdout.contains("3/3"), "{}", table.all());

    // A second claim: an identity enrolled through a claim needs a reset first.
    let claim2 = ca
        .cli(&[
            "provisioning",
            "claim",
            "create",
            "--identity-template",
            TEMPLATE,
            "--uses",
            "5",
            "--expires",
            "1h",
        ])
        .ok()
        .stdout
        .trim()
        .to_owned();
    let r = est::enroll(&srv, &id1, &claim2, &other.b64).expect(409);
    assert_eq!(problem_code(&r), "already-provisioned", "{r}");
    ca.cli(&["provisioning", "reset", &id1]).ok();
    est::enroll(&srv, &id1, &claim2, &other.b64).expect(200);
    let none = ca.cli(&["provisioning", "reset", "sensor-never.fleet.example.com"]).fails();
    assert!(none.stderr.contains("never enrolled through a claim"), "{}", none.all());

    // Revoked: enrols nothing more.
    let id2 = ca.cli(&["provisioning", "claim", "list", "--json"]).ok().stdout;
    let v: serde_json::Value = serde_json::from_str(&id2).expect("json");
    // Both claims may carry the same creation second, so the list's order between them is
    // not fixed: the second claim is the one that is not the first.
    let second_id = v
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .find(|id| *id != claim_id)
        .expect("a second claim")
        .to_owned();
    ca.cli(&["provisioning", "claim", "revoke", "--id", &second_id]).ok();
    let id5 = TEMPLATE.replace("{id}", "sn-5");
    let (_k, csr5) = pki::key_and_csr(&ca.work, KeyAlg::P256, &id5);
    let r = est::enroll(&srv, &id5, &claim2, &csr5.b64).expect(403);
    assert_eq!(problem_code(&r), "claim-exhausted", "{r}");
    assert!(r.text().contains("revoked"), "{r}");

    // Bad claims are refused with a message naming the problem, and nothing is made.
    for (args, want) in [
        (vec!["--identity-template", "sensor.fleet.example.com", "--uses", "3"], "has no {id}"),
        (vec!["--identity-template", TEMPLATE, "--uses", "0"], "--uses"),
        (vec!["--identity-template", TEMPLATE, "--uses", "3", "--group", "nope"], "has no policy"),
        (vec!["--identity-template", TEMPLATE, "--uses", "3", "--expires", "400d"], "365d"),
    ] {
        let mut all = vec!["provisioning", "claim", "create"];
        all.extend(args);
        let out = ca.cli(&all).fails();
        assert!(out.stderr.contains(want), "{all:?}: {}", out.all());
    }
    let count = ca.cli(&["provisioning", "claim", "list", "--json"]).ok().stdout;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&count).expect("json").as_array().map(Vec::len),
        Some(2)
    );

    // The audit trail: each use by the claim's ID, never the claim.
    let audit = ca.cli(&["audit", "--json", "--limit", "100"]).ok().stdout;
    assert_eq!(audit.matches(&format!("claim:{claim_id}")).count(), 3, "{audit}");
    for action in ["claim.create", "claim.revoke", "provisioning.reset"] {
        assert!(audit.contains(action), "{action} not audited: {audit}");
    }
    assert!(!audit.contains(&claim) && !audit.contains(&claim2), "a claim in the audit trail");
}

/// A manufacturer's CA made with openssl, and factory certificates (IDevID) it signs.
struct Factory {
    dir: std::path::PathBuf,
    ca_crt: std::path::PathBuf,
    ca_key: std::path::PathBuf,
}

impl Factory {
    fn new(dir: &std::path::Path, name: &str) -> Factory {
        let f = Factory {
            dir: dir.to_owned(),
            ca_crt: dir.join(format!("{name}.crt")),
            ca_key: dir.join(format!("{name}.key")),
        };
        lanyard_e2e::run(
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                f.ca_key.to_str().unwrap_or_default(),
                "-out",
                f.ca_crt.to_str().unwrap_or_default(),
                "-subj",
                &format!("/O=Acme Devices/CN={name}"),
                "-days",
                "3650",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        )
        .ok();
        f
    }

    /// A factory certificate for serial number `sn` (its CN): (certificate, key).
    fn device(&self, sn: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let key = pki::genkey(&self.dir.join(format!("idev-{sn}.key")), KeyAlg::P256);
        let csr = self.dir.join(format!("idev-{sn}.csr"));
        let crt = self.dir.join(format!("idev-{sn}.crt"));
        let ext = self.dir.join(format!("idev-{sn}.ext"));
        std::fs::write(
            &ext,
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
        )
        .expect("ext");
        let s = |p: &std::path::Path| p.display().to_string();
        lanyard_e2e::run(
            "openssl",
            &["req", "-new", "-key", &s(&key), "-subj", &format!("/CN={sn}"), "-out", &s(&csr)],
        )
        .ok();
        lanyard_e2e::run(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                &s(&csr),
                "-CA",
                &s(&self.ca_crt),
                "-CAkey",
                &s(&self.ca_key),
                "-CAcreateserial",
                "-days",
                "3650",
                "-extfile",
                &s(&ext),
                "-out",
                &s(&crt),
            ],
        )
        .ok();
        (crt, key)
    }
}

/// `simpleenroll` with a factory certificate as the TLS client certificate and no token.
fn enrol_with(
    srv: &lanyard_e2e::Server,
    cert: &std::path::Path,
    key: &std::path::Path,
    csr_b64: &std::path::Path,
) -> est::Resp {
    est::Request::post(srv.url("/.well-known/est/simpleenroll"), "application/pkcs10", csr_b64)
        .cacert(&srv.cacert)
        .client(cert, key)
        .send()
}

#[test]
fn devices_enrol_with_factory_certificates_once_each() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let acme = Factory::new(&ca.work, "Acme Factory CA");
    let trust = ca
        .cli(&[
            "provisioning",
            "trust",
            "--ca",
            acme.ca_crt.to_str().unwrap_or_default(),
            "--identity-from",
            "cn",
            "--identity-template",
            TEMPLATE,
        ])
        .ok();
    let acme_id = trust.stdout.trim().to_owned();
    assert_eq!(acme_id.len(), 16, "{}", trust.all());

    // Two devices enrol with their factory certificates; each gets its identity from its CN,
    // and a certificate openssl verifies against the CA's bundle.
    let mut enrolled = Vec::new();
    for sn in ["SN-100", "SN-200"] {
        let (idev, idev_key) = acme.device(sn);
        let id = TEMPLATE.replace("{id}", &sn.to_ascii_lowercase());
        let (_key, csr) = pki::key_and_csr(&ca.work, KeyAlg::P256, &id);
        let r = enrol_with(&srv, &idev, &idev_key, &csr.b64).expect(200);
        let leaf = pki::leaf_from_est(&r.body, &ca.work, sn);
        let subject = lanyard_e2e::run(
            "openssl",
            &["x509", "-in", leaf.to_str().unwrap_or_default(), "-noout", "-subject"],
        )
        .ok();
        assert!(subject.stdout.contains(&id), "{}", subject.all());
        let verify = lanyard_e2e::run(
            "openssl",
            &[
                "verify",
                "-CAfile",
                ca.bundle().to_str().unwrap_or_default(),
                leaf.to_str().unwrap_or_default(),
            ],
        );
        assert!(verify.success(), "{}", verify.all());
        enrolled.push((idev, idev_key, id, csr, pki::serial_hex(&leaf)));
    }
    // csrattrs answers a factory certificate (the agent asks which key to make); /v1/policy
    // is for enrolled devices only.
    let (idev, idev_key) = (&enrolled[1].0, &enrolled[1].1);
    let get = |path: &str| {
        est::Request::get(srv.url(path)).cacert(&srv.cacert).client(idev, idev_key).send()
    };
    get("/.well-known/est/csrattrs").expect(200);
    let r = get("/v1/policy").expect(401);
    assert_eq!(problem_code(&r), "certificate-unknown", "{r}");

    // The same factory certificate again: the same certificate for the same key (a lost
    // answer), 409 for another key.
    let (idev, idev_key, id1, csr1, serial1) = &enrolled[0];
    let again = enrol_with(&srv, idev, idev_key, &csr1.b64).expect(200);
    assert_eq!(pki::serial_hex(&pki::leaf_from_est(&again.body, &ca.work, "again")), *serial1);
    let (_k, other) = pki::key_and_csr(&ca.work, KeyAlg::P256, id1);
    let r = enrol_with(&srv, idev, idev_key, &other.b64).expect(409);
    assert_eq!(problem_code(&r), "already-provisioned", "{r}");
    // After a reset (a repaired board), it enrols again.
    ca.cli(&["provisioning", "reset", id1]).ok();
    enrol_with(&srv, idev, idev_key, &other.b64).expect(200);

    // A certificate from a factory CA nobody trusted: 401 factory-ca-unknown.
    let rogue = Factory::new(&ca.work, "Rogue CA");
    let (rogue_crt, rogue_key) = rogue.device("SN-300");
    let (_k, csr3) = pki::key_and_csr(&ca.work, KeyAlg::P256, &TEMPLATE.replace("{id}", "sn-300"));
    let r = enrol_with(&srv, &rogue_crt, &rogue_key, &csr3.b64).expect(401);
    assert_eq!(problem_code(&r), "factory-ca-unknown", "{r}");
    // No certificate and no token: 401 naming both ways in.
    let r = est::Request::post(
        srv.url("/.well-known/est/simpleenroll"),
        "application/pkcs10",
        &csr3.b64,
    )
    .cacert(&srv.cacert)
    .send()
    .expect(401);
    assert!(r.text().contains("factory certificate"), "{r}");

    // A blocked factory certificate never enrols.
    let (blocked, blocked_key) = acme.device("SN-400");
    ca.cli(&["provisioning", "block", "--cert", blocked.to_str().unwrap_or_default()]).ok();
    let (_k, csr4) = pki::key_and_csr(&ca.work, KeyAlg::P256, &TEMPLATE.replace("{id}", "sn-400"));
    let r = enrol_with(&srv, &blocked, &blocked_key, &csr4.b64).expect(403);
    assert!(r.text().contains("blocked"), "{r}");

    // Untrusted: Acme's next device is refused.
    let list = ca.cli(&["provisioning", "list", "--json"]).ok().stdout;
    assert!(list.contains(&acme_id) && list.contains("\"identity_from\":\"cn\""), "{list}");
    ca.cli(&["provisioning", "untrust", "--id", &acme_id]).ok();
    let (late, late_key) = acme.device("SN-500");
    let (_k, csr5) = pki::key_and_csr(&ca.work, KeyAlg::P256, &TEMPLATE.replace("{id}", "sn-500"));
    let r = enrol_with(&srv, &late, &late_key, &csr5.b64).expect(401);
    assert_eq!(problem_code(&r), "factory-ca-unknown", "{r}");

    // Bad trust requests name the problem.
    let leaf_not_ca = ca
        .cli(&[
            "provisioning",
            "trust",
            "--ca",
            late.to_str().unwrap_or_default(),
            "--identity-from",
            "cn",
        ])
        .fails();
    assert!(leaf_not_ca.stderr.contains("not a CA certificate"), "{}", leaf_not_ca.all());
    let serial_bare = ca
        .cli(&[
            "provisioning",
            "trust",
            "--ca",
            acme.ca_crt.to_str().unwrap_or_default(),
            "--identity-from",
            "serial",
        ])
        .fails();
    assert!(serial_bare.stderr.contains("--identity-template"), "{}", serial_bare.all());

    let audit = ca.cli(&["audit", "--json", "--limit", "100"]).ok().stdout;
    assert_eq!(audit.matches(&format!("factory:{acme_id}")).count(), 3, "{audit}");
    for action in ["provisioning.trust", "provisioning.untrust", "provisioning.block"] {
        assert!(audit.contains(action), "{action} not audited: {audit}");
    }
}
