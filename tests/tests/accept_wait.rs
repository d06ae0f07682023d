//! A server that accepts each connection a known time after it entered the accept queue: the
//! accept wait must show that time, the handshake must stay far below it.

use synscope_tests::{
    Netns, QUEUED_BEFORE_STAMP_MS, exact_figures, figure, require_root, scenario, synscope_run,
};

const DELAY_MS: f64 = 50.0;
const CONNECTIONS: u64 = 20;

#[test]
fn accept_wait_matches_a_known_accept_delay() {
    require_root();
    let netns = Netns::new("delay");
    let traced = synscope_run(
        &[],
        &scenario!(
            &netns,
            "--listen",
            "127.0.0.1:7100",
            "--connections",
            "20",
            "--accept-delay-ms",
            "50"
        ),
    );
    let listener = traced.listener(&netns, 7100);

    assert_eq!(listener.syn_received, CONNECTIONS, "{listener:#?}");
    assert_eq!(listener.handshakes, CONNECTIONS, "{listener:#?}");
    assert_eq!(listener.accepted, CONNECTIONS, "{listener:#?}");
    assert_eq!(listener.accept_wait_us.count, CONNECTIONS);

    // The server sleeps DELAY_MS after poll() reports the connection, so the wait is at least
    // that (less the stamp's skew), plus a wake-up that stays well under 20 ms even on a
    // loaded two-core machine.
    let shortest_ms = DELAY_MS - QUEUED_BEFORE_STAMP_MS;
    let accept_p50_ms = listener.accept_wait_us.p50 / 1000.0;
    assert!(
        (shortest_ms..DELAY_MS + 20.0).contains(&accept_p50_ms),
        "accept wait p50 {accept_p50_ms} ms, expected {DELAY_MS} ms"
    );
    let accept_min_ms = listener.accept_wait_us.min / 1000.0;
    assert!(
        accept_min_ms >= shortest_ms,
        "accept wait min {accept_min_ms} ms"
    );

    // Loopback handshake: tens of microseconds.
    let handshake_p50 = listener.handshake_us.p50;
    assert!(
        handshake_p50 > 0.0 && handshake_p50 < 1000.0,
        "handshake p50 {handshake_p50} µs"
    );

    // SYN -> accept is the sum of the two stages: per connection it lies between the accept
    // wait and the accept wait plus the longest handshake, so its median does too (within the
    // histogram's 0.1 %).
    let total = listener.syn_to_accept_us.p50;
    let parts = listener.accept_wait_us.p50;
    let longest_handshake = listener.handshake_us.max;
    assert!(
        total >= parts * 0.999 && total <= (parts + longest_handshake) * 1.001,
        "SYN->accept p50 {total} µs vs accept wait {parts} µs + handshake max {longest_handshake} µs"
    );

    exact_figures(
        listener,
        7100,
        &["handshakes", "accepted", "syn_to_accept_us.count"],
    );
    // Both within [DELAY_MS, DELAY_MS + 20): at most 20 / 70 apart.
    figure("accept_wait_p50_ms", accept_p50_ms, 0.3);

    let acceptor = listener
        .acceptors
        .first()
        .unwrap_or_else(|| panic!("no acceptor in {listener:#?}"));
    assert_eq!(acceptor.comm, "scenario", "{listener:#?}");
    assert_eq!(acceptor.accepted, CONNECTIONS);
    assert_eq!(traced.report.lost_events, 0);
}
