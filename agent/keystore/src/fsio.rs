//! Private files and directories, written so that a crash leaves either the old or the new
//! content and never a mixture: write a temp file, fsync it, rename it over the old one,
//! fsync the directory.
//!
//! Permissions: directories 0700, files 0600, and anything found with group or other
//! access is refused rather than silently fixed (someone may already have read it). On
//! Windows the mode checks do not apply: there the directory's ACL protects the files, and
//! `keyring` (Credential Manager) is the store to use. Directory fsync is a no-op there.

use crate::error::StoreError;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

type Result<T> = std::result::Result<T, StoreError>;

/// Mode of every directory the store creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file the store creates.
pub const FILE_MODE: u32 = 0o600;

/// Suffix of the temp files [`replace_file`] renames into place; leftovers from a crash are
/// removed by the next `store()`.
pub const TEMP_SUFFIX: &str = ".tmp";

/// Creates `dir` (and missing parents) as 0700 if it does not exist, then checks it.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        builder.mode(DIR_MODE);
        builder.create(dir).map_err(StoreError::io("create directory", dir))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    check_private_dir(dir).map(|_| ())
}

/// Checks that `dir` is a real directory (not a symlink) that group and others cannot
/// access. `Ok(false)` if it does not exist.
pub fn check_private_dir(dir: &Path) -> Result<bool> {
    let meta = match fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(StoreError::io("inspect", dir)(e)),
    };
    if meta.file_type().is_symlink() {
        return Err(insecure(
            dir,
            "it is a symbolic link".into(),
            "configure the real directory instead".into(),
        ));
    }
    if !meta.is_dir() {
        return Err(insecure(
            dir,
            "it is not a directory".into(),
            "move it away or configure another state directory".into(),
        ));
    }
    check_mode(dir, &meta, DIR_MODE)?;
    Ok(true)
}

/// Checks that an existing file is a regular file that group and others cannot access.
pub fn check_private_file(path: &Path, meta: &fs::Metadata) -> Result<()> {
    if meta.file_type().is_symlink() || !meta.is_file() {
        return Err(insecure(
            path,
            "it is not a regular file".into(),
            "remove it and enrol again".into(),
        ));
    }
    check_mode(path, meta, FILE_MODE)
}

#[cfg(unix)]
fn check_mode(path: &Path, meta: &fs::Metadata, want: u32) -> Result<()> {
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(insecure(
            path,
            format!("its mode is {mode:04o}, which lets group or other users in"),
            format!(
                "a private key must be readable by its owner only: check who else could have read \
                 it, then run `chmod {want:o} {}` (or remove it and enrol again)",
                path.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_mode(_path: &Path, _meta: &fs::Metadata, _want: u32) -> Result<()> {
    Ok(())
}

fn insecure(path: &Path, problem: String, fix: String) -> StoreError {
    StoreError::Insecure { path: path.to_path_buf(), problem, fix }
}

/// Opens a new file 0600 for writing; fails if it exists.
fn create_new_private(path: &Path) -> Result<File> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(FILE_MODE);
    opts.open(path).map_err(StoreError::io("create", path))
}

/// Writes `bytes` to a new file 0600 at `path` (which must not exist) and fsyncs the file
/// and its directory. A crash part-way leaves a partial file under this fresh name, which
/// nothing references; `failpoint` names the crash-test hooks between the steps.
pub fn write_new_private(path: &Path, bytes: &[u8], failpoint: &str) -> Result<()> {
    let _ = failpoint; // only read by the crash tests' hooks
    let mut f = create_new_private(path)?;
    let (first, rest) = bytes.split_at(bytes.len() / 2);
    f.write_all(first).map_err(StoreError::io("write", path))?;
    crash_point!("{failpoint}:mid-write");
    f.write_all(rest).map_err(StoreError::io("write", path))?;
    crash_point!("{failpoint}:written");
    f.sync_all().map_err(StoreError::io("fsync", path))?;
    drop(f);
    sync_parent(path)?;
    crash_point!("{failpoint}:synced");
    Ok(())
}

/// Atomically replaces `path` with `bytes` (0600): temp file, fsync, read back and compare,
/// rename, fsync the directory. Readers see the old content or the new, never a mixture;
/// after a crash, the same holds for what is on disk.
pub fn replace_file(path: &Path, bytes: &[u8], failpoint: &str) -> Result<()> {
    let _ = failpoint;
    let dir = parent_of(path);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}{TEMP_SUFFIX}", random_hex_id()?));
    let result = (|| {
        write_new_private(&tmp, bytes, failpoint)?;
        // Read back before the rename: the page cache is what the rename publishes, so this
        // catches a short write or a file system that mangles data, not media errors.
        let back = read_bounded(&tmp, bytes.len() as u64 + 1)?;
        if back.as_deref().map(Vec::as_slice) != Some(bytes) {
            return Err(StoreError::Io {
                op: "read back",
                path: tmp.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "content differs from what was written",
                ),
            });
        }
        fs::rename(&tmp, path).map_err(StoreError::io("rename into place", path))?;
        crash_point!("{failpoint}:renamed");
        sync_dir(dir)?;
        crash_point!("{failpoint}:committed");
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads a private file of at most `max` bytes into wiped-on-drop memory, checking its
/// permissions first. `Ok(None)` if it does not exist.
pub fn read_bounded(path: &Path, max: u64) -> Result<Option<Zeroizing<Vec<u8>>>> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io("inspect", path)(e)),
    };
    check_private_file(path, &meta)?;
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io("open", path)(e)),
    };
    let len = f.metadata().map_err(StoreError::io("inspect", path))?.len();
    if len > max {
        return Err(StoreError::Io {
            op: "read",
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{len} bytes, more than the {max} expected"),
            ),
        });
    }
    // Sized up front so the buffer never reallocates and leaves a copy behind.
    let mut buf = Zeroizing::new(Vec::with_capacity(usize::try_from(len).unwrap_or(0) + 1));
    f.take(max).read_to_end(&mut buf).map_err(StoreError::io("read", path))?;
    Ok(Some(buf))
}

/// Removes a file; a file that is already gone is not an error.
pub fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io("remove", path)(e)),
    }
}

/// Makes a rename, creation or removal in `dir` durable.
#[cfg(unix)]
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(StoreError::io("fsync directory", dir))
}

/// Windows cannot open a directory as a file without extra flags (and unsafe code);
/// NTFS journals renames itself.
#[cfg(not(unix))]
pub fn sync_dir(_dir: &Path) -> Result<()> {
    Ok(())
}

fn sync_parent(path: &Path) -> Result<()> {
    sync_dir(parent_of(path))
}

fn parent_of(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// 128 random bits as 32 lowercase hex digits: a fresh name per key generation, so a new
/// key never overwrites the current one.
pub fn random_hex_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| StoreError::Entropy { reason: e.to_string() })?;
    Ok(hex(&bytes))
}

/// True for the ids [`random_hex_id`] makes.
pub fn is_hex_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// The state directory's advisory lock, held for the whole of `store()` and `remove()` so
/// two processes (the daemon and `lanyard renew`) never interleave their swaps. The OS
/// releases it when the holder dies, so a crash never leaves it stuck. `load()` does not
/// take it: it reads the pointer, and retries if a concurrent swap removed the key it named.
#[derive(Debug)]
pub struct StateLock {
    file: File,
    path: PathBuf,
}

/// How long [`StateLock::acquire`] waits for another process's swap. A swap takes
/// milliseconds, or a few keystore calls of at most their own timeout each; a lock held
/// longer belongs to a process that is stuck, and waiting on it would hang this one too.
pub const LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl StateLock {
    /// Waits (at most [`LOCK_TIMEOUT`]) until the lock on `dir/lock` is held.
    pub fn acquire(dir: &Path) -> Result<StateLock> {
        Self::acquire_within(dir, LOCK_TIMEOUT)
    }

    /// Waits at most `limit` until the lock on `dir/lock` is held.
    pub fn acquire_within(dir: &Path, limit: std::time::Duration) -> Result<StateLock> {
        let path = dir.join("lock");
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        opts.mode(FILE_MODE);
        let file = opts.open(&path).map_err(StoreError::io("open", &path))?;
        // Fully qualified: std's own `File::lock` is newer than the workspace's MSRV.
        let deadline = std::time::Instant::now() + limit;
        loop {
            match fs4::FileExt::try_lock(&file) {
                Ok(()) => return Ok(StateLock { file, path }),
                Err(fs4::TryLockError::Error(e)) => return Err(StoreError::io("lock", &path)(e)),
                Err(fs4::TryLockError::WouldBlock) if std::time::Instant::now() >= deadline => {
                    return Err(StoreError::io("lock", &path)(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "another lanyard process has held it for {}s (a renewal or an \
                             enrolment, or a process stuck on its keystore): try again, or stop \
                             that process",
                            limit.as_secs()
                        ),
                    )));
                }
                Err(fs4::TryLockError::WouldBlock) => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
        }
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        if let Err(e) = fs4::FileExt::unlock(&self.file) {
            tracing::warn!(path = %self.path.display(), error = %e, "unlocking the credential store");
        }
    }
}
