//! The analysis: one pure function from what a session observed to the report.

use std::collections::{BTreeMap, BTreeSet};

use probe_common::ListenerKey;

use super::{
    AbandonedInQueue, AcceptLoopReport, Acceptor, Bottleneck, ListenerReport, ListenerSocket,
    NamespaceReport, NeverAccepted, Report, SCHEMA, verdict,
};
use crate::model::{
    Observations,
    aggregate::ListenerStats,
    drops::{self, CountedDrops, ListenerInput},
};

/// What the report says about the run itself, beside what was observed.
#[derive(Clone, Debug, Default)]
pub struct RunInfo {
    /// Ports the user asked for; empty for all.
    pub ports: Vec<u16>,
    pub kernel: String,
    pub duration_ms: u64,
    /// The traced command (`synscope run`), as a shell would show it.
    pub command: Option<String>,
    /// CLOCK_MONOTONIC when the report is made (the kernel programs' clock), for how long the
    /// never-accepted connections had waited; 0 when unknown.
    pub ended_ns: u64,
}

/// SO_REUSEPORT members share an address and port, each with its own queue: when the kernel's
/// hash sends one of them more than its acceptor takes, it drops while the others have room.
fn reuseport_imbalance(sockets: &[ListenerSocket]) -> Option<String> {
    let mut by_addr: BTreeMap<&Option<String>, Vec<&ListenerSocket>> = BTreeMap::new();
    for socket in sockets {
        by_addr.entry(&socket.addr).or_default().push(socket);
    }
    let group = by_addr.into_values().find(|members| members.len() > 1)?;
    let dropping = group.iter().find(|s| s.drops > 0)?;
    let roomy = group
        .iter()
        .find(|s| s.drops == 0 && s.backlog.is_some_and(|b| s.accept_queue_max < b / 2))?;
    let limit = |backlog: Option<u32>| backlog.map_or_else(|| "?".to_owned(), |b| b.to_string());
    Some(format!(
        "SO_REUSEPORT member {} dropped {} connections (queue up to {} of {}) while member {} \
         had room (queue up to {} of {}): the kernel spreads connections over the members by \
         hash, whatever each one's acceptor is doing, so one stuck or slow acceptor loses its \
         share",
        dropping.inode,
        dropping.drops,
        dropping.accept_queue_max,
        limit(dropping.backlog),
        roomy.inode,
        roomy.accept_queue_max,
        limit(roomy.backlog)
    ))
}

fn never_accepted(stats: &ListenerStats, ended_ns: u64) -> NeverAccepted {
    let (count, first_handshake) = stats.never_accepted();
    NeverAccepted {
        count,
        oldest_wait_us: first_handshake
            .filter(|_| ended_ns != 0)
            .map(|ns| (ended_ns.saturating_sub(ns) as f64 / 1000.0).round()),
        discarded_at_close: stats.discarded_at_close,
    }
}

/// Listeners that saw traffic (or drops), ordered by namespace and port.
pub fn analyze(observed: &Observations, run: &RunInfo) -> Report {
    let aggregator = &observed.aggregator;
    let view = &observed.kernel_view;
    let visibility = &observed.visibility;
    let traced = |port: u16| run.ports.is_empty() || run.ports.contains(&port);
    let reported: Vec<(ListenerKey, &ListenerStats)> = aggregator
        .listeners
        .iter()
        .filter(|(key, stats)| stats.has_traffic() || view.listen_drops(**key).unwrap_or(0) > 0)
        .filter(|(key, _)| traced(key.port))
        .map(|(key, stats)| (*key, stats))
        .collect();
    let mut namespaces: BTreeSet<u32> = reported.iter().map(|(key, _)| key.netns).collect();
    // A namespace's counters can move in a span that holds none of its listeners' events:
    // the kernel counts a handshake a moment before its event is read, so a span's boundary
    // can fall between the two. Its counters are reported all the same, so that spans add up.
    namespaces.extend(view.namespaces().filter(|&netns| {
        let counted = view
            .counter_deltas(netns)
            .is_some_and(|deltas| deltas.values().any(|&delta| delta > 0));
        counted && view.listeners_in(netns).iter().any(|key| traced(key.port))
    }));

    // Drops are attributed per namespace, over all its listeners, traced or not.
    let mut drops = BTreeMap::new();
    let mut cookies = BTreeMap::new();
    for &netns in &namespaces {
        let deltas = view.counter_deltas(netns).unwrap_or_default();
        let mut keys = view.listeners_in(netns);
        keys.extend(aggregator.listeners.keys().filter(|k| k.netns == netns));
        let inputs: BTreeMap<ListenerKey, ListenerInput> = keys
            .into_iter()
            .map(|key| {
                let stats = aggregator.listeners.get(&key);
                // A listener's drop counter also counts the packets it discarded, overflowing
                // final ACKs among them (which count once more as listen drops).
                let discards = stats.map_or(0, |s| s.listener_discards);
                let input = ListenerInput {
                    listen_drops: view.listen_drops(key).map(|d| d.saturating_sub(discards)),
                    ack_overflows: visibility
                        .ack_overflows
                        .then(|| stats.map_or(0, |s| s.ack_overflows)),
                    syn_received: stats.map_or(0, |s| s.syn_received),
                    counted_cookies: visibility.listen_drops.then(|| {
                        stats.map_or((0, 0), |s| {
                            (s.counted.syncookies_sent, s.counted.syncookies_failed)
                        })
                    }),
                };
                (key, input)
            })
            .collect();
        let mode = view.sysctls(netns).and_then(|s| s.tcp_syncookies);
        let namespace_drops = if visibility.listen_drops {
            let counted: BTreeMap<ListenerKey, CountedDrops> = inputs
                .keys()
                .map(|key| {
                    let stats = aggregator.listeners.get(key);
                    (*key, stats.map(|s| s.counted).unwrap_or_default())
                })
                .collect();
            drops::attribute_counted(&deltas, &counted, observed.events_missing())
        } else {
            drops::attribute(&deltas, &inputs)
        };
        cookies.extend(drops::attribute_cookies(
            &deltas,
            &inputs,
            &namespace_drops,
            mode,
        ));
        drops.extend(namespace_drops);
    }

    let listeners = reported
        .iter()
        .map(|&(key, stats)| {
            let depths = observed.queue_depths.get(&key);
            // sock_diag shows the sockets as they are; listen events fill in those that closed
            // before a poll saw them (and may include a listen() that then failed).
            let mut addrs = view.addrs(key);
            if addrs.is_empty() {
                addrs = stats.addrs.clone();
            }
            let addr = (!addrs.is_empty()).then(|| {
                addrs
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            });
            let accept_queue_max = [
                depths.map(|d| d.accept_queue_max),
                view.accept_queue_max(key),
            ]
            .into_iter()
            .flatten()
            .max();
            ListenerReport {
                netns: key.netns,
                port: key.port,
                addr,
                syn_received: stats.syn_received,
                handshakes: stats.handshakes,
                accepted: stats.accepted,
                acceptors: acceptors(stats, &observed.processes),
                handshake_us: stats.handshake.summary(),
                accept_wait_us: stats.accept_wait.summary(),
                syn_to_accept_us: stats.syn_to_accept.summary(),
                read_wait_us: visibility.phases.then(|| stats.read_wait.summary()),
                service_us: visibility.phases.then(|| stats.service.summary()),
                syn_to_first_byte_us: visibility.phases.then(|| stats.syn_to_response.summary()),
                first_responses: visibility.phases.then_some(stats.responses),
                responded_unasked: visibility.phases.then_some(stats.responded_unasked),
                drops: drops.get(&key).cloned().unwrap_or_default(),
                cookies: cookies.get(&key).cloned().unwrap_or_default(),
                fastopen: visibility.listen_drops.then_some(stats.counted.fastopen),
                synack_retransmits: visibility
                    .synack_retransmits
                    .then_some(stats.synack_retransmits),
                request_timeouts: None,
                backlog: view.backlog(key).or(depths.map(|d| d.backlog)),
                accept_queue_max,
                syn_queue_max: visibility
                    .queues
                    .then(|| depths.map_or(0, |d| d.syn_queue_max)),
                never_accepted: never_accepted(stats, run.ended_ns),
                abandoned_in_queue: visibility
                    .hooks
                    .get("handshake")
                    .is_some_and(|h| h != "unavailable")
                    .then_some(AbandonedInQueue {
                        by_fin: stats.left_by_fin,
                        by_rst: stats.left_by_rst,
                        accepted_later: stats.left_then_accepted,
                    }),
                bottleneck: Bottleneck::default(),
                accept_loop: AcceptLoopReport {
                    processes: stats.accept_loop.threads.len() as u64,
                    threads: stats.accept_loop.thread_count(),
                    mean_batch: stats
                        .accept_loop
                        .mean_batch()
                        .map(|m| (m * 100.0).round() / 100.0),
                    largest_batch: (stats.accepted > 0).then_some(stats.accept_loop.largest_batch),
                    longest_absence_us: (stats.handshakes > 0).then(|| {
                        (stats.accept_loop.longest_absence_ns(run.ended_ns) as f64 / 1000.0).round()
                    }),
                },
                sockets: view.sockets(key),
                reuseport_imbalance: reuseport_imbalance(&view.sockets(key)),
            }
        })
        .collect::<Vec<_>>();
    let listeners = listeners
        .into_iter()
        .map(|mut listener| {
            let sysctls = view.sysctls(listener.netns);
            listener.bottleneck = verdict::judge(&listener, sysctls, run.duration_ms);
            listener
        })
        .collect();

    Report {
        schema: SCHEMA,
        kernel: run.kernel.clone(),
        command: run.command.clone(),
        hooks: visibility.hooks.clone(),
        unobserved: visibility.unobserved.clone(),
        duration_ms: run.duration_ms,
        lost_events: observed.lost_events,
        kernel_failures: observed.kernel_failures.clone(),
        skipped_runs: observed.skipped_runs.clone(),
        pending_evicted: None,
        listeners,
        namespaces: namespaces
            .into_iter()
            .map(|netns| NamespaceReport {
                netns,
                sysctls: view.sysctls(netns).cloned().unwrap_or_default(),
                counters: view.counter_deltas(netns).unwrap_or_default(),
            })
            .collect(),
        thresholds: Vec::new(),
        timeline: Vec::new(),
    }
}

/// Busiest first.
fn acceptors(
    stats: &ListenerStats,
    processes: &BTreeMap<u32, crate::host::processes::ProcessInfo>,
) -> Vec<Acceptor> {
    let mut acceptors: Vec<Acceptor> = stats
        .acceptors
        .iter()
        .map(|((pid, comm), &accepted)| {
            let process = processes.get(pid);
            Acceptor {
                pid: *pid,
                comm: comm.clone(),
                accepted,
                threads: stats
                    .accept_loop
                    .threads
                    .get(pid)
                    .map_or(0, |t| t.len() as u64),
                cgroup: process.map(|p| p.cgroup.clone()),
                pod: process.and_then(|p| p.pod.clone()),
                container: process.and_then(|p| p.container.clone()),
            }
        })
        .collect();
    acceptors.sort_by(|a, b| b.accepted.cmp(&a.accepted).then(a.pid.cmp(&b.pid)));
    acceptors
}

#[cfg(test)]
mod tests {
    //! The analysis on synthetic observations: what a session would have seen, without root.

    use probe_common::{
        COUNTED_LISTEN_DROPS, COUNTED_LISTEN_OVERFLOWS, ConnEvent, EventKind, QueueDepths,
    };

    use super::*;
    use crate::{
        host::{inventory::NetnsState, sockdiag::DiagListener},
        model::{Observation, Visibility},
        report::schema::{Counters, Sysctls},
    };

    const NETNS: u32 = 4026532000;

    fn event(kind: EventKind, port: u16) -> ConnEvent {
        let mut event = ConnEvent::zeroed();
        event.kind = kind as u32;
        event.netns = NETNS;
        event.local_port = port;
        event
    }

    /// A connection through all three stages: handshake 50 µs, accept wait `wait_us`.
    fn connection(observed: &mut Observations, port: u16, wait_us: u64) {
        let mut syn = event(EventKind::Syn, port);
        syn.syn_ns = 1_000_000;
        let mut handshake = event(EventKind::Handshake, port);
        handshake.syn_ns = 1_000_000;
        handshake.established_ns = 1_050_000;
        let mut accept = handshake;
        accept.kind = EventKind::Accept as u32;
        accept.accepted_ns = 1_050_000 + wait_us * 1000;
        accept.pid = 42;
        accept.comm[..4].copy_from_slice(b"node");
        for event in [syn, handshake, accept] {
            observed.observe(Observation::Event(&event));
        }
    }

    /// One pass over the namespace: its counters and its listeners' (port, socket drops).
    fn poll(counters: &[(&str, u64)], sockets: &[(u16, u32)]) -> Observation<'static> {
        Observation::KernelPoll(vec![NetnsState {
            inode: NETNS,
            listeners: sockets
                .iter()
                .map(|&(port, drops)| DiagListener {
                    addr: "127.0.0.1".parse().unwrap(),
                    port,
                    accept_queue: 0,
                    backlog: 8,
                    drops,
                    inode: u32::from(port),
                })
                .collect(),
            counters: counters
                .iter()
                .map(|&(name, value)| (name.to_owned(), value))
                .collect::<Counters>(),
            sysctls: Sysctls::default(),
        }])
    }

    fn tracepoints() -> Visibility {
        Visibility {
            hooks: [("syn".to_owned(), "tp_btf/consume_skb".to_owned())].into(),
            synack_retransmits: true,
            queues: true,
            ..Default::default()
        }
    }

    fn run() -> RunInfo {
        RunInfo {
            ports: Vec::new(),
            kernel: "6.18.0".into(),
            duration_ms: 1_000,
            command: None,
            ended_ns: 0,
        }
    }

    fn listener(report: &Report, port: u16) -> &ListenerReport {
        report
            .listeners
            .iter()
            .find(|l| l.port == port)
            .unwrap_or_else(|| panic!("no listener {port} in {report:#?}"))
    }

    #[test]
    fn latencies_counts_and_acceptors_per_listener() {
        let mut observed = Observations::new(tracepoints());
        observed.observe(poll(&[], &[(80, 0), (81, 0)]));
        for wait_us in [100, 200, 300] {
            connection(&mut observed, 80, wait_us);
        }
        connection(&mut observed, 81, 5_000);
        observed.observe(Observation::QueueDepths(vec![(
            ListenerKey::new(NETNS, 80),
            QueueDepths {
                accept_queue_max: 3,
                syn_queue_max: 1,
                backlog: 8,
                _pad: 0,
            },
        )]));
        let report = analyze(&observed, &run());
        assert_eq!(report.listeners.len(), 2);
        let busy = listener(&report, 80);
        assert_eq!(
            (busy.syn_received, busy.handshakes, busy.accepted),
            (3, 3, 3)
        );
        // HdrHistogram keeps 3 significant digits: within 0.1 %.
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001;
        assert!(
            close(busy.handshake_us.p50, 50.0),
            "{:?}",
            busy.handshake_us
        );
        assert!(
            close(busy.accept_wait_us.max, 300.0),
            "{:?}",
            busy.accept_wait_us
        );
        assert!(
            close(busy.syn_to_accept_us.min, 150.0),
            "{:?}",
            busy.syn_to_accept_us
        );
        assert_eq!(busy.acceptors[0].comm, "node");
        assert_eq!(busy.accept_queue_max, Some(3));
        assert_eq!(busy.syn_queue_max, Some(1));
        assert_eq!(busy.addr.as_deref(), Some("127.0.0.1"));
        assert!(close(listener(&report, 81).accept_wait_us.p50, 5_000.0));
    }

    #[test]
    fn drops_are_exact_when_socket_and_namespace_counters_reconcile() {
        let mut observed = Observations::new(tracepoints());
        observed.observe(poll(
            &[("ListenOverflows", 10), ("ListenDrops", 10)],
            &[(80, 2)],
        ));
        connection(&mut observed, 80, 100);
        observed.observe(poll(
            &[("ListenOverflows", 15), ("ListenDrops", 15)],
            &[(80, 7)],
        ));
        let report = analyze(&observed, &run());
        let drops = &listener(&report, 80).drops;
        assert_eq!(drops.listen_overflows, Some(5));
        assert_eq!(drops.syn_queue_full, Some(0));
        assert_eq!(drops.listen_drops, Some(5));
        assert_eq!(drops.attribution, crate::model::drops::EXACT);
        assert_eq!(report.namespaces[0].counters["ListenOverflows"], 5);
    }

    #[test]
    fn counters_that_moved_without_events_still_report_their_namespace() {
        // The first handshake of a span counted by the kernel just before the boundary, its
        // event read just after: the span holds no event of the port, only the counter.
        let mut observed = Observations::new(tracepoints());
        observed.observe(poll(&[("PassiveOpens", 4)], &[(80, 0)]));
        observed.observe(poll(&[("PassiveOpens", 5)], &[(80, 0)]));
        let report = analyze(&observed, &run());
        assert!(report.listeners.is_empty());
        assert_eq!(report.namespaces[0].counters["PassiveOpens"], 1);
        // Not when the namespace's listeners are not traced, nor when nothing moved.
        let other_port = RunInfo {
            ports: vec![81],
            ..run()
        };
        assert!(analyze(&observed, &other_port).namespaces.is_empty());
        let mut quiet = Observations::new(tracepoints());
        quiet.observe(poll(&[("PassiveOpens", 5)], &[(80, 0)]));
        quiet.observe(poll(&[("PassiveOpens", 5)], &[(80, 0)]));
        assert!(analyze(&quiet, &run()).namespaces.is_empty());
    }

    #[test]
    fn drops_of_both_kinds_on_two_listeners_are_ambiguous_not_guessed() {
        let mut observed = Observations::new(tracepoints());
        observed.observe(poll(&[], &[(80, 0), (81, 0)]));
        connection(&mut observed, 80, 100);
        connection(&mut observed, 81, 100);
        observed.observe(poll(
            &[
                ("ListenOverflows", 3),
                ("TCPReqQFullDrop", 4),
                ("ListenDrops", 7),
            ],
            &[(80, 5), (81, 2)],
        ));
        let report = analyze(&observed, &run());
        for port in [80, 81] {
            let drops = &listener(&report, port).drops;
            assert_eq!(drops.listen_overflows, None, "port {port}");
            assert_eq!(drops.syn_queue_full, None, "port {port}");
            assert!(drops.attribution.starts_with("ambiguous"), "{drops:?}");
        }
        assert_eq!(listener(&report, 80).drops.listen_drops, Some(5));
    }

    #[test]
    fn counted_drops_with_events_missing_are_lower_bounds() {
        let skipped = [("listen_drops".to_owned(), 3)].into();
        for missing in [
            Observation::LostEvents(12),
            Observation::SkippedRuns(skipped),
        ] {
            let visibility = Visibility {
                listen_drops: true,
                ..tracepoints()
            };
            let mut observed = Observations::new(visibility);
            observed.observe(poll(&[], &[(80, 0)]));
            connection(&mut observed, 80, 100);
            let mut counted = event(EventKind::ListenCounted, 80);
            counted.reason = COUNTED_LISTEN_DROPS | COUNTED_LISTEN_OVERFLOWS;
            observed.observe(Observation::Event(&counted));
            observed.observe(missing.clone());
            observed.observe(poll(
                &[("ListenOverflows", 9), ("ListenDrops", 9)],
                &[(80, 9)],
            ));
            let report = analyze(&observed, &run());
            let drops = &listener(&report, 80).drops;
            assert_eq!(drops.listen_overflows, Some(1));
            assert!(drops.attribution.starts_with("lost"), "{drops:?}");
            match missing {
                Observation::LostEvents(_) => assert_eq!(report.lost_events, 12),
                _ => assert_eq!(report.skipped_runs["listen_drops"], 3),
            }
            assert_eq!(listener(&report, 80).fastopen, Some(0));
        }
    }

    #[test]
    fn what_no_hook_observes_is_null_not_zero() {
        let visibility = Visibility {
            synack_retransmits: false,
            queues: false,
            unobserved: [("queues".to_owned(), "no hook".to_owned())].into(),
            ..tracepoints()
        };
        let mut observed = Observations::new(visibility);
        connection(&mut observed, 80, 100);
        observed.observe(Observation::KernelFailures(
            [("accept".to_owned(), 2)].into(),
        ));
        let report = analyze(&observed, &run());
        let l = listener(&report, 80);
        assert_eq!(l.synack_retransmits, None);
        assert_eq!(l.syn_queue_max, None);
        assert_eq!(l.fastopen, None);
        // Never polled: the socket was not seen, so its drops are unknown.
        assert_eq!(l.drops.listen_drops, None);
        assert_eq!(report.unobserved["queues"], "no hook");
        assert_eq!(report.kernel_failures["accept"], 2);
    }

    #[test]
    fn port_filter_and_idle_listeners_are_left_out() {
        let mut observed = Observations::new(tracepoints());
        observed.observe(poll(&[], &[(80, 0), (81, 0), (82, 0)]));
        connection(&mut observed, 80, 100);
        connection(&mut observed, 81, 100);
        let report = analyze(
            &observed,
            &RunInfo {
                ports: vec![81, 82],
                ..run()
            },
        );
        let ports: Vec<u16> = report.listeners.iter().map(|l| l.port).collect();
        assert_eq!(ports, [81]);
    }
}
