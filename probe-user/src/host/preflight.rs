//! Checks that synscope can trace here, each failing with a one-line reason and a remedy.

use std::path::Path;

use anyhow::{Context as _, bail};

const TRACEFS: &str = "/sys/kernel/tracing";

pub fn require_root() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("synscope must run as root to load its kernel programs (try: sudo synscope ...)");
    }
    Ok(())
}

/// Classic tracepoints are found through tracefs; mount it when the machine has not.
pub fn ensure_tracefs() -> anyhow::Result<()> {
    if Path::new(TRACEFS).join("events").is_dir() {
        return Ok(());
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "tracefs", "nodev", TRACEFS])
        .status()
        .context("tracefs is not mounted and `mount` could not be run")?;
    if !status.success() || !Path::new(TRACEFS).join("events").is_dir() {
        bail!(
            "tracefs is not mounted at {TRACEFS} and mounting it failed (mount -t tracefs nodev {TRACEFS})"
        );
    }
    Ok(())
}

pub fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the struct we pass.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

/// The running kernel's release, e.g. `6.18.44`.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}
