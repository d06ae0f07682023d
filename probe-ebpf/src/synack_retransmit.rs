//! SYN-ACK retransmits of listeners (`tcp:tcp_retransmit_synack`, listener + request sock):
//! the client's final ACK did not arrive in time (lost, or a slow client network).
//!
//! fentry and kprobe backends: the return of `tcp_rtx_synack(sk, req)`, the function that
//! fires that tracepoint, counted like it only when the SYN-ACK was sent (returned 0).

use aya_ebpf::{
    macros::{btf_tracepoint, fexit, kprobe, kretprobe},
    programs::{BtfTracePointContext, FExitContext, ProbeContext, RetProbeContext},
};
use probe_common::{EventKind, STAGE_SYNACK_RETRANSMIT};

use crate::{
    emit, failures,
    kernel::{Probed, fexit_return, sock_endpoints},
    maps::{FEXIT_RETURN, SYNACK_REQUESTS, port_traced},
    queues::sample_syn_queue,
};

#[btf_tracepoint(function = "tcp_retransmit_synack")]
pub fn synack_retransmit_tracepoint(ctx: BtfTracePointContext) -> u32 {
    let request: u64 = ctx.arg(1);
    failures::count(STAGE_SYNACK_RETRANSMIT, on_retransmit(request, ctx.arg(0)));
    0
}

#[fexit(function = "tcp_rtx_synack")]
pub fn synack_retransmit_fexit(ctx: FExitContext) -> u32 {
    if fexit_return::<i32>(&ctx, FEXIT_RETURN.load().tcp_rtx_synack) == Ok(0) {
        failures::count(
            STAGE_SYNACK_RETRANSMIT,
            on_retransmit(ctx.arg(1), ctx.arg(0)),
        );
    }
    0
}

/// The request is kept per CPU until the return: SYN-ACKs are retransmitted from softirq
/// context (the request's timer, or a retransmitted SYN), which does not nest.
#[kprobe]
pub fn synack_retransmit_kprobe(ctx: ProbeContext) -> u32 {
    if let (Some(request), Some(slot)) = (ctx.arg::<u64>(1), SYNACK_REQUESTS.get_ptr_mut(0)) {
        // SAFETY: the lookup returned a valid pointer to this CPU's slot, which only programs on
        // this CPU touch, and they do not nest (softirq context).
        unsafe { *slot = request };
    }
    0
}

#[kretprobe]
pub fn synack_retransmit_kretprobe(ctx: RetProbeContext) -> u32 {
    let Some(slot) = SYNACK_REQUESTS.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: the lookup returned a valid pointer to this CPU's slot, which only programs on
    // this CPU touch, and they do not nest (softirq context).
    let request = unsafe { core::mem::replace(&mut *slot, 0) };
    if request != 0 && ctx.ret::<i32>() == 0 {
        failures::count(STAGE_SYNACK_RETRANSMIT, on_retransmit(request, 0));
    }
    0
}

/// `listener` is 0 where the hook does not have it.
#[inline(always)]
fn on_retransmit(request: u64, listener: u64) -> Result<(), i32> {
    // A request sock starts with the same `sock_common` as a full socket: local port, peer and
    // namespace read the same way.
    let Some(request) = sock_endpoints::<Probed>(request)? else {
        return Ok(());
    };
    if !port_traced(request.local_port) {
        return Ok(());
    }
    // Under a SYN flood no child may ever be queued to wake the listener (see queues.rs), but
    // its pending handshakes' SYN-ACKs are sent again: the tracepoint backend's SYN program has
    // no listener, so the SYN queue is sampled here too.
    if listener != 0 {
        sample_syn_queue(listener, request.netns, request.local_port)?;
    }
    emit::send(|event| {
        event.kind = EventKind::SynackRetransmit as u32;
        request.write_to(event.head_mut());
    });
    Ok(())
}
