//! Logs go to journald (systemd-journal-logger) when the agent runs under systemd, and to
//! stderr through `tracing` otherwise. Events carry structured fields (identity, serial,
//! not_after, next_renewal); with journald they arrive through `tracing`'s `log` bridge.

pub fn init(verbose: bool) {
    let level = std::env::var("LANYARD_LOG")
        .unwrap_or_else(|_| if verbose { "debug".into() } else { "info".into() });
    if systemd_journal_logger::connected_to_journal()
        && let Ok(j) = systemd_journal_logger::JournalLog::new()
        && j.with_syslog_identifier("lanyard".into()).install().is_ok()
    {
        log::set_max_level(match level.as_str() {
            "trace" => log::LevelFilter::Trace,
            "debug" => log::LevelFilter::Debug,
            "warn" => log::LevelFilter::Warn,
            "error" => log::LevelFilter::Error,
            _ => log::LevelFilter::Info,
        });
        log_panics();
        return;
    }
    let filter: tracing_subscriber::filter::LevelFilter =
        level.parse().unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
    let _ = tracing_subscriber::fmt()
        .with_max_level(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// Under journald, a panic becomes one error entry with its message, location, thread and
/// backtrace as fields, instead of loose lines on stderr. A panicking task is then logged
/// and the daemon goes on (panics unwind; see the release profile in Cargo.toml). Release
/// builds are stripped, so the backtrace holds addresses: resolve them against the
/// unstripped build of the same commit (`addr2line -e`).
fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let thread = std::thread::current().name().unwrap_or("unnamed").to_owned();
        let backtrace = std::backtrace::Backtrace::force_capture();
        tracing::error!(%location, %thread, %backtrace, "panic: {message}");
    }));
}
