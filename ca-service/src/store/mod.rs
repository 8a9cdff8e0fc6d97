//! Storage of the CA's records: issued certificates, enrolment tokens (hashed), revocations,
//! group policies, CRL numbers and the audit trail.
//!
//! The issuance flow sees only [`Store`]. Backends: [`sqlite`] (embedded, WAL). A DynamoDB
//! backend implements the same trait; the atomicity rules below are the contract every
//! backend keeps (SQLite with a transaction, DynamoDB with conditional writes).

#[cfg(feature = "aws")]
pub mod dynamodb;
pub mod sqlite;

use crate::error::Result;
use crate::revocation::Reason;
use lanyard_proto::GroupPolicy;
use serde::Serialize;
use time::OffsetDateTime;

/// One issued certificate.
#[derive(Clone, Debug, Serialize)]
pub struct CertRecord {
    /// Lowercase hex of the serial, no leading zero byte (as `lanyard_proto::serial::to_hex`).
    pub serial: String,
    pub identity: String,
    pub group: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// SHA-256 of the SubjectPublicKeyInfo, hex: lets an enrolment retry with the same key
    /// find the certificate already issued for it.
    pub spki_sha256: String,
    #[serde(skip)]
    pub der: Vec<u8>,
    /// Serial of the certificate this one renewed (`simplereenroll`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renewed_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation: Option<Revocation>,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Revocation {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub reason: Reason,
}

/// An enrolment token. Only the SHA-256 of the secret is stored.
#[derive(Clone, Debug)]
pub struct TokenRecord {
    pub hash: String,
    pub identity: String,
    pub group: String,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    /// Set when an issuance with this token succeeded.
    pub used: Option<TokenUse>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenUse {
    pub at: OffsetDateTime,
    pub serial: String,
    pub spki_sha256: String,
}

/// Who did what, when, from where. Never holds a secret.
#[derive(Clone, Debug, Serialize)]
pub struct AuditEvent {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// `cli:<user>`, `device:<identity>` or `token:<identity>`.
    pub actor: String,
    /// `issue`, `renew`, `revoke`, `token.create`, `policy.set`, `init`.
    pub action: String,
    /// Serial, identity or group acted on.
    pub subject: String,
    pub detail: String,
    /// Peer address for network requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
}

/// Result of recording an issuance.
#[derive(Debug, PartialEq, Eq)]
pub enum RecordOutcome {
    Recorded,
    /// The token was consumed by another issuance in the meantime (the certificate just
    /// signed must not be returned).
    TokenAlreadyUsed,
}

#[derive(Debug, PartialEq, Eq)]
pub enum RevokeOutcome {
    Revoked,
    AlreadyRevoked(Revocation),
    NotFound,
}

/// Which certificates to list.
#[derive(Clone, Debug, Default)]
pub struct CertFilter {
    pub identity: Option<String>,
    pub revoked_only: bool,
}

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    async fn put_token(&self, token: TokenRecord, audit: AuditEvent) -> Result<()>;
    async fn token(&self, hash: &str) -> Result<Option<TokenRecord>>;

    /// Records an issued certificate and its audit event, atomically. With `token_hash`,
    /// consumes the token in the same transaction, only if it is still unused; otherwise
    /// returns [`RecordOutcome::TokenAlreadyUsed`] and records nothing.
    async fn record_issuance(
        &self,
        cert: CertRecord,
        token_hash: Option<String>,
        audit: AuditEvent,
    ) -> Result<RecordOutcome>;

    async fn cert(&self, serial: &str) -> Result<Option<CertRecord>>;
    async fn certs(&self, filter: CertFilter) -> Result<Vec<CertRecord>>;

    /// Marks a serial revoked (once; a second revocation keeps the first).
    async fn revoke(
        &self,
        serial: &str,
        revocation: Revocation,
        audit: AuditEvent,
    ) -> Result<RevokeOutcome>;

    /// A number that changes whenever the set of revocations changes, so published CRLs
    /// can be regenerated only when needed.
    async fn revocation_generation(&self) -> Result<u64>;

    async fn policy(&self, group: &str) -> Result<Option<GroupPolicy>>;
    async fn set_policy(&self, group: &str, policy: GroupPolicy, audit: AuditEvent) -> Result<()>;
    async fn policies(&self) -> Result<Vec<(String, GroupPolicy)>>;

    /// The next CRL number for a scope (`root`, `issuing`), strictly increasing.
    async fn next_crl_number(&self, scope: &str) -> Result<u64>;

    async fn audit(&self, event: AuditEvent) -> Result<()>;
    async fn audit_log(&self, limit: usize) -> Result<Vec<AuditEvent>>;
}
