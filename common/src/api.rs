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
}
