//! `cargo xtask soak`: a long run at full speed, as root. In a network namespace of its own,
//! while synscope traces:
//!
//! - a churned port: two clients connect and wait for the close, a server accepts at once,
//!   until `--connections` have been made;
//! - a port whose server never accepts (backlog 4): now and then a client tries it and gives
//!   up, so its accept queue fills (those connections are never accepted) and the rest
//!   overflow;
//! - listeners opened and closed during the run: every few thousand connections one opens on
//!   one of 50 ports, takes three connections, accepts two and closes (the third is discarded
//!   unaccepted).
//!
//! At the end, synscope's figures must equal what the load did and the namespace's own
//! counters, with no event lost; its memory is sampled every second (resident set and the
//! memory its BPF maps charge) and must stay flat after the first tenth of the run.

use std::{
    ffi::c_int,
    io::Read as _,
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use serde_json::Value;

use crate::bench::{bpf, load::enter_netns, tracer};

const NETNS: &str = "synscope-soak";
/// Accepted at once.
const CHURN: u16 = 7900;
/// Never accepted: its queue fills, then every SYN overflows.
const STUCK: u16 = 7901;
const STUCK_BACKLOG: c_int = 4;
/// One client in this many also tries the stuck port.
const STUCK_EVERY: u64 = 1000;
/// Listeners opened and closed during the run: ports FIRST_SHORT_LIVED.. (50 of them).
const FIRST_SHORT_LIVED: u16 = 7910;
const SHORT_LIVED_PORTS: u16 = 50;
/// One client in this many opens and closes a short-lived listener.
const SHORT_LIVED_EVERY: u64 = 5000;
/// Resident memory may grow this much after the first tenth of the run (allocator noise).
const RSS_GROWTH_LIMIT_KIB: u64 = 16 * 1024;

#[derive(clap::Args)]
pub struct Options {
    /// Connections through the churned port.
    #[arg(long, default_value_t = 1_000_000)]
    connections: u64,
    /// The synscope binary (default: build it, release).
    #[arg(long)]
    synscope: Option<PathBuf>,
}

/// What the load did, counted by the load itself.
#[derive(Debug, Default)]
struct Done {
    churned: AtomicU64,
    stuck_tries: AtomicU64,
    short_lived_rounds: AtomicU64,
}

pub fn run(root: &Path, options: &Options) -> anyhow::Result<()> {
    let synscope = match &options.synscope {
        Some(path) => path.clone(),
        None => {
            crate::cargo(root, &["build", "--release", "--package", "probe-user"])?;
            root.join("target/release/synscope")
        }
    };
    let _netns = Namespace::create()?;
    let dir = std::env::temp_dir().join(format!("synscope-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let report_path = dir.join("soak.json");
    let stderr_path = dir.join("stderr");
    let before = namespace_counters()?;

    let mut child = Command::new(&synscope)
        .args(["--duration", "24h", "--format", "json", "--output"])
        .arg(&report_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path)?)
        .spawn()
        .with_context(|| format!("cannot start {}", synscope.display()))?;
    let pid = child.id();
    let started = Instant::now();
    while !std::fs::read_to_string(&stderr_path)?.contains("synscope: tracing for") {
        if let Some(status) = child.try_wait()? {
            bail!(
                "synscope exited ({status}): {}",
                std::fs::read_to_string(&stderr_path)?
            );
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            bail!("synscope did not start tracing within 60 s");
        }
        thread::sleep(Duration::from_millis(50));
    }

    // Memory, every second, while the load runs.
    let load_done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let load_done = load_done.clone();
        thread::spawn(move || {
            let mut samples = Vec::new();
            while !load_done.load(Ordering::Relaxed) {
                let rss = resident_kib(pid).unwrap_or(0);
                let maps = bpf::holdings(&pid.to_string())
                    .map(|h| h.map_bytes)
                    .unwrap_or(0);
                samples.push((rss, maps));
                thread::sleep(Duration::from_secs(1));
            }
            samples
        })
    };
    let load_started = Instant::now();
    let done = load(options.connections);
    let load_seconds = load_started.elapsed().as_secs_f64();
    load_done.store(true, Ordering::Relaxed);
    let samples = sampler
        .join()
        .map_err(|_| anyhow!("the sampler panicked"))?;
    let done = done?;
    let after = namespace_counters()?;

    let interrupted = Instant::now();
    tracer::signal(pid, tracer::SIGINT);
    let status = child.wait()?;
    let stopping = interrupted.elapsed();
    if !status.success() {
        bail!(
            "synscope failed ({status}): {}",
            std::fs::read_to_string(&stderr_path)?
        );
    }
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report_path)?)
        .context("synscope's JSON report")?;
    // What synscope said beyond its start, for a check that fails.
    for line in std::fs::read_to_string(&stderr_path)?.lines() {
        if !line.contains("synscope: tracing for") {
            println!("soak: synscope said: {line}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);

    let churned = done.churned.load(Ordering::Relaxed);
    println!(
        "soak: {churned} connections in {load_seconds:.1} s ({:.0}/s), {} tries of the stuck \
         port, {} short-lived listeners; the report {:.2} s after SIGINT",
        churned as f64 / load_seconds,
        done.stuck_tries.load(Ordering::Relaxed),
        done.short_lived_rounds.load(Ordering::Relaxed),
        stopping.as_secs_f64()
    );
    let mut failures = Vec::new();
    check_figures(&report, &done, &before, &after, &mut failures);
    check_memory(&samples, &mut failures);
    if failures.is_empty() {
        println!("soak: every check held");
        Ok(())
    } else {
        for failure in &failures {
            println!("soak: FAILED {failure}");
        }
        bail!("{} soak checks failed", failures.len())
    }
}

/// The namespace, deleted on drop (whatever the run's outcome).
struct Namespace;

impl Namespace {
    fn create() -> anyhow::Result<Self> {
        // A namespace an interrupted run left behind.
        let _ = Command::new("ip")
            .args(["netns", "del", NETNS])
            .stderr(Stdio::null())
            .status();
        crate::commands::check(Command::new("ip").args(["netns", "add", NETNS]))?;
        let namespace = Namespace;
        crate::commands::check(Command::new("ip").args(["-n", NETNS, "link", "set", "lo", "up"]))?;
        Ok(namespace)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", NETNS]).status();
    }
}

/// The namespace's `TcpExt` counters (and `Tcp` ones), by name.
fn namespace_counters() -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            NETNS,
            "cat",
            "/proc/net/netstat",
            "/proc/net/snmp",
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let mut counters = std::collections::BTreeMap::new();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        for (name, value) in names
            .split_whitespace()
            .zip(values.split_whitespace())
            .skip(1)
        {
            if let Ok(value) = value.parse() {
                counters.insert(name.to_owned(), value);
            }
        }
    }
    Ok(counters)
}

fn load(connections: u64) -> anyhow::Result<Done> {
    let done = Arc::new(Done::default());
    let churn = SocketAddr::from(([127, 0, 0, 1], CHURN));
    let stuck = SocketAddr::from(([127, 0, 0, 1], STUCK));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let stop = stop.clone();
        thread::spawn(move || -> anyhow::Result<TcpListener> {
            enter_netns(NETNS)?;
            let listener = TcpListener::bind(churn)?;
            let never_accepting = TcpListener::bind(stuck)?;
            set_backlog(&never_accepting, STUCK_BACKLOG)?;
            let _ = ready_tx.send(());
            while !stop.load(Ordering::Relaxed) {
                listener.accept().context("accept")?;
            }
            Ok(never_accepting)
        })
    };
    ready_rx
        .recv()
        .map_err(|_| anyhow!("the server did not start"))?;
    let clients: Vec<_> = (0..2u64)
        .map(|client| {
            let done = done.clone();
            thread::spawn(move || -> anyhow::Result<()> {
                enter_netns(NETNS)?;
                loop {
                    let made = done.churned.fetch_add(1, Ordering::Relaxed);
                    if made >= connections {
                        done.churned.fetch_sub(1, Ordering::Relaxed);
                        return Ok(());
                    }
                    let mut stream = TcpStream::connect(churn).context("connect")?;
                    let _ = stream.read(&mut [0u8; 1]);
                    if client == 0 && made % STUCK_EVERY == 0 {
                        // Queued while there is room, then dropped: either way given up.
                        let _ = TcpStream::connect_timeout(&stuck, Duration::from_millis(20));
                        done.stuck_tries.fetch_add(1, Ordering::Relaxed);
                    }
                    if client == 1 && made % SHORT_LIVED_EVERY == 1 {
                        let round = done.short_lived_rounds.fetch_add(1, Ordering::Relaxed);
                        short_lived_listener(FIRST_SHORT_LIVED + (round % 50) as u16)?;
                    }
                }
            })
        })
        .collect();
    let mut failure = None;
    for client in clients {
        if let Err(e) = client.join().map_err(|_| anyhow!("a client panicked"))? {
            failure = Some(e);
        }
    }
    // The server's last accept: one more connection, counted, wakes it to see `stop`.
    stop.store(true, Ordering::Relaxed);
    let waker = thread::spawn(move || -> anyhow::Result<()> {
        enter_netns(NETNS)?;
        let mut stream = TcpStream::connect(churn)?;
        let _ = stream.read(&mut [0u8; 1]);
        Ok(())
    });
    waker.join().map_err(|_| anyhow!("panicked"))??;
    done.churned.fetch_add(1, Ordering::Relaxed);
    // The never-accepting listener stays open until synscope has reported: its queued
    // connections are the never accepted ones. It closes with the namespace.
    let never_accepting = server.join().map_err(|_| anyhow!("panicked"))??;
    std::mem::forget(never_accepting);
    if let Some(e) = failure {
        return Err(e);
    }
    Arc::try_unwrap(done).map_err(|_| anyhow!("the load's threads still run"))
}

/// A listener for a moment: three connections, two accepted, then closed with the third in
/// its queue.
fn short_lived_listener(port: u16) -> anyhow::Result<()> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = TcpListener::bind(address).with_context(|| format!("bind {address}"))?;
    let clients: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(address))
        .collect::<std::io::Result<_>>()?;
    // Queued in the order of their handshakes: wait for all three before accepting two.
    thread::sleep(Duration::from_millis(2));
    let accepted = (listener.accept()?, listener.accept()?);
    drop((listener, accepted, clients));
    Ok(())
}

fn set_backlog(listener: &TcpListener, backlog: c_int) -> anyhow::Result<()> {
    unsafe extern "C" {
        fn listen(fd: c_int, backlog: c_int) -> c_int;
    }
    // SAFETY: listen(2) on a listening socket only changes its backlog.
    if unsafe { listen(listener.as_raw_fd(), backlog) } != 0 {
        return Err(std::io::Error::last_os_error()).context("listen");
    }
    Ok(())
}

fn resident_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))
}

fn listener(report: &Value, port: u16) -> Option<&Value> {
    report["listeners"]
        .as_array()?
        .iter()
        .find(|l| l["port"].as_u64() == Some(port.into()))
}

fn check_figures(
    report: &Value,
    done: &Done,
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
    failures: &mut Vec<String>,
) {
    let mut expect = |what: &str, got: u64, want: u64| {
        let verdict = if got == want { "ok" } else { "FAILED" };
        println!("soak: {what}: {got} (expected {want}) {verdict}");
        if got != want {
            failures.push(format!("{what}: {got}, expected {want}"));
        }
    };
    let delta =
        |name: &str| after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0);
    let field = |l: Option<&Value>, path: &str| {
        path.split('.')
            .fold(l.unwrap_or(&Value::Null), |v, key| &v[key])
            .as_u64()
            .unwrap_or(u64::MAX)
    };
    expect(
        "events lost",
        report["lost_events"].as_u64().unwrap_or(u64::MAX),
        0,
    );
    // Every pending map held what the run left in it: nothing evicted to make room.
    for map in ["syn_stamps", "queued_children", "followed"] {
        expect(
            &format!("entries evicted from the kernel's pending maps, {map}"),
            report["pending_evicted"][map].as_u64().unwrap_or(u64::MAX),
            0,
        );
    }
    let churned = done.churned.load(Ordering::Relaxed);
    let churn = listener(report, CHURN);
    for stage in ["syn_received", "handshakes", "accepted"] {
        expect(&format!("{CHURN} {stage}"), field(churn, stage), churned);
    }
    let stuck = listener(report, STUCK);
    expect(
        &format!("{STUCK} never accepted"),
        field(stuck, "never_accepted.count"),
        STUCK_BACKLOG as u64 + 1,
    );
    expect(&format!("{STUCK} accepted"), field(stuck, "accepted"), 0);
    let listen_drops: u64 = report["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["drops"]["listen_drops"].as_u64())
        .sum();
    expect(
        "listen drops, all ports",
        listen_drops,
        delta("ListenDrops"),
    );
    expect(
        &format!("{STUCK} listen overflows"),
        field(stuck, "drops.listen_overflows"),
        delta("ListenOverflows"),
    );
    let rounds = done.short_lived_rounds.load(Ordering::Relaxed);
    let short_lived: Vec<&Value> = report["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| {
            l["port"].as_u64().is_some_and(|p| {
                (FIRST_SHORT_LIVED.into()..(FIRST_SHORT_LIVED + SHORT_LIVED_PORTS).into())
                    .contains(&p)
            })
        })
        .collect();
    let sum = |path: &str| -> u64 { short_lived.iter().map(|l| field(Some(l), path)).sum() };
    expect(
        "short-lived listeners' handshakes",
        sum("handshakes"),
        3 * rounds,
    );
    expect(
        "short-lived listeners' accepts",
        sum("accepted"),
        2 * rounds,
    );
    expect(
        "short-lived listeners' connections discarded at close",
        sum("never_accepted.discarded_at_close"),
        rounds,
    );
    let passive_opens = delta("PassiveOpens");
    expect(
        "handshakes, all ports (Tcp PassiveOpens)",
        report["listeners"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["handshakes"].as_u64())
            .sum(),
        passive_opens,
    );
}

fn check_memory(samples: &[(u64, u64)], failures: &mut Vec<String>) {
    let Some(&(last_rss, last_maps)) = samples.last() else {
        failures.push("no memory sample".into());
        return;
    };
    let settled = samples[samples.len() / 10];
    let peak = samples.iter().map(|s| s.0).max().unwrap_or(0);
    println!(
        "soak: synscope's resident memory {} MiB after a tenth of the run, {} MiB at the end, \
         {} MiB at most; its BPF maps {} MiB then, {} MiB at the end ({} samples)",
        settled.0 / 1024,
        last_rss / 1024,
        peak / 1024,
        settled.1 >> 20,
        last_maps >> 20,
        samples.len()
    );
    if last_rss > settled.0 + RSS_GROWTH_LIMIT_KIB {
        failures.push(format!(
            "resident memory grew from {} KiB to {last_rss} KiB",
            settled.0
        ));
    }
    if last_maps != settled.1 {
        failures.push(format!(
            "BPF maps' memory changed from {} to {last_maps} bytes",
            settled.1
        ));
    }
}
