//! The hook plan: for each stage of a passive open, the programs that can observe it, in order of
//! preference. At start each candidate is loaded and attached in turn; the first that works is
//! used and the others' failures are kept to tell the user why.
//!
//! The plan itself is data (plan.rs): a new hook is one more candidate there.

use std::fmt;

use anyhow::anyhow;
use aya::{
    Btf, Ebpf,
    programs::{BtfTracePoint, FEntry, FExit, KProbe, Program, ProgramError, TracePoint},
};

mod links;
mod plan;
mod preload;

use links::LinkId;
pub use links::Links;
pub use plan::PLAN;

/// A stage of the passive open that synscope measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// A listener receives a SYN.
    Syn,
    /// The handshake completes; also reports new listeners.
    Handshake,
    /// accept() returns the child socket.
    Accept,
    /// A listener discards a packet (among them final ACKs that found the accept queue full).
    ListenerDiscards,
    /// A listener drops a SYN or a completed handshake, or answers a SYN with a cookie or by
    /// TCP Fast Open: one event each, as the kernel counted it.
    ListenDrops,
    /// A listener retransmits a SYN-ACK.
    SynackRetransmit,
    /// Accept- and SYN-queue depths.
    Queues,
    /// After accept(): the first read that returns bytes, and the first response byte.
    Phases,
}

impl Stage {
    /// Every stage, in the order a connection meets them.
    pub const ALL: [Stage; 8] = [
        Stage::Syn,
        Stage::Handshake,
        Stage::Accept,
        Stage::ListenerDiscards,
        Stage::ListenDrops,
        Stage::SynackRetransmit,
        Stage::Queues,
        Stage::Phases,
    ];

    /// The stage's slot in the kernel programs' `FAILURES` map.
    pub fn index(self) -> u32 {
        match self {
            Stage::Syn => probe_common::STAGE_SYN,
            Stage::Handshake => probe_common::STAGE_HANDSHAKE,
            Stage::Accept => probe_common::STAGE_ACCEPT,
            Stage::ListenerDiscards => probe_common::STAGE_LISTENER_DISCARDS,
            Stage::ListenDrops => probe_common::STAGE_LISTEN_DROPS,
            Stage::SynackRetransmit => probe_common::STAGE_SYNACK_RETRANSMIT,
            Stage::Queues => probe_common::STAGE_QUEUES,
            Stage::Phases => probe_common::STAGE_PHASES,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Stage::Syn => "syn",
            Stage::Handshake => "handshake",
            Stage::Accept => "accept",
            Stage::ListenerDiscards => "listener_discards",
            Stage::ListenDrops => "listen_drops",
            Stage::SynackRetransmit => "synack_retransmit",
            Stage::Queues => "queues",
            Stage::Phases => "phases",
        }
    }

    /// Stages without which there is no latency to report; the others only add detail.
    pub fn required(self) -> bool {
        matches!(self, Stage::Syn | Stage::Handshake | Stage::Accept)
    }
}

/// The kinds of hook, in synscope's order of preference: fentry and kprobes see what
/// tracepoints cannot (the listener at SYN time, io_uring accepts), fentry more cheaply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HookKind {
    Fentry,
    Kprobe,
    Tracepoint,
}

/// `--hooks`: let each stage pick, or insist on one kind where a stage offers it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum HookChoice {
    #[default]
    Auto,
    Fentry,
    Kprobe,
    Tracepoint,
}

impl HookChoice {
    fn kind(self) -> Option<HookKind> {
        match self {
            HookChoice::Auto => None,
            HookChoice::Fentry => Some(HookKind::Fentry),
            HookChoice::Kprobe => Some(HookKind::Kprobe),
            HookChoice::Tracepoint => Some(HookKind::Tracepoint),
        }
    }
}

/// How one program attaches.
#[derive(Clone, Copy, Debug)]
pub enum Attach {
    /// fentry / fexit on a kernel function (BTF-typed, cheapest).
    FEntry {
        function: &'static str,
    },
    FExit {
        function: &'static str,
    },
    /// kprobe / kretprobe on a kernel function (both are aya `KProbe`s).
    KProbe {
        function: &'static str,
    },
    /// BTF-enabled raw tracepoint (`tp_btf`).
    BtfTracePoint {
        event: &'static str,
    },
    /// Classic tracepoint (`category:name` in tracefs).
    TracePoint {
        category: &'static str,
        name: &'static str,
    },
}

/// One program of the eBPF object and where it attaches.
#[derive(Clone, Copy, Debug)]
pub struct ProgramSpec {
    pub program: &'static str,
    pub attach: Attach,
}

/// A way to observe a stage: all of its programs must attach.
#[derive(Clone, Copy, Debug)]
pub struct Candidate {
    pub kind: HookKind,
    /// Shown to the user, e.g. `tp_btf/consume_skb`.
    pub label: &'static str,
    pub programs: &'static [ProgramSpec],
    /// A program that widens the candidate where the kernel has what it hooks; without it the
    /// candidate still works, seeing less.
    pub extra: Option<Extra>,
}

#[derive(Clone, Copy, Debug)]
pub struct Extra {
    /// Appended to the candidate's label when attached.
    pub label: &'static str,
    pub program: ProgramSpec,
}

/// The accept stage's tracepoint for accepts made inside io_uring.
pub const IO_URING_EXTRA: &str = "tp_btf/io_uring_complete";

/// The outcome of the plan for one stage.
#[derive(Clone, Debug)]
pub struct StageHook {
    pub stage: Stage,
    /// The hooks used; `None`: an optional stage that nothing on this kernel can observe.
    pub active: Option<String>,
    /// Better candidates that failed, with the kernel's reason.
    pub skipped: Vec<(&'static str, String)>,
    /// What the active hook misses: its extra program, if that could not be used, and why.
    pub missed: Option<(&'static str, String)>,
}

impl fmt::Display for StageHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={}",
            self.stage.name(),
            self.active.as_deref().unwrap_or("unavailable")
        )
    }
}

/// The stage a program of the plan observes.
pub fn stage_of(program: &str) -> Option<Stage> {
    PLAN.iter().find_map(|&(stage, candidates)| {
        candidates
            .iter()
            .flat_map(|c| c.programs.iter().chain(c.extra.iter().map(|e| &e.program)))
            .any(|spec| spec.program == program)
            .then_some(stage)
    })
}

/// Loads and attaches the first working candidate of every stage. With a forced kind, a stage
/// that offers that kind uses it or fails (an optional stage is left out instead); a stage that
/// does not offer it is left out. `unavailable`:
/// stages that cannot work here whatever the hook, with the reason (something the programs
/// need is missing). `turned_off`: optional stages the user left out, with the reason; none of
/// their programs is attached.
pub fn attach_plan(
    ebpf: &mut Ebpf,
    btf: &Btf,
    links: &mut Links,
    choice: HookChoice,
    unavailable: &[(Stage, String)],
    unavailable_extras: &[(&str, String)],
    turned_off: &[(Stage, String)],
) -> anyhow::Result<Vec<StageHook>> {
    let forced = choice.kind();
    let work = PLAN
        .iter()
        .filter(|(stage, _)| !turned_off.iter().any(|(s, _)| s == stage))
        .map(|&(_, candidates)| eligible(candidates, forced))
        .collect();
    let skip_extras: Vec<&str> = unavailable_extras.iter().map(|(label, _)| *label).collect();
    let mut load_failures = preload::preload(ebpf, btf, work, &skip_extras);
    let mut hooks = Vec::new();
    for &(stage, candidates) in PLAN {
        if let Some((_, why)) = turned_off.iter().find(|(s, _)| *s == stage) {
            hooks.push(StageHook {
                stage,
                active: None,
                skipped: vec![("--phases", why.clone())],
                missed: None,
            });
            continue;
        }
        let offered = forced.is_some_and(|kind| candidates.iter().any(|c| c.kind == kind));
        let mut skipped = Vec::new();
        let mut active = None;
        let mut missed = None;
        let missing = unavailable.iter().find(|(s, _)| *s == stage);
        if let (Some(kind), false) = (forced, offered) {
            let kind = format!("{kind:?}").to_lowercase();
            skipped.push(("--hooks", format!("no {kind} hook observes this stage")));
        }
        for candidate in eligible(candidates, forced) {
            match attach_candidate(ebpf, btf, links, &mut load_failures, candidate) {
                // The hooks work but what the programs need is missing: said only then, since
                // where no hook attaches that is the more telling reason.
                Ok(()) if missing.is_some() => {
                    for spec in candidate.programs {
                        unload_program(ebpf, spec);
                    }
                    let reason = missing.map(|(_, why)| why.clone()).unwrap_or_default();
                    skipped.push((candidate.label, reason));
                    break;
                }
                Ok(()) => {
                    let mut label = candidate.label.to_owned();
                    if let Some(extra) = candidate.extra {
                        let not_here = unavailable_extras.iter().find(|(l, _)| *l == extra.label);
                        match not_here {
                            Some((_, why)) => missed = Some((extra.label, why.clone())),
                            None => match attach_program(
                                ebpf,
                                btf,
                                links,
                                &mut load_failures,
                                &extra.program,
                            ) {
                                Ok(()) => label = format!("{label}+{}", extra.label),
                                Err(e) => missed = Some((extra.label, short_reason(&e))),
                            },
                        }
                    }
                    active = Some(label);
                    break;
                }
                Err(reason) => skipped.push((candidate.label, reason)),
            }
        }
        // An optional stage that cannot use the forced kind is left out, as in auto mode (its
        // reason is kept); only the stages latency needs stop synscope.
        if let (None, Some(kind), true, None, true) =
            (&active, forced, offered, missing, stage.required())
        {
            let reasons: Vec<String> = skipped.iter().map(|(_, reason)| reason.clone()).collect();
            return Err(anyhow!(
                "--hooks {}: the {} stage cannot use it on this kernel: {}",
                format!("{kind:?}").to_lowercase(),
                stage.name(),
                reasons.join("; ")
            ));
        }
        if active.is_none() && stage.required() {
            let reasons: Vec<String> = skipped
                .iter()
                .map(|(label, reason)| format!("{label}: {reason}"))
                .collect();
            return Err(anyhow!(
                "this kernel allows no hook for the {} stage ({})",
                stage.name(),
                reasons.join("; ")
            ));
        }
        hooks.push(StageHook {
            stage,
            active,
            skipped,
            missed,
        });
    }
    Ok(hooks)
}

/// The candidates a stage may use, in order: all of them, or those of the forced kind.
fn eligible(candidates: &'static [Candidate], forced: Option<HookKind>) -> Vec<&'static Candidate> {
    let offered = forced.is_none_or(|kind| candidates.iter().any(|c| c.kind == kind));
    candidates
        .iter()
        .filter(|c| offered && forced.is_none_or(|kind| c.kind == kind))
        .collect()
}

fn attach_candidate(
    ebpf: &mut Ebpf,
    btf: &Btf,
    links: &mut Links,
    load_failures: &mut preload::LoadFailures,
    candidate: &Candidate,
) -> Result<(), String> {
    for spec in candidate.programs {
        if let Err(e) = attach_program(ebpf, btf, links, load_failures, spec) {
            // A half-attached candidate would count alongside the one that replaces it.
            for attached in candidate.programs {
                unload_program(ebpf, attached);
            }
            return Err(short_reason(&e));
        }
    }
    Ok(())
}

/// Detaches and unloads one program, if loaded.
fn unload_program(ebpf: &mut Ebpf, spec: &ProgramSpec) {
    let Some(program) = ebpf.program_mut(spec.program) else {
        return;
    };
    let _ = match spec.attach {
        Attach::FEntry { .. } => <&mut FEntry>::try_from(program).map(|p| p.unload()),
        Attach::FExit { .. } => <&mut FExit>::try_from(program).map(|p| p.unload()),
        Attach::KProbe { .. } => <&mut KProbe>::try_from(program).map(|p| p.unload()),
        Attach::BtfTracePoint { .. } => <&mut BtfTracePoint>::try_from(program).map(|p| p.unload()),
        Attach::TracePoint { .. } => <&mut TracePoint>::try_from(program).map(|p| p.unload()),
    };
}

/// Loads one program, unless it is loaded already (a kprobe program can serve several
/// functions, and the preload loads most).
fn load_program(program: &mut Program, attach: Attach, btf: &Btf) -> anyhow::Result<()> {
    if program.fd().is_ok() {
        return Ok(());
    }
    match attach {
        Attach::FEntry { function } => <&mut FEntry>::try_from(program)?.load(function, btf)?,
        Attach::FExit { function } => <&mut FExit>::try_from(program)?.load(function, btf)?,
        Attach::KProbe { .. } => <&mut KProbe>::try_from(program)?.load()?,
        Attach::BtfTracePoint { event } => {
            <&mut BtfTracePoint>::try_from(program)?.load(event, btf)?
        }
        Attach::TracePoint { .. } => <&mut TracePoint>::try_from(program)?.load()?,
    }
    Ok(())
}

/// Loads (unless the preload did, or met an error, which is returned) and attaches one program.
fn attach_program(
    ebpf: &mut Ebpf,
    btf: &Btf,
    links: &mut Links,
    load_failures: &mut preload::LoadFailures,
    spec: &ProgramSpec,
) -> anyhow::Result<()> {
    if let Some(error) = load_failures.remove(spec.program) {
        return Err(error);
    }
    let program = ebpf
        .program_mut(spec.program)
        .ok_or_else(|| anyhow!("program {} missing from the eBPF object", spec.program))?;
    load_program(program, spec.attach, btf)?;
    let link = match spec.attach {
        Attach::FEntry { .. } => LinkId::FEntry(<&mut FEntry>::try_from(program)?.attach()?),
        Attach::FExit { .. } => LinkId::FExit(<&mut FExit>::try_from(program)?.attach()?),
        Attach::KProbe { function } => {
            LinkId::KProbe(<&mut KProbe>::try_from(program)?.attach(function, 0)?)
        }
        Attach::BtfTracePoint { .. } => {
            LinkId::BtfTracePoint(<&mut BtfTracePoint>::try_from(program)?.attach()?)
        }
        Attach::TracePoint { category, name } => {
            LinkId::TracePoint(<&mut TracePoint>::try_from(program)?.attach(category, name)?)
        }
    };
    links.add(spec.program, link);
    Ok(())
}

/// The verifier log ends with statistics ("processed N insns ...", "verification time ...");
/// the reason is the last line before them.
fn verifier_reason(log: &str) -> Option<&str> {
    let is_statistics = |line: &str| {
        line.starts_with("processed ")
            || line.starts_with("verification time")
            || line.starts_with("stack depth")
    };
    log.lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty() && !is_statistics(line))
}

/// One line out of a load or attach error: the verifier log can be hundreds of lines, of which
/// the last says what went wrong.
fn short_reason(error: &anyhow::Error) -> String {
    if let Some(ProgramError::LoadError {
        io_error,
        verifier_log,
    }) = error.downcast_ref::<ProgramError>()
    {
        let log = verifier_log.to_string();
        return match verifier_reason(&log) {
            Some(last) => format!("the verifier rejected it: {last}"),
            None => format!("the kernel refused to load it: {io_error}"),
        };
    }
    let text = format!("{error:#}");
    // aya attaches kprobes through the perf kprobe PMU.
    // ENOTSUPP, which has no name in userspace: for fentry, a function the trampoline cannot
    // attach to (more than six arguments before 6.6, or not traceable).
    if text.contains("os error 524") {
        return "the kernel cannot attach to this function (ENOTSUPP)".to_owned();
    }
    if text.contains("devices/kprobe") {
        return "no kprobe PMU (kernel built without CONFIG_KPROBES)".to_owned();
    }
    text.lines().next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_once_best_kind_first_with_a_tracepoint_last() {
        let stages: Vec<Stage> = PLAN.iter().map(|(stage, _)| *stage).collect();
        let mut unique = stages.clone();
        unique.dedup();
        assert_eq!(stages, unique);
        for (stage, candidates) in PLAN {
            let kinds: Vec<HookKind> = candidates.iter().map(|c| c.kind).collect();
            let rank = |k: &HookKind| *k as u8;
            assert!(
                kinds.windows(2).all(|w| rank(&w[0]) <= rank(&w[1])),
                "{stage:?}: {kinds:?}"
            );
            // Tracepoints are the last resort, for every stage they can observe.
            if *stage != Stage::ListenDrops {
                assert_eq!(kinds.last(), Some(&HookKind::Tracepoint), "{stage:?}");
            }
        }
    }

    /// Every program of the plan has a stage, and every kprobe function is one the kernel
    /// matrix watches for the kernel's skipped hits (xtask/vm/init.sh).
    #[test]
    fn every_kprobe_function_is_watched_by_the_matrix() {
        let init = include_str!("../../../../xtask/vm/init.sh");
        let watched = init
            .split("WATCHED_KPROBES=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("init.sh sets WATCHED_KPROBES");
        let watched: Vec<&str> = watched.split_whitespace().collect();
        for (stage, candidates) in PLAN {
            for candidate in *candidates {
                let specs = candidate.programs.iter();
                for spec in specs.chain(candidate.extra.iter().map(|e| &e.program)) {
                    assert_eq!(stage_of(spec.program), Some(*stage), "{}", spec.program);
                    if let Attach::KProbe { function } = spec.attach {
                        assert!(
                            watched.contains(&function),
                            "{function} not in WATCHED_KPROBES"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn verifier_statistics_are_not_the_reason() {
        let log = "0: (b7) r1 = 0\ncombined stack size of 3 calls is 544. Too large\n\
                   processed 5347 insns (limit 1000000) max_states_per_insn 5\n";
        assert_eq!(
            verifier_reason(log),
            Some("combined stack size of 3 calls is 544. Too large")
        );
        assert_eq!(verifier_reason("processed 1 insns\n"), None);
    }

    #[test]
    fn one_line_reasons() {
        let missing_pmu =
            anyhow!("`/sys/bus/event_source/devices/kprobe/type`: No such file or directory");
        assert_eq!(
            short_reason(&missing_pmu),
            "no kprobe PMU (kernel built without CONFIG_KPROBES)"
        );
        let multi = anyhow!("first line\nsecond line");
        assert_eq!(short_reason(&multi), "first line");
    }
}
