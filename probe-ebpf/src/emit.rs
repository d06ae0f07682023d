//! Sending events to userspace.
//!
//! Waking the reader for every event costs several microseconds per connection (measured with
//! `cargo xtask bench`): events are queued silently and userspace drains them on a short timer,
//! except when the buffer fills past a quarter, which wakes it at once.

use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
use probe_common::ConnEvent;

use crate::maps::{EVENTS, EVENTS_BYTES, LOST};

/// Sends `event`; when the ring buffer is full the loss is counted so the report can say so.
#[inline(always)]
pub fn send(event: &ConnEvent) {
    let pending = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let wakeup = if pending > EVENTS_BYTES as u64 / 4 {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    if EVENTS.output(event, wakeup as u64).is_err()
        && let Some(lost) = LOST.get_ptr_mut(0)
    {
        // Per-CPU slot: no other writer can race with this increment.
        unsafe { *lost += 1 };
    }
}
