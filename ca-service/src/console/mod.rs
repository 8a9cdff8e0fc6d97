//! The web console on the admin listener: overview, devices, a device's page and its
//! revocation, groups and their policies, tokens, the audit trail and the CA's status.
//!
//! Server-rendered HTML (maud escapes every value it interpolates), one stylesheet served
//! from here, no JavaScript, no external resource, and a Content-Security-Policy that allows
//! nothing else. Every page needs an admin: on a loopback listener, a bearer token from
//! `lanyard-ca admin token`, given as `Authorization: Bearer` or through the sign-in form
//! (then kept in an HttpOnly, SameSite=Strict cookie); on an mTLS listener
//! (`--admin-mtls`), the client certificate from `lanyard-ca admin issue` the TLS handshake
//! verified. Every form carries a CSRF token derived from the session, and every change is
//! audited as `admin:<name>`.
//!
//! The devices table reads an in-memory snapshot of the inventory, rebuilt in the
//! background every few seconds and right after a change made here, so that a page over
//! 100,000 devices filters, sorts and pages in memory instead of reading the store.

mod pages;

use crate::admin::{Admin, AdminKey};
use crate::authority::Authority;
use crate::error::CaError;
use crate::inventory::{DeviceFilter, DeviceView};
use crate::revocation::Reason;
use axum::Router;
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use lanyard_proto::GroupPolicy;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The session cookie's name.
const COOKIE: &str = "lanyard_admin";
/// How old the inventory snapshot may get before a background rebuild.
pub const SNAPSHOT_TTL: Duration = Duration::from_secs(5);
/// The snapshot is not rebuilt once nothing has read it for this long (the next read
/// finds it old and rebuilds it then).
pub const IDLE_AFTER: Duration = Duration::from_secs(300);
/// The most tokens one console form makes (each is its own durable write; a larger batch
/// belongs to `lanyard-ca token create --count`, which writes CSV).
pub const MAX_BATCH: u64 = 1_000;
/// Rows per page of the devices table.
pub const PAGE_SIZE: usize = 50;

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Where the CA publishes its CRLs (and, on AWS, the bundle): the console shows, and
/// `/metrics` exports, how long ago that last happened.
#[derive(Clone, Debug)]
pub enum Publication {
    /// The embedded CA's `DIR/crl/crl.pem`.
    Files(PathBuf),
    /// The S3 publication bucket (`crl/crl.pem` there).
    #[cfg(feature = "aws")]
    S3(Arc<crate::aws::AwsBackend>),
}

impl Publication {
    /// When the CRLs were last written; `None` when never (or unreadable, logged).
    pub async fn last(&self) -> Option<time::OffsetDateTime> {
        match self {
            Publication::Files(p) => {
                std::fs::metadata(p).and_then(|m| m.modified()).ok().map(Into::into)
            }
            #[cfg(feature = "aws")]
            Publication::S3(b) => match b.last_publication().await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "console: cannot read the publication bucket");
                    None
                }
            },
        }
    }
}

/// How the console is set up: where its admin key is, what it checks, how admins sign in.
#[derive(Clone, Debug)]
pub struct ConsoleOptions {
    /// The admin key that signs tokens (made there if missing).
    pub key_path: PathBuf,
    /// The CA bundle file to check on the status page (the embedded CA's).
    pub bundle: Option<PathBuf>,
    pub publication: Option<Publication>,
    /// Admins are the client certificates the TLS listener verified (`--admin-mtls`), not
    /// tokens; the loopback-name check is off (a rebound name cannot present one).
    pub mtls: bool,
}

/// The console's state: the CA, the admin key, and the inventory snapshot.
pub struct Console {
    auth: Arc<Authority>,
    mtls: bool,
    publication: Option<Publication>,
    /// The last publication time read, and when it was read (read again after
    /// `SNAPSHOT_TTL`: a scrape does not make an S3 request each time).
    published: Mutex<Option<(Instant, Option<time::OffsetDateTime>)>>,
    key_path: PathBuf,
    /// The admin key and the modification time it was read at: read again when the file
    /// changes (`admin token --rotate-key` signs everyone out of a running console).
    key: Mutex<(Option<std::time::SystemTime>, Arc<AdminKey>)>,
    bundle: Option<PathBuf>,
    snapshot: Mutex<Option<Snapshot>>,
    /// When the snapshot was last read: the background rebuild runs only while the console
    /// or `/metrics` is in use.
    last_read: Mutex<Instant>,
    /// One rebuild at a time: requests that find none wait for the running one.
    rebuilding: tokio::sync::Mutex<()>,
    /// Renewal loads by policy version (the groups page).
    loads: Mutex<std::collections::HashMap<String, Load>>,
}

#[derive(Clone)]
struct Snapshot {
    made: Instant,
    devices: Arc<Vec<DeviceView>>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Console")
    }
}

/// The admin behind a request, and the token that signed them in (for CSRF).
#[derive(Clone, Debug)]
pub struct Session {
    pub admin: Admin,
    token: String,
    pub csrf: String,
}

type App = Arc<Console>;

impl Console {
    pub fn open(auth: Arc<Authority>, opts: ConsoleOptions) -> Result<Arc<Console>, CaError> {
        let ConsoleOptions { key_path, bundle, publication, mtls } = opts;
        let key = AdminKey::load_or_create(&key_path)?;
        let mtime = std::fs::metadata(&key_path).and_then(|m| m.modified()).ok();
        Ok(Arc::new(Console {
            auth,
            mtls,
            publication,
            published: Mutex::new(None),
            key_path,
            key: Mutex::new((mtime, Arc::new(key))),
            bundle,
            snapshot: Mutex::new(None),
            last_read: Mutex::new(Instant::now()),
            rebuilding: tokio::sync::Mutex::new(()),
            loads: Mutex::default(),
        }))
    }

    /// The admin key, read again if its file changed. A file that cannot be read keeps the
    /// key in memory (and is logged).
    fn key(&self) -> Arc<AdminKey> {
        let mtime = std::fs::metadata(&self.key_path).and_then(|m| m.modified()).ok();
        let mut k = self.key.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if mtime.is_some() && mtime != k.0 {
            match AdminKey::load_or_create(&self.key_path) {
                Ok(new) => {
                    tracing::info!("console: the admin key changed; earlier sign-ins end");
                    *k = (mtime, Arc::new(new));
                }
                Err(e) => tracing::warn!(error = %e, "console: cannot read the admin key"),
            }
        }
        k.1.clone()
    }

    /// The inventory as of at most `SNAPSHOT_TTL` ago while in use (built now if there is
    /// none).
    pub async fn devices(&self) -> Result<Arc<Vec<DeviceView>>, CaError> {
        if let Ok(mut t) = self.last_read.lock() {
            *t = Instant::now();
        }
        // In use, the background keeps it younger than the TTL and a second; older, it was
        // left idle and is rebuilt before it is shown.
        if let Some(s) = self.snapshot.lock().ok().and_then(|s| s.clone())
            && s.made.elapsed() < 2 * SNAPSHOT_TTL
        {
            return Ok(s.devices);
        }
        self.refresh().await
    }

    /// Rebuilds the snapshot now, unless another rebuild finished while this one waited.
    pub async fn refresh(&self) -> Result<Arc<Vec<DeviceView>>, CaError> {
        let asked = Instant::now();
        let _one = self.rebuilding.lock().await;
        if let Some(s) = self.snapshot.lock().ok().and_then(|s| s.clone())
            && s.made >= asked
        {
            return Ok(s.devices);
        }
        let devices = Arc::new(self.auth.devices(&DeviceFilter::default()).await?);
        if let Ok(mut s) = self.snapshot.lock() {
            *s = Some(Snapshot { made: Instant::now(), devices: devices.clone() });
        }
        Ok(devices)
    }

    /// Keeps the snapshot fresh until `shutdown`.
    pub async fn keep_fresh(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            let stale = self
                .snapshot
                .lock()
                .ok()
                .and_then(|s| s.as_ref().map(|s| s.made.elapsed() >= SNAPSHOT_TTL))
                .unwrap_or(true);
            let in_use = self.last_read.lock().map(|t| t.elapsed() < IDLE_AFTER).unwrap_or(true);
            if stale
                && in_use
                && let Err(e) = self.refresh().await
            {
                tracing::warn!(error = %e, "console: cannot read the inventory");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// When the CA last published (at most `SNAPSHOT_TTL` old).
    pub async fn last_publication(&self) -> Option<time::OffsetDateTime> {
        let p = self.publication.as_ref()?;
        if let Some((at, t)) = *self.published.lock().unwrap_or_else(|e| e.into_inner())
            && at.elapsed() < SNAPSHOT_TTL
        {
            return t;
        }
        let t = p.last().await;
        *self.published.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), t));
        t
    }

    fn session(&self, req: &Request) -> Option<Session> {
        if self.mtls {
            // rustls verified the chain to the admin CA; the CN names the admin. The CSRF
            // token is bound to this certificate.
            let der = req.extensions().get::<crate::http::PeerCert>()?.0.as_ref()?;
            let admin = crate::admin_pki::admin_of(der)?;
            let token = format!("cert:{}", crate::ca_dir::fingerprint(der));
            return Some(Session { csrf: self.key().csrf(&token), admin, token });
        }
        let headers = req.headers();
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        let cookie = || {
            headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|v| {
                v.split(';').find_map(|c| {
                    c.trim()
                        .strip_prefix(COOKIE)
                        .and_then(|r| r.strip_prefix('='))
                        .map(str::to_owned)
                })
            })
        };
        let token = bearer.or_else(cookie)?;
        let key = self.key();
        let admin = key.verify(&token, self.auth.now())?;
        Some(Session { csrf: key.csrf(&token), admin, token })
    }
}

/// The console's routes (the admin listener adds `/metrics`).
pub fn router(console: App) -> Router {
    let signed_in = Router::new()
        .route("/", get(overview))
        .route("/devices", get(devices))
        .route("/devices/{id}", get(device))
        .route("/devices/{id}/revoke", post(revoke))
        .route("/groups", get(groups))
        .route("/groups/{group}", post(set_policy))
        .route("/tokens", get(tokens).post(create_tokens))
        .route("/audit", get(audit))
        .route("/status", get(status))
        .route("/logout", post(logout))
        .route_layer(axum::middleware::from_fn_with_state(console.clone(), require_admin));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/login", get(login_form).post(login))
        .route("/static/console.css", get(stylesheet))
        .merge(signed_in)
        .layer(axum::middleware::map_response(security_headers))
        .layer(axum::middleware::from_fn_with_state(console.clone(), loopback_host))
        .with_state(console)
}

/// The admin listener answers only requests addressed to a loopback name: a page on
/// another site cannot reach it through a DNS name rebound to 127.0.0.1. Under mTLS a
/// request without an admin certificate never gets this far, so any name is served.
async fn loopback_host(State(c): State<App>, req: Request, next: Next) -> Response {
    if c.mtls {
        return next.run(req).await;
    }
    let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    if matches!(name, "127.0.0.1" | "localhost" | "::1") {
        return next.run(req).await;
    }
    let text = format!(
        "the admin listener answers requests for 127.0.0.1, localhost or [::1], not {host:?}\n"
    );
    (StatusCode::MISDIRECTED_REQUEST, text).into_response()
}

/// `/metrics`, for Prometheus on loopback (no sign-in): the counters, and gauges from the
/// inventory snapshot (never a scan of the store per scrape).
async fn metrics(State(c): State<App>) -> Response {
    let devices = c.devices().await;
    let published = c.last_publication().await;
    let text = crate::metrics::render(&c.auth, devices.as_deref().map(Vec::as_slice), published);
    let mut r = text.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(crate::metrics::CONTENT_TYPE));
    r
}

async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    // Not no-referrer: under it a browser sends `Origin: null` with the console's own forms.
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// Every page but sign-in needs an admin: 401 with the sign-in form otherwise. A POST
/// must also carry the session's CSRF token (checked by each form's handler) and, when the
/// browser sends one, an Origin of this host.
async fn require_admin(State(c): State<App>, mut req: Request, next: Next) -> Response {
    let Some(session) = c.session(&req) else {
        if c.mtls {
            let text = "this admin certificate names no admin (its CN must be an admin name)";
            return (StatusCode::FORBIDDEN, text).into_response();
        }
        let mut r = (
            StatusCode::UNAUTHORIZED,
            pages::login(Some("Sign in with an admin token from `lanyard-ca admin token`.")),
        )
            .into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"lanyard-ca admin\""),
        );
        return r;
    };
    if req.method() == axum::http::Method::POST && !same_origin(req.headers()) {
        return (
            StatusCode::FORBIDDEN,
            pages::message(&session, "Refused", "This form was sent from another site."),
        )
            .into_response();
    }
    req.extensions_mut().insert(session);
    next.run(req).await
}

fn same_origin(h: &HeaderMap) -> bool {
    let Some(origin) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return true };
    let host = h.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    origin == format!("http://{host}") || origin == format!("https://{host}")
}

/// The refusal of a form whose CSRF token is not the session's, if it is not.
fn csrf_refusal(c: &Console, s: &Session, given: &str) -> Option<Response> {
    (!c.key().csrf_ok(&s.token, given)).then(|| {
        let text = "The form's CSRF token is missing or wrong: reload the page and try again.";
        (StatusCode::FORBIDDEN, pages::message(s, "Refused", text)).into_response()
    })
}

fn failed(s: &Session, e: &CaError) -> Response {
    let status = e.status();
    let text = if status.is_server_error() {
        "internal error; see the CA's log".to_owned()
    } else {
        e.to_string()
    };
    if status.is_server_error() {
        tracing::error!(error = %e, "console request failed");
    }
    (status, pages::message(s, "Error", &text)).into_response()
}

async fn stylesheet() -> Response {
    let mut r = include_str!("console.css").into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=3600"));
    r
}

async fn login_form(State(c): State<App>, req: Request) -> Response {
    if c.session(&req).is_some() {
        return Redirect::to("/").into_response();
    }
    pages::login(None).into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(c): State<App>, Form(f): Form<LoginForm>) -> Response {
    let now = c.auth.now();
    let Some(admin) = c.key().verify(&f.token, now) else {
        return (
            StatusCode::UNAUTHORIZED,
            pages::login(Some(
                "That token is not valid (mistyped, expired, or made under another admin key).",
            )),
        )
            .into_response();
    };
    // A working day at most, and never past the token's expiry.
    let max_age = (admin.expires_at - now).whole_seconds().clamp(0, 8 * 3600);
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}",
        f.token.trim()
    );
    tracing::info!(admin = %admin.name, "console sign-in");
    let mut r = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(c): State<App>,
    axum::Extension(s): axum::Extension<Session>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Some(r) = csrf_refusal(&c, &s, &f.csrf) {
        return r;
    }
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("lanyard_admin=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}

async fn overview(State(c): State<App>, axum::Extension(s): axum::Extension<Session>) -> Response {
    match c.devices().await {
        Ok(d) => pages::overview(&s, &d, c.auth.now(), &policies(&c).await).into_response(),
        Err(e) => failed(&s, &e),
    }
}

async fn policies(c: &Console) -> Vec<(String, GroupPolicy)> {
    c.auth.store().policies().await.unwrap_or_default()
}

/// The devices table's query: search, filters, sort and page.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct DevicesQuery {
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub failing: String,
    #[serde(default)]
    pub sort: String,
    #[serde(default)]
    pub desc: String,
    #[serde(default)]
    pub page: usize,
}

/// The rows of one page, and how many matched in all.
pub fn select<'a>(all: &'a [DeviceView], q: &DevicesQuery) -> (Vec<&'a DeviceView>, usize) {
    let needle = q.q.trim().to_lowercase();
    let mut rows: Vec<&DeviceView> = all
        .iter()
        .filter(|d| {
            (needle.is_empty()
                || d.identity.to_lowercase().contains(&needle)
                || d.serial.contains(&needle))
                && (q.state.is_empty() || d.state == q.state)
                && (q.group.is_empty() || d.group == q.group)
                && (q.failing.is_empty() || d.failing)
        })
        .collect();
    let total = rows.len();
    match q.sort.as_str() {
        "last_seen" => rows.sort_by_key(|d| d.last_seen),
        "not_after" => rows.sort_by_key(|d| d.not_after),
        "state" => rows.sort_by(|a, b| a.state.cmp(&b.state)),
        "group" => rows.sort_by(|a, b| a.group.cmp(&b.group)),
        "version" => rows.sort_by(|a, b| a.agent_version.cmp(&b.agent_version)),
        _ => {} // by identity: the inventory's order
    }
    if !q.desc.is_empty() {
        rows.reverse();
    }
    // A page past the end shows the last one (as the pager says).
    let page = q.page.min(total.div_ceil(PAGE_SIZE).max(1) - 1);
    let start = page * PAGE_SIZE;
    let end = (start + PAGE_SIZE).min(total);
    (rows[start..end].to_vec(), total)
}

async fn devices(
    State(c): State<App>,
    axum::Extension(s): axum::Extension<Session>,
    Query(q): Query<DevicesQuery>,
) -> Response {
    match c.devices().await {
        Ok(all) => {
            let groups: std::collections::BTreeSet<&str> =
                all.iter().map(|d| d.group.as_str()).collect();
            let (rows, total) = select(&all, &q);
            pages::devices(&s, &q, &rows, total, &groups.into_iter().collect::<Vec<_>>())
                .into_response()
        }
        Err(e) => failed(&s, &e),
    }
}

async fn device(
    State(c): State<App>,
    axum::Extension(s): axum::Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    match c.auth.device_detail(&id).await {
        Ok(d) => pages::device(&s, &d, c.auth.now(), None).into_response(),
        Err(e) => failed(&s, &e),
    }
}

#[derive(Deserialize)]
struct RevokeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    confirm: String,
}

async fn revoke(
    State(c): State<App>,
    axum::Extension(s): axum::Extension<Session>,
    Path(id): Path<String>,
    Form(f): Form<RevokeForm>,
) -> Response {
    if let Some(r) = csrf_refusal(&c, &s, &f.csrf) {
        return r;
    }
    let detail = match c.auth.device_detail(&id).await {
        Ok(d) => d,
        Err(e) => return failed(&s, &e),
    };
    let reason: Reason = match f.reason.parse() {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                pages::device(&s, &detail, c.auth.now(), Some(&e.to_string())),
            )
                .into_response();
        }
    };
    if f.confirm != "yes" {
        let msg = "Tick the confirmation box: a revocation cannot be undone.";
        return (StatusCode::BAD_REQUEST, pages::device(&s, &detail, c.auth.now(), Some(msg)))
            .into_response();
    }
    let meta = crate::authority::RequestMeta::default();
    match c.auth.revoke_identity(&id, reason, &s.admin.actor(), &meta).await {
        Ok(serials) => {
            tracing::info!(admin = %s.admin.name, identity = %id, count = serials.len(), "console: revoked");
            if let Err(e) = c.refresh().await {
                tracing::warn!(error = %e, "console: cannot read the inventory");
            }
            Redirect::to(&format!("/devices/{}", urlencode(&id))).into_response()
        }
        Err(e) => failed(&s, &e),
    }
}

/// Percent-encodes a path segment.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn groups(State(c): State<App>, axum::Extension(s): axum::Extension<Session>) -> Response {
    groups_page(&c, &s, None, StatusCode::OK).await
}

async fn groups_page(
    c: &Console,
    s: &Session,
    error: Option<(&str, &str)>,
    status: StatusCode,
) -> Response {
    let mut list = policies(c).await;
    if !list.iter().any(|(g, _)| g == crate::authority::DEFAULT_GROUP) {
        list.insert(0, (crate::authority::DEFAULT_GROUP.to_owned(), GroupPolicy::default()));
    }
    let devices = c.devices().await.unwrap_or_default();
    let mut counts: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for d in devices.iter() {
        *counts.entry(d.group.as_str()).or_default() += 1;
    }
    let mut rows = Vec::with_capacity(list.len());
    for (group, policy) in list {
        let version = crate::inventory::policy_version(&policy);
        let load = c.load(&version, &policy).await;
        let devices = counts.get(group.as_str()).copied().unwrap_or(0);
        rows.push(pages::GroupRow { version, group, policy, devices, load });
    }
    (status, pages::groups(s, &rows, error)).into_response()
}

/// A policy's renewal load per 1,000 devices, as `fleet simulate` predicts it.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    pub mean_per_hour: f64,
    pub peak_per_hour: u64,
    pub days: u32,
}

/// Devices the groups page simulates (figures are per this many).
pub const LOAD_DEVICES: u32 = 1_000;

impl Console {
    /// The load of a policy (cached by its version): 1,000 devices in their steady state
    /// over two lifetimes (1 to 14 days), on the blocking pool so that a short lifetime
    /// (many renewals to simulate) never holds a worker the CA's listeners share.
    async fn load(&self, version: &str, policy: &GroupPolicy) -> Option<Load> {
        if let Some(l) = self.loads.lock().ok().and_then(|m| m.get(version).copied()) {
            return Some(l);
        }
        let days = (2 * policy.lifetime_secs).div_ceil(86_400).clamp(1, 14) as u32;
        let scenario = crate::fleet::Scenario {
            policy: policy.clone(),
            devices: LOAD_DEVICES,
            days,
            capacity: 1_000.0,
            max_queue_secs: crate::admission::DEFAULT_MAX_QUEUE_SECS,
            checkin_interval_secs: 3600,
            rotate_at: None,
            outage: None,
            enrol_all_at: None,
            usd_per_10k_signatures: 0.15,
            seed: 1,
        };
        let r =
            tokio::task::spawn_blocking(move || crate::fleet::simulate(&scenario)).await.ok()?;
        let l = Load { mean_per_hour: r.mean_per_hour, peak_per_hour: r.peak_per_hour, days };
        if let Ok(mut m) = self.loads.lock() {
            m.insert(version.to_owned(), l);
        }
        Some(l)
    }
}

#[derive(Deserialize)]
struct PolicyForm {
    #[serde(default)]
    csrf: String,
    lifetime: String,
    renew_fraction: String,
    jitter_fraction: String,
    key_algorithms: String,
    retry_floor: String,
    retry_cap: String,
    expired_grace: String,
    superseded_grace: String,
}

/// A policy from the form's fields; the message names the field that does not parse.
fn policy_from(f: &PolicyForm, base: &GroupPolicy) -> Result<GroupPolicy, String> {
    let secs = |field: &str, v: &str| -> Result<u64, String> {
        lanyard_proto::duration::parse_or_zero(v)
            .map(|d| d.as_secs())
            .map_err(|e| format!("{field}: {e}"))
    };
    let fraction = |field: &str, v: &str| -> Result<f64, String> {
        v.trim().parse::<f64>().map_err(|_| format!("{field}: {v:?} is not a number (e.g. 0.66)"))
    };
    let key_algorithms = f
        .key_algorithms
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|e| format!("key algorithms: {e}")))
        .collect::<Result<Vec<_>, String>>()?;
    let p = GroupPolicy {
        lifetime_secs: secs("lifetime", &f.lifetime)?,
        renew_fraction: fraction("renew fraction", &f.renew_fraction)?,
        jitter_fraction: fraction("jitter fraction", &f.jitter_fraction)?,
        key_algorithms,
        retry_floor_secs: secs("retry floor", &f.retry_floor)?,
        retry_cap_secs: secs("retry cap", &f.retry_cap)?,
        expired_grace_secs: secs("expired grace", &f.expired_grace)?,
        superseded_grace_secs: secs("superseded grace", &f.superseded_grace)?,
        rotate_issued_before: base.rotate_issued_before,
    };
    p.validate().map_err(|e| e.to_string())?;
    Ok(p)
}

async fn set_policy(
    State(c): State<App>,
    axum::Extension(s): axum::Extension<Session>,
    Path(group): Path<String>,
    Form(f): Form<PolicyForm>,
) -> Response {
    if let Some(r) = csrf_refusal(&c, &s, &f.csrf) {
        return r;
    }
    // The policy's other fields (a pending rotate-before) are kept, so read it first.
    let base = match c.auth.policy(&group).await {
        Ok(p) => p,
        Err(e) => return failed(&s, &e),
    };
    let policy = match policy_from(&f, &base) {
        Ok(p) => p,
        Err(msg) => {
            return groups_page(&c, &s, Some((&group, &msg)), StatusCode::BAD_REQUEST).await;
        }
    };
    match c.auth.set_policy(&group, policy, &s.admin.actor()).await {
        Ok(()) => Redirect::to("/groups").into_response(),
        Err(e) if e.status().is_client_error() => {
            groups_page(&c, &s, Some((&group, &e.to_string())), StatusCode::BAD_REQUEST).await
        }
        Err(e) => failed(&s, &e),
    }
}

async fn tokens(State(c): State<App>, axum::Extension(s): axum::Extension<Session>) -> Response {
    tokens_page(&c, &s, None, StatusCode::OK).await
}

async fn tokens_page(
    c: &Console,
    s: &Session,
    outcome: Option<pages::TokenOutcome>,
    status: StatusCode,
) -> Response {
    let filter = crate::store::TokenFilter { unused_only: true, ..Default::default() };
    match c.auth.tokens(filter).await {
        Ok(list) => {
            (status, pages::tokens(s, &list, c.auth.now(), outcome.as_ref())).into_response()
        }
        Err(e) => failed(s, &e),
    }
}

#[derive(Deserialize)]
struct TokenForm {
    #[serde(default)]
    csrf: String,
    /// One identity, or a template with `{seq}` for a batch.
    identity: String,
    #[serde(default)]
    count: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    ttl: String,
}

async fn create_tokens(
    State(c): State<App>,
    axum::Extension(s): axum::Extension<Session>,
    Form(f): Form<TokenForm>,
) -> Response {
    if let Some(r) = csrf_refusal(&c, &s, &f.csrf) {
        return r;
    }
    let bad = |msg: String| pages::TokenOutcome::Error(msg);
    let group =
        if f.group.trim().is_empty() { crate::authority::DEFAULT_GROUP } else { f.group.trim() };
    let ttl = match lanyard_proto::duration::parse(if f.ttl.trim().is_empty() {
        "24h"
    } else {
        &f.ttl
    }) {
        Ok(t) => t,
        Err(e) => {
            return tokens_page(&c, &s, Some(bad(format!("ttl: {e}"))), StatusCode::BAD_REQUEST)
                .await;
        }
    };
    let identities = if f.identity.contains("{seq") {
        let count: u64 = match f.count.trim().parse() {
            Ok(n) if (1..=MAX_BATCH).contains(&n) => n,
            _ => {
                return tokens_page(
                    &c,
                    &s,
                    Some(bad(format!("count: give a number from 1 to {MAX_BATCH} for a template (larger batches: lanyard-ca token create --count)"))),
                    StatusCode::BAD_REQUEST,
                )
                .await;
            }
        };
        match crate::tokens::expand_identities(f.identity.trim(), 1, count) {
            Ok(v) => v,
            Err(e) => return tokens_page(&c, &s, Some(bad(e)), StatusCode::BAD_REQUEST).await,
        }
    } else {
        vec![f.identity.trim().to_owned()]
    };
    let mut made = Vec::with_capacity(identities.len());
    for id in &identities {
        match c.auth.create_token(id, group, ttl, &s.admin.actor()).await {
            Ok((secret, rec)) => made.push((rec.identity, secret.expose().to_owned())),
            Err(e) if made.is_empty() && e.status().is_client_error() => {
                return tokens_page(&c, &s, Some(bad(e.to_string())), StatusCode::BAD_REQUEST)
                    .await;
            }
            Err(e) if made.is_empty() => return failed(&s, &e),
            // Tokens already made are shown with the error: they are shown only once.
            Err(e) => {
                if e.status().is_server_error() {
                    tracing::error!(error = %e, "console: token batch stopped");
                }
                let why =
                    format!("stopped after {} of {} tokens: {e}", made.len(), identities.len());
                let outcome = pages::TokenOutcome::Made(made, Some(why));
                return tokens_page(&c, &s, Some(outcome), e.status()).await;
            }
        }
    }
    tokens_page(&c, &s, Some(pages::TokenOutcome::Made(made, None)), StatusCode::OK).await
}

async fn audit(State(c): State<App>, axum::Extension(s): axum::Extension<Session>) -> Response {
    match c.auth.store().audit_log(200).await {
        Ok(events) => pages::audit(&s, &events).into_response(),
        Err(e) => failed(&s, &e),
    }
}

async fn status(State(c): State<App>, axum::Extension(s): axum::Extension<Session>) -> Response {
    let bundle = c.bundle.as_ref().map(|p| match std::fs::read(p) {
        Ok(b) => match crate::bundle::check(&b) {
            Ok(sum) => Ok(format!(
                "{}: {} certificates, {} bytes, CloudFront's rules hold",
                p.display(),
                sum.certificates,
                sum.bytes
            )),
            Err(v) => Err(format!(
                "{}: {}",
                p.display(),
                v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("; ")
            )),
        },
        Err(e) => Err(format!("{}: {e}", p.display())),
    });
    let published = c.last_publication().await;
    pages::status(&s, &c.auth, c.auth.now(), bundle, published).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;

    fn device(i: usize) -> DeviceView {
        let t = OffsetDateTime::from_unix_timestamp(1_800_000_000 + i as i64 * 60)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        DeviceView {
            identity: format!("dev-{i:03}"),
            group: if i.is_multiple_of(2) { "even" } else { "odd" }.into(),
            serial: format!("{i:04x}"),
            state: if i.is_multiple_of(10) { "revoked" } else { "valid" }.into(),
            cert_status: "valid".into(),
            last_seen: Some(t),
            agent_version: Some("0.1.0".into()),
            last_error_code: None,
            last_error: None,
            consecutive_failures: u32::from(i.is_multiple_of(7)),
            failing: i.is_multiple_of(7),
            // Reversed against the identities, so a sort by it shows.
            not_after: t - time::Duration::minutes(2 * i as i64),
            next_renewal: None,
            os: None,
            arch: None,
            store: None,
            policy_version: None,
            policy_current: None,
            enrolled_at: t,
        }
    }

    #[test]
    fn the_devices_table_filters_sorts_and_pages() {
        let all: Vec<DeviceView> = (0..120).map(device).collect();
        let ids =
            |rows: &[&DeviceView]| rows.iter().map(|d| d.identity.clone()).collect::<Vec<_>>();
        let q = DevicesQuery::default();
        let (rows, total) = select(&all, &q);
        assert_eq!((rows.len(), total), (PAGE_SIZE, 120));
        assert_eq!(rows[0].identity, "dev-000");
        // A page past the end shows the last one: 120 = 2 × 50 + 20.
        let (rows, _) = select(&all, &DevicesQuery { page: 99, ..q.clone() });
        assert_eq!((rows.len(), rows[0].identity.as_str()), (20, "dev-100"));
        let (rows, total) = select(&all, &DevicesQuery { failing: "1".into(), ..q.clone() });
        assert_eq!(total, 18, "0, 7, ... 119");
        assert!(rows.iter().all(|d| d.failing));
        let (rows, total) = select(&all, &DevicesQuery { q: "DEV-11".into(), ..q.clone() });
        assert_eq!((total, ids(&rows)[0].as_str()), (10, "dev-110"), "search ignores case");
        let (rows, total) = select(
            &all,
            &DevicesQuery { state: "revoked".into(), group: "even".into(), ..q.clone() },
        );
        assert_eq!(total, 12);
        assert!(rows.iter().all(|d| d.state == "revoked" && d.group == "even"));
        let (rows, _) = select(&all, &DevicesQuery { sort: "not_after".into(), ..q.clone() });
        assert_eq!(rows[0].identity, "dev-119", "earliest not_after first");
        let (rows, _) =
            select(&all, &DevicesQuery { sort: "not_after".into(), desc: "1".into(), ..q });
        assert_eq!(rows[0].identity, "dev-000");
    }
}
