//! Running external commands from the tasks.

use std::process::Command;

use anyhow::{Context as _, bail};

/// Standard output of `command`, or an error with its standard error.
pub fn output(command: &mut Command) -> anyhow::Result<String> {
    let out = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `command`, failing unless it succeeds.
pub fn check(command: &mut Command) -> anyhow::Result<()> {
    output(command).map(drop)
}
