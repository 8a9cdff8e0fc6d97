//! The KMS signer against a strict KMS stand-in.
//!
//! moto ignores `MessageType` (it always hashes what it is given) and has no 4,096-byte
//! limit on `RAW` messages, so a test on moto cannot see that a large CRL is refused by
//! real KMS, nor check a `DIGEST` signature. This stand-in speaks KMS's JSON protocol for
//! `GetPublicKey` and `Sign` and does what AWS documents: `RAW` up to 4,096 bytes (longer:
//! `ValidationException`, HTTP 400), `DIGEST` signed as given (it must be the length of the
//! algorithm's hash), and a disabled key refused with `DisabledException`. Its key is a
//! local ECDSA P-256 key; every signature is checked against the original message with
//! the public key, and a CRL of 200 revocations signed through it is verified by openssl.
#![cfg(feature = "aws")]

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use lanyard_ca::error::CaError;
use lanyard_ca::signer::kms::{KMS_RAW_MAX, KmsSigner};
use lanyard_proto::{KeyAlgorithm, ProblemCode};
use std::sync::{Arc, Mutex};

struct StandIn {
    key: EcdsaKeyPair,
    spki: Vec<u8>,
    disabled: std::sync::atomic::AtomicBool,
    /// Each `Sign` request's `MessageType` and message length, in order.
    seen: Mutex<Vec<(String, usize)>>,
}

fn kms_error(kind: &str, message: &str) -> (StatusCode, HeaderMap, String) {
    let mut h = HeaderMap::new();
    h.insert("x-amzn-errortype", kind.parse().expect("header"));
    h.insert("content-type", "application/x-amz-json-1.1".parse().expect("header"));
    (
        StatusCode::BAD_REQUEST,
        h,
        serde_json::json!({"__type": kind, "message": message}).to_string(),
    )
}

fn ok(body: serde_json::Value) -> (StatusCode, HeaderMap, String) {
    let mut h = HeaderMap::new();
    h.insert("content-type", "application/x-amz-json-1.1".parse().expect("header"));
    (StatusCode::OK, h, body.to_string())
}

async fn kms(
    axum::extract::State(s): axum::extract::State<Arc<StandIn>>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, HeaderMap, String) {
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("");
    let req: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    match target {
        "TrentService.GetPublicKey" => ok(serde_json::json!({
            "KeyId": req["KeyId"],
            "PublicKey": B64.encode(&s.spki),
            "KeySpec": "ECC_NIST_P256",
            "KeyUsage": "SIGN_VERIFY",
            "SigningAlgorithms": ["ECDSA_SHA_256"],
        })),
        "TrentService.Sign" => {
            if s.disabled.load(std::sync::atomic::Ordering::SeqCst) {
                return kms_error(
                    "DisabledException",
                    "arn:aws:kms:us-east-1:000000000000:key/test is disabled.",
                );
            }
            let msg = B64.decode(req["Message"].as_str().unwrap_or("")).unwrap_or_default();
            let kind = req["MessageType"].as_str().unwrap_or("RAW").to_owned();
            s.seen.lock().expect("lock").push((kind.clone(), msg.len()));
            if req["SigningAlgorithm"] != "ECDSA_SHA_256" {
                return kms_error("InvalidKeyUsageException", "wrong signing algorithm");
            }
            let rng = SystemRandom::new();
            let sig = match kind.as_str() {
                "RAW" if msg.len() > 4096 => {
                    return kms_error(
                        "ValidationException",
                        "1 validation error detected: Value at 'message' failed to satisfy constraint: Member must have length less than or equal to 4096",
                    );
                }
                "RAW" => s.key.sign(&rng, &msg).map(|g| g.as_ref().to_vec()),
                "DIGEST" => {
                    match aws_lc_rs::digest::Digest::import_less_safe(
                        &msg,
                        &aws_lc_rs::digest::SHA256,
                    ) {
                        Ok(d) => s.key.sign_digest(&d).map(|g| g.as_ref().to_vec()),
                        Err(_) => {
                            return kms_error(
                                "ValidationException",
                                "Digest is invalid length for algorithm ECDSA_SHA_256.",
                            );
                        }
                    }
                }
                _ => return kms_error("ValidationException", "unknown MessageType"),
            };
            match sig {
                Ok(sig) => ok(serde_json::json!({
                    "KeyId": req["KeyId"],
                    "Signature": B64.encode(sig),
                    "SigningAlgorithm": "ECDSA_SHA_256",
                })),
                Err(_) => kms_error("KMSInternalException", "signing failed"),
            }
        }
        other => kms_error("UnknownOperationException", other),
    }
}

async fn start() -> (Arc<StandIn>, aws_sdk_kms::Client) {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .expect("key");
    let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref())
        .expect("key");
    // The SubjectPublicKeyInfo of a P-256 key: the fixed algorithm prefix, then the point.
    let mut spki =
        hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").expect("hex");
    spki.extend_from_slice(key.public_key().as_ref());
    let s = Arc::new(StandIn {
        key,
        spki,
        disabled: std::sync::atomic::AtomicBool::new(false),
        seen: Mutex::new(Vec::new()),
    });
    let app = axum::Router::new().route("/", axum::routing::post(kms)).with_state(s.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let cfg = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(format!("http://{addr}"))
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .load()
        .await;
    (s, aws_sdk_kms::Client::new(&cfg))
}

fn verifies(s: &StandIn, msg: &[u8], sig: &[u8]) -> bool {
    signature::UnparsedPublicKey::new(
        &signature::ECDSA_P256_SHA256_ASN1,
        s.key.public_key().as_ref(),
    )
    .verify(msg, sig)
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_are_signed_as_digests_and_a_disabled_key_is_not_busy() {
    let (standin, client) = start().await;
    let signer = KmsSigner::open(client, "test", KeyAlgorithm::EcdsaP256).await.expect("open");
    use rcgen::SigningKey;

    // Small: RAW, as before.
    let small = vec![1u8; 200];
    let sig = signer.sign(&small).expect("sign small");
    assert!(verifies(&standin, &small, &sig));
    // At the limit: still RAW. Beyond it: the SHA-256 digest, and the signature is one
    // over the whole message.
    let at = vec![2u8; KMS_RAW_MAX];
    assert!(verifies(&standin, &at, &signer.sign(&at).expect("sign at the limit")));
    let big = vec![3u8; 50_000];
    let sig = signer.sign(&big).expect("sign beyond the limit");
    assert!(verifies(&standin, &big, &sig), "a DIGEST signature that does not verify");
    let seen = standin.seen.lock().expect("lock").clone();
    assert_eq!(
        seen,
        [("RAW".to_owned(), 200), ("RAW".to_owned(), KMS_RAW_MAX), ("DIGEST".to_owned(), 32)]
    );

    // A CRL of 200 revocations (well over 4 KB) signed through KMS, verified by openssl.
    let dir = tempfile::tempdir().expect("tmp");
    let mut ca = rcgen::CertificateParams::default();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "KMS stand-in CA");
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = ca.self_signed(&signer).expect("CA certificate signed through KMS");
    let issuer = rcgen::Issuer::new(ca, &signer);
    let now = lanyard_ca::clock::Clock::now(&lanyard_ca::clock::SystemClock);
    let crl = rcgen::CertificateRevocationListParams {
        this_update: now,
        next_update: now + time::Duration::days(1),
        crl_number: rcgen::SerialNumber::from(7u64),
        issuing_distribution_point: None,
        revoked_certs: (0..200u64)
            .map(|i| rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from((1u64 << 40) + i),
                revocation_time: now,
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)
    .expect("CRL signed through KMS");
    assert!(crl.der().len() > KMS_RAW_MAX, "the CRL is {} bytes", crl.der().len());
    let (ca_pem, crl_pem) = (dir.path().join("ca.pem"), dir.path().join("crl.pem"));
    std::fs::write(&ca_pem, cert.pem()).expect("write");
    std::fs::write(&crl_pem, crl.pem().expect("pem")).expect("write");
    let out = std::process::Command::new("openssl")
        .args(["crl", "-noout", "-in"])
        .arg(&crl_pem)
        .arg("-CAfile")
        .arg(&ca_pem)
        .output()
        .expect("openssl");
    let said =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.contains("verify OK"), "openssl crl: {said}");

    // A disabled key is a failure that says so (500), not "busy, come back in 5 s" for good.
    standin.disabled.store(true, std::sync::atomic::Ordering::SeqCst);
    let e = CaError::from(signer.sign(&small).expect_err("a disabled key signs nothing"));
    assert_eq!(e.code(), ProblemCode::Internal, "{e}");
    assert!(e.to_string().contains("DisabledException"), "{e}");
}
