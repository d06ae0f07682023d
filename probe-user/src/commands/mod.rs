//! One file per command of the `synscope` binary; each takes the parsed arguments and returns
//! the exit code.

pub mod check;
pub mod demo;
pub mod run;
pub mod trace;

use crate::{
    cli::{MAX_PORTS, TraceArgs},
    report::{Report, ReportSink},
    trace::TraceOptions,
};

/// What to trace, from the arguments every tracing command shares.
fn trace_options(args: &TraceArgs) -> anyhow::Result<TraceOptions> {
    if args.ports.len() > MAX_PORTS {
        anyhow::bail!("at most {MAX_PORTS} --port filters (or none, to trace every port)");
    }
    Ok(TraceOptions {
        ports: args.ports.clone(),
        hooks: args.hooks,
    })
}

/// A report that cannot be written would waste the whole run: the file is opened first.
fn open_sink(args: &TraceArgs) -> anyhow::Result<ReportSink> {
    ReportSink::open(args.output.as_deref())
}

fn write_report(sink: &mut ReportSink, report: &Report, args: &TraceArgs) -> anyhow::Result<()> {
    sink.write(report, args.format)
}
