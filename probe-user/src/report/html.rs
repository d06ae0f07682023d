//! `--format html` (`.html`): one self-contained page that opens offline (no external scripts,
//! fonts or styles): run metadata, a table per port, percentile-spectrum plots of the three
//! latencies (ports overlaid), per-second charts of connections, drops and the accept queue
//! against the backlog, thresholds, advice, and the JSON report itself, embedded.

use std::{collections::BTreeMap, io::Write};

use super::{
    LatencySummary, ListenerReport, Report, diagnosis,
    format::{
        accept_loop, human_ms, kernel_side, latency_cells, latency_rows, phases_note,
        shown_listeners, unaccepted, verdict,
    },
    plots::{self, Line},
    thresholds,
};

const STYLE: &str = "body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;\
text-align:right}th:first-child,td:first-child{text-align:left}.held{color:#080}\
.broken{color:#b00;font-weight:bold}.advice{background:#fff4e0;padding:.5em;border-left:4px \
solid #e90}figure{margin:1em 0}code{background:#f4f4f4}";

pub fn write(report: &Report, out: &mut dyn Write) -> anyhow::Result<()> {
    writeln!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
    )?;
    writeln!(
        out,
        "<title>synscope report</title><style>{STYLE}</style></head><body>"
    )?;
    writeln!(out, "<h1>synscope: listen-path latency per port</h1>")?;
    write_metadata(out, report)?;
    write_thresholds(out, report)?;
    if report.listeners.is_empty() {
        writeln!(out, "<p>No connection reached a traced listener.</p>")?;
    }
    let (shown, folded) = shown_listeners(&report.listeners);
    for listener in shown {
        write_listener(out, listener, report)?;
    }
    if let Some(folded) = folded {
        writeln!(out, "<p><i>{}.</i></p>", escape(&folded))?;
    }
    write_spectra(out, report)?;
    write_timeline(out, report)?;
    // The whole report, for tools: `</` cannot end the script early once escaped.
    let json = serde_json::to_string(report)?.replace("</", "<\\/");
    writeln!(
        out,
        "<script type=\"application/json\" id=\"synscope-report\">{json}</script>"
    )?;
    writeln!(out, "</body></html>")?;
    Ok(())
}

fn write_metadata(out: &mut dyn Write, report: &Report) -> anyhow::Result<()> {
    if let Some(command) = &report.command {
        writeln!(out, "<p>Command: <code>{}</code></p>", escape(command))?;
    }
    writeln!(
        out,
        "<p>Traced {} on Linux {}; {} events lost.</p>",
        human_ms(report.duration_ms),
        escape(&report.kernel),
        report.lost_events
    )?;
    let hooks: Vec<String> = report
        .hooks
        .iter()
        .map(|(stage, hook)| format!("{stage}=<code>{}</code>", escape(hook)))
        .collect();
    writeln!(out, "<p>Hooks: {}</p>", hooks.join(", "))?;
    for (stage, why) in &report.unobserved {
        writeln!(
            out,
            "<p><small>{}: {}</small></p>",
            escape(stage),
            escape(why)
        )?;
    }
    for namespace in &report.namespaces {
        let s = &namespace.sysctls;
        let known = |v: Option<u32>| v.map_or("?".to_owned(), |v| v.to_string());
        writeln!(
            out,
            "<p>netns {}: net.core.somaxconn {}, net.ipv4.tcp_max_syn_backlog {}, \
             net.ipv4.tcp_syncookies {}, net.ipv4.tcp_abort_on_overflow {}</p>",
            namespace.netns,
            known(s.somaxconn),
            known(s.tcp_max_syn_backlog),
            known(s.tcp_syncookies),
            known(s.tcp_abort_on_overflow)
        )?;
    }
    Ok(())
}

fn write_thresholds(out: &mut dyn Write, report: &Report) -> anyhow::Result<()> {
    if report.thresholds.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "<h2>Thresholds</h2><table><tr><th></th><th>threshold</th><th>measured</th></tr>"
    )?;
    for result in &report.thresholds {
        let (class, mark) = if result.held {
            ("held", "✓")
        } else {
            ("broken", "✗")
        };
        writeln!(
            out,
            "<tr class=\"{class}\"><td>{mark}</td><td><code>{}</code></td><td>{}</td></tr>",
            escape(&result.expression),
            escape(&thresholds::describe(result))
        )?;
    }
    writeln!(out, "</table>")?;
    Ok(())
}

fn write_listener(out: &mut dyn Write, l: &ListenerReport, report: &Report) -> anyhow::Result<()> {
    let addr = l.addr.as_deref().unwrap_or("unknown address");
    writeln!(
        out,
        "<h2>Port {} on {} (netns {})</h2>",
        l.port,
        escape(addr),
        l.netns
    )?;
    let acceptors: Vec<String> = l
        .acceptors
        .iter()
        .take(3)
        .map(|a| format!("{}[{}]", escape(&a.comm), a.pid))
        .collect();
    writeln!(
        out,
        "<p>{} SYNs, {} handshakes, {} accepted{}.</p>",
        l.syn_received,
        l.handshakes,
        l.accepted,
        if acceptors.is_empty() {
            String::new()
        } else {
            format!(" by {}", acceptors.join(", "))
        }
    )?;
    writeln!(
        out,
        "<table><tr><th></th><th>count</th><th>min</th><th>p50</th><th>p90</th><th>p99</th>\
         <th>p99.9</th><th>max</th><th>mean</th></tr>"
    )?;
    for (label, s) in latency_rows(l, " → ") {
        write_row(out, &label, s)?;
    }
    writeln!(out, "</table>")?;
    writeln!(out, "<p>{}.</p>", kernel_side(l).join(". "))?;
    for line in accept_loop(l)
        .into_iter()
        .chain(phases_note(l))
        .chain(unaccepted(l))
    {
        writeln!(out, "<p>{}.</p>", escape(&line))?;
    }
    writeln!(
        out,
        "<p class=\"verdict\"><b>{}</b></p>",
        escape(&verdict(l))
    )?;
    for advice in diagnosis::diagnose(l, report) {
        writeln!(out, "<p class=\"advice\">{}</p>", escape(&advice))?;
    }
    Ok(())
}

fn write_row(out: &mut dyn Write, label: &str, s: &LatencySummary) -> anyhow::Result<()> {
    let cells = latency_cells(s).unwrap_or_default();
    writeln!(
        out,
        "<tr><td>{label}</td><td>{}</td><td>{}</td></tr>",
        s.count,
        cells.join("</td><td>")
    )?;
    Ok(())
}

fn write_spectra(out: &mut dyn Write, report: &Report) -> anyhow::Result<()> {
    writeln!(out, "<h2>Latency percentile spectra</h2>")?;
    for (title, pick) in [
        (
            "handshake (SYN → handshake complete)",
            handshake as fn(&ListenerReport) -> &LatencySummary,
        ),
        ("accept wait (handshake → accept())", accept_wait),
        ("SYN → accept()", syn_to_accept),
    ] {
        let lines: Vec<Line> = report
            .listeners
            .iter()
            .filter(|l| pick(l).count > 0)
            .map(|l| Line {
                name: format!(":{}", l.port),
                points: pick(l).spectrum.iter().map(|&[p, v]| (p, v)).collect(),
            })
            .collect();
        if lines.is_empty() {
            continue;
        }
        writeln!(out, "<figure>{}</figure>", plots::spectrum(title, &lines)?)?;
    }
    Ok(())
}

fn handshake(l: &ListenerReport) -> &LatencySummary {
    &l.handshake_us
}

fn accept_wait(l: &ListenerReport) -> &LatencySummary {
    &l.accept_wait_us
}

fn syn_to_accept(l: &ListenerReport) -> &LatencySummary {
    &l.syn_to_accept_us
}

/// Per-second charts from the report's timeline: accepts, drops, and the accept queue's
/// maximum against the backlog.
fn write_timeline(out: &mut dyn Write, report: &Report) -> anyhow::Result<()> {
    if report.timeline.is_empty() {
        return Ok(());
    }
    writeln!(out, "<h2>Per second</h2>")?;
    let mut by_port: BTreeMap<u16, Vec<&super::TimelinePoint>> = BTreeMap::new();
    for point in &report.timeline {
        by_port.entry(point.port).or_default().push(point);
    }
    let series = |value: &dyn Fn(&super::TimelinePoint) -> Option<f64>| -> Vec<Line> {
        by_port
            .iter()
            .map(|(port, points)| Line {
                name: format!(":{port}"),
                points: points
                    .iter()
                    .filter_map(|p| value(p).map(|v| (p.second as f64, v)))
                    .collect(),
            })
            .collect()
    };
    let accepted = series(&|p| Some(p.accepted as f64));
    writeln!(
        out,
        "<figure>{}</figure>",
        plots::per_second("connections accepted per second", "accepts", &accepted)?
    )?;
    let drops = series(&|p| p.listen_drops.map(|d| d as f64));
    writeln!(
        out,
        "<figure>{}</figure>",
        plots::per_second("listen drops per second", "drops", &drops)?
    )?;
    let mut queue = series(&|p| p.accept_queue_max.map(f64::from));
    queue.extend(by_port.iter().map(|(port, points)| {
        Line {
            name: format!(":{port} backlog"),
            points: points
                .iter()
                .filter_map(|p| p.backlog.map(|b| (p.second as f64, f64::from(b))))
                .collect(),
        }
    }));
    writeln!(
        out,
        "<figure>{}</figure>",
        plots::per_second(
            "accept queue (max per second) and its limit",
            "connections",
            &queue
        )?
    )?;
    Ok(())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{TimelinePoint, sample};

    fn page(report: &Report) -> String {
        let mut out = Vec::new();
        write(report, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn is_self_contained_with_drawn_plots_and_the_report_embedded() {
        let mut report = sample::report();
        report.timeline = (0..5)
            .map(|second| TimelinePoint {
                second,
                duration_ms: 1000,
                netns: 4026531840,
                port: 8080,
                syn_received: 20,
                handshakes: 20,
                accepted: 18 + second,
                listen_drops: Some(second),
                listen_overflows: Some(second),
                syn_queue_full: Some(0),
                accept_queue_max: Some(100 + second as u32),
                backlog: Some(128),
                accept_wait_p99_us: Some(600_000.0),
            })
            .collect();
        let html = page(&report);
        // Nothing to fetch: no external script, style, font or image.
        for external in [
            "<script src",
            "<link",
            "@import",
            "url(",
            "src=\"http",
            "href=\"http",
        ] {
            assert!(!html.contains(external), "{external} in the page");
        }
        // Three spectra and three per-second charts, each with a drawn line.
        assert_eq!(html.matches("<svg").count(), 6, "{html}");
        let lines = html
            .split("<polyline")
            .skip(1)
            .filter(|rest| {
                let points = rest.split("points=\"").nth(1).unwrap_or_default();
                points
                    .split('"')
                    .next()
                    .unwrap_or_default()
                    .split(' ')
                    .count()
                    >= 2
            })
            .count();
        assert!(lines >= 6, "{lines} drawn lines");
        assert!(html.contains("99.9%"), "the spectrum's tail is labelled");
        // The embedded report reads back as the same report.
        let json = html
            .split("<script type=\"application/json\" id=\"synscope-report\">")
            .nth(1)
            .and_then(|rest| rest.split("</script>").next())
            .unwrap()
            .replace("<\\/", "</");
        let embedded: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(embedded, report);
        assert!(html.contains("class=\"broken\""));
    }
}
