//! Stage 1, SYN arrival, tracepoint backend.
//!
//! No tracepoint fires when a listener receives a SYN, but the SYN is always released with
//! `consume_skb` from inside `tcp_rcv_state_process` (accepted or dropped), so `consume_skb` with
//! a `location` in that function, carrying a TCP segment with SYN and without ACK, is exactly one
//! SYN handled by a listener. Its 4-tuple is parsed from the packet headers.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::btf_tracepoint, programs::BtfTracePointContext};
use probe_common::{ConnEvent, EventKind, FlowKey, KernelOffsets};

use crate::{
    emit,
    maps::{SYN_TIMES, config, port_wanted},
    packet::{parse_tcp, skb_netns},
};

const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_ACK: u8 = 0x10;

/// A SYN timestamp older than this belongs to an abandoned handshake whose 4-tuple is being
/// reused; a handshake still retrying (6 SYN retries span about 127 s) stays younger.
const SYN_REUSE_AFTER_NS: u64 = 180_000_000_000;

#[btf_tracepoint(function = "consume_skb")]
pub fn syn_consume_skb(ctx: BtfTracePointContext) -> u32 {
    // consume_skb fires for every freed packet: the location test rejects nearly all of them
    // before any memory is read.
    let config = config();
    let location: u64 = ctx.arg(1);
    if location < config.syn_consumer_start || location >= config.syn_consumer_end {
        return 0;
    }
    let skb: u64 = ctx.arg(0);
    let _ = on_syn(&config.offsets, skb, &config);
    0
}

#[inline(always)]
fn on_syn(
    offsets: &KernelOffsets,
    skb: u64,
    config: &probe_common::ProbeConfig,
) -> Result<(), i32> {
    let Some(segment) = parse_tcp(offsets, skb)? else {
        return Ok(());
    };
    if segment.flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) != TCP_FLAG_SYN {
        return Ok(());
    }
    if !port_wanted(config, segment.local_port) {
        return Ok(());
    }
    let netns = skb_netns(offsets, skb)?;
    let now = unsafe { bpf_ktime_get_ns() };

    let key = FlowKey {
        netns,
        local_port: segment.local_port,
        remote_port: segment.remote_port,
        local_addr: segment.local_addr,
        remote_addr: segment.remote_addr,
    };
    // Keep the first SYN of a handshake: when it was dropped and the client retried, the client
    // waited since the first one.
    let keep_earlier = match unsafe { SYN_TIMES.get(&key) } {
        Some(&earlier) => now.saturating_sub(earlier) < SYN_REUSE_AFTER_NS,
        None => false,
    };
    if !keep_earlier {
        let _ = SYN_TIMES.insert(&key, &now, 0);
    }

    let mut event = ConnEvent::zeroed();
    event.kind = EventKind::Syn as u32;
    event.netns = netns;
    event.family = segment.family;
    event.local_port = segment.local_port;
    event.remote_port = segment.remote_port;
    event.local_addr = segment.local_addr;
    event.remote_addr = segment.remote_addr;
    event.syn_ns = now;
    emit::send(&event);
    Ok(())
}
