//! The phases after accept(): a connection accepted while tracing is followed (its entry in
//! `CONNECTIONS`, marked accepted by the accept programs) until it sends its first response
//! byte; its first read that returns bytes is noted on the way. Then its entry goes: a
//! long-lived connection costs nothing afterwards, and every other socket's send or receive
//! costs one map miss.
//!
//! Tracepoint backend (6.3+): `sock:sock_recv_length` and `sock:sock_send_length`, which see
//! every socket's receive and send with their result.
//!
//! fentry backend: the return of `tcp_recvmsg` (bytes read) and the entry of `tcp_sendmsg`
//! (bytes handed over to send).
//!
//! kprobe backend: the entry of `tcp_cleanup_rbuf(sk, copied)`, which a TCP receive calls with
//! the bytes it copied just before it returns them, and the entry of `tcp_sendmsg`. Not a
//! kretprobe of `tcp_recvmsg`: every thread asleep in a receive holds one of a kretprobe's
//! max(10, 2 x CPUs) instances, and a server with more handler threads waiting for their
//! requests than that left first reads unseen. The kretprobe stays as the fallback.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{btf_tracepoint, fentry, fexit, kprobe, kretprobe},
    programs::{BtfTracePointContext, FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use probe_common::{Connection, EventKind, PENDING_FOLLOWED_REMOVED, STAGE_PHASES};

use crate::{
    emit, failures,
    kernel::{Probed, fexit_return, sock_endpoints},
    maps::{CONNECTIONS, FEXIT_RETURN, RECV_CALLS, tally},
    words::{load_comm, store_comm},
};

#[btf_tracepoint(function = "sock_recv_length")]
pub fn phases_recv_length(ctx: BtfTracePointContext) -> u32 {
    let bytes: i32 = ctx.arg(1);
    if bytes > 0 {
        on_read(ctx.arg(0));
    }
    0
}

#[btf_tracepoint(function = "sock_send_length")]
pub fn phases_send_length(ctx: BtfTracePointContext) -> u32 {
    let bytes: i32 = ctx.arg(1);
    if bytes > 0 {
        failures::count(STAGE_PHASES, on_send(ctx.arg(0)));
    }
    0
}

#[fexit(function = "tcp_recvmsg")]
pub fn phases_fexit_recvmsg(ctx: FExitContext) -> u32 {
    let args = FEXIT_RETURN.load().tcp_recvmsg;
    if fexit_return::<i32>(&ctx, args).is_ok_and(|bytes| bytes > 0) {
        on_read(ctx.arg(0));
    }
    0
}

#[fentry(function = "tcp_sendmsg")]
pub fn phases_fentry_sendmsg(ctx: FEntryContext) -> u32 {
    let size: u64 = ctx.arg(2);
    if size > 0 {
        failures::count(STAGE_PHASES, on_send(ctx.arg(0)));
    }
    0
}

/// A receive that copied bytes: `copied` > 0. Also called, with what it copied so far, before a
/// receive sleeps for more than it has (SO_RCVLOWAT): those bytes are in the handler's hands.
#[kprobe]
pub fn phases_kprobe_cleanup_rbuf(ctx: ProbeContext) -> u32 {
    if let (Some(sk), Some(copied)) = (ctx.arg::<u64>(0), ctx.arg::<i32>(1))
        && copied > 0
    {
        on_read(sk);
    }
    0
}

/// Fallback where `tcp_cleanup_rbuf` cannot be probed. A kretprobe has no arguments: the
/// socket is kept from the entry, per task (a receive may sleep).
#[kprobe]
pub fn phases_kprobe_recvmsg(ctx: ProbeContext) -> u32 {
    if let Some(sk) = ctx.arg::<u64>(0)
        // SAFETY: the entry is only tested; nothing is kept from it.
        && unsafe { CONNECTIONS.get(&sk) }.is_some_and(Connection::accepted)
    {
        let _ = RECV_CALLS.insert(&bpf_get_current_pid_tgid(), &sk, 0);
    }
    0
}

#[kretprobe]
pub fn phases_kretprobe_recvmsg(ctx: RetProbeContext) -> u32 {
    let task = bpf_get_current_pid_tgid();
    // SAFETY: the socket pointer is copied out at once; the entry is this task's own.
    let Some(&sk) = (unsafe { RECV_CALLS.get(&task) }) else {
        return 0;
    };
    let _ = RECV_CALLS.remove(&task);
    if ctx.ret::<i32>() > 0 {
        on_read(sk);
    }
    0
}

#[kprobe]
pub fn phases_kprobe_sendmsg(ctx: ProbeContext) -> u32 {
    if let (Some(sk), Some(size)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(2))
        && size > 0
    {
        failures::count(STAGE_PHASES, on_send(sk));
    }
    0
}

/// The first read of a followed connection that returned bytes: the request arrived in the
/// handler's hands.
#[inline(always)]
fn on_read(sk: u64) {
    let Some(followed) = CONNECTIONS.get_ptr_mut(&sk) else {
        return;
    };
    // SAFETY: the pointer is to this entry's value, valid while the program runs (RCU). Two
    // CPUs reading the same socket at once could both write; either time is a first read.
    unsafe {
        if (*followed).accepted() && (*followed).read_ns == 0 {
            (*followed).read_ns = bpf_ktime_get_ns();
        }
    }
}

/// The first send of a followed connection: its first response byte. Reported, then
/// forgotten.
#[inline(always)]
fn on_send(sk: u64) -> Result<(), i32> {
    // SAFETY: the entry is copied out at once; whichever program removes it reports it.
    let Some(&followed) = (unsafe { CONNECTIONS.get(&sk) }) else {
        return Ok(());
    };
    // A child still in its accept queue sends nothing of the application's.
    if !followed.accepted() {
        return Ok(());
    }
    // SAFETY: bpf_ktime_get_ns takes no argument and only reads the clock.
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(mut endpoints) = sock_endpoints::<Probed>(sk)? else {
        return Ok(());
    };
    // Read before the removal, so that a failed read leaves the entry rather than removing it
    // unreported.
    if CONNECTIONS.remove(&sk).is_err() {
        return Ok(());
    }
    if endpoints.remote_port != followed.remote_port {
        // A connection closed before its first response left this entry, and another socket
        // now sends from its address: not the followed connection.
        tally(|t| t.followed_stale_removed += 1);
        return Ok(());
    }
    endpoints.local_port = followed.local_port;
    emit::send(|event| {
        event.kind = EventKind::FirstResponse as u32;
        endpoints.write_to(event.head_mut());
        event.pid = followed.pid;
        store_comm(&mut event.comm, load_comm(&followed.comm));
        event.syn_ns = followed.syn_ns;
        event.established_ns = followed.established_ns;
        event.accepted_ns = followed.accepted_ns;
        event.read_ns = followed.read_ns;
        event.response_ns = now;
        event.pending = PENDING_FOLLOWED_REMOVED;
    });
    Ok(())
}

/// Follows `sk`, just accepted without an entry in `CONNECTIONS`, until its first response
/// (its Accept event says so with `PENDING_FOLLOWED_ADDED`).
#[inline(always)]
pub fn follow(sk: u64, followed: &Connection) {
    if CONNECTIONS
        .insert(&sk, followed, BPF_NOEXIST as u64)
        .is_err()
    {
        // A connection closed before its first response left its entry at this address.
        let _ = CONNECTIONS.insert(&sk, followed, 0);
        tally(|t| t.followed_replaced += 1);
    }
}
