//! One tracing session: attach, feed events to the aggregator until a stop condition, report.

use std::{
    collections::BTreeMap,
    fs::File,
    future::Future,
    io::{self, Write},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use probe_common::{EventKind, ListenerKey};

use crate::{
    aggregate::Aggregator,
    hooks::Stage,
    inventory,
    kernel_view::KernelView,
    preflight,
    report::{self, Format, Report},
    tracer::{TraceOptions, Tracer},
};

/// How often every namespace's listening sockets and counters are read. Drop figures are
/// deltas between the first and last reading; polling in between catches sockets that close
/// before the end and queue lengths between the kernel programs' samples.
const KERNEL_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How often events are collected from the kernel programs' ring buffer.
const COLLECT_INTERVAL: Duration = Duration::from_millis(20);

/// Events handled before the loop looks at its other duties again.
const DRAIN_BATCH: usize = 4096;
const FINAL_DRAIN: usize = 65_536;

pub struct Session {
    tracer: Tracer,
    aggregator: Aggregator,
    kernel_view: KernelView,
    ports: Vec<u16>,
    started: Instant,
}

impl Session {
    /// Attaches the kernel programs; tracing is live when this returns.
    pub fn start(options: &TraceOptions) -> anyhow::Result<Self> {
        let tracer = Tracer::start(options)?;
        // Fallbacks are normal (synscope check explains them); a stage nobody observes is not.
        for hook in tracer.hooks.iter().filter(|h| h.active.is_none()) {
            let reasons: Vec<String> = hook.skipped.iter().map(|(_, why)| why.clone()).collect();
            eprintln!(
                "synscope: {} not observed on this kernel: {}",
                hook.stage.name(),
                reasons.join("; ")
            );
        }
        let mut session = Self {
            aggregator: Aggregator {
                listen_overflow_reason: tracer.listen_overflow_reason,
                ..Default::default()
            },
            tracer,
            kernel_view: KernelView::default(),
            ports: options.ports.clone(),
            started: Instant::now(),
        };
        session.poll_kernel();
        Ok(session)
    }

    /// Collects events until `stop` completes, and returns its output.
    pub async fn trace_until<T>(&mut self, stop: impl Future<Output = T>) -> anyhow::Result<T> {
        tokio::pin!(stop);
        let mut poll = tokio::time::interval(KERNEL_POLL_INTERVAL);
        poll.tick().await; // the first tick is immediate; start already polled
        // The kernel programs wake this loop only when their buffer fills up; otherwise it
        // collects on this timer.
        let mut collect = tokio::time::interval(COLLECT_INTERVAL);
        // Under a flood the ring buffer may never empty: events are taken in batches, and the
        // stop condition and polls get their turn between batches.
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
                _ = poll.tick() => self.poll_kernel(),
            }
        };
        // Everything the traced work caused is already in the ring buffer (a full one holds
        // about 40,000 events; a flood that goes on is not waited for).
        self.drain(FINAL_DRAIN);
        self.poll_kernel();
        Ok(result)
    }

    /// Takes up to `limit` events; true if more are waiting.
    fn drain(&mut self, limit: usize) -> bool {
        let (aggregator, kernel_view) = (&mut self.aggregator, &mut self.kernel_view);
        self.tracer.drain(limit, |event| {
            if event.kind == EventKind::ListenerClosed as u32 {
                let key = ListenerKey::new(event.netns, event.local_port);
                kernel_view.socket_closed(key, event.socket_inode, event.reason);
            } else {
                aggregator.record(event);
            }
        })
    }

    fn poll_kernel(&mut self) {
        self.kernel_view.observe(inventory::read_all());
    }

    pub fn report(&self) -> anyhow::Result<Report> {
        let hooks: BTreeMap<String, String> = self
            .tracer
            .hooks
            .iter()
            .map(|hook| {
                let active = hook.active.as_deref().unwrap_or("unavailable");
                (hook.stage.name().to_owned(), active.to_owned())
            })
            .collect();
        let queue_depths = self.tracer.queue_depths().into_iter().collect();
        Ok(report::build(&report::Sources {
            aggregator: &self.aggregator,
            kernel_view: &self.kernel_view,
            queue_depths: &queue_depths,
            observes_synack_retransmits: self.tracer.observes(Stage::SynackRetransmit),
            observes_ack_overflows: self.tracer.observes(Stage::ListenerDiscards)
                && self.tracer.listen_overflow_reason.is_some(),
            observes_queues: self.tracer.observes(Stage::Queues),
            observes_listen_drops: self.tracer.observes(Stage::ListenDrops),
            ports: &self.ports,
            kernel: preflight::kernel_release(),
            hooks,
            duration_ms: self.started.elapsed().as_millis() as u64,
            lost_events: self.tracer.lost_events()?,
        }))
    }
}

/// Where the report goes: a file opened before tracing starts, or standard output.
pub enum ReportSink {
    Stdout,
    File(File),
}

impl ReportSink {
    pub fn open(output: Option<&Path>) -> anyhow::Result<Self> {
        Ok(match output {
            Some(path) => Self::File(
                File::create(path)
                    .with_context(|| format!("cannot write the report to {}", path.display()))?,
            ),
            None => Self::Stdout,
        })
    }

    pub fn write(&mut self, report: &Report, format: Format) -> anyhow::Result<()> {
        match self {
            Self::File(file) => {
                report.write(format, file)?;
                file.flush()?;
            }
            Self::Stdout => {
                let mut stdout = io::stdout().lock();
                report.write(format, &mut stdout)?;
                stdout.flush()?;
            }
        }
        Ok(())
    }
}
