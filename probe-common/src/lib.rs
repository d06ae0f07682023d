//! Wire types shared by the kernel programs (probe-ebpf) and the CLI (probe-user).
//!
//! Everything here is `#[repr(C)]` plain data with explicit padding, so both sides agree on the
//! layout byte for byte; the size checks at the bottom fail the build if a field moves.
#![no_std]

/// `AF_INET` and `AF_INET6` as the kernel stores them in `sock_common.skc_family`.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// TCP states from `include/net/tcp_states.h`; part of the kernel's ABI, stable across versions.
pub const TCP_ESTABLISHED: i32 = 1;
pub const TCP_CLOSE: i32 = 7;
pub const TCP_CLOSE_WAIT: i32 = 8;
pub const TCP_SYN_RECV: i32 = 3;
pub const TCP_LISTEN: i32 = 10;

/// Ports the kernel programs' filter (`PORTS`) holds: the most `--port` options synscope takes.
pub const MAX_PORTS: u32 = 64;

/// Stages, as indices of the per-CPU `FAILURES` map (kernel reads that failed in a program).
/// Userspace names them (`Stage` in probe-user's hooks); the order is the user's stage order.
pub const STAGE_SYN: u32 = 0;
pub const STAGE_HANDSHAKE: u32 = 1;
pub const STAGE_ACCEPT: u32 = 2;
pub const STAGE_LISTENER_DISCARDS: u32 = 3;
pub const STAGE_LISTEN_DROPS: u32 = 4;
pub const STAGE_SYNACK_RETRANSMIT: u32 = 5;
pub const STAGE_QUEUES: u32 = 6;
pub const STAGE_PHASES: u32 = 7;
pub const STAGES: u32 = 8;

/// Where each fexit program finds its function's return value: the context slot after the
/// function's arguments, whose number differs between kernels (`inet_csk_accept` took four
/// before 6.10, two since; `inet_csk_listen_start` two before 5.19, one since). Read from
/// the context directly: the helper that would give it (`bpf_get_func_ret`) arrived in 5.17.
/// Written by userspace from BTF before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FexitReturnSlots {
    pub inet_csk_listen_start: u32,
    pub inet_csk_accept: u32,
    pub tcp_rtx_synack: u32,
    /// `tcp_recvmsg` took six arguments before 5.19 (`nonblock`), five since.
    pub tcp_recvmsg: u32,
}

/// Capacity of the pending-state maps. They are LRU maps, so a connection that never completes
/// its handshake or is never accepted is evicted instead of leaking.
pub const PENDING_ENTRIES: u32 = 65_536;

/// Byte offsets of the kernel struct members the programs read. Userspace resolves them from the
/// running kernel's BTF and writes them into the object before load: Rust eBPF has no CO-RE, and
/// these offsets differ between kernel versions.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub skb_head: u32,
    pub skb_network_header: u32,
    pub skb_transport_header: u32,
    pub skb_dev: u32,
    /// `sk_buff._skb_refdst`: the route, whose device tells the namespace once TCP has cleared
    /// `skb->dev`.
    pub skb_refdst: u32,
    pub dst_dev: u32,
    /// `net_device.nd_net.net`
    pub netdev_net: u32,
    /// `net.ns.inum`: the network namespace's inode number, as `ls -i /proc/PID/ns/net` shows.
    pub net_inum: u32,
    /// `sock.__sk_common.skc_net.net`
    pub sk_net: u32,
    pub sk_family: u32,
    /// Local port, host byte order.
    pub sk_num: u32,
    /// Remote port, network byte order.
    pub sk_dport: u32,
    pub sk_rcv_saddr: u32,
    pub sk_daddr: u32,
    pub sk_v6_rcv_saddr: u32,
    pub sk_v6_daddr: u32,
    pub sk_protocol: u32,
    pub sk_state: u32,
    /// Accept-queue length and limit of a listener.
    pub sk_ack_backlog: u32,
    pub sk_max_ack_backlog: u32,
    /// `inet_connection_sock.icsk_accept_queue.qlen`: request socks (the SYN queue).
    pub icsk_syn_queue_len: u32,
    /// `sock.sk_socket`: set once a child has been accepted.
    pub sk_socket: u32,
    /// `sock.sk_drops`: the socket's drop counter (`ss -m` d).
    pub sk_drops: u32,
    /// `socket_alloc.vfs_inode`, relative to the `struct socket` at its start, and
    /// `inode.i_ino`: the socket's inode number, as sock_diag reports it.
    pub socket_inode: u32,
    pub inode_ino: u32,
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdtable_fd: u32,
    pub file_private_data: u32,
    pub socket_sk: u32,
}

/// The first 20 bytes of `struct sock_common` (at the start of every `struct sock` and
/// `struct request_sock`): addresses of IPv4, ports, family and state, read in one go. This
/// layout has not changed since Linux 3.x; userspace checks it against the kernel's BTF
/// (`KernelOffsets::sock_layout_mismatch`) before loading the programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockHead {
    /// Network order, as are both addresses: the bytes as in memory.
    pub daddr: u32,
    pub rcv_saddr: u32,
    pub hash: u32,
    /// Remote port, network order.
    pub dport: u16,
    /// Local port, host order.
    pub num: u16,
    pub family: u16,
    pub state: u8,
    pub flags: u8,
}

impl KernelOffsets {
    /// The first `sock_common` member whose offset differs from `SockHead` (or, for the IPv6
    /// addresses, read together, from right after the remote one), with its offset in this
    /// kernel; `None` when all agree.
    pub fn sock_layout_mismatch(&self) -> Option<(&'static str, u32)> {
        use core::mem::offset_of;
        let expected = [
            ("skc_daddr", self.sk_daddr, offset_of!(SockHead, daddr)),
            (
                "skc_rcv_saddr",
                self.sk_rcv_saddr,
                offset_of!(SockHead, rcv_saddr),
            ),
            ("skc_dport", self.sk_dport, offset_of!(SockHead, dport)),
            ("skc_num", self.sk_num, offset_of!(SockHead, num)),
            ("skc_family", self.sk_family, offset_of!(SockHead, family)),
            ("skc_state", self.sk_state, offset_of!(SockHead, state)),
            (
                "skc_v6_rcv_saddr",
                self.sk_v6_rcv_saddr,
                self.sk_v6_daddr as usize + 16,
            ),
        ];
        expected
            .into_iter()
            .find(|&(_, actual, expected)| actual as usize != expected)
            .map(|(name, actual, _)| (name, actual))
    }
}

/// Where an io_uring request keeps its opcode and result (`io_kiocb.opcode`, `io_kiocb.cqe.res`),
/// and an accept request the direct-descriptor slot it asked for (`io_accept.file_slot`, in the
/// command area at the start of `io_kiocb`); zero on kernels without io_uring.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoUringOffsets {
    pub request_opcode: u32,
    pub request_result: u32,
    pub accept_file_slot: u32,
    pub _pad: u32,
}

/// `IORING_OP_ACCEPT`, part of the io_uring ABI.
pub const IORING_OP_ACCEPT: u8 = 13;

/// Load-time configuration of the programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeConfig {
    pub offsets: KernelOffsets,
    /// Non-zero: only ports present in the `PORTS` map are traced.
    pub filter_ports: u32,
    pub _pad: u32,
}

/// What an event reports. The numbers are part of the wire format: never reuse one.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A SYN reached a listener.
    Syn = 1,
    /// A child socket completed its handshake and sits in the accept queue.
    Handshake = 2,
    /// accept() returned a child socket.
    Accept = 3,
    /// A socket started listening (addresses and the process that called listen()).
    Listen = 4,
    /// A packet addressed to a listener was discarded (for example a final ACK that found the
    /// accept queue full).
    ListenerDiscard = 5,
    /// A listener sent a SYN-ACK again.
    SynackRetransmit = 6,
    /// A listener closed: its final drop counter, for sockets that go before the last poll;
    /// `accepted_ns` is when (the children it discards follow as `LeftInQueue`).
    ListenerClosed = 7,
    /// Handling one packet, a listener moved some of its namespace's listen counters:
    /// `reason` holds a bit per counter of `COUNTED_MIB_NAMES`, and `COUNTED_AT_ACK` when the
    /// packet was a final ACK rather than a SYN.
    ListenCounted = 8,
    /// A child waiting in the accept queue saw its client leave: `reason` is the state it moved
    /// to, `TCP_CLOSE_WAIT` (the client's FIN) or `TCP_CLOSE` (its RST, or the listener
    /// closing and discarding its queue); `accepted_ns` is when.
    LeftInQueue = 9,
    /// A connection accepted while tracing sent its first response byte: `read_ns` is when
    /// its first read returned bytes (0 if the server spoke first), `response_ns` when it
    /// sent; `syn_ns`, `established_ns` and `accepted_ns` as for its accept.
    FirstResponse = 10,
}

/// The kernel's per-namespace MIB counters that `ListenCounted` events report, by bit.
pub const COUNTED_MIB_NAMES: [&str; COUNTED_MIBS] = [
    "LINUX_MIB_LISTENDROPS",
    "LINUX_MIB_LISTENOVERFLOWS",
    "LINUX_MIB_TCPREQQFULLDROP",
    "LINUX_MIB_SYNCOOKIESSENT",
    "LINUX_MIB_SYNCOOKIESFAILED",
    "LINUX_MIB_TCPFASTOPENPASSIVE",
];
pub const COUNTED_MIBS: usize = 6;
pub const COUNTED_LISTEN_DROPS: u32 = 1 << 0;
pub const COUNTED_LISTEN_OVERFLOWS: u32 = 1 << 1;
pub const COUNTED_REQ_QUEUE_FULL_DROP: u32 = 1 << 2;
pub const COUNTED_SYNCOOKIES_SENT: u32 = 1 << 3;
pub const COUNTED_SYNCOOKIES_FAILED: u32 = 1 << 4;
pub const COUNTED_FASTOPEN_PASSIVE: u32 = 1 << 5;
/// The packet was a final ACK (or a cookie's ACK), not a SYN.
pub const COUNTED_AT_ACK: u32 = 1 << 8;

/// Where the kernel keeps the listen counters, for the `ListenCounted` programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenCounters {
    /// Address of `__per_cpu_offset`, the kernel's table of per-CPU area offsets; 0 when
    /// unknown, which disables the programs.
    pub per_cpu_offsets: u64,
    /// `net.mib.net_statistics`: the namespace's per-CPU `linux_mib` block.
    pub net_statistics: u32,
    /// Index in `linux_mib.mibs` of each counter of `COUNTED_MIB_NAMES`.
    pub indices: [u32; COUNTED_MIBS],
    /// `request_sock.rsk_listener`.
    pub request_listener: u32,
}

impl EventKind {
    pub fn from_u32(value: u32) -> Option<Self> {
        match value {
            1 => Some(Self::Syn),
            2 => Some(Self::Handshake),
            3 => Some(Self::Accept),
            4 => Some(Self::Listen),
            5 => Some(Self::ListenerDiscard),
            6 => Some(Self::SynackRetransmit),
            7 => Some(Self::ListenerClosed),
            8 => Some(Self::ListenCounted),
            9 => Some(Self::LeftInQueue),
            10 => Some(Self::FirstResponse),
            _ => None,
        }
    }
}

/// One event from the kernel programs to userspace, through the ring buffer.
///
/// Addresses are 16 bytes; IPv4 is stored v4-mapped (`::ffff:a.b.c.d`) so that a SYN seen as an
/// IPv4 packet matches the child of an IPv6 socket that accepted it.
///
/// The first 64 bytes are an [`EventHead`], field for field: the most frequent events (`Syn`,
/// `Handshake`) send only those, a cache line instead of two, and userspace reads a shorter
/// record as an event whose other fields are zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnEvent {
    pub kind: u32,
    pub netns: u32,
    pub family: u16,
    pub local_port: u16,
    pub remote_port: u16,
    /// `PENDING_*` bits: what the program that sent this event did to the maps of connections
    /// in progress (`Syn`, `Handshake`, `Accept` and `FirstResponse` events).
    pub pending: u16,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    /// CLOCK_MONOTONIC nanoseconds; 0 when that stage was not seen (for example a connection
    /// whose SYN arrived before tracing started).
    pub syn_ns: u64,
    pub established_ns: u64,
    /// Process (tgid) that accepted or listened; 0 for kernel-context events.
    pub pid: u32,
    /// The drop reason of a `ListenerDiscard` (kernel `enum skb_drop_reason`); the drop counter
    /// of a `ListenerClosed`; the `COUNTED_*` bits of a `ListenCounted`.
    pub reason: u32,
    /// The thread that accepted (an `Accept`'s).
    pub tid: u32,
    /// Inode number of a `ListenerClosed` socket.
    pub socket_inode: u32,
    pub accepted_ns: u64,
    pub comm: [u8; 16],
    /// `FirstResponse` only: the first read that returned bytes, and the first send.
    pub read_ns: u64,
    pub response_ns: u64,
}

/// The start of every [`ConnEvent`]: which connection, and its first two stages. Sent alone by
/// the `Syn` and `Handshake` programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHead {
    pub kind: u32,
    pub netns: u32,
    pub family: u16,
    pub local_port: u16,
    pub remote_port: u16,
    pub pending: u16,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    pub syn_ns: u64,
    pub established_ns: u64,
}

impl ConnEvent {
    /// The event's first 64 bytes, as an [`EventHead`] (the same fields at the same offsets,
    /// checked below).
    pub fn head_mut(&mut self) -> &mut EventHead {
        // SAFETY: EventHead is a prefix of ConnEvent's layout (asserted field by field below),
        // with no stricter alignment; the borrow of `self` covers it.
        unsafe { &mut *(self as *mut Self).cast::<EventHead>() }
    }

    /// An event from a ring-buffer record: a whole `ConnEvent`, or an `EventHead` whose other
    /// fields are then zero; `None` for a record shorter than a head.
    pub fn from_record(record: &[u8]) -> Option<Self> {
        if record.len() < core::mem::size_of::<EventHead>() {
            return None;
        }
        let mut event = Self::zeroed();
        let length = record.len().min(core::mem::size_of::<Self>());
        // SAFETY: `length` bytes fit in both; every bit pattern is a valid ConnEvent (plain
        // integers and byte arrays); the copy does not assume the record's alignment.
        unsafe {
            core::ptr::copy_nonoverlapping(
                record.as_ptr(),
                (&mut event as *mut Self).cast::<u8>(),
                length,
            );
        }
        Some(event)
    }
}

const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<EventHead>() == 64 && align_of::<EventHead>() <= align_of::<ConnEvent>());
    assert!(offset_of!(ConnEvent, kind) == offset_of!(EventHead, kind));
    assert!(offset_of!(ConnEvent, netns) == offset_of!(EventHead, netns));
    assert!(offset_of!(ConnEvent, family) == offset_of!(EventHead, family));
    assert!(offset_of!(ConnEvent, local_port) == offset_of!(EventHead, local_port));
    assert!(offset_of!(ConnEvent, remote_port) == offset_of!(EventHead, remote_port));
    assert!(offset_of!(ConnEvent, pending) == offset_of!(EventHead, pending));
    assert!(offset_of!(ConnEvent, local_addr) == offset_of!(EventHead, local_addr));
    assert!(offset_of!(ConnEvent, remote_addr) == offset_of!(EventHead, remote_addr));
    assert!(offset_of!(ConnEvent, syn_ns) == offset_of!(EventHead, syn_ns));
    assert!(offset_of!(ConnEvent, established_ns) == offset_of!(EventHead, established_ns));
    assert!(offset_of!(ConnEvent, pid) == size_of::<EventHead>());
};

impl ConnEvent {
    pub const fn zeroed() -> Self {
        Self {
            kind: 0,
            netns: 0,
            pid: 0,
            reason: 0,
            family: 0,
            local_port: 0,
            remote_port: 0,
            pending: 0,
            socket_inode: 0,
            tid: 0,
            syn_ns: 0,
            established_ns: 0,
            accepted_ns: 0,
            local_addr: [0; 16],
            remote_addr: [0; 16],
            comm: [0; 16],
            read_ns: 0,
            response_ns: 0,
        }
    }
}

/// A connection from its handshake to its first response byte (the `CONNECTIONS` map, keyed by
/// `struct sock *`): a child waiting in an accept queue while `accepted_ns` is 0; once accepted,
/// and when the phases are traced, followed in the same entry until its first response. One
/// entry for both stages: accept() fills it in place, where moving it between two maps cost a
/// removal and an insert into an LRU map per connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Connection {
    pub syn_ns: u64,
    pub established_ns: u64,
    /// 0 while the child waits in the accept queue.
    pub accepted_ns: u64,
    /// When a read first returned bytes; 0 until then.
    pub read_ns: u64,
    pub pid: u32,
    /// The child's local port: a socket moving to CLOSE has already given its port back
    /// (`inet_num` is 0) when the state-change tracepoint fires.
    pub local_port: u16,
    /// The client's port: an entry left by a connection freed before its entry went (a child
    /// freed in its queue, a connection closed before its first response) is told apart from a
    /// later socket at the same address by it.
    pub remote_port: u16,
    pub comm: [u8; 16],
}

impl Connection {
    /// A child just put on its accept queue.
    pub fn waiting(stamps: &ChildStamps) -> Self {
        Connection {
            syn_ns: stamps.syn_ns,
            established_ns: stamps.established_ns,
            local_port: stamps.local_port,
            remote_port: stamps.remote_port,
            ..Default::default()
        }
    }

    /// Accepted (and followed to its first response), not waiting in an accept queue.
    pub fn accepted(&self) -> bool {
        self.accepted_ns != 0
    }

    pub fn stamps(&self) -> ChildStamps {
        ChildStamps {
            syn_ns: self.syn_ns,
            established_ns: self.established_ns,
            local_port: self.local_port,
            remote_port: self.remote_port,
            _pad: [0; 2],
        }
    }
}

/// Key of the SYN-timestamp map: one connection, seen from the server.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowKey {
    pub netns: u32,
    pub local_port: u16,
    pub remote_port: u16,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
}

/// A listener as synscope reports it: a port in a network namespace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListenerKey {
    pub netns: u32,
    pub port: u16,
    pub _pad: u16,
}

impl ListenerKey {
    pub const fn new(netns: u32, port: u16) -> Self {
        Self {
            netns,
            port,
            _pad: 0,
        }
    }
}

/// Queue depths of a listener, the largest seen, kept in the `QUEUES` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueDepths {
    /// Largest accept-queue length, read each time a child is queued.
    pub accept_queue_max: u32,
    /// Largest number of pending handshakes (request socks) seen at those moments.
    pub syn_queue_max: u32,
    /// The accept-queue limit (`sk_max_ack_backlog`).
    pub backlog: u32,
    pub _pad: u32,
}

/// When a handshake's first SYN arrived, and its initial sequence number: a retransmitted SYN
/// repeats it, a new connection reusing the 4-tuple does not.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynStamp {
    pub syn_ns: u64,
    pub sequence: u32,
    pub _pad: u32,
}

/// A child returned by accept() before its handshake was marked complete: with fexit or a
/// kretprobe on `inet_csk_accept`, another CPU can dequeue a child in the instant between its
/// queueing and its move to ESTABLISHED. The accept is reported when the handshake completes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EarlyAccept {
    pub accepted_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: [u8; 16],
}

/// SYNs a listener received, counted by the kernel programs where no view needs each one as an
/// event (the `SYN_COUNTS` map, per CPU, keyed by `ListenerKey`): one event fewer per
/// connection for synscope's process to handle, and a SYN flood's count that lost events
/// cannot cut short.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SynCount {
    pub syns: u64,
    /// Of those, the ones that put a new entry in `SYN_TIMES` (an event's `PENDING_SYN_ADDED`).
    pub stamped: u64,
}

/// Listeners `SYN_COUNTS` holds; the SYNs of any beyond are sent as events, so counts stay exact.
pub const SYN_COUNTED_LISTENERS: u32 = 4096;

/// The handshake's figures of a child socket, as the handshake and accept events carry them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChildStamps {
    pub syn_ns: u64,
    pub established_ns: u64,
    /// As in `Connection`.
    pub local_port: u16,
    pub remote_port: u16,
    pub _pad: [u16; 2],
}

/// Bits of `ConnEvent::pending`. The LRU maps of connections in progress (`SYN_TIMES`: a SYN's
/// arrival until its handshake completes; `CONNECTIONS`: a child in an accept queue until
/// accepted (the "child" bits), then an accepted connection until its first response (the
/// "followed" bits): accept() moves an entry from the first kind to the second) evict their oldest
/// entries when full. `*_ADDED`: the program put an entry, new or in place of a leftover (which
/// `PendingTally` counts as removed). Userspace counts from the events what was added and
/// removed, adds the rare removals that send no event, and at the end of a run: added -
/// removed - still present = evicted, which explains a figure missing a stage.
pub const PENDING_SYN_ADDED: u16 = 1;
pub const PENDING_SYN_REMOVED: u16 = 1 << 1;
pub const PENDING_CHILD_ADDED: u16 = 1 << 2;
pub const PENDING_CHILD_REMOVED: u16 = 1 << 3;
pub const PENDING_FOLLOWED_ADDED: u16 = 1 << 4;
pub const PENDING_FOLLOWED_REMOVED: u16 = 1 << 5;

/// Removals from the maps of connections in progress that no event reports, per CPU: a
/// leftover entry replaced (the event reports the addition) or found stale and removed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingTally {
    /// A SYN on the 4-tuple of an earlier one that never completed.
    pub syn_replaced: u64,
    /// A child at the address of one freed while queued (its listener closed).
    pub children_replaced: u64,
    /// Such a leftover child entry found by another socket at its address, and removed.
    pub children_stale_removed: u64,
    /// A connection at the address of one closed before its first response: replaced by the
    /// handshake of a new child there, or by an accept that found no entry of its own.
    pub followed_replaced: u64,
    /// Such a leftover followed entry found by another socket at its address, and removed.
    pub followed_stale_removed: u64,
}

const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 120);
const _: () = assert!(core::mem::size_of::<ProbeConfig>() == 128);
const _: () = assert!(core::mem::size_of::<ConnEvent>() == 120);
const _: () = assert!(core::mem::size_of::<Connection>() == 56);
const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);
const _: () = assert!(core::mem::size_of::<ListenCounters>() == 40);
const _: () = assert!(core::mem::size_of::<ChildStamps>() == 24);
const _: () = assert!(core::mem::size_of::<SynCount>() == 16);
const _: () = assert!(core::mem::size_of::<SynStamp>() == 16);
const _: () = assert!(core::mem::size_of::<EarlyAccept>() == 32);
const _: () = assert!(core::mem::size_of::<ListenerKey>() == 8);
const _: () = assert!(core::mem::size_of::<QueueDepths>() == 16);
const _: () = assert!(core::mem::size_of::<PendingTally>() == 40);
const _: () = assert!(core::mem::size_of::<SockHead>() == 20);

#[cfg(feature = "user")]
mod user {
    // SAFETY: all are repr(C) plain data with explicit padding and no invalid bit patterns.
    unsafe impl aya::Pod for super::ProbeConfig {}
    unsafe impl aya::Pod for super::ListenCounters {}
    unsafe impl aya::Pod for super::IoUringOffsets {}
    unsafe impl aya::Pod for super::FexitReturnSlots {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::ListenerKey {}
    unsafe impl aya::Pod for super::QueueDepths {}
    unsafe impl aya::Pod for super::PendingTally {}
    unsafe impl aya::Pod for super::SynStamp {}
    unsafe impl aya::Pod for super::Connection {}
    unsafe impl aya::Pod for super::SynCount {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T>(value: &T) -> &[u8] {
        // SAFETY: a plain-data value read as its bytes, for its own size.
        unsafe {
            core::slice::from_raw_parts((value as *const T).cast::<u8>(), core::mem::size_of::<T>())
        }
    }

    #[test]
    fn a_head_record_reads_as_an_event_with_the_rest_zero() {
        let head = EventHead {
            kind: EventKind::Handshake as u32,
            netns: 7,
            family: AF_INET,
            local_port: 80,
            remote_port: 40_000,
            pending: 3,
            local_addr: [1; 16],
            remote_addr: [2; 16],
            syn_ns: 10,
            established_ns: 20,
        };
        let event = ConnEvent::from_record(bytes_of(&head)).expect("a head is an event");
        let mut expected = ConnEvent::zeroed();
        *expected.head_mut() = head;
        assert_eq!(event, expected);
        assert_eq!(
            (event.local_port, event.established_ns, event.pid),
            (80, 20, 0)
        );
    }

    #[test]
    fn a_whole_record_reads_back_and_a_short_one_is_refused() {
        let mut whole = ConnEvent::zeroed();
        whole.kind = EventKind::Accept as u32;
        whole.accepted_ns = 30;
        whole.comm = *b"nginx\0\0\0\0\0\0\0\0\0\0\0";
        whole.response_ns = 40;
        assert_eq!(ConnEvent::from_record(bytes_of(&whole)), Some(whole));
        assert_eq!(ConnEvent::from_record(&bytes_of(&whole)[..63]), None);
    }
}
