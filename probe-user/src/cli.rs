//! Command-line interface.

use std::{ffi::OsString, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    report::{
        Format, format_of,
        thresholds::{self, Threshold},
    },
    trace::hooks::HookChoice,
};

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

    /// Report format [default: text; with --output, the file's extension: .json .md .prom
    /// .txt .xml (JUnit)].
    #[arg(short, long, value_enum, global = true)]
    pub format: Option<Format>,

    /// Which kind of kernel hook to use where a stage offers a choice: auto picks the best that
    /// works (fentry, then kprobe, then tracepoint).
    #[arg(long, value_enum, default_value_t = HookChoice::Auto, global = true,
          env = "SYNSCOPE_HOOKS")]
    pub hooks: HookChoice,

    /// After accept(), follow each connection to its first response byte: the hand-off to the
    /// handler (accept -> first read) and the handler (first read -> first response byte).
    /// `none` leaves those hooks out, for the lowest overhead.
    #[arg(long, value_enum, default_value_t = Phases::FirstResponse, global = true)]
    pub phases: Phases,

    /// Write the report to this file (repeatable: one report, several formats); the text
    /// report still goes to standard output.
    #[arg(short, long = "output", value_name = "FILE", global = true)]
    pub outputs: Vec<PathBuf>,

    /// Fail the run (exit 99) if EXPR is true for any traced port: [PORT:]FIGURE OP VALUE,
    /// e.g. 'accept_wait.p99 > 5ms', '8080:drops > 0', 'lost_events > 0' (repeatable).
    /// FIGURE: handshake, accept_wait or syn_to_accept with .min .p50 .p90 .p99 .p999 .max
    /// .mean .count; syn_received handshakes accepted drops listen_overflows syn_queue_full
    /// syncookies_sent synack_retransmits; lost_events. OP: > >= < <= == !=. Durations need
    /// a unit (us, ms, s). A port that saw no traffic, or a figure this kernel cannot observe,
    /// breaks the threshold.
    #[arg(long = "fail-if", value_name = "EXPR", global = true,
          value_parser = parse_threshold)]
    pub fail_if: Vec<Threshold>,

    /// A figure this kernel cannot observe holds its thresholds instead of breaking them.
    #[arg(long, global = true)]
    pub allow_unobservable: bool,

    /// Write each second's latency histograms, per port and stage, to FILE as an HdrHistogram
    /// interval log (V2; also `--output FILE.hlog`).
    #[arg(long, value_name = "FILE", global = true)]
    pub hdr_log: Option<PathBuf>,

    /// Also write the thresholds as JUnit test cases to FILE.
    #[arg(long, value_name = "FILE", global = true)]
    pub junit: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace while COMMAND runs, then report. Exits with COMMAND's exit code if it failed
    /// (128 + signal if killed), else 99 if a --fail-if threshold broke, else 0.
    Run {
        /// The command and its arguments (put them after --).
        #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
        command: Vec<OsString>,
    },
    /// Start a local server with a slow single-threaded handler, load it, and show the report.
    Demo,
    /// Live view: one row per listener (connections/s, handshake and accept wait p50/p99,
    /// queues, drops/s), refreshed every --interval; keys: s sort, t interval/since start,
    /// arrows or j/k select, Enter detail, p pause, q quit and print the report. Without a
    /// terminal, one NDJSON snapshot per interval ({"type":"interval","report":...}) and the
    /// whole run's last ({"type":"run",...}).
    Top {
        /// How often the figures refresh.
        #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_interval)]
        interval: Duration,
    },
    /// One line per accepted connection: time, acceptor, addresses, handshake, accept wait,
    /// SYN->accept and flags; and one per drop the hooks see as an event. --format json gives
    /// NDJSON (a start record, then one per line, then a summary).
    Trace {
        #[command(flatten)]
        filters: TraceFilters,
    },
    /// Trace until stopped and serve Prometheus metrics on /metrics (and /healthz): per
    /// listener histograms of handshake, accept-queue wait and SYN->accept, drop counters and
    /// queue gauges.
    Serve {
        /// Address and port to answer scrapes on.
        #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9857")]
        listen: std::net::SocketAddr,
        /// Listeners with series of their own; beyond, they fold into port="other" (counted by
        /// synscope_folded_listeners_total).
        #[arg(long, value_name = "N", default_value_t = 200,
              value_parser = clap::value_parser!(u64).range(1..=100_000))]
        max_listeners: u64,
        /// A listener closed and quiet for this long leaves the exposition.
        #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
        forget_after: Duration,
    },
    /// Can synscope trace here? Kernel, hooks, queue sysctls and every listening socket at risk.
    /// Exits 0 when it can trace.
    Check,
}

/// `--phases`: how far after accept() connections are followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Phases {
    /// Until the first response byte (only the first request of a keep-alive connection).
    FirstResponse,
    /// Not at all.
    None,
}

#[derive(Debug, Args)]
pub struct TraceFilters {
    /// Only connections in this network namespace (its inode number, as `ls -i
    /// /proc/PID/ns/net` and the report show it).
    #[arg(long, value_name = "INODE")]
    pub netns: Option<u32>,
    /// Only connections accepted by this process.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
    /// Only connections whose SYN->accept took longer than this (e.g. 10ms).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub min_wait: Option<Duration>,
}

/// A refresh interval: a duration of at least 100 ms.
fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = parse_duration(text)?;
    if interval < Duration::from_millis(100) {
        return Err(format!("{text} is too short: at least 100ms"));
    }
    Ok(interval)
}

impl Cli {
    /// What clap cannot check alone: options that do not go together, or that a command does
    /// not take. A command line refused here is a usage error like clap's (one line, exit 2),
    /// found before anything is loaded into the kernel.
    pub fn validate(&self) -> Result<(), String> {
        let args = &self.trace;
        if args.ports.len() > MAX_PORTS {
            return Err(format!(
                "at most {MAX_PORTS} --port filters (or none, to trace every port)"
            ));
        }
        let reports = !args.fail_if.is_empty() || !args.outputs.is_empty() || args.junit.is_some();
        match &self.command {
            Some(Command::Run { .. }) if args.duration.is_some() => {
                return Err(
                    "--duration does not apply to run: tracing lasts as long as the command".into(),
                );
            }
            Some(Command::Trace { .. }) if reports => {
                return Err(
                    "trace prints connections, not a report: --fail-if, --output and \
                            --junit do not apply to it"
                        .into(),
                );
            }
            Some(Command::Trace { .. })
                if args
                    .format
                    .is_some_and(|f| !matches!(f, Format::Text | Format::Json)) =>
            {
                return Err(format!(
                    "trace prints text or json (NDJSON), not {}",
                    format_name(args.format.unwrap_or(Format::Text))
                ));
            }
            Some(Command::Serve { .. })
                if reports || args.hdr_log.is_some() || args.format.is_some() =>
            {
                return Err(
                    "serve writes no report: --fail-if, --output, --junit, --format \
                            and --hdr-log do not apply to it"
                        .into(),
                );
            }
            _ => {}
        }
        args.report_files().map_err(|e| format!("{e:#}"))?;
        Ok(())
    }
}

fn format_name(format: Format) -> String {
    use clap::ValueEnum as _;
    format
        .to_possible_value()
        .map_or_else(|| format!("{format:?}"), |v| v.get_name().to_owned())
}

/// A usage error found after parsing ([`Cli::validate`]): one line on stderr, exit 2, as
/// clap's own.
pub fn report_usage_error(message: &str) -> std::process::ExitCode {
    eprint_line(&format!("Error: {message} (see synscope --help)"));
    std::process::ExitCode::from(2)
}

/// Writes one line to stderr; a closed or broken stderr is not worth a panic.
pub fn eprint_line(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
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
    report_usage_error(&one_line(&error))
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

fn parse_threshold(text: &str) -> Result<Threshold, String> {
    // clap's message already names the expression.
    thresholds::parse(text)
}

impl TraceArgs {
    /// Each report file with its format: `--format` where given, else the file's extension.
    pub fn report_files(&self) -> anyhow::Result<Vec<(Format, PathBuf)>> {
        let mut files = Vec::new();
        for path in self.outputs.iter().filter(|p| !is_hdr_log(p)) {
            let format = match (self.format, format_of(path)) {
                (Some(format), _) => format,
                (None, Some(format)) => format,
                (None, None) => anyhow::bail!(
                    "cannot tell the format of {} from its extension (.json .md .prom .txt \
                     .xml .hlog): add --format",
                    path.display()
                ),
            };
            files.push((format, path.clone()));
        }
        files.extend(self.junit.iter().map(|path| (Format::Junit, path.clone())));
        Ok(files)
    }

    /// Where the HdrHistogram interval log goes, if anywhere.
    pub fn hdr_log_path(&self) -> Option<PathBuf> {
        self.hdr_log
            .clone()
            .or_else(|| self.outputs.iter().find(|p| is_hdr_log(p)).cloned())
    }
}

fn is_hdr_log(path: &std::path::Path) -> bool {
    path.extension().is_some_and(|e| e == "hlog")
}

/// Exit code when a --fail-if threshold broke (as k6 does).
pub const EXIT_THRESHOLD_BROKEN: u8 = 99;

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
        assert_eq!(cli.trace.format, Some(Format::Json));
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

    #[test]
    fn options_that_do_not_go_together_are_usage_errors() {
        let many_ports: Vec<String> = (1..=65)
            .flat_map(|p| ["-p".into(), p.to_string()])
            .collect();
        let many_ports: Vec<&str> = many_ports.iter().map(String::as_str).collect();
        for args in [
            &["run", "--duration", "5s", "--", "true"][..],
            &["trace", "--output", "r.json"],
            &["trace", "--fail-if", "drops > 0"],
            &["trace", "--junit", "j.xml"],
            &["trace", "--format", "html"],
            &["serve", "--output", "r.json"],
            &["serve", "--format", "json"],
            &["serve", "--hdr-log", "h.hlog"],
            &["--output", "report.unknown"],
            &many_ports,
        ] {
            let cli = Cli::try_parse_from(std::iter::once("synscope").chain(args.iter().copied()))
                .unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let error = cli.validate().expect_err(&format!("{args:?} accepted"));
            assert!(!error.contains('\n'), "{error}");
        }
        for args in [
            &["run", "--", "true"][..],
            &["trace", "--format", "json"],
            &[
                "--output",
                "r.json",
                "--output",
                "r.hlog",
                "--duration",
                "1s",
            ],
            &["top", "--junit", "j.xml"],
        ] {
            let cli = Cli::try_parse_from(std::iter::once("synscope").chain(args.iter().copied()))
                .unwrap();
            assert_eq!(cli.validate(), Ok(()), "{args:?}");
        }
    }

    /// Every parser of the command line on any input: a value or a one-line error, never a
    /// panic; and the documented forms of a duration mean what they say.
    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn config() -> ProptestConfig {
            ProptestConfig {
                cases: 1000,
                failure_persistence: None,
                ..ProptestConfig::default()
            }
        }

        /// Words a command line is made of: every subcommand and option, values good and bad.
        fn word() -> impl Strategy<Value = String> {
            let known = prop::sample::select(vec![
                "run",
                "demo",
                "top",
                "trace",
                "serve",
                "check",
                "--",
                "-p",
                "--port",
                "-d",
                "--duration",
                "-f",
                "--format",
                "--hooks",
                "-o",
                "--output",
                "--fail-if",
                "--allow-unobservable",
                "--hdr-log",
                "--junit",
                "--interval",
                "--listen",
                "--max-listeners",
                "--forget-after",
                "--netns",
                "--pid",
                "--min-wait",
                "json",
                "html",
                "xml",
                "kprobe",
                "0",
                "1",
                "65536",
                "1ms",
                "30s",
                "r.json",
                "r.hlog",
                "drops > 0",
                "127.0.0.1:0",
                "-h",
                "--help",
                "--version",
            ]);
            prop_oneof![
                4 => known.prop_map(String::from),
                1 => any::<String>(),
            ]
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn any_duration_text(text in any::<String>()) {
                let _ = parse_duration(&text);
                let _ = parse_interval(&text);
            }

            #[test]
            fn near_durations(text in "[-+ ]?[0-9]{0,25}(\\.[0-9]{0,3})? ?(ns|us|ms|s|m|h|d|w|y|min|years|)( ?[0-9]{1,3}[a-z]{1,2}){0,2}") {
                if let Ok(duration) = parse_duration(&text) {
                    prop_assert!(!duration.is_zero());
                }
                if let Ok(interval) = parse_interval(&text) {
                    prop_assert!(interval >= Duration::from_millis(100));
                }
            }

            #[test]
            fn durations_mean_what_they_say(
                amount in 1u64..1_000_000,
                (unit, scale) in prop::sample::select(vec![
                    ("ms", Duration::from_millis(1)),
                    ("s", Duration::from_secs(1)),
                    ("m", Duration::from_secs(60)),
                    ("h", Duration::from_secs(3600)),
                ]),
            ) {
                prop_assert_eq!(parse_duration(&format!("{amount}{unit}")), Ok(scale * amount as u32));
                let zero = format!("0{unit}");
                prop_assert!(parse_duration(&zero).is_err());
            }

            #[test]
            fn any_command_line(words in prop::collection::vec(word(), 0..8)) {
                let argv = std::iter::once("synscope".to_owned()).chain(words);
                match Cli::try_parse_from(argv) {
                    Ok(cli) => {
                        if let Err(message) = cli.validate() {
                            prop_assert!(!message.contains('\n'), "{message}");
                        }
                    }
                    Err(error) => {
                        let kind = error.kind();
                        let line = one_line(&error);
                        // Help and version are printed whole, not as errors.
                        if !matches!(
                            kind,
                            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
                        ) {
                            prop_assert!(!line.contains('\n') && !line.is_empty(), "{line:?}");
                        }
                    }
                }
            }
        }
    }
}
