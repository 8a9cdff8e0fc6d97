//! `lanyard-e2e`: end-to-end tests of Lanyard against real peers.
//!
//! The tests under `tests/` run the built `lanyard-ca` binary as a process and talk to it
//! with programs nobody on this project wrote: openssl (keys, CSRs, `verify`, `ocsp`),
//! curl (EST over HTTPS, client certificates), nginx (a CloudFront stand-in doing mTLS
//! with `ssl_crl`) and pkilint (RFC 5280 linting). Nothing in here parses a certificate
//! itself: if the CA and these helpers shared a bug, the tests could not see it.
//!
//! # Layout
//! - [`cmd`]: run a program, capture its output, fail with the whole story.
//! - [`bins`]: find (and keep fresh) the `lanyard-ca` binary under test.
//! - [`peers`]: `require_peer`: fail under `CI=true` when a peer is missing, skip otherwise.
//! - [`ca`]: a CA in a scratch directory (`init`), its CLI, and `serve` as a child process
//!   that is killed on drop.
//! - [`est`]: an EST client made of curl: enrol, re-enrol, GET and POST.
//! - [`pki`]: openssl and pkilint helpers: keys, CSRs, PEM handling, certificate fields.
#![forbid(unsafe_code)]

pub mod bins;
pub mod ca;
pub mod cmd;
pub mod est;
pub mod nginx;
pub mod peers;
pub mod pki;

pub use ca::{Ca, Server};
pub use cmd::{Out, run, run_in};
pub use est::Resp;
pub use peers::{require_peer, require_peers};
