//! Packets a listener discarded, tracepoint backend (`skb:kfree_skb`, whose receiving-socket
//! argument exists since 6.11): a final ACK that found the accept queue full (drop reason
//! `TCP_LISTEN_OVERFLOW`, 6.15+), and anything else a listener threw away. The listener's own
//! drop counter counts these too, besides its listen drops, so userspace subtracts them.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use probe_common::{EventKind, STAGE_LISTENER_DISCARDS, TCP_LISTEN};

use crate::{
    emit, failures,
    kernel::{Probed, sock_endpoints, sock_state},
};

#[btf_tracepoint(function = "kfree_skb")]
pub fn listener_discards_kfree_skb(ctx: BtfTracePointContext) -> u32 {
    // Every dropped packet of the machine passes here: most have no receiving socket.
    let listener: u64 = ctx.arg(3);
    if listener == 0 {
        return 0;
    }
    let reason: u32 = ctx.arg(2);
    failures::count(STAGE_LISTENER_DISCARDS, on_discard(listener, reason));
    0
}

#[inline(always)]
fn on_discard(listener: u64, reason: u32) -> Result<(), i32> {
    if sock_state::<Probed>(listener)? != TCP_LISTEN {
        return Ok(());
    }
    // Not filtered by port: attributing the namespace's drop counters needs every listener's
    // discards, and they are rare.
    let Some(endpoints) = sock_endpoints::<Probed>(listener)? else {
        return Ok(());
    };
    emit::send(|event| {
        event.kind = EventKind::ListenerDiscard as u32;
        endpoints.write_to(event.head_mut());
        event.reason = reason;
    });
    Ok(())
}
