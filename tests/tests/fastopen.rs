//! TCP Fast Open: the SYN carries data and creates the child at once, before the handshake
//! completes. The connection is still measured SYN -> handshake -> accept, and counted as Fast
//! Open where a hook sees it (fentry, kprobes).

use synscope_tests::{
    Netns, exact_figures, netns_sysctl, require_root, scenario, stage_counts, synscope_run,
};

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
