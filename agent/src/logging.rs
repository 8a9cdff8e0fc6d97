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
