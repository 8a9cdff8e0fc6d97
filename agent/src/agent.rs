//! The agent's operations: enrol, renew, check in, report status. The daemon
//! ([`crate::daemon`]) decides *when*; this module does *what*, and keeps the current
//! credential in memory for the proxy, swapped atomically after each renewal.

use crate::clock::Clock;
use crate::config::Config;
use crate::error::{AgentError, Result};
use crate::est::{ClientAuth, EstClient, Trust};
use crate::keys::DeviceKey;
use crate::metrics::Metrics;
use crate::schedule::{self, Decision, Failures, Inputs, Validity};
use crate::state::{self, AgentState};
use crate::verify::{self, CertInfo};
use arc_swap::ArcSwapOption;
use lanyard_keystore::{Credential, CredentialStore};
use lanyard_proto::timefmt::{Rfc3339Time, rfc3339};
use lanyard_proto::{GroupPolicy, ProblemCode};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use time::OffsetDateTime;
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
    fn from_credential(c: &Credential) -> Result<Loaded> {
        let leaf = c
            .chain_der
            .first()
            .ok_or_else(|| AgentError::Usage("stored credential has no certificate".into()))?;
        let info = verify::info(leaf)?;
        let chain: Vec<CertificateDer<'static>> =
            c.chain_der.iter().map(|d| CertificateDer::from(d.clone())).collect();
        let key = crate::est::provider()
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                c.key_pkcs8_der.to_vec(),
            )))
            .map_err(|e| AgentError::Crypto(format!("stored key is not usable: {e}")))?;
        let certified = rustls::sign::CertifiedKey::new(chain.clone(), key);
        certified.keys_match().map_err(|_| {
            AgentError::Crypto(
                "the stored key does not match the stored certificate; enrol again".into(),
            )
        })?;
        Ok(Loaded {
            info,
            chain,
            certified: Arc::new(certified),
            key_pkcs8: c.key_pkcs8_der.clone(),
        })
    }

    fn client_auth(&self) -> ClientAuth {
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

/// Arguments of `lanyard enrol`.
#[derive(Debug, Default)]
pub struct EnrolArgs {
    /// `--ca`; `None` takes `[ca] url` from the config.
    pub ca_url: Option<String>,
    pub token: Zeroizing<String>,
    pub identity: Option<String>,
    pub ca_bundle: Option<PathBuf>,
    pub ca_fingerprint: Option<String>,
    pub force: bool,
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
        (Err(Malformed::NotLanyard), None) if token.trim().is_empty() => {
            Err(AgentError::Usage("the enrolment token is empty".into()))
        }
        (Err(Malformed::NotLanyard), None) => Err(AgentError::Usage(
            "the token is not a Lanyard enrolment token (they start with \"lyt.\"); give the token `lanyard-ca token create` printed, or --identity for a token from elsewhere".into(),
        )),
        (Err(m), _) => Err(AgentError::MalformedToken(m)),
    }
}

/// The `state` field of `lanyard status`.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CredentialState {
    NotEnrolled,
    Valid,
    Renewing,
    Expired,
    Revoked,
}

/// `lanyard status --json`.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub identity: Option<String>,
    pub serial: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub not_before: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub not_after: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_renewal: Option<OffsetDateTime>,
    pub state: CredentialState,
    pub store: String,
    pub last_error: Option<String>,
    /// The CA's problem code for the last error (`renewal-conflict`, `revoked`, ...).
    pub last_error_code: Option<String>,
    pub ca_url: Option<String>,
    pub group: Option<String>,
    pub seconds_until_expiry: Option<i64>,
    pub consecutive_failures: u32,
    /// What to do, when something needs a person.
    pub action: Option<String>,
}

pub struct Agent {
    pub cfg: Config,
    pub clock: Arc<dyn Clock>,
    /// Shared with the blocking threads that run its calls ([`Agent::in_store`]).
    store: Arc<dyn CredentialStore>,
    current: Arc<ArcSwapOption<Loaded>>,
    pub metrics: Arc<Metrics>,
    /// `agent-state.json`, loaded once and written through; re-read by [`Agent::reload`]
    /// when the daemon sees the state directory change (another `lanyard` process).
    state: Mutex<Memory>,
}

/// What the agent keeps in memory besides the credential.
#[derive(Default)]
struct Memory {
    state: AgentState,
    /// Why the state file could not be read, until it can (or is written anew).
    state_error: Option<String>,
    /// The local policy file's policy, when one is configured and valid (an invalid one is
    /// logged when read, and the CA's policy applies).
    local_policy: Option<GroupPolicy>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("store", &self.store).finish_non_exhaustive()
    }
}

impl Agent {
    pub fn open(cfg: Config, clock: Arc<dyn Clock>) -> Result<Agent> {
        let store: Arc<dyn CredentialStore> =
            lanyard_keystore::open(cfg.store.backend, &cfg.store.path, &cfg.store.profile)?.into();
        let agent = Agent {
            cfg,
            clock,
            store,
            current: Arc::new(ArcSwapOption::empty()),
            metrics: Arc::new(Metrics::new()),
            state: Mutex::new(Memory::default()),
        };
        agent.reload_state();
        if let Err(e) = agent.reload() {
            // A corrupt store is reported by status and by the daemon; enrol can fix it.
            tracing::warn!(error = %e, "could not load the stored credential");
        }
        Ok(agent)
    }

    pub fn state_dir(&self) -> &std::path::Path {
        &self.cfg.store.path
    }

    pub fn store_description(&self) -> String {
        self.store.describe()
    }

    /// A file that changes on every store, for watchers in other processes.
    pub fn watch_path(&self) -> PathBuf {
        self.store.watch_path()
    }

    /// The credential in use, shared with the proxy.
    pub fn current(&self) -> Option<Arc<Loaded>> {
        self.current.load_full()
    }

    pub fn current_handle(&self) -> Arc<ArcSwapOption<Loaded>> {
        self.current.clone()
    }

    /// Runs a store call on tokio's blocking threads: keystore calls (D-Bus, flock, fsync)
    /// may take seconds (each is bounded by the keystore's own timeout), and the proxy and
    /// status listeners share the async workers.
    async fn in_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn CredentialStore) -> std::result::Result<T, lanyard_keystore::StoreError>
        + Send
        + 'static,
    ) -> Result<T> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| AgentError::Io {
                context: "credential store call".into(),
                source: std::io::Error::other(e),
            })?
            .map_err(AgentError::Store)
    }

    /// Re-reads the store; returns true when the certificate changed.
    pub fn reload(&self) -> Result<bool> {
        let loaded = match self.store.load()? {
            Some(c) => Some(Arc::new(Loaded::from_credential(&c)?)),
            None => None,
        };
        let before = self.current.load().as_ref().map(|l| l.info.serial.clone());
        let after = loaded.as_ref().map(|l| l.info.serial.clone());
        if let Some(l) = &loaded {
            self.metrics.set_certificate(&l.info, self.clock.now());
        }
        self.current.store(loaded);
        Ok(before != after)
    }

    fn memory(&self) -> MutexGuard<'_, Memory> {
        // A panic while holding the lock leaves plain data behind, still usable.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The agent's state, from memory (no file read).
    pub fn state(&self) -> AgentState {
        self.memory().state.clone()
    }

    /// The serial the CA reported revoked, with its sentence (for the proxy's gate).
    pub fn revoked(&self) -> Option<(String, String)> {
        self.memory().state.revoked.clone()
    }

    /// Why the state file could not be read, if it could not.
    pub fn state_error(&self) -> Option<String> {
        self.memory().state_error.clone()
    }

    /// Re-reads the state file and the local policy file into memory. A state file that
    /// does not parse is reported (log, `status`) and left on disk untouched until the
    /// agent next writes its state; the agent goes on from an empty state meanwhile.
    pub fn reload_state(&self) {
        let loaded = AgentState::load(self.state_dir());
        let local_policy = self.cfg.renewal.policy_file.as_ref().and_then(|p| {
            crate::policy_file::read(p)
                .map_err(|e| tracing::warn!(error = %e, "ignoring the local policy file"))
                .ok()
        });
        let mut m = self.memory();
        match loaded {
            Ok(st) => {
                m.state = st;
                m.state_error = None;
            }
            Err(e) => {
                if m.state_error.as_deref() != Some(e.to_string().as_str()) {
                    tracing::error!(error = %e, "cannot read the agent state; going on without it");
                }
                m.state_error = Some(e.to_string());
            }
        }
        m.local_policy = local_policy;
    }

    /// Re-reads all that another `lanyard` process may have changed (the state file, the
    /// local policy file, the credential), on a blocking thread; true when the credential
    /// changed.
    pub async fn reload_all(self: &Arc<Self>) -> Result<bool> {
        let agent = self.clone();
        tokio::task::spawn_blocking(move || {
            agent.reload_state();
            agent.reload()
        })
        .await
        .map_err(|e| AgentError::Io {
            context: "reloading".into(),
            source: std::io::Error::other(e),
        })?
    }

    /// Writes the state through to its file, then to memory.
    fn save_state(&self, s: &AgentState) {
        if let Err(e) = s.save(self.state_dir()) {
            tracing::error!(error = %e, "could not save the agent state");
        }
        let mut m = self.memory();
        m.state = s.clone();
        m.state_error = None;
    }

    pub fn ca_url(&self) -> Result<String> {
        self.cfg.ca.url.clone().or_else(|| self.state().ca_url).ok_or_else(|| {
            AgentError::Usage("no CA URL: set [ca] url in the config or enrol with --ca URL".into())
        })
    }

    /// Trust anchors for the CA connection (see [`crate::trust`]).
    fn roots(&self) -> Result<rustls::RootCertStore> {
        if let Some(b) = &self.cfg.ca.ca_bundle {
            return crate::trust::root_store(&crate::trust::read_pem_certs(b)?);
        }
        let saved = state::roots_path(self.state_dir());
        if saved.exists() {
            return crate::trust::root_store(&crate::trust::read_pem_certs(&saved)?);
        }
        crate::trust::system_roots()
    }

    /// The policy in force: a local policy file where configured, else the CA's.
    pub fn effective_policy(&self) -> GroupPolicy {
        let m = self.memory();
        if let Some(pol) = &m.local_policy {
            return pol.clone();
        }
        m.state.policy.clone().unwrap_or_default()
    }

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
        let identity = enrolment_identity(&args.token, args.identity.as_deref())?;
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
        let client = EstClient::new(&ca_url, Trust::Roots(roots), ClientAuth::None, timeout)?;

        // The key is staged (under a digest of the token) before the request: an enrolment
        // whose answer was lost (a timeout while the CA signed, a crash, retries used up)
        // is tried again with the same key, and the CA answers the same token and key with
        // the same certificate, where a new key would be refused as token-used. (Its kind
        // was chosen from csrattrs the first time; csrattrs refuses a used token.)
        let mark = format!("enrol:{}", &crate::trust::sha256_hex(args.token.as_bytes())[..16]);
        let staged = {
            let m = mark.clone();
            // Enrolment is how a device recovers: an unreadable staged key is not a reason
            // to stop it.
            self.in_store(move |s| s.staged(&m)).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read a staged enrolment key; starting with a new key");
                None
            })
        };
        let key = match staged.and_then(|k| DeviceKey::from_pkcs8(&k).ok()) {
            Some(k) => {
                tracing::info!(identity = %identity, "retrying an earlier enrolment with its staged key");
                k
            }
            None => {
                // Key on the device, of the kind the CA asks for.
                tracing::debug!(ca = %ca_url, identity = %identity, "asking the CA which key to generate");
                let alg = client
                    .csrattrs(Some((&identity, &args.token)))
                    .await?
                    .unwrap_or(lanyard_proto::KeyAlgorithm::EcdsaP256);
                let k = DeviceKey::generate(alg)?;
                let (pkcs8, m) = (k.pkcs8(), mark.clone());
                self.in_store(move |s| s.stage(&pkcs8, &m)).await?;
                tracing::debug!(algorithm = %alg, "key generated on this device and staged");
                k
            }
        };
        let csr = key.csr(&identity)?;
        let spki = key.spki_der();

        // The CA answers a retry with the same token and key with the same certificate, so
        // transient failures are retried here with the same CSR.
        tracing::debug!("sending the enrolment request");
        let mut attempt = 0u32;
        let leaf = loop {
            match client.simpleenroll(&identity, &args.token, &csr, &spki).await {
                Ok(l) => break l,
                Err(e) if e.retryable() && attempt < 4 => {
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
        let info =
            verify::issued(&leaf, &spki, &identity, &anchors, &intermediates, self.clock.now())?;

        let mut chain = vec![leaf];
        chain.extend(intermediates.iter().map(|c| c.to_vec()));
        let cred = Credential { key_pkcs8_der: key.pkcs8(), chain_der: chain };
        self.in_store(move |s| s.store(&cred)).await?;
        if let Some(p) = &pinned {
            crate::fsutil::write_atomic(&roots_file, crate::trust::to_pem(p).as_bytes(), 0o644)?;
        }
        self.reload()?;
        let st = AgentState {
            ca_url: Some(ca_url),
            identity: Some(identity),
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

    /// Renews now: a new key, a CSR authenticated by the current certificate, checks on
    /// the answer, then an atomic swap in the store. On any failure the current credential
    /// stays as it was.
    pub async fn renew(&self) -> Result<CertInfo> {
        let cur = self.current().ok_or(AgentError::NotEnrolled)?;
        let mut st = self.state();
        // A renewal off schedule (after failures, for a rotation, to fetch a superseded
        // certificate's successor) spreads the next one over the whole interval.
        let validity = Validity::new(cur.info.not_before, cur.info.not_after, st.last_renewal);
        let off_schedule = st.failures > 0
            || st.superseded.is_some()
            || schedule::rotation_applies(&self.effective_policy(), validity, self.clock.now());
        st.renewing_pid = Some(std::process::id());
        self.save_state(&st);
        let result = self.renew_inner(&cur).await;
        let mut st = self.state();
        st.renewing_pid = None;
        let now = self.clock.now();
        match &result {
            Ok(_) => {
                st.failures = 0;
                st.last_failure_at = None;
                st.failure_jitter = 0.0;
                st.retry_not_before = None;
                st.last_error = None;
                st.last_error_code = None;
                st.last_renewal = Some(now);
                st.resync = off_schedule;
                st.revoked = None;
                st.superseded = None;
                self.metrics.renewals.inc();
            }
            Err(e) => {
                st.failures = st.failures.saturating_add(1);
                st.last_failure_at = Some(now);
                // Drawn once per failure and stored: every wake and every `status` sees
                // the same next attempt.
                st.failure_jitter = schedule::failure_jitter();
                st.last_error = Some(e.to_string());
                st.last_error_code = e.code().map(|c| c.as_str().to_owned());
                st.retry_not_before = None;
                // Final refusals (a renewal conflict is also the sign of a copy of this
                // device's key) are in `last_error_code`: the decision needs a new token.
                if let AgentError::Refused { code, message, retry_after, .. } = e {
                    if *code == ProblemCode::Revoked {
                        st.revoked = Some((cur.info.serial.clone(), message.clone()));
                    }
                    st.retry_not_before =
                        retry_after.and_then(|d| time::Duration::try_from(d).ok()).map(|d| now + d);
                }
                if !e.retryable() {
                    // A refusal that will not change: the next attempt starts from a new key.
                    if let Err(e) = self.store.clear_staged() {
                        tracing::warn!(error = %e, "cannot drop the staged renewal key");
                    }
                }
                self.metrics.renewal_failure(e.kind());
            }
        }
        self.save_state(&st);
        // Hooks run once the renewal is committed (credential and state): a slow or
        // failing hook cannot leave a renewal half-recorded.
        if let Ok(info) = &result {
            crate::hooks::run(&self.cfg.hooks, info).await;
        }
        result
    }

    async fn renew_inner(&self, cur: &Loaded) -> Result<CertInfo> {
        let ca_url = self.ca_url()?;
        let client = EstClient::new(
            &ca_url,
            Trust::Roots(self.roots()?),
            cur.client_auth(),
            self.cfg.ca.timeout,
        )?;
        // A renewal interrupted after the CA answered (a crash, a lost answer) left its key
        // staged: the CA answers the same key with the same certificate. Otherwise a new
        // key, staged before the request for the same reason.
        let serial = cur.info.serial.clone();
        let key = match self.in_store(move |s| s.staged(&serial)).await? {
            Some(pkcs8) => {
                tracing::info!(serial = %cur.info.serial, "retrying an interrupted renewal with its staged key");
                DeviceKey::from_pkcs8(&pkcs8)?
            }
            None => {
                let key = DeviceKey::generate(self.effective_policy().preferred_key())?;
                let (pkcs8, serial) = (key.pkcs8(), cur.info.serial.clone());
                self.in_store(move |s| s.stage(&pkcs8, &serial)).await?;
                key
            }
        };
        let csr = key.csr(&cur.info.identity)?;
        let spki = key.spki_der();
        let leaf = client.simplereenroll(&csr, &spki).await?;
        let ca_certs = client.cacerts().await?;
        let (ca_roots, intermediates) = verify::split_ca_certs(&ca_certs);
        let saved = state::roots_path(self.state_dir());
        let anchors = if saved.exists() { crate::trust::read_pem_certs(&saved)? } else { ca_roots };
        let info = verify::issued(
            &leaf,
            &spki,
            &cur.info.identity,
            &anchors,
            &intermediates,
            self.clock.now(),
        )?;
        let mut chain = vec![leaf];
        chain.extend(intermediates.iter().map(|c| c.to_vec()));
        let cred = Credential { key_pkcs8_der: key.pkcs8(), chain_der: chain };
        self.in_store(move |s| s.store(&cred)).await?;
        self.reload()?;
        tracing::info!(identity = %info.identity, serial = %info.serial, previous = %cur.info.serial, not_after = %Rfc3339Time(info.not_after), "renewed");
        Ok(info)
    }

    /// Asks the CA about the current certificate: its policy, and whether it is revoked.
    pub async fn check_in(&self) -> Result<()> {
        let cur = self.current().ok_or(AgentError::NotEnrolled)?;
        let client = EstClient::new(
            &self.ca_url()?,
            Trust::Roots(self.roots()?),
            cur.client_auth(),
            self.cfg.ca.timeout,
        )?;
        let mut st = self.state();
        match client.certificate_status().await {
            Ok(s) => {
                st.group = Some(s.group);
                st.policy = Some(s.policy);
                st.last_checkin = Some(self.clock.now());
                let reason = s.revocation_reason.clone().unwrap_or_else(|| "unspecified".into());
                // Revoked as superseded: the CA renewed this certificate and the answer was
                // never stored here. The next renewal fetches it again with the staged key.
                st.superseded =
                    (s.status == "revoked" && reason == "superseded").then(|| s.serial.clone());
                st.revoked = (s.status == "revoked" && reason != "superseded").then(|| {
                    (
                        s.serial.clone(),
                        format!(
                            "the device certificate {} was revoked ({reason}); enrol again with a new token",
                            s.serial
                        ),
                    )
                });
                self.save_state(&st);
                Ok(())
            }
            Err(AgentError::Refused { code: ProblemCode::Revoked, message, .. }) => {
                st.revoked = Some((cur.info.serial.clone(), message.clone()));
                self.save_state(&st);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The renewal decision for now.
    pub fn decide(&self, st: &AgentState) -> Decision {
        let cur = self.current();
        let policy = self.effective_policy();
        let is_current = |serial: &str| cur.as_ref().is_some_and(|c| c.info.serial == serial);
        schedule::decide(&Inputs {
            now: self.clock.now(),
            cert: cur
                .as_ref()
                .map(|c| Validity::new(c.info.not_before, c.info.not_after, st.last_renewal)),
            policy: &policy,
            jitter: cur.as_ref().map(|c| schedule::stable_jitter(&c.info.serial)).unwrap_or(0.0),
            failures: Failures {
                count: st.failures,
                last_at: st.last_failure_at,
                jitter: st.failure_jitter,
                code: st.last_error_code.as_deref().and_then(|c| c.parse().ok()),
                retry_not_before: st.retry_not_before,
            },
            revoked: st.revoked.as_ref().is_some_and(|(s, _)| is_current(s)),
            resync: st.resync,
            superseded: st.superseded.as_deref().is_some_and(is_current),
        })
    }

    pub fn status(&self) -> Status {
        let now = self.clock.now();
        let st = self.state();
        let cur = self.current();
        let decision = self.decide(&st);
        let revoked = matches!((&st.revoked, &cur), (Some((s, _)), Some(c)) if *s == c.info.serial);
        let state = match &cur {
            None => CredentialState::NotEnrolled,
            Some(_) if revoked => CredentialState::Revoked,
            Some(_) if st.renewing_now() => CredentialState::Renewing,
            Some(c) if now > c.info.not_after => CredentialState::Expired,
            Some(_) => CredentialState::Valid,
        };
        let (next_renewal, action) = match &decision {
            Decision::RenewNow(_) => (Some(now), None),
            Decision::SleepUntil { at, .. } => (Some(*at), None),
            Decision::NeedsEnrolment(m) => (None, Some(m.clone())),
        };
        Status {
            identity: cur.as_ref().map(|c| c.info.identity.clone()).or(st.identity.clone()),
            serial: cur.as_ref().map(|c| c.info.serial.clone()),
            not_before: cur.as_ref().map(|c| c.info.not_before),
            not_after: cur.as_ref().map(|c| c.info.not_after),
            next_renewal,
            state,
            store: self.store.describe(),
            last_error: self.state_error().or(st.last_error.clone()),
            last_error_code: st.last_error_code.clone(),
            ca_url: self.cfg.ca.url.clone().or(st.ca_url.clone()),
            group: st.group.clone(),
            seconds_until_expiry: cur.as_ref().map(|c| (c.info.not_after - now).whole_seconds()),
            consecutive_failures: st.failures,
            action,
        }
    }
}
