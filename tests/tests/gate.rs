//! The CI gate: `--fail-if` thresholds decide the exit code of a real traced run. The
//! scenario's server accepts each connection 20 ms after it was queued, so the accept wait's
//! p50 is known to lie in [20, 40) ms.

use std::process::Command;

use synscope::report::Report;
use synscope_tests::{Netns, parse_report, require_root, scenario, synscope_bin};

const PORT: u16 = 7720;

/// What `synscope run` did: its exit code, standard error and report.
struct Gate {
    code: i32,
    stderr: String,
    report: Option<Report>,
    junit: Option<String>,
}

/// Runs `synscope run --fail-if EXPR... --output report.json --junit junit.xml -- sh -c
/// SCRIPT`, where SCRIPT runs the 20 ms scenario (and then `extra`).
fn gate(netns: &Netns, thresholds: &[&str], extra: &str) -> Gate {
    let dir = std::env::temp_dir().join(format!("synscope-gate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (report_path, junit_path) = (dir.join("report.json"), dir.join("junit.xml"));
    let _ = std::fs::remove_file(&report_path);
    let _ = std::fs::remove_file(&junit_path);
    let script = format!(
        "{} {extra}",
        scenario!(
            netns,
            "--listen",
            &format!("127.0.0.1:{PORT}"),
            "--connections",
            "10",
            "--accept-delay-ms",
            "20"
        )
    );
    let mut command = Command::new(synscope_bin());
    command.arg("run");
    for threshold in thresholds {
        command.args(["--fail-if", threshold]);
    }
    let output = command
        .arg("--output")
        .arg(&report_path)
        .arg("--junit")
        .arg(&junit_path)
        .args(["--", "sh", "-c", &script])
        .output()
        .expect("run synscope");
    let gate = Gate {
        code: output.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        report: std::fs::read_to_string(&report_path)
            .ok()
            .filter(|text| !text.is_empty())
            .map(|text| parse_report(&text)),
        junit: std::fs::read_to_string(&junit_path).ok(),
    };
    let _ = std::fs::remove_dir_all(&dir);
    gate
}

/// JUnit's test cases: (name, failed).
fn junit_cases(xml: &str) -> Vec<(String, bool)> {
    let document = roxmltree::Document::parse(xml).expect("well-formed JUnit XML");
    document
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .map(|case| {
            let failed = case.children().any(|c| c.has_tag_name("failure"));
            (
                case.attribute("name").unwrap_or_default().to_owned(),
                failed,
            )
        })
        .collect()
}

#[test]
fn thresholds_that_hold_exit_0() {
    require_root();
    let netns = Netns::new("gate-held");
    let run = gate(
        &netns,
        &[
            "accept_wait.p50 > 2s",
            &format!("{PORT}:drops > 0"),
            "lost_events > 0",
        ],
        "",
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = run.report.expect("a report");
    assert_eq!(report.thresholds.len(), 3, "{:#?}", report.thresholds);
    assert!(
        report.thresholds.iter().all(|t| t.held),
        "{:#?}",
        report.thresholds
    );
    let p50 = report.thresholds[0].value.expect("measured");
    assert!(
        (20_000.0..40_000.0).contains(&p50),
        "accept wait p50 {p50} µs"
    );
    let cases = junit_cases(&run.junit.expect("a JUnit file"));
    assert_eq!(cases.len(), 3);
    assert!(cases.iter().all(|(_, failed)| !failed), "{cases:?}");
}

#[test]
fn a_broken_threshold_exits_99_and_says_which() {
    require_root();
    let netns = Netns::new("gate-broken");
    let run = gate(&netns, &["accept_wait.p50 > 10ms", "handshakes < 5"], "");
    assert_eq!(run.code, 99, "{}", run.stderr);
    let broken: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("synscope: threshold broken:"))
        .collect();
    assert_eq!(broken.len(), 1, "{}", run.stderr);
    assert!(
        broken[0].contains(&format!(":{PORT} accept_wait.p50 = "))
            && broken[0].ends_with("(fails if > 10ms)"),
        "{}",
        broken[0]
    );
    let cases = junit_cases(&run.junit.expect("a JUnit file"));
    assert_eq!(
        cases,
        [
            (format!("accept_wait.p50 > 10ms [:{PORT}]"), true),
            (format!("handshakes < 5 [:{PORT}]"), false)
        ]
    );
}

#[test]
fn the_commands_failure_comes_before_the_thresholds() {
    require_root();
    let netns = Netns::new("gate-command");
    let run = gate(&netns, &["accept_wait.p50 > 10ms"], "; exit 3");
    assert_eq!(run.code, 3, "{}", run.stderr);
    // The report still says the threshold broke.
    let report = run.report.expect("a report");
    assert!(!report.thresholds[0].held);
}

#[test]
fn a_port_without_traffic_breaks_its_threshold() {
    require_root();
    let netns = Netns::new("gate-idle");
    let run = gate(&netns, &["7799:accept_wait.p99 > 1s"], "");
    assert_eq!(run.code, 99, "{}", run.stderr);
    assert!(
        run.stderr.contains("no traffic reached :7799"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_invalid_threshold_is_a_usage_error_before_anything_runs() {
    require_root();
    let marker = std::env::temp_dir().join(format!("synscope-gate-ran-{}", std::process::id()));
    for (expression, complaint) in [
        ("accept_wait.p99 > 5", "needs a unit"),
        ("accept_wait.p98 > 5ms", "unknown statistic"),
        ("latency > 5ms", "unknown figure"),
    ] {
        let output = Command::new(synscope_bin())
            .args(["run", "--fail-if", expression, "--", "touch"])
            .arg(&marker)
            .output()
            .expect("run synscope");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(expression) && stderr.contains(complaint),
            "{stderr}"
        );
        assert!(!marker.exists(), "the command ran despite {expression:?}");
    }
    // An option run does not know is a usage error, not the command to run.
    let output = Command::new(synscope_bin())
        .args(["run", "--no-such-option", "--", "true"])
        .output()
        .expect("run synscope");
    assert_eq!(output.status.code(), Some(2));
}
