//! EST `/csrattrs` (RFC 7030 4.5, RFC 9148): tells the device which key to generate.
//!
//! `CsrAttrs ::= SEQUENCE OF AttrOrOID`. For ECDSA: the attribute id-ecPublicKey with the
//! curve OID, plus the signature algorithm OID; for RSA: rsaEncryption with the modulus
//! size, plus sha256WithRSAEncryption.

use crate::KeyAlgorithm;
use const_oid::ObjectIdentifier;
use const_oid::db::rfc5912::{
    ECDSA_WITH_SHA_256, ECDSA_WITH_SHA_384, ID_EC_PUBLIC_KEY, RSA_ENCRYPTION, SECP_256_R_1,
    SECP_384_R_1, SHA_256_WITH_RSA_ENCRYPTION,
};
use der::asn1::SetOfVec;
use der::{Any, Encode, Header, Length, Tag};
use x509_cert::attr::Attribute;

pub fn encode(alg: KeyAlgorithm) -> Result<Vec<u8>, der::Error> {
    let (key_oid, value, sig_oid): (ObjectIdentifier, Any, ObjectIdentifier) = match alg {
        KeyAlgorithm::EcdsaP256 => {
            (ID_EC_PUBLIC_KEY, Any::encode_from(&SECP_256_R_1)?, ECDSA_WITH_SHA_256)
        }
        KeyAlgorithm::EcdsaP384 => {
            (ID_EC_PUBLIC_KEY, Any::encode_from(&SECP_384_R_1)?, ECDSA_WITH_SHA_384)
        }
        other => {
            let bits = other.rsa_bits().unwrap_or(2048) as u32;
            (RSA_ENCRYPTION, Any::encode_from(&bits)?, SHA_256_WITH_RSA_ENCRYPTION)
        }
    };
    let attr = Attribute { oid: key_oid, values: SetOfVec::try_from(vec![value])? };
    let mut content = attr.to_der()?;
    content.extend(sig_oid.to_der()?);
    let mut out = Vec::new();
    Header::new(Tag::Sequence, Length::try_from(content.len())?)?.encode_to_vec(&mut out)?;
    out.extend(content);
    Ok(out)
}

/// Reads the key algorithm a CA asks for; `None` when the attributes name none Lanyard
/// supports (the agent then falls back to its policy or ECDSA P-256).
pub fn decode(der: &[u8]) -> Result<Option<KeyAlgorithm>, der::Error> {
    use der::Decode;
    let items: Vec<Any> = Vec::<Any>::from_der(der)?;
    for item in items {
        if der::Tagged::tag(&item) != Tag::Sequence {
            continue; // a bare OID
        }
        let attr: Attribute = item.decode_as()?;
        let Some(v) = attr.values.iter().next() else { continue };
        if attr.oid == ID_EC_PUBLIC_KEY {
            let curve: ObjectIdentifier = v.decode_as()?;
            if curve == SECP_256_R_1 {
                return Ok(Some(KeyAlgorithm::EcdsaP256));
            }
            if curve == SECP_384_R_1 {
                return Ok(Some(KeyAlgorithm::EcdsaP384));
            }
        } else if attr.oid == RSA_ENCRYPTION {
            let bits: u32 = v.decode_as()?;
            return Ok(match bits {
                2048 => Some(KeyAlgorithm::Rsa2048),
                3072 => Some(KeyAlgorithm::Rsa3072),
                4096 => Some(KeyAlgorithm::Rsa4096),
                _ => None,
            });
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_algorithm() {
        for a in KeyAlgorithm::ALL {
            let der = encode(a).expect("encode");
            assert_eq!(decode(&der), Ok(Some(a)), "{a}");
        }
        assert!(decode(b"\x01\x02").is_err());
    }
}
