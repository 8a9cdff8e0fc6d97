//! The CA's HTTP surface: EST (RFC 7030) under `/.well-known/est`, publication (`/crl`,
//! `/ocsp`, `/ca/*.crt`), `/healthz` and the device JSON API under `/v1/`.
//!
//! Handlers only parse, call the [`Authority`], and render. Errors become statuses in
//! `CaError::into_response`, nowhere else.

pub mod server;
pub mod tls;

use crate::authority::{Authority, RequestMeta};
use crate::error::{CaError, Result};
use crate::tokens::TokenSecret;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use lanyard_proto::{Problem, ProblemCode, est};
use serde::Deserialize;
use std::sync::Arc;

/// The client certificate (DER) the connection authenticated with, if any. Set by the TLS
/// accept loop, or by a front-end adapter (API Gateway mTLS request context).
#[derive(Clone, Debug, Default)]
pub struct PeerCert(pub Option<Vec<u8>>);

/// The peer's address, for the audit trail.
#[derive(Clone, Debug, Default)]
pub struct Remote(pub Option<String>);

type App = Arc<Authority>;

/// Every endpoint (HTTPS listener).
pub fn router(auth: App) -> Router {
    Router::new()
        .route("/.well-known/est/cacerts", get(cacerts))
        .route("/.well-known/est/simpleenroll", post(simpleenroll))
        .route("/.well-known/est/simplereenroll", post(simplereenroll))
        .route("/.well-known/est/csrattrs", get(csrattrs))
        .route("/v1/policy", get(policy))
        .route("/v1/certificate", get(certificate_status))
        .route("/v1/checkin", post(checkin))
        .merge(publication_router())
        .layer(DefaultBodyLimit::max(est::MAX_BODY))
        .layer(axum::middleware::map_response(problem_for_bare_errors))
        .layer(axum::middleware::from_fn_with_state(auth.clone(), count))
        .with_state(auth)
}

/// The group an issuance was for, set on its response for the metrics.
#[derive(Clone, Debug)]
struct IssuedGroup(String);

/// Counts every answered request for `/metrics`: kind (from the path), result (the problem
/// code of a refusal, set by `CaError::into_response`, else judged by the status), group
/// (of an issuance) and latency.
async fn count(
    State(auth): State<App>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let kind = crate::metrics::RequestKind::of_path(req.uri().path());
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let code = match resp.extensions().get::<ProblemCode>() {
        Some(c) => Some(c.to_string()),
        None => (status >= 400).then(|| ProblemCode::from_status(status).to_string()),
    };
    let group = resp.extensions().get::<IssuedGroup>().map(|g| g.0.as_str());
    auth.metrics().observe(kind, group, status, code.as_deref(), started.elapsed().as_secs_f64());
    resp
}

/// Every 4xx and 5xx is problem+json, also those made outside the handlers (an unknown
/// path, a wrong method, a body over the limit): the status picks the code, and the text
/// the response had becomes the detail. Headers such as `Retry-After` are kept.
async fn problem_for_bare_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(lanyard_proto::problem::CONTENT_TYPE.as_bytes()));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let mut problem = Problem::new(
        ProblemCode::from_status(status.as_u16()),
        if text.is_empty() {
            status.canonical_reason().unwrap_or("error").to_owned()
        } else {
            text
        },
    );
    if problem.code == ProblemCode::RenewalConflict || problem.code == ProblemCode::Unknown {
        problem.code =
            if status.is_server_error() { ProblemCode::Internal } else { ProblemCode::BadRequest };
        problem.type_uri = problem.code.type_uri();
        problem.title = problem.code.title().to_owned();
    }
    problem.status = status.as_u16();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(lanyard_proto::problem::CONTENT_TYPE),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(problem.to_json()))
}

/// The public, unauthenticated part, also served over plain HTTP: CRL and OCSP clients
/// (nginx, OpenSSL, CloudFront) fetch these over http://.
pub fn publication_router() -> Router<App> {
    Router::new()
        .route("/crl", get(crl_issuing))
        .route("/crl/{name}", get(crl_named))
        .route("/ca/{name}", get(ca_named))
        .route("/ocsp", post(ocsp_post))
        .route("/ocsp/{*req}", get(ocsp_get))
        .route("/healthz", get(healthz))
}

/// The plain-HTTP listener's app.
pub fn publication_app(auth: App) -> Router {
    publication_router()
        .route("/.well-known/est/cacerts", get(cacerts))
        .layer(DefaultBodyLimit::max(crate::ocsp::MAX_REQUEST))
        .layer(axum::middleware::map_response(problem_for_bare_errors))
        .with_state(auth)
}

fn meta(remote: &Option<axum::Extension<Remote>>) -> RequestMeta {
    RequestMeta { remote: remote.as_ref().and_then(|r| r.0.0.clone()) }
}

/// The TLS client certificate the connection presented, or 401 saying what to present.
fn client_cert(peer: Option<axum::Extension<PeerCert>>, what: &str) -> Result<Vec<u8>> {
    peer.and_then(|p| p.0.0)
        .ok_or_else(|| CaError::Unauthorized(format!("{what} as TLS client certificate")))
}

fn require_content_type(headers: &HeaderMap, expected: &'static str) -> Result<()> {
    let given = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = given.split(';').next().unwrap_or("").trim();
    let want = expected.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case(want) {
        Ok(())
    } else {
        Err(CaError::UnsupportedMediaType { given: given.to_owned(), expected })
    }
}

fn pkcs7_response(certs: &[Vec<u8>]) -> Result<Response> {
    let der = est::certs_only_pkcs7(certs).map_err(CaError::encoding("PKCS#7"))?;
    let mut r = est::encode_base64(&der).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(est::CT_PKCS7_CERTS));
    h.insert("content-transfer-encoding", HeaderValue::from_static("base64"));
    Ok(r)
}

fn der_response(ct: &'static str, der: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, ct), (header::CACHE_CONTROL, "max-age=300")], der).into_response()
}

/// `identity:token` from `Authorization: Basic`.
fn basic_credentials(headers: &HeaderMap) -> Result<(String, TokenSecret)> {
    let missing = || {
        CaError::Unauthorized("simpleenroll needs HTTP Basic credentials (the identity as user, the enrolment token or batch claim as password) or a factory certificate as the TLS client certificate".into())
    };
    let v = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or_else(missing)?;
    let b64 = v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")).ok_or_else(missing)?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| CaError::Unauthorized("Basic credentials are not base64".into()))?;
    let raw = zeroize::Zeroizing::new(
        String::from_utf8(raw)
            .map_err(|_| CaError::Unauthorized("Basic credentials are not UTF-8".into()))?,
    );
    let (id, tok) = raw.split_once(':').ok_or_else(missing)?;
    Ok((id.to_owned(), TokenSecret::from_presented(tok)))
}

fn csr_from_body(headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>> {
    require_content_type(headers, est::CT_PKCS10)?;
    est::decode_base64(body).map_err(|e| CaError::BadRequest(format!("CSR {e}")))
}

async fn cacerts(State(auth): State<App>) -> Result<Response> {
    pkcs7_response(&auth.chain())
}

async fn simpleenroll(
    State(auth): State<App>,
    peer: Option<axum::Extension<PeerCert>>,
    remote: Option<axum::Extension<Remote>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    // No credentials but a client certificate: a factory certificate (IDevID).
    let factory =
        peer.and_then(|p| p.0.0.clone()).filter(|_| !headers.contains_key(header::AUTHORIZATION));
    let issued = match factory {
        Some(factory_der) => {
            let csr = csr_from_body(&headers, &body)?;
            auth.enroll_with_factory_cert(&factory_der, &csr, &meta(&remote)).await?
        }
        None => {
            // Credentials first: a request without them is told so, whatever its body.
            let (identity, token) = basic_credentials(&headers)?;
            auth.enroll(&identity, &token, &csr_from_body(&headers, &body)?, &meta(&remote)).await?
        }
    };
    tracing::info!(identity = %issued.record.identity, serial = %issued.record.serial, replayed = issued.replayed, "enrolled");
    let mut r = pkcs7_response(&[issued.record.der])?;
    r.extensions_mut().insert(IssuedGroup(issued.record.group));
    Ok(r)
}

async fn simplereenroll(
    State(auth): State<App>,
    peer: Option<axum::Extension<PeerCert>>,
    remote: Option<axum::Extension<Remote>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let cert = client_cert(peer, "simplereenroll needs the current certificate")?;
    let csr = csr_from_body(&headers, &body)?;
    let issued = auth.reenroll(&cert, &csr, &meta(&remote)).await?;
    tracing::info!(identity = %issued.record.identity, serial = %issued.record.serial, from = issued.record.parent_serial.as_deref().unwrap_or("-"), replayed = issued.replayed, "renewed");
    let mut r = pkcs7_response(&[issued.record.der])?;
    r.extensions_mut().insert(IssuedGroup(issued.record.group));
    Ok(r)
}

/// Whether a factory certificate may stand for its group: at `/csrattrs`, which a device
/// asks before its first enrolment; not at `/v1/policy`, where a certificate this CA did not
/// issue stays `certificate-unknown` (for an enrolled device, a final refusal: it enrols
/// again).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Factory {
    Accepted,
    Refused,
}

/// Group whose policy applies to a request: the client certificate's (valid, issued here),
/// or the token's (HTTP Basic, unused and unexpired; checked, not consumed). Anyone else is
/// refused: a group's policy is for its devices.
async fn group_of(
    auth: &Authority,
    peer: Option<&PeerCert>,
    headers: &HeaderMap,
    factory: Factory,
) -> Result<String> {
    if let Some(der) = peer.and_then(|p| p.0.as_ref()) {
        return match auth.authenticate_device(der).await {
            Ok(rec) => Ok(rec.group),
            // Not a certificate of this CA: a factory certificate, before its enrolment.
            Err(e)
                if factory == Factory::Accepted
                    && e.code() == lanyard_proto::ProblemCode::CertificateUnknown
                    && !headers.contains_key(header::AUTHORIZATION) =>
            {
                auth.group_of_factory_cert(der).await
            }
            Err(e) => Err(e),
        };
    }
    if !headers.contains_key(header::AUTHORIZATION) {
        return Err(CaError::Unauthorized(
            "present a device certificate, or an unused enrolment token as HTTP Basic credentials (identity:token)".into(),
        ));
    }
    let (identity, token) = basic_credentials(headers)?;
    auth.group_of_token(&identity, &token).await
}

async fn csrattrs(
    State(auth): State<App>,
    peer: Option<axum::Extension<PeerCert>>,
    headers: HeaderMap,
) -> Result<Response> {
    let group = group_of(&auth, peer.as_ref().map(|p| &p.0), &headers, Factory::Accepted).await?;
    let policy = auth.policy(&group).await?;
    let der = lanyard_proto::csrattrs::encode(policy.preferred_key())
        .map_err(CaError::encoding("CSR attributes"))?;
    let mut r = est::encode_base64(&der).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(est::CT_CSRATTRS));
    r.headers_mut().insert("content-transfer-encoding", HeaderValue::from_static("base64"));
    Ok(r)
}

#[derive(Deserialize)]
struct PolicyQuery {
    group: Option<String>,
}

async fn policy(
    State(auth): State<App>,
    peer: Option<axum::Extension<PeerCert>>,
    headers: HeaderMap,
    Query(q): Query<PolicyQuery>,
) -> Result<Response> {
    let group = group_of(&auth, peer.as_ref().map(|p| &p.0), &headers, Factory::Refused).await?;
    if let Some(g) = q.group
        && g != group
    {
        return Err(CaError::Forbidden(format!(
            "these credentials are for group {group:?}, not {g:?}"
        )));
    }
    Ok(axum::Json(auth.policy_document(&group).await?).into_response())
}

async fn certificate_status(
    State(auth): State<App>,
    peer: Option<axum::Extension<PeerCert>>,
    remote: Option<axum::Extension<Remote>>,
) -> Result<Response> {
    let der = client_cert(peer, "present the certificate")?;
    let rec = auth.known_device_cert(&der).await?;
    if rec.revocation.is_none() {
        // A device checking in with a renewed certificate has it: its parent retires.
        auth.retire_parent(&rec, &meta(&remote)).await;
    }
    Ok(axum::Json(auth.certificate_status(&rec).await?).into_response())
}

/// Longest check-in report accepted (a report is a few hundred bytes; 64 routes with long
/// names stay well under this).
const CHECKIN_MAX_BODY: usize = 64 * 1024;

async fn checkin(
    State(auth): State<App>,
    peer: Option<axum::Extension<PeerCert>>,
    remote: Option<axum::Extension<Remote>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    let der = client_cert(peer, "check in with the device certificate")?;
    require_content_type(&headers, "application/json")?;
    if body.len() > CHECKIN_MAX_BODY {
        return Err(CaError::BadRequest(format!(
            "check-in report is {} bytes, more than {CHECKIN_MAX_BODY}",
            body.len()
        )));
    }
    let report: lanyard_proto::api::CheckinReport = serde_json::from_slice(&body)
        .map_err(|e| CaError::BadRequest(format!("check-in report: {e}")))?;
    let answer = auth.checkin(&der, report, &meta(&remote)).await?;
    tracing::debug!(identity = %answer.identity, serial = %answer.serial, status = %answer.status, "check-in");
    Ok(axum::Json(answer).into_response())
}

/// `/crl`: the first issuing CA's CRL, the distribution point its certificates name.
async fn crl_issuing(State(auth): State<App>) -> Result<Response> {
    Ok(der_response("application/pkix-crl", auth.issuer_crl(1).await?))
}

/// `/crl/root`, `/crl/root-N` (after a root rotation) and `/crl/issuing-N` (issuing CAs
/// after a rotation).
async fn crl_named(State(auth): State<App>, Path(name): Path<String>) -> Result<Response> {
    let der = match name.as_str() {
        "root" => auth.root_crl_of(1).await?,
        n if n.starts_with("root-") => auth.root_crl_of(generation_in(n, "root-", "")?).await?,
        n => auth.issuer_crl(generation_in(n, "issuing-", "")?).await?,
    };
    Ok(der_response("application/pkix-crl", der))
}

/// `/ca/root.crt`, `/ca/issuing.crt` (the first issuing CA) and `/ca/issuing-N.crt`: the
/// AIA caIssuers URLs.
async fn ca_named(State(auth): State<App>, Path(name): Path<String>) -> Result<Response> {
    let der = match name.as_str() {
        "root.crt" => auth.root_certificate_of(1)?,
        n if n.starts_with("root-") => {
            auth.root_certificate_of(generation_in(n, "root-", ".crt")?)?
        }
        "issuing.crt" => auth.issuer_certificate(1)?,
        n => auth.issuer_certificate(generation_in(n, "issuing-", ".crt")?)?,
    };
    Ok(der_response("application/pkix-cert", der))
}

/// The N of `PREFIX` N `SUFFIX`; anything else is not found.
fn generation_in(name: &str, prefix: &str, suffix: &str) -> Result<u32> {
    name.strip_prefix(prefix)
        .and_then(|r| r.strip_suffix(suffix))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| CaError::NotFound(format!("no such publication: {name:?}")))
}

fn ocsp_response(der: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/ocsp-response")], der).into_response()
}

async fn ocsp_post(State(auth): State<App>, headers: HeaderMap, body: Bytes) -> Result<Response> {
    require_content_type(&headers, "application/ocsp-request")?;
    Ok(ocsp_response(crate::ocsp::respond(&auth, &body).await))
}

async fn ocsp_get(State(auth): State<App>, Path(req): Path<String>) -> Result<Response> {
    // RFC 6960 A.1: GET {url}/{url-encoding of base-64 encoding of the DER request}.
    // axum has already percent-decoded the path.
    let der = base64::engine::general_purpose::STANDARD
        .decode(req.trim_start_matches('/'))
        .map_err(|_| CaError::BadRequest("OCSP GET request is not base64".into()))?;
    if der.len() > crate::ocsp::MAX_REQUEST {
        return Err(CaError::TooLarge { limit: crate::ocsp::MAX_REQUEST });
    }
    Ok(ocsp_response(crate::ocsp::respond(&auth, &der).await))
}

async fn healthz(State(auth): State<App>) -> Response {
    match auth.ready().await {
        Ok(()) => {
            let mut body = serde_json::json!({"status": "ok"});
            // The issuance pacer's counters (admitted, queued, refused, backlog).
            if let Some(stats) = auth.admission_stats() {
                body["issuance"] = serde_json::to_value(stats).unwrap_or_default();
            }
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "health check: store unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({"status": "store unavailable"})),
            )
                .into_response()
        }
    }
}
