//! The certificate profiles: what the CA puts in a device certificate, its own CA
//! certificates and its TLS server certificate. The CSR contributes its public key only.
//!
//! Device certificates (DESIGN.md): Subject CN = identity, a SAN naming it, EKU clientAuth
//! only, KeyUsage digitalSignature (critical), basicConstraints CA:FALSE, SKI and AKI, a
//! random serial of 143 bits, notBefore backdated for clock skew, AIA (OCSP, CA issuers)
//! and a CRL distribution point.

use crate::error::{CaError, Result};
use const_oid::db::rfc5280::{ID_AD_CA_ISSUERS, ID_AD_OCSP};
use der::Encode;
use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{AccessDescription, AuthorityInfoAccessSyntax};

/// How far notBefore is set in the past, so a device whose clock runs a little behind can
/// use a certificate at once (cfssl and step use minutes too).
pub const BACKDATE: Duration = Duration::minutes(5);

/// Longest identity. Identities end up in CN (at most 64 characters in RFC 5280's upper
/// bound), so stay within it.
pub const MAX_IDENTITY: usize = 64;

/// Publication URLs written into certificates.
#[derive(Clone, Debug)]
pub struct PublicationUrls {
    pub ocsp: String,
    pub ca_issuers: String,
    pub crl: String,
    pub root_crl: String,
    pub root_issuers: String,
}

impl PublicationUrls {
    pub fn from_base(base: &str) -> Self {
        let b = base.trim_end_matches('/');
        PublicationUrls {
            ocsp: format!("{b}/ocsp"),
            ca_issuers: format!("{b}/ca/issuing.crt"),
            crl: format!("{b}/crl"),
            root_crl: format!("{b}/crl/root"),
            root_issuers: format!("{b}/ca/root.crt"),
        }
    }

    /// The URLs written into certificates that root `generation` signs: the first keeps
    /// `/crl/root` and `/ca/root.crt`, later ones get `/crl/root-N` and `/ca/root-N.crt`.
    pub fn for_root(mut self, generation: u32) -> Self {
        if generation > 1 {
            let b = self.root_crl.trim_end_matches("/crl/root").to_owned();
            self.root_crl = format!("{b}/crl/root-{generation}");
            self.root_issuers = format!("{b}/ca/root-{generation}.crt");
        }
        self
    }

    /// The URLs written into certificates of issuing CA `generation`: the first keeps
    /// `/crl` and `/ca/issuing.crt` (every certificate issued before a rotation names
    /// them), later ones get `/crl/issuing-N` and `/ca/issuing-N.crt`, so that each
    /// issuer's certificates point at that issuer's CRL.
    pub fn for_generation(mut self, generation: u32) -> Self {
        if generation > 1 {
            let b = self.crl.trim_end_matches("/crl").to_owned();
            self.crl = format!("{b}/crl/issuing-{generation}");
            self.ca_issuers = format!("{b}/ca/issuing-{generation}.crt");
        }
        self
    }
}

/// Checks an identity: 1 to 64 characters of letters, digits, `.`, `_`, `-`, `@`,
/// not starting with `.` or `-`.
pub fn validate_identity(id: &str) -> Result<()> {
    let ok_chars =
        id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if id.is_empty() || id.len() > MAX_IDENTITY || !ok_chars || id.starts_with(['.', '-']) {
        return Err(CaError::BadRequest(format!(
            "invalid identity {id:?}: use 1 to {MAX_IDENTITY} letters, digits, '.', '_', '-' or '@', not starting with '.' or '-'"
        )));
    }
    // One spelling per device: identities are lower case (DNS names compare without case;
    // a CA that accepted both would hold two identities for one name).
    if id.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(CaError::BadRequest(format!(
            "invalid identity {id:?}: identities are lower case; use {:?}",
            id.to_ascii_lowercase()
        )));
    }
    Ok(())
}

/// Same rule for group names, which also appear in URLs and SANs.
pub fn validate_group(g: &str) -> Result<()> {
    let ok = !g.is_empty()
        && g.len() <= 64
        && g.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !g.starts_with(['.', '-']);
    if !ok {
        return Err(CaError::BadRequest(format!(
            "invalid group {g:?}: use 1 to 64 letters, digits, '.', '_' or '-'"
        )));
    }
    Ok(())
}

/// The SAN that names an identity: a DNS name for a dotted host name, an email address
/// for `user@domain`, and otherwise the URI `urn:lanyard:device:<identity>`.
pub fn identity_san(identity: &str) -> Result<SanType> {
    let ia5 = |s: String| {
        rcgen::string::Ia5String::try_from(s)
            .map_err(|e| CaError::BadRequest(format!("identity is not ASCII: {e}")))
    };
    let is_dns = identity.contains('.')
        && !identity.contains(['@', '_'])
        && identity
            .split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-'))
        && identity
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.chars().any(|c| c.is_ascii_alphabetic()));
    if is_dns {
        return Ok(SanType::DnsName(ia5(identity.to_ascii_lowercase())?));
    }
    if let Some((local, domain)) = identity.split_once('@')
        && !local.is_empty()
        && domain.contains('.')
    {
        return Ok(SanType::Rfc822Name(ia5(identity.to_owned())?));
    }
    Ok(SanType::URI(ia5(format!("urn:lanyard:device:{identity}"))?))
}

/// A fresh random serial: 18 bytes, first byte in 0x40..=0x7f so the DER INTEGER is
/// positive, of fixed length and never needs a leading zero (143 random bits).
pub fn random_serial() -> Vec<u8> {
    let mut b = [0u8; 18];
    rand::fill(&mut b);
    b[0] = 0x40 | (b[0] & 0x3f);
    b.to_vec()
}

fn aia(ocsp: &str, issuers: &str) -> Result<CustomExtension> {
    let uri = |s: &str| {
        der::asn1::Ia5String::new(s)
            .map(GeneralName::UniformResourceIdentifier)
            .map_err(|e| CaError::Config(format!("publication URL {s:?}: {e}")))
    };
    let syntax = AuthorityInfoAccessSyntax(vec![
        AccessDescription { access_method: ID_AD_OCSP, access_location: uri(ocsp)? },
        AccessDescription { access_method: ID_AD_CA_ISSUERS, access_location: uri(issuers)? },
    ]);
    let der = syntax.to_der().map_err(|e| CaError::Config(format!("encoding AIA: {e}")))?;
    Ok(CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 1], der))
}

fn crl_dp(url: &str) -> rcgen::CrlDistributionPoint {
    rcgen::CrlDistributionPoint { uris: vec![url.to_owned()] }
}

/// The device certificate profile.
pub fn device(
    identity: &str,
    serial: &[u8],
    now: OffsetDateTime,
    lifetime: std::time::Duration,
    urls: &PublicationUrls,
) -> Result<CertificateParams> {
    validate_identity(identity)?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, identity);
    p.distinguished_name = dn;
    p.subject_alt_names = vec![identity_san(identity)?];
    p.serial_number = Some(SerialNumber::from_slice(serial));
    p.not_before = now - BACKDATE;
    p.not_after = now + Duration::try_from(lifetime).unwrap_or(Duration::days(7));
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.use_authority_key_identifier_extension = true;
    p.crl_distribution_points = vec![crl_dp(&urls.crl)];
    p.custom_extensions = vec![aia(&urls.ocsp, &urls.ca_issuers)?];
    Ok(p)
}

/// A TLS server certificate for `names` (the first is the CN; IPs become IP SANs), 90 days.
/// No revocation pointers: see [`tls_server`].
pub fn server(names: &[String], now: OffsetDateTime) -> Result<CertificateParams> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, names.first().map(String::as_str).unwrap_or("lanyard-ca"));
    p.distinguished_name = dn;
    p.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => rcgen::string::Ia5String::try_from(n.clone())
                .map(SanType::DnsName)
                .map_err(|e| CaError::BadRequest(format!("TLS name {n:?}: {e}"))),
        })
        .collect::<Result<_>>()?;
    p.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    p.not_before = now - BACKDATE;
    p.not_after = now + Duration::days(90);
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    Ok(p)
}

/// The CA's own HTTPS server certificate (`lanyard-ca serve`): [`server`], with the issuing
/// CA's CRL and OCSP pointers.
pub fn tls_server(
    names: &[String],
    now: OffsetDateTime,
    urls: &PublicationUrls,
) -> Result<CertificateParams> {
    let mut p = server(names, now)?;
    p.crl_distribution_points = vec![crl_dp(&urls.crl)];
    p.custom_extensions = vec![aia(&urls.ocsp, &urls.ca_issuers)?];
    Ok(p)
}

fn ca_dn(org: &str, cn: String) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, org);
    dn.push(DnType::CommonName, cn);
    dn
}

/// The two CA certificates of a new CA (DER): the self-signed root and the issuing CA it
/// signs. The one creation ceremony every `init` performs (key files or KMS keys), and the
/// test suites' CAs with it.
pub struct CaCertificates {
    pub root_der: Vec<u8>,
    pub issuing_der: Vec<u8>,
}

pub fn ceremony(
    name: &str,
    now: OffsetDateTime,
    urls: &PublicationUrls,
    root_key: &impl rcgen::SigningKey,
    issuing_key: &impl rcgen::SigningKey,
) -> Result<CaCertificates> {
    let root_params = root(name, 1, now, Duration::days(20 * 365));
    let root_cert = root_params.self_signed(root_key)?;
    let issuing_cert = issuing(name, 1, now, Duration::days(10 * 365), urls)?
        .signed_by(issuing_key, &rcgen::Issuer::from_params(&root_params, root_key))?;
    Ok(CaCertificates {
        root_der: root_cert.der().to_vec(),
        issuing_der: issuing_cert.der().to_vec(),
    })
}

/// The CN of root `generation`: "NAME Root CA", then "NAME Root CA 2", ...
pub fn root_cn(name: &str, generation: u32) -> String {
    match generation {
        0 | 1 => format!("{name} Root CA"),
        n => format!("{name} Root CA {n}"),
    }
}

/// The self-signed root `generation` (20 years at init), path length 2, certificate and CRL
/// signing only. Two, not one: after a root rotation a relying party that trusts only this
/// root verifies the next root's chains through a cross-certificate (leaf, issuing CA,
/// cross-certificate, this root), and OpenSSL enforces a trust anchor's path length.
pub fn root(
    name: &str,
    generation: u32,
    now: OffsetDateTime,
    validity: Duration,
) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = ca_dn(name, root_cn(name, generation));
    p.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    p.not_before = now - BACKDATE;
    p.not_after = now + validity;
    p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Constrained(2));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

/// A cross-certificate: root `subject_generation`'s name (and, when signed, its key) under
/// another root, so that a relying party trusting the signer verifies chains that end in
/// the subject. Path length 1 like the root itself; it ends with the earlier of the two
/// roots; its CRL is the signing root's (`signer_urls`).
pub fn cross(
    name: &str,
    subject_generation: u32,
    now: OffsetDateTime,
    not_after: OffsetDateTime,
    signer_urls: &PublicationUrls,
) -> Result<CertificateParams> {
    let mut p = root(name, subject_generation, now, Duration::days(1));
    p.not_after = not_after;
    // Below it: an issuing CA, then leaves.
    p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Constrained(1));
    p.use_authority_key_identifier_extension = true;
    p.crl_distribution_points = vec![crl_dp(&signer_urls.root_crl)];
    p.custom_extensions = vec![aia(&signer_urls.ocsp, &signer_urls.root_issuers)?];
    Ok(p)
}

/// The CN of issuing CA `generation`: "NAME Issuing CA", then "NAME Issuing CA 2", ...
/// Each generation has a name of its own, so a certificate's issuer name says which CA
/// signed it and path builders never confuse two issuers.
pub fn issuing_cn(name: &str, generation: u32) -> String {
    match generation {
        0 | 1 => format!("{name} Issuing CA"),
        n => format!("{name} Issuing CA {n}"),
    }
}

/// Issuing CA `generation` (10 years at init), path length 0; signs device certificates,
/// its CRL and OCSP answers (hence digitalSignature). Carries AIA OCSP because
/// CloudFront's OCSP mode wants it on every certificate below the trust anchor.
pub fn issuing(
    name: &str,
    generation: u32,
    now: OffsetDateTime,
    validity: Duration,
    urls: &PublicationUrls,
) -> Result<CertificateParams> {
    let mut p = CertificateParams::default();
    p.distinguished_name = ca_dn(name, issuing_cn(name, generation));
    p.serial_number = Some(SerialNumber::from_slice(&random_serial()));
    p.not_before = now - BACKDATE;
    p.not_after = now + validity;
    p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    p.use_authority_key_identifier_extension = true;
    p.crl_distribution_points = vec![crl_dp(&urls.root_crl)];
    p.custom_extensions = vec![aia(&urls.ocsp, &urls.root_issuers)?];
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_rules() {
        for ok in ["dev-1", "sensor.fleet.example.com", "alice@example.com", "a_b.c"] {
            assert!(validate_identity(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", ".x", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(validate_identity(bad).is_err(), "{bad}");
        }
        // One spelling per device: upper case is refused, naming the lower-case form.
        let e = validate_identity("Sensor-1.Fleet.example.com").unwrap_err().to_string();
        assert!(e.contains("\"sensor-1.fleet.example.com\""), "{e}");
    }

    #[test]
    fn san_follows_identity_shape() {
        assert!(matches!(identity_san("dev.fleet.example.com"), Ok(SanType::DnsName(_))));
        assert!(matches!(identity_san("alice@example.com"), Ok(SanType::Rfc822Name(_))));
        assert!(matches!(identity_san("dev-0042"), Ok(SanType::URI(_))));
        assert!(matches!(identity_san("v1.2"), Ok(SanType::URI(_))));
    }

    #[test]
    fn serials_are_positive_fixed_length() {
        for _ in 0..100 {
            let s = random_serial();
            assert_eq!(s.len(), 18);
            assert!(s[0] >= 0x40 && s[0] < 0x80);
        }
        assert_ne!(random_serial(), random_serial());
    }
}
