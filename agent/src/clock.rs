//! Time enters the agent here and nowhere else: the renewal logic takes `now` as an
//! argument, so it is tested without waiting, and a laptop waking from sleep is handled by
//! re-reading this clock rather than trusting a monotonic timer.

use time::OffsetDateTime;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> OffsetDateTime;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one place the agent reads the wall clock
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}
