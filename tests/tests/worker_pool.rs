//! A worker pool: more threads blocked in accept() than a kretprobe has instances (the kernel
//! gives one max(10, 2 x CPUs) by default, and a thread holds one for as long as it sleeps in
//! accept()). Every accept is seen, and every thread that accepted is counted.

use synscope_tests::{Netns, more_than_kretprobe_instances, require_root, scenario, synscope_run};

#[test]
fn every_accept_of_a_pool_larger_than_a_kretprobes_instances_is_seen() {
    require_root();
    let netns = Netns::new("pool");
    let port = 7290;
    let acceptors = more_than_kretprobe_instances();
    let connections = 3 * acceptors;
    let traced = synscope_run(
        &[],
        &scenario!(
            &netns,
            "pool",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--acceptors",
            &acceptors.to_string(),
            "--connections",
            &connections.to_string()
        ),
    );
    let threads: usize = traced
        .stdout
        .split_whitespace()
        .skip_while(|word| *word != "by")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no thread count in {:?}", traced.stdout));
    let listener = traced.listener(&netns, port);
    let connections = connections as u64;
    assert_eq!(
        (
            listener.syn_received,
            listener.handshakes,
            listener.accepted
        ),
        (connections, connections, connections),
        "{listener:#?}"
    );
    assert_eq!(listener.accept_wait_us.count, connections, "{listener:#?}");
    assert_eq!(
        traced.namespace_counter(&netns, "PassiveOpens"),
        connections
    );
    // The client connects one at a time, and the kernel wakes the longest-waiting worker: the
    // accepts go round the whole pool.
    assert!(threads > 10, "only {threads} threads accepted");
    // The listener (backlog 128) often opens and closes between two of synscope's polls: its
    // backlog then comes from the kernel programs, or is unknown where no queues hook runs;
    // never 0.
    let backlog_known = traced.hook("queues") != Some("unavailable");
    assert!(
        listener.backlog == Some(128) || (!backlog_known && listener.backlog.is_none()),
        "backlog {:?}",
        listener.backlog
    );
    let accept_loop = &listener.accept_loop;
    assert_eq!(
        (accept_loop.processes, accept_loop.threads as usize),
        (1, threads),
        "{accept_loop:#?}"
    );
}
