//! The agent's one error type. Whether an error is worth retrying is a property of the
//! error ([`AgentError::retryable`]), so the renewal loop does not guess.

use lanyard_proto::ProblemCode;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The CA could not be reached (DNS, connect, TLS, timeout).
    #[error("cannot reach the CA at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The CA was reached, but its TLS certificate is not one this device trusts (or the
    /// pinned fingerprint matches none of its certificates).
    #[error("reached the CA at {url}, but did not trust it: {reason}; {fix}")]
    Untrusted { url: String, reason: String, fix: String },
    /// The enrolment token is cut off or otherwise not a Lanyard token (never printed: it
    /// is a secret).
    #[error(
        "the enrolment token is malformed: {0}; copy the whole line `lanyard-ca token create` printed (lyt.<identity>.<secret>)"
    )]
    MalformedToken(lanyard_proto::token::Malformed),
    /// The credential store cannot hold a key; found before any token is spent.
    #[error(
        "the {store} credential store cannot hold a key, so nothing was sent to the CA and the token is still unused: {source}"
    )]
    StoreUnusable {
        store: lanyard_keystore::StoreKind,
        #[source]
        source: lanyard_keystore::StoreError,
    },
    /// The CA answered with an error status; `code` is what to decide on (from its
    /// problem+json body, else from the status).
    #[error("the CA refused ({status} {code}): {message}")]
    Refused { status: u16, code: ProblemCode, message: String, retry_after: Option<Duration> },
    /// The CA answered something that is not what EST promises.
    #[error("the CA's answer is not usable: {0}")]
    BadAnswer(String),
    /// What came back does not fit our key, identity or CA.
    #[error("the issued certificate was rejected: {0}")]
    Verification(String),
    #[error("credential store: {0}")]
    Store(#[from] lanyard_keystore::StoreError),
    #[error(
        "not enrolled: run `lanyard enrol --ca URL --token TOKEN --ca-fingerprint SHA256` (or --ca-bundle FILE) first"
    )]
    NotEnrolled,
    #[error("{0}")]
    Usage(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Crypto(String),
    /// The TPM or PKCS#11 token that holds the device key refused or did not answer.
    #[error("hardware key: {0}")]
    Hardware(crate::hw::HwError),
}

pub type Result<T, E = AgentError> = std::result::Result<T, E>;

impl AgentError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> AgentError {
        let context = context.into();
        move |source| AgentError::Io { context, source }
    }

    /// The CA's `Retry-After` with a refusal, if it gave one.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            AgentError::Refused { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Worth trying again later (after a backoff): network trouble, a busy or failing CA,
    /// a locked keystore. Not: refusals that will not change (used token, revoked).
    pub fn retryable(&self) -> bool {
        match self {
            // A CA whose certificate is not trusted may be mid-way through a change (a new
            // server certificate, a DNS move): worth another try, like an unreachable one.
            AgentError::Unreachable { .. }
            | AgentError::Untrusted { .. }
            | AgentError::BadAnswer(_) => true,
            AgentError::Refused { status, .. } => {
                *status >= 500 || *status == 408 || *status == 429
            }
            AgentError::Store(e) | AgentError::StoreUnusable { source: e, .. } => e.is_transient(),
            AgentError::Hardware(e) => e.is_transient(),
            _ => false,
        }
    }

    /// The CA's problem code, for `lanyard status` (`last_error_code`).
    pub fn code(&self) -> Option<ProblemCode> {
        match self {
            AgentError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// A short label for metrics (`lanyard_renewal_failures_total{reason=...}`).
    pub fn kind(&self) -> &'static str {
        match self {
            AgentError::Config(_) | AgentError::Usage(_) => "config",
            AgentError::Unreachable { .. } => "unreachable",
            AgentError::Untrusted { .. } => "untrusted",
            AgentError::MalformedToken(_) => "config",
            AgentError::Refused { status, .. } if *status >= 500 => "ca_error",
            AgentError::Refused { .. } => "refused",
            AgentError::BadAnswer(_) => "bad_answer",
            AgentError::Verification(_) => "verification",
            AgentError::Store(_) | AgentError::StoreUnusable { .. } => "store",
            AgentError::NotEnrolled => "not_enrolled",
            AgentError::Io { .. } => "io",
            AgentError::Crypto(_) => "crypto",
            AgentError::Hardware(_) => "hardware",
        }
    }
}

impl From<rcgen::Error> for AgentError {
    fn from(e: rcgen::Error) -> Self {
        AgentError::Crypto(e.to_string())
    }
}
