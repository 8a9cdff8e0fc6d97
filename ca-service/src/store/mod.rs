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
    /// Serial of the certificate that authenticated this one's renewal (`simplereenroll`);
    /// none for an enrolment.
    pub parent_serial: Option<String>,
    /// Serial of the one certificate renewed from this one: a certificate renews once.
    pub superseded_by: Option<String>,
    #[serde(with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub superseded_at: Option<OffsetDateTime>,
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
    /// Set when the token was revoked before any use (`lanyard-ca token revoke`).
    pub revoked_at: Option<OffsetDateTime>,
}

/// Which tokens [`Store::tokens`] lists.
#[derive(Clone, Debug, Default)]
pub struct TokenFilter {
    pub identity: Option<String>,
    pub group: Option<String>,
    /// Only tokens neither used nor revoked (expiry is the caller's: it has the clock).
    pub unused_only: bool,
}

impl TokenFilter {
    /// Whether a record passes the filter (for backends that filter after reading).
    pub fn matches(&self, t: &TokenRecord) -> bool {
        self.identity.as_ref().is_none_or(|i| *i == t.identity)
            && self.group.as_ref().is_none_or(|g| *g == t.group)
            && (!self.unused_only || (t.used.is_none() && t.revoked_at.is_none()))
    }
}

/// What [`Store::revoke_token`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenRevokeOutcome {
    Revoked,
    /// Too late: a device enrolled with it (revoke the certificate instead).
    Used(TokenUse),
    AlreadyRevoked(OffsetDateTime),
    NotFound,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenUse {
    pub at: OffsetDateTime,
    pub serial: String,
    pub spki_sha256: String,
}

/// A batch claim (`lanyard-ca provisioning claim create`): enrols up to `max_uses` devices,
/// each under an identity its template makes, each identity once. Only the SHA-256 of the
/// secret is stored.
#[derive(Clone, Debug, Serialize)]
pub struct ClaimRecord {
    #[serde(skip)]
    pub hash: String,
    /// The first 16 hex digits of the hash: names the claim in lists and the audit trail.
    pub id: String,
    pub group: String,
    pub identity_template: String,
    pub max_uses: u64,
    pub uses: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// A provisioning that happened once and is not repeated: an identity enrolled through a
/// batch claim (key `identity:<identity>`), a factory certificate used
/// (`factory:<sha256 of its DER>`), or a factory certificate blocked (source `blocked`).
/// What a retry with the same key is answered with, and what refuses another key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Provisioned {
    pub key: String,
    pub identity: String,
    /// `claim:<claim ID>`, `factory:<factory CA ID>` or `blocked`.
    pub source: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Empty for a block.
    pub serial: String,
    pub spki_sha256: String,
}

impl Provisioned {
    pub const BLOCKED: &'static str = "blocked";

    pub fn identity_key(identity: &str) -> String {
        format!("identity:{identity}")
    }
    pub fn factory_key(cert_sha256: &str) -> String {
        format!("factory:{cert_sha256}")
    }
}

/// How a factory CA's certificates name their devices (`provisioning trust --identity-from`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdentityFrom {
    /// The subject's common name.
    Cn,
    /// The certificate's serial number, in lowercase hex (with a template).
    Serial,
    /// The first URI subject alternative name's last segment (after the last ':' or '/').
    SanUri,
}

impl IdentityFrom {
    pub fn name(self) -> &'static str {
        match self {
            IdentityFrom::Cn => "cn",
            IdentityFrom::Serial => "serial",
            IdentityFrom::SanUri => "san-uri",
        }
    }
}

impl std::str::FromStr for IdentityFrom {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cn" => Ok(IdentityFrom::Cn),
            "serial" => Ok(IdentityFrom::Serial),
            "san-uri" => Ok(IdentityFrom::SanUri),
            o => Err(format!("identity-from {o:?}: use cn, serial or san-uri")),
        }
    }
}

/// A manufacturer's CA trusted to authenticate first enrolments of a group's devices
/// (`lanyard-ca provisioning trust`).
#[derive(Clone, Debug, Serialize)]
pub struct FactoryCaRecord {
    /// The first 16 hex digits of the SHA-256 of the CA certificate's DER.
    pub id: String,
    pub group: String,
    pub subject: String,
    #[serde(skip)]
    pub der: Vec<u8>,
    pub identity_from: IdentityFrom,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_template: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub added_at: OffsetDateTime,
}

/// What an issuance consumes, atomically with its record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Consumes {
    /// A renewal (authenticated by the certificate it renews).
    Nothing,
    /// An enrolment with a one-time token (by hash).
    Token(String),
    /// An enrolment through a batch claim (by hash): one of its uses, and the identity's one
    /// claim enrolment.
    Claim(String),
    /// An enrolment with a factory certificate (by the SHA-256 of its DER), from a factory
    /// CA (by ID): the certificate's one enrolment.
    FactoryCert { cert_sha256: String, ca_id: String },
}

impl Consumes {
    /// The [`Provisioned`] record this issuance makes, if any.
    pub fn provisioned(&self, cert: &CertRecord) -> Option<Provisioned> {
        let (key, source) = match self {
            Consumes::Nothing | Consumes::Token(_) => return None,
            Consumes::Claim(hash) => (
                Provisioned::identity_key(&cert.identity),
                format!("claim:{}", &hash[..hash.len().min(16)]),
            ),
            Consumes::FactoryCert { cert_sha256, ca_id } => {
                (Provisioned::factory_key(cert_sha256), format!("factory:{ca_id}"))
            }
        };
        Some(Provisioned {
            key,
            identity: cert.identity.clone(),
            source,
            at: cert.issued_at,
            serial: cert.serial.clone(),
            spki_sha256: cert.spki_sha256.clone(),
        })
    }
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

/// One device of the inventory: what it said at its last check-in. One record per
/// identity, replaced at each check-in (check-ins are not audited: they are frequent and
/// change nothing).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DeviceRecord {
    pub identity: String,
    pub group: String,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    /// The serial the device presented (the CA's record, not the report's word).
    pub serial: String,
    /// What the CA knows of that certificate: `valid`, `expired`, `revoked` or
    /// `superseded` (renewed: the device checks in with an older certificate).
    pub cert_status: String,
    /// The peer address of the check-in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    pub report: lanyard_proto::api::CheckinReport,
}

/// Result of recording an issuance.
#[derive(Debug, PartialEq, Eq)]
pub enum RecordOutcome {
    Recorded,
    /// The token was consumed by another issuance in the meantime (the certificate just
    /// signed must not be returned).
    TokenAlreadyUsed,
    /// The parent was renewed by another issuance in the meantime: `child` is the
    /// certificate that won. Nothing was recorded.
    ParentAlreadyRenewed {
        child: String,
    },
    /// The public key was certified before for this identity, as `serial`. Nothing was
    /// recorded.
    KeyReused {
        serial: String,
    },
    /// The claim is used up or revoked (or vanished). Nothing was recorded.
    ClaimUnavailable,
    /// The identity (through a claim) or the factory certificate was provisioned before
    /// ([`Store::provisioned`] says how). Nothing was recorded.
    AlreadyProvisioned,
}

#[derive(Debug, PartialEq, Eq)]
pub enum RevokeOutcome {
    Revoked,
    AlreadyRevoked(Revocation),
    NotFound,
}

/// What a token enrolment reads before it signs ([`Store::enrolment_reads`]).
#[derive(Debug, Default)]
pub struct EnrolmentReads {
    /// The token, if the hash names one.
    pub token: Option<TokenRecord>,
    /// A certificate of the identity with the CSR's key, if any (the key was certified
    /// before).
    pub key_serial: Option<String>,
    /// The policy of the token's group, if one is set.
    pub policy: Option<GroupPolicy>,
}

/// What a renewal reads before it signs ([`Store::renewal_reads`]).
#[derive(Debug, Default)]
pub struct RenewalReads {
    /// The certificate being renewed, if the serial names one.
    pub cert: Option<CertRecord>,
    /// A certificate of the same identity with the CSR's key, if any.
    pub key_serial: Option<String>,
    /// The policy of the certificate's group, if one is set.
    pub policy: Option<GroupPolicy>,
}

/// Which certificates to list.
#[derive(Clone, Debug, Default)]
pub struct CertFilter {
    pub identity: Option<String>,
    pub revoked_only: bool,
    /// Only certificates superseded (renewed) before this instant and not revoked: the
    /// parents whose grace has run out.
    pub superseded_unrevoked_before: Option<OffsetDateTime>,
}

impl CertFilter {
    pub fn identity(identity: &str) -> Self {
        CertFilter { identity: Some(identity.to_owned()), ..Default::default() }
    }
    pub fn revoked() -> Self {
        CertFilter { revoked_only: true, ..Default::default() }
    }
    /// Whether a record passes the filter (for backends that filter after reading).
    pub fn matches(&self, c: &CertRecord) -> bool {
        self.identity.as_ref().is_none_or(|i| *i == c.identity)
            && (!self.revoked_only || c.revocation.is_some())
            && self
                .superseded_unrevoked_before
                .is_none_or(|t| c.revocation.is_none() && c.superseded_at.is_some_and(|at| at < t))
    }
}

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    async fn put_token(&self, token: TokenRecord, audit: AuditEvent) -> Result<()>;
    async fn token(&self, hash: &str) -> Result<Option<TokenRecord>>;
    /// Tokens passing the filter, oldest first.
    async fn tokens(&self, filter: TokenFilter) -> Result<Vec<TokenRecord>>;
    /// Revokes an unused token with its audit event, atomically: an issuance that
    /// consumes the token and this revocation cannot both succeed.
    async fn revoke_token(
        &self,
        hash: &str,
        at: OffsetDateTime,
        audit: AuditEvent,
    ) -> Result<TokenRevokeOutcome>;

    /// Records an issued certificate and its audit event, atomically, or nothing:
    /// - with [`Consumes::Token`], consumes the token, only if it is still unused and not
    ///   revoked (else [`RecordOutcome::TokenAlreadyUsed`]);
    /// - with [`Consumes::Claim`], takes one use of the claim, only if it has one left and is
    ///   not revoked (else [`RecordOutcome::ClaimUnavailable`]);
    /// - with [`Consumes::Claim`] or [`Consumes::FactoryCert`], puts its [`Provisioned`]
    ///   record ([`Consumes::provisioned`]), only if none has its key (else
    ///   [`RecordOutcome::AlreadyProvisioned`]);
    /// - with `cert.parent_serial`, marks the parent superseded by this certificate, only if
    ///   no other certificate superseded it (else [`RecordOutcome::ParentAlreadyRenewed`]);
    /// - only if no certificate of the same identity has the same key (else
    ///   [`RecordOutcome::KeyReused`]).
    async fn record_issuance(
        &self,
        cert: CertRecord,
        consumes: Consumes,
        audit: AuditEvent,
    ) -> Result<RecordOutcome>;

    /// Stores a new claim with its audit event.
    async fn put_claim(&self, claim: ClaimRecord, audit: AuditEvent) -> Result<()>;
    async fn claim(&self, hash: &str) -> Result<Option<ClaimRecord>>;
    /// Every claim, oldest first.
    async fn claims(&self) -> Result<Vec<ClaimRecord>>;
    /// Revokes a claim (it enrols nothing more) with its audit event; false if it was
    /// revoked already or does not exist.
    async fn revoke_claim(&self, hash: &str, at: OffsetDateTime, audit: AuditEvent)
    -> Result<bool>;
    /// The provisioning record with this key ([`Provisioned::identity_key`],
    /// [`Provisioned::factory_key`]), if any.
    async fn provisioned(&self, key: &str) -> Result<Option<Provisioned>>;
    /// Forgets the provisionings of `identity` (`provisioning reset`), audited, so that it
    /// may enrol through a claim or with its factory certificate again; blocks stay. How many
    /// were forgotten.
    async fn reset_provisioned(&self, identity: &str, audit: AuditEvent) -> Result<u64>;
    /// Blocks a factory certificate (by the SHA-256 of its DER): it enrols nothing from now
    /// on, even after a reset. Replaces its provisioning record, audited.
    async fn block_factory_cert(
        &self,
        cert_sha256: &str,
        at: OffsetDateTime,
        audit: AuditEvent,
    ) -> Result<()>;

    /// Trusts a factory CA (replacing one with the same ID), audited.
    async fn put_factory_ca(&self, ca: FactoryCaRecord, audit: AuditEvent) -> Result<()>;
    /// Every trusted factory CA, by ID.
    async fn factory_cas(&self) -> Result<Vec<FactoryCaRecord>>;
    /// Stops trusting a factory CA, audited; false if it was not trusted.
    async fn remove_factory_ca(&self, id: &str, audit: AuditEvent) -> Result<bool>;

    async fn cert(&self, serial: &str) -> Result<Option<CertRecord>>;
    /// The serial of a certificate of `identity` with this key (SPKI SHA-256), if any.
    async fn cert_by_key(&self, identity: &str, spki_sha256: &str) -> Result<Option<String>>;

    /// Everything a token enrolment reads before it signs, in one call: the token, the
    /// certificate of `identity` with this key (when the CSR's key is known), and the policy
    /// of the token's group. Nothing when the token is unknown. The default makes two
    /// round trips (the token, then the other two together); the SQLite store reads all
    /// three in one hop to its connection.
    async fn enrolment_reads(
        &self,
        token_hash: &str,
        identity: &str,
        spki_sha256: Option<&str>,
    ) -> Result<EnrolmentReads> {
        let Some(token) = self.token(token_hash).await? else {
            return Ok(EnrolmentReads::default());
        };
        let (key_serial, policy) = self.key_and_policy(identity, spki_sha256, &token.group).await?;
        Ok(EnrolmentReads { token: Some(token), key_serial, policy })
    }

    /// The second half of the reads above and below, together: the certificate of
    /// `identity` with this key (when known), and `group`'s policy.
    async fn key_and_policy(
        &self,
        identity: &str,
        spki_sha256: Option<&str>,
        group: &str,
    ) -> Result<(Option<String>, Option<GroupPolicy>)> {
        let key = async {
            match spki_sha256 {
                Some(spki) => self.cert_by_key(identity, spki).await,
                None => Ok(None),
            }
        };
        tokio::try_join!(key, self.policy(group))
    }

    /// Everything a renewal reads before it signs, in one call: the certificate `serial`,
    /// the certificate of its identity with the CSR's key (when known), and its group's
    /// policy. Nothing when the serial is unknown. Two round trips by default; one hop in
    /// the SQLite store.
    async fn renewal_reads(&self, serial: &str, spki_sha256: Option<&str>) -> Result<RenewalReads> {
        let Some(cert) = self.cert(serial).await? else {
            return Ok(RenewalReads::default());
        };
        let (key_serial, policy) =
            self.key_and_policy(&cert.identity, spki_sha256, &cert.group).await?;
        Ok(RenewalReads { cert: Some(cert), key_serial, policy })
    }
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

    /// Records a check-in: replaces the identity's inventory record.
    async fn put_device(&self, device: DeviceRecord) -> Result<()>;
    async fn device(&self, identity: &str) -> Result<Option<DeviceRecord>>;
    /// Every inventory record, by identity.
    async fn devices(&self) -> Result<Vec<DeviceRecord>>;
    /// Drops the records of devices last seen before `before`; returns how many.
    async fn forget_devices(&self, before: OffsetDateTime) -> Result<u64>;
}
