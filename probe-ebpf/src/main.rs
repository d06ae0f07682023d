//! Kernel side of synscope: one file per stage of a passive TCP open, named after the stage the
//! user sees, and so are its programs (`<stage>_<hook>`):
//!
//! - `syn`: a SYN reaches a listener;
//! - `handshake`: a child completes its handshake and joins the accept queue (plus listeners
//!   that start and close);
//! - `accept`: accept() returns the child;
//! - `listener_discards`: packets a listener discarded;
//! - `listen_drops`: listen drops, SYN cookies and Fast Open children, as the kernel counted them;
//! - `synack_retransmit`: SYN-ACKs a listener sent again;
//! - `queues`: queue depths of listeners;
//! - `phases`: after accept(), the first read and the first response byte.
//!
//! The other modules are shared: `maps` (maps and load-time globals), `kernel` (reading kernel
//! memory), `packet` (parsing received packets), `emit` (events to userspace), `failures`
//! (kernel reads that failed, counted per stage) and `words` (addresses and task names as words).
//!
//! Data flows one way: each program timestamps its stage, keeps what a later stage needs in a
//! bounded LRU map, and sends one `ConnEvent` per stage to userspace through `EVENTS`.
#![no_std]
#![no_main]
#![deny(clippy::undocumented_unsafe_blocks)]

mod accept;
mod emit;
mod failures;
mod handshake;
mod kernel;
mod listen_drops;
mod listener_discards;
mod maps;
mod packet;
mod phases;
mod queues;
mod syn;
mod synack_retransmit;
mod words;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// bpf_probe_read_kernel is GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
