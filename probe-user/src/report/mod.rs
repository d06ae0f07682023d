//! The report: one model built from the aggregator, rendered by one module per format.
//!
//! The JSON rendering of [`Report`] is a public interface (see the README): fields may be added,
//! never renamed or removed without bumping `schema`.

mod build;
mod diagnosis;
mod json;
mod prometheus;
mod text;

use std::{collections::BTreeMap, io::Write};

pub use build::{Sources, build};
use serde::Serialize;

use crate::{
    counters::{Counters, Sysctls},
    drops::{Cookies, Drops},
    latency::LatencySummary,
};

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
    /// The namespaces of the reported listeners, with their own counters over the run.
    pub namespaces: Vec<NamespaceReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct NamespaceReport {
    pub netns: u32,
    pub sysctls: Sysctls,
    /// `TcpExt` listen-path counters (and `Tcp` PassiveOpens) over the run.
    pub counters: Counters,
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
    pub drops: Drops,
    #[serde(flatten)]
    pub cookies: Cookies,
    /// Connections whose SYN created the child at once (TCP Fast Open); null where no hook
    /// observes them (tracepoints).
    pub fastopen: Option<u64>,
    /// SYN-ACKs this listener sent again; null where no hook observes them.
    pub synack_retransmits: Option<u64>,
    /// Handshakes abandoned after the last SYN-ACK retry: no hook observes them yet.
    pub request_timeouts: Option<u64>,
    /// The accept-queue limit (`sk_max_ack_backlog`: listen()'s backlog clamped by
    /// net.core.somaxconn).
    pub backlog: Option<u32>,
    /// The longest the accept queue got during the run.
    pub accept_queue_max: Option<u32>,
    /// The most pending handshakes seen, sampled each time a child was queued.
    pub syn_queue_max: Option<u32>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Acceptor {
    pub pid: u32,
    pub comm: String,
    pub accepted: u64,
}

impl Report {
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
                drops: Drops {
                    listen_overflows: Some(412),
                    listen_overflows_at_ack: Some(12),
                    syn_queue_full: Some(0),
                    listen_drops: Some(412),
                    attribution: crate::drops::EXACT,
                },
                cookies: Cookies {
                    syncookies_sent: Some(0),
                    syncookies_failed: Some(0),
                },
                fastopen: Some(0),
                synack_retransmits: Some(3),
                request_timeouts: None,
                backlog: Some(128),
                accept_queue_max: Some(129),
                syn_queue_max: Some(4),
            }],
            namespaces: vec![NamespaceReport {
                netns: 4026531840,
                sysctls: Sysctls {
                    somaxconn: Some(128),
                    tcp_max_syn_backlog: Some(512),
                    tcp_syncookies: Some(1),
                    tcp_abort_on_overflow: Some(0),
                },
                counters: [("ListenOverflows".to_owned(), 412)].into(),
            }],
        }
    }
}
