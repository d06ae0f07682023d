//! `cargo xtask bench`: what tracing costs a loopback connect/accept loop.
//!
//! Two measures, both from one invocation (see ../shared/notes/measuring.md):
//! - throughput ratio: the same loop untraced and traced, alternating, median and spread;
//! - BPF time per connection: the kernel's own accounting of each program's run time
//!   (kernel.bpf_stats_enabled), independent of machine noise.

use std::{collections::BTreeMap, path::Path, process::Command};

use anyhow::{Context as _, anyhow};

use crate::commands::{check, output};

const CONNECTIONS: u64 = 5000;
const ROUNDS: usize = 5;
const NETNS: &str = "synscope-bench";
/// The programs of the tracepoint backend, as bpftool shows them (names cut to 15 bytes).
const PROGRAMS: [&str; 7] = [
    "syn_consume_skb",
    "handshake_set_state",
    "accept_exit_accept4",
    "accept_exit_accept",
    "listener_discards_kfree_skb",
    "synack_retransmit_tracepoint",
    "queues_data_ready",
];

pub fn run(root: &Path) -> anyhow::Result<()> {
    crate::cargo(
        root,
        &[
            "build",
            "--release",
            "--package",
            "probe-user",
            "--package",
            "synscope-tests",
        ],
    )?;
    let synscope = root.join("target/release/synscope");
    let scenario = root.join("target/release/scenario");
    let _ = Command::new("ip").args(["netns", "del", NETNS]).status();
    check(Command::new("ip").args(["netns", "add", NETNS]))?;
    let result = (|| {
        check(Command::new("ip").args(["-n", NETNS, "link", "set", "lo", "up"]))?;
        check(Command::new("sysctl").args(["-qw", "kernel.bpf_stats_enabled=1"]))?;
        measure(&synscope, &scenario)
    })();
    let _ = Command::new("sysctl")
        .args(["-qw", "kernel.bpf_stats_enabled=0"])
        .status();
    let _ = Command::new("ip").args(["netns", "del", NETNS]).status();
    result
}

fn measure(synscope: &Path, scenario: &Path) -> anyhow::Result<()> {
    let workload = format!(
        "ip netns exec {NETNS} {} --listen 127.0.0.1:7700 --connections {CONNECTIONS} --concurrency 2",
        scenario.display()
    );
    let stats_file = std::env::temp_dir().join("synscope-bench-bpftool.json");
    let (mut untraced, mut traced) = (Vec::new(), Vec::new());
    let mut bpf: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for round in 1..=ROUNDS {
        untraced.push(rate(&shell(&workload)?)?);
        // bpftool runs while the programs are still attached, right after the workload.
        let traced_run = format!(
            "{workload} && bpftool prog show -j > {}",
            stats_file.display()
        );
        let output = output(Command::new(synscope).args([
            "run",
            "--format",
            "json",
            "--output",
            "/dev/null",
            "--",
            "sh",
            "-c",
            &traced_run,
        ]))?;
        traced.push(rate(&output)?);
        for (name, (time, count)) in program_stats(&std::fs::read_to_string(&stats_file)?)? {
            let entry = bpf.entry(name).or_default();
            entry.0 += time;
            entry.1 += count;
        }
        eprintln!("bench: round {round}/{ROUNDS} done");
    }
    let ratios: Vec<f64> = traced.iter().zip(&untraced).map(|(t, u)| t / u).collect();
    println!(
        "loopback connect/accept/close, {CONNECTIONS} connections per run, 2 clients, {ROUNDS} rounds"
    );
    println!("  untraced   {}", summary(&untraced, "conn/s"));
    println!("  traced     {}", summary(&traced, "conn/s"));
    println!(
        "  ratio      {}",
        summary(&ratios, "(traced / untraced, same round)")
    );
    let total_connections = CONNECTIONS * ROUNDS as u64;
    let mut total_ns = 0;
    println!("BPF run time (kernel accounting), over {total_connections} connections:");
    for (name, (time, count)) in &bpf {
        total_ns += time;
        let per_run = if *count > 0 {
            *time as f64 / *count as f64
        } else {
            0.0
        };
        println!(
            "  {name:<16} {count:>9} runs {per_run:>8.0} ns/run {:>8.0} ns/connection",
            *time as f64 / total_connections as f64
        );
    }
    println!(
        "  all programs: {:.0} ns per connection",
        total_ns as f64 / total_connections as f64
    );
    Ok(())
}

/// Connections per second from the scenario's "in N us" line.
fn rate(output: &str) -> anyhow::Result<f64> {
    let micros: f64 = output
        .lines()
        .find_map(|l| l.split(" in ").nth(1)?.strip_suffix(" us")?.parse().ok())
        .ok_or_else(|| anyhow!("no timing in the scenario's output: {output}"))?;
    Ok(CONNECTIONS as f64 / (micros / 1e6))
}

/// (run_time_ns, run_cnt) of synscope's programs in `bpftool prog show -j` output.
fn program_stats(json: &str) -> anyhow::Result<BTreeMap<String, (u64, u64)>> {
    let programs: serde_json::Value = serde_json::from_str(json).context("bpftool output")?;
    let mut stats = BTreeMap::new();
    for program in programs.as_array().into_iter().flatten() {
        let name = program["name"].as_str().unwrap_or_default();
        let ours = !name.is_empty() && PROGRAMS.iter().any(|p| p.starts_with(name));
        if ours {
            let entry: &mut (u64, u64) = stats.entry(name.to_owned()).or_default();
            entry.0 += program["run_time_ns"].as_u64().unwrap_or(0);
            entry.1 += program["run_cnt"].as_u64().unwrap_or(0);
        }
    }
    Ok(stats)
}

fn summary(values: &[f64], unit: &str) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    format!(
        "median {:.3} {unit}, min {:.3}, max {:.3}",
        sorted[sorted.len() / 2],
        sorted[0],
        sorted[sorted.len() - 1]
    )
}

fn shell(script: &str) -> anyhow::Result<String> {
    output(Command::new("sh").args(["-c", script]))
}
