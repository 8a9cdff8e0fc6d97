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
use der::asn1::AnyRef;
use der::asn1::SetOfVec;
use der::{Any, Decode, Encode, Tag, Tagged};

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

/// SignedData (RFC 5652 section 5.1) read as a certs-only answer needs it: each certificate's
/// encoding as it came, the other fields checked for their tag and length only. Decoding it
/// with `cms`'s `SignedData` would also decode signers, CRLs and attribute certificates, none
/// of which a certs-only answer has, and link a decoder for each into the agent.
#[derive(der::Sequence)]
struct CertsOnly<'a> {
    /// Checked to be a CMS version (v0 to v5), not used.
    version: CmsVersion,
    digest_algorithms: AnyRef<'a>,
    encap_content_info: AnyRef<'a>,
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    certificates: Option<Vec<AnyRef<'a>>>,
    /// Read past, not used.
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    crls: Option<Vec<AnyRef<'a>>>,
    signer_infos: AnyRef<'a>,
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
    let sd: CertsOnly<'_> = ci.content.decode_as().map_err(e)?;
    for (field, any, tag) in [
        ("digestAlgorithms", &sd.digest_algorithms, Tag::Set),
        ("encapContentInfo", &sd.encap_content_info, Tag::Sequence),
        ("signerInfos", &sd.signer_infos, Tag::Set),
    ] {
        if any.tag() != tag {
            return Err(EstFormatError::Pkcs7(format!("{field} is {}, not {tag}", any.tag())));
        }
    }
    let mut out: Vec<Vec<u8>> = Vec::new();
    // CertificateChoices: a certificate is a SEQUENCE; the other choices (attribute
    // certificates, [1] to [3]) are not what an answer is read for.
    for (i, choice) in sd.certificates.unwrap_or_default().into_iter().enumerate() {
        if choice.tag() != Tag::Sequence {
            continue;
        }
        let bad = |why: String| EstFormatError::Pkcs7(format!("certificate {}: {why}", i + 1));
        let der = choice.to_der().map_err(|e| bad(e.to_string()))?;
        // DER as well as well-formed: the bytes are passed on as they came (to signature and
        // fingerprint checks), so a BER-only form (a DEFAULT value written out, say) is
        // refused here rather than failing later for a reason nobody can see.
        let cert = x509_cert::Certificate::from_der(&der).map_err(|e| bad(e.to_string()))?;
        if cert.to_der().map_err(|e| bad(e.to_string()))? != der {
            return Err(bad("not DER (it encodes differently once decoded)".into()));
        }
        // A SET has no duplicates (X.690 section 11.6 orders, it does not repeat).
        if out.contains(&der) {
            return Err(bad("the same certificate twice".into()));
        }
        out.push(der);
    }
    if out.is_empty() {
        return Err(EstFormatError::NoCertificates);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // a panic is the failure message
    use super::*;

    #[test]
    fn base64_tolerates_line_breaks() {
        assert_eq!(decode_base64(b"aGVs\r\nbG8=\n"), Ok(b"hello".to_vec()));
        assert_eq!(decode_base64(b"  \n"), Err(EstFormatError::Empty));
        assert!(matches!(decode_base64(b"!!!"), Err(EstFormatError::Base64(_))));
    }

    fn cert(cn: &str) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![cn.to_owned()]).unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    /// A SignedData's DER with these certificate choices and CRLs around the rest of a
    /// certs-only answer.
    fn signed_data(certificates: Vec<AnyRef<'_>>, crls: Option<Vec<AnyRef<'_>>>) -> Vec<u8> {
        let encap = EncapsulatedContentInfo { econtent_type: ID_DATA, econtent: None };
        let encap = encap.to_der().unwrap();
        let sd = CertsOnly {
            version: CmsVersion::V1,
            digest_algorithms: AnyRef::new(Tag::Set, &[]).unwrap(),
            encap_content_info: AnyRef::from_der(&encap).unwrap(),
            certificates: Some(certificates),
            crls,
            signer_infos: AnyRef::new(Tag::Set, &[]).unwrap(),
        };
        let ci =
            ContentInfo { content_type: ID_SIGNED_DATA, content: Any::encode_from(&sd).unwrap() };
        ci.to_der().unwrap()
    }

    #[test]
    fn pkcs7_round_trip_keeps_each_certificate_as_encoded() {
        let (a, b) = (cert("a.example"), cert("b.example"));
        let der = certs_only_pkcs7(&[a.clone(), b.clone()]).unwrap();
        let mut got = parse_certs_only_pkcs7(&der).unwrap();
        let mut want = vec![a, b];
        got.sort();
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn pkcs7_skips_crls_and_other_certificate_formats() {
        let a = cert("a.example");
        let a_any = AnyRef::from_der(&a).unwrap();
        // [3] IMPLICIT OtherCertificateFormat, and an opaque CRL: neither is read.
        let other = AnyRef::new(
            Tag::ContextSpecific { constructed: true, number: der::TagNumber::N3 },
            &[5, 0],
        )
        .unwrap();
        let crl = AnyRef::new(Tag::Sequence, &[2, 1, 1]).unwrap();
        let der = signed_data(vec![other, a_any], Some(vec![crl]));
        assert_eq!(parse_certs_only_pkcs7(&der).unwrap(), vec![a]);
        // Only other formats: no certificate.
        let der = signed_data(vec![other], None);
        assert_eq!(parse_certs_only_pkcs7(&der), Err(EstFormatError::NoCertificates));
    }

    /// `content` under the identifier octet `tag`, with its DER length.
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        AnyRef::new(Tag::try_from(tag).unwrap(), content).unwrap().to_der().unwrap()
    }

    /// `cert` again with its first extension's `critical FALSE` written out: valid BER, and
    /// what x509-cert decodes, but not DER (X.690 section 11.5 omits DEFAULT values).
    fn with_explicit_default(cert: &[u8]) -> Vec<u8> {
        let c = x509_cert::Certificate::from_der(cert).unwrap();
        let tbs = &c.tbs_certificate;
        let exts = tbs.extensions.as_ref().unwrap();
        assert!(!exts[0].critical, "the test needs a non-critical first extension");
        let mut ext_seq = Vec::new();
        for (i, x) in exts.iter().enumerate() {
            if i == 0 {
                let mut body = x.extn_id.to_der().unwrap();
                body.extend([0x01, 0x01, 0x00]); // BOOLEAN FALSE
                body.extend(x.extn_value.to_der().unwrap());
                ext_seq.extend(tlv(0x30, &body));
            } else {
                ext_seq.extend(x.to_der().unwrap());
            }
        }
        let mut body = tlv(0xa0, &tbs.version.to_der().unwrap());
        for part in [
            tbs.serial_number.to_der().unwrap(),
            tbs.signature.to_der().unwrap(),
            tbs.issuer.to_der().unwrap(),
            tbs.validity.to_der().unwrap(),
            tbs.subject.to_der().unwrap(),
            tbs.subject_public_key_info.to_der().unwrap(),
        ] {
            body.extend(part);
        }
        body.extend(tlv(0xa3, &tlv(0x30, &ext_seq)));
        let mut whole = tlv(0x30, &body);
        whole.extend(c.signature_algorithm.to_der().unwrap());
        whole.extend(c.signature.to_der().unwrap());
        tlv(0x30, &whole)
    }

    #[test]
    fn pkcs7_refuses_a_certificate_that_is_not_der() {
        let good = cert("a.example");
        let ber = with_explicit_default(&good);
        // x509-cert reads it, and reads it as the same certificate...
        assert_eq!(
            x509_cert::Certificate::from_der(&ber).unwrap(),
            x509_cert::Certificate::from_der(&good).unwrap()
        );
        // ...but its bytes are not the ones signed and pinned: refused, and said so.
        let der = signed_data(vec![AnyRef::from_der(&ber).unwrap()], None);
        match parse_certs_only_pkcs7(&der) {
            Err(EstFormatError::Pkcs7(m)) => assert!(m.contains("certificate 1: not DER"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pkcs7_refuses_the_same_certificate_twice() {
        let a = cert("a.example");
        let a_any = AnyRef::from_der(&a).unwrap();
        let der = signed_data(vec![a_any, a_any], None);
        match parse_certs_only_pkcs7(&der) {
            Err(EstFormatError::Pkcs7(m)) => assert!(m.contains("certificate 2: the same"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pkcs7_names_what_is_malformed() {
        // A SEQUENCE among the certificates that is no certificate.
        let der = signed_data(vec![AnyRef::new(Tag::Sequence, &[2, 1, 0]).unwrap()], None);
        match parse_certs_only_pkcs7(&der) {
            Err(EstFormatError::Pkcs7(m)) => assert!(m.starts_with("certificate 1: "), "{m}"),
            other => panic!("{other:?}"),
        }
        // digestAlgorithms must be a SET: the same answer with a SEQUENCE there.
        let good = certs_only_pkcs7(&[cert("a.example")]).unwrap();
        let at = good.windows(5).position(|w| w == [2, 1, 1, 0x31, 0]).unwrap();
        let mut bad = good.clone();
        bad[at + 3] = 0x30;
        match parse_certs_only_pkcs7(&bad) {
            Err(EstFormatError::Pkcs7(m)) => assert!(m.contains("digestAlgorithms"), "{m}"),
            other => panic!("{other:?}"),
        }
        // The certificates' [0] set claiming a byte more or a byte less than it holds, the
        // ContentInfo around it intact: refused by the SignedData reader itself.
        let sd_at = good.windows(5).position(|w| w == [2, 1, 1, 0x31, 0]).unwrap();
        let set_at = sd_at + good[sd_at..].iter().position(|&b| b == 0xa0).unwrap();
        assert_eq!(good[set_at + 1], 0x82, "a two-byte length");
        for delta in [1i32, -1] {
            let mut bad = good.clone();
            let len = i32::from(u16::from_be_bytes([bad[set_at + 2], bad[set_at + 3]])) + delta;
            bad[set_at + 2..set_at + 4].copy_from_slice(&(len as u16).to_be_bytes());
            assert!(ContentInfo::from_der(&bad).is_ok(), "the outer layer still reads");
            assert!(
                matches!(parse_certs_only_pkcs7(&bad), Err(EstFormatError::Pkcs7(_))),
                "[0] length off by {delta}"
            );
        }
        // Every truncation is refused, never read past.
        for n in 0..good.len() {
            assert!(parse_certs_only_pkcs7(&good[..n]).is_err(), "{n} bytes");
        }
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
