//! Helpers for synscope's privileged integration tests: network namespaces, running synscope
//! around a workload, and reading its JSON report, checked against the report's JSON Schema
//! and read back typed ([`synscope::report::Report`]).
//!
//! Every test makes its own namespace (removed on drop), so tests see only their own traffic
//! and the namespace's /proc/net/netstat counters start at zero.

use std::{
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
    process::{Command, Output},
    sync::{
        LazyLock,
        atomic::{AtomicU32, Ordering},
    },
};

pub mod background;

use serde_json::Value;
use synscope::{
    host::counters::parse_pairs,
    report::{JSON_SCHEMA, ListenerReport, Report},
};

/// Fails the test with a clear message unless running as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the integration tests load eBPF programs and create network namespaces: run them as root"
    );
}

/// The synscope binary under test: $SYNSCOPE_BIN, or the workspace's debug build, brought up
/// to date first (this crate cannot depend on a binary, so plain `cargo test` would not).
pub fn synscope_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("SYNSCOPE_BIN") {
        return path.into();
    }
    static BUILD: std::sync::Once = std::sync::Once::new();
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        run_ok(
            Command::new(cargo)
                .args(["build", "--quiet", "--package", "probe-user"])
                .current_dir(&workspace),
        );
    });
    workspace.join("target/debug/synscope")
}

/// How long before its handshake stamp a connection may already be in the accept queue, in
/// ms: the kernel queues a child, then moves it to ESTABLISHED, where the handshake is
/// stamped; a server that polls in between sees it and starts its accept delay before the
/// stamp. Microseconds natively, a fraction of a millisecond on a kernel under emulation.
pub const QUEUED_BEFORE_STAMP_MS: f64 = 1.0;

/// The prefix of the SYN-stage hook the report must name: the backend forced through
/// `SYNSCOPE_HOOKS` (as the kernel matrix does), or this machine's tracepoints.
pub fn expected_syn_hook() -> &'static str {
    match std::env::var("SYNSCOPE_HOOKS").as_deref() {
        Ok("fentry") => "fentry/",
        Ok("kprobe") => "kprobe/",
        Ok("tracepoint") => "tp_btf/",
        // auto: the best this kernel allows, which on the development machines is a tracepoint.
        _ => "",
    }
}

/// synscope run as an unprivileged user without capabilities (setpriv, from util-linux).
pub fn unprivileged_synscope() -> Command {
    let mut command = Command::new("setpriv");
    command
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(synscope_bin());
    command
}

/// A network namespace with loopback up, deleted on drop.
pub struct Netns {
    pub name: String,
    /// The namespace's inode number, as synscope reports it.
    pub inode: u32,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "synscope-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let netns = Self {
            inode: std::fs::metadata(format!("/run/netns/{name}"))
                .expect("stat the new namespace")
                .ino() as u32,
            name,
        };
        run_ok(Command::new("ip").args(["-n", &netns.name, "link", "set", "lo", "up"]));
        netns
    }

    /// argv prefix that runs a command inside this namespace.
    pub fn exec(&self) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.name.clone(),
        ]
    }

    /// A `TcpExt:` counter of this namespace's /proc/net/netstat.
    pub fn tcp_ext(&self, counter: &str) -> u64 {
        let out = run_ok(Command::new("ip").args([
            "netns",
            "exec",
            &self.name,
            "cat",
            "/proc/net/netstat",
        ]));
        let netstat = String::from_utf8_lossy(&out.stdout);
        parse_pairs(&netstat, "TcpExt:", &[counter])
            .get(counter)
            .copied()
            .unwrap_or_else(|| panic!("no TcpExt counter {counter} in:\n{netstat}"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs a command, failing the test with its output unless it succeeds.
pub fn run_ok(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// What `synscope run` produced.
pub struct Traced {
    pub report: Report,
    /// The traced command's standard output.
    pub stdout: String,
}

impl Traced {
    /// The report's own copy of the namespace's counters over the run.
    pub fn namespace_counter(&self, netns: &Netns, counter: &str) -> u64 {
        let namespace = self
            .report
            .namespaces
            .iter()
            .find(|n| n.netns == netns.inode)
            .unwrap_or_else(|| panic!("namespace {} not in the report", netns.inode));
        namespace
            .counters
            .get(counter)
            .copied()
            .unwrap_or_else(|| panic!("no counter {counter} in {namespace:#?}"))
    }

    /// The report's listener for `port` in `netns`; fails the test if absent.
    pub fn listener(&self, netns: &Netns, port: u16) -> &ListenerReport {
        self.report
            .listeners
            .iter()
            .find(|l| l.netns == netns.inode && l.port == port)
            .unwrap_or_else(|| {
                panic!(
                    "no listener {port} in netns {} in the report:\n{:#?}",
                    netns.inode, self.report
                )
            })
    }

    /// The hook the report names for `stage`, if it names one.
    pub fn hook(&self, stage: &str) -> Option<&str> {
        self.report.hooks.get(stage).map(String::as_str)
    }
}

/// A listener's count of connections at each stage, by field name.
pub fn stage_counts(listener: &ListenerReport) -> [(&'static str, u64); 3] {
    [
        ("syn_received", listener.syn_received),
        ("handshakes", listener.handshakes),
        ("accepted", listener.accepted),
    ]
}

/// Runs `synscope run --format json -- ip netns exec NS sh -c SCRIPT`: a whole script inside
/// one namespace.
pub fn synscope_run_in(netns: &Netns, script: &str) -> Traced {
    synscope_run_in_with(netns, &[], script)
}

/// [`synscope_run_in`] with more of synscope's options.
pub fn synscope_run_in_with(netns: &Netns, extra_args: &[&str], script: &str) -> Traced {
    let mut argv = netns.exec();
    argv.extend(["sh".to_owned(), "-c".to_owned(), script.to_owned()]);
    synscope_run(extra_args, &shell(&argv))
}

/// Sets a net sysctl inside `netns` (they are per namespace).
pub fn netns_sysctl(netns: &Netns, name: &str, value: &str) {
    run_ok(Command::new("ip").args([
        "netns",
        "exec",
        &netns.name,
        "sysctl",
        "-qw",
        &format!("{name}={value}"),
    ]));
}

/// A shell command that waits (up to 20 s) until each of `ports` has a listener in the
/// namespace the script runs in: a fixed sleep after starting a server is too short on a
/// loaded machine or under emulation, where clients then find nothing listening.
pub fn wait_for_listeners(ports: &[u16]) -> String {
    ports
        .iter()
        .map(|port| {
            format!(
                "for i in $(seq 400); do ss -Hltn 'sport = :{port}' | grep -q . && break; \
                 sleep 0.05; done"
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Shell commands that start and stop dropping the final ACK of handshakes (and any other pure
/// ACK) sent to `ports`, with nftables in the namespace the script runs in.
pub fn final_ack_drop(ports: &[u16]) -> (String, String) {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let start = format!(
        "nft add table inet synscope_test && \
         nft add chain inet synscope_test out '{{ type filter hook output priority 0; }}' && \
         nft add rule inet synscope_test out tcp dport '{{ {} }}' \
             tcp flags '&' '(syn|ack|fin|rst|psh)' == ack drop",
        ports.join(", ")
    );
    (start, "nft delete table inet synscope_test".to_owned())
}

/// Runs `synscope run --format json [extra] -- sh -c SCRIPT` and returns the report, checked
/// against its JSON Schema ([`parse_report`]). The script's failure fails the test.
pub fn synscope_run(extra_args: &[&str], script: &str) -> Traced {
    let dir = tempdir();
    let report_path = dir.join("report.json");
    let mut command = Command::new(synscope_bin());
    command
        .args(["run", "--format", "json", "--output"])
        .arg(&report_path)
        .args(extra_args)
        .args(["--", "sh", "-c", script]);
    let output = run_ok(&mut command);
    let text = std::fs::read_to_string(&report_path).expect("synscope wrote no report");
    let _ = std::fs::remove_dir_all(&dir);
    let report = parse_report(&text);
    // Shown with a failed test's output: whether synscope itself said events were missing.
    eprintln!(
        "synscope: {} events lost, kernel reads failed {:?}, runs skipped {:?}",
        report.lost_events, report.kernel_failures, report.skipped_runs
    );
    Traced {
        report,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
    }
}

/// Reads a JSON report: it must be JSON, match the report's JSON Schema
/// (probe-user/schema/report-1.json) and deserialize into [`Report`]; otherwise the test fails
/// with every violation and the report.
pub fn parse_report(text: &str) -> Report {
    static SCHEMA: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
        let schema: Value =
            serde_json::from_str(JSON_SCHEMA).expect("probe-user/schema/report-1.json is not JSON");
        jsonschema::draft202012::new(&schema)
            .expect("probe-user/schema/report-1.json is not a valid draft 2020-12 schema")
    });
    let value: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("bad JSON ({e}):\n{text}"));
    let violations: Vec<String> = SCHEMA
        .iter_errors(&value)
        .map(|e| format!("  {}: {e}", e.instance_path()))
        .collect();
    assert!(
        violations.is_empty(),
        "the report does not match probe-user/schema/report-1.json:\n{}\n{text}",
        violations.join("\n")
    );
    serde_json::from_value(value)
        .unwrap_or_else(|e| panic!("the report does not deserialize ({e}):\n{text}"))
}

/// A fresh directory under this test process's own temporary directory, which is removed
/// when the process exits (the test harness exits through `exit`, which runs `atexit`
/// handlers), passed or failed.
pub fn tempdir() -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    static REMOVE_AT_EXIT: std::sync::Once = std::sync::Once::new();
    extern "C" fn remove_process_tempdir() {
        let _ = std::fs::remove_dir_all(process_tempdir());
    }
    // SAFETY: registers a plain function that takes and returns nothing; called once.
    REMOVE_AT_EXIT.call_once(|| unsafe {
        libc::atexit(remove_process_tempdir);
    });
    let dir = process_tempdir().join(COUNTER.fetch_add(1, Ordering::SeqCst).to_string());
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

fn process_tempdir() -> PathBuf {
    std::env::temp_dir().join(format!("synscope-test-{}", std::process::id()))
}

/// Shell-quotes and joins argv.
pub fn shell(argv: &[String]) -> String {
    argv.iter()
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `ip netns exec NS scenario ARGS...` as a shell command line, for the scenario helper
/// (tests/src/bin/scenario.rs) that only integration tests can locate; see [`scenario!`].
pub fn scenario_in(scenario_bin: &str, netns: &Netns, args: &[&str]) -> String {
    let mut argv = netns.exec();
    argv.push(scenario_bin.to_owned());
    argv.extend(args.iter().map(|a| a.to_string()));
    shell(&argv)
}

/// Records a figure that must agree between backends on one kernel: the kernel matrix sets
/// `SYNSCOPE_FIGURES` to a file per backend and compares them (`cargo xtask vm-test`).
/// `tolerance` is relative (0: exactly equal). The figure is named after the calling test.
pub fn figure(name: &str, value: f64, tolerance: f64) {
    let Ok(path) = std::env::var("SYNSCOPE_FIGURES") else {
        return;
    };
    let test = std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .to_owned();
    let line = format!("{test}/{name} {value} {tolerance}\n");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot write figures to {path}: {e}"));
    std::io::Write::write_all(&mut file, line.as_bytes()).expect("write figure");
}

/// Records fields of a listener that must be equal between backends, named by their dotted
/// path in the JSON report (`drops.listen_overflows`, `syn_to_accept_us.count`): the names the
/// kernel matrix compares.
pub fn exact_figures(listener: &ListenerReport, port: u16, paths: &[&str]) {
    let listener = serde_json::to_value(listener).expect("serialise the listener");
    for path in paths {
        figure(&format!("{port}.{path}"), num(&listener, path), 0.0);
    }
}

/// A numeric field of a JSON value by dotted path, failing the test if missing or null.
fn num(value: &Value, path: &str) -> f64 {
    path.split('.')
        .fold(value, |v, key| &v[key])
        .as_f64()
        .unwrap_or_else(|| panic!("{path} missing in {value:#}"))
}

/// `scenario!(&netns, "--listen", "127.0.0.1:7000", ...)`: the scenario helper's command line.
#[macro_export]
macro_rules! scenario {
    ($netns:expr, $($arg:expr),* $(,)?) => {
        $crate::scenario_in(env!("CARGO_BIN_EXE_scenario"), $netns, &[$($arg),*])
    };
}

/// More threads than a kretprobe has instances on any machine the matrix runs on: the kernel
/// gives one max(10, 2 x CPUs) by default, and a thread asleep in the probed function holds one.
pub fn more_than_kretprobe_instances() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (2 * cpus).max(10) + 14
}
