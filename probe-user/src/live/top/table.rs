//! The rows of `synscope top`: one per listener, from the interval's report (or the whole
//! run's), sorted by what hurts most.

use std::collections::BTreeMap;

use probe_common::ListenerKey;

use crate::{
    model::kernel_view::QueueNow,
    report::{ListenerReport, Report},
};

/// Which figures the rows show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    /// The last interval.
    Interval,
    /// Everything since synscope started.
    SinceStart,
}

impl Span {
    pub fn toggled(self) -> Self {
        match self {
            Self::Interval => Self::SinceStart,
            Self::SinceStart => Self::Interval,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Interval => "last interval",
            Self::SinceStart => "since start",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortBy {
    /// Drops per second, then accept wait p99: what hurts most.
    Hurt,
    ConnectionRate,
    AcceptWait,
    Handshake,
    AcceptQueue,
    Port,
}

impl SortBy {
    pub const ALL: [SortBy; 6] = [
        Self::Hurt,
        Self::ConnectionRate,
        Self::AcceptWait,
        Self::Handshake,
        Self::AcceptQueue,
        Self::Port,
    ];

    pub fn next(self) -> Self {
        let at = Self::ALL.iter().position(|s| *s == self).unwrap_or(0);
        Self::ALL[(at + 1) % Self::ALL.len()]
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Hurt => "drops/s, then accept wait p99",
            Self::ConnectionRate => "connections/s",
            Self::AcceptWait => "accept wait p99",
            Self::Handshake => "handshake p99",
            Self::AcceptQueue => "accept queue max",
            Self::Port => "port",
        }
    }
}

/// One listener's figures over the span shown.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub key: ListenerKey,
    /// The busiest accepting process, `comm[pid]`.
    pub acceptor: String,
    pub connections_per_s: f64,
    /// Microseconds; None without samples.
    pub handshake_p50: Option<f64>,
    pub handshake_p99: Option<f64>,
    pub accept_wait_p50: Option<f64>,
    pub accept_wait_p99: Option<f64>,
    pub syn_to_accept_p99: Option<f64>,
    pub queue_now: Option<u32>,
    pub queue_max: Option<u32>,
    pub backlog: Option<u32>,
    /// Per second; None where the kernel does not let synscope attribute them.
    pub overflows_per_s: Option<f64>,
    pub syn_queue_full_per_s: Option<f64>,
    pub drops_per_s: Option<f64>,
    pub synack_retransmits: Option<u64>,
    /// The listener's part of the report, for the detail pane.
    pub listener: ListenerReport,
}

/// Rows for every listener of `listeners` (all seen since the start, so a quiet interval keeps
/// its row), with the figures of `shown` (the interval's or the whole run's report).
pub fn rows(
    listeners: &[ListenerKey],
    shown: &Report,
    queues: &BTreeMap<ListenerKey, QueueNow>,
) -> Vec<Row> {
    let seconds = (shown.duration_ms as f64 / 1000.0).max(0.001);
    listeners
        .iter()
        .map(|&key| {
            let found = shown
                .listeners
                .iter()
                .find(|l| l.netns == key.netns && l.port == key.port);
            let listener = found.cloned().unwrap_or_else(|| quiet(key));
            let p = |count: u64, value: f64| (count > 0).then_some(value);
            let rate = |count: Option<u64>| count.map(|c| c as f64 / seconds);
            let queue = queues.get(&key);
            Row {
                key,
                acceptor: listener
                    .acceptors
                    .first()
                    .map(|a| format!("{}[{}]", a.comm, a.pid))
                    .unwrap_or_default(),
                connections_per_s: listener.accepted as f64 / seconds,
                handshake_p50: p(listener.handshake_us.count, listener.handshake_us.p50),
                handshake_p99: p(listener.handshake_us.count, listener.handshake_us.p99),
                accept_wait_p50: p(listener.accept_wait_us.count, listener.accept_wait_us.p50),
                accept_wait_p99: p(listener.accept_wait_us.count, listener.accept_wait_us.p99),
                syn_to_accept_p99: p(
                    listener.syn_to_accept_us.count,
                    listener.syn_to_accept_us.p99,
                ),
                queue_now: queue.map(|q| q.length),
                queue_max: listener.accept_queue_max,
                backlog: listener.backlog.or(queue.map(|q| q.backlog)),
                overflows_per_s: rate(listener.drops.listen_overflows),
                syn_queue_full_per_s: rate(listener.drops.syn_queue_full),
                drops_per_s: rate(listener.drops.listen_drops),
                synack_retransmits: listener.synack_retransmits,
                listener,
            }
        })
        .collect()
}

/// A listener without traffic in the span: zeros where counting, unknown where measuring.
fn quiet(key: ListenerKey) -> ListenerReport {
    ListenerReport {
        netns: key.netns,
        port: key.port,
        addr: None,
        syn_received: 0,
        handshakes: 0,
        accepted: 0,
        acceptors: Vec::new(),
        handshake_us: Default::default(),
        accept_wait_us: Default::default(),
        syn_to_accept_us: Default::default(),
        read_wait_us: None,
        service_us: None,
        syn_to_first_byte_us: None,
        first_responses: None,
        responded_unasked: None,
        drops: Default::default(),
        cookies: Default::default(),
        fastopen: None,
        synack_retransmits: None,
        request_timeouts: None,
        backlog: None,
        accept_queue_max: None,
        syn_queue_max: None,
        never_accepted: Default::default(),
        abandoned_in_queue: None,
        bottleneck: Default::default(),
        accept_loop: Default::default(),
        sockets: Vec::new(),
        reuseport_imbalance: None,
    }
}

/// Sorts the worst first (port: ascending).
pub fn sort(rows: &mut [Row], by: SortBy) {
    let number = |v: Option<f64>| v.unwrap_or(-1.0);
    let key = |row: &Row| -> (f64, f64) {
        match by {
            SortBy::Hurt => (number(row.drops_per_s), number(row.accept_wait_p99)),
            SortBy::ConnectionRate => (row.connections_per_s, 0.0),
            SortBy::AcceptWait => (number(row.accept_wait_p99), 0.0),
            SortBy::Handshake => (number(row.handshake_p99), 0.0),
            SortBy::AcceptQueue => (row.queue_max.map_or(-1.0, f64::from), 0.0),
            SortBy::Port => (-f64::from(row.key.port), -f64::from(row.key.netns)),
        }
    };
    rows.sort_by(|a, b| {
        key(b)
            .partial_cmp(&key(a))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.key.cmp(&b.key))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Drops, LatencySummary};

    fn listener(port: u16, accepted: u64, wait_p99: f64, drops: Option<u64>) -> ListenerReport {
        let mut l = quiet(ListenerKey::new(7, port));
        l.accepted = accepted;
        l.accept_wait_us = LatencySummary {
            count: accepted,
            p99: wait_p99,
            ..Default::default()
        };
        l.drops = Drops {
            listen_drops: drops,
            ..Default::default()
        };
        l
    }

    fn report(listeners: Vec<ListenerReport>) -> Report {
        let mut report = crate::report::analyze(
            &crate::model::Observations::default(),
            &crate::report::RunInfo::default(),
        );
        report.duration_ms = 2_000;
        report.listeners = listeners;
        report
    }

    #[test]
    fn rows_rate_per_second_and_keep_quiet_listeners() {
        let keys = [ListenerKey::new(7, 80), ListenerKey::new(7, 81)];
        let shown = report(vec![listener(80, 100, 5_000.0, Some(10))]);
        let queues = BTreeMap::from([(
            keys[0],
            QueueNow {
                length: 4,
                backlog: 128,
            },
        )]);
        let rows = rows(&keys, &shown, &queues);
        assert_eq!(rows[0].connections_per_s, 50.0);
        assert_eq!(rows[0].drops_per_s, Some(5.0));
        assert_eq!(rows[0].accept_wait_p99, Some(5_000.0));
        assert_eq!((rows[0].queue_now, rows[0].backlog), (Some(4), Some(128)));
        assert_eq!(rows[1].connections_per_s, 0.0);
        assert_eq!(rows[1].accept_wait_p99, None);
    }

    #[test]
    fn what_hurts_most_comes_first() {
        let keys: Vec<_> = [80, 81, 82, 83].map(|p| ListenerKey::new(7, p)).to_vec();
        let shown = report(vec![
            listener(80, 100, 1_000.0, Some(0)),
            listener(81, 10, 90_000.0, Some(0)),
            listener(82, 10, 500.0, Some(4)),
        ]);
        let mut rows = rows(&keys, &shown, &BTreeMap::new());
        sort(&mut rows, SortBy::Hurt);
        let order: Vec<u16> = rows.iter().map(|r| r.key.port).collect();
        assert_eq!(order, [82, 81, 80, 83]);
        sort(&mut rows, SortBy::ConnectionRate);
        assert_eq!(rows[0].key.port, 80);
        sort(&mut rows, SortBy::Port);
        let order: Vec<u16> = rows.iter().map(|r| r.key.port).collect();
        assert_eq!(order, [80, 81, 82, 83]);
        assert_eq!(SortBy::Port.next(), SortBy::Hurt);
    }
}
