//! Maps and load-time configuration shared by all programs.

use aya_ebpf::{
    Global,
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use probe_common::{
    COUNTED_MIBS, Connection, EarlyAccept, FexitReturnSlots, FlowKey, IoUringOffsets,
    KernelOffsets, ListenCounters, ListenerKey, MAX_PORTS, PENDING_ENTRIES, PendingTally,
    ProbeConfig, QueueDepths, STAGES, SYN_COUNTED_LISTENERS, SynCount, SynStamp,
};

/// Written by userspace before load (kernel offsets, port filter switch, SYN consumer range).
#[unsafe(no_mangle)]
pub static CONFIG: Global<ProbeConfig> = Global::new(ProbeConfig {
    offsets: KernelOffsets {
        skb_head: 0,
        skb_network_header: 0,
        skb_transport_header: 0,
        skb_dev: 0,
        skb_refdst: 0,
        dst_dev: 0,
        netdev_net: 0,
        net_inum: 0,
        sk_net: 0,
        sk_family: 0,
        sk_num: 0,
        sk_dport: 0,
        sk_rcv_saddr: 0,
        sk_daddr: 0,
        sk_v6_rcv_saddr: 0,
        sk_v6_daddr: 0,
        sk_protocol: 0,
        sk_state: 0,
        sk_ack_backlog: 0,
        sk_max_ack_backlog: 0,
        icsk_syn_queue_len: 0,
        sk_socket: 0,
        sk_drops: 0,
        socket_inode: 0,
        inode_ino: 0,
        task_files: 0,
        files_fdt: 0,
        fdtable_fd: 0,
        file_private_data: 0,
        socket_sk: 0,
    },
    filter_ports: 0,
    _pad: 0,
});

/// Address range of `tcp_rcv_state_process`: a SYN handled by a listener is released with
/// `consume_skb` from inside it. Globals of their own, so that the hottest test in the object
/// reads 16 bytes, not the whole configuration.
#[unsafe(no_mangle)]
pub static SYN_CONSUMER_START: Global<u64> = Global::new(0);
#[unsafe(no_mangle)]
pub static SYN_CONSUMER_END: Global<u64> = Global::new(0);

/// Events to userspace. 4 MiB holds about 37,000 events: several seconds of a SYN flood even if
/// userspace stalls; anything beyond is counted in `LOST`.
pub const EVENTS_BYTES: u32 = 4 * 1024 * 1024;
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Events that did not fit in `EVENTS`, per CPU.
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Kernel reads that failed, per CPU, by stage (`probe_common::STAGE_*`): counted, so that a
/// report can say its figures may be low, instead of dropped quietly.
#[map]
pub static FAILURES: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAGES, 0);

/// Ports to trace when `filter_ports` is set (value unused).
#[map]
pub static PORTS: HashMap<u16, u8> = HashMap::with_max_entries(MAX_PORTS, 0);

/// SYN arrival time of connections still in the handshake.
#[map]
pub static SYN_TIMES: LruHashMap<FlowKey, SynStamp> =
    LruHashMap::with_max_entries(PENDING_ENTRIES, 0);

/// Non-zero: every SYN is sent as an event, for a view that shows each connection's SYNs
/// (`synscope trace`); otherwise they are counted per listener in `SYN_COUNTS`. Written by
/// userspace before load.
#[unsafe(no_mangle)]
pub static SYN_EVENTS: Global<u32> = Global::new(0);

/// SYNs per listener, per CPU, where they are not sent as events (see `SynCount`).
#[map]
pub static SYN_COUNTS: PerCpuHashMap<ListenerKey, SynCount> =
    PerCpuHashMap::with_max_entries(SYN_COUNTED_LISTENERS, 0);

/// Counts one SYN of `listener` on this CPU; false if `SYN_COUNTS` has no room for a new
/// listener, whose SYN is then sent as an event.
#[inline(always)]
pub fn count_syn(listener: &ListenerKey, stamped: bool) -> bool {
    let counted = |count: *mut SynCount| {
        // SAFETY: the pointer is to this CPU's slot of the entry, valid while the program runs
        // (RCU); programs do not migrate between CPUs while they run, so no other writer races.
        unsafe {
            (*count).syns += 1;
            (*count).stamped += u64::from(stamped);
        }
        true
    };
    if let Some(count) = SYN_COUNTS.get_ptr_mut(listener) {
        return counted(count);
    }
    let first = SynCount {
        syns: 1,
        stamped: u64::from(stamped),
    };
    if SYN_COUNTS
        .insert(listener, &first, BPF_NOEXIST as u64)
        .is_ok()
    {
        return true;
    }
    // Another CPU added the listener meanwhile (this CPU's slot is then 0), or the map is full.
    SYN_COUNTS.get_ptr_mut(listener).is_some_and(counted)
}

/// Children accepted before their handshake was marked complete, keyed by `struct sock *`.
#[map]
pub static EARLY_ACCEPTS: LruHashMap<u64, EarlyAccept> = LruHashMap::with_max_entries(4096, 0);

/// Connections from their handshake until accepted (children waiting in an accept queue), then
/// until their first response when the phases are traced, keyed by `struct sock *` (see
/// `Connection`). LRU: a connection never accepted, or one that never answers, is evicted, never
/// leaked.
#[map]
pub static CONNECTIONS: LruHashMap<u64, Connection> =
    LruHashMap::with_max_entries(PENDING_ENTRIES, 0);

/// The rare changes to `SYN_TIMES` and `CONNECTIONS` that no event reports, per CPU
/// (see `PendingTally`); the common ones are bits of the events (`PENDING_*`).
#[map]
pub static PENDING_TALLY: PerCpuArray<PendingTally> = PerCpuArray::with_max_entries(1, 0);

/// Counts in this CPU's `PENDING_TALLY`.
#[inline(always)]
pub fn tally(count: impl FnOnce(&mut PendingTally)) {
    if let Some(slot) = PENDING_TALLY.get_ptr_mut(0) {
        // SAFETY: the lookup returned a valid, aligned pointer to this CPU's slot, and programs
        // do not migrate between CPUs while they run. Only a softirq's program interrupting
        // this one on its CPU could write at the same time, and lose one count: these are
        // plain adds, because this target has no atomic add in `core`.
        count(unsafe { &mut *slot });
    }
}

/// The entry of the child `sk`, waiting in an accept queue, whose client port is `remote_port`.
/// A child freed while queued (its listener closed, or its client left and the listener
/// discarded it) leaves its entry behind; a later socket at the same address finds it, sees
/// another client port, and removes it instead of taking it for its own. An accepted
/// connection's entry is not a waiting child's: `None`, and it stays.
#[inline(always)]
pub fn waiting_child(sk: u64, remote_port: u16) -> Option<*mut Connection> {
    let entry = CONNECTIONS.get_ptr_mut(&sk)?;
    // SAFETY: the pointer is to this entry's value, valid while the program runs (RCU); the
    // fields are copied out at once, and another CPU replacing the entry meanwhile can only
    // change the values read.
    let (accepted, port) = unsafe { ((*entry).accepted(), (*entry).remote_port) };
    if accepted {
        return None;
    }
    if port != remote_port {
        if CONNECTIONS.remove(&sk).is_ok() {
            tally(|t| t.children_stale_removed += 1);
        }
        return None;
    }
    Some(entry)
}

/// Sockets in `inet_csk_listen_start`, by task, between a kprobe and its kretprobe.
#[map]
pub static LISTEN_CALLS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(1024, 0);

/// The request sock of the `tcp_rtx_synack` call in progress on each CPU (kprobe backend).
#[map]
pub static SYNACK_REQUESTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The return-value slot of each fexit program's function; written by userspace before load.
#[unsafe(no_mangle)]
pub static FEXIT_RETURN: Global<FexitReturnSlots> = Global::new(FexitReturnSlots {
    inet_csk_listen_start: 0,
    inet_csk_accept: 0,
    tcp_rtx_synack: 0,
    tcp_recvmsg: 0,
});

/// Non-zero: the accept programs follow each accepted connection to its first response
/// (`phases.rs`); written by userspace before load (`--phases none` leaves it 0).
#[unsafe(no_mangle)]
pub static FOLLOW_RESPONSES: Global<u32> = Global::new(0);

/// Followed sockets in `tcp_recvmsg`, by task, between a kprobe and its kretprobe.
#[map]
pub static RECV_CALLS: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4096, 0);

/// Where io_uring requests keep opcode and result; written by userspace before load.
#[unsafe(no_mangle)]
pub static IO_URING: Global<IoUringOffsets> = Global::new(IoUringOffsets {
    request_opcode: 0,
    request_result: 0,
    accept_file_slot: 0,
    _pad: 0,
});

/// Where the listen counters are (see listen_drops.rs); written by userspace before load.
#[unsafe(no_mangle)]
pub static LISTEN_COUNTERS: Global<ListenCounters> = Global::new(ListenCounters {
    per_cpu_offsets: 0,
    net_statistics: 0,
    indices: [0; COUNTED_MIBS],
    request_listener: 0,
});

/// A listener's counters on this CPU before it handled the current packet.
#[derive(Clone, Copy, Default)]
#[repr(C)]
pub struct ListenSnapshot {
    /// 0: no snapshot.
    pub listener: u64,
    /// This CPU's `linux_mib` block of the listener's namespace.
    pub block: u64,
    pub values: [u64; COUNTED_MIBS],
    /// The counters the packet moved, one bit each, filled in after it was handled.
    pub moved: u64,
}

#[map]
pub static LISTEN_SNAPSHOT: PerCpuArray<ListenSnapshot> = PerCpuArray::with_max_entries(1, 0);

/// Deepest queues seen per listener.
#[map]
pub static QUEUES: LruHashMap<ListenerKey, QueueDepths> = LruHashMap::with_max_entries(4096, 0);

/// `CONFIG` as the `ProbeConfig` it wraps (`Global` is `repr(transparent)`).
#[inline(always)]
pub fn config_ptr() -> *const ProbeConfig {
    (&raw const CONFIG).cast()
}

/// One field of `CONFIG` (`config_field!(offsets.sk_net)`), read on its own: the read is
/// volatile, as `Global::load` is, so that the compiler does not fold in the placeholder value
/// that userspace replaces at load. Programs read only the fields they need: `Global::load` of
/// the whole configuration reads all of it, field by field (about 30 loads).
macro_rules! config_field {
    ($($field:ident).+) => {
        // SAFETY: `config_ptr` points to a static that lives as long as the program, and every
        // field of `ProbeConfig` is a plain integer, aligned within it.
        unsafe {
            core::ptr::read_volatile(core::ptr::addr_of!(
                (*crate::maps::config_ptr()).$($field).+
            ))
        }
    };
}
pub(crate) use config_field;

/// True when `port` (host order) is one the user asked to trace.
#[inline(always)]
pub fn port_traced(port: u16) -> bool {
    let filter_ports: u32 = config_field!(filter_ports);
    // SAFETY: only the presence of the entry is used, never a reference to its value.
    filter_ports == 0 || unsafe { PORTS.get(&port) }.is_some()
}
