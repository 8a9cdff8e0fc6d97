//! The CA on AWS Lambda behind API Gateway: the same axum router as `serve`, fed by
//! `lambda_http`. Renewal (`simplereenroll`, `/v1/`) needs the device's certificate: with
//! API Gateway mTLS on the renewal hostname it arrives in the request context
//! (`authentication.clientCert.clientCertPem` of an HTTP API) and becomes the same [`PeerCert`] the TLS listener sets. API Gateway has checked
//! the chain against its trust store; the authority checks it again (issuer signature,
//! record, revocation). Bootstrap (`simpleenroll`) uses a hostname without mTLS.

use crate::authority::Authority;
use crate::http::{PeerCert, Remote};
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};
use std::sync::Arc;
use tower::ServiceExt;

/// The device's certificate (DER) from an API Gateway request context.
pub fn peer_cert(req: &Request) -> Option<Vec<u8>> {
    let pem = match req.request_context_ref()? {
        RequestContext::ApiGatewayV2(c) => {
            c.authentication.as_ref()?.client_cert.as_ref()?.client_cert_pem.clone()?
        }
        // REST APIs (v1) carry it under `identity.clientCert`, which the event types here
        // do not model: deploy the renewal hostname as an HTTP API (infra/ does).
        _ => return None,
    };
    pem::parse(pem.as_bytes()).ok().map(|p| p.into_contents())
}

fn source_ip(req: &Request) -> Option<String> {
    match req.request_context_ref()? {
        RequestContext::ApiGatewayV2(c) => c.http.source_ip.clone(),
        RequestContext::ApiGatewayV1(c) => c.identity.source_ip.clone(),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// Handles one API Gateway request with the CA's router.
pub async fn handle(auth: Arc<Authority>, mut req: Request) -> http::Response<axum::body::Body> {
    let cert = peer_cert(&req);
    let remote = source_ip(&req);
    req.extensions_mut().insert(PeerCert(cert));
    req.extensions_mut().insert(Remote(remote));
    match crate::http::router(auth).oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}
