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

    /// /proc/net/netstat and snmp as any text: no panic, and only the counters asked for,
    /// each with the value in its own column.
    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn config() -> ProptestConfig {
            ProptestConfig {
                cases: 1000,
                failure_persistence: None,
                ..ProptestConfig::default()
            }
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn any_text(text in any::<String>()) {
                let counters = parse_pairs(&text, "TcpExt:", &TCP_EXT_COUNTERS);
                prop_assert!(counters.keys().all(|k| TCP_EXT_COUNTERS.contains(&k.as_str())));
            }

            #[test]
            fn lines_of_names_and_values(
                columns in prop::collection::vec(
                    (
                        prop_oneof![
                            prop::sample::select(TCP_EXT_COUNTERS.to_vec()).prop_map(String::from),
                            "[A-Za-z]{1,12}",
                        ],
                        prop_oneof![any::<u64>().prop_map(|v| v.to_string()), "[-0-9a-z]{1,4}"],
                    ),
                    0..16,
                ),
                prefix in prop_oneof![Just("TcpExt:"), Just("IpExt:"), Just("TcpExt")],
                missing_values in any::<bool>(),
                noise in "[ -~\n]{0,40}",
            ) {
                let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
                let mut values: Vec<&str> = columns.iter().map(|(_, v)| v.as_str()).collect();
                if missing_values {
                    values.pop();
                }
                let text = format!(
                    "{noise}\nTcpExt: {}\nTcpExt: {}\n{prefix} x\n",
                    names.join(" "),
                    values.join(" ")
                );
                let counters = parse_pairs(&text, "TcpExt:", &TCP_EXT_COUNTERS);
                for (name, value) in &counters {
                    prop_assert!(TCP_EXT_COUNTERS.contains(&name.as_str()));
                    // The value of some column of that name (a name may repeat).
                    prop_assert!(
                        columns.iter().any(|(n, v)| n == name && v.parse() == Ok(*value)),
                        "{name}={value} from {text:?}"
                    );
                }
                let clean = !noise.contains("TcpExt:") && prefix != "TcpExt:";
                if clean && !missing_values {
                    for (name, value) in &columns {
                        let Ok(value) = value.parse::<u64>() else { continue };
                        let repeated = columns.iter().filter(|(n, _)| n == name).count() > 1;
                        if TCP_EXT_COUNTERS.contains(&name.as_str()) && !repeated {
                            prop_assert_eq!(counters.get(name), Some(&value), "{:?}", text);
                        }
                    }
                }
            }
        }
    }
}
