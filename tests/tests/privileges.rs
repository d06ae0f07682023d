//! synscope under the smallest set of capabilities (README, "Least privilege"): as a user
//! other than root it traces for real and `check` passes, and without any one capability of
//! the set it stops with one line naming it; root with its capabilities cut to its own set
//! (the DaemonSet's) passes `check` too. The set is computed here from the kernel's own rules,
//! apart from synscope's: what depends on the machine is said where it is decided.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    os::unix::fs::PermissionsExt as _,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use synscope_tests::{Netns, Traced, parse_report, require_root, run_ok, synscope_bin};

const SCENARIO: &str = env!("CARGO_BIN_EXE_scenario");
const PORT: u16 = 7801;
const CONNECTIONS: u64 = 12;
/// Loading and attaching, which takes seconds under the kernel matrix's emulation.
const ATTACH_LIMIT: Duration = Duration::from_secs(240);

/// The capabilities synscope needs here, as setpriv names them. `root`: for user id 0, which
/// owns tracefs.
fn smallest_set(root: bool) -> Vec<&'static str> {
    // setns() into each network namespace (also covers bpf() and perf_event_open()), and
    // /proc/PID/ns/net of processes of other users or with more capabilities.
    let mut set = vec!["sys_admin", "sys_ptrace"];
    // kallsyms_show_value(): addresses for all only with kptr_restrict 0 and
    // perf_event_paranoid <= 1, else with CAP_SYSLOG.
    if sysctl("kptr_restrict") != 0 || sysctl("perf_event_paranoid") > 1 {
        set.push("syslog");
    }
    // tracefs is root's; its top directory is closed to others from 5.17 (and in Debian's 5.10).
    let tracefs = std::fs::metadata("/sys/kernel/tracing").expect("tracefs is mounted");
    if !root && tracefs.permissions().mode() & 0o005 != 0o005 {
        set.push("dac_read_search");
    }
    // Before 5.11, BPF maps count against RLIMIT_MEMLOCK, which only CAP_SYS_RESOURCE raises
    // (setpriv passes this process's limit on).
    if kernel() < (5, 11) && !memlock_unlimited() {
        set.push("sys_resource");
    }
    set
}

fn sysctl(name: &str) -> i64 {
    std::fs::read_to_string(format!("/proc/sys/kernel/{name}"))
        .unwrap_or_else(|e| panic!("read kernel.{name}: {e}"))
        .trim()
        .parse()
        .expect("a number")
}

fn kernel() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse().unwrap_or(0));
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
}

fn memlock_unlimited() -> bool {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } == 0;
    read && limit.rlim_max == libc::RLIM_INFINITY
}

/// synscope as user nobody holding exactly `caps` (ambient, so they survive the change of user
/// and the exec).
fn as_nobody_with(caps: &[&str]) -> Command {
    let list: String = caps.iter().map(|c| format!(",+{c}")).collect();
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(format!("--inh-caps=-all{list}"))
        .arg(format!("--ambient-caps=-all{list}"))
        .arg(synscope_bin());
    command
}

/// synscope as root, its capabilities cut to `caps` (root's permitted set after exec is the
/// bounding set).
fn as_root_with(caps: &[&str]) -> Command {
    let list: String = caps.iter().map(|c| format!(",+{c}")).collect();
    let mut command = Command::new("setpriv");
    command
        .arg(format!("--bounding-set=-all{list}"))
        .arg(synscope_bin());
    command
}

/// "CAP_SYS_ADMIN" for setpriv's "sys_admin".
fn cap_name(setpriv_name: &str) -> String {
    format!("CAP_{}", setpriv_name.to_uppercase())
}

/// A synscope tracing until SIGTERM; killed if the test fails first.
struct Tracing {
    child: Child,
    stdout: Option<thread::JoinHandle<String>>,
    stderr: mpsc::Receiver<String>,
}

impl Tracing {
    /// Starts it and waits until its programs are attached (it says so on stderr).
    fn start(mut command: Command) -> Self {
        let mut child = command
            .args(["--format", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start synscope");
        let mut stdout = child.stdout.take().unwrap();
        let stdout = thread::spawn(move || {
            let mut text = String::new();
            let _ = stdout.read_to_string(&mut text);
            text
        });
        let (lines, stderr) = mpsc::channel();
        let reader = BufReader::new(child.stderr.take().unwrap());
        thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let tracing = Self {
            child,
            stdout: Some(stdout),
            stderr,
        };
        let mut said = Vec::new();
        loop {
            match tracing.stderr.recv_timeout(ATTACH_LIMIT) {
                Ok(line) if line.starts_with("synscope: tracing") => return tracing,
                Ok(line) => said.push(line),
                Err(_) => panic!(
                    "synscope did not start tracing within {} s; it said:\n{}",
                    ATTACH_LIMIT.as_secs(),
                    said.join("\n")
                ),
            }
        }
    }

    /// Stops it as Ctrl-C would and returns its report.
    fn stop(mut self) -> Traced {
        // SAFETY: signals our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("wait for synscope");
        let stdout = self.stdout.take().unwrap().join().unwrap();
        let stderr: Vec<String> = self.stderr.try_iter().collect();
        assert!(status.success(), "{status}: {}", stderr.join("\n"));
        Traced {
            report: parse_report(&stdout),
            stdout: String::new(),
        }
    }
}

impl Drop for Tracing {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn another_user_traces_with_the_smallest_set() {
    require_root();
    let set = smallest_set(false);
    let netns = Netns::new("privileges");
    let tracing = Tracing::start(as_nobody_with(&set));
    run_ok(Command::new("ip").args([
        "netns",
        "exec",
        &netns.name,
        SCENARIO,
        "--listen",
        &format!("127.0.0.1:{PORT}"),
        "--connections",
        &CONNECTIONS.to_string(),
    ]));
    let traced = tracing.stop();
    // The kernel programs (CAP_SYS_ADMIN, tracefs, kallsyms) saw every connection...
    let listener = traced.listener(&netns, PORT);
    assert_eq!(
        (
            listener.syn_received,
            listener.handshakes,
            listener.accepted
        ),
        (CONNECTIONS, CONNECTIONS, CONNECTIONS),
        "{set:?}: {listener:#?}"
    );
    // ... and the namespace was entered (setns) for its counters.
    assert_eq!(
        traced.namespace_counter(&netns, "PassiveOpens"),
        CONNECTIONS,
        "{set:?}"
    );
}

#[test]
fn check_passes_with_the_smallest_set() {
    require_root();
    for (who, mut command) in [
        ("nobody", as_nobody_with(&smallest_set(false))),
        ("root", as_root_with(&smallest_set(true))),
    ] {
        let output = command.arg("check").output().expect("run synscope check");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{who}: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.starts_with("synscope check: synscope can trace on this machine"),
            "{who}: {stdout}"
        );
    }
}

/// Without any one capability of the set: a non-zero exit and one line naming it, and none of
/// the others, whatever the command.
#[test]
fn each_capability_of_the_set_is_named_when_missing() {
    require_root();
    for root in [false, true] {
        let set = smallest_set(root);
        for missing in &set {
            let held: Vec<&str> = set.iter().copied().filter(|c| c != missing).collect();
            for args in [
                &["--duration", "1s"][..],
                &["check"],
                &["run", "--", "true"],
            ] {
                let mut command = if root {
                    as_root_with(&held)
                } else {
                    as_nobody_with(&held)
                };
                let output = command.args(args).output().expect("run synscope");
                let stderr = String::from_utf8_lossy(&output.stderr);
                let context = format!("root {root}, without {missing}, {args:?}: {stderr}");
                assert_eq!(output.status.code(), Some(1), "{context}");
                assert_eq!(stderr.lines().count(), 1, "{context}");
                let lacks = if root {
                    stderr.split("synscope runs as root without ").nth(1)
                } else {
                    stderr.split(": it lacks ").nth(1)
                };
                let lacks = lacks.unwrap_or_else(|| panic!("{context}"));
                assert!(
                    lacks.starts_with(&format!("{} (", cap_name(missing))),
                    "{context}"
                );
                // Only the missing one is said to be lacking; the set is listed after it.
                let lacking = lacks.split(": it needs ").next().unwrap_or(lacks);
                for other in &held {
                    assert!(!lacking.contains(&cap_name(other)), "{context}");
                }
            }
        }
    }
}
