//! `cargo xtask bench`: what tracing costs, as an instrument to judge each change to the
//! kernel programs by.
//!
//! The machines this runs on are shared and noisy (throughput of the same loop has varied
//! threefold between runs minutes apart), so nothing is compared across invocations. For each
//! workload, every round runs every mode once, in an order rotated each round:
//! - untraced;
//! - empty programs on every hook the tracers use: the kernel accounting's own cost per run
//!   (the floor), to subtract from the tracers' figures;
//! - synscope, once per backend (`--hooks`) this kernel allows;
//! - the bpftrace reference (bench/reference.bt), the same core job written by hand.
//!
//! Figures are per round (the rate over the same round's untraced rate, BPF time over the
//! connections the round made, minus the same round's floor), then the median of rounds. The
//! kernel's accounting of each program's run time (BPF_ENABLE_STATS) does not depend on the
//! machine's load the way throughput does. BENCHMARKS.md records the figures.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::commands::check;

pub(crate) mod bpf;
pub(crate) mod load;
mod report;
pub(crate) mod tracer;

use bpf::{Floor, Hook};
use load::{Prepared, Workload};
use report::{Mode, ProgramRun, Results, Sample};
use tracer::{Spec, Tracer};

const NETNS: &str = "synscope-bench";
/// synscope's backends, in its order of preference; each that starts here is measured.
const BACKENDS: [&str; 3] = ["fentry", "kprobe", "tracepoint"];
/// What the bench runs besides synscope, and the Debian package of each (xtask/setup.sh).
const TOOLS: [(&str, &str); 5] = [
    ("bpftrace", "bpftrace"),
    ("nginx", "nginx-light"),
    ("wrk", "wrk"),
    ("bpftool", "bpftool"),
    ("ip", "iproute2"),
];

#[derive(clap::Args, Debug)]
pub struct Options {
    /// Rounds per workload; each round runs every mode once.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds of load per mode and round.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Only these workloads (repeatable); default: all.
    #[arg(long = "workload", value_enum)]
    workloads: Vec<Workload>,
    /// Measure this synscope binary instead of building one (repeatable: builds compared in
    /// the same rounds, e.g. before and after a change to the kernel programs).
    #[arg(long = "synscope", value_name = "PATH")]
    binaries: Vec<PathBuf>,
}

pub fn run(root: &Path, options: &Options) -> anyhow::Result<()> {
    preflight()?;
    if options.rounds == 0 || options.seconds == 0 {
        bail!("--rounds and --seconds must be at least 1");
    }
    let started = Instant::now();
    let binaries = if options.binaries.is_empty() {
        crate::cargo(root, &["build", "--release", "--package", "probe-user"])?;
        vec![root.join("target/release/synscope")]
    } else {
        options.binaries.clone()
    };
    // One bench at a time: a second would share this directory and the namespace.
    let dir = std::env::temp_dir().join("synscope-bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    // Counted while this descriptor lives, and only then.
    let _stats = bpf::enable_stats()?;

    let mut modes = vec![Mode::Untraced, Mode::Floor];
    let mut hooks = BTreeSet::new();
    for (i, binary) in binaries.iter().enumerate() {
        let tag = (binaries.len() > 1).then(|| format!("#{}", i + 1));
        if let Some(tag) = &tag {
            println!("bench: synscope {tag} is {}", binary.display());
        }
        for backend in backends(binary, &dir, &mut hooks)? {
            modes.push(Mode::Synscope {
                backend,
                binary: binary.clone(),
                tag: tag.clone(),
            });
        }
    }
    modes.push(Mode::Reference);
    hooks.extend(tracer::reference_hooks());
    let hooks: Vec<Hook> = hooks
        .into_iter()
        .filter(|h| !matches!(h, Hook::Other(_)))
        .collect();
    let reference = Spec::Reference {
        script: root.join("bench/reference.bt"),
        size: function_size(
            &std::fs::read_to_string("/proc/kallsyms")?,
            "tcp_rcv_state_process",
        )?,
    };

    // Left over by an interrupted run, if any.
    let _ = Command::new("ip")
        .args(["netns", "del", NETNS])
        .stderr(Stdio::null())
        .status();
    check(Command::new("ip").args(["netns", "add", NETNS]))?;
    let result = (|| {
        check(Command::new("ip").args(["-n", NETNS, "link", "set", "lo", "up"]))?;
        let workloads = if options.workloads.is_empty() {
            Workload::ALL.to_vec()
        } else {
            options.workloads.clone()
        };
        let bench = Bench {
            reference: &reference,
            hooks: &hooks,
            dir: &dir,
            seconds: options.seconds,
        };
        let mut all = Vec::new();
        for workload in workloads {
            let results = bench.workload(workload, &modes, options.rounds)?;
            println!("{}", results.render());
            all.push(results);
        }
        print_summary(&all, &modes);
        anyhow::Ok(())
    })();
    let _ = Command::new("ip").args(["netns", "del", NETNS]).status();
    let _ = std::fs::remove_dir_all(&dir);
    println!("bench: {} s in all", started.elapsed().as_secs());
    result
}

/// One line saying what is missing, before anything is built.
fn preflight() -> anyhow::Result<()> {
    unsafe extern "C" {
        fn geteuid() -> u32;
    }
    // SAFETY: geteuid cannot fail.
    if unsafe { geteuid() } != 0 {
        bail!("bench must run as root: it loads BPF programs and makes a network namespace");
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    match missing(&TOOLS, &dirs) {
        Some(message) => bail!("{message}"),
        None => Ok(()),
    }
}

/// "bench needs ..." naming the tools not in `dirs` and their packages, or None.
fn missing(tools: &[(&str, &str)], dirs: &[PathBuf]) -> Option<String> {
    let absent: Vec<&(&str, &str)> = tools
        .iter()
        .filter(|(tool, _)| !dirs.iter().any(|dir| dir.join(tool).is_file()))
        .collect();
    if absent.is_empty() {
        return None;
    }
    let tools: Vec<&str> = absent.iter().map(|(tool, _)| *tool).collect();
    let packages: Vec<&str> = absent.iter().map(|(_, package)| *package).collect();
    Some(format!(
        "bench needs {} on PATH (Debian packages: {}): run xtask/setup.sh",
        tools.join(", "),
        packages.join(", ")
    ))
}

/// The backends `synscope` can use here; adds the hooks their programs attach to.
fn backends(
    synscope: &Path,
    dir: &Path,
    hooks: &mut BTreeSet<Hook>,
) -> anyhow::Result<Vec<String>> {
    let mut usable = Vec::new();
    for backend in BACKENDS {
        let spec = Spec::Synscope {
            binary: synscope.to_path_buf(),
            backend: backend.into(),
        };
        match Tracer::start(&spec, &dir.join(format!("probe-{backend}"))) {
            Ok(tracer) => {
                hooks.extend(tracer.programs.iter().map(|p| p.hook.clone()));
                tracer.stop(0)?;
                eprintln!("bench: {} --hooks {backend}: measured", synscope.display());
                usable.push(backend.to_owned());
            }
            Err(e) => eprintln!("bench: synscope --hooks {backend}: not on this kernel ({e:#})"),
        }
    }
    if usable.is_empty() {
        bail!(
            "{} could not trace with any backend here (see synscope check)",
            synscope.display()
        );
    }
    Ok(usable)
}

/// A kernel function's size: from its address to the next symbol's in /proc/kallsyms, which
/// is not sorted.
fn function_size(symbols: &str, name: &str) -> anyhow::Result<u64> {
    let addresses: Vec<(u64, &str)> = symbols
        .lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let address = u64::from_str_radix(fields.next()?, 16).ok()?;
            Some((address, fields.nth(1)?))
        })
        .collect();
    let start = addresses
        .iter()
        .find(|(_, symbol)| *symbol == name)
        .map(|(address, _)| *address)
        .filter(|a| *a != 0)
        .with_context(|| format!("{name} is not in /proc/kallsyms (or addresses are hidden)"))?;
    addresses
        .iter()
        .map(|(address, _)| *address)
        .filter(|a| *a > start)
        .min()
        .map(|end| end - start)
        .with_context(|| format!("no symbol after {name} in /proc/kallsyms"))
}

struct Bench<'a> {
    reference: &'a Spec,
    hooks: &'a [Hook],
    dir: &'a Path,
    seconds: u64,
}

impl Bench<'_> {
    fn workload(
        &self,
        workload: Workload,
        modes: &[Mode],
        rounds: usize,
    ) -> anyhow::Result<Results> {
        let prepared = Prepared::start(workload, NETNS, self.dir)?;
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); modes.len()];
        for round in 0..rounds {
            // Rotated, so that no mode always follows the same one.
            for k in 0..modes.len() {
                let m = (round + k) % modes.len();
                let sample = self
                    .measure(&modes[m], &prepared, workload)
                    .with_context(|| format!("{} {}", workload.name(), modes[m].label()))?;
                eprintln!(
                    "bench: {} round {}/{rounds}: {:<24} {:>8.0} conn/s",
                    workload.name(),
                    round + 1,
                    modes[m].label(),
                    sample.outcome.rate()
                );
                samples[m].push(sample);
            }
        }
        Ok(Results {
            workload,
            rounds,
            seconds: self.seconds,
            modes: modes.to_vec(),
            samples,
        })
    }

    fn measure(
        &self,
        mode: &Mode,
        prepared: &Prepared,
        workload: Workload,
    ) -> anyhow::Result<Sample> {
        let spec = match mode {
            Mode::Untraced => {
                let outcome = prepared.round(self.seconds)?;
                return Ok(Sample {
                    outcome,
                    programs: Vec::new(),
                    usage: None,
                });
            }
            Mode::Floor => {
                let floor = Floor::attach(self.hooks)?;
                let before = floor.counters()?;
                let outcome = prepared.round(self.seconds)?;
                let after = floor.counters()?;
                let programs = after
                    .iter()
                    .map(|(hook, end)| {
                        let start = before.get(hook).copied().unwrap_or_default();
                        ProgramRun {
                            name: hook.to_string(),
                            hook: hook.clone(),
                            ns: end.run_time_ns.saturating_sub(start.run_time_ns),
                            runs: end.run_cnt.saturating_sub(start.run_cnt),
                        }
                    })
                    .collect();
                return Ok(Sample {
                    outcome,
                    programs,
                    usage: None,
                });
            }
            Mode::Synscope {
                backend, binary, ..
            } => Spec::Synscope {
                binary: binary.clone(),
                backend: backend.clone(),
            },
            Mode::Reference => self.reference.clone(),
        };
        let mut tracer = Tracer::start(&spec, &self.dir.join("tracer"))?;
        tracer.mark()?;
        let before = tracer.counters()?;
        let outcome = prepared.round(self.seconds)?;
        let after = tracer.counters()?;
        let programs = tracer
            .programs
            .iter()
            .map(|p| {
                let start = before.get(&p.id).copied().unwrap_or_default();
                let end = after.get(&p.id).copied().unwrap_or_default();
                ProgramRun {
                    name: p.name.clone(),
                    hook: p.hook.clone(),
                    ns: end.run_time_ns.saturating_sub(start.run_time_ns),
                    runs: end.run_cnt.saturating_sub(start.run_cnt),
                }
            })
            .collect();
        let usage = tracer.stop(workload.port())?;
        Ok(Sample {
            outcome,
            programs,
            usage: Some(usage),
        })
    }
}

/// Each synscope mode against the targets, per workload: BPF time below the reference's and
/// at most 1 us beyond the floor; CPU under 2 % of a core at 10,000 connections/s (measured
/// by the paced loop, scaled from the others); no lost events, at whatever rate each reached.
fn print_summary(all: &[Results], modes: &[Mode]) {
    println!("== targets (medians of rounds)");
    let verdict = |ok: bool| if ok { "yes" } else { "NO" };
    for results in all {
        let reference = results.headline(&Mode::Reference);
        for mode in modes.iter().filter(|m| matches!(m, Mode::Synscope { .. })) {
            let Some(ours) = results.headline(mode) else {
                continue;
            };
            let mut line = format!("{:<11} {}:", results.workload.name(), mode.label());
            if let Some(reference) = &reference {
                line += &format!(
                    " BPF {:.0} ns/conn < reference {:.0}: {};",
                    ours.ns.median,
                    reference.ns.median,
                    verdict(ours.ns.median < reference.ns.median)
                );
            }
            if let Some(beyond) = ours.beyond_floor {
                line += &format!(
                    " beyond floor {:.0} ns <= 1000: {};",
                    beyond.median,
                    verdict(beyond.median <= 1000.0)
                );
            }
            let cpu = if results.workload == Workload::LoopPaced {
                ours.cpu_percent.map(|c| (c.median, "measured"))
            } else {
                ours.cpu_scaled.map(|c| (c.median, "scaled"))
            };
            if let Some((at_10k, how)) = cpu {
                line += &format!(
                    " CPU at 10k/s {at_10k:.2} % ({how}) < 2: {};",
                    verdict(at_10k < 2.0)
                );
            }
            if let Some(lost) = ours.lost {
                line += &format!(
                    " lost {lost} at {:.0} conn/s: {}",
                    ours.top_rate,
                    verdict(lost == 0)
                );
            }
            println!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_is_named_with_its_package() {
        let dirs = [PathBuf::from("/nonexistent"), PathBuf::from("/bin")];
        let message = missing(&[("sh", "dash"), ("no-such-tool", "pkg")], &dirs).unwrap();
        assert_eq!(
            message,
            "bench needs no-such-tool on PATH (Debian packages: pkg): run xtask/setup.sh"
        );
        assert!(missing(&[("sh", "dash")], &dirs).is_none());
    }

    #[test]
    fn function_size_reaches_the_next_symbol_by_address() {
        let symbols = "ffffffff82081340 T tcp_rcv_state_process\n\
                       ffffffff81000000 T _stext\n\
                       ffffffff820828f0 T __pfx_tcp_get_syncookie_mss\n\
                       ffffffff82081400 t a_later_local [some_module]\n";
        assert_eq!(
            function_size(symbols, "tcp_rcv_state_process").unwrap(),
            0xc0
        );
        // Without root, addresses read as zero.
        let hidden = "0000000000000000 T tcp_rcv_state_process\n";
        assert!(function_size(hidden, "tcp_rcv_state_process").is_err());
    }
}
