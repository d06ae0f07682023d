//! The hook plan: for each stage of a passive open, the programs that can observe it, in order of
//! preference. At start each candidate is loaded and attached in turn; the first that works is
//! used and the others' failures are kept to tell the user why.
//!
//! The plan is data so that new backends (fentry, kprobe) slot in as earlier candidates.

use std::fmt;

use anyhow::anyhow;
use aya::{
    Btf, Ebpf,
    programs::{BtfTracePoint, ProgramError, TracePoint},
};

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
    /// A listener retransmits a SYN-ACK.
    SynackRetransmit,
    /// Accept- and SYN-queue depths.
    Queues,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Syn => "syn",
            Stage::Handshake => "handshake",
            Stage::Accept => "accept",
            Stage::ListenerDiscards => "listener_discards",
            Stage::SynackRetransmit => "synack_retransmit",
            Stage::Queues => "queues",
        }
    }

    /// Stages without which there is no latency to report; the others only add detail.
    pub fn required(self) -> bool {
        matches!(self, Stage::Syn | Stage::Handshake | Stage::Accept)
    }
}

/// How one program attaches.
#[derive(Clone, Copy, Debug)]
pub enum Attach {
    /// BTF-enabled raw tracepoint (`tp_btf`).
    BtfTracePoint { event: &'static str },
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
    /// Shown to the user, e.g. `tp_btf/consume_skb`.
    pub label: &'static str,
    pub programs: &'static [ProgramSpec],
}

/// Candidates per stage, best first.
pub const PLAN: &[(Stage, &[Candidate])] = &[
    (
        Stage::Syn,
        &[Candidate {
            label: "tp_btf/consume_skb",
            programs: &[ProgramSpec {
                program: "syn_consume_skb",
                attach: Attach::BtfTracePoint {
                    event: "consume_skb",
                },
            }],
        }],
    ),
    (
        Stage::Handshake,
        &[Candidate {
            label: "tp_btf/inet_sock_set_state",
            programs: &[ProgramSpec {
                program: "handshake_set_state",
                attach: Attach::BtfTracePoint {
                    event: "inet_sock_set_state",
                },
            }],
        }],
    ),
    (
        Stage::Accept,
        &[Candidate {
            label: "tracepoint/syscalls:sys_exit_accept{,4}",
            programs: &[
                ProgramSpec {
                    program: "accept_exit_accept4",
                    attach: Attach::TracePoint {
                        category: "syscalls",
                        name: "sys_exit_accept4",
                    },
                },
                ProgramSpec {
                    program: "accept_exit_accept",
                    attach: Attach::TracePoint {
                        category: "syscalls",
                        name: "sys_exit_accept",
                    },
                },
            ],
        }],
    ),
    (
        Stage::ListenerDiscards,
        &[Candidate {
            label: "tp_btf/kfree_skb",
            programs: &[ProgramSpec {
                program: "discard_kfree_skb",
                attach: Attach::BtfTracePoint { event: "kfree_skb" },
            }],
        }],
    ),
    (
        Stage::SynackRetransmit,
        &[Candidate {
            label: "tp_btf/tcp_retransmit_synack",
            programs: &[ProgramSpec {
                program: "synack_retransmit",
                attach: Attach::BtfTracePoint {
                    event: "tcp_retransmit_synack",
                },
            }],
        }],
    ),
    (
        Stage::Queues,
        &[Candidate {
            label: "tp_btf/sk_data_ready",
            programs: &[ProgramSpec {
                program: "queues_data_ready",
                attach: Attach::BtfTracePoint {
                    event: "sk_data_ready",
                },
            }],
        }],
    ),
];

/// The outcome of the plan for one stage.
#[derive(Clone, Debug)]
pub struct StageHook {
    pub stage: Stage,
    /// `None`: an optional stage that nothing on this kernel can observe.
    pub active: Option<&'static str>,
    /// Better candidates that failed, with the kernel's reason.
    pub skipped: Vec<(&'static str, String)>,
}

impl fmt::Display for StageHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={}",
            self.stage.name(),
            self.active.unwrap_or("unavailable")
        )
    }
}

/// Loads and attaches the first working candidate of every stage.
pub fn attach_plan(ebpf: &mut Ebpf, btf: &Btf) -> anyhow::Result<Vec<StageHook>> {
    let mut hooks = Vec::new();
    for &(stage, candidates) in PLAN {
        let mut skipped = Vec::new();
        let mut active = None;
        for candidate in candidates {
            match attach_candidate(ebpf, btf, candidate) {
                Ok(()) => {
                    active = Some(candidate.label);
                    break;
                }
                Err(reason) => skipped.push((candidate.label, reason)),
            }
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
        });
    }
    Ok(hooks)
}

fn attach_candidate(ebpf: &mut Ebpf, btf: &Btf, candidate: &Candidate) -> Result<(), String> {
    for spec in candidate.programs {
        if let Err(e) = attach_program(ebpf, btf, spec) {
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
        Attach::BtfTracePoint { .. } => <&mut BtfTracePoint>::try_from(program).map(|p| p.unload()),
        Attach::TracePoint { .. } => <&mut TracePoint>::try_from(program).map(|p| p.unload()),
    };
}

fn attach_program(ebpf: &mut Ebpf, btf: &Btf, spec: &ProgramSpec) -> anyhow::Result<()> {
    let program = ebpf
        .program_mut(spec.program)
        .ok_or_else(|| anyhow!("program {} missing from the eBPF object", spec.program))?;
    match spec.attach {
        Attach::BtfTracePoint { event } => {
            let program: &mut BtfTracePoint = program.try_into()?;
            program.load(event, btf)?;
            program.attach()?;
        }
        Attach::TracePoint { category, name } => {
            let program: &mut TracePoint = program.try_into()?;
            program.load()?;
            program.attach(category, name)?;
        }
    }
    Ok(())
}

/// One line out of a load or attach error: the verifier log can be hundreds of lines, of which
/// the last says what went wrong.
fn short_reason(error: &anyhow::Error) -> String {
    if let Some(ProgramError::LoadError {
        io_error,
        verifier_log,
    }) = error.downcast_ref::<ProgramError>()
    {
        let last = verifier_log
            .to_string()
            .lines()
            .rev()
            .find(|line| !line.trim().is_empty())
            .unwrap_or_default()
            .to_owned();
        return format!("load failed: {io_error}; verifier: {last}");
    }
    format!("{error:#}")
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}
