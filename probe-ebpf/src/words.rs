//! The events' byte arrays (addresses, task names) handled as words.
//!
//! LLVM splits a byte array kept in registers into single bytes, and in BPF each is then loaded
//! and stored on its own: about a hundred instructions for each address copied. The programs
//! keep them as words and store them into the shared types' byte fields a word at a time.

use core::mem::{align_of, offset_of};

use probe_common::{ConnEvent, Connection, EarlyAccept, EventHead, FlowKey};

/// An IPv6 address (an IPv4 one v4-mapped) as four 32-bit words in memory order.
pub type Addr = [u32; 4];

/// A task name (`comm`, 16 bytes) as two words.
pub type Comm = [u64; 2];

/// An IPv4 address (one word, network order as in memory) as v4-mapped IPv6.
#[inline(always)]
pub fn v4_mapped(v4: u32) -> Addr {
    [0, 0, u32::from_ne_bytes([0, 0, 0xff, 0xff]), v4]
}

/// Stores `addr` into an address field of `ConnEvent`, `EventHead` or `FlowKey`.
#[inline(always)]
pub fn store_addr(field: &mut [u8; 16], addr: Addr) {
    // SAFETY: every address field of those `repr(C)` types is 4-aligned (checked below), so the
    // field is a valid, aligned `Addr`.
    unsafe { (field as *mut [u8; 16]).cast::<Addr>().write(addr) }
}

/// The key of a connection in progress (`SYN_TIMES`), with its addresses stored as words.
#[inline(always)]
pub fn flow_key(
    netns: u32,
    (local_port, remote_port): (u16, u16),
    (local_addr, remote_addr): (Addr, Addr),
) -> FlowKey {
    let mut key = FlowKey {
        netns,
        local_port,
        remote_port,
        local_addr: [0; 16],
        remote_addr: [0; 16],
    };
    store_addr(&mut key.local_addr, local_addr);
    store_addr(&mut key.remote_addr, remote_addr);
    key
}

/// Stores `comm` into a task-name field of `ConnEvent`, `Connection` or `EarlyAccept`.
#[inline(always)]
pub fn store_comm(field: &mut [u8; 16], comm: Comm) {
    // SAFETY: every task-name field of those `repr(C)` types is 8-aligned (checked below).
    unsafe { (field as *mut [u8; 16]).cast::<Comm>().write(comm) }
}

/// A task-name field of `Connection` or `EarlyAccept` as words.
#[inline(always)]
pub fn load_comm(field: &[u8; 16]) -> Comm {
    // SAFETY: as in `store_comm`.
    unsafe { (field as *const [u8; 16]).cast::<Comm>().read() }
}

/// The current task's name.
#[inline(always)]
pub fn current_comm() -> Comm {
    let mut comm: Comm = [0; 2];
    // SAFETY: the helper writes at most 16 bytes, NUL-padded, into this 16-byte buffer; on
    // failure it leaves zeros.
    unsafe {
        aya_ebpf::helpers::generated::bpf_get_current_comm(comm.as_mut_ptr().cast(), 16);
    }
    comm
}

const _: () = {
    // EventHead's addresses are at ConnEvent's offsets (asserted in probe-common).
    assert!(align_of::<FlowKey>() >= 4 && align_of::<ConnEvent>() >= 8);
    assert!(align_of::<EventHead>() >= 4);
    assert!(offset_of!(ConnEvent, local_addr) % 4 == 0);
    assert!(offset_of!(ConnEvent, remote_addr) % 4 == 0);
    assert!(offset_of!(FlowKey, local_addr) % 4 == 0);
    assert!(offset_of!(FlowKey, remote_addr) % 4 == 0);
    assert!(offset_of!(ConnEvent, comm) % 8 == 0);
    assert!(align_of::<Connection>() >= 8 && offset_of!(Connection, comm) % 8 == 0);
    assert!(align_of::<EarlyAccept>() >= 8 && offset_of!(EarlyAccept, comm) % 8 == 0);
};
