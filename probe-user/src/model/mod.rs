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

/// A hash map for keys hashed on every event (connections, threads).
pub type FastHashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type FastHashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
pub use recorder::{IntervalClock, Recorder};
