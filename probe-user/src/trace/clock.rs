//! The kernel programs' clock (`bpf_ktime_get_ns`: CLOCK_MONOTONIC), read from userspace.

use std::time::{Duration, SystemTime};

/// CLOCK_MONOTONIC now, in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// The wall-clock time at which CLOCK_MONOTONIC read zero: add an event's timestamp to it.
pub fn monotonic_epoch() -> SystemTime {
    SystemTime::now() - Duration::from_nanos(monotonic_ns())
}
