//! The analysis: one pure function from what a session observed to the report.

use std::collections::{BTreeMap, BTreeSet};

use probe_common::ListenerKey;

use super::{Acceptor, ListenerReport, NamespaceReport, Report, SCHEMA};
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
}

/// Listeners that saw traffic (or drops), ordered by namespace and port.
pub fn analyze(observed: &Observations, run: &RunInfo) -> Report {
    let aggregator = &observed.aggregator;
    let view = &observed.kernel_view;
    let visibility = &observed.visibility;
    let reported: Vec<(ListenerKey, &ListenerStats)> = aggregator
        .listeners
        .iter()
        .filter(|(key, stats)| stats.has_traffic() || view.listen_drops(**key).unwrap_or(0) > 0)
        .filter(|(key, _)| run.ports.is_empty() || run.ports.contains(&key.port))
        .map(|(key, stats)| (*key, stats))
        .collect();
    let namespaces: BTreeSet<u32> = reported.iter().map(|(key, _)| key.netns).collect();

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
            drops::attribute_counted(&deltas, &counted, observed.lost_events > 0)
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
                acceptors: acceptors(stats),
                handshake_us: stats.handshake.summary(),
                accept_wait_us: stats.accept_wait.summary(),
                syn_to_accept_us: stats.syn_to_accept.summary(),
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
            }
        })
        .collect();

    Report {
        schema: SCHEMA,
        kernel: run.kernel.clone(),
        hooks: visibility.hooks.clone(),
        unobserved: visibility.unobserved.clone(),
        duration_ms: run.duration_ms,
        lost_events: observed.lost_events,
        kernel_failures: observed.kernel_failures.clone(),
        listeners,
        namespaces: namespaces
            .into_iter()
            .map(|netns| NamespaceReport {
                netns,
                sysctls: view.sysctls(netns).cloned().unwrap_or_default(),
                counters: view.counter_deltas(netns).unwrap_or_default(),
            })
            .collect(),
    }
}

/// Busiest first.
fn acceptors(stats: &ListenerStats) -> Vec<Acceptor> {
    let mut acceptors: Vec<Acceptor> = stats
        .acceptors
        .iter()
        .map(|((pid, comm), &accepted)| Acceptor {
            pid: *pid,
            comm: comm.clone(),
            accepted,
        })
        .collect();
    acceptors.sort_by(|a, b| b.accepted.cmp(&a.accepted).then(a.pid.cmp(&b.pid)));
    acceptors
}
