//! Reading kernel memory at offsets resolved from BTF at load time.

use core::mem::offset_of;

use aya_ebpf::helpers::bpf_probe_read_kernel;
use probe_common::{AF_INET, AF_INET6, EventHead, SockHead};

use crate::{
    maps::config_field,
    words::{Addr, store_addr, v4_mapped},
};

/// Reads a `T` at `base + offset`.
#[inline(always)]
pub fn read<T>(base: u64, offset: u32) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel never dereferences the address itself: it copies through
    // the kernel's fault-handling read and returns an error for an unreadable address. Callers
    // only read plain-data `T`s (integers and byte arrays), valid for any bit pattern.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) }
}

/// Reads a `T` at `base + offset` into `target`, in place: no copy on the stack, which older
/// verifiers limit to 512 bytes across the inlined calls of a program.
#[inline(always)]
pub fn read_into<T>(target: &mut T, base: u64, offset: u32) -> Result<(), i32> {
    // SAFETY: as in `read`; `target` is a live, writable `T` of exactly the size given.
    let result = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            (target as *mut T).cast(),
            core::mem::size_of::<T>() as u32,
            (base + offset as u64) as *const core::ffi::c_void,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(result as i32)
    }
}

/// Network namespace inode number of a `struct net *`.
#[inline(always)]
pub fn net_inum(net: u64) -> Result<u32, i32> {
    read::<u32>(net, config_field!(offsets.net_inum))
}

/// `sock_common.skc_state` of a socket: one byte, for the hooks that test it first.
#[inline(always)]
pub fn sock_state(sk: u64) -> Result<i32, i32> {
    read::<u8>(sk, offset_of!(SockHead, state) as u32).map(i32::from)
}

/// The endpoints of a TCP socket as the server sees them, and its state.
pub struct SockEndpoints {
    pub netns: u32,
    pub family: u16,
    pub local_port: u16,
    pub remote_port: u16,
    pub state: u8,
    /// Remote, then local, as `sock_common` keeps its IPv6 addresses: read there in place.
    addrs: [Addr; 2],
}

impl SockEndpoints {
    #[inline(always)]
    pub fn local_addr(&self) -> Addr {
        self.addrs[1]
    }

    #[inline(always)]
    pub fn remote_addr(&self) -> Addr {
        self.addrs[0]
    }

    /// Copies namespace, family, ports and addresses into an event's head.
    #[inline(always)]
    pub fn write_to(&self, event: &mut EventHead) {
        event.netns = self.netns;
        event.family = self.family;
        event.local_port = self.local_port;
        event.remote_port = self.remote_port;
        store_addr(&mut event.remote_addr, self.addrs[0]);
        store_addr(&mut event.local_addr, self.addrs[1]);
    }
}

/// Reads family, state, ports, addresses and network namespace of a `struct sock *` (or a
/// request sock, which starts with the same `sock_common`): three reads, four for IPv6. Each
/// read is a helper call, which costs more than the bytes it copies (see `SockHead`). Returns
/// `Ok(None)` for sockets that are not IPv4/IPv6.
#[inline(always)]
pub fn sock_endpoints(sk: u64) -> Result<Option<SockEndpoints>, i32> {
    let head = read::<SockHead>(sk, 0)?;
    if head.family != AF_INET && head.family != AF_INET6 {
        return Ok(None);
    }
    let net = read::<u64>(sk, config_field!(offsets.sk_net))?;
    let mut endpoints = SockEndpoints {
        netns: net_inum(net)?,
        family: head.family,
        local_port: head.num,
        remote_port: u16::from_be(head.dport),
        state: head.state,
        addrs: [v4_mapped(head.daddr), v4_mapped(head.rcv_saddr)],
    };
    if head.family == AF_INET6 {
        read_into(&mut endpoints.addrs, sk, config_field!(offsets.sk_v6_daddr))?;
    }
    Ok(Some(endpoints))
}

/// The value an fexit program's function returned: the context slot after its `args`
/// arguments (see `FexitReturnSlots`). Read with a helper: 5.10's verifier refuses a context
/// load at a computed offset, and `bpf_get_func_ret` arrived in 5.17.
#[inline(always)]
pub fn fexit_return<T>(ctx: &aya_ebpf::programs::FExitContext, args: u32) -> Result<T, i32> {
    use aya_ebpf::EbpfContext as _;
    // The trampoline's context holds one 8-byte slot per argument, then the return value.
    read::<T>(ctx.as_ptr() as u64, args * 8)
}
