//! `synscope serve`: a Prometheus endpoint fed by a session that never ends. The session keeps
//! no whole run; the endpoint takes its intervals (at each scrape, and every few seconds
//! between scrapes) into cumulative series whose number is bounded.

pub mod buckets;
pub mod exposition;
mod http;
pub mod state;

pub use http::{App, router};
