//! One file per command of the `synscope` binary; each takes the parsed arguments and returns
//! the exit code.

pub mod check;
pub mod demo;
pub mod report;
pub mod run;
pub mod serve;
pub mod top;
pub mod trace;

use crate::{
    cli::{EXIT_THRESHOLD_BROKEN, MAX_PORTS, TraceArgs},
    report::{Format, ReportSink, thresholds},
    trace::{Session, TraceOptions, signals},
};

/// Starts tracing with what every report needs: the per-second timeline (the report's
/// `timeline` and the HdrHistogram log).
fn start_session(options: &TraceOptions) -> anyhow::Result<Session> {
    let mut session = Session::start(options)?;
    session.keep_timeline();
    Ok(session)
}

/// What to trace, from the arguments every tracing command shares.
fn trace_options(args: &TraceArgs) -> anyhow::Result<TraceOptions> {
    // `Cli::validate` refused it with exit 2 already; kept for callers that did not validate.
    if args.ports.len() > MAX_PORTS {
        anyhow::bail!("at most {MAX_PORTS} --port filters (or none, to trace every port)");
    }
    Ok(TraceOptions {
        ports: args.ports.clone(),
        hooks: args.hooks,
        phases: args.phases == crate::cli::Phases::FirstResponse,
        syn_events: false,
    })
}

/// A report that cannot be written would waste the whole run: the files are opened first.
fn open_sink(args: &TraceArgs) -> anyhow::Result<ReportSink> {
    ReportSink::open(
        &args.report_files()?,
        args.hdr_log_path(),
        args.format.unwrap_or(Format::Text),
    )
}

/// Checks the thresholds, writes the report everywhere it goes, and says on stderr which
/// thresholds broke, one line each. The exit code: 99 if any broke, else 0.
fn finish(sink: &mut ReportSink, session: &mut Session, args: &TraceArgs) -> anyhow::Result<u8> {
    Ok(finish_with_report(sink, session, args)?.0)
}

/// [`finish`], also giving the report back.
fn finish_with_report(
    sink: &mut ReportSink,
    session: &mut Session,
    args: &TraceArgs,
) -> anyhow::Result<(u8, crate::report::Report)> {
    // Tracing has stopped: a Ctrl-C from now on (a second one, mostly) ends synscope at once.
    signals::exit_on_next_signal();
    let mut report = session.report();
    sink.write_hdr_log(|out| session.write_hdr_log(out))?;
    report.thresholds = thresholds::evaluate(&args.fail_if, &report, args.allow_unobservable);
    sink.write(&report)?;
    let broken: Vec<_> = report.thresholds.iter().filter(|t| !t.held).collect();
    for result in &broken {
        // Standard error may be a pipe whose reader left (`2>&1 | head`): no panic for that.
        crate::cli::eprint_line(&format!(
            "synscope: threshold broken: {}",
            thresholds::describe(result)
        ));
    }
    let code = if broken.is_empty() {
        0
    } else {
        EXIT_THRESHOLD_BROKEN
    };
    Ok((code, report))
}
