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
    kernel::{net_inum, read, v4_mapped},
    maps::{SYN_TIMES, config, port_wanted},
};

const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_ACK: u8 = 0x10;
const IPPROTO_TCP: u8 = 6;

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

struct Segment {
    local_port: u16,
    remote_port: u16,
    local_addr: [u8; 16],
    remote_addr: [u8; 16],
    family: u16,
}

#[inline(always)]
fn on_syn(
    offsets: &KernelOffsets,
    skb: u64,
    config: &probe_common::ProbeConfig,
) -> Result<(), i32> {
    let Some(segment) = parse_syn(offsets, skb)? else {
        return Ok(());
    };
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

/// Network namespace of a received packet. TCP clears `skb->dev` before the listener sees the
/// SYN, but the input route stays attached, and its device is in the same namespace.
#[inline(always)]
fn skb_netns(offsets: &KernelOffsets, skb: u64) -> Result<u32, i32> {
    /// Low bit of `_skb_refdst`: the route is not reference-counted.
    const SKB_DST_NOREF: u64 = 1;
    let mut dev = read::<u64>(skb, offsets.skb_dev)?;
    if dev == 0 {
        let dst = read::<u64>(skb, offsets.skb_refdst)? & !SKB_DST_NOREF;
        if dst == 0 {
            return Err(0);
        }
        dev = read::<u64>(dst, offsets.dst_dev)?;
    }
    let net = read::<u64>(dev, offsets.netdev_net)?;
    net_inum(offsets, net)
}

/// Parses the IP and TCP headers; `None` unless the segment is a SYN without ACK.
#[inline(always)]
fn parse_syn(offsets: &KernelOffsets, skb: u64) -> Result<Option<Segment>, i32> {
    let head = read::<u64>(skb, offsets.skb_head)?;
    let network = head + read::<u16>(skb, offsets.skb_network_header)? as u64;
    let transport = head + read::<u16>(skb, offsets.skb_transport_header)? as u64;

    let tcp_flags = read::<u8>(transport, 13)?;
    if tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) != TCP_FLAG_SYN {
        return Ok(None);
    }
    let version = read::<u8>(network, 0)? >> 4;
    let (family, remote_addr, local_addr) = match version {
        4 => {
            if read::<u8>(network, 9)? != IPPROTO_TCP {
                return Ok(None);
            }
            (
                probe_common::AF_INET,
                v4_mapped(read(network, 12)?),
                v4_mapped(read(network, 16)?),
            )
        }
        6 => {
            if read::<u8>(network, 6)? != IPPROTO_TCP {
                return Ok(None);
            }
            (
                probe_common::AF_INET6,
                read(network, 8)?,
                read(network, 24)?,
            )
        }
        _ => return Ok(None),
    };
    Ok(Some(Segment {
        remote_port: u16::from_be(read::<u16>(transport, 0)?),
        local_port: u16::from_be(read::<u16>(transport, 2)?),
        local_addr,
        remote_addr,
        family,
    }))
}
