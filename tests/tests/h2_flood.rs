//! An HTTP/2 stream flood against the CA's HTTPS listener: 12 connections, each asking for
//! 200 streams with unfinished 60 KiB request bodies that reach the body extractor before
//! any authentication, all held open. The CA announces 32 streams a connection. The CA's flow
//! control windows (64 KiB a stream, 256 KiB a connection) bound what it buffers: its peak
//! RSS stays under 100 MB, and it still answers others.

use bytes::Bytes;
use lanyard_e2e::{Ca, peers};
use std::sync::Arc;
use std::time::Duration;

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmHWM:")
                .map(|v| v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

fn tls(cacert: &std::path::Path) -> tokio_rustls::TlsConnector {
    let pem = std::fs::read(cacert).expect("root certificate");
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c.expect("PEM")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

#[test]
fn an_http2_stream_flood_is_bounded() {
    if !peers::require_basics() {
        return;
    }
    let ca = Ca::init();
    let srv = ca.serve();
    let pid = srv.pid();
    let connector = tls(&srv.cacert);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let url = srv.url("/.well-known/est/simpleenroll");
    let before = peak_rss_kib(pid);
    let (opened, announced, held) = rt.block_on(async {
        let mut held = Vec::new();
        let mut announced = Vec::new();
        let mut opened = 0usize;
        for _ in 0..12 {
            let tcp = tokio::net::TcpStream::connect(&srv.https).await.expect("connect");
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
            let io = connector.connect(name, tcp).await.expect("TLS");
            let (client, conn) = h2::client::handshake(io).await.expect("h2 handshake");
            tokio::spawn(async move {
                let _ = conn.await;
            });
            // The CA announces its limit; a client that opens more has them queued or
            // refused, never buffered by the CA.
            let mut c = client.clone().ready().await.expect("ready");
            // The CA's SETTINGS arrive just after the handshake.
            for _ in 0..100 {
                if c.current_max_send_streams() != usize::MAX {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            announced.push(c.current_max_send_streams());
            let mut streams = Vec::new();
            for _ in 0..200 {
                let req = http::Request::post(url.as_str())
                    .header("content-type", "application/pkcs10")
                    .body(())
                    .expect("request");
                let Ok((resp, mut body)) = c.send_request(req, false) else { break };
                body.reserve_capacity(60 * 1024);
                let _ = body.send_data(Bytes::from(vec![b'A'; 60 * 1024]), false);
                streams.push((resp, body));
                opened += 1;
            }
            held.push((client, streams));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        (opened, announced, held)
    });
    let peak = peak_rss_kib(pid);
    eprintln!(
        "{opened} streams opened or queued on 12 connections; the CA allowed {announced:?} at once; CA peak RSS {before} KiB before, {peak} KiB during"
    );
    assert!(opened >= 12 * 32, "the flood got the streams it was allowed: {opened}");
    assert!(announced.iter().all(|n| *n == 32), "32 streams a connection: {announced:?}");
    assert!(peak > 0 && peak < 100 * 1024, "peak RSS {peak} KiB");
    assert_eq!(
        lanyard_e2e::ca::http_get_status(&srv.http, "/healthz"),
        Some(200),
        "the CA still answers during the flood"
    );
    drop(held);
    rt.shutdown_timeout(Duration::from_millis(200));
}
