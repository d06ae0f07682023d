//! The default report: one block per listener, fits an 80-column terminal.

use std::{collections::BTreeMap, io::Write};

use super::{
    LatencySummary, ListenerReport, PendingEvicted, Report, diagnosis,
    format::{
        accept_loop, human_ms, kernel_side, latency_cells, latency_rows, phases_note,
        shown_listeners, unaccepted, verdict,
    },
    thresholds,
};
use crate::trace::hooks::Stage;

/// The total of per-stage counts and the stages that have some ("accept 2, syn 1"); `None`
/// when all are zero.
fn per_stage_counts(counts: &BTreeMap<String, u64>) -> Option<(u64, String)> {
    let total: u64 = counts.values().sum();
    let stages: Vec<String> = counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(stage, n)| format!("{stage} {n}"))
        .collect();
    (total > 0).then(|| (total, stages.join(", ")))
}

pub fn write(report: &Report, out: &mut dyn Write) -> anyhow::Result<()> {
    writeln!(
        out,
        "synscope: traced {}, Linux {}, {} events lost",
        human_ms(report.duration_ms),
        report.kernel,
        report.lost_events
    )?;
    // In the order a connection goes through the stages.
    let mut hooks: Vec<(&String, &String)> = report.hooks.iter().collect();
    hooks.sort_by_key(|(stage, _)| Stage::ALL.iter().position(|s| s.name() == *stage));
    let hooks: Vec<String> = hooks
        .into_iter()
        .map(|(stage, hook)| format!("{stage}={hook}"))
        .collect();
    write_wrapped(out, "hooks: ", &hooks)?;
    // Why a stage is unobserved belongs with the hooks, not in a warning on every run.
    for (stage, why) in &report.unobserved {
        write_paragraph(out, "       ", &format!("{stage}: {why}"))?;
    }
    if let Some((failures, per_stage)) = per_stage_counts(&report.kernel_failures) {
        write_paragraph(
            out,
            "warning: ",
            &format!(
                "{failures} kernel reads failed in synscope's programs ({per_stage}): the \
                 figures of those stages may be low"
            ),
        )?;
    }
    if let Some((skipped, per_stage)) = per_stage_counts(&report.skipped_runs) {
        write_paragraph(
            out,
            "warning: ",
            &format!(
                "the kernel skipped {skipped} runs of synscope's programs ({per_stage}), reached \
                 while another kprobe or BPF program ran on the same CPU: the figures of those \
                 stages may be low"
            ),
        )?;
    }
    if let Some(evicted) = report.pending_evicted.as_ref().filter(|e| e.total() > 0) {
        write_paragraph(out, "note: ", &evictions(evicted))?;
    }
    if report.listeners.is_empty() {
        writeln!(out, "\nNo connection reached a traced listener.")?;
    }
    let (shown, folded) = shown_listeners(&report.listeners);
    for listener in shown {
        writeln!(out)?;
        write_listener(out, listener)?;
        write_kernel_side(out, listener)?;
        for line in accept_loop(listener)
            .into_iter()
            .chain(phases_note(listener))
            .chain(unaccepted(listener))
        {
            write_paragraph(out, "  ", &line)?;
        }
        write_paragraph(out, "  → ", &verdict(listener))?;
        for advice in diagnosis::diagnose(listener, report) {
            write_paragraph(out, "  ! ", &advice)?;
        }
    }
    if let Some(folded) = folded {
        writeln!(out)?;
        write_paragraph(out, "", &folded)?;
    }
    if !report.thresholds.is_empty() {
        writeln!(out, "\nthresholds (--fail-if):")?;
        for result in &report.thresholds {
            let mark = if result.held { "✓" } else { "✗" };
            write_paragraph(out, &format!("  {mark} "), &thresholds::describe(result))?;
        }
    }
    Ok(())
}

fn write_listener(out: &mut dyn Write, l: &ListenerReport) -> anyhow::Result<()> {
    let addr = l.addr.as_deref().unwrap_or("unknown address");
    writeln!(out, "port {} on {} (netns {})", l.port, addr, l.netns)?;
    let acceptors: Vec<String> = l
        .acceptors
        .iter()
        .take(3)
        .map(|a| format!("{}[{}]", a.comm, a.pid))
        .collect();
    let more = l.acceptors.len().saturating_sub(3);
    let by = match (acceptors.is_empty(), more) {
        (true, _) => String::new(),
        (false, 0) => format!(" by {}", acceptors.join(", ")),
        (false, n) => format!(" by {} and {n} more", acceptors.join(", ")),
    };
    writeln!(
        out,
        "  SYNs {}  handshakes {}  accepted {}{by}",
        l.syn_received, l.handshakes, l.accepted
    )?;
    writeln!(
        out,
        "  {:<14}{:>7}{:>8}{:>8}{:>8}{:>8}{:>8}{:>8}{:>8}",
        "", "count", "min", "p50", "p90", "p99", "p99.9", "max", "mean"
    )?;
    for (label, s) in latency_rows(l, "->") {
        write_row(out, &label, s)?;
    }
    Ok(())
}

fn write_row(out: &mut dyn Write, label: &str, s: &LatencySummary) -> anyhow::Result<()> {
    let Some(cells) = latency_cells(s) else {
        writeln!(out, "  {label:<14}{:>7}       -", 0)?;
        return Ok(());
    };
    write!(out, "  {label:<14}{:>7}", s.count)?;
    for cell in cells {
        write!(out, "{cell:>8}")?;
    }
    writeln!(out)?;
    Ok(())
}

/// Queues and drops, one line each.
fn write_kernel_side(out: &mut dyn Write, l: &ListenerReport) -> anyhow::Result<()> {
    for line in kernel_side(l) {
        writeln!(out, "  {line}")?;
    }
    Ok(())
}

/// Prints `text` after `prefix`, wrapped before 80 columns with a hanging indent.
fn write_paragraph(out: &mut dyn Write, prefix: &str, text: &str) -> anyhow::Result<()> {
    let indent = " ".repeat(prefix.chars().count());
    let mut line = prefix.to_owned();
    for word in text.split_whitespace() {
        if line.chars().count() > indent.len()
            && line.chars().count() + 1 + word.chars().count() > 79
        {
            writeln!(out, "{line}")?;
            line = indent.clone();
        } else if line.chars().count() > indent.len() {
            line.push(' ');
        }
        line.push_str(word);
    }
    writeln!(out, "{line}")?;
    Ok(())
}

/// Prints `items` after `prefix`, wrapping before 80 columns.
fn write_wrapped(out: &mut dyn Write, prefix: &str, items: &[String]) -> anyhow::Result<()> {
    let indent = " ".repeat(prefix.len());
    let mut line = prefix.to_owned();
    for item in items {
        if line.len() > prefix.len() && line.len() + 2 + item.len() > 79 {
            writeln!(out, "{line}")?;
            line = indent.clone();
        } else if line.len() > prefix.len() {
            line.push_str("  ");
        }
        line.push_str(item);
    }
    writeln!(out, "{line}")?;
    Ok(())
}

/// What the maps of connections in progress lost to eviction, and what that means.
fn evictions(evicted: &PendingEvicted) -> String {
    let parts: Vec<String> = [
        (evicted.syn_stamps, "SYN times"),
        (evicted.queued_children, "queued children"),
        (evicted.followed, "followed connections"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    format!(
        "the kernel's maps of connections in progress ({} entries each) were full and evicted {}: \
         SYNs never answered (a flood) and children never accepted are the usual cause; a \
         connection that went on lacks that stage's figure",
        evicted.capacity,
        parts.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::sample;

    #[test]
    fn fits_80_columns_and_names_the_acceptor() {
        let mut out = Vec::new();
        write(&super::super::sample::report(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        for line in text.lines() {
            assert!(line.chars().count() <= 80, "too wide: {line:?}");
        }
        assert!(text.contains("port 8080 on 0.0.0.0 (netns 4026531840)"));
        assert!(text.contains("by node[1234]"));
        assert!(text.contains("accept wait"));
        assert!(text.contains("300ms"), "{text}");
    }

    #[test]
    fn many_listeners_show_the_busiest_and_fold_the_rest() {
        let mut report = sample::report();
        let template = report.listeners[0].clone();
        report.listeners = (0..300u16)
            .map(|i| {
                let mut l = template.clone();
                l.port = 10_000 + i;
                // Port 10_150 is by far the busiest; the others get less the higher they are.
                l.syn_received = if i == 150 {
                    1_000_000
                } else {
                    u64::from(300 - i)
                };
                l.drops.listen_drops = Some(0);
                l
            })
            .collect();
        let mut out = Vec::new();
        write(&report, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let shown = text.matches("\nport ").count();
        assert_eq!(shown, 20, "{text}");
        assert!(text.contains("port 10150 on"), "the busiest is shown");
        assert!(!text.contains("port 10299 on"), "the quietest is folded");
        assert!(text.contains("280 more listeners"), "{text}");
    }

    #[test]
    fn evictions_are_noted_only_when_there_were_some() {
        let text = |evicted: Option<PendingEvicted>| {
            let mut report = sample::report();
            report.pending_evicted = evicted;
            let mut out = Vec::new();
            write(&report, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        let none = PendingEvicted {
            capacity: 65_536,
            ..Default::default()
        };
        assert!(!text(Some(none.clone())).contains("evicted"));
        assert!(!text(None).contains("evicted"));
        let flood = text(Some(PendingEvicted {
            syn_stamps: 78_001,
            followed: 3,
            ..none
        }));
        let note = flood.replace("\n      ", " ");
        assert!(
            note.contains("(65536 entries each) were full and evicted 78001 SYN times, 3 followed connections:"),
            "{flood}"
        );
        assert!(!note.contains("queued children:"), "{flood}");
    }

    #[test]
    fn runs_the_kernel_skipped_are_a_warning_per_stage() {
        let mut report = sample::report();
        let text = |report: &Report| {
            let mut out = Vec::new();
            write(report, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert!(!text(&report).contains("skipped"));
        report.skipped_runs = [("handshake".to_owned(), 3), ("syn".to_owned(), 1)].into();
        let warned = text(&report).replace("\n         ", " ");
        assert!(
            warned.contains(
                "warning: the kernel skipped 4 runs of synscope's programs (handshake 3, syn 1)"
            ),
            "{warned}"
        );
    }

    #[test]
    fn says_when_nothing_was_seen() {
        let mut report = super::super::sample::report();
        report.listeners.clear();
        let mut out = Vec::new();
        write(&report, &mut out).unwrap();
        assert!(
            String::from_utf8(out)
                .unwrap()
                .contains("No connection reached")
        );
    }
}
