//! Batch claims: create, list, revoke, and enrol through one (`simpleenroll` with the claim
//! as the HTTP Basic password and the device's own identity as the user).
//!
//! A claim enrols an identity its template makes, each identity once (a device that lost
//! the answer and retries with the same key gets the same certificate), and no more
//! identities than its uses. Every enrolment through a claim is audited with the claim's ID.

use super::{Authority, Issued, RequestMeta, audit, key_reused, profile_allows, revoked_error};
use crate::csr::{self, CheckedCsr};
use crate::error::{CaError, Result};
use crate::profile;
use crate::store::{ClaimRecord, Consumes, Provisioned, RecordOutcome};
use crate::tokens::TokenSecret;
use lanyard_proto::ProblemCode;
use std::time::Duration;

/// The most uses one claim may have.
pub const MAX_USES: u64 = 1_000_000;
/// The longest a claim may live.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 86_400);

impl Authority {
    /// Creates a batch claim for `group`: up to `max_uses` devices, each under an identity
    /// `identity_template` makes, until `ttl` from now.
    pub async fn create_claim(
        &self,
        group: &str,
        identity_template: &str,
        max_uses: u64,
        ttl: Duration,
        actor: &str,
    ) -> Result<(TokenSecret, ClaimRecord)> {
        profile::validate_group(group)?;
        self.check_group_known(group).await?;
        lanyard_proto::claim::check_template(identity_template).map_err(CaError::BadRequest)?;
        if max_uses == 0 || max_uses > MAX_USES {
            return Err(CaError::BadRequest(format!("--uses must be between 1 and {MAX_USES}")));
        }
        if ttl.is_zero() || ttl > MAX_TTL {
            return Err(CaError::BadRequest("claim expiry must be between 1s and 365d".into()));
        }
        let now = self.now();
        let secret = TokenSecret::generate_claim();
        let hash = secret.hash();
        let rec = ClaimRecord {
            id: hash[..16].to_owned(),
            hash,
            group: group.to_owned(),
            identity_template: identity_template.to_owned(),
            max_uses,
            uses: 0,
            created_at: now,
            expires_at: now + time::Duration::try_from(ttl).unwrap_or(time::Duration::DAY),
            revoked_at: None,
        };
        let ev = audit(
            now,
            actor.to_owned(),
            "claim.create",
            &rec.id,
            format!(
                "group={group} template={identity_template} uses={max_uses} expires={}",
                lanyard_proto::timefmt::rfc3339(rec.expires_at)
            ),
            &RequestMeta::default(),
        );
        self.store.put_claim(rec.clone(), ev).await?;
        Ok((secret, rec))
    }

    pub async fn claims(&self) -> Result<Vec<ClaimRecord>> {
        self.store.claims().await
    }

    /// The claim with this ID (the first 16 hex digits of its hash), or a 404 naming it.
    pub async fn claim_by_id(&self, id: &str) -> Result<ClaimRecord> {
        let id = id.trim().to_ascii_lowercase();
        self.store.claims().await?.into_iter().find(|c| c.id == id).ok_or_else(|| {
            CaError::NotFound(format!(
                "no claim {id:?} (`lanyard-ca provisioning claim list` shows their IDs)"
            ))
        })
    }

    /// Revokes a claim: it enrols no device from now on (devices it enrolled keep their
    /// certificates). False if it was revoked already.
    pub async fn revoke_claim(&self, claim: &ClaimRecord, actor: &str) -> Result<bool> {
        let now = self.now();
        let ev = audit(
            now,
            actor.to_owned(),
            "claim.revoke",
            &claim.id,
            format!("group={} uses={}/{}", claim.group, claim.uses, claim.max_uses),
            &RequestMeta::default(),
        );
        self.store.revoke_claim(&claim.hash, now, ev).await
    }

    /// Lets `identity` enrol through a claim, or with its factory certificate, again (a
    /// replaced board keeping its serial); false if it never did. Its certificates are left
    /// alone; a blocked factory certificate stays blocked.
    pub async fn reset_provisioning(&self, identity: &str, actor: &str) -> Result<bool> {
        profile::validate_identity(identity)?;
        let ev = audit(
            self.now(),
            actor.to_owned(),
            "provisioning.reset",
            identity,
            String::new(),
            &RequestMeta::default(),
        );
        Ok(self.store.reset_provisioned(identity, ev).await? > 0)
    }

    /// The group a claim would enrol `identity` in (checked, not used), for `/csrattrs`.
    pub(super) async fn group_of_claim(
        &self,
        identity: &str,
        secret: &TokenSecret,
    ) -> Result<String> {
        let claim = self.usable_claim(identity, secret).await?;
        if self.store.provisioned(&Provisioned::identity_key(identity)).await?.is_some() {
            return Err(already_provisioned(identity));
        }
        Ok(claim.group)
    }

    /// The claim behind `secret`, if it may enrol `identity` now.
    async fn usable_claim(&self, identity: &str, secret: &TokenSecret) -> Result<ClaimRecord> {
        profile::validate_identity(identity)?;
        let Some(claim) = self.store.claim(&secret.hash()).await? else {
            return Err(CaError::refused(ProblemCode::TokenInvalid, "unknown batch claim"));
        };
        if lanyard_proto::claim::device_id_of(&claim.identity_template, identity).is_none() {
            return Err(CaError::refused(
                ProblemCode::IdentityMismatch,
                format!(
                    "batch claim {} enrols identities of the form {:?}, not {identity:?}",
                    claim.id, claim.identity_template
                ),
            ));
        }
        check_claim_usable(&claim, self.now())?;
        Ok(claim)
    }

    /// `simpleenroll` through a batch claim.
    pub(super) async fn enroll_with_claim(
        &self,
        identity: &str,
        secret: &TokenSecret,
        csr_der: &[u8],
        meta: &RequestMeta,
    ) -> Result<Issued> {
        let csr = csr::check(csr_der)?;
        // A retry (same key) is answered before the claim's state is looked at: the claim may
        // be used up by now, by this device among others.
        if let Some(used) = self.store.provisioned(&Provisioned::identity_key(identity)).await? {
            let claim = self.store.claim(&secret.hash()).await?;
            if claim.is_some_and(|c| used.source == format!("claim:{}", c.id)) {
                return self
                    .provisioned_replay(&used, &csr, || already_provisioned(identity))
                    .await;
            }
        }
        let claim = self.usable_claim(identity, secret).await?;
        if let Some(serial) = self.store.cert_by_key(identity, &csr.spki_sha256).await? {
            return Err(key_reused(&serial));
        }
        let policy = self.policy(&claim.group).await?;
        profile_allows(identity, &claim.group, &csr, &policy)?;
        let now = self.admit_issuance().await?;
        let record = self.sign_device(identity, &claim.group, &csr, &policy, now, None)?;
        let ev = audit(
            now,
            format!("claim:{}", claim.id),
            "issue",
            &record.serial,
            format!(
                "identity={identity} group={} key={} not_after={} claim={} use={}/{}",
                claim.group,
                csr.key_algorithm,
                record.not_after,
                claim.id,
                claim.uses + 1,
                claim.max_uses
            ),
            meta,
        );
        match self
            .store
            .record_issuance(record.clone(), Consumes::Claim(claim.hash.clone()), ev)
            .await?
        {
            RecordOutcome::Recorded => Ok(Issued { record, chain: self.chain(), replayed: false }),
            RecordOutcome::KeyReused { serial } => Err(key_reused(&serial)),
            RecordOutcome::AlreadyProvisioned => {
                // A concurrent enrolment of this identity won (or it enrolled before).
                let used = self
                    .store
                    .provisioned(&Provisioned::identity_key(identity))
                    .await?
                    .ok_or_else(|| {
                        CaError::Storage(format!("the claim enrolment of {identity} vanished"))
                    })?;
                self.provisioned_replay(&used, &csr, || already_provisioned(identity)).await
            }
            RecordOutcome::ClaimUnavailable => {
                // Used up (or revoked) by others between the check and the record.
                let now_claim = self.store.claim(&claim.hash).await?.unwrap_or(claim);
                check_claim_usable(&now_claim, self.now())?;
                Err(exhausted(&now_claim))
            }
            RecordOutcome::TokenAlreadyUsed | RecordOutcome::ParentAlreadyRenewed { .. } => {
                Err(CaError::Storage("a claim enrolment consumed a token or a parent".into()))
            }
        }
    }

    /// The answer to a provisioning done before (through a claim, with a factory
    /// certificate): the same certificate for the same key, `refused` for another.
    pub(super) async fn provisioned_replay(
        &self,
        used: &Provisioned,
        csr: &CheckedCsr,
        refused: impl FnOnce() -> CaError,
    ) -> Result<Issued> {
        if used.serial.is_empty() || used.spki_sha256 != csr.spki_sha256 {
            return Err(refused());
        }
        let record = self.store.cert(&used.serial).await?.ok_or_else(|| {
            CaError::Storage(format!("certificate {} of a provisioning is missing", used.serial))
        })?;
        if let Some(r) = &record.revocation {
            return Err(revoked_error(&record.serial, r));
        }
        Ok(Issued { chain: self.chain_of(&record.der), record, replayed: true })
    }
}

fn check_claim_usable(claim: &ClaimRecord, now: time::OffsetDateTime) -> Result<()> {
    if claim.revoked_at.is_some() || claim.uses >= claim.max_uses {
        return Err(exhausted(claim));
    }
    if now >= claim.expires_at {
        return Err(CaError::refused(
            ProblemCode::ClaimExpired,
            format!(
                "batch claim {} expired at {}; the fleet manager makes a new one",
                claim.id,
                lanyard_proto::timefmt::rfc3339(claim.expires_at)
            ),
        ));
    }
    Ok(())
}

fn exhausted(claim: &ClaimRecord) -> CaError {
    let why = match claim.revoked_at {
        Some(at) => format!("was revoked at {}", lanyard_proto::timefmt::rfc3339(at)),
        None => format!("has enrolled all {} devices it was made for", claim.max_uses),
    };
    CaError::refused(
        ProblemCode::ClaimExhausted,
        format!("batch claim {} {why}; the fleet manager makes a new one", claim.id),
    )
}

fn already_provisioned(identity: &str) -> CaError {
    CaError::refused(
        ProblemCode::AlreadyProvisioned,
        format!(
            "{identity:?} was enrolled through a claim before, with another key; a claim enrols each identity once (`lanyard-ca provisioning reset {identity}` allows it again)"
        ),
    )
}
