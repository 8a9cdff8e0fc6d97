//! What the agent accepts from a CA: a certs-only PKCS#7, split into roots and
//! intermediates, each certificate read, the leaf checked against a key, an identity and
//! the chain; the pinned-root and rotation checks over the same certificates.
#![no_main]
use lanyard_agent::{trust, verify};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(certs) = lanyard_proto::est::parse_certs_only_pkcs7(data) else { return };
    let (roots, inter) = verify::split_ca_certs(&certs);
    let at = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
    if let Some(first) = certs.first() {
        let _ = trust::select_pinned_root(&certs, &trust::sha256_hex(first), "https://ca.fuzz");
    }
    let _ = verify::vouched_roots(&roots, &roots, &inter, at);
    for c in &certs {
        if let Ok(info) = verify::info(c) {
            let _ = verify::issued(
                c,
                &info.spki_der,
                Some(&info.identity),
                &roots,
                &inter,
                at,
            );
        }
    }
});
