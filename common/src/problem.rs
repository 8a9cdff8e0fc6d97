//! Refusals on the wire: every 4xx and 5xx from the CA is `application/problem+json`
//! (RFC 9457) with a stable [`ProblemCode`].
//!
//! Clients decide on the code, never on the human text in `detail`, which may change from
//! release to release. EST clients that ignore the body still get the right status.

use serde::{Deserialize, Serialize};

/// The media type of a problem document.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// Why the CA refused. The kebab-case name is the wire form and is stable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemCode {
    /// Malformed request (bad base64, a path or query the CA does not understand).
    BadRequest,
    /// Wrong `Content-Type`.
    UnsupportedMediaType,
    /// The body is over the CA's size limit.
    TooLarge,
    /// No credentials where the endpoint needs them.
    Unauthorized,
    /// Known credentials that may not do this.
    Forbidden,
    NotFound,
    MethodNotAllowed,
    /// The enrolment token is malformed or unknown.
    TokenInvalid,
    /// The enrolment token was already used (by another key).
    TokenUsed,
    /// The enrolment token expired.
    TokenExpired,
    /// The enrolment token was revoked (`lanyard-ca token revoke`) before it was used.
    TokenRevoked,
    /// The credentials (a token) are bound to another identity, or the identity is not one a
    /// batch claim may enrol (outside its identity template).
    IdentityMismatch,
    /// The batch claim has enrolled as many devices as it may (or was revoked).
    ClaimExhausted,
    /// The batch claim expired.
    ClaimExpired,
    /// The identity (or factory certificate) was provisioned before: once only, until the
    /// fleet manager resets it.
    AlreadyProvisioned,
    /// The client certificate presented for a first enrolment is not from a trusted factory
    /// CA (`lanyard-ca provisioning trust`).
    FactoryCaUnknown,
    /// The CSR does not parse, its signature does not verify, or it asks for something the
    /// profile refuses.
    CsrInvalid,
    /// The CSR's key type is not allowed (by the profile or the group's policy).
    KeyNotAllowed,
    /// The CSR's public key was certified before for this identity.
    KeyReused,
    /// The presented certificate was already renewed with another key: the sign of a
    /// cloned key.
    RenewalConflict,
    /// The client certificate was not issued by this CA (or does not parse).
    CertificateUnknown,
    /// The presented certificate is revoked.
    Revoked,
    /// The presented certificate expired longer ago than the group's grace.
    ExpiredBeyondGrace,
    /// A policy or group name is out of range.
    PolicyInvalid,
    /// Too many failed attempts from this source; come back after `Retry-After`.
    RateLimited,
    /// The CA or a backend is busy or down; come back after `Retry-After`.
    Busy,
    /// The CA failed; its log says why.
    Internal,
    /// A code this build does not know (a newer CA). Decide on the status.
    #[serde(other)]
    Unknown,
}

impl ProblemCode {
    /// Every code, for documentation and tests.
    pub const ALL: &'static [ProblemCode] = &[
        ProblemCode::BadRequest,
        ProblemCode::UnsupportedMediaType,
        ProblemCode::TooLarge,
        ProblemCode::Unauthorized,
        ProblemCode::Forbidden,
        ProblemCode::NotFound,
        ProblemCode::MethodNotAllowed,
        ProblemCode::TokenInvalid,
        ProblemCode::TokenUsed,
        ProblemCode::TokenExpired,
        ProblemCode::TokenRevoked,
        ProblemCode::IdentityMismatch,
        ProblemCode::ClaimExhausted,
        ProblemCode::ClaimExpired,
        ProblemCode::AlreadyProvisioned,
        ProblemCode::FactoryCaUnknown,
        ProblemCode::CsrInvalid,
        ProblemCode::KeyNotAllowed,
        ProblemCode::KeyReused,
        ProblemCode::RenewalConflict,
        ProblemCode::CertificateUnknown,
        ProblemCode::Revoked,
        ProblemCode::ExpiredBeyondGrace,
        ProblemCode::PolicyInvalid,
        ProblemCode::RateLimited,
        ProblemCode::Busy,
        ProblemCode::Internal,
    ];

    /// The wire name (`renewal-conflict`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemCode::BadRequest => "bad-request",
            ProblemCode::UnsupportedMediaType => "unsupported-media-type",
            ProblemCode::TooLarge => "too-large",
            ProblemCode::Unauthorized => "unauthorized",
            ProblemCode::Forbidden => "forbidden",
            ProblemCode::NotFound => "not-found",
            ProblemCode::MethodNotAllowed => "method-not-allowed",
            ProblemCode::TokenInvalid => "token-invalid",
            ProblemCode::TokenUsed => "token-used",
            ProblemCode::TokenExpired => "token-expired",
            ProblemCode::TokenRevoked => "token-revoked",
            ProblemCode::IdentityMismatch => "identity-mismatch",
            ProblemCode::ClaimExhausted => "claim-exhausted",
            ProblemCode::ClaimExpired => "claim-expired",
            ProblemCode::AlreadyProvisioned => "already-provisioned",
            ProblemCode::FactoryCaUnknown => "factory-ca-unknown",
            ProblemCode::CsrInvalid => "csr-invalid",
            ProblemCode::KeyNotAllowed => "key-not-allowed",
            ProblemCode::KeyReused => "key-reused",
            ProblemCode::RenewalConflict => "renewal-conflict",
            ProblemCode::CertificateUnknown => "certificate-unknown",
            ProblemCode::Revoked => "revoked",
            ProblemCode::ExpiredBeyondGrace => "expired-beyond-grace",
            ProblemCode::PolicyInvalid => "policy-invalid",
            ProblemCode::RateLimited => "rate-limited",
            ProblemCode::Busy => "busy",
            ProblemCode::Internal => "internal",
            ProblemCode::Unknown => "unknown",
        }
    }

    /// The HTTP status that goes with the code.
    pub fn status(self) -> u16 {
        match self {
            ProblemCode::BadRequest
            | ProblemCode::CsrInvalid
            | ProblemCode::KeyNotAllowed
            | ProblemCode::KeyReused
            | ProblemCode::PolicyInvalid => 400,
            ProblemCode::Unauthorized
            | ProblemCode::TokenInvalid
            | ProblemCode::FactoryCaUnknown
            | ProblemCode::CertificateUnknown => 401,
            ProblemCode::Forbidden
            | ProblemCode::IdentityMismatch
            | ProblemCode::TokenUsed
            | ProblemCode::TokenExpired
            | ProblemCode::TokenRevoked
            | ProblemCode::ClaimExhausted
            | ProblemCode::ClaimExpired
            | ProblemCode::Revoked
            | ProblemCode::ExpiredBeyondGrace => 403,
            ProblemCode::NotFound => 404,
            ProblemCode::MethodNotAllowed => 405,
            ProblemCode::RenewalConflict | ProblemCode::AlreadyProvisioned => 409,
            ProblemCode::TooLarge => 413,
            ProblemCode::UnsupportedMediaType => 415,
            ProblemCode::RateLimited => 429,
            ProblemCode::Internal | ProblemCode::Unknown => 500,
            ProblemCode::Busy => 503,
        }
    }

    /// A short summary that does not change from one occurrence to the next.
    pub fn title(self) -> &'static str {
        match self {
            ProblemCode::BadRequest => "Bad request",
            ProblemCode::UnsupportedMediaType => "Unsupported content type",
            ProblemCode::TooLarge => "Request body too large",
            ProblemCode::Unauthorized => "Credentials needed",
            ProblemCode::Forbidden => "Not allowed",
            ProblemCode::NotFound => "Not found",
            ProblemCode::MethodNotAllowed => "Method not allowed",
            ProblemCode::TokenInvalid => "Unknown enrolment token",
            ProblemCode::TokenUsed => "Enrolment token already used",
            ProblemCode::TokenExpired => "Enrolment token expired",
            ProblemCode::TokenRevoked => "Enrolment token revoked",
            ProblemCode::IdentityMismatch => "Identity does not match",
            ProblemCode::ClaimExhausted => "Batch claim used up",
            ProblemCode::ClaimExpired => "Batch claim expired",
            ProblemCode::AlreadyProvisioned => "Device already provisioned",
            ProblemCode::FactoryCaUnknown => "Factory certificate not from a trusted factory CA",
            ProblemCode::CsrInvalid => "Certificate request refused",
            ProblemCode::KeyNotAllowed => "Key type not allowed",
            ProblemCode::KeyReused => "Key used before",
            ProblemCode::RenewalConflict => "Certificate already renewed with another key",
            ProblemCode::CertificateUnknown => "Client certificate not issued by this CA",
            ProblemCode::Revoked => "Certificate revoked",
            ProblemCode::ExpiredBeyondGrace => "Certificate expired beyond the grace period",
            ProblemCode::PolicyInvalid => "Invalid policy",
            ProblemCode::RateLimited => "Too many failed attempts",
            ProblemCode::Busy => "CA busy",
            ProblemCode::Internal => "Internal error",
            ProblemCode::Unknown => "Unknown problem",
        }
    }

    /// The problem type URI (a URN: stable, and nothing to fetch).
    pub fn type_uri(self) -> String {
        format!("urn:lanyard:problem:{}", self.as_str())
    }

    /// The code a bare status stands for, when a refusal carries no problem document
    /// (an older CA, or a proxy in between).
    pub fn from_status(status: u16) -> ProblemCode {
        match status {
            400 => ProblemCode::BadRequest,
            401 => ProblemCode::Unauthorized,
            403 => ProblemCode::Forbidden,
            404 => ProblemCode::NotFound,
            405 => ProblemCode::MethodNotAllowed,
            409 => ProblemCode::RenewalConflict,
            413 => ProblemCode::TooLarge,
            415 => ProblemCode::UnsupportedMediaType,
            429 => ProblemCode::RateLimited,
            502..=504 => ProblemCode::Busy,
            _ => ProblemCode::Unknown,
        }
    }
}

impl std::fmt::Display for ProblemCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ProblemCode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProblemCode::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown problem code {s:?}"))
    }
}

/// An RFC 9457 problem document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: ProblemCode,
    /// A serial the problem is about (the earlier certificate of a reused key, the child
    /// that already renewed a parent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

impl Problem {
    pub fn new(code: ProblemCode, detail: impl Into<String>) -> Self {
        Problem {
            type_uri: code.type_uri(),
            title: code.title().to_owned(),
            status: code.status(),
            detail: detail.into(),
            code,
            serial: None,
        }
    }

    /// Reads a problem document, `None` if the body is not one.
    pub fn parse(body: &[u8]) -> Option<Problem> {
        serde_json::from_slice(body).ok()
    }

    pub fn to_json(&self) -> String {
        // A struct of strings and numbers always serialises.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_keep_their_wire_names() {
        for &c in ProblemCode::ALL {
            let json = serde_json::to_string(&c).expect("serialise");
            assert_eq!(json, format!("\"{}\"", c.as_str()));
            assert_eq!(serde_json::from_str::<ProblemCode>(&json).expect("parse"), c);
            assert_eq!(c.as_str().parse::<ProblemCode>(), Ok(c));
            assert!((400..600).contains(&c.status()), "{c}");
        }
        let p = Problem::parse(
            br#"{"type":"x","title":"t","status":400,"detail":"d","code":"some-new-code"}"#,
        )
        .expect("an unknown code still parses");
        assert_eq!(p.code, ProblemCode::Unknown);
        assert_eq!(ProblemCode::RenewalConflict.status(), 409);
        assert!(Problem::parse(b"not json").is_none());
    }
}
