//! Kernel side of synscope: one file per stage of a passive TCP open.
//!
//! Data flows one way: each program timestamps its stage, keeps what a later stage needs in a
//! bounded LRU map, and sends one `ConnEvent` per stage to userspace through `EVENTS`.
#![no_std]
#![no_main]

mod accept;
mod discards;
mod emit;
mod kernel;
mod listen_drops;
mod listen_state;
mod maps;
mod packet;
mod queues;
mod syn;
mod synack;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// bpf_probe_read_kernel is GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
