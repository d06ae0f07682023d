//! A server that accepts through io_uring: no accept(2) system call is made, the kernel
//! accepts inside io_uring_enter.

use synscope_tests::{
    Netns, exact_figures, figure, require_root, scenario, stage_counts, synscope_run,
};

#[test]
fn io_uring_accepts_are_measured() {
    require_root();
    let netns = Netns::new("iouring");
    let traced = synscope_run(
        &[],
        &scenario!(
            &netns,
            "--listen",
            "127.0.0.1:7711",
            "--connections",
            "20",
            "--accept-delay-ms",
            "20",
            "--io-uring",
            "1"
        ),
    );
    let listener = traced.listener(&netns, 7711);
    let accept_hook = traced.hook("accept").unwrap_or_default();
    // Before 5.19 the io_uring_complete tracepoint does not pass the request: with tracepoints
    // alone io_uring accepts are invisible, and the report must say so rather than show 0
    // as if nothing had been accepted without a word.
    let kernel_accepts = ["fexit/", "kprobe/", "kretprobe/"]
        .iter()
        .any(|backend| accept_hook.starts_with(backend));
    if !kernel_accepts && !accept_hook.contains("io_uring") {
        let why = traced
            .report
            .unobserved
            .get("accept (tp_btf/io_uring_complete)")
            .unwrap_or_else(|| {
                panic!(
                    "io_uring accepts unobserved without a reason: {:#?}",
                    traced.report
                )
            });
        assert!(why.contains("io_uring"), "{why}");
        assert_eq!(listener.handshakes, 20, "{listener:#?}");
        assert_eq!(listener.accepted, 0, "{listener:#?}");
        return;
    }
    for (field, count) in stage_counts(listener) {
        assert_eq!(count, 20, "{field} in {listener:#?}");
    }
    assert_eq!(listener.accept_wait_us.count, 20, "{listener:#?}");
    let wait = listener.accept_wait_us.p50;
    assert!((20_000.0..40_000.0).contains(&wait), "{listener:#?}");
    exact_figures(listener, 7711, &["accepted", "accept_wait_us.count"]);
    figure("accept_wait_p50_ms", wait / 1000.0, 0.5);
}
