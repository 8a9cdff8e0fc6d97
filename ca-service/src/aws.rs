//! The serverless CA: keys in KMS, records in DynamoDB, publications in S3 (and, through
//! the revocation export, CloudFront's KeyValueStore). Same [`Authority`], same flows and
//! endpoints as the embedded CA: only the `Signer` and `Store` differ.
//!
//! The table name comes from `LANYARD_AWS_TABLE`, the bucket from `LANYARD_AWS_BUCKET`;
//! everything else (KMS key ids, names, URLs) is written to the table by `init`, so a
//! Lambda needs those two variables and the usual AWS ones.

use crate::authority::{
    Authority, CaKeys, IssuerRevocation, PublicationSettings, RetiredIssuer, RevokedEntry, RootKeys,
};
use crate::ca_dir::InitOptions;
use crate::clock::Clock;
use crate::error::{CaError, Result};
use crate::profile::{self, PublicationUrls};
use crate::rotation::{self, NewRoot, RotateOptions, Rotation};
use crate::signer::SharedSigner;
use crate::signer::kms::KmsSigner;
use crate::store::dynamodb::DynamoStore;
use crate::store::{AuditEvent, Store};
use lanyard_proto::KeyAlgorithm;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use time::OffsetDateTime;

/// What `init` writes to the table (`CA#settings`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AwsCaSettings {
    pub name: String,
    pub public_url: String,
    pub root_key: KeyAlgorithm,
    pub issuing_key: KeyAlgorithm,
    pub root_key_id: String,
    pub issuing_key_id: String,
    pub crl_validity_secs: u64,
    pub ocsp_validity_secs: u64,
    /// The current issuing CA (1 until the first `ca rotate-issuing`): its certificate is
    /// `CA#issuing.crt` for the first, `CA#issuing-N.crt` after; `issuing_key_id` is its key.
    #[serde(default = "first_generation")]
    pub issuing_generation: u32,
    /// Earlier issuing CAs, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired_issuers: Vec<RetiredKey>,
    /// The current root (1 until the first `ca rotate-root`): `CA#root.crt`, then
    /// `CA#root-N.crt`, with the cross-certificates `CA#root-N-by-M.crt`.
    #[serde(default = "first_generation")]
    pub root_generation: u32,
    /// Earlier roots, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired_roots: Vec<RetiredKey>,
}

fn first_generation() -> u32 {
    1
}

/// An earlier CA of the serverless CA: its generation and KMS key. The key stays enabled
/// while the CA has live certificates (it signs their CRL and OCSP answers); once the last
/// has expired the CA leaves the publications and the key may be scheduled for deletion.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RetiredKey {
    pub generation: u32,
    pub key: KeyAlgorithm,
    pub key_id: String,
    /// Issuing CAs only: revoked by `rotate-issuing --revoke-old`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<IssuerRevocation>,
}

/// The table item of a CA certificate: `issuing.crt` / `root.crt` for the first
/// generation, `issuing-N.crt` / `root-N.crt` after.
fn cert_item(role: &str, generation: u32) -> String {
    match generation {
        0 | 1 => format!("{role}.crt"),
        n => format!("{role}-{n}.crt"),
    }
}

/// The table item of the cross-certificate of root `subject` signed by root `signer`.
fn cross_item(subject: u32, signer: u32) -> String {
    format!("root-{subject}-by-{signer}.crt")
}

/// KMS keys made beforehand (by Terraform) for a rotation: without them, the rotation
/// creates its keys.
#[derive(Clone, Debug, Default)]
pub struct RotationKeys {
    pub issuing_key_id: Option<String>,
    pub root_key_id: Option<String>,
}

/// Where the serverless CA keeps its state.
#[derive(Clone, Debug)]
pub struct AwsLocation {
    pub table: String,
    pub bucket: Option<String>,
    /// KMS keys made beforehand (by Terraform, with their key policies): `init` uses them
    /// instead of creating keys (`LANYARD_AWS_ROOT_KEY_ID`, `LANYARD_AWS_ISSUING_KEY_ID`).
    pub root_key_id: Option<String>,
    pub issuing_key_id: Option<String>,
}

impl AwsLocation {
    pub fn from_env() -> Result<Self> {
        let table = std::env::var("LANYARD_AWS_TABLE").map_err(|_| {
            CaError::Config(
                "LANYARD_AWS_TABLE is not set: name the DynamoDB table of the CA".into(),
            )
        })?;
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Ok(AwsLocation {
            table,
            bucket: var("LANYARD_AWS_BUCKET"),
            root_key_id: var("LANYARD_AWS_ROOT_KEY_ID"),
            issuing_key_id: var("LANYARD_AWS_ISSUING_KEY_ID"),
        })
    }
}

/// Path-style S3 addressing only for an endpoint given explicitly (moto, MinIO: no bucket
/// subdomains); AWS itself gets virtual-hosted style, which new buckets require.
fn path_style(cfg: &aws_config::SdkConfig) -> bool {
    cfg.endpoint_url().is_some()
}

pub struct AwsBackend {
    pub store: Arc<DynamoStore>,
    kms: aws_sdk_kms::Client,
    kvs: aws_sdk_cloudfrontkeyvaluestore::Client,
    s3: aws_sdk_s3::Client,
    bucket: Option<String>,
    key_ids: (Option<String>, Option<String>),
}

impl std::fmt::Debug for AwsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsBackend")
            .field("store", &self.store)
            .field("bucket", &self.bucket)
            .finish()
    }
}

/// What `publish` wrote.
#[derive(Debug, Default, Serialize)]
pub struct Published {
    pub objects: Vec<String>,
    pub revoked: usize,
}

/// Which of the CA's KMS keys an [`Authority`] opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAccess {
    /// Root and issuing: the admin commands and the scheduled publisher (the root CRL).
    All,
    /// The issuing key only: the internet-facing handler (issuance, renewal, the issuing
    /// CRL, OCSP); the root CRL comes from the publication bucket.
    IssuingOnly,
}

impl AwsBackend {
    /// Connects with the standard AWS configuration chain (`AWS_REGION`, credentials,
    /// `AWS_ENDPOINT_URL` for tests against a local endpoint).
    pub async fn connect(loc: AwsLocation) -> Self {
        let cfg = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::connect_with(&cfg, loc)
    }

    /// Connects with an explicit SDK configuration (tests point it at a local endpoint).
    pub fn connect_with(cfg: &aws_config::SdkConfig, loc: AwsLocation) -> Self {
        let cfg = cfg.clone();
        let s3_cfg =
            aws_sdk_s3::config::Builder::from(&cfg).force_path_style(path_style(&cfg)).build();
        AwsBackend {
            store: Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(&cfg), loc.table)),
            kms: aws_sdk_kms::Client::new(&cfg),
            kvs: aws_sdk_cloudfrontkeyvaluestore::Client::new(&cfg),
            s3: aws_sdk_s3::Client::from_conf(s3_cfg),
            bucket: loc.bucket,
            key_ids: (loc.root_key_id, loc.issuing_key_id),
        }
    }

    pub async fn settings(&self) -> Result<AwsCaSettings> {
        let raw = self.store.get_meta("settings").await?.ok_or_else(|| {
            CaError::Config(format!(
                "table {} holds no CA: run `lanyard-ca init --backend aws` first",
                self.store.table()
            ))
        })?;
        serde_json::from_slice(&raw)
            .map_err(|e| CaError::Config(format!("CA settings in the table: {e}")))
    }

    /// Creates the root and issuing keys in KMS (they never leave it) and their
    /// certificates, and records them in the table.
    ///
    /// Of two `init`s on one table exactly one proceeds: each first claims the table with a
    /// conditional write (`CA#init`) before it creates a key, and the settings are written
    /// under the same condition. An `init` that fails after creating keys schedules their
    /// deletion (keys made beforehand are left alone) and gives its claim back, so it can
    /// be run again.
    pub async fn init(&self, opts: &InitOptions, clock: &dyn Clock) -> Result<AwsCaSettings> {
        let public_url = crate::ca_dir::check_init_options(opts)?;
        if self.store.get_meta("settings").await?.is_some() {
            return Err(CaError::Config(format!(
                "table {} already holds a CA; refusing to overwrite it",
                self.store.table()
            )));
        }
        let now = clock.now();
        let claim = serde_json::json!({ "at": now.unix_timestamp(), "by": crate::ca_dir::actor() });
        if !self.store.put_meta_new("init", claim.to_string().as_bytes()).await? {
            return Err(CaError::Config(format!(
                "table {} is being initialised by another `lanyard-ca init` (or one was killed midway: if none is running, delete the item pk=CA#init and run init again)",
                self.store.table()
            )));
        }
        let mut created: Vec<KmsSigner> = Vec::new();
        let r = self.init_claimed(opts, &public_url, now, &mut created).await;
        if let Err(e) = &r {
            delete_created(&created, "init").await;
            if let Err(d) = self.store.delete_meta("init").await {
                tracing::error!(error = %d, "init failed and its claim on the table stays: delete the item pk=CA#init");
            }
            tracing::debug!(error = %e, "init failed");
        }
        r
    }

    async fn init_claimed(
        &self,
        opts: &InitOptions,
        public_url: &str,
        now: OffsetDateTime,
        created: &mut Vec<KmsSigner>,
    ) -> Result<AwsCaSettings> {
        let urls = PublicationUrls::from_base(public_url);
        let description = |what: &str| format!("{} {what} CA (Lanyard)", opts.name);
        let root = match &self.key_ids.0 {
            Some(id) => KmsSigner::open(self.kms.clone(), id, opts.root_key).await?,
            None => {
                let k = KmsSigner::create(self.kms.clone(), opts.root_key, &description("root"))
                    .await?;
                created.push(k.clone());
                k
            }
        };
        let issuing = match &self.key_ids.1 {
            Some(id) => KmsSigner::open(self.kms.clone(), id, opts.issuing_key).await?,
            None => {
                let k =
                    KmsSigner::create(self.kms.clone(), opts.issuing_key, &description("issuing"))
                        .await?;
                created.push(k.clone());
                k
            }
        };
        let certs = profile::ceremony(&opts.name, now, &urls, &root, &issuing)?;
        let settings = AwsCaSettings {
            name: opts.name.clone(),
            public_url: public_url.to_owned(),
            root_key: opts.root_key,
            issuing_key: opts.issuing_key,
            root_key_id: root.key_id().to_owned(),
            issuing_key_id: issuing.key_id().to_owned(),
            crl_validity_secs: 7 * 86_400,
            ocsp_validity_secs: 3_600,
            issuing_generation: 1,
            retired_issuers: Vec::new(),
            root_generation: 1,
            retired_roots: Vec::new(),
        };
        self.store.put_meta("root.crt", &certs.root_der).await?;
        self.store.put_meta("issuing.crt", &certs.issuing_der).await?;
        let json = serde_json::to_vec(&settings).map_err(CaError::encoding("JSON"))?;
        if !self.store.put_meta_new("settings", &json).await? {
            return Err(CaError::Config(format!(
                "table {} already holds a CA; refusing to overwrite it",
                self.store.table()
            )));
        }
        self.store
            .audit(AuditEvent {
                at: now,
                actor: crate::ca_dir::actor(),
                action: "init".into(),
                subject: opts.name.clone(),
                detail: format!("root=kms:{} issuing=kms:{}", root.key_id(), issuing.key_id()),
                remote: None,
            })
            .await?;
        Ok(settings)
    }

    /// The authority over KMS and DynamoDB, with both keys (admin commands, the publisher).
    pub async fn open(&self, clock: Arc<dyn Clock>) -> Result<Authority> {
        self.open_with(clock, KeyAccess::All).await
    }

    /// The authority with the keys `access` allows: the internet-facing handler opens the
    /// issuing keys only, so it cannot sign with a root even if its code is made to.
    pub async fn open_with(&self, clock: Arc<dyn Clock>, access: KeyAccess) -> Result<Authority> {
        let s = self.settings().await?;
        let issuing = KmsSigner::open(self.kms.clone(), &s.issuing_key_id, s.issuing_key).await?;
        let root = match access {
            KeyAccess::All => Some(SharedSigner(Arc::new(
                KmsSigner::open(self.kms.clone(), &s.root_key_id, s.root_key).await?,
            ))),
            KeyAccess::IssuingOnly => None,
        };
        let mut retired = Vec::new();
        for r in &s.retired_issuers {
            let der = self.cert(&cert_item("issuing", r.generation)).await?;
            let signer = KmsSigner::for_certificate(self.kms.clone(), &r.key_id, r.key, &der)?;
            retired.push(RetiredIssuer {
                generation: r.generation,
                der,
                signer: SharedSigner(Arc::new(signer)),
                revoked: r.revoked,
            });
        }
        let mut retired_roots = Vec::new();
        for r in &s.retired_roots {
            let der = self.cert(&cert_item("root", r.generation)).await?;
            let signer = match access {
                KeyAccess::All => Some(SharedSigner(Arc::new(KmsSigner::for_certificate(
                    self.kms.clone(),
                    &r.key_id,
                    r.key,
                    &der,
                )?))),
                KeyAccess::IssuingOnly => None,
            };
            retired_roots.push(RootKeys { generation: r.generation, der, signer });
        }
        let mut cross = Vec::new();
        for g in 1..s.root_generation {
            cross.push(self.cert(&cross_item(g + 1, g)).await?);
            cross.push(self.cert(&cross_item(g, g + 1)).await?);
        }
        let keys = CaKeys {
            issuing: SharedSigner(Arc::new(issuing)),
            issuing_der: self.cert(&cert_item("issuing", s.issuing_generation)).await?,
            generation: s.issuing_generation,
            retired,
            root_generation: s.root_generation,
            retired_roots,
            cross,
            root_der: self.cert(&cert_item("root", s.root_generation)).await?,
            root,
        };
        let mut publication =
            PublicationSettings::new(&s.public_url, s.crl_validity_secs, s.ocsp_validity_secs);
        publication.urls = publication.urls.for_generation(s.issuing_generation);
        Authority::new(self.store.clone(), clock, keys, publication)
    }

    /// A CA certificate (DER) from the table.
    async fn cert(&self, item: &str) -> Result<Vec<u8>> {
        self.store.get_meta(item).await?.ok_or_else(|| {
            CaError::Config(format!("{item} missing from table {}", self.store.table()))
        })
    }

    /// `lanyard-ca ca rotate-issuing --backend aws` (and, with `new_root`, `ca
    /// rotate-root`): new KMS keys (or those Terraform made, `keys`) and the certificates
    /// [`rotation::mint`] makes; one transaction writes the certificates under their own
    /// items and the settings item, on the condition that the settings are still those the
    /// rotation read: that commits it. Of two rotations started from the same settings,
    /// exactly one commits; the other, and any rotation that fails before its commit,
    /// writes nothing, schedules the deletion of the keys it created and leaves the CA as
    /// it was. After the commit: the
    /// audit trail, the emergency revocation of the old CA's certificates, and a publication
    /// to the bucket. Warm Lambdas load the new CA within `LANYARD_RELOAD_SECS` ([`LiveAuthority`]).
    pub async fn rotate(
        &self,
        opts: &RotateOptions,
        new_root: Option<&NewRoot>,
        keys: &RotationKeys,
        clock: Arc<dyn Clock>,
    ) -> Result<Rotation> {
        rotation::check(opts, new_root)?;
        let raw = self.store.get_meta("settings").await?.ok_or_else(|| {
            CaError::Config(format!(
                "table {} holds no CA: run `lanyard-ca init --backend aws` first",
                self.store.table()
            ))
        })?;
        let s: AwsCaSettings = serde_json::from_slice(&raw)
            .map_err(|e| CaError::Config(format!("CA settings in the table: {e}")))?;
        let mut created: Vec<KmsSigner> = Vec::new();
        // Boxed: the SDK calls under it make a large future (debug builds overflow a test
        // thread's stack otherwise).
        let r =
            Box::pin(self.rotate_from(&raw, s, opts, new_root, keys, clock, &mut created)).await;
        if r.is_err() {
            delete_created(&created, "rotation").await;
        }
        r
    }

    /// The KMS key made beforehand (`given`), or a new one, recorded in `created` so that a
    /// rotation that does not commit schedules its deletion.
    async fn kms_key(
        &self,
        given: &Option<String>,
        alg: KeyAlgorithm,
        description: &str,
        created: &mut Vec<KmsSigner>,
    ) -> Result<KmsSigner> {
        match given {
            Some(id) => KmsSigner::open(self.kms.clone(), id, alg).await,
            None => {
                let k = KmsSigner::create(self.kms.clone(), alg, description).await?;
                created.push(k.clone());
                Ok(k)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn rotate_from(
        &self,
        raw: &[u8],
        mut s: AwsCaSettings,
        opts: &RotateOptions,
        new_root: Option<&NewRoot>,
        keys: &RotationKeys,
        clock: Arc<dyn Clock>,
        created: &mut Vec<KmsSigner>,
    ) -> Result<Rotation> {
        let root = KmsSigner::open(self.kms.clone(), &s.root_key_id, s.root_key).await?;
        let root_der = self.cert(&cert_item("root", s.root_generation)).await?;
        let old_root_gen = s.root_generation;
        let old = s.issuing_generation;
        let new = old + 1;
        let new_root_key = match new_root {
            None => None,
            Some(r) => {
                let what = format!("{} root CA {} key (Lanyard)", s.name, old_root_gen + 1);
                Some((self.kms_key(&keys.root_key_id, r.key, &what, created).await?, r.validity))
            }
        };
        let what = format!("{} issuing CA {new} key (Lanyard)", s.name);
        let issuing = self.kms_key(&keys.issuing_key_id, opts.key, &what, created).await?;
        let now = clock.now();
        let minted = rotation::mint(rotation::Plan {
            name: &s.name,
            public_url: &s.public_url,
            now,
            root_der: &root_der,
            root_generation: old_root_gen,
            root: SharedSigner(Arc::new(root)),
            new_root: new_root_key.as_ref().map(|(k, v)| (SharedSigner(Arc::new(k.clone())), *v)),
            issuing: SharedSigner(Arc::new(issuing.clone())),
            issuing_generation: new,
            validity: opts.validity,
        })?;
        // The certificates go in with the settings, in one transaction: a rotation that
        // loses the race writes none of them.
        let mut certs = vec![(cert_item("issuing", new), minted.issuing_der.clone())];
        if let Some(r) = &minted.root {
            certs.push((cert_item("root", r.generation), r.der.clone()));
            certs.push((cross_item(r.generation, old_root_gen), r.forward.clone()));
            certs.push((cross_item(old_root_gen, r.generation), r.backward.clone()));
        }

        let old_revoked = opts.revoke_old.map(|reason| IssuerRevocation { at: now, reason });
        s.retired_issuers.push(RetiredKey {
            generation: old,
            key: s.issuing_key,
            key_id: s.issuing_key_id.clone(),
            revoked: old_revoked,
        });
        s.issuing_generation = new;
        s.issuing_key = opts.key;
        s.issuing_key_id = issuing.key_id().to_owned();
        if let (Some((k, _)), Some(m), Some(r)) = (&new_root_key, &minted.root, new_root) {
            s.retired_roots.push(RetiredKey {
                generation: old_root_gen,
                key: s.root_key,
                key_id: s.root_key_id.clone(),
                revoked: None,
            });
            s.root_generation = m.generation;
            s.root_key = r.key;
            s.root_key_id = k.key_id().to_owned();
        }
        let json = serde_json::to_vec(&s).map_err(CaError::encoding("JSON"))?;
        if !self.store.replace_meta("settings", &json, raw, &certs).await? {
            return Err(CaError::Config(format!(
                "the CA in table {} changed while this rotation ran (another rotation committed \
                 first): nothing was changed; look at `lanyard-ca ca status` and run again if \
                 still needed",
                self.store.table()
            )));
        }
        // Committed: from here on the keys are the CA's, whatever fails next.
        created.clear();

        let auth = Box::pin(self.open(clock)).await?;
        let rotation = Rotation {
            old_generation: old,
            new_generation: new,
            subject: profile::issuing_cn(&s.name, new),
            sha256: crate::ca_dir::fingerprint(&minted.issuing_der),
            not_after: minted.not_after,
            shortened_to_root: minted.shortened_to_root,
            old_revoked,
            leaves_revoked: 0,
            new_root: minted.root.as_ref().map(|r| {
                (
                    r.generation,
                    profile::root_cn(&s.name, r.generation),
                    crate::ca_dir::fingerprint(&r.der),
                )
            }),
        };
        let actor = crate::ca_dir::actor();
        let rotation =
            Box::pin(rotation::finish(&auth, rotation, opts.key, old_root_gen, &actor)).await?;
        if self.bucket.is_some() {
            Box::pin(self.publish(&auth)).await?;
        }
        Ok(rotation)
    }

    /// When `crl/crl.pem` was last written to the publication bucket (what the scheduled
    /// publisher and `lanyard-ca crl` write); `None` when it never was.
    pub async fn last_publication(&self) -> Result<Option<OffsetDateTime>> {
        let Some(bucket) = &self.bucket else { return Ok(None) };
        match self.s3.head_object().bucket(bucket).key("crl/crl.pem").send().await {
            Ok(h) => Ok(h
                .last_modified()
                .and_then(|t| OffsetDateTime::from_unix_timestamp(t.secs()).ok())),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(None),
            Err(e) => Err(CaError::Storage(format!(
                "S3 HeadObject crl/crl.pem: {}",
                aws_sdk_s3::error::DisplayErrorContext(&e)
            ))),
        }
    }

    /// Publishes to the bucket (`S3Feed` at its top): `ca-bundle.pem`, the CRLs and
    /// `revoked.json`, after revoking superseded certificates whose grace ran out.
    pub async fn publish(&self, auth: &Authority) -> Result<Published> {
        let Some(bucket) = self.bucket.clone() else {
            return Err(CaError::Config(
                "LANYARD_AWS_BUCKET is not set: nowhere to publish".into(),
            ));
        };
        let s = self.settings().await?;
        // Superseded certificates whose grace ran out go onto this CRL.
        let retired = auth.retire_superseded().await?;
        if !retired.is_empty() {
            tracing::info!(count = retired.len(), "revoked superseded certificates");
        }
        S3Feed { s3: self.s3.clone(), bucket, prefix: String::new(), ca_name: s.name }
            .publish(auth)
            .await
    }
}

/// The authority a warm Lambda serves with, reloaded when the CA was rotated: at most
/// every `every`, the first request after it reads the settings item (one `GetItem`) and,
/// when the issuing or root generation changed, loads the CA again. A failed read keeps
/// the CA it has (and tries again at the next request), so a DynamoDB blip never turns
/// into refused enrolments; a rotation reaches every warm instance within `every` of its
/// commit, and cold starts at once.
pub struct LiveAuthority {
    backend: Arc<AwsBackend>,
    clock: Arc<dyn Clock>,
    access: KeyAccess,
    admission: Option<crate::admission::AdmissionLimits>,
    every: std::time::Duration,
    current: tokio::sync::RwLock<Loaded>,
}

struct Loaded {
    auth: Arc<Authority>,
    generations: (u32, u32),
    checked: std::time::Instant,
}

impl LiveAuthority {
    pub async fn open(
        backend: Arc<AwsBackend>,
        clock: Arc<dyn Clock>,
        access: KeyAccess,
        admission: Option<crate::admission::AdmissionLimits>,
        every: std::time::Duration,
    ) -> Result<Self> {
        let auth =
            Arc::new(backend.open_with(clock.clone(), access).await?.with_admission(admission));
        let generations = (auth.keys().generation, auth.keys().root_generation);
        let current = tokio::sync::RwLock::new(Loaded {
            auth,
            generations,
            checked: std::time::Instant::now(),
        });
        Ok(LiveAuthority { backend, clock, access, admission, every, current })
    }

    /// The reload interval from `LANYARD_RELOAD_SECS` (default 60).
    pub fn interval_from_env() -> Result<std::time::Duration> {
        match std::env::var("LANYARD_RELOAD_SECS") {
            Err(_) => Ok(std::time::Duration::from_secs(60)),
            Ok(v) => v.trim().parse().map(std::time::Duration::from_secs).map_err(|_| {
                CaError::Config(format!("LANYARD_RELOAD_SECS={v:?}: give a number of seconds"))
            }),
        }
    }

    /// The CA to serve this request with.
    pub async fn get(&self) -> Arc<Authority> {
        {
            let c = self.current.read().await;
            if c.checked.elapsed() < self.every {
                return c.auth.clone();
            }
        }
        let mut c = self.current.write().await;
        if c.checked.elapsed() < self.every {
            return c.auth.clone();
        }
        c.checked = std::time::Instant::now();
        let settings = match self.backend.settings().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the CA settings; serving with the CA loaded");
                return c.auth.clone();
            }
        };
        let now = (settings.issuing_generation, settings.root_generation);
        if now != c.generations {
            match self.backend.open_with(self.clock.clone(), self.access).await {
                Ok(a) => {
                    tracing::info!(
                        issuing = now.0,
                        root = now.1,
                        "the CA was rotated: serving with the new issuing CA"
                    );
                    c.auth = Arc::new(a.with_admission(self.admission));
                    c.generations = now;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the CA was rotated but could not be loaded; serving with the CA loaded");
                }
            }
        }
        c.auth.clone()
    }
}

/// Schedules the deletion of the KMS keys a failed `what` (init, rotation) made.
async fn delete_created(created: &[KmsSigner], what: &str) {
    for k in created {
        match k.schedule_deletion().await {
            Ok(()) => {
                tracing::warn!(key = %k.key_id(), "{what} failed: the KMS key it made is scheduled for deletion (7 days; CancelKeyDeletion restores it)")
            }
            Err(d) => {
                tracing::error!(key = %k.key_id(), error = %d, "{what} failed and its KMS key could not be scheduled for deletion: delete it by hand")
            }
        }
    }
}

/// One S3 location that every AWS trust store reads from: `ca-bundle.pem` (text/plain: the
/// CloudFront, ALB and API Gateway trust stores), `mtls-truststore.pem` (the bundle and the
/// trusted factory CAs: the trust store of the serverless CA's own mTLS hostname, where
/// devices also enrol with factory certificates; never an edge's, since a factory
/// certificate must not open the fleet's services), `crl/issuing.crl` and `crl/root.crl`
/// (DER: the ALB trust store's revocation; `crl/issuing-N.crl` and `crl/root-N.crl` for the
/// CAs rotations added), `crl/crl.pem` (all of them, PEM) and `revoked.json`
/// (the CloudFront KeyValueStore export). Both backends write it: the serverless CA to its
/// publication bucket, the embedded CA with `lanyard-ca publish --s3 s3://BUCKET/PREFIX`.
#[derive(Clone, Debug)]
pub struct S3Feed {
    s3: aws_sdk_s3::Client,
    bucket: String,
    /// Empty, or ends with `/`.
    prefix: String,
    /// The CA's name, in the bundle's comment.
    ca_name: String,
}

impl S3Feed {
    /// `s3://bucket` or `s3://bucket/prefix`, with the standard AWS configuration chain,
    /// for the CA named `ca_name`.
    pub async fn connect(url: &str, ca_name: &str) -> Result<Self> {
        let (bucket, prefix) = parse_s3_url(url)?;
        let cfg = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let s3_cfg =
            aws_sdk_s3::config::Builder::from(&cfg).force_path_style(path_style(&cfg)).build();
        let s3 = aws_sdk_s3::Client::from_conf(s3_cfg);
        Ok(S3Feed { s3, bucket, prefix, ca_name: ca_name.to_owned() })
    }

    async fn put(&self, key: &str, body: Vec<u8>, content_type: &str) -> Result<String> {
        let key = format!("{}{key}", self.prefix);
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type(content_type)
            .body(aws_sdk_s3::primitives::ByteStream::from(body))
            .send()
            .await
            .map_err(|e| {
                CaError::Storage(format!(
                    "S3 PutObject s3://{}/{key}: {}",
                    self.bucket,
                    aws_sdk_s3::error::DisplayErrorContext(&e)
                ))
            })?;
        Ok(format!("s3://{}/{key}", self.bucket))
    }

    /// Writes the feed: the bundle, the CRLs and the revocation export. The bundle goes
    /// last but one: an edge that sees a new bundle finds its CRLs there.
    pub async fn publish(&self, auth: &Authority) -> Result<Published> {
        let (roots, issuers) = auth.bundle_certificates().await?;
        let bundle = crate::bundle::build(&self.ca_name, &roots, &issuers);
        // Each issuing CA in use (after a rotation, more than one) and each root that signed
        // one: crl/issuing.crl and crl/root.crl for the first, crl/issuing-N.crl and
        // crl/root-N.crl for later ones, as the embedded CA names them.
        let mut crls = Vec::new();
        for generation in auth.published_generations().await? {
            let scope = crate::authority::CrlScope::Issuing(generation);
            crls.push((format!("crl/{}.crl", scope.name()), auth.issuer_crl(generation).await?));
        }
        for generation in auth.published_root_generations().await? {
            let scope = crate::authority::CrlScope::Root(generation);
            crls.push((format!("crl/{}.crl", scope.name()), auth.root_crl_of(generation).await?));
        }
        let mut pem = String::new();
        for (_, der) in &crls {
            pem.push_str(&pem::encode(&pem::Pem::new("X509 CRL", der.clone())));
        }
        let revoked = auth.revoked_export().await?;
        let json = serde_json::to_vec(&revoked).map_err(CaError::encoding("JSON"))?;
        let mut mtls = bundle.clone();
        for f in auth.factory_cas().await? {
            mtls.push_str(&format!("# Factory CA {} (group {}): {}\n", f.id, f.group, f.subject));
            mtls.push_str(&crate::bundle::certificate_pem(&f.der));
        }
        let mut out = Published { revoked: revoked.len(), ..Default::default() };
        for (key, der) in crls {
            out.objects.push(self.put(&key, der, "application/pkix-crl").await?);
        }
        for (key, body, ct) in [
            ("crl/crl.pem", pem.into_bytes(), "application/x-pem-file"),
            ("mtls-truststore.pem", mtls.into_bytes(), "text/plain"),
            ("ca-bundle.pem", bundle.into_bytes(), "text/plain"),
            ("revoked.json", json, "application/json"),
        ] {
            out.objects.push(self.put(key, body, ct).await?);
        }
        Ok(out)
    }
}

#[async_trait::async_trait]
impl crate::publish::Publisher for AwsBackend {
    async fn publish(&self, auth: &Authority) -> Result<String> {
        Ok(AwsBackend::publish(self, auth).await?.objects.join(", "))
    }
}

#[async_trait::async_trait]
impl crate::publish::Publisher for S3Feed {
    async fn publish(&self, auth: &Authority) -> Result<String> {
        Ok(S3Feed::publish(self, auth).await?.objects.join(", "))
    }
}

/// `s3://bucket[/prefix]` as (bucket, prefix ending in `/` or empty).
pub fn parse_s3_url(url: &str) -> Result<(String, String)> {
    let bad = || {
        CaError::BadRequest(format!(
            "{url:?} is not an S3 location: give s3://BUCKET or s3://BUCKET/PREFIX"
        ))
    };
    let rest = url.strip_prefix("s3://").ok_or_else(bad)?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    let prefix = prefix.trim_matches('/');
    if !bucket_ok || prefix.contains("//") || prefix.chars().any(|c| c.is_control()) {
        return Err(bad());
    }
    let prefix = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
    Ok((bucket.to_owned(), prefix))
}

impl AwsBackend {
    /// Makes the CloudFront KeyValueStore `kvs_arn` hold exactly the unexpired revoked
    /// serials (colon-hex keys, what the edge's connection function looks up): reads its
    /// keys, sends only the difference, at most 50 keys per update, each with the store's
    /// current ETag. Idempotent; run by the scheduled handler after every publication.
    pub async fn sync_kvs(&self, auth: &Authority, kvs_arn: &str) -> Result<KvsPlan> {
        use aws_sdk_cloudfrontkeyvaluestore::types::{
            DeleteKeyRequestListItem, PutKeyRequestListItem,
        };
        let e = |op: &str, err: String| CaError::Storage(format!("KeyValueStore {op}: {err}"));
        let mut current = BTreeMap::new();
        let mut next: Option<String> = None;
        loop {
            let out = self
                .kvs
                .list_keys()
                .kvs_arn(kvs_arn)
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|x| {
                    e(
                        "ListKeys",
                        aws_sdk_cloudfrontkeyvaluestore::error::DisplayErrorContext(&x).to_string(),
                    )
                })?;
            for item in out.items() {
                current.insert(item.key().to_owned(), item.value().to_owned());
            }
            match out.next_token {
                Some(t) if !t.is_empty() => next = Some(t),
                _ => break,
            }
        }
        let plan = KvsPlan::new(&current, &auth.revoked_export().await?, auth.now());
        let mut etag = self
            .kvs
            .describe_key_value_store()
            .kvs_arn(kvs_arn)
            .send()
            .await
            .map_err(|x| {
                e(
                    "DescribeKeyValueStore",
                    aws_sdk_cloudfrontkeyvaluestore::error::DisplayErrorContext(&x).to_string(),
                )
            })?
            .e_tag;
        for (puts, deletes) in plan.batches() {
            let puts = puts
                .into_iter()
                .map(|(k, v)| PutKeyRequestListItem::builder().key(k).value(v).build())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|x| e("UpdateKeys", x.to_string()))?;
            let deletes = deletes
                .into_iter()
                .map(|k| DeleteKeyRequestListItem::builder().key(k).build())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|x| e("UpdateKeys", x.to_string()))?;
            etag = self
                .kvs
                .update_keys()
                .kvs_arn(kvs_arn)
                .if_match(etag)
                .set_puts(Some(puts))
                .set_deletes(Some(deletes))
                .send()
                .await
                .map_err(|x| {
                    e(
                        "UpdateKeys",
                        aws_sdk_cloudfrontkeyvaluestore::error::DisplayErrorContext(&x).to_string(),
                    )
                })?
                .e_tag;
        }
        Ok(plan)
    }
}

/// Changes that make a CloudFront KeyValueStore hold exactly the unexpired revoked serials.
#[derive(Debug, Default, PartialEq, Eq, Serialize, Clone)]
pub struct KvsPlan {
    /// `(key, value)`: colon-hex serial, and a small JSON (reason, revocation time).
    pub puts: Vec<(String, String)>,
    pub deletes: Vec<String>,
}

/// One KeyValueStore update: keys to put (with values) and keys to delete.
pub type KvsBatch = (Vec<(String, String)>, Vec<String>);

/// CloudFront's KeyValueStore takes at most 50 keys per update.
pub const KVS_BATCH: usize = 50;

impl KvsPlan {
    /// Compares the store's current keys with the CA's revocations. Expired certificates
    /// leave the store (they fail at the edge anyway), which keeps it under its 5 MB.
    pub fn new(
        current: &BTreeMap<String, String>,
        revoked: &[RevokedEntry],
        now: time::OffsetDateTime,
    ) -> KvsPlan {
        let want: BTreeMap<String, String> = revoked
            .iter()
            .filter(|r| r.not_after > now)
            .map(|r| {
                let at = r
                    .revoked_at
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default();
                (
                    r.serial.to_ascii_lowercase(),
                    serde_json::json!({"reason": r.reason, "revoked_at": at}).to_string(),
                )
            })
            .collect();
        KvsPlan {
            puts: want
                .iter()
                .filter(|(k, v)| current.get(*k) != Some(v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            deletes: current.keys().filter(|k| !want.contains_key(*k)).cloned().collect(),
        }
    }

    /// The plan cut into updates of at most [`KVS_BATCH`] keys each.
    pub fn batches(&self) -> Vec<KvsBatch> {
        let mut out = Vec::new();
        let mut puts = self.puts.iter().cloned().peekable();
        let mut dels = self.deletes.iter().cloned().peekable();
        while puts.peek().is_some() || dels.peek().is_some() {
            let p: Vec<_> = puts.by_ref().take(KVS_BATCH).collect();
            let d: Vec<_> = dels.by_ref().take(KVS_BATCH - p.len()).collect();
            out.push((p, d));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn s3_locations_are_parsed_or_refused() {
        assert_eq!(parse_s3_url("s3://feed").ok(), Some(("feed".into(), String::new())));
        assert_eq!(parse_s3_url("s3://feed/edge/").ok(), Some(("feed".into(), "edge/".into())));
        assert_eq!(parse_s3_url("s3://feed/a/b").ok(), Some(("feed".into(), "a/b/".into())));
        for bad in ["feed", "https://feed/x", "s3://", "s3://UPPER", "s3://f", "s3://feed/a//b"] {
            assert!(parse_s3_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn s3_is_addressed_path_style_only_at_a_local_endpoint() {
        let aws = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("eu-west-1"))
            .build();
        assert!(!path_style(&aws), "AWS: virtual-hosted style");
        let local = aws.to_builder().endpoint_url("http://127.0.0.1:5000").build();
        assert!(path_style(&local), "moto, MinIO: path style");
    }

    fn entry(serial: &str, expired: bool) -> RevokedEntry {
        RevokedEntry {
            serial: serial.into(),
            revoked_at: datetime!(2026-06-01 00:00 UTC),
            reason: "keyCompromise",
            not_after: if expired {
                datetime!(2026-01-01 00:00 UTC)
            } else {
                datetime!(2027-01-01 00:00 UTC)
            },
        }
    }

    #[test]
    fn plan_is_a_diff_and_drops_expired() {
        let now = datetime!(2026-06-02 00:00 UTC);
        let revoked = vec![entry("00:8f:01", false), entry("7f:02", false), entry("7f:03", true)];
        let first = KvsPlan::new(&BTreeMap::new(), &revoked, now);
        assert_eq!(first.puts.len(), 2);
        assert!(first.deletes.is_empty());
        let current: BTreeMap<String, String> =
            first.puts.iter().cloned().chain([("7f:99".to_string(), "{}".to_string())]).collect();
        let again = KvsPlan::new(&current, &revoked, now);
        assert!(again.puts.is_empty(), "idempotent: {again:?}");
        assert_eq!(again.deletes, vec!["7f:99".to_string()]);
    }

    #[test]
    fn batches_hold_at_most_fifty_keys() {
        let now = datetime!(2026-06-02 00:00 UTC);
        let revoked: Vec<RevokedEntry> =
            (0..120).map(|i| entry(&format!("7f:{i:02x}"), false)).collect();
        let current: BTreeMap<String, String> =
            (0..30).map(|i| (format!("6e:{i:02x}"), "{}".to_string())).collect();
        let plan = KvsPlan::new(&current, &revoked, now);
        let batches = plan.batches();
        assert!(batches.iter().all(|(p, d)| p.len() + d.len() <= KVS_BATCH));
        assert_eq!(batches.iter().map(|(p, d)| p.len() + d.len()).sum::<usize>(), 150);
        assert_eq!(batches.len(), 3);
    }
}
