//! Client certificate for upstream handshakes: whatever the agent holds at that moment.

use crate::credential::CredentialView;
use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use std::sync::Arc;

#[derive(Debug)]
pub struct CurrentCert(pub CredentialView);

impl ResolvesClientCert for CurrentCert {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.current().map(|l| l.certified.clone())
    }
    fn has_certs(&self) -> bool {
        self.0.current().is_some()
    }
}
