//! Long-running processes a test starts (synscope serve, Prometheus): stopped when the test
//! ends, whichever way it ends, and waited for so that nothing stays attached.

use std::{
    io::Read as _,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub struct Background {
    pub name: String,
    child: Child,
    out: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl Background {
    /// Starts `command` with its standard output and error in files (read back by
    /// [`Background::stdout`] and [`Background::log`]).
    pub fn start(name: &str, command: &mut Command) -> Self {
        let dir = super::tempdir();
        let out = dir.join("stdout");
        let log = dir.join("stderr");
        let create = |path: &std::path::Path| std::fs::File::create(path).expect("create a file");
        let child = command
            .stdin(Stdio::null())
            .stdout(create(&out))
            .stderr(create(&log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            name: name.to_owned(),
            child,
            out,
            log,
        }
    }

    /// What it wrote to standard output so far.
    pub fn stdout(&self) -> String {
        read(&self.out)
    }

    /// Both its outputs so far, for failure messages.
    pub fn log(&self) -> String {
        format!("{}{}", read(&self.out), read(&self.log))
    }

    /// Waits until `ready` (given the process, to read its output) holds, failing the test (with the log) after `timeout` or if the
    /// process exits first.
    pub fn wait_until(&mut self, timeout: Duration, mut ready: impl FnMut(&Self) -> bool) {
        let started = Instant::now();
        while !ready(self) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before it was ready:\n{}",
                    self.name,
                    self.log()
                );
            }
            assert!(
                started.elapsed() < timeout,
                "{} not ready after {timeout:?}:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for it to exit by itself, failing the test after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the process") {
                return status;
            }
            assert!(
                started.elapsed() < timeout,
                "{} still running after {timeout:?}:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (SIGINT: the user's Ctrl-C) without waiting.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child, not yet waited for.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    /// Sends SIGTERM and waits; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().expect("wait for the process")
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

fn read(path: &std::path::Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    text
}

/// A TCP port free on the host's loopback now (the kernel picks it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// `curl -fsS URL`: the body, or None on any failure.
pub fn http_get(url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-fsS", "--max-time", "10", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
