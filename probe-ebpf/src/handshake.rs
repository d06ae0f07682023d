//! Stage 2, handshake, and the other socket state changes its hooks see:
//!
//! - a child moving SYN_RECV -> ESTABLISHED has completed its handshake and was just put on the
//!   accept queue;
//! - a socket moving to LISTEN is a new listener, reported with its address and owner;
//! - a listener moving to CLOSE reports its final drop counter, which userspace would otherwise
//!   miss for a listener that closes between two polls;
//! - a child still waiting in the accept queue moving ESTABLISHED -> CLOSE_WAIT (its client's
//!   FIN) or -> CLOSE (a RST) was abandoned by its client: accept() will still return it.
//!
//! Tracepoint backend: `sock:inet_sock_set_state`, which sees all three. Only full sockets reach
//! it (never request socks), and it fires for client sockets too: the state test comes first.
//!
//! fentry and kprobe backends: the entry of `tcp_set_state(sk, state)`, through which TCP makes
//! both the SYN_RECV -> ESTABLISHED and the LISTEN -> CLOSE moves (the old state is still in the
//! socket), and the return of `inet_csk_listen_start(sk)`, which moves a socket to LISTEN
//! without `tcp_set_state`; on success the socket then has its port.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{btf_tracepoint, fentry, fexit, kprobe, kretprobe},
    programs::{BtfTracePointContext, FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use probe_common::{
    ChildStamps, Connection, EventKind, PENDING_CHILD_ADDED, PENDING_SYN_REMOVED, STAGE_HANDSHAKE,
    TCP_CLOSE, TCP_CLOSE_WAIT, TCP_ESTABLISHED, TCP_LISTEN, TCP_SYN_RECV,
};

use crate::{
    accept::send_accept,
    emit, failures,
    kernel::{
        Memory, Probed, SockEndpoints, Typed, fexit_return, read, sock_endpoints, sock_state,
    },
    maps::{
        CONNECTIONS, EARLY_ACCEPTS, FEXIT_RETURN, LISTEN_CALLS, SYN_TIMES, config_field,
        port_traced, tally, waiting_child,
    },
    words::{current_comm, flow_key, load_comm, store_comm},
};

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn handshake_set_state(ctx: BtfTracePointContext) -> u32 {
    let old_state: i32 = ctx.arg(1);
    let new_state: i32 = ctx.arg(2);
    let sk: u64 = ctx.arg(0);
    if new_state == TCP_ESTABLISHED && old_state == TCP_SYN_RECV {
        failures::count(STAGE_HANDSHAKE, on_established::<Typed>(sk));
    } else if new_state == TCP_LISTEN {
        failures::count(STAGE_HANDSHAKE, on_listen::<Typed>(sk));
    } else if old_state == TCP_LISTEN && new_state == TCP_CLOSE {
        failures::count(STAGE_HANDSHAKE, on_listener_close::<Typed>(sk));
    } else if old_state == TCP_ESTABLISHED
        && (new_state == TCP_CLOSE_WAIT || new_state == TCP_CLOSE)
    {
        failures::count(STAGE_HANDSHAKE, on_left_in_queue::<Typed>(sk, new_state));
    }
    0
}

#[fentry(function = "tcp_set_state")]
pub fn handshake_fentry_set_state(ctx: FEntryContext) -> u32 {
    failures::count(
        STAGE_HANDSHAKE,
        on_tcp_set_state::<Typed>(ctx.arg(0), ctx.arg(1)),
    );
    0
}

#[kprobe]
pub fn handshake_kprobe_set_state(ctx: ProbeContext) -> u32 {
    if let (Some(sk), Some(new_state)) = (ctx.arg::<u64>(0), ctx.arg::<i32>(1)) {
        failures::count(STAGE_HANDSHAKE, on_tcp_set_state::<Probed>(sk, new_state));
    }
    0
}

#[fexit(function = "inet_csk_listen_start")]
pub fn handshake_fexit_listen_start(ctx: FExitContext) -> u32 {
    let args = FEXIT_RETURN.load().inet_csk_listen_start;
    if fexit_return::<i32>(&ctx, args) == Ok(0) {
        failures::count(STAGE_HANDSHAKE, on_listen::<Typed>(ctx.arg(0)));
    }
    0
}

/// A kretprobe has no arguments: the socket is kept from the entry, per task (listen() runs
/// in process context and may sleep).
#[kprobe]
pub fn handshake_kprobe_listen_start(ctx: ProbeContext) -> u32 {
    if let Some(sk) = ctx.arg::<u64>(0) {
        let _ = LISTEN_CALLS.insert(&bpf_get_current_pid_tgid(), &sk, 0);
    }
    0
}

#[kretprobe]
pub fn handshake_kretprobe_listen_start(ctx: RetProbeContext) -> u32 {
    let task = bpf_get_current_pid_tgid();
    // SAFETY: the socket pointer is copied out at once; the entry is this task's own, which no
    // other program writes while this call runs.
    let Some(&sk) = (unsafe { LISTEN_CALLS.get(&task) }) else {
        return 0;
    };
    let _ = LISTEN_CALLS.remove(&task);
    if ctx.ret::<i32>() == 0 {
        failures::count(STAGE_HANDSHAKE, on_listen::<Probed>(sk));
    }
    0
}

/// `tcp_set_state` is called for every TCP state change: the new state is tested before any
/// memory is read.
#[inline(always)]
fn on_tcp_set_state<M: Memory>(sk: u64, new_state: i32) -> Result<(), i32> {
    if new_state != TCP_ESTABLISHED && new_state != TCP_CLOSE && new_state != TCP_CLOSE_WAIT {
        return Ok(());
    }
    let old_state = sock_state::<M>(sk)?;
    if new_state == TCP_ESTABLISHED && old_state == TCP_SYN_RECV {
        on_established::<M>(sk)
    } else if new_state == TCP_CLOSE && old_state == TCP_LISTEN {
        on_listener_close::<M>(sk)
    } else if old_state == TCP_ESTABLISHED {
        on_left_in_queue::<M>(sk, new_state)
    } else {
        Ok(())
    }
}

/// An established socket is closing: if it is a child still waiting for accept() (it has a
/// waiting entry in `CONNECTIONS`), its client gave up while it waited. One lookup per closing connection;
/// the entry stays, for the accept that may still come.
#[inline(always)]
fn on_left_in_queue<M: Memory>(sk: u64, new_state: i32) -> Result<(), i32> {
    // A child in the accept queue has no `struct socket` yet: sockets a process holds (every
    // client's, and children already accepted) stop at this read, cheaper than the lookup
    // that follows.
    if M::read::<u64>(sk, config_field!(offsets.sk_socket))? != 0 {
        return Ok(());
    }
    // SAFETY: only tests for presence; nothing is read from the entry.
    if unsafe { CONNECTIONS.get(&sk) }.is_none() {
        return Ok(());
    }
    let Some(mut child) = sock_endpoints::<M>(sk)? else {
        return Ok(());
    };
    // An accept taking the entry meanwhile makes this report one a moment late.
    let Some(entry) = waiting_child(sk, child.remote_port) else {
        return Ok(());
    };
    // SAFETY: the entry's value stays valid while the program runs (RCU); copied out at once.
    let stamps = unsafe { (*entry).stamps() };
    // Moving to CLOSE, the socket has already given its port back.
    child.local_port = stamps.local_port;
    // SAFETY: bpf_ktime_get_ns takes no argument and only reads the clock.
    let now = unsafe { bpf_ktime_get_ns() };
    emit::send(|event| {
        event.kind = EventKind::LeftInQueue as u32;
        child.write_to(event.head_mut());
        event.reason = new_state as u32;
        event.syn_ns = stamps.syn_ns;
        event.established_ns = stamps.established_ns;
        event.accepted_ns = now;
    });
    Ok(())
}

#[inline(always)]
fn on_established<M: Memory>(sk: u64) -> Result<(), i32> {
    let Some(child) = sock_endpoints::<M>(sk)? else {
        return Ok(());
    };
    if !port_traced(child.local_port) {
        return Ok(());
    }
    // SAFETY: bpf_ktime_get_ns takes no argument and only reads the clock.
    let now = unsafe { bpf_ktime_get_ns() };
    let key = flow_key(
        child.netns,
        (child.local_port, child.remote_port),
        (child.local_addr(), child.remote_addr()),
    );
    // Read before any map changes, so that a failed read cannot leave one unreported (see
    // below for why the socket matters).
    let unaccepted = M::read::<u64>(sk, config_field!(offsets.sk_socket))? == 0;
    let mut pending = 0;
    // SAFETY: the timestamp is copied out at once. Map memory stays valid while the program
    // runs (RCU); another CPU replacing the entry meanwhile can only change the value read.
    let syn_ns = match unsafe { SYN_TIMES.get(&key) } {
        Some(stamp) => {
            let syn_ns = stamp.syn_ns;
            if SYN_TIMES.remove(&key).is_ok() {
                pending |= PENDING_SYN_REMOVED;
            }
            syn_ns
        }
        None => 0,
    };
    let stamps = ChildStamps {
        syn_ns,
        established_ns: now,
        local_port: child.local_port,
        remote_port: child.remote_port,
        _pad: [0; 2],
    };
    // accept() may already have returned it (see EarlyAccept): the accept-queue wait was nil.
    // Whichever of this program and the accept's removes the entry reports the accept. Such a
    // child has its socket already (accept grafts it before the accept program runs, under the
    // child's lock, which this state change holds): the usual child, without one, skips that
    // lookup and looks once, after recording itself, for an accept that came meanwhile.
    if unaccepted {
        pending |= PENDING_CHILD_ADDED;
        record_child(sk, &stamps);
    }
    emit::send_head(|event| {
        event.kind = EventKind::Handshake as u32;
        child.write_to(event);
        event.syn_ns = syn_ns;
        event.established_ns = now;
        event.pending = pending;
    });
    // (A TCP Fast Open child can be accepted before its handshake completes, through
    // accept(2).) Reported after the handshake, so that a connection's events come in the
    // order of its stages: readers take a handshake after its accept for a child still
    // waiting. One call, inlined once: two overflowed the 512-byte stack on 5.10 and 6.1.
    report_early_accept(&child, sk, stamps, now, unaccepted);
    Ok(())
}

/// Puts the child `sk` in `CONNECTIONS`, waiting for accept().
#[inline(always)]
fn record_child(sk: u64, stamps: &ChildStamps) {
    let waiting = Connection::waiting(stamps);
    if CONNECTIONS
        .insert(&sk, &waiting, BPF_NOEXIST as u64)
        .is_ok()
    {
        return;
    }
    // A connection freed before its entry went left it at this address: a child freed in its
    // queue, or (often, where servers close connections without answering) one accepted and
    // closed before its first response. Overwritten in place, the socket it was for is gone.
    match CONNECTIONS.get_ptr_mut(&sk) {
        Some(leftover) => {
            // SAFETY: the pointer is to this entry's value, valid while the program runs
            // (RCU); its socket was freed, so no other program writes it for that one.
            let accepted = unsafe {
                let accepted = (*leftover).accepted();
                *leftover = waiting;
                accepted
            };
            if accepted {
                tally(|t| t.followed_replaced += 1);
            } else {
                tally(|t| t.children_replaced += 1);
            }
        }
        // Removed meanwhile: nothing was replaced.
        None => {
            let _ = CONNECTIONS.insert(&sk, &waiting, 0);
        }
    }
}

#[inline(always)]
fn on_listen<M: Memory>(sk: u64) -> Result<(), i32> {
    let Some(listener) = sock_endpoints::<M>(sk)? else {
        return Ok(());
    };
    // listen() on an unbound socket enters LISTEN before it gets its port.
    if listener.local_port == 0 || !port_traced(listener.local_port) {
        return Ok(());
    }
    emit::send(|event| {
        event.kind = EventKind::Listen as u32;
        listener.write_to(event.head_mut());
        event.pid = (bpf_get_current_pid_tgid() >> 32) as u32;
        store_comm(&mut event.comm, current_comm());
    });
    Ok(())
}

#[inline(always)]
fn on_listener_close<M: Memory>(sk: u64) -> Result<(), i32> {
    let Some(listener) = sock_endpoints::<M>(sk)? else {
        return Ok(());
    };
    // Still attached to its file: close() moves the state before orphaning the socket.
    let socket = M::read::<u64>(sk, config_field!(offsets.sk_socket))?;
    if socket == 0 {
        return Ok(());
    }
    let drops = M::read::<u32>(sk, config_field!(offsets.sk_drops))?;
    // The inode is beyond `struct socket` (in `socket_alloc`): probed.
    let inode_at = socket + u64::from(config_field!(offsets.socket_inode));
    let inode = read::<u64>(inode_at, config_field!(offsets.inode_ino))? as u32;
    emit::send(|event| {
        event.kind = EventKind::ListenerClosed as u32;
        listener.write_to(event.head_mut());
        event.reason = drops;
        event.socket_inode = inode;
        // SAFETY: bpf_ktime_get_ns takes no argument and only reads the clock.
        event.accepted_ns = unsafe { bpf_ktime_get_ns() };
    });
    Ok(())
}

/// Reports the accept of `sk` if accept() returned it before this handshake completed and no
/// other program has reported it. `recorded`: the child recorded itself in `CONNECTIONS` above.
#[inline(always)]
fn report_early_accept(
    child: &SockEndpoints,
    sk: u64,
    stamps: ChildStamps,
    now: u64,
    recorded: bool,
) {
    // SAFETY: the entry is copied out at once. Map memory stays valid while the program runs
    // (RCU); whether this copy gets reported is decided by the removal below, which succeeds for
    // one program only.
    let Some(&early) = (unsafe { EARLY_ACCEPTS.get(&sk) }) else {
        return;
    };
    if EARLY_ACCEPTS.remove(&sk).is_err() {
        return;
    }
    // There is no accept left to wait for: the accept takes the entry.
    let entry = if recorded {
        waiting_child(sk, child.remote_port)
    } else {
        None
    };
    send_accept(
        sk,
        child,
        stamps,
        entry,
        now.max(early.accepted_ns),
        (early.pid, early.tid),
        load_comm(&early.comm),
    );
}
