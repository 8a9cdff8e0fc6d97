//! EST bodies: base64 (with the line breaks and padding clients send) and certs-only
//! PKCS#7, as the CA decodes requests and the agent decodes answers.
#![no_main]
use lanyard_proto::est;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(der) = est::decode_base64(data) {
        let _ = est::parse_certs_only_pkcs7(&der);
    }
    let _ = est::parse_certs_only_pkcs7(data);
});
