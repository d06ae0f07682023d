//! `synscope check` on a machine with a listener whose accept queue is full.

use std::{
    os::unix::process::CommandExt as _,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use synscope_tests::{
    Netns, require_root, synscope_bin, unprivileged_synscope, wait_for_listeners,
};

const SCENARIO: &str = env!("CARGO_BIN_EXE_scenario");

#[test]
fn check_finds_a_full_accept_queue() {
    require_root();
    let netns = Netns::new("check");
    // Backlog 2, never accepting: 3 (or 4) connections fill the queue, the others are dropped.
    let script = format!(
        "{SCENARIO} serve --listen 127.0.0.1:7651 --backlog 2 --accept-after-ms 60000 --duration-ms 60000 &
         {}
         {SCENARIO} connect --to 127.0.0.1:7651 --connections 6 --hold-ms 39000 --timeout-ms 500
         wait",
        wait_for_listeners(&[7651])
    );
    let load_errors = synscope_tests::tempdir().join("stderr");
    let mut load = Command::new("ip")
        .args(["netns", "exec", &netns.name, "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&load_errors).expect("create a file"))
        // Its own process group, ended as a whole once checked.
        .process_group(0)
        .spawn()
        .expect("start the scenario");
    // Wait until the queue is full (backlog + 1 = 3 waiting; final ACKs handled at once on
    // several CPUs can each pass the kernel's fullness check, so it may hold 4): slow machines
    // and emulators take their time (under QEMU's emulation with kprobes, more than 12 s has
    // been seen).
    let queued = |ss: &str| {
        ss.split_whitespace()
            .nth(1)
            .and_then(|q| q.parse::<u32>().ok())
    };
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let ss = Command::new("ip")
            .args(["netns", "exec", &netns.name, "ss", "-Hltn", "sport = :7651"])
            .output()
            .expect("run ss");
        seen = format!(
            "{}{}",
            String::from_utf8_lossy(&ss.stdout),
            String::from_utf8_lossy(&ss.stderr)
        );
        if queued(&seen).is_some_and(|q| q >= 3) {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let queue = queued(&seen).unwrap_or_default();
    assert!(
        (3..=4).contains(&queue),
        "the scenario's listener never held 3 connections within 30 s (ss: {seen:?}; the \
         scenario: {:?}, {})",
        load.try_wait(),
        std::fs::read_to_string(&load_errors).unwrap_or_default()
    );

    let output = Command::new(synscope_bin())
        .arg("check")
        .output()
        .expect("run synscope check");
    // SAFETY: signals the scenario's process group, which this test started.
    unsafe { libc::kill(-(load.id() as i32), libc::SIGTERM) };
    let _ = load.wait();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.starts_with("synscope check: synscope can trace on this machine"),
        "{stdout}"
    );
    let syn_line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("syn "))
        .unwrap_or_default();
    assert!(
        syn_line.contains(synscope_tests::expected_syn_hook()),
        "{stdout}"
    );

    let section = stdout
        .split(&format!("netns {}\n", netns.inode))
        .nth(1)
        .unwrap_or_else(|| panic!("namespace {} missing (ss: {seen}):\n{stdout}", netns.inode));
    let line = section
        .lines()
        .find(|l| l.trim_start().starts_with("127.0.0.1:7651"))
        .unwrap_or_else(|| panic!("listener missing:\n{section}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        &fields[1..3],
        ["2", &queue.to_string()],
        "backlog 2, queue {queue}: {line}"
    );
    let drops: u64 = fields[3].parse().unwrap();
    // Every client the queue could not hold was dropped at least once.
    assert!(drops >= u64::from(6 - queue), "{line}");
    assert!(
        line.contains("queue FULL") && line.contains(&format!("dropped {drops}")),
        "{line}"
    );
}

#[test]
fn check_without_root_says_so() {
    require_root();
    let output = unprivileged_synscope()
        .arg("check")
        .output()
        .expect("run synscope check");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(0));
    assert!(
        stderr.contains("must run as root") && stderr.lines().count() == 1,
        "{stderr}"
    );
}
