//! Listening TCP sockets of every network namespace, read from /proc.
//!
//! /proc/PID/net/tcp shows the sockets of PID's network namespace, so one process per namespace
//! is enough to see all of them.

use std::{
    collections::BTreeMap,
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use crate::aggregate::ListenerKey;

/// `st` of a LISTEN socket in /proc/net/tcp.
const STATE_LISTEN: &str = "0A";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListeningSocket {
    pub key: ListenerKey,
    pub addr: IpAddr,
    /// Connections waiting in the accept queue now.
    pub accept_queue: u32,
}

/// Network namespace inode -> one pid living in it.
pub fn namespaces() -> BTreeMap<u32, u32> {
    let mut found = BTreeMap::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // "net:[4026531840]"
        let Ok(link) = fs::read_link(entry.path().join("ns/net")) else {
            continue;
        };
        let inode = link
            .to_str()
            .and_then(|s| s.strip_prefix("net:["))
            .and_then(|s| s.strip_suffix(']'))
            .and_then(|s| s.parse::<u32>().ok());
        if let Some(inode) = inode {
            found.entry(inode).or_insert(pid);
        }
    }
    found
}

/// Every listening TCP socket in every namespace that has a process.
pub fn scan() -> Vec<ListeningSocket> {
    let mut sockets = Vec::new();
    for (netns, pid) in namespaces() {
        for table in ["tcp", "tcp6"] {
            if let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/{table}")) {
                sockets.extend(parse_table(netns, &text));
            }
        }
    }
    sockets
}

/// Parses /proc/net/tcp or tcp6, keeping LISTEN sockets.
pub fn parse_table(netns: u32, text: &str) -> Vec<ListeningSocket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 5 || fields[3] != STATE_LISTEN {
                return None;
            }
            let (addr, port) = fields[1].split_once(':')?;
            let (_tx, rx) = fields[4].split_once(':')?;
            Some(ListeningSocket {
                key: ListenerKey {
                    netns,
                    port: u16::from_str_radix(port, 16).ok()?,
                },
                addr: parse_addr(addr)?,
                accept_queue: u32::from_str_radix(rx, 16).ok()?,
            })
        })
        .collect()
}

/// The kernel prints addresses as 32-bit words in host (little-endian) order.
fn parse_addr(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| {
        hex.get(i * 8..i * 8 + 8)
            .and_then(|w| u32::from_str_radix(w, 16).ok())
            .map(|w| w.to_le_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            let v6 = Ipv6Addr::from(bytes);
            Some(IpAddr::V6(v6))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000003 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:1F90 0100007F:A2C4 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0
";

    #[test]
    fn parses_listening_ipv4_sockets_only() {
        let sockets = parse_table(5, TCP);
        assert_eq!(
            sockets,
            [ListeningSocket {
                key: ListenerKey {
                    netns: 5,
                    port: 8080
                },
                addr: "127.0.0.1".parse().unwrap(),
                accept_queue: 3,
            }]
        );
    }

    #[test]
    fn parses_ipv6_addresses() {
        let sockets = parse_table(5, TCP6);
        assert_eq!(sockets.len(), 1);
        assert_eq!(sockets[0].addr, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(sockets[0].key.port, 80);
    }

    #[test]
    fn finds_this_process_namespace() {
        let own = fs::read_link("/proc/self/ns/net").unwrap();
        let own = own.to_str().unwrap();
        let namespaces = namespaces();
        assert!(
            namespaces
                .keys()
                .any(|inode| own == format!("net:[{inode}]"))
        );
    }
}
