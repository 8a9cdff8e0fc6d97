//! The CA's device JSON API (`/v1/`), shared by the CA (which renders it) and the agent
//! (which reads it).

use crate::GroupPolicy;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// `GET /v1/certificate`: what the CA knows of the certificate a device presents.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CertificateStatus {
    pub serial: String,
    pub identity: String,
    pub group: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// `valid`, `expired` or `revoked`.
    pub status: String,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub revoked_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_reason: Option<String>,
    pub policy: GroupPolicy,
    /// The policy's version: it changes whenever the group's policy does, so the CA can
    /// tell which devices apply the current one (an older CA sends none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
}

/// `POST /v1/checkin`: what an agent reports of itself at each check-in (over mTLS, with
/// the certificate it uses). Never holds a secret: no key, no token. The CA answers with a
/// [`CertificateStatus`] (policy and its version included), so one request does both;
/// `GET /v1/certificate` stays for older agents.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(default)]
pub struct CheckinReport {
    /// The serial the agent uses (the CA records the one the connection presented).
    pub serial: String,
    /// `valid`, `renewing`, `expired` or `revoked`, as `lanyard status` says.
    pub state: String,
    #[serde(with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub next_renewal: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    pub agent_version: String,
    /// The OS as `/etc/os-release` names it (else Rust's `std::env::consts::OS`).
    pub os: String,
    pub arch: String,
    /// Where the key lives (`file`, `kernel keyring`, ...), as `lanyard status` says.
    pub store: String,
    /// The version of the policy the agent applies, as the CA last gave it; `None` before
    /// the first answer, or when a local policy file overrides the CA's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
    /// `ca` or `file` (a local policy file overrides the group's).
    pub policy_source: String,
    pub routes: Vec<RouteHealth>,
}

/// One proxy route's health since the agent started.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(default)]
pub struct RouteHealth {
    pub name: String,
    pub requests: u64,
    /// Requests the proxy answered with a 5xx (upstream refused, unreachable, no credential).
    pub errors: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
}

/// Longest text a check-in report may carry in one field (error messages included).
pub const CHECKIN_MAX_TEXT: usize = 1024;
/// The states a check-in may report (`lanyard status`'s `state`).
pub const CHECKIN_STATES: [&str; 5] = ["not_enrolled", "valid", "renewing", "expired", "revoked"];
/// Most routes a check-in report may list.
pub const CHECKIN_MAX_ROUTES: usize = 64;

impl CheckinReport {
    /// Checks the report's bounds; the message names the field. A CA stores reports as
    /// sent, so it refuses what it could not show safely (control characters, sizes).
    pub fn validate(&self) -> Result<(), String> {
        // Only an error message may span lines: every other field ends up in one line of a
        // listing, a label or a table cell.
        let text = |field: &str, v: &str, multiline: bool| -> Result<(), String> {
            if v.chars().count() > CHECKIN_MAX_TEXT {
                return Err(format!("{field} is longer than {CHECKIN_MAX_TEXT} characters"));
            }
            if v.chars().any(|c| c.is_control() && !(multiline && (c == '\n' || c == '\t'))) {
                return Err(format!("{field} contains control characters"));
            }
            Ok(())
        };
        if !CHECKIN_STATES.contains(&self.state.as_str()) {
            return Err(format!(
                "state {:?} is not one of {}",
                self.state.chars().take(40).collect::<String>(),
                CHECKIN_STATES.join(", ")
            ));
        }
        text("serial", &self.serial, false)?;
        text("last_error_code", self.last_error_code.as_deref().unwrap_or(""), false)?;
        text("last_error", self.last_error.as_deref().unwrap_or(""), true)?;
        text("agent_version", &self.agent_version, false)?;
        text("os", &self.os, false)?;
        text("arch", &self.arch, false)?;
        text("store", &self.store, false)?;
        text("policy_version", self.policy_version.as_deref().unwrap_or(""), false)?;
        text("policy_source", &self.policy_source, false)?;
        if self.routes.len() > CHECKIN_MAX_ROUTES {
            return Err(format!("routes lists more than {CHECKIN_MAX_ROUTES} routes"));
        }
        for r in &self.routes {
            text("routes[].name", &r.name, false)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_round_trips_and_its_bounds_name_the_field() {
        let r = CheckinReport {
            serial: "0a".into(),
            state: "valid".into(),
            agent_version: "0.1.0".into(),
            routes: vec![RouteHealth { name: "api".into(), requests: 3, ..Default::default() }],
            ..Default::default()
        };
        let json = serde_json::to_string(&r).unwrap_or_default();
        assert_eq!(serde_json::from_str::<CheckinReport>(&json).ok(), Some(r.clone()));
        assert_eq!(r.validate(), Ok(()));
        let long = CheckinReport { last_error: Some("x".repeat(2000)), ..r.clone() };
        assert!(long.validate().is_err_and(|e| e.contains("last_error")));
        let ctl = CheckinReport { os: "Debian\u{1b}[31m".into(), ..r.clone() };
        assert!(ctl.validate().is_err_and(|e| e.contains("os")));
        let many = CheckinReport { routes: vec![RouteHealth::default(); 65], ..r.clone() };
        assert!(many.validate().is_err_and(|e| e.contains("routes")));
        // A state outside the known words, or a line break outside the error message, could
        // forge a metrics label or a listing's line: refused.
        let state =
            CheckinReport { state: "valid\"} 1\nlanyard_ca_devices_failing 0".into(), ..r.clone() };
        assert!(state.validate().is_err_and(|e| e.contains("state")));
        let version = CheckinReport { agent_version: "1.0\nfake-row".into(), ..r.clone() };
        assert!(version.validate().is_err_and(|e| e.contains("agent_version")));
        let multiline = CheckinReport { last_error: Some("line 1\nline 2".into()), ..r };
        assert_eq!(multiline.validate(), Ok(()));
        // An older agent's report (fewer fields) still parses.
        assert!(serde_json::from_str::<CheckinReport>(r#"{"serial":"0a"}"#).is_ok());
    }
}
