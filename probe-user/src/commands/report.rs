//! `synscope [--duration D]`: trace every listening port (or those of `--port`) until the
//! duration passes or Ctrl-C, then report.

use crate::{
    cli::{TraceArgs, eprint_line},
    trace::signals,
};

pub async fn run(args: &TraceArgs) -> anyhow::Result<u8> {
    let options = super::trace_options(args)?;
    let mut sink = super::open_sink(args)?;
    let mut session = super::start_session(&options)?;
    match args.duration {
        Some(duration) => {
            eprint_line(&format!(
                "synscope: tracing for {} (Ctrl-C to stop early)",
                humantime::format_duration(duration)
            ));
            session
                .trace_until(signals::sleep_or_stop(duration))
                .await?;
        }
        None => {
            eprint_line("synscope: tracing until Ctrl-C");
            session.trace_until(signals::stop()).await?;
        }
    }
    super::finish(&mut sink, &mut session, args)
}
