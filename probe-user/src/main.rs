//! synscope: per-port TCP listen-path latency (SYN -> handshake -> accept()), traced with eBPF.

mod aggregate;
mod btf;
mod check;
mod cli;
mod counters;
mod demo;
mod drops;
mod hooks;
mod inventory;
mod kallsyms;
mod kernel_offsets;
mod kernel_view;
mod latency;
mod netns;
mod preflight;
mod report;
mod run_command;
mod session;
mod signals;
mod sockdiag;
mod tracer;

use std::process::ExitCode;

use anyhow::bail;
use clap::Parser as _;

use crate::{
    cli::{Cli, Command},
    session::Session,
    tracer::TraceOptions,
};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return cli::report_parse_error(e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("Error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    let args = &cli.trace;
    if args.ports.len() > cli::MAX_PORTS {
        bail!(
            "at most {} --port filters (or none, to trace every port)",
            cli::MAX_PORTS
        );
    }
    // A report that cannot be written would waste the whole run: open the file first.
    let mut sink = session::ReportSink::open(args.output.as_deref())?;
    let options = TraceOptions {
        ports: args.ports.clone(),
        hooks: args.hooks,
    };
    let mut exit_code = 0;
    let session = match &cli.command {
        Some(Command::Run { command }) => {
            if args.duration.is_some() {
                bail!("--duration does not apply to run: tracing lasts as long as the command");
            }
            let mut session = Session::start(&options)?;
            let mut child = run_command::spawn(command)?;
            let status = session
                .trace_until(signals::wait_for_command(&mut child))
                .await??;
            exit_code = run_command::exit_code(status);
            session
        }
        Some(Command::Check) => {
            preflight::require_root()?;
            let mut stdout = std::io::stdout().lock();
            return check::run(&mut stdout, args.hooks);
        }
        Some(Command::Demo) => {
            let duration = args.duration.unwrap_or(demo::DEFAULT_DURATION);
            let server = demo::Demo::bind()?;
            let options = TraceOptions {
                ports: vec![server.addr.port()],
                hooks: args.hooks,
            };
            eprintln!(
                "demo: a server on {} spends {} ms of CPU on each request in one thread\n\
                 demo: (listen backlog {}), while {} clients connect in a loop for {}.",
                server.addr,
                demo::HANDLER_CPU.as_millis(),
                demo::BACKLOG,
                demo::CLIENTS,
                humantime::format_duration(duration)
            );
            eprintln!(
                "demo: watch the accept wait grow to queue length x handler time, and the\n\
                 demo: handshakes that overflow the queue wait for retransmits.\n"
            );
            let mut session = Session::start(&options)?;
            server.start(duration)?;
            session
                .trace_until(signals::sleep_or_stop(duration))
                .await?;
            session
        }
        None => {
            let mut session = Session::start(&options)?;
            match args.duration {
                Some(duration) => {
                    eprintln!(
                        "synscope: tracing for {} (Ctrl-C to stop early)",
                        humantime::format_duration(duration)
                    );
                    session
                        .trace_until(signals::sleep_or_stop(duration))
                        .await?;
                }
                None => {
                    eprintln!("synscope: tracing until Ctrl-C");
                    session.trace_until(signals::stop()).await?;
                }
            }
            session
        }
    };
    let report = session.report()?;
    sink.write(&report, args.format)?;
    Ok(exit_code)
}
