//! The endpoint's notion of time: a point on a microsecond axis whose origin the caller picks.
//!
//! The state machine never reads a clock; the daemon converts its monotonic clock to `Time`
//! (for example microseconds since start-up) and the simulator just counts.

use std::fmt;
use std::ops::Add;
use std::time::Duration;

/// Microseconds since an origin chosen by the caller. Arithmetic saturates instead of
/// overflowing, so no input can make it panic.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Time(u64);

impl Time {
    pub const ZERO: Time = Time(0);

    pub const fn from_micros(us: u64) -> Time {
        Time(us)
    }

    pub const fn from_millis(ms: u64) -> Time {
        Time(ms.saturating_mul(1000))
    }

    pub const fn from_secs(s: u64) -> Time {
        Time(s.saturating_mul(1_000_000))
    }

    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Time elapsed since `earlier`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Time) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Time {
    type Output = Time;

    fn add(self, d: Duration) -> Time {
        Time(self.0.saturating_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)))
    }
}

impl fmt::Debug for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}s", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(
            Time::from_secs(2) + Duration::from_millis(500),
            Time::from_micros(2_500_000)
        );
        assert_eq!(
            Time::from_micros(u64::MAX) + Duration::from_secs(1),
            Time::from_micros(u64::MAX)
        );
        assert_eq!(Time::from_secs(1).saturating_since(Time::from_secs(3)), Duration::ZERO);
        assert_eq!(
            Time::from_secs(3).saturating_since(Time::from_secs(1)),
            Duration::from_secs(2)
        );
        assert_eq!(format!("{:?}", Time::from_micros(1_000_001)), "1.000001s");
    }
}
