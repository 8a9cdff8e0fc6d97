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
    let issuing_key =
        LocalKeySigner::create(&dir.path().join("issuing.key"), KeyAlgorithm::EcdsaP256)
            .expect("key");
    let certs = profile::ceremony("Test", now, &urls, root_key.key_pair(), issuing_key.key_pair())
        .expect("CA certificates");
    let keys = CaKeys {
        issuing: SharedSigner(Arc::new(issuing_key)),
        issuing_der: certs.issuing_der,
        generation: 1,
        retired: Vec::new(),
        root_generation: 1,
        retired_roots: Vec::new(),
        cross: Vec::new(),
        root_der: certs.root_der,
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
    assert_eq!(e.code(), lanyard_proto::ProblemCode::TokenUsed, "{e}");
    assert!(e.to_string().contains("already used"), "{e}");
    assert_eq!(ca.auth.certs(CertFilter::default()).await.expect("list").len(), 1);
}

pub async fn failed_attempts_do_not_burn_the_token(ca: Ca) {
    let t = token(&ca, "dev-2").await;
    assert_eq!(
        ca.auth.enroll("dev-2", &t, b"junk", &meta()).await.unwrap_err().status().as_u16(),
        400
    );
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
    assert_eq!(e.code(), lanyard_proto::ProblemCode::IdentityMismatch, "{e}");
    let e = ca
        .auth
        .enroll("dev-3", &TokenSecret::from_presented("lyt.x.y"), &der, &meta())
        .await
        .unwrap_err();
    assert_eq!(e.status().as_u16(), 401, "{e}");
    ca.clock.advance(time::Duration::hours(2));
    let e = ca.auth.enroll("dev-3", &t, &der, &meta()).await.unwrap_err();
    assert_eq!(e.code(), lanyard_proto::ProblemCode::TokenExpired, "{e}");
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
    assert_eq!(next.parent_serial.as_deref(), Some(cur.serial.as_str()));
    assert_eq!(next.identity, "dev-6");

    // Expired but within grace: renews. Beyond grace: refused, says to enrol again.
    ca.clock.advance(time::Duration::minutes(65));
    let (_k, der3) = csr(None, p256());
    let after = ca.auth.reenroll(&next.der, &der3, &meta()).await.expect("renew in grace").record;
    ca.clock.advance(time::Duration::minutes(80));
    let (_k, der4) = csr(None, p256());
    let e = ca.auth.reenroll(&after.der, &der4, &meta()).await.unwrap_err();
    assert_eq!(e.code(), lanyard_proto::ProblemCode::ExpiredBeyondGrace, "{e}");
    assert!(e.to_string().contains("expired") && e.to_string().contains("new token"), "{e}");

    // Revoked: refused.
    assert_eq!(
        ca.auth
            .revoke(&after.serial, Reason::KeyCompromise, false, "t", &meta())
            .await
            .expect("revoke")
            .0,
        RevokeOutcome::Revoked
    );
    assert!(matches!(
        ca.auth.revoke(&after.serial, Reason::Superseded, false, "t", &meta()).await,
        Ok((RevokeOutcome::AlreadyRevoked(_), _))
    ));
    let e = ca.auth.reenroll(&after.der, &der4, &meta()).await.unwrap_err();
    assert_eq!(e.code(), lanyard_proto::ProblemCode::Revoked, "{e}");
}

pub async fn foreign_certificate_is_refused(ca: Ca) {
    let other = ca_other_cert();
    let (_k, der) = csr(None, p256());
    let e = ca.auth.reenroll(&other, &der, &meta()).await.unwrap_err();
    assert_eq!(e.code(), lanyard_proto::ProblemCode::CertificateUnknown, "{e}");
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
    ca.auth.revoke(&cert.serial, Reason::KeyCompromise, false, "t", &meta()).await.expect("revoke");
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
            Err(e) => assert_eq!(e.code(), lanyard_proto::ProblemCode::TokenUsed, "{e}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(auth.certs(CertFilter::identity("dev-9")).await.expect("list").len(), 1);
}

fn code(e: &CaError) -> lanyard_proto::ProblemCode {
    // Every refusal renders as a problem document that parses back with its code.
    let p = lanyard_proto::Problem::parse(e.problem().to_json().as_bytes()).expect("problem+json");
    assert_eq!(p.code, e.code());
    assert_eq!(p.status, e.status().as_u16());
    p.code
}

async fn enrolled(ca: &Ca, id: &str) -> (rcgen::KeyPair, lanyard_ca::store::CertRecord) {
    let t = token(ca, id).await;
    let (k, der) = csr(None, p256());
    (k, ca.auth.enroll(id, &t, &der, &meta()).await.expect("enrol").record)
}

async fn renewed(ca: &Ca, cur: &lanyard_ca::store::CertRecord) -> lanyard_ca::store::CertRecord {
    let (_k, der) = csr(None, p256());
    ca.auth.reenroll(&cur.der, &der, &meta()).await.expect("renew").record
}

/// 20 renewals of one parent with 20 keys, at once: one wins, 19 are `renewal-conflict`
/// and audited; the winner's key gets the same certificate again.
pub async fn a_certificate_renews_once(ca: Ca) {
    use lanyard_proto::ProblemCode;
    let (_k, parent) = enrolled(&ca, "dev-10").await;
    let auth = Arc::new(ca.auth);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (auth, parent) = (auth.clone(), parent.der.clone());
        let (_k, der) = csr(None, p256());
        tasks.push(tokio::spawn(async move { (auth.reenroll(&parent, &der, &meta()).await, der) }));
    }
    let (mut won, mut conflicts) = (Vec::new(), 0);
    for t in tasks {
        match t.await.expect("task") {
            (Ok(issued), der) => won.push((issued.record, der)),
            (Err(e), _) => {
                assert_eq!(code(&e), ProblemCode::RenewalConflict, "{e}");
                assert_eq!(e.status().as_u16(), 409);
                conflicts += 1;
            }
        }
    }
    assert_eq!((won.len(), conflicts), (1, 19));
    let (child, winning_csr) = won.pop().expect("one winner");
    assert_eq!(child.parent_serial.as_deref(), Some(parent.serial.as_str()));

    // The agent retrying after a lost answer: same key, same certificate, nothing new.
    let again = auth.reenroll(&parent.der, &winning_csr, &meta()).await.expect("retry");
    assert!(again.replayed);
    assert_eq!(again.record.serial, child.serial);
    let all = auth.certs(CertFilter::identity("dev-10")).await.expect("list");
    assert_eq!(all.len(), 2, "one enrolment and one renewal recorded");
    let p = all.iter().find(|c| c.serial == parent.serial).expect("parent");
    assert_eq!(p.superseded_by.as_deref(), Some(child.serial.as_str()));

    // Each conflict is in the audit trail with both keys' fingerprints.
    let audited = auth.conflicts().await.expect("conflicts");
    assert_eq!(audited.len(), 19);
    assert!(audited.iter().all(|e| e.subject == parent.serial
        && e.detail.contains(&child.spki_sha256)
        && e.detail.contains("presented_key_sha256=")));

    // The child renews on; the parent, now superseded and used, cannot renew again.
    let (_k, der) = csr(None, p256());
    let grandchild = auth.reenroll(&child.der, &der, &meta()).await.expect("renew child").record;
    assert_eq!(grandchild.parent_serial.as_deref(), Some(child.serial.as_str()));
    let (_k, der) = csr(None, p256());
    let e = auth.reenroll(&parent.der, &der, &meta()).await.unwrap_err();
    assert!(matches!(code(&e), ProblemCode::RenewalConflict | ProblemCode::Revoked), "{e}");
}

/// keyCompromise revokes the serial and everything renewed from it; other reasons revoke
/// the serial alone unless the lineage is asked for.
pub async fn revocation_follows_the_lineage(ca: Ca) {
    let (_k, a) = enrolled(&ca, "dev-11").await;
    let b = renewed(&ca, &a).await;
    let c = renewed(&ca, &b).await;
    // Renewing with b used it: its parent a is retired as superseded.
    let a_now = ca.auth.store().cert(&a.serial).await.expect("get").expect("a");
    assert_eq!(a_now.revocation.map(|r| r.reason), Some(Reason::Superseded));

    let (out, descendants) = ca
        .auth
        .revoke(&a.serial, Reason::KeyCompromise, false, "t", &meta())
        .await
        .expect("revoke");
    assert!(matches!(out, RevokeOutcome::AlreadyRevoked(_)), "{out:?}");
    let revoked: Vec<&str> = descendants
        .iter()
        .filter(|(_, o)| *o == RevokeOutcome::Revoked)
        .map(|(s, _)| s.as_str())
        .collect();
    let mut revoked = revoked;
    revoked.sort();
    let mut want = vec![b.serial.as_str(), c.serial.as_str()];
    want.sort();
    assert_eq!(revoked, want);
    for s in [&b.serial, &c.serial] {
        let r = ca.auth.store().cert(s).await.expect("get").expect("cert").revocation;
        assert_eq!(r.map(|r| r.reason), Some(Reason::KeyCompromise), "{s}");
    }
    let crl = ca.auth.issuing_crl().await.expect("crl");
    let (_, crl) = x509_parser::parse_x509_crl(&crl).expect("parse");
    let on_crl: std::collections::BTreeSet<String> = crl
        .iter_revoked_certificates()
        .map(|r| lanyard_proto::serial::to_hex(r.raw_serial()))
        .collect();
    for s in [&a.serial, &b.serial, &c.serial] {
        assert!(on_crl.contains(s), "{s} on the CRL: {on_crl:?}");
    }
    let (_k, der) = csr(None, p256());
    let e = ca.auth.reenroll(&c.der, &der, &meta()).await.unwrap_err();
    assert_eq!(code(&e), lanyard_proto::ProblemCode::Revoked, "{e}");

    // Another reason: the serial alone, unless --lineage.
    let (_k, x) = enrolled(&ca, "dev-12").await;
    let y = renewed(&ca, &x).await;
    let (_, d) = ca
        .auth
        .revoke(&x.serial, Reason::CessationOfOperation, false, "t", &meta())
        .await
        .expect("revoke");
    assert!(d.is_empty());
    assert!(ca.auth.store().cert(&y.serial).await.expect("get").expect("y").revocation.is_none());
    let (_, d) = ca
        .auth
        .revoke(&x.serial, Reason::CessationOfOperation, true, "t", &meta())
        .await
        .expect("revoke");
    assert_eq!(d, vec![(y.serial.clone(), RevokeOutcome::Revoked)]);
}

pub async fn revoke_identity_revokes_every_live_certificate(ca: Ca) {
    let (_k, a) = enrolled(&ca, "dev-13").await;
    let b = renewed(&ca, &a).await;
    let (_k, other) = enrolled(&ca, "dev-14").await;
    let revoked = ca
        .auth
        .revoke_identity("dev-13", Reason::AffiliationChanged, "t", &meta())
        .await
        .expect("revoke");
    let mut want = vec![a.serial.clone(), b.serial.clone()];
    let mut got = revoked.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    assert!(
        ca.auth.store().cert(&other.serial).await.expect("get").expect("o").revocation.is_none()
    );
    let again = ca.auth.revoke_identity("dev-13", Reason::Unspecified, "t", &meta()).await;
    assert_eq!(again.expect("revoke"), Vec::<String>::new());
}

/// A key is certified once per identity: not at renewal, not with a new token.
pub async fn key_reuse_is_refused(ca: Ca) {
    use lanyard_proto::ProblemCode;
    let t = token(&ca, "dev-15").await;
    let (_k1, first_csr) = csr(None, p256());
    let a = ca.auth.enroll("dev-15", &t, &first_csr, &meta()).await.expect("enrol").record;
    let b = renewed(&ca, &a).await;
    // b renewing back to a's key.
    let e = ca.auth.reenroll(&b.der, &first_csr, &meta()).await.unwrap_err();
    assert_eq!(code(&e), ProblemCode::KeyReused, "{e}");
    assert!(e.to_string().contains(&a.serial), "names the earlier serial: {e}");
    assert_eq!(e.problem().serial.as_deref(), Some(a.serial.as_str()));
    // A new token with the old key.
    let t2 = token(&ca, "dev-15").await;
    let e = ca.auth.enroll("dev-15", &t2, &first_csr, &meta()).await.unwrap_err();
    assert_eq!(code(&e), ProblemCode::KeyReused, "{e}");
    // Nothing was recorded, and the second token is still unused.
    assert_eq!(ca.auth.certs(CertFilter::identity("dev-15")).await.expect("list").len(), 2);
    let (_k, fresh) = csr(None, p256());
    ca.auth.enroll("dev-15", &t2, &fresh, &meta()).await.expect("token still usable");
}

/// The reads an enrolment and a renewal make before signing, in one store call each: the
/// same answers as the single reads (SQLite answers them in one hop, DynamoDB by default).
pub async fn reads_before_signing_match_the_single_reads(ca: Ca) {
    let store = ca.auth.store().clone();
    let p = GroupPolicy { lifetime_secs: 7200, ..Default::default() };
    ca.auth.set_policy("default", p.clone(), "test").await.expect("policy");
    let t = token(&ca, "dev-30").await;
    let (_k, first) = csr(None, p256());
    let first_spki = lanyard_ca::csr::check(&first).expect("csr").spki_sha256;

    // Unknown token: nothing, not even the key or the policy.
    let none = store.enrolment_reads("no-such-hash", "dev-30", Some(&first_spki)).await;
    let none = none.expect("reads");
    assert!(none.token.is_none() && none.key_serial.is_none() && none.policy.is_none());

    // Before the enrolment: the token and the policy, no earlier use of the key.
    let before = store.enrolment_reads(&t.hash(), "dev-30", Some(&first_spki)).await;
    let before = before.expect("reads");
    let tok = before.token.expect("token");
    assert_eq!(tok.identity, "dev-30");
    assert!(tok.used.is_none());
    assert_eq!(before.key_serial, None);
    assert_eq!(before.policy.as_ref().map(|p| p.lifetime_secs), Some(7200));

    let a = ca.auth.enroll("dev-30", &t, &first, &meta()).await.expect("enrol").record;
    // After it: the token is used, and the key names the certificate (also for another
    // token of the identity); without a key, no key lookup.
    let t2 = token(&ca, "dev-30").await;
    let after = store.enrolment_reads(&t2.hash(), "dev-30", Some(&first_spki)).await;
    let after = after.expect("reads");
    assert_eq!(after.key_serial.as_deref(), Some(a.serial.as_str()));
    let used = store.enrolment_reads(&t.hash(), "dev-30", None).await.expect("reads");
    assert_eq!(used.token.and_then(|t| t.used).map(|u| u.serial), Some(a.serial.clone()));
    assert_eq!(used.key_serial, None);
    // The key lookup is per identity.
    let other = store.enrolment_reads(&t2.hash(), "dev-31", Some(&first_spki)).await;
    assert_eq!(other.expect("reads").key_serial, None);

    // Renewal: the certificate, its key's owner, its group's policy.
    let r = store.renewal_reads(&a.serial, Some(&first_spki)).await.expect("reads");
    assert_eq!(r.cert.as_ref().map(|c| c.der.clone()), Some(a.der.clone()));
    assert_eq!(r.key_serial.as_deref(), Some(a.serial.as_str()));
    assert_eq!(r.policy.map(|p| p.lifetime_secs), Some(7200));
    let (_k, fresh) = csr(None, p256());
    let fresh_spki = lanyard_ca::csr::check(&fresh).expect("csr").spki_sha256;
    let r = store.renewal_reads(&a.serial, Some(&fresh_spki)).await.expect("reads");
    assert_eq!(r.key_serial, None);
    let r = store.renewal_reads("00ff", Some(&first_spki)).await.expect("reads");
    assert!(r.cert.is_none() && r.key_serial.is_none() && r.policy.is_none());
}

/// A renewed certificate is revoked as superseded once its child is used (a check-in) or
/// after the group's superseded grace.
pub async fn superseded_parents_retire(ca: Ca) {
    let (_k, a) = enrolled(&ca, "dev-16").await;
    let b = renewed(&ca, &a).await;
    assert!(ca.auth.retire_superseded().await.expect("sweep").is_empty(), "within the grace");
    ca.clock.advance(time::Duration::minutes(61));
    assert_eq!(ca.auth.retire_superseded().await.expect("sweep"), vec![a.serial.clone()]);
    let r = ca.auth.store().cert(&a.serial).await.expect("get").expect("a").revocation;
    assert_eq!(r.map(|r| r.reason), Some(Reason::Superseded));

    // Used: a check-in with the child retires the parent at once.
    let (_k, x) = enrolled(&ca, "dev-17").await;
    let y = renewed(&ca, &x).await;
    ca.auth.retire_parent(&y, &meta()).await;
    let r = ca.auth.store().cert(&x.serial).await.expect("get").expect("x").revocation;
    assert_eq!(r.map(|r| r.reason), Some(Reason::Superseded));
    // The device that never stored y can still fetch it with y's key: a retry is not a
    // conflict, even after the parent was retired.
    let _ = b;
}

/// Every refusal carries its stable code.
pub async fn refusals_carry_codes(ca: Ca) {
    use lanyard_proto::ProblemCode;
    let t = token(&ca, "dev-18").await;
    let (_k, der) = csr(None, p256());
    let e = ca
        .auth
        .enroll("dev-18", &TokenSecret::from_presented("lyt.x.y"), &der, &meta())
        .await
        .unwrap_err();
    assert_eq!(code(&e), ProblemCode::TokenInvalid);
    let e = ca.auth.enroll("dev-19", &t, &der, &meta()).await.unwrap_err();
    assert_eq!(code(&e), ProblemCode::IdentityMismatch);
    let e = ca.auth.enroll("dev-18", &t, b"junk", &meta()).await.unwrap_err();
    assert_eq!(code(&e), ProblemCode::CsrInvalid);
    let (_k, ed) = csr(None, &rcgen::PKCS_ED25519);
    let e = ca.auth.enroll("dev-18", &t, &ed, &meta()).await.unwrap_err();
    assert_eq!(code(&e), ProblemCode::KeyNotAllowed);
    ca.auth.enroll("dev-18", &t, &der, &meta()).await.expect("enrol");
    let (_k, other) = csr(None, p256());
    let e = ca.auth.enroll("dev-18", &t, &other, &meta()).await.unwrap_err();
    assert_eq!(code(&e), ProblemCode::TokenUsed);
    let t2 = token(&ca, "dev-20").await;
    ca.clock.advance(time::Duration::hours(2));
    let e = ca.auth.enroll("dev-20", &t2, &other, &meta()).await.unwrap_err();
    assert_eq!(code(&e), ProblemCode::TokenExpired);
    let e = ca.auth.reenroll(&ca_other_cert(), &other, &meta()).await.unwrap_err();
    assert_eq!(code(&e), ProblemCode::CertificateUnknown);
}

pub async fn tokens_are_listed_and_revoked_before_use(ca: Ca) {
    use lanyard_ca::store::{TokenFilter, TokenRevokeOutcome};
    use lanyard_proto::ProblemCode;
    let t1 = token(&ca, "dev-a").await;
    ca.clock.advance(time::Duration::seconds(1));
    let t2 = token(&ca, "dev-b").await;
    ca.clock.advance(time::Duration::seconds(1));
    let t3 = token(&ca, "dev-a").await;
    let all = ca.auth.tokens(TokenFilter::default()).await.expect("list");
    let names: Vec<&str> = all.iter().map(|t| t.identity.as_str()).collect();
    assert_eq!(names, ["dev-a", "dev-b", "dev-a"], "oldest first");
    assert!(all.iter().all(|t| t.used.is_none() && t.revoked_at.is_none()));
    let rec = |hash: String| all.iter().find(|t| t.hash == hash).cloned().expect("listed");
    let (r1, r2, r3) = (rec(t1.hash()), rec(t2.hash()), rec(t3.hash()));

    // A used token is not revoked (its certificate is what to revoke).
    let (_k, der) = csr(None, p256());
    let issued = ca.auth.enroll("dev-a", &t1, &der, &meta()).await.expect("enrol");
    match ca.auth.revoke_token(&r1, "test").await.expect("revoke") {
        TokenRevokeOutcome::Used(u) => assert_eq!(u.serial, issued.record.serial),
        other => panic!("a used token was {other:?}"),
    }
    // An unused one is, once; then it enrols nothing, with its own code, at enrolment and
    // at csrattrs' check alike (the group lookup).
    assert_eq!(
        ca.auth.revoke_token(&r2, "test").await.expect("revoke"),
        TokenRevokeOutcome::Revoked
    );
    assert!(matches!(
        ca.auth.revoke_token(&r2, "test").await.expect("again"),
        TokenRevokeOutcome::AlreadyRevoked(_)
    ));
    let (_k, der) = csr(None, p256());
    let e = ca.auth.enroll("dev-b", &t2, &der, &meta()).await.unwrap_err();
    assert_eq!(e.code(), ProblemCode::TokenRevoked, "{e}");
    assert_eq!(e.status().as_u16(), 403, "{e}");
    assert!(e.to_string().contains("revoked"), "{e}");

    // Filters: identity, group, and "can still enrol" (not used, revoked or expired).
    let unused = ca.auth.tokens(TokenFilter { unused_only: true, ..Default::default() }).await;
    let unused: Vec<String> = unused.expect("list").into_iter().map(|t| t.hash).collect();
    assert_eq!(unused, std::slice::from_ref(&r3.hash));
    let of_a = ca
        .auth
        .tokens(TokenFilter { identity: Some("dev-a".into()), ..Default::default() })
        .await
        .expect("list");
    assert_eq!(of_a.len(), 2);
    assert!(of_a[0].used.is_some() && of_a[1].used.is_none());
    let other_group = TokenFilter { group: Some("sensors".into()), ..Default::default() };
    assert!(ca.auth.tokens(other_group).await.expect("list").is_empty());
    let revoked = ca.auth.tokens(TokenFilter::default()).await.expect("list");
    assert!(revoked.iter().any(|t| t.hash == r2.hash && t.revoked_at.is_some()));
    ca.clock.advance(time::Duration::hours(2));
    let unused = ca.auth.tokens(TokenFilter { unused_only: true, ..Default::default() }).await;
    assert!(unused.expect("list").is_empty(), "an expired token cannot enrol");
}

pub async fn a_token_is_revoked_or_used_never_both(ca: Ca) {
    use lanyard_ca::store::{TokenFilter, TokenRevokeOutcome};
    let ca = Arc::new(ca);
    for round in 0..8 {
        let id = format!("race-{round}");
        let t = token(&ca, &id).await;
        let rec = ca
            .auth
            .tokens(TokenFilter { identity: Some(id.clone()), ..Default::default() })
            .await
            .expect("list")
            .remove(0);
        let (_k, der) = csr(None, p256());
        let (a, b) = (ca.clone(), ca.clone());
        let enrol = tokio::spawn(async move { a.auth.enroll(&id, &t, &der, &meta()).await });
        let revoke = tokio::spawn(async move { b.auth.revoke_token(&rec, "test").await });
        let (enrolled, revoked) = (enrol.await.expect("task"), revoke.await.expect("task"));
        match (&enrolled, revoked.expect("revoke")) {
            (Ok(_), TokenRevokeOutcome::Used(_)) => {}
            (Err(e), TokenRevokeOutcome::Revoked) => {
                assert_eq!(e.code(), lanyard_proto::ProblemCode::TokenRevoked, "{e}");
            }
            (got, outcome) => {
                panic!("round {round}: enrolment {got:?} with revocation {outcome:?}")
            }
        }
    }
}

fn report(serial: &str) -> lanyard_proto::api::CheckinReport {
    lanyard_proto::api::CheckinReport {
        serial: serial.into(),
        state: "valid".into(),
        agent_version: "9.9.9".into(),
        os: "Debian GNU/Linux 12 (bookworm)".into(),
        arch: "aarch64".into(),
        store: "file".into(),
        policy_source: "ca".into(),
        ..Default::default()
    }
}

pub async fn checkins_fill_the_inventory(ca: Ca) {
    use lanyard_ca::inventory::DeviceFilter;
    let mut devices = Vec::new();
    for id in ["inv-a", "inv-b", "inv-c"] {
        let t = token(&ca, id).await;
        let (_k, der) = csr(None, p256());
        devices.push(ca.auth.enroll(id, &t, &der, &meta()).await.expect("enrol").record);
    }
    let (a, b, c) = (&devices[0], &devices[1], &devices[2]);
    // Nobody checked in yet: every device is listed from its certificate, as `enrolled`.
    let all = ca.auth.devices(&DeviceFilter::default()).await.expect("devices");
    assert_eq!(all.iter().map(|d| d.state.as_str()).collect::<Vec<_>>(), ["enrolled"; 3]);
    assert!(all.iter().all(|d| d.last_seen.is_none()));

    // a checks in: the answer is its status and policy, with the policy's version; the
    // inventory holds its report.
    let ans = ca.auth.checkin(&a.der, report(&a.serial), &meta()).await.expect("check-in");
    assert_eq!((ans.status.as_str(), ans.identity.as_str()), ("valid", "inv-a"));
    let version = ans.policy_version.clone().expect("a policy version");
    let mut r = report(&a.serial);
    r.policy_version = Some(version.clone());
    ca.auth.checkin(&a.der, r, &meta()).await.expect("check-in");
    let row = |rows: &[lanyard_ca::inventory::DeviceView], id: &str| {
        rows.iter().find(|d| d.identity == id).cloned().expect("listed")
    };
    let all = ca.auth.devices(&DeviceFilter::default()).await.expect("devices");
    let ra = row(&all, "inv-a");
    assert_eq!(ra.state, "valid");
    assert_eq!(ra.last_seen, Some(ca.clock.now()));
    assert_eq!(ra.agent_version.as_deref(), Some("9.9.9"));
    assert_eq!(
        (ra.os.as_deref(), ra.arch.as_deref()),
        (Some("Debian GNU/Linux 12 (bookworm)"), Some("aarch64"))
    );
    assert_eq!(ra.policy_current, Some(true));
    assert_eq!(ra.not_after, a.not_after);

    // A new policy changes the version: a no longer applies the current one.
    let p = GroupPolicy { lifetime_secs: 2 * 86_400, ..Default::default() };
    ca.auth.set_policy("default", p, "test").await.expect("policy");
    let ra = row(&ca.auth.devices(&DeviceFilter::default()).await.expect("devices"), "inv-a");
    assert_eq!(ra.policy_current, Some(false));
    let ans = ca.auth.checkin(&a.der, report(&a.serial), &meta()).await.expect("check-in");
    assert_ne!(ans.policy_version, Some(version));

    // b reports failing renewals with the CA's code: it is failing, and only it.
    let mut r = report(&b.serial);
    r.consecutive_failures = 3;
    r.last_error_code = Some("busy".into());
    r.last_error = Some("the CA is busy".into());
    ca.auth.checkin(&b.der, r, &meta()).await.expect("check-in");
    let failing = ca
        .auth
        .devices(&DeviceFilter { failing: true, ..Default::default() })
        .await
        .expect("devices");
    assert_eq!(failing.iter().map(|d| d.identity.as_str()).collect::<Vec<_>>(), ["inv-b"]);
    assert_eq!(failing[0].last_error_code.as_deref(), Some("busy"));

    // c is revoked, and still checks in: recorded, and the inventory says revoked.
    ca.auth.revoke(&c.serial, Reason::KeyCompromise, false, "t", &meta()).await.expect("revoke");
    let ans = ca.auth.checkin(&c.der, report(&c.serial), &meta()).await.expect("check-in");
    assert_eq!(ans.status, "revoked");
    let rc = row(&ca.auth.devices(&DeviceFilter::default()).await.expect("devices"), "inv-c");
    assert_eq!((rc.state.as_str(), rc.cert_status.as_str()), ("revoked", "revoked"));
    assert!(rc.last_seen.is_some());

    // A report out of bounds is refused, naming the field; a foreign certificate too.
    let mut bad = report(&a.serial);
    bad.os = "x".repeat(5000);
    let e = ca.auth.checkin(&a.der, bad, &meta()).await.unwrap_err();
    assert_eq!(e.status().as_u16(), 400, "{e}");
    assert!(e.to_string().contains("os"), "{e}");

    // A day later only a checks in again: b and c are stale, a is not.
    ca.clock.advance(time::Duration::hours(25));
    ca.auth.checkin(&a.der, report(&a.serial), &meta()).await.expect("check-in");
    let stale = ca
        .auth
        .devices(&DeviceFilter { stale: Some(time::Duration::hours(24)), ..Default::default() })
        .await
        .expect("devices");
    assert_eq!(stale.iter().map(|d| d.identity.as_str()).collect::<Vec<_>>(), ["inv-b", "inv-c"]);
    // Expiring: the 7-day certificates end within 7 days, not within 5; c is revoked.
    let within = |d| DeviceFilter { expiring: Some(time::Duration::days(d)), ..Default::default() };
    assert_eq!(ca.auth.devices(&within(7)).await.expect("devices").len(), 2);
    assert_eq!(ca.auth.devices(&within(5)).await.expect("devices").len(), 0);
    let v = DeviceFilter { version: Some("9.9.9".into()), ..Default::default() };
    assert_eq!(ca.auth.devices(&v).await.expect("devices").len(), 3);

    // The device page: report, lineage, audit.
    let d = ca.auth.device_detail("inv-b").await.expect("detail");
    assert_eq!(d.report.as_ref().map(|r| r.consecutive_failures), Some(3));
    assert_eq!(d.lineage.len(), 1);
    assert!(d.audit.iter().any(|e| e.action == "issue" && e.subject == b.serial), "{:?}", d.audit);
    assert_eq!(ca.auth.device_detail("nobody").await.unwrap_err().status().as_u16(), 404);

    // Forgetting devices gone for a day drops b's and c's records (their certificates
    // stay, so they are listed again as enrolled-and-silent), not a's.
    assert_eq!(ca.auth.forget_devices(time::Duration::hours(24), "test").await.expect("forget"), 2);
    let all = ca.auth.devices(&DeviceFilter::default()).await.expect("devices");
    assert!(row(&all, "inv-a").last_seen.is_some());
    assert!(row(&all, "inv-b").last_seen.is_none());
}

const TEMPLATE: &str = "sensor-{id}.fleet.example.com";

fn sensor(id: &str) -> String {
    TEMPLATE.replace("{id}", id)
}

/// A claim with 3 uses: three identities enrol, the fourth is refused; each identity once
/// (the same key again gets the same certificate, another key is refused); identities
/// outside the template, unknown claims, revoked and expired claims are refused with their
/// codes; a reset lets an identity enrol through a claim again.
pub async fn a_batch_claim_enrols_each_identity_once_and_no_more_than_its_uses(ca: Ca) {
    use lanyard_proto::ProblemCode as P;
    let (claim, rec) = ca
        .auth
        .create_claim("default", TEMPLATE, 3, Duration::from_secs(86_400), "test")
        .await
        .expect("claim");
    assert!(claim.expose().starts_with("lyc.") && rec.uses == 0 && rec.max_uses == 3);
    let mut issued = Vec::new();
    for d in ["a1", "a2", "a3"] {
        let (_k, der) = csr(None, p256());
        let i = ca.auth.enroll(&sensor(d), &claim, &der, &meta()).await.expect("enrol");
        assert_eq!(i.record.identity, sensor(d));
        issued.push((d, der, i.record.serial));
    }
    // A retry with the same key (a lost answer) gets the same certificate, even now that the
    // claim is used up.
    let (d, der, serial) = &issued[0];
    let again = ca.auth.enroll(&sensor(d), &claim, der, &meta()).await.expect("retry");
    assert!(again.replayed && again.record.serial == *serial);
    let (_k, other) = csr(None, p256());
    let e = ca.auth.enroll(&sensor("a1"), &claim, &other, &meta()).await.unwrap_err();
    assert_eq!(code(&e), P::AlreadyProvisioned, "{e}");
    let e = ca.auth.enroll(&sensor("a4"), &claim, &other, &meta()).await.unwrap_err();
    assert_eq!(code(&e), P::ClaimExhausted, "{e}");
    assert_eq!(ca.auth.claims().await.expect("list")[0].uses, 3);
    assert_eq!(ca.auth.certs(CertFilter::default()).await.expect("certs").len(), 3);

    let (claim2, rec2) = ca
        .auth
        .create_claim("default", TEMPLATE, 10, Duration::from_secs(3600), "test")
        .await
        .expect("claim");
    let e = ca.auth.enroll("other.fleet.example.com", &claim2, &other, &meta()).await.unwrap_err();
    assert_eq!(code(&e), P::IdentityMismatch, "{e}");
    let e = ca.auth.enroll(&sensor("a1"), &claim2, &other, &meta()).await.unwrap_err();
    assert_eq!(code(&e), P::AlreadyProvisioned, "an identity enrols through claims once: {e}");
    assert!(ca.auth.reset_provisioning(&sensor("a1"), "test").await.expect("reset"));
    assert!(!ca.auth.reset_provisioning(&sensor("never"), "test").await.expect("reset"));
    ca.auth.enroll(&sensor("a1"), &claim2, &other, &meta()).await.expect("after the reset");
    let fake = TokenSecret::from_presented(&lanyard_proto::claim::format(&[9u8; 32]));
    let e = ca.auth.enroll(&sensor("b1"), &fake, &other, &meta()).await.unwrap_err();
    assert_eq!(code(&e), P::TokenInvalid, "{e}");

    assert!(ca.auth.revoke_claim(&rec2, "test").await.expect("revoke"));
    assert!(!ca.auth.revoke_claim(&rec2, "test").await.expect("revoke twice"));
    let (_k, der) = csr(None, p256());
    let e = ca.auth.enroll(&sensor("b2"), &claim2, &der, &meta()).await.unwrap_err();
    assert_eq!(code(&e), P::ClaimExhausted, "{e}");
    assert!(e.to_string().contains("revoked"), "{e}");

    let (claim3, _) = ca
        .auth
        .create_claim("default", TEMPLATE, 10, Duration::from_secs(60), "test")
        .await
        .expect("claim");
    ca.clock.advance(time::Duration::minutes(2));
    let e = ca.auth.enroll(&sensor("c1"), &claim3, &der, &meta()).await.unwrap_err();
    assert_eq!(code(&e), P::ClaimExpired, "{e}");

    // Bad claims are refused at creation.
    for (group, template, uses, ttl) in [
        ("default", "sensor.example.com", 3, 60),
        ("default", TEMPLATE, 0, 60),
        ("default", TEMPLATE, 3, 0),
        ("no-such-group", TEMPLATE, 3, 60),
    ] {
        let r = ca.auth.create_claim(group, template, uses, Duration::from_secs(ttl), "test").await;
        assert_eq!(code(&r.unwrap_err()), P::BadRequest, "{group} {template} {uses} {ttl}");
    }
    // Every use is audited with the claim's ID, never the claim itself.
    let log = ca.auth.store().audit_log(100).await.expect("audit");
    let uses = log.iter().filter(|e| e.actor == format!("claim:{}", rec.id)).count();
    assert_eq!(uses, 3, "{log:?}");
    assert!(!format!("{log:?}").contains(claim.expose()));
}

/// Eight devices race for a claim with three uses: exactly three enrol.
pub async fn a_claim_is_never_used_beyond_its_uses(ca: Ca) {
    let ca = Arc::new(ca);
    let (claim, _) = ca
        .auth
        .create_claim("default", TEMPLATE, 3, Duration::from_secs(3600), "test")
        .await
        .expect("claim");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (ca, claim) = (ca.clone(), claim.clone());
        tasks.push(tokio::spawn(async move {
            let (_k, der) = csr(None, p256());
            ca.auth.enroll(&sensor(&format!("r{i}")), &claim, &der, &meta()).await
        }));
    }
    let (mut ok, mut exhausted) = (0, 0);
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => ok += 1,
            Err(e) if code(&e) == lanyard_proto::ProblemCode::ClaimExhausted => exhausted += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((ok, exhausted), (3, 5));
    assert_eq!(ca.auth.claims().await.expect("list")[0].uses, 3);
}

/// A factory CA and its factory certificates (IDevID), made with rcgen.
struct FactoryPki {
    ca_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl FactoryPki {
    fn new(name: &str) -> FactoryPki {
        let key = rcgen::KeyPair::generate_for(p256()).expect("key");
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        let ca = p.self_signed(&key).expect("factory CA");
        FactoryPki { ca_pem: ca.pem(), issuer: rcgen::Issuer::new(p, key) }
    }

    /// A factory certificate with this CN and URI SAN (DER).
    fn device(&self, cn: &str, uri: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(p256()).expect("key");
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().expect("uri"))];
        p.is_ca = rcgen::IsCa::ExplicitNoCa;
        p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        p.signed_by(&key, &self.issuer).expect("factory certificate").der().to_vec()
    }
}

/// Factory certificates: the identity from the CA's rule (a template over the URI SAN's last
/// segment), once per certificate (the same key again gets the same certificate), a reset
/// allows it again, an unknown factory CA and a blocked certificate are refused, and an
/// untrusted CA enrols nothing more.
pub async fn factory_certificates_enrol_once_each(ca: Ca) {
    use lanyard_ca::store::IdentityFrom;
    use lanyard_proto::ProblemCode as P;
    let acme = FactoryPki::new("Acme Factory CA");
    let rec = ca
        .auth
        .trust_factory_ca(
            "default",
            acme.ca_pem.as_bytes(),
            IdentityFrom::SanUri,
            Some(TEMPLATE.into()),
            "test",
        )
        .await
        .expect("trust");
    let idev = acme.device("Acme sensor", "urn:acme:sensor:SN-77");
    let (_k, der) = csr(None, p256());
    let first = ca.auth.enroll_with_factory_cert(&idev, &der, &meta()).await.expect("enrol");
    assert_eq!(first.record.identity, sensor("sn-77"));
    let again = ca.auth.enroll_with_factory_cert(&idev, &der, &meta()).await.expect("retry");
    assert!(again.replayed && again.record.serial == first.record.serial);
    let (_k, other) = csr(None, p256());
    let e = ca.auth.enroll_with_factory_cert(&idev, &other, &meta()).await.unwrap_err();
    assert_eq!(code(&e), P::AlreadyProvisioned, "{e}");
    assert!(ca.auth.reset_provisioning(&sensor("sn-77"), "test").await.expect("reset"));
    ca.auth.enroll_with_factory_cert(&idev, &other, &meta()).await.expect("after a reset");

    let rogue = FactoryPki::new("Rogue CA").device("x", "urn:rogue:SN-1");
    let e = ca.auth.enroll_with_factory_cert(&rogue, &der, &meta()).await.unwrap_err();
    assert_eq!(code(&e), P::FactoryCaUnknown, "{e}");

    let blocked = acme.device("Acme sensor", "urn:acme:sensor:SN-78");
    let fp = lanyard_ca::authority::factory_cert_fingerprint(&hex_sha256(&blocked)).expect("fp");
    ca.auth.block_factory_cert(&fp, "test").await.expect("block");
    let (_k, d2) = csr(None, p256());
    let e = ca.auth.enroll_with_factory_cert(&blocked, &d2, &meta()).await.unwrap_err();
    assert_eq!(code(&e), P::Forbidden, "{e}");

    assert_eq!(ca.auth.factory_cas().await.expect("list").len(), 1);
    ca.auth.untrust_factory_ca(&rec.id, "test").await.expect("untrust");
    assert!(ca.auth.factory_cas().await.expect("list").is_empty());
    let late = acme.device("Acme sensor", "urn:acme:sensor:SN-79");
    let e = ca.auth.enroll_with_factory_cert(&late, &d2, &meta()).await.unwrap_err();
    assert_eq!(code(&e), P::FactoryCaUnknown, "{e}");
}

fn hex_sha256(der: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der))
}
