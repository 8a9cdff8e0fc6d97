//! `lanyard`: the device agent. Generates the key on the device, enrols with the CA over
//! EST, keeps the key in the OS keystore (or a file store), renews before expiry, and runs
//! a local proxy that adds the client certificate to calls toward CloudFront.
//!
//! It must never link the CA's database, AWS code, or a second crypto provider.
//!
//! # Layout
//! - [`agent`]: the identity side: enrol, renew, check in, status, the in-memory state.
//! - [`credential`]: what joins it to the proxy: a watch of the credential in use and a
//!   "recheck now" channel back (the proxy holds nothing else of the agent).
//! - [`schedule`]: when to renew: a pure function of time, certificate, policy, failures.
//! - [`daemon`]: `lanyard run`, the loop that carries out the schedule (systemd aware).
//! - [`proxy`]: the local mTLS proxy (routes, forward proxy, hot-swapped certificate).
//! - [`est`]: the EST client and the CA's `/v1/` API.
//! - [`keys`], [`verify`], [`trust`]: device keys and CSRs, checks on issued
//!   certificates, trust in the CA.
//! - [`config`], [`policy_file`], [`state`]: the config file, a local policy override,
//!   and what the agent remembers between runs.
//! - [`token_file`]: zero-touch enrolment from a token file at `lanyard run`.
//! - [`status_server`], [`metrics`], [`hooks`], [`logging`], [`clock`], [`fsutil`],
//!   [`error`]: the rest.
#![forbid(unsafe_code)]

pub mod agent;
pub mod clock;
pub mod config;
pub mod credential;
pub mod daemon;
pub mod device_id;
pub mod error;
pub mod est;
pub mod fsutil;
pub mod hooks;
pub mod https;
pub mod hw;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod policy_file;
pub mod proxy;
pub mod schedule;
pub mod state;
pub mod status_server;
pub mod token_file;
pub mod trust;
pub mod verify;
pub mod x509;
