//! The fleet inventory: what devices report at check-in (`POST /v1/checkin`), merged with
//! what the CA issued, for `lanyard-ca devices` and the CA's metrics.
//!
//! One record per identity, replaced at each check-in. A device that enrolled and never
//! checked in is listed too (state `enrolled`), from its certificates.

use crate::authority::{Authority, RequestMeta, audit};
use crate::error::{CaError, Result};
use crate::store::{AuditEvent, CertFilter, CertRecord, DeviceRecord};
use lanyard_proto::GroupPolicy;
use lanyard_proto::api::{CertificateStatus, CheckinReport};
use serde::Serialize;
use std::collections::HashMap;
use time::{Duration, OffsetDateTime};

/// A policy's version: the start of the SHA-256 of its JSON. It changes whenever the
/// group's policy does, and is the same on every CA instance (no counter to keep).
pub fn policy_version(policy: &GroupPolicy) -> String {
    let json = serde_json::to_vec(policy).unwrap_or_default();
    hex::encode(&aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &json).as_ref()[..6])
}

/// Which devices `devices list` shows.
#[derive(Clone, Debug, Default)]
pub struct DeviceFilter {
    pub group: Option<String>,
    /// Not seen for this long (never-seen devices count from their enrolment).
    pub stale: Option<Duration>,
    /// Reporting failed renewals, or refused by the CA.
    pub failing: bool,
    /// Certificate ends within this long (and is not revoked).
    pub expiring: Option<Duration>,
    /// Running this agent version.
    pub version: Option<String>,
}

/// One row of `devices list --json`.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DeviceView {
    pub identity: String,
    pub group: String,
    /// The serial the device last presented, or its newest certificate's if it never
    /// checked in.
    pub serial: String,
    /// The device's word (`valid`, `renewing`, `expired`, `revoked`), `enrolled` for a
    /// device that never checked in, and `revoked` whenever the CA revoked its certificate.
    pub state: String,
    /// What the CA knows of the serial: `valid`, `expired`, `revoked`, `superseded`.
    pub cert_status: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_seen: Option<OffsetDateTime>,
    pub agent_version: Option<String>,
    pub last_error_code: Option<String>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    pub failing: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_renewal: Option<OffsetDateTime>,
    pub os: Option<String>,
    pub arch: Option<String>,
    pub store: Option<String>,
    /// The policy version the device applies, and whether it is its group's current one.
    pub policy_version: Option<String>,
    pub policy_current: Option<bool>,
    #[serde(with = "time::serde::rfc3339")]
    pub enrolled_at: OffsetDateTime,
}

/// `devices show`: the row, the whole last report, every certificate of the identity
/// (oldest first) and the audit events about it (newest first).
#[derive(Clone, Debug, Serialize)]
pub struct DeviceDetail {
    pub device: DeviceView,
    pub report: Option<CheckinReport>,
    pub remote: Option<String>,
    pub lineage: Vec<CertRecord>,
    pub audit: Vec<AuditEvent>,
}

/// What the CA says of a certificate it issued, at `now`.
pub fn cert_status(rec: &CertRecord, now: OffsetDateTime) -> &'static str {
    if rec.revocation.is_some() {
        "revoked"
    } else if now > rec.not_after {
        "expired"
    } else if rec.superseded_by.is_some() {
        "superseded"
    } else {
        "valid"
    }
}

/// Policy versions by group, for "does the device apply its group's current policy".
struct PolicyVersions {
    by_group: HashMap<String, String>,
    default: String,
}

impl PolicyVersions {
    fn of(&self, group: &str) -> &str {
        self.by_group.get(group).unwrap_or(&self.default)
    }
}

/// One device's row, from its last check-in (`record`) when it has one, else from its
/// newest certificate (`enrolled`); `certs` are the identity's certificates. `None`: neither.
fn view(
    record: Option<&DeviceRecord>,
    certs: &[&CertRecord],
    versions: &PolicyVersions,
    now: OffsetDateTime,
) -> Option<DeviceView> {
    let enrolled = certs.iter().map(|c| c.issued_at).min();
    let Some(d) = record else {
        let c =
            certs.iter().max_by(|a, b| (a.issued_at, &a.serial).cmp(&(b.issued_at, &b.serial)))?;
        let status = cert_status(c, now);
        return Some(DeviceView {
            identity: c.identity.clone(),
            group: c.group.clone(),
            serial: c.serial.clone(),
            state: if status == "revoked" { "revoked" } else { "enrolled" }.into(),
            cert_status: status.into(),
            last_seen: None,
            agent_version: None,
            last_error_code: None,
            last_error: None,
            consecutive_failures: 0,
            failing: false,
            not_after: c.not_after,
            next_renewal: None,
            os: None,
            arch: None,
            store: None,
            policy_version: None,
            policy_current: None,
            enrolled_at: enrolled.unwrap_or(c.issued_at),
        });
    };
    let cert = certs.iter().find(|c| c.serial == d.serial);
    let r = &d.report;
    let cert_status =
        cert.map(|c| cert_status(c, now)).unwrap_or(d.cert_status.as_str()).to_owned();
    Some(DeviceView {
        identity: d.identity.clone(),
        group: d.group.clone(),
        serial: d.serial.clone(),
        state: if cert_status == "revoked" { "revoked".into() } else { r.state.clone() },
        cert_status,
        last_seen: Some(d.last_seen),
        agent_version: Some(r.agent_version.clone()),
        last_error_code: r.last_error_code.clone(),
        last_error: r.last_error.clone(),
        consecutive_failures: r.consecutive_failures,
        failing: r.consecutive_failures > 0,
        not_after: cert.map(|c| c.not_after).unwrap_or(d.last_seen),
        next_renewal: r.next_renewal,
        os: Some(r.os.clone()),
        arch: Some(r.arch.clone()),
        store: Some(r.store.clone()),
        policy_version: r.policy_version.clone(),
        policy_current: r.policy_version.as_ref().map(|v| v == versions.of(&d.group)),
        enrolled_at: enrolled.unwrap_or(d.last_seen),
    })
}

/// How many audit events `devices show` searches for a device's (newest first).
const AUDIT_SEARCH: usize = 10_000;

impl Authority {
    /// `GET /v1/certificate` and `POST /v1/checkin`'s answer for a certificate this CA
    /// issued.
    pub async fn certificate_status(&self, rec: &CertRecord) -> Result<CertificateStatus> {
        let status = if rec.revocation.is_some() {
            "revoked"
        } else if self.now() > rec.not_after {
            "expired"
        } else {
            "valid"
        };
        let policy = self.policy(&rec.group).await?;
        Ok(CertificateStatus {
            serial: rec.serial.clone(),
            identity: rec.identity.clone(),
            group: rec.group.clone(),
            not_after: rec.not_after,
            status: status.into(),
            revoked_at: rec.revocation.as_ref().map(|r| r.at),
            revocation_reason: rec.revocation.as_ref().map(|r| r.reason.name().to_owned()),
            policy_version: Some(policy_version(&policy)),
            policy,
        })
    }

    /// A check-in: the device (authenticated by `cert_der`, revoked or not) reports; the
    /// CA records it and answers with the certificate's status and the group's policy. A
    /// revoked or superseded certificate is recorded too (the inventory says so), but a
    /// certificate this CA did not issue is refused.
    pub async fn checkin(
        &self,
        cert_der: &[u8],
        report: CheckinReport,
        meta: &RequestMeta,
    ) -> Result<CertificateStatus> {
        report.validate().map_err(|e| CaError::BadRequest(format!("check-in report: {e}")))?;
        let rec = self.known_device_cert(cert_der).await?;
        if rec.revocation.is_none() {
            // A device checking in with a renewed certificate has it: its parent retires.
            self.retire_parent(&rec, meta).await;
        }
        let answer = self.certificate_status(&rec).await?;
        let device = DeviceRecord {
            identity: rec.identity.clone(),
            group: rec.group.clone(),
            last_seen: self.now(),
            serial: rec.serial.clone(),
            cert_status: cert_status(&rec, self.now()).to_owned(),
            remote: meta.remote.clone(),
            report,
        };
        // The answer matters more to the device than the record to the inventory: a store
        // that cannot take the record is logged, and the device still gets its policy.
        if let Err(e) = self.store().put_device(device).await {
            tracing::warn!(identity = %rec.identity, error = %e, "could not record a check-in");
        }
        Ok(answer)
    }

    /// The inventory, filtered, by identity.
    pub async fn devices(&self, filter: &DeviceFilter) -> Result<Vec<DeviceView>> {
        let now = self.now();
        let certs = self.store().certs(CertFilter::default()).await?;
        let records = self.store().devices().await?;
        let versions = self.policy_versions().await?;
        let mut by_identity: HashMap<&str, Vec<&CertRecord>> = HashMap::new();
        for c in &certs {
            by_identity.entry(&c.identity).or_default().push(c);
        }
        let mut rows = Vec::with_capacity(by_identity.len().max(records.len()));
        for d in &records {
            let certs = by_identity.remove(d.identity.as_str()).unwrap_or_default();
            rows.extend(view(Some(d), &certs, &versions, now));
        }
        // Enrolled and never checked in.
        for certs in by_identity.values() {
            rows.extend(view(None, certs, &versions, now));
        }
        rows.retain(|d| filter.matches(d, now));
        rows.sort_by(|a, b| a.identity.cmp(&b.identity));
        Ok(rows)
    }

    /// Each group's policy version (groups without a policy have the default's).
    async fn policy_versions(&self) -> Result<PolicyVersions> {
        let groups = self.store().policies().await?;
        Ok(PolicyVersions {
            by_group: groups.iter().map(|(g, p)| (g.clone(), policy_version(p))).collect(),
            default: policy_version(&GroupPolicy::default()),
        })
    }

    /// One device: its row, last report, lineage and audit trail (read for this identity
    /// alone, not from the whole inventory).
    pub async fn device_detail(&self, identity: &str) -> Result<DeviceDetail> {
        let record = self.store().device(identity).await?;
        let mut lineage = self.store().certs(CertFilter::identity(identity)).await?;
        lineage.sort_by(|a, b| (a.issued_at, &a.serial).cmp(&(b.issued_at, &b.serial)));
        let versions = self.policy_versions().await?;
        let device =
            view(record.as_ref(), &lineage.iter().collect::<Vec<_>>(), &versions, self.now())
                .ok_or_else(|| {
                    CaError::NotFound(format!("no device {identity:?} in the inventory"))
                })?;
        let serials: std::collections::HashSet<&str> =
            lineage.iter().map(|c| c.serial.as_str()).collect();
        let audit = self
            .store()
            .audit_log(AUDIT_SEARCH)
            .await?
            .into_iter()
            .filter(|e| {
                e.subject == identity
                    || serials.contains(e.subject.as_str())
                    || e.actor.split_once(':').is_some_and(|(_, who)| who == identity)
            })
            .collect();
        Ok(DeviceDetail {
            device,
            report: record.as_ref().map(|r| r.report.clone()),
            remote: record.and_then(|r| r.remote),
            lineage,
            audit,
        })
    }

    /// Forgets devices not seen for `gone_for` (their certificates stay); audited.
    pub async fn forget_devices(&self, gone_for: Duration, actor: &str) -> Result<u64> {
        if gone_for <= Duration::ZERO {
            return Err(CaError::BadRequest("--gone-for must be longer than zero".into()));
        }
        let Some(before) = self.now().checked_sub(gone_for) else { return Ok(0) };
        let n = self.store().forget_devices(before).await?;
        let ev = audit(
            self.now(),
            actor.to_owned(),
            "devices.forget",
            "*",
            format!("{n} devices not seen for {gone_for}"),
            &RequestMeta::default(),
        );
        self.store().audit(ev).await?;
        Ok(n)
    }
}

impl DeviceFilter {
    pub fn matches(&self, d: &DeviceView, now: OffsetDateTime) -> bool {
        self.group.as_ref().is_none_or(|g| *g == d.group)
            && self.stale.is_none_or(|s| {
                now.checked_sub(s).is_some_and(|t| d.last_seen.unwrap_or(d.enrolled_at) < t)
            })
            && (!self.failing || d.failing)
            && self.expiring.is_none_or(|e| {
                d.cert_status != "revoked"
                    && d.not_after > now
                    && now.checked_add(e).is_none_or(|t| d.not_after <= t)
            })
            && self.version.as_ref().is_none_or(|v| d.agent_version.as_ref() == Some(v))
    }
}
