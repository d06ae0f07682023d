//! Runs of synscope's programs that the kernel skipped.
//!
//! The kernel runs one BPF program at a time per CPU for most hook kinds: kprobes and perf
//! tracepoints share one guard for every program, fentry and raw tracepoints one per program. A
//! hook reached while the guard is held (a softirq completing handshakes on a CPU whose task is
//! inside another kprobe program, or inside a map syscall) does not run its program, and that
//! event is lost as surely as one dropped by a full ring buffer. The kernel counts these skips
//! per program (`recursion_misses`: 5.12+ for fentry and raw tracepoints, 6.7+ for kprobes and
//! perf tracepoints; older kernels skip without counting).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use aya::Ebpf;
use aya_obj::generated::{bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, bpf_prog_info};

/// Skipped runs of the program `name` since it was loaded; 0 where the kernel does not count
/// them or the program is not loaded.
pub fn program_skips(ebpf: &Ebpf, name: &str) -> u64 {
    let Some(fd) = ebpf.program(name).and_then(|program| program.fd().ok()) else {
        return 0;
    };
    recursion_misses(fd.as_fd()).unwrap_or(0)
}

/// The `info` form of the `bpf(2)` attribute union.
#[repr(C)]
struct InfoByFd {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

fn recursion_misses(program: BorrowedFd<'_>) -> std::io::Result<u64> {
    // SAFETY: bpf_prog_info is plain data; all zeroes is its "nothing asked for" value.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoByFd {
        bpf_fd: program.as_raw_fd() as u32,
        info_len: std::mem::size_of::<bpf_prog_info>() as u32,
        info: &mut info as *mut bpf_prog_info as u64,
    };
    // SAFETY: the attribute points at `info`, which lives through the call and is as long as
    // `info_len` says; the kernel writes at most that much (an older kernel, less).
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD as libc::c_long,
            &mut attr as *mut InfoByFd,
            std::mem::size_of::<InfoByFd>(),
        )
    };
    if result < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(info.recursion_misses)
}
