//! A SYN flood for the tests: `synflood --to 127.0.0.1:PORT --duration-ms D` sends bare SYNs
//! from raw sockets, as fast as one thread can, for D ms, each from the next source port of
//! 127.0.0.1, then of 127.0.0.2 and so on (a source address and port used twice would be a
//! retransmitted SYN to a request still queued), and prints how many it sent. Nothing answers their SYN-ACKs: the test drops the
//! kernel's resets (nftables) in the namespace it made, where alone this runs.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// Source addresses 127.0.0.1 to 127.0.0.SOURCES: over 1.5 million distinct SYNs.
const SOURCES: u8 = 24;
const TCP_HEADER_LEN: usize = 20;
const TCP_FLAG_SYN: u8 = 0x02;

fn main() -> anyhow::Result<()> {
    let (target, duration) = parse_options()?;
    if !target.ip().is_loopback() {
        bail!("synflood only sends to a loopback address");
    }
    let sockets = (1..=SOURCES)
        .map(|last| RawTcpSocket::open(Ipv4Addr::new(127, 0, 0, last)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let started = Instant::now();
    let mut sent: u64 = 0;
    let (mut source, mut source_port) = (0, 1024u16);
    while started.elapsed() < duration {
        // A batch between clock reads: the clock costs as much as a send.
        for _ in 0..64 {
            if source_port == u16::MAX {
                source_port = 1024;
                source += 1;
                if source == sockets.len() {
                    bail!("every source address and port used: a shorter flood");
                }
            } else {
                source_port += 1;
            }
            if source_port == target.port() {
                continue;
            }
            let socket = &sockets[source];
            let segment = syn_segment(socket.source, source_port, &target, sent as u32);
            if socket.send_to(&segment, &target) {
                sent += 1;
            }
        }
    }
    println!("{sent}");
    Ok(())
}

fn parse_options() -> anyhow::Result<(SocketAddrV4, Duration)> {
    let mut target = None;
    let mut duration_ms = 1000;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--to" => target = Some(value.parse()?),
            "--duration-ms" => duration_ms = value.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok((
        target.context("--to ADDR:PORT is required")?,
        Duration::from_millis(duration_ms),
    ))
}

/// A bare SYN (no options) from `source:source_port`, checksummed.
fn syn_segment(
    source: Ipv4Addr,
    source_port: u16,
    target: &SocketAddrV4,
    sequence: u32,
) -> [u8; TCP_HEADER_LEN] {
    let mut header = [0u8; TCP_HEADER_LEN];
    header[0..2].copy_from_slice(&source_port.to_be_bytes());
    header[2..4].copy_from_slice(&target.port().to_be_bytes());
    header[4..8].copy_from_slice(&sequence.to_be_bytes());
    header[12] = (TCP_HEADER_LEN as u8 / 4) << 4;
    header[13] = TCP_FLAG_SYN;
    header[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let checksum = tcp_checksum(&header, source, *target.ip());
    header[16..18].copy_from_slice(&checksum.to_be_bytes());
    header
}

/// The TCP checksum: the ones' complement sum over the IPv4 pseudo-header and the segment.
fn tcp_checksum(segment: &[u8], source: Ipv4Addr, destination: Ipv4Addr) -> u16 {
    let mut pseudo = Vec::with_capacity(12 + segment.len());
    pseudo.extend_from_slice(&source.octets());
    pseudo.extend_from_slice(&destination.octets());
    pseudo.extend_from_slice(&[0, libc::IPPROTO_TCP as u8]);
    pseudo.extend_from_slice(&(segment.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(segment);
    let mut sum: u32 = pseudo
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A raw IPv4 socket for TCP bound to `source`: the kernel writes the IP header.
struct RawTcpSocket {
    fd: std::os::fd::OwnedFd,
    source: Ipv4Addr,
}

impl RawTcpSocket {
    fn open(source: Ipv4Addr) -> anyhow::Result<Self> {
        use std::os::fd::FromRawFd as _;
        // SAFETY: socket(2) with constant arguments; the descriptor is owned at once.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP) };
        if fd < 0 {
            bail!(
                "cannot open a raw socket: {}",
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: fd is a new descriptor nothing else owns.
        let socket = Self {
            fd: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) },
            source,
        };
        let address = sockaddr(&SocketAddrV4::new(source, 0));
        // SAFETY: a valid sockaddr_in of the size given.
        let bound = unsafe {
            libc::bind(
                fd,
                (&raw const address).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if bound != 0 {
            bail!(
                "cannot bind to {source}: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(socket)
    }

    /// Sends one segment; false when the kernel refused it (a full queue: the flood goes on).
    fn send_to(&self, segment: &[u8], target: &SocketAddrV4) -> bool {
        use std::os::fd::AsRawFd as _;
        let address = sockaddr(&SocketAddrV4::new(*target.ip(), 0));
        // SAFETY: the buffer and the sockaddr_in are valid for the sizes given.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                segment.as_ptr().cast(),
                segment.len(),
                0,
                (&raw const address).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            )
        };
        sent == segment.len() as isize
    }
}

fn sockaddr(address: &SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: address.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(address.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checksummed_segment_sums_to_all_ones() {
        let target = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7700);
        let source = Ipv4Addr::new(127, 0, 0, 2);
        let segment = syn_segment(source, 40000, &target, 12345);
        // Summing the segment with its checksum in place gives 0 after the complement.
        assert_eq!(tcp_checksum(&segment, source, *target.ip()), 0);
        assert_eq!(segment[13], TCP_FLAG_SYN);
        assert_eq!(u16::from_be_bytes([segment[2], segment[3]]), 7700);
    }
}
