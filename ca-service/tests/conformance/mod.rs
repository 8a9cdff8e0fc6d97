//! The conformance suite: the issuance flows against any `Store`, with local keys and a
//! hand-set clock. Token rules, renewal rules (expiry, grace, revocation, re-keying), CRL
//! contents. `authority.rs` runs it on SQLite, `aws.rs` on DynamoDB (moto), so the
//! backends cannot drift apart.
#![allow(dead_code, clippy::unwrap_used)] // test helpers: a panic is the failure message

use lanyard_ca::authority::{Authority, CaKeys, PublicationSettings, RequestMeta};
use lanyard_ca::clock::{Clock, FixedClock};
use lanyard_ca::error::CaError;
use lanyard_ca::profile::{self, PublicationUrls};
use lanyard_ca::revocation::Reason;
use lanyard_ca::signer::SharedSigner;
use lanyard_ca::signer::local::LocalKeySigner;
use lanyard_ca::store::{CertFilter, RevokeOutcome, Store};
use lanyard_ca::tokens::TokenSecret;
use lanyard_proto::{GroupPolicy, KeyAlgorithm};
use std::sync::Arc;
use std::time::Duration;
use time::macros::datetime;

pub struct Ca {
    pub auth: Authority,
    pub clock: Arc<FixedClock>,
    _dir: tempfile::TempDir,
}

pub fn ca_with(store: Arc<dyn Store>) -> Ca {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(FixedClock::new(datetime!(2026-06-01 12:00 UTC)));
    let now = clock.now();
    let urls = PublicationUrls::from_base("http://ca.test");
    let root_key = LocalKeySigner::create(&dir.path().join("root.key"), KeyAlgorithm::EcdsaP384)
        .expect("root key");
    let root_params = profile::root("Test", now);
    let root = root_params.self_signed(root_key.key_pair()).expect("root");
    let issuing_key =
        LocalKeySigner::create(&dir.path().join("issuing.key"), KeyAlgorithm::EcdsaP256)
            .expect("key");
    let issuing = profile::issuing("Test", now, &urls)
        .expect("params")
        .signed_by(
            issuing_key.key_pair(),
            &rcgen::Issuer::from_params(&root_params, root_key.key_pair()),
        )
        .expect("issuing");
    let keys = CaKeys {
        issuing: SharedSigner(Arc::new(issuing_key)),
        issuing_der: issuing.der().to_vec(),
        root_der: root.der().to_vec(),
        root: Some(SharedSigner(Arc::new(root_key))),
    };
    let publication = PublicationSettings {
        urls,
        crl_validity: time::Duration::days(7),
        ocsp_validity: time::Duration::hours(1),
    };
    let auth = Authority::new(store, clock.clone(), keys, publication).expect("authority");
    Ca { auth, clock, _dir: dir }
}

fn csr(cn: Option<&str>, alg: &'static rcgen::SignatureAlgorithm) -> (rcgen::KeyPair, Vec<u8>) {
    let key = rcgen::KeyPair::generate_for(alg).expect("key");
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(cn) = cn {
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    }
    let der = p.serialize_request(&key).expect("csr").der().to_vec();
    (key, der)
}

fn p256() -> &'static rcgen::SignatureAlgorithm {
    &rcgen::PKCS_ECDSA_P256_SHA256
}

async fn token(ca: &Ca, id: &str) -> TokenSecret {
    ca.auth.create_token(id, "default", Duration::from_secs(3600), "test").await.expect("token").0
}

fn meta() -> RequestMeta {
    RequestMeta::default()
}

pub async fn enrol_retry_with_same_key_gets_same_certificate(ca: Ca) {
    let t = token(&ca, "dev-1").await;
    let (_k, der) = csr(Some("dev-1"), p256());
    let first = ca.auth.enroll("dev-1", &t, &der, &meta()).await.expect("enrol");
    assert!(!first.replayed);
    let again = ca.auth.enroll("dev-1", &t, &der, &meta()).await.expect("retry");
    assert!(again.replayed);
    assert_eq!(first.record.serial, again.record.serial);
    // Another key with the same token is refused.
    let (_k2, other) = csr(None, p256());
    let e = ca.auth.enroll("dev-1", &t, &other, &meta()).await.unwrap_err();
    assert!(matches!(e, CaError::Forbidden(ref m) if m.contains("already used")), "{e}");
    assert_eq!(ca.auth.certs(CertFilter::default()).await.expect("list").len(), 1);
}

pub async fn failed_attempts_do_not_burn_the_token(ca: Ca) {
    let t = token(&ca, "dev-2").await;
    assert!(matches!(
        ca.auth.enroll("dev-2", &t, b"junk", &meta()).await,
        Err(CaError::BadRequest(_))
    ));
    let (_k, wrong_cn) = csr(Some("someone-else"), p256());
    let e = ca.auth.enroll("dev-2", &t, &wrong_cn, &meta()).await.unwrap_err();
    assert!(e.to_string().contains("does not match the identity"), "{e}");
    let (_k, rsa_not_allowed) = csr(None, &rcgen::PKCS_ED25519);
    assert!(ca.auth.enroll("dev-2", &t, &rsa_not_allowed, &meta()).await.is_err());
    let (_k, good) = csr(None, p256());
    ca.auth.enroll("dev-2", &t, &good, &meta()).await.expect("token still usable");
}

pub async fn token_binding_expiry_and_unknown(ca: Ca) {
    let t = token(&ca, "dev-3").await;
    let (_k, der) = csr(None, p256());
    let e = ca.auth.enroll("dev-4", &t, &der, &meta()).await.unwrap_err();
    assert!(matches!(e, CaError::Forbidden(_)), "{e}");
    let e = ca
        .auth
        .enroll("dev-3", &TokenSecret::from_presented("lyt.x.y"), &der, &meta())
        .await
        .unwrap_err();
    assert!(matches!(e, CaError::Unauthorized(_)), "{e}");
    ca.clock.advance(time::Duration::hours(2));
    let e = ca.auth.enroll("dev-3", &t, &der, &meta()).await.unwrap_err();
    assert!(matches!(e, CaError::Forbidden(ref m) if m.contains("expired")), "{e}");
}

pub async fn policy_decides_lifetime_and_keys(ca: Ca) {
    let p = GroupPolicy {
        lifetime_secs: 3600,
        key_algorithms: vec![KeyAlgorithm::EcdsaP384],
        ..Default::default()
    };
    ca.auth.set_policy("default", p, "test").await.expect("policy");
    let t = token(&ca, "dev-5").await;
    let (_k, p256_csr) = csr(None, p256());
    let e = ca.auth.enroll("dev-5", &t, &p256_csr, &meta()).await.unwrap_err();
    assert!(e.to_string().contains("not allowed by the policy"), "{e}");
    let (_k, p384_csr) = csr(None, &rcgen::PKCS_ECDSA_P384_SHA384);
    let issued = ca.auth.enroll("dev-5", &t, &p384_csr, &meta()).await.expect("enrol");
    assert_eq!(issued.record.not_after - ca.clock.now(), time::Duration::hours(1));
    let bad = GroupPolicy { renew_fraction: 2.0, ..Default::default() };
    assert!(matches!(ca.auth.set_policy("default", bad, "t").await, Err(CaError::BadRequest(_))));
}

pub async fn renewal_rules(ca: Ca) {
    let p = GroupPolicy { lifetime_secs: 3600, expired_grace_secs: 600, ..Default::default() };
    ca.auth.set_policy("default", p, "test").await.expect("policy");
    let t = token(&ca, "dev-6").await;
    let (_k, der) = csr(None, p256());
    let cur = ca.auth.enroll("dev-6", &t, &der, &meta()).await.expect("enrol").record;

    // Same key: refused. New key: a new certificate chained to the old one.
    let e = ca.auth.reenroll(&cur.der, &der, &meta()).await.unwrap_err();
    assert!(e.to_string().contains("new key"), "{e}");
    let (_k, der2) = csr(Some("dev-6"), p256());
    let next = ca.auth.reenroll(&cur.der, &der2, &meta()).await.expect("renew").record;
    assert_ne!(next.serial, cur.serial);
    assert_eq!(next.renewed_from.as_deref(), Some(cur.serial.as_str()));
    assert_eq!(next.identity, "dev-6");

    // Expired but within grace: renews. Beyond grace: refused, says to enrol again.
    ca.clock.advance(time::Duration::minutes(65));
    let (_k, der3) = csr(None, p256());
    let after = ca.auth.reenroll(&next.der, &der3, &meta()).await.expect("renew in grace").record;
    ca.clock.advance(time::Duration::minutes(80));
    let (_k, der4) = csr(None, p256());
    let e = ca.auth.reenroll(&next.der, &der4, &meta()).await.unwrap_err();
    assert!(
        matches!(e, CaError::Forbidden(ref m) if m.contains("expired") && m.contains("new token")),
        "{e}"
    );

    // Revoked: refused.
    assert_eq!(
        ca.auth.revoke(&after.serial, Reason::KeyCompromise, "t", &meta()).await.expect("revoke"),
        RevokeOutcome::Revoked
    );
    assert!(matches!(
        ca.auth.revoke(&after.serial, Reason::Superseded, "t", &meta()).await,
        Ok(RevokeOutcome::AlreadyRevoked(_))
    ));
    let e = ca.auth.reenroll(&after.der, &der4, &meta()).await.unwrap_err();
    assert!(matches!(e, CaError::Forbidden(ref m) if m.contains("revoked")), "{e}");
}

pub async fn foreign_certificate_is_refused(ca: Ca) {
    let other = ca_other_cert();
    let (_k, der) = csr(None, p256());
    let e = ca.auth.reenroll(&other, &der, &meta()).await.unwrap_err();
    assert!(matches!(e, CaError::Unauthorized(_)), "{e}");
}

fn ca_other_cert() -> Vec<u8> {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name.push(rcgen::DnType::CommonName, "dev-6");
    p.self_signed(&key).expect("cert").der().to_vec()
}

pub async fn crl_lists_revocations_and_changes_number(ca: Ca) {
    let t = token(&ca, "dev-7").await;
    let (_k, der) = csr(None, p256());
    let cert = ca.auth.enroll("dev-7", &t, &der, &meta()).await.expect("enrol").record;
    let before = ca.auth.issuing_crl().await.expect("crl");
    ca.auth.revoke(&cert.serial, Reason::KeyCompromise, "t", &meta()).await.expect("revoke");
    let after = ca.auth.issuing_crl().await.expect("crl");
    let (_, crl) = x509_parser::parse_x509_crl(&after).expect("parse");
    let serials: Vec<String> = crl
        .iter_revoked_certificates()
        .map(|r| lanyard_proto::serial::to_hex(r.raw_serial()))
        .collect();
    assert_eq!(serials, vec![cert.serial.clone()]);
    let (_, old) = x509_parser::parse_x509_crl(&before).expect("parse");
    assert!(crl.crl_number() > old.crl_number());
    assert!(!ca.auth.root_crl().await.expect("root crl").is_empty());
}

pub async fn concurrent_enrolments_issue_once(ca: Ca) {
    let t = token(&ca, "dev-8").await;
    let auth = Arc::new(ca.auth);
    // Same token, same key, eight at once: one certificate, the same for all.
    let (_k, der) = csr(None, p256());
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (auth, t, der) = (auth.clone(), t.clone(), der.clone());
        tasks.push(tokio::spawn(async move { auth.enroll("dev-8", &t, &der, &meta()).await }));
    }
    let mut serials = std::collections::BTreeSet::new();
    for task in tasks {
        serials.insert(task.await.expect("task").expect("enrol").record.serial);
    }
    assert_eq!(serials.len(), 1, "{serials:?}");
    assert_eq!(auth.certs(CertFilter::default()).await.expect("list").len(), 1);

    // Same token, different keys: exactly one wins.
    let t = auth
        .create_token("dev-9", "default", Duration::from_secs(3600), "test")
        .await
        .expect("token")
        .0;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (auth, t) = (auth.clone(), t.clone());
        let (_k, der) = csr(None, p256());
        tasks.push(tokio::spawn(async move { auth.enroll("dev-9", &t, &der, &meta()).await }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => ok += 1,
            Err(e) => {
                assert!(matches!(e, CaError::Forbidden(ref m) if m.contains("already used")), "{e}")
            }
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(
        auth.certs(CertFilter { identity: Some("dev-9".into()), revoked_only: false })
            .await
            .expect("list")
            .len(),
        1
    );
}
