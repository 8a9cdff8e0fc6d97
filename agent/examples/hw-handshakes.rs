//! TLS client handshakes per second with the device key in software (what the file and
//! keyring stores load), on a PKCS#11 token, or in a TPM: the cost the proxy pays for each
//! new upstream connection. Run by `tests/bench/hw-handshakes.sh`, which starts SoftHSM2
//! and swtpm; the numbers are in docs/BENCHMARKS.md ("Hardware keys").
//!
//! ```sh
//! cargo run --release -p lanyard-agent --features pkcs11,tpm --example hw-handshakes -- \
//!     software|pkcs11 MODULE TOKEN PIN_FILE|tpm TCTI  [SECONDS]
//! ```
//!
//! One process: a rustls server on loopback requiring a client certificate from a test CA
//! (made here in software), and a client making full TLS 1.3 handshakes one after another
//! (no resumption: a resumed handshake signs nothing), each signed with the key under test.

use lanyard_agent::hw::signer::{CsrKey, TlsKey};
use lanyard_agent::hw::{HardwareBackend, HardwareKey};
use lanyard_proto::KeyAlgorithm;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error>;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The key under test, as rustls signs with it, and its public key for the certificate.
fn key_under_test(args: &[String]) -> Result<(Arc<dyn rustls::sign::SigningKey>, String), Error> {
    match args.first().map(String::as_str) {
        Some("software") => {
            let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let key = provider().key_provider.load_private_key(PrivateKeyDer::Pkcs8(
                PrivatePkcs8KeyDer::from(kp.serialize_der()),
            ))?;
            Ok((key, kp.public_key_pem()))
        }
        #[cfg(feature = "pkcs11")]
        Some("pkcs11") => {
            let [_, module, token, pin_file, ..] = args else {
                return Err("pkcs11 MODULE TOKEN_LABEL PIN_FILE".into());
            };
            let backend = lanyard_agent::hw::pkcs11::Pkcs11Backend::new(
                lanyard_agent::hw::pkcs11::Pkcs11Config {
                    module: module.into(),
                    token_label: Some(token.clone()),
                    slot: None,
                    pin_file: pin_file.into(),
                },
                "bench",
            );
            hardware(&backend)
        }
        #[cfg(feature = "tpm")]
        Some("tpm") => {
            let tcti = args.get(1).ok_or("tpm TCTI")?;
            let backend = lanyard_agent::hw::tpm::TpmBackend::new(tcti)?;
            hardware(&backend)
        }
        _ => Err("usage: hw-handshakes software | pkcs11 MODULE TOKEN PIN_FILE | tpm TCTI [SECONDS] (pkcs11 and tpm need their features)".into()),
    }
}

#[allow(dead_code)]
fn hardware(
    backend: &dyn HardwareBackend,
) -> Result<(Arc<dyn rustls::sign::SigningKey>, String), Error> {
    let key: Arc<dyn HardwareKey> = backend.generate(KeyAlgorithm::EcdsaP256)?;
    let spki = key.spki_der().to_vec();
    let pem = pem::encode(&pem::Pem::new("PUBLIC KEY", spki));
    // Make sure the key can sign a CSR too (the enrolment path), not only handshakes.
    let p = rcgen::CertificateParams::new(vec!["bench".to_owned()])?;
    p.serialize_request(&CsrKey::new(key.as_ref())?)?;
    Ok((Arc::new(TlsKey::new(key)), pem))
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seconds: u64 =
        args.iter().rev().find_map(|a| a.parse().ok()).filter(|_| args.len() > 1).unwrap_or(10);
    let (client_key, client_public_pem) = key_under_test(&args)?;

    // A test CA in software: it certifies the server and the key under test.
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);
    let server_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let server_cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])?
        .signed_by(&server_key, &issuer)?;
    let client_public = rcgen::SubjectPublicKeyInfo::from_pem(&client_public_pem)?;
    let client_cert = rcgen::CertificateParams::new(vec!["device".to_owned()])?
        .signed_by(&client_public, &issuer)?;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone())?;
    let roots = Arc::new(roots);
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()?;
    let mut server_cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![server_cert.der().clone(), ca_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        )?;
    server_cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    server_cfg.send_tls13_tickets = 0;
    let server_cfg = Arc::new(server_cfg);

    let certified = Arc::new(rustls::sign::CertifiedKey::new(
        vec![CertificateDer::from(client_cert.der().to_vec())],
        client_key,
    ));
    certified.keys_match()?;
    let mut client_cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(lanyard_agent::est::FixedCert(certified)));
    client_cfg.resumption = rustls::client::Resumption::disabled();
    let client_cfg = Arc::new(client_cfg);

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let cfg = server_cfg.clone();
            let _ = serve_one(stream, cfg);
        }
    });

    let name = ServerName::try_from("localhost")?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut done = 0u64;
    while Instant::now() < deadline {
        let mut sock = TcpStream::connect(addr)?;
        sock.set_nodelay(true)?;
        let mut conn = rustls::ClientConnection::new(client_cfg.clone(), name.clone())?;
        let mut tls = rustls::Stream::new(&mut conn, &mut sock);
        tls.write_all(b"x")?;
        let mut b = [0u8; 1];
        tls.read_exact(&mut b)?;
        done += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}: {done} full TLS 1.3 handshakes with client authentication in {secs:.1} s: {:.0}/s, {:.2} ms each",
        args.first().map(String::as_str).unwrap_or("?"),
        done as f64 / secs,
        secs * 1000.0 / done.max(1) as f64
    );
    Ok(())
}

/// Answers one byte with one byte after the handshake (which verifies the client).
fn serve_one(mut sock: TcpStream, cfg: Arc<rustls::ServerConfig>) -> Result<(), Error> {
    sock.set_nodelay(true)?;
    let mut conn = rustls::ServerConnection::new(cfg)?;
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let mut b = [0u8; 1];
    tls.read_exact(&mut b)?;
    tls.write_all(&b)?;
    tls.flush()?;
    Ok(())
}
