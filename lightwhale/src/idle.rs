//! The idle policy: when a container has been quiet long enough to sleep,
//! and how long to wait after a checkpoint failed.

use std::time::Duration;

/// Returns how long a container has been without traffic.
///
/// All times are CLOCK_MONOTONIC nanoseconds, the clock of
/// `bpf_ktime_get_ns()`. `last_seen_ns` is 0 when no packet was counted, and
/// `awake_since_ns` is when the container last started or woke, so that a
/// container that was just restored is not put back to sleep at once.
pub fn idle_for(now_ns: u64, last_seen_ns: u64, awake_since_ns: u64) -> Duration {
    let quiet_since = last_seen_ns.max(awake_since_ns);
    Duration::from_nanos(now_ns.saturating_sub(quiet_since))
}

/// Returns whether a container idle for `idle_for` should go to sleep.
pub fn should_sleep(idle_for: Duration, idle_timeout: Duration) -> bool {
    idle_for >= idle_timeout
}

/// Delay before the next checkpoint attempt after `failures` failed ones in
/// a row: 30 s doubled per failure, at most one hour.
pub fn retry_delay(failures: u32) -> Duration {
    const FIRST: Duration = Duration::from_secs(30);
    const MAX: Duration = Duration::from_secs(3600);

    let factor = 1u32.checked_shl(failures.saturating_sub(1)).unwrap_or(u32::MAX);
    FIRST.saturating_mul(factor).min(MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn idle_counts_from_last_packet() {
        assert_eq!(idle_for(10 * SECOND, 7 * SECOND, 2 * SECOND), Duration::from_secs(3));
    }

    #[test]
    fn idle_counts_from_wake_when_no_packet_since() {
        assert_eq!(idle_for(10 * SECOND, SECOND, 8 * SECOND), Duration::from_secs(2));
        assert_eq!(idle_for(10 * SECOND, 0, 8 * SECOND), Duration::from_secs(2));
    }

    #[test]
    fn clock_behind_last_packet_is_not_idle() {
        assert_eq!(idle_for(5 * SECOND, 6 * SECOND, 0), Duration::ZERO);
    }

    #[test]
    fn sleeps_at_timeout() {
        let timeout = Duration::from_secs(3);
        assert!(!should_sleep(Duration::from_millis(2999), timeout));
        assert!(should_sleep(Duration::from_secs(3), timeout));
    }

    #[test]
    fn retry_delay_doubles_up_to_an_hour() {
        assert_eq!(retry_delay(1), Duration::from_secs(30));
        assert_eq!(retry_delay(2), Duration::from_secs(60));
        assert_eq!(retry_delay(3), Duration::from_secs(120));
        assert_eq!(retry_delay(10), Duration::from_secs(3600));
        assert_eq!(retry_delay(100), Duration::from_secs(3600));
    }
}
