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

/// How a program reads kernel memory through a pointer: [`Probed`] for any pointer, [`Typed`]
/// for pointers whose type the verifier knows.
pub trait Memory {
    /// Reads a `T` (plain data) at `base + offset`.
    fn read<T: Copy>(base: u64, offset: u32) -> Result<T, i32>;
    /// Reads the `T`s at `base + first` and `base + second`.
    fn read_pair<T: Copy>(base: u64, first: u32, second: u32) -> Result<(T, T), i32>;
    /// The head of the `sock_common` at `sk`.
    fn sock_head(sk: u64) -> Result<SockHead, i32>;
    /// The IPv6 address pair (remote, local) at `sk + offset`, into `addrs`.
    fn read_addrs(addrs: &mut [Addr; 2], sk: u64, offset: u32) -> Result<(), i32>;
}

/// `bpf_probe_read_kernel`, a helper call per read: for any address (kprobe arguments, classic
/// tracepoints, pointers found in memory by such reads, members beyond the pointer's type).
pub enum Probed {}

impl Memory for Probed {
    #[inline(always)]
    fn read<T: Copy>(base: u64, offset: u32) -> Result<T, i32> {
        read(base, offset)
    }

    #[inline(always)]
    fn read_pair<T: Copy>(base: u64, first: u32, second: u32) -> Result<(T, T), i32> {
        // Side by side: one call for both.
        if second == first + core::mem::size_of::<T>() as u32 {
            let [a, b] = read::<[T; 2]>(base, first)?;
            Ok((a, b))
        } else {
            Ok((read(base, first)?, read(base, second)?))
        }
    }

    #[inline(always)]
    fn sock_head(sk: u64) -> Result<SockHead, i32> {
        // One call for the 20 bytes: the call costs more than the bytes it copies.
        read::<SockHead>(sk, 0)
    }

    #[inline(always)]
    fn read_addrs(addrs: &mut [Addr; 2], sk: u64, offset: u32) -> Result<(), i32> {
        read_into(addrs, sk, offset)
    }
}

/// Plain loads, no helper call, through pointers whose BTF type the verifier knows: the
/// arguments of `tp_btf` and fentry/fexit programs, and pointer members loaded from them this
/// way. The verifier checks each load against the type (a member of that size at that offset:
/// the offsets come from read-only globals, frozen at load, so it sees them as constants) and
/// the JIT makes it fault-handled: a bad address reads as 0. Nothing beyond the pointer's own
/// type (`inet_connection_sock`'s members through a `struct sock *`) can be read so.
pub enum Typed {}

impl Memory for Typed {
    #[inline(always)]
    fn read<T: Copy>(base: u64, offset: u32) -> Result<T, i32> {
        // SAFETY: see `Typed`: the verifier admits this load only where `base` is a typed
        // pointer with a member of `T`'s size at `offset`, and a fault reads zeroes; `T` is
        // plain data, valid for any bits. Volatile: one load per member, never merged into a
        // wider load that would span two members.
        Ok(unsafe { core::ptr::read_volatile((base + u64::from(offset)) as *const T) })
    }

    #[inline(always)]
    fn read_pair<T: Copy>(base: u64, first: u32, second: u32) -> Result<(T, T), i32> {
        // Two loads: one may not span two members.
        Ok((Self::read(base, first)?, Self::read(base, second)?))
    }

    #[inline(always)]
    fn sock_head(sk: u64) -> Result<SockHead, i32> {
        let member = |offset: usize| offset as u32;
        // Member by member: a single load may not span members.
        Ok(SockHead {
            daddr: Self::read(sk, member(offset_of!(SockHead, daddr)))?,
            rcv_saddr: Self::read(sk, member(offset_of!(SockHead, rcv_saddr)))?,
            hash: 0,
            dport: Self::read(sk, member(offset_of!(SockHead, dport)))?,
            num: Self::read(sk, member(offset_of!(SockHead, num)))?,
            family: Self::read(sk, member(offset_of!(SockHead, family)))?,
            state: Self::read(sk, member(offset_of!(SockHead, state)))?,
            flags: 0,
        })
    }

    #[inline(always)]
    fn read_addrs(addrs: &mut [Addr; 2], sk: u64, offset: u32) -> Result<(), i32> {
        // Written out, not a loop: the verifier follows a loop over the words iteration by
        // iteration, and older ones refuse it.
        let word = |index: u32| Self::read::<u32>(sk, offset + 4 * index);
        *addrs = [
            [word(0)?, word(1)?, word(2)?, word(3)?],
            [word(4)?, word(5)?, word(6)?, word(7)?],
        ];
        Ok(())
    }
}

/// Network namespace inode number of a `struct net *`.
#[inline(always)]
pub fn net_inum<M: Memory>(net: u64) -> Result<u32, i32> {
    M::read::<u32>(net, config_field!(offsets.net_inum))
}

/// `sock_common.skc_state` of a socket: one byte, for the hooks that test it first.
#[inline(always)]
pub fn sock_state<M: Memory>(sk: u64) -> Result<i32, i32> {
    M::read::<u8>(sk, offset_of!(SockHead, state) as u32).map(i32::from)
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
/// request sock, which starts with the same `sock_common`): three probed reads, four for IPv6,
/// or a dozen plain loads (see `Memory`). Returns `Ok(None)` for sockets that are not
/// IPv4/IPv6.
#[inline(always)]
pub fn sock_endpoints<M: Memory>(sk: u64) -> Result<Option<SockEndpoints>, i32> {
    let head = M::sock_head(sk)?;
    if head.family != AF_INET && head.family != AF_INET6 {
        return Ok(None);
    }
    let net = M::read::<u64>(sk, config_field!(offsets.sk_net))?;
    let mut endpoints = SockEndpoints {
        netns: net_inum::<M>(net)?,
        family: head.family,
        local_port: head.num,
        remote_port: u16::from_be(head.dport),
        state: head.state,
        addrs: [v4_mapped(head.daddr), v4_mapped(head.rcv_saddr)],
    };
    if head.family == AF_INET6 {
        M::read_addrs(&mut endpoints.addrs, sk, config_field!(offsets.sk_v6_daddr))?;
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
