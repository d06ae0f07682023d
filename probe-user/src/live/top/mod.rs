//! `synscope top`: the listen path of every listener, refreshed every interval, full screen
//! (ratatui) on a terminal; one NDJSON snapshot per interval otherwise.

pub mod screen;
pub mod table;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write as _,
    time::{Duration, Instant},
};

use probe_common::ListenerKey;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use serde::Serialize;
use tokio::sync::mpsc;

use self::table::{Row, SortBy, Span};
use crate::{
    model::kernel_view::QueueNow,
    report::{Report, RunInfo, analyze},
    trace::SessionHandle,
};

/// What the screen shows, and the keys' state.
pub struct View {
    pub kernel: String,
    pub interval: Duration,
    pub span: Span,
    pub sort: SortBy,
    pub selected: usize,
    pub detail: bool,
    pub paused: bool,
    pub rows: Vec<Row>,
    pub lost_events: u64,
    pub elapsed: Duration,
    interval_report: Report,
    so_far: Report,
    queues: BTreeMap<ListenerKey, QueueNow>,
    /// Every listener that saw traffic since the start, so a quiet one keeps its row.
    listeners: BTreeSet<ListenerKey>,
    started: Instant,
}

impl View {
    pub fn new(kernel: String, interval: Duration) -> Self {
        let empty = analyze(&Default::default(), &RunInfo::default());
        Self {
            kernel,
            interval,
            span: Span::Interval,
            sort: SortBy::Hurt,
            selected: 0,
            detail: false,
            paused: false,
            rows: Vec::new(),
            lost_events: 0,
            elapsed: Duration::ZERO,
            interval_report: empty.clone(),
            so_far: empty,
            queues: BTreeMap::new(),
            listeners: BTreeSet::new(),
            started: Instant::now(),
        }
    }

    /// The report the rows show.
    pub fn shown_report(&self) -> &Report {
        match self.span {
            Span::Interval => &self.interval_report,
            Span::SinceStart => &self.so_far,
        }
    }

    /// Takes the session's latest figures.
    pub fn update(
        &mut self,
        interval: Report,
        queues: BTreeMap<ListenerKey, QueueNow>,
        so_far: Report,
    ) {
        self.listeners.extend(
            so_far
                .listeners
                .iter()
                .map(|l| ListenerKey::new(l.netns, l.port)),
        );
        self.lost_events = so_far.lost_events;
        self.elapsed = self.started.elapsed();
        self.interval_report = interval;
        self.so_far = so_far;
        self.queues = queues;
        self.rebuild();
    }

    fn rebuild(&mut self) {
        // The selection follows its listener when the order changes.
        let selected = self.rows.get(self.selected).map(|r| r.key);
        let keys: Vec<ListenerKey> = self.listeners.iter().copied().collect();
        self.rows = table::rows(&keys, self.shown_report(), &self.queues);
        table::sort(&mut self.rows, self.sort);
        if let Some(key) = selected {
            self.selected = self.rows.iter().position(|r| r.key == key).unwrap_or(0);
        }
        self.selected = self.selected.min(self.rows.len().saturating_sub(1));
    }

    /// Applies a key; false when it asks to quit.
    pub fn key(&mut self, key: KeyEvent) -> bool {
        if key.kind != KeyEventKind::Press {
            return true;
        }
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc if !self.detail || key.code == KeyCode::Char('q') => {
                return false;
            }
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => return false,
            KeyCode::Esc => self.detail = false,
            KeyCode::Char('s') => {
                self.sort = self.sort.next();
                self.rebuild();
            }
            KeyCode::Char('t') => {
                self.span = self.span.toggled();
                self.rebuild();
            }
            KeyCode::Char('p') => self.paused = !self.paused,
            KeyCode::Enter => self.detail = !self.detail,
            KeyCode::Down | KeyCode::Char('j') => {
                self.selected = (self.selected + 1).min(self.rows.len().saturating_sub(1));
            }
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            _ => {}
        }
        true
    }
}

/// The full-screen view until `q` or Ctrl-C (or the session ends); the terminal is restored
/// whichever way it ends.
pub async fn full_screen(
    session: SessionHandle,
    kernel: String,
    interval: Duration,
) -> anyhow::Result<()> {
    let mut terminal =
        ratatui::try_init().map_err(|e| anyhow::anyhow!("cannot take over the terminal: {e}"))?;
    let result = screen_loop(&mut terminal, session, kernel, interval).await;
    ratatui::restore();
    result
}

async fn screen_loop(
    terminal: &mut ratatui::DefaultTerminal,
    session: SessionHandle,
    kernel: String,
    interval: Duration,
) -> anyhow::Result<()> {
    let mut keys = key_events();
    let mut view = View::new(kernel, interval);
    let mut tick = tokio::time::interval(interval);
    loop {
        terminal.draw(|frame| screen::draw(frame, &view))?;
        tokio::select! {
            _ = tick.tick() => {
                if view.paused {
                    continue;
                }
                let Some(figures) = figures(&session).await else {
                    return Ok(());
                };
                let (interval, queues, so_far) = figures;
                view.update(interval, queues, so_far);
            }
            event = keys.recv() => match event {
                Some(Event::Key(key)) => {
                    if !view.key(key) {
                        return Ok(());
                    }
                }
                // A resize or anything else: redraw.
                Some(_) => {}
                None => return Ok(()),
            },
        }
    }
}

/// The interval, the queues at its end, and the whole run so far; None once the session ended.
async fn figures(
    session: &SessionHandle,
) -> Option<(Report, BTreeMap<ListenerKey, QueueNow>, Report)> {
    let detail = session.interval_detail().await?;
    let so_far = session.report_so_far().await?;
    let queues = detail.observations.kernel_view.open_listeners();
    Some((detail.report, queues, so_far))
}

/// The terminal's events, read on a thread of their own (crossterm's read blocks).
fn key_events() -> mpsc::UnboundedReceiver<Event> {
    let (sender, receiver) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        while let Ok(event) = event::read() {
            if sender.send(event).is_err() {
                break;
            }
        }
    });
    receiver
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Snapshot<'a> {
    /// One interval's report.
    Interval { report: &'a Report },
    /// The whole run's, last.
    Run { report: &'a Report },
}

/// Writes one NDJSON line to standard output; false once nobody reads it.
pub fn print_snapshot(snapshot: &Snapshot<'_>) -> bool {
    let Ok(line) = serde_json::to_string(snapshot) else {
        return false;
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
}

/// Without a terminal: the interval's report as one NDJSON line per interval, until the
/// session ends or standard output closes.
pub async fn snapshots(session: SessionHandle, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.tick().await; // the first tick is immediate
    loop {
        tick.tick().await;
        let Some(report) = session.interval().await else {
            return;
        };
        if !print_snapshot(&Snapshot::Interval { report: &report }) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn keys_sort_toggle_select_and_quit() {
        let mut view = View::new("6.18".to_owned(), Duration::from_secs(1));
        assert!(view.key(press(KeyCode::Char('s'))));
        assert_eq!(view.sort, SortBy::ConnectionRate);
        assert!(view.key(press(KeyCode::Char('t'))));
        assert_eq!(view.span, Span::SinceStart);
        assert!(view.key(press(KeyCode::Enter)));
        assert!(view.detail);
        // Esc closes the detail pane first, then quits.
        assert!(view.key(press(KeyCode::Esc)));
        assert!(!view.detail);
        assert!(view.key(press(KeyCode::Char('p'))));
        assert!(view.paused);
        assert!(view.key(press(KeyCode::Down)));
        assert_eq!(view.selected, 0, "no rows to move to");
        assert!(!view.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)));
        assert!(!view.key(press(KeyCode::Char('q'))));
    }
}
