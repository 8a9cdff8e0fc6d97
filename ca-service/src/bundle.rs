//! CloudFront's trust store rules for a CA bundle, checked one by one so that
//! `lanyard-ca bundle --check` can say every rule a bundle breaks, not just the first.
//!
//! The rules (numbered as in the docs): 1 PEM, only CERTIFICATE blocks, X.509 v3;
//! 2 no blank lines between certificates, `#` comments without `-`; 3 CA keys RSA
//! 2048/3072/4096 or ECDSA P-256/P-384; 4 signatures SHA-256/384/512 with RSA PKCS#1 v1.5,
//! RSA-PSS or ECDSA; 5 at most 25 certificates, 65,536 bytes in all, 16,384 bytes each,
//! chain depth (leaf plus CAs) at most 4. Lanyard adds 6: every certificate is a CA.

use x509_parser::prelude::{FromDer, X509Certificate};

pub const MAX_CERTS: usize = 25;
pub const MAX_BUNDLE_BYTES: usize = 65_536;
pub const MAX_CERT_BYTES: usize = 16_384;
pub const MAX_DEPTH: usize = 4;

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub rule: u8,
    /// 1-based line in the bundle, where the problem has one.
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "rule {} (line {l}): {}", self.rule, self.message),
            None => write!(f, "rule {}: {}", self.rule, self.message),
        }
    }
}

/// What a passing bundle holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleSummary {
    pub certificates: usize,
    pub bytes: usize,
    pub subjects: Vec<String>,
}

/// The bundle Lanyard writes: a comment, the roots in use (after a root rotation, two),
/// then each issuing CA in use, current first (PEM, no blank lines, so it passes every rule above).
pub fn build(name: &str, root_ders: &[Vec<u8>], issuing_ders: &[Vec<u8>]) -> String {
    let roots = if root_ders.len() > 1 { "roots" } else { "root" };
    let what = if issuing_ders.len() > 1 { "issuing CAs" } else { "issuing CA" };
    let mut out = format!("# {name} CA bundle: {roots} then {what}\n");
    for der in root_ders.iter().chain(issuing_ders) {
        out.push_str(&certificate_pem(der));
    }
    out
}

/// A certificate as PEM with `\n` line endings (what openssl writes; the `pem` crate's
/// default is `\r\n`).
pub fn certificate_pem(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

const BEGIN: &str = "-----BEGIN ";
const END: &str = "-----END ";

/// Checks a bundle against every rule. `Ok` only when none is broken.
pub fn check(bytes: &[u8]) -> Result<BundleSummary, Vec<Violation>> {
    let mut v = Vec::new();
    let mut push =
        |rule: u8, line: Option<usize>, message: String| v.push(Violation { rule, line, message });

    if bytes.len() > MAX_BUNDLE_BYTES {
        push(5, None, format!("bundle is {} bytes; at most {MAX_BUNDLE_BYTES}", bytes.len()));
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        push(1, None, "bundle is not text (PEM): it holds non-UTF-8 bytes".into());
        return Err(v);
    };

    // Walk lines: blocks, comments, blank lines.
    let mut blocks: Vec<(usize, String, String)> = Vec::new(); // (first line, label, base64)
    let mut current: Option<(usize, String, String)> = None;
    let mut seen_block = false;
    let mut pending_blank: Option<usize> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim_end_matches('\r');
        if let Some((_, label, b64)) = current.as_mut() {
            if let Some(rest) = line.strip_prefix(END) {
                let end_label = rest.trim_end_matches('-');
                if end_label != label {
                    push(1, Some(n), format!("END {end_label} does not close BEGIN {label}"));
                }
                if let Some(b) = current.take() {
                    blocks.push(b);
                }
                seen_block = true;
            } else {
                b64.push_str(line.trim());
            }
            continue;
        }
        if line.trim().is_empty() {
            pending_blank.get_or_insert(n);
            continue;
        }
        if let Some(rest) = line.strip_prefix(BEGIN) {
            if let Some(b) = pending_blank.take()
                && seen_block
            {
                push(2, Some(b), "blank line between certificates".into());
            }
            current = Some((n, rest.trim_end_matches('-').to_owned(), String::new()));
        } else if line.starts_with('#') {
            if line.contains('-') {
                push(2, Some(n), "comment contains '-'".into());
            }
        } else {
            push(1, Some(n), "text outside a PEM block that is not a '#' comment".into());
        }
        pending_blank = pending_blank.filter(|_| line.starts_with('#')); // comments keep it
    }
    if let Some((n, label, _)) = current {
        push(1, Some(n), format!("BEGIN {label} is never closed"));
    }
    if blocks.is_empty() {
        push(1, None, "bundle holds no certificate".into());
    }
    if blocks.len() > MAX_CERTS {
        push(5, None, format!("bundle holds {} certificates; at most {MAX_CERTS}", blocks.len()));
    }

    let mut ders: Vec<(usize, Vec<u8>)> = Vec::new();
    for (n, label, b64) in &blocks {
        if label != "CERTIFICATE" {
            push(1, Some(*n), format!("{label} block; only CERTIFICATE blocks are allowed"));
            continue;
        }
        let pem_len = b64.len() + 2 * "-----BEGIN CERTIFICATE-----".len();
        if pem_len > MAX_CERT_BYTES {
            push(
                5,
                Some(*n),
                format!("certificate is about {pem_len} bytes; at most {MAX_CERT_BYTES}"),
            );
        }
        match lanyard_proto::est::decode_base64(b64.as_bytes()) {
            Ok(d) => ders.push((*n, d)),
            Err(e) => push(1, Some(*n), format!("certificate is not valid base64: {e}")),
        }
    }

    let mut parsed = Vec::new();
    for (n, der) in &ders {
        match X509Certificate::from_der(der) {
            Ok(([], c)) => parsed.push((*n, c)),
            Ok(_) => push(1, Some(*n), "certificate has trailing bytes".into()),
            Err(e) => push(1, Some(*n), format!("not an X.509 certificate: {e}")),
        }
    }
    for (n, c) in &parsed {
        let n = Some(*n);
        let who = c.subject().to_string();
        if c.version().0 != 2 {
            push(1, n, format!("{who}: X.509 v{}; only v3 is allowed", c.version().0 + 1));
        }
        if let Err(e) = crate::csr::key_algorithm_of(c.public_key()) {
            push(3, n, format!("{who}: {e}"));
        }
        if let Some(problem) = signature_problem(&c.signature_algorithm.algorithm) {
            push(4, n, format!("{who}: {problem}"));
        }
        match c.basic_constraints() {
            Ok(Some(bc)) if bc.value.ca => {}
            _ => push(
                6,
                n,
                format!("{who}: not a CA certificate (basicConstraints CA:TRUE missing)"),
            ),
        }
    }

    // Depth: longest issuer chain inside the bundle, plus the leaf below it.
    let certs: Vec<&X509Certificate<'_>> = parsed.iter().map(|(_, c)| c).collect();
    for (n, c) in &parsed {
        let mut depth = 1;
        let mut cur: &X509Certificate<'_> = c;
        let mut guard = 0;
        while cur.subject() != cur.issuer() && guard < MAX_CERTS {
            match certs.iter().find(|p| p.subject() == cur.issuer()) {
                Some(p) => {
                    depth += 1;
                    cur = *p;
                }
                None => break,
            }
            guard += 1;
        }
        if depth + 1 > MAX_DEPTH {
            push(
                5,
                Some(*n),
                format!(
                    "{}: chain depth with a leaf would be {}; at most {MAX_DEPTH}",
                    c.subject(),
                    depth + 1
                ),
            );
        }
    }

    if v.is_empty() {
        Ok(BundleSummary {
            certificates: parsed.len(),
            bytes: bytes.len(),
            subjects: parsed.iter().map(|(_, c)| c.subject().to_string()).collect(),
        })
    } else {
        Err(v)
    }
}

fn signature_problem(oid: &x509_parser::der_parser::Oid<'_>) -> Option<String> {
    let s = oid.to_id_string();
    const OK: [&str; 7] = [
        "1.2.840.113549.1.1.11", // sha256WithRSAEncryption
        "1.2.840.113549.1.1.12", // sha384WithRSAEncryption
        "1.2.840.113549.1.1.13", // sha512WithRSAEncryption
        "1.2.840.113549.1.1.10", // RSASSA-PSS
        "1.2.840.10045.4.3.2",   // ecdsa-with-SHA256
        "1.2.840.10045.4.3.3",   // ecdsa-with-SHA384
        "1.2.840.10045.4.3.4",   // ecdsa-with-SHA512
    ];
    if OK.contains(&s.as_str()) {
        None
    } else if s == "1.2.840.113549.1.1.5" || s == "1.2.840.10045.4.1" {
        Some("signed with SHA-1, which CloudFront refuses".into())
    } else {
        Some(format!("signature algorithm {s} is not SHA-2 with RSA or ECDSA"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem(alg: &'static rcgen::SignatureAlgorithm) -> String {
        let key = rcgen::KeyPair::generate_for(alg).expect("key");
        let mut p = rcgen::CertificateParams::default();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, "Test Root");
        p.self_signed(&key).expect("cert").pem()
    }

    #[test]
    fn a_good_bundle_passes() {
        let pem = format!("# Test bundle\n{}", ca_pem(&rcgen::PKCS_ECDSA_P384_SHA384));
        let s = check(pem.as_bytes()).expect("valid");
        assert_eq!(s.certificates, 1);
    }

    #[test]
    fn every_broken_rule_is_named() {
        let a = ca_pem(&rcgen::PKCS_ECDSA_P256_SHA256);
        let b = ca_pem(&rcgen::PKCS_ED25519);
        let bundle = format!(
            "# a-b\n{a}\n{b}-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        );
        let v = check(bundle.as_bytes()).unwrap_err();
        let rules: Vec<u8> = v.iter().map(|x| x.rule).collect();
        assert!(rules.contains(&1), "{v:?}"); // private key block
        assert!(rules.contains(&2), "{v:?}"); // blank line and '-' in comment
        assert!(rules.contains(&3), "{v:?}"); // Ed25519
        assert!(v.iter().filter(|x| x.rule == 2).count() >= 2, "{v:?}");
    }

    #[test]
    fn size_and_count_limits() {
        let a = ca_pem(&rcgen::PKCS_ECDSA_P256_SHA256);
        let many = a.repeat(26);
        let v = check(many.as_bytes()).unwrap_err();
        assert!(v.iter().any(|x| x.rule == 5 && x.message.contains("26 certificates")), "{v:?}");
        assert!(check(b"").is_err());
        assert!(check(&[0xff, 0xfe]).is_err());
    }
}
