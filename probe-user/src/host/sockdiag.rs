//! Listening TCP sockets of the caller's network namespace, from the kernel's sock_diag
//! netlink interface (what `ss -tlnm` shows): accept-queue length, backlog limit and the
//! socket's drop counter.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use anyhow::{Context as _, bail};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_HEADER: usize = 16;
const INET_DIAG_MSG: usize = 72;
const INET_DIAG_SKMEMINFO: u16 = 7;
/// Index of the drop counter in the SK_MEMINFO array.
const SK_MEMINFO_DROPS: usize = 8;
const TCP_LISTEN: u32 = 10;

/// One listening socket as sock_diag reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiagListener {
    pub addr: IpAddr,
    pub port: u16,
    /// Children waiting in the accept queue now (`ss` Recv-Q).
    pub accept_queue: u32,
    /// The accept-queue limit, `sk_max_ack_backlog`: listen()'s backlog clamped by
    /// net.core.somaxconn (`ss` Send-Q).
    pub backlog: u32,
    /// Packets this socket dropped since it was created (listen drops, for a listener).
    pub drops: u32,
    pub inode: u32,
}

/// Lists the listening TCP sockets (IPv4 and IPv6) of the calling thread's namespace.
pub fn listening_sockets() -> anyhow::Result<Vec<DiagListener>> {
    let socket = open().context("cannot open a sock_diag netlink socket")?;
    let mut listeners = Vec::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        send_request(&socket, family)?;
        receive(&socket, &mut listeners)?;
    }
    Ok(listeners)
}

fn open() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new, valid descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn send_request(socket: &OwnedFd, family: u8) -> anyhow::Result<()> {
    let mut request = Vec::with_capacity(NLMSG_HEADER + 56);
    request.extend(((NLMSG_HEADER + 56) as u32).to_ne_bytes());
    request.extend(SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    request.extend((NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    request.extend(1u32.to_ne_bytes()); // sequence
    request.extend(0u32.to_ne_bytes()); // port id: the kernel
    // struct inet_diag_req_v2
    request.push(family);
    request.push(libc::IPPROTO_TCP as u8);
    request.push(1 << (INET_DIAG_SKMEMINFO - 1)); // extensions wanted
    request.push(0);
    request.extend((1u32 << TCP_LISTEN).to_ne_bytes()); // states
    request.extend([0u8; 48]); // struct inet_diag_sockid: match all
    // SAFETY: the buffer is valid for its length.
    let sent = unsafe {
        libc::send(
            socket.as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            0,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error()).context("sock_diag request");
    }
    Ok(())
}

fn receive(socket: &OwnedFd, out: &mut Vec<DiagListener>) -> anyhow::Result<()> {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: the buffer is valid for its length.
        let len = unsafe {
            libc::recv(
                socket.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                0,
            )
        };
        if len < 0 {
            return Err(io::Error::last_os_error()).context("sock_diag reply");
        }
        if parse_messages(&buffer[..len as usize], out)? {
            return Ok(());
        }
    }
}

/// Parses one datagram of netlink messages; true once the dump is complete.
pub fn parse_messages(mut data: &[u8], out: &mut Vec<DiagListener>) -> anyhow::Result<bool> {
    while data.len() >= NLMSG_HEADER {
        let len = u32::from_ne_bytes(data[0..4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        if len < NLMSG_HEADER || len > data.len() {
            bail!("malformed sock_diag reply");
        }
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                // struct nlmsgerr begins with the (negative) errno.
                let Some(errno) = data
                    .get(NLMSG_HEADER..NLMSG_HEADER + 4)
                    .filter(|_| len >= 20)
                else {
                    bail!("malformed sock_diag error reply");
                };
                let errno = i32::from_ne_bytes(errno.try_into().expect("4 bytes"));
                return Err(io::Error::from_raw_os_error(errno.wrapping_neg()))
                    .context("sock_diag error");
            }
            SOCK_DIAG_BY_FAMILY => {
                if let Some(listener) = parse_listener(&data[NLMSG_HEADER..len]) {
                    out.push(listener);
                }
            }
            _ => {}
        }
        data = &data[align4(len).min(data.len())..];
    }
    Ok(false)
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// struct inet_diag_msg followed by attributes.
fn parse_listener(msg: &[u8]) -> Option<DiagListener> {
    if msg.len() < INET_DIAG_MSG {
        return None;
    }
    let u32_at = |at: usize| u32::from_ne_bytes(msg[at..at + 4].try_into().expect("4 bytes"));
    let family = msg[0] as i32;
    let port = u16::from_be_bytes([msg[4], msg[5]]);
    let src: [u8; 16] = msg[8..24].try_into().ok()?;
    let addr = match family {
        libc::AF_INET => IpAddr::V4(Ipv4Addr::new(src[0], src[1], src[2], src[3])),
        libc::AF_INET6 => IpAddr::V6(Ipv6Addr::from(src)),
        _ => return None,
    };
    let mut listener = DiagListener {
        addr,
        port,
        accept_queue: u32_at(56),
        backlog: u32_at(60),
        drops: 0,
        inode: u32_at(68),
    };
    let mut attrs = &msg[INET_DIAG_MSG..];
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]);
        if len < 4 || len > attrs.len() {
            break;
        }
        let payload = &attrs[4..len];
        if kind == INET_DIAG_SKMEMINFO && payload.len() >= (SK_MEMINFO_DROPS + 1) * 4 {
            let at = SK_MEMINFO_DROPS * 4;
            listener.drops = u32::from_ne_bytes(payload[at..at + 4].try_into().expect("4 bytes"));
        }
        attrs = &attrs[align4(len).min(attrs.len())..];
    }
    Some(listener)
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn sees_a_listener_of_this_process_with_its_backlog() {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket
            .bind(
                &"127.0.0.1:0"
                    .parse::<std::net::SocketAddr>()
                    .unwrap()
                    .into(),
            )
            .unwrap();
        socket.listen(7).unwrap();
        let listener: TcpListener = socket.into();
        let port = listener.local_addr().unwrap().port();
        // Two connections wait in the accept queue.
        let _clients: Vec<_> = (0..2)
            .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(50));

        let found = listening_sockets().unwrap();
        let ours = found.iter().find(|l| l.port == port).expect("our listener");
        assert_eq!(ours.addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(ours.backlog, 7);
        assert_eq!(ours.accept_queue, 2);
        assert_eq!(ours.drops, 0);
    }

    #[test]
    fn an_error_reply_without_its_errno_is_an_error() {
        let mut message = vec![0u8; 16];
        message[0..4].copy_from_slice(&16u32.to_ne_bytes());
        message[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert!(parse_messages(&message, &mut Vec::new()).is_err());
    }

    #[test]
    fn an_error_reply_is_an_error() {
        let mut message = vec![0u8; 36];
        message[0..4].copy_from_slice(&36u32.to_ne_bytes());
        message[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        message[16..20].copy_from_slice(&(-libc::EPERM).to_ne_bytes());
        assert!(parse_messages(&message, &mut Vec::new()).is_err());
    }

    /// Replies as any bytes, or as messages whose lengths and types are off: an error or
    /// listeners, never a panic; and well-formed listeners come back as they were.
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

        /// One netlink message: its header (length as declared) and payload.
        fn message(kind: u16, declared_len: usize, payload: &[u8]) -> Vec<u8> {
            let mut bytes = Vec::new();
            bytes.extend((declared_len as u32).to_ne_bytes());
            bytes.extend(kind.to_ne_bytes());
            bytes.extend([0u8; 10]); // flags, sequence, port id
            bytes.extend(payload);
            while !bytes.len().is_multiple_of(4) {
                bytes.push(0);
            }
            bytes
        }

        /// struct inet_diag_msg for `listener`, then its SK_MEMINFO and an attribute synscope
        /// does not read.
        fn inet_diag_msg(listener: &DiagListener) -> Vec<u8> {
            let mut msg = vec![0u8; INET_DIAG_MSG];
            let (family, src) = match listener.addr {
                IpAddr::V4(v4) => (libc::AF_INET, v4.octets().to_vec()),
                IpAddr::V6(v6) => (libc::AF_INET6, v6.octets().to_vec()),
            };
            msg[0] = family as u8;
            msg[1] = TCP_LISTEN as u8;
            msg[4..6].copy_from_slice(&listener.port.to_be_bytes());
            msg[8..8 + src.len()].copy_from_slice(&src);
            msg[56..60].copy_from_slice(&listener.accept_queue.to_ne_bytes());
            msg[60..64].copy_from_slice(&listener.backlog.to_ne_bytes());
            msg[68..72].copy_from_slice(&listener.inode.to_ne_bytes());
            let mut attribute = |kind: u16, payload: &[u8]| {
                msg.extend(((4 + payload.len()) as u16).to_ne_bytes());
                msg.extend(kind.to_ne_bytes());
                msg.extend(payload);
                while !msg.len().is_multiple_of(4) {
                    msg.push(0);
                }
            };
            attribute(1, &[7, 7, 7]); // INET_DIAG_MEMINFO, odd-sized
            let mut meminfo = [0u32; 10];
            meminfo[SK_MEMINFO_DROPS] = listener.drops;
            let meminfo: Vec<u8> = meminfo.iter().flat_map(|v| v.to_ne_bytes()).collect();
            attribute(INET_DIAG_SKMEMINFO, &meminfo);
            msg
        }

        fn listener() -> impl Strategy<Value = DiagListener> {
            let addr = prop_oneof![
                any::<[u8; 4]>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
                any::<[u8; 16]>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
            ];
            (
                addr,
                any::<u16>(),
                any::<u32>(),
                any::<u32>(),
                any::<u32>(),
                any::<u32>(),
            )
                .prop_map(|(addr, port, accept_queue, backlog, drops, inode)| {
                    DiagListener {
                        addr,
                        port,
                        accept_queue,
                        backlog,
                        drops,
                        inode,
                    }
                })
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn any_bytes(data in prop::collection::vec(any::<u8>(), 0..400)) {
                let mut out = Vec::new();
                let _ = parse_messages(&data, &mut out);
                prop_assert!(out.len() <= data.len() / (NLMSG_HEADER + INET_DIAG_MSG));
            }

            #[test]
            fn messages_with_lengths_and_types_off(
                messages in prop::collection::vec(
                    (
                        prop_oneof![
                            Just(NLMSG_ERROR),
                            Just(NLMSG_DONE),
                            Just(SOCK_DIAG_BY_FAMILY),
                            any::<u16>(),
                        ],
                        // Short ones too: the payloads whose fields are missing.
                        prop_oneof![
                            prop::collection::vec(any::<u8>(), 0..8),
                            prop::collection::vec(any::<u8>(), 0..120),
                        ],
                        prop_oneof![Just(0i64), -24i64..24],
                    ),
                    1..4,
                ),
                unpadded in 0usize..4,
            ) {
                let mut data = Vec::new();
                for (kind, payload, off) in messages {
                    let len = (NLMSG_HEADER + payload.len()) as i64 + off;
                    data.extend(message(kind, len.max(0) as usize, &payload));
                }
                // The datagram may end right after the last message's declared length.
                data.truncate(data.len().saturating_sub(unpadded));
                let _ = parse_messages(&data, &mut Vec::new());
            }

            #[test]
            fn listeners_come_back_as_they_were(
                listeners in prop::collection::vec(listener(), 0..5),
                done in any::<bool>(),
            ) {
                let mut data = Vec::new();
                for listener in &listeners {
                    let msg = inet_diag_msg(listener);
                    data.extend(message(SOCK_DIAG_BY_FAMILY, NLMSG_HEADER + msg.len(), &msg));
                }
                if done {
                    data.extend(message(NLMSG_DONE, NLMSG_HEADER + 4, &[0; 4]));
                }
                let mut out = Vec::new();
                prop_assert_eq!(parse_messages(&data, &mut out).unwrap(), done);
                prop_assert_eq!(out, listeners);
            }
        }
    }
}
