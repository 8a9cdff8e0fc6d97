//! The credential: a private key and the certificate chain issued for it.
//!
//! The key is opaque bytes to this crate (PKCS#8 DER, or a hardware key's handle): it is
//! stored, read back and compared, never parsed. It lives in [`Zeroizing`] memory and no `Debug` or error ever shows it.

use std::fmt;
use zeroize::Zeroizing;

/// A private key and its certificate chain, as one unit: the store never returns a key
/// with another generation's chain.
#[derive(Clone)]
pub struct Credential {
    /// The private key, PKCS#8 DER; for a hardware store (`tpm`, `pkcs11`), the key's
    /// handle (a TPM-wrapped blob, a token object's id), which is useless without the
    /// hardware. Wiped from memory when dropped.
    pub key: Zeroizing<Vec<u8>>,
    /// The certificate chain, DER: the leaf (this key's certificate) first, then the CAs.
    pub chain_der: Vec<Vec<u8>>,
}

impl Credential {
    /// A credential from a key and a chain (leaf first).
    pub fn new(key: Zeroizing<Vec<u8>>, chain_der: Vec<Vec<u8>>) -> Self {
        Credential { key, chain_der }
    }

    /// The leaf certificate (DER), if the chain is not empty.
    pub fn leaf_der(&self) -> Option<&[u8]> {
        self.chain_der.first().map(Vec::as_slice)
    }

    /// The chain as PEM `CERTIFICATE` blocks, leaf first, LF line endings: the form
    /// `curl --cert`, nginx and openssl read.
    pub fn chain_pem(&self) -> String {
        let blocks: Vec<pem::Pem> =
            self.chain_der.iter().map(|der| pem::Pem::new("CERTIFICATE", der.clone())).collect();
        pem::encode_many_config(
            &blocks,
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        )
    }

    /// Parses PEM `CERTIFICATE` blocks (leaf first) into DER. Any other block type, or no
    /// certificate at all, is an error: a chain file holds certificates and nothing else.
    pub fn chain_from_pem(pem_text: &str) -> Result<Vec<Vec<u8>>, String> {
        let blocks = pem::parse_many(pem_text).map_err(|e| format!("bad PEM: {e}"))?;
        if blocks.is_empty() {
            return Err("no CERTIFICATE block".to_string());
        }
        blocks
            .into_iter()
            .map(|b| {
                if b.tag() == "CERTIFICATE" {
                    Ok(b.into_contents())
                } else {
                    Err(format!("unexpected PEM block {:?} (only CERTIFICATE is allowed)", b.tag()))
                }
            })
            .collect()
    }

    /// Checks the shape a store needs before it writes anything: a non-empty key and a
    /// non-empty chain of DER SEQUENCEs. (Whether the key matches the leaf is the agent's
    /// check: it needs cryptography, which this crate does not do.)
    /// A hardware key's handle is the backend's business: only its presence is checked.
    pub(crate) fn check_shape(&self, hardware: bool) -> Result<(), String> {
        if self.key.is_empty() {
            return Err("the private key is empty".to_string());
        }
        if !hardware && self.key.first() != Some(&0x30) {
            return Err("the private key is not DER (PKCS#8 starts with a SEQUENCE)".to_string());
        }
        if self.chain_der.is_empty() {
            return Err("the certificate chain is empty".to_string());
        }
        for (i, cert) in self.chain_der.iter().enumerate() {
            if cert.first() != Some(&0x30) {
                return Err(format!("certificate {i} of the chain is not DER"));
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sizes: Vec<usize> = self.chain_der.iter().map(Vec::len).collect();
        f.debug_struct("Credential")
            .field("key", &"...")
            .field("chain_der_lengths", &sizes)
            .finish()
    }
}
