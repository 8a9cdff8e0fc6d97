//! The proxy's request-target and Host handling: a target, a Host and an Origin (split on
//! newlines) go through the admission rules and the allow-list.
#![no_main]
use lanyard_agent::config::{ListenAddr, Route, Upstream};
use lanyard_agent::proxy::handler;
use std::time::Duration;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut parts = text.splitn(3, '\n');
    let (target, host, origin) =
        (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let route = Route {
        listen: ListenAddr::Tcp("127.0.0.1:8080".parse().expect("address")),
        upstream: Some(Upstream { host: "api.example.com".into(), port: 443 }),
        upstream_ca: None,
        forward_allow: vec!["*.apps.example.com".into(), "alt.example.org:8443".into()],
        socket_mode: 0o600,
        x_forwarded_for: false,
        request_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        hosts: vec!["devbox.internal".into()],
        max_connections: 1,
    };
    let own = handler::own_hosts(Some("127.0.0.1:8080".parse().expect("address")), &route);
    let _ = handler::host_is_own(own.as_deref().unwrap_or_default(), host);
    let mut b = http::Request::builder().uri(target);
    if !host.is_empty() {
        b = b.header(http::header::HOST, host);
    }
    if !origin.is_empty() {
        b = b.header(http::header::ORIGIN, origin);
    }
    if let Ok(req) = b.body(()) {
        let _ = handler::admit(own.as_deref(), &req);
        if let Some(h) = req.uri().host() {
            let _ = handler::allowed(&route, h, req.uri().port_u16().unwrap_or(443));
        }
    }
});
