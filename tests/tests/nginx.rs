//! A real server under a real load generator: nginx from Debian's packages, driven by ab
//! (ApacheBench) without keep-alive, so every request is one connection. ab may open up to
//! `-c` connections more than it completes requests (it starts new ones while the last
//! responses arrive), so the exact figure comes from the kernel: the namespace's
//! `Tcp: PassiveOpens` counter, one per connection that completed its handshake.

use std::{fs, process::Command};

use synscope::host::counters::parse_pairs;
use synscope_tests::{Netns, require_root, stage_counts, synscope_run};

const REQUESTS: u64 = 2000;
const CONCURRENCY: u64 = 20;

#[test]
fn nginx_under_ab_accepts_every_connection_ab_made() {
    require_root();
    assert!(
        Command::new("nginx").arg("-v").output().is_ok()
            && Command::new("ab").arg("-V").output().is_ok(),
        "nginx and ab are needed: apt-get install nginx-light apache2-utils (xtask/setup.sh does)"
    );
    let netns = Netns::new("nginx");
    let dir = std::env::temp_dir().join(format!("synscope-nginx-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("nginx.conf");
    fs::write(
        &conf,
        format!(
            "daemon off;
worker_processes 2;
pid {dir}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    server {{
        listen 127.0.0.1:7500 backlog=1024;
        location / {{ return 200 \"ok\\n\"; }}
    }}
}}
",
            dir = dir.display()
        ),
    )
    .unwrap();

    let script = format!(
        "ip netns exec {ns} sh -c '
            nginx -c {conf} & nginx=$!
            trap \"kill $nginx 2>/dev/null\" EXIT
            for i in $(seq 100); do ss -Hltn \"sport = :7500\" | grep -q . && break; sleep 0.05; done
            ab -n {REQUESTS} -c {CONCURRENCY} http://127.0.0.1:7500/; status=$?
            # Let nginx accept what is still queued (ab may open a few extra connections).
            for i in $(seq 100); do ss -Hltn \"sport = :7500\" | awk '\\''{{exit $2}}'\\'' && break; sleep 0.05; done
            kill $nginx; wait $nginx; cat /proc/net/snmp; exit $status'",
        ns = netns.name,
        conf = conf.display()
    );
    let traced = synscope_run(&[], &script);
    let _ = fs::remove_dir_all(&dir);

    let ab_count = |label: &str| -> u64 {
        traced
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("ab printed no {label:?}:\n{}", traced.stdout))
    };
    let completed = ab_count("Complete requests:");
    assert_eq!(completed, REQUESTS);
    assert_eq!(ab_count("Failed requests:"), 0);

    let passive_opens = tcp_snmp(&traced.stdout, "PassiveOpens");
    assert!(
        (completed..=completed + CONCURRENCY).contains(&passive_opens),
        "kernel saw {passive_opens} connections for {completed} requests"
    );

    let listener = traced.listener(&netns, 7500);
    for (field, count) in stage_counts(listener) {
        assert_eq!(count, passive_opens, "{field} in {listener:#?}");
    }
    assert_eq!(
        listener.syn_to_accept_us.count, passive_opens,
        "{listener:#?}"
    );
    assert!(
        listener.acceptors.iter().all(|a| a.comm == "nginx"),
        "{listener:#?}"
    );
    assert_eq!(traced.report.lost_events, 0);
}

/// A `Tcp:` counter from /proc/net/snmp's header/value line pair in `text`.
fn tcp_snmp(text: &str, counter: &str) -> u64 {
    parse_pairs(text, "Tcp:", &[counter])
        .get(counter)
        .copied()
        .unwrap_or_else(|| panic!("no Tcp counter {counter} in:\n{text}"))
}
