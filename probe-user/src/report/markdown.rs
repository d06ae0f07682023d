//! `--format markdown` (`.md`): for a CI job summary or a pull-request comment. Per port the
//! counts, the three latencies' percentiles, drops, queues and advice; then the thresholds.

use std::io::Write;

use super::{
    LatencySummary, ListenerReport, Report, diagnosis,
    format::{
        accept_loop, human_ms, kernel_side, latency_cells, latency_rows, phases_note,
        shown_listeners, unaccepted, verdict,
    },
    thresholds,
};

pub fn write(report: &Report, out: &mut dyn Write) -> anyhow::Result<()> {
    writeln!(out, "## synscope: listen-path latency per port\n")?;
    writeln!(
        out,
        "Traced {} on Linux {}; {} events lost.\n",
        human_ms(report.duration_ms),
        report.kernel,
        report.lost_events
    )?;
    if let Some(command) = &report.command {
        writeln!(out, "Command: `{}`\n", command.replace('`', "'"))?;
    }
    let broken = report.thresholds.iter().filter(|t| !t.held).count();
    if !report.thresholds.is_empty() {
        let verdict = match broken {
            0 => "✅ every threshold held".to_owned(),
            n => format!("❌ {n} of {} thresholds broken", report.thresholds.len()),
        };
        writeln!(out, "**{verdict}**\n")?;
    }
    if report.listeners.is_empty() {
        writeln!(out, "No connection reached a traced listener.\n")?;
    }
    let (shown, folded) = shown_listeners(&report.listeners);
    for listener in shown {
        write_listener(out, listener, report)?;
    }
    if let Some(folded) = folded {
        writeln!(out, "_{}._\n", escape(&folded))?;
    }
    if !report.thresholds.is_empty() {
        writeln!(out, "### Thresholds\n")?;
        writeln!(out, "| | threshold | port | measured |")?;
        writeln!(out, "|---|---|---|---|")?;
        for result in &report.thresholds {
            let mark = if result.held { "✅" } else { "❌" };
            let port = result.port.map_or("run".to_owned(), |p| p.to_string());
            writeln!(
                out,
                "| {mark} | `{}` | {port} | {} |",
                escape(&result.expression),
                escape(&thresholds::describe(result))
            )?;
        }
        writeln!(out)?;
    }
    let hooks: Vec<String> = report
        .hooks
        .iter()
        .map(|(stage, hook)| format!("{stage}=`{hook}`"))
        .collect();
    writeln!(out, "<sub>hooks: {}</sub>", hooks.join(", "))?;
    Ok(())
}

fn write_listener(out: &mut dyn Write, l: &ListenerReport, report: &Report) -> anyhow::Result<()> {
    let addr = l.addr.as_deref().unwrap_or("unknown address");
    writeln!(out, "### Port {} on {addr} (netns {})\n", l.port, l.netns)?;
    let acceptors: Vec<String> = l
        .acceptors
        .iter()
        .take(3)
        .map(|a| format!("`{}`[{}]", escape(&a.comm), a.pid))
        .collect();
    let by = if acceptors.is_empty() {
        String::new()
    } else {
        format!(", accepted by {}", acceptors.join(", "))
    };
    writeln!(
        out,
        "{} SYNs, {} handshakes, {} accepted{by}.\n",
        l.syn_received, l.handshakes, l.accepted
    )?;
    writeln!(
        out,
        "| | count | min | p50 | p90 | p99 | p99.9 | max | mean |"
    )?;
    writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|--:|")?;
    for (label, summary) in latency_rows(l, " → ") {
        write_row(out, &label, summary)?;
    }
    writeln!(out)?;
    for line in kernel_side(l) {
        writeln!(out, "- {line}")?;
    }
    for line in accept_loop(l)
        .into_iter()
        .chain(phases_note(l))
        .chain(unaccepted(l))
    {
        writeln!(out, "- {}", escape(&line))?;
    }
    writeln!(out, "- **{}**", escape(&verdict(l)))?;
    for advice in diagnosis::diagnose(l, report) {
        writeln!(out, "- ⚠️ {}", escape(&advice))?;
    }
    writeln!(out)?;
    Ok(())
}

fn write_row(out: &mut dyn Write, label: &str, s: &LatencySummary) -> anyhow::Result<()> {
    let cells = latency_cells(s).unwrap_or_default();
    writeln!(out, "| {label} | {} | {} |", s.count, cells.join(" | "))?;
    Ok(())
}

/// Keeps a table cell a cell: pipes would end it.
fn escape(text: &str) -> String {
    text.replace('|', "\\|")
}
