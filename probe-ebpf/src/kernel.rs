//! Reading kernel memory at offsets resolved from BTF at load time.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use probe_common::{AF_INET, AF_INET6, ConnEvent, KernelOffsets};

/// Reads a `T` at `base + offset`.
#[inline(always)]
pub fn read<T>(base: u64, offset: u32) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel never dereferences the address itself: it copies through
    // the kernel's fault-handling read and returns an error for an unreadable address. Callers
    // only read plain-data `T`s (integers and byte arrays), valid for any bit pattern.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) }
}

/// Network namespace inode number of a `struct net *`.
#[inline(always)]
pub fn net_inum(offsets: &KernelOffsets, net: u64) -> Result<u32, i32> {
    read::<u32>(net, offsets.net_inum)
}

/// Writes an IPv4 address (network order bytes) as v4-mapped IPv6.
#[inline(always)]
pub fn v4_mapped(v4: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3],
    ]
}

/// The endpoints of a TCP socket as the server sees them.
pub struct SockEndpoints {
    pub netns: u32,
    pub family: u16,
    pub local_port: u16,
    pub remote_port: u16,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
}

impl SockEndpoints {
    /// Copies namespace, family, ports and addresses into `event`.
    #[inline(always)]
    pub fn write_to(&self, event: &mut ConnEvent) {
        event.netns = self.netns;
        event.family = self.family;
        event.local_port = self.local_port;
        event.remote_port = self.remote_port;
        event.local_addr = self.local_addr;
        event.remote_addr = self.remote_addr;
    }
}

/// Reads family, ports, addresses and network namespace of a `struct sock *`.
/// Returns `Ok(None)` for sockets that are not IPv4/IPv6.
#[inline(always)]
pub fn sock_endpoints(offsets: &KernelOffsets, sk: u64) -> Result<Option<SockEndpoints>, i32> {
    let family = read::<u16>(sk, offsets.sk_family)?;
    let (local_addr, remote_addr) = match family {
        AF_INET => (
            v4_mapped(read(sk, offsets.sk_rcv_saddr)?),
            v4_mapped(read(sk, offsets.sk_daddr)?),
        ),
        AF_INET6 => (
            read(sk, offsets.sk_v6_rcv_saddr)?,
            read(sk, offsets.sk_v6_daddr)?,
        ),
        _ => return Ok(None),
    };
    let net = read::<u64>(sk, offsets.sk_net)?;
    Ok(Some(SockEndpoints {
        netns: net_inum(offsets, net)?,
        family,
        local_port: read::<u16>(sk, offsets.sk_num)?,
        remote_port: u16::from_be(read::<u16>(sk, offsets.sk_dport)?),
        local_addr,
        remote_addr,
    }))
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
