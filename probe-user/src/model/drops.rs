//! Per-listener drop figures, reconciled with the namespace's counters.
//!
//! With fentry or kprobes every listen drop is an event, classified as the kernel decided it
//! (see `DropEvents`), and the figures are exact by construction; the namespace's counters only
//! confirm them. With tracepoints alone:
//!
//! What is exact per event: final-ACK overflows (drop reason, 6.15+) and SYN-ACK retransmits.
//! What is exact per socket: all listen drops (the listener's own drop counter). SYN-time drops
//! (accept queue or SYN queue full when the SYN arrived) have no event: they are the socket's
//! drops minus its final-ACK overflows, classified with the namespace's counters, which is exact
//! unless several listeners of one namespace dropped SYNs for both reasons at once. Then the
//! split is not guessed: the figures are left out and the attribution says so.

use std::{borrow::Cow, collections::BTreeMap};

use crate::report::schema::{Cookies, Counters, Drops};
use probe_common::{
    COUNTED_AT_ACK, COUNTED_FASTOPEN_PASSIVE, COUNTED_LISTEN_DROPS, COUNTED_LISTEN_OVERFLOWS,
    COUNTED_REQ_QUEUE_FULL_DROP, COUNTED_SYNCOOKIES_FAILED, COUNTED_SYNCOOKIES_SENT, ListenerKey,
};

/// What one listener did, counted one event at a time as the kernel counted it (fentry and
/// kprobe backends).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CountedDrops {
    /// `ListenDrops`: every drop below, and any other.
    pub listen_drops: u64,
    /// `ListenOverflows`, at SYN time and at the final ACK.
    pub overflows_at_syn: u64,
    pub overflows_at_ack: u64,
    /// `TCPReqQFullDrop`.
    pub syn_queue_full: u64,
    pub syncookies_sent: u64,
    pub syncookies_failed: u64,
    /// `TCPFastOpenPassive`.
    pub fastopen: u64,
}

impl CountedDrops {
    /// Adds one `ListenCounted` event: a bit per counter the packet moved.
    pub fn record(&mut self, counted: u32) {
        let bit = |mask: u32| u64::from(counted & mask != 0);
        self.listen_drops += bit(COUNTED_LISTEN_DROPS);
        let overflow = bit(COUNTED_LISTEN_OVERFLOWS);
        if counted & COUNTED_AT_ACK != 0 {
            self.overflows_at_ack += overflow;
        } else {
            self.overflows_at_syn += overflow;
        }
        self.syn_queue_full += bit(COUNTED_REQ_QUEUE_FULL_DROP);
        self.syncookies_sent += bit(COUNTED_SYNCOOKIES_SENT);
        self.syncookies_failed += bit(COUNTED_SYNCOOKIES_FAILED);
        self.fastopen += bit(COUNTED_FASTOPEN_PASSIVE);
    }

    fn overflows(&self) -> u64 {
        self.overflows_at_syn + self.overflows_at_ack
    }
}

/// What is known of one listener before attribution.
#[derive(Clone, Copy, Debug, Default)]
pub struct ListenerInput {
    /// The socket's listen drops: its drop counter less the packets it discarded otherwise;
    /// `None` if the socket was never seen.
    pub listen_drops: Option<u64>,
    /// `None` where final-ACK overflows are not observable per event.
    pub ack_overflows: Option<u64>,
    pub syn_received: u64,
    /// SYN cookies sent and failed, counted one by one; `None` where no hook sees them.
    pub counted_cookies: Option<(u64, u64)>,
}

impl ListenerInput {
    fn ack(&self) -> u64 {
        self.ack_overflows.unwrap_or(0)
    }
}

/// Attributes one namespace's SYN-cookie counters to its listeners: as counted one by one where
/// a hook sees them; otherwise exactly when one listener received all the SYNs, or
/// with `tcp_syncookies=2` (every SYN that is not dropped gets a cookie) when the per-listener
/// counts add up to the namespace's. Otherwise left out.
pub fn attribute_cookies(
    deltas: &Counters,
    listeners: &BTreeMap<ListenerKey, ListenerInput>,
    drops: &BTreeMap<ListenerKey, Drops>,
    syncookies_mode: Option<u32>,
) -> BTreeMap<ListenerKey, Cookies> {
    let counter = |name: &str| deltas.get(name).copied().unwrap_or(0);
    let (sent, failed) = (counter("SyncookiesSent"), counter("SyncookiesFailed"));
    let receivers = listeners.values().filter(|l| l.syn_received > 0).count();
    // With cookies forced, a SYN gets one unless dropped at SYN time.
    let forced_share = |key: &ListenerKey, input: &ListenerInput| {
        let drops = drops.get(key)?;
        let syn_time_drops = drops.listen_drops?.saturating_sub(input.ack());
        Some(input.syn_received.saturating_sub(syn_time_drops))
    };
    let forced: Option<BTreeMap<ListenerKey, u64>> = (syncookies_mode == Some(2))
        .then(|| {
            listeners
                .iter()
                .map(|(k, l)| Some((*k, forced_share(k, l)?)))
                .collect()
        })
        .flatten()
        .filter(|shares: &BTreeMap<ListenerKey, u64>| shares.values().sum::<u64>() == sent);
    listeners
        .iter()
        .map(|(key, input)| {
            let cookies = if sent == 0 && failed == 0 {
                Cookies {
                    syncookies_sent: Some(0),
                    syncookies_failed: Some(0),
                }
            } else if receivers <= 1 {
                let mine = |total: u64| Some(if input.syn_received > 0 { total } else { 0 });
                Cookies {
                    syncookies_sent: mine(sent),
                    syncookies_failed: mine(failed),
                }
            } else if input.syn_received == 0 {
                Cookies {
                    syncookies_sent: Some(0),
                    syncookies_failed: Some(0),
                }
            } else {
                Cookies {
                    syncookies_sent: forced.as_ref().and_then(|f| f.get(key).copied()),
                    syncookies_failed: (failed == 0).then_some(0),
                }
            };
            let cookies = match input.counted_cookies {
                Some((sent, failed)) => Cookies {
                    syncookies_sent: Some(sent),
                    syncookies_failed: Some(failed),
                },
                None => cookies,
            };
            (*key, cookies)
        })
        .collect()
}

pub const EXACT: &str = "exact";
const COUNTED_UNRECONCILED: &str = "events: each drop counted as it happened; the namespace also counted drops synscope did not see (listeners outside --port, drops before tracing began, SYNs to broadcast addresses)";
const COUNTED_LOST: &str = "lost: drop events were lost (the ring buffer overflowed, or the kernel skipped synscope's programs), so these are lower bounds; see the namespace counters";

/// Drop figures counted one by one, confirmed against the namespace's counters.
pub fn attribute_counted(
    deltas: &Counters,
    listeners: &BTreeMap<ListenerKey, CountedDrops>,
    events_lost: bool,
) -> BTreeMap<ListenerKey, Drops> {
    let counter = |name: &str| deltas.get(name).copied().unwrap_or(0);
    let sum = |field: fn(&CountedDrops) -> u64| listeners.values().map(field).sum::<u64>();
    let reconciled = sum(|d| d.listen_drops) == counter("ListenDrops")
        && sum(CountedDrops::overflows) == counter("ListenOverflows")
        && sum(|d| d.syn_queue_full) == counter("TCPReqQFullDrop");
    listeners
        .iter()
        .map(|(&key, counted)| {
            let drops = Drops {
                listen_overflows: Some(counted.overflows()),
                listen_overflows_at_ack: Some(counted.overflows_at_ack),
                syn_queue_full: Some(counted.syn_queue_full),
                listen_drops: Some(counted.listen_drops),
                attribution: Cow::Borrowed(match (events_lost, reconciled) {
                    (true, _) => COUNTED_LOST,
                    (false, true) => EXACT,
                    (false, false) => COUNTED_UNRECONCILED,
                }),
            };
            (key, drops)
        })
        .collect()
}

const AMBIGUOUS: &str = "ambiguous: several listeners of this namespace dropped SYNs for both accept-queue and SYN-queue overflow; see the namespace counters";
const UNSEEN: &str = "unknown: the listening socket was not seen by sock_diag";
const OTHER_DROPS: &str = "socket: per-socket totals are exact, but the namespace also counted drops of other kinds or of sockets closed before the report";

/// Attributes one namespace's drops to its listeners.
pub fn attribute(
    deltas: &Counters,
    listeners: &BTreeMap<ListenerKey, ListenerInput>,
) -> BTreeMap<ListenerKey, Drops> {
    let counter = |name: &str| deltas.get(name).copied().unwrap_or(0);
    let ack_overflows: u64 = listeners.values().map(ListenerInput::ack).sum();
    let syn_overflows = counter("ListenOverflows").saturating_sub(ack_overflows);
    let syn_queue_full = counter("TCPReqQFullDrop");
    let syn_drops = |l: &ListenerInput| l.listen_drops.map(|d| d.saturating_sub(l.ack()));
    let syn_droppers = listeners
        .values()
        .filter(|l| syn_drops(l).unwrap_or(0) > 0)
        .count();
    let reconciled = listeners.values().all(|l| l.listen_drops.is_some())
        && listeners
            .values()
            .filter_map(|l| l.listen_drops)
            .sum::<u64>()
            == counter("ListenDrops")
        && syn_overflows + syn_queue_full + ack_overflows == counter("ListenDrops");

    listeners
        .iter()
        .map(|(&key, input)| {
            let Some(syn) = syn_drops(input) else {
                return (
                    key,
                    Drops {
                        listen_overflows_at_ack: input.ack_overflows,
                        attribution: UNSEEN.into(),
                        ..Default::default()
                    },
                );
            };
            let split = if syn == 0 {
                Some((0, 0))
            } else if syn_queue_full == 0 {
                Some((syn, 0))
            } else if syn_overflows == 0 {
                Some((0, syn))
            } else if syn_droppers == 1 {
                Some((syn_overflows, syn_queue_full))
            } else {
                None
            };
            let drops = match split {
                Some((overflow_at_syn, queue_full)) => Drops {
                    listen_overflows: Some(input.ack() + overflow_at_syn),
                    listen_overflows_at_ack: input.ack_overflows,
                    syn_queue_full: Some(queue_full),
                    listen_drops: input.listen_drops,
                    attribution: if reconciled { EXACT } else { OTHER_DROPS }.into(),
                },
                None => Drops {
                    listen_overflows: None,
                    listen_overflows_at_ack: input.ack_overflows,
                    syn_queue_full: None,
                    listen_drops: input.listen_drops,
                    attribution: AMBIGUOUS.into(),
                },
            };
            (key, drops)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deltas(pairs: &[(&str, u64)]) -> Counters {
        pairs.iter().map(|&(k, v)| (k.to_owned(), v)).collect()
    }

    fn input(listen_drops: u64, ack_overflows: u64) -> ListenerInput {
        ListenerInput {
            listen_drops: Some(listen_drops),
            ack_overflows: Some(ack_overflows),
            syn_received: 100,
            counted_cookies: None,
        }
    }

    #[test]
    fn accept_queue_overflows_on_two_ports() {
        let listeners = BTreeMap::from([
            (ListenerKey::new(1, 80), input(30, 10)),
            (ListenerKey::new(1, 81), input(12, 0)),
        ]);
        let d = deltas(&[("ListenOverflows", 42), ("ListenDrops", 42)]);
        let drops = attribute(&d, &listeners);
        let a = &drops[&ListenerKey::new(1, 80)];
        assert_eq!(
            (a.listen_overflows, a.syn_queue_full, a.listen_drops),
            (Some(30), Some(0), Some(30))
        );
        assert_eq!(a.attribution, EXACT);
        assert_eq!(drops[&ListenerKey::new(1, 81)].listen_overflows, Some(12));
    }

    #[test]
    fn syn_queue_full_on_one_port_and_overflow_on_another() {
        // Both kinds of SYN-time drop in the namespace, and two listeners dropped SYNs: which
        // listener had which kind is not known, so nothing is guessed.
        let listeners = BTreeMap::from([
            (ListenerKey::new(1, 80), input(5, 0)),
            (ListenerKey::new(1, 81), input(7, 0)),
        ]);
        let d = deltas(&[
            ("ListenOverflows", 7),
            ("TCPReqQFullDrop", 5),
            ("ListenDrops", 12),
        ]);
        let drops = attribute(&d, &listeners);
        assert_eq!(drops[&ListenerKey::new(1, 80)].listen_overflows, None);
        assert_eq!(drops[&ListenerKey::new(1, 80)].listen_drops, Some(5));
        assert_eq!(drops[&ListenerKey::new(1, 80)].attribution, AMBIGUOUS);
    }

    #[test]
    fn a_single_syn_dropper_takes_both_kinds() {
        let listeners = BTreeMap::from([
            (ListenerKey::new(1, 80), input(12, 0)),
            (ListenerKey::new(1, 81), input(3, 3)),
        ]);
        let d = deltas(&[
            ("ListenOverflows", 10),
            ("TCPReqQFullDrop", 5),
            ("ListenDrops", 15),
        ]);
        let drops = attribute(&d, &listeners);
        let a = &drops[&ListenerKey::new(1, 80)];
        assert_eq!((a.listen_overflows, a.syn_queue_full), (Some(7), Some(5)));
        let b = &drops[&ListenerKey::new(1, 81)];
        assert_eq!((b.listen_overflows, b.syn_queue_full), (Some(3), Some(0)));
        assert_eq!(b.attribution, EXACT);
    }

    #[test]
    fn unreconciled_totals_are_flagged() {
        let listeners = BTreeMap::from([(ListenerKey::new(1, 80), input(4, 0))]);
        let d = deltas(&[("ListenOverflows", 4), ("ListenDrops", 9)]);
        assert_eq!(
            attribute(&d, &listeners)[&ListenerKey::new(1, 80)].attribution,
            OTHER_DROPS
        );
    }

    #[test]
    fn forced_cookies_split_by_surviving_syns() {
        let listeners = BTreeMap::from([
            (
                ListenerKey::new(1, 80),
                ListenerInput {
                    listen_drops: Some(0),
                    ack_overflows: Some(0),
                    syn_received: 30,
                    counted_cookies: None,
                },
            ),
            (
                ListenerKey::new(1, 81),
                ListenerInput {
                    listen_drops: Some(2),
                    ack_overflows: Some(0),
                    syn_received: 52,
                    counted_cookies: None,
                },
            ),
        ]);
        let d = deltas(&[
            ("SyncookiesSent", 80),
            ("ListenOverflows", 2),
            ("ListenDrops", 2),
        ]);
        let drops = attribute(&d, &listeners);
        let cookies = attribute_cookies(&d, &listeners, &drops, Some(2));
        assert_eq!(cookies[&ListenerKey::new(1, 80)].syncookies_sent, Some(30));
        assert_eq!(cookies[&ListenerKey::new(1, 81)].syncookies_sent, Some(50));
        // Without forced cookies the split is unknown.
        let cookies = attribute_cookies(&d, &listeners, &drops, Some(1));
        assert_eq!(cookies[&ListenerKey::new(1, 80)].syncookies_sent, None);
    }

    #[test]
    fn a_single_receiver_gets_all_cookies() {
        let listeners = BTreeMap::from([
            (
                ListenerKey::new(1, 80),
                ListenerInput {
                    listen_drops: Some(0),
                    ack_overflows: Some(0),
                    syn_received: 30,
                    counted_cookies: None,
                },
            ),
            (
                ListenerKey::new(1, 81),
                ListenerInput {
                    listen_drops: Some(0),
                    ack_overflows: Some(0),
                    syn_received: 0,
                    counted_cookies: None,
                },
            ),
        ]);
        let d = deltas(&[("SyncookiesSent", 12), ("SyncookiesFailed", 1)]);
        let cookies = attribute_cookies(&d, &listeners, &attribute(&d, &listeners), Some(1));
        assert_eq!(
            cookies[&ListenerKey::new(1, 80)],
            Cookies {
                syncookies_sent: Some(12),
                syncookies_failed: Some(1)
            }
        );
        assert_eq!(cookies[&ListenerKey::new(1, 81)].syncookies_sent, Some(0));
    }

    #[test]
    fn unseen_sockets_keep_what_events_showed() {
        let listeners = BTreeMap::from([(
            ListenerKey::new(1, 80),
            ListenerInput {
                listen_drops: None,
                ack_overflows: Some(2),
                syn_received: 5,
                counted_cookies: None,
            },
        )]);
        let d = deltas(&[("ListenOverflows", 2), ("ListenDrops", 2)]);
        let a = &attribute(&d, &listeners)[&ListenerKey::new(1, 80)];
        assert_eq!(a.listen_overflows, None);
        assert_eq!(a.listen_overflows_at_ack, Some(2));
        assert_eq!(a.listen_drops, None);
        assert_eq!(a.attribution, UNSEEN);
    }

    #[test]
    fn counted_events_go_to_the_counters_they_moved() {
        let mut counted = CountedDrops::default();
        let overflow = COUNTED_LISTEN_DROPS | COUNTED_LISTEN_OVERFLOWS;
        counted.record(overflow);
        counted.record(overflow | COUNTED_AT_ACK);
        counted.record(COUNTED_LISTEN_DROPS | COUNTED_REQ_QUEUE_FULL_DROP);
        counted.record(COUNTED_SYNCOOKIES_SENT);
        counted.record(COUNTED_FASTOPEN_PASSIVE);
        assert_eq!(
            counted,
            CountedDrops {
                listen_drops: 3,
                overflows_at_syn: 1,
                overflows_at_ack: 1,
                syn_queue_full: 1,
                syncookies_sent: 1,
                syncookies_failed: 0,
                fastopen: 1,
            }
        );
    }

    #[test]
    fn counted_drops_are_exact_when_the_namespace_agrees() {
        let counted = |syn, ack, queue| CountedDrops {
            listen_drops: syn + ack + queue,
            overflows_at_syn: syn,
            overflows_at_ack: ack,
            syn_queue_full: queue,
            ..Default::default()
        };
        // Both kinds of SYN-time drop on two listeners: ambiguous from counters, not here.
        let listeners = BTreeMap::from([
            (ListenerKey::new(1, 80), counted(0, 0, 5)),
            (ListenerKey::new(1, 81), counted(7, 2, 0)),
        ]);
        let d = deltas(&[
            ("ListenOverflows", 9),
            ("TCPReqQFullDrop", 5),
            ("ListenDrops", 14),
        ]);
        let drops = attribute_counted(&d, &listeners, false);
        let b = &drops[&ListenerKey::new(1, 81)];
        assert_eq!(
            (
                b.listen_overflows,
                b.listen_overflows_at_ack,
                b.syn_queue_full
            ),
            (Some(9), Some(2), Some(0))
        );
        assert_eq!(b.attribution, EXACT);
        assert_eq!(drops[&ListenerKey::new(1, 80)].syn_queue_full, Some(5));

        let more = deltas(&[
            ("ListenOverflows", 10),
            ("TCPReqQFullDrop", 5),
            ("ListenDrops", 15),
        ]);
        let drops = attribute_counted(&more, &listeners, false);
        assert_eq!(drops[&ListenerKey::new(1, 81)].listen_overflows, Some(9));
        assert_eq!(
            drops[&ListenerKey::new(1, 81)].attribution,
            COUNTED_UNRECONCILED
        );
        // Lost events make every figure a lower bound, whatever the sums say.
        let drops = attribute_counted(&d, &listeners, true);
        assert_eq!(drops[&ListenerKey::new(1, 81)].attribution, COUNTED_LOST);
    }
}
