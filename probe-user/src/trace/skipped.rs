//! Runs of synscope's programs that the kernel skipped.
//!
//! The kernel skips a program in two ways, and either loses that program's event as surely as a
//! full ring buffer would:
//! - a kprobe reached while another kprobe's handler runs on the same CPU (an interrupt's softirq,
//!   completing handshakes, landing in a kprobe handler of process context) runs no handler at
//!   all: counted per kprobe, with a kretprobe's calls that found no free instance, and handed
//!   out through the link since 6.7 (`missed`);
//! - a program reached while the kernel's BPF guard is held (kprobes and perf tracepoints share
//!   one per CPU, with map syscalls; fentry and raw tracepoints have one per program) is not
//!   run: counted per program since 5.12 for fentry and raw tracepoints, 6.7 for kprobes
//!   (`recursion_misses`).
//!
//! Older kernels skip without counting.

use std::{
    collections::BTreeMap,
    os::fd::{AsFd, AsRawFd},
};

use aya::Ebpf;
use aya_obj::generated::{
    bpf_cmd::BPF_OBJ_GET_INFO_BY_FD,
    bpf_link_info,
    bpf_link_type::BPF_LINK_TYPE_PERF_EVENT,
    bpf_perf_event_type::{BPF_PERF_EVENT_KPROBE, BPF_PERF_EVENT_KRETPROBE},
    bpf_prog_info,
};

/// This process's kprobe links: their descriptors, found once after attaching (aya keeps
/// them open until it detaches them).
#[derive(Debug, Default)]
pub struct KprobeLinks(Vec<i32>);

impl KprobeLinks {
    /// The descriptors of this process's links that attach a program to a kprobe or kretprobe.
    /// None before 5.15, where kprobes attach without a link.
    pub fn find() -> Self {
        let Ok(entries) = std::fs::read_dir("/proc/self/fdinfo") else {
            return Self::default();
        };
        let fds = entries
            .flatten()
            .filter_map(|entry| {
                let fd = entry.file_name().to_str()?.parse::<i32>().ok()?;
                let text = std::fs::read_to_string(entry.path()).ok()?;
                text.lines()
                    .any(|l| l.starts_with("link_type:"))
                    .then_some(fd)
            })
            .filter(|&fd| kprobe_missed(fd).is_some())
            .collect();
        Self(fds)
    }

    /// Hits missed so far, per program id.
    fn missed_per_program(&self) -> BTreeMap<u32, u64> {
        let mut per_program = BTreeMap::new();
        for &fd in &self.0 {
            if let Some((program, missed)) = kprobe_missed(fd) {
                *per_program.entry(program).or_default() += missed;
            }
        }
        per_program
    }
}

/// Skipped runs of each of `programs` since it was attached, both ways together; programs not
/// loaded are left out.
pub fn skips(
    ebpf: &Ebpf,
    programs: &[&'static str],
    links: &KprobeLinks,
) -> Vec<(&'static str, u64)> {
    let missed = links.missed_per_program();
    programs
        .iter()
        .filter_map(|&name| {
            let fd = ebpf.program(name)?.fd().ok()?;
            let info = object_info::<bpf_prog_info>(fd.as_fd().as_raw_fd()).ok()?;
            let kprobe = missed.get(&info.id).copied().unwrap_or(0);
            Some((name, info.recursion_misses + kprobe))
        })
        .collect()
}

/// For a kprobe link: its program's id and the kprobe's missed hits (0 before 6.7).
fn kprobe_missed(fd: i32) -> Option<(u32, u64)> {
    let info = object_info::<bpf_link_info>(fd).ok()?;
    if info.type_ != BPF_LINK_TYPE_PERF_EVENT as u32 {
        return None;
    }
    // SAFETY: the kernel filled the union's perf_event member, as the link's type says (or left
    // it zeroed, before 6.6); all of it is plain integers.
    let perf_event = unsafe { info.__bindgen_anon_1.perf_event };
    let kinds = [
        BPF_PERF_EVENT_KPROBE as u32,
        BPF_PERF_EVENT_KRETPROBE as u32,
    ];
    if !kinds.contains(&perf_event.type_) {
        return None;
    }
    // SAFETY: as above; kprobe is the member for these two perf event types.
    let missed = unsafe { perf_event.__bindgen_anon_1.kprobe.missed };
    Some((info.prog_id, missed))
}

/// The `info` form of the `bpf(2)` attribute union.
#[repr(C)]
struct InfoByFd {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// What the kernel says of the BPF object behind `fd` (`T`: its info struct).
fn object_info<T: Copy>(fd: i32) -> std::io::Result<T> {
    // SAFETY: the info structs are plain data; all zeroes is their "nothing asked for" value
    // (no buffers for names or instructions).
    let mut info: T = unsafe { std::mem::zeroed() };
    let mut attr = InfoByFd {
        bpf_fd: fd as u32,
        info_len: std::mem::size_of::<T>() as u32,
        info: &mut info as *mut T as u64,
    };
    // SAFETY: the attribute points at `info`, which lives through the call and is as long as
    // `info_len` says; the kernel writes at most that much (an older kernel, less). A
    // descriptor closed meanwhile, or not a BPF object, is an error.
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
    Ok(info)
}
