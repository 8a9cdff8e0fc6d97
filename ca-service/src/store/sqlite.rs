//! The embedded store: one SQLite file in the CA directory, WAL mode, so the CLI (token,
//! revoke, policy) and a running `serve` share it safely.
//!
//! rusqlite is synchronous: the store has its own thread, which owns the connection and does
//! every call, in the order they were queued ([`SqliteStore`]).
//!
//! Issuances are group-committed: the thread records every issuance it took in one round
//! in one transaction (a savepoint each, so one failure stays its own) and one fsync, then
//! answers them all. Nothing is answered before the commit that makes it durable
//! (`synchronous=FULL`).

use super::{
    AuditEvent, CertFilter, CertRecord, ClaimRecord, Consumes, DeviceRecord, EnrolmentReads,
    FactoryCaRecord, Provisioned, RecordOutcome, RenewalReads, Revocation, RevokeOutcome, Store,
    TokenFilter, TokenRecord, TokenRevokeOutcome, TokenUse,
};
use crate::error::{CaError, Result};
use crate::revocation::Reason;
use lanyard_proto::GroupPolicy;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use std::sync::{Arc, mpsc};
use time::OffsetDateTime;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS certs (
    serial        TEXT PRIMARY KEY,
    identity      TEXT NOT NULL,
    group_name    TEXT NOT NULL,
    not_before    INTEGER NOT NULL,
    not_after     INTEGER NOT NULL,
    issued_at     INTEGER NOT NULL,
    spki_sha256   TEXT NOT NULL,
    der           BLOB NOT NULL,
    renewed_from  TEXT,
    revoked_at    INTEGER,
    revoke_reason TEXT
);
CREATE INDEX IF NOT EXISTS certs_identity_key ON certs(identity, spki_sha256);
CREATE INDEX IF NOT EXISTS certs_revoked ON certs(revoked_at) WHERE revoked_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS tokens (
    hash          TEXT PRIMARY KEY,
    identity      TEXT NOT NULL,
    group_name    TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    used_at       INTEGER,
    used_serial   TEXT,
    used_spki     TEXT
);
CREATE TABLE IF NOT EXISTS claims (
    hash          TEXT PRIMARY KEY,
    id            TEXT NOT NULL,
    group_name    TEXT NOT NULL,
    template      TEXT NOT NULL,
    max_uses      INTEGER NOT NULL,
    uses          INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER
);
CREATE TABLE IF NOT EXISTS provisioned (
    key           TEXT PRIMARY KEY,
    identity      TEXT NOT NULL,
    source        TEXT NOT NULL,
    at            INTEGER NOT NULL,
    serial        TEXT NOT NULL,
    spki_sha256   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS provisioned_identity ON provisioned(identity);
CREATE TABLE IF NOT EXISTS factory_cas (
    id            TEXT PRIMARY KEY,
    group_name    TEXT NOT NULL,
    subject       TEXT NOT NULL,
    der           BLOB NOT NULL,
    identity_from TEXT NOT NULL,
    template      TEXT,
    added_at      INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS policies (
    group_name    TEXT PRIMARY KEY,
    json          TEXT NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name          TEXT PRIMARY KEY,
    value         INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS devices (
    identity      TEXT PRIMARY KEY,
    group_name    TEXT NOT NULL,
    last_seen     INTEGER NOT NULL,
    serial        TEXT NOT NULL,
    cert_status   TEXT NOT NULL,
    remote        TEXT,
    report        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS devices_last_seen ON devices(last_seen);
CREATE TABLE IF NOT EXISTS audit (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at            INTEGER NOT NULL,
    actor         TEXT NOT NULL,
    action        TEXT NOT NULL,
    subject       TEXT NOT NULL,
    detail        TEXT NOT NULL,
    remote        TEXT
);
"#;

/// The schema this build writes, kept in `PRAGMA user_version`. 0 is a database from
/// before versions were kept (0.1.0 on): migrated by [`migrate`], which adds what it lacks.
/// Raise it with every change to [`SCHEMA`] or [`migrate`] that an older build could not
/// work with (it refuses a newer version); dropping an index it would create again is not one.
/// 2: zero-touch provisioning (`claims`, `provisioned`, `factory_cas`).
pub const SCHEMA_VERSION: i64 = 2;

/// The store: one thread owns the connection and takes work from a queue, in order. Each
/// time it wakes it takes everything queued (up to [`ROUND`] jobs): the reads and single
/// writes run as they come, the issuances among them are committed together at the end of
/// the round (group commit: one transaction and one fsync for the batch, each answered after
/// it; when requests overlap, the thread yields its core once before committing, so that a
/// request about to queue its issuance can join the batch). A request costs one hand-off to
/// that thread, and none when the thread is busy.
#[derive(Clone)]
pub struct SqliteStore {
    worker: Arc<Worker>,
}

/// Most jobs the store's thread takes before it commits the issuances among them.
const ROUND: usize = 256;

struct Worker {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Worker {
    /// The last handle closes the queue and waits for the thread to finish the work queued
    /// and close the database, as dropping the connection itself did.
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take()
            && t.thread().id() != std::thread::current().id()
        {
            let _ = t.join();
        }
    }
}

enum Job {
    /// Work on the connection; it sends its own answer.
    Run(Box<dyn FnOnce(&mut Connection) + Send>),
    /// An issuance for this round's group commit.
    Issue(Box<Issuance>),
}

/// The store's thread: rounds of queued work until every handle is gone.
fn serve_jobs(mut conn: Connection, jobs: mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = Vec::new();
        let mut next = Some(first);
        let mut taken = 0;
        let mut yielded = false;
        while let Some(job) = next {
            match job {
                // A panic drops the job's answer (its caller gets an error); a transaction
                // it left open is rolled back (by its guard as it unwinds, or here), and the
                // thread goes on.
                Job::Run(f) => {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut conn)));
                    end_open_transaction(&conn);
                }
                Job::Issue(i) => batch.push(*i),
            }
            taken += 1;
            next = if taken < ROUND { jobs.try_recv().ok() } else { None };
            // The queue is empty, issuances wait for their commit and this round took more
            // than one job (requests overlap): give the core once to any thread ready to run
            // (a request task about to queue its issuance after signing) so that it joins
            // this commit instead of paying the next fsync alone. With nothing else ready, as
            // on a many-core host, this returns at once; on a saturated core it waits for
            // one scheduling turn of another thread (at most its time slice, a few ms), when
            // batching pays most. A lone request (one job a round) does not yield: there is
            // nobody to wait for, and the tokio worker thread on its way to sleep would take
            // the core ahead of the commit.
            // docs/BENCHMARKS.md, "Issue 20: one yield before the group commit".
            if next.is_none() && !yielded && !batch.is_empty() && taken > 1 && taken < ROUND {
                std::thread::yield_now();
                yielded = true;
                next = jobs.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                commit_issuances(&mut conn, batch)
            }));
            end_open_transaction(&conn);
        }
    }
}

/// Rolls back a transaction a job left open (it panicked between BEGIN and COMMIT), so
/// that the next job does not run inside it.
fn end_open_transaction(c: &Connection) {
    if !c.is_autocommit() {
        tracing::error!("a store job left a transaction open; rolled back");
        let _ = c.execute_batch("ROLLBACK");
    }
}

/// One issuance waiting for the next group commit.
struct Issuance {
    cert: CertRecord,
    consumes: Consumes,
    audit: AuditEvent,
    reply: tokio::sync::oneshot::Sender<Result<RecordOutcome>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

fn ts(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

fn from_ts(s: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(s).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl SqliteStore {
    /// Opens (or creates) the database at `path`, readable by its owner only: it holds the
    /// token hashes and the audit trail. SQLite gives its -wal and -shm files the same mode.
    pub fn open(path: &Path) -> Result<Self> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .and_then(|f| f.set_permissions(std::fs::Permissions::from_mode(0o600)))
            .map_err(|e| CaError::Storage(format!("opening {}: {e}", path.display())))?;
        let conn = Connection::open(path)
            .map_err(|e| CaError::Storage(format!("opening {}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let found = schema_version(&conn)?;
        check_not_newer(found, path)?;
        if found < SCHEMA_VERSION && has_tables(&conn)? {
            backup(&conn, path, found)?;
        }
        Self::setup(conn)
    }

    pub fn in_memory() -> Result<Self> {
        Self::setup(Connection::open_in_memory()?)
    }

    fn setup(mut conn: Connection) -> Result<Self> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // NORMAL is durable across application crashes in WAL mode; FULL also across power
        // loss. A CA must not hand out a certificate it could forget: FULL.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        // Prepared statements stay prepared. Without the query planner stability guarantee,
        // SQLite's planner looks at some bound values (an `= ?` term beside ORDER BY, as in
        // the key lookup, is checked for being 0 or 1) and marks the statement to be compiled
        // again once its bindings are cleared, which rusqlite does each time the statement
        // goes back to its cache: every key lookup of every enrolment was parsed and planned
        // afresh. No plan here depends on a bound value (no ANALYZE statistics; the partial
        // indexes test IS [NOT] NULL).
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        // And none is evicted: rusqlite keeps 16, fewer than the store's distinct statements.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // One writer at a time: a CA and a CLI opening an old database together must not
        // both add a column (the second would fail on "duplicate column").
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Read again under the write lock: another process may have migrated meanwhile.
        check_not_newer(schema_version(&tx)?, Path::new("the database"))?;
        tx.execute_batch(SCHEMA)?;
        migrate(&tx)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        tx.commit()?;
        let (jobs, queue) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sqlite-store".into())
            .spawn(move || serve_jobs(conn, queue))
            .map_err(|e| CaError::Storage(format!("starting the store's thread: {e}")))?;
        Ok(SqliteStore { worker: Arc::new(Worker { jobs: Some(jobs), thread: Some(thread) }) })
    }

    fn send(&self, job: Job) -> Result<()> {
        self.worker
            .jobs
            .as_ref()
            .and_then(|q| q.send(job).ok())
            .ok_or_else(|| CaError::Storage("the store's thread has stopped".into()))
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.send(Job::Run(Box::new(move |c| {
            let _ = reply.send(f(c));
        })))?;
        answer.await.map_err(|_| CaError::Storage("the store task failed (see the log)".into()))?
    }
}

fn schema_version(c: &Connection) -> Result<i64> {
    Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

fn has_tables(c: &Connection) -> Result<bool> {
    let n: i64 =
        c.query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table'", [], |r| r.get(0))?;
    Ok(n > 0)
}

/// A database written by a newer lanyard-ca is not opened: this build would not know what
/// its columns mean, and writing to it could lose what the newer one keeps.
fn check_not_newer(found: i64, path: &Path) -> Result<()> {
    if found > SCHEMA_VERSION {
        return Err(CaError::Config(format!(
            "{} has schema {found}, written by a newer lanyard-ca (this one knows schema {SCHEMA_VERSION} and older): install the newer lanyard-ca again, or restore the backup the upgrade took beside it (lanyard-ca.db.before-schema-*)",
            path.display()
        )));
    }
    Ok(())
}

/// A consistent copy of the whole database (`VACUUM INTO`, 0600), taken before a
/// migration: `lanyard-ca.db.before-schema-<N>-<unix time>`, N the new schema.
fn backup(c: &Connection, path: &Path, found: i64) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let now = crate::clock::Clock::now(&crate::clock::SystemClock).unix_timestamp();
    let name = format!(
        "{}.before-schema-{SCHEMA_VERSION}-{now}-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("lanyard-ca.db"),
        std::process::id()
    );
    let to = path.with_file_name(name);
    let target =
        to.to_str().ok_or_else(|| CaError::Storage(format!("{}: not UTF-8", to.display())))?;
    c.execute("VACUUM INTO ?1", [target])
        .map_err(|e| CaError::Storage(format!("backing up before migration to {target}: {e}")))?;
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| CaError::Storage(format!("chmod {target}: {e}")))?;
    tracing::info!(from = found, to = SCHEMA_VERSION, backup = %target, "migrating the database; a copy was taken first");
    Ok(())
}

/// Columns added after the first release: added in place to databases made before them.
/// `renewed_from` is the parent serial (its name predates the lineage).
fn migrate(c: &Connection) -> rusqlite::Result<()> {
    let columns: Vec<String> = c
        .prepare("SELECT name FROM pragma_table_info('certs')")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for (name, ty) in [("superseded_by", "TEXT"), ("superseded_at", "INTEGER")] {
        if !columns.iter().any(|c| c == name) {
            c.execute_batch(&format!("ALTER TABLE certs ADD COLUMN {name} {ty}"))?;
        }
    }
    let token_columns: Vec<String> = c
        .prepare("SELECT name FROM pragma_table_info('tokens')")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if !token_columns.iter().any(|c| c == "revoked_at") {
        c.execute_batch("ALTER TABLE tokens ADD COLUMN revoked_at INTEGER")?;
    }
    c.execute_batch(
        "CREATE INDEX IF NOT EXISTS certs_superseded ON certs(superseded_at) WHERE superseded_at IS NOT NULL AND revoked_at IS NULL",
    )?;
    // Lookups by identity use `certs_identity_key`, whose first column it is: an index on
    // the identity alone only cost every issuance one more B-tree page to write.
    c.execute_batch("DROP INDEX IF EXISTS certs_identity")
}

fn device_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeviceRecord> {
    let report: String = r.get(6)?;
    Ok(DeviceRecord {
        identity: r.get(0)?,
        group: r.get(1)?,
        last_seen: from_ts(r.get(2)?),
        serial: r.get(3)?,
        cert_status: r.get(4)?,
        remote: r.get(5)?,
        // A report that no longer parses (written by a newer CA) shows as empty, not as an
        // error that hides the whole inventory.
        report: serde_json::from_str(&report).unwrap_or_default(),
    })
}

const DEVICE_COLUMNS: &str = "identity, group_name, last_seen, serial, cert_status, remote, report";

const CLAIM_COLUMNS: &str =
    "hash, id, group_name, template, max_uses, uses, created_at, expires_at, revoked_at";

fn claim_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ClaimRecord> {
    Ok(ClaimRecord {
        hash: r.get(0)?,
        id: r.get(1)?,
        group: r.get(2)?,
        identity_template: r.get(3)?,
        max_uses: r.get::<_, i64>(4)?.max(0) as u64,
        uses: r.get::<_, i64>(5)?.max(0) as u64,
        created_at: from_ts(r.get(6)?),
        expires_at: from_ts(r.get(7)?),
        revoked_at: r.get::<_, Option<i64>>(8)?.map(from_ts),
    })
}

const TOKEN_COLUMNS: &str = "hash, identity, group_name, created_at, expires_at, used_at, used_serial, used_spki, revoked_at";

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRecord> {
    let used_at: Option<i64> = r.get(5)?;
    Ok(TokenRecord {
        hash: r.get(0)?,
        identity: r.get(1)?,
        group: r.get(2)?,
        created_at: from_ts(r.get(3)?),
        expires_at: from_ts(r.get(4)?),
        used: match used_at {
            Some(at) => Some(TokenUse {
                at: from_ts(at),
                serial: r.get::<_, Option<String>>(6)?.unwrap_or_default(),
                spki_sha256: r.get::<_, Option<String>>(7)?.unwrap_or_default(),
            }),
            None => None,
        },
        revoked_at: r.get::<_, Option<i64>>(8)?.map(from_ts),
    })
}

fn insert_audit(c: &Connection, e: &AuditEvent) -> rusqlite::Result<usize> {
    c.prepare_cached(
        "INSERT INTO audit (at, actor, action, subject, detail, remote) VALUES (?1,?2,?3,?4,?5,?6)",
    )?
    .execute(params![ts(e.at), e.actor, e.action, e.subject, e.detail, e.remote])
}

/// Prepared statements kept per connection: above the number of distinct statements in
/// this file (about 30), so none is evicted and parsed again.
const STATEMENT_CACHE: usize = 64;

/// Runs a statement that returns no rows from the connection's statement cache: the
/// transaction control of every round, parsed once instead of once per use.
fn exec_cached(c: &Connection, sql: &str) -> rusqlite::Result<()> {
    c.prepare_cached(sql)?.execute([]).map(drop)
}

/// Runs `f`'s reads in one read transaction: one snapshot for all of them, and one round of
/// WAL read locks (`fcntl` on the shared-memory file) instead of one per statement.
fn read_together<T>(c: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    exec_cached(c, "BEGIN")?;
    let r = f(c);
    exec_cached(c, "COMMIT")?;
    r
}

/// Records a batch of issuances in one transaction and answers each after the commit.
fn commit_issuances(c: &mut Connection, batch: Vec<Issuance>) {
    let mut outcomes = Vec::with_capacity(batch.len());
    let committed = (|| -> rusqlite::Result<()> {
        // Fully durable whatever a check-in's write left set (it lowers it for itself).
        exec_cached(c, "PRAGMA synchronous = FULL")?;
        exec_cached(c, "BEGIN IMMEDIATE")?;
        let recorded = (|| -> rusqlite::Result<()> {
            for job in &batch {
                exec_cached(c, "SAVEPOINT issuance")?;
                let outcome = record_one(c, job);
                if !matches!(outcome, Ok(RecordOutcome::Recorded)) {
                    // This issuance alone is undone; the others in the batch stay.
                    exec_cached(c, "ROLLBACK TO issuance")?;
                }
                exec_cached(c, "RELEASE issuance")?;
                outcomes.push(outcome);
            }
            exec_cached(c, "COMMIT")
        })();
        if recorded.is_err() && !c.is_autocommit() {
            let _ = exec_cached(c, "ROLLBACK");
        }
        recorded
    })();
    match committed {
        Ok(()) => {
            for (job, outcome) in batch.into_iter().zip(outcomes) {
                let _ = job.reply.send(outcome);
            }
        }
        Err(e) => {
            for job in batch {
                let _ = job
                    .reply
                    .send(Err(crate::error::storage_error("recording the issuance failed", &e)));
            }
        }
    }
}

fn record_one(c: &Connection, job: &Issuance) -> Result<RecordOutcome> {
    let cert = &job.cert;
    if let Consumes::Claim(hash) = &job.consumes {
        let n = c
            .prepare_cached(
                "UPDATE claims SET uses = uses + 1 WHERE hash = ?1 AND uses < max_uses AND revoked_at IS NULL",
            )?
            .execute(params![hash])?;
        if n != 1 {
            return Ok(RecordOutcome::ClaimUnavailable);
        }
    }
    if let Some(p) = job.consumes.provisioned(cert) {
        let n = c
            .prepare_cached(
                "INSERT OR IGNORE INTO provisioned (key, identity, source, at, serial, spki_sha256) VALUES (?1,?2,?3,?4,?5,?6)",
            )?
            .execute(params![p.key, p.identity, p.source, ts(p.at), p.serial, p.spki_sha256])?;
        if n != 1 {
            return Ok(RecordOutcome::AlreadyProvisioned);
        }
    }
    if let Consumes::Token(hash) = &job.consumes {
        let n = c
            .prepare_cached(
                "UPDATE tokens SET used_at = ?2, used_serial = ?3, used_spki = ?4 WHERE hash = ?1 AND used_at IS NULL AND revoked_at IS NULL",
            )?
            .execute(params![hash, ts(cert.issued_at), cert.serial, cert.spki_sha256])?;
        if n != 1 {
            return Ok(RecordOutcome::TokenAlreadyUsed);
        }
    }
    if let Some(parent) = &cert.parent_serial {
        let n = c
            .prepare_cached(
                "UPDATE certs SET superseded_by = ?2, superseded_at = ?3 WHERE serial = ?1 AND superseded_by IS NULL",
            )?
            .execute(params![parent, cert.serial, ts(cert.issued_at)])?;
        if n != 1 {
            let child: Option<String> = c
                .prepare_cached("SELECT superseded_by FROM certs WHERE serial = ?1")?
                .query_row(params![parent], |r| r.get(0))
                .optional()?
                .flatten();
            return match child {
                Some(child) => Ok(RecordOutcome::ParentAlreadyRenewed { child }),
                None => {
                    Err(CaError::Storage(format!("parent certificate {parent} is not recorded")))
                }
            };
        }
    }
    if let Some(serial) = key_owner(c, &cert.identity, &cert.spki_sha256)? {
        return Ok(RecordOutcome::KeyReused { serial });
    }
    c.prepare_cached(
        "INSERT INTO certs (serial, identity, group_name, not_before, not_after, issued_at, spki_sha256, der, renewed_from) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)",
    )?
    .execute(params![
        cert.serial,
        cert.identity,
        cert.group,
        ts(cert.not_before),
        ts(cert.not_after),
        ts(cert.issued_at),
        cert.spki_sha256,
        cert.der,
        cert.parent_serial
    ])?;
    insert_audit(c, &job.audit)?;
    Ok(RecordOutcome::Recorded)
}

const KEY_OWNER: &str =
    "SELECT serial FROM certs WHERE identity = ?1 AND spki_sha256 = ?2 ORDER BY issued_at LIMIT 1";

fn key_owner(c: &Connection, identity: &str, spki: &str) -> rusqlite::Result<Option<String>> {
    c.prepare_cached(KEY_OWNER)?.query_row(params![identity, spki], |r| r.get(0)).optional()
}

/// The certificate of `identity` with this key (when known) and `group`'s policy.
fn key_and_policy(
    c: &Connection,
    identity: &str,
    spki: Option<&str>,
    group: &str,
) -> Result<(Option<String>, Option<GroupPolicy>)> {
    let key_serial = match spki {
        Some(spki) => key_owner(c, identity, spki)?,
        None => None,
    };
    Ok((key_serial, read_policy(c, group)?))
}

/// The token with this hash, if any.
fn read_token(c: &Connection, hash: &str) -> rusqlite::Result<Option<TokenRecord>> {
    static BY_HASH: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?1"));
    c.prepare_cached(&BY_HASH)?.query_row(params![hash], token_row).optional()
}

fn read_cert(c: &Connection, serial: &str) -> rusqlite::Result<Option<CertRecord>> {
    c.prepare_cached("SELECT * FROM certs WHERE serial = ?1")?
        .query_row(params![serial], cert_from_row)
        .optional()
}

fn read_policy(c: &Connection, group: &str) -> Result<Option<GroupPolicy>> {
    let json: Option<String> = c
        .prepare_cached("SELECT json FROM policies WHERE group_name = ?1")?
        .query_row(params![group], |r| r.get(0))
        .optional()?;
    json.map(|j| {
        serde_json::from_str(&j)
            .map_err(|e| CaError::Storage(format!("policy of group {group:?}: {e}")))
    })
    .transpose()
}

fn cert_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CertRecord> {
    let revoked_at: Option<i64> = r.get("revoked_at")?;
    let reason: Option<String> = r.get("revoke_reason")?;
    let revocation = revoked_at.map(|at| Revocation {
        at: from_ts(at),
        reason: reason.and_then(|s| s.parse().ok()).unwrap_or(Reason::Unspecified),
    });
    Ok(CertRecord {
        serial: r.get("serial")?,
        identity: r.get("identity")?,
        group: r.get("group_name")?,
        not_before: from_ts(r.get("not_before")?),
        not_after: from_ts(r.get("not_after")?),
        issued_at: from_ts(r.get("issued_at")?),
        spki_sha256: r.get("spki_sha256")?,
        der: r.get("der")?,
        parent_serial: r.get("renewed_from")?,
        superseded_by: r.get("superseded_by")?,
        superseded_at: r.get::<_, Option<i64>>("superseded_at")?.map(from_ts),
        revocation,
    })
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn put_token(&self, t: TokenRecord, audit: AuditEvent) -> Result<()> {
        self.with(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO tokens (hash, identity, group_name, created_at, expires_at) VALUES (?1,?2,?3,?4,?5)",
                params![t.hash, t.identity, t.group, ts(t.created_at), ts(t.expires_at)],
            )?;
            insert_audit(&tx, &audit)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn token(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let hash = hash.to_owned();
        self.with(move |c| Ok(read_token(c, &hash)?)).await
    }

    async fn tokens(&self, filter: TokenFilter) -> Result<Vec<TokenRecord>> {
        self.with(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens
                 WHERE (?1 IS NULL OR identity = ?1) AND (?2 IS NULL OR group_name = ?2)
                   AND (?3 = 0 OR (used_at IS NULL AND revoked_at IS NULL))
                 ORDER BY created_at, identity"
            ))?;
            let rows = stmt
                .query_map(params![filter.identity, filter.group, filter.unused_only], token_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn revoke_token(
        &self,
        hash: &str,
        at: OffsetDateTime,
        audit: AuditEvent,
    ) -> Result<TokenRevokeOutcome> {
        let hash = hash.to_owned();
        self.with(move |c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE tokens SET revoked_at = ?2 WHERE hash = ?1 AND used_at IS NULL AND revoked_at IS NULL",
                params![hash, ts(at)],
            )?;
            if n == 1 {
                insert_audit(&tx, &audit)?;
                tx.commit()?;
                return Ok(TokenRevokeOutcome::Revoked);
            }
            let found = read_token(&tx, &hash)?;
            Ok(match found {
                None => TokenRevokeOutcome::NotFound,
                Some(TokenRecord { used: Some(u), .. }) => TokenRevokeOutcome::Used(u),
                Some(TokenRecord { revoked_at: Some(at), .. }) => {
                    TokenRevokeOutcome::AlreadyRevoked(at)
                }
                Some(_) => {
                    return Err(CaError::Storage("token neither revocable nor spent".into()));
                }
            })
        })
        .await
    }

    async fn record_issuance(
        &self,
        cert: CertRecord,
        consumes: Consumes,
        audit: AuditEvent,
    ) -> Result<RecordOutcome> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        // Committed with the other issuances of the store thread's round.
        self.send(Job::Issue(Box::new(Issuance { cert, consumes, audit, reply })))?;
        answer
            .await
            .map_err(|_| CaError::Storage("the issuance batch was dropped unanswered".into()))?
    }

    async fn put_claim(&self, k: ClaimRecord, audit: AuditEvent) -> Result<()> {
        let max = i64::try_from(k.max_uses).map_err(CaError::encoding("claim uses"))?;
        self.with(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO claims (hash, id, group_name, template, max_uses, uses, created_at, expires_at) VALUES (?1,?2,?3,?4,?5,0,?6,?7)",
                params![k.hash, k.id, k.group, k.identity_template, max, ts(k.created_at), ts(k.expires_at)],
            )?;
            insert_audit(&tx, &audit)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn claim(&self, hash: &str) -> Result<Option<ClaimRecord>> {
        let hash = hash.to_owned();
        self.with(move |c| {
            Ok(c.prepare_cached(&format!("SELECT {CLAIM_COLUMNS} FROM claims WHERE hash = ?1"))?
                .query_row(params![hash], claim_row)
                .optional()?)
        })
        .await
    }

    async fn claims(&self) -> Result<Vec<ClaimRecord>> {
        self.with(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {CLAIM_COLUMNS} FROM claims ORDER BY created_at, id"
            ))?;
            let rows = stmt.query_map([], claim_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn revoke_claim(
        &self,
        hash: &str,
        at: OffsetDateTime,
        audit: AuditEvent,
    ) -> Result<bool> {
        let hash = hash.to_owned();
        self.with(move |c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE claims SET revoked_at = ?2 WHERE hash = ?1 AND revoked_at IS NULL",
                params![hash, ts(at)],
            )?;
            if n == 1 {
                insert_audit(&tx, &audit)?;
                tx.commit()?;
            }
            Ok(n == 1)
        })
        .await
    }

    async fn provisioned(&self, key: &str) -> Result<Option<Provisioned>> {
        let key = key.to_owned();
        self.with(move |c| {
            Ok(c.prepare_cached(
                "SELECT key, identity, source, at, serial, spki_sha256 FROM provisioned WHERE key = ?1",
            )?
            .query_row(params![key], |r| {
                Ok(Provisioned {
                    key: r.get(0)?,
                    identity: r.get(1)?,
                    source: r.get(2)?,
                    at: from_ts(r.get(3)?),
                    serial: r.get(4)?,
                    spki_sha256: r.get(5)?,
                })
            })
            .optional()?)
        })
        .await
    }

    async fn reset_provisioned(&self, identity: &str, audit: AuditEvent) -> Result<u64> {
        let identity = identity.to_owned();
        self.with(move |c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "DELETE FROM provisioned WHERE identity = ?1 AND source != ?2",
                params![identity, Provisioned::BLOCKED],
            )?;
            if n > 0 {
                insert_audit(&tx, &audit)?;
                tx.commit()?;
            }
            Ok(n as u64)
        })
        .await
    }

    async fn block_factory_cert(
        &self,
        cert_sha256: &str,
        at: OffsetDateTime,
        audit: AuditEvent,
    ) -> Result<()> {
        let key = Provisioned::factory_key(cert_sha256);
        self.with(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO provisioned (key, identity, source, at, serial, spki_sha256) VALUES (?1, '', ?2, ?3, '', '')
                 ON CONFLICT(key) DO UPDATE SET source = excluded.source, at = excluded.at",
                params![key, Provisioned::BLOCKED, ts(at)],
            )?;
            insert_audit(&tx, &audit)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn put_factory_ca(&self, f: FactoryCaRecord, audit: AuditEvent) -> Result<()> {
        self.with(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT OR REPLACE INTO factory_cas (id, group_name, subject, der, identity_from, template, added_at) VALUES (?1,?2,?3,?4,?5,?6,?7)",
                params![f.id, f.group, f.subject, f.der, f.identity_from.name(), f.identity_template, ts(f.added_at)],
            )?;
            insert_audit(&tx, &audit)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn factory_cas(&self) -> Result<Vec<FactoryCaRecord>> {
        self.with(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, group_name, subject, der, identity_from, template, added_at FROM factory_cas ORDER BY id",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(FactoryCaRecord {
                        id: r.get(0)?,
                        group: r.get(1)?,
                        subject: r.get(2)?,
                        der: r.get(3)?,
                        identity_from: r.get::<_, String>(4)?.parse().map_err(|e: String| {
                            rusqlite::Error::FromSqlConversionFailure(
                                4,
                                rusqlite::types::Type::Text,
                                e.into(),
                            )
                        })?,
                        identity_template: r.get(5)?,
                        added_at: from_ts(r.get(6)?),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn remove_factory_ca(&self, id: &str, audit: AuditEvent) -> Result<bool> {
        let id = id.to_owned();
        self.with(move |c| {
            let tx = c.transaction()?;
            let n = tx.execute("DELETE FROM factory_cas WHERE id = ?1", params![id])?;
            if n == 1 {
                insert_audit(&tx, &audit)?;
                tx.commit()?;
            }
            Ok(n == 1)
        })
        .await
    }

    async fn cert(&self, serial: &str) -> Result<Option<CertRecord>> {
        let serial = serial.to_owned();
        self.with(move |c| Ok(read_cert(c, &serial)?)).await
    }

    async fn cert_by_key(&self, identity: &str, spki_sha256: &str) -> Result<Option<String>> {
        let (identity, spki) = (identity.to_owned(), spki_sha256.to_owned());
        self.with(move |c| Ok(key_owner(c, &identity, &spki)?)).await
    }

    /// One hop to the store's thread for all three reads (each hop may wake it, and waits
    /// behind the work queued before it).
    async fn enrolment_reads(
        &self,
        token_hash: &str,
        identity: &str,
        spki_sha256: Option<&str>,
    ) -> Result<EnrolmentReads> {
        let (hash, identity, spki) =
            (token_hash.to_owned(), identity.to_owned(), spki_sha256.map(str::to_owned));
        self.with(move |c| {
            read_together(c, |c| {
                let Some(token) = read_token(c, &hash)? else {
                    return Ok(EnrolmentReads::default());
                };
                let (key_serial, policy) =
                    key_and_policy(c, &identity, spki.as_deref(), &token.group)?;
                Ok(EnrolmentReads { token: Some(token), key_serial, policy })
            })
        })
        .await
    }

    /// One hop, as [`Self::enrolment_reads`].
    async fn renewal_reads(&self, serial: &str, spki_sha256: Option<&str>) -> Result<RenewalReads> {
        let (serial, spki) = (serial.to_owned(), spki_sha256.map(str::to_owned));
        self.with(move |c| {
            read_together(c, |c| {
                let Some(cert) = read_cert(c, &serial)? else {
                    return Ok(RenewalReads::default());
                };
                let (key_serial, policy) =
                    key_and_policy(c, &cert.identity, spki.as_deref(), &cert.group)?;
                Ok(RenewalReads { cert: Some(cert), key_serial, policy })
            })
        })
        .await
    }

    async fn certs(&self, filter: CertFilter) -> Result<Vec<CertRecord>> {
        self.with(move |c| {
            let mut sql = String::from(
                "SELECT * FROM certs WHERE (?1 IS NULL OR identity = ?1) AND (?2 = 0 OR revoked_at IS NOT NULL)",
            );
            if filter.superseded_unrevoked_before.is_some() {
                sql.push_str(" AND superseded_at IS NOT NULL AND revoked_at IS NULL AND superseded_at < ?3");
            } else {
                sql.push_str(" AND ?3 IS NULL");
            }
            sql.push_str(" ORDER BY issued_at, serial");
            let mut st = c.prepare(&sql)?;
            let rows = st
                .query_map(
                    params![
                        filter.identity,
                        filter.revoked_only,
                        filter.superseded_unrevoked_before.map(ts)
                    ],
                    cert_from_row,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn revoke(
        &self,
        serial: &str,
        rev: Revocation,
        audit: AuditEvent,
    ) -> Result<RevokeOutcome> {
        let serial = serial.to_owned();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let existing = tx
                .query_row("SELECT * FROM certs WHERE serial = ?1", params![serial], cert_from_row)
                .optional()?;
            let Some(existing) = existing else { return Ok(RevokeOutcome::NotFound) };
            if let Some(r) = existing.revocation {
                return Ok(RevokeOutcome::AlreadyRevoked(r));
            }
            tx.execute(
                "UPDATE certs SET revoked_at = ?2, revoke_reason = ?3 WHERE serial = ?1",
                params![serial, ts(rev.at), rev.reason.name()],
            )?;
            tx.execute(
                "INSERT INTO counters (name, value) VALUES ('revocations', 1) ON CONFLICT(name) DO UPDATE SET value = value + 1",
                [],
            )?;
            insert_audit(&tx, &audit)?;
            tx.commit()?;
            Ok(RevokeOutcome::Revoked)
        })
        .await
    }

    async fn revocation_generation(&self) -> Result<u64> {
        self.with(|c| {
            let v: Option<i64> = c
                .query_row("SELECT value FROM counters WHERE name = 'revocations'", [], |r| {
                    r.get(0)
                })
                .optional()?;
            Ok(v.unwrap_or(0).max(0) as u64)
        })
        .await
    }

    async fn policy(&self, group: &str) -> Result<Option<GroupPolicy>> {
        let group = group.to_owned();
        self.with(move |c| read_policy(c, &group)).await
    }

    async fn set_policy(&self, group: &str, policy: GroupPolicy, audit: AuditEvent) -> Result<()> {
        let group = group.to_owned();
        let json = serde_json::to_string(&policy).map_err(|e| CaError::Storage(e.to_string()))?;
        self.with(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO policies (group_name, json, updated_at) VALUES (?1, ?2, ?3) ON CONFLICT(group_name) DO UPDATE SET json = excluded.json, updated_at = excluded.updated_at",
                params![group, json, ts(audit.at)],
            )?;
            insert_audit(&tx, &audit)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn policies(&self) -> Result<Vec<(String, GroupPolicy)>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT group_name, json FROM policies ORDER BY group_name")?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter()
                .map(|(g, j)| {
                    serde_json::from_str(&j)
                        .map(|p| (g.clone(), p))
                        .map_err(|e| CaError::Storage(format!("policy of group {g:?}: {e}")))
                })
                .collect()
        })
        .await
    }

    async fn next_crl_number(&self, scope: &str) -> Result<u64> {
        let name = format!("crl_number:{scope}");
        self.with(move |c| {
            let v: i64 = c.query_row(
                "INSERT INTO counters (name, value) VALUES (?1, 1) ON CONFLICT(name) DO UPDATE SET value = value + 1 RETURNING value",
                params![name],
                |r| r.get(0),
            )?;
            Ok(v.max(0) as u64)
        })
        .await
    }

    async fn audit(&self, event: AuditEvent) -> Result<()> {
        self.with(move |c| {
            insert_audit(c, &event)?;
            Ok(())
        })
        .await
    }

    async fn audit_log(&self, limit: usize) -> Result<Vec<AuditEvent>> {
        self.with(move |c| {
            let mut st = c.prepare(
                "SELECT at, actor, action, subject, detail, remote FROM audit ORDER BY id DESC LIMIT ?1",
            )?;
            let rows = st
                .query_map(params![limit as i64], |r| {
                    Ok(AuditEvent {
                        at: from_ts(r.get(0)?),
                        actor: r.get(1)?,
                        action: r.get(2)?,
                        subject: r.get(3)?,
                        detail: r.get(4)?,
                        remote: r.get(5)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn put_device(&self, d: DeviceRecord) -> Result<()> {
        let report =
            serde_json::to_string(&d.report).map_err(|e| CaError::Storage(e.to_string()))?;
        // A check-in record survives a crash of the CA but not a power loss (no fsync of
        // its own: synchronous=NORMAL in WAL mode); the device checks in again within the
        // hour. Issuances keep synchronous=FULL: the setting is restored before the
        // connection is given back.
        self.with(move |c| {
            exec_cached(c, "PRAGMA synchronous = NORMAL")?;
            let r = c
                .prepare_cached(&format!(
                    "INSERT OR REPLACE INTO devices ({DEVICE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                ))
                .and_then(|mut st| {
                    st.execute(params![d.identity, d.group, ts(d.last_seen), d.serial, d.cert_status, d.remote, report])
                });
            exec_cached(c, "PRAGMA synchronous = FULL")?;
            r?;
            Ok(())
        })
        .await
    }

    async fn device(&self, identity: &str) -> Result<Option<DeviceRecord>> {
        let identity = identity.to_owned();
        self.with(move |c| {
            Ok(c.query_row(
                &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE identity = ?1"),
                params![identity],
                device_row,
            )
            .optional()?)
        })
        .await
    }

    async fn devices(&self) -> Result<Vec<DeviceRecord>> {
        self.with(move |c| {
            let mut st =
                c.prepare(&format!("SELECT {DEVICE_COLUMNS} FROM devices ORDER BY identity"))?;
            let rows = st.query_map([], device_row)?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn forget_devices(&self, before: OffsetDateTime) -> Result<u64> {
        self.with(move |c| {
            Ok(c.execute("DELETE FROM devices WHERE last_seen < ?1", params![ts(before)])? as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(serial: &str) -> CertRecord {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        CertRecord {
            serial: serial.into(),
            identity: format!("dev-{serial}"),
            group: "default".into(),
            not_before: now,
            not_after: now + time::Duration::days(7),
            issued_at: now,
            spki_sha256: format!("spki-{serial}"),
            der: vec![0x30, 0x00],
            parent_serial: None,
            superseded_by: None,
            superseded_at: None,
            revocation: None,
        }
    }

    fn audit(serial: &str) -> AuditEvent {
        AuditEvent {
            at: OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
            actor: "test".into(),
            action: "issue".into(),
            subject: serial.into(),
            detail: String::new(),
            remote: None,
        }
    }

    /// Concurrent issuances share commits, and each keeps its own outcome: a used token
    /// and a duplicate serial fail alone, everything else is recorded.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn group_commit_keeps_each_outcome_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("ca.db")).unwrap();
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        store
            .put_token(
                TokenRecord {
                    hash: "t1".into(),
                    identity: "dev".into(),
                    group: "default".into(),
                    created_at: now,
                    expires_at: now + time::Duration::hours(1),
                    used: None,
                    revoked_at: None,
                },
                audit("t1"),
            )
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..64 {
            let store = store.clone();
            // Two issuances race for token t1; serial 10 is issued twice.
            let serial = if i == 63 { "10".to_string() } else { i.to_string() };
            let token = if i < 2 { Consumes::Token("t1".into()) } else { Consumes::Nothing };
            let mut rec = cert(&serial);
            if i == 63 {
                // Another identity and key, so it is the serial alone that collides.
                rec.identity = "dev-other".into();
                rec.spki_sha256 = "spki-other".into();
            }
            tasks.push(tokio::spawn(async move {
                store.record_issuance(rec, token, audit(&serial)).await
            }));
        }
        let (mut recorded, mut token_used, mut failed) = (0, 0, 0);
        for t in tasks {
            match t.await.unwrap() {
                Ok(RecordOutcome::Recorded) => recorded += 1,
                Ok(RecordOutcome::TokenAlreadyUsed) => token_used += 1,
                Ok(other) => panic!("unexpected outcome {other:?}"),
                Err(_) => failed += 1,
            }
        }
        assert_eq!((recorded, token_used, failed), (62, 1, 1));
        assert_eq!(store.certs(CertFilter::default()).await.unwrap().len(), 62);
        let used = store.token("t1").await.unwrap().unwrap().used.unwrap();
        assert!(used.serial == "0" || used.serial == "1", "{}", used.serial);
        // Reopened from disk: what was answered is there.
        drop(store);
        let again = SqliteStore::open(&dir.path().join("ca.db")).unwrap();
        assert_eq!(again.certs(CertFilter::default()).await.unwrap().len(), 62);
    }

    /// The store's thread outlives a job that panics (its caller gets an error, an open
    /// transaction rolls back), and the last handle closes the database: the WAL is
    /// checkpointed and removed before `drop` returns.
    #[tokio::test]
    async fn the_store_thread_survives_a_panic_and_closes_with_the_last_handle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.db");
        let store = SqliteStore::open(&path).unwrap();
        let e = store
            .with(|c| -> Result<()> {
                let tx = c.transaction()?;
                tx.execute(
                    "INSERT INTO policies (group_name, json, updated_at) VALUES ('g', '{}', 0)",
                    [],
                )?;
                panic!("a bug in a store call");
            })
            .await
            .unwrap_err();
        assert!(e.to_string().contains("store task failed"), "{e}");
        assert_eq!(store.policies().await.unwrap(), Vec::new(), "rolled back");
        // A transaction begun by statement has no guard to roll it back as it unwinds:
        // the thread ends it before the next job, which would otherwise run inside it.
        let e = store
            .with(|c| -> Result<()> {
                exec_cached(c, "BEGIN IMMEDIATE")?;
                c.execute(
                    "INSERT INTO policies (group_name, json, updated_at) VALUES ('h', '{}', 0)",
                    [],
                )?;
                panic!("a bug between BEGIN and COMMIT");
            })
            .await
            .unwrap_err();
        assert!(e.to_string().contains("store task failed"), "{e}");
        assert!(store.with(|c| Ok(c.is_autocommit())).await.unwrap(), "no transaction left open");
        assert_eq!(store.policies().await.unwrap(), Vec::new(), "rolled back");
        store.record_issuance(cert("01"), Consumes::Nothing, audit("01")).await.unwrap();
        let other = store.clone();
        drop(store);
        assert_eq!(other.certs(CertFilter::default()).await.unwrap().len(), 1);
        drop(other);
        let wal = dir.path().join("ca.db-wal");
        assert!(!wal.exists(), "the connection was closed, and its WAL with it");
    }

    /// A certificate lookup by identity (the key's earlier use, `certs --identity`) is a
    /// search of `certs_identity_key`, and an older database loses the index on identity alone.
    #[tokio::test]
    async fn lookups_by_identity_use_the_identity_key_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.db");
        drop(SqliteStore::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE INDEX certs_identity ON certs(identity)")
            .unwrap();
        let s = SqliteStore::open(&path).unwrap();
        let (indexes, plans) = s
            .with(|c| {
                let indexes: Vec<String> = c
                    .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'certs'")?
                    .query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                let mut plans = Vec::new();
                for q in [
                    "SELECT serial FROM certs WHERE identity = 'a' AND spki_sha256 = 'b' ORDER BY issued_at LIMIT 1",
                    "SELECT * FROM certs WHERE identity = 'a'",
                ] {
                    let plan: Vec<String> = c
                        .prepare(&format!("EXPLAIN QUERY PLAN {q}"))?
                        .query_map([], |r| r.get(3))?
                        .collect::<rusqlite::Result<_>>()?;
                    plans.push(plan.join("; "));
                }
                Ok((indexes, plans))
            })
            .await
            .unwrap();
        assert!(!indexes.iter().any(|i| i == "certs_identity"), "{indexes:?}");
        for plan in plans {
            assert!(plan.contains("USING INDEX certs_identity_key"), "{plan}");
        }
    }

    /// A check-in's write lowers the connection's durability for itself only.
    #[tokio::test]
    async fn a_check_in_leaves_issuances_fully_durable() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("ca.db")).unwrap();
        let d = DeviceRecord {
            identity: "dev-1".into(),
            group: "default".into(),
            last_seen: OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
            serial: "0a".into(),
            cert_status: "valid".into(),
            remote: None,
            report: Default::default(),
        };
        s.put_device(d.clone()).await.unwrap();
        assert_eq!(s.device("dev-1").await.unwrap(), Some(d));
        // 2 = FULL: what every issuance's commit needs.
        let sync: i64 =
            s.with(|c| Ok(c.query_row("PRAGMA synchronous", [], |r| r.get(0))?)).await.unwrap();
        assert_eq!(sync, 2);
    }

    /// A cached statement is compiled once: looking up a key's earlier certificate with new
    /// values, as every enrolment does, does not make SQLite parse and plan it again.
    #[tokio::test]
    async fn cached_statements_are_not_compiled_again_for_new_values() {
        use rusqlite::StatementStatus;
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("ca.db")).unwrap();
        let recompiled = s
            .with(|c| {
                for i in 0..5 {
                    key_owner(c, &format!("dev-{i}"), &format!("{i:064x}"))?;
                }
                Ok(c.prepare_cached(KEY_OWNER)?.get_status(StatementStatus::RePrepare))
            })
            .await
            .unwrap();
        assert_eq!(recompiled, 0, "the key lookup was compiled again {recompiled} times");
    }

    /// A database made before tokens could be revoked (no `revoked_at`) opens, keeps its
    /// tokens, and can revoke them.
    #[tokio::test]
    async fn a_database_from_before_token_revocation_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lanyard-ca.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE tokens (hash TEXT PRIMARY KEY, identity TEXT NOT NULL, group_name TEXT NOT NULL,
                   created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, used_at INTEGER,
                   used_serial TEXT, used_spki TEXT);
                 INSERT INTO tokens (hash, identity, group_name, created_at, expires_at)
                   VALUES ('t-old', 'dev-old', 'default', 1800000000, 1800003600);",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let t = store.token("t-old").await.unwrap().expect("kept");
        assert_eq!((t.identity.as_str(), t.revoked_at), ("dev-old", None));
        let at = OffsetDateTime::from_unix_timestamp(1_800_000_100).unwrap();
        let outcome = store.revoke_token("t-old", at, audit("t-old")).await.unwrap();
        assert_eq!(outcome, TokenRevokeOutcome::Revoked);
        // Opened again (the column exists now): nothing to add, nothing lost.
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.token("t-old").await.unwrap().unwrap().revoked_at, Some(at));
        // The migration was versioned, and a copy of the old database taken first (once).
        let version: i64 = store
            .with(|c| Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let backups: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".before-schema-"))
            .collect();
        assert_eq!(backups.len(), 1, "{backups:?}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(backups[0].metadata().unwrap().permissions().mode() & 0o777, 0o600);
        let old = Connection::open(backups[0].path()).unwrap();
        let (n, cols): (i64, i64) = old
            .query_row(
                "SELECT (SELECT count(*) FROM tokens), (SELECT count(*) FROM pragma_table_info('tokens') WHERE name = 'revoked_at')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((n, cols), (1, 0), "the backup is the database as it was");
    }

    /// A schema-1 database (before zero-touch provisioning) gains the claim, provisioning and
    /// factory-CA tables, with a copy taken first.
    #[tokio::test]
    async fn a_schema_1_database_gains_provisioning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lanyard-ca.db");
        drop(SqliteStore::open(&path).unwrap());
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "DROP TABLE claims; DROP TABLE provisioned; DROP TABLE factory_cas; PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let claim = ClaimRecord {
            hash: "c1".into(),
            id: "c1".into(),
            group: "default".into(),
            identity_template: "s-{id}.example.com".into(),
            max_uses: 2,
            uses: 0,
            created_at: now,
            expires_at: now + time::Duration::DAY,
            revoked_at: None,
        };
        store.put_claim(claim, audit("c1")).await.unwrap();
        assert_eq!(store.claims().await.unwrap().len(), 1);
        assert!(store.factory_cas().await.unwrap().is_empty());
        let backups = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".before-schema-2-"))
            .count();
        assert_eq!(backups, 1);
    }

    /// A new database gets the current schema version and no backup; one written by a newer
    /// lanyard-ca is refused, naming what to do, and left as it was.
    #[tokio::test]
    async fn schema_versions_are_recorded_and_a_newer_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lanyard-ca.db");
        drop(SqliteStore::open(&path).unwrap());
        let count = || std::fs::read_dir(dir.path()).unwrap().count();
        let files = count();
        drop(SqliteStore::open(&path).unwrap());
        assert_eq!(count(), files, "no backup when nothing is migrated");
        {
            let c = Connection::open(&path).unwrap();
            c.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        }
        let e = SqliteStore::open(&path).expect_err("newer");
        assert!(e.to_string().contains("newer lanyard-ca"), "{e}");
        let c = Connection::open(&path).unwrap();
        let v: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, SCHEMA_VERSION + 1, "left as it was");
    }
}
