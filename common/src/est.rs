//! EST (RFC 7030) message bodies.
//!
//! EST sends DER as base64 (`Content-Transfer-Encoding: base64`), line-wrapped or not:
//! requests are PKCS#10 (`application/pkcs10`), answers certs-only PKCS#7
//! (`application/pkcs7-mime; smime-type=certs-only`), i.e. a CMS SignedData with no
//! signers whose `certificates` field carries the chain.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cms::cert::CertificateChoices;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, DigestAlgorithmIdentifiers, EncapsulatedContentInfo, SignedData, SignerInfos,
};
use const_oid::db::rfc5911::{ID_DATA, ID_SIGNED_DATA};
use der::asn1::SetOfVec;
use der::{Any, Decode, Encode};

pub const CT_PKCS10: &str = "application/pkcs10";
pub const CT_PKCS7_CERTS: &str = "application/pkcs7-mime; smime-type=certs-only";
pub const CT_CSRATTRS: &str = "application/csrattrs";

/// Largest EST body the CA reads (a CSR is a few KB; 64 KiB leaves room for RSA-4096).
pub const MAX_BODY: usize = 64 * 1024;

/// What can be wrong with an EST body. Messages name the problem for the person reading.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EstFormatError {
    #[error("body is not base64: {0}")]
    Base64(String),
    #[error("body is empty")]
    Empty,
    #[error("body is not a certs-only PKCS#7: {0}")]
    Pkcs7(String),
    #[error("PKCS#7 holds no certificate")]
    NoCertificates,
}

/// Decodes an EST base64 body, ignoring whitespace and line breaks.
pub fn decode_base64(body: &[u8]) -> Result<Vec<u8>, EstFormatError> {
    let compact: Vec<u8> = body.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    if compact.is_empty() {
        return Err(EstFormatError::Empty);
    }
    STANDARD.decode(&compact).map_err(|e| EstFormatError::Base64(e.to_string()))
}

/// Encodes DER as base64 wrapped at 64 columns, as EST servers customarily send it.
pub fn encode_base64(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 1);
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// Builds a certs-only PKCS#7 (DER) from DER certificates.
pub fn certs_only_pkcs7(certs_der: &[Vec<u8>]) -> Result<Vec<u8>, EstFormatError> {
    let e = |e: der::Error| EstFormatError::Pkcs7(e.to_string());
    let mut choices = Vec::with_capacity(certs_der.len());
    for c in certs_der {
        let cert = x509_cert::Certificate::from_der(c).map_err(e)?;
        choices.push(CertificateChoices::Certificate(cert));
    }
    let sd = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: DigestAlgorithmIdentifiers::try_from(Vec::new()).map_err(e)?,
        encap_content_info: EncapsulatedContentInfo { econtent_type: ID_DATA, econtent: None },
        certificates: Some(CertificateSet(SetOfVec::try_from(choices).map_err(e)?)),
        crls: None,
        signer_infos: SignerInfos(SetOfVec::try_from(Vec::new()).map_err(e)?),
    };
    let ci =
        ContentInfo { content_type: ID_SIGNED_DATA, content: Any::encode_from(&sd).map_err(e)? };
    ci.to_der().map_err(e)
}

/// Extracts the DER certificates of a certs-only PKCS#7 (DER). Order is not meaningful
/// (a SET): callers find the leaf by its public key.
pub fn parse_certs_only_pkcs7(der: &[u8]) -> Result<Vec<Vec<u8>>, EstFormatError> {
    let e = |e: der::Error| EstFormatError::Pkcs7(e.to_string());
    let ci = ContentInfo::from_der(der).map_err(e)?;
    if ci.content_type != ID_SIGNED_DATA {
        return Err(EstFormatError::Pkcs7(format!(
            "content type is {}, not signedData",
            ci.content_type
        )));
    }
    let sd: SignedData = ci.content.decode_as().map_err(e)?;
    let mut out = Vec::new();
    for choice in sd.certificates.map(|s| s.0.into_vec()).unwrap_or_default() {
        if let CertificateChoices::Certificate(c) = choice {
            out.push(c.to_der().map_err(e)?);
        }
    }
    if out.is_empty() {
        return Err(EstFormatError::NoCertificates);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_tolerates_line_breaks() {
        assert_eq!(decode_base64(b"aGVs\r\nbG8=\n"), Ok(b"hello".to_vec()));
        assert_eq!(decode_base64(b"  \n"), Err(EstFormatError::Empty));
        assert!(matches!(decode_base64(b"!!!"), Err(EstFormatError::Base64(_))));
    }

    #[test]
    fn pkcs7_refuses_garbage() {
        assert!(matches!(
            parse_certs_only_pkcs7(b"\x30\x03\x02\x01\x01"),
            Err(EstFormatError::Pkcs7(_))
        ));
        assert!(certs_only_pkcs7(&[b"junk".to_vec()]).is_err());
    }
}
