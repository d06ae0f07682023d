//! One tracing session: attach, feed everything observed into the model until a stop
//! condition, and answer views that ask for the report so far or the last interval.

use std::{
    collections::BTreeMap,
    future::Future,
    time::{Duration, Instant},
};

use probe_common::{ConnEvent, ListenerKey};
use tokio::sync::{mpsc, oneshot};

use super::{
    hooks::Stage,
    loader::{TraceOptions, Tracer},
    pending::PendingFlow,
};
use crate::{
    host::{inventory, preflight},
    model::{IntervalClock, Observation, Observations, Recorder, Visibility},
    report::{self, Report, RunInfo, Timeline},
};

/// How often every namespace's listening sockets and counters are read. Drop figures are
/// deltas between the first and last reading; polling in between catches sockets that close
/// before the end and queue lengths between the kernel programs' samples.
const KERNEL_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How often events are collected from the kernel programs' ring buffer.
const COLLECT_INTERVAL: Duration = Duration::from_millis(20);

/// The timeline's resolution.
const TIMELINE_INTERVAL: Duration = Duration::from_secs(1);

/// Events handled before the loop looks at its other duties again.
const DRAIN_BATCH: usize = 4096;
/// More than the ring buffer holds (see `EVENTS_BYTES` in probe-ebpf's maps.rs).
const FINAL_DRAIN: usize = 65_536;

pub struct Session {
    tracer: Tracer,
    /// The whole run and the current intervals.
    recorder: Recorder,
    /// The intervals views ask for.
    view_clock: IntervalClock,
    interval_started: Instant,
    /// The per-second timeline, when kept: its clock, and when its interval began.
    timeline: Option<(IntervalClock, Instant, Timeline)>,
    /// Cumulative kernel-side counters already handed to the model.
    lost_seen: u64,
    failures_seen: BTreeMap<String, u64>,
    /// SYNs per listener the kernel programs counted, as last handed to the model, and how
    /// many of all of them put an entry in the SYN-time map.
    syns_seen: BTreeMap<ListenerKey, u64>,
    syns_stamped: u64,
    skipped_seen: BTreeMap<String, u64>,
    run: RunInfo,
    started: Instant,
    requests: mpsc::UnboundedReceiver<Request>,
    requests_sender: mpsc::UnboundedSender<Request>,
    /// A view that wants every event as it arrives (`synscope trace`).
    tap: Option<Box<dyn EventTap>>,
    /// Accepting processes whose cgroup was already read.
    processes_seen: std::collections::HashSet<u32>,
    /// What the events said of the kernel's maps of connections in progress.
    pending_flow: PendingFlow,
}

/// Sees every event the session takes from the kernel, in order, before the model does.
pub trait EventTap {
    fn event(&mut self, event: &ConnEvent);
    /// After each batch of events: the time to flush what was written.
    fn batch_done(&mut self) {}
}

/// What a view may ask of a running session.
enum Request {
    SoFar(oneshot::Sender<Report>),
    Interval(oneshot::Sender<Report>),
    IntervalDetail(oneshot::Sender<IntervalDetail>),
    Ping(oneshot::Sender<()>),
}

/// One interval as its report and the observations it was made from (the histograms' values,
/// the kernel's latest view of every socket), for views that need more than the report.
pub struct IntervalDetail {
    pub report: Report,
    pub observations: Observations,
}

/// A view's way to ask the running session for figures, without stopping it. Answers come
/// while the session is inside `trace_until`.
#[derive(Clone)]
pub struct SessionHandle {
    requests: mpsc::UnboundedSender<Request>,
}

impl SessionHandle {
    /// The report of everything since the start; None once the session has ended.
    pub async fn report_so_far(&self) -> Option<Report> {
        self.ask(Request::SoFar).await
    }

    /// The report of the last interval: histograms and counters since the previous call (or
    /// the start), `duration_ms` long. Intervals add up to the whole run; one view should take
    /// them, as each call starts the next interval.
    pub async fn interval(&self) -> Option<Report> {
        self.ask(Request::Interval).await
    }

    /// The last interval with its observations; like `interval`, one view should take them.
    pub async fn interval_detail(&self) -> Option<IntervalDetail> {
        self.ask(Request::IntervalDetail).await
    }

    /// Whether the session is still collecting (it answers between batches of events).
    pub async fn alive(&self) -> bool {
        self.ask(Request::Ping).await.is_some()
    }

    async fn ask<T>(&self, request: fn(oneshot::Sender<T>) -> Request) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(request(reply)).ok()?;
        answer.await.ok()
    }
}

impl Session {
    /// Attaches the kernel programs; tracing is live when this returns.
    pub fn start(options: &TraceOptions) -> anyhow::Result<Self> {
        let tracer = Tracer::start(options)?;
        let visibility = visibility(&tracer);
        let (requests_sender, requests) = mpsc::unbounded_channel();
        let mut recorder = Recorder::new(visibility);
        let view_clock = recorder.interval_clock();
        let mut session = Self {
            tracer,
            recorder,
            view_clock,
            interval_started: Instant::now(),
            timeline: None,
            lost_seen: 0,
            failures_seen: BTreeMap::new(),
            syns_seen: BTreeMap::new(),
            syns_stamped: 0,
            skipped_seen: BTreeMap::new(),
            run: RunInfo {
                ports: options.ports.clone(),
                kernel: preflight::kernel_release(),
                duration_ms: 0,
                command: None,
                ended_ns: 0,
            },
            started: Instant::now(),
            requests,
            requests_sender,
            tap: None,
            processes_seen: Default::default(),
            pending_flow: PendingFlow::default(),
        };
        session.poll_kernel();
        Ok(session)
    }

    pub fn handle(&self) -> SessionHandle {
        SessionHandle {
            requests: self.requests_sender.clone(),
        }
    }

    /// Hands every event to `tap` as well as to the model.
    pub fn set_tap(&mut self, tap: Box<dyn EventTap>) {
        self.tap = Some(tap);
    }

    /// Names the traced command in the reports.
    pub fn set_command(&mut self, command: String) {
        self.run.command = Some(command);
    }

    /// Keeps a per-second timeline of every port (the report's `timeline`, and the histograms
    /// of `write_hdr_log`).
    pub fn keep_timeline(&mut self) {
        let clock = self.recorder.interval_clock();
        self.timeline = Some((clock, Instant::now(), Timeline::default()));
    }

    /// What the attached hooks can see.
    pub fn visibility(&self) -> &Visibility {
        &self.recorder.whole().visibility
    }

    /// Collects events until `stop` completes, and returns its output.
    pub async fn trace_until<T>(&mut self, stop: impl Future<Output = T>) -> anyhow::Result<T> {
        tokio::pin!(stop);
        let mut poll = tokio::time::interval(KERNEL_POLL_INTERVAL);
        poll.tick().await; // the first tick is immediate; start already polled
        // The kernel programs wake this loop only when their buffer fills up; otherwise it
        // collects on this timer.
        let mut collect = tokio::time::interval(COLLECT_INTERVAL);
        let mut second = tokio::time::interval(TIMELINE_INTERVAL);
        second.tick().await; // immediate
        // Under a flood the ring buffer may never empty: events are taken in batches, and the
        // stop condition, polls and views get their turn between batches.
        let mut backlogged = false;
        let result = loop {
            tokio::select! {
                result = &mut stop => break result,
                readable = self.tracer.readable(), if !backlogged => {
                    readable?;
                    backlogged = self.drain(DRAIN_BATCH);
                }
                _ = tokio::task::yield_now(), if backlogged => {
                    backlogged = self.drain(DRAIN_BATCH);
                }
                _ = collect.tick(), if !backlogged => {
                    backlogged = self.drain(DRAIN_BATCH);
                }
                // With a timeline, each second's boundary polls the kernel instead.
                _ = poll.tick(), if self.timeline.is_none() => self.poll_kernel(),
                _ = second.tick(), if self.timeline.is_some() => self.next_second(),
                Some(request) = self.requests.recv() => self.answer(request),
            }
        };
        // Everything the traced work caused is already in the ring buffer (a full one holds
        // about 37,000 events; a flood that goes on is not waited for).
        self.catch_up();
        self.poll_kernel();
        Ok(result)
    }

    fn answer(&mut self, request: Request) {
        // Everything that happened before the question is part of the answer.
        self.catch_up();
        match request {
            Request::SoFar(reply) => {
                let _ = reply.send(self.report_so_far());
            }
            Request::Interval(reply) => {
                let _ = reply.send(self.take_interval());
            }
            Request::IntervalDetail(reply) => {
                let (report, observations) = self.take_interval_detail();
                let _ = reply.send(IntervalDetail {
                    report,
                    observations,
                });
            }
            Request::Ping(reply) => {
                let _ = reply.send(());
            }
        }
    }

    /// Takes up to `limit` events; true if more are waiting.
    fn drain(&mut self, limit: usize) -> bool {
        let recorder = &mut self.recorder;
        let seen = &self.processes_seen;
        let pending_flow = &mut self.pending_flow;
        let mut new_acceptors = Vec::new();
        let mut take = |event: &ConnEvent| {
            pending_flow.count(event.pending);
            if event.kind == probe_common::EventKind::Accept as u32 && !seen.contains(&event.pid) {
                new_acceptors.push(event.pid);
            }
            recorder.observe(Observation::Event(event));
        };
        let more = match &mut self.tap {
            Some(tap) => {
                let more = self.tracer.drain(limit, |event| {
                    tap.event(event);
                    take(event);
                });
                tap.batch_done();
                more
            }
            None => self.tracer.drain(limit, take),
        };
        // Read at first sight, while the process is most likely still there.
        for pid in new_acceptors {
            if self.processes_seen.insert(pid)
                && let Some(info) = crate::host::processes::read(pid)
            {
                self.recorder.observe(Observation::Process(pid, info));
            }
        }
        more
    }

    /// Everything up to now: the SYNs the kernel programs counted, then every event. The
    /// counts first: a SYN counted after the events were drained, whose handshake came in
    /// between, would be an entry added and neither removed nor present, an eviction that
    /// did not happen; this order errs the other way, as the events did.
    fn catch_up(&mut self) {
        let counts = self.tracer.syn_counts();
        self.syns_stamped = counts.values().map(|count| count.stamped).sum();
        let syns = counts.into_iter().map(|(key, count)| (key, count.syns));
        let new_syns = since(&mut self.syns_seen, syns.collect());
        self.recorder.observe(Observation::SynsCounted(new_syns));
        self.drain(FINAL_DRAIN);
    }

    fn poll_kernel(&mut self) {
        self.recorder
            .observe(Observation::KernelPoll(inventory::read_all()));
    }

    /// Reads the kernel programs' cumulative counters and queue maxima into both models.
    fn read_kernel_counters(&mut self) {
        let depths = self.tracer.take_queue_depths();
        self.recorder.observe(Observation::QueueDepths(depths));

        let lost = self.tracer.lost_events();
        let new_lost = lost.saturating_sub(self.lost_seen);
        self.lost_seen = lost;
        self.recorder.observe(Observation::LostEvents(new_lost));

        let failures = since(&mut self.failures_seen, self.tracer.kernel_failures());
        self.recorder.observe(Observation::KernelFailures(failures));
        let skipped = since(&mut self.skipped_seen, self.tracer.skipped_runs());
        self.recorder.observe(Observation::SkippedRuns(skipped));
    }

    /// Ends the timeline's current interval (a fresh look at the kernel first, for a sharp
    /// boundary) and starts the next.
    fn next_second(&mut self) {
        self.catch_up();
        self.poll_kernel();
        self.read_kernel_counters();
        let run = self.run.clone();
        if let Some((clock, begun, timeline)) = &mut self.timeline {
            let interval = self.recorder.take_interval(*clock);
            let start = begun.duration_since(self.started);
            timeline.add(start, begun.elapsed(), &interval, &run);
            *begun = Instant::now();
        }
    }

    /// The final report of everything since the start; with a timeline, its last (partial)
    /// second is closed first. Call it once tracing has ended.
    pub fn report(&mut self) -> Report {
        if self.timeline.is_some() {
            self.next_second();
        }
        let mut report = self.report_so_far();
        // Counted from the events: unknown when some were lost or left unsent by a failed
        // read; and not worth failing a report for when the maps cannot be read. Runs the
        // kernel skipped change nothing here: a program that did not run changed no map, and
        // each change a program makes is in its event or its tally.
        let failures: u64 = report.kernel_failures.values().sum();
        if report.lost_events == 0 && failures == 0 {
            let evicted = self
                .tracer
                .pending_evicted(&self.pending_flow, self.syns_stamped);
            report.pending_evicted = match evicted {
                Ok(evicted) => Some(evicted),
                Err(e) => {
                    eprintln!("synscope: the maps' evictions are not counted: {e:#}");
                    None
                }
            };
        }
        report
    }

    /// The report of everything since the start, the timeline's seconds so far included; the
    /// current second goes on.
    fn report_so_far(&mut self) -> Report {
        self.read_kernel_counters();
        let run = RunInfo {
            duration_ms: self.started.elapsed().as_millis() as u64,
            ended_ns: super::clock::monotonic_ns(),
            ..self.run.clone()
        };
        let mut report = report::analyze(self.recorder.whole(), &run);
        if let Some((_, _, timeline)) = &self.timeline {
            report.timeline = timeline.points().to_vec();
        }
        report
    }

    /// The timeline's histograms as an HdrHistogram interval log; nothing without a timeline.
    pub fn write_hdr_log(&self, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
        let Some((_, _, timeline)) = &self.timeline else {
            return Ok(());
        };
        let started = std::time::SystemTime::now() - self.started.elapsed();
        timeline.write_hdr_log(out, started)
    }

    /// For a view that runs for days and only takes intervals (`serve`): the whole run is not
    /// kept, and `report()` has nothing to say.
    pub fn forget_whole_run(&mut self) {
        self.recorder.forget_whole_run();
    }

    /// The report of the interval that ends now; the next one starts at once.
    pub fn take_interval(&mut self) -> Report {
        self.take_interval_detail().0
    }

    fn take_interval_detail(&mut self) -> (Report, Observations) {
        // The boundary: a fresh look at the kernel ends this interval and begins the next.
        self.poll_kernel();
        self.read_kernel_counters();
        let run = RunInfo {
            duration_ms: self.interval_started.elapsed().as_millis() as u64,
            ended_ns: super::clock::monotonic_ns(),
            ..self.run.clone()
        };
        self.interval_started = Instant::now();
        let observations = self.recorder.take_interval(self.view_clock);
        (report::analyze(&observations, &run), observations)
    }
}

/// Counts (per stage, per listener) since the last reading, from cumulative ones; `seen`
/// becomes `now`.
fn since<K: Ord + Clone>(seen: &mut BTreeMap<K, u64>, now: BTreeMap<K, u64>) -> BTreeMap<K, u64> {
    let new = now
        .iter()
        .map(|(key, &count)| {
            let before = seen.get(key).copied().unwrap_or(0);
            (key.clone(), count.saturating_sub(before))
        })
        .collect();
    *seen = now;
    new
}

/// What the tracer's attached hooks can see, for the model.
fn visibility(tracer: &Tracer) -> Visibility {
    let mut hooks = BTreeMap::new();
    let mut unobserved = BTreeMap::new();
    for hook in &tracer.hooks {
        let stage = hook.stage.name().to_owned();
        match &hook.active {
            Some(active) => {
                hooks.insert(stage.clone(), active.clone());
                if let Some((label, why)) = &hook.missed {
                    unobserved.insert(format!("{stage} ({label})"), why.clone());
                }
            }
            None => {
                let reasons: Vec<&str> = hook.skipped.iter().map(|(_, why)| why.as_str()).collect();
                hooks.insert(stage.clone(), "unavailable".to_owned());
                unobserved.insert(stage, reasons.join("; "));
            }
        }
    }
    Visibility {
        hooks,
        unobserved,
        synack_retransmits: tracer.observes(Stage::SynackRetransmit),
        ack_overflows: tracer.observes(Stage::ListenerDiscards)
            && tracer.listen_overflow_reason.is_some(),
        queues: tracer.observes(Stage::Queues),
        phases: tracer.observes(Stage::Phases),
        listen_drops: tracer.observes(Stage::ListenDrops),
        listen_overflow_reason: tracer.listen_overflow_reason,
    }
}
