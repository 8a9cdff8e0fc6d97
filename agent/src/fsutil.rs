//! Whole-file writes that never leave half a file: temp, fsync, rename, fsync the dir.

use crate::error::{AgentError, Result};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    // A directory made here is private (the state directory holds the key store too, which
    // refuses a directory others can read).
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(AgentError::io(format!("creating {}", dir.display())))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    // The process id and a per-process counter: two writers of one file in this process
    // never share a temp file, so neither renames the other's away.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
    let res = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(AgentError::io(format!("creating {}", tmp.display())))?;
        f.write_all(data).map_err(AgentError::io(format!("writing {}", tmp.display())))?;
        f.sync_all().map_err(AgentError::io(format!("syncing {}", tmp.display())))?;
        std::fs::rename(&tmp, path)
            .map_err(AgentError::io(format!("replacing {}", path.display())))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(AgentError::io(format!("syncing {}", dir.display())))
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}
