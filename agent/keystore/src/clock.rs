//! The one place this crate reads the wall clock.
//!
//! `stored_at` in the pointer file is for people (`lanyard status`, debugging): nothing in
//! the store decides anything from it, so it needs no injectable clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch; 0 if the clock is before 1970.
#[allow(clippy::disallowed_methods)] // the keystore's clock: informational timestamps only
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
