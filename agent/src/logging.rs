//! Logs go to journald (systemd-journal-logger) when the agent runs under systemd, and to
//! stderr through `tracing` otherwise. Events carry structured fields (identity, serial,
//! not_after, next_renewal); with journald they arrive through `tracing`'s `log` bridge.

/// Lanyard's own crates, whose debug logs `-v` shows.
const OWN_TARGETS: [&str; 3] = ["lanyard", "lanyard_agent", "lanyard_keystore"];

/// `verbose` counts `-v`: 0 info; 1 Lanyard's own debug logs (not the HTTP/2 and TLS
/// libraries' frame by frame ones); 2 debug from everything; 3 trace. `LANYARD_LOG`
/// (error|warn|info|debug|trace) sets one level for everything instead.
pub fn init(verbose: u8) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    let (default, own) = match std::env::var("LANYARD_LOG").ok().and_then(|l| l.parse().ok()) {
        Some(level) => (level, level),
        None => match verbose {
            0 => (LevelFilter::INFO, LevelFilter::INFO),
            1 => (LevelFilter::INFO, LevelFilter::DEBUG),
            2 => (LevelFilter::DEBUG, LevelFilter::DEBUG),
            _ => (LevelFilter::TRACE, LevelFilter::TRACE),
        },
    };
    if systemd_journal_logger::connected_to_journal()
        && let Ok(j) = systemd_journal_logger::JournalLog::new()
        && j.with_syslog_identifier("lanyard".into()).install().is_ok()
    {
        log::set_max_level(match own.max(default) {
            LevelFilter::TRACE => log::LevelFilter::Trace,
            LevelFilter::DEBUG => log::LevelFilter::Debug,
            LevelFilter::WARN => log::LevelFilter::Warn,
            LevelFilter::ERROR => log::LevelFilter::Error,
            _ => log::LevelFilter::Info,
        });
        log_panics();
        return;
    }
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let targets = OWN_TARGETS
        .iter()
        .fold(Targets::new().with_default(default), |t, name| t.with_target(*name, own));
    let _ = tracing_subscriber::fmt()
        .with_max_level(LevelFilter::TRACE)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .finish()
        .with(targets)
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
