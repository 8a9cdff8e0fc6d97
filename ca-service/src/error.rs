//! The CA's one error type, and the one place errors become HTTP statuses.
//!
//! Messages name the problem for the person (or device log) reading them. They never carry
//! a token, a private key or a CSR's bytes.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

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

    pub fn status(&self) -> StatusCode {
        match self {
            CaError::BadRequest(_) => StatusCode::BAD_REQUEST,
            CaError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            CaError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            CaError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            CaError::Forbidden(_) => StatusCode::FORBIDDEN,
            CaError::NotFound(_) => StatusCode::NOT_FOUND,
            CaError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            CaError::Config(_) | CaError::Storage(_) | CaError::Signing(_) | CaError::Io { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

impl IntoResponse for CaError {
    fn into_response(self) -> Response {
        let status = self.status();
        // Internal details go to the log, not to the client.
        let body = if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(error = %self, "request failed");
            "internal error; see the CA's log\n".to_owned()
        } else {
            tracing::info!(status = status.as_u16(), error = %self, "request refused");
            format!("{self}\n")
        };
        let mut resp = (status, body).into_response();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        match &self {
            CaError::Unauthorized(_) => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"lanyard-est\""),
                );
            }
            CaError::Unavailable { retry_after_secs, .. } => {
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
        CaError::Storage(e.to_string())
    }
}

impl From<rcgen::Error> for CaError {
    fn from(e: rcgen::Error) -> Self {
        match e {
            // A remote signer (KMS) failed or throttled: the device should come back later.
            rcgen::Error::RemoteKeyError => CaError::Unavailable {
                reason: "the signing key service is unavailable".into(),
                retry_after_secs: 5,
            },
            e => CaError::Signing(e.to_string()),
        }
    }
}
