//! synscope: per-port TCP listen-path latency (SYN -> handshake -> accept()), traced with eBPF.
//!
//! The data path, one folder each:
//! - [`host`] reads the kernel and the machine: BTF, kallsyms, struct offsets, `/proc`
//!   counters and sysctls, sock_diag, network namespaces;
//! - [`trace`] loads and attaches the kernel programs (the hook plan) and runs a session;
//! - [`model`] holds what a session observed;
//! - [`report`] turns observations into the report (a pure function) and renders it;
//! - [`live`] has the views of a running session (per-connection lines, the live table);
//! - [`serve`] keeps the Prometheus endpoint's series;
//! - [`commands`] has one file per subcommand of the `synscope` binary.

pub mod cli;
pub mod commands;
pub mod host;
pub mod live;
pub mod model;
pub mod report;
pub mod serve;
pub mod trace;
