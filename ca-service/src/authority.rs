//! The certificate authority service: enrol, renew, revoke, publish.
//!
//! Each flow reads top to bottom: authorize, apply policy, check the CSR, apply the
//! profile, sign, record, return. HTTP handlers and CLI commands only parse, call one of
//! these, and render. Nothing here knows about HTTP, files or SQLite.

use crate::admission::{AdmissionLimits, AdmissionStats, Pacer};
use crate::clock::Clock;
use crate::csr::{self, CheckedCsr};
use crate::error::{CaError, Result};
use crate::profile::{self, PublicationUrls};
use crate::revocation::Reason;
use crate::signer::SharedSigner;
use crate::store::{
    AuditEvent, CertFilter, CertRecord, Consumes, RecordOutcome, Revocation, RevokeOutcome, Store,
    TokenFilter, TokenRecord, TokenRevokeOutcome,
};
use crate::tokens::TokenSecret;
use lanyard_proto::policy::PolicyDocument;
use lanyard_proto::{GroupPolicy, ProblemCode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

mod claims;
mod factory;
mod issuers;
mod roots;
pub use claims::{MAX_TTL as MAX_CLAIM_TTL, MAX_USES as MAX_CLAIM_USES};
pub use factory::cert_fingerprint as factory_cert_fingerprint;
pub use issuers::{CaCertStatus, IssuerRevocation, RetiredIssuer};
pub use roots::RootKeys;

/// Whose CRL: a root's or an issuing CA's, by generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CrlScope {
    Root(u32),
    Issuing(u32),
}

impl CrlScope {
    /// The name its file, URL and CRL number counter use: "root" and "issuing" for the
    /// first of each (as before any rotation), then "root-N" and "issuing-N".
    pub fn name(self) -> String {
        match self {
            CrlScope::Root(0 | 1) => "root".into(),
            CrlScope::Root(n) => format!("root-{n}"),
            CrlScope::Issuing(0 | 1) => "issuing".into(),
            CrlScope::Issuing(n) => format!("issuing-{n}"),
        }
    }
}

/// Group used when a token names none.
pub const DEFAULT_GROUP: &str = "default";

/// The CA's key material and certificates, as loaded by the embedded or AWS backend.
pub struct CaKeys {
    /// The current issuing CA: it signs every new certificate.
    pub issuing: SharedSigner,
    pub issuing_der: Vec<u8>,
    /// Its generation: 1 at `init`, one more at each `ca rotate-issuing`.
    pub generation: u32,
    /// Earlier issuing CAs, still answering for the certificates they signed.
    pub retired: Vec<RetiredIssuer>,
    pub root_der: Vec<u8>,
    /// The root key, where it is online (embedded mode keeps it in a file); needed to sign
    /// the root's CRL and OCSP answers about the issuing CA.
    pub root: Option<SharedSigner>,
    /// The current root's generation: 1 at `init`, one more at each `ca rotate-root`.
    pub root_generation: u32,
    /// Earlier roots, still signing their CRLs while an issuing CA under them is in use.
    pub retired_roots: Vec<RootKeys>,
    /// Cross-certificates between the roots (DER), both ways: the current root signed by
    /// the one before it (sent with the CA's chain, so that a device or edge that trusts
    /// only the earlier root still verifies it), and the reverse.
    pub cross: Vec<Vec<u8>>,
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
    current: issuers::LoadedIssuer,
    retired: Vec<issuers::LoadedIssuer>,
    /// Every root, current first.
    roots: Vec<roots::LoadedRoot>,
    publication: PublicationSettings,
    /// By scope: 0 for the root's CRL, else the issuing CA's generation.
    crl_cache: Mutex<HashMap<CrlScope, CachedCrl>>,
    failures: FailureLimiter,
    /// Paces enrolments and renewals (`serve --max-issuance-rate`); `None`: unlimited.
    admission: Option<Pacer>,
    metrics: crate::metrics::CaMetrics,
}

/// Failed authentications per source address over the last minute. Past the limit, the
/// source gets `429 rate-limited` until its oldest failure is a minute old.
struct FailureLimiter {
    limit: usize,
    window: std::time::Duration,
    seen: Mutex<HashMap<std::net::IpAddr, std::collections::VecDeque<std::time::Instant>>>,
}

/// Failed authentications a source may make in a minute (`lanyard-ca serve` default).
pub const AUTH_FAILURES_PER_MINUTE: usize = 10;

impl FailureLimiter {
    fn source(meta: &RequestMeta) -> Option<std::net::IpAddr> {
        let r = meta.remote.as_deref()?;
        r.parse::<std::net::SocketAddr>().map(|a| a.ip()).or_else(|_| r.parse()).ok()
    }

    /// Seconds to wait, if the source is over the limit now.
    fn blocked(&self, ip: std::net::IpAddr) -> Option<u64> {
        let mut seen = self.seen.lock().ok()?;
        let q = seen.get_mut(&ip)?;
        while q.front().is_some_and(|t| t.elapsed() >= self.window) {
            q.pop_front();
        }
        if q.is_empty() {
            seen.remove(&ip);
            return None;
        }
        (q.len() >= self.limit).then(|| {
            let oldest = q.front().map(|t| t.elapsed()).unwrap_or_default();
            self.window.saturating_sub(oldest).as_secs().max(1)
        })
    }

    /// Records a failure; returns how many the source has in the window now.
    fn note(&self, ip: std::net::IpAddr) -> usize {
        let Ok(mut seen) = self.seen.lock() else { return 0 };
        // Bounded memory under a flood from many addresses: forget the quiet ones.
        if seen.len() > 100_000 {
            let window = self.window;
            seen.retain(|_, q| q.back().is_some_and(|t| t.elapsed() < window));
        }
        let q = seen.entry(ip).or_default();
        q.push_back(std::time::Instant::now());
        while q.len() > self.limit + 1 {
            q.pop_front();
        }
        q.len()
    }
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").field("issuing", &self.keys.issuing).finish_non_exhaustive()
    }
}

pub(crate) fn audit(
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
        let current = issuers::LoadedIssuer::load(
            keys.generation,
            &keys.issuing_der,
            keys.issuing.clone(),
            None,
        )?;
        let retired = keys
            .retired
            .iter()
            .map(|r| issuers::LoadedIssuer::load(r.generation, &r.der, r.signer.clone(), r.revoked))
            .collect::<Result<Vec<_>>>()?;
        let mut roots =
            vec![roots::LoadedRoot::load(keys.root_generation, &keys.root_der, keys.root.clone())?];
        for r in &keys.retired_roots {
            roots.push(roots::LoadedRoot::load(r.generation, &r.der, r.signer.clone())?);
        }
        Ok(Authority {
            store,
            clock,
            keys,
            current,
            retired,
            roots,
            publication,
            crl_cache: Mutex::new(HashMap::new()),
            metrics: Default::default(),
            failures: FailureLimiter {
                limit: AUTH_FAILURES_PER_MINUTE,
                window: std::time::Duration::from_secs(60),
                seen: Mutex::new(HashMap::new()),
            },
            admission: None,
        })
    }

    /// Paces issuance (enrolment and renewal) to `limits`; `None` for no limit.
    pub fn with_admission(mut self, limits: Option<AdmissionLimits>) -> Self {
        self.admission = limits.map(Pacer::new);
        self
    }

    /// The issuance pacer's counters, when issuance is paced.
    /// The request counters behind `/metrics`.
    pub fn metrics(&self) -> &crate::metrics::CaMetrics {
        &self.metrics
    }

    /// When this process last made the issuing CA's CRL.
    pub fn crl_made_at(&self) -> Option<OffsetDateTime> {
        self.crl_cache
            .lock()
            .ok()?
            .get(&CrlScope::Issuing(self.current.generation))
            .map(|c| c.this_update)
    }

    pub fn admission_stats(&self) -> Option<AdmissionStats> {
        self.admission.as_ref().map(Pacer::stats)
    }

    /// Waits for an issuance slot, or refuses with `503 busy` and `Retry-After`. Called
    /// once a request has passed every check, just before signing; answers the time to
    /// sign and record the issuance with (the instant it was let through).
    async fn admit_issuance(&self) -> Result<OffsetDateTime> {
        match &self.admission {
            Some(p) => p.admit(|| self.now()).await,
            None => Ok(self.now()),
        }
    }

    /// Sets how many failed authentications a source address may make in a minute.
    pub fn with_auth_failure_limit(mut self, per_minute: usize) -> Self {
        self.failures.limit = per_minute.max(1);
        self
    }

    /// Refuses a source that failed to authenticate too often (429 with `Retry-After`).
    fn check_source(&self, meta: &RequestMeta) -> Result<()> {
        match FailureLimiter::source(meta).and_then(|ip| self.failures.blocked(ip)) {
            Some(retry_after_secs) => Err(CaError::RateLimited { retry_after_secs }),
            None => Ok(()),
        }
    }

    /// Counts and audits a failed authentication (the reason, never the secret). Past the
    /// limit, one more event says the source is being refused.
    async fn note_auth_failure(&self, meta: &RequestMeta, actor: &str, e: &CaError) {
        let failed_auth = matches!(
            e.code(),
            ProblemCode::TokenInvalid
                | ProblemCode::IdentityMismatch
                | ProblemCode::TokenUsed
                | ProblemCode::TokenExpired
                | ProblemCode::TokenRevoked
                | ProblemCode::ClaimExhausted
                | ProblemCode::ClaimExpired
                | ProblemCode::AlreadyProvisioned
                | ProblemCode::CertificateUnknown
                | ProblemCode::Unauthorized
        );
        if !failed_auth {
            return;
        }
        let count = FailureLimiter::source(meta).map(|ip| self.failures.note(ip)).unwrap_or(0);
        let mut events = vec![("auth_failed", format!("code={} reason={e}", e.code()))];
        if count == self.failures.limit {
            tracing::warn!(
                remote = meta.remote.as_deref().unwrap_or("-"),
                "failed authentications over the limit; refusing the address for a minute"
            );
            events.push((
                "auth_rate_limited",
                format!(
                    "{count} failed authentications in a minute; the address is refused (429) until the oldest is a minute old"
                ),
            ));
        }
        for (action, detail) in events {
            let ev = audit(self.now(), actor.to_owned(), action, actor, detail, meta);
            if let Err(err) = self.store.audit(ev).await {
                tracing::warn!(error = %err, "could not audit a failed authentication");
            }
        }
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
    /// The root CA certificate (DER).
    pub fn root_certificate(&self) -> &[u8] {
        &self.keys.root_der
    }

    /// The issuing CA certificate (DER).
    pub fn issuing_certificate(&self) -> &[u8] {
        &self.keys.issuing_der
    }

    /// Whether the store answers (`/healthz`).
    pub async fn ready(&self) -> Result<()> {
        self.store.revocation_generation().await.map(|_| ())
    }

    /// The group of an enrolment token presented with its identity (checked, not used):
    /// what `/csrattrs` and `/v1/policy` answer a device that has no certificate yet. Each
    /// refusal carries its code.
    pub async fn group_of_token(&self, identity: &str, token: &TokenSecret) -> Result<String> {
        if lanyard_proto::claim::is_claim(token.expose()) {
            return self.group_of_claim(identity, token).await;
        }
        match self.store.token(&token.hash()).await? {
            Some(t) if t.identity != identity => Err(CaError::refused(
                ProblemCode::IdentityMismatch,
                format!("this token is bound to another identity, not {identity:?}"),
            )),
            Some(t) if t.used.is_some() => Err(CaError::refused(
                ProblemCode::TokenUsed,
                format!("enrolment token for {identity:?} was already used; create a new token"),
            )),
            Some(t) if t.revoked_at.is_some() => Err(CaError::refused(
                ProblemCode::TokenRevoked,
                format!("enrolment token for {identity:?} was revoked; create a new one"),
            )),
            Some(t) if self.now() >= t.expires_at => Err(CaError::refused(
                ProblemCode::TokenExpired,
                format!(
                    "enrolment token for {identity:?} expired at {}; create a new one",
                    t.expires_at
                ),
            )),
            Some(t) => Ok(t.group),
            None => Err(CaError::refused(ProblemCode::TokenInvalid, "unknown enrolment token")),
        }
    }

    /// The current issuing CA, the root, and cross-certificates to earlier roots (DER):
    /// what `/cacerts` serves.
    pub fn chain(&self) -> Vec<Vec<u8>> {
        self.chain_from(&self.current)
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
        let left = self.current.not_after - self.now();
        if time::Duration::try_from(policy.lifetime()).is_ok_and(|l| l > left) {
            return Err(CaError::BadRequest(format!(
                "a certificate lifetime of {}s would outlive the issuing CA (it expires at {}, \
                 {} days from now); choose a shorter lifetime or rotate the issuing CA \
                 (`lanyard-ca ca rotate-issuing`)",
                policy.lifetime().as_secs(),
                self.current.not_after,
                left.whole_days()
            )));
        }
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

    /// Tokens by identity, group, or those that can still enrol (`unused`: neither used nor
    /// revoked, and unexpired), oldest first.
    pub async fn tokens(&self, filter: TokenFilter) -> Result<Vec<TokenRecord>> {
        let unused_only = filter.unused_only;
        let now = self.now();
        let mut v = self.store.tokens(filter).await?;
        if unused_only {
            v.retain(|t| t.expires_at > now);
        }
        Ok(v)
    }

    /// Revokes an unused token, audited; a used one is left alone (its certificate is what
    /// to revoke).
    pub async fn revoke_token(&self, tok: &TokenRecord, actor: &str) -> Result<TokenRevokeOutcome> {
        let now = self.now();
        // The audit trail names the token by a hash prefix only.
        let ev = audit(
            now,
            actor.to_owned(),
            "token.revoke",
            &tok.identity,
            format!(
                "group={} token_sha256_prefix={}",
                tok.group,
                &tok.hash[..tok.hash.len().min(12)]
            ),
            &RequestMeta::default(),
        );
        self.store.revoke_token(&tok.hash, now, ev).await
    }

    /// Refuses a group with no policy: a mistyped group would silently give devices the
    /// default policy.
    async fn check_group_known(&self, group: &str) -> Result<()> {
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
        Ok(())
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
        self.check_group_known(group).await?;
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
            revoked_at: None,
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
        self.check_source(meta)?;
        let r = self.enroll_checked(identity, token, csr_der, meta).await;
        if let Err(e) = &r {
            self.note_auth_failure(meta, &format!("token:{identity}"), e).await;
        }
        r
    }

    async fn enroll_checked(
        &self,
        identity: &str,
        token: &TokenSecret,
        csr_der: &[u8],
        meta: &RequestMeta,
    ) -> Result<Issued> {
        // Authorize.
        profile::validate_identity(identity)?;
        if lanyard_proto::claim::is_claim(token.expose()) {
            return self.enroll_with_claim(identity, token, csr_der, meta).await;
        }
        // The CSR first (no store needed), so that the token, the key's earlier use and the
        // group's policy come in one store call; its error still comes after the token's.
        let csr = csr::check(csr_der);
        let spki = csr.as_ref().ok().map(|c| c.spki_sha256.as_str());
        let reads = self.store.enrolment_reads(&token.hash(), identity, spki).await?;
        let Some(tok) = reads.token else {
            return Err(CaError::refused(
                ProblemCode::TokenInvalid,
                format!("unknown enrolment token for identity {identity:?}"),
            ));
        };
        if tok.identity != identity {
            return Err(CaError::refused(
                ProblemCode::IdentityMismatch,
                format!("this token is bound to another identity, not {identity:?}"),
            ));
        }
        let csr = csr?;
        if let Some(used) = &tok.used {
            return self.replay(&tok, used.spki_sha256 == csr.spki_sha256, &used.serial).await;
        }
        if let Some(at) = tok.revoked_at {
            return Err(token_revoked(identity, at));
        }
        let now = self.now();
        if now >= tok.expires_at {
            return Err(CaError::refused(
                ProblemCode::TokenExpired,
                format!(
                    "enrolment token for {identity:?} expired at {}; create a new one",
                    tok.expires_at
                ),
            ));
        }
        if let Some(serial) = &reads.key_serial {
            // A concurrent request with this token and key may have just won.
            return self.replay_if_used(&tok.hash, &csr).await?.ok_or_else(|| key_reused(serial));
        }
        // Policy and profile, wait for an issuance slot, sign, record.
        let policy = reads.policy.unwrap_or_default();
        profile_allows(identity, &tok.group, &csr, &policy)?;
        let now = self.admit_issuance().await?;
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
        match self
            .store
            .record_issuance(record.clone(), Consumes::Token(tok.hash.clone()), ev)
            .await?
        {
            RecordOutcome::Recorded => Ok(Issued { record, chain: self.chain(), replayed: false }),
            RecordOutcome::KeyReused { serial } => {
                self.replay_if_used(&tok.hash, &csr).await?.ok_or_else(|| key_reused(&serial))
            }
            RecordOutcome::ParentAlreadyRenewed { .. }
            | RecordOutcome::ClaimUnavailable
            | RecordOutcome::AlreadyProvisioned => {
                Err(CaError::Storage("a token enrolment has no parent and no claim".into()))
            }
            RecordOutcome::TokenAlreadyUsed => {
                // A concurrent request with this token won; answer as a retry would be.
                let tok = self
                    .store
                    .token(&tok.hash)
                    .await?
                    .ok_or_else(|| CaError::Storage("token vanished".into()))?;
                if let (None, Some(at)) = (&tok.used, tok.revoked_at) {
                    // Revoked between the check and the record.
                    return Err(token_revoked(identity, at));
                }
                let used = tok
                    .used
                    .clone()
                    .ok_or_else(|| CaError::Storage("token race without use".into()))?;
                self.replay(&tok, used.spki_sha256 == csr.spki_sha256, &used.serial).await
            }
        }
    }

    async fn replay(&self, tok: &TokenRecord, same_key: bool, serial: &str) -> Result<Issued> {
        // (A used token cannot be revoked: the use wins, and a retry is answered.)
        if !same_key {
            return Err(CaError::refused(
                ProblemCode::TokenUsed,
                format!(
                    "enrolment token for {:?} was already used; create a new token",
                    tok.identity
                ),
            ));
        }
        let record = self.store.cert(serial).await?.ok_or_else(|| {
            CaError::Storage(format!("certificate {serial} of a used token is missing"))
        })?;
        if let Some(r) = &record.revocation {
            return Err(CaError::refused(
                ProblemCode::Revoked,
                format!(
                    "the certificate issued for this token ({serial}) was revoked ({}) at {}",
                    r.reason.name(),
                    r.at
                ),
            ));
        }
        Ok(Issued { chain: self.chain_of(&record.der), record, replayed: true })
    }

    /// The answer to a retry, if the token has been used meanwhile (by any key).
    async fn replay_if_used(&self, hash: &str, csr: &CheckedCsr) -> Result<Option<Issued>> {
        let Some(t) = self.store.token(hash).await? else { return Ok(None) };
        let Some(used) = &t.used else { return Ok(None) };
        self.replay(&t, used.spki_sha256 == csr.spki_sha256, &used.serial).await.map(Some)
    }

    /// EST `simplereenroll`: renewal authenticated by the current certificate, which must
    /// be one this CA issued, unrevoked, and unexpired (or within the group's grace).
    ///
    /// A certificate renews once. A second renewal of the same certificate with the key of
    /// the first (a device retrying after a lost answer or a crash) gets the same
    /// certificate again; with any other key it is refused as `renewal-conflict` and
    /// audited: two holders of one key are the sign of a cloned device.
    pub async fn reenroll(
        &self,
        client_cert_der: &[u8],
        csr_der: &[u8],
        meta: &RequestMeta,
    ) -> Result<Issued> {
        self.check_source(meta)?;
        let r = self.reenroll_checked(client_cert_der, csr_der, meta).await;
        if let Err(e) = &r {
            self.note_auth_failure(meta, "device:unknown", e).await;
        }
        r
    }

    async fn reenroll_checked(
        &self,
        client_cert_der: &[u8],
        csr_der: &[u8],
        meta: &RequestMeta,
    ) -> Result<Issued> {
        // The CSR first (no store needed), so that the certificate, the key's earlier use
        // and the group's policy come in one store call; its error still comes after the
        // certificate's.
        let serial = self.device_cert_serial(client_cert_der)?;
        let csr = csr::check(csr_der);
        let spki = csr.as_ref().ok().map(|c| c.spki_sha256.as_str());
        let reads = self.store.renewal_reads(&serial, spki).await?;
        let current = same_record(reads.cert, client_cert_der)?;
        if let Some(r) = &current.revocation
            && r.reason != Reason::Superseded
        {
            return Err(revoked_error(&current.serial, r));
        }
        let csr = csr?;
        if let Some(child) = &current.superseded_by {
            return self.renewal_retry(&current, child, &csr, meta).await;
        }
        if let Some(r) = &current.revocation {
            return Err(revoked_error(&current.serial, r));
        }
        let now = self.now();
        let policy = reads.policy.unwrap_or_default();
        let grace =
            time::Duration::try_from(policy.expired_grace()).unwrap_or(time::Duration::ZERO);
        if now > current.not_after + grace {
            return Err(CaError::refused(
                ProblemCode::ExpiredBeyondGrace,
                format!(
                    "certificate {} expired at {}{}; enrol again with a new token",
                    current.serial,
                    current.not_after,
                    if grace.is_zero() {
                        String::new()
                    } else {
                        format!(", beyond the group's grace of {grace}")
                    }
                ),
            ));
        }
        if csr.spki_sha256 == current.spki_sha256 {
            return Err(CaError::Refused {
                code: ProblemCode::KeyReused,
                detail:
                    "renewal CSR reuses the current key; Lanyard renews with a new key every time"
                        .into(),
                serial: Some(current.serial.clone()),
            });
        }
        if let Some(serial) = &reads.key_serial {
            return Err(key_reused(serial));
        }
        profile_allows(&current.identity, &current.group, &csr, &policy)?;
        let now = self.admit_issuance().await?;
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
                "from={} key={} key_sha256={} not_after={}",
                current.serial, csr.key_algorithm, csr.spki_sha256, record.not_after
            ),
            meta,
        );
        match self.store.record_issuance(record.clone(), Consumes::Nothing, ev).await? {
            RecordOutcome::Recorded => {}
            RecordOutcome::ParentAlreadyRenewed { child } => {
                // A concurrent renewal of the same certificate won.
                return self.renewal_retry(&current, &child, &csr, meta).await;
            }
            RecordOutcome::KeyReused { serial } => return Err(key_reused(&serial)),
            RecordOutcome::TokenAlreadyUsed
            | RecordOutcome::ClaimUnavailable
            | RecordOutcome::AlreadyProvisioned => {
                return Err(CaError::Storage("a renewal consumed no token and no claim".into()));
            }
        }
        // Renewing with a certificate is using it: its own parent retires now.
        self.retire_parent(&current, meta).await;
        Ok(Issued { record, chain: self.chain(), replayed: false })
    }

    /// A renewal of a certificate that was already renewed, as `child_serial`.
    async fn renewal_retry(
        &self,
        parent: &CertRecord,
        child_serial: &str,
        csr: &CheckedCsr,
        meta: &RequestMeta,
    ) -> Result<Issued> {
        let child = self.store.cert(child_serial).await?.ok_or_else(|| {
            CaError::Storage(format!(
                "certificate {child_serial}, renewed from {}, is missing",
                parent.serial
            ))
        })?;
        if child.spki_sha256 == csr.spki_sha256 {
            if let Some(r) = &child.revocation {
                return Err(revoked_error(&child.serial, r));
            }
            return Ok(Issued { chain: self.chain_of(&child.der), record: child, replayed: true });
        }
        let now = self.now();
        let ev = audit(
            now,
            format!("device:{}", parent.identity),
            "renewal_conflict",
            &parent.serial,
            format!(
                "identity={} parent={} child={} child_key_sha256={} presented_key_sha256={}",
                parent.identity, parent.serial, child.serial, child.spki_sha256, csr.spki_sha256
            ),
            meta,
        );
        tracing::warn!(identity = %parent.identity, parent = %parent.serial, child = %child.serial, remote = meta.remote.as_deref().unwrap_or("-"), "renewal conflict: a second key renewed one certificate (a copied device key?)");
        self.store.audit(ev).await?;
        Err(CaError::Refused {
            code: ProblemCode::RenewalConflict,
            detail: format!(
                "certificate {} was already renewed, as {}, with another key; a copy of this device's key may be in use elsewhere. The fleet manager sees it in `lanyard-ca certs list --conflicts`",
                parent.serial, child.serial
            ),
            serial: Some(child.serial),
        })
    }

    /// Revokes the parent of a certificate that was just used (a check-in or a renewal),
    /// as `superseded`, so that one certificate per device stays live. Best effort: the
    /// sweep ([`Self::retire_superseded`]) catches what this misses.
    pub async fn retire_parent(&self, rec: &CertRecord, meta: &RequestMeta) {
        let Some(parent) = &rec.parent_serial else { return };
        match self.store.cert(parent).await {
            Ok(Some(p)) if p.revocation.is_none() => {
                if let Err(e) =
                    self.revoke_one(parent, Reason::Superseded, "ca:lineage", meta).await
                {
                    tracing::warn!(serial = %parent, error = %e, "could not retire a superseded certificate");
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(serial = %parent, error = %e, "could not read a parent certificate")
            }
        }
    }

    /// Revokes, as `superseded`, every renewed certificate whose child was issued longer
    /// ago than its group's `superseded_grace`. Returns the serials revoked.
    pub async fn retire_superseded(&self) -> Result<Vec<String>> {
        let now = self.now();
        let candidates = self
            .store
            .certs(CertFilter { superseded_unrevoked_before: Some(now), ..Default::default() })
            .await?;
        let mut policies: HashMap<String, GroupPolicy> = HashMap::new();
        let mut retired = Vec::new();
        for c in candidates {
            let policy = match policies.get(&c.group) {
                Some(p) => p.clone(),
                None => {
                    let p = self.policy(&c.group).await?;
                    policies.insert(c.group.clone(), p.clone());
                    p
                }
            };
            let grace =
                time::Duration::try_from(policy.superseded_grace()).unwrap_or(time::Duration::HOUR);
            if c.superseded_at.is_some_and(|at| at + grace <= now)
                && self
                    .revoke_one(
                        &c.serial,
                        Reason::Superseded,
                        "ca:lineage",
                        &RequestMeta::default(),
                    )
                    .await?
                    == RevokeOutcome::Revoked
            {
                retired.push(c.serial);
            }
        }
        Ok(retired)
    }

    /// Finds the record of a certificate a device presents: issued by this CA (signature
    /// checked here too, since behind a TLS-terminating front the certificate arrives in a
    /// header), known to the store, byte-identical, not revoked. Expiry is left to callers.
    pub async fn authenticate_device(&self, cert_der: &[u8]) -> Result<CertRecord> {
        let rec = self.known_device_cert(cert_der).await?;
        if let Some(r) = &rec.revocation {
            return Err(revoked_error(&rec.serial, r));
        }
        Ok(rec)
    }

    /// The record of a certificate this CA issued (revoked or not), by any of its issuing
    /// CAs that is not revoked.
    pub async fn known_device_cert(&self, cert_der: &[u8]) -> Result<CertRecord> {
        let serial = self.device_cert_serial(cert_der)?;
        same_record(self.store.cert(&serial).await?, cert_der)
    }

    /// The serial of a certificate one of this CA's issuing CAs (not revoked) signed; the
    /// store still has to know it ([`same_record`]).
    fn device_cert_serial(&self, cert_der: &[u8]) -> Result<String> {
        let (_, cert) = X509Certificate::from_der(cert_der).map_err(|_| {
            CaError::refused(ProblemCode::CertificateUnknown, "client certificate does not parse")
        })?;
        self.issuer_of(&cert)?;
        Ok(lanyard_proto::serial::to_hex(cert.raw_serial()))
    }

    fn sign_device(
        &self,
        identity: &str,
        group: &str,
        csr: &CheckedCsr,
        policy: &GroupPolicy,
        now: OffsetDateTime,
        parent_serial: Option<String>,
    ) -> Result<CertRecord> {
        profile_allows(identity, group, csr, policy)?;
        let serial = profile::random_serial();
        let mut params =
            profile::device(identity, &serial, now, policy.lifetime(), &self.publication.urls)?;
        // No certificate outlives its issuer (a relying party would refuse the chain before
        // the leaf expires): near the issuing CA's end, lifetimes shorten to reach it.
        params.not_after = params.not_after.min(self.current.not_after);
        let spki = rcgen::SubjectPublicKeyInfo::from_der(&csr.spki_der)
            .map_err(|e| CaError::BadRequest(format!("CSR public key: {e}")))?;
        let cert = params.signed_by(&spki, &self.current.issuer)?;
        Ok(CertRecord {
            serial: lanyard_proto::serial::to_hex(&serial),
            identity: identity.to_owned(),
            group: group.to_owned(),
            not_before: params.not_before,
            not_after: params.not_after,
            issued_at: now,
            spki_sha256: csr.spki_sha256.clone(),
            der: cert.der().to_vec(),
            parent_serial,
            superseded_by: None,
            superseded_at: None,
            revocation: None,
        })
    }

    /// Revokes a serial and, for `keyCompromise` (or with `lineage`), every certificate
    /// renewed from it, transitively: a copied key must not buy a branch of identities that
    /// outlives revocation. Idempotent: revoking twice reports the first revocation.
    /// Returns the outcome for `serial`, then one `(serial, outcome)` per descendant.
    pub async fn revoke(
        &self,
        serial: &str,
        reason: Reason,
        lineage: bool,
        actor: &str,
        meta: &RequestMeta,
    ) -> Result<(RevokeOutcome, Vec<(String, RevokeOutcome)>)> {
        let bytes = lanyard_proto::serial::parse_hex(serial)
            .map_err(|e| CaError::BadRequest(e.to_string()))?;
        let serial = lanyard_proto::serial::to_hex(&bytes);
        let out = self.revoke_one(&serial, reason, actor, meta).await?;
        let mut descendants = Vec::new();
        if (lineage || reason == Reason::KeyCompromise) && out != RevokeOutcome::NotFound {
            for d in self.descendants(&serial).await? {
                let o = self.revoke_one(&d, reason, actor, meta).await?;
                descendants.push((d, o));
            }
        }
        Ok((out, descendants))
    }

    /// Revokes every live (unrevoked, unexpired) certificate of an identity.
    pub async fn revoke_identity(
        &self,
        identity: &str,
        reason: Reason,
        actor: &str,
        meta: &RequestMeta,
    ) -> Result<Vec<String>> {
        let now = self.now();
        let mut revoked = Vec::new();
        for c in self.store.certs(CertFilter::identity(identity)).await? {
            if c.revocation.is_none()
                && c.not_after > now
                && self.revoke_one(&c.serial, reason, actor, meta).await? == RevokeOutcome::Revoked
            {
                revoked.push(c.serial);
            }
        }
        Ok(revoked)
    }

    /// Every certificate renewed from `serial`, directly or not, oldest first.
    pub async fn descendants(&self, serial: &str) -> Result<Vec<String>> {
        let Some(root) = self.store.cert(serial).await? else { return Ok(Vec::new()) };
        let family = self.store.certs(CertFilter::identity(&root.identity)).await?;
        let mut out = Vec::new();
        let mut frontier = vec![root.serial];
        while let Some(parent) = frontier.pop() {
            for c in family.iter().filter(|c| c.parent_serial.as_deref() == Some(parent.as_str())) {
                if !out.contains(&c.serial) {
                    out.push(c.serial.clone());
                    frontier.push(c.serial.clone());
                }
            }
        }
        Ok(out)
    }

    async fn revoke_one(
        &self,
        serial: &str,
        reason: Reason,
        actor: &str,
        meta: &RequestMeta,
    ) -> Result<RevokeOutcome> {
        let now = self.now();
        let ev = audit(
            now,
            actor.to_owned(),
            "revoke",
            serial,
            format!("reason={}", reason.name()),
            meta,
        );
        let out = self.store.revoke(serial, Revocation { at: now, reason }, ev).await?;
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
        let certs = self.store.certs(CertFilter::revoked()).await?;
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

    /// Renewal conflicts from the audit trail, newest first.
    pub async fn conflicts(&self) -> Result<Vec<AuditEvent>> {
        Ok(self
            .store
            .audit_log(100_000)
            .await?
            .into_iter()
            .filter(|e| e.action == "renewal_conflict")
            .collect())
    }

    /// The current issuing CA's CRL (DER), regenerated when a revocation happened or half
    /// its validity has passed.
    pub async fn issuing_crl(&self) -> Result<Vec<u8>> {
        self.crl(CrlScope::Issuing(self.current.generation)).await
    }

    /// The current root's CRL (DER; it lists no issuing CA unless one is revoked). Needs
    /// the root key.
    pub async fn root_crl(&self) -> Result<Vec<u8>> {
        self.crl(CrlScope::Root(self.roots[0].generation)).await
    }

    pub(crate) async fn crl(&self, scope: CrlScope) -> Result<Vec<u8>> {
        let now = self.now();
        let generation = self.store.revocation_generation().await?;
        let half = self.publication.crl_validity / 2;
        if let Ok(cache) = self.crl_cache.lock()
            && let Some(c) = cache.get(&scope)
            && (matches!(scope, CrlScope::Root(_)) || c.generation == generation)
            && now - c.this_update < half
        {
            return Ok(c.der.clone());
        }
        let (issuer, revoked) = match scope {
            CrlScope::Root(generation) => {
                let root = self
                    .roots
                    .iter()
                    .find(|r| r.generation == generation)
                    .ok_or_else(|| CaError::NotFound(format!("no root {generation}")))?;
                let issuer = root.issuer.as_ref().ok_or_else(|| {
                    CaError::NotFound(
                        "the root key is offline: the root CRL is published from files".into(),
                    )
                })?;
                let entries = self
                    .revoked_issuers(root)
                    .into_iter()
                    .map(|(serial, r)| rcgen::RevokedCertParams {
                        serial_number: rcgen::SerialNumber::from_slice(&serial),
                        revocation_time: r.at,
                        reason_code: (r.reason != Reason::Unspecified).then(|| r.reason.rcgen()),
                        invalidity_date: None,
                    })
                    .collect();
                (issuer, entries)
            }
            CrlScope::Issuing(scope) => {
                let issuer = self
                    .all_issuers()
                    .find(|i| i.generation == scope)
                    .ok_or_else(|| CaError::NotFound(format!("no issuing CA {scope}")))?;
                let entries = self
                    .store
                    .certs(CertFilter::revoked())
                    .await?
                    .iter()
                    // Entries may leave the CRL once the certificate has expired (RFC 5280 3.3).
                    .filter(|c| c.not_after > now && self.signed_by_generation(&c.der, scope))
                    .filter_map(|c| {
                        let r = c.revocation.as_ref()?;
                        Some(rcgen::RevokedCertParams {
                            serial_number: rcgen::SerialNumber::from_slice(
                                &lanyard_proto::serial::parse_hex(&c.serial).ok()?,
                            ),
                            revocation_time: r.at,
                            // "unspecified" SHOULD be absent (RFC 5280 5.3.1).
                            reason_code: (r.reason != Reason::Unspecified)
                                .then(|| r.reason.rcgen()),
                            invalidity_date: None,
                        })
                    })
                    .collect();
                (&issuer.issuer, entries)
            }
        };
        let number = self.store.next_crl_number(&scope.name()).await?;
        let params = rcgen::CertificateRevocationListParams {
            this_update: now - profile::BACKDATE,
            next_update: now + self.publication.crl_validity,
            crl_number: rcgen::SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: revoked,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let der = params.signed_by(issuer)?.der().to_vec();
        if let Ok(mut cache) = self.crl_cache.lock() {
            cache.insert(scope, CachedCrl { generation, this_update: now, der: der.clone() });
        }
        Ok(der)
    }
}

/// What the profile refuses in a CSR, whatever its signature: a key algorithm the group's
/// policy does not allow, a subject naming someone else. Checked before an issuance slot is
/// taken (and again when signing).
fn profile_allows(
    identity: &str,
    group: &str,
    csr: &CheckedCsr,
    policy: &GroupPolicy,
) -> Result<()> {
    if !policy.key_algorithms.contains(&csr.key_algorithm) {
        return Err(CaError::refused(
            ProblemCode::KeyNotAllowed,
            format!(
                "key algorithm {} is not allowed by the policy of group {group:?}; allowed: {}",
                csr.key_algorithm,
                policy.key_algorithms.iter().map(|a| a.name()).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    if let Some(cn) = &csr.common_name
        && cn != identity
    {
        return Err(CaError::refused(
            ProblemCode::CsrInvalid,
            format!(
                "CSR subject CN {cn:?} does not match the identity {identity:?}; leave the subject empty or use the identity"
            ),
        ));
    }
    Ok(())
}

fn token_revoked(identity: &str, at: OffsetDateTime) -> CaError {
    CaError::refused(
        ProblemCode::TokenRevoked,
        format!("enrolment token for {identity:?} was revoked at {at}; create a new one"),
    )
}

/// The store's record of a presented certificate: it must exist and hold these exact bytes
/// (a certificate with a known serial but other contents is not this CA's).
fn same_record(rec: Option<CertRecord>, cert_der: &[u8]) -> Result<CertRecord> {
    match rec {
        Some(rec) if rec.der == cert_der => Ok(rec),
        _ => Err(CaError::refused(
            ProblemCode::CertificateUnknown,
            "client certificate was not issued by this CA",
        )),
    }
}

fn key_reused(serial: &str) -> CaError {
    CaError::Refused {
        code: ProblemCode::KeyReused,
        detail: format!(
            "this public key was certified before for this identity (certificate {serial}); generate a new key"
        ),
        serial: Some(serial.to_owned()),
    }
}

fn revoked_error(serial: &str, r: &Revocation) -> CaError {
    CaError::refused(
        ProblemCode::Revoked,
        format!(
            "certificate {serial} was revoked ({}) at {}; enrol again with a new token",
            r.reason.name(),
            r.at
        ),
    )
}
