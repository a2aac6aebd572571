//! Durations as the report's integers: nanoseconds, microseconds and
//! milliseconds in a `u64`, saturating (a `u64` of nanoseconds is 584
//! years, so saturation never shows in a real run).

use std::time::{Duration, Instant};

/// `d` in nanoseconds.
pub fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// `d` in microseconds.
pub fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// `d` in milliseconds.
pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Nanoseconds since `t`.
pub fn ns_since(t: Instant) -> u64 {
    ns(t.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_saturation() {
        let d = Duration::from_millis(1500);
        assert_eq!((ns(d), us(d), ms(d)), (1_500_000_000, 1_500_000, 1500));
        assert_eq!(ns(Duration::MAX), u64::MAX);
        assert_eq!(ms(Duration::MAX), u64::MAX);
    }
}
