//! The report: its schema (every serialised type), the analysis that builds it from a
//! session's observations (a pure function), advice, and one module per output format, each
//! depending only on the finished [`Report`].

mod analysis;
mod diagnosis;
pub mod format;
#[cfg(test)]
pub(crate) mod golden;
mod html;
mod json;
mod junit;
mod markdown;
mod plots;
mod prometheus;
pub mod schema;
mod sink;
mod text;
pub mod thresholds;
mod timeline;
pub mod verdict;

use std::io::Write;

pub use analysis::{RunInfo, analyze};
pub use diagnosis::diagnose;
pub use schema::*;
pub use sink::{ReportSink, format_of};
pub use timeline::Timeline;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Prometheus,
    /// For a CI job summary or a pull-request comment.
    #[value(alias = "md")]
    Markdown,
    /// The thresholds as JUnit test cases (also `--junit FILE`).
    Junit,
    /// One self-contained page with plots.
    Html,
}

impl Report {
    pub fn write(&self, format: Format, out: &mut dyn Write) -> anyhow::Result<()> {
        match format {
            Format::Text => text::write(self, out),
            Format::Json => json::write(self, out),
            Format::Prometheus => prometheus::write(self, out),
            Format::Markdown => markdown::write(self, out),
            Format::Junit => junit::write(self, out),
            Format::Html => html::write(self, out),
        }
    }
}

#[cfg(test)]
pub(crate) mod sample {
    use super::*;

    /// A report with one busy listener and three thresholds (one broken), for the format
    /// tests.
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
            spectrum: vec![
                [0.0, base],
                [50.0, base * 2.0],
                [90.0, base * 3.0],
                [99.0, base * 4.0],
                [99.9, base * 5.0],
                [100.0, base * 6.0],
            ],
        };
        let mut report = Report {
            schema: SCHEMA,
            kernel: "6.18.44".into(),
            command: Some("wrk -c 200 -d 10s http://127.0.0.1:8080/".into()),
            hooks: [
                ("syn".to_owned(), "tp_btf/consume_skb".to_owned()),
                ("listen_drops".to_owned(), "unavailable".to_owned()),
                (
                    "handshake".to_owned(),
                    "tp_btf/inet_sock_set_state".to_owned(),
                ),
            ]
            .into(),
            unobserved: [(
                "listen_drops".to_owned(),
                "fentry/kprobe only: this kernel refuses both".to_owned(),
            )]
            .into(),
            duration_ms: 10_250,
            lost_events: 0,
            kernel_failures: std::collections::BTreeMap::new(),
            skipped_runs: std::collections::BTreeMap::new(),
            pending_evicted: None,
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
                    threads: 1,
                    cgroup: Some("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_5f60_4a7b_8c9d_0e1f2a3b4c5d.slice/cri-containerd-0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0.scope".into()),
                    pod: Some("1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d".into()),
                    container: Some("0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0".into()),
                }],
                handshake_us: summary(20.0),
                accept_wait_us: summary(150_000.0),
                syn_to_accept_us: summary(150_020.0),
                read_wait_us: Some(summary(50.0)),
                service_us: Some(summary(20_000.0)),
                syn_to_first_byte_us: Some(summary(170_070.0)),
                first_responses: Some(100),
                responded_unasked: Some(0),
                drops: Drops {
                    listen_overflows: Some(412),
                    listen_overflows_at_ack: Some(12),
                    syn_queue_full: Some(0),
                    listen_drops: Some(412),
                    attribution: crate::model::drops::EXACT.into(),
                },
                cookies: Cookies {
                    syncookies_sent: Some(0),
                    syncookies_failed: Some(0),
                },
                // Only the listen_drops hooks see Fast Open, unavailable here: unknown.
                fastopen: None,
                synack_retransmits: Some(3),
                request_timeouts: None,
                backlog: Some(128),
                accept_queue_max: Some(129),
                syn_queue_max: Some(4),
                never_accepted: NeverAccepted {
                    count: 37,
                    oldest_wait_us: Some(2_400_000.0),
                    discarded_at_close: 0,
                },
                abandoned_in_queue: Some(AbandonedInQueue {
                    by_fin: 12,
                    by_rst: 0,
                    accepted_later: 9,
                }),
                bottleneck: Bottleneck::default(),
                accept_loop: AcceptLoopReport {
                    processes: 1,
                    threads: 1,
                    mean_batch: Some(4.2),
                    largest_batch: Some(31),
                    longest_absence_us: Some(2_400_000.0),
                },
                sockets: vec![
                    ListenerSocket {
                        inode: 51234,
                        addr: Some("0.0.0.0".into()),
                        backlog: Some(128),
                        accept_queue_max: 129,
                        drops: 412,
                    },
                    ListenerSocket {
                        inode: 51235,
                        addr: Some("0.0.0.0".into()),
                        backlog: Some(128),
                        accept_queue_max: 7,
                        drops: 0,
                    },
                ],
                reuseport_imbalance: None,
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
            thresholds: Vec::new(),
            timeline: Vec::new(),
        };
        let thresholds: Vec<_> = [
            "accept_wait.p99 > 500ms",
            "8080:drops > 1000",
            "lost_events > 0",
        ]
        .iter()
        .map(|e| thresholds::parse(e).unwrap())
        .collect();
        report.thresholds = thresholds::evaluate(&thresholds, &report, false);
        let sysctls = report.namespaces[0].sysctls.clone();
        let listener = &mut report.listeners[0];
        listener.bottleneck = verdict::judge(listener, Some(&sysctls), report.duration_ms);
        report
    }
}
