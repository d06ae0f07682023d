//! What userspace learns from the kernel's own bookkeeping during a session: every listening
//! socket's drop counter and queue, and every namespace's counters, from the first look to the
//! last, so the report can give per-socket deltas and per-namespace deltas.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use probe_common::ListenerKey;

use crate::{
    host::{counters, inventory::NetnsState},
    report::schema::{Counters, Sysctls},
};

#[derive(Clone, Debug)]
struct SocketTrack {
    key: ListenerKey,
    addr: Option<IpAddr>,
    /// Unknown for a socket no poll saw (it opened and closed between two).
    backlog: Option<u32>,
    drops_first: u32,
    drops_last: u32,
    accept_queue_max: u32,
    /// The accept queue at the latest poll that saw the socket, and that poll's number.
    accept_queue_last: u32,
    last_poll: u32,
}

#[derive(Clone, Debug)]
struct NetnsTrack {
    baseline: Counters,
    latest: Counters,
    sysctls: Sysctls,
}

/// A listener's accept queue at one poll.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueNow {
    pub length: u32,
    pub backlog: u32,
}

#[derive(Clone, Debug, Default)]
pub struct KernelView {
    observations: u32,
    namespaces: BTreeMap<u32, NetnsTrack>,
    /// By listener and socket inode: a listener's sockets are one range of the map (ten
    /// thousand listeners are looked up one by one when the report is made).
    sockets: BTreeMap<(ListenerKey, u32), SocketTrack>,
}

impl KernelView {
    /// Records one pass over the namespaces. On later passes, a namespace or socket seen for
    /// the first time was created during the session, so its counters started at zero.
    pub fn observe(&mut self, states: Vec<NetnsState>) {
        let first = self.observations == 0;
        self.observations += 1;
        for state in states {
            let netns = state.inode;
            let track = self.namespaces.entry(netns).or_insert_with(|| NetnsTrack {
                baseline: if first {
                    state.counters.clone()
                } else {
                    Counters::new()
                },
                latest: Counters::new(),
                sysctls: Sysctls::default(),
            });
            track.latest = state.counters;
            track.sysctls = state.sysctls;
            for listener in state.listeners {
                let socket = self
                    .sockets
                    .entry((ListenerKey::new(netns, listener.port), listener.inode))
                    .or_insert_with(|| SocketTrack {
                        key: ListenerKey::new(netns, listener.port),
                        addr: Some(listener.addr),
                        backlog: Some(listener.backlog),
                        drops_first: if first { listener.drops } else { 0 },
                        drops_last: listener.drops,
                        accept_queue_max: 0,
                        accept_queue_last: 0,
                        last_poll: 0,
                    });
                socket.backlog = Some(listener.backlog);
                socket.drops_last = listener.drops;
                socket.accept_queue_max = socket.accept_queue_max.max(listener.accept_queue);
                socket.accept_queue_last = listener.accept_queue;
                socket.last_poll = self.observations;
            }
        }
    }

    /// A listening socket closed with `drops` on its counter: its last word, which a poll may
    /// not have seen.
    pub fn socket_closed(&mut self, key: ListenerKey, inode: u32, drops: u32) {
        let socket = self
            .sockets
            .entry((key, inode))
            .or_insert_with(|| SocketTrack {
                key,
                addr: None,
                backlog: None,
                // Never polled: it opened and closed during the session.
                drops_first: 0,
                drops_last: drops,
                accept_queue_max: 0,
                accept_queue_last: 0,
                last_poll: 0,
            });
        socket.drops_last = drops;
    }

    fn sockets_of(&self, key: ListenerKey) -> impl Iterator<Item = &SocketTrack> {
        self.sockets
            .range((key, 0)..=(key, u32::MAX))
            .map(|(_, s)| s)
    }

    /// Whether any socket of `key` was seen.
    pub fn knows(&self, key: ListenerKey) -> bool {
        self.sockets_of(key).next().is_some()
    }

    /// Drops counted by the sockets of `key` during the session.
    pub fn listen_drops(&self, key: ListenerKey) -> Option<u64> {
        self.knows(key).then(|| {
            self.sockets_of(key)
                .map(|s| u64::from(s.drops_last.wrapping_sub(s.drops_first)))
                .sum()
        })
    }

    pub fn backlog(&self, key: ListenerKey) -> Option<u32> {
        self.sockets_of(key).filter_map(|s| s.backlog).max()
    }

    /// Largest accept queue seen by polling (the kernel programs see the true maximum).
    pub fn accept_queue_max(&self, key: ListenerKey) -> Option<u32> {
        self.sockets_of(key).map(|s| s.accept_queue_max).max()
    }

    /// Listeners open at the latest poll: their accept queue then (the longest of their
    /// sockets') and their backlog.
    pub fn open_listeners(&self) -> BTreeMap<ListenerKey, QueueNow> {
        let mut open: BTreeMap<ListenerKey, QueueNow> = BTreeMap::new();
        let latest = self
            .sockets
            .values()
            .filter(|s| self.observations > 0 && s.last_poll == self.observations);
        for socket in latest {
            let queue = open.entry(socket.key).or_default();
            queue.length = queue.length.max(socket.accept_queue_last);
            queue.backlog = queue.backlog.max(socket.backlog.unwrap_or(0));
        }
        open
    }

    /// Each listening socket of `key` seen during the span, by inode.
    pub fn sockets(&self, key: ListenerKey) -> Vec<crate::report::ListenerSocket> {
        self.sockets
            .range((key, 0)..=(key, u32::MAX))
            .map(|(&(_, inode), s)| crate::report::ListenerSocket {
                inode,
                addr: s.addr.map(|a| a.to_string()),
                backlog: s.backlog,
                accept_queue_max: s.accept_queue_max,
                drops: u64::from(s.drops_last.wrapping_sub(s.drops_first)),
            })
            .collect()
    }

    pub fn addrs(&self, key: ListenerKey) -> BTreeSet<IpAddr> {
        self.sockets_of(key).filter_map(|s| s.addr).collect()
    }

    /// The namespaces seen, by inode.
    pub fn namespaces(&self) -> impl Iterator<Item = u32> + '_ {
        self.namespaces.keys().copied()
    }

    /// Listeners of `netns` that were seen, by port.
    pub fn listeners_in(&self, netns: u32) -> BTreeSet<ListenerKey> {
        self.sockets
            .values()
            .map(|s| s.key)
            .filter(|k| k.netns == netns)
            .collect()
    }

    /// The namespace's counters over the session.
    pub fn counter_deltas(&self, netns: u32) -> Option<Counters> {
        let track = self.namespaces.get(&netns)?;
        Some(counters::delta(&track.baseline, &track.latest))
    }

    pub fn sysctls(&self, netns: u32) -> Option<&Sysctls> {
        self.namespaces.get(&netns).map(|t| &t.sysctls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::sockdiag::DiagListener;

    fn state(inode: u32, overflows: u64, sockets: &[(u32, u16, u32)]) -> NetnsState {
        NetnsState {
            inode,
            listeners: sockets
                .iter()
                .map(|&(socket, port, drops)| DiagListener {
                    addr: "127.0.0.1".parse().unwrap(),
                    port,
                    accept_queue: 1,
                    backlog: 8,
                    drops,
                    inode: socket,
                })
                .collect(),
            counters: [("ListenOverflows".to_owned(), overflows)].into(),
            sysctls: Sysctls::default(),
        }
    }

    #[test]
    fn deltas_from_first_sight_and_zero_for_newcomers() {
        let mut view = KernelView::default();
        view.observe(vec![state(1, 100, &[(10, 80, 5)])]);
        view.observe(vec![
            state(1, 130, &[(10, 80, 25), (11, 81, 10)]),
            state(2, 7, &[]),
        ]);
        assert_eq!(view.listen_drops(ListenerKey::new(1, 80)), Some(20));
        // Socket 11 appeared during the session: all its drops are new.
        assert_eq!(view.listen_drops(ListenerKey::new(1, 81)), Some(10));
        assert_eq!(view.listen_drops(ListenerKey::new(1, 82)), None);
        assert_eq!(view.counter_deltas(1).unwrap()["ListenOverflows"], 30);
        // Namespace 2 appeared during the session.
        assert_eq!(view.counter_deltas(2).unwrap()["ListenOverflows"], 7);
        assert_eq!(view.backlog(ListenerKey::new(1, 80)), Some(8));
    }

    #[test]
    fn a_closing_socket_reports_its_last_drops() {
        let mut view = KernelView::default();
        view.observe(vec![state(1, 0, &[(10, 80, 5)])]);
        view.socket_closed(ListenerKey::new(1, 80), 10, 9);
        view.socket_closed(ListenerKey::new(1, 81), 11, 3);
        assert_eq!(view.listen_drops(ListenerKey::new(1, 80)), Some(4));
        assert_eq!(view.listen_drops(ListenerKey::new(1, 81)), Some(3));
        assert_eq!(view.backlog(ListenerKey::new(1, 80)), Some(8));
        // Opened and closed between two polls: its backlog is unknown, not 0 (the kernel
        // programs may know it).
        assert_eq!(view.backlog(ListenerKey::new(1, 81)), None);
    }
}
