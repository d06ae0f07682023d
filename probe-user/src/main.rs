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
    let options = TraceOptions {
        ports: args.ports.clone(),
    };
    let mut exit_code = 0;
    let session = match &cli.command {
        Some(Command::Run { command }) => {
            if args.duration.is_some() {
                bail!("--duration does not apply to run: tracing lasts as long as the command");
            }
            let mut session = Session::start(&options)?;
            let mut child = run_command::spawn(command)?;
            // Ctrl-C reaches the command too; synscope waits for it to exit, then reports.
            let status = session
                .trace_until(async {
                    tokio::select! {
                        status = child.wait() => status,
                        _ = ignore_interrupts() => unreachable!("ignore_interrupts never returns"),
                    }
                })
                .await??;
            exit_code = run_command::exit_code(status);
            session
        }
        Some(Command::Check) => {
            preflight::require_root()?;
            let mut stdout = std::io::stdout().lock();
            return check::run(&mut stdout);
        }
        Some(Command::Demo) => {
            let duration = args.duration.unwrap_or(demo::DEFAULT_DURATION);
            let server = demo::Demo::bind()?;
            let options = TraceOptions {
                ports: vec![server.addr.port()],
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
            session.trace_until(interruptible_sleep(duration)).await?;
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
                    session.trace_until(interruptible_sleep(duration)).await?;
                }
                None => {
                    eprintln!("synscope: tracing until Ctrl-C");
                    session.trace_until(tokio::signal::ctrl_c()).await??;
                }
            }
            session
        }
    };
    let report = session.report()?;
    session::write_report(&report, args.format, args.output.as_deref())?;
    Ok(exit_code)
}

/// Sleeps for `duration`, or less if Ctrl-C is pressed.
async fn interruptible_sleep(duration: std::time::Duration) {
    tokio::select! {
        _ = tokio::time::sleep(duration) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Swallows Ctrl-C for as long as it is polled.
async fn ignore_interrupts() {
    loop {
        let _ = tokio::signal::ctrl_c().await;
    }
}
