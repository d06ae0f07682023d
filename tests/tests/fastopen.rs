//! TCP Fast Open: the SYN carries data and creates the child at once, before the handshake
//! completes. The connection is still measured SYN -> handshake -> accept, and counted as Fast
//! Open where a hook sees it (fentry, kprobes).

use synscope_tests::{
    Netns, exact_figures, final_ack_drop, netns_sysctl, require_root, scenario, stage_counts,
    synscope_run, synscope_run_in, wait_for_listeners,
};

const SCENARIO: &str = env!("CARGO_BIN_EXE_scenario");

#[test]
fn fast_open_connections_are_measured() {
    require_root();
    let netns = Netns::new("fastopen");
    // Client and server on, data in the SYN without a cookie (0x4), no cookie required (0x200).
    netns_sysctl(&netns, "net.ipv4.tcp_fastopen", "519");
    let before = netns.tcp_ext("TCPFastOpenPassive");
    let traced = synscope_run(
        &[],
        &scenario!(
            &netns,
            "--listen",
            "127.0.0.1:7701",
            "--connections",
            "20",
            "--accept-delay-ms",
            "10",
            "--fastopen",
            "1"
        ),
    );
    let passive = netns.tcp_ext("TCPFastOpenPassive") - before;
    assert_eq!(passive, 20, "the kernel's count of Fast Open connections");
    let listener = traced.listener(&netns, 7701);
    for (field, count) in stage_counts(listener) {
        assert_eq!(count, 20, "{field} in {listener:#?}");
    }
    assert_eq!(listener.syn_to_accept_us.count, 20, "{listener:#?}");
    assert!(listener.syn_to_accept_us.p50 >= 10_000.0, "{listener:#?}");
    exact_figures(
        listener,
        7701,
        &["handshakes", "accepted", "syn_to_accept_us.count"],
    );
    match traced.hook("listen_drops") {
        Some("unavailable") => assert!(listener.fastopen.is_none(), "{listener:#?}"),
        _ => assert_eq!(listener.fastopen, Some(passive), "{listener:#?}"),
    }
}

/// A Fast Open child is in the accept queue from its SYN on, so accept() can return it before
/// its handshake completes: nftables holds back the clients' final ACKs until the server's
/// SYN-ACK retransmit (after 1 s) while the server accepts at once. Each connection is then
/// accepted first and completes its handshake after, and must not be left waiting.
#[test]
fn fast_open_children_accepted_before_their_handshake_are_not_left_waiting() {
    require_root();
    let netns = Netns::new("fastopenearly");
    netns_sysctl(&netns, "net.ipv4.tcp_fastopen", "519");
    let (drop_acks, stop_dropping) = final_ack_drop(&[7702]);
    let script = [
        format!(
            "{SCENARIO} serve --listen 127.0.0.1:7702 --accept-after-ms 0 --duration-ms 60000 \
             --fastopen 1 & server=$!"
        ),
        wait_for_listeners(&[7702]),
        drop_acks,
        format!(
            "{SCENARIO} connect --to 127.0.0.1:7702 --connections 5 --hold-ms 2500 --fastopen 1 \
             & clients=$!"
        ),
        "sleep 0.5".into(),
        stop_dropping,
        "wait $clients; kill $server; wait".into(),
    ]
    .join("\n");
    let traced = synscope_run_in(&netns, &script);
    let listener = traced.listener(&netns, 7702);
    assert_eq!(
        (listener.handshakes, listener.accepted),
        (5, 5),
        "{listener:#?}"
    );
    assert_eq!(listener.never_accepted.count, 0, "{listener:#?}");
    // Accepted before its handshake completed: no wait in the accept queue (the retransmitted
    // SYN-ACK makes each handshake last over a second).
    assert_eq!(listener.accept_wait_us.count, 5, "{listener:#?}");
    assert!(listener.accept_wait_us.max < 1000.0, "{listener:#?}");
    assert!(listener.handshake_us.min >= 900_000.0, "{listener:#?}");
}
