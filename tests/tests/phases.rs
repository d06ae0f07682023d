//! The phases after accept(): a server that reads each request as soon as it arrives and works
//! a known time before answering, clients that send their request a known time after
//! connecting. Read wait, service and SYN -> first byte must show those times, and the verdict
//! must name the handler; `--phases none` leaves them null.

use synscope_tests::{
    Netns, figure, more_than_kretprobe_instances, require_root, scenario, synscope_run,
};

const CONNECTIONS: u64 = 12;
const REQUEST_DELAY_MS: f64 = 20.0;
const HANDLER_MS: f64 = 60.0;

fn script(netns: &Netns, port: u16) -> String {
    scenario!(
        netns,
        "request",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--connections",
        &CONNECTIONS.to_string(),
        "--request-delay-ms",
        "20",
        "--handler-ms",
        "60"
    )
}

/// Within [at, at + slack) milliseconds: a sleep is never shorter, and a loaded machine
/// (or QEMU's emulation) wakes late.
fn around(name: &str, us: f64, at: f64) {
    let ms = us / 1000.0;
    assert!(
        (at..at + 30.0).contains(&ms),
        "{name} {ms} ms, expected {at} ms"
    );
}

#[test]
fn read_wait_and_service_show_the_known_times() {
    require_root();
    let netns = Netns::new("phases");
    let port = 7190;
    let traced = synscope_run(&[], &script(&netns, port));
    let listener = traced.listener(&netns, port);
    assert_eq!(listener.accepted, CONNECTIONS, "{listener:#?}");
    if traced.hook("phases") == Some("unavailable") {
        // Tracepoints only, before 6.3: no sock_recv_length. Said, and null, not zero.
        let why = &traced.report.unobserved["phases"];
        assert!(why.contains("sock_recv_length"), "{why}");
        assert_eq!(listener.first_responses, None);
        assert_eq!(listener.service_us, None);
        return;
    }
    assert_eq!(listener.first_responses, Some(CONNECTIONS), "{listener:#?}");
    assert_eq!(listener.responded_unasked, Some(0));
    let read_wait = listener.read_wait_us.as_ref().expect("traced");
    let service = listener.service_us.as_ref().expect("traced");
    let first_byte = listener.syn_to_first_byte_us.as_ref().expect("traced");
    assert_eq!(
        (read_wait.count, service.count, first_byte.count),
        (CONNECTIONS, CONNECTIONS, CONNECTIONS)
    );
    // The client sends REQUEST_DELAY_MS after its connect returns; the server's accept() comes
    // a little after that, so the read wait is the delay less the accept's lateness.
    let accept_late_ms = listener.syn_to_accept_us.max / 1000.0;
    let read_wait_ms = read_wait.min / 1000.0;
    assert!(
        read_wait_ms + accept_late_ms >= REQUEST_DELAY_MS * 0.99,
        "read wait min {read_wait_ms} ms + SYN->accept max {accept_late_ms} ms < {REQUEST_DELAY_MS} ms"
    );
    around("read wait p50", read_wait.p50 + 10_000.0, REQUEST_DELAY_MS);
    around("service p50", service.p50, HANDLER_MS);
    around("service min", service.min, HANDLER_MS);
    around(
        "SYN -> first byte p50",
        first_byte.p50,
        REQUEST_DELAY_MS + HANDLER_MS,
    );
    // The whole is the sum of its parts, per connection.
    let parts = listener.syn_to_accept_us.min + read_wait.min + service.min;
    assert!(
        first_byte.min >= parts * 0.99,
        "SYN -> first byte min {} µs below its parts' minima {parts} µs",
        first_byte.min
    );
    assert_eq!(
        listener.bottleneck.phase, "handler",
        "{:#?}",
        listener.bottleneck
    );
    figure(
        "first_responses",
        listener.first_responses.unwrap() as f64,
        0.0,
    );
    figure("service_p50_ms", service.p50 / 1000.0, 0.5);
}

#[test]
fn phases_none_leaves_them_out() {
    require_root();
    let netns = Netns::new("phases-none");
    let port = 7191;
    let traced = synscope_run(&["--phases", "none"], &script(&netns, port));
    let listener = traced.listener(&netns, port);
    assert_eq!(listener.accepted, CONNECTIONS, "{listener:#?}");
    assert_eq!(listener.read_wait_us, None);
    assert_eq!(listener.service_us, None);
    assert_eq!(listener.first_responses, None);
    assert_eq!(traced.hook("phases"), Some("unavailable"));
    assert!(
        traced.report.unobserved["phases"].contains("--phases none"),
        "{:?}",
        traced.report.unobserved
    );
}

/// A thread per connection, each asleep in read() until its request comes: more of them than
/// a kretprobe has instances (max(10, 2 x CPUs) by default, one held by each thread asleep in
/// the probed function). Every first read is still seen.
#[test]
fn every_first_read_of_more_handlers_than_a_kretprobes_instances_is_seen() {
    require_root();
    let netns = Netns::new("phases-handlers");
    let port = 7192;
    let handlers = more_than_kretprobe_instances() as u64;
    let traced = synscope_run(
        &[],
        &scenario!(
            &netns,
            "handlers",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--connections",
            &handlers.to_string()
        ),
    );
    let listener = traced.listener(&netns, port);
    assert_eq!(listener.accepted, handlers, "{listener:#?}");
    if traced.hook("phases") == Some("unavailable") {
        assert_eq!(listener.first_responses, None);
        return;
    }
    assert_eq!(listener.first_responses, Some(handlers), "{listener:#?}");
    // A first read unseen would show as a response sent before any request.
    assert_eq!(listener.responded_unasked, Some(0), "{listener:#?}");
    let read_wait = listener.read_wait_us.as_ref().expect("traced");
    assert_eq!(read_wait.count, handlers, "{listener:#?}");
}
