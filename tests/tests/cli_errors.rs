//! Errors that depend on the kernel and the privileges: a one-line error and a non-zero exit,
//! never a panic. Bad command lines, the same on every kernel, are the `usage` test's.

use std::process::Command;

use synscope_tests::{parse_report, require_root, synscope_bin, unprivileged_synscope};

fn stderr_of(command: &mut Command) -> (i32, String) {
    let output = command.output().expect("run synscope");
    (
        output.status.code().expect("exited normally"),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn without_root_it_says_so() {
    require_root();
    let (code, stderr) = stderr_of(unprivileged_synscope().args(["--duration", "1s"]));
    assert_ne!(code, 0);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("must run as root"), "{stderr}");
}

#[test]
fn run_passes_the_commands_exit_code_through() {
    require_root();
    let status = Command::new(synscope_bin())
        .args(["run", "--", "sh", "-c", "exit 7"])
        .output()
        .expect("run synscope")
        .status;
    assert_eq!(status.code(), Some(7));
}

#[test]
fn a_command_that_cannot_start_is_an_error() {
    require_root();
    let (code, stderr) =
        stderr_of(Command::new(synscope_bin()).args(["run", "--", "/nonexistent/cmd"]));
    assert_ne!(code, 0);
    assert!(stderr.contains("cannot run /nonexistent/cmd"), "{stderr}");
}

#[test]
fn a_forced_hook_kind_is_used_or_refused_with_the_stage_named() {
    require_root();
    // A matrix cell tries its own kind (each kind has its cell); alone, every kind.
    let forced = std::env::var("SYNSCOPE_HOOKS").ok();
    let kinds: Vec<&str> = match forced.as_deref() {
        Some(kind @ ("fentry" | "kprobe" | "tracepoint")) => vec![kind],
        _ => vec!["fentry", "kprobe", "tracepoint"],
    };
    for kind in kinds {
        let output = Command::new(synscope_bin())
            .args(["--hooks", kind, "--duration", "200ms", "--format", "json"])
            .output()
            .expect("run synscope");
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() {
            let report = parse_report(&String::from_utf8_lossy(&output.stdout));
            let syn = report
                .hooks
                .get("syn")
                .unwrap_or_else(|| panic!("no syn hook in {report:#?}"));
            let expected = if kind == "tracepoint" { "tp_btf" } else { kind };
            assert!(syn.starts_with(expected), "--hooks {kind} used {syn}");
        } else {
            // One line naming the first stage latency needs that cannot use this kind.
            let error = stderr.lines().last().unwrap_or_default();
            let names_a_stage = ["syn", "handshake", "accept"].iter().any(|stage| {
                error.starts_with(&format!(
                    "Error: --hooks {kind}: the {stage} stage cannot use it"
                ))
            });
            assert!(names_a_stage, "{stderr}");
        }
    }
}
