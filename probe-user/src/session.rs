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

use crate::{
    aggregate::Aggregator,
    listeners, preflight,
    report::{Format, Report},
    tracer::{TraceOptions, Tracer},
};

/// How often listening sockets are re-read from /proc for their addresses.
const LISTENER_SCAN_INTERVAL: Duration = Duration::from_secs(1);

pub struct Session {
    tracer: Tracer,
    aggregator: Aggregator,
    started: Instant,
}

impl Session {
    /// Attaches the kernel programs; tracing is live when this returns.
    pub fn start(options: &TraceOptions) -> anyhow::Result<Self> {
        let tracer = Tracer::start(options)?;
        for hook in &tracer.hooks {
            for (better, reason) in &hook.skipped {
                eprintln!(
                    "synscope: {} stage uses {} because {better} is unavailable: {reason}",
                    hook.stage.name(),
                    hook.active
                );
            }
        }
        let mut session = Self {
            tracer,
            aggregator: Aggregator::default(),
            started: Instant::now(),
        };
        session.scan_listeners();
        Ok(session)
    }

    /// Collects events until `stop` completes, and returns its output.
    pub async fn trace_until<T>(&mut self, stop: impl Future<Output = T>) -> anyhow::Result<T> {
        tokio::pin!(stop);
        let mut scan = tokio::time::interval(LISTENER_SCAN_INTERVAL);
        let result = loop {
            tokio::select! {
                result = &mut stop => break result,
                readable = self.tracer.readable() => {
                    readable?;
                    self.drain();
                }
                _ = scan.tick() => self.scan_listeners(),
            }
        };
        // Everything the traced work caused is already in the ring buffer.
        self.drain();
        self.scan_listeners();
        Ok(result)
    }

    fn drain(&mut self) {
        let aggregator = &mut self.aggregator;
        self.tracer.drain(|event| aggregator.record(event));
    }

    fn scan_listeners(&mut self) {
        for socket in listeners::scan() {
            self.aggregator.add_listener_addr(socket.key, socket.addr);
        }
    }

    pub fn report(&self) -> anyhow::Result<Report> {
        let hooks: BTreeMap<String, String> = self
            .tracer
            .hooks
            .iter()
            .map(|hook| (hook.stage.name().to_owned(), hook.active.to_owned()))
            .collect();
        Ok(Report::build(
            &self.aggregator,
            preflight::kernel_release(),
            hooks,
            self.started.elapsed().as_millis() as u64,
            self.tracer.lost_events()?,
        ))
    }
}

/// Writes `report` to `output`, or to standard output.
pub fn write_report(report: &Report, format: Format, output: Option<&Path>) -> anyhow::Result<()> {
    match output {
        Some(path) => {
            let mut file = File::create(path)
                .with_context(|| format!("cannot write the report to {}", path.display()))?;
            report.write(format, &mut file)?;
            file.flush()?;
        }
        None => {
            let mut stdout = io::stdout().lock();
            report.write(format, &mut stdout)?;
            stdout.flush()?;
        }
    }
    Ok(())
}
