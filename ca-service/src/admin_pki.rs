//! Admin client certificates: the console over mTLS (`lanyard-ca admin issue`,
//! `serve --admin-mtls`, `console --mtls`).
//!
//! A self-signed admin CA of its own (`admin-ca.crt`, and `admin-ca.key` at 0600, in the
//! admin directory: the CA directory for the embedded backend) signs admins' client
//! certificates and the admin listener's server certificate. It is never the device CA:
//! CloudFront trusts whatever the issuing CA signs, so an admin's certificate must not come
//! from it (it would open the fleet's services), and a device's certificate must not open
//! the console. An admin's browser or curl trusts `admin-ca.crt` for the server and
//! presents `NAME.crt`; the name in its CN is who the audit trail says made each change.

use crate::admin::{Admin, validate_name};
use crate::error::{CaError, Result};
use crate::fsutil;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::Path;
use std::sync::Arc;
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

/// The admin CA's certificate, in the admin directory (give it to admins: their client
/// trusts the admin listener with it).
pub const CA_CERT: &str = "admin-ca.crt";
/// The admin CA's private key (0600): whoever reads it can make admins.
pub const CA_KEY: &str = "admin-ca.key";
/// The longest an admin certificate may last.
pub const MAX_TTL: Duration = Duration::days(397);
const CA_LIFETIME: Duration = Duration::days(10 * 365);
const BACKDATE: Duration = Duration::minutes(5);

/// The admin CA. `Debug` never shows its key.
pub struct AdminCa {
    der: Vec<u8>,
    issuer: rcgen::Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for AdminCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminCa(..)")
    }
}

fn serial() -> SerialNumber {
    SerialNumber::from_slice(&crate::profile::random_serial())
}

fn ca_params(now: OffsetDateTime) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Lanyard");
    dn.push(DnType::CommonName, "Lanyard admin CA");
    p.distinguished_name = dn;
    p.serial_number = Some(serial());
    p.not_before = now - BACKDATE;
    p.not_after = now + CA_LIFETIME;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

impl AdminCa {
    /// The admin CA in `dir`, made there (and `dir` with it, 0700) when neither file
    /// exists. One file without the other is an error naming both.
    pub fn load_or_create(dir: &Path, now: OffsetDateTime) -> Result<Self> {
        let (crt, key) = (dir.join(CA_CERT), dir.join(CA_KEY));
        match (crt.exists(), key.exists()) {
            (true, true) => Self::load(dir),
            (false, false) => {
                std::fs::create_dir_all(dir)
                    .map_err(CaError::io(format!("creating {}", dir.display())))?;
                let kp = crate::signer::local::generate(lanyard_proto::KeyAlgorithm::EcdsaP256)?;
                let cert = ca_params(now).self_signed(&kp)?;
                // The key first: a certificate without its key is the state that needs a
                // person; a key without a certificate is remade below next time.
                fsutil::write_new_private(&key, kp.serialize_pem().as_bytes())?;
                fsutil::write_atomic(&crt, cert.pem().as_bytes(), 0o644)?;
                tracing::info!(path = %crt.display(), "made the admin CA");
                Self::load(dir)
            }
            _ => Err(CaError::Config(format!(
                "{} and {} go together and one is missing: restore it, or remove the other to make a new admin CA (every admin certificate then stops working)",
                crt.display(),
                key.display()
            ))),
        }
    }

    /// The admin CA in `dir`; an error naming `admin issue` when there is none.
    pub fn load(dir: &Path) -> Result<Self> {
        let (crt, key) = (dir.join(CA_CERT), dir.join(CA_KEY));
        let read = |p: &Path| match std::fs::read_to_string(p) {
            Ok(s) => Ok(Zeroizing::new(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(CaError::Config(format!(
                "no admin CA: {} is missing (`lanyard-ca admin issue --name NAME` makes it with the first admin certificate)",
                p.display()
            ))),
            Err(e) => Err(CaError::Io { context: format!("reading {}", p.display()), source: e }),
        };
        let cert_pem = read(&crt)?;
        let der = pem::parse(cert_pem.as_bytes())
            .map_err(|e| CaError::Config(format!("{}: {e}", crt.display())))?
            .into_contents();
        let key = KeyPair::from_pem(&read(&key)?)
            .map_err(|e| CaError::Config(format!("{}: {e}", key.display())))?;
        let issuer = rcgen::Issuer::from_ca_cert_der(&CertificateDer::from(der.clone()), key)
            .map_err(|e| CaError::Config(format!("{}: {e}", crt.display())))?;
        Ok(AdminCa { der, issuer })
    }

    /// The admin CA's certificate, DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// A client certificate for the admin `name`, valid for `ttl` from `now`: the
    /// certificate and its new private key, both PEM.
    pub fn issue_admin(
        &self,
        name: &str,
        now: OffsetDateTime,
        ttl: Duration,
    ) -> Result<(String, Zeroizing<String>)> {
        validate_name(name)?;
        if ttl <= Duration::ZERO || ttl > MAX_TTL {
            return Err(CaError::BadRequest(format!(
                "an admin certificate lasts between 1s and {} days",
                MAX_TTL.whole_days()
            )));
        }
        let kp = crate::signer::local::generate(lanyard_proto::KeyAlgorithm::EcdsaP256)?;
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Lanyard admins");
        dn.push(DnType::CommonName, name);
        p.distinguished_name = dn;
        p.serial_number = Some(serial());
        p.not_before = now - BACKDATE;
        p.not_after = now + ttl;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&kp, &self.issuer)?;
        Ok((cert.pem(), Zeroizing::new(kp.serialize_pem())))
    }

    /// The admin listener's TLS: a server certificate for `names` made now (kept in memory
    /// only), and client certificates from this CA required.
    pub fn server_config(
        &self,
        names: &[String],
        now: OffsetDateTime,
    ) -> Result<rustls::ServerConfig> {
        let kp = crate::signer::local::generate(lanyard_proto::KeyAlgorithm::EcdsaP256)?;
        let p = crate::profile::server(names, now)?;
        let cert = p.signed_by(&kp, &self.issuer)?;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.der.clone()))
            .map_err(|e| CaError::Config(format!("admin CA as trust anchor: {e}")))?;
        let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .map_err(|e| CaError::Config(format!("admin client verifier: {e}")))?;
        let chain = vec![cert.der().clone(), CertificateDer::from(self.der.clone())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(kp.serialize_der()));
        let mut cfg = rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| CaError::Config(format!("admin server certificate: {e}")))?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(cfg)
    }
}

/// The admin a verified client certificate names (its CN), until the certificate ends.
/// `None` when the CN is not an admin name.
pub fn admin_of(der: &[u8]) -> Option<Admin> {
    let (_, x) = x509_parser::parse_x509_certificate(der).ok()?;
    let name = x.subject().iter_common_name().next()?.as_str().ok()?.to_owned();
    validate_name(&name).ok()?;
    let expires_at = x.validity().not_after.to_datetime();
    Some(Admin { name, expires_at })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn the_admin_ca_is_made_once_and_names_its_admins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = datetime!(2026-06-01 12:00 UTC);
        let ca = AdminCa::load_or_create(dir.path(), now).expect("made");
        let again = AdminCa::load_or_create(dir.path(), now).expect("loaded");
        assert_eq!(ca.der(), again.der(), "made once, then read");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(CA_KEY)).expect("key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!format!("{ca:?}").contains("PRIVATE"));

        let (crt, key) = ca.issue_admin("alice@ops", now, Duration::days(30)).expect("issued");
        assert!(key.contains("PRIVATE KEY"));
        let der = pem::parse(crt.as_bytes()).expect("pem").into_contents();
        let admin = admin_of(&der).expect("an admin");
        assert_eq!(admin.name, "alice@ops");
        assert_eq!(admin.expires_at, now + Duration::days(30));
        assert!(ca.issue_admin("<script>", now, Duration::days(1)).is_err());
        assert!(ca.issue_admin("bob", now, Duration::days(400)).is_err());
        assert!(ca.server_config(&["127.0.0.1".into()], now).is_ok());

        // Half an admin CA is refused, naming what is missing.
        std::fs::remove_file(dir.path().join(CA_CERT)).expect("rm");
        let e = AdminCa::load_or_create(dir.path(), now).expect_err("half");
        assert!(e.to_string().contains(CA_CERT), "{e}");
    }
}
