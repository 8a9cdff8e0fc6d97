//! A group policy as the CA serves it (JSON) and as a local policy file gives it (TOML),
//! then validated.
#![no_main]
use lanyard_proto::GroupPolicy;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(p) = serde_json::from_slice::<GroupPolicy>(data) {
        let _ = p.validate();
        let _ = (p.lifetime(), p.superseded_grace(), p.preferred_key());
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(p) = toml::from_str::<GroupPolicy>(text)
    {
        let _ = p.validate();
    }
});
