//! CA rotation, whatever holds the keys: the options and limits of `lanyard-ca ca
//! rotate-issuing` and `ca rotate-root`, the certificates a rotation makes ([`mint`]) and
//! what follows its commit ([`finish`]: the audit trail and, in an emergency, revoking the
//! old issuing CA's certificates). The embedded CA ([`crate::ca_dir`]) writes key files and
//! commits with one `ca.toml` rename; the serverless CA (`aws`) makes KMS keys and commits
//! with one conditional write of its settings item. Both go through here, so both make the
//! same certificates.

use crate::authority::{Authority, IssuerRevocation};
use crate::error::{CaError, Result};
use crate::profile::{self, PublicationUrls};
use crate::revocation::Reason;
use crate::signer::SharedSigner;
use crate::store::AuditEvent;
use lanyard_proto::KeyAlgorithm;
use serde::Serialize;
use time::OffsetDateTime;

/// Options of `lanyard-ca ca rotate-issuing` (and the issuing CA of `ca rotate-root`).
#[derive(Clone, Debug)]
pub struct RotateOptions {
    pub key: KeyAlgorithm,
    pub validity: time::Duration,
    /// Revoke the old issuing CA in the root's CRL at once (an emergency).
    pub revoke_old: Option<Reason>,
}

/// The new root of `lanyard-ca ca rotate-root`.
#[derive(Clone, Debug)]
pub struct NewRoot {
    pub key: KeyAlgorithm,
    pub validity: time::Duration,
}

/// What a rotation did.
#[derive(Clone, Debug, Serialize)]
pub struct Rotation {
    pub old_generation: u32,
    pub new_generation: u32,
    pub subject: String,
    pub sha256: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// The validity asked for was cut to the root's.
    pub shortened_to_root: bool,
    pub old_revoked: Option<IssuerRevocation>,
    /// With `old_revoked`: the old CA's live certificates, revoked (`cACompromise`).
    pub leaves_revoked: usize,
    /// `rotate-root`: the new root's generation, subject and SHA-256.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_root: Option<(u32, String, String)>,
}

/// Refuses lifetimes no CA should have, before any key is made.
pub fn check(opts: &RotateOptions, new_root: Option<&NewRoot>) -> Result<()> {
    if opts.validity < time::Duration::days(1) {
        return Err(CaError::BadRequest(
            "--validity must be at least 1 day (an issuing CA lives years)".into(),
        ));
    }
    if new_root.is_some_and(|r| r.validity < time::Duration::days(365)) {
        return Err(CaError::BadRequest(
            "--root-validity must be at least 365 days (a root outlives its issuing CAs)".into(),
        ));
    }
    Ok(())
}

/// A certificate's `notAfter`.
pub fn not_after(der: &[u8], what: &str) -> Result<OffsetDateTime> {
    x509_parser::parse_x509_certificate(der)
        .ok()
        .and_then(|(_, x)| {
            OffsetDateTime::from_unix_timestamp(x.validity().not_after.timestamp()).ok()
        })
        .ok_or_else(|| CaError::Config(format!("{what} certificate: unreadable expiry")))
}

/// What a rotation is made from: the current root (certificate and key) and the keys made
/// for it, which the backend created and keeps.
pub struct Plan<'a> {
    pub name: &'a str,
    pub public_url: &'a str,
    pub now: OffsetDateTime,
    pub root_der: &'a [u8],
    pub root_generation: u32,
    pub root: SharedSigner,
    /// `rotate-root`: the new root's key and validity.
    pub new_root: Option<(SharedSigner, time::Duration)>,
    /// The new issuing CA's key, generation and validity.
    pub issuing: SharedSigner,
    pub issuing_generation: u32,
    pub validity: time::Duration,
}

/// The certificates of a new root: its self-signed certificate and the cross-certificates
/// both ways with the root before it.
pub struct MintedRoot {
    pub generation: u32,
    pub der: Vec<u8>,
    /// The new root's name and key, signed by the old root.
    pub forward: Vec<u8>,
    /// The old root's name and key, signed by the new root.
    pub backward: Vec<u8>,
}

/// The certificates of one rotation.
pub struct Minted {
    pub root: Option<MintedRoot>,
    pub issuing_der: Vec<u8>,
    pub not_after: OffsetDateTime,
    pub shortened_to_root: bool,
}

/// Makes the certificates of a rotation: with a new root, the root and the
/// cross-certificates (each ending with the earlier of the two roots), then the new issuing
/// CA under the current root or the new one, cut to its root's expiry.
pub fn mint(p: Plan<'_>) -> Result<Minted> {
    let urls = PublicationUrls::from_base(p.public_url);
    let old_root = rcgen::Issuer::from_ca_cert_der(&p.root_der.to_vec().into(), p.root.clone())?;
    let (parent, parent_der, parent_gen, root) = match p.new_root {
        None => (old_root, p.root_der.to_vec(), p.root_generation, None),
        Some((key, validity)) => {
            let g = p.root_generation + 1;
            let params = profile::root(p.name, g, p.now, validity);
            let cert = params.self_signed(&key)?;
            let until = params.not_after.min(not_after(p.root_der, "root")?);
            let forward =
                profile::cross(p.name, g, p.now, until, &urls.clone().for_root(p.root_generation))?
                    .signed_by(&key, &old_root)?;
            let new_issuer = rcgen::Issuer::from_ca_cert_der(&cert.der().clone(), key)?;
            let backward =
                profile::cross(p.name, p.root_generation, p.now, until, &urls.clone().for_root(g))?
                    .signed_by(&p.root, &new_issuer)?;
            let minted = MintedRoot {
                generation: g,
                der: cert.der().to_vec(),
                forward: forward.der().to_vec(),
                backward: backward.der().to_vec(),
            };
            (new_issuer, cert.der().to_vec(), g, Some(minted))
        }
    };
    let root_not_after = not_after(&parent_der, "root")?;
    let mut params = profile::issuing(
        p.name,
        p.issuing_generation,
        p.now,
        p.validity,
        &urls.for_root(parent_gen),
    )?;
    // An issuing CA never outlives its root.
    let shortened_to_root = params.not_after > root_not_after;
    params.not_after = params.not_after.min(root_not_after);
    let cert = params.signed_by(&p.issuing, &parent)?;
    Ok(Minted {
        root,
        issuing_der: cert.der().to_vec(),
        not_after: params.not_after,
        shortened_to_root,
    })
}

/// What a committed rotation still does, on the authority that loaded it: the audit trail
/// (`ca.rotate-root`, `ca.rotate-issuing`) and, when the old issuing CA was revoked, the
/// revocation of each of its live certificates (`cACompromise`), so that the edge's deny
/// list refuses them before its trust store changes. Each step can be run again.
pub async fn finish(
    auth: &Authority,
    mut rotation: Rotation,
    key: KeyAlgorithm,
    old_root_generation: u32,
    actor: &str,
) -> Result<Rotation> {
    let now = auth.now();
    if let Some((g, subject, sha256)) = &rotation.new_root {
        auth.store()
            .audit(AuditEvent {
                at: now,
                actor: actor.to_owned(),
                action: "ca.rotate-root".into(),
                subject: subject.clone(),
                detail: format!("root generation {old_root_generation} -> {g}, sha256={sha256}"),
                remote: None,
            })
            .await?;
    }
    auth.store()
        .audit(AuditEvent {
            at: now,
            actor: actor.to_owned(),
            action: "ca.rotate-issuing".into(),
            subject: rotation.subject.clone(),
            detail: format!(
                "generation {} -> {}, key={key}, sha256={}{}",
                rotation.old_generation,
                rotation.new_generation,
                rotation.sha256,
                rotation
                    .old_revoked
                    .map(|r| format!(", old revoked: {}", r.reason.name()))
                    .unwrap_or_default()
            ),
            remote: None,
        })
        .await?;
    if rotation.old_revoked.is_some() {
        rotation.leaves_revoked =
            auth.revoke_issued_by(rotation.old_generation, Reason::CaCompromise, actor).await?;
    }
    Ok(rotation)
}
