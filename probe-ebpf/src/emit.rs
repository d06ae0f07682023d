//! Sending events to userspace.

use probe_common::ConnEvent;

use crate::maps::{EVENTS, LOST};

/// Sends `event`; when the ring buffer is full the loss is counted so the report can say so.
#[inline(always)]
pub fn send(event: &ConnEvent) {
    if EVENTS.output(event, 0).is_err()
        && let Some(lost) = LOST.get_ptr_mut(0)
    {
        // Per-CPU slot: no other writer can race with this increment.
        unsafe { *lost += 1 };
    }
}
