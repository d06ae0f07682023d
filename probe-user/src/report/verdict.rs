//! The verdict per port: which phase of the server-side time to first byte (kernel handshake,
//! accept queue, hand-off to the handler, handler) holds most of the p99, the figures that show
//! it, and what it means for the kind of server that accepts.
//! A pure function of the listener's figures, so every format says the same.

use super::{Bottleneck, ListenerReport, Sysctls, format::human_us};

/// Below this, a phase is not where a user's time goes (a loopback handshake takes tens of
/// microseconds; a healthy accept loop picks a connection up within a millisecond).
const NOTICEABLE_US: f64 = 1_000.0;

pub fn judge(l: &ListenerReport, sysctls: Option<&Sysctls>, duration_ms: u64) -> Bottleneck {
    let p99 = |s: &super::LatencySummary| (s.count > 0).then_some(s.p99);
    let handshake = p99(&l.handshake_us);
    // Connections still waiting count: leaving them out would understate the wait, and when
    // nobody accepts at all they are the whole story.
    let waiting = l
        .never_accepted
        .oldest_wait_us
        .filter(|_| l.never_accepted.count > 0);
    let accept_wait = match (p99(&l.accept_wait_us), waiting) {
        (Some(a), Some(w)) => Some(a.max(w)),
        (a, w) => a.or(w),
    };
    let read_wait = l.read_wait_us.as_ref().and_then(p99);
    let service = l.service_us.as_ref().and_then(p99);
    if handshake.is_none() && accept_wait.is_none() {
        return Bottleneck {
            phase: "unknown".into(),
            meaning: "no connection completed its handshake while tracing".into(),
            ..Default::default()
        };
    }
    let phases = [
        (Phase::KernelHandshake, handshake.unwrap_or(0.0)),
        (Phase::AcceptQueue, accept_wait.unwrap_or(0.0)),
        (Phase::HandOff, read_wait.unwrap_or(0.0)),
        (Phase::Handler, service.unwrap_or(0.0)),
    ];
    let total: f64 = phases.iter().map(|(_, p99)| p99).sum();
    let (slowest, slowest_p99) = phases
        .iter()
        .copied()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((Phase::AcceptQueue, 0.0));
    // Drops name their queue whatever the waits: a dropped connection has no wait to show.
    let phase = if l.drops.listen_overflows.unwrap_or(0) > 0 {
        Phase::AcceptQueue
    } else if l.drops.syn_queue_full.unwrap_or(0) > 0 {
        Phase::KernelHandshake
    } else if slowest_p99 >= NOTICEABLE_US {
        slowest
    } else {
        return Bottleneck {
            phase: "none".into(),
            evidence: vec![
                phases
                    .iter()
                    .filter(|(phase, _)| phase.traced(l))
                    .map(|(phase, p99)| format!("{} p99 {}", phase.figure(), human_us(*p99)))
                    .collect::<Vec<_>>()
                    .join(", "),
            ],
            meaning: if l.service_us.is_some() {
                "every phase up to the first response byte is quick: the time goes after it \
                 (the rest of the response, or the network)"
                    .into()
            } else {
                "connections reach accept() quickly: if requests are slow, the time goes after \
                 accept(), to the handler (trace the phases after accept to see)"
                    .into()
            },
            ..Default::default()
        };
    };
    let p99_of = |wanted: Phase| {
        phases
            .iter()
            .find(|(phase, _)| *phase == wanted)
            .map_or(0.0, |(_, p99)| *p99)
    };
    let held = p99_of(phase);
    let seconds = (duration_ms as f64 / 1000.0).max(0.001);
    let mut verdict = match phase {
        Phase::AcceptQueue => accept_queue(l, sysctls, held, seconds),
        Phase::KernelHandshake => kernel_handshake(l, held),
        Phase::HandOff => hand_off(l, held),
        Phase::Handler => handler(l, held, seconds),
    };
    verdict.p99_us = Some(held);
    verdict.share = (total > 0.0).then(|| round2(held / total));
    verdict
}

/// The phases of the server-side time to first byte, in the order a connection meets them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    KernelHandshake,
    AcceptQueue,
    HandOff,
    Handler,
}

impl Phase {
    fn figure(self) -> &'static str {
        match self {
            Self::KernelHandshake => "handshake",
            Self::AcceptQueue => "accept wait",
            Self::HandOff => "read wait",
            Self::Handler => "service",
        }
    }

    fn traced(self, l: &ListenerReport) -> bool {
        match self {
            Self::HandOff => l.read_wait_us.is_some(),
            Self::Handler => l.service_us.is_some(),
            _ => true,
        }
    }
}

/// Accepted connections wait for their request to be read: a hand-off inside the server.
fn hand_off(l: &ListenerReport, read_wait: f64) -> Bottleneck {
    let summary = l.read_wait_us.clone().unwrap_or_default();
    Bottleneck {
        phase: "hand_off".into(),
        evidence: vec![format!(
            "read wait p99 {} (p50 {}) over {} connections",
            human_us(read_wait),
            human_us(summary.p50),
            summary.count
        )],
        meaning: "accepted connections wait before their request is read: the accept loop \
                  hands them to workers (a pool, goroutines, an event loop) that are busy, or \
                  the clients send their requests late"
            .into(),
        ..Default::default()
    }
}

/// The handler: from reading the request to the first byte of the response.
fn handler(l: &ListenerReport, service: f64, seconds: f64) -> Bottleneck {
    let summary = l.service_us.clone().unwrap_or_default();
    let arrivals = l.accepted as f64 / seconds;
    // Little's law again: requests in progress at once = arrival rate x service time.
    let concurrency = arrivals * summary.mean / 1e6;
    Bottleneck {
        phase: "handler".into(),
        evidence: vec![format!(
            "service p99 {} (p50 {}) over {} connections",
            human_us(service),
            human_us(summary.p50),
            summary.count
        )],
        meaning: format!(
            "the handler takes the time between reading the request and its first response \
             byte: the application's own work, not the kernel's queues or the accept loop; at \
             {arrivals:.1}/s it keeps about {concurrency:.1} requests in progress at once"
        ),
        ..Default::default()
    }
}

fn accept_queue(
    l: &ListenerReport,
    sysctls: Option<&Sysctls>,
    wait: f64,
    seconds: f64,
) -> Bottleneck {
    let mut evidence = vec![format!(
        "accept wait p99 {} (p50 {}) over {} accepted",
        human_us(l.accept_wait_us.p99),
        human_us(l.accept_wait_us.p50),
        l.accept_wait_us.count
    )];
    let never = &l.never_accepted;
    if never.count > 0 {
        evidence.push(format!(
            "{} never accepted, the oldest waiting {}",
            never.count,
            never.oldest_wait_us.map_or("?".into(), human_us)
        ));
    }
    if let (Some(max), Some(backlog)) = (l.accept_queue_max, l.backlog) {
        evidence.push(format!("accept queue up to {max} of {backlog}"));
    }
    if let Some(overflows @ 1..) = l.drops.listen_overflows {
        evidence.push(format!("{overflows} accept-queue overflows"));
    }
    if let Some(abandoned) = &l.abandoned_in_queue {
        let left = abandoned.by_fin + abandoned.by_rst;
        if left > 0 {
            evidence.push(format!(
                "{left} clients gave up while queued, {} of them accepted later anyway",
                abandoned.accepted_later
            ));
        }
    }
    let arrivals = l.handshakes as f64 / seconds;
    let accepts = l.accepted as f64 / seconds;
    let rates = format!("accepted {accepts:.1}/s while handshakes completed at {arrivals:.1}/s");
    evidence.push(rates.clone());

    let mut meaning = Vec::new();
    if l.accepted == 0 {
        meaning.push(
            "nothing accepted the queued connections: the server is stuck or not calling \
             accept() on this socket"
                .to_owned(),
        );
    } else if accepts < arrivals * 0.9 {
        meaning.push(format!(
            "{rates}: the accept loop cannot keep up, blocked by its own work (an event loop \
             running CPU-bound handlers) or short of free workers"
        ));
    } else {
        meaning.push(format!(
            "{rates}: the server keeps up on average but accepts in bursts, busy between them"
        ));
    }
    // One acceptor taking one connection per handler run: each queued connection waits for
    // those ahead of it, so wait ~ queue length x time per connection.
    if l.acceptors.len() == 1
        && accepts > 0.0
        && let Some(max) = l.accept_queue_max
    {
        let per_connection_us = 1e6 / accepts;
        let expected = f64::from(max) * per_connection_us;
        if expected > 0.0 && (0.5..=2.0).contains(&(wait / expected)) {
            meaning.push(format!(
                "the wait is close to queue {max} x {} per connection: one accepting thread \
                 serving connections one at a time",
                human_us(per_connection_us)
            ));
        }
    }
    // Little's law: at that wait, the queue holds arrivals x wait connections.
    if let Some(backlog) = l.backlog {
        let needed = (arrivals * wait / 1e6).ceil();
        let clamp = sysctls
            .and_then(|s| s.somaxconn)
            .map(|s| format!(", somaxconn {s}"))
            .unwrap_or_default();
        meaning.push(format!(
            "{arrivals:.0}/s waiting {} need a queue of {needed:.0} (backlog {backlog}{clamp}); \
             a longer queue only lengthens the wait: accept faster",
            human_us(wait)
        ));
    }
    Bottleneck {
        phase: "accept_queue".into(),
        evidence,
        meaning: meaning.join("; "),
        ..Default::default()
    }
}

fn kernel_handshake(l: &ListenerReport, handshake: f64) -> Bottleneck {
    let syn_queue_full = l.drops.syn_queue_full.unwrap_or(0);
    let retransmits = l.synack_retransmits.unwrap_or(0);
    let mut evidence = vec![format!(
        "handshake p99 {} (p50 {})",
        human_us(handshake),
        human_us(l.handshake_us.p50)
    )];
    let mut meaning = Vec::new();
    if syn_queue_full > 0 {
        evidence.push(format!("{syn_queue_full} SYNs dropped on a full SYN queue"));
        meaning.push(
            "the SYN queue overflows: clients retry their SYN after a second or more; raise \
             net.ipv4.tcp_max_syn_backlog or turn syncookies on"
                .to_owned(),
        );
    }
    if retransmits > 0 {
        evidence.push(format!("{retransmits} SYN-ACKs retransmitted"));
        meaning.push(
            "final ACKs came late or were lost: the network between clients and server loses \
             packets"
                .to_owned(),
        );
    }
    if meaning.is_empty() {
        meaning.push(
            "the round trip to the clients is long: the handshake waits for their final ACK"
                .to_owned(),
        );
    }
    Bottleneck {
        phase: "kernel_handshake".into(),
        evidence,
        meaning: meaning.join("; "),
        ..Default::default()
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The verdict's headline, for the human-readable formats (the meaning follows it).
pub fn headline(b: &Bottleneck) -> String {
    let held = match (b.share, b.p99_us) {
        (Some(share), Some(p99)) => format!(
            ", {:.0} % of the phases' p99s ({})",
            share * 100.0,
            human_us(p99)
        ),
        _ => String::new(),
    };
    match b.phase.as_str() {
        "accept_queue" => format!("the time goes to the accept queue{held}"),
        "kernel_handshake" => format!("the time goes to the kernel handshake{held}"),
        "hand_off" => format!("the time goes to the hand-off after accept(){held}"),
        "handler" => format!("the time goes to the handler{held}"),
        "none" => "the listen path is quick".to_owned(),
        _ => "unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{LatencySummary, NeverAccepted, sample};

    fn latency(count: u64, p50: f64, p99: f64) -> LatencySummary {
        LatencySummary {
            count,
            p50,
            p99,
            ..Default::default()
        }
    }

    /// The Node.js server whose handler burns 20 ms under `wrk -c400 -d10s`, as first tried:
    /// 897 handshakes, 500 accepted, accept wait p50 5 s, p90 8 s, 397 never accepted, queue
    /// up to 399 of 511, no drops.
    fn blocked_event_loop() -> ListenerReport {
        let mut l = sample::report().listeners[0].clone();
        l.handshakes = 897;
        l.accepted = 500;
        l.handshake_us = latency(897, 40.0, 90.0);
        l.accept_wait_us = latency(500, 5_010_000.0, 8_020_000.0);
        l.never_accepted = NeverAccepted {
            count: 397,
            oldest_wait_us: Some(8_400_000.0),
            discarded_at_close: 0,
        };
        l.accept_queue_max = Some(399);
        l.backlog = Some(511);
        l.drops.listen_overflows = Some(0);
        // Traced with --phases none.
        l.read_wait_us = None;
        l.service_us = None;
        l
    }

    #[test]
    fn a_blocked_event_loop_is_named_with_its_figures() {
        let verdict = judge(&blocked_event_loop(), None, 10_000);
        assert_eq!(verdict.phase, "accept_queue");
        assert_eq!(
            verdict.p99_us,
            Some(8_400_000.0),
            "never-accepted waits count"
        );
        assert_eq!(verdict.share, Some(1.0));
        assert!(
            verdict.meaning.contains("cannot keep up"),
            "{}",
            verdict.meaning
        );
        assert!(
            verdict.meaning.contains("need a queue of 754"),
            "{}",
            verdict.meaning
        );
        let evidence = verdict.evidence.join("; ");
        assert!(evidence.contains("397 never accepted"), "{evidence}");
        assert!(evidence.contains("up to 399 of 511"), "{evidence}");
        assert!(evidence.contains("accepted 50.0/s"), "{evidence}");
    }

    #[test]
    fn a_slow_handshake_is_the_kernels() {
        let mut l = blocked_event_loop();
        l.never_accepted = NeverAccepted::default();
        l.accepted = 897;
        l.accept_wait_us = latency(897, 30.0, 200.0);
        l.handshake_us = latency(897, 1_000_000.0, 3_000_000.0);
        l.synack_retransmits = Some(40);
        let verdict = judge(&l, None, 10_000);
        assert_eq!(verdict.phase, "kernel_handshake");
        assert!(verdict.meaning.contains("lost"), "{}", verdict.meaning);
        assert!(verdict.share.unwrap() > 0.99);
    }

    #[test]
    fn quick_ports_and_idle_ports() {
        let mut l = blocked_event_loop();
        l.never_accepted = NeverAccepted::default();
        l.accept_wait_us = latency(500, 30.0, 200.0);
        assert_eq!(judge(&l, None, 10_000).phase, "none");
        l.accept_wait_us = LatencySummary::default();
        l.handshake_us = LatencySummary::default();
        assert_eq!(judge(&l, None, 10_000).phase, "unknown");
    }

    /// A Go server with a slow handler: accepted at once, read at once, 200 ms to answer.
    #[test]
    fn a_slow_handler_is_the_applications() {
        let mut l = blocked_event_loop();
        l.never_accepted = NeverAccepted::default();
        l.accepted = 1_000;
        l.accept_wait_us = latency(1_000, 20.0, 90.0);
        l.read_wait_us = Some(latency(1_000, 30.0, 120.0));
        l.service_us = Some(LatencySummary {
            mean: 200_000.0,
            ..latency(1_000, 200_000.0, 210_000.0)
        });
        let verdict = judge(&l, None, 10_000);
        assert_eq!(verdict.phase, "handler", "{verdict:#?}");
        assert_eq!(verdict.p99_us, Some(210_000.0));
        // 100 connections/s for 200 ms each: 20 in progress at once.
        assert!(
            verdict.meaning.contains("about 20.0 requests"),
            "{}",
            verdict.meaning
        );
        // Read late: the hand-off.
        l.read_wait_us = Some(latency(1_000, 300_000.0, 500_000.0));
        assert_eq!(judge(&l, None, 10_000).phase, "hand_off");
    }
}
