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
    for (field, count) in stage_counts(listener) {
        assert_eq!(count, 20, "{field} in {listener:#?}");
    }
    assert_eq!(listener.accept_wait_us.count, 20, "{listener:#?}");
    let wait = listener.accept_wait_us.p50;
    assert!((20_000.0..40_000.0).contains(&wait), "{listener:#?}");
    exact_figures(listener, 7711, &["accepted", "accept_wait_us.count"]);
    figure("accept_wait_p50_ms", wait / 1000.0, 0.5);
}
