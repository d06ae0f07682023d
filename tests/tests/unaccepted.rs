//! The connections accept() did not take: clients that gave up while queued (and were
//! accepted anyway), connections still queued when tracing stopped, and children discarded
//! by their listener's close; and the verdict that names the accept queue.

use synscope_tests::{Netns, require_root, synscope_run_in, wait_for_listeners};

const SCENARIO: &str = env!("CARGO_BIN_EXE_scenario");

/// A server that accepts nothing for `accept_after_ms`, then everything, until `duration_ms`.
fn server(port: u16, accept_after_ms: u64, duration_ms: u64) -> String {
    format!(
        "'{SCENARIO}' serve --listen 127.0.0.1:{port} --backlog 64 \
         --accept-after-ms {accept_after_ms} --duration-ms {duration_ms}"
    )
}

/// `connections` clients that connect and hold their connection `hold_ms`, then close it.
fn clients(port: u16, connections: u64, hold_ms: u64) -> String {
    format!(
        "'{SCENARIO}' connect --to 127.0.0.1:{port} --connections {connections} \
         --hold-ms {hold_ms} --timeout-ms 1000"
    )
}

#[test]
fn clients_that_left_while_queued_are_counted_and_seen_accepted_later() {
    require_root();
    let netns = Netns::new("abandoned");
    let port = 7180;
    // The clients close after 300 ms (their FIN reaches children still queued); the server
    // starts accepting at 1.5 s and takes them all anyway.
    let traced = synscope_run_in(
        &netns,
        &format!(
            "{} & {}\n{}; wait",
            server(port, 1500, 2500),
            wait_for_listeners(&[port]),
            clients(port, 10, 300)
        ),
    );
    let listener = traced.listener(&netns, port);
    assert_eq!(
        (listener.handshakes, listener.accepted),
        (10, 10),
        "{listener:#?}"
    );
    let abandoned = listener.abandoned_in_queue.as_ref().expect("observed");
    assert_eq!(
        (abandoned.by_fin, abandoned.by_rst, abandoned.accepted_later),
        (10, 0, 10),
        "{listener:#?}"
    );
    assert_eq!(listener.never_accepted.count, 0, "{listener:#?}");
    // Queued about 1.2 s: the verdict is the accept queue's.
    assert_eq!(listener.bottleneck.phase, "accept_queue", "{listener:#?}");
    assert!(listener.accept_wait_us.p50 > 1_000_000.0, "{listener:#?}");
}

#[test]
fn connections_still_queued_at_the_end_are_never_accepted() {
    require_root();
    let netns = Netns::new("never");
    let port = 7181;
    // The server never accepts; tracing ends about 1.5 s after the handshakes, while the
    // clients still hold their connections.
    let traced = synscope_run_in(
        &netns,
        &format!(
            "{} & {}\n{} & sleep 1.8",
            server(port, 60_000, 5_000),
            wait_for_listeners(&[port]),
            clients(port, 12, 4_000)
        ),
    );
    let listener = traced.listener(&netns, port);
    assert_eq!(
        (listener.handshakes, listener.accepted),
        (12, 0),
        "{listener:#?}"
    );
    let never = &listener.never_accepted;
    assert_eq!(never.count, 12, "{listener:#?}");
    let oldest = never.oldest_wait_us.expect("a wait") / 1e6;
    assert!(
        (1.0..3.0).contains(&oldest),
        "oldest {oldest} s: {listener:#?}"
    );
    assert_eq!(listener.accept_wait_us.count, 0);
    let verdict = &listener.bottleneck;
    assert_eq!(verdict.phase, "accept_queue", "{verdict:#?}");
    assert_eq!(verdict.p99_us, never.oldest_wait_us, "{verdict:#?}");
    assert!(verdict.meaning.contains("nothing accepted"), "{verdict:#?}");
    let abandoned = listener.abandoned_in_queue.as_ref().expect("observed");
    assert_eq!(abandoned.by_fin + abandoned.by_rst, 0, "{listener:#?}");
}

#[test]
fn children_a_closing_listener_discards_are_not_abandoned() {
    require_root();
    let netns = Netns::new("discarded");
    let (port, busy_port) = (7182, 7183);
    // The server closes at 1.2 s without accepting; the clients hold on until after. Then 400
    // connections to another port, whose server closes each first: their sockets take the
    // freed children's memory, and a client socket moving to CLOSE_WAIT at a discarded child's
    // address must not be taken for that child.
    let traced = synscope_run_in(
        &netns,
        &format!(
            "{} & server=$!; {}\n{} & wait $server\n\
             '{SCENARIO}' --listen 127.0.0.1:{busy_port} --connections 400 --concurrency 16\n\
             sleep 0.5",
            server(port, 60_000, 1_200),
            wait_for_listeners(&[port]),
            clients(port, 8, 2_000)
        ),
    );
    let busy = traced.listener(&netns, busy_port);
    assert_eq!((busy.handshakes, busy.accepted), (400, 400), "{busy:#?}");
    let abandoned = busy.abandoned_in_queue.as_ref().expect("observed");
    assert_eq!(abandoned.by_fin + abandoned.by_rst, 0, "{busy:#?}");
    let listener = traced.listener(&netns, port);
    assert_eq!(
        (listener.handshakes, listener.accepted),
        (8, 0),
        "{listener:#?}"
    );
    assert_eq!(
        listener.never_accepted.discarded_at_close, 8,
        "{listener:#?}"
    );
    assert_eq!(listener.never_accepted.count, 0, "{listener:#?}");
    let abandoned = listener.abandoned_in_queue.as_ref().expect("observed");
    assert_eq!(abandoned.by_fin + abandoned.by_rst, 0, "{listener:#?}");
}
