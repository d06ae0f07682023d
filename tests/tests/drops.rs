//! Every kind of listen drop, provoked for real in a fresh namespace with two listening ports
//! that get different amounts: synscope's per-port figures must add up to the namespace's own
//! counters (read by the test itself before and after), and be told apart per port.

use synscope::report::Drops;
use synscope_tests::{
    Netns, Traced, exact_figures, final_ack_drop, netns_sysctl, require_root, synscope_run_in_with,
    wait_for_listeners,
};

const SCENARIO: &str = env!("CARGO_BIN_EXE_scenario");

/// Runs `script` in `netns` under synscope; returns the report and the namespace's counter
/// deltas over the run, read independently of synscope.
fn trace_with_counters(netns: &Netns, script: &str, counters: &[&str]) -> (Traced, Vec<u64>) {
    trace_with_counters_and(netns, &[], script, counters)
}

/// [`trace_with_counters`] with more of synscope's options.
fn trace_with_counters_and(
    netns: &Netns,
    extra_args: &[&str],
    script: &str,
    counters: &[&str],
) -> (Traced, Vec<u64>) {
    let before: Vec<u64> = counters.iter().map(|c| netns.tcp_ext(c)).collect();
    let traced = synscope_run_in_with(netns, extra_args, script);
    let after: Vec<u64> = counters.iter().map(|c| netns.tcp_ext(c)).collect();
    let deltas: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    for (counter, delta) in counters.iter().zip(&deltas) {
        assert_eq!(
            traced.namespace_counter(netns, counter),
            *delta,
            "the report's {counter} differs from the test's own reading"
        );
    }
    (traced, deltas)
}

/// A drop figure of a listener whose drops are exact (`|d| d.listen_overflows`); fails the
/// test if the figure is null.
fn drops(traced: &Traced, netns: &Netns, port: u16, field: fn(&Drops) -> Option<u64>) -> u64 {
    let listener = traced.listener(netns, port);
    // On failure: the namespace's own counts, and every listener's, which the attribution
    // compares.
    let namespace = traced
        .report
        .namespaces
        .iter()
        .find(|n| n.netns == netns.inode);
    let per_listener: Vec<(u16, &Drops)> = traced
        .report
        .listeners
        .iter()
        .filter(|l| l.netns == netns.inode)
        .map(|l| (l.port, &l.drops))
        .collect();
    assert_eq!(
        listener.drops.attribution, "exact",
        "port {port}: namespace {namespace:#?}, listeners' drops {per_listener:#?}"
    );
    field(&listener.drops)
        .unwrap_or_else(|| panic!("a drops figure of port {port} is null in {listener:#?}"))
}

/// A server that accepts nothing until the script kills it (`$servers`): the scripts close
/// the servers at a point relative to their clients, which a fixed lifetime cannot promise on
/// a slow machine (its clients may start after it is gone).
fn stuck_server(port: u16, backlog: u32) -> String {
    format!(
        "{SCENARIO} serve --listen 127.0.0.1:{port} --backlog {backlog} --accept-after-ms 60000 \
         --duration-ms 60000 & servers=\"$servers $!\""
    )
}

/// Clients that hold each connection `hold_ms` (`$clients`).
fn clients(port: u16, count: u32, hold_ms: u32, timeout_ms: u32) -> String {
    clients_closing(port, count, hold_ms, timeout_ms, 0)
}

/// [`clients`] that end their connections with a reset instead of a FIN: one packet, never
/// retransmitted, so nothing reaches their listener once they are gone.
fn resetting_clients(port: u16, count: u32, hold_ms: u32, timeout_ms: u32) -> String {
    clients_closing(port, count, hold_ms, timeout_ms, 1)
}

/// Clients whose close is a FIN (`reset` 0) or a reset (1).
fn clients_closing(port: u16, count: u32, hold_ms: u32, timeout_ms: u32, reset: u8) -> String {
    format!(
        "{SCENARIO} connect --to 127.0.0.1:{port} --connections {count} --hold-ms {hold_ms} \
         --timeout-ms {timeout_ms} --reset {reset} & clients=\"$clients $!\""
    )
}

/// A shell command that waits (up to 20 s) until the accept queue of `port` holds `children`.
fn wait_for_queue(port: u16, children: u32) -> String {
    format!(
        "for i in $(seq 400); do [ \"$(ss -Hltn 'sport = :{port}' | awk '{{print $2}}')\" = \
         {children} ] && break; sleep 0.05; done"
    )
}

/// The end of a script: the servers close once their clients are done.
const CLOSE_SERVERS_AFTER_CLIENTS: &str = "wait $clients; kill $servers; wait";

/// The end of a script whose clients hold on until the servers are gone: `after_s` after the
/// clients started, the servers close.
fn close_servers_before_clients(after_s: f64) -> String {
    format!("sleep {after_s}; kill $servers; wait")
}

#[test]
fn accept_queue_overflow_at_syn_time_on_two_ports() {
    require_root();
    let netns = Netns::new("overflow");
    // Backlog 2: the accept queue holds 3. Three clients fill it first, so that every later
    // SYN finds it full: a SYN let in while the queue had room, whose final ACK then found it
    // full, would be a final-ACK overflow, which the listener's own counter counts twice. The
    // later clients give up before their first SYN retry, so each sends one SYN.
    let script = [
        stuck_server(7601, 2),
        stuck_server(7602, 2),
        wait_for_listeners(&[7601, 7602]),
        clients(7601, 3, 1500, 500),
        clients(7602, 3, 1500, 500),
        wait_for_queue(7601, 3),
        wait_for_queue(7602, 3),
        clients(7601, 5, 1000, 500),
        clients(7602, 12, 1000, 500),
        CLOSE_SERVERS_AFTER_CLIENTS.into(),
    ]
    .join("\n");
    let (traced, deltas) =
        trace_with_counters(&netns, &script, &["ListenOverflows", "ListenDrops"]);
    let (a, b) = (
        drops(&traced, &netns, 7601, |d| d.listen_overflows),
        drops(&traced, &netns, 7602, |d| d.listen_overflows),
    );
    assert!(a > 0 && b > a, "overflows {a} and {b}");
    assert_eq!(
        a + b,
        deltas[0],
        "per-port overflows against ListenOverflows"
    );
    let all = drops(&traced, &netns, 7601, |d| d.listen_drops)
        + drops(&traced, &netns, 7602, |d| d.listen_drops);
    assert_eq!(all, deltas[1], "per-port drops against ListenDrops");
    for port in [7601, 7602] {
        let listener = traced.listener(&netns, port);
        assert_eq!(listener.backlog, Some(2), "{listener:#?}");
        // The queue holds backlog + 1; final ACKs handled at once on several CPUs can each
        // pass the kernel's fullness check, so it may hold one more.
        let queued = u64::from(listener.accept_queue_max.unwrap());
        assert!((3..=4).contains(&queued), "{listener:#?}");
        assert_eq!(listener.handshakes, queued, "{listener:#?}");
    }
}

/// Handshakes left pending (their final ACK dropped by nftables) while normal clients fill the
/// accept queue: when the server retransmits its SYN-ACK, the clients' ACKs find the queue
/// full. 3 such handshakes on one port, 2 on the other.
fn final_ack_overflow_script() -> String {
    let (drop_acks, stop_dropping) = final_ack_drop(&[7611, 7612]);
    [
        stuck_server(7611, 5),
        stuck_server(7612, 5),
        wait_for_listeners(&[7611, 7612]),
        drop_acks,
        // Their final ACKs are lost; the SYN-ACK retransmitted after 1 s draws one more ACK,
        // which finds the accept queue full. At 2 s they leave with a reset: a FIN would overflow
        // too, and be retransmitted until the servers close, racing the listeners' last count.
        resetting_clients(7611, 3, 2000, 1000),
        resetting_clients(7612, 2, 2000, 1000),
        "sleep 0.2".into(),
        stop_dropping,
        // Backlog 5: six completed handshakes fill the accept queue.
        clients(7611, 6, 1800, 1000),
        clients(7612, 6, 1800, 1000),
        CLOSE_SERVERS_AFTER_CLIENTS.into(),
    ]
    .join("\n")
}

/// Whether synscope can tell final-ACK overflows apart here: each drop is an event (fentry,
/// kprobes), or `skb:kfree_skb` names the receiving socket (6.11+) so that a listener's
/// discards are told from its listen drops. Where neither, a final-ACK overflow counts twice
/// on the socket, and the report must say it is not exact.
fn sees_listener_discards(traced: &Traced, netns: &Netns, ports: &[u16]) -> bool {
    if drops_are_events(traced) || traced.hook("listener_discards") != Some("unavailable") {
        return true;
    }
    for &port in ports {
        let listener = traced.listener(netns, port);
        assert_ne!(listener.drops.attribution, "exact", "{listener:#?}");
    }
    false
}

/// Final-ACK overflows of `port`: per event where the kernel names them (6.15+), else the
/// listener's overflows, all of which happened at the final ACK in these scenarios.
fn ack_overflows(traced: &Traced, netns: &Netns, port: u16) -> u64 {
    let listener = traced.listener(netns, port);
    match listener.drops.listen_overflows_at_ack {
        Some(at_ack) => at_ack,
        None => drops(traced, netns, port, |d| d.listen_overflows),
    }
}

#[test]
fn final_ack_overflow_is_counted_per_event() {
    require_root();
    let netns = Netns::new("ackoverflow");
    let (traced, deltas) = trace_with_counters(
        &netns,
        &final_ack_overflow_script(),
        &["ListenOverflows", "TCPSynRetrans"],
    );
    assert_eq!(
        deltas,
        [5, 5],
        "each pending handshake's one retransmitted SYN-ACK drew one overflowing ACK"
    );
    if !sees_listener_discards(&traced, &netns, &[7611, 7612]) {
        return;
    }
    for (port, pending) in [(7611, 3), (7612, 2)] {
        // Nothing overflowed at SYN time.
        assert_eq!(
            ack_overflows(&traced, &netns, port),
            pending,
            "port {port}: final-ACK overflows"
        );
        assert_eq!(
            drops(&traced, &netns, port, |d| d.listen_overflows),
            pending
        );
        assert_eq!(
            traced.listener(&netns, port).synack_retransmits,
            Some(pending)
        );
    }
}

#[test]
fn final_ack_overflow_with_abort_on_overflow_resets_each_once() {
    require_root();
    let netns = Netns::new("abort");
    netns_sysctl(&netns, "net.ipv4.tcp_abort_on_overflow", "1");
    let (traced, deltas) = trace_with_counters(
        &netns,
        &final_ack_overflow_script(),
        &["ListenOverflows", "EmbryonicRsts"],
    );
    assert_eq!(deltas, [5, 5]);
    // This test's namespace: tests running at the same time have theirs in the report too.
    let namespace = traced
        .report
        .namespaces
        .iter()
        .find(|n| n.netns == netns.inode)
        .expect("the test's namespace in the report");
    assert_eq!(
        namespace.sysctls.tcp_abort_on_overflow,
        Some(1),
        "{namespace:#?}"
    );
    if !sees_listener_discards(&traced, &netns, &[7611, 7612]) {
        return;
    }
    for (port, pending) in [(7611, 3), (7612, 2)] {
        // The first overflowing ACK is answered with a reset and the handshake is gone.
        assert_eq!(ack_overflows(&traced, &netns, port), pending);
        assert_eq!(
            drops(&traced, &netns, port, |d| d.listen_overflows),
            pending
        );
        exact_figures(
            traced.listener(&netns, port),
            port,
            &["drops.listen_overflows"],
        );
    }
}

#[test]
fn syn_queue_full_with_syncookies_off() {
    require_root();
    let netns = Netns::new("synqueue");
    netns_sysctl(&netns, "net.ipv4.tcp_syncookies", "0");
    // Final ACKs never arrive, so handshakes pile up in the SYN queue until it is full. The
    // clients hold on until the servers are gone: their FIN (not a pure ACK, so not dropped)
    // would otherwise complete the handshakes and overflow the accept queue.
    let (drop_acks, _) = final_ack_drop(&[7621, 7622]);
    let script = [
        stuck_server(7621, 4),
        stuck_server(7622, 4),
        wait_for_listeners(&[7621, 7622]),
        drop_acks,
        clients(7621, 10, 2500, 1500),
        clients(7622, 7, 2500, 1500),
        close_servers_before_clients(1.5),
    ]
    .join("\n");
    let (traced, deltas) =
        trace_with_counters(&netns, &script, &["TCPReqQFullDrop", "ListenOverflows"]);
    let (a, b) = (
        drops(&traced, &netns, 7621, |d| d.syn_queue_full),
        drops(&traced, &netns, 7622, |d| d.syn_queue_full),
    );
    assert!(b > 0 && a > b, "SYN-queue drops {a} and {b}");
    assert_eq!(a + b, deltas[0], "per-port drops against TCPReqQFullDrop");
    assert_eq!(deltas[1], 0);
    assert_eq!(drops(&traced, &netns, 7621, |d| d.listen_overflows), 0);
}

#[test]
fn syncookies_sent_when_forced() {
    require_root();
    let netns = Netns::new("cookies");
    netns_sysctl(&netns, "net.ipv4.tcp_syncookies", "2");
    let script = format!(
        "{SCENARIO} --listen 127.0.0.1:7631 --connections 10 --concurrency 2 &
         {SCENARIO} --listen 127.0.0.1:7632 --connections 25 --concurrency 3; wait"
    );
    let (traced, deltas) =
        trace_with_counters(&netns, &script, &["SyncookiesSent", "SyncookiesRecv"]);
    for (port, expected) in [(7631, 10), (7632, 25)] {
        let listener = traced.listener(&netns, port);
        assert_eq!(
            listener.cookies.syncookies_sent,
            Some(expected),
            "{listener:#?}"
        );
        assert_eq!(listener.accepted, expected, "{listener:#?}");
        exact_figures(listener, port, &["syncookies_sent", "accepted"]);
    }
    assert_eq!(deltas, [35, 35]);
}

/// Whether every listen drop and SYN cookie is an event here (fentry and kprobe backends).
fn drops_are_events(traced: &Traced) -> bool {
    traced.hook("listen_drops") != Some("unavailable")
}

#[test]
fn both_kinds_of_syn_time_drop_told_apart_per_port() {
    require_root();
    let netns = Netns::new("bothdrops");
    netns_sysctl(&netns, "net.ipv4.tcp_syncookies", "0");
    // 7641: handshakes complete and are never accepted, so later SYNs find the accept queue
    // full. 7642: final ACKs never arrive, so later SYNs find the SYN queue full; its clients
    // hold on until the servers are gone, since their FINs would complete the handshakes, and
    // the SYN queue may hold more than the accept queue takes (SYNs handled at once on
    // several CPUs pass its fullness check).
    let (drop_acks, _) = final_ack_drop(&[7642]);
    let script = [
        stuck_server(7641, 2),
        stuck_server(7642, 4),
        wait_for_listeners(&[7641, 7642]),
        drop_acks,
        clients(7641, 8, 1000, 500),
        clients(7642, 10, 2500, 500),
        close_servers_before_clients(1.5),
    ]
    .join("\n");
    let (traced, deltas) = trace_with_counters(
        &netns,
        &script,
        &["ListenOverflows", "TCPReqQFullDrop", "ListenDrops"],
    );
    assert!(deltas.iter().all(|&d| d > 0), "counters {deltas:?}");
    if !drops_are_events(&traced) {
        // From the namespace's counters alone, which listener had which kind is unknown: the
        // split is not guessed.
        for port in [7641, 7642] {
            let listener = traced.listener(&netns, port);
            assert!(
                listener.drops.attribution.starts_with("ambiguous"),
                "{listener:#?}"
            );
            assert!(listener.drops.listen_overflows.is_none(), "{listener:#?}");
        }
        return;
    }
    type Figure = fn(&Drops) -> Option<u64>;
    let field = |port, figure: Figure| drops(&traced, &netns, port, figure);
    assert!(field(7641, |d| d.listen_overflows) > 0);
    assert_eq!(field(7642, |d| d.listen_overflows), 0);
    assert!(field(7642, |d| d.syn_queue_full) > 0);
    let sum = |figure: Figure| field(7641, figure) + field(7642, figure);
    assert_eq!(
        [
            sum(|d| d.listen_overflows),
            sum(|d| d.syn_queue_full),
            sum(|d| d.listen_drops)
        ],
        [deltas[0], deltas[1], deltas[2]],
        "per-port drops against the namespace's counters"
    );
}

#[test]
fn syncookies_per_port_when_syn_queues_fill() {
    require_root();
    let netns = Netns::new("cookieports");
    netns_sysctl(&netns, "net.ipv4.tcp_syncookies", "1");
    // Final ACKs never arrive: four handshakes fill each SYN queue (backlog 4), and every
    // later SYN is answered with a cookie.
    let (drop_acks, _) = final_ack_drop(&[7651, 7652]);
    let script = [
        stuck_server(7651, 4),
        stuck_server(7652, 4),
        wait_for_listeners(&[7651, 7652]),
        drop_acks,
        clients(7651, 12, 1000, 500),
        clients(7652, 7, 1000, 500),
        CLOSE_SERVERS_AFTER_CLIENTS.into(),
    ]
    .join("\n");
    // A gate on the figure: where the kernel cannot observe it, it holds only because that is
    // allowed, and says so (without --allow-unobservable it would break: see the unit tests).
    let gate = [
        "--fail-if",
        "7651:syncookies_sent > 100000",
        "--allow-unobservable",
    ];
    let (traced, deltas) = trace_with_counters_and(&netns, &gate, &script, &["SyncookiesSent"]);
    let sent = |port| traced.listener(&netns, port).cookies.syncookies_sent;
    let threshold = &traced.report.thresholds[0];
    assert!(threshold.held, "{threshold:#?}");
    if !drops_are_events(&traced) {
        // Two listeners received SYNs: the namespace's counter cannot be split.
        assert_eq!((sent(7651), sent(7652)), (None, None));
        assert_eq!(threshold.value, None, "{threshold:#?}");
        let reason = threshold.reason.as_deref().unwrap_or_default();
        assert!(reason.contains("not observable"), "{threshold:#?}");
        return;
    }
    assert_eq!(
        threshold.value,
        sent(7651).map(|v| v as f64),
        "{threshold:#?}"
    );
    let (a, b) = (sent(7651).unwrap(), sent(7652).unwrap());
    assert!(a > b && b > 0, "cookies {a} and {b}");
    assert_eq!(a + b, deltas[0], "per-port cookies against SyncookiesSent");
}

#[test]
fn synack_retransmits_show_in_the_handshake_time() {
    require_root();
    let netns = Netns::new("synack");
    // The first final ACKs are lost; the SYN-ACK retransmitted after the initial 1 s timeout
    // gets through.
    let (drop_acks, stop_dropping) = final_ack_drop(&[7641, 7642]);
    let script = [
        drop_acks,
        format!("{SCENARIO} --listen 127.0.0.1:7641 --connections 4 --concurrency 4 &"),
        format!("{SCENARIO} --listen 127.0.0.1:7642 --connections 7 --concurrency 7 &"),
        "sleep 0.5".into(),
        stop_dropping,
        "wait".into(),
    ]
    .join("\n");
    let (traced, deltas) = trace_with_counters(&netns, &script, &["TCPSynRetrans"]);
    for (port, clients) in [(7641, 4), (7642, 7)] {
        let listener = traced.listener(&netns, port);
        assert_eq!(listener.synack_retransmits, Some(clients), "{listener:#?}");
        assert_eq!(listener.handshakes, clients, "{listener:#?}");
        exact_figures(listener, port, &["synack_retransmits", "handshakes"]);
        let p50_s = listener.handshake_us.p50 / 1e6;
        assert!(
            (1.0..1.5).contains(&p50_s),
            "handshake p50 {p50_s} s, expected the 1 s RTO"
        );
    }
    assert_eq!(deltas, [11]);
}
