//! Turns the kernel's per-connection events into per-listener statistics.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv6Addr},
};

use probe_common::{AF_INET, ConnEvent, EventKind, ListenerKey, TCP_CLOSE, TCP_CLOSE_WAIT};

use super::{
    FastHashMap, FastHashSet, accept_loop::AcceptLoop, drops::CountedDrops, latency::Latency,
};

#[derive(Clone, Debug, Default)]
pub struct ListenerStats {
    /// Addresses the port is bound to, where known.
    pub addrs: BTreeSet<IpAddr>,
    pub syn_received: u64,
    pub handshakes: u64,
    pub accepted: u64,
    pub handshake: Latency,
    pub accept_wait: Latency,
    pub syn_to_accept: Latency,
    /// After accept(): accept -> the first read that returned bytes (the hand-off to whatever
    /// handles the connection), that read -> the first response byte (the handler), and the
    /// whole server-side time to first byte. One sample per connection accepted while tracing
    /// that answered (the first request of a keep-alive connection only).
    pub read_wait: Latency,
    pub service: Latency,
    pub syn_to_response: Latency,
    pub responses: u64,
    /// Of those, connections whose server spoke before reading anything (no service time).
    pub responded_unasked: u64,
    /// Final ACKs dropped because the accept queue was full (one event each).
    pub ack_overflows: u64,
    /// Every packet the listener discarded, final-ACK overflows included.
    pub listener_discards: u64,
    pub synack_retransmits: u64,
    /// Listen drops, SYN cookies and Fast Open children, one event each (fentry, kprobes).
    pub counted: CountedDrops,
    /// Connections accepted per (pid, command).
    pub acceptors: BTreeMap<(u32, String), u64>,
    /// Accepting threads, batches per wake-up, and the accept loop's absences.
    pub accept_loop: AcceptLoop,
    /// Children queued during the span and not accepted yet: flow -> when their handshake
    /// completed (CLOCK_MONOTONIC ns).
    pub waiting: FastHashMap<Flow, u64>,
    /// Children the listener discarded, unaccepted, when it closed.
    pub discarded_at_close: u64,
    /// Children whose client sent its FIN, or a RST, while they waited in the accept queue.
    pub left_by_fin: u64,
    pub left_by_rst: u64,
    /// Of those, accepted afterwards (the server then spends its handler on nobody).
    pub left_then_accepted: u64,
    left: FastHashSet<Flow>,
}

/// Pending children followed per listener; beyond, new ones are not (a flood of handshakes
/// nobody accepts must not grow memory without end).
const MAX_WAITING: usize = 262_144;

/// Children leaving with a RST this soon after their listener closed were discarded by the
/// close (the kernel resets them in the same call), not abandoned by their clients.
const CLOSE_DISCARD_NS: u64 = 100_000_000;

/// A connection seen from the server: its namespace, port and remote end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    pub netns: u32,
    pub local_port: u16,
    pub remote_port: u16,
    pub remote_addr: [u8; 16],
}

impl Flow {
    pub fn of(event: &ConnEvent) -> Self {
        Self {
            netns: event.netns,
            local_port: event.local_port,
            remote_port: event.remote_port,
            remote_addr: event.remote_addr,
        }
    }
}

impl ListenerStats {
    /// Children still waiting, and the earliest handshake among them.
    pub fn never_accepted(&self) -> (u64, Option<u64>) {
        (
            self.waiting.len() as u64,
            self.waiting.values().copied().min(),
        )
    }

    pub fn has_traffic(&self) -> bool {
        self.syn_received
            + self.handshakes
            + self.accepted
            + self.listener_discards
            + self.counted.listen_drops
            > 0
    }
}

#[derive(Clone, Debug, Default)]
pub struct Aggregator {
    /// A listener is a port in a network namespace: IPv4 and IPv6 sockets on the same port are
    /// one listener, as a user addresses them.
    pub listeners: BTreeMap<ListenerKey, ListenerStats>,
    /// Events whose kind this build does not know (should stay 0).
    pub unknown_events: u64,
    /// The kernel's drop reason for a final ACK that found the accept queue full.
    pub listen_overflow_reason: Option<u32>,
    /// When a listener of each namespace last closed: the children it discards leave at
    /// once. (Per namespace: a closing socket has given its port back when the event fires.)
    pub last_close_ns: BTreeMap<u32, u64>,
}

impl Aggregator {
    /// `count` more SYNs of `key`, counted by the kernel programs instead of sent as events.
    pub fn syns_counted(&mut self, key: ListenerKey, count: u64) {
        self.listener(key.netns, key.port).syn_received += count;
    }

    pub fn record(&mut self, event: &ConnEvent) {
        let Some(kind) = EventKind::from_u32(event.kind) else {
            self.unknown_events += 1;
            return;
        };
        let listen_overflow_reason = self.listen_overflow_reason;
        if kind == EventKind::ListenerClosed {
            self.last_close_ns.insert(event.netns, event.accepted_ns);
            return;
        }
        let last_close_ns = self.last_close_ns.get(&event.netns).copied().unwrap_or(0);
        let stats = self.listener(event.netns, event.local_port);
        match kind {
            EventKind::Syn => stats.syn_received += 1,
            EventKind::Handshake => {
                stats.handshakes += 1;
                if stats.waiting.len() < MAX_WAITING {
                    stats.waiting.insert(Flow::of(event), event.established_ns);
                }
                if event.syn_ns != 0 {
                    stats
                        .handshake
                        .record_ns(event.established_ns.saturating_sub(event.syn_ns));
                }
            }
            EventKind::Accept => {
                stats.accepted += 1;
                let flow = Flow::of(event);
                stats.waiting.remove(&flow);
                if stats.left.remove(&flow) {
                    stats.left_then_accepted += 1;
                }
                stats.accept_loop.accepted(
                    event.pid,
                    event.tid,
                    event.accepted_ns,
                    stats.waiting.is_empty(),
                );
                if event.established_ns != 0 {
                    stats
                        .accept_wait
                        .record_ns(event.accepted_ns.saturating_sub(event.established_ns));
                }
                if event.syn_ns != 0 {
                    stats
                        .syn_to_accept
                        .record_ns(event.accepted_ns.saturating_sub(event.syn_ns));
                }
                *stats
                    .acceptors
                    .entry((event.pid, comm(&event.comm)))
                    .or_default() += 1;
            }
            EventKind::Listen => {
                stats.addrs.insert(address(event.family, &event.local_addr));
            }
            EventKind::ListenerDiscard => {
                stats.listener_discards += 1;
                if Some(event.reason) == listen_overflow_reason {
                    stats.ack_overflows += 1;
                }
            }
            EventKind::SynackRetransmit => stats.synack_retransmits += 1,
            EventKind::ListenCounted => stats.counted.record(event.reason),
            EventKind::FirstResponse => {
                stats.responses += 1;
                let since = |from: u64| (from != 0).then(|| event.response_ns.saturating_sub(from));
                if event.read_ns == 0 {
                    stats.responded_unasked += 1;
                } else {
                    stats
                        .read_wait
                        .record_ns(event.read_ns.saturating_sub(event.accepted_ns));
                    stats
                        .service
                        .record_ns(event.response_ns.saturating_sub(event.read_ns));
                }
                if let Some(total) = since(event.syn_ns) {
                    stats.syn_to_response.record_ns(total);
                }
            }
            EventKind::LeftInQueue => {
                let flow = Flow::of(event);
                let discarded = event.reason == TCP_CLOSE as u32
                    && last_close_ns != 0
                    && event.accepted_ns.saturating_sub(last_close_ns) < CLOSE_DISCARD_NS;
                if discarded {
                    stats.waiting.remove(&flow);
                    stats.discarded_at_close += 1;
                } else {
                    if event.reason == TCP_CLOSE_WAIT as u32 {
                        stats.left_by_fin += 1;
                    } else {
                        stats.left_by_rst += 1;
                    }
                    if stats.left.len() < MAX_WAITING {
                        stats.left.insert(flow);
                    }
                }
            }
            // Taken above.
            EventKind::ListenerClosed => {}
        }
    }

    fn listener(&mut self, netns: u32, port: u16) -> &mut ListenerStats {
        self.listeners
            .entry(ListenerKey::new(netns, port))
            .or_default()
    }
}

/// The kernel's 16-byte address; IPv4 sockets' addresses come v4-mapped.
pub fn address(family: u16, bytes: &[u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(*bytes);
    match (family, v6.to_ipv4_mapped()) {
        (AF_INET, Some(v4)) => IpAddr::V4(v4),
        _ => IpAddr::V6(v6),
    }
}

/// A task's command name from the kernel's 16 bytes (NUL-terminated when shorter).
pub fn comm(raw: &[u8; 16]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use probe_common::AF_INET6;

    use super::*;

    fn event(kind: EventKind, port: u16, syn: u64, est: u64, acc: u64) -> ConnEvent {
        let mut e = ConnEvent::zeroed();
        e.kind = kind as u32;
        e.netns = 7;
        e.local_port = port;
        e.syn_ns = syn;
        e.established_ns = est;
        e.accepted_ns = acc;
        e.pid = 42;
        e.comm[..4].copy_from_slice(b"node");
        e
    }

    #[test]
    fn splits_the_three_latencies() {
        let mut agg = Aggregator::default();
        agg.record(&event(EventKind::Syn, 80, 1_000, 0, 0));
        agg.record(&event(EventKind::Handshake, 80, 1_000, 51_000, 0));
        agg.record(&event(EventKind::Accept, 80, 1_000, 51_000, 2_051_000));
        let stats = &agg.listeners[&ListenerKey::new(7, 80)];
        assert_eq!(
            (stats.syn_received, stats.handshakes, stats.accepted),
            (1, 1, 1)
        );
        // HdrHistogram with 3 significant digits: within 0.1 %.
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001;
        assert!(close(stats.handshake.summary().p50, 50.0));
        assert!(close(stats.accept_wait.summary().p50, 2000.0));
        assert!(close(stats.syn_to_accept.summary().p50, 2050.0));
        assert_eq!(stats.acceptors[&(42, "node".to_owned())], 1);
    }

    #[test]
    fn unknown_stages_count_but_do_not_record_latency() {
        let mut agg = Aggregator::default();
        // Accepted, but the handshake happened before tracing started.
        agg.record(&event(EventKind::Accept, 80, 0, 0, 5_000));
        let stats = &agg.listeners[&ListenerKey::new(7, 80)];
        assert_eq!(stats.accepted, 1);
        assert_eq!(stats.accept_wait.summary().count, 0);
        assert_eq!(stats.syn_to_accept.summary().count, 0);
    }

    #[test]
    fn ports_and_namespaces_are_apart() {
        let mut agg = Aggregator::default();
        agg.record(&event(EventKind::Syn, 80, 1, 0, 0));
        agg.record(&event(EventKind::Syn, 81, 1, 0, 0));
        let mut other_ns = event(EventKind::Syn, 80, 1, 0, 0);
        other_ns.netns = 8;
        agg.record(&other_ns);
        assert_eq!(agg.listeners.len(), 3);
        assert!(agg.listeners.values().all(|s| s.syn_received == 1));
    }

    #[test]
    fn syns_counted_in_the_kernel_add_to_those_sent_as_events() {
        let mut agg = Aggregator::default();
        // A listener beyond the kernel's count map sends its SYNs as events; the rest come as
        // counts, which may name a listener no event has named yet (a flood's).
        agg.record(&event(EventKind::Syn, 80, 1, 0, 0));
        agg.syns_counted(ListenerKey::new(7, 80), 41);
        agg.syns_counted(ListenerKey::new(7, 81), 5);
        assert_eq!(agg.listeners[&ListenerKey::new(7, 80)].syn_received, 42);
        assert_eq!(agg.listeners[&ListenerKey::new(7, 81)].syn_received, 5);
        assert!(agg.listeners[&ListenerKey::new(7, 81)].has_traffic());
    }

    #[test]
    fn listen_events_give_addresses() {
        let mut agg = Aggregator::default();
        let mut listen = event(EventKind::Listen, 80, 0, 0, 0);
        listen.family = AF_INET;
        listen.local_addr = std::net::Ipv4Addr::LOCALHOST.to_ipv6_mapped().octets();
        agg.record(&listen);
        listen.family = AF_INET6;
        listen.local_addr = Ipv6Addr::UNSPECIFIED.octets();
        agg.record(&listen);
        let stats = &agg.listeners[&ListenerKey::new(7, 80)];
        let addrs: Vec<String> = stats.addrs.iter().map(|a| a.to_string()).collect();
        assert_eq!(addrs, ["127.0.0.1", "::"]);
        assert!(!stats.has_traffic());
    }

    #[test]
    fn discards_with_the_overflow_reason_are_overflows() {
        let mut agg = Aggregator {
            listen_overflow_reason: Some(40),
            ..Default::default()
        };
        let mut discard = event(EventKind::ListenerDiscard, 80, 0, 0, 0);
        discard.reason = 40;
        agg.record(&discard);
        discard.reason = 2;
        agg.record(&discard);
        let stats = &agg.listeners[&ListenerKey::new(7, 80)];
        assert_eq!((stats.listener_discards, stats.ack_overflows), (2, 1));
    }

    #[test]
    fn unknown_event_kinds_are_counted() {
        let mut agg = Aggregator::default();
        let mut e = event(EventKind::Syn, 80, 1, 0, 0);
        e.kind = 99;
        agg.record(&e);
        assert_eq!(agg.unknown_events, 1);
        assert!(agg.listeners.is_empty());
    }
}
