//! Everything a tracing session collects, fed through [`Observations::observe`].

use std::collections::BTreeMap;

use probe_common::{ConnEvent, EventKind, ListenerKey, QueueDepths};

use super::{aggregate::Aggregator, kernel_view::KernelView};
use crate::host::{inventory::NetnsState, processes::ProcessInfo};

/// What the attached hooks can see. A figure whose stage is not observed is reported as null
/// (unknown), never as zero.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Visibility {
    /// Stage -> the hook that observes it (or "unavailable").
    pub hooks: BTreeMap<String, String>,
    /// Stage -> why no hook observes it on this kernel.
    pub unobserved: BTreeMap<String, String>,
    pub synack_retransmits: bool,
    /// Listener discards are hooked and the kernel names final-ACK overflows (6.15+).
    pub ack_overflows: bool,
    pub queues: bool,
    /// Every listen drop, SYN cookie and Fast Open child is an event (fentry, kprobes).
    pub listen_drops: bool,
    /// The kernel's drop reason for a final ACK that found the accept queue full.
    pub listen_overflow_reason: Option<u32>,
    /// Accepted connections are followed to their first response byte.
    pub phases: bool,
}

/// One thing a session learned.
#[derive(Clone, Debug)]
pub enum Observation<'a> {
    /// An event from the kernel programs.
    Event(&'a ConnEvent),
    /// One pass over every namespace's sockets, counters and sysctls.
    KernelPoll(Vec<NetnsState>),
    /// The deepest queues the kernel programs saw per listener, since the last reading.
    QueueDepths(Vec<(ListenerKey, QueueDepths)>),
    /// SYNs per listener the kernel programs counted (not sent as events) since the last
    /// reading.
    SynsCounted(BTreeMap<ListenerKey, u64>),
    /// Events lost since the last reading (ring buffer full).
    LostEvents(u64),
    /// Failed kernel reads per stage since the last reading.
    KernelFailures(BTreeMap<String, u64>),
    /// Runs of each stage's programs the kernel skipped since the last reading.
    SkippedRuns(BTreeMap<String, u64>),
    /// Where an accepting process lives (cgroup, pod, container), read when first seen.
    Process(u32, ProcessInfo),
}

/// What one session (or one interval of it) observed.
#[derive(Clone, Debug, Default)]
pub struct Observations {
    pub visibility: Visibility,
    pub aggregator: Aggregator,
    pub kernel_view: KernelView,
    /// Deepest accept and SYN queues per listener, from the kernel programs.
    pub queue_depths: BTreeMap<ListenerKey, QueueDepths>,
    pub lost_events: u64,
    pub kernel_failures: BTreeMap<String, u64>,
    pub skipped_runs: BTreeMap<String, u64>,
    /// Accepting processes' cgroups, by pid.
    pub processes: BTreeMap<u32, ProcessInfo>,
}

impl Observations {
    pub fn new(visibility: Visibility) -> Self {
        Self {
            aggregator: Aggregator {
                listen_overflow_reason: visibility.listen_overflow_reason,
                ..Default::default()
            },
            visibility,
            ..Default::default()
        }
    }

    /// The one entry point: every figure of a report comes through here.
    pub fn observe(&mut self, observation: Observation<'_>) {
        match observation {
            Observation::Event(event) => {
                if event.kind == EventKind::ListenerClosed as u32 {
                    let key = ListenerKey::new(event.netns, event.local_port);
                    self.kernel_view
                        .socket_closed(key, event.socket_inode, event.reason);
                }
                self.aggregator.record(event);
            }
            Observation::KernelPoll(states) => self.kernel_view.observe(states),
            Observation::QueueDepths(depths) => {
                for (key, depth) in depths {
                    let seen = self.queue_depths.entry(key).or_default();
                    seen.accept_queue_max = seen.accept_queue_max.max(depth.accept_queue_max);
                    seen.syn_queue_max = seen.syn_queue_max.max(depth.syn_queue_max);
                    seen.backlog = depth.backlog;
                }
            }
            Observation::SynsCounted(syns) => {
                // A listener without new SYNs is no news to an interval.
                for (key, count) in syns.into_iter().filter(|&(_, count)| count > 0) {
                    self.aggregator.syns_counted(key, count);
                }
            }
            Observation::LostEvents(lost) => self.lost_events += lost,
            Observation::Process(pid, info) => {
                self.processes.insert(pid, info);
            }
            Observation::KernelFailures(failures) => {
                for (stage, count) in failures {
                    *self.kernel_failures.entry(stage).or_default() += count;
                }
            }
            Observation::SkippedRuns(skipped) => {
                for (stage, count) in skipped {
                    *self.skipped_runs.entry(stage).or_default() += count;
                }
            }
        }
    }

    /// Some events never reached synscope: the ring buffer was full, or the kernel skipped a
    /// program. Counts made from events are then lower bounds.
    pub fn events_missing(&self) -> bool {
        self.lost_events > 0 || self.skipped_runs.values().any(|&n| n > 0)
    }

    /// A fresh interval that starts where this one ends: the same visibility, and the kernel's
    /// counters as last seen for a baseline, so intervals' counter deltas add up to the run's.
    pub fn next_interval(&self, last_poll: Option<Vec<NetnsState>>) -> Self {
        let mut next = Self::new(self.visibility.clone());
        next.processes = self.processes.clone();
        if let Some(states) = last_poll {
            next.kernel_view.observe(states);
        }
        next
    }
}
