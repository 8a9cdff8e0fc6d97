//! The renewal decision for now, and `lanyard status`.

use super::Agent;
use crate::schedule::{self, Decision, Failures, Inputs, Validity};
use crate::state::AgentState;
use serde::Serialize;
use time::OffsetDateTime;

/// The `state` field of `lanyard status`.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CredentialState {
    NotEnrolled,
    Valid,
    Renewing,
    Expired,
    Revoked,
    /// Enrolled, but the TPM or token that holds the key cannot sign now (gone, locked,
    /// unreachable): the proxy answers 503 until it is back.
    KeyUnavailable,
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
    /// How the key is kept: "software key, exportable", "TPM 2.0, non-exportable", ...
    pub key_protection: Option<String>,
    /// Why the key cannot sign, when it cannot.
    pub key_problem: Option<String>,
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

impl Agent {
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

    /// [`status`](Self::status), after asking a hardware key to sign: what `lanyard status`
    /// shows (the daemon's status listener uses the last handshake's outcome instead).
    pub async fn status_checked(&self) -> Status {
        let mut s = self.status();
        if let Some(cur) = self.current() {
            let checked = tokio::task::spawn_blocking(move || cur.check_key()).await;
            if let Ok(Err(e)) = checked {
                s.key_problem = Some(crate::credential::key_unusable(&e));
                if s.state == CredentialState::Valid || s.state == CredentialState::Renewing {
                    s.state = CredentialState::KeyUnavailable;
                }
            }
        }
        s
    }

    pub fn status(&self) -> Status {
        let now = self.clock.now();
        let st = self.state();
        let cur = self.current();
        let decision = self.decide(&st);
        let revoked = matches!((&st.revoked, &cur), (Some((s, _)), Some(c)) if *s == c.info.serial);
        let key_problem = cur
            .as_ref()
            .and_then(|c| c.key_failure(None))
            .map(|e| crate::credential::key_unusable(&e));
        let state = match &cur {
            None => CredentialState::NotEnrolled,
            Some(_) if revoked => CredentialState::Revoked,
            Some(c) if now > c.info.not_after => CredentialState::Expired,
            Some(_) if key_problem.is_some() => CredentialState::KeyUnavailable,
            Some(_) if st.renewing_now() => CredentialState::Renewing,
            Some(_) => CredentialState::Valid,
        };
        let (next_renewal, action) = match &decision {
            Decision::RenewNow(_) => (Some(now), None),
            Decision::SleepUntil { at, .. } => (Some(*at), None),
            Decision::NeedsEnrolment(m) => (
                None,
                Some(match (self.cfg.enrol.file(), &st.enrolment_error) {
                    (Some(_), Some(why)) => why.clone(),
                    (Some(f), None) => crate::token_file::waiting(f),
                    (None, _) => m.clone(),
                }),
            ),
        };
        Status {
            identity: cur.as_ref().map(|c| c.info.identity.clone()).or(st.identity.clone()),
            serial: cur.as_ref().map(|c| c.info.serial.clone()),
            not_before: cur.as_ref().map(|c| c.info.not_before),
            not_after: cur.as_ref().map(|c| c.info.not_after),
            next_renewal,
            state,
            store: self.store.describe(),
            key_protection: cur.as_ref().map(|c| c.protection().to_owned()),
            key_problem,
            last_error: self
                .state_error()
                .or(st.enrolment_error.clone().filter(|_| cur.is_none()))
                .or(st.last_error.clone()),
            last_error_code: st.last_error_code.clone(),
            ca_url: self.cfg.ca.url.clone().or(st.ca_url.clone()),
            group: st.group.clone(),
            seconds_until_expiry: cur.as_ref().map(|c| (c.info.not_after - now).whole_seconds()),
            consecutive_failures: st.failures,
            action,
        }
    }
}
