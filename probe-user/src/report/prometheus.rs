//! `--format prometheus`: the report in the Prometheus text exposition format, for a textfile
//! collector or a push gateway. Latencies are summaries (quantiles over the run), in seconds.

use std::io::Write;

use super::{LatencySummary, ListenerReport, Report};

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
    for (name, help, value) in counters {
        writeln!(out, "# HELP {name} {help}")?;
        writeln!(out, "# TYPE {name} counter")?;
        for listener in &report.listeners {
            if let Some(value) = value(listener) {
                writeln!(out, "{name}{{{}}} {value}", labels(listener))?;
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
        for listener in &report.listeners {
            let s = summary(listener);
            let labels = labels(listener);
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
            writeln!(
                out,
                "{name}_sum{{{labels}}} {}",
                s.mean * s.count as f64 / 1e6
            )?;
            writeln!(out, "{name}_count{{{labels}}} {}", s.count)?;
        }
    }
    writeln!(
        out,
        "# HELP synscope_lost_events_total Events the kernel could not hand to synscope."
    )?;
    writeln!(out, "# TYPE synscope_lost_events_total counter")?;
    writeln!(out, "synscope_lost_events_total {}", report.lost_events)?;
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
        assert!(
            text.contains(
                "synscope_listen_overflows_total{netns=\"4026531840\",port=\"8080\"} 412\n"
            )
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
