//! Listeners are told apart by port and by network namespace.

use synscope_tests::{Netns, require_root, scenario, stage_counts, synscope_run};

#[test]
fn two_ports_in_one_namespace_are_reported_apart() {
    require_root();
    let netns = Netns::new("ports");
    let script = format!(
        "{} & {}; wait",
        scenario!(
            &netns,
            "--listen",
            "127.0.0.1:7301",
            "--connections",
            "30",
            "--concurrency",
            "2"
        ),
        scenario!(
            &netns,
            "--listen",
            "127.0.0.1:7302",
            "--connections",
            "70",
            "--concurrency",
            "2"
        ),
    );
    let traced = synscope_run(&[], &script);
    for (port, expected) in [(7301, 30), (7302, 70)] {
        let listener = traced.listener(&netns, port);
        for (field, count) in stage_counts(listener) {
            assert_eq!(count, expected, "port {port} {field} in {listener:#?}");
        }
    }
}

#[test]
fn the_same_port_in_two_namespaces_is_reported_apart() {
    require_root();
    let (first, second) = (Netns::new("nsa"), Netns::new("nsb"));
    let script = format!(
        "{} & {}; wait",
        scenario!(&first, "--listen", "127.0.0.1:7303", "--connections", "25"),
        scenario!(&second, "--listen", "127.0.0.1:7303", "--connections", "45"),
    );
    let traced = synscope_run(&[], &script);
    for (netns, expected) in [(&first, 25), (&second, 45)] {
        let listener = traced.listener(netns, 7303);
        for (field, count) in stage_counts(listener) {
            assert_eq!(
                count, expected,
                "netns {} {field} in {listener:#?}",
                netns.inode
            );
        }
    }
}
