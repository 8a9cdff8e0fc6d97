//! The join between the identity side (enrol, renew, check in: [`crate::agent`]) and what
//! uses the identity (the proxy): a watch of the credential in use and of whether the CA
//! revoked it, and a "recheck now" channel back. The proxy holds a [`CredentialView`] and
//! nothing else of the agent: it cannot enrol, renew or write state, and every renewal
//! (by this process, or another one the daemon saw in the store) reaches it through the
//! watch without a restart.

use crate::clock::Clock;
use crate::error::{AgentError, Result};
use crate::est::ClientAuth;
use crate::hw::{HardwareBackend, HardwareKey, HwError};
use crate::verify::{self, CertInfo};
use lanyard_keystore::Credential;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use zeroize::Zeroizing;

/// The credential in use, ready for TLS.
pub struct Loaded {
    pub info: CertInfo,
    pub chain: Vec<CertificateDer<'static>>,
    pub certified: Arc<rustls::sign::CertifiedKey>,
    key: KeyInUse,
}

/// The key, as the credential's user needs it.
enum KeyInUse {
    /// PKCS#8, for `export`.
    Software(Zeroizing<Vec<u8>>),
    /// A key in a TPM or token, and the last time it failed to sign a handshake.
    Hardware {
        key: Arc<dyn HardwareKey>,
        protection: &'static str,
        failure: Arc<Mutex<Option<(Instant, HwError)>>>,
    },
}

/// How long after a hardware key failed to sign the proxy answers 503 without trying
/// again (each try costs a TLS handshake toward the upstream).
const HARDWARE_RETRY: Duration = Duration::from_secs(2);

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded").field("info", &self.info).field("key", &"...").finish()
    }
}

impl Loaded {
    pub(crate) fn from_credential(
        c: &Credential,
        hw: Option<&Arc<dyn HardwareBackend>>,
    ) -> Result<Loaded> {
        let leaf = c
            .chain_der
            .first()
            .ok_or_else(|| AgentError::Usage("stored credential has no certificate".into()))?;
        let info = verify::info(leaf)?;
        let chain: Vec<CertificateDer<'static>> =
            c.chain_der.iter().map(|d| CertificateDer::from(d.clone())).collect();
        let (signing, key): (Arc<dyn rustls::sign::SigningKey>, KeyInUse) = match hw {
            None => {
                let k = crate::est::provider()
                    .key_provider
                    .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                        c.key.to_vec(),
                    )))
                    .map_err(|e| AgentError::Crypto(format!("stored key is not usable: {e}")))?;
                (k, KeyInUse::Software(c.key.clone()))
            }
            Some(hw) => {
                let key = hw.open(&c.key).map_err(AgentError::Hardware)?;
                let tls = crate::hw::signer::TlsKey::new(key.clone());
                let failure = tls.failure_cell();
                (Arc::new(tls), KeyInUse::Hardware { key, protection: hw.protection(), failure })
            }
        };
        let certified = rustls::sign::CertifiedKey::new(chain.clone(), signing);
        certified.keys_match().map_err(|_| {
            AgentError::Crypto(
                "the stored key does not match the stored certificate; enrol again".into(),
            )
        })?;
        Ok(Loaded { info, chain, certified: Arc::new(certified), key })
    }

    pub(crate) fn client_auth(&self) -> ClientAuth {
        ClientAuth::Certified(self.certified.clone())
    }

    /// PEM of the chain (for `export --cert`).
    pub fn chain_pem(&self) -> String {
        crate::trust::to_pem(&self.chain)
    }

    /// PEM of the key (for `export --key`); a hardware key never leaves its TPM or token.
    pub fn key_pem(&self) -> std::result::Result<Zeroizing<String>, String> {
        match &self.key {
            KeyInUse::Software(pkcs8) => {
                Ok(Zeroizing::new(pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.to_vec()))))
            }
            KeyInUse::Hardware { protection, .. } => Err(format!(
                "the device key is in a hardware store ({protection}): it cannot be exported. Programs that need the client certificate can go through `lanyard proxy`, or use the key in place through the TPM's or token's own OpenSSL provider or PKCS#11 module"
            )),
        }
    }

    /// The key's protection, for `lanyard status`.
    pub fn protection(&self) -> &'static str {
        match &self.key {
            KeyInUse::Software(_) => "software key, exportable",
            KeyInUse::Hardware { protection, .. } => protection,
        }
    }

    /// Whether the key can sign now (a hardware key is asked; a software key always can).
    pub fn check_key(&self) -> std::result::Result<(), HwError> {
        match &self.key {
            KeyInUse::Software(_) => Ok(()),
            KeyInUse::Hardware { key, .. } => key.check(),
        }
    }

    /// Why the hardware key could not sign the last handshake, if its last try failed
    /// within `within` (or at all, when `within` is `None`).
    pub fn key_failure(&self, within: Option<Duration>) -> Option<HwError> {
        let KeyInUse::Hardware { failure, .. } = &self.key else { return None };
        let f = failure.lock().unwrap_or_else(|p| p.into_inner());
        f.as_ref().filter(|(at, _)| within.is_none_or(|w| at.elapsed() < w)).map(|(_, e)| e.clone())
    }
}

/// The sentence the proxy answers 503 with when the hardware key cannot sign.
pub fn key_unusable(e: &HwError) -> String {
    format!("the device key cannot sign: {e}; the proxy answers 503 until the TPM or token is back")
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
        // A hardware key that just failed: answer now rather than fail another handshake.
        if let Some(e) = cur.key_failure(Some(HARDWARE_RETRY)) {
            return Err(key_unusable(&e));
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
