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
    let tmp = dir.join(format!(".{name}.tmp.{}", unique_suffix()));
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

/// The process id and a per-process counter: two writers of the same file in one process
/// (the CRL publisher and a `publish_crls` call, say) never share a temp file, so neither
/// renames the other's away.
fn unique_suffix() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}.{n}", std::process::id())
}

fn sync_parent(path: &Path) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(CaError::io(format!("syncing directory {}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two threads of one process replacing the same file: each write lands whole, none
    /// fails for want of its temp file (they once shared one name and renamed it from under
    /// each other).
    #[test]
    fn concurrent_writers_in_one_process_do_not_collide() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("crl.pem");
        let threads: Vec<_> = (0..8u8)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        write_atomic(&path, &[i; 4096], 0o644)?;
                    }
                    Ok::<_, CaError>(())
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread").expect("write");
        }
        let data = std::fs::read(&path).expect("read");
        assert_eq!(data.len(), 4096);
        assert!(data.iter().all(|b| *b == data[0]), "one writer's bytes, whole");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 1, "no temp files left: {left:?}");
    }
}
