//! Bad command lines: exactly one line on standard error and exit 2, before anything touches
//! the kernel, so the same on every kernel (a view's test: run once, not in every matrix cell).

use std::{ffi::OsString, os::unix::ffi::OsStringExt as _, process::Command};

use synscope_tests::synscope_bin;

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
