//! What the Lanyard CA (`lanyard-ca`) and the agent (`lanyard`) agree on.
//!
//! This crate holds data shapes and wire formats only: no network, no keys, no clock.
//! Both binaries link it, so it must stay free of heavy dependencies.
//!
//! # Layout
//! - [`admission`]: the CA's issuance pacing (also modelled by the fleet simulator).
//! - [`api`]: the CA's device JSON API (`/v1/certificate`).
//! - [`keyalg`]: the key algorithms CloudFront accepts, by their CLI names.
//! - [`policy`]: a group's renewal policy as the CA serves it at `/v1/policy`.
//! - [`est`]: EST (RFC 7030) bodies: base64 DER, certs-only PKCS#7.
//! - [`csrattrs`]: EST `/csrattrs`: which key the CA wants the device to generate.
//! - [`renewal`]: when to renew (the decision the agent and the fleet simulator share).
//! - [`problem`]: refusals on the wire (RFC 9457 problem+json) and their stable codes.
//! - [`output`]: command output that ends quietly on a closed pipe (`outln!`).
//! - [`serial`]: certificate serials in hex and CloudFront's colon-hex form.
//! - [`token`]: the enrolment token format (it carries the identity).
//! - [`duration`]: human durations (`24h`, `7d`) for CLI flags and config.
//! - [`timefmt`]: RFC 3339 timestamps for output, logs and the audit trail.
#![forbid(unsafe_code)]

pub mod admission;
pub mod api;
pub mod claim;
pub mod csrattrs;
pub mod duration;
pub mod est;
pub mod keyalg;
pub mod output;
pub mod policy;
pub mod problem;
pub mod renewal;
pub mod serial;
pub mod timefmt;
pub mod token;

pub use keyalg::KeyAlgorithm;
pub use policy::{GroupPolicy, PolicyError};
pub use problem::{Problem, ProblemCode};
