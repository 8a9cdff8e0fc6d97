//! The OCSP responder (RFC 6960): answers for device certificates, signed by the issuing
//! CA itself, and for the issuing CA, signed by the root where the root key is online.
//!
//! Always answers with a DER `OCSPResponse`: a request that does not parse gets
//! `malformedRequest`, not an HTTP error, as OCSP clients expect.

use crate::authority::Authority;
use crate::revocation::Reason;
use crate::signer::{SharedSigner, signature_algorithm_identifier};
use aws_lc_rs::digest::{self, SHA1_FOR_LEGACY_USE_ONLY, SHA256};
use const_oid::db::rfc5912::{ID_SHA_1, ID_SHA_256};
use const_oid::db::rfc6960::{ID_PKIX_OCSP_BASIC, ID_PKIX_OCSP_NONCE};
use der::asn1::{BitString, GeneralizedTime, OctetString};
use der::{Decode, Encode};
use rcgen::SigningKey;
use time::OffsetDateTime;
use x509_cert::Certificate;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::CrlReason;
use x509_ocsp::{
    BasicOcspResponse, CertId, CertStatus, OcspGeneralizedTime, OcspRequest, OcspResponse,
    OcspResponseStatus, ResponderId, ResponseBytes, ResponseData, RevokedInfo, SingleResponse,
    Version,
};

/// Largest OCSP request read (one or a few CertIDs are a few hundred bytes).
pub const MAX_REQUEST: usize = 16 * 1024;

/// A CA as OCSP requests name it: hashes of its subject and its public key.
struct CaId {
    name_sha1: Vec<u8>,
    key_sha1: Vec<u8>,
    name_sha256: Vec<u8>,
    key_sha256: Vec<u8>,
}

impl CaId {
    fn of(cert: &Certificate) -> Option<CaId> {
        let name = cert.tbs_certificate.subject.to_der().ok()?;
        let key = cert.tbs_certificate.subject_public_key_info.subject_public_key.raw_bytes();
        Some(CaId {
            name_sha1: digest::digest(&SHA1_FOR_LEGACY_USE_ONLY, &name).as_ref().to_vec(),
            key_sha1: digest::digest(&SHA1_FOR_LEGACY_USE_ONLY, key).as_ref().to_vec(),
            name_sha256: digest::digest(&SHA256, &name).as_ref().to_vec(),
            key_sha256: digest::digest(&SHA256, key).as_ref().to_vec(),
        })
    }

    fn matches(&self, id: &CertId) -> bool {
        let (n, k) = if id.hash_algorithm.oid == ID_SHA_1 {
            (&self.name_sha1, &self.key_sha1)
        } else if id.hash_algorithm.oid == ID_SHA_256 {
            (&self.name_sha256, &self.key_sha256)
        } else {
            return false;
        };
        id.issuer_name_hash.as_bytes() == n.as_slice()
            && id.issuer_key_hash.as_bytes() == k.as_slice()
    }
}

fn gtime(t: OffsetDateTime) -> Result<OcspGeneralizedTime, der::Error> {
    let secs = u64::try_from(t.unix_timestamp()).unwrap_or(0);
    Ok(OcspGeneralizedTime(GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(
        secs,
    ))?))
}

fn status_only(status: OcspResponseStatus) -> Vec<u8> {
    OcspResponse { response_status: status, response_bytes: None }.to_der().unwrap_or_default()
}

fn crl_reason(r: Reason) -> CrlReason {
    match r {
        Reason::Unspecified => CrlReason::Unspecified,
        Reason::KeyCompromise => CrlReason::KeyCompromise,
        Reason::CaCompromise => CrlReason::CaCompromise,
        Reason::AffiliationChanged => CrlReason::AffiliationChanged,
        Reason::Superseded => CrlReason::Superseded,
        Reason::CessationOfOperation => CrlReason::CessationOfOperation,
        Reason::PrivilegeWithdrawn => CrlReason::PrivilegeWithdrawn,
        Reason::AaCompromise => CrlReason::AaCompromise,
    }
}

/// RFC 8954: a nonce, if sent, is an OCTET STRING of 1 to 32 octets (inside the
/// extension's own OCTET STRING). Anything else is a malformed request, not something to
/// echo back.
fn nonce_ok(req: &OcspRequest) -> bool {
    let Some(exts) = req.tbs_request.request_extensions.as_ref() else { return true };
    exts.iter().filter(|e| e.extn_id == ID_PKIX_OCSP_NONCE).all(|e| {
        OctetString::from_der(e.extn_value.as_bytes())
            .is_ok_and(|n| (1..=32).contains(&n.as_bytes().len()))
    }) && exts.iter().filter(|e| e.extn_id == ID_PKIX_OCSP_NONCE).count() <= 1
}

/// Parses and checks a DER OCSP request: 1 to 16 certificates asked about, a nonce of 1
/// to 32 octets if any. `None` is a malformed request.
pub fn parse_request(request_der: &[u8]) -> Option<OcspRequest> {
    let req = OcspRequest::from_der(request_der).ok()?;
    let n = req.tbs_request.request_list.len();
    ((1..=16).contains(&n) && nonce_ok(&req)).then_some(req)
}

/// Answers one DER OCSP request.
pub async fn respond(auth: &Authority, request_der: &[u8]) -> Vec<u8> {
    let Some(req) = parse_request(request_der) else {
        return status_only(OcspResponseStatus::MalformedRequest);
    };
    match build(auth, &req).await {
        Ok(Some(der)) => der,
        Ok(None) => status_only(OcspResponseStatus::Unauthorized),
        Err(e) => {
            tracing::error!(error = %e, "OCSP answer failed");
            status_only(OcspResponseStatus::InternalError)
        }
    }
}

async fn build(auth: &Authority, req: &OcspRequest) -> Result<Option<Vec<u8>>, String> {
    let mut roots = Vec::new();
    for (der, signer) in auth.root_keys() {
        let cert = Certificate::from_der(der).map_err(|e| e.to_string())?;
        let id = CaId::of(&cert).ok_or("root CA name")?;
        roots.push((cert, id, signer));
    }
    let mut issuers = Vec::new();
    for (generation, der) in auth.issuer_certificates() {
        let cert = Certificate::from_der(der).map_err(|e| e.to_string())?;
        let id = CaId::of(&cert).ok_or("issuing CA name")?;
        issuers.push((generation, cert, id));
    }

    // One response has one signer: a root when the first request is about a certificate a
    // root issued (an issuing CA, or a cross-certificate), otherwise the issuing CA the
    // first request names (the current one or a retired one still answering for its
    // certificates). Requests about another CA's certificates get "unknown".
    let Some(first) = req.tbs_request.request_list.first() else { return Ok(None) };
    let root = roots.iter().find(|(_, id, _)| id.matches(&first.req_cert));
    let chosen = match root {
        Some(_) => None,
        None => issuers
            .iter()
            .find(|(_, _, id)| id.matches(&first.req_cert))
            .or_else(|| issuers.first()),
    };
    let (signer, signer_cert): (&SharedSigner, &Certificate) = match (root, chosen) {
        (Some((cert, _, Some(s))), _) => (s, cert),
        // About a certificate of a root whose key is offline: nobody here may answer.
        (Some((_, _, None)), _) => return Ok(None),
        (None, Some((generation, cert, _))) => {
            let (_, s) = auth.issuer_keys(*generation).ok_or("issuing CA key")?;
            (s, cert)
        }
        (None, None) => return Ok(None),
    };

    let now = auth.now();
    let next = now + auth.publication().ocsp_validity;
    let mut responses = Vec::with_capacity(req.tbs_request.request_list.len());
    for r in &req.tbs_request.request_list {
        let id = &r.req_cert;
        let serial = lanyard_proto::serial::to_hex(id.serial_number.as_bytes());
        let status = match chosen {
            Some((_, _, issuer_id)) if issuer_id.matches(id) => {
                match auth.store().cert(&serial).await.map_err(|e| e.to_string())? {
                    Some(rec) => match rec.revocation {
                        Some(rev) => CertStatus::Revoked(RevokedInfo {
                            revocation_time: gtime(rev.at).map_err(|e| e.to_string())?,
                            revocation_reason: Some(crl_reason(rev.reason)),
                        }),
                        None => CertStatus::good(),
                    },
                    None => CertStatus::unknown(),
                }
            }
            None if root.is_some_and(|(_, rid, _)| rid.matches(id)) => {
                match auth.issuing_ca_serial(id.serial_number.as_bytes()) {
                    Some(None) => CertStatus::good(),
                    Some(Some(rev)) => CertStatus::Revoked(RevokedInfo {
                        revocation_time: gtime(rev.at).map_err(|e| e.to_string())?,
                        revocation_reason: Some(crl_reason(rev.reason)),
                    }),
                    None if auth.cross_serial(id.serial_number.as_bytes()) => CertStatus::good(),
                    None => CertStatus::unknown(),
                }
            }
            _ => CertStatus::unknown(),
        };
        responses.push(SingleResponse {
            cert_id: id.clone(),
            cert_status: status,
            this_update: gtime(now - crate::profile::BACKDATE).map_err(|e| e.to_string())?,
            next_update: Some(gtime(next).map_err(|e| e.to_string())?),
            single_extensions: None,
        });
    }

    // Echo the nonce, so clients that send one (openssl does) can match the answer.
    let nonce: Option<Extension> = req
        .tbs_request
        .request_extensions
        .as_ref()
        .and_then(|exts| exts.iter().find(|e| e.extn_id == ID_PKIX_OCSP_NONCE).cloned());

    let key_bits =
        signer_cert.tbs_certificate.subject_public_key_info.subject_public_key.raw_bytes();
    let key_hash = digest::digest(&SHA1_FOR_LEGACY_USE_ONLY, key_bits);
    let tbs = ResponseData {
        version: Version::V1,
        responder_id: ResponderId::ByKey(
            OctetString::new(key_hash.as_ref()).map_err(|e| e.to_string())?,
        ),
        produced_at: gtime(now).map_err(|e| e.to_string())?,
        responses,
        response_extensions: nonce.map(|n| vec![n]),
    };
    let tbs_der = tbs.to_der().map_err(|e| e.to_string())?;
    let sig = signer.sign(&tbs_der).map_err(|e| e.to_string())?;
    let basic = BasicOcspResponse {
        tbs_response_data: tbs,
        signature_algorithm: signature_algorithm_identifier(signer.0.key_algorithm()),
        signature: BitString::from_bytes(&sig).map_err(|e| e.to_string())?,
        certs: None,
    };
    let resp = OcspResponse {
        response_status: OcspResponseStatus::Successful,
        response_bytes: Some(ResponseBytes {
            response_type: ID_PKIX_OCSP_BASIC,
            response: OctetString::new(basic.to_der().map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?,
        }),
    };
    resp.to_der().map(Some).map_err(|e| e.to_string())
}
