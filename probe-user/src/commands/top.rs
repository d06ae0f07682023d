//! `synscope top`: the live view until `q`, Ctrl-C or --duration, then the whole run's report
//! (and its thresholds, like every tracing command).

use std::{io::IsTerminal as _, time::Duration};

use crate::{
    cli::TraceArgs,
    live::top::{self, Snapshot},
    trace::signals,
};

pub async fn run(args: &TraceArgs, interval: Duration) -> anyhow::Result<u8> {
    let options = super::trace_options(args)?;
    let on_terminal = std::io::stdout().is_terminal();
    let sink = super::open_sink(args)?;
    // Without a terminal, standard output carries the snapshots; the final report ends them.
    let mut sink = if on_terminal {
        sink
    } else {
        sink.without_stdout()
    };
    let mut session = super::start_session(&options)?;
    let handle = session.handle();
    let kernel = crate::host::preflight::kernel_release();
    let stop = async {
        match args.duration {
            Some(duration) => signals::sleep_or_stop(duration).await,
            None => signals::stop().await,
        }
    };
    let viewed = session
        .trace_until(async {
            tokio::select! {
                result = top::full_screen(handle.clone(), kernel, interval), if on_terminal => result,
                () = top::snapshots(handle.clone(), interval), if !on_terminal => Ok(()),
                () = stop => Ok(()),
            }
        })
        .await?;
    viewed?;
    let (code, report) = super::finish_with_report(&mut sink, &mut session, args)?;
    if !on_terminal {
        top::print_snapshot(&Snapshot::Run { report: &report });
    }
    Ok(code)
}
