//! Bad input gets a one-line error and a non-zero exit, never a panic.

use std::{ffi::OsString, os::unix::ffi::OsStringExt as _, process::Command};

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

/// Every bad command line: exactly one line on standard error, nothing on standard output, exit
/// 2 (a usage error, as clap's own), found before anything is loaded into the kernel.
fn assert_usage_error(args: &[OsString]) {
    let output = Command::new(synscope_bin())
        .args(args)
        .output()
        .expect("run synscope");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    assert!(stderr.starts_with("Error: "), "{args:?}: {stderr}");
    assert!(
        stderr.ends_with("(see synscope --help)\n"),
        "{args:?}: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    assert!(output.stdout.is_empty(), "{args:?}: {stderr}");
}

#[test]
fn bad_flags_are_one_line_errors() {
    let many_ports: Vec<String> = (1..=65)
        .flat_map(|p| ["-p".into(), p.to_string()])
        .collect();
    let many_ports: Vec<&str> = many_ports.iter().map(String::as_str).collect();
    let bad: &[&[&str]] = &[
        // Unknown flags and commands.
        &["--bogus"],
        &["-z"],
        &["nosuch"],
        &["run", "--bogus", "--", "true"],
        &["top", "--bogus"],
        &["trace", "--bogus"],
        &["serve", "--bogus"],
        &["check", "--bogus"],
        &["demo", "--bogus"],
        // Options every command takes.
        &["--port", "0"],
        &["--port", "70000"],
        &["--port", "http"],
        &["--port", "-1"],
        &["--port"],
        &many_ports,
        &["--duration", "0"],
        &["--duration", "0s"],
        &["--duration", "abc"],
        &["--duration", "5"],
        &["--duration", "-5s"],
        &["--duration", ""],
        &["--duration"],
        &["--format", "xml"],
        &["--format", ""],
        &["--format"],
        &["--hooks", "magic"],
        &["--phases", "all"],
        &["--fail-if", "nonsense"],
        &["--fail-if", "accept_wait.p99 > 5"],
        &["--fail-if", "accept_wait.p98 > 5ms"],
        &["--fail-if", "0:drops > 0"],
        &["--fail-if", "8080:lost_events > 0"],
        &["--fail-if", "drops > 3ms"],
        &["--fail-if"],
        &["--output"],
        &["--output", "report.unknown"],
        &["--hdr-log"],
        &["--junit"],
        &["demo", "--port", "0"],
        &["check", "--duration", "x"],
        // run
        &["run"],
        &["run", "--"],
        &["run", "--duration", "5s", "--", "true"],
        // top
        &["top", "--interval", "1ms"],
        &["top", "--interval", "99ms"],
        &["top", "--interval", "x"],
        &["top", "--interval"],
        // trace
        &["trace", "--min-wait", "x"],
        &["trace", "--min-wait", "0"],
        &["trace", "--netns", "x"],
        &["trace", "--netns", "-1"],
        &["trace", "--netns", "4294967296"],
        &["trace", "--pid", "x"],
        &["trace", "--output", "r.json"],
        &["trace", "--junit", "r.xml"],
        &["trace", "--fail-if", "drops > 0"],
        &["trace", "--format", "html"],
        // serve
        &["serve", "--listen", "nothere"],
        &["serve", "--listen", "127.0.0.1"],
        &["serve", "--listen", "127.0.0.1:70000"],
        &["serve", "--max-listeners", "0"],
        &["serve", "--max-listeners", "100001"],
        &["serve", "--max-listeners", "many"],
        &["serve", "--forget-after", "0"],
        &["serve", "--forget-after", "soon"],
        &["serve", "--output", "r.json"],
        &["serve", "--format", "json"],
        &["serve", "--hdr-log", "r.hlog"],
        &["serve", "--fail-if", "drops > 0"],
    ];
    for args in bad {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        assert_usage_error(&args);
    }
    // Not UTF-8, where a word is expected.
    assert_usage_error(&["--format".into(), OsString::from_vec(vec![0xff])]);
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
    for kind in ["fentry", "kprobe", "tracepoint"] {
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
