//! SYN-ACK retransmits of listeners (`tcp:tcp_retransmit_synack`, listener + request sock):
//! the client's final ACK did not arrive in time (lost, or a slow client network).

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use probe_common::EventKind;

use crate::{
    emit,
    kernel::sock_endpoints,
    maps::{config, port_wanted},
};

#[btf_tracepoint(function = "tcp_retransmit_synack")]
pub fn synack_retransmit(ctx: BtfTracePointContext) -> u32 {
    let request: u64 = ctx.arg(1);
    let _ = on_retransmit(request);
    0
}

#[inline(always)]
fn on_retransmit(request: u64) -> Result<(), i32> {
    let config = config();
    // A request sock starts with the same `sock_common` as a full socket: local port, peer and
    // namespace read the same way.
    let Some(request) = sock_endpoints(&config.offsets, request)? else {
        return Ok(());
    };
    if !port_wanted(&config, request.local_port) {
        return Ok(());
    }
    emit::send(|event| {
        event.kind = EventKind::SynackRetransmit as u32;
        request.write_to(event);
    });
    Ok(())
}
