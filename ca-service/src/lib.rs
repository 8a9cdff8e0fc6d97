//! `lanyard-ca`: the Lanyard CA service. Issues device client certificates over EST,
//! records every issuance and revocation, and publishes CRLs, OCSP answers and the
//! CloudFront trust store bundle.
//!
//! # Layout
//! - [`authority`]: the flows (enrol, renew, revoke, tokens, policy, CRLs), top to bottom.
//! - [`profile`]: what goes into device, CA and server certificates.
//! - [`csr`]: proof of possession and key checks on incoming CSRs.
//! - [`signer`]: CA keys behind the `Signer` trait (local key files).
//! - [`store`]: records behind the `Store` trait (embedded SQLite).
//! - [`ocsp`]: the RFC 6960 responder.
//! - [`bundle`]: CloudFront's trust store rules for a CA bundle.
//! - [`ca_dir`]: the embedded CA's directory (init, load, published files).
//! - [`serve`]: `lanyard-ca serve` as a library call (listeners, CRL refresh).
//! - [`http`]: EST, publication and `/v1/` endpoints; TLS and accept loops.
//! - [`fleet`]: `fleet simulate`, a fleet's renewals in virtual time with the agent's own
//!   decision against a model of the CA's admission control.
//! - `aws` (feature `aws`): the serverless CA: KMS signer, DynamoDB store, S3 publishing.
//! - [`admission`]: the issuance pacer (`serve --max-issuance-rate`).
//! - [`tokens`], [`revocation`], [`clock`], [`error`], [`fsutil`]: small shared pieces.
#![forbid(unsafe_code)]

pub mod admin;
pub mod admin_pki;
pub mod admission;
pub mod authority;
#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "aws")]
pub mod aws_lambda;
pub mod bundle;
pub mod ca_dir;
pub mod clock;
pub mod console;
pub mod csr;
pub mod error;
pub mod fleet;
pub mod fsutil;
pub mod http;
pub mod inventory;
pub mod metrics;
pub mod ocsp;
pub mod profile;
pub mod publish;
pub mod revocation;
pub mod rotation;
pub mod serve;
pub mod signer;
pub mod store;
pub mod tokens;

pub use authority::Authority;
pub use error::CaError;
