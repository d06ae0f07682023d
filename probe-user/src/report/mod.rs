//! The report: one model built from the aggregator, rendered by one module per format.
//!
//! The JSON rendering of [`Report`] is a public interface (see the README): fields may be added,
//! never renamed or removed without bumping `schema`.

mod json;
mod prometheus;
mod text;

use std::{collections::BTreeMap, io::Write};

use serde::Serialize;

use crate::{aggregate::Aggregator, latency::LatencySummary};

pub const SCHEMA: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Prometheus,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema: u32,
    pub kernel: String,
    /// Stage -> the hook that observed it.
    pub hooks: BTreeMap<String, String>,
    pub duration_ms: u64,
    pub lost_events: u64,
    pub listeners: Vec<ListenerReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ListenerReport {
    pub netns: u32,
    pub port: u16,
    /// Bound addresses, comma-separated; null when the listener was not seen (closed before the
    /// report, in a namespace without processes).
    pub addr: Option<String>,
    pub syn_received: u64,
    pub handshakes: u64,
    pub accepted: u64,
    /// Processes that accepted connections, busiest first.
    pub acceptors: Vec<Acceptor>,
    pub handshake_us: LatencySummary,
    pub accept_wait_us: LatencySummary,
    pub syn_to_accept_us: LatencySummary,
}

#[derive(Clone, Debug, Serialize)]
pub struct Acceptor {
    pub pid: u32,
    pub comm: String,
    pub accepted: u64,
}

impl Report {
    /// Listeners that saw traffic, ordered by namespace and port.
    pub fn build(
        aggregator: &Aggregator,
        kernel: String,
        hooks: BTreeMap<String, String>,
        duration_ms: u64,
        lost_events: u64,
    ) -> Self {
        let listeners = aggregator
            .listeners
            .iter()
            .filter(|(_, stats)| stats.has_traffic())
            .map(|(key, stats)| {
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
                let addr = (!stats.addrs.is_empty()).then(|| {
                    stats
                        .addrs
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                });
                ListenerReport {
                    netns: key.netns,
                    port: key.port,
                    addr,
                    syn_received: stats.syn_received,
                    handshakes: stats.handshakes,
                    accepted: stats.accepted,
                    acceptors,
                    handshake_us: stats.handshake.summary(),
                    accept_wait_us: stats.accept_wait.summary(),
                    syn_to_accept_us: stats.syn_to_accept.summary(),
                }
            })
            .collect();
        Self {
            schema: SCHEMA,
            kernel,
            hooks,
            duration_ms,
            lost_events,
            listeners,
        }
    }

    pub fn write(&self, format: Format, out: &mut dyn Write) -> anyhow::Result<()> {
        match format {
            Format::Text => text::write(self, out),
            Format::Json => json::write(self, out),
            Format::Prometheus => prometheus::write(self, out),
        }
    }
}

#[cfg(test)]
pub(crate) mod sample {
    use super::*;

    /// A report with one busy listener, for the format tests.
    pub fn report() -> Report {
        let summary = |base: f64| LatencySummary {
            count: 100,
            min: base,
            p50: base * 2.0,
            p90: base * 3.0,
            p99: base * 4.0,
            p999: base * 5.0,
            max: base * 6.0,
            mean: base * 2.5,
        };
        Report {
            schema: SCHEMA,
            kernel: "6.18.44".into(),
            hooks: [("syn".to_owned(), "tp_btf/consume_skb".to_owned())].into(),
            duration_ms: 10_250,
            lost_events: 0,
            listeners: vec![ListenerReport {
                netns: 4026531840,
                port: 8080,
                addr: Some("0.0.0.0".into()),
                syn_received: 100,
                handshakes: 100,
                accepted: 100,
                acceptors: vec![Acceptor {
                    pid: 1234,
                    comm: "node".into(),
                    accepted: 100,
                }],
                handshake_us: summary(20.0),
                accept_wait_us: summary(150_000.0),
                syn_to_accept_us: summary(150_020.0),
            }],
        }
    }
}
