//! What `serve` exposes: every listener's counters and histograms since synscope started,
//! fed one interval at a time, with its cardinality bounded and listeners that went away
//! forgotten.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use probe_common::ListenerKey;

use super::buckets::CumulativeHistogram;
use crate::{
    model::{Observations, kernel_view::QueueNow},
    report::{ListenerReport, Report},
};

/// The `port` label: a listener's own, or the fold of those beyond `--max-listeners`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortLabel {
    Port(u16),
    Other,
}

impl std::fmt::Display for PortLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Port(port) => write!(f, "{port}"),
            Self::Other => f.write_str("other"),
        }
    }
}

/// One exposed series set: a listener, or a namespace's folded listeners.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey {
    pub netns: u32,
    pub port: PortLabel,
}

/// Counters since the series appeared. A counter the kernel cannot attribute here stays None
/// (and is left out of the exposition) until an interval gives it a value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    pub syn_received: u64,
    pub handshakes: u64,
    pub accepted: u64,
    pub listen_drops: Option<u64>,
    pub listen_overflows: Option<u64>,
    pub syn_queue_full: Option<u64>,
    pub syncookies_sent: Option<u64>,
    pub syncookies_failed: Option<u64>,
    pub synack_retransmits: Option<u64>,
    pub handshake: CumulativeHistogram,
    pub accept_wait: CumulativeHistogram,
    pub syn_to_accept: CumulativeHistogram,
    /// The accept queue at the latest poll, and its limit; None once the listener closed.
    pub queue: Option<QueueNow>,
    pub addrs: BTreeSet<String>,
}

impl Series {
    fn add_report(&mut self, listener: &ListenerReport) {
        self.syn_received += listener.syn_received;
        self.handshakes += listener.handshakes;
        self.accepted += listener.accepted;
        let add = |total: &mut Option<u64>, delta: Option<u64>| {
            if let Some(delta) = delta {
                *total = Some(total.unwrap_or(0) + delta);
            }
        };
        add(&mut self.listen_drops, listener.drops.listen_drops);
        add(&mut self.listen_overflows, listener.drops.listen_overflows);
        add(&mut self.syn_queue_full, listener.drops.syn_queue_full);
        add(&mut self.syncookies_sent, listener.cookies.syncookies_sent);
        add(
            &mut self.syncookies_failed,
            listener.cookies.syncookies_failed,
        );
        add(&mut self.synack_retransmits, listener.synack_retransmits);
        if let Some(addr) = &listener.addr {
            self.addrs.extend(addr.split(',').map(str::to_owned));
        }
    }
}

#[derive(Clone, Debug)]
pub struct Limits {
    /// Only these ports (`--port`); empty for all.
    pub ports: Vec<u16>,
    /// Listeners with series of their own; the rest fold into `port="other"`.
    pub max_listeners: usize,
    /// A listener closed and quiet for this long leaves the exposition.
    pub forget_after: Duration,
}

#[derive(Debug)]
pub struct MetricsState {
    limits: Limits,
    pub series: BTreeMap<SeriesKey, Series>,
    /// Where each known listener's figures go, and when it was last open or busy.
    routes: BTreeMap<ListenerKey, (SeriesKey, Instant)>,
    /// Listeners folded into `port="other"` since the start.
    pub folded_total: u64,
    pub lost_events: u64,
    /// Runs of synscope's programs the kernel skipped, all stages.
    pub skipped_runs: u64,
    pub kernel: String,
}

impl MetricsState {
    pub fn new(limits: Limits, kernel: String) -> Self {
        Self {
            limits,
            series: BTreeMap::new(),
            routes: BTreeMap::new(),
            folded_total: 0,
            lost_events: 0,
            skipped_runs: 0,
            kernel,
        }
    }

    /// Adds one interval of the session, at `now`.
    pub fn absorb(&mut self, report: &Report, observations: &Observations, now: Instant) {
        self.lost_events += report.lost_events;
        self.skipped_runs += report.skipped_runs.values().sum::<u64>();
        let open = observations.kernel_view.open_listeners();
        // Queues are as of this poll: a listener not open now has none.
        for series in self.series.values_mut() {
            series.queue = None;
        }
        let wanted = |key: &ListenerKey| {
            self.limits.ports.is_empty() || self.limits.ports.contains(&key.port)
        };
        let open: Vec<_> = open.into_iter().filter(|(key, _)| wanted(key)).collect();
        for (key, queue) in &open {
            let series = self.route(*key, now);
            let queue_now = series.queue.get_or_insert_default();
            // Folded listeners show the longest queue among them.
            queue_now.length = queue_now.length.max(queue.length);
            queue_now.backlog = queue_now.backlog.max(queue.backlog);
        }
        for listener in &report.listeners {
            let key = ListenerKey::new(listener.netns, listener.port);
            self.route(key, now).add_report(listener);
        }
        for (key, stats) in &observations.aggregator.listeners {
            if !stats.has_traffic() {
                continue;
            }
            let series = self.route(*key, now);
            series.handshake.add(&stats.handshake);
            series.accept_wait.add(&stats.accept_wait);
            series.syn_to_accept.add(&stats.syn_to_accept);
        }
        self.forget_gone(now);
    }

    /// The series `key` feeds, made on first sight; marks the listener as alive at `now`.
    fn route(&mut self, key: ListenerKey, now: Instant) -> &mut Series {
        let series_key = match self.routes.get_mut(&key) {
            Some((series_key, seen)) => {
                *seen = now;
                *series_key
            }
            None => {
                let own = self
                    .routes
                    .values()
                    .filter(|(k, _)| k.port != PortLabel::Other)
                    .count();
                let port = if own < self.limits.max_listeners {
                    PortLabel::Port(key.port)
                } else {
                    self.folded_total += 1;
                    PortLabel::Other
                };
                let series_key = SeriesKey {
                    netns: key.netns,
                    port,
                };
                self.routes.insert(key, (series_key, now));
                series_key
            }
        };
        self.series.entry(series_key).or_default()
    }

    /// Drops listeners neither open nor busy for `forget_after`, and series nobody feeds.
    fn forget_gone(&mut self, now: Instant) {
        let forget_after = self.limits.forget_after;
        self.routes
            .retain(|_, (_, seen)| now.duration_since(*seen) < forget_after);
        let fed: BTreeSet<SeriesKey> = self.routes.values().map(|(k, _)| *k).collect();
        self.series.retain(|key, _| fed.contains(key));
    }
}

#[cfg(test)]
mod tests {
    use probe_common::{ConnEvent, EventKind};

    use super::*;
    use crate::{
        host::{inventory::NetnsState, sockdiag::DiagListener},
        model::{Observation, Visibility},
        report::{RunInfo, analyze},
    };

    const NETNS: u32 = 4026531840;

    fn listening(ports: &[u16], queue: u32) -> Observation<'static> {
        Observation::KernelPoll(vec![NetnsState {
            inode: NETNS,
            listeners: ports
                .iter()
                .map(|&port| DiagListener {
                    addr: "127.0.0.1".parse().unwrap(),
                    port,
                    accept_queue: queue,
                    backlog: 128,
                    drops: 0,
                    inode: u32::from(port),
                })
                .collect(),
            counters: Default::default(),
            sysctls: Default::default(),
        }])
    }

    fn accepted(port: u16, wait_ns: u64) -> ConnEvent {
        let mut event = ConnEvent::zeroed();
        event.kind = EventKind::Accept as u32;
        event.netns = NETNS;
        event.local_port = port;
        event.syn_ns = 1_000;
        event.established_ns = 2_000;
        event.accepted_ns = 2_000 + wait_ns;
        event
    }

    fn interval(observations: &[Observation<'_>]) -> (Report, Observations) {
        let mut observed = Observations::new(Visibility::default());
        for observation in observations {
            observed.observe(observation.clone());
        }
        (analyze(&observed, &RunInfo::default()), observed)
    }

    fn limits(max_listeners: usize) -> Limits {
        Limits {
            ports: Vec::new(),
            max_listeners,
            forget_after: Duration::from_secs(300),
        }
    }

    fn key(port: PortLabel) -> SeriesKey {
        SeriesKey { netns: NETNS, port }
    }

    #[test]
    fn intervals_accumulate_into_counters_and_histograms() {
        let mut state = MetricsState::new(limits(10), String::new());
        let now = Instant::now();
        for round in 1..=3u64 {
            let events: Vec<ConnEvent> = (0..round * 10).map(|_| accepted(80, 2_000_000)).collect();
            let mut observations = vec![listening(&[80, 443], 3)];
            observations.extend(events.iter().map(Observation::Event));
            let (report, observed) = interval(&observations);
            state.absorb(&report, &observed, now);
        }
        let busy = &state.series[&key(PortLabel::Port(80))];
        assert_eq!(busy.accepted, 60);
        assert_eq!(busy.accept_wait.count, 60);
        // 2 ms: above 1 ms, at or below 2.5 ms.
        assert_eq!(busy.accept_wait.at_or_below[6], 0);
        assert_eq!(busy.accept_wait.at_or_below[7], 60);
        assert_eq!(
            busy.queue,
            Some(QueueNow {
                length: 3,
                backlog: 128
            })
        );
        // An idle listener is exposed with its queue and zero counts.
        let idle = &state.series[&key(PortLabel::Port(443))];
        assert_eq!((idle.accepted, idle.accept_wait.count), (0, 0));
        assert!(idle.queue.is_some());
    }

    /// The page of a fixed state, byte for byte: `src/report/golden/serve.prom` documents the
    /// metrics (the Grafana dashboard's test checks its queries against it).
    #[test]
    fn golden_metrics_page() {
        let mut state = MetricsState::new(limits(2), "6.18.0".to_owned());
        let now = Instant::now();
        let waits = [40_000, 900_000, 3_000_000, 30_000_000, 700_000_000];
        let events: Vec<ConnEvent> = waits
            .iter()
            .map(|&wait| accepted(8080, wait))
            .chain([accepted(9090, 1_000), accepted(9191, 1_000)])
            .collect();
        let mut observations = vec![listening(&[8080, 9090, 9191], 2)];
        observations.extend(events.iter().map(Observation::Event));
        let (report, observed) = interval(&observations);
        state.absorb(&report, &observed, now);
        let registry =
            super::super::exposition::registry(std::sync::Arc::new(std::sync::Mutex::new(state)));
        let page = super::super::exposition::render(&registry).unwrap();
        crate::report::golden::compare(
            "serve.prom",
            page.as_bytes(),
            "serve's metrics page of the fixed state",
        );
    }

    #[test]
    fn listeners_beyond_the_limit_fold_into_other() {
        let mut state = MetricsState::new(limits(2), String::new());
        let events: Vec<ConnEvent> = [80, 81, 82, 83].map(|port| accepted(port, 1_000)).to_vec();
        let mut observations = vec![listening(&[80, 81, 82, 83], 1)];
        observations.extend(events.iter().map(Observation::Event));
        let (report, observed) = interval(&observations);
        state.absorb(&report, &observed, Instant::now());
        assert_eq!(state.series.len(), 3);
        assert_eq!(state.folded_total, 2);
        let other = &state.series[&key(PortLabel::Other)];
        assert_eq!(other.accepted, 2);
        assert_eq!(other.accept_wait.count, 2);
    }

    #[test]
    fn listeners_gone_for_long_are_forgotten() {
        let mut state = MetricsState::new(limits(2), String::new());
        let start = Instant::now();
        let (report, observed) = interval(&[listening(&[80, 81], 0)]);
        state.absorb(&report, &observed, start);
        assert_eq!(state.series.len(), 2);
        // 81 closes; 80 stays open.
        let (report, observed) = interval(&[listening(&[80], 0)]);
        state.absorb(&report, &observed, start + Duration::from_secs(200));
        assert_eq!(state.series.len(), 2);
        assert_eq!(state.series[&key(PortLabel::Port(81))].queue, None);
        state.absorb(&report, &observed, start + Duration::from_secs(400));
        assert_eq!(
            state.series.keys().collect::<Vec<_>>(),
            [&key(PortLabel::Port(80))]
        );
        // Its own series freed, a new listener gets one instead of folding.
        let (report, observed) = interval(&[listening(&[80, 90], 0)]);
        state.absorb(&report, &observed, start + Duration::from_secs(401));
        assert!(state.series.contains_key(&key(PortLabel::Port(90))));
        assert_eq!(state.folded_total, 0);
    }
}
