//! The local mTLS proxy: plain HTTP in (loopback or a UNIX socket), HTTPS out with the
//! device's client certificate.
//!
//! Each listener is a route to one upstream (`GET /path` goes to `https://upstream/path`,
//! with Host and SNI set to the upstream's name) and/or a forward proxy for allow-listed
//! hosts (`GET http://host/path` goes to `https://host/path`). Anything else gets 403 and
//! no connection is made: the proxy never becomes an open relay.
//!
//! Every new upstream TLS handshake asks [`resolver::CurrentCert`] for the certificate, so
//! a renewal (by this process or another) needs no restart; pooled connections opened
//! with the previous certificate are retired when the serial changes.
//!
//! # Layout
//! - [`resolver`]: the client-certificate resolver over the current credential.
//! - [`upstream`]: per-route HTTPS clients (pooling, ALPN h2/http1.1, retiring).
//! - [`handler`]: one request: is the credential usable, target, forward, map errors.
//! - [`listener`]: TCP and UNIX listeners and the accept loop.

pub mod handler;
pub mod listener;
pub mod resolver;
pub mod upstream;

pub use listener::{SHUTDOWN_GRACE, serve_route};
