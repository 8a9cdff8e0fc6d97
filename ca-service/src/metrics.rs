//! The CA's metrics, `/metrics` on the admin listener (OpenMetrics text, which Prometheus
//! scrapes): counters kept as requests pass, and gauges from the console's snapshot of the
//! inventory (at most seconds old: a scrape never scans the store) and the CA's state.
//!
//! ```text
//! lanyard_ca_issuances_total{kind="enrol|renew",group,result="issued|<problem code>"}
//! lanyard_ca_checkins_total{result}
//! lanyard_ca_refusals_total{code}                 every 4xx and 5xx, by problem code
//! lanyard_ca_unavailable_total                    503s (busy, a backend throttling)
//! lanyard_ca_issuance_duration_seconds{kind}      histogram, request to answer
//! lanyard_ca_issuance_queue_seconds               issuance already promised (the pacer's queue)
//! lanyard_ca_devices{state}                       the inventory by state
//! lanyard_ca_devices_stale                        not seen for STALE_AFTER (24 h)
//! lanyard_ca_devices_failing                      reporting failed renewals
//! lanyard_ca_certificates_expiring{within="24h|7d"}  devices' current certificates
//! lanyard_ca_crl_age_seconds                      since the issuing CRL was made
//! lanyard_ca_ca_days_left{role,generation}        days before each CA certificate expires
//!                                                 (role: root, current, retired, revoked)
//! lanyard_ca_publication_age_seconds              since the CRLs were last published
//!                                                 (DIR/crl, or the S3 bucket on AWS)
//! ```

use crate::authority::Authority;
use crate::error::CaError;
use crate::inventory::DeviceView;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;

type Labels = Vec<(String, String)>;

/// A device not seen for this long counts as stale in the metrics (`devices list --stale`
/// takes any span).
pub const STALE_AFTER: time::Duration = time::Duration::hours(24);

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The counters, shared by every request of one CA process.
#[derive(Clone)]
pub struct CaMetrics {
    issuances: Family<Labels, Counter>,
    checkins: Family<Labels, Counter>,
    refusals: Family<Labels, Counter>,
    unavailable: Counter,
    latency: Family<Labels, Histogram>,
}

impl std::fmt::Debug for CaMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CaMetrics")
    }
}

fn latency_histogram() -> Histogram {
    // 1 ms to ~32 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 16))
}

impl Default for CaMetrics {
    fn default() -> Self {
        CaMetrics {
            issuances: Family::default(),
            checkins: Family::default(),
            refusals: Family::default(),
            unavailable: Counter::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
        }
    }
}

/// What a request was, for the counters: known from its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    Enrol,
    Renew,
    Checkin,
    Other,
}

impl RequestKind {
    pub fn of_path(path: &str) -> RequestKind {
        match path {
            "/.well-known/est/simpleenroll" => RequestKind::Enrol,
            "/.well-known/est/simplereenroll" => RequestKind::Renew,
            "/v1/checkin" => RequestKind::Checkin,
            _ => RequestKind::Other,
        }
    }
}

impl CaMetrics {
    /// One answered request: `group` when the answer named it (an issuance), `code` the
    /// problem code of a refusal (`None`: success).
    pub fn observe(
        &self,
        kind: RequestKind,
        group: Option<&str>,
        status: u16,
        code: Option<&str>,
        seconds: f64,
    ) {
        let result = code.unwrap_or("issued").to_owned();
        if let Some(code) = code {
            self.refusals.get_or_create(&vec![("code".into(), code.to_owned())]).inc();
        }
        if status == 503 {
            self.unavailable.inc();
        }
        let kind_name = match kind {
            RequestKind::Enrol => "enrol",
            RequestKind::Renew => "renew",
            RequestKind::Checkin => {
                let result = code.unwrap_or("ok").to_owned();
                self.checkins.get_or_create(&vec![("result".into(), result)]).inc();
                return;
            }
            RequestKind::Other => return,
        };
        self.issuances
            .get_or_create(&vec![
                ("kind".into(), kind_name.into()),
                ("group".into(), group.unwrap_or("unknown").to_owned()),
                ("result".into(), result),
            ])
            .inc();
        self.latency.get_or_create(&vec![("kind".into(), kind_name.into())]).observe(seconds);
    }
}

fn gauge(v: i64) -> Gauge {
    let g = Gauge::default();
    g.set(v);
    g
}

/// The exposition: counters, then gauges from `devices` (the console's snapshot of the
/// inventory, at most seconds old; `Err` leaves the inventory's gauges out, and the
/// counters are still served).
pub fn render(
    auth: &Authority,
    devices: Result<&[DeviceView], &CaError>,
    published: Option<time::OffsetDateTime>,
) -> String {
    let m = auth.metrics();
    let mut reg = Registry::with_prefix("lanyard_ca");
    reg.register("issuances", "Enrolments and renewals by group and result", m.issuances.clone());
    reg.register("checkins", "Check-ins by result", m.checkins.clone());
    reg.register("refusals", "Refused requests by problem code", m.refusals.clone());
    reg.register(
        "unavailable",
        "Requests answered 503 (busy, backend throttling)",
        m.unavailable.clone(),
    );
    reg.register(
        "issuance_duration_seconds",
        "Enrolment and renewal latency, request to answer",
        m.latency.clone(),
    );
    if let Some(s) = auth.admission_stats() {
        let g =
            prometheus_client::metrics::gauge::Gauge::<f64, std::sync::atomic::AtomicU64>::default(
            );
        g.set(s.backlog_secs);
        reg.register(
            "issuance_queue_seconds",
            "Issuance already promised by the pacer, in seconds",
            g,
        );
    }
    let now = auth.now();
    match devices {
        Ok(devices) => {
            let mut by_state: BTreeMap<String, i64> = BTreeMap::new();
            for state in ["enrolled", "valid", "renewing", "expired", "revoked", "not_enrolled"] {
                by_state.insert(state.into(), 0);
            }
            let (mut stale, mut failing, mut in_day, mut in_week) = (0, 0, 0, 0);
            for d in devices {
                // Only the states a check-in may report (and `enrolled`): a label never
                // takes a value a device made up.
                let state =
                    if by_state.contains_key(&d.state) { d.state.clone() } else { "other".into() };
                *by_state.entry(state).or_default() += 1;
                stale += i64::from(d.last_seen.unwrap_or(d.enrolled_at) < now - STALE_AFTER);
                failing += i64::from(d.failing);
                if d.cert_status != "revoked" && d.not_after > now {
                    in_day += i64::from(d.not_after <= now + time::Duration::DAY);
                    in_week += i64::from(d.not_after <= now + time::Duration::days(7));
                }
            }
            let states = Family::<Labels, Gauge>::default();
            for (state, n) in by_state {
                states.get_or_create(&vec![("state".into(), state)]).set(n);
            }
            reg.register("devices", "Devices in the inventory by state", states);
            reg.register("devices_stale", "Devices not seen for 24 hours", gauge(stale));
            reg.register("devices_failing", "Devices reporting failed renewals", gauge(failing));
            let expiring = Family::<Labels, Gauge>::default();
            expiring.get_or_create(&vec![("within".into(), "24h".into())]).set(in_day);
            expiring.get_or_create(&vec![("within".into(), "7d".into())]).set(in_week);
            reg.register(
                "certificates_expiring",
                "Devices' current certificates ending within 24 hours and 7 days",
                expiring,
            );
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot read the inventory"),
    }
    let days_left = Family::<Labels, Gauge>::default();
    for (role, generation, not_after) in auth.ca_expiries() {
        let generation = generation.map_or_else(String::new, |g| g.to_string());
        days_left
            .get_or_create(&vec![("role".into(), role.into()), ("generation".into(), generation)])
            .set((not_after - now).whole_days());
    }
    reg.register(
        "ca_days_left",
        "Days before each CA certificate expires (the root, each issuing CA)",
        days_left,
    );
    if let Some(at) = auth.crl_made_at() {
        reg.register(
            "crl_age_seconds",
            "Seconds since the issuing CRL was made",
            gauge((now - at).whole_seconds()),
        );
    }
    if let Some(at) = published {
        reg.register(
            "publication_age_seconds",
            "Seconds since the CRLs were last published (DIR/crl, or the S3 bucket on AWS)",
            gauge((now - at).whole_seconds()),
        );
    }
    let mut out = String::new();
    if let Err(e) = encode(&mut out, &reg) {
        tracing::warn!(error = %e, "metrics: encoding failed");
    }
    out
}
