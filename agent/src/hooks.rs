//! Post-renewal hooks: a command given as an argument list (run directly, no shell, so
//! arguments with spaces or quotes arrive as written) and/or a signal to the process in a
//! PID file. Hook failures are logged; they never undo a renewal.

use crate::config::HooksConfig;
use crate::verify::CertInfo;
use std::time::Duration;

const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn run(h: &HooksConfig, info: &CertInfo) {
    if let Some((prog, args)) = h.post_renew.split_first() {
        let mut cmd = tokio::process::Command::new(prog);
        cmd.args(args)
            .env("LANYARD_IDENTITY", &info.identity)
            .env("LANYARD_SERIAL", &info.serial)
            .env("LANYARD_NOT_AFTER", info.not_after.unix_timestamp().to_string())
            .kill_on_drop(true);
        match cmd.spawn() {
            Ok(mut child) => match tokio::time::timeout(HOOK_TIMEOUT, child.wait()).await {
                Ok(Ok(s)) if s.success() => tracing::info!(hook = %prog, "post-renewal hook ran"),
                Ok(Ok(s)) => tracing::warn!(hook = %prog, status = %s, "post-renewal hook failed"),
                Ok(Err(e)) => tracing::warn!(hook = %prog, error = %e, "post-renewal hook failed"),
                Err(_) => {
                    tracing::warn!(hook = %prog, "post-renewal hook timed out after 60s and was killed")
                }
            },
            Err(e) => tracing::warn!(hook = %prog, error = %e, "post-renewal hook could not start"),
        }
    }
    if let Some(pidfile) = &h.signal_pidfile {
        let pid = std::fs::read_to_string(pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .filter(|p| *p > 1);
        match pid {
            Some(pid) => match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), h.signal) {
                Ok(()) => tracing::info!(pid, signal = %h.signal, "signalled after renewal"),
                Err(e) => tracing::warn!(pid, error = %e, "could not signal after renewal"),
            },
            None => tracing::warn!(pidfile = %pidfile.display(), "no usable PID in the pid file"),
        }
    }
}
