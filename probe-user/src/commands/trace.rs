//! `synscope trace`: one line per accepted connection (and per drop seen as an event) until
//! the duration passes or Ctrl-C, or standard output closes.

use std::{io::Write, time::Instant};

use crate::{
    cli::{TraceArgs, TraceFilters},
    live::connections::{ConnectionPrinter, Filters, LineFormat},
    report::Format,
    trace::{Session, TraceOptions, signals},
};

pub async fn run(args: &TraceArgs, filters: &TraceFilters) -> anyhow::Result<u8> {
    if !args.fail_if.is_empty() || !args.outputs.is_empty() || args.junit.is_some() {
        anyhow::bail!(
            "trace prints connections, not a report: --fail-if, --output and --junit do not apply to it"
        );
    }
    let format = match args.format {
        None | Some(Format::Text) => LineFormat::Text,
        Some(Format::Json) => LineFormat::Json,
        Some(other) => anyhow::bail!("trace prints text or json (NDJSON), not {other:?}"),
    };
    let options = TraceOptions {
        // Each connection's line counts its SYNs (a client's retries).
        syn_events: true,
        ..super::trace_options(args)?
    };
    let mut session = Session::start(&options)?;
    let out: Box<dyn Write> = Box::new(std::io::BufWriter::new(std::io::stdout()));
    let mut printer = ConnectionPrinter::new(
        out,
        format,
        Filters {
            netns: filters.netns,
            pid: filters.pid,
            min_wait: filters.min_wait,
        },
    );
    printer.start(
        &crate::host::preflight::kernel_release(),
        session.visibility(),
    );
    let closed = printer.closed.clone();
    let printer = std::rc::Rc::new(std::cell::RefCell::new(printer));
    session.set_tap(Box::new(SharedPrinter(printer.clone())));
    let started = Instant::now();
    let stop = async {
        match args.duration {
            Some(duration) => signals::sleep_or_stop(duration).await,
            None => signals::stop().await,
        }
    };
    session
        .trace_until(async {
            tokio::select! {
                () = stop => {}
                () = closed.notified() => {}
            }
        })
        .await?;
    let report = session.report();
    printer
        .borrow_mut()
        .finish(report.lost_events, started.elapsed());
    Ok(0)
}

/// The printer stays the command's, for the summary, while the session feeds it.
struct SharedPrinter(std::rc::Rc<std::cell::RefCell<ConnectionPrinter>>);

impl crate::trace::EventTap for SharedPrinter {
    fn event(&mut self, event: &probe_common::ConnEvent) {
        self.0.borrow_mut().event(event);
    }

    fn batch_done(&mut self) {
        self.0.borrow_mut().batch_done();
    }
}
