//! A running session answers a view without stopping: the report so far, and the report of the
//! last interval. Intervals taken while connections arrive must add up to the whole run.

use std::time::Duration;

use synscope::{
    report::{ListenerReport, Report},
    trace::{Session, TraceOptions, hooks::HookChoice},
};
use synscope_tests::{Netns, QUEUED_BEFORE_STAMP_MS, require_root, scenario};

const PORT: u16 = 7700;
const CONNECTIONS: u64 = 60;

/// The backend the kernel matrix forces, as the CLI would read it.
fn hooks() -> HookChoice {
    match std::env::var("SYNSCOPE_HOOKS").as_deref() {
        Ok("fentry") => HookChoice::Fentry,
        Ok("kprobe") => HookChoice::Kprobe,
        Ok("tracepoint") => HookChoice::Tracepoint,
        _ => HookChoice::Auto,
    }
}

fn listener(report: &Report) -> Option<&ListenerReport> {
    report.listeners.iter().find(|l| l.port == PORT)
}

#[test]
fn intervals_add_up_to_the_whole_run() {
    require_root();
    let netns = Netns::new("snapshots");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (intervals, so_far, whole) = runtime.block_on(async {
        let options = TraceOptions {
            ports: vec![PORT],
            hooks: hooks(),
            phases: true,
            // Counted in the kernel, read at each interval's boundary: the intervals' SYNs
            // must still add up to the run's.
            syn_events: false,
        };
        let mut session = Session::start(&options).expect("tracing starts");
        let handle = session.handle();
        // One connection at a time, each accepted 20 ms after it was queued: about 1.2 s of
        // traffic, spread over several intervals.
        let script = scenario!(
            &netns,
            "--listen",
            &format!("127.0.0.1:{PORT}"),
            "--connections",
            &CONNECTIONS.to_string(),
            "--accept-delay-ms",
            "20"
        );
        let mut traffic = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .spawn()
            .expect("start the scenario");
        let view = async {
            let mut intervals = Vec::new();
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                intervals.push(handle.interval().await.expect("the session answers"));
                if let Some(status) = traffic.try_wait().expect("poll the scenario") {
                    assert!(status.success(), "the scenario failed: {status}");
                    break;
                }
            }
            let so_far = handle.report_so_far().await.expect("the session answers");
            intervals.push(handle.interval().await.expect("the session answers"));
            (intervals, so_far)
        };
        let (intervals, so_far) = session.trace_until(view).await.expect("tracing");
        (intervals, so_far, session.report())
    });

    let whole_listener = listener(&whole).expect("the port in the whole-run report");
    assert_eq!(whole_listener.accepted, CONNECTIONS, "{whole_listener:#?}");
    assert_eq!(
        listener(&so_far).map(|l| l.accepted),
        Some(CONNECTIONS),
        "the report so far, taken after the traffic ended"
    );
    let busy: Vec<&ListenerReport> = intervals.iter().filter_map(listener).collect();
    assert!(
        busy.len() >= 2,
        "{} intervals saw traffic: the run should span several",
        busy.len()
    );
    let sum = |figure: fn(&ListenerReport) -> u64| busy.iter().map(|l| figure(l)).sum::<u64>();
    assert_eq!(sum(|l| l.syn_received), whole_listener.syn_received);
    assert_eq!(sum(|l| l.handshakes), whole_listener.handshakes);
    assert_eq!(sum(|l| l.accepted), whole_listener.accepted);
    assert_eq!(
        sum(|l| l.accept_wait_us.count),
        whole_listener.accept_wait_us.count
    );
    let interval_max = busy
        .iter()
        .map(|l| l.accept_wait_us.max)
        .fold(0.0, f64::max);
    assert_eq!(interval_max, whole_listener.accept_wait_us.max);
    // Each interval's accept waits are the 20 ms delay, as the whole run's are (an interval
    // may hold only handshakes, whose accepts fall in the next).
    for l in busy.iter().filter(|l| l.accept_wait_us.count > 0) {
        assert!(
            l.accept_wait_us.min >= (20.0 - QUEUED_BEFORE_STAMP_MS) * 1000.0,
            "{:?}",
            l.accept_wait_us
        );
    }
    // The namespace's own counter over the intervals adds up to its count over the run.
    let passive_opens = |report: &Report| {
        report
            .namespaces
            .iter()
            .find(|n| n.netns == netns.inode)
            .and_then(|n| n.counters.get("PassiveOpens").copied())
            .unwrap_or(0)
    };
    let summed: u64 = intervals.iter().map(passive_opens).sum();
    assert_eq!(summed, passive_opens(&whole));
    assert_eq!(summed, CONNECTIONS);
}
