//! Queue depths of listeners, tracepoint backend (`sock:sk_data_ready`): a listener is woken
//! right after a child joins its accept queue, the only moment that queue grows, so reading it
//! then gives its true maximum. The SYN queue (pending handshakes) is sampled at the same time.
//!
//! fentry and kprobe backends: the entry of `sock_def_readable(sk)`, the wake-up function of
//! every listener opened from userspace, which fires that tracepoint (and exists on kernels
//! that lack it, before 6.6).

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::{btf_tracepoint, fentry, kprobe},
    programs::{BtfTracePointContext, FEntryContext, ProbeContext},
};
use probe_common::{ListenerKey, QueueDepths, STAGE_QUEUES, TCP_LISTEN};

use crate::{
    failures,
    kernel::{Memory, Probed, Typed, net_inum, read},
    maps::{QUEUES, config_field, port_traced},
};

#[btf_tracepoint(function = "sk_data_ready")]
pub fn queues_data_ready(ctx: BtfTracePointContext) -> u32 {
    on_data_ready::<Typed>(ctx.arg(0));
    0
}

#[fentry(function = "sock_def_readable")]
pub fn queues_fentry(ctx: FEntryContext) -> u32 {
    on_data_ready::<Typed>(ctx.arg(0));
    0
}

#[kprobe]
pub fn queues_kprobe(ctx: ProbeContext) -> u32 {
    if let Some(sk) = ctx.arg::<u64>(0) {
        on_data_ready::<Probed>(sk);
    }
    0
}

/// Called for every socket with new data: one read rejects all but listeners.
#[inline(always)]
fn on_data_ready<M: Memory>(sk: u64) {
    failures::count(STAGE_QUEUES, on_socket_woken::<M>(sk));
}

#[inline(always)]
fn on_socket_woken<M: Memory>(sk: u64) -> Result<(), i32> {
    // State and port together (see SockHead).
    let head = M::sock_head(sk)?;
    if i32::from(head.state) != TCP_LISTEN || !port_traced(head.num) {
        return Ok(());
    }
    let port = head.num;
    let netns = net_inum::<M>(M::read::<u64>(sk, config_field!(offsets.sk_net))?)?;
    let (accept_queue, backlog) = accept_queue_and_backlog::<M>(sk)?;
    // A member of inet_connection_sock, beyond struct sock: probed.
    let syn_queue = read::<u32>(sk, config_field!(offsets.icsk_syn_queue_len))?;
    let key = ListenerKey::new(netns, port);
    match QUEUES.get_ptr_mut(&key) {
        Some(depths) => {
            // SAFETY: the lookup returned a valid pointer to the entry's value, which map memory
            // keeps valid while the program runs (RCU). Other CPUs may update it at the same
            // time: plain u32 stores, whose races can only lose a maximum that another CPU is
            // raising anyway.
            let depths = unsafe { &mut *depths };
            depths.accept_queue_max = depths.accept_queue_max.max(accept_queue);
            depths.syn_queue_max = depths.syn_queue_max.max(syn_queue);
            depths.backlog = backlog;
        }
        None => {
            let depths = QueueDepths {
                accept_queue_max: accept_queue,
                syn_queue_max: syn_queue,
                backlog,
                _pad: 0,
            };
            let _ = QUEUES.insert(&key, &depths, 0);
        }
    }
    Ok(())
}

/// A listener's accept-queue length and limit (side by side since 5.x: `sk_ack_backlog`, then
/// `sk_max_ack_backlog`).
#[inline(always)]
fn accept_queue_and_backlog<M: Memory>(sk: u64) -> Result<(u32, u32), i32> {
    M::read_pair::<u32>(
        sk,
        config_field!(offsets.sk_ack_backlog),
        config_field!(offsets.sk_max_ack_backlog),
    )
}

/// Raises the SYN-queue maximum of the listener `sk` (namespace `netns`, port `port`) to its
/// current number of pending handshakes. Called where a SYN or a SYN-ACK retransmit has the
/// listener at hand: under a SYN flood that is when the queue is deepest, and no child may be
/// queued to wake the listener.
#[inline(always)]
pub fn sample_syn_queue(sk: u64, netns: u32, port: u16) -> Result<(), i32> {
    let syn_queue = read::<u32>(sk, config_field!(offsets.icsk_syn_queue_len))?;
    let key = ListenerKey::new(netns, port);
    match QUEUES.get_ptr_mut(&key) {
        Some(depths) => {
            // SAFETY: as in on_socket_woken: a valid pointer to the entry's value, kept valid
            // by RCU; racing u32 stores can only lose a maximum another CPU is raising anyway.
            let depths = unsafe { &mut *depths };
            if syn_queue > depths.syn_queue_max {
                depths.syn_queue_max = syn_queue;
            }
        }
        None => {
            let depths = QueueDepths {
                accept_queue_max: 0,
                syn_queue_max: syn_queue,
                backlog: read::<u32>(sk, config_field!(offsets.sk_max_ack_backlog))?,
                _pad: 0,
            };
            // Not over an entry the queues stage made meanwhile.
            let _ = QUEUES.insert(&key, &depths, BPF_NOEXIST as u64);
        }
    }
    Ok(())
}
