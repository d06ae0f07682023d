//! Reports to keep, from one real run: several outputs at once (format from the extension),
//! the per-second timeline, and the HdrHistogram interval log read back with the crate's own
//! reader, each adding up to the report's counts. The scenario: 30 connections, one at a time,
//! each accepted 50 ms after it was queued, so the run spans about 1.5 s.

use std::{collections::BTreeMap, process::Command};

use base64::{Engine as _, prelude::BASE64_STANDARD};
use hdrhistogram::{
    Histogram,
    serialization::{Deserializer, interval_log::IntervalLogIterator, interval_log::LogEntry},
};
use synscope_tests::{Netns, parse_report, require_root, run_ok, scenario, synscope_bin};

const PORT: u16 = 7730;

#[test]
fn one_run_writes_every_report_and_they_agree() {
    require_root();
    let netns = Netns::new("reports");
    let dir = std::env::temp_dir().join(format!("synscope-reports-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = scenario!(
        &netns,
        "--listen",
        &format!("127.0.0.1:{PORT}"),
        "--connections",
        "30",
        "--accept-delay-ms",
        "50"
    );
    let output = run_ok(
        Command::new(synscope_bin())
            .args(["run", "--port", &PORT.to_string()])
            .args(["--fail-if", "accept_wait.p50 > 1s"])
            .arg("-o")
            .arg(dir.join("report.json"))
            .arg("-o")
            .arg(dir.join("report.md"))
            .arg("-o")
            .arg(dir.join("latency.hlog"))
            .args(["--", "sh", "-c", &script]),
    );
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("no {name}: {e}"))
    };
    let (json, markdown, hlog) = (read("report.json"), read("report.md"), read("latency.hlog"));
    let _ = std::fs::remove_dir_all(&dir);

    // The text report still goes to standard output.
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(&format!("port {PORT} on")), "{stdout}");
    assert!(
        markdown.contains(&format!("### Port {PORT} on")),
        "{markdown}"
    );
    assert!(markdown.contains("✅ every threshold held"), "{markdown}");

    let report = parse_report(&json);
    let listener = report
        .listeners
        .iter()
        .find(|l| l.port == PORT)
        .expect("the port in the report");
    assert_eq!(listener.accepted, 30);

    // The timeline: a point per second with traffic, adding up to the run.
    let points: Vec<_> = report.timeline.iter().filter(|p| p.port == PORT).collect();
    assert!(points.len() >= 2, "{points:#?}");
    assert_eq!(points.iter().map(|p| p.accepted).sum::<u64>(), 30);
    assert_eq!(
        points.iter().map(|p| p.syn_received).sum::<u64>(),
        listener.syn_received
    );
    for point in &points {
        if let Some(p99) = point.accept_wait_p99_us {
            assert!(p99 >= 50_000.0 * 0.999, "{point:#?}");
        }
    }

    // The HdrHistogram log, read back: one histogram per second and stage, whose counts add
    // up to the report's samples, values in nanoseconds.
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    let mut deserializer = Deserializer::new();
    for entry in IntervalLogIterator::new(hlog.as_bytes()) {
        let LogEntry::Interval(interval) = entry.expect("a well-formed interval log") else {
            continue;
        };
        let tag = interval.tag().expect("tagged").as_str().to_owned();
        let bytes = BASE64_STANDARD
            .decode(interval.encoded_histogram())
            .expect("base64");
        let histogram: Histogram<u64> = deserializer
            .deserialize(&mut bytes.as_slice())
            .expect("a V2 histogram");
        if tag.ends_with(":accept_wait") {
            assert!(
                histogram.min() >= 49_000_000,
                "{tag}: min {} ns",
                histogram.min()
            );
        }
        *totals.entry(tag).or_default() += histogram.len();
    }
    let stage = |name: &str| {
        totals
            .get(&format!("{}:{PORT}:{name}", netns.inode))
            .copied()
    };
    assert_eq!(
        stage("accept_wait"),
        Some(listener.accept_wait_us.count),
        "{totals:?}"
    );
    assert_eq!(
        stage("handshake"),
        Some(listener.handshake_us.count),
        "{totals:?}"
    );
    assert_eq!(
        stage("syn_to_accept"),
        Some(listener.syn_to_accept_us.count)
    );
}
