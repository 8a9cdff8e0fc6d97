//! Zero-touch enrolment from a token file (`[enrol] token_file`): a device flashed with a
//! token in a file enrols when `lanyard run` starts without a usable credential, with no
//! person running `lanyard enrol`.
//!
//! - An unreachable or busy CA is retried with the renewal back-off (the policy's retry
//!   floor doubling up to its cap, a jitter drawn once per failure, the CA's `Retry-After`
//!   as a floor), so a fleet powered on together does not come back together.
//! - A token the CA refuses for good (used, expired, unknown, revoked) or that is malformed
//!   is not sent again:
//!   one journal entry, `lanyard status` says what to do, and the agent waits for the file
//!   to hold another token (the daemon watches it).
//! - After success the file is removed, or, where the service may not remove it (a
//!   read-only `/etc` in the systemd sandbox), erased; the token is single-use anyway.

use crate::agent::{Agent, EnrolArgs};
use crate::error::{AgentError, Result};
use lanyard_proto::renewal::{Failures, retry_at};
use std::path::Path;
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// The token in the file: `None` when there is no file or it holds nothing but whitespace
/// (an erased token).
pub fn read(path: &Path) -> Result<Option<Zeroizing<String>>> {
    match std::fs::read_to_string(path) {
        Ok(t) => {
            let t = Zeroizing::new(t);
            let token = t.trim();
            Ok((!token.is_empty()).then(|| Zeroizing::new(token.to_owned())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(AgentError::Io { context: format!("reading {}", path.display()), source: e }),
    }
}

/// Removes a used token file, or erases it (truncates it to nothing) when its directory
/// may not be written; says so when neither works.
pub fn consume(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => tracing::info!(file = %path.display(), "removed the used enrolment token file"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(remove) => match std::fs::OpenOptions::new().write(true).truncate(true).open(path) {
            Ok(_) => {
                tracing::info!(file = %path.display(), error = %remove, "erased the used enrolment token file (it cannot be removed here)")
            }
            Err(erase) => {
                tracing::warn!(file = %path.display(), error = %erase, "cannot remove or erase the used enrolment token file: remove it (the token is used and cannot enrol again)")
            }
        },
    }
}

/// What a device waiting for its token file needs.
pub fn waiting(path: &Path) -> String {
    format!(
        "waiting for an enrolment token in {}: `lanyard run` enrols with it (or run `lanyard enrol`)",
        path.display()
    )
}

/// A short, non-secret name for a token: it tells tokens apart in memory without keeping
/// the token.
pub(crate) fn fingerprint(token: &str) -> String {
    crate::trust::sha256_hex(token.as_bytes())[..16].to_owned()
}

/// What the daemon does next about enrolment.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Enrolled: the device has a credential now.
    Enrolled,
    /// A retryable failure (or one still backing off): try again at this instant.
    RetryAt(OffsetDateTime),
    /// Nothing to try: no token in the file, or only one the CA refused. The sentence says
    /// what a person should do.
    Idle(String),
}

/// The daemon's token-file enrolment, one attempt per call when one is due.
#[derive(Debug, Default)]
pub struct TokenFileEnrolment {
    failures: Failures,
    /// The token the CA refused for good, by [`fingerprint`], with the sentence to show.
    refused: Option<(String, String)>,
}

impl TokenFileEnrolment {
    /// Enrols from `path` if a token is there and an attempt is due.
    pub async fn step(&mut self, agent: &Agent, path: &Path) -> Next {
        if let Some(factory) = &agent.cfg.enrol.factory {
            return self.factory_step(agent, factory).await;
        }
        let shown = path.display();
        let token = match read(path) {
            Ok(Some(t)) => t,
            Ok(None) => return Next::Idle(waiting(path)),
            Err(e) => return Next::Idle(format!("not enrolled: {e}")),
        };
        let id = fingerprint(&token);
        if let Some((refused, why)) = &self.refused {
            if *refused == id {
                return Next::Idle(why.clone());
            }
            // Another token: start afresh.
            *self = TokenFileEnrolment::default();
        }
        // The identity: the token's, `[enrol] identity`, or for a batch claim the template
        // with this device's ID (a device ID that cannot be read is for a person to fix).
        let identity = match agent.cfg.enrol.identity() {
            Ok(i) => i,
            Err(e) => {
                let why = format!("not enrolled: {e}");
                agent.record_enrolment_error(Some(why.clone()));
                return Next::Idle(why);
            }
        };
        // A token that cannot be one (cut off, not Lanyard's without an identity) is refused
        // here, before anything is sent.
        if let Err(e) = crate::agent::enrolment_identity(&token, identity.as_deref()) {
            return self.refuse(agent, id, path, &e);
        }
        if let Some(at) = self.backing_off(agent) {
            return Next::RetryAt(at);
        }
        tracing::info!(file = %shown, identity = identity.as_deref().unwrap_or("(the token's)"), attempt = self.failures.count + 1, "enrolling with the token file");
        let args = EnrolArgs {
            token,
            identity,
            // The daemon enrols only when its credential cannot go on (none, expired,
            // revoked, refused renewal); it backs off itself.
            force: true,
            once: true,
            ..Default::default()
        };
        match agent.enrol(args).await {
            Ok(info) => {
                tracing::info!(identity = %info.identity, serial = %info.serial, file = %shown, "enrolled with the token file");
                consume(path);
                *self = TokenFileEnrolment::default();
                Next::Enrolled
            }
            // The CA refused this token for good (used, expired, unknown, revoked, bound to
            // another identity): wait for another.
            Err(e) if e.code().is_some() && !e.retryable() => self.refuse(agent, id, path, &e),
            // Anything else (the CA unreachable or busy, the store, the config, the CA's
            // answer) is not the token's fault: back off and try again.
            Err(e) => self.back_off(agent, &e, &format!("the token file {shown}")),
        }
    }

    /// Enrolment with a factory certificate. Every failure backs off, refusals included: a
    /// factory CA may be trusted (or a device reset) after the device first tried, and the
    /// certificate in the device does not change.
    async fn factory_step(&mut self, agent: &Agent, factory: &crate::agent::FactoryCert) -> Next {
        if let Some(at) = self.backing_off(agent) {
            return Next::RetryAt(at);
        }
        let shown = factory.cert.display();
        tracing::info!(factory_cert = %shown, attempt = self.failures.count + 1, "enrolling with the factory certificate");
        let args = EnrolArgs {
            force: true,
            once: true,
            factory: Some(factory.clone()),
            ..Default::default()
        };
        match agent.enrol(args).await {
            Ok(info) => {
                tracing::info!(identity = %info.identity, serial = %info.serial, "enrolled with the factory certificate");
                *self = TokenFileEnrolment::default();
                Next::Enrolled
            }
            Err(e) => self.back_off(agent, &e, &format!("the factory certificate {shown}")),
        }
    }

    /// When the next attempt is due, if that is still to come.
    fn backing_off(&self, agent: &Agent) -> Option<OffsetDateTime> {
        retry_at(&self.failures, &agent.effective_policy()).filter(|at| agent.clock.now() < *at)
    }

    /// A failure worth another try later: the policy's back-off (the CA's `Retry-After` as a
    /// floor), said in the status and the journal.
    fn back_off(&mut self, agent: &Agent, e: &AgentError, with: &str) -> Next {
        let policy = agent.effective_policy();
        let now = agent.clock.now();
        self.failures = Failures {
            count: self.failures.count.saturating_add(1),
            last_at: Some(now),
            jitter: rand::random::<f64>(),
            code: e.code(),
            retry_not_before: e
                .retry_after()
                .and_then(|d| time::Duration::try_from(d).ok())
                .map(|d| now + d),
        };
        let at = retry_at(&self.failures, &policy).unwrap_or(now);
        let why = format!(
            "enrolment with {with} failed ({e}); retrying at {}",
            lanyard_proto::timefmt::rfc3339(at)
        );
        agent.record_enrolment_error(Some(why));
        tracing::warn!(error = %e, code = e.code().map(|c| c.as_str()).unwrap_or(""), attempt = self.failures.count, retry_at = %lanyard_proto::timefmt::Rfc3339Time(at), with, "enrolment failed; will retry");
        Next::RetryAt(at)
    }

    /// The token cannot enrol: say so once (log and status) and wait for another.
    fn refuse(&mut self, agent: &Agent, id: String, path: &Path, e: &AgentError) -> Next {
        let why = format!(
            "the enrolment token in {} cannot be used ({e}); put a new token in the file",
            path.display()
        );
        agent.record_enrolment_error(Some(why.clone()));
        tracing::error!(error = %e, code = e.code().map(|c| c.as_str()).unwrap_or(""), file = %path.display(), "enrolment refused; waiting for a new token in the file");
        self.refused = Some((id, why.clone()));
        Next::Idle(why)
    }
}
