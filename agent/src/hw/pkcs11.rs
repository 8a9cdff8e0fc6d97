//! `[store] backend = "pkcs11"`: keys generated on a PKCS#11 token (an HSM, a smart card, a
//! YubiKey's PIV applet, SoftHSM2) as `CKA_SENSITIVE` and not `CKA_EXTRACTABLE`, so the
//! token never gives the private key out. Each generation is a key pair labelled
//! `lanyard/<profile>/<id hex>` with that `CKA_ID`; the handle the store keeps names the
//! id, and signing is `CKM_ECDSA` over a SHA-256 digest computed here.
//!
//! One session per backend, logged in as the user with the PIN read from `pin_file` (a
//! file, 0600, or a systemd credential under `$CREDENTIALS_DIRECTORY`) each time a session
//! opens; the PIN is never kept in memory longer. A token that goes away (unplugged,
//! `CKR_DEVICE_REMOVED`, `CKR_TOKEN_NOT_PRESENT`, a dead session) drops the session, and
//! the next call opens a new one: the proxy answers 503 until the token is back.

use super::handle::Handle;
use super::signer::{P256_EC_PARAMS, ecdsa_raw_to_der, p256_spki};
use super::{HardwareBackend, HardwareKey, HwError, HwResult};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use lanyard_proto::KeyAlgorithm;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use zeroize::Zeroizing;

/// `[store]` settings of a PKCS#11 store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Config {
    /// The PKCS#11 library (`module`), e.g. `/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// The token, by label (`token_label`) ...
    pub token_label: Option<String>,
    /// ... or by slot id (`slot`).
    pub slot: Option<u64>,
    /// The user PIN's file (`pin_file`).
    pub pin_file: PathBuf,
}

/// A configured token.
pub struct Pkcs11Backend {
    cfg: Pkcs11Config,
    profile: String,
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for Pkcs11Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Backend").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

/// The module, once loaded (a process initializes a PKCS#11 library once), and the open
/// session.
#[derive(Default)]
struct Inner {
    ctx: Option<Pkcs11>,
    session: Option<Session>,
    /// Bumped whenever the session is dropped: object handles belong to a session's token
    /// view and are looked up again.
    generation: u64,
}

/// The label prefix of this profile's keys.
fn label_prefix(profile: &str) -> String {
    format!("lanyard/{profile}/")
}

impl Pkcs11Backend {
    pub fn new(cfg: Pkcs11Config, profile: &str) -> Pkcs11Backend {
        Pkcs11Backend { cfg, profile: profile.to_owned(), inner: Arc::default() }
    }

    fn token_name(&self) -> String {
        match (&self.cfg.token_label, self.cfg.slot) {
            (Some(l), _) => format!("token {l:?}"),
            (None, Some(s)) => format!("the token in slot {s}"),
            (None, None) => "the token".into(),
        }
    }

    /// What a cryptoki error means here.
    fn explain(&self, what: &str, e: CkError) -> HwError {
        let token = self.token_name();
        let module = self.cfg.module.display();
        match e {
            CkError::Pkcs11(rv, _) => {
                let msg = format!("{token} (module {module}): {what}: {rv:?}");
                match rv {
                    RvError::PinIncorrect | RvError::PinLenRange => HwError::Refused(format!(
                        "{msg}: the PIN in {} is wrong for {token}; put the user PIN there (a wrong PIN counts toward the token's lockout)",
                        self.cfg.pin_file.display()
                    )),
                    RvError::PinLocked | RvError::PinExpired => HwError::Refused(format!(
                        "{msg}: the token's user PIN is locked or expired; unlock it with the security officer PIN"
                    )),
                    RvError::DeviceRemoved
                    | RvError::TokenNotPresent
                    | RvError::DeviceError
                    | RvError::SessionHandleInvalid
                    | RvError::SessionClosed
                    | RvError::UserNotLoggedIn
                    | RvError::DeviceMemory
                    | RvError::FunctionFailed
                    | RvError::GeneralError => {
                        HwError::Unreachable(format!("{msg}: the token is not reachable now"))
                    }
                    RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid => {
                        HwError::KeyMissing(format!("{msg}: enrol again"))
                    }
                    _ => HwError::Refused(msg),
                }
            }
            CkError::LibraryLoading(le) => HwError::Refused(format!(
                "cannot load the PKCS#11 module {module}: {le}; check [store] module"
            )),
            other => HwError::Refused(format!("{token} (module {module}): {what}: {other}")),
        }
    }

    /// The session, opened (and logged in) if there is none.
    fn session<'a>(&self, inner: &'a mut MutexGuard<'_, Inner>) -> HwResult<&'a Session> {
        if inner.session.is_none() {
            if inner.ctx.is_none() {
                let ctx = Pkcs11::new(&self.cfg.module)
                    .map_err(|e| self.explain("load the module", e))?;
                match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
                    Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
                    Err(e) => return Err(self.explain("initialize the module", e)),
                }
                inner.ctx = Some(ctx);
            }
            let Some(ctx) = inner.ctx.as_ref() else {
                return Err(HwError::Unreachable("the PKCS#11 module is not loaded".into()));
            };
            let slot = self.find_slot(ctx)?;
            let session =
                ctx.open_rw_session(slot).map_err(|e| self.explain("open a session", e))?;
            let pin = self.read_pin()?;
            match session.login(UserType::User, Some(&AuthPin::new(pin.as_str().into()))) {
                Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
                Err(e) => return Err(self.explain("log in", e)),
            }
            inner.session = Some(session);
        }
        inner
            .session
            .as_ref()
            .ok_or_else(|| HwError::Unreachable(format!("{}: no session", self.token_name())))
    }

    fn find_slot(&self, ctx: &Pkcs11) -> HwResult<Slot> {
        let slots = ctx.get_slots_with_token().map_err(|e| self.explain("list the slots", e))?;
        let mut seen = Vec::new();
        for slot in slots {
            let label = match ctx.get_token_info(slot) {
                Ok(info) => info.label().trim_end().to_owned(),
                Err(_) => continue,
            };
            let hit = match (&self.cfg.token_label, self.cfg.slot) {
                (Some(want), _) => *want == label,
                (None, Some(id)) => slot.id() == id,
                (None, None) => false,
            };
            if hit {
                return Ok(slot);
            }
            seen.push(format!("{label:?} (slot {})", slot.id()));
        }
        Err(HwError::Unreachable(format!(
            "no {} in the PKCS#11 module {} (tokens present: {}); plug the token in, or check [store] token_label / slot",
            self.token_name(),
            self.cfg.module.display(),
            if seen.is_empty() { "none".to_owned() } else { seen.join(", ") }
        )))
    }

    fn read_pin(&self) -> HwResult<Zeroizing<String>> {
        let raw = std::fs::read_to_string(&self.cfg.pin_file).map_err(|e| {
            HwError::Refused(format!(
                "cannot read the token PIN from {}: {e}; check [store] pin_file",
                self.cfg.pin_file.display()
            ))
        })?;
        let raw = Zeroizing::new(raw);
        let pin = Zeroizing::new(raw.trim_end_matches(['\r', '\n']).to_owned());
        if pin.is_empty() {
            return Err(HwError::Refused(format!(
                "the PIN file {} is empty",
                self.cfg.pin_file.display()
            )));
        }
        Ok(pin)
    }

    /// Runs `f` on the session; an error that means the token went away drops the session
    /// so the next call opens a new one.
    fn with_session<T>(&self, f: impl FnOnce(&Session, u64) -> HwResult<T>) -> HwResult<T> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let generation = inner.generation;
        let session = self.session(&mut inner)?;
        let out = f(session, generation);
        if let Err(HwError::Unreachable(_)) = &out {
            inner.session = None;
            inner.generation += 1;
        }
        out
    }

    /// This profile's key objects (private and public) with their ids.
    fn profile_objects(&self, s: &Session) -> HwResult<Vec<(ObjectHandle, Vec<u8>)>> {
        let prefix = label_prefix(&self.profile);
        let mut out = Vec::new();
        for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
            let objects = s
                .find_objects(&[Attribute::Token(true), Attribute::Class(class)])
                .map_err(|e| self.explain("list keys", e))?;
            for o in objects {
                let attrs = s
                    .get_attributes(o, &[AttributeType::Label, AttributeType::Id])
                    .map_err(|e| self.explain("read a key's label", e))?;
                let (mut label, mut id) = (None, None);
                for a in attrs {
                    match a {
                        Attribute::Label(l) => label = Some(l),
                        Attribute::Id(i) => id = Some(i),
                        _ => {}
                    }
                }
                if let (Some(l), Some(i)) = (label, id)
                    && l.starts_with(prefix.as_bytes())
                {
                    out.push((o, i));
                }
            }
        }
        Ok(out)
    }

    fn key_of(&self, handle: &[u8]) -> HwResult<Pkcs11Key> {
        let h = Handle::parse(handle, "pkcs11")?;
        let alg = h.algorithm()?;
        let spki = h.spki_der()?;
        let id =
            h.id.as_deref().and_then(|i| hex::decode(i).ok()).ok_or_else(|| {
                HwError::KeyMissing("the stored key handle has no object id".into())
            })?;
        Ok(Pkcs11Key {
            backend: self.clone_ref(),
            id,
            label: h.label.clone().unwrap_or_default(),
            alg,
            spki,
            handle: h.to_bytes(),
            object: Mutex::new(None),
        })
    }

    fn clone_ref(&self) -> Arc<Pkcs11Backend> {
        Arc::new(Pkcs11Backend {
            cfg: self.cfg.clone(),
            profile: self.profile.clone(),
            inner: self.inner.clone(),
        })
    }
}

impl HardwareBackend for Pkcs11Backend {
    fn generate(&self, alg: KeyAlgorithm) -> HwResult<Arc<dyn HardwareKey>> {
        if alg != KeyAlgorithm::EcdsaP256 {
            return Err(HwError::Refused(format!(
                "the pkcs11 store generates ecdsa-p256 keys; the CA's policy asks for {alg}: set the group's key algorithm to ecdsa-p256"
            )));
        }
        let mut id = vec![0u8; 16];
        rand::Rng::fill(&mut rand::rng(), &mut id[..]);
        let label = format!("{}{}", label_prefix(&self.profile), hex::encode(&id));
        let spki = self.with_session(|s, _| {
            let public = [
                Attribute::Token(true),
                Attribute::Private(false),
                Attribute::Verify(true),
                Attribute::EcParams(P256_EC_PARAMS.to_vec()),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(id.clone()),
            ];
            let private = [
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Sign(true),
                Attribute::KeyType(KeyType::EC),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(id.clone()),
            ];
            let (pub_key, _) = s
                .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
                .map_err(|e| self.explain("generate a key", e))?;
            let point = s
                .get_attributes(pub_key, &[AttributeType::EcPoint])
                .map_err(|e| self.explain("read the new public key", e))?
                .into_iter()
                .find_map(|a| if let Attribute::EcPoint(p) = a { Some(p) } else { None })
                .unwrap_or_default();
            // CKA_EC_POINT is a DER OCTET STRING around the point (some tokens give it bare).
            let raw = match point.as_slice() {
                [0x04, 0x41, rest @ ..] if rest.len() == 65 => rest.to_vec(),
                other => other.to_vec(),
            };
            p256_spki(&raw).ok_or_else(|| {
                HwError::Refused(format!(
                    "{}: the new key's public point is not P-256 ({} bytes)",
                    self.token_name(),
                    raw.len()
                ))
            })
        })?;
        let mut h = Handle::new("pkcs11", alg, &spki);
        h.id = Some(hex::encode(&id));
        h.label = Some(label);
        Ok(Arc::new(self.key_of(&h.to_bytes())?))
    }

    fn open(&self, handle: &[u8]) -> HwResult<Arc<dyn HardwareKey>> {
        // Found on the token when it first signs: a token unplugged now must not make the
        // credential look absent (the proxy says why it cannot sign, and `status` checks).
        Ok(Arc::new(self.key_of(handle)?))
    }

    fn destroy(&self, handle: &[u8]) -> HwResult<()> {
        // Not a handle (the store's probe writes a throwaway secret): no key to destroy.
        let Ok(h) = Handle::parse(handle, "pkcs11") else { return Ok(()) };
        let Some(id) = h.id.as_deref().and_then(|i| hex::decode(i).ok()) else { return Ok(()) };
        self.with_session(|s, _| {
            for (o, oid) in self.profile_objects(s)? {
                if oid == id {
                    s.destroy_object(o).map_err(|e| self.explain("destroy a key", e))?;
                }
            }
            Ok(())
        })
    }

    fn sweep(&self, keep: &[Zeroizing<Vec<u8>>]) -> HwResult<()> {
        let keep: Vec<Vec<u8>> = keep
            .iter()
            .filter_map(|h| Handle::parse(h, "pkcs11").ok())
            .filter_map(|h| h.id.and_then(|i| hex::decode(i).ok()))
            .collect();
        self.with_session(|s, _| {
            for (o, id) in self.profile_objects(s)? {
                if !keep.contains(&id) {
                    tracing::info!(id = %hex::encode(&id), "destroying a key a crash left on the token");
                    s.destroy_object(o).map_err(|e| self.explain("destroy a stale key", e))?;
                }
            }
            Ok(())
        })
    }

    fn probe(&self) -> HwResult<()> {
        self.with_session(|s, _| {
            s.get_session_info().map(|_| ()).map_err(|e| self.explain("check the session", e))
        })
    }

    fn describe(&self) -> String {
        format!("PKCS#11 {} (module {})", self.token_name(), self.cfg.module.display())
    }

    fn protection(&self) -> &'static str {
        "PKCS#11 token, non-extractable"
    }
}

/// One key pair on the token.
struct Pkcs11Key {
    backend: Arc<Pkcs11Backend>,
    id: Vec<u8>,
    label: String,
    alg: KeyAlgorithm,
    spki: Vec<u8>,
    handle: Zeroizing<Vec<u8>>,
    /// The private key's object handle, and the session generation it was found in.
    object: Mutex<Option<(u64, ObjectHandle)>>,
}

impl std::fmt::Debug for Pkcs11Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Key").field("label", &self.label).finish_non_exhaustive()
    }
}

impl Pkcs11Key {
    /// The private key object, found on the token for the current session.
    fn object(&self) -> HwResult<ObjectHandle> {
        let b = &self.backend;
        b.with_session(|s, generation| {
            let mut cached = self.object.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((g, o)) = *cached
                && g == generation
            {
                return Ok(o);
            }
            let found = s
                .find_objects(&[
                    Attribute::Token(true),
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::Id(self.id.clone()),
                ])
                .map_err(|e| b.explain("find the device key", e))?;
            let o = found.first().copied().ok_or_else(|| {
                HwError::KeyMissing(format!(
                    "the device key {:?} is not on {} (deleted, or the token was re-initialised); enrol again",
                    self.label,
                    b.token_name()
                ))
            })?;
            *cached = Some((generation, o));
            Ok(o)
        })
    }
}

impl HardwareKey for Pkcs11Key {
    fn algorithm(&self) -> KeyAlgorithm {
        self.alg
    }

    fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    fn sign(&self, message: &[u8]) -> HwResult<Vec<u8>> {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message);
        // The object handle may be stale after the token came back: look it up once more.
        for attempt in 0..2 {
            let o = self.object()?;
            let b = &self.backend;
            let out = b.with_session(|s, _| {
                s.sign(&Mechanism::Ecdsa, o, digest.as_ref()).map_err(|e| b.explain("sign", e))
            });
            match out {
                Ok(raw) => {
                    return ecdsa_raw_to_der(&raw).ok_or_else(|| {
                        HwError::Refused(format!(
                            "{}: the token's ECDSA signature has an odd length",
                            b.token_name()
                        ))
                    });
                }
                Err(HwError::KeyMissing(_)) if attempt == 0 => {
                    *self.object.lock().unwrap_or_else(|p| p.into_inner()) = None;
                }
                Err(e) => return Err(e),
            }
        }
        Err(HwError::KeyMissing(format!("the device key {:?} is gone; enrol again", self.label)))
    }

    fn handle(&self) -> Zeroizing<Vec<u8>> {
        self.handle.clone()
    }
}
