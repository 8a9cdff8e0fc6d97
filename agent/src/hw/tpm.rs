//! The TPM 2.0 store (`[store] backend = "tpm"`, feature `tpm`), on tss-esapi (the tpm2-tss
//! ESAPI; `libtss2-esys`, `libtss2-tctildr` and friends at run time).
//!
//! # Keys
//! A device key is an ordinary TPM object made with TPM2_Create under a storage primary
//! key: fixedTPM, fixedParent and sensitiveDataOrigin (generated inside, never leaves, not
//! even wrapped for another TPM), userWithAuth with an empty password, sign only (not
//! decrypt, not restricted, so it signs digests we computed). ECDSA P-256 with SHA-256, or
//! RSASSA-PKCS1-v1_5 with SHA-256 on RSA-2048. What the handle keeps is the key's public
//! area and its private area wrapped by the primary key (standard `TPM2B_PUBLIC` and
//! `TPM2B_PRIVATE`, as tpm2-tools reads them): only this TPM, with its owner seed
//! unchanged, can load it.
//!
//! # The primary key
//! Made with TPM2_CreatePrimary in the owner hierarchy from a fixed template every time a
//! connection opens, and kept loaded while it lasts. The TPM derives a primary from its
//! seed and the template, so the same template gives the same key every time: nothing is
//! made persistent, no NV handle is claimed. The template is tpm2-tools' default ECC
//! storage key (`tpm2_createprimary -C o -G ecc256:aes128cfb`), so the key blobs can be
//! examined with tpm2-tools too. Clearing the TPM changes the seed: the blobs then fail to
//! load, and the error says to enrol again.
//!
//! # Connection
//! One ESAPI context per backend, opened on first use, behind a mutex (TPM commands are
//! one at a time anyway). When the TPM stops answering (daemon gone, socket closed) the
//! context is dropped, and with it everything loaded through it; the next call opens a new
//! one (and a call that finds a stale connection retries once on a fresh one). A key is
//! loaded for each signature and flushed right after, so no key object outlives a call and
//! nothing has to be tracked across reconnects: a TPM without a resource manager (swtpm,
//! `/dev/tpm0`) has as few as 3 transient slots, and this keeps us to 2 (the primary and
//! the key) however many keys are open. Load, sign and flush take about 1.5 ms (P-256) and
//! 5 ms (RSA-2048) on swtpm (measured by the tests, 2-core VM); the agent signs once per
//! TLS handshake.
//!
//! tpm2-tss logs its own warnings and errors to stderr (a refused connection, a failed
//! load), besides the errors returned here; `TSS2_LOG=all+none` in the environment
//! silences it.

use super::handle::Handle;
use super::signer::{bit_string, der, der_uint, ecdsa_der, p256_spki};
use super::{HardwareBackend, HardwareKey, HwError, HwResult};
use lanyard_proto::KeyAlgorithm;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use tss_esapi::Context;
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::constants::Tss2ResponseCode;
use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Digest, EccPoint, EccScheme, HashScheme, HashcheckTicket, Private, Public, PublicBuffer,
    PublicEccParametersBuilder, RsaExponent, RsaScheme, Signature, SignatureScheme,
    SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;
use tss_esapi::utils::{
    create_unrestricted_signing_ecc_public, create_unrestricted_signing_rsa_public,
};
use zeroize::Zeroizing;

/// The algorithms this store makes, for the error that refuses the others.
const SUPPORTED: &str = "ecdsa-p256 and rsa-2048";

/// A TPM 2.0 reached through a TCTI.
pub struct TpmBackend {
    shared: Arc<Shared>,
}

/// What the backend and its keys share: where the TPM is, and the connection.
struct Shared {
    /// As configured, for messages: `device:/dev/tpmrm0`, `swtpm:host=...,port=...`.
    tcti: String,
    conf: TctiNameConf,
    conn: Mutex<Option<Connection>>,
}

/// An open ESAPI context and the storage primary key loaded through it. Dropping it flushes
/// what it loaded (tss-esapi's `Context` does so on drop) and closes the TCTI.
struct Connection {
    ctx: Context,
    primary: KeyHandle,
    /// Something failed that leaves the context in doubt: drop it after this call.
    broken: bool,
}

impl fmt::Debug for TpmBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TpmBackend").field("tcti", &self.shared.tcti).finish_non_exhaustive()
    }
}

impl TpmBackend {
    /// A backend for the TPM at `tcti` (`device:/dev/tpmrm0`, `swtpm:host=H,port=P`,
    /// `mssim:...`, `tabrmd:...`). Nothing is opened until the first call that needs the
    /// TPM, so an agent whose TPM is briefly away still starts.
    pub fn new(tcti: &str) -> HwResult<TpmBackend> {
        let conf = TctiNameConf::from_str(tcti).map_err(|e| {
            HwError::Refused(format!(
                "TPM TCTI {tcti:?} is not understood ({e}); use e.g. device:/dev/tpmrm0 or \
                 swtpm:host=127.0.0.1,port=2321"
            ))
        })?;
        Ok(TpmBackend {
            shared: Arc::new(Shared { tcti: tcti.to_owned(), conf, conn: Mutex::new(None) }),
        })
    }
}

impl HardwareBackend for TpmBackend {
    fn generate(&self, alg: KeyAlgorithm) -> HwResult<Arc<dyn HardwareKey>> {
        let template = key_template(alg).map_err(|e| match e {
            Some(e) => HwError::Refused(format!("TPM key template for {alg}: {e}")),
            None => HwError::Refused(format!(
                "the TPM store makes {SUPPORTED} keys, not {alg}; choose one of those"
            )),
        })?;
        let (public, private) = self.shared.with_tpm(|c| {
            let primary = c.primary;
            let made = c
                .ctx
                .execute_with_session(Some(AuthSession::Password), |ctx| {
                    ctx.create(primary, template.clone(), None, None, None, None)
                })
                .map_err(|e| (Step::Create, e))?;
            Ok((made.out_public, made.out_private))
        })?;
        let spki = spki_der(&public).map_err(|why| {
            HwError::Refused(format!(
                "the TPM at {} made a key whose public part is unusable: {why}",
                self.shared.tcti
            ))
        })?;
        let tpm2b_public = PublicBuffer::try_from(public.clone())
            .and_then(|b| b.marshall())
            .map_err(|e| HwError::Refused(format!("encoding the TPM key's public area: {e}")))?;
        let mut handle = Handle::new("tpm", alg, &spki);
        handle.public = Some(Handle::encode(&tpm2b_public));
        handle.private = Some(Handle::encode(&private_to_tpm2b(&private)));
        tracing::info!(algorithm = %alg, tcti = %self.shared.tcti, "generated a key in the TPM");
        Ok(Arc::new(TpmKey {
            alg,
            spki,
            public,
            private,
            handle: handle.to_bytes(),
            shared: self.shared.clone(),
        }))
    }

    /// Reads the handle only; the TPM is asked at the first signature, so a key whose TPM is
    /// away for now still opens (and its signatures fail as [`HwError::Unreachable`]).
    fn open(&self, handle: &[u8]) -> HwResult<Arc<dyn HardwareKey>> {
        let h = Handle::parse(handle, "tpm")?;
        let alg = h.algorithm()?;
        if key_template(alg).is_err() {
            return Err(HwError::KeyMissing(format!(
                "the stored key handle names a {alg} key, which the TPM store does not make \
                 ({SUPPORTED}); enrol again"
            )));
        }
        let stored_spki = h.spki_der()?;
        let bad =
            |why: String| HwError::KeyMissing(format!("stored TPM key handle: {why}; enrol again"));
        let public = PublicBuffer::unmarshall(&Handle::blob(&h.public, "public")?)
            .and_then(Public::try_from)
            .map_err(|e| bad(format!("public area: {e}")))?;
        let private = private_from_tpm2b(&Handle::blob(&h.private, "private")?).map_err(bad)?;
        let spki = spki_der(&public).map_err(|why| bad(format!("public area: {why}")))?;
        if spki != stored_spki {
            return Err(bad("its public area is not the key its spki names".to_owned()));
        }
        if key_algorithm(&public) != Some(alg) {
            return Err(bad(format!("its public area is not a {alg} key")));
        }
        Ok(Arc::new(TpmKey {
            alg,
            spki,
            public,
            private,
            handle: Zeroizing::new(handle.to_vec()),
            shared: self.shared.clone(),
        }))
    }

    /// Nothing to do: a TPM-wrapped key exists only as its handle's blob (it was never made
    /// persistent, and is loaded only for the length of a signature), so deleting the handle
    /// file, which the store does, destroys the key.
    fn destroy(&self, _handle: &[u8]) -> HwResult<()> {
        Ok(())
    }

    /// Nothing to do, for the same reason as [`destroy`](Self::destroy): a key whose handle
    /// was never staged left nothing behind in the TPM.
    fn sweep(&self, _keep: &[Zeroizing<Vec<u8>>]) -> HwResult<()> {
        Ok(())
    }

    /// Connects (which creates the primary key, so it also checks the owner hierarchy
    /// lets us) and asks for 8 random bytes.
    fn probe(&self) -> HwResult<()> {
        self.shared
            .with_tpm(|c| {
                c.ctx.execute_without_session(|ctx| ctx.get_random(8)).map_err(|e| (Step::Probe, e))
            })
            .map(drop)
    }

    fn describe(&self) -> String {
        format!("TPM 2.0 at {}", self.shared.tcti)
    }

    fn protection(&self) -> &'static str {
        "TPM 2.0, non-exportable"
    }
}

/// One key: its public and wrapped private areas, loaded into the TPM for each signature.
struct TpmKey {
    alg: KeyAlgorithm,
    spki: Vec<u8>,
    public: Public,
    private: Private,
    handle: Zeroizing<Vec<u8>>,
    shared: Arc<Shared>,
}

impl fmt::Debug for TpmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TpmKey")
            .field("algorithm", &self.alg)
            .field("tcti", &self.shared.tcti)
            .finish_non_exhaustive()
    }
}

impl HardwareKey for TpmKey {
    fn algorithm(&self) -> KeyAlgorithm {
        self.alg
    }

    fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    fn sign(&self, message: &[u8]) -> HwResult<Vec<u8>> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message);
        let digest = Digest::try_from(digest.as_ref().to_vec())
            .map_err(|e| HwError::Refused(format!("TPM digest: {e}")))?;
        let hash_scheme = HashScheme::new(HashingAlgorithm::Sha256);
        let scheme = match self.alg {
            KeyAlgorithm::EcdsaP256 => SignatureScheme::EcDsa { hash_scheme },
            _ => SignatureScheme::RsaSsa { hash_scheme },
        };
        // A NULL ticket: the digest was not computed by the TPM, which an unrestricted key
        // accepts (a restricted one would refuse to sign it).
        let validation = HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
            tag: TPM2_ST_HASHCHECK,
            hierarchy: TPM2_RH_NULL,
            digest: Default::default(),
        })
        .map_err(|e| HwError::Refused(format!("TPM hashcheck ticket: {e}")))?;

        // Load, sign and flush under one lock: a key handle means nothing in another
        // connection, so none is kept past this call.
        let signed = self.shared.with_tpm(|c| {
            let primary = c.primary;
            let key = c
                .ctx
                .execute_with_session(Some(AuthSession::Password), |ctx| {
                    ctx.load(primary, self.private.clone(), self.public.clone())
                })
                .map_err(|e| (Step::Load, e))?;
            let signed = c.ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.sign(key, digest.clone(), scheme, validation.clone())
            });
            if let Err(e) = c.ctx.flush_context(key.into()) {
                // Whatever the signature, a key we cannot flush means a connection we
                // cannot trust: it goes after this call (and the key with it).
                let error = describe_error(e);
                let tcti = &self.shared.tcti;
                tracing::warn!(%tcti, %error, "could not flush a TPM key after signing");
                c.broken = true;
            }
            signed.map_err(|e| (Step::Sign, e))
        })?;
        match (self.alg, signed) {
            (KeyAlgorithm::EcdsaP256, Signature::EcDsa(sig)) => {
                Ok(ecdsa_der(sig.signature_r().value(), sig.signature_s().value()))
            }
            (KeyAlgorithm::Rsa2048, Signature::RsaSsa(sig)) => {
                // Always the modulus' length from a TPM; padded in case one trims it.
                left_pad(sig.signature().value(), 256).ok_or_else(|| {
                    HwError::Refused(format!(
                        "the TPM at {} returned an RSA-2048 signature longer than 256 bytes",
                        self.shared.tcti
                    ))
                })
            }
            (_, other) => Err(HwError::Refused(format!(
                "the TPM at {} answered a {} signature request with a {:?} signature",
                self.shared.tcti,
                self.alg,
                other.algorithm()
            ))),
        }
    }

    fn handle(&self) -> Zeroizing<Vec<u8>> {
        self.handle.clone()
    }
}

/// What we were doing when the TPM failed; it decides what the error means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Primary,
    Create,
    Load,
    Sign,
    Probe,
}

impl Step {
    fn doing(self) -> &'static str {
        match self {
            Step::Primary => "creating the storage primary key",
            Step::Create => "creating a key",
            Step::Load => "loading the device key",
            Step::Sign => "signing",
            Step::Probe => "asking for random bytes",
        }
    }
}

/// How a failure is handled: the error to report, and whether the connection is to be
/// dropped (and the call tried once more on a fresh one, if it was not fresh already).
struct Verdict {
    error: HwError,
    reconnect: bool,
}

impl Shared {
    /// Locks the connection. A panic while it was held may have left the context half-way
    /// through a command: drop it and start afresh.
    fn lock(&self) -> MutexGuard<'_, Option<Connection>> {
        match self.conn.lock() {
            Ok(guard) => guard,
            Err(poisoned) => {
                self.conn.clear_poison();
                let mut guard = poisoned.into_inner();
                *guard = None;
                guard
            }
        }
    }

    /// Runs `op` on the connection, opening it first if needed; `op` says which step
    /// failed. A failure that means the connection is gone or stale drops it; if the
    /// connection was an old one, `op` is tried once more on a new one (the TPM may have
    /// restarted since the last call). Everything `op` loads it must flush before it
    /// returns: the lock is held for the whole of it, so no handle escapes to a later
    /// connection.
    fn with_tpm<T>(
        &self,
        op: impl Fn(&mut Connection) -> Result<T, (Step, tss_esapi::Error)>,
    ) -> HwResult<T> {
        let mut guard = self.lock();
        let mut retried = false;
        loop {
            let fresh = guard.is_none();
            let conn = match &mut *guard {
                Some(conn) => conn,
                empty => empty.insert(self.connect()?),
            };
            let result = op(conn);
            // No free object slot: without a resource manager (swtpm, /dev/tpm0), a process
            // killed while it had objects loaded leaves them there until someone flushes
            // them (with /dev/tpmrm0 the kernel does, and this list is our own). Flush them,
            // as `tpm2_flushcontext -t` would, and try once more on a new connection.
            let full = matches!(&result, Err((_, e)) if is_object_memory(*e));
            if full {
                let flushed = flush_transients(&mut conn.ctx);
                tracing::warn!(tcti = %self.tcti, flushed, "the TPM had no free object slot: flushed the transient objects left loaded");
            }
            if conn.broken || full {
                *guard = None;
            }
            match result {
                Ok(v) => return Ok(v),
                Err((step, e)) => {
                    let verdict = self.judge(step, e);
                    if verdict.reconnect {
                        *guard = None;
                        if (!fresh || full) && !retried {
                            retried = true;
                            let (tcti, error) = (&self.tcti, &verdict.error);
                            tracing::debug!(%tcti, %error, "TPM connection stale; reconnecting");
                            continue;
                        }
                    }
                    return Err(verdict.error);
                }
            }
        }
    }

    /// Opens a context and creates the storage primary key in it.
    fn connect(&self) -> HwResult<Connection> {
        let mut ctx = Context::new(self.conf.clone()).map_err(|e| {
            HwError::Unreachable(format!(
                "the TPM at {} does not answer: cannot connect ({}); is it there, and may \
                 this user open it?",
                self.tcti,
                describe_error(e)
            ))
        })?;
        let template = primary_template().map_err(|e| {
            HwError::Refused(format!("TPM storage key template: {}", describe_error(e)))
        })?;
        let create = |ctx: &mut Context| {
            ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.create_primary(Hierarchy::Owner, template.clone(), None, None, None, None)
            })
        };
        let primary = match create(&mut ctx) {
            Err(e) if is_object_memory(e) => {
                // Without a resource manager (swtpm, /dev/tpm0), a process killed while it
                // had objects loaded leaves them there until someone flushes them; with
                // /dev/tpmrm0 the kernel does it and this list is our own (empty).
                let flushed = flush_transients(&mut ctx);
                tracing::warn!(tcti = %self.tcti, flushed, "the TPM had no free object slot: flushed the transient objects left loaded (a killed process's), as tpm2_flushcontext -t does");
                create(&mut ctx)
            }
            other => other,
        }
        .map_err(|e| self.judge(Step::Primary, e).error)?
        .key_handle;
        tracing::debug!(tcti = %self.tcti, "connected to the TPM");
        Ok(Connection { ctx, primary, broken: false })
    }

    /// What a tss-esapi error means at `step`.
    fn judge(&self, step: Step, e: tss_esapi::Error) -> Verdict {
        let tcti = &self.tcti;
        let doing = step.doing();
        let why = describe_error(e);
        let tpm = match tpm_code(e) {
            Code::Tpm(rc) => rc,
            Code::Stack => {
                // The TCTI, the resource manager or the ESAPI itself: the connection is
                // broken or out of step; a new one is the cure.
                return Verdict {
                    error: HwError::Unreachable(format!(
                        "the TPM at {tcti} does not answer ({doing}: {why}); retrying later"
                    )),
                    reconnect: true,
                };
            }
            Code::Local => {
                return Verdict {
                    error: HwError::Refused(format!("TPM at {tcti}: {doing}: {why}")),
                    reconnect: false,
                };
            }
        };
        let kind = tpm.kind();
        if is_warning(tpm) {
            // Busy, out of object memory, a handle that is not loaded (someone flushed
            // our primary), DA lockout: not for good, and a fresh connection may help.
            let hint = match kind {
                Some(Tss2ResponseCodeKind::Lockout) => " (the TPM is in dictionary-attack lockout)",
                Some(Tss2ResponseCodeKind::ObjectMemory) => {
                    " (no free transient object slot: another program may be leaving objects \
                     loaded in a TPM without a resource manager)"
                }
                _ => "",
            };
            return Verdict {
                error: HwError::Unreachable(format!(
                    "the TPM at {tcti} cannot do it now ({doing}: {why}){hint}; retrying later"
                )),
                reconnect: true,
            };
        }
        let error = match step {
            Step::Load => HwError::KeyMissing(format!(
                "the TPM at {tcti} cannot load the device key (was the TPM cleared or \
                 replaced?); enrol again: {why}"
            )),
            Step::Primary
                if matches!(
                    kind,
                    Some(Tss2ResponseCodeKind::BadAuth | Tss2ResponseCodeKind::AuthFail)
                ) =>
            {
                HwError::Refused(format!(
                    "the TPM at {tcti} refuses to create the storage key in the owner \
                     hierarchy ({why}): the owner hierarchy has a password, which Lanyard \
                     does not use"
                ))
            }
            Step::Primary | Step::Create => HwError::Refused(format!(
                "the TPM at {tcti} refuses {doing} ({why}); does it support {SUPPORTED} \
                 keys and is its owner hierarchy enabled?"
            )),
            Step::Sign | Step::Probe => {
                HwError::Refused(format!("the TPM at {tcti} refuses {doing}: {why}"))
            }
        };
        Verdict { error, reconnect: false }
    }
}

/// Whether the TPM said it has no free transient object slot.
fn is_object_memory(e: tss_esapi::Error) -> bool {
    matches!(tpm_code(e), Code::Tpm(rc) if rc.kind() == Some(Tss2ResponseCodeKind::ObjectMemory))
}

/// Flushes every transient object the TPM lists; returns how many went.
fn flush_transients(ctx: &mut Context) -> usize {
    use tss_esapi::constants::CapabilityType;
    use tss_esapi::constants::tss::TPM2_TRANSIENT_FIRST;
    use tss_esapi::structures::CapabilityData;
    let Ok((CapabilityData::Handles(list), _)) =
        ctx.get_capability(CapabilityType::Handles, TPM2_TRANSIENT_FIRST, 64)
    else {
        return 0;
    };
    let mut flushed = 0;
    for handle in list.into_inner() {
        if let Ok(object) = ctx.tr_from_tpm_public(handle)
            && ctx.flush_context(object).is_ok()
        {
            flushed += 1;
        }
    }
    flushed
}

/// Where an error came from.
enum Code {
    /// The TPM itself (directly or passed on by a resource manager), with its response
    /// code without the layer.
    Tpm(Tss2ResponseCode),
    /// The software stack between us and the TPM (TCTI, resource manager, ESAPI, SAPI).
    Stack,
    /// tss-esapi's own checks, before or after the TPM.
    Local,
}

/// The TSS layer of a response code: bits 16..24 (0 is the TPM, 7 the ESAPI, 10 the TCTI,
/// 11 a resource manager, 12 a TPM code a resource manager passed on).
fn layer(rc: u32) -> u32 {
    (rc >> 16) & 0xff
}

/// The raw `TSS2_RC` of an error, if it came from the stack. tss-esapi 7 decodes only the
/// low 16 bits (a TCTI I/O error prints as a TPM code); the layer has to be read here.
fn raw_rc(e: tss_esapi::Error) -> Option<u32> {
    match e {
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::FormatZero(rc)) => Some(rc.0),
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::FormatOne(rc)) => Some(rc.0),
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::Success) => Some(0),
        tss_esapi::Error::WrapperError(_) => None,
    }
}

fn tpm_code(e: tss_esapi::Error) -> Code {
    match raw_rc(e) {
        None => Code::Local,
        Some(rc) if matches!(layer(rc), 0 | 12) => Code::Tpm(Tss2ResponseCode::from(rc & 0xffff)),
        Some(_) => Code::Stack,
    }
}

/// A format-zero TPM warning (TPM_RC_WARN, bit 11): worth trying again. (tss-esapi keeps
/// its own severity accessor private.)
fn is_warning(rc: Tss2ResponseCode) -> bool {
    matches!(rc, Tss2ResponseCode::FormatZero(z) if z.0 & 0x800 != 0)
}

/// An error for a message: the TPM's own words for TPM codes, a name for the stack's.
fn describe_error(e: tss_esapi::Error) -> String {
    let Some(rc) = raw_rc(e) else {
        return e.to_string();
    };
    match tpm_code(e) {
        Code::Tpm(tpm) => format!("{tpm} (TPM_RC {rc:#x})"),
        _ => {
            let who = match layer(rc) {
                6 => "FAPI",
                7 => "ESAPI",
                8 => "SAPI",
                9 => "marshalling",
                10 => "TCTI",
                11 => "resource manager",
                _ => "TSS",
            };
            let what = match rc & 0xffff {
                1 => "general failure",
                3 => "bad context",
                7 => "bad sequence (an earlier command failed half-way)",
                8 => "no connection",
                9 => "try again",
                10 => "I/O error",
                11 => "bad value",
                12 => "not permitted",
                17 => "malformed response",
                18 | 19 => "short response",
                23 => "out of memory",
                _ => "error",
            };
            format!("{who} {what}, {rc:#x}")
        }
    }
}

/// The storage primary key's template: tpm2-tools' default ECC primary (restricted
/// decryption, P-256, AES-128-CFB for its children, SHA-256 names, empty unique).
fn primary_template() -> tss_esapi::Result<Public> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()?;
    tss_esapi::structures::PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_restricted_decryption_key(
                SymmetricDefinitionObject::AES_128_CFB,
                EccCurve::NistP256,
            )
            .build()?,
        )
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
}

/// A device key's template: fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth,
/// sign (tss-esapi's "unrestricted signing" templates are exactly that). `Err(None)` for an
/// algorithm this store does not make.
fn key_template(alg: KeyAlgorithm) -> Result<Public, Option<tss_esapi::Error>> {
    let sha256 = HashScheme::new(HashingAlgorithm::Sha256);
    match alg {
        KeyAlgorithm::EcdsaP256 => {
            create_unrestricted_signing_ecc_public(EccScheme::EcDsa(sha256), EccCurve::NistP256)
                .map_err(Some)
        }
        KeyAlgorithm::Rsa2048 => create_unrestricted_signing_rsa_public(
            RsaScheme::RsaSsa(sha256),
            RsaKeyBits::Rsa2048,
            RsaExponent::ZERO_EXPONENT,
        )
        .map_err(Some),
        _ => Err(None),
    }
}

/// The algorithm of a public area, if it is one this store makes.
fn key_algorithm(public: &Public) -> Option<KeyAlgorithm> {
    match public {
        Public::Ecc { parameters, .. } if parameters.ecc_curve() == EccCurve::NistP256 => {
            Some(KeyAlgorithm::EcdsaP256)
        }
        Public::Rsa { parameters, .. } if parameters.key_bits() == RsaKeyBits::Rsa2048 => {
            Some(KeyAlgorithm::Rsa2048)
        }
        _ => None,
    }
}

/// `TPM2B_PRIVATE`: a big-endian u16 size, then the bytes (tss-esapi 7 has no marshaller
/// for it).
fn private_to_tpm2b(private: &Private) -> Vec<u8> {
    let value = private.value();
    let mut out = Vec::with_capacity(value.len() + 2);
    // A Private is at most a few hundred bytes (tss-esapi checks), so the size fits.
    out.extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(value);
    out
}

fn private_from_tpm2b(bytes: &[u8]) -> Result<Private, String> {
    let (size, value) =
        bytes.split_first_chunk::<2>().ok_or_else(|| "private area: too short".to_owned())?;
    if usize::from(u16::from_be_bytes(*size)) != value.len() {
        return Err("private area: its size does not match".to_owned());
    }
    Private::try_from(value.to_vec()).map_err(|e| format!("private area: {e}"))
}

/// The DER SubjectPublicKeyInfo of a P-256 or RSA public area. (tss-esapi's
/// `SubjectPublicKeyInfo` conversion needs picky's DER encoder and does not pad short
/// coordinates, so the few bytes are written here.)
fn spki_der(public: &Public) -> Result<Vec<u8>, String> {
    match public {
        Public::Ecc { parameters, unique, .. } => {
            if parameters.ecc_curve() != EccCurve::NistP256 {
                return Err(format!("curve {:?} is not P-256", parameters.ecc_curve()));
            }
            let x = left_pad(unique.x().value(), 32).ok_or("x is longer than 32 bytes")?;
            let y = left_pad(unique.y().value(), 32).ok_or("y is longer than 32 bytes")?;
            let point = [&[0x04][..], &x, &y].concat();
            p256_spki(&point).ok_or_else(|| "not a P-256 point".to_owned())
        }
        Public::Rsa { parameters, unique, .. } => {
            let exponent = match parameters.exponent().value() {
                0 => 65537,
                e => e,
            };
            let modulus = unique.value();
            if modulus.is_empty() {
                return Err("the RSA modulus is empty".to_owned());
            }
            let rsa_key =
                der(0x30, &[der_uint(modulus), der_uint(&exponent.to_be_bytes())].concat());
            let algorithm = der(0x30, &[OID_RSA_ENCRYPTION, &[0x05, 0x00]].concat());
            Ok(der(0x30, &[algorithm, bit_string(&rsa_key)].concat()))
        }
        _ => Err("not an ECC or RSA key".to_owned()),
    }
}

/// rsaEncryption (1.2.840.113549.1.1.1).
const OID_RSA_ENCRYPTION: &[u8] =
    &[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// `bytes` left-padded with zeros to `len`; `None` if longer.
fn left_pad(bytes: &[u8], len: usize) -> Option<Vec<u8>> {
    let pad = len.checked_sub(bytes.len())?;
    let mut out = vec![0; pad];
    out.extend_from_slice(bytes);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// A swtpm on free TCP ports, killed when dropped.
    struct Swtpm {
        child: Option<Child>,
        dir: PathBuf,
        port: u16,
    }

    impl Swtpm {
        /// Starts on a fresh pair of free ports. A port found free can be taken by another
        /// test's connection before swtpm binds it (an ephemeral client port is drawn from the
        /// same range), so an early exit is retried on another pair.
        fn start(dir: &Path) -> Swtpm {
            let mut last = String::new();
            for _ in 0..5 {
                match Swtpm::try_start_at(dir, free_port_pair()) {
                    Ok(tpm) => return tpm,
                    Err(e) => last = e,
                }
            }
            panic!("swtpm did not start on five port pairs; last: {last}");
        }

        /// Starts again on the same ports (a restart); a port briefly held by another test's
        /// connection is waited for, up to two seconds.
        fn start_at(dir: &Path, port: u16) -> Swtpm {
            let mut tries = 0;
            loop {
                match Swtpm::try_start_at(dir, port) {
                    Ok(tpm) => return tpm,
                    Err(e) if tries == 10 => panic!("{e}"),
                    Err(_) => tries += 1,
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }

        /// Starts swtpm on `port` and `port + 1`; `Err` if it exits before listening.
        fn try_start_at(dir: &Path, port: u16) -> Result<Swtpm, String> {
            let ctrl = port + 1;
            let child = Command::new("swtpm")
                .args(["socket", "--tpm2", "--tpmstate"])
                .arg(format!("dir={}", dir.display()))
                .args(["--server", &format!("type=tcp,port={port}")])
                .args(["--ctrl", &format!("type=tcp,port={ctrl}")])
                .args(["--flags", "not-need-init,startup-clear"])
                .stdin(Stdio::null())
                .spawn();
            let mut child = match child {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                    "swtpm is not on PATH: these tests need a software TPM; install it \
                     (apt-get install swtpm swtpm-tools tpm2-tools)"
                ),
                Err(e) => panic!("cannot start swtpm: {e}"),
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break;
                }
                if let Some(status) = child.try_wait().expect("swtpm status") {
                    return Err(format!("swtpm exited before listening on {port}: {status}"));
                }
                assert!(Instant::now() < deadline, "swtpm did not listen on {port} in 10 s");
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(Swtpm { child: Some(child), dir: dir.to_owned(), port })
        }

        fn tcti(&self) -> String {
            format!("swtpm:host=127.0.0.1,port={}", self.port)
        }

        fn kill(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }

        /// Starts it again on the same state and ports.
        fn restart(&mut self) {
            self.kill();
            let again = Swtpm::start_at(&self.dir, self.port);
            *self = again;
        }
    }

    impl Drop for Swtpm {
        fn drop(&mut self) {
            self.kill();
        }
    }

    /// A port P with P+1 free too (swtpm's server and control ports).
    fn free_port_pair() -> u16 {
        for _ in 0..100 {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind");
            let port = l.local_addr().expect("addr").port();
            if port == u16::MAX {
                continue;
            }
            if TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
                return port;
            }
        }
        panic!("no two free consecutive ports");
    }

    /// Reads one DER TLV from `der`: (tag, content, rest).
    fn tlv(der: &[u8]) -> (u8, &[u8], &[u8]) {
        let tag = der[0];
        let (len, head) = if der[1] < 0x80 {
            (der[1] as usize, 2)
        } else {
            let n = (der[1] & 0x7f) as usize;
            (der[2..2 + n].iter().fold(0usize, |a, b| (a << 8) | *b as usize), 2 + n)
        };
        (tag, &der[head..head + len], &der[head + len..])
    }

    /// The subjectPublicKey bits of an SPKI: the EC point, or the PKCS#1 RSAPublicKey.
    fn spki_key(spki: &[u8]) -> Vec<u8> {
        let (tag, seq, rest) = tlv(spki);
        assert_eq!((tag, rest.len()), (0x30, 0));
        let (_, _, after_alg) = tlv(seq);
        let (tag, bits, rest) = tlv(after_alg);
        assert_eq!((tag, bits[0], rest.len()), (0x03, 0, 0));
        bits[1..].to_vec()
    }

    fn verify(key: &dyn HardwareKey, spki: &[u8], message: &[u8], sig: &[u8]) {
        let alg = key.algorithm();
        assert!(verifies(alg, spki, message, sig), "{alg} signature does not verify");
    }

    fn verifies(alg: KeyAlgorithm, spki: &[u8], message: &[u8], sig: &[u8]) -> bool {
        use aws_lc_rs::signature::{
            ECDSA_P256_SHA256_ASN1, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey,
        };
        let raw = spki_key(spki);
        let result = match alg {
            KeyAlgorithm::EcdsaP256 => {
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &raw).verify(message, sig)
            }
            KeyAlgorithm::Rsa2048 => {
                UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &raw).verify(message, sig)
            }
            other => panic!("unexpected {other}"),
        };
        result.is_ok()
    }

    fn handle_field(handle: &[u8], field: &str) -> Vec<u8> {
        let h = Handle::parse(handle, "tpm").unwrap();
        let value = match field {
            "public" => &h.public,
            _ => &h.private,
        };
        Handle::blob(value, field).unwrap()
    }

    #[test]
    fn p256_and_rsa2048_keys_sign_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let tpm = Swtpm::start(dir.path());
        let backend = TpmBackend::new(&tpm.tcti()).unwrap();
        backend.probe().unwrap();
        assert_eq!(backend.describe(), format!("TPM 2.0 at {}", tpm.tcti()));
        for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Rsa2048] {
            let key = backend.generate(alg).unwrap();
            assert_eq!(key.algorithm(), alg);
            let spki = key.spki_der().to_vec();
            // The SPKI is what aws-lc-rs (and so rcgen and rustls) would write.
            let algorithm_oid = match alg {
                // id-ecPublicKey (1.2.840.10045.2.1).
                KeyAlgorithm::EcdsaP256 => {
                    &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01][..]
                }
                _ => OID_RSA_ENCRYPTION,
            };
            assert!(spki.windows(algorithm_oid.len()).any(|w| w == algorithm_oid));
            for message in [&b"hello"[..], &[0u8; 0][..], &[7u8; 5000][..]] {
                let sig = key.sign(message).unwrap();
                verify(&*key, &spki, message, &sig);
                if alg == KeyAlgorithm::Rsa2048 {
                    assert_eq!(sig.len(), 256);
                }
            }
            let sig = key.sign(b"hello").unwrap();
            assert!(!verifies(alg, &spki, b"other", &sig), "{alg}: verifies another message");
            assert!(
                !format!("{key:?}")
                    .contains(&Handle::encode(&handle_field(&key.handle(), "private")))
            );
        }
        let e = backend.generate(KeyAlgorithm::EcdsaP384).unwrap_err();
        assert!(matches!(&e, HwError::Refused(m) if m.contains("ecdsa-p256 and rsa-2048")), "{e}");
    }

    #[test]
    fn a_handle_reopens_the_same_key_and_an_altered_blob_is_key_missing() {
        let dir = tempfile::tempdir().unwrap();
        let tpm = Swtpm::start(dir.path());
        let backend = TpmBackend::new(&tpm.tcti()).unwrap();
        for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Rsa2048] {
            let key = backend.generate(alg).unwrap();
            let spki = key.spki_der().to_vec();
            let handle = key.handle();
            drop(key);

            // A new backend: a new connection, the primary made again from its template.
            let backend2 = TpmBackend::new(&tpm.tcti()).unwrap();
            let again = backend2.open(&handle).unwrap();
            assert_eq!(again.spki_der(), &spki[..]);
            assert_eq!(again.algorithm(), alg);
            let sig = again.sign(b"round trip").unwrap();
            verify(&*again, &spki, b"round trip", &sig);
            assert_eq!(*again.handle(), *handle);

            // Flip a byte in the middle of the wrapped private area.
            let mut h = Handle::parse(&handle, "tpm").unwrap();
            let mut private = handle_field(&handle, "private");
            let mid = private.len() / 2;
            private[mid] ^= 0x01;
            h.private = Some(Handle::encode(&private));
            let altered = backend.open(&h.to_bytes()).unwrap();
            let e = altered.sign(b"x").unwrap_err();
            eprintln!("altered blob: {e}");
            assert!(
                matches!(&e, HwError::KeyMissing(m)
                    if m.contains(&tpm.tcti()) && m.contains("enrol again")),
                "{e}"
            );

            // The public area of another key: the spki no longer matches.
            let mut h = Handle::parse(&handle, "tpm").unwrap();
            let other = backend.generate(alg).unwrap();
            h.public = Some(Handle::encode(&handle_field(&other.handle(), "public")));
            let e = backend.open(&h.to_bytes()).unwrap_err();
            assert!(matches!(e, HwError::KeyMissing(_)), "{e}");

            // And the backend still works after all that.
            let sig = again.sign(b"still").unwrap();
            verify(&*again, &spki, b"still", &sig);
        }
        assert!(backend.destroy(b"anything").is_ok());
        assert!(backend.sweep(&[]).is_ok());
        let e = backend
            .open(br#"{"version":1,"backend":"pkcs11","algorithm":"ecdsa-p256","spki":""}"#)
            .unwrap_err();
        assert!(matches!(e, HwError::KeyMissing(_)), "{e}");
    }

    fn tool(tcti: &str, args: &[&str]) -> String {
        let out = Command::new(args[0])
            .args(&args[1..])
            .env("TPM2TOOLS_TCTI", tcti)
            .output()
            .unwrap_or_else(|e| panic!("{}: {e} (install tpm2-tools)", args[0]));
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn tpm2_tools_see_a_non_exportable_key_and_load_the_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let tpm = Swtpm::start(dir.path());
        let files = tempfile::tempdir().unwrap();
        let path = |name: &str| files.path().join(name).display().to_string();
        for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Rsa2048] {
            let backend = TpmBackend::new(&tpm.tcti()).unwrap();
            let key = backend.generate(alg).unwrap();
            let handle = key.handle();
            drop(key);
            drop(backend); // flushes our primary: swtpm has only 3 transient slots
            std::fs::write(path("pub"), handle_field(&handle, "public")).unwrap();
            std::fs::write(path("priv"), handle_field(&handle, "private")).unwrap();

            let printed = tool(&tpm.tcti(), &["tpm2_print", "-t", "TPM2B_PUBLIC", &path("pub")]);
            let attributes = printed
                .lines()
                .skip_while(|l| !l.starts_with("attributes:"))
                .nth(1)
                .unwrap_or_else(|| panic!("no attributes in {printed}"));
            let attributes: Vec<&str> =
                attributes.trim().trim_start_matches("value:").trim().split('|').collect();
            for want in ["fixedtpm", "fixedparent", "sensitivedataorigin", "sign"] {
                assert!(attributes.contains(&want), "{want} missing: {printed}");
            }
            for never in ["decrypt", "restricted", "encryptedduplication"] {
                assert!(!attributes.contains(&never), "{never} set: {printed}");
            }

            // tpm2-tools' default ECC primary is our template: it loads the blobs.
            tool(
                &tpm.tcti(),
                &[
                    "tpm2_createprimary",
                    "-C",
                    "o",
                    "-G",
                    "ecc256:aes128cfb",
                    "-c",
                    &path("primary.ctx"),
                ],
            );
            tool(
                &tpm.tcti(),
                &[
                    "tpm2_load",
                    "-C",
                    &path("primary.ctx"),
                    "-u",
                    &path("pub"),
                    "-r",
                    &path("priv"),
                    "-c",
                    &path("key.ctx"),
                ],
            );
            // Without a resource manager, tpm2-tools leave their objects loaded.
            tool(&tpm.tcti(), &["tpm2_flushcontext", "-t"]);
        }
    }

    #[test]
    fn a_cleared_tpm_means_enrol_again() {
        let dir = tempfile::tempdir().unwrap();
        let tpm = Swtpm::start(dir.path());
        let backend = TpmBackend::new(&tpm.tcti()).unwrap();
        let key = backend.generate(KeyAlgorithm::EcdsaP256).unwrap();
        key.sign(b"before").unwrap();
        // A new owner seed: the same template now makes another primary key.
        tool(&tpm.tcti(), &["tpm2_clear", "-c", "p"]);
        let e = key.sign(b"after").unwrap_err();
        assert!(
            matches!(&e, HwError::KeyMissing(m)
                if m.contains("cleared") && m.contains(&tpm.tcti())),
            "{e}"
        );
        // A new key works.
        backend.generate(KeyAlgorithm::EcdsaP256).unwrap().sign(b"new").unwrap();
    }

    #[test]
    fn a_tpm_that_goes_away_is_unreachable_and_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut tpm = Swtpm::start(dir.path());
        let tcti = tpm.tcti();
        let backend = TpmBackend::new(&tcti).unwrap();
        let key = backend.generate(KeyAlgorithm::EcdsaP256).unwrap();
        let spki = key.spki_der().to_vec();
        key.sign(b"before").unwrap();

        tpm.kill();
        let e = key.sign(b"while away").unwrap_err();
        assert!(matches!(&e, HwError::Unreachable(m) if m.contains(&tcti)), "{e}");
        assert!(e.is_transient());
        let e = key.sign(b"still away").unwrap_err();
        assert!(matches!(&e, HwError::Unreachable(m) if m.contains(&tcti)), "{e}");
        let e = backend.probe().unwrap_err();
        assert!(matches!(&e, HwError::Unreachable(m) if m.contains(&tcti)), "{e}");
        eprintln!("while away: {e}");

        tpm.restart();
        let sig = key.sign(b"after").unwrap();
        verify(&*key, &spki, b"after", &sig);

        // A restart between two calls: the stale connection is retried, not reported.
        tpm.restart();
        let sig = key.sign(b"after again").unwrap();
        verify(&*key, &spki, b"after again", &sig);
        backend.probe().unwrap();
    }

    #[test]
    fn many_signatures_do_not_run_out_of_transient_slots() {
        let dir = tempfile::tempdir().unwrap();
        let tpm = Swtpm::start(dir.path());
        let backend = TpmBackend::new(&tpm.tcti()).unwrap();
        // More keys open than swtpm has transient slots.
        let keys: Vec<_> = [
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::Rsa2048,
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::Rsa2048,
        ]
        .into_iter()
        .map(|alg| backend.generate(alg).unwrap())
        .collect();
        for key in &keys[..2] {
            let n = 50;
            let start = Instant::now();
            for i in 0..n {
                let message = format!("message {i}");
                let sig = key.sign(message.as_bytes()).unwrap();
                if i % 10 == 0 {
                    verify(&**key, key.spki_der(), message.as_bytes(), &sig);
                }
            }
            let per = start.elapsed() / n;
            eprintln!("{}: {per:?} per signature (load, sign, flush) on swtpm", key.algorithm());
        }
        for key in &keys {
            key.sign(b"each").unwrap();
        }
    }

    #[test]
    fn a_bad_tcti_is_refused_and_a_dead_one_unreachable() {
        let e = TpmBackend::new("carrier-pigeon:coop=3").unwrap_err();
        assert!(matches!(&e, HwError::Refused(m) if m.contains("carrier-pigeon")), "{e}");
        let port = free_port_pair();
        let tcti = format!("swtpm:host=127.0.0.1,port={port}");
        let backend = TpmBackend::new(&tcti).unwrap();
        assert!(format!("{backend:?}").contains(&tcti));
        let e = backend.probe().unwrap_err();
        assert!(matches!(&e, HwError::Unreachable(m) if m.contains(&tcti)), "{e}");
        let e = backend.generate(KeyAlgorithm::EcdsaP256).unwrap_err();
        assert!(matches!(&e, HwError::Unreachable(m) if m.contains(&tcti)), "{e}");
        // The device TCTI: the path is not checked until the first call.
        let tcti = "device:/dev/no-such-tpm";
        let backend = TpmBackend::new(tcti).unwrap();
        let e = backend.probe().unwrap_err();
        assert!(matches!(&e, HwError::Unreachable(m) if m.contains(tcti)), "{e}");
        eprintln!("no device: {e}");
    }

    #[test]
    fn objects_a_killed_process_left_loaded_are_flushed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tpm = Swtpm::start(dir.path());
        let backend = TpmBackend::new(&tpm.tcti()).expect("backend");
        let key = backend.generate(KeyAlgorithm::EcdsaP256).expect("generate");
        // tpm2_createprimary leaves its primary loaded in a TPM without a resource manager,
        // as a process killed mid-call would: two of them and our primary fill swtpm's
        // three transient slots.
        for _ in 0..2 {
            tool(&tpm.tcti(), &["tpm2_createprimary", "-C", "o", "-c", "/dev/null"]);
        }
        let listed = tool(&tpm.tcti(), &["tpm2_getcap", "handles-transient"]);
        assert_eq!(listed.lines().count(), 3, "{listed}");
        let sig = key.sign(b"after the slots filled up").expect("signs after flushing");
        assert!(!sig.is_empty());
    }

    #[test]
    fn der_integers_are_minimal_and_positive() {
        assert_eq!(der_uint(&[0, 0, 0x7f]), [0x02, 0x01, 0x7f]);
        assert_eq!(der_uint(&[0x80]), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(der_uint(&[0, 0]), [0x02, 0x01, 0x00]);
        assert_eq!(der_uint(&[]), [0x02, 0x01, 0x00]);
        assert_eq!(der(0x04, &[0; 200])[..3], [0x04, 0x81, 200]);
        assert_eq!(der(0x04, &[0; 300])[..4], [0x04, 0x82, 0x01, 0x2c]);
        let private = Private::try_from(vec![1, 2, 3]).unwrap();
        let bytes = private_to_tpm2b(&private);
        assert_eq!(bytes, [0, 3, 1, 2, 3]);
        assert_eq!(private_from_tpm2b(&bytes).unwrap().value(), [1, 2, 3]);
        assert!(private_from_tpm2b(&[0, 4, 1, 2, 3]).is_err());
    }
}
