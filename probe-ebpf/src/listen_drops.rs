//! Listen drops, SYN cookies and TCP Fast Open children, one event each, as the kernel counted
//! them; fentry and kprobe backends only (no tracepoint fires when a listener drops a SYN).
//!
//! The kernel counts each of these in its per-namespace MIB counters (`TcpExt` of
//! /proc/net/netstat), which are kept per CPU. A listener handles a packet in softirq context,
//! where nothing else on that CPU moves them: the current CPU's counters read before and after
//! each function that handles a packet for a listener tell exactly what that packet did.
//! `tcp_conn_request` handles a SYN, `tcp_check_req` a final ACK, `cookie_v{4,6}_check` the ACK
//! of a SYN cookie, `tcp_req_err` an ICMP error for a pending handshake (a listen drop). None of
//! them calls another, so one slot per CPU holds the snapshot. `tcp_check_req` also runs for a
//! Fast Open child, possibly in process context: only listeners are snapshotted.
//!
//! Not seen: SYNs dropped before `tcp_conn_request` (broadcast or multicast destinations), and
//! the namespace's counters then disagree with the per-port sums, which the report says.
//!
//! Userspace resolves the counters' indices by name from BTF (they move between kernels) and
//! the per-CPU offset table from /proc/kallsyms.

use aya_ebpf::{
    helpers::bpf_get_smp_processor_id,
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use probe_common::{COUNTED_AT_ACK, EventKind, ListenCounters, STAGE_LISTEN_DROPS, TCP_LISTEN};

use crate::{
    emit, failures,
    kernel::{Probed, read, sock_endpoints, sock_state},
    maps::{LISTEN_COUNTERS, LISTEN_SNAPSHOT, ListenSnapshot, config_field, port_traced},
};

#[fentry(function = "tcp_conn_request")]
pub fn listen_drops_fentry_conn_request(ctx: FEntryContext) -> u32 {
    snapshot(ctx.arg(2));
    0
}

#[fexit(function = "tcp_conn_request")]
pub fn listen_drops_fexit_conn_request(_ctx: FExitContext) -> u32 {
    compare(0);
    0
}

#[fentry(function = "tcp_check_req")]
pub fn listen_drops_fentry_check_req(ctx: FEntryContext) -> u32 {
    snapshot(ctx.arg(0));
    0
}

#[fexit(function = "tcp_check_req")]
pub fn listen_drops_fexit_check_req(_ctx: FExitContext) -> u32 {
    compare(COUNTED_AT_ACK);
    0
}

#[fentry(function = "tcp_req_err")]
pub fn listen_drops_fentry_req_err(ctx: FEntryContext) -> u32 {
    snapshot_request(ctx.arg(0));
    0
}

#[fexit(function = "tcp_req_err")]
pub fn listen_drops_fexit_req_err(_ctx: FExitContext) -> u32 {
    compare(0);
    0
}

#[fentry(function = "cookie_v4_check")]
pub fn listen_drops_fentry_cookie_v4(ctx: FEntryContext) -> u32 {
    snapshot(ctx.arg(0));
    0
}

#[fexit(function = "cookie_v4_check")]
pub fn listen_drops_fexit_cookie_v4(_ctx: FExitContext) -> u32 {
    compare(COUNTED_AT_ACK);
    0
}

#[fentry(function = "cookie_v6_check")]
pub fn listen_drops_fentry_cookie_v6(ctx: FEntryContext) -> u32 {
    snapshot(ctx.arg(0));
    0
}

#[fexit(function = "cookie_v6_check")]
pub fn listen_drops_fexit_cookie_v6(_ctx: FExitContext) -> u32 {
    compare(COUNTED_AT_ACK);
    0
}

/// The listener is the first argument of the ACK handlers, the third of `tcp_conn_request`:
/// one program per position serves every function (a kprobe reads registers).
#[kprobe]
pub fn listen_drops_kprobe_listener_arg0(ctx: ProbeContext) -> u32 {
    if let Some(listener) = ctx.arg::<u64>(0) {
        snapshot(listener);
    }
    0
}

#[kprobe]
pub fn listen_drops_kprobe_listener_arg2(ctx: ProbeContext) -> u32 {
    if let Some(listener) = ctx.arg::<u64>(2) {
        snapshot(listener);
    }
    0
}

#[kprobe]
pub fn listen_drops_kprobe_request_arg0(ctx: ProbeContext) -> u32 {
    if let Some(request) = ctx.arg::<u64>(0) {
        snapshot_request(request);
    }
    0
}

#[kretprobe]
pub fn listen_drops_kretprobe_syn(_ctx: RetProbeContext) -> u32 {
    compare(0);
    0
}

#[kretprobe]
pub fn listen_drops_kretprobe_ack(_ctx: RetProbeContext) -> u32 {
    compare(COUNTED_AT_ACK);
    0
}

/// Address of this CPU's `linux_mib` block of the listener's namespace.
#[inline(always)]
fn mib_block(counters: &ListenCounters, listener: u64) -> Result<u64, i32> {
    if counters.per_cpu_offsets == 0 {
        return Err(0);
    }
    // SAFETY: bpf_get_smp_processor_id takes no argument and only returns the CPU number.
    let cpu = unsafe { bpf_get_smp_processor_id() } as u64;
    let cpu_offset = read::<u64>(counters.per_cpu_offsets + cpu * 8, 0)?;
    let net = read::<u64>(listener, config_field!(offsets.sk_net))?;
    Ok(read::<u64>(net, counters.net_statistics)? + cpu_offset)
}

#[inline(always)]
fn read_counter(block: u64, index: u32) -> Result<u64, i32> {
    read::<u64>(block + index as u64 * 8, 0)
}

/// The listener of a request sock (`request_sock.rsk_listener`).
#[inline(always)]
fn snapshot_request(request: u64) {
    let offset = LISTEN_COUNTERS.load().request_listener;
    if offset == 0 {
        clear();
        return;
    }
    match read::<u64>(request, offset) {
        Ok(listener) => snapshot(listener),
        Err(error) => {
            clear();
            failures::count(STAGE_LISTEN_DROPS, Err::<(), i32>(error));
        }
    }
}

#[inline(always)]
fn clear() {
    if let Some(slot) = LISTEN_SNAPSHOT.get_ptr_mut(0) {
        // SAFETY: the lookup returned a valid pointer to this CPU's slot, which only these
        // programs on this CPU touch, and they do not nest (see the module's docs).
        unsafe { (*slot).listener = 0 };
    }
}

#[inline(always)]
fn snapshot(sk: u64) {
    let Some(slot) = LISTEN_SNAPSHOT.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the lookup returned a valid pointer to this CPU's slot, which only these programs
    // on this CPU touch, and they do not nest (see the module's docs).
    let slot = unsafe { &mut *slot };
    slot.listener = 0;
    failures::count(STAGE_LISTEN_DROPS, take_snapshot(slot, sk));
}

/// Fills `slot` with the counters of listener `sk`; leaves it empty (`listener` 0) for any other
/// socket, and when a counter cannot be read, rather than report a false "moved".
#[inline(always)]
fn take_snapshot(slot: &mut ListenSnapshot, sk: u64) -> Result<(), i32> {
    if sock_state::<Probed>(sk)? != TCP_LISTEN {
        return Ok(());
    }
    let counters = LISTEN_COUNTERS.load();
    let block = mib_block(&counters, sk)?;
    for (value, index) in slot.values.iter_mut().zip(counters.indices) {
        *value = read_counter(block, index)?;
    }
    slot.block = block;
    slot.listener = sk;
    Ok(())
}

/// Reports which counters the packet moved, if any; `at` flags the ACK handlers.
///
/// The moved bits are gathered in the slot, in map memory, not in a register: a register
/// would hold a known constant on each path through the loop, and the verifier would check
/// `report` once per combination of counters (64 of them). That made each program that calls
/// this take over a second to load on a 5.10 kernel under emulation; the verifier knows
/// nothing of a value read back from a map, so it checks `report` once.
#[inline(always)]
fn compare(at: u32) {
    let Some(slot) = LISTEN_SNAPSHOT.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the lookup returned a valid pointer to this CPU's slot, which only these programs
    // on this CPU touch, and they do not nest (see the module's docs).
    let slot = unsafe { &mut *slot };
    let listener = slot.listener;
    if listener == 0 {
        return;
    }
    slot.listener = 0;
    set_moved(slot, 0);
    let indices = LISTEN_COUNTERS.load().indices;
    for (bit, (index, before)) in indices.iter().zip(slot.values).enumerate() {
        match read_counter(slot.block, *index) {
            Ok(after) if after != before => set_moved(slot, moved(slot) | 1 << bit),
            Ok(_) => {}
            // A counter that cannot be read counts as unmoved: an event may be missing, so
            // the failure is counted.
            Err(error) => failures::count(STAGE_LISTEN_DROPS, Err::<(), i32>(error)),
        }
    }
    let moved = moved(slot) as u32;
    if moved != 0 {
        failures::count(STAGE_LISTEN_DROPS, report(listener, moved | at));
    }
}

/// Volatile, so that the compiler keeps the bits in the map's memory (see `compare`).
#[inline(always)]
fn set_moved(slot: &mut ListenSnapshot, bits: u64) {
    // SAFETY: a reference is valid for writes.
    unsafe { core::ptr::write_volatile(&mut slot.moved, bits) }
}

#[inline(always)]
fn moved(slot: &ListenSnapshot) -> u64 {
    // SAFETY: a reference is valid for reads.
    unsafe { core::ptr::read_volatile(&slot.moved) }
}

#[inline(always)]
fn report(listener: u64, counted: u32) -> Result<(), i32> {
    let Some(endpoints) = sock_endpoints::<Probed>(listener)? else {
        return Ok(());
    };
    if !port_traced(endpoints.local_port) {
        return Ok(());
    }
    emit::send(|event| {
        event.kind = EventKind::ListenCounted as u32;
        // A listener's remote end is unset: namespace, family and port are what matter.
        endpoints.write_to(event.head_mut());
        event.reason = counted;
    });
    Ok(())
}
