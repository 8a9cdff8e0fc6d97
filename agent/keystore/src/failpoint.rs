//! Crash-test hooks: `crash_point!("name")` marks a step of a swap. In unit tests, a child
//! process started with `LANYARD_KEYSTORE_FAILPOINT=name#n` exits on the spot when it
//! reaches that step for the `n`th time (no destructors, no cleanup: what is on disk or in
//! the keyring is what a SIGKILL would leave there), and
//! `LANYARD_KEYSTORE_FAILPOINT_TRACE=file` records every step reached, so the tests crash
//! at each one without a hand-kept list. Outside tests the macro expands to nothing.

/// Marks a step of a swap that the crash tests stop at.
macro_rules! crash_point {
    ($($arg:tt)*) => {{
        #[cfg(test)]
        {
            $crate::failpoint::hit(&format!($($arg)*));
        }
    }};
}

/// Names the step to crash at.
#[cfg(test)]
pub(crate) const FAILPOINT_ENV: &str = "LANYARD_KEYSTORE_FAILPOINT";
/// Names a file that collects every step reached, one per line.
#[cfg(test)]
pub(crate) const TRACE_ENV: &str = "LANYARD_KEYSTORE_FAILPOINT_TRACE";
/// The exit status of a process stopped at a crash point, so the tests know it got there.
#[cfg(test)]
pub(crate) const CRASH_EXIT_CODE: i32 = 86;

/// Records and, if asked to, crashes at the `n`th time this process reaches step `name`;
/// steps are named `name#n` (a swap writes `pending.json` twice, for instance).
#[cfg(test)]
pub(crate) fn hit(name: &str) {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static SEEN: Mutex<Option<HashMap<String, u32>>> = Mutex::new(None);
    let n = {
        let mut guard = SEEN.lock().unwrap_or_else(|p| p.into_inner());
        let count = guard.get_or_insert_with(HashMap::new).entry(name.to_string()).or_insert(0);
        *count += 1;
        *count
    };
    let step = format!("{name}#{n}");
    if let Some(trace) = std::env::var_os(TRACE_ENV) {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(trace) {
            let _ = writeln!(f, "{step}");
        }
    }
    if std::env::var(FAILPOINT_ENV).as_deref() == Ok(step.as_str()) {
        std::process::exit(CRASH_EXIT_CODE);
    }
}
