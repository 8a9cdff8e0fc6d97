//! The agent's configuration: parse (TOML), default, validate, then use the validated
//! [`Config`]. Every error names the file, the key and what is allowed.
//!
//! Where the file is: `--config`, else `LANYARD_CONFIG`, else `/etc/lanyard/agent.toml`
//! for root, `$XDG_CONFIG_HOME/lanyard/agent.toml` for a user. A missing default file is
//! not an error (every key has a default); a missing named file is.

use lanyard_keystore::StoreKind;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("config {file}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub message: String,
}

fn err(file: &Option<PathBuf>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        file: file.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(defaults)".into()),
        message: message.into(),
    }
}

// ---- raw file shape ------------------------------------------------------------------

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    ca: RawCa,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    status: RawStatus,
    #[serde(default)]
    renewal: RawRenewal,
    #[serde(default)]
    hooks: RawHooks,
    #[serde(default)]
    proxy: RawProxy,
    #[serde(default)]
    enrol: RawEnrol,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct RawEnrol {
    method: Option<String>,
    token_file: Option<PathBuf>,
    identity: Option<String>,
    claim_file: Option<PathBuf>,
    identity_template: Option<String>,
    device_id_file: Option<PathBuf>,
    factory_cert: Option<PathBuf>,
    factory_key: Option<PathBuf>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct RawCa {
    url: Option<String>,
    ca_bundle: Option<PathBuf>,
    ca_fingerprint: Option<String>,
    timeout: Option<String>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct RawStore {
    backend: Option<String>,
    path: Option<PathBuf>,
    profile: Option<String>,
    /// `tpm`: the TCTI (default `device:/dev/tpmrm0`).
    tcti: Option<String>,
    /// `pkcs11`: the module, the token (by label or slot) and the PIN's file.
    module: Option<PathBuf>,
    token_label: Option<String>,
    slot: Option<u64>,
    pin_file: Option<PathBuf>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct RawStatus {
    listen: Option<String>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct RawRenewal {
    policy_file: Option<PathBuf>,
    check_interval: Option<String>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct RawHooks {
    post_renew: Option<Vec<String>>,
    signal_pidfile: Option<PathBuf>,
    signal: Option<String>,
}

#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    #[serde(default)]
    routes: Vec<RawRoute>,
}

#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    listen: String,
    upstream: Option<String>,
    upstream_ca: Option<PathBuf>,
    #[serde(default)]
    forward_allow: Vec<String>,
    #[serde(default)]
    allow_non_loopback: bool,
    socket_mode: Option<String>,
    #[serde(default)]
    x_forwarded_for: bool,
    request_timeout: Option<String>,
    idle_timeout: Option<String>,
    /// More `Host` values this listener answers (`name` or `name:port`), beside its own
    /// loopback address and `localhost`.
    #[serde(default)]
    hosts: Vec<String>,
    max_connections: Option<usize>,
}

// ---- validated config ----------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Config {
    pub source: Option<PathBuf>,
    pub ca: CaConfig,
    pub store: StoreConfig,
    pub status: Option<ListenAddr>,
    pub renewal: RenewalConfig,
    pub hooks: HooksConfig,
    pub routes: Vec<Route>,
    pub enrol: EnrolConfig,
}

/// `[enrol]`: how `lanyard run` enrols a device that holds no usable credential.
#[derive(Debug, Clone, Default)]
pub struct EnrolConfig {
    /// A file holding an enrolment token (method "token"): enrolled from at start, removed
    /// (or erased) after success. `None`: the daemon waits for `lanyard enrol`.
    pub token_file: Option<PathBuf>,
    /// The identity, for a token that does not carry it (a token from elsewhere).
    pub identity: Option<String>,
    /// Method "claim": a batch claim shared by the image, and how the device makes its own
    /// identity for it.
    pub claim: Option<ClaimConfig>,
    /// Method "factory-cert": the certificate and key the manufacturer installed (IDevID).
    pub factory: Option<crate::agent::FactoryCert>,
}

/// `[enrol] method = "claim"`: `claim_file`, `identity_template`, `device_id_file`.
#[derive(Debug, Clone)]
pub struct ClaimConfig {
    /// The file holding the batch claim (`lanyard-ca provisioning claim create`); removed
    /// (or erased) after the device enrolled.
    pub file: PathBuf,
    /// The claim's identity template, e.g. `sensor-{id}.fleet.example.com`.
    pub identity_template: String,
    /// A file holding the device's serial number; `None`: a hash of `/etc/machine-id`.
    pub device_id_file: Option<PathBuf>,
}

impl EnrolConfig {
    /// The file `lanyard run` enrols from: the claim file for method "claim", else the
    /// token file.
    pub fn file(&self) -> Option<&PathBuf> {
        self.claim
            .as_ref()
            .map(|c| &c.file)
            .or(self.factory.as_ref().map(|f| &f.cert))
            .or(self.token_file.as_ref())
    }

    /// The identity to enrol as, when it is not the token's: `[enrol] identity`, or for a
    /// claim the template with this device's ID.
    pub fn identity(&self) -> Result<Option<String>, String> {
        match &self.claim {
            Some(c) => {
                let id = crate::device_id::read(c.device_id_file.as_deref())?;
                lanyard_proto::claim::identity(&c.identity_template, &id).map(Some)
            }
            None => Ok(self.identity.clone()),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct CaConfig {
    pub url: Option<String>,
    pub ca_bundle: Option<PathBuf>,
    /// SHA-256 of the CA's root certificate (hex, colons allowed), lowercase without colons.
    pub ca_fingerprint: Option<String>,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub backend: StoreKind,
    pub path: PathBuf,
    pub profile: String,
    /// The TPM or token of a hardware store (`tpm`, `pkcs11`).
    pub hardware: Option<HardwareConfig>,
}

/// Where a hardware store's keys are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HardwareConfig {
    /// `backend = "tpm"`: a TCTI string (`device:/dev/tpmrm0`, `swtpm:host=..,port=..`).
    Tpm { tcti: String },
    /// `backend = "pkcs11"`.
    Pkcs11 { module: PathBuf, token_label: Option<String>, slot: Option<u64>, pin_file: PathBuf },
}

/// The TCTI a `tpm` store uses when none is given: the kernel's resource manager.
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";

#[derive(Debug, Clone)]
pub struct RenewalConfig {
    pub policy_file: Option<PathBuf>,
    /// How often the daemon checks in with the CA (policy, revocation status).
    pub check_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct HooksConfig {
    /// A command as an argument list: no shell, no word-splitting surprises.
    pub post_renew: Vec<String>,
    pub signal_pidfile: Option<PathBuf>,
    pub signal: nix::sys::signal::Signal,
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            post_renew: Vec::new(),
            signal_pidfile: None,
            signal: nix::sys::signal::Signal::SIGHUP,
        }
    }
}

/// Where a listener binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl ListenAddr {
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            if !p.starts_with('/') {
                return Err(format!("{s:?}: a UNIX socket path must be absolute (unix:/run/...)"));
            }
            return Ok(ListenAddr::Unix(PathBuf::from(p)));
        }
        s.parse::<SocketAddr>().map(ListenAddr::Tcp).map_err(|_| {
            format!("{s:?} is not an address: use IP:PORT (e.g. 127.0.0.1:8080) or unix:/path")
        })
    }

    pub fn is_loopback(&self) -> bool {
        match self {
            ListenAddr::Tcp(a) => a.ip().is_loopback(),
            ListenAddr::Unix(_) => true,
        }
    }
}

/// One proxy listener.
#[derive(Debug, Clone)]
pub struct Route {
    pub listen: ListenAddr,
    /// The upstream this listener forwards to (`https://host[:port]`), if it is a route;
    /// `None` for a forward-proxy-only listener.
    pub upstream: Option<Upstream>,
    pub upstream_ca: Option<PathBuf>,
    /// Hosts a forward-proxy request may reach through this listener: `host[:port]`
    /// (443 when no port is given), `*.example.com[:port]` allowed. A route's own upstream
    /// host and port are always allowed.
    pub forward_allow: Vec<String>,
    /// More `Host` values the listener answers besides its own address and `localhost`:
    /// requests naming any other host are refused (DNS rebinding).
    pub hosts: Vec<String>,
    /// Client connections open at once.
    pub max_connections: usize,
    pub socket_mode: u32,
    pub x_forwarded_for: bool,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
}

impl Upstream {
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("https://").ok_or_else(|| {
            format!("upstream {url:?} must be an https:// URL (the proxy adds TLS with the client certificate)")
        })?;
        let authority = rest.split('/').next().unwrap_or("");
        if rest.len() > authority.len() && rest[authority.len()..] != *"/" {
            return Err(format!("upstream {url:?} must have no path: give https://host[:port]"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h.trim_matches(['[', ']']).to_owned(),
                p.parse::<u16>().map_err(|_| format!("upstream {url:?}: bad port {p:?}"))?,
            ),
            _ => (authority.to_owned(), 443),
        };
        if host.is_empty() {
            return Err(format!("upstream {url:?} has no host"));
        }
        Ok(Upstream { host: host.to_ascii_lowercase(), port })
    }

    pub fn authority(&self) -> String {
        if self.port == 443 { self.host.clone() } else { format!("{}:{}", self.host, self.port) }
    }
}

fn dur(
    file: &Option<PathBuf>,
    key: &str,
    v: &Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => lanyard_proto::duration::parse(s).map_err(|e| err(file, format!("{key}: {e}"))),
    }
}

/// Whether the agent runs as a system service (root, or started by systemd).
pub fn is_system() -> bool {
    nix::unistd::Uid::effective().is_root() || std::env::var_os("INVOCATION_ID").is_some()
}

/// Default state directory: systemd's `$STATE_DIRECTORY`, `/var/lib/lanyard` for root,
/// `$XDG_STATE_HOME/lanyard` (or `~/.local/state/lanyard`) for a user.
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("STATE_DIRECTORY") {
        return PathBuf::from(d);
    }
    if nix::unistd::Uid::effective().is_root() {
        return PathBuf::from("/var/lib/lanyard");
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(d).join("lanyard");
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".local/state/lanyard"))
        .unwrap_or_else(|| PathBuf::from(".lanyard"))
}

/// Default store: the OS keystore for a desktop user (a session bus exists), the file
/// store for system services (they have no Secret Service, and the kernel keyring does
/// not survive a reboot).
/// The `[store]` keys of a hardware backend: required ones present, none of another
/// backend's, and the feature built in.
fn hardware_config(
    f: &Option<PathBuf>,
    backend: StoreKind,
    raw: &RawStore,
) -> std::result::Result<Option<HardwareConfig>, ConfigError> {
    let given = |name: &str, set: bool| set.then(|| name.to_owned());
    let pkcs11_keys: Vec<String> = [
        given("module", raw.module.is_some()),
        given("token_label", raw.token_label.is_some()),
        given("slot", raw.slot.is_some()),
        given("pin_file", raw.pin_file.is_some()),
    ]
    .into_iter()
    .flatten()
    .collect();
    let misplaced = |keys: Vec<String>| {
        err(
            f,
            format!(
                "[store] {} apply to another backend than {backend:?}; remove them or set the backend",
                keys.join(", ")
            ),
        )
    };
    match backend {
        StoreKind::Tpm => {
            if !pkcs11_keys.is_empty() {
                return Err(misplaced(pkcs11_keys));
            }
            if !cfg!(feature = "tpm") {
                return Err(err(
                    f,
                    "[store] backend = \"tpm\": this lanyard was built without TPM support; install the lanyard-tpm package (amd64), or build with --features tpm",
                ));
            }
            let tcti = raw.tcti.clone().unwrap_or_else(|| DEFAULT_TCTI.to_owned());
            Ok(Some(HardwareConfig::Tpm { tcti }))
        }
        StoreKind::Pkcs11 => {
            if raw.tcti.is_some() {
                return Err(misplaced(vec!["tcti".into()]));
            }
            if !cfg!(feature = "pkcs11") {
                return Err(err(
                    f,
                    "[store] backend = \"pkcs11\": this lanyard was built without PKCS#11 support (the packages have it); build with --features pkcs11",
                ));
            }
            let module = raw.module.clone().ok_or_else(|| {
                err(f, "[store] backend = \"pkcs11\" needs module = \"/path/to/the/pkcs11/library.so\"")
            })?;
            if raw.token_label.is_none() && raw.slot.is_none() {
                return Err(err(
                    f,
                    "[store] backend = \"pkcs11\" needs token_label (or slot) to say which token",
                ));
            }
            let pin_file = raw.pin_file.clone().ok_or_else(|| {
                err(f, "[store] backend = \"pkcs11\" needs pin_file: a 0600 file (or a systemd credential) holding the token's user PIN")
            })?;
            Ok(Some(HardwareConfig::Pkcs11 {
                module,
                token_label: raw.token_label.clone(),
                slot: raw.slot,
                pin_file,
            }))
        }
        _ => {
            let mut keys = pkcs11_keys;
            keys.extend(given("tcti", raw.tcti.is_some()));
            if keys.is_empty() { Ok(None) } else { Err(misplaced(keys)) }
        }
    }
}

pub fn default_store() -> StoreKind {
    if cfg!(any(target_os = "macos", target_os = "windows")) {
        return StoreKind::Keyring;
    }
    if !is_system() && std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some() {
        StoreKind::Keyring
    } else {
        StoreKind::File
    }
}

/// The system-wide config file.
pub const SYSTEM_CONFIG: &str = "/etc/lanyard/agent.toml";

/// The config file to read: explicit, env, the user's own (for a non-root user who has
/// one), else the system-wide file. The `lanyard` service user has no file of its own, so
/// `sudo -u lanyard lanyard status` reads the system config, as the service does.
pub fn locate(explicit: Option<&Path>) -> (Option<PathBuf>, bool) {
    if let Some(p) = explicit {
        return (Some(p.to_owned()), true);
    }
    if let Some(p) = std::env::var_os("LANYARD_CONFIG") {
        return (Some(PathBuf::from(p)), true);
    }
    if !nix::unistd::Uid::effective().is_root() {
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
        if let Some(user) = base.map(|b| b.join("lanyard/agent.toml"))
            && (user.exists() || !Path::new(SYSTEM_CONFIG).exists())
        {
            return (Some(user), false);
        }
    }
    (Some(PathBuf::from(SYSTEM_CONFIG)), false)
}

impl Config {
    /// Loads the config: `explicit` (from `--config`) or the default location.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, required) = locate(explicit);
        let text = match &path {
            Some(p) => match std::fs::read_to_string(p) {
                Ok(t) => Some(t),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => None,
                Err(e) => return Err(err(&path, format!("cannot read: {e}"))),
            },
            None => None,
        };
        match text {
            Some(t) => Config::parse(&t, path),
            None => Config::parse("", None),
        }
    }

    /// Parses and validates config text; `source` names the file in errors.
    pub fn parse(text: &str, source: Option<PathBuf>) -> Result<Config, ConfigError> {
        let raw: Raw =
            toml::from_str(text).map_err(|e| err(&source, e.to_string().trim_end().to_owned()))?;
        let f = &source;

        let fingerprint = match &raw.ca.ca_fingerprint {
            None => None,
            Some(s) => Some(crate::trust::normalize_fingerprint(s).ok_or_else(|| {
                err(
                    f,
                    format!(
                        "[ca] ca_fingerprint {s:?}: give the SHA-256 of the root certificate, 64 hex digits (colons allowed)"
                    ),
                )
            })?),
        };
        if let Some(u) = &raw.ca.url
            && !u.starts_with("https://")
        {
            return Err(err(f, format!("[ca] url {u:?}: the CA must be reached over https://")));
        }
        let ca = CaConfig {
            url: raw.ca.url.map(|u| u.trim_end_matches('/').to_owned()),
            ca_bundle: raw.ca.ca_bundle,
            ca_fingerprint: fingerprint,
            timeout: dur(f, "[ca] timeout", &raw.ca.timeout, Duration::from_secs(30))?,
        };

        let backend = match raw.store.backend.as_deref() {
            None => default_store(),
            Some(b) => {
                b.parse::<StoreKind>().map_err(|e| err(f, format!("[store] backend: {e}")))?
            }
        };
        let profile = raw.store.profile.clone().unwrap_or_else(|| "default".into());
        if profile.is_empty()
            || !profile.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(err(
                f,
                format!("[store] profile {profile:?}: use letters, digits, '-', '_' or '.'"),
            ));
        }
        let hardware = hardware_config(f, backend, &raw.store)?;
        let store = StoreConfig {
            backend,
            path: raw.store.path.unwrap_or_else(default_state_dir),
            profile,
            hardware,
        };

        let status = match &raw.status.listen {
            None => None,
            Some(s) if s == "off" => None,
            Some(s) => {
                let a = ListenAddr::parse(s).map_err(|e| err(f, format!("[status] listen {e}")))?;
                if !a.is_loopback() {
                    return Err(err(f, "[status] listen must be a loopback address or unix:/path"));
                }
                Some(a)
            }
        };

        let renewal = RenewalConfig {
            policy_file: raw.renewal.policy_file,
            check_interval: dur(
                f,
                "[renewal] check_interval",
                &raw.renewal.check_interval,
                Duration::from_secs(3600),
            )?,
        };
        if renewal.check_interval < Duration::from_secs(10) {
            return Err(err(f, "[renewal] check_interval must be at least 10s"));
        }

        let signal = match raw.hooks.signal.as_deref() {
            None => nix::sys::signal::Signal::SIGHUP,
            Some(s) => {
                let name = if s.starts_with("SIG") { s.to_owned() } else { format!("SIG{s}") };
                name.parse().map_err(|_| {
                    err(
                        f,
                        format!("[hooks] signal {s:?}: use a signal name such as HUP, USR1, TERM"),
                    )
                })?
            }
        };
        let post_renew = raw.hooks.post_renew.unwrap_or_default();
        if post_renew.first().is_some_and(|c| c.is_empty()) {
            return Err(err(
                f,
                "[hooks] post_renew: the first element is the program and cannot be empty",
            ));
        }
        let hooks = HooksConfig { post_renew, signal_pidfile: raw.hooks.signal_pidfile, signal };

        let mut routes = Vec::new();
        for (i, r) in raw.proxy.routes.into_iter().enumerate() {
            routes.push(route(f, i, r)?);
        }
        let mut seen = std::collections::HashSet::new();
        for r in &routes {
            if !seen.insert(r.listen.to_string()) {
                return Err(err(f, format!("[[proxy.routes]] listen {} appears twice", r.listen)));
            }
        }
        let enrol = enrol_config(f, raw.enrol)?;
        Ok(Config { source, ca, store, status, renewal, hooks, routes, enrol })
    }
}

fn enrol_config(f: &Option<PathBuf>, r: RawEnrol) -> Result<EnrolConfig, ConfigError> {
    let absolute = |key: &str, p: &Option<PathBuf>| match p {
        Some(p) if !p.is_absolute() => {
            Err(err(f, format!("[enrol] {key} {}: give an absolute path", p.display())))
        }
        _ => Ok(()),
    };
    absolute("token_file", &r.token_file)?;
    absolute("claim_file", &r.claim_file)?;
    absolute("device_id_file", &r.device_id_file)?;
    absolute("factory_cert", &r.factory_cert)?;
    absolute("factory_key", &r.factory_key)?;
    let mut factory = None;
    if let Some(id) = &r.identity
        && id.trim().is_empty()
    {
        return Err(err(f, "[enrol] identity is empty: remove it, or give the device's name"));
    }
    let claim = match r.method.as_deref() {
        None | Some("token") => {
            for (key, set, method) in [
                ("claim_file", r.claim_file.is_some(), "claim"),
                ("identity_template", r.identity_template.is_some(), "claim"),
                ("device_id_file", r.device_id_file.is_some(), "claim"),
                ("factory_cert", r.factory_cert.is_some(), "factory-cert"),
                ("factory_key", r.factory_key.is_some(), "factory-cert"),
            ] {
                if set {
                    return Err(err(
                        f,
                        format!(
                            "[enrol] {key} is for method = \"{method}\"; set it, or remove {key}"
                        ),
                    ));
                }
            }
            None
        }
        Some("factory-cert") => {
            let (Some(cert), Some(key)) = (r.factory_cert, r.factory_key) else {
                return Err(err(
                    f,
                    "[enrol] method = \"factory-cert\" needs factory_cert and factory_key (the PEM files the manufacturer installed)",
                ));
            };
            if r.token_file.is_some()
                || r.identity.is_some()
                || r.claim_file.is_some()
                || r.identity_template.is_some()
            {
                return Err(err(
                    f,
                    "[enrol] method = \"factory-cert\": the CA names the device from its factory certificate; remove token_file, identity, claim_file and identity_template",
                ));
            }
            factory = Some(crate::agent::FactoryCert { cert, key });
            None
        }
        Some("claim") => {
            let (Some(file), Some(template)) = (r.claim_file, r.identity_template) else {
                return Err(err(
                    f,
                    "[enrol] method = \"claim\" needs claim_file (the batch claim) and identity_template (the claim's, e.g. \"sensor-{id}.fleet.example.com\")",
                ));
            };
            if r.token_file.is_some() || r.identity.is_some() {
                return Err(err(
                    f,
                    "[enrol] method = \"claim\" makes the identity from identity_template: remove token_file and identity",
                ));
            }
            lanyard_proto::claim::check_template(&template)
                .map_err(|e| err(f, format!("[enrol] {e}")))?;
            Some(ClaimConfig {
                file,
                identity_template: template,
                device_id_file: r.device_id_file,
            })
        }
        Some(m) => {
            return Err(err(
                f,
                format!("[enrol] method {m:?}: use \"token\", \"claim\" or \"factory-cert\""),
            ));
        }
    };
    Ok(EnrolConfig { token_file: r.token_file, identity: r.identity, claim, factory })
}

fn route(f: &Option<PathBuf>, i: usize, r: RawRoute) -> Result<Route, ConfigError> {
    let key = |k: &str| format!("[[proxy.routes]] #{} {k}", i + 1);
    let listen =
        ListenAddr::parse(&r.listen).map_err(|e| err(f, format!("{} {e}", key("listen"))))?;
    if !listen.is_loopback() && !r.allow_non_loopback {
        return Err(err(
            f,
            format!(
                "{} {}: not a loopback address; whoever reaches this listener borrows the device's identity. Set allow_non_loopback = true to accept that",
                key("listen"),
                listen
            ),
        ));
    }
    let upstream = match &r.upstream {
        None => None,
        Some(u) => {
            Some(Upstream::parse(u).map_err(|e| err(f, format!("{} {e}", key("upstream"))))?)
        }
    };
    if upstream.is_none() && r.forward_allow.is_empty() {
        return Err(err(
            f,
            format!("{}: give an upstream, a forward_allow list, or both", key("listen")),
        ));
    }
    for h in &r.forward_allow {
        let bare = h.strip_prefix("*.").unwrap_or(h);
        let (name, port_ok) = match bare.rsplit_once(':') {
            Some((n, p)) => (n, p.parse::<u16>().is_ok_and(|p| p > 0)),
            None => (bare, true),
        };
        if name.is_empty() || name.contains(['/', ':', '*', ' ']) || !port_ok {
            return Err(err(
                f,
                format!(
                    "{} {h:?}: give host names with an optional port (host[:port], *.domain[:port])",
                    key("forward_allow")
                ),
            ));
        }
    }
    for h in &r.hosts {
        if h.is_empty() || h.contains(['/', '*', ' ', '@']) {
            return Err(err(f, format!("{} {h:?}: give name or name:port", key("hosts"))));
        }
    }
    let socket_mode = match &r.socket_mode {
        None => 0o600,
        Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                err(f, format!("{} {m:?}: an octal mode such as \"0660\"", key("socket_mode")))
            })?,
    };
    Ok(Route {
        listen,
        upstream,
        upstream_ca: r.upstream_ca,
        forward_allow: r.forward_allow.into_iter().map(|h| h.to_ascii_lowercase()).collect(),
        socket_mode,
        x_forwarded_for: r.x_forwarded_for,
        request_timeout: dur(
            f,
            &key("request_timeout"),
            &r.request_timeout,
            Duration::from_secs(300),
        )?,
        idle_timeout: dur(f, &key("idle_timeout"), &r.idle_timeout, Duration::from_secs(90))?,
        hosts: r.hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect(),
        max_connections: r.max_connections.unwrap_or(1024).max(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Some(PathBuf::from("/etc/lanyard/agent.toml")))
    }

    #[test]
    fn smallest_config_from_the_design() {
        let c = parse(
            r#"
[ca]
url = "https://ca.example.com"
[store]
backend = "file"
path = "/var/lib/lanyard"
[status]
listen = "127.0.0.1:9464"
[[proxy.routes]]
listen = "127.0.0.1:8080"
upstream = "https://web.apps.example.com"
"#,
        )
        .unwrap();
        assert_eq!(c.ca.url.as_deref(), Some("https://ca.example.com"));
        assert_eq!(c.store.backend, StoreKind::File);
        assert_eq!(
            c.routes[0].upstream,
            Some(Upstream { host: "web.apps.example.com".into(), port: 443 })
        );
        assert_eq!(c.status, Some(ListenAddr::Tcp("127.0.0.1:9464".parse().unwrap())));
    }

    #[test]
    fn errors_name_file_key_and_allowed_values() {
        let e = parse("[ca]\nurls = \"x\"\n").unwrap_err().to_string();
        assert!(
            e.contains("/etc/lanyard/agent.toml") && e.contains("urls") && e.contains("url"),
            "{e}"
        );
        let e = parse("[store]\nbackend = \"tpm2\"\n").unwrap_err().to_string();
        assert!(e.contains("[store] backend") && e.contains("kernel-keyring"), "{e}");
        // Hardware stores: what is missing, and keys of another backend.
        let e = parse("[store]\nbackend = \"file\"\ntcti = \"device:/dev/tpmrm0\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("[store] tcti apply to another backend"), "{e}");
        if cfg!(feature = "pkcs11") {
            let e =
                parse("[store]\nbackend = \"pkcs11\"\ntoken_label = \"t\"\npin_file = \"/p\"\n")
                    .unwrap_err()
                    .to_string();
            assert!(e.contains("needs module"), "{e}");
            let e = parse("[store]\nbackend = \"pkcs11\"\nmodule = \"/m.so\"\npin_file = \"/p\"\n")
                .unwrap_err()
                .to_string();
            assert!(e.contains("needs token_label"), "{e}");
        } else {
            let e = parse("[store]\nbackend = \"pkcs11\"\n").unwrap_err().to_string();
            assert!(e.contains("built without PKCS#11 support"), "{e}");
        }
        if cfg!(feature = "tpm") {
            let c = parse("[store]\nbackend = \"tpm\"\n").expect("tpm with the default TCTI");
            assert_eq!(
                c.store.hardware,
                Some(HardwareConfig::Tpm { tcti: DEFAULT_TCTI.to_owned() })
            );
        } else {
            let e = parse("[store]\nbackend = \"tpm\"\n").unwrap_err().to_string();
            assert!(e.contains("built without TPM support"), "{e}");
        }
        let e = parse("[ca]\nurl = \"http://x\"\n").unwrap_err().to_string();
        assert!(e.contains("https://"), "{e}");
        let e = parse("[renewal]\ncheck_interval = \"soon\"\n").unwrap_err().to_string();
        assert!(e.contains("check_interval") && e.contains("24h"), "{e}");
        let e = parse("[hooks]\nsignal = \"NOPE\"\n").unwrap_err().to_string();
        assert!(e.contains("HUP"), "{e}");
    }

    #[test]
    fn enrol_section_takes_a_token_file_and_names_what_it_refuses() {
        let c = parse("[enrol]\ntoken_file = \"/etc/lanyard/enrol.token\"\n").unwrap();
        assert_eq!(c.enrol.token_file, Some(PathBuf::from("/etc/lanyard/enrol.token")));
        assert!(parse("").unwrap().enrol.token_file.is_none());
        let e = parse("[enrol]\ntoken_file = \"enrol.token\"\n").unwrap_err().to_string();
        assert!(e.contains("[enrol] token_file") && e.contains("absolute"), "{e}");
        let e = parse("[enrol]\nmethod = \"factory-cert\"\n").unwrap_err().to_string();
        assert!(e.contains("factory_cert") && e.contains("factory_key"), "{e}");
        let c = parse("[enrol]\nmethod = \"factory-cert\"\nfactory_cert = \"/etc/lanyard/idevid.crt\"\nfactory_key = \"/etc/lanyard/idevid.key\"\n").unwrap();
        assert_eq!(c.enrol.file(), Some(&PathBuf::from("/etc/lanyard/idevid.crt")));
        let e =
            parse("[enrol]\nfactory_cert = \"/etc/lanyard/idevid.crt\"\n").unwrap_err().to_string();
        assert!(e.contains("method = \"factory-cert\""), "{e}");
        let e = parse("[enrol]\nmethod = \"claim\"\n").unwrap_err().to_string();
        assert!(e.contains("claim_file") && e.contains("identity_template"), "{e}");
        let e = parse("[enrol]\nclaim_file = \"/etc/lanyard/claim\"\n").unwrap_err().to_string();
        assert!(e.contains("method = \"claim\""), "{e}");
        let e = parse("[enrol]\nmethod = \"magic\"\n").unwrap_err().to_string();
        assert!(e.contains("[enrol] method") && e.contains("\"token\""), "{e}");
        let e = parse("[enrol]\nidentity = \" \"\n").unwrap_err().to_string();
        assert!(e.contains("[enrol] identity"), "{e}");
        let e = parse("[enrol]\ntoken = \"lyt.x.y\"\n").unwrap_err().to_string();
        assert!(e.contains("token_file"), "a token in the config is refused: {e}");
    }

    #[test]
    fn enrol_section_takes_a_claim_and_makes_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        let serial = dir.path().join("serial-number");
        std::fs::write(&serial, "SN-0042\0").unwrap();
        let toml = format!(
            "[enrol]\nmethod = \"claim\"\nclaim_file = \"/etc/lanyard/claim\"\nidentity_template = \"sensor-{{id}}.fleet.example.com\"\ndevice_id_file = \"{}\"\n",
            serial.display()
        );
        let c = parse(&toml).unwrap();
        assert_eq!(c.enrol.file(), Some(&PathBuf::from("/etc/lanyard/claim")));
        assert_eq!(
            c.enrol.identity().unwrap().as_deref(),
            Some("sensor-sn-0042.fleet.example.com")
        );
        std::fs::write(&serial, "not a label!").unwrap();
        assert!(c.enrol.identity().unwrap_err().contains("device ID"));
        let bad = toml.replace("sensor-{id}", "sensor");
        let e = parse(&bad).unwrap_err().to_string();
        assert!(e.contains("has no {id}"), "{e}");
        let both = format!("{toml}token_file = \"/etc/lanyard/enrol.token\"\n");
        assert!(parse(&both).unwrap_err().to_string().contains("remove token_file"));
    }

    #[test]
    fn non_loopback_listeners_need_explicit_consent() {
        let e = parse(
            "[[proxy.routes]]\nlisten = \"0.0.0.0:8080\"\nupstream = \"https://a.example\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("allow_non_loopback"), "{e}");
        assert!(parse("[[proxy.routes]]\nlisten = \"0.0.0.0:8080\"\nupstream = \"https://a.example\"\nallow_non_loopback = true\n").is_ok());
        let e = parse("[status]\nlisten = \"0.0.0.0:9464\"\n").unwrap_err().to_string();
        assert!(e.contains("loopback"), "{e}");
    }

    #[test]
    fn upstreams_must_be_https_without_path() {
        assert_eq!(
            Upstream::parse("https://a.example:8443"),
            Ok(Upstream { host: "a.example".into(), port: 8443 })
        );
        assert!(Upstream::parse("http://a.example").is_err());
        assert!(Upstream::parse("https://a.example/path").is_err());
        assert!(Upstream::parse("https://a.example:99999").is_err());
        assert_eq!(Upstream::parse("https://[::1]:8443").map(|u| u.host), Ok("::1".into()));
    }

    #[test]
    fn routes_need_a_target_and_unique_listeners() {
        assert!(parse("[[proxy.routes]]\nlisten = \"127.0.0.1:1\"\n").is_err());
        let dup = "[[proxy.routes]]\nlisten = \"127.0.0.1:1\"\nupstream = \"https://a.example\"\n[[proxy.routes]]\nlisten = \"127.0.0.1:1\"\nupstream = \"https://b.example\"\n";
        assert!(parse(dup).unwrap_err().to_string().contains("twice"));
        let fwd = parse("[[proxy.routes]]\nlisten = \"unix:/run/l.sock\"\nforward_allow = [\"*.Example.com\"]\nsocket_mode = \"0660\"\n").unwrap();
        assert_eq!(fwd.routes[0].forward_allow, vec!["*.example.com".to_string()]);
        assert_eq!(fwd.routes[0].socket_mode, 0o660);
    }
}
