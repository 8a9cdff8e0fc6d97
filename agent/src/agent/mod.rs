//! The identity side: enrol, renew, check in, report status. The daemon
//! ([`crate::daemon`]) decides *when*; this module does *what*. It keeps the agent's state
//! in memory (loaded once, written through, reloaded when another process changed it) and
//! publishes the credential in use to [`CredentialView`]s, swapped atomically after each
//! renewal; the proxy sees nothing else of it.
//!
//! - [`enrol`](Agent::enrol): a first certificate for a token.
//! - [`renew`](Agent::renew) and [`check_in`](Agent::check_in): the certificate's life.
//! - [`decide`](Agent::decide) and [`status`](Agent::status): what to do now, and what to show.

use crate::clock::Clock;
use crate::config::Config;
use crate::credential::{CredentialView, Loaded, Published};
use crate::error::{AgentError, Result};
use crate::hw::HardwareBackend;
use crate::keys::DeviceKey;
use crate::metrics::Metrics;
use crate::state::{self, AgentState};
use lanyard_keystore::CredentialStore;
use lanyard_proto::GroupPolicy;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

mod enrol;
mod renew;
mod status;

pub use enrol::{EnrolArgs, FactoryCert, enrolment_identity};
pub use status::{CredentialState, Status};

pub struct Agent {
    pub cfg: Config,
    pub clock: Arc<dyn Clock>,
    /// Shared with the blocking threads that run its calls ([`Agent::in_store`]).
    store: Arc<dyn CredentialStore>,
    /// The TPM or token of a hardware store; keys are generated and used there.
    hw: Option<Arc<dyn HardwareBackend>>,
    /// The credential in use and what the CA said of it, for [`CredentialView`]s.
    published: tokio::sync::watch::Sender<Published>,
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
        let hw = crate::hw::open(&cfg.store).map_err(AgentError::Hardware)?;
        let store: Arc<dyn CredentialStore> = match &hw {
            Some(backend) => lanyard_keystore::open_hardware(
                &cfg.store.path,
                &cfg.store.profile,
                Arc::new(crate::hw::StoreBridge {
                    backend: backend.clone(),
                    kind: cfg.store.backend,
                }),
            )?,
            None => lanyard_keystore::open(cfg.store.backend, &cfg.store.path, &cfg.store.profile)?,
        }
        .into();
        let agent = Agent {
            cfg,
            clock,
            store,
            hw,
            published: tokio::sync::watch::Sender::new(Published::default()),
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

    /// The credential in use.
    pub fn current(&self) -> Option<Arc<Loaded>> {
        self.published.borrow().current.clone()
    }

    /// A read-only view for the proxy: the credential as it changes, and `recheck`, the
    /// sending half of a channel whose receiver the caller turns into check-ins
    /// ([`crate::daemon::Rechecks`]).
    pub fn view(&self, recheck: tokio::sync::mpsc::Sender<()>) -> CredentialView {
        CredentialView::new(self.published.subscribe(), self.clock.clone(), recheck)
    }

    /// Publishes the revocation the state records, when it changed.
    fn publish_revoked(&self, revoked: Option<(String, String)>) {
        self.published.send_if_modified(|p| {
            let changed = p.revoked != revoked;
            p.revoked = revoked;
            changed
        });
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

    /// A new key of `alg` (in the TPM or token of a hardware store), staged as `mark` under
    /// the store's lock before anything is sent: an answer lost on the way is retried with
    /// the same key, and a hardware key is never left unnamed to another process's sweep.
    async fn generate_staged(
        &self,
        alg: lanyard_proto::KeyAlgorithm,
        mark: String,
    ) -> Result<DeviceKey> {
        let (store, hw) = (self.store.clone(), self.hw.clone());
        tokio::task::spawn_blocking(move || {
            let mut made: Option<DeviceKey> = None;
            let mut failed: Option<AgentError> = None;
            let staged = store.stage_generated(&mark, &mut || match DeviceKey::generate_in(
                hw.as_deref(),
                alg,
            ) {
                Ok(k) => {
                    let stored = k.stored();
                    made = Some(k);
                    Ok(stored)
                }
                Err(e) => {
                    let reason = e.to_string();
                    failed = Some(e);
                    Err(lanyard_keystore::StoreError::InvalidCredential { reason })
                }
            });
            match (staged, made) {
                (Ok(_), Some(k)) => Ok(k),
                (Err(e), _) => Err(failed.unwrap_or(AgentError::Store(e))),
                (Ok(_), None) => Err(AgentError::Crypto("no key was generated".into())),
            }
        })
        .await
        .map_err(|e| AgentError::Io {
            context: "generating a key".into(),
            source: std::io::Error::other(e),
        })?
    }

    /// A staged key, as the store kept it.
    fn staged_key(&self, bytes: &[u8]) -> Result<DeviceKey> {
        DeviceKey::from_stored(bytes, self.hw.as_deref())
    }

    /// The hardware backend, if the store is a TPM or token.
    pub fn hardware(&self) -> Option<&Arc<dyn HardwareBackend>> {
        self.hw.as_ref()
    }

    /// Re-reads the store; returns true when the certificate changed.
    pub fn reload(&self) -> Result<bool> {
        let loaded = match self.store.load()? {
            Some(c) => Some(Arc::new(Loaded::from_credential(&c, self.hw.as_ref())?)),
            None => None,
        };
        let after = loaded.as_ref().map(|l| l.info.serial.clone());
        if let Some(l) = &loaded {
            self.metrics.set_certificate(&l.info, self.clock.now());
        }
        let mut before = None;
        self.published.send_modify(|p| {
            before = p.current.as_ref().map(|l| l.info.serial.clone());
            p.current = loaded;
        });
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
        let revoked = m.state.revoked.clone();
        drop(m);
        self.publish_revoked(revoked);
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
        {
            let mut m = self.memory();
            m.state = s.clone();
            m.state_error = None;
        }
        self.publish_revoked(s.revoked.clone());
    }

    /// Records (or clears) why an enrolment by the daemon failed, for `lanyard status`.
    pub fn record_enrolment_error(&self, why: Option<String>) {
        let mut st = self.state();
        if st.enrolment_error != why {
            st.enrolment_error = why;
            self.save_state(&st);
        }
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
    /// Whether a local policy file overrides the CA's policy.
    pub fn local_policy_applies(&self) -> bool {
        self.memory().local_policy.is_some()
    }

    pub fn effective_policy(&self) -> GroupPolicy {
        let m = self.memory();
        if let Some(pol) = &m.local_policy {
            return pol.clone();
        }
        m.state.policy.clone().unwrap_or_default()
    }
}
