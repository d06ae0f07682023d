//! Accept-queue overflow at the final ACK, tracepoint backend: since 6.15 the kernel frees that
//! ACK with drop reason `TCP_LISTEN_OVERFLOW` (`skb:kfree_skb`), one event per overflow, with
//! the connection's 4-tuple in the packet. Kernels without that reason leave this program idle
//! and userspace attributes these drops from counters instead.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use probe_common::{ConnEvent, EventKind};

use crate::{
    emit,
    maps::config,
    packet::{parse_tcp, skb_netns},
};

#[btf_tracepoint(function = "kfree_skb")]
pub fn overflow_kfree_skb(ctx: BtfTracePointContext) -> u32 {
    // Every dropped packet of the machine passes here: compare the reason first.
    let config = config();
    let reason: u32 = ctx.arg(2);
    if reason != config.listen_overflow_reason {
        return 0;
    }
    let skb: u64 = ctx.arg(0);
    let _ = on_overflow(skb);
    0
}

#[inline(always)]
fn on_overflow(skb: u64) -> Result<(), i32> {
    let config = config();
    let Some(segment) = parse_tcp(&config.offsets, skb)? else {
        return Ok(());
    };
    // Not filtered by port: attributing the namespace's other drop counters needs every
    // listener's overflows (they are rare events).
    let mut event = ConnEvent::zeroed();
    event.kind = EventKind::ListenOverflow as u32;
    event.netns = skb_netns(&config.offsets, skb)?;
    event.family = segment.family;
    event.local_port = segment.local_port;
    event.remote_port = segment.remote_port;
    event.local_addr = segment.local_addr;
    event.remote_addr = segment.remote_addr;
    emit::send(&event);
    Ok(())
}
