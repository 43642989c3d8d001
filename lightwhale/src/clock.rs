//! The clock that the eBPF programs stamp packets with.

use std::time::{Duration, SystemTime};

/// Returns CLOCK_MONOTONIC in nanoseconds, the clock of `bpf_ktime_get_ns()`.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec for clock_gettime to fill in.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(now.tv_nsec as u64)
}

/// Converts a CLOCK_MONOTONIC time in the past into wall-clock time.
pub fn wall_time(monotonic: u64) -> SystemTime {
    let age = Duration::from_nanos(monotonic_ns().saturating_sub(monotonic));
    SystemTime::now() - age
}
