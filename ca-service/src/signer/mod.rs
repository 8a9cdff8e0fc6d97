//! Signers: where the CA's private keys live and how they sign.
//!
//! The issuance flow sees only [`Signer`] (rcgen's synchronous `SigningKey` plus what the
//! CA needs to describe the key). Backends: [`local`] (PEM key files, 0600). A KMS backend
//! implements the same trait; its async calls are adapted to the synchronous trait in that
//! backend alone.
//!
//! A signer never exposes its private key: no getter returns it and `Debug` prints `...`.

#[cfg(feature = "aws")]
pub mod kms;
pub mod local;

use lanyard_proto::KeyAlgorithm;
use std::sync::Arc;

/// A CA key that signs certificates, CRLs and OCSP answers.
pub trait Signer: rcgen::SigningKey + Send + Sync + std::fmt::Debug {
    fn key_algorithm(&self) -> KeyAlgorithm;
    /// Where the key lives, for logs and `lanyard-ca status` (never the key itself).
    fn describe(&self) -> String;
}

/// Why a remote signer (KMS) failed, beyond what `rcgen::Error::RemoteKeyError` can say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteFailure {
    /// Throttled or briefly unavailable: the client should come back later (503 busy).
    Busy(String),
    /// A failure that retrying will not cure (access denied, disabled key): 500.
    Failed(String),
}

thread_local! {
    /// The outcome of the last remote signature made on this thread. rcgen's `SigningKey`
    /// is synchronous, so the failure is read on the same thread, right after `sign`
    /// returns, when its `RemoteKeyError` becomes a [`crate::CaError`].
    static REMOTE_FAILURE: std::cell::RefCell<Option<RemoteFailure>> =
        const { std::cell::RefCell::new(None) };
}

/// Records the outcome of a remote signature (`None`: it succeeded).
pub fn note_remote_failure(f: Option<RemoteFailure>) {
    REMOTE_FAILURE.with(|c| *c.borrow_mut() = f);
}

/// Takes the failure of the last remote signature on this thread, if it failed.
pub fn take_remote_failure() -> Option<RemoteFailure> {
    REMOTE_FAILURE.with(|c| c.borrow_mut().take())
}

/// The rcgen signature algorithm that goes with a key algorithm.
pub fn rcgen_algorithm(alg: KeyAlgorithm) -> &'static rcgen::SignatureAlgorithm {
    match alg {
        KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyAlgorithm::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
            &rcgen::PKCS_RSA_SHA256
        }
    }
}

/// DER AlgorithmIdentifier of the signatures this key makes (for OCSP answers, which rcgen
/// does not build).
pub fn signature_algorithm_identifier(alg: KeyAlgorithm) -> spki::AlgorithmIdentifierOwned {
    use const_oid::db::rfc5912::{
        ECDSA_WITH_SHA_256, ECDSA_WITH_SHA_384, SHA_256_WITH_RSA_ENCRYPTION,
    };
    match alg {
        KeyAlgorithm::EcdsaP256 => {
            spki::AlgorithmIdentifierOwned { oid: ECDSA_WITH_SHA_256, parameters: None }
        }
        KeyAlgorithm::EcdsaP384 => {
            spki::AlgorithmIdentifierOwned { oid: ECDSA_WITH_SHA_384, parameters: None }
        }
        _ => spki::AlgorithmIdentifierOwned {
            oid: SHA_256_WITH_RSA_ENCRYPTION,
            parameters: Some(der::asn1::Null.into()),
        },
    }
}

/// A shareable signer, so one `rcgen::Issuer` can be built once and used by every request.
#[derive(Clone, Debug)]
pub struct SharedSigner(pub Arc<dyn Signer>);

impl rcgen::PublicKeyData for SharedSigner {
    fn der_bytes(&self) -> &[u8] {
        self.0.der_bytes()
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.0.algorithm()
    }
}

impl rcgen::SigningKey for SharedSigner {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.0.sign(msg)
    }
}
