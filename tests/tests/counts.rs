//! Every connection counted once at each stage, with concurrent clients.

use synscope_tests::{
    Netns, exact_figures, expected_syn_hook, require_root, scenario, stage_counts, synscope_run,
};

#[test]
fn n_connections_give_exactly_n_at_every_stage() {
    require_root();
    let netns = Netns::new("counts");
    let traced = synscope_run(
        &[],
        &scenario!(
            &netns,
            "--listen",
            "127.0.0.1:7200",
            "--connections",
            "500",
            "--concurrency",
            "8"
        ),
    );
    let listener = traced.listener(&netns, 7200);
    for (field, count) in stage_counts(listener) {
        assert_eq!(count, 500, "{field} in {listener:#?}");
    }
    for (dist, summary) in [
        ("handshake_us", &listener.handshake_us),
        ("accept_wait_us", &listener.accept_wait_us),
        ("syn_to_accept_us", &listener.syn_to_accept_us),
    ] {
        assert_eq!(summary.count, 500, "{dist} in {listener:#?}");
    }
    exact_figures(
        listener,
        7200,
        &[
            "syn_received",
            "handshakes",
            "accepted",
            "syn_to_accept_us.count",
        ],
    );
    assert_eq!(listener.addr.as_deref(), Some("127.0.0.1"));
    assert_eq!(traced.report.lost_events, 0);
    // 500 connections, far below the maps' capacity: every entry the programs added was
    // accounted for as removed, replaced or still there, whichever kind it was by then.
    match traced.report.pending_evicted.clone() {
        Some(evicted) => assert_eq!(
            (
                evicted.syn_stamps,
                evicted.queued_children,
                evicted.followed
            ),
            (0, 0, 0),
            "{evicted:?}"
        ),
        // Counted from the events: unknown only when a kernel read failed (no event is lost
        // here, asserted above).
        None => assert!(
            traced.report.kernel_failures.values().sum::<u64>() > 0,
            "no eviction count"
        ),
    }
    assert_eq!(traced.report.schema, 1);
    let syn_hook = traced.hook("syn").unwrap_or_default();
    assert!(
        syn_hook.starts_with(expected_syn_hook()) && !syn_hook.is_empty(),
        "{syn_hook}"
    );
}

#[test]
fn port_filter_leaves_other_ports_out() {
    require_root();
    let netns = Netns::new("filter");
    let script = format!(
        "{} & {}; wait",
        scenario!(&netns, "--listen", "127.0.0.1:7201", "--connections", "10"),
        scenario!(&netns, "--listen", "127.0.0.1:7202", "--connections", "10"),
    );
    let traced = synscope_run(&["--port", "7202"], &script);
    assert_eq!(traced.listener(&netns, 7202).accepted, 10);
    let ports: Vec<u16> = traced.report.listeners.iter().map(|l| l.port).collect();
    assert_eq!(ports, [7202], "only the filtered port is reported");
}
