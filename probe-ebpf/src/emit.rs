//! Sending events to userspace.
//!
//! Each event is written straight into the ring buffer (no copy on the BPF stack, which older
//! verifiers limit to 512 bytes across calls). Waking the reader for every event costs several
//! microseconds per connection (measured with `cargo xtask bench`): events are queued silently
//! and userspace drains them on a short timer, except when the buffer fills past a quarter,
//! which wakes it at once.
//!
//! The handshake event of each connection (and the SYN events, where they are sent) send only
//! an `EventHead` (64 bytes, one cache line, against 120 for a whole `ConnEvent`): each record
//! is written on one CPU and read on another, and the bytes not sent are neither zeroed nor
//! passed over.

use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
use probe_common::{ConnEvent, EventHead};

use crate::maps::{EVENTS, EVENTS_BYTES, LOST};

/// Reserves a whole event, zeroed, lets `fill` write it, and sends it.
#[inline(always)]
pub fn send(fill: impl FnOnce(&mut ConnEvent)) {
    send_record(fill);
}

/// Reserves an event head, zeroed, lets `fill` write it, and sends it.
#[inline(always)]
pub fn send_head(fill: impl FnOnce(&mut EventHead)) {
    send_record(fill);
}

/// Sends one `T` (plain data, valid when zeroed); when the ring buffer is full the loss is
/// counted so the report can say so.
#[inline(always)]
fn send_record<T: 'static>(fill: impl FnOnce(&mut T)) {
    let Some(mut entry) = EVENTS.reserve::<T>(0) else {
        if let Some(lost) = LOST.get_ptr_mut(0) {
            // SAFETY: the lookup returned a valid pointer to this CPU's u64 slot; per-CPU slot:
            // no other writer can race with this increment.
            unsafe { *lost += 1 };
        }
        return;
    };
    // SAFETY: the reservation is exactly one T; T is ConnEvent or EventHead, plain integers and
    // byte arrays, for which zeroing makes every field valid.
    let record = unsafe {
        let slot = entry.as_mut_ptr();
        slot.write_bytes(0, 1);
        &mut *slot
    };
    fill(record);
    let pending = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let wakeup = if pending > EVENTS_BYTES as u64 / 4 {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(wakeup as u64);
}
