//! `lanyard-ca`: command line of the Lanyard CA service. Each command parses its flags,
//! calls the library, and prints; nothing here decides policy.
#![forbid(unsafe_code)]

use clap::{Args, Parser, Subcommand};
use lanyard_ca::ca_dir::{self, CaDir, InitOptions};
use lanyard_ca::clock::SystemClock;
use lanyard_ca::error::CaError;
use lanyard_ca::revocation::Reason;
use lanyard_ca::store::{CertFilter, RevokeOutcome, TokenFilter, TokenRecord, TokenRevokeOutcome};
use lanyard_ca::{Authority, bundle};
use lanyard_proto::timefmt::rfc3339;
use lanyard_proto::{GroupPolicy, KeyAlgorithm, duration};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use lanyard_proto::outln;

/// Where a relying party finds the publication listener by default; `init --public-url`
/// and `serve --http-listen` share it so that a CA made and served with defaults agrees
/// with itself. Not 8080: that is the agent proxy's default port.
const DEFAULT_HTTP_PORT: u16 = 8081;

#[derive(Parser)]
#[command(
    name = "lanyard-ca",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("LANYARD_COMMIT"), ")"),
    about = "The Lanyard CA service: device client certificates for CloudFront viewer mTLS"
)]
struct Cli {
    /// Where the CA is; given before or after the subcommand.
    #[command(flatten)]
    target: DirArg,
    #[command(subcommand)]
    cmd: Cmd,
}

/// Where the CA's keys and records live: chosen once, here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Backend {
    /// A directory: key files and SQLite.
    Embedded,
    /// KMS, DynamoDB and S3.
    Aws,
}

#[derive(Args, Clone)]
struct DirArg {
    /// The CA directory (created by `init`), for the embedded backend.
    #[arg(long, env = "LANYARD_CA_DIR", global = true)]
    dir: Option<PathBuf>,
    /// embedded (a directory: key files and SQLite) | aws (KMS, DynamoDB, S3; the table
    /// from LANYARD_AWS_TABLE, the bucket from LANYARD_AWS_BUCKET).
    #[arg(long, env = "LANYARD_CA_BACKEND", value_enum, default_value_t = Backend::Embedded, global = true)]
    backend: Backend,
    /// Where the console's admin key (`admin.key`) and admin CA (`admin-ca.crt`,
    /// `admin-ca.key`) live. Default: the CA directory (embedded), or
    /// $XDG_CONFIG_HOME/lanyard-ca (aws: the console runs on an admin's machine).
    #[arg(long, env = "LANYARD_CA_ADMIN_DIR", global = true)]
    admin_dir: Option<PathBuf>,
}

impl DirArg {
    /// The admin directory (see `--admin-dir`); for the embedded backend, checked to be a
    /// CA directory.
    fn admin_dir(&self) -> Result<PathBuf, CaError> {
        if let Some(d) = &self.admin_dir {
            return Ok(d.clone());
        }
        if self.backend == Backend::Aws {
            let config = std::env::var_os("XDG_CONFIG_HOME")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
                .ok_or_else(|| {
                    CaError::BadRequest(
                        "neither XDG_CONFIG_HOME nor HOME is set: give --admin-dir".into(),
                    )
                })?;
            return Ok(config.join("lanyard-ca"));
        }
        let d = CaDir::new(self.dir()?);
        d.settings()?; // a CA directory, not a typo
        Ok(d.dir)
    }

    fn dir(&self) -> Result<&std::path::Path, CaError> {
        self.dir.as_deref().ok_or_else(|| {
            // A usage error (exit 2), like a missing flag.
            CaError::BadRequest(
                "give the CA directory with --dir DIR (before or after the command) or LANYARD_CA_DIR"
                    .into(),
            )
        })
    }
}

/// The CA a command works on, and where it publishes.
enum Ca {
    Embedded(CaDir),
    #[cfg(feature = "aws")]
    Aws(lanyard_ca::aws::AwsBackend),
}

impl Ca {
    /// Where this CA publishes: files, or S3 with the bundle and the revocation export.
    fn publisher(&self) -> &dyn lanyard_ca::publish::Publisher {
        match self {
            Ca::Embedded(d) => d,
            #[cfg(feature = "aws")]
            Ca::Aws(b) => b,
        }
    }

    async fn publish(&self, a: &Authority) -> Result<String, CaError> {
        self.publisher().publish(a).await
    }
}

/// The current CA's key algorithms (the defaults of a rotation) and its root's path
/// length constraint, whichever backend holds it.
struct CurrentKeys {
    issuing: KeyAlgorithm,
    root: KeyAlgorithm,
    root_pathlen: Option<u32>,
}

async fn current_keys(dir: &DirArg) -> Result<CurrentKeys, CaError> {
    let (ca, a) = open(dir).await?;
    let (issuing, root) = match &ca {
        Ca::Embedded(d) => {
            let s = d.settings()?;
            (s.issuing_key, s.root_key)
        }
        #[cfg(feature = "aws")]
        Ca::Aws(b) => {
            let s = b.settings().await?;
            (s.issuing_key, s.root_key)
        }
    };
    let root_pathlen = x509_parser::parse_x509_certificate(&a.keys().root_der)
        .ok()
        .and_then(|(_, x)| x.basic_constraints().ok().flatten()?.value.path_len_constraint);
    Ok(CurrentKeys { issuing, root, root_pathlen })
}

/// KMS keys made beforehand for a serverless rotation.
struct RotationKeyIds {
    issuing: Option<String>,
    root: Option<String>,
}

fn span(v: std::time::Duration, flag: &str) -> Result<time::Duration, CaError> {
    time::Duration::try_from(v).map_err(|e| CaError::BadRequest(format!("{flag}: {e}")))
}

async fn rotate(
    dir: &DirArg,
    opts: &lanyard_ca::rotation::RotateOptions,
    new_root: Option<&lanyard_ca::rotation::NewRoot>,
    keys: RotationKeyIds,
) -> Result<lanyard_ca::rotation::Rotation, CaError> {
    if dir.backend == Backend::Aws {
        #[cfg(feature = "aws")]
        {
            let b = aws_backend().await?;
            let keys = lanyard_ca::aws::RotationKeys {
                issuing_key_id: keys.issuing,
                root_key_id: keys.root,
            };
            return b.rotate(opts, new_root, &keys, Arc::new(SystemClock)).await;
        }
        #[cfg(not(feature = "aws"))]
        return Err(CaError::Config("this lanyard-ca was built without the aws feature".into()));
    }
    if keys.issuing.is_some() || keys.root.is_some() {
        return Err(CaError::BadRequest(
            "--issuing-key-id and --root-key-id name KMS keys of the serverless CA \
             (--backend aws); the embedded CA makes its key files itself"
                .into(),
        ));
    }
    let d = CaDir::new(dir.dir()?);
    match new_root {
        None => d.rotate_issuing(opts, Arc::new(SystemClock)).await,
        Some(r) => d.rotate_root(opts, r, Arc::new(SystemClock)).await,
    }
}

/// What the operator does after a rotation.
fn after_rotation(dir: &DirArg, what: &str) -> Result<String, CaError> {
    if dir.backend == Backend::Aws {
        return Ok(format!(
            "the bundle{what} was republished to the publication bucket (ca-bundle.pem): the \
             edge's trust store reads it from there (an in-place update: `terraform apply`); \
             warm Lambdas load the new CA within LANYARD_RELOAD_SECS (60 s by default)"
        ));
    }
    let d = CaDir::new(dir.dir()?);
    Ok(format!(
        "upload {}{what} to the edge's trust store, then restart `lanyard-ca serve`",
        d.bundle_path().display()
    ))
}

#[cfg(feature = "aws")]
async fn aws_backend() -> Result<lanyard_ca::aws::AwsBackend, CaError> {
    Ok(lanyard_ca::aws::AwsBackend::connect(lanyard_ca::aws::AwsLocation::from_env()?).await)
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a two-tier CA (root and issuing) and its CloudFront-ready bundle.
    Init {
        /// Organisation name shown in the CA certificates.
        #[arg(long, default_value = "Lanyard")]
        name: String,
        /// ecdsa-p256 | ecdsa-p384 | rsa-2048 | rsa-3072 | rsa-4096
        #[arg(long, default_value = "ecdsa-p384")]
        root_key: KeyAlgorithm,
        /// ecdsa-p256 | ecdsa-p384 | rsa-2048 | rsa-3072 | rsa-4096
        #[arg(long, default_value = "ecdsa-p256")]
        issuing_key: KeyAlgorithm,
        /// Base URL of the publication listener, written into certificates (AIA, CRL DP):
        /// where relying parties fetch CRLs, OCSP and CA certificates. Its port must reach
        /// `serve --http-listen`.
        #[arg(long, default_value = "http://127.0.0.1:8081")]
        public_url: String,
    },
    /// Serve EST, CRL, OCSP and the device API over HTTPS (and publication over HTTP).
    Serve {
        /// HTTPS listener: EST, OCSP, CRLs and the device API.
        #[arg(long, env = "LANYARD_CA_LISTEN", default_value = "127.0.0.1:8443")]
        listen: String,
        /// Extra DNS names or IPs for the HTTPS certificate (127.0.0.1 and ::1 are always in).
        #[arg(long = "tls-name", env = "LANYARD_CA_TLS_NAMES", value_delimiter = ',')]
        tls_names: Vec<String>,
        /// Plain-HTTP listener for CRL, OCSP and CA certificates; "off" disables it.
        /// Its port should be the one in `init --public-url` (a warning says when not).
        #[arg(long, env = "LANYARD_CA_HTTP_LISTEN", default_value = "127.0.0.1:8081")]
        http_listen: String,
        /// Admin listener: `/metrics` (OpenMetrics text for Prometheus). Plain HTTP without
        /// authentication, so loopback only (e.g. 127.0.0.1:9445); "off" (the default)
        /// turns it off.
        #[arg(long, env = "LANYARD_CA_ADMIN_LISTEN", default_value = "off")]
        admin_listen: String,
        /// The admin listener speaks HTTPS and admits only admin client certificates
        /// (`lanyard-ca admin issue`), so it may listen on any address.
        #[arg(long, env = "LANYARD_CA_ADMIN_MTLS")]
        admin_mtls: bool,
        /// Write the bound addresses as JSON to this file once listening (for scripts).
        #[arg(long)]
        addr_file: Option<PathBuf>,
        /// Connections open at once, per listener; over it new connections are closed.
        #[arg(long, env = "LANYARD_CA_MAX_CONNECTIONS", default_value_t = 4096)]
        max_connections: usize,
        /// Connections open at once from one source address, per listener.
        #[arg(long, env = "LANYARD_CA_MAX_CONNECTIONS_PER_SOURCE", default_value_t = 64)]
        max_connections_per_source: usize,
        /// Issuances (enrolments and renewals) a second, at most; beyond it requests wait
        /// in a bounded queue, then get 503 `busy` with a Retry-After spread over the
        /// backlog. Check-ins, CRLs and OCSP are never held. Default: unlimited.
        #[arg(long, env = "LANYARD_CA_MAX_ISSUANCE_RATE", value_name = "PER_SEC")]
        max_issuance_rate: Option<f64>,
        /// Seconds an issuance may wait for its slot under --max-issuance-rate (at most
        /// rate × this many wait); beyond it the request is refused at once.
        #[arg(long, env = "LANYARD_CA_MAX_ISSUANCE_QUEUE", value_name = "SECS", default_value_t = lanyard_ca::admission::DEFAULT_MAX_QUEUE_SECS)]
        max_issuance_queue: f64,
    },
    /// Enrolment tokens.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Revoke a certificate by serial (with its renewals for keyCompromise or --lineage), or
    /// every live certificate of an identity.
    Revoke {
        /// Serial in hex (colons allowed), as `certs list` prints it.
        #[arg(long, required_unless_present = "identity", conflicts_with = "identity")]
        serial: Option<String>,
        /// Revoke every live certificate of this identity.
        #[arg(long)]
        identity: Option<String>,
        /// unspecified | keyCompromise | cACompromise | affiliationChanged | superseded |
        /// cessationOfOperation | privilegeWithdrawn | aACompromise. keyCompromise also
        /// revokes every certificate renewed from the serial.
        #[arg(long, default_value = "unspecified")]
        reason: String,
        /// Also revoke every certificate renewed from the serial, whatever the reason.
        #[arg(long, conflicts_with = "identity")]
        lineage: bool,
    },
    /// Write the CRLs (DIR/crl/) and optionally both as PEM to a file.
    Crl {
        /// Also write the issuing and root CRLs, as PEM, to this file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Publish the CA's feed for AWS trust stores to S3: ca-bundle.pem (CloudFront, ALB and
    /// API Gateway trust stores), crl/issuing.crl and crl/root.crl (DER, the ALB trust
    /// store's revocation), crl/crl.pem, revoked.json (CloudFront KeyValueStore). Run it
    /// after revocations (or from a timer) so that the CRLs there stay fresh.
    Publish {
        /// Where: s3://BUCKET or s3://BUCKET/PREFIX (credentials and region from the
        /// standard AWS configuration chain).
        #[arg(long)]
        s3: String,
    },
    /// Check a bundle against CloudFront's trust store rules (default: DIR/ca-bundle.pem).
    Bundle {
        /// The bundle to check (default: DIR/ca-bundle.pem).
        #[arg(long)]
        check: Option<PathBuf>,
    },
    /// The CA's own certificates.
    #[command(name = "ca")]
    CaCerts {
        #[command(subcommand)]
        cmd: CaCmd,
    },
    /// Group renewal policies.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
    /// Issued certificates.
    Certs {
        #[command(subcommand)]
        cmd: CertsCmd,
    },
    /// Revoked serials, for CloudFront's KeyValueStore (colon-hex keys).
    Revoked {
        /// text: one colon-hex serial a line; json: serial, revoked_at, reason, not_after.
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
        /// The same as --format json, as on every other listing.
        #[arg(long, conflicts_with = "format")]
        json: bool,
    },
    /// Print shell completions.
    #[command(hide = true)]
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff).
    #[command(hide = true)]
    Manpage,
    /// Plan a fleet: renewals of N devices in virtual time (no CA is contacted).
    Fleet {
        #[command(subcommand)]
        cmd: FleetCmd,
    },
    /// The web console and `/metrics` alone (what `serve --admin-listen` adds), for either
    /// backend: with `--backend aws`, on an admin's machine against the fleet's DynamoDB
    /// table and S3 bucket.
    Console {
        /// Where to listen: loopback only, unless --mtls.
        #[arg(long, env = "LANYARD_CA_ADMIN_LISTEN", default_value = "127.0.0.1:9445")]
        listen: String,
        /// HTTPS, admitting only admin client certificates (`lanyard-ca admin issue`).
        #[arg(long, env = "LANYARD_CA_ADMIN_MTLS")]
        mtls: bool,
        /// Extra DNS names or IPs for the --mtls listener's certificate.
        #[arg(long = "tls-name", value_delimiter = ',')]
        tls_names: Vec<String>,
        /// Write the bound address as JSON (`{"admin": ADDR}`) to this file once listening.
        #[arg(long)]
        addr_file: Option<PathBuf>,
    },
    /// Console admins: sign-in tokens and client certificates for the web console.
    Admin {
        #[command(subcommand)]
        cmd: AdminCmd,
    },
    /// Zero-touch provisioning: batch claims shared by a batch of identical images, and
    /// resetting an identity that enrolled through one.
    Provisioning {
        #[command(subcommand)]
        cmd: ProvisioningCmd,
    },
    /// The fleet inventory: what devices reported at their last check-in.
    Devices {
        #[command(subcommand)]
        cmd: DevicesCmd,
    },
    /// The audit trail, newest first.
    Audit {
        /// How many entries, newest first.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// JSON instead of one line per entry.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create one-time tokens: one, printed alone on stdout; or `--count N` of them for a
    /// flashing line, with identities from `--identity-template`, as CSV or JSON
    /// (identity, token, expiry).
    Create {
        /// The device's identity: the certificate's CN and SAN (e.g. a DNS name).
        #[arg(
            long,
            required_unless_present = "identity_template",
            conflicts_with = "identity_template"
        )]
        identity: Option<String>,
        /// Identities for `--count` tokens: `{seq}` is the sequence number, `{seq:05}` the
        /// same zero-padded to 5 digits (e.g. 'sensor-{seq:05}.fleet.example.com').
        #[arg(long, requires = "count")]
        identity_template: Option<String>,
        /// How many tokens to create (with --identity-template).
        #[arg(long, requires = "identity_template")]
        count: Option<u64>,
        /// The first sequence number.
        #[arg(long, default_value_t = 1, requires = "identity_template")]
        start: u64,
        /// The group whose policy the device gets; it must have one (`policy set`), except
        /// "default".
        #[arg(long, default_value = "default")]
        group: String,
        /// How long the token may be used (e.g. 1h, 24h, 7d).
        #[arg(long, default_value = "24h", value_parser = duration::parse)]
        ttl: std::time::Duration,
        /// Output: the token alone (one token's default), csv (identity,token,expires_at;
        /// the default with --count) or json (an array of objects with those fields).
        #[arg(long, value_parser = ["token", "csv", "json"])]
        format: Option<String>,
    },
    /// List tokens: ID (the start of the token's SHA-256; the token itself is never
    /// stored), identity, group, expiry and state (unused, used, expired, revoked).
    List {
        /// Only tokens that can still enrol: neither used, revoked nor expired.
        #[arg(long)]
        unused: bool,
        #[arg(long)]
        identity: Option<String>,
        #[arg(long)]
        group: Option<String>,
        /// JSON (an array) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke unused tokens, so that they can no longer enrol (a used token's certificate
    /// is revoked with `lanyard-ca revoke`).
    Revoke {
        /// The token's ID as `token list` shows it (a prefix of at least 8 hex digits that
        /// names one token).
        #[arg(long, required_unless_present = "identity", conflicts_with = "identity")]
        id: Option<String>,
        /// Every unused token of this identity.
        #[arg(long)]
        identity: Option<String>,
    },
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Issue an admin client certificate for the console over mTLS (`serve --admin-mtls`,
    /// `console --mtls`): writes NAME.crt and NAME.key (0600) to --out, and admin-ca.crt,
    /// which the admin's client trusts the listener with. The admin CA (ADMIN_DIR/admin-ca.*)
    /// is made on first use; it is not the device CA. Every change made with the
    /// certificate is audited as `admin:NAME`.
    Issue {
        /// Who the certificate is for (letters, digits, . _ - @): its CN.
        #[arg(long)]
        name: String,
        /// How long it lasts (at most 397d).
        #[arg(long, default_value = "90d", value_parser = duration::parse)]
        ttl: std::time::Duration,
        /// Where to write NAME.crt, NAME.key and admin-ca.crt (made 0700 if missing).
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Print a sign-in token for the console (`serve --admin-listen`), for the form or as
    /// `Authorization: Bearer`. Tokens are signed with DIR/admin.key; every change made
    /// with one is audited as `admin:NAME`.
    Token {
        /// Who the token is for (letters, digits, . _ - @).
        #[arg(long)]
        name: String,
        /// How long it signs in for.
        #[arg(long, default_value = "12h", value_parser = duration::parse)]
        ttl: std::time::Duration,
        /// Make a new admin key first: every token made before stops working.
        #[arg(long)]
        rotate_key: bool,
    },
}

#[derive(Subcommand)]
enum ProvisioningCmd {
    /// Batch claims: one secret for a batch of identical images; each device enrols with it
    /// once, under an identity of its own from the claim's template.
    Claim {
        #[command(subcommand)]
        cmd: ClaimCmd,
    },
    /// Let an identity that enrolled through a claim or with its factory certificate do so
    /// again (a replaced board that keeps its serial number). Its certificates are left
    /// alone; a blocked factory certificate stays blocked.
    Reset {
        /// The device's identity.
        identity: String,
    },
    /// Trust a manufacturer's CA for a group's first enrolments: devices present their
    /// factory certificate (IDevID) over mTLS on simpleenroll, with no token.
    Trust {
        /// The group whose policy the devices get; it must have one, except "default".
        #[arg(long, default_value = "default")]
        group: String,
        /// The CA that signs the factory certificates (one PEM certificate).
        #[arg(long)]
        ca: PathBuf,
        /// What names a device: cn (the subject CN), serial (the certificate's serial number,
        /// with --identity-template) or san-uri (the last segment of the first URI SAN).
        #[arg(long)]
        identity_from: lanyard_ca::store::IdentityFrom,
        /// Make identities from the value: `{id}` is replaced by it, e.g.
        /// 'sensor-{id}.fleet.example.com'. Without it the value is the identity.
        #[arg(long)]
        identity_template: Option<String>,
    },
    /// Stop trusting a factory CA (devices it enrolled keep their certificates).
    Untrust {
        /// The factory CA's ID, as `provisioning list` shows it.
        #[arg(long)]
        id: String,
    },
    /// Block one factory certificate: it never enrols again.
    Block {
        /// The factory certificate (PEM).
        #[arg(long, required_unless_present = "fingerprint", conflicts_with = "fingerprint")]
        cert: Option<PathBuf>,
        /// Its SHA-256 fingerprint (hex, colons allowed).
        #[arg(long)]
        fingerprint: Option<String>,
    },
    /// The trusted factory CAs.
    List {
        /// JSON (an array) instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ClaimCmd {
    /// Create a batch claim and print it (alone on stdout). Put it in the image as the
    /// agent's `[enrol] claim_file`.
    Create {
        /// The group whose policy the devices get; it must have one, except "default".
        #[arg(long, default_value = "default")]
        group: String,
        /// The identities the claim enrols: `{id}` is the device's ID (its serial number, or
        /// a hash of /etc/machine-id), e.g. 'sensor-{id}.fleet.example.com'. The agent's
        /// `[enrol] identity_template` must be the same.
        #[arg(long)]
        identity_template: String,
        /// How many devices it enrols (each identity once).
        #[arg(long)]
        uses: u64,
        /// How long it may be used (e.g. 30d; at most 365d).
        #[arg(long, default_value = "30d", value_parser = duration::parse)]
        expires: std::time::Duration,
    },
    /// List claims: ID, group, template, uses, expiry and state.
    List {
        /// JSON (an array) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a claim: it enrols nothing more (devices it enrolled keep their certificates).
    Revoke {
        /// The claim's ID as `provisioning claim list` shows it.
        #[arg(long)]
        id: String,
    },
}

#[derive(Subcommand)]
enum DevicesCmd {
    /// One line per device: state, serial, last check-in, agent version, last error.
    /// Devices that enrolled and never checked in are listed as `enrolled`.
    List {
        /// JSON (an array of objects) instead of a table.
        #[arg(long)]
        json: bool,
        #[arg(long)]
        group: Option<String>,
        /// Only devices not seen for this long (e.g. 24h).
        #[arg(long, value_parser = duration::parse)]
        stale: Option<std::time::Duration>,
        /// Only devices whose renewals fail (they report failures, with the CA's code).
        #[arg(long)]
        failing: bool,
        /// Only devices whose certificate ends within this long (e.g. 48h).
        #[arg(long, value_parser = duration::parse)]
        expiring: Option<std::time::Duration>,
        /// Only devices running this agent version.
        #[arg(long)]
        version: Option<String>,
    },
    /// One device: its last report, its certificates (lineage) and its audit trail.
    Show {
        identity: String,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Forget devices not seen for a while (their certificates and audit trail stay).
    Forget {
        /// e.g. 90d.
        #[arg(long, value_parser = duration::parse)]
        gone_for: std::time::Duration,
    },
}

#[derive(Subcommand)]
enum FleetCmd {
    /// Simulate a group's renewals: every device runs the agent's own renewal decision
    /// against a model of the CA's admission control; prints renewals per hour, queues,
    /// rotation and outage recovery times, expired devices and the signing cost.
    Simulate(SimulateArgs),
}

#[derive(Args)]
struct SimulateArgs {
    /// The group whose policy to simulate (read from the CA in --dir).
    #[arg(long, default_value = "default", conflicts_with = "policy_file")]
    group: String,
    /// A policy file instead (JSON as `policy show` prints it, or TOML with the same keys).
    #[arg(long)]
    policy_file: Option<PathBuf>,
    /// Devices in the fleet (1 to 1,000,000).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    devices: u32,
    /// Days to simulate (1 to 400).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=400))]
    days: u32,
    /// The CA's (or KMS's) issuances per second. KMS's shared default for ECC keys is 300.
    #[arg(long, default_value_t = 300.0)]
    capacity: f64,
    /// How long an issuance may queue at the CA before it is refused as busy
    /// (`serve --max-issuance-queue`).
    #[arg(long, default_value = "2s", value_parser = duration::parse)]
    max_queue: std::time::Duration,
    /// How often agents check in with the CA (`[renewal] check_interval`).
    #[arg(long, default_value = "1h", value_parser = duration::parse)]
    checkin_interval: std::time::Duration,
    /// Push "rotate everything issued before now" at this time from the start (e.g. 2d).
    #[arg(long, value_parser = lanyard_ca::fleet::parse_offset)]
    rotate_at: Option<u64>,
    /// The CA is down from FROM to TO (times from the start, e.g. 3d..4d).
    #[arg(long, value_parser = lanyard_ca::fleet::parse_window)]
    outage: Option<(u64, u64)>,
    /// The whole fleet is flashed and enrolled within one hour from this time (e.g. 0);
    /// without it the fleet starts in its steady state.
    #[arg(long, value_parser = lanyard_ca::fleet::parse_offset)]
    enrol_all_at: Option<u64>,
    /// KMS list price per 10,000 asymmetric signatures (US dollars).
    #[arg(long, default_value_t = 0.15)]
    usd_per_10k_signatures: f64,
    /// Seed for the devices' random draws (the same seed gives the same run).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Also draw renewals per hour to this SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[derive(Subcommand)]
enum CaCmd {
    /// Print the root certificate's SHA-256, for `lanyard enrol --ca-fingerprint`.
    Fingerprint,
    /// The CA certificates: role (root, current, retired, revoked), expiry and days left,
    /// the live certificates each issuing CA signed, and when a retired one leaves the
    /// bundle.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Replace the issuing CA with a new key and certificate under the same root (on the
    /// embedded CA, the root key must be in the CA directory; on --backend aws, the new
    /// key is in KMS). New certificates come from the new CA at once; devices move at their
    /// next renewal (or sooner, with --rotate-devices). The old CA stays in the bundle and
    /// keeps answering (CRL, OCSP, renewals) until its last certificate expires. `serve`
    /// exits to be restarted on the new CA (systemd); warm Lambdas reload it within LANYARD_RELOAD_SECS.
    RotateIssuing {
        /// ecdsa-p256 | ecdsa-p384 | rsa-2048 | rsa-3072 | rsa-4096 (default: the current
        /// issuing CA's).
        #[arg(long)]
        key_algorithm: Option<KeyAlgorithm>,
        /// How long the new issuing CA is valid (cut to the root's expiry).
        #[arg(long, default_value = "3650d", value_parser = duration::parse)]
        validity: std::time::Duration,
        /// Ask every device to renew now (every group's policy gets
        /// rotate-issued-before = now), rather than at its next renewal.
        #[arg(long)]
        rotate_devices: bool,
        /// Emergency: revoke the old issuing CA in the root's CRL with this reason
        /// (keyCompromise, cACompromise, ...). Its certificates stop renewing and leave the
        /// bundle at once; their devices enrol again (see the README's playbook).
        #[arg(long, value_parser = |s: &str| s.parse::<lanyard_ca::revocation::Reason>().map_err(|e| e.to_string()))]
        revoke_old: Option<lanyard_ca::revocation::Reason>,
        /// Serverless CA: the new issuing CA's KMS key, made beforehand (Terraform's
        /// `issuing_generations`); without it the rotation creates one.
        #[arg(long)]
        issuing_key_id: Option<String>,
    },
    /// Replace the root: a new root key and certificate ("NAME Root CA N", DIR/roots/),
    /// cross-certificates both ways between it and the current root, and a new issuing CA
    /// under the new root. Devices and edges that trust either root verify during the
    /// overlap; agents learn the new root from the CA at their next renewal; the bundle
    /// carries both roots while the old one still has an issuing CA in use. The embedded
    /// CA needs the current root key in the CA directory; --backend aws signs the
    /// cross-certificates with the roots' KMS keys.
    RotateRoot {
        /// The new root's key: ecdsa-p256 | ecdsa-p384 | rsa-2048 | rsa-3072 | rsa-4096
        /// (default: the current root's).
        #[arg(long)]
        root_key_algorithm: Option<KeyAlgorithm>,
        /// How long the new root is valid.
        #[arg(long, default_value = "7300d", value_parser = duration::parse)]
        root_validity: std::time::Duration,
        /// The new issuing CA's key (default: the current issuing CA's).
        #[arg(long)]
        key_algorithm: Option<KeyAlgorithm>,
        /// How long the new issuing CA is valid (cut to the new root's expiry).
        #[arg(long, default_value = "3650d", value_parser = duration::parse)]
        validity: std::time::Duration,
        /// Serverless CA: the new root's KMS key, made beforehand (Terraform's
        /// `root_generations`); without it the rotation creates one.
        #[arg(long)]
        root_key_id: Option<String>,
        /// Serverless CA: the new issuing CA's KMS key, made beforehand.
        #[arg(long)]
        issuing_key_id: Option<String>,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// List the groups that have a policy ("default" always does), for `token create --group`.
    List {
        /// JSON: each group with its policy.
        #[arg(long)]
        json: bool,
    },
    /// Set a group's policy; unspecified fields keep their current (or default) value.
    Set {
        /// The group (created by its first `policy set`).
        #[arg(long, default_value = "default")]
        group: String,
        /// Certificate lifetime (5m to 397d).
        #[arg(long, value_parser = duration::parse)]
        lifetime: Option<std::time::Duration>,
        /// Fraction of the lifetime after which agents renew (0.1 to 0.95).
        #[arg(long)]
        renew_fraction: Option<f64>,
        /// Random spread, as a fraction of the lifetime (0 to 0.5).
        #[arg(long)]
        jitter_fraction: Option<f64>,
        /// Allowed key algorithms, comma-separated; the first is what agents generate.
        #[arg(long, value_delimiter = ',')]
        key_algorithms: Option<Vec<KeyAlgorithm>>,
        /// Shortest wait after a failed renewal.
        #[arg(long, value_parser = duration::parse)]
        retry_floor: Option<std::time::Duration>,
        /// Longest wait between renewal attempts.
        #[arg(long, value_parser = duration::parse)]
        retry_cap: Option<std::time::Duration>,
        /// How long after expiry a certificate may still renew itself (0s = never).
        #[arg(long, value_parser = duration::parse_or_zero)]
        expired_grace: Option<std::time::Duration>,
        /// How long a renewed certificate stays valid beside its successor before it is
        /// revoked as superseded (sooner once the successor is used; default 1h).
        #[arg(long, value_parser = duration::parse_or_zero)]
        superseded_grace: Option<std::time::Duration>,
        /// Renew every certificate issued before this instant (RFC 3339, or "now").
        #[arg(long)]
        rotate_issued_before: Option<String>,
    },
    /// Show a group's policy (JSON).
    Show {
        /// The group.
        #[arg(long, default_value = "default")]
        group: String,
    },
}

#[derive(Subcommand)]
enum CertsCmd {
    /// List issued certificates.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Only this identity's certificates.
        #[arg(long)]
        identity: Option<String>,
        /// Only revoked certificates.
        #[arg(long)]
        revoked: bool,
        /// List renewal conflicts instead: a certificate renewed a second time with another
        /// key (a copied device key), from the audit trail.
        #[arg(long)]
        conflicts: bool,
    },
}

/// A token's ID in lists: the start of its hash (the token itself is never stored).
fn token_id(t: &TokenRecord) -> &str {
    &t.hash[..t.hash.len().min(16)]
}

fn token_state(t: &TokenRecord, now: time::OffsetDateTime) -> &'static str {
    match (&t.used, t.revoked_at) {
        (Some(_), _) => "used",
        (None, Some(_)) => "revoked",
        (None, None) if now >= t.expires_at => "expired",
        (None, None) => "unused",
    }
}

/// A span from a flag, at most a century (so no instant computed from it overflows).
fn time_span(d: std::time::Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX).min(time::Duration::days(36_525))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, CaError> {
    serde_json::to_string_pretty(v).map_err(CaError::encoding("JSON"))
}

fn claim_state(c: &lanyard_ca::store::ClaimRecord, now: time::OffsetDateTime) -> &'static str {
    if c.revoked_at.is_some() {
        "revoked"
    } else if c.uses >= c.max_uses {
        "used up"
    } else if now >= c.expires_at {
        "expired"
    } else {
        "active"
    }
}

async fn provisioning(dir: &DirArg, cmd: ProvisioningCmd) -> Result<(), CaError> {
    let (ca, a) = open(dir).await?;
    // The serverless CA's mTLS trust store (mtls-truststore.pem) lists the factory CAs.
    let republish = |what: &str| {
        let what = what.to_owned();
        let (ca, a) = (&ca, &a);
        async move {
            match ca.publish(a).await {
                Ok(to) => eprintln!("{what}; published to {to}"),
                Err(e) => eprintln!("{what}; not published ({e}): run `lanyard-ca publish`"),
            }
        }
    };
    let actor = ca_dir::actor();
    match cmd {
        ProvisioningCmd::Claim {
            cmd: ClaimCmd::Create { group, identity_template, uses, expires },
        } => {
            let (secret, rec) =
                a.create_claim(&group, &identity_template, uses, expires, &actor).await?;
            outln!("{}", secret.expose());
            eprintln!(
                "claim {} (group {group}, identities {identity_template}) enrols up to {uses} devices until {}",
                rec.id,
                rfc3339(rec.expires_at)
            );
        }
        ProvisioningCmd::Claim { cmd: ClaimCmd::List { json } } => {
            let now = a.now();
            let claims = a.claims().await?;
            if json {
                let v: Vec<serde_json::Value> = claims
                    .iter()
                    .map(|c| {
                        let mut v = serde_json::to_value(c).unwrap_or_default();
                        v["state"] = claim_state(c, now).into();
                        v
                    })
                    .collect();
                outln!("{}", serde_json::Value::Array(v));
            } else {
                let group_w = claims.iter().map(|c| c.group.len()).max().unwrap_or(0).max(5);
                let t_w =
                    claims.iter().map(|c| c.identity_template.len()).max().unwrap_or(0).max(8);
                outln!(
                    "{:<16}  {:<group_w$}  {:<t_w$}  {:>15}  {:<20}  STATE",
                    "ID",
                    "GROUP",
                    "TEMPLATE",
                    "USES",
                    "EXPIRES"
                );
                for c in &claims {
                    outln!(
                        "{:<16}  {:<group_w$}  {:<t_w$}  {:>15}  {:<20}  {}",
                        c.id,
                        c.group,
                        c.identity_template,
                        format!("{}/{}", c.uses, c.max_uses),
                        rfc3339(c.expires_at),
                        claim_state(c, now)
                    );
                }
            }
        }
        ProvisioningCmd::Claim { cmd: ClaimCmd::Revoke { id } } => {
            let claim = a.claim_by_id(&id).await?;
            if a.revoke_claim(&claim, &actor).await? {
                eprintln!(
                    "claim {} revoked: it enrols no more devices ({} enrolled through it keep their certificates)",
                    claim.id, claim.uses
                );
            } else {
                eprintln!("claim {} was revoked already", claim.id);
            }
        }
        ProvisioningCmd::Trust { group, ca, identity_from, identity_template } => {
            let pem =
                std::fs::read(&ca).map_err(CaError::io(format!("reading {}", ca.display())))?;
            let rec =
                a.trust_factory_ca(&group, &pem, identity_from, identity_template, &actor).await?;
            outln!("{}", rec.id);
            republish(&format!(
                "factory CA {} ({}) trusted for group {group}: its devices enrol with their factory certificates",
                rec.id, rec.subject
            ))
            .await;
        }
        ProvisioningCmd::Untrust { id } => {
            a.untrust_factory_ca(&id, &actor).await?;
            republish(&format!("factory CA {id} is no longer trusted")).await;
        }
        ProvisioningCmd::Block { cert, fingerprint } => {
            let given = match (cert, fingerprint) {
                (Some(f), _) => std::fs::read_to_string(&f)
                    .map_err(CaError::io(format!("reading {}", f.display())))?,
                (None, Some(fp)) => fp,
                (None, None) => {
                    return Err(CaError::BadRequest("give --cert or --fingerprint".into()));
                }
            };
            let fp = lanyard_ca::authority::factory_cert_fingerprint(&given)?;
            a.block_factory_cert(&fp, &actor).await?;
            eprintln!("factory certificate {fp} is blocked: it enrols nothing from now on");
        }
        ProvisioningCmd::List { json } => {
            let cas = a.factory_cas().await?;
            if json {
                outln!("{}", serde_json::to_string(&cas).map_err(CaError::encoding("JSON"))?);
            } else {
                outln!("{:<16}  {:<12}  {:<8}  {:<32}  SUBJECT", "ID", "GROUP", "FROM", "TEMPLATE");
                for c in &cas {
                    outln!(
                        "{:<16}  {:<12}  {:<8}  {:<32}  {}",
                        c.id,
                        c.group,
                        c.identity_from.name(),
                        c.identity_template.as_deref().unwrap_or("-"),
                        c.subject
                    );
                }
            }
        }
        ProvisioningCmd::Reset { identity } => {
            if a.reset_provisioning(&identity, &actor).await? {
                eprintln!("{identity} may enrol through a claim again");
            } else {
                return Err(CaError::NotFound(format!(
                    "{identity:?} never enrolled through a claim or with a factory certificate; nothing to reset"
                )));
            }
        }
    }
    Ok(())
}

async fn devices(dir: &DirArg, cmd: DevicesCmd) -> Result<(), CaError> {
    use lanyard_ca::inventory::DeviceFilter;
    let (_, a) = open(dir).await?;
    let now = a.now();
    match cmd {
        DevicesCmd::List { json, group, stale, failing, expiring, version } => {
            let filter = DeviceFilter {
                group,
                stale: stale.map(time_span),
                failing,
                expiring: expiring.map(time_span),
                version,
            };
            let rows = a.devices(&filter).await?;
            if json {
                outln!("{}", to_json(&rows)?);
                return Ok(());
            }
            let id_w = rows.iter().map(|d| d.identity.len()).max().unwrap_or(0).max(8);
            let group_w = rows.iter().map(|d| d.group.len()).max().unwrap_or(0).max(5);
            outln!(
                "{:<id_w$}  {:<group_w$}  {:<10}  {:<12}  {:<9}  {:<20}  LAST ERROR",
                "IDENTITY",
                "GROUP",
                "STATE",
                "LAST SEEN",
                "VERSION",
                "NOT AFTER"
            );
            for d in rows {
                let seen = match d.last_seen {
                    Some(t) => format!("{} ago", lanyard_proto::duration::format_approx(now - t)),
                    None => "never".into(),
                };
                let err = match (&d.last_error_code, d.consecutive_failures) {
                    (Some(c), n) if n > 0 => format!("{c} ({n} failures)"),
                    _ => "-".into(),
                };
                outln!(
                    "{:<id_w$}  {:<group_w$}  {:<10}  {:<12}  {:<9}  {:<20}  {err}",
                    d.identity,
                    d.group,
                    d.state,
                    seen,
                    d.agent_version.as_deref().unwrap_or("-"),
                    rfc3339(d.not_after)
                );
            }
        }
        DevicesCmd::Show { identity, json } => {
            let d = a.device_detail(&identity).await?;
            if json {
                outln!("{}", to_json(&d)?);
                return Ok(());
            }
            let v = &d.device;
            outln!("identity:      {}", v.identity);
            outln!("group:         {}", v.group);
            outln!("state:         {} (certificate {}: {})", v.state, v.serial, v.cert_status);
            outln!("not after:     {}", rfc3339(v.not_after));
            outln!("enrolled:      {}", rfc3339(v.enrolled_at));
            match v.last_seen {
                Some(t) => outln!(
                    "last seen:     {} ({} ago, from {})",
                    rfc3339(t),
                    lanyard_proto::duration::format_approx(now - t),
                    d.remote.as_deref().unwrap_or("-")
                ),
                None => outln!("last seen:     never (no check-in since enrolment)"),
            }
            if let Some(r) = &d.report {
                outln!(
                    "agent:         {} on {} ({}), key in {}",
                    r.agent_version,
                    r.os,
                    r.arch,
                    r.store
                );
                outln!(
                    "policy:        {} from {}{}",
                    r.policy_version.as_deref().unwrap_or("-"),
                    r.policy_source,
                    match v.policy_current {
                        Some(false) => " (not the group's current policy)",
                        _ => "",
                    }
                );
                if let Some(t) = r.next_renewal {
                    outln!("next renewal:  {}", rfc3339(t));
                }
                if r.consecutive_failures > 0 {
                    outln!(
                        "failing:       {} failures, last {}: {}",
                        r.consecutive_failures,
                        r.last_error_code.as_deref().unwrap_or("-"),
                        r.last_error.as_deref().unwrap_or("-")
                    );
                }
                for route in &r.routes {
                    outln!(
                        "route {}: {} requests, {} errors, last status {}",
                        route.name,
                        route.requests,
                        route.errors,
                        route.last_status.map(|s| s.to_string()).unwrap_or_else(|| "-".into())
                    );
                }
            }
            outln!("certificates (oldest first):");
            for c in &d.lineage {
                let status = lanyard_ca::inventory::cert_status(c, now);
                outln!(
                    "  {}  issued {}  not after {}  {}{}",
                    c.serial,
                    rfc3339(c.issued_at),
                    rfc3339(c.not_after),
                    status,
                    c.parent_serial
                        .as_ref()
                        .map(|p| format!(", renewed from {p}"))
                        .unwrap_or_default()
                );
            }
            outln!("audit (newest first):");
            for e in &d.audit {
                outln!("  {} {} {} {}: {}", rfc3339(e.at), e.actor, e.action, e.subject, e.detail);
            }
        }
        DevicesCmd::Forget { gone_for } => {
            let n = a.forget_devices(time_span(gone_for), &ca_dir::actor()).await?;
            outln!("forgot {n} devices not seen for {}", duration::format(gone_for));
        }
    }
    Ok(())
}

async fn open(dir: &DirArg) -> Result<(Ca, Authority), CaError> {
    if dir.backend == Backend::Aws {
        #[cfg(feature = "aws")]
        {
            let b = aws_backend().await?;
            let a = b.open(Arc::new(SystemClock)).await?;
            return Ok((Ca::Aws(b), a));
        }
        #[cfg(not(feature = "aws"))]
        return Err(CaError::Config("this lanyard-ca was built without the aws feature".into()));
    }
    let d = CaDir::new(dir.dir()?);
    let a = d.open(Arc::new(SystemClock))?;
    Ok((Ca::Embedded(d), a))
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LANYARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lanyard-ca: {e}");
            ExitCode::from(match e {
                CaError::BadRequest(_) | CaError::NotFound(_) => 2,
                _ => 1,
            })
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, CaError> {
    let dir = cli.target;
    match cli.cmd {
        Cmd::Init { name, root_key, issuing_key, public_url } => {
            let opts = InitOptions { name, root_key, issuing_key, public_url };
            if dir.backend == Backend::Aws {
                #[cfg(feature = "aws")]
                {
                    let b = aws_backend().await?;
                    let s = b.init(&opts, &SystemClock).await?;
                    let a = b.open(Arc::new(SystemClock)).await?;
                    let published = Ca::Aws(b)
                        .publish(&a)
                        .await
                        .unwrap_or_else(|e| format!("not published: {e}"));
                    eprintln!(
                        "created CA with KMS keys {} (root) and {} (issuing); {published}",
                        s.root_key_id, s.issuing_key_id
                    );
                    eprintln!(
                        "root certificate SHA-256, for `lanyard enrol --ca-fingerprint`: {}",
                        ca_dir::fingerprint(&a.keys().root_der)
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                #[cfg(not(feature = "aws"))]
                return Err(CaError::Config(
                    "this lanyard-ca was built without the aws feature".into(),
                ));
            }
            let d = CaDir::new(dir.dir()?);
            d.init(&opts, &SystemClock).await?;
            eprintln!(
                "created CA in {}; CloudFront trust store bundle: {}",
                d.dir.display(),
                d.bundle_path().display()
            );
            let root = d.open(Arc::new(SystemClock))?.keys().root_der.clone();
            eprintln!(
                "root certificate SHA-256, for `lanyard enrol --ca-fingerprint`: {}",
                ca_dir::fingerprint(&root)
            );
            let default_http = std::net::SocketAddr::from(([127, 0, 0, 1], DEFAULT_HTTP_PORT));
            if let Some(note) =
                lanyard_ca::serve::publication_mismatch(&opts.public_url, Some(default_http))
            {
                eprintln!("note: with serve's default --http-listen {default_http}, {note}");
            }
        }
        Cmd::Serve {
            listen,
            tls_names,
            http_listen,
            admin_listen,
            admin_mtls,
            addr_file,
            max_connections,
            max_connections_per_source,
            max_issuance_rate,
            max_issuance_queue,
        } => {
            let admission = max_issuance_rate
                .map(|rate| {
                    lanyard_ca::admission::AdmissionLimits::new(rate, max_issuance_queue).map_err(
                        |e| {
                            CaError::BadRequest(format!(
                                "--max-issuance-rate/--max-issuance-queue: {e}"
                            ))
                        },
                    )
                })
                .transpose()?;
            let limits = lanyard_ca::http::server::Limits {
                max_connections: max_connections.max(1),
                max_per_source: Some(max_connections_per_source.max(1)),
                ..lanyard_ca::http::server::Limits::server()
            };
            let admin = (admin_listen != "off").then_some((admin_listen, admin_mtls));
            serve(dir, listen, tls_names, http_listen, admin, addr_file, limits, admission).await?;
        }
        Cmd::Token {
            cmd: TokenCmd::Create { identity, identity_template, count, start, group, ttl, format },
        } => {
            // A template means a batch, even of one: its output is CSV or JSON for scripts.
            let bulk = identity_template.is_some();
            let identities = match (identity, identity_template, count) {
                (Some(id), None, None) => vec![id],
                (None, Some(t), Some(n)) => lanyard_ca::tokens::expand_identities(&t, start, n)
                    .map_err(CaError::BadRequest)?,
                _ => {
                    return Err(CaError::BadRequest(
                        "give --identity for one token, or --identity-template with --count for many".into(),
                    ));
                }
            };
            let format = format.unwrap_or_else(|| if bulk { "csv".into() } else { "token".into() });
            if bulk && format == "token" {
                return Err(CaError::BadRequest(
                    "--format token prints one token; use csv or json with --count".into(),
                ));
            }
            // Every identity is checked before any token is made.
            for id in &identities {
                lanyard_ca::profile::validate_identity(id)?;
            }
            let (_, a) = open(&dir).await?;
            let actor = ca_dir::actor();
            let mut made = Vec::with_capacity(identities.len());
            let mut failed = None;
            if format == "csv" {
                outln!("identity,token,expires_at");
            }
            for id in &identities {
                match a.create_token(id, &group, ttl, &actor).await {
                    Ok((secret, rec)) => {
                        if format == "csv" {
                            // Streamed: what was made is printed even if a later one fails.
                            outln!("{id},{},{}", secret.expose(), rfc3339(rec.expires_at));
                        }
                        made.push((secret, rec));
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            match format.as_str() {
                "token" => {
                    if let Some((secret, _)) = made.first() {
                        outln!("{}", secret.expose());
                    }
                }
                "json" => {
                    let v: Vec<serde_json::Value> = made
                        .iter()
                        .map(|(s, r)| {
                            serde_json::json!({
                                "identity": r.identity,
                                "group": r.group,
                                "token": s.expose(),
                                "expires_at": rfc3339(r.expires_at),
                            })
                        })
                        .collect();
                    outln!("{}", serde_json::Value::Array(v));
                }
                _ => {}
            }
            if let Some(e) = failed {
                if !made.is_empty() {
                    eprintln!(
                        "{} of {} tokens were created (printed above) before this failure",
                        made.len(),
                        identities.len()
                    );
                }
                return Err(e);
            }
            match made.as_slice() {
                [(_, rec)] => eprintln!(
                    "token for {} (group {group}) valid until {}",
                    rec.identity,
                    rfc3339(rec.expires_at)
                ),
                all => eprintln!(
                    "{} tokens (group {group}) valid until {}",
                    all.len(),
                    all.last().map(|(_, r)| rfc3339(r.expires_at)).unwrap_or_default()
                ),
            }
        }
        Cmd::Token { cmd: TokenCmd::List { unused, identity, group, json } } => {
            let (_, a) = open(&dir).await?;
            let now = a.now();
            let tokens = a.tokens(TokenFilter { identity, group, unused_only: unused }).await?;
            if json {
                let v: Vec<serde_json::Value> = tokens
                    .iter()
                    .map(|t| {
                        serde_json::json!({
                            "id": token_id(t),
                            "identity": t.identity,
                            "group": t.group,
                            "state": token_state(t, now),
                            "created_at": rfc3339(t.created_at),
                            "expires_at": rfc3339(t.expires_at),
                            "used_at": t.used.as_ref().map(|u| rfc3339(u.at)),
                            "serial": t.used.as_ref().map(|u| u.serial.clone()),
                            "revoked_at": t.revoked_at.map(rfc3339),
                        })
                    })
                    .collect();
                outln!("{}", serde_json::Value::Array(v));
            } else {
                let id_w = tokens.iter().map(|t| t.identity.len()).max().unwrap_or(0).max(8);
                let group_w = tokens.iter().map(|t| t.group.len()).max().unwrap_or(0).max(5);
                outln!(
                    "{:<16}  {:<id_w$}  {:<group_w$}  {:<20}  STATE",
                    "ID",
                    "IDENTITY",
                    "GROUP",
                    "EXPIRES"
                );
                for t in &tokens {
                    let state = match &t.used {
                        Some(u) => format!("used ({})", u.serial),
                        None => token_state(t, now).to_owned(),
                    };
                    outln!(
                        "{:<16}  {:<id_w$}  {:<group_w$}  {:<20}  {state}",
                        token_id(t),
                        t.identity,
                        t.group,
                        rfc3339(t.expires_at)
                    );
                }
            }
        }
        Cmd::Devices { cmd } => devices(&dir, cmd).await?,
        Cmd::Provisioning { cmd } => provisioning(&dir, cmd).await?,
        Cmd::Admin { cmd: AdminCmd::Token { name, ttl, rotate_key } } => {
            use lanyard_ca::admin::{AdminKey, KEY_FILE};
            if ttl.is_zero() || ttl > std::time::Duration::from_secs(30 * 86_400) {
                return Err(CaError::BadRequest("--ttl must be between 1s and 30d".into()));
            }
            let admin_dir = dir.admin_dir()?;
            std::fs::create_dir_all(&admin_dir)
                .map_err(CaError::io(format!("creating {}", admin_dir.display())))?;
            let path = admin_dir.join(KEY_FILE);
            let key = if rotate_key {
                AdminKey::create(&path)?
            } else {
                AdminKey::load_or_create(&path)?
            };
            let expires = lanyard_ca::clock::Clock::now(&SystemClock) + time_span(ttl);
            let token = key.issue(&name, expires)?;
            outln!("{token}");
            eprintln!(
                "admin token for {name}, valid until {}: sign in on the console (serve --admin-listen or lanyard-ca console, e.g. http://127.0.0.1:9445/login), or send it as Authorization: Bearer",
                rfc3339(expires)
            );
        }
        Cmd::Admin { cmd: AdminCmd::Issue { name, ttl, out } } => {
            use lanyard_ca::admin_pki::{AdminCa, CA_CERT};
            let now = lanyard_ca::clock::Clock::now(&SystemClock);
            lanyard_ca::admin::validate_name(&name)?;
            let ca = AdminCa::load_or_create(&dir.admin_dir()?, now)?;
            let (crt, key) = ca.issue_admin(&name, now, time_span(ttl))?;
            // Recorded before it is handed out: no admin certificate the trail does not name.
            let (_, a) = open(&dir).await?;
            a.store()
                .audit(lanyard_ca::store::AuditEvent {
                    at: now,
                    actor: ca_dir::actor(),
                    action: "admin.issue".into(),
                    subject: format!("admin:{name}"),
                    detail: format!(
                        "admin client certificate until {}",
                        rfc3339(now + time_span(ttl))
                    ),
                    remote: None,
                })
                .await?;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&out)
                .map_err(CaError::io(format!("creating {}", out.display())))?;
            let (crt_path, key_path) =
                (out.join(format!("{name}.crt")), out.join(format!("{name}.key")));
            lanyard_ca::fsutil::write_atomic(&key_path, key.as_bytes(), 0o600)?;
            lanyard_ca::fsutil::write_atomic(&crt_path, crt.as_bytes(), 0o644)?;
            let ca_pem = lanyard_ca::bundle::certificate_pem(ca.der());
            lanyard_ca::fsutil::write_atomic(&out.join(CA_CERT), ca_pem.as_bytes(), 0o644)?;
            outln!("{}", crt_path.display());
            eprintln!(
                "admin certificate for {name}, valid until {}: {} and {} (trust the listener with {}). With curl: --cacert {} --cert {} --key {}. For a browser: openssl pkcs12 -export -in {} -inkey {} -out {name}.p12",
                rfc3339(now + time_span(ttl)),
                crt_path.display(),
                key_path.display(),
                out.join(CA_CERT).display(),
                out.join(CA_CERT).display(),
                crt_path.display(),
                key_path.display(),
                crt_path.display(),
                key_path.display(),
            );
        }
        Cmd::Console { listen, mtls, tls_names, addr_file } => {
            console(&dir, listen, mtls, tls_names, addr_file).await?;
        }
        Cmd::Token { cmd: TokenCmd::Revoke { id, identity } } => {
            let (_, a) = open(&dir).await?;
            let actor = ca_dir::actor();
            let targets = match (id, identity) {
                (Some(id), _) => {
                    let id = id.trim().to_ascii_lowercase();
                    if id.len() < 8 || id.len() > 64 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
                        return Err(CaError::BadRequest(format!(
                            "--id {id:?}: give the ID `token list` shows (8 to 64 hex digits)"
                        )));
                    }
                    let all = a.tokens(TokenFilter::default()).await?;
                    let found: Vec<_> =
                        all.into_iter().filter(|t| t.hash.starts_with(&id)).collect();
                    match found.len() {
                        0 => return Err(CaError::NotFound(format!("no token with ID {id}"))),
                        1 => found,
                        n => {
                            return Err(CaError::BadRequest(format!(
                                "--id {id} names {n} tokens; give more digits"
                            )));
                        }
                    }
                }
                (None, Some(identity)) => {
                    let found = a
                        .tokens(TokenFilter {
                            identity: Some(identity.clone()),
                            unused_only: true,
                            ..Default::default()
                        })
                        .await?;
                    if found.is_empty() {
                        return Err(CaError::NotFound(format!(
                            "{identity:?} has no unused token (`lanyard-ca token list --identity {identity}`)"
                        )));
                    }
                    found
                }
                (None, None) => {
                    return Err(CaError::BadRequest("give --id or --identity".into()));
                }
            };
            let mut refused = 0;
            for t in &targets {
                match a.revoke_token(t, &actor).await? {
                    TokenRevokeOutcome::Revoked => {
                        eprintln!("revoked token {} of {}", token_id(t), t.identity)
                    }
                    TokenRevokeOutcome::AlreadyRevoked(at) => {
                        eprintln!(
                            "token {} of {} was already revoked at {}",
                            token_id(t),
                            t.identity,
                            rfc3339(at)
                        )
                    }
                    TokenRevokeOutcome::Used(u) => {
                        refused += 1;
                        eprintln!(
                            "token {} of {} was used at {} for certificate {}: revoke the certificate instead (`lanyard-ca revoke --serial {}`)",
                            token_id(t),
                            t.identity,
                            rfc3339(u.at),
                            u.serial,
                            u.serial
                        );
                    }
                    TokenRevokeOutcome::NotFound => {
                        refused += 1;
                        eprintln!("token {} of {} is gone", token_id(t), t.identity);
                    }
                }
            }
            if refused > 0 {
                return Err(CaError::refused(
                    lanyard_proto::ProblemCode::TokenUsed,
                    format!("{refused} of {} tokens could not be revoked", targets.len()),
                ));
            }
        }
        Cmd::Revoke { serial, identity, reason, lineage } => {
            let reason: Reason = reason.parse()?;
            // Messages show the serial as every other output does (plain lowercase hex),
            // whichever form was typed (colons, capitals, 0x).
            let serial = serial.map(|serial| {
                lanyard_proto::serial::parse_hex(&serial)
                    .map(|der| lanyard_proto::serial::to_hex(&der))
                    .unwrap_or(serial)
            });
            let (d, a) = open(&dir).await?;
            let actor = ca_dir::actor();
            let mut revoked = Vec::new();
            if let Some(identity) = identity {
                revoked = a.revoke_identity(&identity, reason, &actor, &Default::default()).await?;
                if revoked.is_empty() {
                    eprintln!("{identity} has no live certificate; nothing revoked");
                }
            } else if let Some(serial) = serial {
                let (out, descendants) =
                    a.revoke(&serial, reason, lineage, &actor, &Default::default()).await?;
                match out {
                    RevokeOutcome::Revoked => revoked.push(serial.clone()),
                    RevokeOutcome::AlreadyRevoked(r) => {
                        eprintln!(
                            "{serial} was already revoked ({}) at {}",
                            r.reason.name(),
                            rfc3339(r.at)
                        );
                    }
                    RevokeOutcome::NotFound => {
                        return Err(CaError::NotFound(format!(
                            "no certificate with serial {serial} was issued by this CA"
                        )));
                    }
                }
                for (s, o) in descendants {
                    match o {
                        RevokeOutcome::Revoked => revoked.push(s),
                        RevokeOutcome::AlreadyRevoked(r) => eprintln!(
                            "{s} (renewed from {serial}) was already revoked ({})",
                            r.reason.name()
                        ),
                        RevokeOutcome::NotFound => {}
                    }
                }
            }
            if !revoked.is_empty() {
                let crl = d.publish(&a).await?;
                for s in &revoked {
                    eprintln!("revoked {s} ({})", reason.name());
                }
                eprintln!("CRL published to {crl}");
            }
        }
        Cmd::Crl { out } => {
            let (d, a) = open(&dir).await?;
            let published = d.publish(&a).await?;
            if let Some(out) = out {
                let mut pem = String::new();
                let generations = a.published_generations().await?;
                for g in &generations {
                    pem.push_str(&pem::encode(&pem::Pem::new("X509 CRL", a.issuer_crl(*g).await?)));
                }
                for g in a.published_root_generations().await? {
                    pem.push_str(&pem::encode(&pem::Pem::new("X509 CRL", a.root_crl_of(g).await?)));
                }
                lanyard_ca::fsutil::write_atomic(&out, pem.as_bytes(), 0o644)?;
                let what = if generations.len() > 1 { "issuing CAs'" } else { "issuing" };
                eprintln!("CRLs ({what}, root) written to {}", out.display());
            } else {
                eprintln!("CRLs published to {published}");
            }
        }
        Cmd::Publish { s3 } => {
            #[cfg(feature = "aws")]
            {
                lanyard_ca::aws::parse_s3_url(&s3)?;
                let (ca, a) = open(&dir).await?;
                let local = ca.publish(&a).await?;
                let name = match &ca {
                    Ca::Embedded(d) => d.settings()?.name,
                    Ca::Aws(b) => b.settings().await?.name,
                };
                let feed = lanyard_ca::aws::S3Feed::connect(&s3, &name).await?;
                let published = feed.publish(&a).await?;
                for o in &published.objects {
                    outln!("{o}");
                }
                eprintln!(
                    "published to {s3} ({} revoked certificates in revoked.json); CRLs also in {local}",
                    published.revoked
                );
            }
            #[cfg(not(feature = "aws"))]
            {
                let _ = s3;
                return Err(CaError::Config(
                    "publish --s3 needs the AWS SDK: this lanyard-ca was built without the aws feature (cargo build --features aws)".into(),
                ));
            }
        }
        Cmd::Bundle { check } => {
            let path = match check {
                Some(p) => p,
                None => CaDir::new(dir.dir()?).bundle_path(),
            };
            let data =
                std::fs::read(&path).map_err(CaError::io(format!("reading {}", path.display())))?;
            match bundle::check(&data) {
                Ok(s) => {
                    outln!(
                        "{}: OK for CloudFront ({} certificates, {} bytes)",
                        path.display(),
                        s.certificates,
                        s.bytes
                    );
                    for subj in s.subjects {
                        outln!("  {subj}");
                    }
                }
                Err(violations) => {
                    eprintln!("{}: CloudFront would refuse this bundle:", path.display());
                    for v in violations {
                        eprintln!("  {v}");
                    }
                    return Ok(ExitCode::from(1));
                }
            }
        }
        Cmd::CaCerts { cmd: CaCmd::Status { json } } => {
            let (_, a) = open(&dir).await?;
            ca_status(&a, json).await?;
        }
        Cmd::CaCerts {
            cmd:
                CaCmd::RotateIssuing {
                    key_algorithm,
                    validity,
                    rotate_devices,
                    revoke_old,
                    issuing_key_id,
                },
        } => {
            let current = current_keys(&dir).await?;
            let opts = lanyard_ca::rotation::RotateOptions {
                key: key_algorithm.unwrap_or(current.issuing),
                validity: span(validity, "--validity")?,
                revoke_old,
            };
            let keys = RotationKeyIds { issuing: issuing_key_id, root: None };
            let r = rotate(&dir, &opts, None, keys).await?;
            outln!(
                "issuing CA {} -> {}: {} (sha256 {}), valid until {}{}",
                r.old_generation,
                r.new_generation,
                r.subject,
                r.sha256,
                rfc3339(r.not_after),
                if r.shortened_to_root { " (cut to the root's expiry)" } else { "" }
            );
            if let Some(rev) = r.old_revoked {
                outln!(
                    "issuing CA {} revoked ({}): it left the bundle, and its {} live \
                     certificate(s) were revoked (cACompromise); their devices must enrol again",
                    r.old_generation,
                    rev.reason.name(),
                    r.leaves_revoked
                );
            }
            if rotate_devices {
                let (_, a) = open(&dir).await?;
                let mut groups: Vec<String> =
                    a.store().policies().await?.into_iter().map(|(g, _)| g).collect();
                if !groups.iter().any(|g| g == lanyard_ca::authority::DEFAULT_GROUP) {
                    groups.push(lanyard_ca::authority::DEFAULT_GROUP.to_owned());
                }
                for g in &groups {
                    let mut p = a.policy(g).await?;
                    p.rotate_issued_before = Some(a.now());
                    a.set_policy(g, p, &ca_dir::actor()).await?;
                }
                outln!("asked the devices of {} group(s) to renew now", groups.len());
            }
            outln!("{}", after_rotation(&dir, "")?);
        }
        Cmd::CaCerts {
            cmd:
                CaCmd::RotateRoot {
                    root_key_algorithm,
                    root_validity,
                    key_algorithm,
                    validity,
                    root_key_id,
                    issuing_key_id,
                },
        } => {
            let current = current_keys(&dir).await?;
            let opts = lanyard_ca::rotation::RotateOptions {
                key: key_algorithm.unwrap_or(current.issuing),
                validity: span(validity, "--validity")?,
                revoke_old: None,
            };
            let root = lanyard_ca::rotation::NewRoot {
                key: root_key_algorithm.unwrap_or(current.root),
                validity: span(root_validity, "--root-validity")?,
            };
            let keys = RotationKeyIds { issuing: issuing_key_id, root: root_key_id };
            let r = rotate(&dir, &opts, Some(&root), keys).await?;
            if let Some((g, subject, sha256)) = &r.new_root {
                outln!("root {} -> {g}: {subject} (sha256 {sha256})", g - 1);
                let (forward, backward) = if dir.backend == Backend::Aws {
                    (format!("root-{g}-by-{}.crt", g - 1), format!("root-{}-by-{g}.crt", g - 1))
                } else {
                    let d = CaDir::new(dir.dir()?);
                    (
                        d.cross_path(*g, g - 1).display().to_string(),
                        d.cross_path(g - 1, *g).display().to_string(),
                    )
                };
                outln!("cross-certificates: {forward} and {backward}");
            }
            outln!(
                "issuing CA {} -> {}: {} (sha256 {}), valid until {}",
                r.old_generation,
                r.new_generation,
                r.subject,
                r.sha256,
                rfc3339(r.not_after)
            );
            if current.root_pathlen == Some(1) {
                outln!(
                    "note: the old root allows one CA below it, so OpenSSL-based peers (curl, nginx) \
                     that trust only the old root cannot follow the cross-certificate: give them \
                     the bundle (both roots); Lanyard agents are not affected"
                );
            }
            outln!("{}", after_rotation(&dir, " (both roots)")?);
        }
        Cmd::CaCerts { cmd: CaCmd::Fingerprint } => {
            let (_, a) = open(&dir).await?;
            outln!("{}", ca_dir::fingerprint(&a.keys().root_der));
        }
        Cmd::Policy { cmd } => policy(&dir, cmd).await?,
        Cmd::Fleet { cmd: FleetCmd::Simulate(args) } => fleet_simulate(&dir, args).await?,
        Cmd::Certs { cmd: CertsCmd::List { json, conflicts: true, .. } } => {
            let (_, a) = open(&dir).await?;
            let rows = a.conflicts().await?;
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&rows).map_err(CaError::encoding("JSON"))?
                );
            } else {
                for e in rows {
                    outln!(
                        "{} {} from {}: {}",
                        rfc3339(e.at),
                        e.subject,
                        e.remote.as_deref().unwrap_or("-"),
                        e.detail
                    );
                }
            }
        }
        Cmd::Certs { cmd: CertsCmd::List { json, identity, revoked, .. } } => {
            let (_, a) = open(&dir).await?;
            let now = a.now();
            let certs = a
                .certs(CertFilter { identity, revoked_only: revoked, ..Default::default() })
                .await?;
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&certs).map_err(CaError::encoding("JSON"))?
                );
            } else {
                // Columns as wide as their longest value, so long identities stay aligned.
                let id_w = certs.iter().map(|c| c.identity.len()).max().unwrap_or(0).max(8);
                let group_w = certs.iter().map(|c| c.group.len()).max().unwrap_or(0).max(5);
                let serial_w = certs.iter().map(|c| c.serial.len()).max().unwrap_or(0).max(6);
                outln!(
                    "{:<serial_w$}  {:<id_w$}  {:<group_w$}  {:<20}  STATUS",
                    "SERIAL",
                    "IDENTITY",
                    "GROUP",
                    "NOT AFTER"
                );
                for c in certs {
                    let status = match (&c.revocation, now > c.not_after, &c.superseded_by) {
                        (Some(r), _, _) => format!("revoked ({})", r.reason.name()),
                        (None, true, _) => "expired".into(),
                        (None, false, Some(child)) => format!("superseded by {child}"),
                        (None, false, None) => "valid".into(),
                    };
                    outln!(
                        "{:<serial_w$}  {:<id_w$}  {:<group_w$}  {:<20}  {status}",
                        c.serial,
                        c.identity,
                        c.group,
                        rfc3339(c.not_after)
                    );
                }
            }
        }
        Cmd::Revoked { format, json } => {
            let (_, a) = open(&dir).await?;
            let rows = a.revoked_export().await?;
            if json || format == "json" {
                outln!("{}", serde_json::to_string(&rows).map_err(CaError::encoding("JSON"))?);
            } else {
                for r in rows {
                    outln!("{}", r.serial);
                }
            }
        }
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "lanyard-ca",
                &mut std::io::stdout(),
            );
        }
        Cmd::Manpage => {
            use clap::CommandFactory;
            clap_mangen::Man::new(Cli::command())
                .render(&mut std::io::stdout())
                .map_err(CaError::io("writing the man page"))?;
        }
        Cmd::Audit { limit, json } => {
            let (_, a) = open(&dir).await?;
            let log = a.store().audit_log(limit).await?;
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&log).map_err(CaError::encoding("JSON"))?
                );
            } else {
                for e in log {
                    outln!(
                        "{} {:<12} {:<14} {} {} {}",
                        rfc3339(e.at),
                        e.actor,
                        e.action,
                        e.subject,
                        e.detail,
                        e.remote.unwrap_or_default()
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn fleet_simulate(dir: &DirArg, a: SimulateArgs) -> Result<(), CaError> {
    let policy = match &a.policy_file {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| CaError::Config(format!("{}: {e}", p.display())))?;
            let parsed = lanyard_ca::fleet::parse_policy(&text);
            parsed.map_err(|e| CaError::Config(format!("{}: {e}", p.display())))?
        }
        None => open(dir).await?.1.policy(&a.group).await?,
    };
    policy.validate().map_err(|e| CaError::BadRequest(e.to_string()))?;
    if !(a.capacity.is_finite() && a.capacity > 0.0) {
        return Err(CaError::Config(format!("--capacity {}: must be above 0", a.capacity)));
    }
    let scenario = lanyard_ca::fleet::Scenario {
        policy,
        devices: a.devices,
        days: a.days,
        capacity: a.capacity,
        max_queue_secs: a.max_queue.as_secs_f64(),
        checkin_interval_secs: a.checkin_interval.as_secs(),
        rotate_at: a.rotate_at,
        outage: a.outage,
        enrol_all_at: a.enrol_all_at,
        usd_per_10k_signatures: a.usd_per_10k_signatures,
        seed: a.seed,
    };
    let report = lanyard_ca::fleet::simulate(&scenario);
    if let Some(p) = &a.plot {
        lanyard_ca::fleet::plot_svg(&report, p).map_err(CaError::Config)?;
    }
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&report).map_err(CaError::encoding("JSON"))?);
    } else {
        outln!("{}", lanyard_ca::fleet::render_text(&report).trim_end());
    }
    Ok(())
}

async fn policy(dir: &DirArg, cmd: PolicyCmd) -> Result<(), CaError> {
    match cmd {
        PolicyCmd::List { json } => {
            let (_, a) = open(dir).await?;
            let mut groups = a.store().policies().await?;
            if !groups.iter().any(|(g, _)| g == lanyard_ca::authority::DEFAULT_GROUP) {
                groups.insert(
                    0,
                    (lanyard_ca::authority::DEFAULT_GROUP.to_owned(), GroupPolicy::default()),
                );
            }
            if json {
                let docs: Vec<_> = groups
                    .into_iter()
                    .map(|(group, policy)| lanyard_proto::policy::PolicyDocument { group, policy })
                    .collect();
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&docs).map_err(CaError::encoding("JSON"))?
                );
            } else {
                for (g, _) in groups {
                    outln!("{g}");
                }
            }
        }
        PolicyCmd::Show { group } => {
            let (_, a) = open(dir).await?;
            let doc = a.policy_document(&group).await?;
            outln!("{}", serde_json::to_string_pretty(&doc).map_err(CaError::encoding("JSON"))?);
        }
        PolicyCmd::Set {
            group,
            lifetime,
            renew_fraction,
            jitter_fraction,
            key_algorithms,
            retry_floor,
            retry_cap,
            expired_grace,
            superseded_grace,
            rotate_issued_before,
        } => {
            let (_, a) = open(dir).await?;
            let mut p: GroupPolicy = a.policy(&group).await?;
            if let Some(v) = lifetime {
                p.lifetime_secs = v.as_secs();
            }
            if let Some(v) = renew_fraction {
                p.renew_fraction = v;
            }
            if let Some(v) = jitter_fraction {
                p.jitter_fraction = v;
            }
            if let Some(v) = key_algorithms {
                p.key_algorithms = v;
            }
            if let Some(v) = retry_floor {
                p.retry_floor_secs = v.as_secs();
            }
            if let Some(v) = retry_cap {
                p.retry_cap_secs = v.as_secs();
            }
            if let Some(v) = expired_grace {
                p.expired_grace_secs = v.as_secs();
            }
            if let Some(v) = superseded_grace {
                p.superseded_grace_secs = v.as_secs();
            }
            if let Some(t) = rotate_issued_before {
                p.rotate_issued_before = Some(if t == "now" {
                    a.now()
                } else {
                    time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339)
                        .map_err(|e| {
                            CaError::BadRequest(format!(
                                "--rotate-issued-before {t:?}: {e}; use RFC 3339 or \"now\""
                            ))
                        })?
                });
            }
            a.set_policy(&group, p, &ca_dir::actor()).await?;
            outln!(
                "{}",
                serde_json::to_string_pretty(&a.policy_document(&group).await?)
                    .map_err(CaError::encoding("JSON"))?
            );
        }
    }
    Ok(())
}

async fn ca_status(a: &Authority, json: bool) -> Result<(), CaError> {
    let rows = a.ca_status().await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&rows).map_err(CaError::encoding("JSON"))?);
        return Ok(());
    }
    outln!(
        "{:<8} {:<4} {:<26} {:>6} {:>8}  {:<9} SUBJECT",
        "ROLE",
        "GEN",
        "EXPIRES",
        "DAYS",
        "LIVE",
        "BUNDLE"
    );
    for r in rows {
        let bundle = match (r.in_bundle, r.leaves_bundle) {
            (true, Some(t)) => format!("until {}", t.date()),
            (true, None) => "yes".to_owned(),
            (false, _) => "no".to_owned(),
        };
        outln!(
            "{:<8} {:<4} {:<26} {:>6} {:>8}  {:<9} {}",
            r.role,
            r.generation.map_or_else(|| "-".to_owned(), |g| g.to_string()),
            rfc3339(r.not_after),
            r.days_left,
            r.live_leaves.map_or_else(|| "-".to_owned(), |n| n.to_string()),
            bundle,
            r.subject
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)] // serve's flags, passed through once
async fn serve(
    dir: DirArg,
    listen: String,
    tls_names: Vec<String>,
    http_listen: String,
    admin: Option<(String, bool)>,
    addr_file: Option<PathBuf>,
    limits: lanyard_ca::http::server::Limits,
    admission: Option<lanyard_ca::admission::AdmissionLimits>,
) -> Result<(), CaError> {
    let (ca, auth) = open(&dir).await?;
    if let Some(a) = admission {
        tracing::info!(
            rate = a.rate,
            queue_secs = a.max_queue.as_secs_f64(),
            "issuance paced (--max-issuance-rate)"
        );
    }
    let auth = auth.with_admission(admission);
    #[allow(irrefutable_let_patterns)] // refutable with the aws feature
    let Ca::Embedded(d) = ca else {
        return Err(CaError::Config(
            "serve runs the embedded CA; the aws backend is served by lanyard-ca-lambda".into(),
        ));
    };
    let http_listen = (http_listen != "off").then_some(http_listen);
    let admin_mtls = admin.as_ref().is_some_and(|a| a.1);
    let admin_listen = admin.map(|a| a.0);
    let running = lanyard_ca::serve::start(
        d,
        auth,
        lanyard_ca::serve::ServeOptions {
            listen,
            tls_names,
            http_listen,
            admin_listen,
            admin_mtls,
            admin_dir: dir.admin_dir.clone(),
            limits,
        },
    )
    .await?;
    if let Some(f) = addr_file {
        let mut addrs = serde_json::json!({ "https": running.https.to_string() });
        if let Some(h) = running.http {
            addrs["http"] = h.to_string().into();
        }
        if let Some(a) = running.admin {
            addrs["admin"] = a.to_string().into();
        }
        lanyard_ca::fsutil::write_atomic(&f, addrs.to_string().as_bytes(), 0o644)?;
    }
    let rotated = tokio::select! {
        _ = wait_for_signal() => false,
        _ = running.rotated() => true,
    };
    tracing::info!("shutting down");
    running.stop().await;
    if rotated {
        // A non-zero exit: systemd's Restart=on-failure starts it again with the new CA.
        return Err(CaError::Config(
            "the issuing CA was rotated: exiting so that `serve` starts again with it".into(),
        ));
    }
    Ok(())
}

/// `lanyard-ca console`: the admin listener alone, against either backend.
async fn console(
    dir: &DirArg,
    listen: String,
    mtls: bool,
    tls_names: Vec<String>,
    addr_file: Option<PathBuf>,
) -> Result<(), CaError> {
    use lanyard_ca::console::{ConsoleOptions, Publication};
    let admin_dir = dir.admin_dir()?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&admin_dir)
        .map_err(CaError::io(format!("creating {}", admin_dir.display())))?;
    let (ca, auth) = open(dir).await?;
    let (bundle, publication) = match ca {
        Ca::Embedded(d) => {
            (Some(d.bundle_path()), Some(Publication::Files(d.path("crl").join("crl.pem"))))
        }
        #[cfg(feature = "aws")]
        Ca::Aws(b) => (None, Some(Publication::S3(Arc::new(b)))),
    };
    let opts = ConsoleOptions {
        key_path: admin_dir.join(lanyard_ca::admin::KEY_FILE),
        bundle,
        publication,
        mtls,
    };
    let at = lanyard_ca::serve::AdminListener {
        listen,
        admin_dir,
        tls_names,
        limits: lanyard_ca::http::server::Limits::server(),
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let bound =
        lanyard_ca::serve::start_admin(Arc::new(auth), opts, &at, &shutdown, &mut tasks).await?;
    if let Some(f) = addr_file {
        let addrs = serde_json::json!({ "admin": bound.to_string() });
        lanyard_ca::fsutil::write_atomic(&f, addrs.to_string().as_bytes(), 0o644)?;
    }
    wait_for_signal().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
