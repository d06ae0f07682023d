//! `--format prometheus`: the report in the Prometheus text exposition format, for a textfile
//! collector or a push gateway. Latencies are summaries (quantiles over the run), in seconds.

use std::io::Write;

use super::{ListenerReport, Report};
use crate::latency::LatencySummary;

type Counter = (&'static str, &'static str, fn(&ListenerReport) -> u64);
type Summary = (
    &'static str,
    &'static str,
    fn(&ListenerReport) -> &LatencySummary,
);

pub fn write(report: &Report, out: &mut dyn Write) -> anyhow::Result<()> {
    let counters: [Counter; 3] = [
        (
            "synscope_syn_received_total",
            "SYNs received by the listener.",
            |l| l.syn_received,
        ),
        (
            "synscope_handshakes_total",
            "Handshakes completed (children created).",
            |l| l.handshakes,
        ),
        (
            "synscope_accepted_total",
            "Connections returned by accept().",
            |l| l.accepted,
        ),
    ];
    for (name, help, value) in counters {
        writeln!(out, "# HELP {name} {help}")?;
        writeln!(out, "# TYPE {name} counter")?;
        for listener in &report.listeners {
            writeln!(out, "{name}{{{}}} {}", labels(listener), value(listener))?;
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
            for (quantile, us) in [
                ("0.5", s.p50),
                ("0.9", s.p90),
                ("0.99", s.p99),
                ("0.999", s.p999),
            ] {
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
    }
}
