//! Draws `synscope top`: a header, the table of listeners, the detail pane of the selected
//! one, and the keys.

use ratatui::{
    Frame,
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Block, Borders, Cell, Paragraph, Row as TableRow, Table, TableState, Wrap},
};

use super::{
    View,
    table::{Row, Span},
};
use crate::report::{
    LatencySummary, diagnose,
    format::{accept_loop, human_us},
};

const COLUMNS: [(&str, u16); 14] = [
    ("NETNS", 10),
    ("PORT", 5),
    ("ACCEPTOR", 18),
    ("CONN/S", 8),
    ("HS p50", 7),
    ("HS p99", 7),
    ("AW p50", 7),
    ("AW p99", 7),
    ("S>A p99", 7),
    ("AQ now/max/limit", 16),
    ("OVFL/S", 7),
    ("SYNQ/S", 7),
    ("DROP/S", 7),
    ("RETX", 5),
];

pub fn draw(frame: &mut Frame, view: &View) {
    let detail_height = if view.detail { 18 } else { 0 };
    let [header, table, detail, keys] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(3),
        Constraint::Length(detail_height),
        Constraint::Length(1),
    ])
    .areas(frame.area());

    let paused = if view.paused { "  [PAUSED]" } else { "" };
    let title = format!(
        "synscope top  kernel {}  every {}  showing {}  sorted by {}{paused}",
        view.kernel,
        humantime::format_duration(view.interval),
        match view.span {
            Span::Interval => "the last interval",
            Span::SinceStart => "everything since start",
        },
        view.sort.name(),
    );
    let status = format!(
        "{} listeners  lost events {}  ({} since start)",
        view.rows.len(),
        view.lost_events,
        humantime::format_duration(std::time::Duration::from_secs(view.elapsed.as_secs()))
    );
    frame.render_widget(
        Paragraph::new(vec![
            Line::styled(title, Style::new().add_modifier(Modifier::BOLD)),
            Line::raw(status),
        ]),
        header,
    );

    let head = TableRow::new(COLUMNS.map(|(name, _)| Cell::from(name)))
        .style(Style::new().add_modifier(Modifier::REVERSED));
    let rows = view.rows.iter().map(|row| TableRow::new(cells(row)));
    let widths = COLUMNS.map(|(_, width)| Constraint::Length(width));
    let mut state = TableState::default().with_selected(Some(view.selected));
    frame.render_stateful_widget(
        Table::new(rows, widths)
            .header(head)
            .row_highlight_style(Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)),
        table,
        &mut state,
    );

    if view.detail
        && let Some(row) = view.rows.get(view.selected)
    {
        frame.render_widget(detail_pane(row, view), detail);
    }
    frame.render_widget(
        Paragraph::new(
            "q quit+report  s sort  t interval/since start  ↑↓ j k select  Enter detail  p pause",
        )
        .style(Style::new().add_modifier(Modifier::REVERSED)),
        keys,
    );
}

/// One row's cells, in the order of [`COLUMNS`].
pub fn cells(row: &Row) -> [String; 14] {
    let latency = |us: Option<f64>| us.map_or("-".to_owned(), human_us);
    let rate = |per_s: Option<f64>| per_s.map_or("?".to_owned(), |r| format!("{r:.1}"));
    let known = |v: Option<u32>| v.map_or("?".to_owned(), |v| v.to_string());
    [
        row.key.netns.to_string(),
        row.key.port.to_string(),
        row.acceptor.clone(),
        format!("{:.1}", row.connections_per_s),
        latency(row.handshake_p50),
        latency(row.handshake_p99),
        latency(row.accept_wait_p50),
        latency(row.accept_wait_p99),
        latency(row.syn_to_accept_p99),
        format!(
            "{}/{}/{}",
            known(row.queue_now),
            known(row.queue_max),
            known(row.backlog)
        ),
        rate(row.overflows_per_s),
        rate(row.syn_queue_full_per_s),
        rate(row.drops_per_s),
        row.synack_retransmits
            .map_or("?".to_owned(), |n| n.to_string()),
    ]
}

fn detail_pane<'a>(row: &'a Row, view: &'a View) -> Paragraph<'a> {
    let listener = &row.listener;
    let percentiles = |name: &str, s: &LatencySummary| {
        if s.count == 0 {
            return format!("{name:<14} no samples");
        }
        format!(
            "{name:<14} n={:<7} p50 {:>8}  p90 {:>8}  p99 {:>8}  p99.9 {:>8}  max {:>8}",
            s.count,
            human_us(s.p50),
            human_us(s.p90),
            human_us(s.p99),
            human_us(s.p999),
            human_us(s.max)
        )
    };
    let mut lines = vec![
        Line::raw(percentiles("handshake", &listener.handshake_us)),
        Line::raw(percentiles("accept wait", &listener.accept_wait_us)),
        Line::raw(percentiles("SYN -> accept", &listener.syn_to_accept_us)),
        Line::raw(format!(
            "SYNs {}  handshakes {}  accepted {}  addresses {}",
            listener.syn_received,
            listener.handshakes,
            listener.accepted,
            listener.addr.as_deref().unwrap_or("?")
        )),
    ];
    let acceptors: Vec<String> = listener
        .acceptors
        .iter()
        .take(6)
        .map(|a| format!("{}[{}] {}", a.comm, a.pid, a.accepted))
        .collect();
    lines.push(Line::raw(format!(
        "acceptors: {}",
        if acceptors.is_empty() {
            "none".to_owned()
        } else {
            acceptors.join(", ")
        }
    )));
    for line in accept_loop(listener) {
        lines.push(Line::raw(line));
    }
    lines.push(Line::raw(format!(
        "verdict: {}",
        crate::report::verdict::headline(&listener.bottleneck)
    )));
    let advice = diagnose(listener, view.shown_report());
    if advice.is_empty() {
        lines.push(Line::raw("advice: nothing wrong in this span"));
    }
    for line in advice {
        lines.push(Line::raw(format!("advice: {line}")));
    }
    Paragraph::new(lines)
        .wrap(Wrap { trim: true })
        .block(Block::new().borders(Borders::TOP).title(format!(
            " port {} in netns {} ",
            row.key.port, row.key.netns
        )))
}
