//! `lanyard enrol`: a first certificate for a token (bootstrap trust, staged key, retries).

use super::Agent;
use crate::error::{AgentError, Result};
use crate::est::{ClientAuth, EstClient, Trust};
use crate::state::{self, AgentState};
use crate::verify::{self, CertInfo};
use lanyard_keystore::Credential;
use lanyard_proto::timefmt::{Rfc3339Time, rfc3339};
use rustls::pki_types::CertificateDer;
use std::path::PathBuf;
use zeroize::Zeroizing;

/// Arguments of `lanyard enrol`.
#[derive(Default)]
pub struct EnrolArgs {
    /// `--ca`; `None` takes `[ca] url` from the config.
    pub ca_url: Option<String>,
    pub token: Zeroizing<String>,
    pub identity: Option<String>,
    pub ca_bundle: Option<PathBuf>,
    pub ca_fingerprint: Option<String>,
    pub force: bool,
    /// One request, no retries here: the caller backs off itself (the daemon's token-file
    /// enrolment). `lanyard enrol` retries a few times, honouring the CA's `Retry-After`.
    pub once: bool,
    /// Enrol with a factory certificate (IDevID) instead of a token: the CA names the
    /// device from it.
    pub factory: Option<FactoryCert>,
}

/// A factory certificate and its key (PEM files), for `[enrol] method = "factory-cert"`.
#[derive(Debug, Clone)]
pub struct FactoryCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl FactoryCert {
    /// The client authentication it gives, and a fingerprint of the certificate (what a
    /// staged key is kept under).
    fn load(&self) -> Result<(ClientAuth, String)> {
        let chain = crate::trust::read_pem_certs(&self.cert)?;
        let key = crate::trust::read_pem_key(&self.key)?;
        let fp = crate::trust::sha256_hex(&chain[0]);
        Ok((ClientAuth::Certificate(chain, key), fp))
    }
}

impl std::fmt::Debug for EnrolArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: never printed.
        f.debug_struct("EnrolArgs")
            .field("ca_url", &self.ca_url)
            .field("token", &"<redacted>")
            .field("identity", &self.identity)
            .field("ca_bundle", &self.ca_bundle)
            .field("ca_fingerprint", &self.ca_fingerprint)
            .field("force", &self.force)
            .field("once", &self.once)
            .field("factory", &self.factory)
            .finish()
    }
}

/// The longest `Retry-After` an enrolment waits out before it gives up (and says so).
const MAX_ENROL_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(120);

/// The identity to enrol as: the one the token carries, or `--identity` for a token that
/// is not in Lanyard's format. A Lanyard token that is cut off is refused as such (asking
/// for `--identity` would only lead to "unknown enrolment token").
pub fn enrolment_identity(token: &str, given: Option<&str>) -> Result<String> {
    use lanyard_proto::token::{Malformed, parse_identity};
    match (parse_identity(token), given) {
        (Ok(from_token), Some(g)) if g != from_token => Err(AgentError::Usage(format!(
            "--identity {g:?} differs from the identity the token was made for ({from_token:?}); leave --identity out"
        ))),
        (Ok(from_token), _) => Ok(from_token),
        (Err(Malformed::NotLanyard), Some(g)) => Ok(g.to_owned()),
        (Err(Malformed::NotLanyard), None) if lanyard_proto::claim::is_claim(token) => {
            Err(AgentError::Usage(
                "this is a batch claim (\"lyc.\"): it enrols under an identity of the device's own; give --identity-template (the claim's, e.g. 'sensor-{id}.fleet.example.com') or --identity, or set [enrol] method = \"claim\"".into(),
            ))
        }
        (Err(Malformed::NotLanyard), None) if token.trim().is_empty() => {
            Err(AgentError::Usage("the enrolment token is empty".into()))
        }
        (Err(Malformed::NotLanyard), None) => Err(AgentError::Usage(
            "the token is not a Lanyard enrolment token (they start with \"lyt.\"); give the token `lanyard-ca token create` printed, or --identity for a token from elsewhere".into(),
        )),
        (Err(m), _) => Err(AgentError::MalformedToken(m)),
    }
}

impl Agent {
    pub async fn enrol(&self, args: EnrolArgs) -> Result<CertInfo> {
        let now = self.clock.now();
        if !args.force
            && let Some(cur) = self.current()
            && cur.info.not_after > now
            && self.state().revoked.is_none()
        {
            return Err(AgentError::Usage(format!(
                "already enrolled as {:?} (serial {}, valid until {}); use --force to enrol again",
                cur.info.identity,
                cur.info.serial,
                rfc3339(cur.info.not_after)
            )));
        }
        // Everything that can be checked on this device is checked before the token is
        // sent anywhere: its format, the CA's URL and pin, and that the store can write.
        // With a factory certificate the CA names the device; with a token, the token does
        // (or the identity given with it).
        let factory = args.factory.as_ref().map(FactoryCert::load).transpose()?;
        let identity = match factory {
            Some(_) => None,
            None => Some(enrolment_identity(&args.token, args.identity.as_deref())?),
        };
        let shown = identity.as_deref().unwrap_or("(named by the CA from the factory certificate)");
        let ca_url = match args.ca_url.as_deref().or(self.cfg.ca.url.as_deref()) {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => {
                return Err(AgentError::Usage(
                    "no CA URL: give --ca URL, or set [ca] url in the config".into(),
                ));
            }
        };
        if !ca_url.starts_with("https://") {
            return Err(AgentError::Usage(format!(
                "--ca {ca_url:?}: the CA must be reached over https://"
            )));
        }
        let fingerprint = match &args.ca_fingerprint {
            Some(fp) => Some(crate::trust::parse_fingerprint(fp)?),
            None if args.ca_bundle.is_none() => self.cfg.ca.ca_fingerprint.clone(),
            None => None,
        };
        self.in_store(|s| s.probe()).await.map_err(|e| match e {
            AgentError::Store(source) => {
                AgentError::StoreUnusable { store: self.cfg.store.backend, source }
            }
            other => other,
        })?;
        if let Some(hw) = self.hw.clone() {
            tokio::task::spawn_blocking(move || hw.probe())
                .await
                .map_err(|e| AgentError::Io {
                    context: "checking the hardware key store".into(),
                    source: std::io::Error::other(e),
                })?
                .map_err(|e| {
                    AgentError::Usage(format!(
                        "the {} store cannot make a key, so nothing was sent to the CA and the token is still unused: {e}",
                        self.cfg.store.backend
                    ))
                })?;
        }
        tracing::debug!(store = %self.store.describe(), "the credential store can hold a key");
        let timeout = self.cfg.ca.timeout;

        // Trust for the CA connection; pinned roots are saved for later runs.
        let roots_file = state::roots_path(self.state_dir());
        let pinned: Option<Vec<CertificateDer<'static>>> = if let Some(b) = &args.ca_bundle {
            Some(crate::trust::read_pem_certs(b)?)
        } else if let Some(fp) = &fingerprint {
            let boot =
                EstClient::new(&ca_url, Trust::AcceptAnyForBootstrap, ClientAuth::None, timeout)?;
            let certs = boot.cacerts().await?;
            Some(vec![crate::trust::select_pinned_root(&certs, fp, &ca_url)?])
        } else {
            None
        };
        let roots = match &pinned {
            Some(p) => crate::trust::root_store(p)?,
            None => self.roots()?,
        };
        let (auth, fingerprint) = match factory {
            Some((auth, fp)) => (auth, fp),
            None => (ClientAuth::None, crate::token_file::fingerprint(&args.token)),
        };
        let client = EstClient::new(&ca_url, Trust::Roots(roots), auth, timeout)?;

        // The key is staged (under a digest of the token) before the request: an enrolment
        // whose answer was lost (a timeout while the CA signed, a crash, retries used up)
        // is tried again with the same key, and the CA answers the same token and key with
        // the same certificate, where a new key would be refused as token-used. (Its kind
        // was chosen from csrattrs the first time; csrattrs refuses a used token.)
        let mark = format!("enrol:{}", &fingerprint[..16]);
        let staged = {
            let m = mark.clone();
            // Enrolment is how a device recovers: an unreadable staged key is not a reason
            // to stop it.
            self.in_store(move |s| s.staged(&m)).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read a staged enrolment key; starting with a new key");
                None
            })
        };
        let key = match staged.and_then(|k| self.staged_key(&k).ok()) {
            Some(k) => {
                tracing::info!(identity = %shown, "retrying an earlier enrolment with its staged key");
                k
            }
            None => {
                // Key on the device, of the kind the CA asks for.
                tracing::debug!(ca = %ca_url, identity = %shown, "asking the CA which key to generate");
                let alg = client
                    .csrattrs(identity.as_deref().map(|i| (i, args.token.as_str())))
                    .await?
                    .unwrap_or(lanyard_proto::KeyAlgorithm::EcdsaP256);
                let k = self.generate_staged(alg, mark.clone()).await?;
                tracing::debug!(algorithm = %alg, "key generated on this device and staged");
                k
            }
        };
        let csr = key.csr_named(identity.as_deref())?;
        let spki = key.spki_der();

        // The CA answers a retry with the same token and key with the same certificate, so
        // transient failures are retried here with the same CSR.
        tracing::debug!("sending the enrolment request");
        let mut attempt = 0u32;
        let leaf = loop {
            let sent = match &identity {
                Some(id) => client.simpleenroll(id, &args.token, &csr, &spki).await,
                None => client.simpleenroll_with_certificate(&csr, &spki).await,
            };
            match sent {
                Ok(l) => break l,
                Err(e) if e.retryable() && attempt < 4 && !args.once => {
                    attempt += 1;
                    // The CA's Retry-After is a floor; one longer than a person waiting
                    // on `lanyard enrol` should sit through ends the attempt instead.
                    let backoff = std::time::Duration::from_millis(500 * 2u64.pow(attempt));
                    let wait = match e.retry_after() {
                        Some(ra) if ra > MAX_ENROL_RETRY_AFTER => return Err(e),
                        Some(ra) => ra.max(backoff),
                        None => backoff,
                    };
                    tracing::warn!(error = %e, attempt, wait_secs = wait.as_secs_f64(), "enrolment failed; retrying with the same key");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    if !e.retryable() {
                        // Refused for good (a used or unknown token): the next enrolment,
                        // with another token, starts from a new key.
                        if let Err(e) = self.in_store(|s| s.clear_staged()).await {
                            tracing::warn!(error = %e, "cannot drop the staged enrolment key");
                        }
                    }
                    return Err(e);
                }
            }
        };
        let ca_certs = client.cacerts().await?;
        let (ca_roots, intermediates) = verify::split_ca_certs(&ca_certs);
        let anchors = pinned.clone().unwrap_or(ca_roots);
        let info = verify::issued(
            &leaf,
            &spki,
            identity.as_deref(),
            &anchors,
            &intermediates,
            self.clock.now(),
        )?;

        let mut chain = vec![leaf];
        chain.extend(verify::issuers_of(&chain[0], &intermediates).iter().map(|c| c.to_vec()));
        let cred = Credential { key: key.stored(), chain_der: chain };
        self.in_store(move |s| s.store(&cred)).await?;
        if let Some(p) = &pinned {
            crate::fsutil::write_atomic(&roots_file, crate::trust::to_pem(p).as_bytes(), 0o644)?;
        }
        self.reload()?;
        let st = AgentState {
            ca_url: Some(ca_url),
            identity: Some(info.identity.clone()),
            last_renewal: Some(self.clock.now()),
            // Spread the first renewal over the whole interval (a fleet enrolled in one
            // hour must not renew in one hour ever after).
            resync: true,
            ..Default::default()
        };
        self.save_state(&st);
        tracing::info!(identity = %info.identity, serial = %info.serial, not_after = %Rfc3339Time(info.not_after), store = %self.store.describe(), "enrolled");
        // Learn the group's policy now, so the first renewal decision follows it (expiry
        // grace, renewal point) even if the daemon never ran. Not fatal: `run` checks in.
        if let Err(e) = self.check_in().await {
            tracing::warn!(error = %e, "enrolled, but could not read the group's policy yet");
        }
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn debug_never_shows_the_token() {
        let args = super::EnrolArgs {
            token: "lyt.dev-1.s3cr3t-s3cr3t".to_owned().into(),
            ..Default::default()
        };
        let shown = format!("{args:?}");
        assert!(!shown.contains("s3cr3t") && shown.contains("redacted"), "{shown}");
    }
}
