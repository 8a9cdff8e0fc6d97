//! Factory certificates (IEEE 802.1AR IDevID; EST, RFC 7030 §3.3.2): a device presents the
//! certificate its manufacturer installed, over mTLS on `simpleenroll`, with no token.
//!
//! The fleet manager trusts a manufacturer's CA per group (`provisioning trust`), with the
//! rule that names its devices: the subject CN, the certificate's serial number, or the last
//! segment of its first URI SAN, used as the identity or as `{id}` in a template. The TLS
//! handshake proves the device holds the factory key; the chain is checked here against the
//! group's factory CAs (read from the store on each enrolment, so `trust` and `untrust` take
//! effect at once in every running CA). A factory certificate enrols once (again only after
//! `provisioning reset`), and a blocked one never.

use super::{Authority, Issued, RequestMeta, audit, key_reused, profile_allows};
use crate::csr;
use crate::error::{CaError, Result};
use crate::profile;
use crate::store::{Consumes, FactoryCaRecord, IdentityFrom, Provisioned, RecordOutcome};
use lanyard_proto::ProblemCode;
use rustls::pki_types::{CertificateDer, UnixTime};
use std::sync::Arc;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::ca_dir::fingerprint as sha256_hex;

/// The SHA-256 of a certificate given as PEM, or a SHA-256 fingerprint given as hex (colons
/// allowed): what `provisioning block` takes.
pub fn cert_fingerprint(given: &str) -> Result<String> {
    if given.contains("-----BEGIN") {
        let p = pem::parse(given)
            .map_err(|e| CaError::BadRequest(format!("factory certificate: not PEM ({e})")))?;
        return Ok(sha256_hex(p.contents()));
    }
    let hexed: String = given.trim().chars().filter(|c| *c != ':').collect::<String>();
    if hexed.len() == 64 && hexed.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(hexed.to_ascii_lowercase());
    }
    Err(CaError::BadRequest(
        "give the factory certificate's SHA-256 fingerprint (64 hex digits, as `openssl x509 -noout -fingerprint -sha256` prints it) or --cert FILE".into(),
    ))
}

impl Authority {
    /// Trusts a factory CA (one PEM certificate, a CA) for `group`'s first enrolments.
    pub async fn trust_factory_ca(
        &self,
        group: &str,
        ca_pem: &[u8],
        identity_from: IdentityFrom,
        identity_template: Option<String>,
        actor: &str,
    ) -> Result<FactoryCaRecord> {
        profile::validate_group(group)?;
        self.check_group_known(group).await?;
        let certs = pem::parse_many(ca_pem)
            .map_err(|e| CaError::BadRequest(format!("factory CA: not PEM ({e})")))?;
        let [one] = certs.as_slice() else {
            return Err(CaError::BadRequest(format!(
                "factory CA: give one certificate (the CA that signs the factory certificates), not {}",
                certs.len()
            )));
        };
        if one.tag() != "CERTIFICATE" {
            return Err(CaError::BadRequest(format!(
                "factory CA: a {} where a CERTIFICATE was expected",
                one.tag()
            )));
        }
        let der = one.contents().to_vec();
        let (_, x) = X509Certificate::from_der(&der)
            .map_err(|e| CaError::BadRequest(format!("factory CA does not parse: {e}")))?;
        if !x.is_ca() {
            return Err(CaError::BadRequest(format!(
                "{} is not a CA certificate (basicConstraints CA:TRUE): trust the CA that signs the factory certificates",
                x.subject()
            )));
        }
        if let Some(t) = &identity_template {
            lanyard_proto::claim::check_template(t).map_err(CaError::BadRequest)?;
        } else if identity_from == IdentityFrom::Serial {
            return Err(CaError::BadRequest(
                "--identity-from serial needs --identity-template (e.g. 'sensor-{id}.fleet.example.com'): a serial number is not a name".into(),
            ));
        }
        let now = self.now();
        let rec = FactoryCaRecord {
            id: sha256_hex(&der)[..16].to_owned(),
            group: group.to_owned(),
            subject: x.subject().to_string(),
            der,
            identity_from,
            identity_template,
            added_at: now,
        };
        let ev = audit(
            now,
            actor.to_owned(),
            "provisioning.trust",
            &rec.id,
            format!(
                "group={group} subject={:?} identity_from={} template={}",
                rec.subject,
                identity_from.name(),
                rec.identity_template.as_deref().unwrap_or("-")
            ),
            &RequestMeta::default(),
        );
        self.store.put_factory_ca(rec.clone(), ev).await?;
        Ok(rec)
    }

    pub async fn factory_cas(&self) -> Result<Vec<FactoryCaRecord>> {
        self.store.factory_cas().await
    }

    /// Stops trusting a factory CA (by ID); its devices that enrolled keep their
    /// certificates.
    pub async fn untrust_factory_ca(&self, id: &str, actor: &str) -> Result<()> {
        let id = id.trim().to_ascii_lowercase();
        let ev = audit(
            self.now(),
            actor.to_owned(),
            "provisioning.untrust",
            &id,
            String::new(),
            &RequestMeta::default(),
        );
        if self.store.remove_factory_ca(&id, ev).await? {
            Ok(())
        } else {
            Err(CaError::NotFound(format!(
                "no factory CA {id:?} (`lanyard-ca provisioning list` shows their IDs)"
            )))
        }
    }

    /// Blocks one factory certificate (by its SHA-256): it never enrols again.
    pub async fn block_factory_cert(&self, cert_sha256: &str, actor: &str) -> Result<()> {
        let now = self.now();
        let ev = audit(
            now,
            actor.to_owned(),
            "provisioning.block",
            cert_sha256,
            String::new(),
            &RequestMeta::default(),
        );
        self.store.block_factory_cert(cert_sha256, now, ev).await
    }

    /// The group a factory certificate would enrol in (checked, not used), for `/csrattrs`.
    pub async fn group_of_factory_cert(&self, der: &[u8]) -> Result<String> {
        let ca = self.factory_ca_of(der).await?;
        let fp = sha256_hex(der);
        match self.store.provisioned(&Provisioned::factory_key(&fp)).await? {
            Some(p) if p.source == Provisioned::BLOCKED => Err(CaError::refused(
                ProblemCode::Forbidden,
                format!("factory certificate {} is blocked", &fp[..16]),
            )),
            // Enrolled before: a retry (same key) is answered at simpleenroll.
            _ => Ok(ca.group),
        }
    }

    /// `simpleenroll` with a factory certificate (presented in the TLS handshake, which
    /// proved the device holds its key) and no token.
    pub async fn enroll_with_factory_cert(
        &self,
        factory_der: &[u8],
        csr_der: &[u8],
        meta: &RequestMeta,
    ) -> Result<Issued> {
        self.check_source(meta)?;
        let r = self.enroll_factory_checked(factory_der, csr_der, meta).await;
        if let Err(e) = &r {
            let fp = sha256_hex(factory_der);
            self.note_auth_failure(meta, &format!("factory:{}", &fp[..16]), e).await;
        }
        r
    }

    async fn enroll_factory_checked(
        &self,
        factory_der: &[u8],
        csr_der: &[u8],
        meta: &RequestMeta,
    ) -> Result<Issued> {
        let ca = self.factory_ca_of(factory_der).await?;
        let fp = sha256_hex(factory_der);
        let (_, cert) = X509Certificate::from_der(factory_der).map_err(|_| unknown())?;
        let identity = identity_of(&ca, &cert)?;
        let csr = csr::check(csr_der)?;
        let blocked_or_used = |p: &Provisioned| {
            if p.source == Provisioned::BLOCKED {
                CaError::refused(
                    ProblemCode::Forbidden,
                    format!("factory certificate {} is blocked", &fp[..16]),
                )
            } else {
                already_enrolled(&fp, &p.identity)
            }
        };
        let key = Provisioned::factory_key(&fp);
        if let Some(used) = self.store.provisioned(&key).await? {
            let refused = blocked_or_used(&used);
            return self.provisioned_replay(&used, &csr, || refused).await;
        }
        if let Some(serial) = self.store.cert_by_key(&identity, &csr.spki_sha256).await? {
            return Err(key_reused(&serial));
        }
        let policy = self.policy(&ca.group).await?;
        profile_allows(&identity, &ca.group, &csr, &policy)?;
        let now = self.admit_issuance().await?;
        let record = self.sign_device(&identity, &ca.group, &csr, &policy, now, None)?;
        let ev = audit(
            now,
            format!("factory:{}", ca.id),
            "issue",
            &record.serial,
            format!(
                "identity={identity} group={} key={} not_after={} factory_cert_sha256={fp} factory_subject={:?}",
                ca.group,
                csr.key_algorithm,
                record.not_after,
                cert.subject().to_string()
            ),
            meta,
        );
        let consumes = Consumes::FactoryCert { cert_sha256: fp.clone(), ca_id: ca.id.clone() };
        match self.store.record_issuance(record.clone(), consumes, ev).await? {
            RecordOutcome::Recorded => Ok(Issued { record, chain: self.chain(), replayed: false }),
            RecordOutcome::KeyReused { serial } => Err(key_reused(&serial)),
            RecordOutcome::AlreadyProvisioned => {
                let used = self.store.provisioned(&key).await?.ok_or_else(|| {
                    CaError::Storage("a factory certificate's enrolment vanished".into())
                })?;
                let refused = blocked_or_used(&used);
                self.provisioned_replay(&used, &csr, || refused).await
            }
            RecordOutcome::TokenAlreadyUsed
            | RecordOutcome::ClaimUnavailable
            | RecordOutcome::ParentAlreadyRenewed { .. } => Err(CaError::Storage(
                "a factory enrolment consumed a token, a claim or a parent".into(),
            )),
        }
    }

    /// The trusted factory CA that issued `der` (chain, signature, validity and key usage
    /// checked by webpki as for any client certificate).
    async fn factory_ca_of(&self, der: &[u8]) -> Result<FactoryCaRecord> {
        let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            u64::try_from(self.now().unix_timestamp()).unwrap_or(0),
        ));
        let ee = CertificateDer::from(der);
        let mut expired = None;
        for ca in self.store.factory_cas().await? {
            let mut roots = rustls::RootCertStore::empty();
            if roots.add(CertificateDer::from(ca.der.clone())).is_err() {
                tracing::warn!(factory_ca = %ca.id, "a trusted factory CA is not a usable trust anchor");
                continue;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| CaError::Config(format!("factory CA {}: {e}", ca.id)))?;
            match verifier.verify_client_cert(&ee, &[], now) {
                Ok(_) => return Ok(ca),
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Expired
                    | rustls::CertificateError::ExpiredContext { .. },
                )) => expired = Some(ca.id),
                Err(_) => {}
            }
        }
        Err(match expired {
            Some(id) => CaError::refused(
                ProblemCode::FactoryCaUnknown,
                format!("the factory certificate (from factory CA {id}) has expired"),
            ),
            None => unknown(),
        })
    }
}

fn unknown() -> CaError {
    CaError::refused(
        ProblemCode::FactoryCaUnknown,
        "the client certificate is not from a trusted factory CA (`lanyard-ca provisioning trust`), and no enrolment token was given",
    )
}

fn already_enrolled(fp: &str, identity: &str) -> CaError {
    CaError::refused(
        ProblemCode::AlreadyProvisioned,
        format!(
            "factory certificate {} enrolled {identity:?} before, with another key; a factory certificate enrols once (`lanyard-ca provisioning reset {identity}` allows it again)",
            &fp[..16]
        ),
    )
}

/// The identity a factory certificate names under its CA's rule.
fn identity_of(ca: &FactoryCaRecord, cert: &X509Certificate<'_>) -> Result<String> {
    let value = match ca.identity_from {
        IdentityFrom::Cn => cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned),
        IdentityFrom::Serial => {
            Some(lanyard_proto::serial::to_hex(cert.raw_serial())).filter(|s| !s.is_empty())
        }
        IdentityFrom::SanUri => cert.subject_alternative_name().ok().flatten().and_then(|san| {
            san.value.general_names.iter().find_map(|g| match g {
                GeneralName::URI(u) => {
                    u.rsplit([':', '/']).next().filter(|s| !s.is_empty()).map(str::to_owned)
                }
                _ => None,
            })
        }),
    };
    let Some(value) = value else {
        return Err(CaError::refused(
            ProblemCode::IdentityMismatch,
            format!(
                "the factory certificate has no {} to name the device by (factory CA {})",
                ca.identity_from.name(),
                ca.id
            ),
        ));
    };
    let identity = match &ca.identity_template {
        Some(t) => lanyard_proto::claim::identity(t, &value),
        None => Ok(value.to_ascii_lowercase()),
    }
    .map_err(|e| {
        CaError::refused(ProblemCode::IdentityMismatch, format!("factory certificate: {e}"))
    })?;
    profile::validate_identity(&identity).map_err(|e| {
        CaError::refused(ProblemCode::IdentityMismatch, format!("factory certificate: {e}"))
    })?;
    Ok(identity)
}
