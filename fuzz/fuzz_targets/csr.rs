//! CSR checks (`lanyard_ca::csr::check`): any bytes, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = lanyard_ca::csr::check(data);
});
