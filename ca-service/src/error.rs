//! The CA's one error type, and the one place errors become HTTP statuses.
//!
//! Messages name the problem for the person (or device log) reading them. They never carry
//! a token, a private key or a CSR's bytes.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lanyard_proto::{Problem, ProblemCode};

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// The request is malformed or asks for something the profile refuses.
    #[error("{0}")]
    BadRequest(String),
    /// Wrong or missing `Content-Type`.
    #[error("unsupported content type {given:?}: send {expected}")]
    UnsupportedMediaType { given: String, expected: &'static str },
    #[error("request body over {limit} bytes")]
    TooLarge { limit: usize },
    /// No credentials, or credentials the CA does not know.
    #[error("{0}")]
    Unauthorized(String),
    /// Known credentials that may not do this (used token, revoked certificate, ...).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// A refusal with its own stable code (`renewal-conflict`, `token-used`, ...); the
    /// status follows from the code.
    #[error("{detail}")]
    Refused {
        code: ProblemCode,
        detail: String,
        /// A serial the refusal is about (the earlier certificate of a reused key).
        serial: Option<String>,
    },
    /// Too many failed authentications from one source address.
    #[error("too many failed authentications from this address; retry after {retry_after_secs}s")]
    RateLimited { retry_after_secs: u64 },
    /// A backend is throttled or down; the client should retry after the given seconds.
    #[error("CA busy: {reason}; retry after {retry_after_secs}s")]
    Unavailable { reason: String, retry_after_secs: u64 },
    /// An operator-side problem (files, CA state). Not an HTTP-facing error.
    #[error("{0}")]
    Config(String),
    #[error("storage: {0}")]
    Storage(String),
    #[error("signing: {0}")]
    Signing(String),
    /// Encoding something the CA made (JSON, TOML, PKCS#7) failed: a bug, not bad input.
    #[error("encoding {what}: {detail}")]
    Encoding { what: &'static str, detail: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = CaError> = std::result::Result<T, E>;

impl CaError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> CaError {
        let context = context.into();
        move |source| CaError::Io { context, source }
    }

    /// `map_err` for an encoder: `serde_json::to_vec(&x).map_err(CaError::encoding("JSON"))`.
    pub fn encoding<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> CaError {
        move |e| CaError::Encoding { what, detail: e.to_string() }
    }

    /// A refusal with a stable code.
    pub fn refused(code: ProblemCode, detail: impl Into<String>) -> CaError {
        CaError::Refused { code, detail: detail.into(), serial: None }
    }

    /// The stable code clients decide on.
    pub fn code(&self) -> ProblemCode {
        match self {
            CaError::BadRequest(_) => ProblemCode::BadRequest,
            CaError::UnsupportedMediaType { .. } => ProblemCode::UnsupportedMediaType,
            CaError::TooLarge { .. } => ProblemCode::TooLarge,
            CaError::Unauthorized(_) => ProblemCode::Unauthorized,
            CaError::Forbidden(_) => ProblemCode::Forbidden,
            CaError::NotFound(_) => ProblemCode::NotFound,
            CaError::Refused { code, .. } => *code,
            CaError::Unavailable { .. } => ProblemCode::Busy,
            CaError::RateLimited { .. } => ProblemCode::RateLimited,
            CaError::Config(_)
            | CaError::Storage(_)
            | CaError::Signing(_)
            | CaError::Encoding { .. }
            | CaError::Io { .. } => ProblemCode::Internal,
        }
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code().status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The problem document a client gets (internal details stay in the log).
    pub fn problem(&self) -> Problem {
        let code = self.code();
        let detail = if code == ProblemCode::Internal {
            "internal error; see the CA's log".to_owned()
        } else {
            self.to_string()
        };
        let mut p = Problem::new(code, detail);
        if let CaError::Refused { serial, .. } = self {
            p.serial = serial.clone();
        }
        p
    }
}

/// A problem+json response with the status of its code.
pub fn problem_response(problem: &Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, problem.to_json()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(lanyard_proto::problem::CONTENT_TYPE),
    );
    resp
}

impl IntoResponse for CaError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        // Internal details go to the log, not to the client.
        if problem.code == ProblemCode::Internal {
            tracing::error!(error = %self, "request failed");
        } else if problem.code == ProblemCode::Busy {
            // Under load these come by the thousand; the pacer and the backends log a
            // summary instead.
            tracing::debug!(status = problem.status, code = %problem.code, error = %self, "request refused");
        } else {
            tracing::info!(status = problem.status, code = %problem.code, error = %self, "request refused");
        }
        let mut resp = problem_response(&problem);
        // For the request counters (`/metrics`).
        resp.extensions_mut().insert(problem.code);
        let h = resp.headers_mut();
        match &self {
            CaError::Unauthorized(_) | CaError::Refused { code: ProblemCode::TokenInvalid, .. } => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"lanyard-est\""),
                );
            }
            CaError::Unavailable { retry_after_secs, .. }
            | CaError::RateLimited { retry_after_secs } => {
                if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                    h.insert(header::RETRY_AFTER, v);
                }
            }
            _ => {}
        }
        resp
    }
}

impl From<rusqlite::Error> for CaError {
    fn from(e: rusqlite::Error) -> Self {
        storage_error("", &e)
    }
}

/// A database error: a full disk is the CA's trouble, passing (503 `busy`, come back in a
/// minute; SQLite rolled the write back), anything else a storage failure.
pub fn storage_error(context: &str, e: &rusqlite::Error) -> CaError {
    let sep = if context.is_empty() { "" } else { ": " };
    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
        tracing::error!(error = %e, "the CA's disk is full: issuance is refused until space returns");
        return CaError::Unavailable {
            reason: format!("{context}{sep}the CA's disk is full"),
            retry_after_secs: 60,
        };
    }
    CaError::Storage(format!("{context}{sep}{e}"))
}

impl From<rcgen::Error> for CaError {
    fn from(e: rcgen::Error) -> Self {
        match e {
            // A remote signer (KMS) throttled or is down: the device should come back
            // later (5 to 9 s, so the devices of one throttled moment spread). A failure
            // retrying cannot cure is an internal error.
            rcgen::Error::RemoteKeyError => match crate::signer::take_remote_failure() {
                Some(crate::signer::RemoteFailure::Failed(detail)) => CaError::Signing(detail),
                Some(crate::signer::RemoteFailure::Busy(reason)) => CaError::Unavailable {
                    reason,
                    retry_after_secs: 5 + rand::random_range(0..5u64),
                },
                None => CaError::Unavailable {
                    reason: "the signing key service is unavailable".into(),
                    retry_after_secs: 5,
                },
            },
            e => CaError::Signing(e.to_string()),
        }
    }
}
