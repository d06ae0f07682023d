//! Turns the kernel's per-connection events into per-listener statistics.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv6Addr},
};

use probe_common::{AF_INET, ConnEvent, EventKind, ListenerKey};

use super::{drops::CountedDrops, latency::Latency};

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
    /// Final ACKs dropped because the accept queue was full (one event each).
    pub ack_overflows: u64,
    /// Every packet the listener discarded, final-ACK overflows included.
    pub listener_discards: u64,
    pub synack_retransmits: u64,
    /// Listen drops, SYN cookies and Fast Open children, one event each (fentry, kprobes).
    pub counted: CountedDrops,
    /// Connections accepted per (pid, command).
    pub acceptors: BTreeMap<(u32, String), u64>,
}

impl ListenerStats {
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
}

impl Aggregator {
    pub fn record(&mut self, event: &ConnEvent) {
        let Some(kind) = EventKind::from_u32(event.kind) else {
            self.unknown_events += 1;
            return;
        };
        let listen_overflow_reason = self.listen_overflow_reason;
        let stats = self.listener(event.netns, event.local_port);
        match kind {
            EventKind::Syn => stats.syn_received += 1,
            EventKind::Handshake => {
                stats.handshakes += 1;
                if event.syn_ns != 0 {
                    stats
                        .handshake
                        .record_ns(event.established_ns.saturating_sub(event.syn_ns));
                }
            }
            EventKind::Accept => {
                stats.accepted += 1;
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
            // The kernel view's business: the socket's drop counter.
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
