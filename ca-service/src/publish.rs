//! Where a CA's publications go: its CRLs, and for AWS edges the bundle and the revocation
//! export. The embedded CA writes files (`DIR/crl/`, served by its publication listener);
//! the serverless CA its S3 bucket; either one an S3 feed (`lanyard-ca publish --s3`).

use crate::authority::Authority;
use crate::ca_dir::CaDir;
use crate::error::Result;

/// One place publications go.
#[async_trait::async_trait]
pub trait Publisher: Send + Sync {
    /// Writes the CA's current publications; returns where, for the operator.
    async fn publish(&self, auth: &Authority) -> Result<String>;
}

#[async_trait::async_trait]
impl Publisher for CaDir {
    async fn publish(&self, auth: &Authority) -> Result<String> {
        Ok(self.publish_crls(auth).await?.display().to_string())
    }
}
