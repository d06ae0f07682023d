//! Faults: the traced command killed, a listener closing mid-run, SIGINT, SIGTERM and SIGHUP,
//! a second signal while the report is written, standard output closed by its reader, report
//! files that cannot be written (a missing directory, /dev/full, a full disk), and SIGKILL.
//! Each test checks the exit status, the one-line error, and the report where one is due; and,
//! after every exit, that no BPF program or link the process had loaded is left in the kernel.
//!
//! The BPF objects are compared by id, those the process itself held (its fdinfo) against
//! `bpftool`'s lists, as other tests run synscope at the same time.

use std::{
    collections::BTreeSet,
    fs::File,
    io::Write as _,
    os::{
        fd::{FromRawFd as _, OwnedFd},
        unix::process::ExitStatusExt as _,
    },
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use synscope_tests::{
    Netns, Traced, parse_report, require_root, run_ok, scenario, shell, synscope_bin, tempdir,
};

/// How long synscope may take to load its programs (far more than it needs natively).
const START_LIMIT: Duration = Duration::from_secs(60);

/// The BPF programs and links one process holds, by id.
#[derive(Debug, Default)]
struct BpfIds {
    programs: BTreeSet<u64>,
    links: BTreeSet<u64>,
}

impl BpfIds {
    /// From the process's file descriptors: a program's, link's or perf event's fdinfo names
    /// the program (`prog_id:`), a link's also itself (`link_id:`).
    fn of(pid: u32) -> Self {
        let mut ids = Self::default();
        let entries = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
            .unwrap_or_else(|e| panic!("cannot list /proc/{pid}/fdinfo: {e}"));
        for entry in entries.flatten() {
            let Ok(info) = std::fs::read_to_string(entry.path()) else {
                continue; // closed meanwhile
            };
            for line in info.lines() {
                let Some((key, value)) = line.split_once(':') else {
                    continue;
                };
                let Ok(id) = value.trim().parse() else {
                    continue;
                };
                match key {
                    "prog_id" => ids.programs.insert(id),
                    "link_id" => ids.links.insert(id),
                    _ => false,
                };
            }
        }
        ids
    }

    /// Fails the test unless every one of them has left the kernel. They go with the process's
    /// files, but the kernel may free a link or program from a work queue a little later.
    fn assert_released(&self, exit: &str) {
        assert!(
            !self.programs.is_empty(),
            "{exit}: synscope held no BPF program while it ran"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let programs: Vec<u64> = loaded("prog")
                .intersection(&self.programs)
                .copied()
                .collect();
            let links: Vec<u64> = loaded("link").intersection(&self.links).copied().collect();
            if programs.is_empty() && links.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{exit}: still in the kernel 10 s after synscope exited: programs {programs:?}, \
                 links {links:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The ids of `bpftool -j prog show` or `bpftool -j link show`.
fn loaded(kind: &str) -> BTreeSet<u64> {
    let out = run_ok(Command::new("bpftool").args(["-j", kind, "show"]));
    let list: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bpftool {kind} show printed no JSON ({e})"));
    list.as_array()
        .unwrap_or_else(|| panic!("bpftool {kind} show printed no list: {list}"))
        .iter()
        .filter_map(|object| object["id"].as_u64())
        .collect()
}

/// A synscope process started by a test, its standard error in a file.
struct Synscope {
    child: Child,
    stderr: PathBuf,
    /// What it held once tracing.
    ids: BpfIds,
}

impl Synscope {
    /// Starts `synscope ARGS` with standard output to `stdout`, waits until `ready` holds (given
    /// its standard error so far), and notes the BPF objects it then holds.
    fn start(args: &[&str], stdout: impl Into<Stdio>, ready: impl Fn(&str) -> bool) -> Self {
        let stderr = tempdir().join("stderr");
        let child = Command::new(synscope_bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(File::create(&stderr).expect("create a file"))
            .spawn()
            .expect("start synscope");
        let mut synscope = Self {
            child,
            stderr,
            ids: BpfIds::default(),
        };
        let started = Instant::now();
        while !ready(&synscope.stderr()) {
            if let Ok(Some(status)) = synscope.child.try_wait() {
                panic!(
                    "synscope {args:?} exited ({status}) before it traced:\n{}",
                    synscope.stderr()
                );
            }
            assert!(
                started.elapsed() < START_LIMIT,
                "synscope {args:?} not tracing after {START_LIMIT:?}:\n{}",
                synscope.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        synscope.ids = BpfIds::of(synscope.child.id());
        synscope
    }

    /// Starts the report command (`synscope --duration 10m ARGS`): tracing once it says so.
    fn tracing(args: &[&str], stdout: impl Into<Stdio>) -> Self {
        let mut all = vec!["--duration", "10m"];
        all.extend(args);
        Self::start(&all, stdout, |stderr| {
            stderr.contains("synscope: tracing for")
        })
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child, not yet waited for.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    /// Waits for it to exit, failing the test after `limit`.
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for synscope") {
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "synscope still running after {limit:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Synscope {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for a file the traced command creates once it runs (synscope is tracing by then).
fn file_exists(path: &Path) -> impl Fn(&str) -> bool + use<> {
    let path = path.to_owned();
    move |_| path.exists()
}

/// The JSON report at `path`, checked against its schema.
fn report_at(path: &Path) -> Traced {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("no report at {}: {e}", path.display()));
    Traced {
        report: parse_report(&text),
        stdout: String::new(),
    }
}

/// Standard error is exactly one line, starting `Error: ` and holding every one of `parts`.
fn assert_one_error_line(stderr: &str, parts: &[&str]) {
    assert_eq!(stderr.lines().count(), 1, "not one line:\n{stderr}");
    assert!(stderr.starts_with("Error: "), "{stderr}");
    for part in parts {
        assert!(stderr.contains(part), "no {part:?} in:\n{stderr}");
    }
}

/// A pipe: (read end, write end).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2(2) fills the two-element array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: two new descriptors that nothing else owns.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// A pipe made as small as the kernel allows and filled: a write to it blocks until someone
/// reads, which nobody will.
fn full_pipe() -> (OwnedFd, OwnedFd) {
    use std::os::fd::AsRawFd as _;
    let (read, write) = pipe();
    let fd = write.as_raw_fd();
    // SAFETY: fcntl(2) on our own descriptor.
    unsafe {
        libc::fcntl(fd, libc::F_SETPIPE_SZ, 4096);
        libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK);
    }
    let mut file = File::from(write.try_clone().expect("dup"));
    while file.write(&[b'x'; 512]).is_ok() {}
    // SAFETY: as above; synscope gets a blocking descriptor (O_NONBLOCK is the file's, shared
    // by the clone).
    unsafe { libc::fcntl(fd, libc::F_SETFL, 0) };
    (read, write)
}

#[test]
fn a_traced_command_killed_by_a_signal_still_gets_its_report() {
    require_root();
    for (signal, code) in [("KILL", 137), ("SEGV", 139)] {
        let netns = Netns::new("killed");
        let dir = tempdir();
        let (ready, report) = (dir.join("ready"), dir.join("report.json"));
        let script = format!(
            // No core file of the SIGSEGV in the test's directory.
            "ulimit -c 0; touch {}; {} >/dev/null; kill -{signal} $$",
            shell(&[ready.display().to_string()]),
            scenario!(&netns, "--listen", "127.0.0.1:7300", "--connections", "20"),
        );
        let mut synscope = Synscope::start(
            &[
                "run",
                "--format",
                "json",
                "--output",
                &report.display().to_string(),
                "--",
                "sh",
                "-c",
                &script,
            ],
            Stdio::null(),
            file_exists(&ready),
        );
        let status = synscope.wait(Duration::from_secs(60));
        assert_eq!(status.code(), Some(code), "SIG{signal}: {status}");
        let listener = report_at(&report).listener(&netns, 7300).clone();
        assert_eq!(listener.accepted, 20, "SIG{signal}: {listener:#?}");
        assert_eq!(listener.handshakes, 20, "SIG{signal}: {listener:#?}");
        assert!(synscope.stderr().is_empty(), "{}", synscope.stderr());
        synscope
            .ids
            .assert_released(&format!("the traced command killed by SIG{signal}"));
    }
}

#[test]
fn a_listener_closing_mid_run_keeps_its_connections() {
    require_root();
    let netns = Netns::new("closing");
    let dir = tempdir();
    let (ready, report) = (dir.join("ready"), dir.join("report.json"));
    // The server closes its listener after 1.5 s; tracing goes on 1.5 s more.
    let script = format!(
        "touch {}; {} & sleep 0.5; {}; wait; sleep 1.5",
        shell(&[ready.display().to_string()]),
        scenario!(
            &netns,
            "serve",
            "--listen",
            "127.0.0.1:7310",
            "--duration-ms",
            "1500"
        ),
        scenario!(
            &netns,
            "connect",
            "--to",
            "127.0.0.1:7310",
            "--connections",
            "5",
            "--hold-ms",
            "200"
        ),
    );
    let mut synscope = Synscope::start(
        &[
            "run",
            "--format",
            "json",
            "--output",
            &report.display().to_string(),
            "--",
            "sh",
            "-c",
            &script,
        ],
        File::create(dir.join("stdout")).expect("create a file"),
        file_exists(&ready),
    );
    let status = synscope.wait(Duration::from_secs(60));
    let stdout = std::fs::read_to_string(dir.join("stdout")).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "{stdout}{}", synscope.stderr());
    assert!(
        stdout.contains("scenario: 5 of 5 connected") && stdout.contains("5 connections accepted"),
        "{stdout}"
    );
    let traced = report_at(&report);
    let listener = traced.listener(&netns, 7310);
    assert_eq!(
        (
            listener.syn_received,
            listener.handshakes,
            listener.accepted
        ),
        (5, 5, 5),
        "{listener:#?}"
    );
    let ours = traced
        .report
        .listeners
        .iter()
        .filter(|l| l.netns == netns.inode)
        .count();
    assert_eq!(ours, 1, "{:#?}", traced.report.listeners);
    synscope
        .ids
        .assert_released("a run whose listener closed mid-run");
}

/// The report command stopped by `signal` after traffic: exit 0, the whole report.
fn stopped_by(signal: i32, name: &str) {
    require_root();
    let netns = Netns::new(name);
    let report = tempdir().join("report.json");
    let mut synscope = Synscope::tracing(
        &["--port", "7320", "--output", &report.display().to_string()],
        Stdio::null(),
    );
    run_ok(Command::new("sh").arg("-c").arg(scenario!(
        &netns,
        "--listen",
        "127.0.0.1:7320",
        "--connections",
        "10"
    )));
    synscope.signal(signal);
    let status = synscope.wait(Duration::from_secs(30));
    assert_eq!(
        status.code(),
        Some(0),
        "{name}: {status}\n{}",
        synscope.stderr()
    );
    let listener = report_at(&report).listener(&netns, 7320).clone();
    assert_eq!(listener.accepted, 10, "{name}: {listener:#?}");
    assert_eq!(
        synscope.stderr().lines().count(),
        1,
        "{name}: only the start line:\n{}",
        synscope.stderr()
    );
    synscope.ids.assert_released(name);
}

#[test]
fn sigint_stops_tracing_and_reports() {
    stopped_by(libc::SIGINT, "sigint");
}

#[test]
fn sigterm_stops_tracing_and_reports() {
    stopped_by(libc::SIGTERM, "sigterm");
}

#[test]
fn sighup_stops_tracing_and_reports() {
    stopped_by(libc::SIGHUP, "sighup");
}

#[test]
fn sigterm_and_sighup_to_run_reach_the_command() {
    require_root();
    for (signal, code) in [(libc::SIGTERM, 143), (libc::SIGHUP, 129)] {
        let dir = tempdir();
        let (ready, report) = (dir.join("ready"), dir.join("report.json"));
        let script = format!(
            "touch {}; exec sleep 600",
            shell(&[ready.display().to_string()])
        );
        let mut synscope = Synscope::start(
            &[
                "run",
                "--output",
                &report.display().to_string(),
                "--",
                "sh",
                "-c",
                &script,
            ],
            Stdio::null(),
            file_exists(&ready),
        );
        synscope.signal(signal);
        let status = synscope.wait(Duration::from_secs(30));
        // The command's exit (killed by the signal) is synscope's, after the report.
        assert_eq!(status.code(), Some(code), "signal {signal}: {status}");
        report_at(&report);
        synscope
            .ids
            .assert_released(&format!("run, signal {signal} passed on"));
    }
}

#[test]
fn a_second_signal_while_the_report_is_written_exits_at_once() {
    require_root();
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // Standard output full: after the first signal synscope stops tracing and blocks
        // writing its report.
        let (_read, write) = full_pipe();
        let mut synscope = Synscope::tracing(&["--port", "7330"], write);
        synscope.signal(signal);
        let wchan = format!("/proc/{}/wchan", synscope.child.id());
        let started = Instant::now();
        // pipe_write, anon_pipe_write since 6.16.
        while !std::fs::read_to_string(&wchan)
            .unwrap_or_default()
            .trim()
            .ends_with("pipe_write")
        {
            assert!(
                synscope.child.try_wait().unwrap().is_none(),
                "signal {signal}: synscope exited with its standard output full:\n{}",
                synscope.stderr()
            );
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "signal {signal}: synscope is not writing its report ({}):\n{}",
                std::fs::read_to_string(&wchan).unwrap_or_default(),
                synscope.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Beyond the 100 ms in which a signal counts as a copy of the first.
        std::thread::sleep(Duration::from_millis(300));
        assert!(synscope.child.try_wait().unwrap().is_none());
        synscope.signal(signal);
        let status = synscope.wait(Duration::from_secs(5));
        // Killed by the signal itself: a shell shows 130 or 143, and stops its script too.
        assert_eq!(status.signal(), Some(signal), "{status}");
        assert!(
            !synscope.stderr().contains("panicked"),
            "{}",
            synscope.stderr()
        );
        synscope
            .ids
            .assert_released(&format!("a second signal {signal}"));
    }
}

#[test]
fn a_closed_standard_output_ends_quietly_like_other_tools() {
    require_root();
    let report = tempdir().join("report.json");
    // The reader is gone before synscope writes.
    let (read, write) = pipe();
    drop(read);
    let mut synscope = Synscope::tracing(
        &["--port", "7340", "--output", &report.display().to_string()],
        write,
    );
    synscope.signal(libc::SIGINT);
    let status = synscope.wait(Duration::from_secs(30));
    // As `cat` or `grep` would: killed by SIGPIPE (141 in a shell), without a word.
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "{status}");
    let stderr = synscope.stderr();
    assert_eq!(stderr.lines().count(), 1, "only the start line:\n{stderr}");
    // The files come before standard output: the report is whole.
    report_at(&report);
    synscope.ids.assert_released("standard output closed");

    // The pipeline a user types: whichever of synscope and head finishes first, no message.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} --duration 1s --port 7341 2>&1 | head -1",
            shell(&[synscope_bin().display().to_string()])
        ))
        .output()
        .expect("run a pipeline");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", out.status);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("synscope: tracing for 1s"), "{text}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sigkill_leaves_nothing_in_the_kernel() {
    require_root();
    let mut synscope = Synscope::tracing(&["--port", "7350"], Stdio::null());
    synscope.signal(libc::SIGKILL);
    let status = synscope.wait(Duration::from_secs(10));
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    synscope.ids.assert_released("SIGKILL");
}

#[test]
fn unwritable_outputs_are_one_line_errors() {
    require_root();
    // Refused before anything is loaded.
    let dir = tempdir();
    for (output, error) in [
        ("/nonexistent/x.json", "No such file or directory"),
        (dir.to_str().unwrap(), "Is a directory"),
    ] {
        let out = Command::new(synscope_bin())
            .args(["run", "--format", "json", "--output", output, "--", "true"])
            .output()
            .expect("run synscope");
        assert_eq!(out.status.code(), Some(1), "{output}: {}", out.status);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_one_error_line(
            &stderr,
            &[&format!("cannot write the report to {output}"), error],
        );
    }

    // A device that takes nothing: found when the report is written, after tracing.
    let ready = dir.join("ready");
    let script = format!("touch {}", shell(&[ready.display().to_string()]));
    let mut synscope = Synscope::start(
        &[
            "run",
            "--format",
            "json",
            "--output",
            "/dev/full",
            "--",
            "sh",
            "-c",
            &script,
        ],
        Stdio::null(),
        file_exists(&ready),
    );
    assert_eq!(synscope.wait(Duration::from_secs(30)).code(), Some(1));
    assert_one_error_line(
        &synscope.stderr(),
        &[
            "cannot write the report to /dev/full",
            "No space left on device",
        ],
    );
    assert!(Path::new("/dev/full").exists(), "a device is never removed");
    synscope
        .ids
        .assert_released("a report file that cannot be written");

    // Standard output itself full.
    let _ = std::fs::remove_file(&ready);
    let mut synscope = Synscope::start(
        &["run", "--", "sh", "-c", &script],
        File::options()
            .write(true)
            .open("/dev/full")
            .expect("open /dev/full"),
        file_exists(&ready),
    );
    assert_eq!(synscope.wait(Duration::from_secs(30)).code(), Some(1));
    assert_one_error_line(
        &synscope.stderr(),
        &[
            "cannot write the report to standard output",
            "No space left on device",
        ],
    );
    synscope.ids.assert_released("standard output full");
}

/// A tmpfs of one page, unmounted on drop.
struct TinyDisk(PathBuf);

impl TinyDisk {
    fn mount() -> Self {
        let dir = tempdir();
        run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=4k", "synscope-full"])
                .arg(&dir),
        );
        Self(dir)
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_full_disk_fails_the_run_and_leaves_no_truncated_report() {
    require_root();
    let netns = Netns::new("fulldisk");
    let disk = TinyDisk::mount();
    let dir = tempdir();
    let (ready, full, whole) = (
        dir.join("ready"),
        disk.0.join("report.json"),
        dir.join("report.json"),
    );
    let script = format!(
        "touch {}; {} >/dev/null",
        shell(&[ready.display().to_string()]),
        scenario!(&netns, "--listen", "127.0.0.1:7360", "--connections", "20"),
    );
    let mut synscope = Synscope::start(
        &[
            "run",
            "--format",
            "json",
            "--output",
            &full.display().to_string(),
            "--output",
            &whole.display().to_string(),
            "--",
            "sh",
            "-c",
            &script,
        ],
        Stdio::null(),
        file_exists(&ready),
    );
    let status = synscope.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "{status}");
    assert_one_error_line(
        &synscope.stderr(),
        &[
            &format!("cannot write the report to {}", full.display()),
            "No space left on device",
            "removed",
        ],
    );
    assert!(!full.exists(), "a truncated report was left behind");
    // The other file still has the whole report, and more than the disk holds: the write to
    // the full disk did begin.
    let size = std::fs::metadata(&whole).expect("the other report").len();
    assert!(
        size > 4096,
        "the report ({size} bytes) fits on the tiny disk"
    );
    assert_eq!(report_at(&whole).listener(&netns, 7360).accepted, 20);
    synscope.ids.assert_released("a full disk");
}
