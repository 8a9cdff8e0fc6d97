//! The embedded CA's directory: what `init` writes and `serve` and the admin commands load.
//!
//! ```text
//! DIR/ca.toml          settings (name, public URL, key algorithms); written last by init
//! DIR/root.crt         root CA certificate (PEM)         DIR/root.key     0600
//! DIR/issuing.crt      first issuing CA certificate (PEM) DIR/issuing.key 0600
//! DIR/issuers/         later issuing CAs (`ca rotate-issuing`): issuing-N.crt, issuing-N.key
//! DIR/ca-bundle.pem    CloudFront trust store bundle: root then each issuing CA in use
//! DIR/lanyard-ca.db    SQLite (WAL): certificates, tokens, policies, audit
//! DIR/tls/             the HTTPS server certificate of `serve` (renewed automatically)
//! DIR/crl/             published CRLs: issuing.crl (issuing-N.crl after rotations),
//!                      root.crl (DER), crl.pem (all of them, PEM)
//! ```
//!
//! `ca.toml`'s `issuing_generation` names the current issuing CA; rewriting `ca.toml` is
//! the one step that commits a rotation, so a rotation interrupted before it leaves the
//! CA as it was.
//!
//! ```text
//! ```

use crate::authority::{
    Authority, CaKeys, CrlScope, IssuerRevocation, PublicationSettings, RetiredIssuer, RootKeys,
};
use crate::clock::Clock;
use crate::error::{CaError, Result};
use crate::fsutil;
use crate::profile::{self, PublicationUrls};
use crate::rotation;
use crate::signer::SharedSigner;
use crate::signer::local::LocalKeySigner;
use crate::store::sqlite::SqliteStore;
use crate::store::{AuditEvent, Store};
use lanyard_proto::KeyAlgorithm;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `DIR/ca.toml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaSettings {
    pub name: String,
    /// Base URL of the plain-HTTP publication listener (CRL, OCSP, CA certificates), as
    /// written into certificates' AIA and CRL distribution points.
    pub public_url: String,
    pub root_key: KeyAlgorithm,
    pub issuing_key: KeyAlgorithm,
    #[serde(default = "default_crl_validity")]
    pub crl_validity_secs: u64,
    #[serde(default = "default_ocsp_validity")]
    pub ocsp_validity_secs: u64,
    /// The current issuing CA (1 until the first `ca rotate-issuing`); `issuing_key` is its
    /// key's algorithm.
    #[serde(default = "default_generation", skip_serializing_if = "is_first")]
    pub issuing_generation: u32,
    /// Earlier issuing CAs, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired_issuers: Vec<RetiredIssuerSettings>,
    /// The current root (1 until the first `ca rotate-root`); `root_key` is its key's
    /// algorithm.
    #[serde(default = "default_generation", skip_serializing_if = "is_first")]
    pub root_generation: u32,
    /// Earlier roots, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired_roots: Vec<RetiredRootSettings>,
}

/// An earlier root in `ca.toml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetiredRootSettings {
    pub generation: u32,
    pub key: KeyAlgorithm,
}

/// An earlier issuing CA in `ca.toml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetiredIssuerSettings {
    pub generation: u32,
    pub key: KeyAlgorithm,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<IssuerRevocation>,
}

fn default_generation() -> u32 {
    1
}
fn is_first(g: &u32) -> bool {
    *g == 1
}

pub use crate::rotation::{NewRoot, RotateOptions, Rotation};

fn default_crl_validity() -> u64 {
    7 * 86_400
}
fn default_ocsp_validity() -> u64 {
    3_600
}

/// Options of `lanyard-ca init`.
#[derive(Clone, Debug)]
pub struct InitOptions {
    pub name: String,
    pub root_key: KeyAlgorithm,
    pub issuing_key: KeyAlgorithm,
    pub public_url: String,
}

#[derive(Clone, Debug)]
pub struct CaDir {
    pub dir: PathBuf,
}

impl CaDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CaDir { dir: dir.into() }
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    pub fn settings_path(&self) -> PathBuf {
        self.path("ca.toml")
    }
    pub fn bundle_path(&self) -> PathBuf {
        self.path("ca-bundle.pem")
    }

    /// Creates a new two-tier CA. Refuses a directory that already holds one (or any of
    /// its key files). Files are written to a staging folder first and moved in, with
    /// `ca.toml` last, so an interrupted init leaves no CA that looks complete.
    pub async fn init(&self, opts: &InitOptions, clock: &dyn Clock) -> Result<()> {
        for f in ["ca.toml", "root.key", "issuing.key", "lanyard-ca.db"] {
            if self.path(f).exists() {
                return Err(CaError::Config(format!(
                    "{} already holds a CA ({f} exists); refusing to overwrite it",
                    self.dir.display()
                )));
            }
        }
        let url = check_init_options(opts)?;
        std::fs::create_dir_all(&self.dir)
            .map_err(CaError::io(format!("creating {}", self.dir.display())))?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(CaError::io(format!("setting mode of {}", self.dir.display())))?;
        let stage = self.path(".init");
        if stage.exists() {
            std::fs::remove_dir_all(&stage)
                .map_err(CaError::io("removing a stale .init folder"))?;
        }
        std::fs::create_dir(&stage).map_err(CaError::io("creating .init"))?;

        let now = clock.now();
        let urls = PublicationUrls::from_base(&url);
        let root_key = LocalKeySigner::create(&stage.join("root.key"), opts.root_key)?;
        let issuing_key = LocalKeySigner::create(&stage.join("issuing.key"), opts.issuing_key)?;
        let certs =
            profile::ceremony(&opts.name, now, &urls, root_key.key_pair(), issuing_key.key_pair())?;
        let pem_of = crate::bundle::certificate_pem;
        fsutil::write_atomic(&stage.join("root.crt"), pem_of(&certs.root_der).as_bytes(), 0o644)?;
        fsutil::write_atomic(
            &stage.join("issuing.crt"),
            pem_of(&certs.issuing_der).as_bytes(),
            0o644,
        )?;
        let bundle = crate::bundle::build(
            &opts.name,
            std::slice::from_ref(&certs.root_der),
            std::slice::from_ref(&certs.issuing_der),
        );
        fsutil::write_atomic(&stage.join("ca-bundle.pem"), bundle.as_bytes(), 0o644)?;
        let settings = CaSettings {
            name: opts.name.clone(),
            public_url: url,
            root_key: opts.root_key,
            issuing_key: opts.issuing_key,
            crl_validity_secs: default_crl_validity(),
            ocsp_validity_secs: default_ocsp_validity(),
            issuing_generation: 1,
            retired_issuers: Vec::new(),
            root_generation: 1,
            retired_roots: Vec::new(),
        };
        let toml = toml::to_string_pretty(&settings).map_err(CaError::encoding("TOML"))?;

        for f in ["root.key", "issuing.key", "root.crt", "issuing.crt", "ca-bundle.pem"] {
            std::fs::rename(stage.join(f), self.path(f))
                .map_err(CaError::io(format!("moving {f} into place")))?;
        }
        std::fs::remove_dir(&stage).map_err(CaError::io("removing .init"))?;

        let store = SqliteStore::open(&self.path("lanyard-ca.db"))?;
        store
            .audit(AuditEvent {
                at: now,
                actor: actor(),
                action: "init".into(),
                subject: opts.name.clone(),
                detail: format!("root={} issuing={}", opts.root_key, opts.issuing_key),
                remote: None,
            })
            .await?;
        fsutil::write_atomic(&self.settings_path(), toml.as_bytes(), 0o600)?;

        // Publish the first CRLs so nginx and friends have them from the start.
        let auth = self.open(Arc::new(crate::clock::SystemClock))?;
        self.publish_crls(&auth).await?;
        Ok(())
    }

    pub fn settings(&self) -> Result<CaSettings> {
        let p = self.settings_path();
        let text = std::fs::read_to_string(&p).map_err(|e| {
            CaError::Config(format!(
                "{}: {e}; is {} a CA directory? create one with `lanyard-ca init --dir {}`",
                p.display(),
                self.dir.display(),
                self.dir.display()
            ))
        })?;
        toml::from_str(&text).map_err(|e| CaError::Config(format!("{}: {e}", p.display())))
    }

    /// Loads the CA for serving or administration.
    pub fn open(&self, clock: Arc<dyn Clock>) -> Result<Authority> {
        let s = self.settings()?;
        let store = SqliteStore::open(&self.path("lanyard-ca.db"))?;
        self.open_with_store(clock, Arc::new(store), &s)
    }

    pub fn open_with_store(
        &self,
        clock: Arc<dyn Clock>,
        store: Arc<dyn Store>,
        s: &CaSettings,
    ) -> Result<Authority> {
        let (crt, key) = self.issuer_paths(s.issuing_generation);
        let issuing = LocalKeySigner::load(&key, s.issuing_key)?;
        let (root_crt, root_key) = self.root_paths(s.root_generation);
        // An operator may move a root key offline after init.
        let root = self.optional_key(&root_key, s.root_key)?;
        let mut retired_roots = Vec::new();
        for r in &s.retired_roots {
            let (crt, key) = self.root_paths(r.generation);
            retired_roots.push(RootKeys {
                generation: r.generation,
                der: read_cert_der(&crt)?,
                signer: self.optional_key(&key, r.key)?,
            });
        }
        let mut cross = Vec::new();
        if let Ok(entries) = std::fs::read_dir(self.path("roots")) {
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.contains("-by-") && n.ends_with(".crt"))
                })
                .collect();
            files.sort();
            for f in files {
                cross.push(read_cert_der(&f)?);
            }
        }
        let mut retired = Vec::new();
        for r in &s.retired_issuers {
            let (crt, key) = self.issuer_paths(r.generation);
            if !key.exists() {
                // Removed by the operator once its last certificate expired.
                tracing::debug!(generation = r.generation, "retired issuing CA key absent");
                continue;
            }
            retired.push(RetiredIssuer {
                generation: r.generation,
                der: read_cert_der(&crt)?,
                signer: SharedSigner(Arc::new(LocalKeySigner::load(&key, r.key)?)),
                revoked: r.revoked,
            });
        }
        let keys = CaKeys {
            issuing: SharedSigner(Arc::new(issuing)),
            issuing_der: read_cert_der(&crt)?,
            generation: s.issuing_generation,
            retired,
            root_der: read_cert_der(&root_crt)?,
            root,
            root_generation: s.root_generation,
            retired_roots,
            cross,
        };
        let mut publication =
            PublicationSettings::new(&s.public_url, s.crl_validity_secs, s.ocsp_validity_secs);
        publication.urls = publication.urls.for_generation(s.issuing_generation);
        Authority::new(store, clock, keys, publication)
    }

    /// A CA key that may be offline (absent): `None` then.
    fn optional_key(&self, path: &Path, alg: KeyAlgorithm) -> Result<Option<SharedSigner>> {
        match LocalKeySigner::load(path, alg) {
            Ok(k) => Ok(Some(SharedSigner(Arc::new(k)))),
            Err(_) if !path.exists() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The certificate and key files of root `generation`: `root.crt` and `root.key` for
    /// the first, `roots/root-N.*` for later ones.
    pub fn root_paths(&self, generation: u32) -> (PathBuf, PathBuf) {
        match generation {
            0 | 1 => (self.path("root.crt"), self.path("root.key")),
            n => (
                self.path(&format!("roots/root-{n}.crt")),
                self.path(&format!("roots/root-{n}.key")),
            ),
        }
    }

    /// The cross-certificate of root `subject` signed by root `signer`.
    pub fn cross_path(&self, subject: u32, signer: u32) -> PathBuf {
        self.path(&format!("roots/root-{subject}-by-{signer}.crt"))
    }

    /// The certificate and key files of issuing CA `generation`: `issuing.crt` and
    /// `issuing.key` for the first, `issuers/issuing-N.*` for later ones.
    pub fn issuer_paths(&self, generation: u32) -> (PathBuf, PathBuf) {
        match generation {
            0 | 1 => (self.path("issuing.crt"), self.path("issuing.key")),
            n => (
                self.path(&format!("issuers/issuing-{n}.crt")),
                self.path(&format!("issuers/issuing-{n}.key")),
            ),
        }
    }

    /// `lanyard-ca ca rotate-issuing`: a new issuing key and certificate under the same
    /// root (whose key must be online). The new files are written first; rewriting
    /// `ca.toml` commits the rotation; then the CRLs and the bundle are published. From
    /// then on every issuance uses the new CA; the old one answers for its certificates
    /// until the last expires (or at once no longer, with `revoke_old`).
    pub async fn rotate_issuing(
        &self,
        opts: &RotateOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Rotation> {
        self.rotate(opts, None, clock).await
    }

    /// `lanyard-ca ca rotate-root`: a new root, cross-certificates both ways between it and
    /// the current root (`roots/root-N-by-M.crt`), and a new issuing CA under it, in one
    /// commit (`ca.toml`). Devices and edges that trust either root verify the other's
    /// chains through the cross-certificates; the bundle carries both roots while the old
    /// one still has an issuing CA in use.
    pub async fn rotate_root(
        &self,
        opts: &RotateOptions,
        root: &NewRoot,
        clock: Arc<dyn Clock>,
    ) -> Result<Rotation> {
        self.rotate(opts, Some(root), clock).await
    }

    async fn rotate(
        &self,
        opts: &RotateOptions,
        new_root: Option<&NewRoot>,
        clock: Arc<dyn Clock>,
    ) -> Result<Rotation> {
        let mut s = self.settings()?;
        let (root_crt, root_key_path) = self.root_paths(s.root_generation);
        let root_signer = match LocalKeySigner::load(&root_key_path, s.root_key) {
            Ok(k) => k,
            Err(_) if !root_key_path.exists() => {
                return Err(CaError::Config(format!(
                    "the root key is offline ({} is absent): put it back for the rotation, \
                     then take it offline again",
                    root_key_path.display()
                )));
            }
            Err(e) => return Err(e),
        };
        rotation::check(opts, new_root)?;
        let old_root_der = read_cert_der(&root_crt)?;
        let now = clock.now();
        let old_root_gen = s.root_generation;
        // Files left by a rotation interrupted before it committed were never used: each
        // is replaced.
        let remove_leftovers = |files: &[&Path]| -> Result<()> {
            for f in files {
                if f.exists() {
                    std::fs::remove_file(f)
                        .map_err(CaError::io(format!("removing {}", f.display())))?;
                }
            }
            Ok(())
        };
        let new_root_key = match new_root {
            None => None,
            Some(r) => {
                let g = old_root_gen + 1;
                let (crt, key) = self.root_paths(g);
                self.private_folder("roots")?;
                remove_leftovers(&[
                    &crt,
                    &key,
                    &self.cross_path(g, old_root_gen),
                    &self.cross_path(old_root_gen, g),
                ])?;
                let signer = SharedSigner(Arc::new(LocalKeySigner::create(&key, r.key)?));
                Some((signer, r.validity))
            }
        };
        let old = s.issuing_generation;
        let new = old + 1;
        let (crt, key) = self.issuer_paths(new);
        self.private_folder("issuers")?;
        remove_leftovers(&[&crt, &key])?;
        let signer = SharedSigner(Arc::new(LocalKeySigner::create(&key, opts.key)?));
        let minted = rotation::mint(rotation::Plan {
            name: &s.name,
            public_url: &s.public_url,
            now,
            root_der: &old_root_der,
            root_generation: old_root_gen,
            root: SharedSigner(Arc::new(root_signer)),
            new_root: new_root_key,
            issuing: signer,
            issuing_generation: new,
            validity: opts.validity,
        })?;
        let pem = |der: &[u8]| crate::bundle::certificate_pem(der);
        if let Some(r) = &minted.root {
            for (path, der) in [
                (self.root_paths(r.generation).0, &r.der),
                (self.cross_path(r.generation, old_root_gen), &r.forward),
                (self.cross_path(old_root_gen, r.generation), &r.backward),
            ] {
                fsutil::write_atomic(&path, pem(der).as_bytes(), 0o644)?;
            }
        }
        fsutil::write_atomic(&crt, pem(&minted.issuing_der).as_bytes(), 0o644)?;

        let old_revoked = opts.revoke_old.map(|reason| IssuerRevocation { at: now, reason });
        s.retired_issuers.push(RetiredIssuerSettings {
            generation: old,
            key: s.issuing_key,
            revoked: old_revoked,
        });
        s.issuing_generation = new;
        s.issuing_key = opts.key;
        if let (Some(r), Some(m)) = (new_root, &minted.root) {
            s.retired_roots.push(RetiredRootSettings { generation: old_root_gen, key: s.root_key });
            s.root_generation = m.generation;
            s.root_key = r.key;
        }
        let toml = toml::to_string_pretty(&s).map_err(CaError::encoding("TOML"))?;
        fsutil::write_atomic(&self.settings_path(), toml.as_bytes(), 0o600)?;

        let auth = self.open(clock)?;
        let rotation = Rotation {
            old_generation: old,
            new_generation: new,
            subject: profile::issuing_cn(&s.name, new),
            sha256: fingerprint(&minted.issuing_der),
            not_after: minted.not_after,
            shortened_to_root: minted.shortened_to_root,
            old_revoked,
            leaves_revoked: 0,
            new_root: minted.root.as_ref().map(|r| {
                (r.generation, profile::root_cn(&s.name, r.generation), fingerprint(&r.der))
            }),
        };
        let rotation = rotation::finish(&auth, rotation, opts.key, old_root_gen, &actor()).await?;
        self.publish_crls(&auth).await?;
        Ok(rotation)
    }

    /// Creates `DIR/NAME` (mode 0700) for key files.
    fn private_folder(&self, name: &str) -> Result<()> {
        let folder = self.path(name);
        std::fs::create_dir_all(&folder).map_err(CaError::io(format!("creating {name}/")))?;
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o700))
            .map_err(CaError::io(format!("setting mode of {name}/")))
    }

    /// Writes each issuing CA's CRL (`crl/issuing.crl`, `crl/issuing-N.crl`), `crl/root.crl`
    /// (DER) and `crl/crl.pem` (all of them, PEM: what nginx's `ssl_crl` wants, since it
    /// checks every level of the chain); and `ca-bundle.pem` when the issuing CAs it should
    /// carry changed (a rotation, a retired CA's last certificate expiring).
    pub async fn publish_crls(&self, auth: &Authority) -> Result<PathBuf> {
        let dir = self.path("crl");
        std::fs::create_dir_all(&dir).map_err(CaError::io("creating crl/"))?;
        let mut pem = String::new();
        for generation in auth.published_generations().await? {
            let crl = auth.issuer_crl(generation).await?;
            let file = match generation {
                1 => "issuing.crl".to_owned(),
                n => format!("issuing-{n}.crl"),
            };
            fsutil::write_atomic(&dir.join(file), &crl, 0o644)?;
            pem.push_str(&pem::encode(&pem::Pem::new("X509 CRL", crl)));
        }
        for generation in auth.published_root_generations().await? {
            let file = format!("{}.crl", CrlScope::Root(generation).name());
            match auth.root_crl_of(generation).await {
                Ok(root) => {
                    fsutil::write_atomic(&dir.join(&file), &root, 0o644)?;
                    pem.push_str(&pem::encode(&pem::Pem::new("X509 CRL", root)));
                }
                // The root key is offline: its CRL is published from files.
                Err(CaError::NotFound(_)) => {
                    if let Ok(root) = std::fs::read(dir.join(&file)) {
                        pem.push_str(&pem::encode(&pem::Pem::new("X509 CRL", root)));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let out = dir.join("crl.pem");
        fsutil::write_atomic(&out, pem.as_bytes(), 0o644)?;
        self.write_bundle(auth).await?;
        Ok(out)
    }

    /// Rewrites `ca-bundle.pem` when it should carry other issuing CAs than it does.
    async fn write_bundle(&self, auth: &Authority) -> Result<()> {
        let s = self.settings()?;
        if auth.keys().retired.is_empty()
            && auth.keys().retired_roots.is_empty()
            && self.bundle_path().exists()
        {
            // One issuing CA, as `init` wrote it: nothing to change.
            return Ok(());
        }
        if s.issuing_generation != auth.issuing_generation() {
            // This process loaded the CA before a rotation: the bundle is not its to write.
            return Ok(());
        }
        let (roots, issuers) = auth.bundle_certificates().await?;
        let bundle = crate::bundle::build(&s.name, &roots, &issuers);
        if std::fs::read_to_string(self.bundle_path()).ok().as_deref() != Some(bundle.as_str()) {
            fsutil::write_atomic(&self.bundle_path(), bundle.as_bytes(), 0o644)?;
            tracing::info!(
                issuing_cas = issuers.len(),
                "trust bundle rewritten: upload it to the edge's trust store"
            );
        }
        Ok(())
    }

    /// The HTTPS server certificate and key for `serve`: reused while it has the names
    /// asked for and more than 30 days left; otherwise issued anew by the issuing CA.
    pub fn tls_identity(
        &self,
        auth: &Authority,
        names: &[String],
    ) -> Result<(Vec<Vec<u8>>, Vec<u8>)> {
        let dir = self.path("tls");
        std::fs::create_dir_all(&dir).map_err(CaError::io("creating tls/"))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(CaError::io("chmod tls/"))?;
        let (crt, key) = (dir.join("server.crt"), dir.join("server.key"));
        let names_file = dir.join("names");
        let wanted = names.join("\n");
        let now = auth.now();
        if let (Ok(c), Ok(k), Ok(n)) =
            (std::fs::read(&crt), std::fs::read(&key), std::fs::read_to_string(&names_file))
            && n == wanted
            && let Ok(p) = pem::parse(&c)
            && let Ok((_, x)) = x509_parser::parse_x509_certificate(p.contents())
            && x.validity().not_after.timestamp()
                > (now + time::Duration::days(30)).unix_timestamp()
            // Issued by the current issuing CA (not one a rotation retired).
            && x509_parser::parse_x509_certificate(&auth.keys().issuing_der)
                .is_ok_and(|(_, ca)| ca.subject().as_raw() == x.issuer().as_raw())
            && let Ok(kp) = pem::parse(&k)
        {
            let mut chain = vec![p.contents().to_vec()];
            chain.extend(auth.server_chain_tail());
            return Ok((chain, kp.contents().to_vec()));
        }
        let kp = crate::signer::local::generate(KeyAlgorithm::EcdsaP256)?;
        let params = profile::tls_server(names, now, &auth.publication().urls)?;
        let issuer = rcgen::Issuer::from_ca_cert_der(
            &auth.keys().issuing_der.clone().into(),
            auth.keys().issuing.clone(),
        )?;
        let cert = params.signed_by(&kp, &issuer)?;
        let key_pem = zeroize::Zeroizing::new(kp.serialize_pem());
        fsutil::write_atomic(&key, key_pem.as_bytes(), 0o600)?;
        // The chain (server, issuing CA, cross-certificates to earlier roots), so peers that
        // trust only a root verify it.
        let tail = auth.server_chain_tail();
        let mut text = cert.pem();
        for der in &tail {
            text.push_str(&crate::bundle::certificate_pem(der));
        }
        fsutil::write_atomic(&crt, text.as_bytes(), 0o644)?;
        fsutil::write_atomic(&names_file, wanted.as_bytes(), 0o644)?;
        let mut chain = vec![cert.der().to_vec()];
        chain.extend(tail);
        Ok((chain, kp.serialize_der()))
    }
}

fn read_cert_der(p: &Path) -> Result<Vec<u8>> {
    let text = std::fs::read(p).map_err(CaError::io(format!("reading {}", p.display())))?;
    let pem = pem::parse(&text).map_err(|e| CaError::Config(format!("{}: {e}", p.display())))?;
    Ok(pem.contents().to_vec())
}

/// The checks every `init` makes before it creates anything (a key, a file, a KMS key):
/// the CA's name fits CloudFront's bundle rules and the public URL is one. Returns the URL
/// without a trailing `/`.
pub fn check_init_options(opts: &InitOptions) -> Result<String> {
    if opts.name.trim().is_empty() || opts.name.len() > 48 || opts.name.contains(['\n', '-']) {
        return Err(CaError::BadRequest(
            "CA name must be 1 to 48 characters, without '-' (CloudFront bundle comments refuse it)".into(),
        ));
    }
    url_base(&opts.public_url)
}

fn url_base(u: &str) -> Result<String> {
    let ok = (u.starts_with("http://") || u.starts_with("https://"))
        && u.len() < 200
        && !u.contains(char::is_whitespace);
    if !ok {
        return Err(CaError::BadRequest(format!(
            "public URL {u:?} must be an http:// or https:// URL (it is written into certificates)"
        )));
    }
    Ok(u.trim_end_matches('/').to_owned())
}

/// The SHA-256 of a certificate (the root's is what `lanyard enrol --ca-fingerprint`
/// pins), as 64 lowercase hex digits.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der))
}

/// The operator running a CLI command, for the audit trail: `$USER` (or `$LOGNAME`), else
/// the name of the process's uid in /etc/passwd, else the uid itself.
pub fn actor() -> String {
    if let Some(name) = ["USER", "LOGNAME"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|n| !n.trim().is_empty())
    {
        return format!("cli:{name}");
    }
    use std::os::unix::fs::MetadataExt;
    let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
        return "cli:unknown".into();
    };
    let name = std::fs::read_to_string("/etc/passwd").ok().and_then(|passwd| {
        passwd.lines().find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            (f.nth(1)? == uid.to_string()).then(|| name.to_owned())
        })
    });
    match name {
        Some(n) => format!("cli:{n}"),
        None => format!("cli:uid={uid}"),
    }
}
