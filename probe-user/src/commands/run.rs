//! `synscope run -- COMMAND`: trace while a command runs, then report; exits with the
//! command's exit code.

use std::{ffi::OsString, os::unix::process::ExitStatusExt as _, process::ExitStatus};

use anyhow::{Context as _, bail};

use crate::{cli::TraceArgs, trace::signals};

pub async fn run(args: &TraceArgs, command: &[OsString]) -> anyhow::Result<u8> {
    let options = super::trace_options(args)?;
    let mut sink = super::open_sink(args)?;
    let mut session = super::start_session(&options)?;
    let shown: Vec<String> = command
        .iter()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    session.set_command(shown.join(" "));
    let mut child = spawn(command)?;
    let status = session
        .trace_until(signals::wait_for_command(&mut child))
        .await??;
    let gate = super::finish(&mut sink, &mut session, args)?;
    // The command's own failure comes first: the thresholds only judge a run that worked.
    Ok(match exit_code(status) {
        0 => gate,
        failed => failed,
    })
}

/// Starts `command` with the terminal's stdio; synscope keeps tracing until it exits.
pub fn spawn(command: &[OsString]) -> anyhow::Result<tokio::process::Child> {
    let Some((program, args)) = command.split_first() else {
        bail!("run needs a command, e.g. synscope run -- wrk http://127.0.0.1:8080/");
    };
    tokio::process::Command::new(program)
        .args(args)
        .spawn()
        .with_context(|| format!("cannot run {}", program.to_string_lossy()))
}

/// The exit code a shell would report: the code, or 128 + the signal that killed it.
pub fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => (128 + signal) as u8,
        (None, None) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
    }
}
