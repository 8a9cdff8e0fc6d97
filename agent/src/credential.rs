//! The join between the identity side (enrol, renew, check in: [`crate::agent`]) and what
//! uses the identity (the proxy): a watch of the credential in use and of whether the CA
//! revoked it, and a "recheck now" channel back. The proxy holds a [`CredentialView`] and
//! nothing else of the agent: it cannot enrol, renew or write state, and every renewal
//! (by this process, or another one the daemon saw in the store) reaches it through the
//! watch without a restart.

use crate::clock::Clock;
use crate::error::{AgentError, Result};
use crate::est::ClientAuth;
use crate::verify::{self, CertInfo};
use lanyard_keystore::Credential;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use zeroize::Zeroizing;

/// The credential in use, ready for TLS.
pub struct Loaded {
    pub info: CertInfo,
    pub chain: Vec<CertificateDer<'static>>,
    pub certified: Arc<rustls::sign::CertifiedKey>,
    key_pkcs8: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded").field("info", &self.info).field("key", &"...").finish()
    }
}

impl Loaded {
    pub(crate) fn from_credential(c: &Credential) -> Result<Loaded> {
        let leaf = c
            .chain_der
            .first()
            .ok_or_else(|| AgentError::Usage("stored credential has no certificate".into()))?;
        let info = verify::info(leaf)?;
        let chain: Vec<CertificateDer<'static>> =
            c.chain_der.iter().map(|d| CertificateDer::from(d.clone())).collect();
        let key = crate::est::provider()
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(c.key.to_vec())))
            .map_err(|e| AgentError::Crypto(format!("stored key is not usable: {e}")))?;
        let certified = rustls::sign::CertifiedKey::new(chain.clone(), key);
        certified.keys_match().map_err(|_| {
            AgentError::Crypto(
                "the stored key does not match the stored certificate; enrol again".into(),
            )
        })?;
        Ok(Loaded { info, chain, certified: Arc::new(certified), key_pkcs8: c.key.clone() })
    }

    pub(crate) fn client_auth(&self) -> ClientAuth {
        ClientAuth::Certificate(
            self.chain.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.to_vec())),
        )
    }

    /// PEM of the chain, and of the key (for `export`).
    pub fn export_pem(&self) -> (String, Zeroizing<String>) {
        (
            crate::trust::to_pem(&self.chain),
            Zeroizing::new(pem::encode(&pem::Pem::new("PRIVATE KEY", self.key_pkcs8.to_vec()))),
        )
    }
}

/// What the identity side publishes: the credential in use and, when the CA said so, the
/// serial it revoked with the sentence to show.
#[derive(Clone, Debug, Default)]
pub struct Published {
    pub current: Option<Arc<Loaded>>,
    pub revoked: Option<(String, String)>,
}

impl Published {
    /// The credential when it can be used now: enrolled, unexpired, not revoked; else the
    /// sentence that says why not and what to do.
    pub fn usable(&self, now: time::OffsetDateTime) -> std::result::Result<Arc<Loaded>, String> {
        let Some(cur) = &self.current else {
            return Err("this device is not enrolled: run `lanyard enrol`".into());
        };
        if now > cur.info.not_after {
            return Err(format!(
                "the device certificate {} expired at {}; the agent renews it when the CA is reachable, or enrol again",
                cur.info.serial, cur.info.not_after
            ));
        }
        if let Some((serial, reason)) = &self.revoked
            && *serial == cur.info.serial
        {
            // The agent records a whole sentence (the CA's words, or its own).
            return Err(reason.clone());
        }
        Ok(cur.clone())
    }
}

/// The read side, for the proxy: the current credential, whether it is usable, and a way to
/// ask the identity side to check with the CA now (an upstream refused the certificate).
#[derive(Clone)]
pub struct CredentialView {
    published: watch::Receiver<Published>,
    clock: Arc<dyn Clock>,
    recheck: mpsc::Sender<()>,
}

impl std::fmt::Debug for CredentialView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.published.borrow();
        f.debug_struct("CredentialView")
            .field("serial", &p.current.as_ref().map(|c| c.info.serial.clone()))
            .finish_non_exhaustive()
    }
}

impl CredentialView {
    pub fn new(
        published: watch::Receiver<Published>,
        clock: Arc<dyn Clock>,
        recheck: mpsc::Sender<()>,
    ) -> CredentialView {
        CredentialView { published, clock, recheck }
    }

    /// The credential in use, whatever its state.
    pub fn current(&self) -> Option<Arc<Loaded>> {
        self.published.borrow().current.clone()
    }

    /// The credential if it can be used now, else why not (see [`Published::usable`]).
    pub fn usable(&self) -> std::result::Result<Arc<Loaded>, String> {
        self.published.borrow().usable(self.clock.now())
    }

    /// Asks the identity side to check in with the CA soon. Never waits: a request that
    /// is already pending covers this one.
    pub fn request_recheck(&self) {
        let _ = self.recheck.try_send(());
    }
}

/// A "recheck now" channel: the sender goes into [`CredentialView`]s, the receiver to the
/// task that checks in ([`crate::daemon::Rechecks`]).
pub fn recheck_channel() -> (mpsc::Sender<()>, mpsc::Receiver<()>) {
    mpsc::channel(1)
}
