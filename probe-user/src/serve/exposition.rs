//! The `/metrics` page: [`MetricsState`] in the Prometheus text format (0.0.4), encoded by
//! prometheus-client at each scrape. Base units (seconds), Prometheus names; labels `netns`
//! and `port` only, never a remote address, so the series stay bounded.

use std::sync::{Arc, Mutex};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, NoLabelSet, prometheus_text},
    metrics::MetricType,
    registry::Registry,
};

use super::{
    buckets::CumulativeHistogram,
    state::{MetricsState, Series, SeriesKey},
};

pub use prometheus_text::CONTENT_TYPE;

type Labels = [(&'static str, String); 2];

fn labels(key: &SeriesKey) -> Labels {
    [
        ("netns", key.netns.to_string()),
        ("port", key.port.to_string()),
    ]
}

/// Name (the encoder adds `_total`), help, value; None leaves the listener out (unknown).
type CounterFigure = (&'static str, &'static str, fn(&Series) -> Option<u64>);

const COUNTERS: [CounterFigure; 9] = [
    (
        "synscope_syn_received",
        "SYNs received by the listener.",
        |s| Some(s.syn_received),
    ),
    (
        "synscope_handshakes",
        "Handshakes completed (children queued for accept()).",
        |s| Some(s.handshakes),
    ),
    (
        "synscope_accepted",
        "Connections returned by accept().",
        |s| Some(s.accepted),
    ),
    (
        "synscope_listen_drops",
        "All listen drops of the listener (TcpExtListenDrops).",
        |s| s.listen_drops,
    ),
    (
        "synscope_listen_overflows",
        "Accept queue full, at SYN or final ACK (TcpExtListenOverflows).",
        |s| s.listen_overflows,
    ),
    (
        "synscope_syn_queue_full_drops",
        "SYNs dropped on a full SYN queue with syncookies off (TcpExtTCPReqQFullDrop).",
        |s| s.syn_queue_full,
    ),
    (
        "synscope_syncookies_sent",
        "SYN-ACKs sent with a SYN cookie (TcpExtSyncookiesSent).",
        |s| s.syncookies_sent,
    ),
    (
        "synscope_syncookies_failed",
        "Final ACKs whose SYN cookie did not check out (TcpExtSyncookiesFailed).",
        |s| s.syncookies_failed,
    ),
    (
        "synscope_synack_retransmits",
        "SYN-ACKs the listener sent again.",
        |s| s.synack_retransmits,
    ),
];

type HistogramFigure = (
    &'static str,
    &'static str,
    fn(&Series) -> &CumulativeHistogram,
);

const HISTOGRAMS: [HistogramFigure; 3] = [
    (
        "synscope_handshake_duration_seconds",
        "SYN received to handshake complete (child queued for accept()).",
        |s| &s.handshake,
    ),
    (
        "synscope_accept_queue_wait_seconds",
        "Handshake complete to returned by accept(): the wait in the accept queue.",
        |s| &s.accept_wait,
    ),
    (
        "synscope_syn_to_accept_seconds",
        "SYN received to returned by accept(): the whole server-side wait.",
        |s| &s.syn_to_accept,
    ),
];

type GaugeFigure = (&'static str, &'static str, fn(&Series) -> Option<u32>);

/// Registered once; reads the shared state at each scrape.
#[derive(Debug)]
struct StateCollector(Arc<Mutex<MetricsState>>);

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // A panic elsewhere while holding the lock leaves figures that are still whole.
        let state = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        encode_state(&state, &mut encoder)
    }
}

fn encode_state(
    state: &MetricsState,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    for (name, help, histogram) in HISTOGRAMS {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
        for (key, series) in &state.series {
            let histogram = histogram(series);
            let labels = labels(key);
            family
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(
                    histogram.sum_seconds,
                    histogram.count,
                    &histogram.bucket_counts(),
                    None,
                )?;
        }
    }
    for (name, help, value) in COUNTERS {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (key, series) in &state.series {
            if let Some(value) = value(series) {
                let labels = labels(key);
                family
                    .encode_family(&labels)?
                    .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
            }
        }
    }
    let gauges: [GaugeFigure; 2] = [
        (
            "synscope_accept_queue_length",
            "Connections waiting in the accept queue at the latest poll (the longest of folded listeners').",
            |s| s.queue.map(|q| q.length),
        ),
        (
            "synscope_accept_queue_backlog",
            "The accept queue's limit: listen()'s backlog clamped by net.core.somaxconn.",
            |s| s.queue.map(|q| q.backlog),
        ),
    ];
    for (name, help, value) in gauges {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (key, series) in &state.series {
            if let Some(value) = value(series) {
                family.encode_family(&labels(key))?.encode_gauge(&value)?;
            }
        }
    }
    let mut info = encoder.encode_descriptor(
        "synscope_listener",
        "The addresses a listener is bound to (comma-separated; empty where not known).",
        None,
        MetricType::Info,
    )?;
    for (key, series) in &state.series {
        let [netns, port] = labels(key);
        let addr = series.addrs.iter().cloned().collect::<Vec<_>>().join(",");
        info.encode_info(&[netns, port, ("addr", addr)])?;
    }
    let run_counters: [(&str, &str, u64); 3] = [
        (
            "synscope_lost_events",
            "Events the kernel programs could not hand over (ring buffer full): figures may be low.",
            state.lost_events,
        ),
        (
            "synscope_skipped_runs",
            "Runs of synscope's programs the kernel skipped (a kprobe inside another's handler, a \
             BPF program already running on the CPU; counted by 5.12+, kprobes 6.7+): figures \
             may be low.",
            state.skipped_runs,
        ),
        (
            "synscope_folded_listeners",
            "Listeners folded into port=\"other\" beyond --max-listeners.",
            state.folded_total,
        ),
    ];
    for (name, help, value) in run_counters {
        encoder
            .encode_descriptor(name, help, None, MetricType::Counter)?
            .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
    }
    let mut build = encoder.encode_descriptor(
        "synscope_build",
        "synscope's version and the kernel it traces.",
        None,
        MetricType::Info,
    )?;
    build.encode_info(&[
        ("version", env!("CARGO_PKG_VERSION").to_owned()),
        ("kernel", state.kernel.clone()),
    ])?;
    Ok(())
}

/// The registry `/metrics` encodes: one collector over the shared state.
pub fn registry(state: Arc<Mutex<MetricsState>>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(StateCollector(state)));
    registry
}

/// The page, in the Prometheus text format.
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut page = String::new();
    prometheus_text::encode(&mut page, registry)?;
    Ok(page)
}
