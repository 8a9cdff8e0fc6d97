//! File writes that leave nothing half-written: temp file, fsync, rename, fsync the dir.

use crate::error::{CaError, Result};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes a new private file (0600). Fails if `path` exists: CA keys are never replaced.
pub fn write_new_private(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(CaError::io(format!("creating {}", path.display())))?;
    f.write_all(data).map_err(CaError::io(format!("writing {}", path.display())))?;
    f.sync_all().map_err(CaError::io(format!("syncing {}", path.display())))?;
    sync_parent(path)
}

/// Atomically replaces `path` with `data` (mode as given).
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let res = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(CaError::io(format!("creating {}", tmp.display())))?;
        f.write_all(data).map_err(CaError::io(format!("writing {}", tmp.display())))?;
        f.sync_all().map_err(CaError::io(format!("syncing {}", tmp.display())))?;
        std::fs::rename(&tmp, path)
            .map_err(CaError::io(format!("replacing {}", path.display())))?;
        sync_parent(path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

fn sync_parent(path: &Path) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(CaError::io(format!("syncing directory {}", dir.display())))
}
