//! OCSP requests as the responder parses and checks them (RFC 6960, nonces per RFC 8954).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = lanyard_ca::ocsp::parse_request(data);
});
