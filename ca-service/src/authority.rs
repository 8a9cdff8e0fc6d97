//! The certificate authority service: enrol, renew, revoke, publish.
//!
//! Each flow reads top to bottom: authorize, apply policy, check the CSR, apply the
//! profile, sign, record, return. HTTP handlers and CLI commands only parse, call one of
//! these, and render. Nothing here knows about HTTP, files or SQLite.

use crate::clock::Clock;
use crate::csr::{self, CheckedCsr};
use crate::error::{CaError, Result};
use crate::profile::{self, PublicationUrls};
use crate::revocation::Reason;
use crate::signer::SharedSigner;
use crate::store::{
    AuditEvent, CertFilter, CertRecord, RecordOutcome, Revocation, RevokeOutcome, Store,
    TokenRecord,
};
use crate::tokens::TokenSecret;
use lanyard_proto::GroupPolicy;
use lanyard_proto::policy::PolicyDocument;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Group used when a token names none.
pub const DEFAULT_GROUP: &str = "default";

/// The CA's key material and certificates, as loaded by the embedded or AWS backend.
pub struct CaKeys {
    pub issuing: SharedSigner,
    pub issuing_der: Vec<u8>,
    pub root_der: Vec<u8>,
    /// The root key, where it is online (embedded mode keeps it in a file); needed to sign
    /// the root's CRL and OCSP answers about the issuing CA.
    pub root: Option<SharedSigner>,
}

/// How long published artefacts stay valid.
#[derive(Clone, Debug)]
pub struct PublicationSettings {
    pub urls: PublicationUrls,
    pub crl_validity: time::Duration,
    pub ocsp_validity: time::Duration,
}

impl PublicationSettings {
    /// From a base URL and validities in seconds (as the CA's settings store them).
    pub fn new(public_url: &str, crl_validity_secs: u64, ocsp_validity_secs: u64) -> Self {
        let secs =
            |s: u64, default: i64| time::Duration::seconds(i64::try_from(s).unwrap_or(default));
        PublicationSettings {
            urls: PublicationUrls::from_base(public_url),
            crl_validity: secs(crl_validity_secs, 604_800),
            ocsp_validity: secs(ocsp_validity_secs, 3_600),
        }
    }
}

/// A certificate just issued (or re-sent to a retry), with its chain.
#[derive(Clone, Debug)]
pub struct Issued {
    pub record: CertRecord,
    /// Issuing CA then root, DER.
    pub chain: Vec<Vec<u8>>,
    /// True when this answers a retry of an enrolment that had already succeeded.
    pub replayed: bool,
}

/// One line of the revocation export.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RevokedEntry {
    /// Colon-hex DER serial (`00:8f:...`), as CloudFront's connection function sees it.
    pub serial: String,
    #[serde(with = "time::serde::rfc3339")]
    pub revoked_at: OffsetDateTime,
    pub reason: &'static str,
    /// Entries may be dropped from the edge once the certificate has expired.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
}

/// Where a request came from, for the audit trail.
#[derive(Clone, Debug, Default)]
pub struct RequestMeta {
    pub remote: Option<String>,
}

struct CachedCrl {
    generation: u64,
    this_update: OffsetDateTime,
    der: Vec<u8>,
}

pub struct Authority {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    keys: CaKeys,
    issuer: rcgen::Issuer<'static, SharedSigner>,
    root_issuer: Option<rcgen::Issuer<'static, SharedSigner>>,
    publication: PublicationSettings,
    crl_cache: Mutex<HashMap<&'static str, CachedCrl>>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").field("issuing", &self.keys.issuing).finish_non_exhaustive()
    }
}

fn audit(
    at: OffsetDateTime,
    actor: String,
    action: &str,
    subject: &str,
    detail: String,
    meta: &RequestMeta,
) -> AuditEvent {
    AuditEvent {
        at,
        actor,
        action: action.to_owned(),
        subject: subject.to_owned(),
        detail,
        remote: meta.remote.clone(),
    }
}

impl Authority {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        keys: CaKeys,
        publication: PublicationSettings,
    ) -> Result<Self> {
        let issuer =
            rcgen::Issuer::from_ca_cert_der(&keys.issuing_der.clone().into(), keys.issuing.clone())
                .map_err(|e| CaError::Config(format!("issuing CA certificate: {e}")))?;
        let root_issuer = match &keys.root {
            Some(root) => Some(
                rcgen::Issuer::from_ca_cert_der(&keys.root_der.clone().into(), root.clone())
                    .map_err(|e| CaError::Config(format!("root CA certificate: {e}")))?,
            ),
            None => None,
        };
        Ok(Authority {
            store,
            clock,
            keys,
            issuer,
            root_issuer,
            publication,
            crl_cache: Mutex::new(HashMap::new()),
        })
    }

    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
    pub fn keys(&self) -> &CaKeys {
        &self.keys
    }
    pub fn publication(&self) -> &PublicationSettings {
        &self.publication
    }
    /// Issuing CA then root, DER: what `/cacerts` serves and what follows every leaf.
    pub fn chain(&self) -> Vec<Vec<u8>> {
        vec![self.keys.issuing_der.clone(), self.keys.root_der.clone()]
    }

    /// The policy of a group: the one set by `policy set`, else the defaults.
    pub async fn policy(&self, group: &str) -> Result<GroupPolicy> {
        Ok(self.store.policy(group).await?.unwrap_or_default())
    }

    pub async fn policy_document(&self, group: &str) -> Result<PolicyDocument> {
        Ok(PolicyDocument { group: group.to_owned(), policy: self.policy(group).await? })
    }

    pub async fn set_policy(&self, group: &str, policy: GroupPolicy, actor: &str) -> Result<()> {
        profile::validate_group(group)?;
        policy.validate().map_err(|e| CaError::BadRequest(e.to_string()))?;
        let detail = serde_json::to_string(&policy).unwrap_or_default();
        let ev = audit(
            self.now(),
            actor.to_owned(),
            "policy.set",
            group,
            detail,
            &RequestMeta::default(),
        );
        self.store.set_policy(group, policy, ev).await
    }

    /// Creates a one-time enrolment token bound to an identity and a group.
    pub async fn create_token(
        &self,
        identity: &str,
        group: &str,
        ttl: std::time::Duration,
        actor: &str,
    ) -> Result<(TokenSecret, TokenRecord)> {
        profile::validate_identity(identity)?;
        profile::validate_group(group)?;
        // A mistyped group would silently give the device the default policy.
        if group != DEFAULT_GROUP && self.store.policy(group).await?.is_none() {
            let mut known: Vec<String> =
                self.store.policies().await?.into_iter().map(|(g, _)| g).collect();
            if !known.iter().any(|g| g == DEFAULT_GROUP) {
                known.insert(0, DEFAULT_GROUP.to_owned());
            }
            return Err(CaError::BadRequest(format!(
                "group {group:?} has no policy; known groups: {} (`lanyard-ca policy list`); set one first with `lanyard-ca policy set --group {group} ...`, or give a known group",
                known.join(", ")
            )));
        }
        if ttl.is_zero() || ttl > std::time::Duration::from_secs(90 * 86_400) {
            return Err(CaError::BadRequest("token ttl must be between 1s and 90d".into()));
        }
        let now = self.now();
        let secret = TokenSecret::generate(identity);
        let rec = TokenRecord {
            hash: secret.hash(),
            identity: identity.to_owned(),
            group: group.to_owned(),
            created_at: now,
            expires_at: now + time::Duration::try_from(ttl).unwrap_or(time::Duration::DAY),
            used: None,
        };
        // The audit trail names the token by a hash prefix only.
        let ev = audit(
            now,
            actor.to_owned(),
            "token.create",
            identity,
            format!(
                "group={group} expires={} token_sha256_prefix={}",
                lanyard_proto::timefmt::rfc3339(rec.expires_at),
                &rec.hash[..12]
            ),
            &RequestMeta::default(),
        );
        self.store.put_token(rec.clone(), ev).await?;
        Ok((secret, rec))
    }

    /// EST `simpleenroll`: bootstrap with a one-time token.
    ///
    /// A failed attempt leaves the token unused. A retry with the same token and the same
    /// public key after a success returns the certificate already issued, so a device that
    /// lost the answer can still finish.
    pub async fn enroll(
        &self,
        identity: &str,
        token: &TokenSecret,
        csr_der: &[u8],
        meta: &RequestMeta,
    ) -> Result<Issued> {
        // Authorize.
        profile::validate_identity(identity)?;
        let Some(tok) = self.store.token(&token.hash()).await? else {
            return Err(CaError::Unauthorized(format!(
                "unknown enrolment token for identity {identity:?}"
            )));
        };
        if tok.identity != identity {
            return Err(CaError::Forbidden(format!(
                "this token is bound to another identity, not {identity:?}"
            )));
        }
        let csr = csr::check(csr_der)?;
        if let Some(used) = &tok.used {
            return self.replay(&tok, used.spki_sha256 == csr.spki_sha256, &used.serial).await;
        }
        let now = self.now();
        if now >= tok.expires_at {
            return Err(CaError::Forbidden(format!(
                "enrolment token for {identity:?} expired at {}; create a new one",
                tok.expires_at
            )));
        }
        // Policy and profile, sign, record.
        let policy = self.policy(&tok.group).await?;
        let record = self.sign_device(identity, &tok.group, &csr, &policy, now, None)?;
        let ev = audit(
            now,
            format!("token:{identity}"),
            "issue",
            &record.serial,
            format!(
                "identity={identity} group={} key={} not_after={}",
                tok.group, csr.key_algorithm, record.not_after
            ),
            meta,
        );
        match self.store.record_issuance(record.clone(), Some(tok.hash.clone()), ev).await? {
            RecordOutcome::Recorded => Ok(Issued { record, chain: self.chain(), replayed: false }),
            RecordOutcome::TokenAlreadyUsed => {
                // A concurrent request with this token won; answer as a retry would be.
                let tok = self
                    .store
                    .token(&tok.hash)
                    .await?
                    .ok_or_else(|| CaError::Storage("token vanished".into()))?;
                let used = tok
                    .used
                    .clone()
                    .ok_or_else(|| CaError::Storage("token race without use".into()))?;
                self.replay(&tok, used.spki_sha256 == csr.spki_sha256, &used.serial).await
            }
        }
    }

    async fn replay(&self, tok: &TokenRecord, same_key: bool, serial: &str) -> Result<Issued> {
        if !same_key {
            return Err(CaError::Forbidden(format!(
                "enrolment token for {:?} was already used; create a new token",
                tok.identity
            )));
        }
        let record = self.store.cert(serial).await?.ok_or_else(|| {
            CaError::Storage(format!("certificate {serial} of a used token is missing"))
        })?;
        if let Some(r) = &record.revocation {
            return Err(CaError::Forbidden(format!(
                "the certificate issued for this token ({serial}) was revoked ({}) at {}",
                r.reason.name(),
                r.at
            )));
        }
        Ok(Issued { record, chain: self.chain(), replayed: true })
    }

    /// EST `simplereenroll`: renewal authenticated by the current certificate, which must
    /// be one this CA issued, unrevoked, and unexpired (or within the group's grace).
    pub async fn reenroll(
        &self,
        client_cert_der: &[u8],
        csr_der: &[u8],
        meta: &RequestMeta,
    ) -> Result<Issued> {
        let current = self.authenticate_device(client_cert_der).await?;
        let now = self.now();
        let policy = self.policy(&current.group).await?;
        let grace =
            time::Duration::try_from(policy.expired_grace()).unwrap_or(time::Duration::ZERO);
        if now > current.not_after + grace {
            return Err(CaError::Forbidden(format!(
                "certificate {} expired at {}{}; enrol again with a new token",
                current.serial,
                current.not_after,
                if grace.is_zero() {
                    String::new()
                } else {
                    format!(", beyond the group's grace of {grace}")
                }
            )));
        }
        let csr = csr::check(csr_der)?;
        if csr.spki_sha256 == current.spki_sha256 {
            return Err(CaError::BadRequest(
                "renewal CSR reuses the current key; Lanyard renews with a new key every time"
                    .into(),
            ));
        }
        let record = self.sign_device(
            &current.identity,
            &current.group,
            &csr,
            &policy,
            now,
            Some(current.serial.clone()),
        )?;
        let ev = audit(
            now,
            format!("device:{}", current.identity),
            "renew",
            &record.serial,
            format!(
                "from={} key={} not_after={}",
                current.serial, csr.key_algorithm, record.not_after
            ),
            meta,
        );
        self.store.record_issuance(record.clone(), None, ev).await?;
        Ok(Issued { record, chain: self.chain(), replayed: false })
    }

    /// Finds the record of a certificate a device presents: issued by this CA (signature
    /// checked here too, since behind a TLS-terminating front the certificate arrives in a
    /// header), known to the store, byte-identical, not revoked. Expiry is left to callers.
    pub async fn authenticate_device(&self, cert_der: &[u8]) -> Result<CertRecord> {
        let unknown =
            || CaError::Unauthorized("client certificate was not issued by this CA".into());
        let (_, cert) = X509Certificate::from_der(cert_der)
            .map_err(|_| CaError::Unauthorized("client certificate does not parse".into()))?;
        let (_, issuing) = X509Certificate::from_der(&self.keys.issuing_der)
            .map_err(|e| CaError::Config(format!("issuing CA certificate: {e}")))?;
        cert.verify_signature(Some(issuing.public_key())).map_err(|_| unknown())?;
        let serial = lanyard_proto::serial::to_hex(cert.raw_serial());
        let rec = self.store.cert(&serial).await?.ok_or_else(unknown)?;
        if rec.der != cert_der {
            return Err(unknown());
        }
        if let Some(r) = &rec.revocation {
            return Err(CaError::Forbidden(format!(
                "certificate {serial} was revoked ({}) at {}; enrol again with a new token",
                r.reason.name(),
                r.at
            )));
        }
        Ok(rec)
    }

    fn sign_device(
        &self,
        identity: &str,
        group: &str,
        csr: &CheckedCsr,
        policy: &GroupPolicy,
        now: OffsetDateTime,
        renewed_from: Option<String>,
    ) -> Result<CertRecord> {
        if !policy.key_algorithms.contains(&csr.key_algorithm) {
            return Err(CaError::BadRequest(format!(
                "key algorithm {} is not allowed by the policy of group {group:?}; allowed: {}",
                csr.key_algorithm,
                policy.key_algorithms.iter().map(|a| a.name()).collect::<Vec<_>>().join(", ")
            )));
        }
        if let Some(cn) = &csr.common_name
            && cn != identity
        {
            return Err(CaError::BadRequest(format!(
                "CSR subject CN {cn:?} does not match the identity {identity:?}; leave the subject empty or use the identity"
            )));
        }
        let serial = profile::random_serial();
        let params =
            profile::device(identity, &serial, now, policy.lifetime(), &self.publication.urls)?;
        let spki = rcgen::SubjectPublicKeyInfo::from_der(&csr.spki_der)
            .map_err(|e| CaError::BadRequest(format!("CSR public key: {e}")))?;
        let cert = params.signed_by(&spki, &self.issuer)?;
        Ok(CertRecord {
            serial: lanyard_proto::serial::to_hex(&serial),
            identity: identity.to_owned(),
            group: group.to_owned(),
            not_before: params.not_before,
            not_after: params.not_after,
            issued_at: now,
            spki_sha256: csr.spki_sha256.clone(),
            der: cert.der().to_vec(),
            renewed_from,
            revocation: None,
        })
    }

    /// Revokes a serial. Idempotent: revoking twice reports the first revocation.
    pub async fn revoke(
        &self,
        serial: &str,
        reason: Reason,
        actor: &str,
        meta: &RequestMeta,
    ) -> Result<RevokeOutcome> {
        let bytes = lanyard_proto::serial::parse_hex(serial)
            .map_err(|e| CaError::BadRequest(e.to_string()))?;
        let serial = lanyard_proto::serial::to_hex(&bytes);
        let now = self.now();
        let ev = audit(
            now,
            actor.to_owned(),
            "revoke",
            &serial,
            format!("reason={}", reason.name()),
            meta,
        );
        let out = self.store.revoke(&serial, Revocation { at: now, reason }, ev).await?;
        if out == RevokeOutcome::Revoked
            && let Ok(mut c) = self.crl_cache.lock()
        {
            c.clear();
        }
        Ok(out)
    }

    /// Revoked serials in CloudFront's colon-hex form, for its KeyValueStore and the
    /// connection function (`lanyard-ca revoked`).
    pub async fn revoked_export(&self) -> Result<Vec<RevokedEntry>> {
        let certs = self.store.certs(CertFilter { identity: None, revoked_only: true }).await?;
        Ok(certs
            .into_iter()
            .filter_map(|c| {
                let r = c.revocation?;
                let bytes = lanyard_proto::serial::parse_hex(&c.serial).ok()?;
                Some(RevokedEntry {
                    serial: lanyard_proto::serial::to_colon_hex(&bytes),
                    revoked_at: r.at,
                    reason: r.reason.name(),
                    not_after: c.not_after,
                })
            })
            .collect())
    }

    pub async fn certs(&self, filter: CertFilter) -> Result<Vec<CertRecord>> {
        self.store.certs(filter).await
    }

    /// The issuing CA's CRL (DER), regenerated when a revocation happened or half its
    /// validity has passed.
    pub async fn issuing_crl(&self) -> Result<Vec<u8>> {
        self.crl("issuing").await
    }

    /// The root's CRL (DER; it lists no issuing CA unless one is revoked). Needs the root key.
    pub async fn root_crl(&self) -> Result<Vec<u8>> {
        self.crl("root").await
    }

    async fn crl(&self, scope: &'static str) -> Result<Vec<u8>> {
        let now = self.now();
        let generation = self.store.revocation_generation().await?;
        let half = self.publication.crl_validity / 2;
        if let Ok(cache) = self.crl_cache.lock()
            && let Some(c) = cache.get(scope)
            && (scope == "root" || c.generation == generation)
            && now - c.this_update < half
        {
            return Ok(c.der.clone());
        }
        let (issuer, revoked) = match scope {
            "root" => (
                self.root_issuer.as_ref().ok_or_else(|| {
                    CaError::NotFound(
                        "the root key is offline: the root CRL is published from files".into(),
                    )
                })?,
                Vec::new(),
            ),
            _ => (
                &self.issuer,
                self.store.certs(CertFilter { identity: None, revoked_only: true }).await?,
            ),
        };
        let number = self.store.next_crl_number(scope).await?;
        let params = rcgen::CertificateRevocationListParams {
            this_update: now - profile::BACKDATE,
            next_update: now + self.publication.crl_validity,
            crl_number: rcgen::SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                // Entries may leave the CRL once the certificate has expired (RFC 5280 3.3).
                .filter(|c| c.not_after > now)
                .filter_map(|c| {
                    let r = c.revocation.as_ref()?;
                    Some(rcgen::RevokedCertParams {
                        serial_number: rcgen::SerialNumber::from_slice(
                            &lanyard_proto::serial::parse_hex(&c.serial).ok()?,
                        ),
                        revocation_time: r.at,
                        // "unspecified" SHOULD be absent (RFC 5280 5.3.1).
                        reason_code: (r.reason != Reason::Unspecified).then(|| r.reason.rcgen()),
                        invalidity_date: None,
                    })
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let der = params.signed_by(issuer)?.der().to_vec();
        if let Ok(mut cache) = self.crl_cache.lock() {
            cache.insert(scope, CachedCrl { generation, this_update: now, der: der.clone() });
        }
        Ok(der)
    }

    pub(crate) fn issuer_signer(&self) -> &SharedSigner {
        &self.keys.issuing
    }
    pub(crate) fn root_signer(&self) -> Option<&SharedSigner> {
        self.keys.root.as_ref()
    }
}
