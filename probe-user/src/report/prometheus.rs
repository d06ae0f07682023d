//! `--format prometheus`: the report in the Prometheus text exposition format, for a textfile
//! collector or a push gateway. Latencies are summaries (quantiles over the run), in seconds.
//! Beyond [`OWN_SERIES`] listeners, the least busy of each namespace share one `port="other"`
//! series, as `synscope serve` folds them beyond `--max-listeners`.

use std::{collections::BTreeMap, io::Write};

use super::{LatencySummary, ListenerReport, Report, format::busiest_first};

/// Listeners with series of their own (the busiest); the same default as `serve`'s
/// `--max-listeners`.
pub const OWN_SERIES: usize = 200;

/// The listeners one set of series describes: one, or the folded rest of a namespace.
enum Series<'a> {
    Own(&'a ListenerReport),
    Folded {
        netns: u32,
        listeners: Vec<&'a ListenerReport>,
    },
}

impl Series<'_> {
    fn labels(&self) -> String {
        match self {
            Series::Own(listener) => labels(listener),
            Series::Folded { netns, .. } => format!("netns=\"{netns}\",port=\"other\""),
        }
    }

    /// A counter's value: the listener's, or the sum of those the kernel let synscope know.
    fn counter(&self, value: fn(&ListenerReport) -> Option<u64>) -> Option<u64> {
        match self {
            Series::Own(listener) => value(listener),
            Series::Folded { listeners, .. } => listeners
                .iter()
                .filter_map(|l| value(l))
                .reduce(|a, b| a + b),
        }
    }
}

/// Every listener's series: the busiest [`OWN_SERIES`] on their own, in the report's order,
/// then each namespace's rest folded; and how many listeners were folded.
fn series(listeners: &[ListenerReport]) -> (Vec<Series<'_>>, usize) {
    if listeners.len() <= OWN_SERIES {
        return (listeners.iter().map(Series::Own).collect(), 0);
    }
    let ranked = busiest_first(listeners);
    let mut own = ranked[..OWN_SERIES].to_vec();
    own.sort_by_key(|l| (l.netns, l.port));
    let mut folded: BTreeMap<u32, Vec<&ListenerReport>> = BTreeMap::new();
    for listener in &ranked[OWN_SERIES..] {
        folded.entry(listener.netns).or_default().push(listener);
    }
    let mut series: Vec<Series> = own.into_iter().map(Series::Own).collect();
    series.extend(
        folded
            .into_iter()
            .map(|(netns, listeners)| Series::Folded { netns, listeners }),
    );
    (series, listeners.len() - OWN_SERIES)
}

/// Name, help, value (`None` where the kernel does not let synscope know it: no sample).
type Counter = (
    &'static str,
    &'static str,
    fn(&ListenerReport) -> Option<u64>,
);
type Summary = (
    &'static str,
    &'static str,
    fn(&ListenerReport) -> &LatencySummary,
);

pub fn write(report: &Report, out: &mut dyn Write) -> anyhow::Result<()> {
    let counters: [Counter; 9] = [
        (
            "synscope_syn_received_total",
            "SYNs received by the listener.",
            |l| Some(l.syn_received),
        ),
        (
            "synscope_handshakes_total",
            "Handshakes completed (children created).",
            |l| Some(l.handshakes),
        ),
        (
            "synscope_accepted_total",
            "Connections returned by accept().",
            |l| Some(l.accepted),
        ),
        (
            "synscope_listen_drops_total",
            "All listen drops of the listener (TcpExtListenDrops).",
            |l| l.drops.listen_drops,
        ),
        (
            "synscope_listen_overflows_total",
            "Accept queue full, at SYN or final ACK (TcpExtListenOverflows).",
            |l| l.drops.listen_overflows,
        ),
        (
            "synscope_syn_queue_full_drops_total",
            "SYNs dropped on a full SYN queue with syncookies off (TcpExtTCPReqQFullDrop).",
            |l| l.drops.syn_queue_full,
        ),
        (
            "synscope_syncookies_sent_total",
            "SYN cookies sent (TcpExtSyncookiesSent).",
            |l| l.cookies.syncookies_sent,
        ),
        (
            "synscope_fastopen_total",
            "Connections opened by TCP Fast Open (TcpExtTCPFastOpenPassive).",
            |l| l.fastopen,
        ),
        (
            "synscope_synack_retransmits_total",
            "SYN-ACKs sent again by the listener.",
            |l| l.synack_retransmits,
        ),
    ];
    let (series, folded) = series(&report.listeners);
    for (name, help, value) in counters {
        writeln!(out, "# HELP {name} {help}")?;
        writeln!(out, "# TYPE {name} counter")?;
        for one in &series {
            if let Some(value) = one.counter(value) {
                writeln!(out, "{name}{{{}}} {value}", one.labels())?;
            }
        }
    }
    let summaries: [Summary; 3] = [
        (
            "synscope_handshake_seconds",
            "SYN received to handshake complete.",
            |l| &l.handshake_us,
        ),
        (
            "synscope_accept_wait_seconds",
            "Handshake complete to accept() (accept-queue wait).",
            |l| &l.accept_wait_us,
        ),
        (
            "synscope_syn_to_accept_seconds",
            "SYN received to accept().",
            |l| &l.syn_to_accept_us,
        ),
    ];
    for (name, help, summary) in summaries {
        writeln!(out, "# HELP {name} {help}")?;
        writeln!(out, "# TYPE {name} summary")?;
        for one in &series {
            let labels = one.labels();
            let (sum_us, count) = match one {
                Series::Own(listener) => {
                    let s = summary(listener);
                    // No sample, no quantile: 0 would read as a measured zero latency.
                    let quantiles = if s.count == 0 {
                        &[][..]
                    } else {
                        &QUANTILES[..]
                    };
                    for &(quantile, at) in quantiles {
                        let us = at(s);
                        writeln!(
                            out,
                            "{name}{{{labels},quantile=\"{quantile}\"}} {}",
                            us / 1e6
                        )?;
                    }
                    (s.mean * s.count as f64, s.count)
                }
                // Quantiles do not add up: a folded series has its sum and count only.
                Series::Folded { listeners, .. } => {
                    listeners.iter().fold((0.0, 0), |(sum, n), l| {
                        let s = summary(l);
                        (sum + s.mean * s.count as f64, n + s.count)
                    })
                }
            };
            writeln!(out, "{name}_sum{{{labels}}} {}", sum_us / 1e6)?;
            writeln!(out, "{name}_count{{{labels}}} {count}")?;
        }
    }
    writeln!(
        out,
        "# HELP synscope_lost_events_total Events the kernel could not hand to synscope."
    )?;
    writeln!(out, "# TYPE synscope_lost_events_total counter")?;
    writeln!(out, "synscope_lost_events_total {}", report.lost_events)?;
    writeln!(
        out,
        "# HELP synscope_skipped_runs_total Runs of synscope's programs the kernel skipped."
    )?;
    writeln!(out, "# TYPE synscope_skipped_runs_total counter")?;
    let skipped: u64 = report.skipped_runs.values().sum();
    writeln!(out, "synscope_skipped_runs_total {skipped}")?;
    writeln!(
        out,
        "# HELP synscope_folded_listeners Listeners beyond the busiest {OWN_SERIES}, folded into \
         port=\"other\" per namespace."
    )?;
    writeln!(out, "# TYPE synscope_folded_listeners gauge")?;
    writeln!(out, "synscope_folded_listeners {folded}")?;
    Ok(())
}

type Quantile = (&'static str, fn(&LatencySummary) -> f64);
const QUANTILES: [Quantile; 4] = [
    ("0.5", |s| s.p50),
    ("0.9", |s| s.p90),
    ("0.99", |s| s.p99),
    ("0.999", |s| s.p999),
];

fn labels(listener: &ListenerReport) -> String {
    format!("netns=\"{}\",port=\"{}\"", listener.netns, listener.port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_counters_and_summaries_in_seconds() {
        let mut out = Vec::new();
        write(&super::super::sample::report(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("synscope_accepted_total{netns=\"4026531840\",port=\"8080\"} 100\n"));
        assert!(text.contains(
            "synscope_accept_wait_seconds{netns=\"4026531840\",port=\"8080\",quantile=\"0.5\"} 0.3\n"
        ));
        assert!(text.contains(
            "synscope_accept_wait_seconds_count{netns=\"4026531840\",port=\"8080\"} 100\n"
        ));
        assert!(text.contains("synscope_lost_events_total 0\n"));
        assert!(text.contains("synscope_skipped_runs_total 0\n"));
        assert!(
            text.contains(
                "synscope_listen_overflows_total{netns=\"4026531840\",port=\"8080\"} 412\n"
            )
        );
    }

    #[test]
    fn beyond_the_busiest_each_namespace_is_folded_into_other() {
        let mut report = super::super::sample::report();
        let template = report.listeners[0].clone();
        report.listeners = (0..OWN_SERIES as u16 + 30)
            .map(|i| {
                let mut listener = template.clone();
                listener.netns = 1 + u32::from(i % 2);
                listener.port = 1000 + i;
                // Port 1000 + OWN_SERIES + 29 is the busiest, so it keeps its own series.
                listener.syn_received = u64::from(i);
                listener.accepted = 1;
                listener.drops.listen_drops = Some(0);
                listener
            })
            .collect();
        let mut out = Vec::new();
        write(&report, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let accepted: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("synscope_accepted_total{"))
            .collect();
        assert_eq!(accepted.len(), OWN_SERIES + 2, "{accepted:#?}");
        assert!(text.contains("synscope_accepted_total{netns=\"1\",port=\"other\"} 15\n"));
        assert!(text.contains("synscope_accepted_total{netns=\"2\",port=\"other\"} 15\n"));
        assert!(
            text.contains("port=\"1229\""),
            "the busiest keeps its series"
        );
        assert!(!text.contains("port=\"1000\""), "the quietest is folded");
        assert!(text.contains("synscope_folded_listeners 30\n"));
        assert!(
            !text.contains("port=\"other\",quantile"),
            "no quantiles folded"
        );
        assert!(
            text.contains("synscope_accept_wait_seconds_count{netns=\"1\",port=\"other\"} 1500\n")
        );
    }

    #[test]
    fn unknown_figures_and_empty_distributions_have_no_samples() {
        let mut report = super::super::sample::report();
        report.listeners[0].drops.listen_overflows = None;
        report.listeners[0].handshake_us = Default::default();
        let mut out = Vec::new();
        write(&report, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("synscope_listen_overflows_total{"), "{text}");
        assert!(!text.contains("synscope_handshake_seconds{"), "{text}");
        assert!(
            text.contains(
                "synscope_handshake_seconds_count{netns=\"4026531840\",port=\"8080\"} 0\n"
            )
        );
    }
}
