//! Checks that synscope can trace here, each failing with a one-line reason and a remedy.
//!
//! What synscope needs is capabilities, not user id 0: the kernel checks each privileged step
//! against one capability, so a user holding those capabilities traces as well as root, and
//! root without them cannot. Measured with tracepoints on 6.18 and on Debian's 5.10 and 6.12
//! (README, "Least privilege"):
//!
//! - `CAP_SYS_ADMIN`: setns() into each network namespace, where its listening sockets
//!   (sock_diag), counters and sysctls are read (netns.rs; setns needs it even to re-enter
//!   one's own). Without it every namespace's counters come back empty. It also allows bpf()
//!   and perf_event_open() (the kernel's bpf_capable() and perfmon_capable() accept it), so
//!   `CAP_BPF` and `CAP_PERFMON` (5.8+) add nothing once it is held. They would not even do for
//!   loading and attaching alone on Debian's kernels, whose kernel.perf_event_paranoid 3 (a
//!   Debian patch) refuses perf_event_open() without `CAP_SYS_ADMIN` (measured on 5.10, 6.12).
//! - `CAP_SYS_PTRACE`: /proc/PID/ns/net of a process of another user, or of one holding
//!   capabilities synscope lacks, is refused without it, and that namespace is then missed.
//! - `CAP_SYSLOG`: /proc/kallsyms shows kernel addresses only with it (kernel.kptr_restrict
//!   1, or 0 with kernel.perf_event_paranoid above 1), and synscope needs two of them.
//! - `CAP_DAC_READ_SEARCH`, for a user other than root: tracefs (tracepoint ids) is root's,
//!   its top directory 0700 from 5.17 (and in Debian's 5.10).
//! - `CAP_SYS_RESOURCE`, before 5.11 only: those kernels charge BPF maps to RLIMIT_MEMLOCK,
//!   which only it can raise (5.11 and later charge the memory cgroup).
//!
//! `CAP_NET_ADMIN` is not needed: the programs are tracing programs, and sock_diag dumps
//! listening sockets to anyone in the namespace.
//!
//! Nothing needs user id 0 itself: with `CAP_SYS_ADMIN` tracefs is mounted through mount(2).

use std::{fs, os::unix::fs::MetadataExt as _, path::Path};

use anyhow::{Context as _, bail};

const TRACEFS: &str = "/sys/kernel/tracing";
/// statfs(2)'s f_type of tracefs (include/uapi/linux/magic.h).
const TRACEFS_MAGIC: i64 = 0x7472_6163;
/// The inode of the initial user namespace, the same on every machine (PROC_USER_INIT_INO).
const INITIAL_USER_NS: u64 = 0xEFFF_FFFD;

/// A capability, by its number in linux/capability.h.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability {
    pub number: u32,
    pub name: &'static str,
}

pub const CAP_DAC_OVERRIDE: Capability = Capability {
    number: 1,
    name: "CAP_DAC_OVERRIDE",
};
pub const CAP_DAC_READ_SEARCH: Capability = Capability {
    number: 2,
    name: "CAP_DAC_READ_SEARCH",
};
pub const CAP_SYS_PTRACE: Capability = Capability {
    number: 19,
    name: "CAP_SYS_PTRACE",
};
pub const CAP_SYS_ADMIN: Capability = Capability {
    number: 21,
    name: "CAP_SYS_ADMIN",
};
pub const CAP_SYS_RESOURCE: Capability = Capability {
    number: 24,
    name: "CAP_SYS_RESOURCE",
};
pub const CAP_SYSLOG: Capability = Capability {
    number: 34,
    name: "CAP_SYSLOG",
};

/// What the capability check depends on, read once from the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// The effective capabilities, one bit per capability number (`CapEff`).
    pub effective: u64,
    /// Effective user id 0.
    pub root: bool,
    /// (major, minor) of the running kernel.
    pub kernel: (u32, u32),
    pub kptr_restrict: u32,
    pub perf_event_paranoid: i32,
    /// tracefs's top directory can be listed by this user without a capability, by its mode,
    /// owner and group; false when it is not mounted (mounted, it is root's and 0700 from 5.17).
    pub tracefs_open: bool,
    /// The hard RLIMIT_MEMLOCK is unlimited, so it can be raised without `CAP_SYS_RESOURCE`.
    pub memlock_unlimited: bool,
}

/// A capability synscope needs on this machine, and what for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Need {
    pub capability: Capability,
    /// A broader capability that does as well (`CAP_DAC_OVERRIDE` for `CAP_DAC_READ_SEARCH`).
    pub or: Option<Capability>,
    pub why: String,
}

impl Host {
    pub fn read() -> anyhow::Result<Self> {
        let status = fs::read_to_string("/proc/thread-self/status")
            .or_else(|_| fs::read_to_string("/proc/self/status"))
            .context("cannot read /proc/self/status for synscope's capabilities")?;
        let effective =
            effective_capabilities(&status).context("no CapEff line in /proc/self/status")?;
        let sysctl = |name: &str| {
            fs::read_to_string(format!("/proc/sys/kernel/{name}"))
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
        };
        let mut memlock = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct we pass.
        let memlock_unlimited = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut memlock) } == 0
            && memlock.rlim_max == libc::RLIM_INFINITY;
        Ok(Self {
            effective,
            // SAFETY: geteuid has no preconditions.
            root: unsafe { libc::geteuid() } == 0,
            kernel: kernel_version(&kernel_release()),
            // Unreadable, they are taken at the values that ask the most of synscope short of
            // hiding addresses from everyone.
            kptr_restrict: sysctl("kptr_restrict").map_or(1, |v| v.clamp(0, 2) as u32),
            perf_event_paranoid: sysctl("perf_event_paranoid").map_or(2, |v| v as i32),
            tracefs_open: tracefs_mounted() && open_to_this_user(Path::new(TRACEFS)),
            memlock_unlimited,
        })
    }

    pub fn has(&self, capability: Capability) -> bool {
        capability.number < 64 && self.effective & (1 << capability.number) != 0
    }

    /// The capabilities synscope needs here, every one of them whatever it holds.
    pub fn needs(&self) -> Vec<Need> {
        let need = |capability, why: &str| Need {
            capability,
            or: None,
            why: why.to_owned(),
        };
        let mut needs = vec![
            need(
                CAP_SYS_ADMIN,
                "for setns() into each network namespace, to read its listening sockets and \
                 counters, and for bpf() and perf_event_open()",
            ),
            need(
                CAP_SYS_PTRACE,
                "to reach other processes' network namespaces through /proc/PID/ns/net",
            ),
        ];
        // The kernel's kallsyms_show_value(). With kptr_restrict 2 nobody sees addresses, no
        // capability helps, and check() says so after the capabilities.
        let kallsyms_open = self.kptr_restrict == 0 && self.perf_event_paranoid <= 1;
        if !kallsyms_open {
            needs.push(need(
                CAP_SYSLOG,
                &format!(
                    "to read kernel addresses in /proc/kallsyms: kernel.kptr_restrict {}, \
                     kernel.perf_event_paranoid {}",
                    self.kptr_restrict, self.perf_event_paranoid
                ),
            ));
        }
        if !self.root && !self.tracefs_open {
            needs.push(Need {
                capability: CAP_DAC_READ_SEARCH,
                or: Some(CAP_DAC_OVERRIDE),
                why: format!(
                    "to read tracepoint ids in tracefs, closed to other users at {TRACEFS}"
                ),
            });
        }
        if self.kernel < (5, 11) && !self.memlock_unlimited {
            needs.push(need(
                CAP_SYS_RESOURCE,
                "to lift RLIMIT_MEMLOCK, which kernels before 5.11 charge BPF maps to; \
                 an unlimited memlock limit does as well",
            ));
        }
        needs
    }

    /// Ok when synscope holds what it needs here, else the one-line reason.
    pub fn check(&self) -> Result<(), String> {
        let needs = self.needs();
        let missing: Vec<String> = needs
            .iter()
            .filter(|n| !self.has(n.capability) && !n.or.is_some_and(|or| self.has(or)))
            .map(|n| format!("{} ({})", n.capability.name, n.why))
            .collect();
        if !missing.is_empty() {
            let all = join(needs.iter().map(|n| n.capability.name.to_owned()).collect());
            let missing = join(missing);
            return Err(if self.root {
                format!("synscope runs as root without {missing}: it needs {all}")
            } else {
                format!("synscope must run as root or with {all}: it lacks {missing}")
            });
        }
        if self.kptr_restrict >= 2 {
            return Err(
                "/proc/kallsyms hides kernel addresses from every user, root included \
                 (kernel.kptr_restrict 2): set kernel.kptr_restrict to 1 for synscope"
                    .to_owned(),
            );
        }
        Ok(())
    }
}

/// Fails unless synscope holds the capabilities it needs on this machine, naming each one
/// missing and what for. Early: before anything is parsed or loaded.
pub fn require_capabilities() -> anyhow::Result<()> {
    if !in_initial_user_namespace() {
        bail!(
            "synscope runs in a user namespace of its own (a rootless container?): the kernel \
             allows bpf(), perf_event_open() and kernel addresses only to capabilities held in \
             the machine's initial user namespace"
        );
    }
    // Whether a user other than root needs a capability for tracefs depends on the mounted
    // tracefs's mode: mount it first where synscope may.
    if !tracefs_mounted() && Host::read()?.has(CAP_SYS_ADMIN) {
        ensure_tracefs()?;
    }
    Host::read()?.check().map_err(anyhow::Error::msg)
}

/// The name the callers know: what root has that synscope uses is capabilities, checked here.
pub use self::require_capabilities as require_root;

/// Classic tracepoints are found through tracefs; mount it when the machine has not. mount(2)
/// itself: with `CAP_SYS_ADMIN` a user other than root may, mount(8) would refuse, and a
/// `FROM scratch` image has none.
pub fn ensure_tracefs() -> anyhow::Result<()> {
    if tracefs_mounted() {
        return Ok(());
    }
    let path = std::ffi::CString::new(TRACEFS).expect("no NUL in the path");
    // SAFETY: NUL-terminated strings that outlive the call, and no mount data.
    let mounted = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            path.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    } == 0;
    if !mounted {
        bail!(
            "tracefs is not mounted at {TRACEFS} and mounting it failed ({}; mount -t tracefs \
             nodev {TRACEFS})",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

fn tracefs_mounted() -> bool {
    let path = std::ffi::CString::new(TRACEFS).expect("no NUL in the path");
    // SAFETY: statfs writes the struct we pass; the path outlives the call.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    let found = unsafe { libc::statfs(path.as_ptr(), &mut fs) } == 0;
    found && fs.f_type as i64 == TRACEFS_MAGIC
}

/// A directory this user may list and enter by its mode bits alone (as the kernel's
/// generic_permission() picks them: owner's, else group's, else others').
fn open_to_this_user(dir: &Path) -> bool {
    let Ok(meta) = fs::metadata(dir) else {
        return false;
    };
    // SAFETY: geteuid and getegid have no preconditions.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let shift = if meta.uid() == euid {
        6
    } else if meta.gid() == egid || supplementary_groups().contains(&meta.gid()) {
        3
    } else {
        0
    };
    (meta.mode() >> shift) & 0o5 == 0o5
}

fn supplementary_groups() -> Vec<libc::gid_t> {
    // SAFETY: with size 0, getgroups only counts.
    let count = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    let mut groups = vec![0; count.max(0) as usize];
    // SAFETY: the buffer holds `count` entries.
    let got = unsafe { libc::getgroups(count, groups.as_mut_ptr()) };
    groups.truncate(got.max(0) as usize);
    groups
}

fn in_initial_user_namespace() -> bool {
    // Unreadable (no /proc?), the capability check that follows says what is wrong.
    fs::metadata("/proc/self/ns/user").map_or(true, |m| m.ino() == INITIAL_USER_NS)
}

/// `CapEff` of a /proc/PID/status.
fn effective_capabilities(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// (major, minor) of a release such as `5.10.0-43-cloud-amd64`; (0, 0) when unreadable.
fn kernel_version(release: &str) -> (u32, u32) {
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse().unwrap_or(0));
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
}

/// "a", "a and b", "a, b and c".
fn join(mut items: Vec<String>) -> String {
    match items.len() {
        0 | 1 => items.pop().unwrap_or_default(),
        _ => {
            let last = items.pop().unwrap_or_default();
            format!("{} and {last}", items.join(", "))
        }
    }
}

pub fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the struct we pass.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

/// The running kernel's release, e.g. `6.18.44`.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT_SET: [Capability; 3] = [CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_SYSLOG];

    fn bits(caps: &[Capability]) -> u64 {
        caps.iter().fold(0, |b, c| b | 1 << c.number)
    }

    /// This development machine, as a user other than root with `caps`.
    fn user(caps: &[Capability]) -> Host {
        Host {
            effective: bits(caps),
            root: false,
            kernel: (6, 18),
            kptr_restrict: 0,
            perf_event_paranoid: 2,
            tracefs_open: false,
            memlock_unlimited: false,
        }
    }

    fn names(host: &Host) -> Vec<&'static str> {
        host.needs().iter().map(|n| n.capability.name).collect()
    }

    #[test]
    fn the_smallest_sets() {
        let mut root = user(&ROOT_SET);
        root.root = true;
        assert_eq!(
            names(&root),
            ["CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_SYSLOG"]
        );
        assert_eq!(root.check(), Ok(()));
        let mut set = ROOT_SET.to_vec();
        set.push(CAP_DAC_READ_SEARCH);
        assert_eq!(user(&set).check(), Ok(()));
        // CAP_DAC_OVERRIDE opens tracefs as well.
        set.pop();
        set.push(CAP_DAC_OVERRIDE);
        assert_eq!(user(&set).check(), Ok(()));
    }

    #[test]
    fn each_missing_capability_is_named_with_its_purpose() {
        let set = [
            CAP_SYS_ADMIN,
            CAP_SYS_PTRACE,
            CAP_SYSLOG,
            CAP_DAC_READ_SEARCH,
        ];
        for left_out in set {
            let held: Vec<_> = set.iter().copied().filter(|c| *c != left_out).collect();
            let error = user(&held).check().unwrap_err();
            assert!(
                error.starts_with(
                    "synscope must run as root or with CAP_SYS_ADMIN, CAP_SYS_PTRACE, \
                     CAP_SYSLOG and CAP_DAC_READ_SEARCH: it lacks "
                ),
                "{error}"
            );
            let lacks = error.split(": it lacks ").nth(1).unwrap();
            assert!(
                lacks.starts_with(&format!("{} (", left_out.name)),
                "{error}"
            );
            for other in &held {
                assert!(!lacks.contains(other.name), "{error}");
            }
            assert_eq!(error.lines().count(), 1);
        }
        let mut root = user(&[CAP_SYS_ADMIN, CAP_SYS_PTRACE]);
        root.root = true;
        assert_eq!(
            root.check().unwrap_err(),
            "synscope runs as root without CAP_SYSLOG (to read kernel addresses in \
             /proc/kallsyms: kernel.kptr_restrict 0, kernel.perf_event_paranoid 2): it needs \
             CAP_SYS_ADMIN, CAP_SYS_PTRACE and CAP_SYSLOG"
        );
        let none = user(&[]).check().unwrap_err();
        assert!(
            none.contains("it lacks CAP_SYS_ADMIN (for setns()")
                && none.contains(", CAP_SYS_PTRACE (")
                && none.contains("and CAP_DAC_READ_SEARCH ("),
            "{none}"
        );
    }

    #[test]
    fn what_depends_on_the_machine() {
        // kallsyms open to all: kptr_restrict 0 and perf_event_paranoid <= 1.
        let mut host = user(&ROOT_SET);
        host.perf_event_paranoid = 1;
        assert!(!names(&host).contains(&"CAP_SYSLOG"));
        host.kptr_restrict = 1;
        assert!(names(&host).contains(&"CAP_SYSLOG"));
        // kptr_restrict 2 hides addresses from everyone.
        host.kptr_restrict = 2;
        host.root = true;
        assert!(host.check().unwrap_err().contains("root included"));
        // tracefs mounted with a mode or group that lets this user in.
        let mut host = user(&ROOT_SET);
        host.tracefs_open = true;
        assert_eq!(host.check(), Ok(()));
        // Before 5.11, BPF maps count against RLIMIT_MEMLOCK.
        let mut old = user(&ROOT_SET);
        old.root = true;
        old.kernel = (5, 10);
        assert_eq!(
            old.check().unwrap_err().split(" (").next(),
            Some("synscope runs as root without CAP_SYS_RESOURCE")
        );
        old.memlock_unlimited = true;
        assert_eq!(old.check(), Ok(()));
        old.memlock_unlimited = false;
        old.kernel = (5, 11);
        assert_eq!(old.check(), Ok(()));
    }

    #[test]
    fn reads_capabilities_and_releases() {
        let status = "Name:\tsynscope\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\n";
        assert_eq!(effective_capabilities(status), Some(0x1fffeffffff));
        assert_eq!(effective_capabilities("Name:\tx\n"), None);
        assert_eq!(kernel_version("5.10.0-43-cloud-amd64"), (5, 10));
        assert_eq!(kernel_version("6.18.44-fc-v1147"), (6, 18));
        assert_eq!(kernel_version("unknown"), (0, 0));
        assert_eq!(join(vec!["a".into()]), "a");
        assert_eq!(join(vec!["a".into(), "b".into(), "c".into()]), "a, b and c");
    }
}
