//! The per-second timeline of a run: per port, what each second saw (the JSON report's
//! `timeline`, which the HTML charts draw), and the same seconds' latency histograms as an
//! HdrHistogram interval log (`--hdr-log FILE`, standard V2 format, one tag per port and stage).

use std::{io::Write, time::Duration};

use anyhow::anyhow;
use hdrhistogram::{
    Histogram,
    serialization::{
        Deserializer, Serializer as _, V2DeflateSerializer, V2Serializer,
        interval_log::{IntervalLogWriterBuilder, Tag},
    },
};

use super::{RunInfo, TimelinePoint, analyze};
use crate::model::Observations;

/// Built one interval at a time while tracing.
#[derive(Debug, Default)]
pub struct Timeline {
    points: Vec<TimelinePoint>,
    /// Each interval's histograms, compressed: (start, length, tag, V2 deflate bytes). Whole
    /// histograms would cost hundreds of kilobytes per port and second.
    histograms: Vec<(Duration, Duration, String, Vec<u8>)>,
}

impl Timeline {
    /// Adds the interval that started `start` after the run began and lasted `length`.
    pub fn add(
        &mut self,
        start: Duration,
        length: Duration,
        interval: &Observations,
        run: &RunInfo,
    ) {
        let report = analyze(interval, run);
        for l in &report.listeners {
            self.points.push(TimelinePoint {
                second: start.as_secs_f64().round() as u64,
                duration_ms: length.as_millis() as u64,
                netns: l.netns,
                port: l.port,
                syn_received: l.syn_received,
                handshakes: l.handshakes,
                accepted: l.accepted,
                listen_drops: l.drops.listen_drops,
                listen_overflows: l.drops.listen_overflows,
                syn_queue_full: l.drops.syn_queue_full,
                accept_queue_max: l.accept_queue_max,
                backlog: l.backlog,
                accept_wait_p99_us: (l.accept_wait_us.count > 0).then_some(l.accept_wait_us.p99),
            });
        }
        let mut serializer = V2DeflateSerializer::new();
        for (key, stats) in &interval.aggregator.listeners {
            if !run.ports.is_empty() && !run.ports.contains(&key.port) {
                continue;
            }
            for (stage, latency) in [
                ("handshake", &stats.handshake),
                ("accept_wait", &stats.accept_wait),
                ("syn_to_accept", &stats.syn_to_accept),
            ] {
                if latency.is_empty() {
                    continue;
                }
                let mut bytes = Vec::new();
                if serializer
                    .serialize(&latency.histogram(), &mut bytes)
                    .is_ok()
                {
                    let tag = format!("{}:{}:{stage}", key.netns, key.port);
                    self.histograms.push((start, length, tag, bytes));
                }
            }
        }
    }

    pub fn points(&self) -> &[TimelinePoint] {
        &self.points
    }

    /// Writes the interval log: one histogram per second, port and stage, in nanoseconds,
    /// tagged `NETNS:PORT:STAGE`.
    pub fn write_hdr_log(
        &self,
        out: &mut dyn Write,
        started: std::time::SystemTime,
    ) -> anyhow::Result<()> {
        let mut out = out;
        let mut serializer = V2Serializer::new();
        let mut deserializer = Deserializer::new();
        let mut log = IntervalLogWriterBuilder::new()
            .add_comment("synscope: listen-path latencies per port and stage, in nanoseconds")
            .add_comment("tags: NETNS:PORT:STAGE (handshake, accept_wait, syn_to_accept)")
            .with_start_time(started)
            .with_base_time(started)
            .with_max_value_divisor(1e6)
            .begin_log_with(&mut out, &mut serializer)
            .map_err(|e| anyhow!("cannot write the HdrHistogram log: {e}"))?;
        for (start, length, tag, bytes) in &self.histograms {
            let histogram: Histogram<u64> = deserializer
                .deserialize(&mut bytes.as_slice())
                .map_err(|e| anyhow!("cannot read back an interval histogram: {e:?}"))?;
            log.write_histogram(&histogram, *start, *length, Tag::new(tag))
                .map_err(|e| anyhow!("cannot write the HdrHistogram log: {e}"))?;
        }
        Ok(())
    }
}
