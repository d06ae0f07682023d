//! The `synscope` binary: parses the command line and dispatches to one command.

use std::process::ExitCode;

use clap::Parser as _;
use synscope::{
    cli::{self, Cli, Command},
    commands,
    report::ReportSink,
    trace::signals,
};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return cli::report_parse_error(e),
    };
    if let Err(message) = cli.validate() {
        return cli::report_usage_error(&message);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            cli::eprint_line(&format!("Error: cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let args = &cli.trace;
    let result = runtime.block_on(async {
        // Every command but check traces until a signal: from here on, SIGINT, SIGTERM and
        // SIGHUP are counted instead of ending synscope before its report.
        if !matches!(cli.command, Some(Command::Check)) {
            signals::listen();
        }
        match &cli.command {
            Some(Command::Run { command }) => commands::run::run(args, command).await,
            Some(Command::Check) => commands::check::run(args.hooks),
            Some(Command::Top { interval }) => commands::top::run(args, *interval).await,
            Some(Command::Trace { filters }) => commands::trace::run(args, filters).await,
            Some(Command::Demo) => commands::demo::run(args).await,
            Some(Command::Serve {
                listen,
                max_listeners,
                forget_after,
            }) => {
                let options = commands::serve::ServeOptions {
                    listen: *listen,
                    max_listeners: *max_listeners as usize,
                    forget_after: *forget_after,
                };
                commands::serve::run(args, &options).await
            }
            None => commands::report::run(args).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        // As `cat` or `grep` in a pipeline whose reader left: no message.
        Err(e) if ReportSink::is_stdout_closed(&e) => signals::die_of_broken_pipe(),
        Err(e) => {
            cli::eprint_line(&format!("Error: {e:#}"));
            ExitCode::FAILURE
        }
    }
}
