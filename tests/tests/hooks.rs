//! The backend a user forces is the one every stage uses: the report names each stage's hook.

use std::process::Command;

use synscope_tests::{parse_report, require_root, run_ok, synscope_bin};

/// Expected prefix of each stage's hook per backend; `None`: the stage is left out.
fn expected(backend: &str, stage: &str) -> Option<&'static str> {
    match (backend, stage) {
        ("fentry", "accept" | "synack_retransmit" | "phases") => Some("fexit/"),
        ("fentry", "listen_drops") => Some("fentry+fexit/"),
        ("fentry" | "kprobe", "listener_discards") => None,
        ("fentry", _) => Some("fentry/"),
        ("kprobe", "synack_retransmit") => Some("kretprobe/"),
        ("kprobe", "listen_drops") => Some("kprobe+kretprobe/"),
        ("kprobe", _) => Some("kprobe/"),
        (_, "accept") => Some("tracepoint/syscalls:sys_exit_accept{,4}"),
        (_, "listen_drops") => None,
        _ => Some("tp_btf/"),
    }
}

#[test]
fn a_forced_backend_is_used_by_every_stage_that_offers_it() {
    require_root();
    // The kernel matrix forces each backend in turn; elsewhere this machine's tracepoints.
    let backend = std::env::var("SYNSCOPE_HOOKS").unwrap_or_else(|_| "tracepoint".to_owned());
    let output = run_ok(Command::new(synscope_bin()).args([
        "--hooks",
        &backend,
        "--duration",
        "100ms",
        "--format",
        "json",
    ]));
    let report = parse_report(&String::from_utf8_lossy(&output.stdout));
    let hooks = &report.hooks;
    let stages = [
        "syn",
        "handshake",
        "accept",
        "listen_drops",
        "listener_discards",
        "synack_retransmit",
        "queues",
        "phases",
    ];
    assert_eq!(hooks.len(), stages.len(), "{hooks:#?}");
    for stage in stages {
        let hook = hooks
            .get(stage)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no hook for {stage}: {hooks:#?}"));
        // Tracepoints that older kernels lack: kfree_skb's receiving socket (6.11),
        // sk_data_ready (6.6), sock_recv_length and sock_send_length (6.3).
        let optional = matches!(stage, "listener_discards" | "queues" | "phases");
        if backend == "tracepoint" && optional && hook == "unavailable" {
            continue;
        }
        match expected(&backend, stage) {
            Some(prefix) => assert!(
                hook.starts_with(prefix),
                "--hooks {backend}: {stage} used {hook}"
            ),
            None => assert_eq!(hook, "unavailable", "--hooks {backend}: {stage}"),
        }
    }
}
