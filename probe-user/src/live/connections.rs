//! `synscope trace`: one line per accepted connection and per drop the hooks see as an event,
//! as text columns or NDJSON (a `start` record first, a `summary` record last).

use std::{
    io::Write,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, SystemTime},
};

use probe_common::{COUNTED_MIB_NAMES, ConnEvent, EventKind};

use crate::model::FastHashMap;
use serde::Serialize;
use tokio::sync::Notify;

use crate::{
    model::{
        Visibility,
        aggregate::{Flow, address, comm},
    },
    report::format::human_us,
    trace::EventTap,
};

/// Which connections to print.
#[derive(Clone, Debug, Default)]
pub struct Filters {
    /// Only this network namespace (its inode number).
    pub netns: Option<u32>,
    /// Only connections accepted by this process.
    pub pid: Option<u32>,
    /// Only connections whose SYN -> accept (or, without a SYN, accept wait) exceeds it.
    pub min_wait: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineFormat {
    Text,
    Json,
}

/// What happened to a connection before its accept.
#[derive(Clone, Copy, Debug, Default)]
struct FlowHistory {
    syns: u32,
    synack_retransmits: u32,
}

/// Flows waiting for their accept. A flood of SYNs that are never accepted must not grow it
/// without end: past this many, it starts over (losing only flags, never lines).
const MAX_PENDING_FLOWS: usize = 65_536;

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Record<'a> {
    Start {
        kernel: &'a str,
        hooks: &'a std::collections::BTreeMap<String, String>,
        unobserved: &'a std::collections::BTreeMap<String, String>,
        /// What the flags can say on this kernel.
        flags: &'a [&'a str],
    },
    Accept(&'a Connection),
    Drop(&'a DropLine),
    Summary(&'a Summary),
}

/// One accepted connection.
#[derive(Clone, Debug, Serialize)]
pub struct Connection {
    /// When accept() returned it, RFC 3339 with nanoseconds (UTC).
    pub time: String,
    pub pid: u32,
    pub comm: String,
    pub netns: u32,
    pub local: String,
    pub remote: String,
    /// Null where a stage was not seen (it began before tracing did).
    pub handshake_us: Option<f64>,
    pub accept_wait_us: Option<f64>,
    pub syn_to_accept_us: Option<f64>,
    /// `syn_retried` (the client sent its SYN again: the first was dropped),
    /// `synack_retransmitted` (the server sent its SYN-ACK again).
    pub flags: Vec<&'static str>,
}

/// A drop the hooks saw as an event.
#[derive(Clone, Debug, Serialize)]
pub struct DropLine {
    pub time: String,
    pub netns: u32,
    pub port: u16,
    /// `accept_queue_overflow` (a final ACK found the accept queue full), `listener_discard`
    /// (another packet the listener dropped, with the kernel's reason number), or the kernel
    /// counters the listener moved (fentry, kprobes), e.g. `LINUX_MIB_LISTENOVERFLOWS`.
    pub kind: String,
    /// The remote end, where the event names it.
    pub remote: Option<String>,
    pub reason: Option<u32>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Connections accepted in the namespace and by the process asked for (all by default).
    pub accepted: u64,
    /// Connections and drops printed (after the filters).
    pub printed: u64,
    pub drops: u64,
    pub lost_events: u64,
    pub duration_ms: u64,
}

pub struct ConnectionPrinter {
    out: Box<dyn Write>,
    format: LineFormat,
    filters: Filters,
    /// CLOCK_MONOTONIC (the kernel programs' clock) to wall-clock time.
    boot: SystemTime,
    listen_overflow_reason: Option<u32>,
    flows: FastHashMap<Flow, FlowHistory>,
    pub summary: Summary,
    /// Set once standard output is gone (`synscope trace | head`): tracing should stop.
    pub closed: Arc<Notify>,
    failed: bool,
}

impl ConnectionPrinter {
    pub fn new(out: Box<dyn Write>, format: LineFormat, filters: Filters) -> Self {
        Self {
            out,
            format,
            filters,
            boot: crate::trace::clock::monotonic_epoch(),
            listen_overflow_reason: None,
            flows: FastHashMap::default(),
            summary: Summary::default(),
            closed: Arc::new(Notify::new()),
            failed: false,
        }
    }

    /// The header (text) or the `start` record (JSON).
    pub fn start(&mut self, kernel: &str, visibility: &Visibility) {
        self.listen_overflow_reason = visibility.listen_overflow_reason;
        let mut flags = vec!["syn_retried"];
        if visibility.synack_retransmits {
            flags.push("synack_retransmitted");
        }
        match self.format {
            LineFormat::Json => self.json(&Record::Start {
                kernel,
                hooks: &visibility.hooks,
                unobserved: &visibility.unobserved,
                flags: &flags,
            }),
            LineFormat::Text => {
                let header = format!(
                    "{:<30} {:>7} {:<15} {:>10} {:<22} {:<22} {:>9} {:>11} {:>11} FLAGS",
                    "TIME",
                    "PID",
                    "COMM",
                    "NETNS",
                    "LOCAL",
                    "REMOTE",
                    "HANDSHAKE",
                    "ACCEPT_WAIT",
                    "SYN->ACCEPT"
                );
                self.line(&header);
            }
        }
        self.flush();
    }

    /// The `summary` record (JSON) or line (text, on standard error: the columns stay clean).
    pub fn finish(&mut self, lost_events: u64, duration: Duration) {
        self.summary.lost_events = lost_events;
        self.summary.duration_ms = duration.as_millis() as u64;
        let summary = self.summary.clone();
        match self.format {
            LineFormat::Json => self.json(&Record::Summary(&summary)),
            LineFormat::Text => eprintln!(
                "synscope: {} connections accepted, {} drops seen, {} lines printed, {} events lost",
                summary.accepted, summary.drops, summary.printed, summary.lost_events
            ),
        }
        self.flush();
    }

    fn accepted(&mut self, event: &ConnEvent) {
        let history = self.flows.remove(&Flow::of(event)).unwrap_or_default();
        if !self.wanted(event.netns, Some(event.pid)) {
            return;
        }
        self.summary.accepted += 1;
        let span = |from: u64| (from != 0).then(|| event.accepted_ns.saturating_sub(from));
        let established = (event.syn_ns != 0 && event.established_ns != 0)
            .then(|| event.established_ns.saturating_sub(event.syn_ns));
        let accept_wait = span(event.established_ns);
        let syn_to_accept = span(event.syn_ns);
        if let Some(min_wait) = self.filters.min_wait {
            let longest = syn_to_accept.or(accept_wait).unwrap_or(0);
            if Duration::from_nanos(longest) <= min_wait {
                return;
            }
        }
        let mut flags = Vec::new();
        if history.syns > 1 {
            flags.push("syn_retried");
        }
        if history.synack_retransmits > 0 {
            flags.push("synack_retransmitted");
        }
        let us = |ns: Option<u64>| ns.map(|ns| (ns as f64 / 1000.0 * 1000.0).round() / 1000.0);
        let connection = Connection {
            time: self.wall_time(event.accepted_ns),
            pid: event.pid,
            comm: comm(&event.comm),
            netns: event.netns,
            local: endpoint(event.family, &event.local_addr, event.local_port),
            remote: endpoint(event.family, &event.remote_addr, event.remote_port),
            handshake_us: us(established),
            accept_wait_us: us(accept_wait),
            syn_to_accept_us: us(syn_to_accept),
            flags,
        };
        self.summary.printed += 1;
        match self.format {
            LineFormat::Json => self.json(&Record::Accept(&connection)),
            LineFormat::Text => {
                let shown = |us: Option<f64>| us.map_or("-".to_owned(), human_us);
                let flags = if connection.flags.is_empty() {
                    "-".to_owned()
                } else {
                    connection.flags.join(",")
                };
                let line = format!(
                    "{:<30} {:>7} {:<15} {:>10} {:<22} {:<22} {:>9} {:>11} {:>11} {flags}",
                    connection.time,
                    connection.pid,
                    connection.comm,
                    connection.netns,
                    connection.local,
                    connection.remote,
                    shown(connection.handshake_us),
                    shown(connection.accept_wait_us),
                    shown(connection.syn_to_accept_us),
                );
                self.line(&line);
            }
        }
    }

    fn dropped(&mut self, event: &ConnEvent, kind: String, remote: bool, reason: Option<u32>) {
        if !self.wanted(event.netns, None) {
            return;
        }
        self.summary.drops += 1;
        if self.filters.min_wait.is_some() {
            return;
        }
        let drop = DropLine {
            time: humantime::format_rfc3339_nanos(SystemTime::now()).to_string(),
            netns: event.netns,
            port: event.local_port,
            kind,
            remote: remote.then(|| endpoint(event.family, &event.remote_addr, event.remote_port)),
            reason,
        };
        self.summary.printed += 1;
        match self.format {
            LineFormat::Json => self.json(&Record::Drop(&drop)),
            LineFormat::Text => {
                let reason = drop
                    .reason
                    .map(|r| format!(" reason={r}"))
                    .unwrap_or_default();
                let line = format!(
                    "{:<30} drop {} on port {} netns {}{reason}",
                    drop.time, drop.kind, drop.port, drop.netns
                );
                self.line(&line);
            }
        }
    }

    fn wanted(&self, netns: u32, pid: Option<u32>) -> bool {
        self.filters.netns.is_none_or(|wanted| wanted == netns)
            && self.filters.pid.is_none_or(|wanted| Some(wanted) == pid)
    }

    fn remember(&mut self, event: &ConnEvent, update: impl FnOnce(&mut FlowHistory)) {
        if self.flows.len() >= MAX_PENDING_FLOWS {
            self.flows.clear();
        }
        update(self.flows.entry(Flow::of(event)).or_default());
    }

    fn wall_time(&self, monotonic_ns: u64) -> String {
        humantime::format_rfc3339_nanos(self.boot + Duration::from_nanos(monotonic_ns)).to_string()
    }

    fn json(&mut self, record: &Record<'_>) {
        match serde_json::to_string(record) {
            Ok(line) => self.line(&line),
            Err(e) => eprintln!("synscope: cannot encode a record: {e}"),
        }
    }

    fn line(&mut self, line: &str) {
        if self.failed {
            return;
        }
        if writeln!(self.out, "{line}").is_err() {
            self.stop_writing();
        }
    }

    fn flush(&mut self) {
        if !self.failed && self.out.flush().is_err() {
            self.stop_writing();
        }
    }

    /// Standard output is gone (a closed pipe): nothing more can be shown, so tracing stops.
    fn stop_writing(&mut self) {
        self.failed = true;
        self.closed.notify_one();
    }
}

impl EventTap for ConnectionPrinter {
    fn event(&mut self, event: &ConnEvent) {
        match EventKind::from_u32(event.kind) {
            Some(EventKind::Syn) => self.remember(event, |h| h.syns += 1),
            Some(EventKind::SynackRetransmit) => {
                self.remember(event, |h| h.synack_retransmits += 1)
            }
            Some(EventKind::Accept) => self.accepted(event),
            Some(EventKind::ListenerDiscard) => {
                let kind = if Some(event.reason) == self.listen_overflow_reason {
                    "accept_queue_overflow"
                } else {
                    "listener_discard"
                };
                self.dropped(event, kind.to_owned(), false, Some(event.reason));
            }
            Some(EventKind::ListenCounted) => {
                let moved: Vec<&str> = COUNTED_MIB_NAMES
                    .iter()
                    .enumerate()
                    .filter(|(bit, _)| event.reason & (1 << bit) != 0)
                    .map(|(_, name)| *name)
                    .collect();
                // Fast Open children and cookies sent are not drops.
                let drops = moved.iter().any(|name| {
                    name.contains("DROP") || name.contains("OVERFLOW") || name.ends_with("FAILED")
                });
                if drops {
                    self.dropped(event, moved.join(","), false, None);
                }
            }
            _ => {}
        }
    }

    fn batch_done(&mut self) {
        self.flush();
    }
}

fn endpoint(family: u16, addr: &[u8; 16], port: u16) -> String {
    match address(family, addr) {
        IpAddr::V4(v4) => SocketAddr::from((v4, port)).to_string(),
        IpAddr::V6(v6) => SocketAddr::from((v6, port)).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use probe_common::AF_INET;

    use super::*;

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn event(kind: EventKind, remote_port: u16) -> ConnEvent {
        let mut e = ConnEvent::zeroed();
        e.kind = kind as u32;
        e.netns = 7;
        e.family = AF_INET;
        e.local_port = 8080;
        e.remote_port = remote_port;
        e.local_addr = std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped().octets();
        e.remote_addr = std::net::Ipv4Addr::new(10, 0, 0, 2)
            .to_ipv6_mapped()
            .octets();
        e
    }

    fn accept(remote_port: u16, wait_ms: u64, pid: u32) -> ConnEvent {
        let mut e = event(EventKind::Accept, remote_port);
        e.syn_ns = 1_000_000_000;
        e.established_ns = e.syn_ns + 50_000;
        e.accepted_ns = e.established_ns + wait_ms * 1_000_000;
        e.pid = pid;
        e.comm[..5].copy_from_slice(b"nginx");
        e
    }

    fn records(filters: Filters, events: &[ConnEvent]) -> Vec<serde_json::Value> {
        let out = Shared::default();
        let mut printer = ConnectionPrinter::new(Box::new(out.clone()), LineFormat::Json, filters);
        printer.start("6.18", &Visibility::default());
        for e in events {
            printer.event(e);
        }
        printer.finish(0, Duration::from_secs(1));
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn one_record_per_accept_between_start_and_summary() {
        let mut retried = event(EventKind::Syn, 5001);
        retried.syn_ns = 1;
        let events = [
            retried,
            retried,
            event(EventKind::SynackRetransmit, 5002),
            accept(5001, 3, 42),
            accept(5002, 30, 42),
        ];
        let records = records(Filters::default(), &events);
        let kinds: Vec<&str> = records
            .iter()
            .map(|r| r["type"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["start", "accept", "accept", "summary"]);
        let first = &records[1];
        assert_eq!(first["local"], "127.0.0.1:8080");
        assert_eq!(first["remote"], "10.0.0.2:5001");
        assert_eq!(first["comm"], "nginx");
        assert_eq!(first["handshake_us"], 50.0);
        assert_eq!(first["accept_wait_us"], 3000.0);
        assert_eq!(first["syn_to_accept_us"], 3050.0);
        assert_eq!(first["flags"], serde_json::json!(["syn_retried"]));
        assert_eq!(
            records[2]["flags"],
            serde_json::json!(["synack_retransmitted"])
        );
        assert!(first["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(records[3]["accepted"], 2);
        assert_eq!(records[3]["printed"], 2);
    }

    #[test]
    fn filters_keep_only_what_was_asked() {
        let events = [accept(1, 1, 42), accept(2, 20, 42), accept(3, 20, 43)];
        let slow = records(
            Filters {
                min_wait: Some(Duration::from_millis(10)),
                ..Default::default()
            },
            &events,
        );
        assert_eq!(slow.len(), 4, "{slow:?}");
        let by_pid = records(
            Filters {
                pid: Some(43),
                ..Default::default()
            },
            &events,
        );
        assert_eq!(by_pid.len(), 3);
        assert_eq!(by_pid[1]["remote"], "10.0.0.2:3");
        let other_netns = records(
            Filters {
                netns: Some(8),
                ..Default::default()
            },
            &events,
        );
        assert_eq!(other_netns.len(), 2);
        assert_eq!(other_netns[1]["accepted"], 0);
        assert_eq!(other_netns[1]["printed"], 0);
    }
}
