//! The whole run and its current intervals, side by side: every observation goes to each, and
//! taking an interval starts the next one where it ended, so intervals add up to the run. Each
//! consumer of intervals (a view, the per-second timeline) has a clock of its own.

use super::{Observation, Observations, Visibility};
use crate::host::inventory::NetnsState;

/// One consumer's interval clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntervalClock(usize);

#[derive(Debug)]
pub struct Recorder {
    whole: Observations,
    /// False for a long-running view (`serve`) that only takes intervals: the whole run is
    /// not kept, so memory stays flat however long it runs and however many ports come and go.
    keep_whole: bool,
    intervals: Vec<Observations>,
    /// The latest pass over the namespaces: the baseline of the next interval.
    last_poll: Option<Vec<NetnsState>>,
}

impl Recorder {
    pub fn new(visibility: Visibility) -> Self {
        Self {
            whole: Observations::new(visibility),
            keep_whole: true,
            intervals: Vec::new(),
            last_poll: None,
        }
    }

    /// Stops keeping the whole run: from now on `whole()` holds only the visibility.
    pub fn forget_whole_run(&mut self) {
        self.keep_whole = false;
        self.whole = Observations::new(self.whole.visibility.clone());
    }

    /// A new interval clock, its first interval starting now.
    pub fn interval_clock(&mut self) -> IntervalClock {
        self.intervals
            .push(self.whole.next_interval(self.last_poll.clone()));
        IntervalClock(self.intervals.len() - 1)
    }

    pub fn observe(&mut self, observation: Observation<'_>) {
        if let Observation::KernelPoll(states) = &observation {
            self.last_poll = Some(states.clone());
        }
        for interval in &mut self.intervals {
            interval.observe(observation.clone());
        }
        if self.keep_whole {
            self.whole.observe(observation);
        }
    }

    /// Everything since the start.
    pub fn whole(&self) -> &Observations {
        &self.whole
    }

    /// Ends the current interval and returns it; the next one starts from the last kernel poll
    /// (poll just before this for a sharp boundary).
    pub fn take_interval(&mut self, clock: IntervalClock) -> Observations {
        let next = self.whole.next_interval(self.last_poll.clone());
        std::mem::replace(&mut self.intervals[clock.0], next)
    }
}

#[cfg(test)]
mod tests {
    use probe_common::{ConnEvent, EventKind, ListenerKey};

    use super::*;
    use crate::{
        host::sockdiag::DiagListener,
        model::latency::Latency,
        report::{
            RunInfo, analyze,
            schema::{Counters, Sysctls},
        },
    };

    const NETNS: u32 = 7;

    fn poll(overflows: u64, socket_drops: u32) -> Observation<'static> {
        Observation::KernelPoll(vec![NetnsState {
            inode: NETNS,
            listeners: vec![DiagListener {
                addr: "127.0.0.1".parse().unwrap(),
                port: 80,
                accept_queue: 0,
                backlog: 8,
                drops: socket_drops,
                inode: 99,
            }],
            counters: Counters::from([
                ("ListenOverflows".to_owned(), overflows),
                ("ListenDrops".to_owned(), overflows),
            ]),
            sysctls: Sysctls::default(),
        }])
    }

    fn accepted(i: u64) -> ConnEvent {
        let mut event = ConnEvent::zeroed();
        event.kind = EventKind::Accept as u32;
        event.netns = NETNS;
        event.local_port = 80;
        event.syn_ns = 1_000;
        event.established_ns = 2_000;
        // Waits from 1 µs to about 20 ms, unevenly spread.
        event.accepted_ns = 2_000 + (i * i * 7 % 20_000) * 1_000;
        event
    }

    #[test]
    fn intervals_add_up_to_the_whole_run() {
        let mut recorder = Recorder::new(Visibility::default());
        let clock = recorder.interval_clock();
        let other_clock = recorder.interval_clock();
        recorder.observe(poll(100, 50));
        let mut intervals = Vec::new();
        let mut overflows = 100;
        for round in 0..4u64 {
            for i in 0..(50 + round * 37) {
                recorder.observe(Observation::Event(&accepted(round * 1000 + i)));
            }
            overflows += round * 3;
            recorder.observe(poll(overflows, (overflows - 50) as u32));
            recorder.observe(Observation::LostEvents(round));
            intervals.push(recorder.take_interval(clock));
        }
        // Another consumer's clock is not disturbed: one interval holds the whole run.
        let other = recorder.take_interval(other_clock);
        assert_eq!(
            other.aggregator.listeners[&ListenerKey::new(NETNS, 80)].accepted,
            recorder.whole().aggregator.listeners[&ListenerKey::new(NETNS, 80)].accepted
        );
        let whole = recorder.whole();
        let key = ListenerKey::new(NETNS, 80);
        let stats = |o: &Observations| o.aggregator.listeners[&key].clone();

        let accepted: u64 = intervals.iter().map(|o| stats(o).accepted).sum();
        assert_eq!(accepted, stats(whole).accepted);
        let mut merged = Latency::default();
        for interval in &intervals {
            merged.merge(&stats(interval).accept_wait);
        }
        assert_eq!(merged.summary(), stats(whole).accept_wait.summary());

        let lost: u64 = intervals.iter().map(|o| o.lost_events).sum();
        assert_eq!(lost, whole.lost_events);
        // The namespace's counters and the socket's drops telescope over the intervals.
        let overflow_delta =
            |o: &Observations| o.kernel_view.counter_deltas(NETNS).unwrap()["ListenOverflows"];
        let summed: u64 = intervals.iter().map(overflow_delta).sum();
        assert_eq!(summed, overflow_delta(whole));
        assert_eq!(summed, 18);
        let drops: u64 = intervals
            .iter()
            .map(|o| o.kernel_view.listen_drops(key).unwrap())
            .sum();
        assert_eq!(Some(drops), whole.kernel_view.listen_drops(key));

        // And so do the reports built from them.
        let run = RunInfo::default();
        let reports: Vec<_> = intervals.iter().map(|o| analyze(o, &run)).collect();
        let whole_report = analyze(whole, &run);
        let summed_overflows: u64 = reports
            .iter()
            .map(|r| r.listeners[0].drops.listen_overflows.unwrap())
            .sum();
        assert_eq!(
            Some(summed_overflows),
            whole_report.listeners[0].drops.listen_overflows
        );
        let counts: u64 = reports
            .iter()
            .map(|r| r.listeners[0].accept_wait_us.count)
            .sum();
        assert_eq!(counts, whole_report.listeners[0].accept_wait_us.count);
    }

    #[test]
    fn an_interval_without_events_is_empty_but_keeps_the_baseline() {
        let mut recorder = Recorder::new(Visibility::default());
        let clock = recorder.interval_clock();
        recorder.observe(poll(10, 0));
        recorder.observe(Observation::Event(&accepted(1)));
        recorder.take_interval(clock);
        recorder.observe(poll(10, 0));
        let quiet = recorder.take_interval(clock);
        assert!(quiet.aggregator.listeners.is_empty());
        assert_eq!(
            quiet.kernel_view.counter_deltas(NETNS).unwrap()["ListenOverflows"],
            0
        );
    }
}
