//! Stage 1, SYN arrival.
//!
//! fentry and kprobe backends: the entry of `tcp_conn_request(rsk_ops, af_ops, sk, skb)`, which
//! every SYN to a listener (IPv4 and IPv6) goes through, with the listener at hand.
//!
//! Tracepoint backend: no tracepoint fires when a listener receives a SYN, but the SYN is always
//! released with
//! `consume_skb` from inside `tcp_rcv_state_process` (accepted or dropped), so `consume_skb` with
//! a `location` in that function, carrying a TCP segment with SYN and without ACK, is exactly one
//! SYN handled by a listener. Its 4-tuple is parsed from the packet headers. Before 6.3
//! `consume_skb` has no location argument: a second program parses every consumed packet, and
//! for a SYN without ACK finds the caller on the kernel stack instead.

use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_stack, bpf_ktime_get_ns},
    macros::{btf_tracepoint, fentry, kprobe},
    programs::{BtfTracePointContext, FEntryContext, ProbeContext},
};
use probe_common::{EventKind, ListenerKey, PENDING_SYN_ADDED, STAGE_SYN, SynStamp};

use crate::{
    emit, failures,
    kernel::{Memory, Probed, Typed, net_inum},
    maps::{
        SYN_CONSUMER_END, SYN_CONSUMER_START, SYN_EVENTS, SYN_TIMES, config_field, count_syn,
        port_traced, tally,
    },
    packet::{Segment, parse_tcp, skb_netns},
    queues::sample_syn_queue,
    words::{flow_key, store_addr},
};

const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_ACK: u8 = 0x10;

#[btf_tracepoint(function = "consume_skb")]
pub fn syn_consume_skb(ctx: BtfTracePointContext) -> u32 {
    // consume_skb fires for every freed packet: the location test rejects nearly all of them
    // before any memory is read.
    let location: u64 = ctx.arg(1);
    if location < SYN_CONSUMER_START.load() || location >= SYN_CONSUMER_END.load() {
        return 0;
    }
    let skb: u64 = ctx.arg(0);
    failures::count(STAGE_SYN, on_syn::<Typed>(skb, 0));
    0
}

/// Frames searched for `tcp_rcv_state_process`: the helper's caller, the program's, the
/// tracepoint's (two or three), `consume_skb`, then its caller. No more: with 16, 6.1's
/// verifier finds the program's stack over its 512 bytes.
const STACK_FRAMES: usize = 8;

#[btf_tracepoint(function = "consume_skb")]
pub fn syn_consume_skb_stack(ctx: BtfTracePointContext) -> u32 {
    let skb: u64 = ctx.arg(0);
    failures::count(STAGE_SYN, on_consumed_without_location(&ctx, skb));
    0
}

#[inline(always)]
fn on_consumed_without_location(ctx: &BtfTracePointContext, skb: u64) -> Result<(), i32> {
    // Most consumed packets are not SYNs: only these pay for the stack walk.
    let Some(segment) = syn_segment::<Typed>(skb)? else {
        return Ok(());
    };
    let mut frames = [0u64; STACK_FRAMES];
    let size = core::mem::size_of_val(&frames) as u32;
    // SAFETY: `frames` is a live stack buffer of exactly `size` bytes, and `ctx` is this
    // program's context.
    let written = unsafe { bpf_get_stack(ctx.as_ptr(), frames.as_mut_ptr().cast(), size, 0) };
    if written < 0 {
        // The SYN's caller is unknown: the SYN is lost.
        return Err(written as i32);
    }
    if written == 0 {
        return Ok(());
    }
    let (start, end) = (SYN_CONSUMER_START.load(), SYN_CONSUMER_END.load());
    // Every frame, written or still zero: a fixed count unrolls, and older verifiers refuse
    // loops (back-edges).
    let from_listener = frames.iter().any(|&ip| ip >= start && ip < end);
    if from_listener {
        record_syn::<Typed>(&segment, skb, 0)?;
    }
    Ok(())
}

#[fentry(function = "tcp_conn_request")]
pub fn syn_fentry(ctx: FEntryContext) -> u32 {
    failures::count(STAGE_SYN, on_syn::<Typed>(ctx.arg(3), ctx.arg(2)));
    0
}

#[kprobe]
pub fn syn_kprobe(ctx: ProbeContext) -> u32 {
    if let (Some(listener), Some(skb)) = (ctx.arg::<u64>(2), ctx.arg::<u64>(3)) {
        failures::count(STAGE_SYN, on_syn::<Probed>(skb, listener));
    }
    0
}

/// One SYN to a listener; `listener` is 0 where the hook does not have it.
#[inline(always)]
fn on_syn<M: Memory>(skb: u64, listener: u64) -> Result<(), i32> {
    match syn_segment::<M>(skb)? {
        Some(segment) => record_syn::<M>(&segment, skb, listener),
        None => Ok(()),
    }
}

/// The segment in `skb` if it is a SYN without ACK to a traced port.
#[inline(always)]
fn syn_segment<M: Memory>(skb: u64) -> Result<Option<Segment>, i32> {
    let Some(segment) = parse_tcp::<M>(skb, TCP_FLAG_SYN | TCP_FLAG_ACK, TCP_FLAG_SYN)? else {
        return Ok(None);
    };
    if !port_traced(segment.local_port) {
        return Ok(None);
    }
    Ok(Some(segment))
}

/// Stamps the SYN for the later stages and counts it, or reports it as an event (see
/// `SYN_EVENTS`).
#[inline(always)]
fn record_syn<M: Memory>(segment: &Segment, skb: u64, listener: u64) -> Result<(), i32> {
    let netns = if listener != 0 {
        let net = M::read::<u64>(listener, config_field!(offsets.sk_net))?;
        let netns = net_inum::<M>(net)?;
        // The SYN queue is deepest when SYNs arrive (under a SYN flood no child may ever be
        // queued, and the queues stage never samples it): sample it here, where the listener
        // is at hand (fentry and kprobe backends).
        sample_syn_queue(listener, netns, segment.local_port)?;
        netns
    } else {
        skb_netns::<M>(skb)?
    };
    // SAFETY: bpf_ktime_get_ns takes no argument and only reads the clock.
    let now = unsafe { bpf_ktime_get_ns() };

    let key = flow_key(
        netns,
        (segment.local_port, segment.remote_port),
        (segment.local_addr, segment.remote_addr),
    );
    // Keep the first SYN of a handshake: when it was dropped and the client retried, the client
    // waited since the first one. A retry repeats the initial sequence number; a new connection
    // that reuses the 4-tuple of an abandoned one does not.
    let stamp = SynStamp {
        syn_ns: now,
        sequence: segment.sequence,
        _pad: 0,
    };
    // Nearly every SYN is a first one, with no entry yet: one insert that fails if an entry
    // exists costs one map operation, where a lookup before it cost two.
    let mut pending = PENDING_SYN_ADDED;
    if SYN_TIMES.insert(&key, &stamp, BPF_NOEXIST as u64).is_err() {
        // SAFETY: the entry's sequence is copied out at once. Map memory stays valid while the
        // program runs (RCU); another CPU replacing the entry meanwhile can only change the
        // value read, which is then as good as a lookup an instant later.
        let retry = unsafe { SYN_TIMES.get(&key) }
            .is_some_and(|earlier| earlier.sequence == stamp.sequence);
        if retry {
            pending = 0;
        } else {
            // A new connection on the 4-tuple of one that never completed: replaced.
            let _ = SYN_TIMES.insert(&key, &stamp, 0);
            tally(|t| t.syn_replaced += 1);
        }
    }

    if SYN_EVENTS.load() == 0
        && count_syn(
            &ListenerKey::new(netns, segment.local_port),
            pending == PENDING_SYN_ADDED,
        )
    {
        return Ok(());
    }
    emit::send_head(|event| {
        event.kind = EventKind::Syn as u32;
        event.netns = netns;
        event.family = segment.family;
        event.local_port = segment.local_port;
        event.remote_port = segment.remote_port;
        store_addr(&mut event.local_addr, segment.local_addr);
        store_addr(&mut event.remote_addr, segment.remote_addr);
        event.syn_ns = now;
        event.pending = pending;
    });
    Ok(())
}
