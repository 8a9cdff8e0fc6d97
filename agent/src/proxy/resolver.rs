//! Client certificate for upstream handshakes: whatever the agent holds at that moment.

use crate::agent::Loaded;
use arc_swap::ArcSwapOption;
use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use std::sync::Arc;

#[derive(Debug)]
pub struct CurrentCert(pub Arc<ArcSwapOption<Loaded>>);

impl ResolvesClientCert for CurrentCert {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.load().as_ref().map(|l| l.certified.clone())
    }
    fn has_certs(&self) -> bool {
        self.0.load().is_some()
    }
}
