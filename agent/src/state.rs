//! What the agent remembers between runs besides its credential (state dir
//! `agent-state.json`): the CA it enrolled with, its identity, the last policy and
//! revocation status the CA gave, and consecutive failures. Public data only: no key, no
//! token. Written atomically, so a crash never leaves half a file.

use crate::error::{AgentError, Result};
use lanyard_proto::GroupPolicy;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct AgentState {
    pub ca_url: Option<String>,
    pub identity: Option<String>,
    pub group: Option<String>,
    /// The group policy as last received from the CA.
    pub policy: Option<GroupPolicy>,
    /// Its version, as the CA named it (reported back at check-in).
    pub policy_version: Option<String>,
    pub failures: u32,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_failure_at: Option<OffsetDateTime>,
    /// In `[0, 1)`, drawn once when the last failure was recorded: where the retry falls
    /// inside the backoff window, the same on every wake and every `status`.
    pub failure_jitter: f64,
    /// The CA's `Retry-After` with the last failure, as an instant: no attempt before it.
    #[serde(with = "time::serde::rfc3339::option")]
    pub retry_not_before: Option<OffsetDateTime>,
    /// The current certificate was obtained off schedule (an enrolment, a rotation, a
    /// renewal that needed retries): its renewal point is drawn over the whole interval.
    pub resync: bool,
    pub last_error: Option<String>,
    /// The CA's problem code for the last error, when the CA refused (`renewal-conflict`).
    pub last_error_code: Option<String>,
    /// Set when the CA reported the current certificate superseded (renewed, the renewal's
    /// answer never stored here): the agent fetches the renewed certificate again with the
    /// staged key. The serial.
    pub superseded: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_checkin: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_renewal: Option<OffsetDateTime>,
    /// Set when the CA reported the current certificate revoked: `(serial, reason)`.
    pub revoked: Option<(String, String)>,
    /// Why the daemon's last enrolment from the token file failed (cleared by an
    /// enrolment).
    pub enrolment_error: Option<String>,
    /// PID of a process in the middle of a renewal (cleared after).
    pub renewing_pid: Option<u32>,
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("agent-state.json")
}

pub fn roots_path(state_dir: &Path) -> PathBuf {
    state_dir.join("ca-roots.pem")
}

impl AgentState {
    pub fn load(state_dir: &Path) -> Result<AgentState> {
        let p = path(state_dir);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                AgentError::Usage(format!("{}: {e}; remove the file to reset the agent's state (the credential is kept elsewhere)", p.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AgentState::default()),
            Err(e) => Err(AgentError::Io { context: format!("reading {}", p.display()), source: e }),
        }
    }

    pub fn save(&self, state_dir: &Path) -> Result<()> {
        let data = serde_json::to_vec_pretty(self).map_err(|e| AgentError::Usage(e.to_string()))?;
        crate::fsutil::write_atomic(&path(state_dir), &data, 0o644)
    }

    /// Whether the recorded renewing process is still alive.
    pub fn renewing_now(&self) -> bool {
        self.renewing_pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
    }
}
