//! Stage 3, accept().
//!
//! fentry backend: the return of `inet_csk_accept`, the accepted child itself; covers
//! accept(2), accept4(2), io_uring and in-kernel accepts. Only the return value is read, so one
//! program serves the signature before and after 6.10.
//!
//! kprobe backend: the entry of `security_sock_graft(sk, parent)`, which accept() calls (from
//! `sock_graft`) with the child it took from the queue, for every path `inet_csk_accept` covers.
//! Not the kretprobe of `inet_csk_accept`: a thread holds one of a kretprobe's few instances
//! (max(10, 2 x CPUs)) for as long as it sleeps in accept(), so a larger pool of threads blocked
//! there ran out and the accepts of the rest went unseen. The kretprobe stays the fallback on
//! kernels built without LSM hooks, which lack the function.
//!
//! Tracepoint backend: the exits of accept(2) and accept4(2). The syscall returns a file
//! descriptor; the accepted child is found by walking the calling task's file table:
//! task->files->fdt->fd[ret]->private_data (struct socket) ->sk. io_uring and in-kernel
//! accepts do not pass through these syscalls; io_uring accepts are found from
//! `io_uring:io_uring_complete`: a completed IORING_OP_ACCEPT request's result is the new
//! descriptor, in the file table of the task that completes it (the submitter, or an io_uring
//! worker thread sharing its files). Accepts into io_uring's own file table (direct descriptors)
//! are skipped, and the completions of a multishot accept before its last carry no request:
//! neither is seen there.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns},
    macros::{btf_tracepoint, fexit, kprobe, kretprobe, tracepoint},
    programs::{
        BtfTracePointContext, FExitContext, ProbeContext, RetProbeContext, TracePointContext,
    },
};
use probe_common::{
    ChildStamps, Connection, EarlyAccept, EventKind, IORING_OP_ACCEPT, PENDING_CHILD_REMOVED,
    PENDING_FOLLOWED_ADDED, STAGE_ACCEPT, TCP_LISTEN, TCP_SYN_RECV,
};

use crate::{
    emit, failures,
    kernel::{Probed, SockEndpoints, fexit_return, read, sock_endpoints, sock_state},
    maps::{
        CONNECTIONS, EARLY_ACCEPTS, FEXIT_RETURN, FOLLOW_RESPONSES, IO_URING, config_field,
        port_traced, waiting_child,
    },
    words::{Comm, current_comm, store_comm},
};

/// Offset of `long ret` in the `syscalls:sys_exit_*` records (after the common header and the
/// syscall number); fixed by the syscall tracepoint format since it exists.
const SYS_EXIT_RET: usize = 16;
const IPPROTO_TCP: u16 = 6;

#[tracepoint(category = "syscalls", name = "sys_exit_accept4")]
pub fn accept_exit_accept4(ctx: TracePointContext) -> u32 {
    failures::count(STAGE_ACCEPT, on_accept_exit(&ctx));
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_accept")]
pub fn accept_exit_accept(ctx: TracePointContext) -> u32 {
    failures::count(STAGE_ACCEPT, on_accept_exit(&ctx));
    0
}

/// The request is the second argument in every version (6.18 replaced the ones after it).
#[btf_tracepoint(function = "io_uring_complete")]
pub fn accept_io_uring_complete(ctx: BtfTracePointContext) -> u32 {
    let request: u64 = ctx.arg(1);
    if request != 0 {
        failures::count(STAGE_ACCEPT, on_io_uring_complete(request));
    }
    0
}

#[inline(always)]
fn on_io_uring_complete(request: u64) -> Result<(), i32> {
    let io_uring = IO_URING.load();
    if io_uring.request_result == 0
        || read::<u8>(request, io_uring.request_opcode)? != IORING_OP_ACCEPT
    {
        return Ok(());
    }
    // An accept into io_uring's own file table returns a slot, not a descriptor.
    if read::<u32>(request, io_uring.accept_file_slot)? != 0 {
        return Ok(());
    }
    let fd = read::<i32>(request, io_uring.request_result)?;
    if fd < 0 {
        return Ok(());
    }
    on_accepted_sock(socket_of_fd(fd as u64)?)
}

#[fexit(function = "inet_csk_accept")]
pub fn accept_fexit(ctx: FExitContext) -> u32 {
    if let Ok(child) = fexit_return::<u64>(&ctx, FEXIT_RETURN.load().inet_csk_accept)
        && child != 0
    {
        failures::count(STAGE_ACCEPT, on_accepted_sock(child));
    }
    0
}

#[kprobe]
pub fn accept_kprobe_graft(ctx: ProbeContext) -> u32 {
    // Other protocols graft their accepted sockets too: on_accepted_sock keeps TCP's.
    if let Some(child) = ctx.arg::<u64>(0)
        && child != 0
    {
        failures::count(STAGE_ACCEPT, on_accepted_sock(child));
    }
    0
}

#[kretprobe]
pub fn accept_kretprobe(ctx: RetProbeContext) -> u32 {
    let child: u64 = ctx.ret();
    if child != 0 {
        failures::count(STAGE_ACCEPT, on_accepted_sock(child));
    }
    0
}

#[inline(always)]
fn on_accept_exit(ctx: &TracePointContext) -> Result<(), i32> {
    // SAFETY: every `syscalls:sys_exit_*` record holds the `long ret` at this offset (see
    // SYS_EXIT_RET), and the read goes through bpf_probe_read_kernel, which checks it.
    let fd = unsafe { ctx.read_at::<i64>(SYS_EXIT_RET) }?;
    if fd < 0 {
        return Ok(());
    }
    on_accepted_sock(socket_of_fd(fd as u64)?)
}

#[inline(always)]
fn on_accepted_sock(sk: u64) -> Result<(), i32> {
    // accept() also serves Unix sockets (the family test), MPTCP and SCTP; a listener here
    // would be a descriptor that is not the accepted one.
    let Some(child) = sock_endpoints::<Probed>(sk)? else {
        return Ok(());
    };
    if i32::from(child.state) == TCP_LISTEN
        || read::<u16>(sk, config_field!(offsets.sk_protocol))? != IPPROTO_TCP
        || !port_traced(child.local_port)
    {
        return Ok(());
    }
    // SAFETY: bpf_ktime_get_ns takes no argument and only reads the clock.
    let now = unsafe { bpf_ktime_get_ns() };
    let task = bpf_get_current_pid_tgid();
    let (pid, tid) = ((task >> 32) as u32, task as u32);
    let comm = current_comm();
    // One call of send_accept below, whichever way the entry is found: each call is inlined
    // with its own stack, and two overflowed 512 bytes on 5.10 and 6.1.
    let entry = match waiting_child(sk, child.remote_port) {
        Some(entry) => Some(entry),
        // Dequeued before it became ESTABLISHED (see EarlyAccept): report it then.
        None if sock_state::<Probed>(sk) == Ok(TCP_SYN_RECV) => {
            let mut early = EarlyAccept {
                accepted_ns: now,
                pid,
                tid,
                comm: [0; 16],
            };
            store_comm(&mut early.comm, comm);
            let _ = EARLY_ACCEPTS.insert(&sk, &early, 0);
            // The handshake may have completed on another CPU meanwhile, too late to see the
            // entry: then whichever side removes the entry reports the accept.
            match waiting_child(sk, child.remote_port) {
                Some(entry) if EARLY_ACCEPTS.remove(&sk).is_ok() => Some(entry),
                _ => return Ok(()),
            }
        }
        // The handshake program records the child before the kernel stores ESTABLISHED: a
        // child seen ESTABLISHED just after the first look has its entry by now.
        None => waiting_child(sk, child.remote_port),
    };
    // SAFETY: the entry's value stays valid while the program runs (RCU); copied out at once.
    let stamps = entry.map_or(ChildStamps::default(), |entry| unsafe { (*entry).stamps() });
    send_accept(sk, &child, stamps, entry, now, (pid, tid), comm);
    Ok(())
}

/// The Accept event of `child` (the socket `sk`), which is then followed to its first
/// response. `entry`: its entry in `CONNECTIONS` as a child waiting in the accept queue, if it
/// has one: accept() takes it from there.
#[inline(always)]
pub fn send_accept(
    sk: u64,
    child: &SockEndpoints,
    stamps: ChildStamps,
    entry: Option<*mut Connection>,
    accepted_ns: u64,
    (pid, tid): (u32, u32),
    comm: Comm,
) {
    let following = FOLLOW_RESPONSES.load() != 0;
    let pending = match entry {
        // The waiting child's entry becomes the followed connection's, below.
        Some(_) if following => PENDING_CHILD_REMOVED | PENDING_FOLLOWED_ADDED,
        Some(_) if CONNECTIONS.remove(&sk).is_ok() => PENDING_CHILD_REMOVED,
        Some(_) => 0,
        // Accepted without an entry (its handshake came before the trace, or its entry was
        // evicted): followed from here, in an entry of its own, added below.
        None if following => PENDING_FOLLOWED_ADDED,
        None => 0,
    };
    emit::send(|event| {
        event.kind = EventKind::Accept as u32;
        child.write_to(event.head_mut());
        event.pid = pid;
        event.tid = tid;
        event.syn_ns = stamps.syn_ns;
        event.established_ns = stamps.established_ns;
        event.accepted_ns = accepted_ns;
        store_comm(&mut event.comm, comm);
        event.pending = pending;
    });
    // Followed only after the Accept event is sent: the phases' programs see the connection
    // from here, and its first response can never come before its accept.
    if !following {
        return;
    }
    match entry {
        // In place: no removal and no insert. The phases' programs look for `accepted_ns`.
        // SAFETY: the pointer is to this entry's value, valid while the program runs (RCU).
        // Only the accept of this child writes these fields, once: whichever program removes
        // its `EARLY_ACCEPTS` entry, or the only one if there is none.
        Some(entry) => unsafe {
            (*entry).pid = pid;
            store_comm(&mut (*entry).comm, comm);
            (*entry).accepted_ns = accepted_ns;
        },
        // Built after the event, once the event's values are no longer needed: the other
        // order spills them and overflows the 512-byte stack on 5.10 and 6.1.
        None => {
            let mut followed = Connection {
                syn_ns: stamps.syn_ns,
                established_ns: stamps.established_ns,
                accepted_ns,
                read_ns: 0,
                pid,
                local_port: child.local_port,
                remote_port: child.remote_port,
                comm: [0; 16],
            };
            store_comm(&mut followed.comm, comm);
            crate::phases::follow(sk, &followed);
        }
    }
}

/// `struct sock *` behind file descriptor `fd` of the current task.
#[inline(always)]
fn socket_of_fd(fd: u64) -> Result<u64, i32> {
    // SAFETY: bpf_get_current_task takes no argument; the task pointer it returns is only
    // dereferenced through bpf_probe_read_kernel.
    let task = unsafe { bpf_get_current_task() };
    let files = read::<u64>(task, config_field!(offsets.task_files))?;
    let fdt = read::<u64>(files, config_field!(offsets.files_fdt))?;
    let fd_array = read::<u64>(fdt, config_field!(offsets.fdtable_fd))?;
    let file = read::<u64>(fd_array + fd * 8, 0)?;
    let socket = read::<u64>(file, config_field!(offsets.file_private_data))?;
    read::<u64>(socket, config_field!(offsets.socket_sk))
}
