//! Command-line interface.

use std::{ffi::OsString, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{report::Format, trace::hooks::HookChoice};

#[derive(Debug, Parser)]
#[command(
    name = "synscope",
    version,
    about = "Per-port TCP listen-path latency: SYN -> handshake -> accept(), traced with eBPF",
    after_help = "Without a command, traces every listening port in every network namespace until \
                  --duration passes or Ctrl-C, then prints the report."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub trace: TraceArgs,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Trace only this listening port (repeatable, up to 64); default: every port.
    #[arg(short, long = "port", value_name = "PORT", global = true,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub ports: Vec<u16>,

    /// Stop after this long (e.g. 30s, 2m, 500ms).
    #[arg(short, long, value_name = "DURATION", global = true, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Report format.
    #[arg(short, long, value_enum, default_value_t = Format::Text, global = true)]
    pub format: Format,

    /// Which kind of kernel hook to use where a stage offers a choice: auto picks the best that
    /// works (fentry, then kprobe, then tracepoint).
    #[arg(long, value_enum, default_value_t = HookChoice::Auto, global = true,
          env = "SYNSCOPE_HOOKS")]
    pub hooks: HookChoice,

    /// Write the report to this file instead of standard output.
    #[arg(short, long, value_name = "FILE", global = true)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace while COMMAND runs, then report; exits with COMMAND's exit code.
    Run {
        /// The command and its arguments (put them after --).
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "COMMAND"
        )]
        command: Vec<OsString>,
    },
    /// Start a local server with a slow single-threaded handler, load it, and show the report.
    Demo,
    /// Can synscope trace here? Kernel, hooks, queue sysctls and every listening socket at risk.
    /// Exits 0 when it can trace.
    Check,
}

/// Help and version go to stdout as clap prints them; errors become one line on stderr.
pub fn report_parse_error(error: clap::Error) -> std::process::ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) {
        let _ = error.print();
        return std::process::ExitCode::SUCCESS;
    }
    eprintln!("Error: {} (see synscope --help)", one_line(&error));
    std::process::ExitCode::from(2)
}

fn one_line(error: &clap::Error) -> String {
    // The message is the first paragraph; usage and tips follow after a blank line.
    let rendered = error.render().to_string();
    let message: Vec<&str> = rendered
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect();
    let message = message.join(" ");
    message
        .strip_prefix("error: ")
        .unwrap_or(&message)
        .to_owned()
}

/// The kernel programs' port filter holds this many ports.
pub const MAX_PORTS: usize = probe_common::MAX_PORTS as usize;

fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration =
        humantime::parse_duration(text).map_err(|e| format!("{e} (try 30s, 2m, 500ms)"))?;
    if duration.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_the_command_after_its_options() {
        let cli = Cli::try_parse_from([
            "synscope", "run", "--port", "8080", "--format", "json", "--", "wrk", "-c", "200",
        ])
        .unwrap();
        assert_eq!(cli.trace.ports, [8080]);
        assert_eq!(cli.trace.format, Format::Json);
        let Some(Command::Run { command }) = cli.command else {
            panic!("not run")
        };
        assert_eq!(command, ["wrk", "-c", "200"]);
    }

    #[test]
    fn top_level_duration_and_repeated_ports() {
        let cli = Cli::try_parse_from(["synscope", "--duration", "30s", "-p", "80", "-p", "443"])
            .unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.trace.duration, Some(Duration::from_secs(30)));
        assert_eq!(cli.trace.ports, [80, 443]);
    }

    #[test]
    fn parse_errors_fit_on_one_line() {
        let error = Cli::try_parse_from(["synscope", "--duration", "soon"]).unwrap_err();
        let line = one_line(&error);
        assert!(line.contains("--duration"), "{line}");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn bad_values_are_rejected() {
        for args in [
            &["synscope", "--duration", "soon"][..],
            &["synscope", "--duration", "0s"],
            &["synscope", "--port", "0"],
            &["synscope", "--port", "70000"],
            &["synscope", "--format", "xml"],
            &["synscope", "run"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?} accepted");
        }
    }
}
