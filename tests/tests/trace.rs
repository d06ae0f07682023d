//! `synscope trace`: one NDJSON record per accepted connection, each with its own accept
//! wait; `--min-wait` keeps exactly the slow ones of a mixed load.

use std::{process::Command, time::Duration};

use serde_json::Value;
use synscope_tests::{Netns, background::Background, require_root, run_ok, scenario, synscope_bin};

const FAST_PORT: u16 = 7160;
const SLOW_PORT: u16 = 7161;
const FAST: u64 = 12;
const SLOW: u64 = 8;
const DELAY_MS: f64 = 60.0;

/// Starts `synscope trace --format json --netns NS ARGS`, waits for its start record, runs
/// a fast scenario (accepted at once) and a slow one (DELAY_MS in the accept queue), stops
/// it and returns its records.
fn trace_mixed_load(extra: &[&str]) -> (Netns, Vec<Value>) {
    let netns = Netns::new("trace");
    let inode = netns.inode.to_string();
    let mut args = vec!["trace", "--format", "json", "--netns", &inode];
    args.extend(extra);
    let mut trace = Background::start("synscope trace", Command::new(synscope_bin()).args(&args));
    trace.wait_until(Duration::from_secs(60), |trace| {
        trace.stdout().contains("\"start\"")
    });
    for (port, connections, delay) in [(FAST_PORT, FAST, "0"), (SLOW_PORT, SLOW, "60")] {
        run_ok(Command::new("sh").arg("-c").arg(scenario!(
            &netns,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--connections",
            &connections.to_string(),
            "--accept-delay-ms",
            delay
        )));
    }
    let status = trace.stop();
    assert!(status.success(), "trace exited {status}:\n{}", trace.log());
    let records = trace
        .stdout()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    (netns, records)
}

fn of_type<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["type"] == kind).collect()
}

fn port(record: &Value) -> u16 {
    let local = record["local"].as_str().unwrap();
    local.rsplit_once(':').unwrap().1.parse().unwrap()
}

#[test]
fn one_record_per_accepted_connection_with_its_wait() {
    require_root();
    let (netns, records) = trace_mixed_load(&[]);
    assert_eq!(records.first().unwrap()["type"], "start", "{records:#?}");
    assert_eq!(records.last().unwrap()["type"], "summary", "{records:#?}");
    let accepts = of_type(&records, "accept");
    let on = |p: u16| accepts.iter().filter(|r| port(r) == p).count() as u64;
    assert_eq!((on(FAST_PORT), on(SLOW_PORT)), (FAST, SLOW), "{records:#?}");
    for record in &accepts {
        assert_eq!(record["netns"], netns.inode, "{record}");
        assert_eq!(record["comm"], "scenario", "{record}");
        assert!(record["remote"].as_str().unwrap().starts_with("127.0.0.1:"));
        let wait_ms = record["accept_wait_us"].as_f64().expect("an accept wait") / 1000.0;
        let total_ms = record["syn_to_accept_us"].as_f64().expect("a SYN->accept") / 1000.0;
        let handshake_ms = record["handshake_us"].as_f64().expect("a handshake") / 1000.0;
        // The scenario sleeps DELAY_MS after the connection is reported ready.
        let expected = if port(record) == SLOW_PORT {
            DELAY_MS..DELAY_MS + 25.0
        } else {
            0.0..25.0
        };
        assert!(
            expected.contains(&wait_ms),
            "accept wait {wait_ms} ms: {record}"
        );
        assert!(handshake_ms < 5.0, "{record}");
        assert!((total_ms - wait_ms - handshake_ms).abs() < 0.01, "{record}");
    }
    let summary = &records.last().unwrap();
    assert_eq!(summary["accepted"], FAST + SLOW);
    assert_eq!(summary["printed"], FAST + SLOW);
    assert_eq!(summary["lost_events"], 0);
}

#[test]
fn min_wait_keeps_exactly_the_slow_connections() {
    require_root();
    let (_netns, records) = trace_mixed_load(&["--min-wait", "30ms"]);
    let accepts = of_type(&records, "accept");
    assert_eq!(accepts.len() as u64, SLOW, "{records:#?}");
    assert!(accepts.iter().all(|r| port(r) == SLOW_PORT), "{records:#?}");
    let summary = records.last().unwrap();
    assert_eq!(summary["accepted"], FAST + SLOW);
    assert_eq!(summary["printed"], SLOW);
}

#[test]
fn text_lines_stop_when_the_reader_goes_away() {
    require_root();
    // `synscope trace | head -1` takes the header and closes the pipe: the next line written
    // fails, and synscope stops instead of tracing on.
    let netns = Netns::new("trace-pipe");
    let started = std::time::Instant::now();
    let script = format!(
        "'{}' trace --netns {} --duration 60s | head -1 & sleep 3; {}; wait",
        synscope_bin().display(),
        netns.inode,
        scenario!(
            &netns,
            "--listen",
            "127.0.0.1:7162",
            "--connections",
            "3",
            "--accept-delay-ms",
            "0"
        )
    );
    let out = run_ok(Command::new("bash").args(["-c", &script]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("TIME "), "{stdout}");
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "synscope went on after its reader left ({:?})",
        started.elapsed()
    );
}
