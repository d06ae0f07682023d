//! The HTTP side of `serve`: `/metrics` and `/healthz`, on axum.

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus_client::registry::Registry;

use super::{exposition, state::MetricsState};
use crate::trace::SessionHandle;

pub struct App {
    pub session: SessionHandle,
    pub state: Arc<Mutex<MetricsState>>,
    pub registry: Registry,
}

impl App {
    pub fn new(session: SessionHandle, state: MetricsState) -> Self {
        let state = Arc::new(Mutex::new(state));
        let registry = exposition::registry(state.clone());
        Self {
            session,
            state,
            registry,
        }
    }

    /// Takes the session's interval into the series; false once the session has stopped.
    pub async fn refresh(&self) -> bool {
        let Some(detail) = self.session.interval_detail().await else {
            return false;
        };
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.absorb(&detail.report, &detail.observations, Instant::now());
        true
    }
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(app)
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    // Everything up to the scrape is in the page.
    if !app.refresh().await {
        return stopped();
    }
    match exposition::render(&app.registry) {
        Ok(page) => ([(header::CONTENT_TYPE, exposition::CONTENT_TYPE)], page).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "synscope: the metrics could not be encoded\n",
        )
            .into_response(),
    }
}

/// Healthy while the session collects events.
async fn healthz(State(app): State<Arc<App>>) -> Response {
    if app.session.alive().await {
        "ok\n".into_response()
    } else {
        stopped()
    }
}

fn stopped() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "synscope: tracing has stopped\n",
    )
        .into_response()
}
