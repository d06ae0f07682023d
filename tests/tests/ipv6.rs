//! IPv6 listeners, and IPv4 clients of a dual-stack [::] listener (v4-mapped addresses).

use synscope_tests::{Netns, require_root, scenario, stage_counts, synscope_run};

#[test]
fn ipv6_connections_are_measured() {
    require_root();
    let netns = Netns::new("ipv6");
    let traced = synscope_run(
        &[],
        &scenario!(
            &netns,
            "--listen",
            "[::1]:7401",
            "--connections",
            "40",
            "--accept-delay-ms",
            "5"
        ),
    );
    let listener = traced.listener(&netns, 7401);
    for (field, count) in stage_counts(listener) {
        assert_eq!(count, 40, "{field} in {listener:#?}");
    }
    assert_eq!(listener.addr.as_deref(), Some("::1"));
    assert_eq!(listener.syn_to_accept_us.count, 40);
    assert!(
        listener.accept_wait_us.p50 >= 5000.0 * 0.999,
        "{listener:#?}"
    );
}

#[test]
fn ipv4_clients_of_a_dual_stack_listener_are_matched() {
    require_root();
    let netns = Netns::new("mapped");
    let traced = synscope_run(
        &[],
        &scenario!(
            &netns,
            "--listen",
            "[::]:7402",
            "--connect",
            "127.0.0.1:7402",
            "--connections",
            "30"
        ),
    );
    let listener = traced.listener(&netns, 7402);
    for (field, count) in stage_counts(listener) {
        assert_eq!(count, 30, "{field} in {listener:#?}");
    }
    // The SYN (an IPv4 packet) matched the IPv6 child: every connection has all three stages.
    assert_eq!(listener.syn_to_accept_us.count, 30, "{listener:#?}");
}
