//! The agent's configuration file (`agent.toml`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = lanyard_agent::config::Config::parse(text, None);
    }
});
