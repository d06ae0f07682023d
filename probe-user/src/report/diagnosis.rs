//! Turning a listener's drop and queue figures into advice a user can act on.

use super::{ListenerReport, Report, Sysctls, format::human_us};

/// Lines of advice for `listener`, most urgent first; empty when nothing is wrong.
pub fn diagnose(listener: &ListenerReport, report: &Report) -> Vec<String> {
    let sysctls = report
        .namespaces
        .iter()
        .find(|n| n.netns == listener.netns)
        .map(|n| n.sysctls.clone())
        .unwrap_or_default();
    let mut advice = Vec::new();
    let drops = &listener.drops;
    let backlog = listener.backlog;

    if let Some(overflows @ 1..) = drops.listen_overflows {
        let at_ack = match drops.listen_overflows_at_ack {
            Some(n @ 1..) => format!(" ({n} at the final ACK)"),
            _ => String::new(),
        };
        advice.push(format!(
            "accept queue overflowed {overflows} times{at_ack}, limit {}{}. {} or accept \
             faster (accept wait p99 {}).",
            backlog.map_or("unknown".to_owned(), |b| b.to_string()),
            clamp_note(backlog, &sysctls),
            raise_backlog_advice(backlog, &sysctls),
            human_us(listener.accept_wait_us.p99)
        ));
    } else if let (Some(max), Some(limit)) = (listener.accept_queue_max, backlog)
        && max >= limit
        && limit > 0
    {
        advice.push(format!(
            "accept queue reached its limit ({max} of {limit}): the next burst overflows. {}.",
            raise_backlog_advice(backlog, &sysctls)
        ));
    }
    if let Some(full @ 1..) = drops.syn_queue_full {
        advice.push(format!(
            "{full} SYNs dropped on a full SYN queue with syncookies off: raise the listen() \
             backlog and net.ipv4.tcp_max_syn_backlog{}, or set net.ipv4.tcp_syncookies=1.",
            sysctls
                .tcp_max_syn_backlog
                .map_or(String::new(), |v| format!(" (now {v})"))
        ));
    }
    if let Some(sent @ 1..) = listener.cookies.syncookies_sent {
        let why = if sysctls.tcp_syncookies == Some(2) {
            "net.ipv4.tcp_syncookies=2 sends them for every SYN"
        } else {
            "the SYN queue was full: a SYN flood, or final ACKs slow to arrive"
        };
        advice.push(format!(
            "{sent} SYN cookies sent ({why}); cookie connections lose TCP options such as \
             window scaling unless timestamps are on."
        ));
    }
    if let Some(retransmits @ 1..) = listener.synack_retransmits {
        advice.push(format!(
            "{retransmits} SYN-ACK retransmits: clients' final ACKs were lost or late (a lossy \
             or slow client network), or dropped on a full accept queue; each costs the client \
             at least 1 s."
        ));
    }
    if drops.listen_overflows.is_none()
        && let Some(listen_drops @ 1..) = drops.listen_drops
    {
        advice.push(format!(
            "{listen_drops} listen drops, of a kind not attributable here: {}.",
            drops.attribution
        ));
    }
    advice
}

/// Why the limit may be lower than the application asked for.
fn clamp_note(backlog: Option<u32>, sysctls: &Sysctls) -> String {
    match (backlog, sysctls.somaxconn) {
        (Some(b), Some(max)) if b == max => {
            " (= net.core.somaxconn: listen() may have asked for more)".to_owned()
        }
        _ => String::new(),
    }
}

fn raise_backlog_advice(backlog: Option<u32>, sysctls: &Sysctls) -> String {
    match (backlog, sysctls.somaxconn) {
        (Some(b), Some(max)) if b >= max => {
            format!("Raise net.core.somaxconn (now {max}) and the listen() backlog")
        }
        _ => "Raise the listen() backlog".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::sample;

    #[test]
    fn overflow_advice_names_the_limit_and_the_clamp() {
        let report = sample::report();
        let advice = diagnose(&report.listeners[0], &report);
        let first = &advice[0];
        assert!(
            first.contains("overflowed 412 times (12 at the final ACK), limit 128"),
            "{first}"
        );
        assert!(first.contains("net.core.somaxconn"), "{first}");
        assert!(first.contains("accept wait p99 600ms"), "{first}");
        assert!(
            advice.iter().any(|a| a.contains("3 SYN-ACK retransmits")),
            "{advice:?}"
        );
    }

    #[test]
    fn a_healthy_listener_gets_no_advice() {
        let mut report = sample::report();
        let listener = &mut report.listeners[0];
        listener.drops.listen_overflows = Some(0);
        listener.synack_retransmits = Some(0);
        listener.accept_queue_max = Some(3);
        let advice = diagnose(&report.listeners[0], &report);
        assert!(advice.is_empty(), "{advice:?}");
    }

    #[test]
    fn a_full_queue_without_drops_is_a_warning() {
        let mut report = sample::report();
        let listener = &mut report.listeners[0];
        listener.drops.listen_overflows = Some(0);
        listener.synack_retransmits = Some(0);
        listener.accept_queue_max = Some(128);
        let advice = diagnose(&report.listeners[0], &report);
        assert!(
            advice[0].contains("reached its limit (128 of 128)"),
            "{advice:?}"
        );
    }
}
