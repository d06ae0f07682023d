//! The kernel's accounting of BPF programs, read per process, and the empty programs that
//! measure what that accounting itself costs (the floor).
//!
//! Programs, links and maps are found through the descriptors a process holds
//! (`/proc/PID/fdinfo`): on a machine where other programs come and go, that attributes each
//! one to its tracer without guessing from names. The counters there (`run_time_ns`,
//! `run_cnt`) are the ones `bpftool prog show` prints.
//!
//! The floor programs are loaded with raw bpf(2) calls: bpftool cannot attach raw
//! tracepoints, and bpftrace 0.17 has no raw tracepoint probes. An empty `raw_tracepoint`
//! program runs through the same dispatch as synscope's `tp_btf` programs (both are raw
//! tracepoint links), so its time per run is what a `tp_btf` program costs before it does
//! anything.

use std::{
    collections::BTreeMap,
    ffi::{CString, c_int, c_long, c_ulong},
    fmt,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
};

use anyhow::{Context as _, bail};

/// Where a program attaches.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hook {
    /// A raw tracepoint link: `tp_btf` or `raw_tp` programs.
    Raw(String),
    /// A classic (perf) tracepoint.
    Tracepoint(String),
    /// Anything else (fentry, kprobes): no empty program measures its floor here.
    Other(String),
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hook::Raw(name) => write!(f, "raw_tp/{name}"),
            Hook::Tracepoint(name) => write!(f, "tracepoint/{name}"),
            Hook::Other(what) => f.write_str(what),
        }
    }
}

/// One program's counters at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// What one process holds: its programs' counters by id, the hook of each linked program, and
/// the memory its maps charge (memlock, bytes).
#[derive(Debug, Default)]
pub struct Holdings {
    pub programs: BTreeMap<u32, Counters>,
    pub hooks: BTreeMap<u32, Hook>,
    pub map_bytes: u64,
}

/// Reads `/proc/PID/fd` and the fdinfo of every BPF descriptor in it.
pub fn holdings(pid: &str) -> anyhow::Result<Holdings> {
    let mut held = Holdings::default();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("cannot list the descriptors of process {pid}"))?;
    for fd in fds.flatten() {
        let Ok(target) = std::fs::read_link(fd.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        let kind = match target.as_ref() {
            "anon_inode:bpf-prog" | "anon_inode:bpf-map" | "anon_inode:bpf_link" => target,
            _ => continue,
        };
        // A descriptor closed in between is no longer the tracer's.
        let Ok(info) = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        )) else {
            continue;
        };
        let fields = fields(&info);
        let number = |key: &str| fields.get(key).and_then(|v| v.parse::<u64>().ok());
        match kind.as_ref() {
            "anon_inode:bpf-prog" => {
                if let Some(id) = number("prog_id") {
                    held.programs.insert(
                        id as u32,
                        Counters {
                            run_time_ns: number("run_time_ns").unwrap_or(0),
                            run_cnt: number("run_cnt").unwrap_or(0),
                        },
                    );
                }
            }
            "anon_inode:bpf-map" => held.map_bytes += number("memlock").unwrap_or(0),
            _ => {
                let (Some(id), Some(link)) = (number("prog_id"), fields.get("link_type")) else {
                    continue;
                };
                let name = fields.get("tp_name").cloned();
                let hook = match (link.as_str(), name) {
                    ("raw_tracepoint", Some(name)) => Hook::Raw(name),
                    ("perf", Some(name)) => Hook::Tracepoint(name),
                    (link, name) => Hook::Other(format!("{link}/{}", name.unwrap_or_default())),
                };
                held.hooks.insert(id as u32, hook);
            }
        }
    }
    Ok(held)
}

fn fields(fdinfo: &str) -> BTreeMap<String, String> {
    fdinfo
        .lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(':')?;
            Some((key.trim().to_owned(), value.trim().to_owned()))
        })
        .collect()
}

/// Program names by id (`bpftool -j prog show`): fdinfo has ids and tags only.
pub fn program_names() -> anyhow::Result<BTreeMap<u32, String>> {
    let json = crate::commands::output(
        std::process::Command::new("bpftool").args(["-j", "prog", "show"]),
    )?;
    let programs: serde_json::Value = serde_json::from_str(&json).context("bpftool output")?;
    Ok(programs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["id"].as_u64()? as u32, p["name"].as_str()?.to_owned())))
        .collect())
}

#[cfg(target_arch = "x86_64")]
const SYS_BPF: c_long = 321;
#[cfg(target_arch = "x86_64")]
const SYS_PERF_EVENT_OPEN: c_long = 298;
#[cfg(target_arch = "aarch64")]
const SYS_BPF: c_long = 280;
#[cfg(target_arch = "aarch64")]
const SYS_PERF_EVENT_OPEN: c_long = 241;

const BPF_PROG_LOAD: c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: c_long = 17;
const BPF_ENABLE_STATS: c_long = 32;
const BPF_PROG_TYPE_TRACEPOINT: u32 = 5;
const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_FLAG_FD_CLOEXEC: c_long = 8;
const PERF_EVENT_IOC_ENABLE: c_ulong = 0x2400;
const PERF_EVENT_IOC_SET_BPF: c_ulong = 0x4004_2408;

unsafe extern "C" {
    fn syscall(number: c_long, ...) -> c_long;
    fn ioctl(fd: c_int, request: c_ulong, ...) -> c_int;
}

/// bpf(2) with an attribute block; the kernel reads `attr.len()` bytes of it.
fn bpf(command: c_long, attr: &[u8]) -> std::io::Result<OwnedFd> {
    // SAFETY: `attr` is a live, initialised buffer of the length passed; every pointer the
    // caller put in it outlives the call.
    let fd = unsafe { syscall(SYS_BPF, command, attr.as_ptr(), attr.len() as c_ulong) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel just returned, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as c_int) })
}

fn put(attr: &mut [u8], offset: usize, bytes: &[u8]) {
    attr[offset..offset + bytes.len()].copy_from_slice(bytes);
}

/// Turns the run-time accounting on for as long as the descriptor lives. Unlike the
/// `kernel.bpf_stats_enabled` sysctl it is counted per holder: another user of the machine
/// switching the sysctl off does not stop it, and it ends with this process however it ends.
pub fn enable_stats() -> anyhow::Result<OwnedFd> {
    let attr = [0u8; 4]; // type BPF_STATS_RUN_TIME (0)
    bpf(BPF_ENABLE_STATS, &attr).context("bpf(BPF_ENABLE_STATS) (run as root)")
}

/// Empty programs (`r0 = 0; exit`), one per hook, attached while they live.
pub struct Floor {
    programs: Vec<(Hook, OwnedFd, OwnedFd)>,
}

impl Floor {
    pub fn attach(hooks: &[Hook]) -> anyhow::Result<Floor> {
        let mut programs = Vec::new();
        for hook in hooks {
            let (program, link) = match hook {
                Hook::Raw(name) => {
                    let program = load_empty(BPF_PROG_TYPE_RAW_TRACEPOINT)?;
                    let link = raw_tracepoint_open(name, &program)
                        .with_context(|| format!("empty program on {hook}"))?;
                    (program, link)
                }
                Hook::Tracepoint(name) => {
                    let program = load_empty(BPF_PROG_TYPE_TRACEPOINT)?;
                    let event = perf_tracepoint(name, &program)
                        .with_context(|| format!("empty program on {hook}"))?;
                    (program, event)
                }
                Hook::Other(_) => continue,
            };
            programs.push((hook.clone(), program, link));
        }
        Ok(Floor { programs })
    }

    /// Each hook's counters now.
    pub fn counters(&self) -> anyhow::Result<BTreeMap<Hook, Counters>> {
        let mut counters = BTreeMap::new();
        for (hook, program, _) in &self.programs {
            let info =
                std::fs::read_to_string(format!("/proc/self/fdinfo/{}", program.as_raw_fd()))?;
            let fields = fields(&info);
            let number = |key: &str| fields.get(key).and_then(|v| v.parse().ok()).unwrap_or(0);
            let run = Counters {
                run_time_ns: number("run_time_ns"),
                run_cnt: number("run_cnt"),
            };
            counters.insert(hook.clone(), run);
        }
        Ok(counters)
    }
}

fn load_empty(program_type: u32) -> anyhow::Result<OwnedFd> {
    // mov64 r0, 0; exit
    let instructions: [u64; 2] = [0xb7, 0x95];
    let license = c"GPL";
    let mut attr = [0u8; 128];
    put(&mut attr, 0, &program_type.to_ne_bytes());
    put(&mut attr, 4, &2u32.to_ne_bytes());
    put(&mut attr, 8, &(instructions.as_ptr() as u64).to_ne_bytes());
    put(&mut attr, 16, &(license.as_ptr() as u64).to_ne_bytes());
    put(&mut attr, 48, b"bench_floor");
    bpf(BPF_PROG_LOAD, &attr).context("bpf(BPF_PROG_LOAD) of an empty program")
}

fn raw_tracepoint_open(name: &str, program: &OwnedFd) -> anyhow::Result<OwnedFd> {
    let name = CString::new(name)?;
    let mut attr = [0u8; 16];
    put(&mut attr, 0, &(name.as_ptr() as u64).to_ne_bytes());
    put(&mut attr, 8, &(program.as_raw_fd() as u32).to_ne_bytes());
    Ok(bpf(BPF_RAW_TRACEPOINT_OPEN, &attr)?)
}

/// A perf event on the tracepoint, with the program set on it, as libbpf attaches
/// tracepoint programs (one event, any process, CPU 0: the program runs on every CPU).
fn perf_tracepoint(name: &str, program: &OwnedFd) -> anyhow::Result<OwnedFd> {
    let id: u64 = std::fs::read_to_string(tracepoint_dir(name)?.join("id"))?
        .trim()
        .parse()?;
    let mut attr = [0u8; 128];
    put(&mut attr, 0, &PERF_TYPE_TRACEPOINT.to_ne_bytes());
    put(&mut attr, 4, &128u32.to_ne_bytes()); // size: PERF_ATTR_SIZE_VER7
    put(&mut attr, 8, &id.to_ne_bytes());
    put(&mut attr, 16, &1u64.to_ne_bytes()); // sample_period
    put(&mut attr, 48, &1u32.to_ne_bytes()); // wakeup_events
    // SAFETY: a live attribute block of the size it declares; pid -1 with cpu 0 and no group.
    let fd = unsafe {
        syscall(
            SYS_PERF_EVENT_OPEN,
            attr.as_ptr(),
            -1 as c_int,
            0 as c_int,
            -1 as c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("perf_event_open");
    }
    // SAFETY: a descriptor the kernel just returned, owned by nobody else.
    let event = unsafe { OwnedFd::from_raw_fd(fd as c_int) };
    for (request, argument) in [
        (PERF_EVENT_IOC_SET_BPF, program.as_raw_fd() as c_ulong),
        (PERF_EVENT_IOC_ENABLE, 0),
    ] {
        // SAFETY: both requests take an integer argument on a perf event descriptor.
        if unsafe { ioctl(event.as_raw_fd(), request, argument) } != 0 {
            return Err(std::io::Error::last_os_error()).context("ioctl on the perf event");
        }
    }
    Ok(event)
}

/// `/sys/kernel/tracing/events/CATEGORY/NAME`: a tracepoint's name alone is unique.
fn tracepoint_dir(name: &str) -> anyhow::Result<std::path::PathBuf> {
    let events = Path::new("/sys/kernel/tracing/events");
    for category in std::fs::read_dir(events).context("tracefs is not mounted")? {
        let dir = category?.path().join(name);
        if dir.join("id").is_file() {
            return Ok(dir);
        }
    }
    bail!("no tracepoint {name} in {}", events.display())
}
