//! What a session observed, and nothing about how it is shown: events aggregated per listener,
//! the kernel's own view of sockets and counters, queue depths, and what the attached hooks
//! can see. [`Observations`] owns all of it and is fed through one entry point; the report is a
//! pure function of it (`report::analyze`).

pub mod accept_loop;
pub mod aggregate;
pub mod drops;
pub mod kernel_view;
pub mod latency;
mod observations;
mod recorder;

pub use observations::{Observation, Observations, Visibility};
pub use recorder::{IntervalClock, Recorder};
