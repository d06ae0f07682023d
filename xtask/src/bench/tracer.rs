//! The tracers under test, as processes: synscope (one backend) and the bpftrace reference.
//! Each is started before a round's load and stopped after it, so untraced rounds are
//! untraced; its programs, CPU time, memory and report are read around the load alone.

use std::{
    collections::BTreeMap,
    ffi::c_int,
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};

use super::{
    bpf::{self, Counters, Hook},
    load::last_line,
};

pub const SIGINT: c_int = 2;
pub const SIGTERM: c_int = 15;

pub fn signal(pid: u32, signal: c_int) {
    unsafe extern "C" {
        fn kill(pid: i32, signal: c_int) -> c_int;
    }
    // SAFETY: kill(2) on a child this process started and has not reaped.
    unsafe { kill(pid as i32, signal) };
}

/// How to start one tracer.
#[derive(Clone, Debug)]
pub enum Spec {
    /// synscope with `--hooks BACKEND`.
    Synscope { binary: PathBuf, backend: String },
    /// bpftrace running the reference script; `size`: tcp_rcv_state_process's size.
    Reference { script: PathBuf, size: u64 },
}

/// A program of the tracer, with where it attaches.
#[derive(Clone, Debug)]
pub struct Program {
    pub id: u32,
    pub name: String,
    pub hook: Hook,
}

/// The tracer's own cost over the load, and what it saw.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    /// CPU time on all its threads (user + system), nanoseconds.
    pub cpu_ns: u64,
    /// Peak resident memory since it started (VmHWM), KiB.
    pub peak_rss_kib: u64,
    /// Memory its BPF maps charge (memlock), bytes.
    pub map_bytes: u64,
    /// Events it reported lost (synscope only).
    pub lost_events: Option<u64>,
    /// Connections it reported accepted on the workload's port.
    pub accepted: u64,
}

pub struct Tracer {
    spec: Spec,
    child: Child,
    stdout: PathBuf,
    report: PathBuf,
    pub programs: Vec<Program>,
    cpu_at_start: u64,
}

/// The reference's programs as bpftrace names them (after their tracepoints, cut to 15
/// bytes), their hooks and the names shown. The two accept probes share a name and the same
/// kind of hook; only accept4 runs in these workloads.
const REFERENCE_HOOKS: [(&str, &str, &str); 3] = [
    ("consume_skb", "consume_skb", "skb:consume_skb"),
    (
        "inet_sock_set_s",
        "inet_sock_set_state",
        "sock:inet_sock_set_state",
    ),
    (
        "sys_exit_accept",
        "sys_exit_accept4",
        "syscalls:sys_exit_accept{,4}",
    ),
];

/// The hooks the reference's programs use, for the floor.
pub fn reference_hooks() -> Vec<Hook> {
    REFERENCE_HOOKS
        .iter()
        .map(|(_, tracepoint, _)| Hook::Tracepoint((*tracepoint).to_owned()))
        .collect()
}

impl Tracer {
    /// Starts the tracer and waits until its programs are attached. Err: why it could not
    /// (for synscope, its one-line error, e.g. a backend this kernel refuses).
    pub fn start(spec: &Spec, dir: &Path) -> anyhow::Result<Tracer> {
        std::fs::create_dir_all(dir)?;
        let (stdout, stderr, report) = (
            dir.join("stdout.txt"),
            dir.join("stderr.txt"),
            dir.join("report.json"),
        );
        let mut command = match spec {
            Spec::Synscope { binary, backend } => {
                let mut command = Command::new(binary);
                command.args(["--hooks", backend, "--format", "json", "--output"]);
                command.arg(&report);
                command
            }
            Spec::Reference { script, size } => {
                let mut command = Command::new("bpftrace");
                // synscope's SYN and child maps hold 65,536 entries; bpftrace's default is 4,096.
                command.env("BPFTRACE_MAP_KEYS_MAX", "65536");
                command.arg(script).arg(size.to_string());
                command
            }
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(File::create(&stdout)?)
            .stderr(File::create(&stderr)?)
            .spawn()
            .with_context(|| format!("cannot start {command:?}"))?;
        let mut tracer = Tracer {
            spec: spec.clone(),
            child,
            stdout: stdout.clone(),
            report,
            programs: Vec::new(),
            cpu_at_start: 0,
        };
        // synscope says so on standard error, the reference's BEGIN on standard output; both
        // after every program is attached.
        let (marker_file, marker) = match spec {
            Spec::Synscope { .. } => (&stderr, "synscope: tracing"),
            Spec::Reference { .. } => (&stdout, "tracing"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(marker_file).unwrap_or_default();
            if text.lines().any(|l| l.starts_with(marker)) {
                break;
            }
            if let Some(status) = tracer.child.try_wait()? {
                let errors = std::fs::read_to_string(&stderr).unwrap_or_default();
                bail!("{}", refusal(&errors, status));
            }
            if Instant::now() > deadline {
                let _ = tracer.child.kill();
                let _ = tracer.child.wait();
                bail!("{:?} did not start tracing within 60 s", tracer.spec);
            }
            thread::sleep(Duration::from_millis(20));
        }
        tracer.programs = tracer.find_programs()?;
        tracer.cpu_at_start = cpu_ns(tracer.child.id())?;
        Ok(tracer)
    }

    fn find_programs(&self) -> anyhow::Result<Vec<Program>> {
        let held = bpf::holdings(&self.child.id().to_string())?;
        let names = bpf::program_names()?;
        let mut programs = Vec::new();
        for &id in held.programs.keys() {
            let mut name = names
                .get(&id)
                .cloned()
                .unwrap_or_else(|| format!("id {id}"));
            let hook = match (&self.spec, held.hooks.get(&id)) {
                (_, Some(hook)) => hook.clone(),
                (Spec::Reference { .. }, None) => {
                    match REFERENCE_HOOKS
                        .iter()
                        .find(|(program, ..)| *program == name)
                    {
                        Some((_, tracepoint, shown)) => {
                            name = (*shown).to_owned();
                            Hook::Tracepoint((*tracepoint).to_owned())
                        }
                        None => Hook::Other("unknown".into()),
                    }
                }
                // Loaded, never attached: it never runs.
                (Spec::Synscope { .. }, None) => continue,
            };
            programs.push(Program { id, name, hook });
        }
        Ok(programs)
    }

    /// The counters of the tracer's programs now, by id.
    pub fn counters(&self) -> anyhow::Result<BTreeMap<u32, Counters>> {
        Ok(bpf::holdings(&self.child.id().to_string())?.programs)
    }

    /// Restarts the CPU count: what the tracer spent starting is not a cost per connection.
    pub fn mark(&mut self) -> anyhow::Result<()> {
        self.cpu_at_start = cpu_ns(self.child.id())?;
        Ok(())
    }

    /// Stops the tracer (SIGINT, as Ctrl-C) after reading what it used since `mark`, and reads
    /// its report.
    pub fn stop(mut self, port: u16) -> anyhow::Result<Usage> {
        let pid = self.child.id();
        let mut usage = Usage {
            cpu_ns: cpu_ns(pid)?.saturating_sub(self.cpu_at_start),
            peak_rss_kib: peak_rss_kib(pid)?,
            map_bytes: bpf::holdings(&pid.to_string())?.map_bytes,
            ..Usage::default()
        };
        signal(pid, SIGINT);
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("{:?} did not stop within 30 s of SIGINT", self.spec);
            }
            thread::sleep(Duration::from_millis(20));
        };
        match self.spec {
            Spec::Synscope { .. } => {
                let report = std::fs::read_to_string(&self.report)
                    .with_context(|| format!("synscope's report ({status})"))?;
                let report: serde_json::Value = serde_json::from_str(&report)?;
                usage.lost_events = report["lost_events"].as_u64();
                usage.accepted = report["listeners"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|l| l["port"].as_u64() == Some(port.into()))
                    .filter_map(|l| l["accepted"].as_u64())
                    .sum();
            }
            Spec::Reference { .. } => {
                let output = std::fs::read_to_string(&self.stdout)?;
                let key = format!("@accepted[{port}]:");
                usage.accepted = output
                    .lines()
                    .find_map(|l| l.strip_prefix(&key)?.trim().parse().ok())
                    .unwrap_or(0);
            }
        }
        Ok(usage)
    }
}

impl Drop for Tracer {
    /// A round that failed leaves no tracer behind.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One line saying why a tracer did not start.
fn refusal(stderr: &str, status: std::process::ExitStatus) -> String {
    // bpftrace warns that it cannot raise RLIMIT_MEMLOCK, which kernels since 5.11 ignore.
    let line = stderr
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.contains("RLIMIT_MEMLOCK"))
        .unwrap_or_else(|| last_line(stderr));
    if line.is_empty() {
        format!("exited ({status})")
    } else {
        line.trim_start_matches("Error: ").to_owned()
    }
}

/// CPU time of every thread of `pid` (user + system, from the scheduler's own nanosecond
/// count: /proc/PID/stat's ticks are 10 ms, too coarse for a few seconds' use).
fn cpu_ns(pid: u32) -> anyhow::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let stat = std::fs::read_to_string(task?.path().join("schedstat")).unwrap_or_default();
        total += stat
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow!("no VmHWM in /proc/{pid}/status"))
}
