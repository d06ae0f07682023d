//! Numbers as people read them, shared by the human-readable formats.

use super::{LatencySummary, ListenerReport};

/// A latency in the unit that keeps it to 3-4 digits: 0.8µs, 45µs, 2.3ms, 150ms, 1.20s.
pub fn human_us(us: f64) -> String {
    if us < 10.0 {
        format!("{us:.1}µs")
    } else if us < 1_000.0 {
        format!("{us:.0}µs")
    } else if us < 10_000.0 {
        format!("{:.2}ms", us / 1e3)
    } else if us < 1_000_000.0 {
        format!("{:.0}ms", us / 1e3)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

pub fn human_ms(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1e3)
    }
}

/// A listener's kernel-side figures in three sentences (queues; drops; retransmits, cookies
/// and Fast Open), `?` where unknown: the same words in every human-readable format.
pub fn kernel_side(l: &ListenerReport) -> [String; 3] {
    let known = |v: Option<u64>| v.map_or("?".to_owned(), |v| v.to_string());
    let known32 = |v: Option<u32>| v.map_or("?".to_owned(), |v| v.to_string());
    [
        format!(
            "queues: backlog {}, accept queue max {}, SYN queue max {}",
            known32(l.backlog),
            known32(l.accept_queue_max),
            known32(l.syn_queue_max)
        ),
        format!(
            "drops: {} in all, {} accept-queue overflows, {} on a full SYN queue",
            known(l.drops.listen_drops),
            known(l.drops.listen_overflows),
            known(l.drops.syn_queue_full)
        ),
        format!(
            "SYN-ACK retransmits {}, SYN cookies sent {}, TCP Fast Open {}",
            known(l.synack_retransmits),
            known(l.cookies.syncookies_sent),
            known(l.fastopen)
        ),
    ]
}

/// min, p50, p90, p99, p99.9, max and mean, each in its unit; `None` without samples.
pub fn latency_cells(s: &LatencySummary) -> Option<[String; 7]> {
    (s.count > 0).then(|| [s.min, s.p50, s.p90, s.p99, s.p999, s.max, s.mean].map(human_us))
}

/// What became of the connections accept() did not take (never accepted, given up by their
/// client while queued), one sentence each, none when nothing happened.
pub fn unaccepted(l: &ListenerReport) -> Vec<String> {
    let mut lines = Vec::new();
    let never = &l.never_accepted;
    if never.count > 0 {
        lines.push(format!(
            "never accepted: {} still in the accept queue at the end, the oldest for {} (the \
             accept wait above counts accepted connections only)",
            never.count,
            never.oldest_wait_us.map_or("?".to_owned(), human_us)
        ));
    }
    if never.discarded_at_close > 0 {
        lines.push(format!(
            "discarded unaccepted when the listener closed: {}",
            never.discarded_at_close
        ));
    }
    if let Some(abandoned) = &l.abandoned_in_queue
        && abandoned.by_fin + abandoned.by_rst > 0
    {
        lines.push(format!(
            "abandoned in the accept queue: {} clients left while waiting ({} by FIN, {} by \
             RST), {} of them accepted later anyway",
            abandoned.by_fin + abandoned.by_rst,
            abandoned.by_fin,
            abandoned.by_rst,
            abandoned.accepted_later
        ));
    }
    lines
}

/// The port's verdict: its headline, then what it means.
pub fn verdict(l: &ListenerReport) -> String {
    format!(
        "verdict: {}: {}.",
        super::verdict::headline(&l.bottleneck),
        l.bottleneck.meaning
    )
}

/// The listener's distributions as rows, labelled with `arrow` (`->` or `→`): the three of
/// the listen path, then the phases after accept() where they are traced.
pub fn latency_rows<'a>(l: &'a ListenerReport, arrow: &str) -> Vec<(String, &'a LatencySummary)> {
    let mut rows = vec![
        ("handshake".to_owned(), &l.handshake_us),
        ("accept wait".to_owned(), &l.accept_wait_us),
        (format!("SYN{arrow}accept"), &l.syn_to_accept_us),
    ];
    for (label, summary) in [
        ("read wait".to_owned(), &l.read_wait_us),
        ("service".to_owned(), &l.service_us),
        (format!("SYN{arrow}1st byte"), &l.syn_to_first_byte_us),
    ] {
        if let Some(summary) = summary {
            rows.push((label, summary));
        }
    }
    rows
}

/// What the phases after accept() cover, when they are traced.
pub fn phases_note(l: &ListenerReport) -> Option<String> {
    let responses = l.first_responses?;
    let unasked = l.responded_unasked.unwrap_or(0);
    let unasked = if unasked > 0 {
        format!(", {unasked} of them spoke before reading (no service time)")
    } else {
        String::new()
    };
    Some(format!(
        "after accept: {responses} connections answered while traced{unasked}; read wait is \
         accept -> first read with bytes, service that read -> first response byte, for the \
         first request of each connection only"
    ))
}

/// Who accepted and how: processes, threads, accepts per wake-up, the longest absence; and the
/// port's sockets when it has several. One sentence each.
pub fn accept_loop(l: &ListenerReport) -> Vec<String> {
    let mut lines = Vec::new();
    let loop_ = &l.accept_loop;
    if loop_.threads > 0 {
        let batches = match (loop_.mean_batch, loop_.largest_batch) {
            (Some(mean), Some(max)) => format!(", {mean:.1} accepts per wake-up (at most {max})"),
            _ => String::new(),
        };
        let absence = loop_
            .longest_absence_us
            .filter(|us| *us >= 1_000.0)
            .map(|us| {
                format!(
                    "; the queue held connections for up to {} with nobody accepting",
                    human_us(us)
                )
            })
            .unwrap_or_default();
        lines.push(format!(
            "accept loop: {} process{}, {} thread{}{batches}{absence}",
            loop_.processes,
            if loop_.processes == 1 { "" } else { "es" },
            loop_.threads,
            if loop_.threads == 1 { "" } else { "s" },
        ));
    }
    for acceptor in &l.acceptors {
        if let Some(pod) = &acceptor.pod {
            let container = acceptor
                .container
                .as_deref()
                .map(|c| format!(", container {}", &c[..c.len().min(12)]))
                .unwrap_or_default();
            lines.push(format!(
                "{}[{}] runs in pod {pod}{container}",
                acceptor.comm, acceptor.pid
            ));
        }
    }
    if l.sockets.len() > 1 {
        let sockets: Vec<String> = l
            .sockets
            .iter()
            .map(|s| {
                format!(
                    "{} on {} queue up to {} of {}, {} drops",
                    s.inode,
                    s.addr.as_deref().unwrap_or("?"),
                    s.accept_queue_max,
                    s.backlog.map_or("?".to_owned(), |b| b.to_string()),
                    s.drops
                )
            })
            .collect();
        lines.push(format!("sockets: {}", sockets.join("; ")));
    }
    if let Some(imbalance) = &l.reuseport_imbalance {
        lines.push(imbalance.clone());
    }
    lines
}

/// The listeners by what a reader looks at first: drops, then traffic (SYNs and handshakes).
pub fn busiest_first(listeners: &[ListenerReport]) -> Vec<&ListenerReport> {
    let weight = |l: &ListenerReport| {
        (
            l.drops.listen_drops.unwrap_or(0),
            l.syn_received + l.handshakes,
        )
    };
    let mut ranked: Vec<&ListenerReport> = listeners.iter().collect();
    ranked.sort_by_key(|l| std::cmp::Reverse(weight(l)));
    ranked
}

/// Listeners a human-readable report shows in full; the rest are folded into one line.
pub const SHOWN_LISTENERS: usize = 20;

/// The listeners worth reading first: the busiest (drops, then SYNs) and at most
/// [`SHOWN_LISTENERS`], in the report's order; and how many were left out, with their traffic.
pub fn shown_listeners(listeners: &[ListenerReport]) -> (Vec<&ListenerReport>, Option<String>) {
    if listeners.len() <= SHOWN_LISTENERS {
        return (listeners.iter().collect(), None);
    }
    let ranked = busiest_first(listeners);
    let folded = &ranked[SHOWN_LISTENERS..];
    let syns: u64 = folded.iter().map(|l| l.syn_received).sum();
    let accepted: u64 = folded.iter().map(|l| l.accepted).sum();
    let drops: u64 = folded.iter().filter_map(|l| l.drops.listen_drops).sum();
    let note = format!(
        "{} more listeners with less traffic are left out here ({syns} SYNs, {accepted} \
         accepted, {drops} drops among them); the JSON report has every one",
        folded.len()
    );
    let mut shown: Vec<&ListenerReport> = ranked[..SHOWN_LISTENERS].to_vec();
    shown.sort_by_key(|l| (l.netns, l.port));
    (shown, Some(note))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units_stay_short() {
        assert_eq!(human_us(0.8), "0.8µs");
        assert_eq!(human_us(45.2), "45µs");
        assert_eq!(human_us(2_345.0), "2.35ms");
        assert_eq!(human_us(150_000.0), "150ms");
        assert_eq!(human_us(1_200_000.0), "1.20s");
        assert_eq!(human_us(75_000_000.0), "75.00s");
    }
}
