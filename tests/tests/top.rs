//! `synscope top` for real: its screen read through a tmux pseudo-terminal while load runs,
//! and its NDJSON snapshots when standard output is not a terminal.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use synscope_tests::{Netns, background::Background, require_root, run_ok, scenario, synscope_bin};

const CONNECTIONS: u64 = 150;
const DELAY_MS: &str = "20";

/// A tmux server of its own (killed on drop), 200 columns wide.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(command: &str) -> Self {
        let tmux = Self {
            socket: format!("synscope-top-{}", std::process::id()),
        };
        run_ok(tmux.command().args([
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            "200",
            "-y",
            "50",
            command,
        ]));
        tmux
    }

    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        // tmux refuses to start without a terminal type.
        command
            .env("TERM", "xterm-256color")
            .args(["-L", &self.socket]);
        command
    }

    /// The screen, and the lines scrolled off it.
    fn screen(&self) -> String {
        let out = run_ok(
            self.command()
                .args(["capture-pane", "-p", "-S", "-", "-t", "top"]),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        run_ok(self.command().args(["send-keys", "-t", "top", keys]));
    }

    fn wait_for(&self, what: &str, timeout: Duration, found: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let screen = self.screen();
            if found(&screen) {
                return screen;
            }
            assert!(
                started.elapsed() < timeout,
                "no {what} after {timeout:?}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").status();
    }
}

/// A latency cell such as `20ms` or `850µs`, in milliseconds.
fn milliseconds(cell: &str) -> f64 {
    if let Some(ms) = cell.strip_suffix("ms") {
        ms.parse().unwrap()
    } else if let Some(us) = cell.strip_suffix("µs") {
        us.parse::<f64>().unwrap() / 1000.0
    } else if let Some(s) = cell.strip_suffix('s') {
        s.parse::<f64>().unwrap() * 1000.0
    } else {
        panic!("not a latency: {cell}")
    }
}

/// A scenario in the background: CONNECTIONS connections, each accepted DELAY_MS after it
/// was queued (about 3 s of steady load).
fn start_load(netns: &Netns, port: u16) -> std::process::Child {
    Command::new("sh")
        .arg("-c")
        .arg(scenario!(
            netns,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--connections",
            &CONNECTIONS.to_string(),
            "--accept-delay-ms",
            DELAY_MS
        ))
        .stdout(Stdio::null())
        .spawn()
        .expect("start the scenario")
}

#[test]
fn the_screen_shows_the_port_under_load_and_quits_with_the_report() {
    require_root();
    let netns = Netns::new("top");
    let port = 7170;
    let tmux = Tmux::start(&format!(
        "'{}' top --port {port} --interval 500ms; echo EXIT=$?; sleep 120",
        synscope_bin().display()
    ));
    tmux.wait_for("header", Duration::from_secs(60), |s| {
        s.contains("synscope top")
    });

    let mut load = start_load(&netns, port);
    let inode = netns.inode.to_string();
    // The port's row while the load runs: NETNS PORT ACCEPTOR CONN/S HS-p50 HS-p99 AW-p50
    // AW-p99 S>A-p99 AQ ...
    let screen = tmux.wait_for("busy row", Duration::from_secs(30), |screen| {
        screen.lines().any(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            cells.len() >= 9
                && cells[0] == inode
                && cells[1] == port.to_string()
                && cells[3].parse::<f64>().is_ok_and(|rate| rate > 5.0)
        })
    });
    let row: Vec<&str> = screen
        .lines()
        .rev()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.len() >= 9 && cells[0] == inode)
        .unwrap();
    assert!(row[2].starts_with("scenario["), "{screen}");
    let accept_wait_p50 = milliseconds(row[6]);
    assert!(
        (20.0..60.0).contains(&accept_wait_p50),
        "accept wait p50 {accept_wait_p50} ms for a {DELAY_MS} ms delay:\n{screen}"
    );
    assert!(milliseconds(row[4]) < 5.0, "handshake p50:\n{screen}");
    assert!(
        screen.contains("sorted by drops/s, then accept wait p99"),
        "{screen}"
    );

    // Enter: the detail pane of the selected (only) port.
    tmux.keys("Enter");
    tmux.wait_for("detail pane", Duration::from_secs(10), |s| {
        s.contains(&format!("port {port} in netns {inode}")) && s.contains("accept wait    n=")
    });
    // s: the next sort column.
    tmux.keys("s");
    tmux.wait_for("sort by connections/s", Duration::from_secs(10), |s| {
        s.contains("sorted by connections/s")
    });

    assert!(load.wait().unwrap().success());
    tmux.keys("q");
    let screen = tmux.wait_for("exit", Duration::from_secs(30), |s| s.contains("EXIT="));
    assert!(screen.contains("EXIT=0"), "{screen}");
    // The whole run's report, after the screen is given back.
    assert!(
        screen.contains(&format!(
            "SYNs {CONNECTIONS}  handshakes {CONNECTIONS}  accepted {CONNECTIONS}"
        )),
        "{screen}"
    );
}

#[test]
fn without_a_terminal_each_interval_is_one_ndjson_snapshot() {
    require_root();
    let netns = Netns::new("top-ndjson");
    let port = 7171;
    let mut top = Background::start(
        "synscope top",
        Command::new(synscope_bin()).args([
            "top",
            "--port",
            &port.to_string(),
            "--interval",
            "500ms",
            "--duration",
            "9s",
        ]),
    );
    top.wait_until(Duration::from_secs(60), |top| {
        top.stdout().contains("\"interval\"")
    });
    let mut load = start_load(&netns, port);
    assert!(load.wait().unwrap().success());
    let status = top.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "top exited {status}:\n{}", top.log());

    let records: Vec<Value> = top
        .stdout()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let (last, intervals) = records.split_last().unwrap();
    assert_eq!(last["type"], "run", "{last}");
    assert!(intervals.iter().all(|r| r["type"] == "interval"));
    // Nine seconds at two a second, give or take the start.
    assert!(
        (14..=19).contains(&intervals.len()),
        "{} intervals",
        intervals.len()
    );
    let accepted = |report: &Value| -> u64 {
        report["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["netns"] == netns.inode && l["port"] == port)
            .map(|l| l["accepted"].as_u64().unwrap())
            .sum()
    };
    let summed: u64 = intervals.iter().map(|r| accepted(&r["report"])).sum();
    assert_eq!(accepted(&last["report"]), CONNECTIONS);
    assert_eq!(summed, CONNECTIONS, "intervals add up to the run");
    // At 50 connections/s at most a fraction of a second apart, several intervals saw load.
    let busy = intervals
        .iter()
        .filter(|r| accepted(&r["report"]) > 0)
        .count();
    assert!(busy >= 4, "{busy} busy intervals");
}
