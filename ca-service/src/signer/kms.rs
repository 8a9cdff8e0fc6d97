//! AWS KMS signer: the CA's keys are created in KMS and never leave it.
//!
//! rcgen's `SigningKey` is synchronous and KMS is not: this is the one place where the
//! async call is adapted, with `block_in_place` on the multi-threaded runtime the CLI and
//! the Lambda run on. KMS returns ECDSA signatures as DER, which is what X.509 wants.
//! Any KMS failure surfaces as `rcgen::Error::RemoteKeyError`, with its kind noted for the
//! CA ([`super::note_remote_failure`]): throttling and KMS being briefly unavailable are
//! answered with 503 `busy` and `Retry-After`, so agents back off; a failure that retrying
//! cannot cure (access denied, a disabled key) is a 500.

use super::{RemoteFailure, Signer};
use crate::error::{CaError, Result};
use aws_sdk_kms::Client;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{KeySpec, KeyUsageType, MessageType, SigningAlgorithmSpec};
use lanyard_proto::KeyAlgorithm;

#[derive(Clone)]
pub struct KmsSigner {
    client: Client,
    key_id: String,
    alg: KeyAlgorithm,
    /// The subjectPublicKey bits (what rcgen calls `der_bytes`).
    public_key: Vec<u8>,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for KmsSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsSigner").field("key_id", &self.key_id).field("alg", &self.alg).finish()
    }
}

fn spec(alg: KeyAlgorithm) -> KeySpec {
    match alg {
        KeyAlgorithm::EcdsaP256 => KeySpec::EccNistP256,
        KeyAlgorithm::EcdsaP384 => KeySpec::EccNistP384,
        KeyAlgorithm::Rsa2048 => KeySpec::Rsa2048,
        KeyAlgorithm::Rsa3072 => KeySpec::Rsa3072,
        KeyAlgorithm::Rsa4096 => KeySpec::Rsa4096,
    }
}

/// The longest message KMS signs as `RAW`; it refuses longer ones (`ValidationException`).
pub const KMS_RAW_MAX: usize = 4096;

/// What goes to KMS to sign `msg`: the message itself (`RAW`) up to [`KMS_RAW_MAX`] bytes,
/// else its digest (`DIGEST`) with the hash the signing algorithm names. A CRL passes the
/// limit once it lists about 80 certificates; the signature is the same either way.
pub fn kms_message(alg: KeyAlgorithm, msg: &[u8]) -> (Vec<u8>, MessageType) {
    if msg.len() <= KMS_RAW_MAX {
        return (msg.to_vec(), MessageType::Raw);
    }
    let hash = match signing_alg(alg) {
        SigningAlgorithmSpec::EcdsaSha384 => &aws_lc_rs::digest::SHA384,
        _ => &aws_lc_rs::digest::SHA256,
    };
    (aws_lc_rs::digest::digest(hash, msg).as_ref().to_vec(), MessageType::Digest)
}

fn signing_alg(alg: KeyAlgorithm) -> SigningAlgorithmSpec {
    match alg {
        KeyAlgorithm::EcdsaP256 => SigningAlgorithmSpec::EcdsaSha256,
        KeyAlgorithm::EcdsaP384 => SigningAlgorithmSpec::EcdsaSha384,
        _ => SigningAlgorithmSpec::RsassaPkcs1V15Sha256,
    }
}

/// KMS error codes that mean "too many requests now" (the per-account signing quota).
fn is_throttling(code: &str) -> bool {
    matches!(code, "ThrottlingException" | "LimitExceededException" | "TooManyRequestsException")
}

/// What a failed `Sign` means for the device: throttling, KMS's own transient failures and
/// failures with no service code (timeouts, connection errors) are worth retrying later;
/// any other service error (access denied, a disabled or missing key, a message KMS
/// refuses) is not, and says which it was.
fn classify(key_id: &str, code: Option<&str>) -> RemoteFailure {
    match code {
        Some(c) if is_throttling(c) => RemoteFailure::Busy("KMS signing throttled".into()),
        Some(
            c @ ("KMSInternalException" | "DependencyTimeoutException" | "KeyUnavailableException"),
        ) => RemoteFailure::Busy(format!("KMS signing unavailable ({c})")),
        Some(c) => RemoteFailure::Failed(format!("KMS Sign with key {key_id}: {c}")),
        None => RemoteFailure::Busy("KMS signing did not answer".into()),
    }
}

fn kms_err(op: &str, e: impl std::fmt::Display) -> CaError {
    CaError::Signing(format!("KMS {op}: {e}"))
}

impl KmsSigner {
    /// Creates a signing key in KMS (only the specs CloudFront accepts exist in
    /// [`KeyAlgorithm`]) and returns its signer.
    pub async fn create(client: Client, alg: KeyAlgorithm, description: &str) -> Result<Self> {
        let out = client
            .create_key()
            .key_spec(spec(alg))
            .key_usage(KeyUsageType::SignVerify)
            .description(description)
            .send()
            .await
            .map_err(|e| kms_err("CreateKey", aws_sdk_kms::error::DisplayErrorContext(&e)))?;
        let key_id =
            out.key_metadata.map(|m| m.key_id).ok_or_else(|| kms_err("CreateKey", "no key id"))?;
        Self::open(client, &key_id, alg).await
    }

    /// Schedules the key's deletion (KMS's shortest window, 7 days, in which
    /// `CancelKeyDeletion` still brings it back): for keys an `init` made and then could not
    /// use.
    pub async fn schedule_deletion(&self) -> Result<()> {
        self.client
            .schedule_key_deletion()
            .key_id(&self.key_id)
            .pending_window_in_days(7)
            .send()
            .await
            .map_err(|e| {
                kms_err("ScheduleKeyDeletion", aws_sdk_kms::error::DisplayErrorContext(&e))
            })?;
        Ok(())
    }

    /// Opens an existing key, checking it is the algorithm the CA expects.
    pub async fn open(client: Client, key_id: &str, alg: KeyAlgorithm) -> Result<Self> {
        let out =
            client.get_public_key().key_id(key_id).send().await.map_err(|e| {
                kms_err("GetPublicKey", aws_sdk_kms::error::DisplayErrorContext(&e))
            })?;
        let spki = out.public_key.ok_or_else(|| kms_err("GetPublicKey", "no public key"))?;
        use x509_parser::prelude::FromDer;
        let (_, parsed) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki.as_ref())
            .map_err(|e| kms_err("GetPublicKey", e))?;
        // The key itself says what it is (KeySpec is not always reported).
        let actual = crate::csr::key_algorithm_of(&parsed)
            .map_err(|e| CaError::Config(format!("KMS key {key_id}: {e}")))?;
        if actual != alg {
            return Err(CaError::Config(format!("KMS key {key_id} is {actual}, not {alg}")));
        }
        let public_key = parsed.subject_public_key.data.to_vec();
        Ok(KmsSigner {
            client,
            key_id: key_id.to_owned(),
            alg,
            public_key,
            runtime: tokio::runtime::Handle::try_current()
                .map_err(|_| CaError::Config("the KMS signer needs a tokio runtime".into()))?,
        })
    }

    /// A key whose public half its CA certificate already gives (a retired issuing CA, an
    /// earlier root): no KMS call until it signs, so a Lambda starts without one call per
    /// earlier CA, and a key deleted once its CA's last certificate expired costs nothing
    /// until something would be signed with it (which then fails, naming the key).
    pub fn for_certificate(
        client: Client,
        key_id: &str,
        alg: KeyAlgorithm,
        cert_der: &[u8],
    ) -> Result<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
            .map_err(|e| CaError::Config(format!("certificate of KMS key {key_id}: {e}")))?;
        let actual = crate::csr::key_algorithm_of(cert.public_key())
            .map_err(|e| CaError::Config(format!("KMS key {key_id}: {e}")))?;
        if actual != alg {
            return Err(CaError::Config(format!("KMS key {key_id} is {actual}, not {alg}")));
        }
        Ok(KmsSigner {
            client,
            key_id: key_id.to_owned(),
            alg,
            public_key: cert.public_key().subject_public_key.data.to_vec(),
            runtime: tokio::runtime::Handle::try_current()
                .map_err(|_| CaError::Config("the KMS signer needs a tokio runtime".into()))?,
        })
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }
}

impl rcgen::PublicKeyData for KmsSigner {
    fn der_bytes(&self) -> &[u8] {
        &self.public_key
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        super::rcgen_algorithm(self.alg)
    }
}

impl rcgen::SigningKey for KmsSigner {
    fn sign(&self, msg: &[u8]) -> std::result::Result<Vec<u8>, rcgen::Error> {
        let (message, message_type) = kms_message(self.alg, msg);
        let call = self
            .client
            .sign()
            .key_id(&self.key_id)
            .message(Blob::new(message))
            .message_type(message_type)
            .signing_algorithm(signing_alg(self.alg))
            .send();
        // Resolve to the signature or a logged failure inside the blocking section, so only
        // a small value crosses it.
        tokio::task::block_in_place(|| {
            self.runtime.block_on(async {
                match call.await {
                    Ok(out) => {
                        let sig = out.signature.map(|b| b.into_inner());
                        super::note_remote_failure(sig.is_none().then(|| {
                            RemoteFailure::Failed(format!("KMS Sign with key {} returned no signature", self.key_id))
                        }));
                        sig
                    }
                    Err(e) => {
                        let code = aws_sdk_kms::error::ProvideErrorMetadata::code(&e);
                        let failure = classify(&self.key_id, code);
                        if let RemoteFailure::Busy(reason) = &failure {
                            tracing::warn!(key_id = %self.key_id, code = code.unwrap_or("-"), "{reason}; answering 503 busy");
                        } else {
                            tracing::error!(key_id = %self.key_id, error = %aws_sdk_kms::error::DisplayErrorContext(&e), "KMS Sign failed");
                        }
                        super::note_remote_failure(Some(failure));
                        None
                    }
                }
            })
        })
        .ok_or(rcgen::Error::RemoteKeyError)
    }
}

impl Signer for KmsSigner {
    fn key_algorithm(&self) -> KeyAlgorithm {
        self.alg
    }
    fn describe(&self) -> String {
        format!("kms:{}", self.key_id)
    }
}

#[cfg(test)]
mod tests {
    use super::{RemoteFailure, classify};
    use crate::error::CaError;
    use lanyard_proto::ProblemCode;

    /// What the CA answers after a KMS `Sign` failed with `code`: the signer notes the
    /// failure on its thread and rcgen reports `RemoteKeyError`, as in `sign`.
    fn answer(code: Option<&str>) -> CaError {
        crate::signer::note_remote_failure(Some(classify("key-1", code)));
        CaError::from(rcgen::Error::RemoteKeyError)
    }

    #[test]
    fn throttling_is_busy_and_a_denied_key_is_internal() {
        for code in [
            Some("ThrottlingException"),
            Some("LimitExceededException"),
            Some("KMSInternalException"),
            None,
        ] {
            let e = answer(code);
            assert_eq!(e.code(), ProblemCode::Busy, "{code:?}: {e}");
            assert!(matches!(e, CaError::Unavailable { retry_after_secs: 5..=9, .. }), "{e:?}");
        }
        for code in [
            "AccessDeniedException",
            "DisabledException",
            "KMSInvalidStateException",
            "ValidationException",
        ] {
            let e = answer(Some(code));
            assert_eq!(e.code(), ProblemCode::Internal, "{code}: {e}");
            assert!(e.to_string().contains(code), "{e}");
        }
        assert_eq!(
            classify("k", Some("ThrottlingException")),
            RemoteFailure::Busy("KMS signing throttled".into())
        );
        // Read once: a later, unrelated failure does not inherit it.
        assert_eq!(crate::signer::take_remote_failure(), None);
    }

    #[test]
    fn messages_beyond_the_raw_limit_go_as_the_digest_the_algorithm_names() {
        use super::{KMS_RAW_MAX, MessageType, kms_message};
        use lanyard_proto::KeyAlgorithm;
        let at_limit = vec![7u8; KMS_RAW_MAX];
        assert_eq!(
            kms_message(KeyAlgorithm::EcdsaP256, &at_limit),
            (at_limit.clone(), MessageType::Raw)
        );
        let over = vec![7u8; KMS_RAW_MAX + 1];
        let sha256 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &over);
        let sha384 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA384, &over);
        for (alg, want) in [
            (KeyAlgorithm::EcdsaP256, sha256.as_ref()),
            (KeyAlgorithm::Rsa3072, sha256.as_ref()),
            (KeyAlgorithm::EcdsaP384, sha384.as_ref()),
        ] {
            assert_eq!(kms_message(alg, &over), (want.to_vec(), MessageType::Digest), "{alg}");
        }
    }
}
