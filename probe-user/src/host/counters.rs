//! A network namespace's own TCP counters and listen-related sysctls: the kernel's ground
//! truth that per-port figures are reconciled against.

use std::fs;

use crate::report::schema::{Counters, Sysctls};

/// The `TcpExt:` counters (/proc/net/netstat) about the listen path.
pub const TCP_EXT_COUNTERS: [&str; 9] = [
    "ListenOverflows",
    "ListenDrops",
    "TCPReqQFullDrop",
    "TCPReqQFullDoCookies",
    "SyncookiesSent",
    "SyncookiesRecv",
    "SyncookiesFailed",
    "TCPSynRetrans",
    "EmbryonicRsts",
];

/// Reads the listen-path counters of the calling thread's namespace.
pub fn read_own() -> Counters {
    let netstat = fs::read_to_string("/proc/thread-self/net/netstat").unwrap_or_default();
    let snmp = fs::read_to_string("/proc/thread-self/net/snmp").unwrap_or_default();
    let mut counters = parse_pairs(&netstat, "TcpExt:", &TCP_EXT_COUNTERS);
    counters.extend(parse_pairs(&snmp, "Tcp:", &["PassiveOpens"]));
    counters
}

/// /proc/net/netstat and snmp hold, per protocol, a line of names and a line of values.
pub fn parse_pairs(text: &str, prefix: &str, wanted: &[&str]) -> Counters {
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(prefix)).collect();
    let mut counters = Counters::new();
    if let [names, values] = lines[..] {
        for (name, value) in names
            .split_whitespace()
            .zip(values.split_whitespace())
            .skip(1)
        {
            if wanted.contains(&name)
                && let Ok(value) = value.parse()
            {
                counters.insert(name.to_owned(), value);
            }
        }
    }
    counters
}

/// `later - earlier` for every counter of `later` (a missing earlier value counts as 0).
pub fn delta(earlier: &Counters, later: &Counters) -> Counters {
    later
        .iter()
        .map(|(name, &value)| {
            let before = earlier.get(name).copied().unwrap_or(0);
            (name.clone(), value.saturating_sub(before))
        })
        .collect()
}

/// Reads the sysctls of the calling thread's namespace (net sysctls are per namespace).
pub fn read_sysctls() -> Sysctls {
    let read = |name: &str| {
        fs::read_to_string(format!("/proc/sys/net/{name}"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    };
    Sysctls {
        somaxconn: read("core/somaxconn"),
        tcp_max_syn_backlog: read("ipv4/tcp_max_syn_backlog"),
        tcp_syncookies: read("ipv4/tcp_syncookies"),
        tcp_abort_on_overflow: read("ipv4/tcp_abort_on_overflow"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NETSTAT: &str = "TcpExt: SyncookiesSent SyncookiesRecv ListenOverflows ListenDrops Other
TcpExt: 3 1 412 415 9
IpExt: InNoRoutes
IpExt: 0
";

    #[test]
    fn reads_named_counters_only() {
        let counters = parse_pairs(NETSTAT, "TcpExt:", &TCP_EXT_COUNTERS);
        assert_eq!(counters["ListenOverflows"], 412);
        assert_eq!(counters["SyncookiesSent"], 3);
        assert!(!counters.contains_key("Other"));
        assert!(!counters.contains_key("InNoRoutes"));
    }

    #[test]
    fn deltas_treat_missing_as_zero() {
        let before = parse_pairs(NETSTAT, "TcpExt:", &TCP_EXT_COUNTERS);
        let mut after = before.clone();
        *after.get_mut("ListenOverflows").unwrap() += 5;
        after.insert("TCPReqQFullDrop".into(), 2);
        let d = delta(&before, &after);
        assert_eq!(d["ListenOverflows"], 5);
        assert_eq!(d["TCPReqQFullDrop"], 2);
        assert_eq!(d["ListenDrops"], 0);
    }

    #[test]
    fn reads_this_namespace() {
        assert!(read_own().contains_key("ListenOverflows"));
        assert!(read_sysctls().somaxconn.is_some());
    }
}
