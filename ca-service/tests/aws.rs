//! The serverless backends against moto (a local AWS endpoint started here): KMS keys,
//! the DynamoDB store under the conformance suite, enrolment and renewal through the
//! Lambda handler (API Gateway events, one with the client certificate in the request
//! context), concurrent enrolments, and revocation reaching the S3 CRL and the
//! KeyValueStore plan. Issued certificates are checked with openssl.
//!
//! Needs `moto_server` (`pip install 'moto[server]'`) and openssl; with CI=true a missing
//! peer fails the test instead of skipping it.
#![cfg(feature = "aws")]

mod conformance;

use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use base64::Engine;
use lanyard_ca::aws::{AwsBackend, AwsLocation, KvsPlan};
use lanyard_ca::ca_dir::InitOptions;
use lanyard_ca::clock::SystemClock;
use lanyard_ca::revocation::Reason;
use lanyard_ca::store::dynamodb::DynamoStore;
use lanyard_proto::KeyAlgorithm;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Moto(Child, String);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn moto() -> Option<Moto> {
    if !have("moto_server") {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "moto_server is missing (pip install 'moto[server]')"
        );
        eprintln!("skipping: moto_server is not installed");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    // One request at a time: see moto_serial.py (DynamoDB's serializable transactions).
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/moto_serial.py");
    let child = Command::new("python3")
        .args([script, &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server");
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(30), "moto_server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(Moto(child, format!("http://127.0.0.1:{port}")))
}

async fn sdk(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .load()
        .await
}

async fn table(cfg: &aws_config::SdkConfig, name: &str) {
    aws_sdk_dynamodb::Client::new(cfg)
        .create_table()
        .table_name(name)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("attr"),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .expect("key"),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create table");
}

fn csr(cn: &str) -> Vec<u8> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.serialize_request(&key).expect("csr").der().to_vec()
}

fn event(
    path: &str,
    headers: serde_json::Value,
    body: &str,
    client_cert_pem: Option<&str>,
) -> lambda_http::Request {
    let mut ctx = serde_json::json!({
        "accountId": "123456789012", "apiId": "api", "domainName": "ca.example.com", "domainPrefix": "ca",
        "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1", "sourceIp": "198.51.100.7", "userAgent": "lanyard"},
        "requestId": "r", "routeKey": "$default", "stage": "$default", "time": "24/Nov/2026:10:00:00 +0000", "timeEpoch": 0
    });
    if let Some(pem) = client_cert_pem {
        ctx["authentication"] = serde_json::json!({"clientCert": {"clientCertPem": pem, "subjectDN": "", "issuerDN": "", "serialNumber": "", "validity": {"notBefore": "", "notAfter": ""}}});
    }
    let ev = serde_json::json!({
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
        "headers": headers, "requestContext": ctx, "body": body, "isBase64Encoded": false
    });
    lambda_http::request::from_str(&ev.to_string()).expect("API Gateway event")
}

async fn body_of(resp: http::Response<axum::body::Body>) -> (u16, Vec<u8>) {
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.expect("body");
    (status, bytes.to_vec())
}

fn leaf_from_pkcs7(b64: &[u8]) -> Vec<u8> {
    let der = lanyard_proto::est::decode_base64(b64).expect("base64");
    lanyard_proto::est::parse_certs_only_pkcs7(&der).expect("pkcs7").remove(0)
}

fn openssl_verify(bundle: &str, leaf_der: &[u8]) {
    openssl_verify_with(bundle, None, leaf_der);
}

/// `openssl verify -CAfile trusted [-untrusted intermediates] leaf`.
fn openssl_verify_with(trusted: &str, untrusted: Option<&str>, leaf_der: &[u8]) {
    if !have("openssl") {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "openssl is missing");
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("bundle.pem"), trusted).expect("write");
    std::fs::write(dir.path().join("untrusted.pem"), untrusted.unwrap_or("")).expect("write");
    std::fs::write(
        dir.path().join("leaf.pem"),
        pem::encode(&pem::Pem::new("CERTIFICATE", leaf_der.to_vec())),
    )
    .expect("write");
    let mut args = vec!["verify", "-CAfile", "bundle.pem"];
    if untrusted.is_some() {
        args.extend(["-untrusted", "untrusted.pem"]);
    }
    args.push("leaf.pem");
    let out =
        Command::new("openssl").args(&args).current_dir(dir.path()).output().expect("openssl");
    assert!(out.status.success(), "openssl verify: {}", String::from_utf8_lossy(&out.stderr));
}

fn cert_pem(der: &[u8]) -> String {
    lanyard_ca::bundle::certificate_pem(der)
}

/// Enrols `identity` through the Lambda handler with a token; the certificate (DER).
async fn enrol_through_handler(auth: &Arc<lanyard_ca::Authority>, identity: &str) -> Vec<u8> {
    let (token, _) = auth
        .create_token(identity, "default", Duration::from_secs(600), "test")
        .await
        .expect("token");
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{identity}:{}", token.expose()));
    let req = event(
        "/.well-known/est/simpleenroll",
        serde_json::json!({"content-type": "application/pkcs10", "authorization": format!("Basic {basic}")}),
        &lanyard_proto::est::encode_base64(&csr(identity)),
        None,
    );
    let (status, body) = body_of(lanyard_ca::aws_lambda::handle(auth.clone(), req).await).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    leaf_from_pkcs7(&body)
}

/// Renews through the Lambda handler with `cert` in the API Gateway mTLS context.
async fn renew_through_handler(auth: &Arc<lanyard_ca::Authority>, cert: &[u8]) -> (u16, Vec<u8>) {
    let (_, x) = x509_parser::parse_x509_certificate(cert).expect("certificate");
    let cn = x.subject().iter_common_name().next().and_then(|c| c.as_str().ok()).expect("CN");
    let req = event(
        "/.well-known/est/simplereenroll",
        serde_json::json!({"content-type": "application/pkcs10"}),
        &lanyard_proto::est::encode_base64(&csr(cn)),
        Some(&cert_pem(cert)),
    );
    body_of(lanyard_ca::aws_lambda::handle(auth.clone(), req).await).await
}

fn issuer_cn(der: &[u8]) -> String {
    let (_, x) = x509_parser::parse_x509_certificate(der).expect("certificate");
    x.issuer().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serverless_ca_on_moto() {
    let Some(m) = moto() else { return };
    let cfg = sdk(&m.1).await;

    // The conformance suite on DynamoDB, a fresh table per case.
    macro_rules! on_dynamo {
        ($($case:ident),* $(,)?) => {
            $(
                let name = concat!("conf-", stringify!($case)).replace('_', "-");
                table(&cfg, &name).await;
                let store = Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(&cfg), name));
                conformance::$case(conformance::ca_with(store)).await;
            )*
        };
    }
    on_dynamo!(
        enrol_retry_with_same_key_gets_same_certificate,
        failed_attempts_do_not_burn_the_token,
        token_binding_expiry_and_unknown,
        policy_decides_lifetime_and_keys,
        renewal_rules,
        foreign_certificate_is_refused,
        crl_lists_revocations_and_changes_number,
        concurrent_enrolments_issue_once,
        a_certificate_renews_once,
        revocation_follows_the_lineage,
        revoke_identity_revokes_every_live_certificate,
        key_reuse_is_refused,
        reads_before_signing_match_the_single_reads,
        superseded_parents_retire,
        refusals_carry_codes,
        tokens_are_listed_and_revoked_before_use,
        a_token_is_revoked_or_used_never_both,
        checkins_fill_the_inventory,
        a_batch_claim_enrols_each_identity_once_and_no_more_than_its_uses,
        a_claim_is_never_used_beyond_its_uses,
        factory_certificates_enrol_once_each,
    );

    init_is_checked_claimed_and_cleaned_up(&cfg).await;
    a_revocation_moves_the_generation_in_its_own_transaction(&cfg).await;

    // init with KMS keys; a second init refuses.
    table(&cfg, "lanyard-ca").await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&cfg).force_path_style(true).build(),
    )
    .create_bucket()
    .bucket("lanyard-pub")
    .send()
    .await
    .expect("bucket");
    let backend = AwsBackend::connect_with(
        &cfg,
        AwsLocation {
            table: "lanyard-ca".into(),
            bucket: Some("lanyard-pub".into()),
            root_key_id: None,
            issuing_key_id: None,
        },
    );
    let opts = InitOptions {
        name: "Fleet".into(),
        root_key: KeyAlgorithm::EcdsaP384,
        issuing_key: KeyAlgorithm::EcdsaP256,
        public_url: "http://pki.example.com".into(),
    };
    let settings = backend.init(&opts, &SystemClock).await.expect("init");
    assert_ne!(settings.root_key_id, settings.issuing_key_id);
    assert!(backend.init(&opts, &SystemClock).await.is_err(), "init twice must refuse");
    let auth = Arc::new(backend.open(Arc::new(SystemClock)).await.expect("open"));
    assert!(auth.keys().issuing.0.describe().starts_with("kms:"));
    let published = backend.publish(&auth).await.expect("publish");
    assert!(published.objects.iter().any(|o| o.ends_with("ca-bundle.pem")));
    let bundle = lanyard_ca::bundle::build(
        "Fleet",
        std::slice::from_ref(&auth.keys().root_der),
        std::slice::from_ref(&auth.keys().issuing_der),
    );
    lanyard_ca::bundle::check(bundle.as_bytes()).expect("CloudFront bundle rules");

    // Keys made beforehand (as Terraform does, with their key policies) are used, not
    // created; a key of the wrong kind is refused by name.
    let kms = aws_sdk_kms::Client::new(&cfg);
    let mk = |spec: aws_sdk_kms::types::KeySpec| {
        let kms = kms.clone();
        async move {
            kms.create_key()
                .key_spec(spec)
                .key_usage(aws_sdk_kms::types::KeyUsageType::SignVerify)
                .send()
                .await
                .expect("create key")
                .key_metadata
                .expect("metadata")
                .key_id
        }
    };
    let (root_id, issuing_id) = (
        mk(aws_sdk_kms::types::KeySpec::EccNistP384).await,
        mk(aws_sdk_kms::types::KeySpec::EccNistP256).await,
    );
    table(&cfg, "premade").await;
    let loc = AwsLocation {
        table: "premade".into(),
        bucket: None,
        root_key_id: Some(root_id.clone()),
        issuing_key_id: Some(issuing_id.clone()),
    };
    let s = AwsBackend::connect_with(&cfg, loc)
        .init(&opts, &SystemClock)
        .await
        .expect("init with given keys");
    assert_eq!((s.root_key_id, s.issuing_key_id), (root_id.clone(), issuing_id.clone()));
    table(&cfg, "wrongkind").await;
    let loc = AwsLocation {
        table: "wrongkind".into(),
        bucket: None,
        root_key_id: Some(issuing_id),
        issuing_key_id: Some(root_id),
    };
    let e = AwsBackend::connect_with(&cfg, loc)
        .init(&opts, &SystemClock)
        .await
        .expect_err("P-256 key as root");
    assert!(e.to_string().contains("not ecdsa-p384"), "{e}");

    // The handler's authority opens the issuing key only (its role may not sign with the
    // root): it issues and renews, and the root CRL is not its to make.
    let full = auth;
    let auth = Arc::new(
        backend
            .open_with(Arc::new(SystemClock), lanyard_ca::aws::KeyAccess::IssuingOnly)
            .await
            .expect("open without the root key"),
    );
    assert!(auth.keys().root.is_none());
    let e = auth.root_crl().await.expect_err("no root key, no root CRL");
    assert_eq!(e.status().as_u16(), 404, "{e}");

    // Enrol through the Lambda handler (bootstrap hostname: no client certificate).
    let (token, _) = auth
        .create_token("sensor-1.fleet.example.com", "default", Duration::from_secs(600), "test")
        .await
        .expect("token");
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("sensor-1.fleet.example.com:{}", token.expose()));
    let csr_b64 = lanyard_proto::est::encode_base64(&csr("sensor-1.fleet.example.com"));
    let req = event(
        "/.well-known/est/simpleenroll",
        serde_json::json!({"content-type": "application/pkcs10", "authorization": format!("Basic {basic}")}),
        &csr_b64,
        None,
    );
    let (status, body) = body_of(lanyard_ca::aws_lambda::handle(auth.clone(), req).await).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let leaf = leaf_from_pkcs7(&body);
    openssl_verify(&bundle, &leaf);

    // Renew through the handler with the certificate in the API Gateway mTLS context.
    let leaf_pem = pem::encode(&pem::Pem::new("CERTIFICATE", leaf.clone()));
    let renew = |pem: Option<String>| {
        let body = lanyard_proto::est::encode_base64(&csr("sensor-1.fleet.example.com"));
        event(
            "/.well-known/est/simplereenroll",
            serde_json::json!({"content-type": "application/pkcs10"}),
            &body,
            pem.as_deref(),
        )
    };
    let (status, body) =
        body_of(lanyard_ca::aws_lambda::handle(auth.clone(), renew(Some(leaf_pem.clone()))).await)
            .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let renewed = leaf_from_pkcs7(&body);
    assert_ne!(renewed, leaf);
    openssl_verify(&bundle, &renewed);
    let (status, _) =
        body_of(lanyard_ca::aws_lambda::handle(auth.clone(), renew(None)).await).await;
    assert_eq!(status, 401, "renewal without the mTLS context is refused");

    // Revocation reaches the S3 CRL, the export and the KeyValueStore plan.
    let (_, x) = x509_parser::parse_x509_certificate(&renewed).expect("parse");
    let serial = lanyard_proto::serial::to_hex(x.raw_serial());
    // (An admin revokes; the publisher, which holds the root key, publishes.)
    full.revoke(&serial, Reason::KeyCompromise, false, "test", &Default::default())
        .await
        .expect("revoke");
    backend.publish(&full).await.expect("publish");
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&cfg).force_path_style(true).build(),
    );
    let crl = s3
        .get_object()
        .bucket("lanyard-pub")
        .key("crl/issuing.crl")
        .send()
        .await
        .expect("get")
        .body
        .collect()
        .await
        .expect("read")
        .into_bytes();
    let (_, parsed) = x509_parser::parse_x509_crl(&crl).expect("CRL");
    assert!(
        parsed
            .iter_revoked_certificates()
            .any(|r| lanyard_proto::serial::to_hex(r.raw_serial()) == serial)
    );
    let obj = s3.get_object().bucket("lanyard-pub").key("ca-bundle.pem").send().await.expect("get");
    assert_eq!(obj.content_type(), Some("text/plain"));
    // A trusted factory CA joins the mTLS hostname's trust store, never the edges' bundle.
    let factory_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut fp = rcgen::CertificateParams::default();
    fp.distinguished_name.push(rcgen::DnType::CommonName, "Acme Factory CA");
    fp.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let factory_pem = fp.self_signed(&factory_key).expect("factory CA").pem();
    full.trust_factory_ca(
        "default",
        factory_pem.as_bytes(),
        lanyard_ca::store::IdentityFrom::Cn,
        None,
        "test",
    )
    .await
    .expect("trust");
    backend.publish(&full).await.expect("publish");
    let text = |key: &'static str| {
        let s3 = s3.clone();
        async move {
            let o = s3.get_object().bucket("lanyard-pub").key(key).send().await.expect("get");
            String::from_utf8(o.body.collect().await.expect("body").into_bytes().to_vec())
                .expect("utf-8")
        }
    };
    let (mtls, edges) = (text("mtls-truststore.pem").await, text("ca-bundle.pem").await);
    let factory_b64: String = factory_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let flat = |s: &str| s.lines().filter(|l| !l.starts_with("-----")).collect::<String>();
    assert!(mtls.starts_with(&edges), "the bundle first");
    assert!(flat(&mtls).contains(&factory_b64), "{mtls}");
    assert!(!flat(&edges).contains(&factory_b64), "a factory CA in the edges' bundle");
    let export = auth.revoked_export().await.expect("export");
    let plan = KvsPlan::new(&Default::default(), &export, auth.now());
    let colon = lanyard_proto::serial::to_colon_hex(
        &lanyard_proto::serial::parse_hex(&serial).expect("hex"),
    );
    assert!(plan.puts.iter().any(|(k, _)| *k == colon), "{plan:?}");
    let renewed_pem = pem::encode(&pem::Pem::new("CERTIFICATE", renewed));
    let (status, body) =
        body_of(lanyard_ca::aws_lambda::handle(auth.clone(), renew(Some(renewed_pem))).await).await;
    assert_eq!(
        status,
        403,
        "a revoked certificate cannot renew: {}",
        String::from_utf8_lossy(&body)
    );

    // The console on an admin's machine against the fleet's table and bucket
    // (`lanyard-ca console --backend aws`, the binary): a token from `admin token` (its key
    // in --admin-dir) signs in, the devices page lists the fleet's device, and `/metrics`
    // has the age of the S3 publication.
    console_on_aws(&m.1, "sensor-1.fleet.example.com");
    an_embedded_ca_feeds_s3(&cfg, &m.1).await;
}

/// CA rotation on the serverless CA, as an operator runs it (`lanyard-ca --backend aws ca
/// rotate-issuing` / `ca rotate-root`, the binary): new KMS keys, the new CA committed with
/// the settings in one transaction, a warm handler that loads it without a restart, a
/// device under the old issuing CA renewing onto the new one, both CAs' CRLs and the bundle
/// in the bucket (openssl verifies old and new certificates against it), two racing
/// rotations of which exactly one commits and the other deletes its key, a root rotation
/// with a key made beforehand whose cross-certificate lets openssl verify the new chain
/// against the old root alone, and the emergency revocation of an issuing CA. Its own test
/// and moto: in a debug build, one test holding every scenario outgrows a thread's stack.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serverless_ca_rotates() {
    use lanyard_ca::aws::{KeyAccess, LiveAuthority};
    let Some(m) = moto() else { return };
    let (cfg, endpoint) = (&sdk(&m.1).await, m.1.as_str());
    table(cfg, "rotating").await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(cfg).force_path_style(true).build(),
    );
    s3.create_bucket().bucket("rotating-pub").send().await.expect("bucket");
    let loc = AwsLocation {
        table: "rotating".into(),
        bucket: Some("rotating-pub".into()),
        root_key_id: None,
        issuing_key_id: None,
    };
    let backend = Arc::new(AwsBackend::connect_with(cfg, loc));
    let opts = InitOptions {
        name: "Fleet".into(),
        root_key: KeyAlgorithm::EcdsaP384,
        issuing_key: KeyAlgorithm::EcdsaP256,
        public_url: "http://pki.example.com".into(),
    };
    backend.init(&opts, &SystemClock).await.expect("init");
    // The internet-facing handler, checking the settings at every request.
    let http = LiveAuthority::open(
        backend.clone(),
        Arc::new(SystemClock),
        KeyAccess::IssuingOnly,
        None,
        Duration::ZERO,
    )
    .await
    .expect("handler's CA");
    let leaf1 = enrol_through_handler(&http.get().await, "dev-1.fleet.example.com").await;
    assert!(issuer_cn(&leaf1).ends_with("CN=Fleet Issuing CA"), "{}", issuer_cn(&leaf1));

    let cli = |args: &[&str]| {
        outcome(
            lanyard_ca_on_moto(endpoint, args)
                .env("LANYARD_CA_BACKEND", "aws")
                .env("LANYARD_AWS_TABLE", "rotating")
                .env("LANYARD_AWS_BUCKET", "rotating-pub"),
        )
    };
    let (ok, text) = cli(&["ca", "rotate-issuing"]);
    assert!(ok, "{text}");
    assert!(text.contains("issuing CA 1 -> 2") && text.contains("republished"), "{text}");
    // A key named beforehand that KMS does not have: refused by name, nothing committed.
    let missing = "00000000-0000-0000-0000-000000000000";
    let (ok, text) = cli(&["ca", "rotate-issuing", "--issuing-key-id", missing]);
    assert!(!ok && text.contains(missing), "{text}");
    assert_eq!(backend.settings().await.expect("settings").issuing_generation, 2);

    // The warm handler moves to issuing CA 2 and keeps answering for CA 1's certificates.
    let auth = http.get().await;
    assert_eq!(auth.keys().generation, 2);
    assert_eq!(auth.keys().retired.iter().map(|r| r.generation).collect::<Vec<_>>(), [1]);
    let (status, body) = renew_through_handler(&auth, &leaf1).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let leaf2 = leaf_from_pkcs7(&body);
    assert!(issuer_cn(&leaf2).ends_with("CN=Fleet Issuing CA 2"), "{}", issuer_cn(&leaf2));
    let get = |key: &'static str| {
        let s3 = s3.clone();
        async move {
            let o = s3.get_object().bucket("rotating-pub").key(key).send().await.expect(key);
            o.body.collect().await.expect("read").into_bytes().to_vec()
        }
    };
    let bundle = String::from_utf8(get("ca-bundle.pem").await).expect("utf-8");
    lanyard_ca::bundle::check(bundle.as_bytes()).expect("CloudFront bundle rules");
    assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 3, "root and both issuing CAs");
    openssl_verify(&bundle, &leaf1);
    openssl_verify(&bundle, &leaf2);
    for (key, cn) in
        [("crl/issuing.crl", "Fleet Issuing CA"), ("crl/issuing-2.crl", "Issuing CA 2")]
    {
        let der = get(key).await;
        let (_, crl) = x509_parser::parse_x509_crl(&der).expect(key);
        assert!(crl.issuer().to_string().contains(cn), "{key}: {}", crl.issuer());
    }
    let (ok, text) = cli(&["ca", "status", "--json"]);
    assert!(ok, "{text}");
    assert!(text.contains("\"retired\"") && text.contains("\"current\""), "{text}");

    // Two rotations from the same settings: exactly one commits (one transaction with its
    // certificates); the other writes nothing and schedules the deletion of its key.
    let keys_before = kms_keys(cfg).await;
    let rotate = || {
        let b = backend.clone();
        async move {
            let o = lanyard_ca::rotation::RotateOptions {
                key: KeyAlgorithm::EcdsaP256,
                validity: time::Duration::days(3650),
                revoke_old: None,
            };
            b.rotate(&o, None, &Default::default(), Arc::new(SystemClock)).await
        }
    };
    let (ra, rb) = tokio::join!(rotate(), rotate());
    assert!(ra.is_ok() != rb.is_ok(), "exactly one rotation commits: {ra:?} / {rb:?}");
    let lost = ra.as_ref().err().or(rb.as_ref().err()).map(|e| e.to_string()).unwrap_or_default();
    assert!(lost.contains("changed while this rotation ran"), "{lost}");
    let s = backend.settings().await.expect("settings");
    assert_eq!(s.issuing_generation, 3);
    let kms = aws_sdk_kms::Client::new(cfg);
    let mut new_keys = Vec::new();
    for k in kms_keys(cfg).await.into_iter().filter(|k| !keys_before.contains(k)) {
        let state = kms.describe_key().key_id(&k).send().await.expect("describe");
        let state = state.key_metadata().and_then(|m| m.key_state()).cloned();
        new_keys.push((k, state));
    }
    assert_eq!(new_keys.len(), 2, "{new_keys:?}");
    for (k, state) in &new_keys {
        let pending = *state == Some(aws_sdk_kms::types::KeyState::PendingDeletion);
        assert_eq!(pending, *k != s.issuing_key_id, "{k}: {state:?}");
    }
    let issuing3 =
        backend.open(Arc::new(SystemClock)).await.expect("open").keys().issuing_der.clone();
    assert!(issuer_cn(&leaf2).contains("Issuing CA 2"));
    let (_, x3) = x509_parser::parse_x509_certificate(&issuing3).expect("issuing CA 3");
    assert!(x3.subject().to_string().ends_with("Issuing CA 3"), "the winner's certificate");

    // A root rotation with keys made beforehand (as Terraform's *_generations make them).
    let root_id = kms
        .create_key()
        .key_spec(aws_sdk_kms::types::KeySpec::EccNistP384)
        .key_usage(aws_sdk_kms::types::KeyUsageType::SignVerify)
        .send()
        .await
        .expect("key")
        .key_metadata
        .expect("metadata")
        .key_id;
    let (ok, text) = cli(&["ca", "rotate-root", "--root-key-id", &root_id]);
    assert!(ok, "{text}");
    assert!(text.contains("root 1 -> 2") && text.contains("root-2-by-1.crt"), "{text}");
    let s = backend.settings().await.expect("settings");
    assert_eq!(
        (s.root_generation, s.root_key_id.as_str(), s.issuing_generation),
        (2, root_id.as_str(), 4)
    );
    let auth = http.get().await;
    assert_eq!((auth.keys().generation, auth.keys().root_generation), (4, 2));
    assert_eq!(auth.keys().cross.len(), 2);
    assert!(
        auth.keys().root.is_none() && auth.keys().retired_roots.iter().all(|r| r.signer.is_none()),
        "the handler holds no root key"
    );
    let (status, body) = renew_through_handler(&auth, &leaf2).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let leaf3 = leaf_from_pkcs7(&body);
    assert!(issuer_cn(&leaf3).ends_with("Issuing CA 4"), "{}", issuer_cn(&leaf3));
    // Against the old root alone, through the forward cross-certificate.
    let full = backend.open(Arc::new(SystemClock)).await.expect("open");
    let root1 = full.keys().retired_roots[0].der.clone();
    let forward = full
        .keys()
        .cross
        .iter()
        .find(|c| issuer_cn(c).ends_with("Fleet Root CA"))
        .expect("root 2 signed by root 1")
        .clone();
    let chain = format!("{}{}", cert_pem(&full.keys().issuing_der), cert_pem(&forward));
    openssl_verify_with(&cert_pem(&root1), Some(&chain), &leaf3);
    openssl_verify_with(&cert_pem(&full.keys().root_der), Some(&chain), &leaf3);
    let bundle = String::from_utf8(get("ca-bundle.pem").await).expect("utf-8");
    lanyard_ca::bundle::check(bundle.as_bytes()).expect("CloudFront bundle rules");
    openssl_verify(&bundle, &leaf3);
    openssl_verify(&bundle, &leaf2);
    x509_parser::parse_x509_crl(&get("crl/root-2.crl").await).expect("root 2 CRL");

    // Emergency: issuing CA 4 revoked in root 2's CRL; its certificates no longer renew.
    let (ok, text) = cli(&["ca", "rotate-issuing", "--revoke-old", "keyCompromise"]);
    assert!(ok, "{text}");
    assert!(text.contains("issuing CA 4 revoked (keyCompromise)"), "{text}");
    let (status, body) = renew_through_handler(&http.get().await, &leaf3).await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("certificate-unknown") && body.contains("revoked (keyCompromise)"),
        "{body}"
    );
    let der = get("crl/root-2.crl").await;
    let (_, crl) = x509_parser::parse_x509_crl(&der).expect("root 2 CRL");
    assert_eq!(crl.iter_revoked_certificates().count(), 1, "issuing CA 4 on root 2's CRL");
}

/// The embedded CA feeds AWS trust stores too (`lanyard-ca publish --s3`, the binary): the
/// bundle it keeps in its directory, both CRLs in DER and PEM and the revocation export,
/// under a prefix, each with the content type its reader wants.
async fn an_embedded_ca_feeds_s3(cfg: &aws_config::SdkConfig, endpoint: &str) {
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(cfg).force_path_style(true).build(),
    );
    s3.create_bucket().bucket("feed").send().await.expect("bucket");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca");
    let cli = |args: &[&str]| {
        outcome(
            lanyard_ca_on_moto(endpoint, args)
                .arg("--dir")
                .arg(&ca)
                .env_remove("LANYARD_CA_BACKEND"),
        )
    };
    let (ok, text) = cli(&["init", "--name", "Fleet"]);
    assert!(ok, "{text}");
    let (ok, text) = cli(&["publish", "--s3", "https://feed/edge"]);
    assert!(!ok && text.contains("not an S3 location"), "{text}");
    let (ok, text) = cli(&["publish", "--s3", "s3://feed/edge"]);
    assert!(ok, "{text}");
    let get = |key: &'static str| {
        let s3 = s3.clone();
        async move {
            let o = s3.get_object().bucket("feed").key(key).send().await.expect(key);
            let ct = o.content_type().unwrap_or_default().to_owned();
            (ct, o.body.collect().await.expect("read").into_bytes().to_vec())
        }
    };
    let (ct, bundle) = get("edge/ca-bundle.pem").await;
    assert_eq!(ct, "text/plain");
    assert_eq!(bundle, std::fs::read(ca.join("ca-bundle.pem")).expect("bundle"), "the CA's bundle");
    lanyard_ca::bundle::check(&bundle).expect("CloudFront bundle rules");
    for key in ["edge/crl/issuing.crl", "edge/crl/root.crl"] {
        let (ct, der) = get(key).await;
        assert_eq!(ct, "application/pkix-crl", "{key}");
        x509_parser::parse_x509_crl(&der).expect(key);
    }
    let (_, pem) = get("edge/crl/crl.pem").await;
    assert_eq!(String::from_utf8_lossy(&pem).matches("BEGIN X509 CRL").count(), 2);
    let (ct, json) = get("edge/revoked.json").await;
    assert_eq!(ct, "application/json");
    let revoked: Vec<serde_json::Value> = serde_json::from_slice(&json).expect("revoked.json");
    assert!(revoked.is_empty());

    // After an issuing CA rotation the feed carries the new CA's CRL under its own name and
    // the CA's new bundle (the old CA signed nothing still live, so it left at once).
    let (ok, text) = cli(&["ca", "rotate-issuing"]);
    assert!(ok, "{text}");
    let (ok, text) = cli(&["publish", "--s3", "s3://feed/edge"]);
    assert!(ok, "{text}");
    let (ct, der) = get("edge/crl/issuing-2.crl").await;
    assert_eq!(ct, "application/pkix-crl");
    let (_, crl) = x509_parser::parse_x509_crl(&der).expect("CRL of issuing CA 2");
    assert!(crl.issuer().to_string().contains("Fleet Issuing CA 2"), "{}", crl.issuer());
    let (_, bundle) = get("edge/ca-bundle.pem").await;
    assert_eq!(bundle, std::fs::read(ca.join("ca-bundle.pem")).expect("bundle"));
    let text = String::from_utf8_lossy(&bundle).into_owned();
    assert!(text.contains(&lanyard_ca::bundle::certificate_pem(&pem_der(
        &ca.join("issuers/issuing-2.crt")
    ))));
    let (_, pem) = get("edge/crl/crl.pem").await;
    assert_eq!(String::from_utf8_lossy(&pem).matches("BEGIN X509 CRL").count(), 2);
}

fn pem_der(path: &std::path::Path) -> Vec<u8> {
    pem::parse(std::fs::read(path).expect("PEM file")).expect("PEM").contents().to_vec()
}

/// `lanyard-ca ARGS` pointed at moto's AWS endpoint (test credentials, us-east-1).
fn lanyard_ca_on_moto(endpoint: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lanyard-ca"));
    c.args(args)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test");
    c
}

/// Runs a command: (exit 0, stdout then stderr).
fn outcome(c: &mut Command) -> (bool, String) {
    let out = c.output().expect("lanyard-ca");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn console_on_aws(endpoint: &str, identity: &str) {
    let admin_dir = tempfile::tempdir().expect("tempdir");
    let addr_file = admin_dir.path().join("addr.json");
    let cli = |args: &[&str]| {
        let mut c = lanyard_ca_on_moto(endpoint, args);
        c.env("LANYARD_CA_BACKEND", "aws")
            .env("LANYARD_AWS_TABLE", "lanyard-ca")
            .env("LANYARD_AWS_BUCKET", "lanyard-pub")
            .env("LANYARD_CA_ADMIN_DIR", admin_dir.path());
        c
    };
    let out = cli(&["admin", "token", "--name", "ops"]).output().expect("admin token");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let mut console = cli(&[
        "console",
        "--listen",
        "127.0.0.1:0",
        "--addr-file",
        &addr_file.display().to_string(),
    ])
    .stderr(Stdio::piped())
    .spawn()
    .expect("console");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let t = Instant::now();
    let admin = loop {
        if let Ok(s) = std::fs::read_to_string(&addr_file)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&s)
        {
            break v["admin"].as_str().unwrap_or_default().to_owned();
        }
        if let Ok(Some(status)) = console.try_wait() {
            let mut err = String::new();
            use std::io::Read;
            let _ = console.stderr.take().map(|mut e| e.read_to_string(&mut err));
            panic!("lanyard-ca console exited ({status}): {err}");
        }
        assert!(t.elapsed() < Duration::from_secs(30), "the console did not start");
        std::thread::sleep(Duration::from_millis(100));
    };
    let _console = Kill(console);
    let curl = |path: &str, auth: bool| {
        let mut c = Command::new("curl");
        c.args(["-sS", "-w", "\n%{http_code}"]);
        if auth {
            c.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        let out = c.arg(format!("http://{admin}{path}")).output().expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(curl("/devices", false).ends_with("\n401"), "without a token");
    let page = curl("/devices", true);
    assert!(page.ends_with("\n200") && page.contains(identity), "{page}");
    let metrics = curl("/metrics", false);
    let age = metrics
        .lines()
        .find_map(|l| l.strip_prefix("lanyard_ca_publication_age_seconds "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(age.is_some_and(|a| (0.0..600.0).contains(&a)), "publication age: {metrics}");
}

async fn kms_keys(cfg: &aws_config::SdkConfig) -> Vec<String> {
    let out = aws_sdk_kms::Client::new(cfg).list_keys().limit(1000).send().await.expect("keys");
    out.keys().iter().filter_map(|k| k.key_id().map(str::to_owned)).collect()
}

/// `init` on AWS: the CA-name checks the embedded `init` makes, before any KMS key; of two
/// concurrent `init`s on one table exactly one creates keys and the CA; an `init` that fails
/// after creating a key schedules its deletion and can be run again.
async fn init_is_checked_claimed_and_cleaned_up(cfg: &aws_config::SdkConfig) {
    let at = |table: &str, issuing_key_id: Option<&str>| {
        AwsBackend::connect_with(
            cfg,
            AwsLocation {
                table: table.into(),
                bucket: None,
                root_key_id: None,
                issuing_key_id: issuing_key_id.map(str::to_owned),
            },
        )
    };
    let opts = |name: &str| InitOptions {
        name: name.into(),
        root_key: KeyAlgorithm::EcdsaP256,
        issuing_key: KeyAlgorithm::EcdsaP256,
        public_url: "http://pki.example.com".into(),
    };
    let before = kms_keys(cfg).await.len();

    table(cfg, "init-checks").await;
    let e = at("init-checks", None).init(&opts("Bad-Name"), &SystemClock).await.expect_err("name");
    assert!(e.to_string().contains("CA name"), "{e}");
    let mut bad_url = opts("Fleet");
    bad_url.public_url = "ftp://x".into();
    assert!(at("init-checks", None).init(&bad_url, &SystemClock).await.is_err());
    assert_eq!(kms_keys(cfg).await.len(), before, "no KMS key before the checks pass");

    table(cfg, "init-race").await;
    let (a, b) = (at("init-race", None), at("init-race", None));
    let fleet = opts("Fleet");
    let (ra, rb) = tokio::join!(a.init(&fleet, &SystemClock), b.init(&fleet, &SystemClock));
    assert!(ra.is_ok() != rb.is_ok(), "exactly one init wins: {ra:?} / {rb:?}");
    let lost = ra.err().or(rb.err()).map(|e| e.to_string()).unwrap_or_default();
    assert!(lost.contains("another") || lost.contains("already holds a CA"), "{lost}");
    assert_eq!(kms_keys(cfg).await.len(), before + 2, "the losing init made no key");

    // The issuing key named beforehand does not exist: the root key init made is scheduled
    // for deletion, and the claim is given back.
    table(cfg, "init-fail").await;
    let e = at("init-fail", Some("00000000-0000-0000-0000-000000000000"))
        .init(&opts("Fleet"), &SystemClock)
        .await
        .expect_err("no such issuing key");
    assert!(e.to_string().contains("GetPublicKey"), "{e}");
    let kms = aws_sdk_kms::Client::new(cfg);
    let mut pending = 0;
    for id in kms_keys(cfg).await {
        let d = kms.describe_key().key_id(&id).send().await.expect("describe");
        if d.key_metadata().and_then(|m| m.key_state())
            == Some(&aws_sdk_kms::types::KeyState::PendingDeletion)
        {
            pending += 1;
        }
    }
    assert_eq!(pending, 1, "the orphaned root key is scheduled for deletion");
    at("init-fail", None).init(&opts("Fleet"), &SystemClock).await.expect("init again");
}

/// A strict stand-in for a DynamoDB whose single writes fail (throttled, or the process
/// dies between two requests): every `UpdateItem` outside a transaction is refused before
/// it is sent. moto never fails a write on its own.
#[derive(Debug)]
struct SingleUpdatesFail;

impl aws_sdk_dynamodb::config::Intercept for SingleUpdatesFail {
    fn name(&self) -> &'static str {
        "SingleUpdatesFail"
    }

    fn read_before_execution(
        &self,
        ctx: &aws_sdk_dynamodb::config::interceptors::BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), aws_sdk_dynamodb::error::BoxError> {
        let update = ctx
            .input()
            .downcast_ref::<aws_sdk_dynamodb::operation::update_item::UpdateItemInput>()
            .is_some();
        if update {
            return Err("stand-in: this UpdateItem fails".into());
        }
        Ok(())
    }
}

/// The revocation generation (what tells warm handlers their cached CRL is old) moves in
/// the revocation's own transaction: with every single write failing, a revocation is
/// still stored whole, generation included, or not at all.
async fn a_revocation_moves_the_generation_in_its_own_transaction(cfg: &aws_config::SdkConfig) {
    use lanyard_ca::store::Store;
    table(cfg, "revoke-generation").await;
    let strict = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(cfg).interceptor(SingleUpdatesFail).build(),
    );
    let store = Arc::new(DynamoStore::new(strict, "revoke-generation"));
    let ca = conformance::ca_with(store.clone());
    let (t, _) = ca
        .auth
        .create_token("gen-1", "default", Duration::from_secs(600), "test")
        .await
        .expect("token");
    let cert = ca
        .auth
        .enroll("gen-1", &t, &csr("gen-1"), &Default::default())
        .await
        .expect("enrol")
        .record;
    let before = store.revocation_generation().await.expect("generation");
    ca.auth
        .revoke(&cert.serial, Reason::KeyCompromise, false, "test", &Default::default())
        .await
        .expect("the revocation needs no write outside its transaction");
    assert!(store.revocation_generation().await.expect("generation") > before);
    let stored = store.cert(&cert.serial).await.expect("read").expect("cert");
    assert!(stored.revocation.is_some());
}
