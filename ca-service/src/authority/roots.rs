//! The roots of one CA: the current one, which signs issuing CAs, and earlier ones
//! (`lanyard-ca ca rotate-root`), which go on signing their CRLs while an issuing CA they
//! signed is still in use. A cross-certificate (the new root signed by the old one) links
//! them, so a device or edge that trusts either root verifies during the overlap.

use super::Authority;
use crate::error::{CaError, Result};
use crate::signer::SharedSigner;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

/// An earlier root, as the backend loads it.
pub struct RootKeys {
    pub generation: u32,
    pub der: Vec<u8>,
    /// `None` when its key is offline: its CRL is then published from files.
    pub signer: Option<SharedSigner>,
}

pub(super) struct LoadedRoot {
    pub generation: u32,
    pub der: Vec<u8>,
    pub subject: Vec<u8>,
    pub not_after: OffsetDateTime,
    pub issuer: Option<rcgen::Issuer<'static, SharedSigner>>,
    pub signer: Option<SharedSigner>,
}

impl LoadedRoot {
    pub(super) fn load(generation: u32, der: &[u8], signer: Option<SharedSigner>) -> Result<Self> {
        let bad = |e: String| CaError::Config(format!("root CA {generation} certificate: {e}"));
        let (_, x) = X509Certificate::from_der(der).map_err(|e| bad(e.to_string()))?;
        let not_after = OffsetDateTime::from_unix_timestamp(x.validity().not_after.timestamp())
            .map_err(|e| bad(e.to_string()))?;
        let issuer = match &signer {
            Some(s) => Some(
                rcgen::Issuer::from_ca_cert_der(&der.to_vec().into(), s.clone())
                    .map_err(|e| bad(e.to_string()))?,
            ),
            None => None,
        };
        Ok(LoadedRoot {
            generation,
            der: der.to_vec(),
            subject: x.subject().as_raw().to_vec(),
            not_after,
            issuer,
            signer,
        })
    }
}

impl Authority {
    /// The generations of the roots whose CRLs are published: the current one, and each
    /// earlier one that signed an issuing CA still published.
    pub async fn published_root_generations(&self) -> Result<Vec<u32>> {
        let issuing = self.published_generations().await?;
        Ok(self
            .roots
            .iter()
            .filter(|r| {
                r.generation == self.roots[0].generation
                    || self
                        .all_issuers()
                        .any(|i| i.issuer_name == r.subject && issuing.contains(&i.generation))
            })
            .map(|r| r.generation)
            .collect())
    }

    /// The CRL of root `generation` (DER). Needs its key.
    pub async fn root_crl_of(&self, generation: u32) -> Result<Vec<u8>> {
        self.crl(super::CrlScope::Root(generation)).await
    }

    /// The roots the trust bundle carries (DER): the current one, and each earlier one that
    /// signed an issuing CA the bundle carries.
    pub(super) fn bundle_roots(&self, issuers_in_bundle: &[Vec<u8>]) -> Vec<Vec<u8>> {
        self.roots
            .iter()
            .filter(|r| {
                r.generation == self.roots[0].generation
                    || self
                        .all_issuers()
                        .any(|i| i.issuer_name == r.subject && issuers_in_bundle.contains(&i.der))
            })
            .map(|r| r.der.clone())
            .collect()
    }

    /// Every root for the OCSP responder: (certificate DER, signer where its key is
    /// online), current first.
    pub(crate) fn root_keys(&self) -> Vec<(&[u8], Option<&SharedSigner>)> {
        self.roots.iter().map(|r| (r.der.as_slice(), r.signer.as_ref())).collect()
    }

    /// The certificate of root `generation` (DER).
    pub fn root_certificate_of(&self, generation: u32) -> Result<Vec<u8>> {
        self.roots
            .iter()
            .find(|r| r.generation == generation)
            .map(|r| r.der.clone())
            .ok_or_else(|| CaError::NotFound(format!("no root {generation}")))
    }

    /// What follows the CA's own server certificate: the current issuing CA and the
    /// cross-certificates from the current root to earlier ones, so that a device that
    /// pinned an earlier root still connects after a root rotation.
    pub fn server_chain_tail(&self) -> Vec<Vec<u8>> {
        let mut tail = vec![self.keys.issuing_der.clone()];
        tail.extend(self.forward_cross());
        tail
    }

    /// Every root's role, generation and expiry (for `ca status` and `/metrics`).
    pub(super) fn root_expiries(&self) -> Vec<(u32, &[u8], OffsetDateTime, bool)> {
        self.roots
            .iter()
            .map(|r| {
                (
                    r.generation,
                    r.der.as_slice(),
                    r.not_after,
                    r.generation == self.roots[0].generation,
                )
            })
            .collect()
    }

    /// The cross-certificates that lead from the current root to earlier ones (the current
    /// root's subject and key, signed by an earlier root).
    pub(super) fn forward_cross(&self) -> Vec<Vec<u8>> {
        let current = &self.roots[0].subject;
        self.keys
            .cross
            .iter()
            .filter(|der| {
                X509Certificate::from_der(der).is_ok_and(|(_, x)| {
                    x.subject().as_raw() == current.as_slice()
                        && x.issuer().as_raw() != current.as_slice()
                })
            })
            .cloned()
            .collect()
    }

    /// Whether `serial` is one of this CA's cross-certificates (never revoked by it).
    pub(crate) fn cross_serial(&self, serial: &[u8]) -> bool {
        self.keys
            .cross
            .iter()
            .any(|der| X509Certificate::from_der(der).is_ok_and(|(_, x)| x.raw_serial() == serial))
    }
}
