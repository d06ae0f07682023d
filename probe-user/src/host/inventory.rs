//! One pass over every network namespace: its listening sockets (sock_diag), counters and
//! sysctls, each read from inside the namespace.

use super::{
    counters, netns,
    sockdiag::{self, DiagListener},
};
use crate::report::schema::{Counters, Sysctls};

#[derive(Clone, Debug)]
pub struct NetnsState {
    pub inode: u32,
    pub listeners: Vec<DiagListener>,
    pub counters: Counters,
    pub sysctls: Sysctls,
}

/// Reads every namespace; one that vanishes meanwhile is skipped.
pub fn read_all() -> Vec<NetnsState> {
    netns::all()
        .into_values()
        .filter_map(|ns| {
            let inode = ns.inode;
            ns.run_in(move || {
                Ok(NetnsState {
                    inode,
                    // Without sock_diag (its modules missing) the counters still count.
                    listeners: sockdiag::listening_sockets().unwrap_or_default(),
                    counters: counters::read_own(),
                    sysctls: counters::read_sysctls(),
                })
            })
            .ok()
        })
        .collect()
}
