//! What the agent accepts from a CA: a certs-only PKCS#7, split into roots and
//! intermediates, each certificate read, the leaf checked against a key, an identity and
//! the chain.
#![no_main]
use lanyard_agent::verify;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(certs) = lanyard_proto::est::parse_certs_only_pkcs7(data) else { return };
    let (roots, inter) = verify::split_ca_certs(&certs);
    for c in &certs {
        if let Ok(info) = verify::info(c) {
            let _ = verify::issued(
                c,
                &info.spki_der,
                Some(&info.identity),
                &roots,
                &inter,
                time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000),
            );
        }
    }
});
