//! `lanyard-edge-standin`: what CloudFront viewer mTLS does, on loopback, for the local
//! loop and for tests that cannot run nginx. It requires a client certificate that chains
//! to the CA bundle (the handshake fails otherwise, as CloudFront's does), refuses
//! certificates listed in the CRL file (re-read when it changes), and answers every
//! request with `200` and what it saw: subject CN, serial, protocol, path, and the
//! `CloudFront-Viewer-Cert-*`-style headers it would forward to an origin.
#![forbid(unsafe_code)]

use arc_swap::ArcSwap;
use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8444")]
    listen: String,
    /// Server certificate chain (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// Server key (PEM, PKCS#8).
    #[arg(long)]
    key: PathBuf,
    /// CA bundle that client certificates must chain to (the trust store).
    #[arg(long)]
    client_ca: PathBuf,
    /// CRLs (PEM, several allowed); re-read when the file changes.
    #[arg(long)]
    crl: Option<PathBuf>,
}

fn pem_blocks(path: &Path, tag: &str) -> Result<Vec<Vec<u8>>, String> {
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let blocks = pem::parse_many(&data).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(blocks.into_iter().filter(|b| b.tag() == tag).map(|b| b.into_contents()).collect())
}

fn config(a: &Args) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in pem_blocks(&a.client_ca, "CERTIFICATE")? {
        roots.add(CertificateDer::from(c)).map_err(|e| e.to_string())?;
    }
    let mut vb = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    if let Some(crl) = &a.crl {
        let crls: Vec<CertificateRevocationListDer<'static>> = pem_blocks(crl, "X509 CRL")?
            .into_iter()
            .map(CertificateRevocationListDer::from)
            .collect();
        vb = vb.with_crls(crls).only_check_end_entity_revocation();
    }
    let verifier = vb.build().map_err(|e| e.to_string())?;
    let chain: Vec<CertificateDer<'static>> =
        pem_blocks(&a.cert, "CERTIFICATE")?.into_iter().map(CertificateDer::from).collect();
    let key = pem_blocks(&a.key, "PRIVATE KEY")?
        .into_iter()
        .next()
        .ok_or_else(|| format!("{}: no PRIVATE KEY block", a.key.display()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, PrivateKeyDer::Pkcs8(key.into()))
        .map_err(|e| e.to_string())?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

fn mtime(p: &Option<PathBuf>) -> Option<SystemTime> {
    p.as_ref().and_then(|p| std::fs::metadata(p).ok()).and_then(|m| m.modified().ok())
}

fn describe(cert: &[u8]) -> (String, String) {
    match x509_parser::parse_x509_certificate(cert) {
        Ok((_, x)) => {
            let cn = x
                .subject()
                .iter_common_name()
                .next()
                .and_then(|c| c.as_str().ok())
                .unwrap_or("")
                .to_owned();
            let serial =
                x.raw_serial().iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
            (cn, serial)
        }
        Err(_) => (String::new(), String::new()),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let cfg = match config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lanyard-edge-standin: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let current = Arc::new(ArcSwap::new(cfg));
    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("lanyard-edge-standin: binding {}: {e}", args.listen);
            return std::process::ExitCode::FAILURE;
        }
    };
    eprintln!(
        "lanyard-edge-standin: listening on https://{}",
        listener.local_addr().map(|a| a.to_string()).unwrap_or_default()
    );
    // Reload when the CRL changes, as an operator would reload the edge.
    {
        let current = current.clone();
        let args = Args {
            listen: String::new(),
            cert: args.cert.clone(),
            key: args.key.clone(),
            client_ca: args.client_ca.clone(),
            crl: args.crl.clone(),
        };
        tokio::spawn(async move {
            let mut seen = mtime(&args.crl);
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let now = mtime(&args.crl);
                if now != seen {
                    seen = now;
                    match config(&args) {
                        Ok(c) => {
                            current.store(c);
                            eprintln!("lanyard-edge-standin: CRL reloaded");
                        }
                        Err(e) => eprintln!("lanyard-edge-standin: CRL reload failed: {e}"),
                    }
                }
            }
        });
    }
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let acceptor = tokio_rustls::TlsAcceptor::from(current.load_full());
        tokio::spawn(async move {
            let tls = match acceptor.accept(stream).await {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("lanyard-edge-standin: handshake refused: {e}");
                    return;
                }
            };
            let (_, conn) = tls.get_ref();
            let proto = match conn.alpn_protocol() {
                Some(b"h2") => "h2",
                _ => "http/1.1",
            };
            let (cn, serial) = conn
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| describe(c))
                .unwrap_or_default();
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let body = format!(
                        "hello {cn}\nserial={serial}\nprotocol={proto}\npath={}\nhost={}\n",
                        req.uri().path(),
                        req.headers()
                            .get("host")
                            .and_then(|h| h.to_str().ok())
                            .or(req.uri().authority().map(|a| a.as_str()))
                            .unwrap_or("")
                    );
                    let resp = http::Response::builder()
                        .header("content-type", "text/plain")
                        .header("cloudfront-viewer-cert-serial-number", serial.clone())
                        .body(Full::new(Bytes::from(body)));
                    async move { resp }
                });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}
