//! Prometheus metrics for `/metrics`: certificate expiry, renewals and failures by reason,
//! the current serial, and the proxy's requests and latencies.

use crate::verify::CertInfo;
use lanyard_proto::api::RouteHealth;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use time::OffsetDateTime;

type Labels = Vec<(String, String)>;

pub struct Metrics {
    registry: Registry,
    pub renewals: Counter,
    failures: Family<Labels, Counter>,
    expiry: Gauge,
    not_after: AtomicI64,
    serial: Family<Labels, Gauge>,
    current_serial: Mutex<Option<String>>,
    proxy_requests: Family<Labels, Counter>,
    proxy_latency: Family<Labels, Histogram>,
    /// Per route: requests, 5xx answers and the last status, for the check-in report.
    routes: Mutex<std::collections::BTreeMap<String, RouteHealth>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn latency_histogram() -> Histogram {
    // 100 µs to ~26 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 18))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("lanyard");
        let renewals = Counter::default();
        let failures = Family::<Labels, Counter>::default();
        let expiry = Gauge::default();
        let serial = Family::<Labels, Gauge>::default();
        let proxy_requests = Family::<Labels, Counter>::default();
        let proxy_latency = Family::<Labels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register("renewals", "Successful renewals", renewals.clone());
        registry.register("renewal_failures", "Failed renewals by reason", failures.clone());
        registry.register(
            "certificate_expiry_seconds",
            "Seconds until the current certificate expires",
            expiry.clone(),
        );
        registry.register(
            "certificate_info",
            "The current certificate (value 1, serial as label)",
            serial.clone(),
        );
        registry.register(
            "proxy_requests",
            "Proxied requests by route and status",
            proxy_requests.clone(),
        );
        registry.register(
            "proxy_request_duration_seconds",
            "Proxied request latency by route",
            proxy_latency.clone(),
        );
        Metrics {
            registry,
            renewals,
            failures,
            expiry,
            not_after: AtomicI64::new(0),
            serial,
            current_serial: Mutex::new(None),
            proxy_requests,
            proxy_latency,
            routes: Mutex::new(Default::default()),
        }
    }

    pub fn renewal_failure(&self, reason: &str) {
        self.failures.get_or_create(&vec![("reason".into(), reason.into())]).inc();
    }

    pub fn set_certificate(&self, info: &CertInfo, now: OffsetDateTime) {
        self.not_after.store(info.not_after.unix_timestamp(), Ordering::Relaxed);
        self.expiry.set((info.not_after - now).whole_seconds());
        if let Ok(mut cur) = self.current_serial.lock() {
            if let Some(old) = cur.take() {
                self.serial.remove(&vec![("serial".into(), old)]);
            }
            self.serial.get_or_create(&vec![("serial".into(), info.serial.clone())]).set(1);
            *cur = Some(info.serial.clone());
        }
    }

    pub fn proxy_request(&self, route: &str, status: u16, seconds: f64) {
        self.proxy_requests
            .get_or_create(&vec![
                ("route".into(), route.into()),
                ("code".into(), status.to_string()),
            ])
            .inc();
        self.proxy_latency.get_or_create(&vec![("route".into(), route.into())]).observe(seconds);
        if let Ok(mut routes) = self.routes.lock() {
            let r = routes
                .entry(route.to_owned())
                .or_insert_with(|| RouteHealth { name: route.to_owned(), ..Default::default() });
            r.requests += 1;
            r.errors += u64::from(status >= 500);
            r.last_status = Some(status);
        }
    }

    /// Each route's requests, 5xx answers and last status since the agent started.
    pub fn route_health(&self) -> Vec<RouteHealth> {
        self.routes.lock().map(|r| r.values().cloned().collect()).unwrap_or_default()
    }

    /// Text exposition, with the expiry gauge brought up to `now`.
    pub fn render(&self, now: OffsetDateTime) -> String {
        let na = self.not_after.load(Ordering::Relaxed);
        if na != 0 {
            self.expiry.set(na - now.unix_timestamp());
        }
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
