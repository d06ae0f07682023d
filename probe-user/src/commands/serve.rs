//! `synscope serve`: trace until stopped and answer Prometheus scrapes on `/metrics`.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context as _, bail};

use crate::{
    cli::TraceArgs,
    serve::{
        self, App,
        state::{Limits, MetricsState},
    },
    trace::{Session, signals},
};

/// Between scrapes, intervals are still taken this often, so a session's memory does not
/// grow when nobody scrapes.
const REFRESH_INTERVAL: Duration = Duration::from_secs(5);

pub struct ServeOptions {
    pub listen: SocketAddr,
    pub max_listeners: usize,
    pub forget_after: Duration,
}

pub async fn run(args: &TraceArgs, serve_options: &ServeOptions) -> anyhow::Result<u8> {
    if !args.fail_if.is_empty() || !args.outputs.is_empty() || args.junit.is_some() {
        bail!("serve writes no report: --fail-if, --output and --junit do not apply to it");
    }
    if args.hdr_log.is_some() || args.format.is_some() {
        bail!("serve writes no report: --format and --hdr-log do not apply to it");
    }
    let options = super::trace_options(args)?;
    // Bind first: a port in use is reported before anything is loaded into the kernel.
    let listener = tokio::net::TcpListener::bind(serve_options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", serve_options.listen))?;
    let mut session = Session::start(&options)?;
    session.forget_whole_run();
    let limits = Limits {
        ports: options.ports.clone(),
        max_listeners: serve_options.max_listeners,
        forget_after: serve_options.forget_after,
    };
    let state = MetricsState::new(limits, crate::host::preflight::kernel_release());
    let app = Arc::new(App::new(session.handle(), state));
    let server = axum::serve(listener, serve::router(app.clone()));
    eprintln!(
        "synscope: serving Prometheus metrics on http://{}/metrics (Ctrl-C to stop)",
        serve_options.listen
    );
    let refresh = async {
        let mut tick = tokio::time::interval(REFRESH_INTERVAL);
        loop {
            tick.tick().await;
            app.refresh().await;
        }
    };
    let stop = async {
        match args.duration {
            Some(duration) => signals::sleep_or_stop(duration).await,
            None => signals::stop().await,
        }
    };
    let served = session
        .trace_until(async {
            tokio::select! {
                served = server.into_future() => served.context("the metrics server failed"),
                _ = refresh => Ok(()),
                _ = stop => Ok(()),
            }
        })
        .await?;
    served?;
    Ok(0)
}
