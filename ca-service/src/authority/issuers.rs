//! The issuing CAs of one root: the current one, which signs every new certificate, and
//! the retired ones (`lanyard-ca ca rotate-issuing`), which go on answering for the
//! certificates they signed (authentication at renewal, CRL, OCSP, a place in the trust
//! bundle) until the last of them expires, unless the retired CA was revoked.

use super::Authority;
use crate::error::{CaError, Result};
use crate::revocation::Reason;
use crate::signer::SharedSigner;
use crate::store::CertFilter;
use lanyard_proto::ProblemCode;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

/// An issuing CA that no longer issues, as the backend loads it.
pub struct RetiredIssuer {
    /// 1 for the CA made at `init`, then one more at each rotation.
    pub generation: u32,
    pub der: Vec<u8>,
    pub signer: SharedSigner,
    /// Set by `rotate-issuing --revoke-old`: the root's CRL lists it, its certificates no
    /// longer authenticate and it leaves the bundle at once.
    pub revoked: Option<IssuerRevocation>,
}

/// The revocation of an issuing CA by the root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuerRevocation {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub reason: Reason,
}

/// What the authority keeps of each issuing CA: what it needs to check a certificate's
/// signature, sign a CRL and tell which certificates are its.
pub(super) struct LoadedIssuer {
    pub generation: u32,
    pub der: Vec<u8>,
    /// The raw DER of its subject name: a certificate it signed names it as issuer.
    pub subject: Vec<u8>,
    /// The raw DER of its issuer's name: which root signed it.
    pub issuer_name: Vec<u8>,
    pub serial: Vec<u8>,
    pub not_after: OffsetDateTime,
    pub issuer: rcgen::Issuer<'static, SharedSigner>,
    pub signer: SharedSigner,
    pub revoked: Option<IssuerRevocation>,
}

impl LoadedIssuer {
    pub(super) fn load(
        generation: u32,
        der: &[u8],
        signer: SharedSigner,
        revoked: Option<IssuerRevocation>,
    ) -> Result<Self> {
        let bad = |e: String| CaError::Config(format!("issuing CA {generation} certificate: {e}"));
        let (_, x) = X509Certificate::from_der(der).map_err(|e| bad(e.to_string()))?;
        let not_after = OffsetDateTime::from_unix_timestamp(x.validity().not_after.timestamp())
            .map_err(|e| bad(e.to_string()))?;
        let subject = x.subject().as_raw().to_vec();
        let issuer_name = x.issuer().as_raw().to_vec();
        let serial = x.raw_serial().to_vec();
        let issuer = rcgen::Issuer::from_ca_cert_der(&der.to_vec().into(), signer.clone())
            .map_err(|e| bad(e.to_string()))?;
        Ok(LoadedIssuer {
            generation,
            der: der.to_vec(),
            subject,
            issuer_name,
            serial,
            not_after,
            issuer,
            signer,
            revoked,
        })
    }

    /// Whether `cert` names this CA as its issuer (names differ between generations).
    pub(super) fn named_by(&self, cert: &X509Certificate) -> bool {
        cert.issuer().as_raw() == self.subject.as_slice()
    }
}

/// Where one CA certificate stands, for `lanyard-ca ca status` and `/metrics`.
#[derive(Clone, Debug, Serialize)]
pub struct CaCertStatus {
    /// root | current | retired | revoked
    pub role: &'static str,
    /// Issuing CAs only: 1, 2, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
    pub subject: String,
    pub serial: String,
    pub sha256: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    pub days_left: i64,
    /// Unexpired, unrevoked certificates it signed (issuing CAs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live_leaves: Option<u64>,
    /// When its last unexpired certificate expires (issuing CAs with any).
    #[serde(skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    pub last_leaf_expires: Option<OffsetDateTime>,
    /// Whether the trust bundle carries it now.
    pub in_bundle: bool,
    /// When it leaves the bundle: a retired CA when its last certificate expires.
    #[serde(skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    pub leaves_bundle: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked: Option<IssuerRevocation>,
}

impl Authority {
    /// Every issuing CA, current first.
    pub(super) fn all_issuers(&self) -> impl Iterator<Item = &LoadedIssuer> {
        std::iter::once(&self.current).chain(self.retired.iter())
    }

    /// The issuing CA that signed `cert`: the one it names, with the signature checked.
    /// A revoked issuing CA's certificates are refused with a message that says what to do.
    pub(super) fn issuer_of(&self, cert: &X509Certificate) -> Result<&LoadedIssuer> {
        let unknown = || {
            CaError::refused(
                ProblemCode::CertificateUnknown,
                "client certificate was not issued by this CA",
            )
        };
        let issuer = self.all_issuers().find(|i| i.named_by(cert)).ok_or_else(unknown)?;
        let (_, ca) = X509Certificate::from_der(&issuer.der)
            .map_err(|e| CaError::Config(format!("issuing CA certificate: {e}")))?;
        cert.verify_signature(Some(ca.public_key())).map_err(|_| unknown())?;
        if let Some(r) = issuer.revoked {
            return Err(CaError::refused(
                ProblemCode::CertificateUnknown,
                format!(
                    "client certificate was issued by issuing CA {}, which was revoked ({}) at {}; \
                     enrol again with a token, claim or factory certificate",
                    issuer.generation,
                    r.reason.name(),
                    r.at
                ),
            ));
        }
        Ok(issuer)
    }

    /// The chain that follows `leaf` (its issuing CA, then the root): a certificate issued
    /// before a rotation, answered again, comes with the CA that signed it.
    pub fn chain_of(&self, leaf: &[u8]) -> Vec<Vec<u8>> {
        let issuer = X509Certificate::from_der(leaf)
            .ok()
            .and_then(|(_, x)| self.all_issuers().find(|i| i.named_by(&x)))
            .unwrap_or(&self.current);
        self.chain_from(issuer)
    }

    /// An issuing CA, its root, and after a root rotation what RFC 7030 (4.1.3) calls the
    /// rollover certificates: the cross-certificates and the earlier roots, so that a device
    /// that pins an earlier root (a factory image made before the rotation) finds it and a
    /// path to it.
    pub(super) fn chain_from(&self, issuer: &LoadedIssuer) -> Vec<Vec<u8>> {
        let mut chain = vec![issuer.der.clone()];
        match self.roots.iter().find(|r| r.subject == issuer.issuer_name) {
            Some(r) => chain.push(r.der.clone()),
            None => chain.push(self.keys.root_der.clone()),
        }
        for der in self.keys.cross.iter().chain(self.roots.iter().map(|r| &r.der)) {
            if !chain.contains(der) {
                chain.push(der.clone());
            }
        }
        chain
    }

    /// The certificate of issuing CA `generation` (DER), current or retired.
    pub fn issuer_certificate(&self, generation: u32) -> Result<Vec<u8>> {
        self.all_issuers()
            .find(|i| i.generation == generation)
            .map(|i| i.der.clone())
            .ok_or_else(|| CaError::NotFound(format!("no issuing CA {generation}")))
    }

    /// Revokes every live certificate issuing CA `generation` signed, with `reason` (after
    /// its own revocation: `cACompromise`), so that edges that check serials rather than
    /// the chain's CRLs (CloudFront's KeyValueStore deny list) refuse them too. Returns how
    /// many it revoked.
    pub async fn revoke_issued_by(
        &self,
        generation: u32,
        reason: Reason,
        actor: &str,
    ) -> Result<usize> {
        let now = self.now();
        let mut n = 0;
        for rec in self.store.certs(CertFilter::default()).await? {
            if rec.revocation.is_some()
                || rec.not_after <= now
                || !self.signed_by_generation(&rec.der, generation)
            {
                continue;
            }
            self.revoke(&rec.serial, reason, false, actor, &super::RequestMeta::default()).await?;
            n += 1;
        }
        Ok(n)
    }

    /// Every CA certificate's role, generation and expiry, without reading the store (for
    /// `/metrics`): the root, then each issuing CA, current first.
    pub fn ca_expiries(&self) -> Vec<(&'static str, Option<u32>, OffsetDateTime)> {
        self.root_expiries()
            .into_iter()
            .map(|(g, _, t, current)| (if current { "root" } else { "retired root" }, Some(g), t))
            .chain(self.all_issuers().map(|i| {
                let role = match (i.generation == self.current.generation, i.revoked) {
                    (true, _) => "current",
                    (false, Some(_)) => "revoked",
                    (false, None) => "retired",
                };
                (role, Some(i.generation), i.not_after)
            }))
            .collect()
    }

    /// The CRL of issuing CA `generation` (DER): its revoked, unexpired certificates.
    pub async fn issuer_crl(&self, generation: u32) -> Result<Vec<u8>> {
        self.crl(super::CrlScope::Issuing(generation)).await
    }

    /// The generations whose CRLs are published: the current one, and every retired one
    /// with an unexpired certificate (revoked or not: a relying party may still see it).
    pub async fn published_generations(&self) -> Result<Vec<u32>> {
        let mut out = vec![self.current.generation];
        if self.retired.is_empty() {
            return Ok(out);
        }
        let now = self.now();
        for s in self.leaf_counts(now).await? {
            if s.generation != self.current.generation && s.unexpired > 0 {
                out.push(s.generation);
            }
        }
        Ok(out)
    }

    /// What the trust bundle carries (DER): the roots in use, and the issuing CAs: the
    /// current one, then each retired one that is not revoked and still has a live
    /// (unexpired, unrevoked) certificate.
    pub async fn bundle_certificates(&self) -> Result<(Vec<Vec<u8>>, Vec<Vec<u8>>)> {
        let issuers = self.bundle_issuers().await?;
        Ok((self.bundle_roots(&issuers), issuers))
    }

    async fn bundle_issuers(&self) -> Result<Vec<Vec<u8>>> {
        Ok(self
            .ca_status()
            .await?
            .into_iter()
            .filter(|s| !s.role.contains("root") && s.in_bundle)
            .filter_map(|s| {
                self.all_issuers()
                    .find(|i| Some(i.generation) == s.generation)
                    .map(|i| i.der.clone())
            })
            .collect())
    }

    /// The root, then each issuing CA (current first), with what `ca status` shows.
    pub async fn ca_status(&self) -> Result<Vec<CaCertStatus>> {
        let now = self.now();
        let counts =
            if self.retired.is_empty() { Vec::new() } else { self.leaf_counts(now).await? };
        // Expiries were read once, when the CA certificates were loaded.
        let fact = |der: &[u8]| -> Result<(String, String)> {
            let (_, x) = X509Certificate::from_der(der)
                .map_err(|e| CaError::Config(format!("CA certificate: {e}")))?;
            Ok((x.subject().to_string(), lanyard_proto::serial::to_hex(x.raw_serial())))
        };
        let days = |t: OffsetDateTime| (t - now).whole_days();
        let mut out = Vec::new();
        let bundle_issuers: Vec<Vec<u8>> = self
            .all_issuers()
            .filter(|i| {
                let c = counts.iter().find(|c| c.generation == i.generation);
                i.generation == self.current.generation
                    || (i.revoked.is_none() && c.is_some_and(|c| c.live > 0))
            })
            .map(|i| i.der.clone())
            .collect();
        let bundle_roots = self.bundle_roots(&bundle_issuers);
        for (generation, der, not_after, current) in self.root_expiries() {
            let (subject, serial) = fact(der)?;
            out.push(CaCertStatus {
                role: if current { "root" } else { "retired root" },
                generation: (self.roots.len() > 1).then_some(generation),
                subject,
                serial,
                sha256: crate::ca_dir::fingerprint(der),
                not_after,
                days_left: days(not_after),
                live_leaves: None,
                last_leaf_expires: None,
                in_bundle: bundle_roots.iter().any(|d| d == der),
                leaves_bundle: None,
                revoked: None,
            });
        }
        for i in self.all_issuers() {
            let (subject, serial) = fact(&i.der)?;
            let not_after = i.not_after;
            let c = counts.iter().find(|c| c.generation == i.generation);
            let current = i.generation == self.current.generation;
            // With one issuing CA there is nothing to tell apart: the counts are skipped.
            let live = c.map(|c| c.live);
            let in_bundle = current || (i.revoked.is_none() && live.unwrap_or(0) > 0);
            out.push(CaCertStatus {
                role: match (current, i.revoked) {
                    (true, _) => "current",
                    (false, Some(_)) => "revoked",
                    (false, None) => "retired",
                },
                generation: Some(i.generation),
                subject,
                serial,
                sha256: crate::ca_dir::fingerprint(&i.der),
                not_after,
                days_left: days(not_after),
                live_leaves: live,
                last_leaf_expires: c.and_then(|c| c.last_expiry),
                in_bundle,
                leaves_bundle: (!current && in_bundle)
                    .then(|| c.and_then(|c| c.last_live_expiry))
                    .flatten(),
                revoked: i.revoked,
            });
        }
        Ok(out)
    }

    /// Counts every issuing CA's certificates (one pass over the store; only needed once a
    /// rotation has left more than one issuing CA).
    async fn leaf_counts(&self, now: OffsetDateTime) -> Result<Vec<LeafCount>> {
        let mut counts: Vec<LeafCount> = self
            .all_issuers()
            .map(|i| LeafCount {
                generation: i.generation,
                unexpired: 0,
                live: 0,
                last_expiry: None,
                last_live_expiry: None,
            })
            .collect();
        for rec in self.store.certs(CertFilter::default()).await? {
            if rec.not_after <= now {
                continue;
            }
            let Ok((_, x)) = X509Certificate::from_der(&rec.der) else { continue };
            let Some(i) = self.all_issuers().position(|i| i.named_by(&x)) else { continue };
            let c = &mut counts[i];
            c.unexpired += 1;
            c.last_expiry = c.last_expiry.max(Some(rec.not_after));
            if rec.revocation.is_none() {
                c.live += 1;
                c.last_live_expiry = c.last_live_expiry.max(Some(rec.not_after));
            }
        }
        Ok(counts)
    }

    /// Whether `rec` (a certificate's DER) was signed by issuing CA `generation`.
    pub(super) fn signed_by_generation(&self, der: &[u8], generation: u32) -> bool {
        if self.retired.is_empty() {
            return generation == self.current.generation;
        }
        let Some(i) = self.all_issuers().find(|i| i.generation == generation) else {
            return false;
        };
        X509Certificate::from_der(der).is_ok_and(|(_, x)| i.named_by(&x))
    }

    /// The issuing CA of `generation`, for the OCSP responder: its certificate (DER) and
    /// signer.
    pub(crate) fn issuer_keys(&self, generation: u32) -> Option<(&[u8], &SharedSigner)> {
        self.all_issuers()
            .find(|i| i.generation == generation)
            .map(|i| (i.der.as_slice(), &i.signer))
    }

    /// The issuing CAs the OCSP responder answers for: (generation, certificate DER).
    pub(crate) fn issuer_certificates(&self) -> Vec<(u32, &[u8])> {
        self.all_issuers().map(|i| (i.generation, i.der.as_slice())).collect()
    }

    /// Whether a serial is an issuing CA's, and its revocation by the root if any (OCSP
    /// answers about issuing CAs).
    pub(crate) fn issuing_ca_serial(&self, serial: &[u8]) -> Option<Option<IssuerRevocation>> {
        self.all_issuers().find(|i| i.serial == serial).map(|i| i.revoked)
    }

    /// The revoked issuing CAs `root` signed, for its CRL: (serial, revocation).
    pub(super) fn revoked_issuers(
        &self,
        root: &super::roots::LoadedRoot,
    ) -> Vec<(Vec<u8>, IssuerRevocation)> {
        self.retired
            .iter()
            .filter(|i| i.issuer_name == root.subject)
            .filter_map(|i| Some((i.serial.clone(), i.revoked?)))
            .collect()
    }

    /// When the current issuing CA expires: no certificate it signs outlives it.
    pub fn issuing_not_after(&self) -> OffsetDateTime {
        self.current.not_after
    }

    /// The current issuing CA's generation.
    pub fn issuing_generation(&self) -> u32 {
        self.current.generation
    }
}

struct LeafCount {
    generation: u32,
    unexpired: u64,
    live: u64,
    last_expiry: Option<OffsetDateTime>,
    last_live_expiry: Option<OffsetDateTime>,
}
