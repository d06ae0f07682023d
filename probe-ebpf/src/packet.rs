//! Reading received packets: the TCP/IP headers and the namespace they arrived in.
//!
//! Each `bpf_probe_read_kernel` is a helper call of its own: the headers are read whole, one
//! read each, and taken apart in registers, and the offsets come from `CONFIG` one field at a
//! time (see `config_field!`). The `sk_buff`'s own fields are loaded directly where the hook
//! passes it typed (see `Typed`).

use probe_common::{AF_INET, AF_INET6};

use crate::{
    kernel::{Memory, Probed, net_inum, read},
    maps::config_field,
    words::{Addr, v4_mapped},
};

const IPPROTO_TCP: u8 = 6;

/// A TCP segment as the receiving host sees it.
pub struct Segment {
    pub sequence: u32,
    pub local_port: u16,
    pub remote_port: u16,
    pub local_addr: Addr,
    pub remote_addr: Addr,
    pub family: u16,
}

/// The first 16 bytes of a TCP header, as they are in the packet (network order).
#[derive(Clone, Copy)]
#[repr(C)]
struct TcpHead {
    source: u16,
    dest: u16,
    sequence: u32,
    ack_sequence: u32,
    data_offset: u8,
    flags: u8,
    window: u16,
}

/// The first 40 bytes from the network header: a whole IPv6 header, or an IPv4 header (20
/// bytes without options) and what follows. A TCP segment over IPv4 has at least 40 bytes
/// there too (20 of IP, 20 of TCP), pulled into the linear area before TCP handles it.
#[derive(Clone, Copy)]
#[repr(C)]
struct IpHead {
    words: [u32; 10],
}

impl IpHead {
    #[inline(always)]
    fn byte(&self, at: usize) -> u8 {
        self.words[at / 4].to_ne_bytes()[at % 4]
    }

    #[inline(always)]
    fn v6(&self, word: usize) -> Addr {
        [
            self.words[word],
            self.words[word + 1],
            self.words[word + 2],
            self.words[word + 3],
        ]
    }
}

/// Network namespace of a received packet. TCP clears `skb->dev` before the listener sees the
/// SYN, but the input route stays attached, and its device is in the same namespace: the route
/// is tried first, which saves the listener's SYNs a read of `dev`.
#[inline(always)]
pub fn skb_netns<M: Memory>(skb: u64) -> Result<u32, i32> {
    /// Low bit of `_skb_refdst`: the route is not reference-counted.
    const SKB_DST_NOREF: u64 = 1;
    // An integer, not a pointer, to the verifier: what it leads to is probed.
    let dst = M::read::<u64>(skb, config_field!(offsets.skb_refdst))? & !SKB_DST_NOREF;
    let dev = if dst != 0 {
        read::<u64>(dst, config_field!(offsets.dst_dev))?
    } else {
        read::<u64>(skb, config_field!(offsets.skb_dev))?
    };
    if dev == 0 {
        return Err(0);
    }
    let net = read::<u64>(dev, config_field!(offsets.netdev_net))?;
    net_inum::<Probed>(net)
}

/// Parses the IP and TCP headers of a received TCP segment whose flags, masked with `mask`, are
/// `flags`; `None` for anything else. The IP header is read first: a packet that is not TCP
/// may have no transport header.
#[inline(always)]
pub fn parse_tcp<M: Memory>(skb: u64, mask: u8, flags: u8) -> Result<Option<Segment>, i32> {
    // `head` is a pointer to bytes: an integer to the verifier, so the headers are probed.
    let head = M::read::<u64>(skb, config_field!(offsets.skb_head))?;
    // sk_buff keeps transport_header and network_header (u16 each) side by side.
    let (transport, network) = M::read_pair::<u16>(
        skb,
        config_field!(offsets.skb_transport_header),
        config_field!(offsets.skb_network_header),
    )?;
    let ip = read::<IpHead>(head + network as u64, 0)?;
    let (family, remote_addr, local_addr) = match ip.byte(0) >> 4 {
        4 => {
            if ip.byte(9) != IPPROTO_TCP {
                return Ok(None);
            }
            (AF_INET, v4_mapped(ip.words[3]), v4_mapped(ip.words[4]))
        }
        // No next-header test: with extension headers it is not TCP's, and the callers only
        // pass TCP segments (transport_header already points past the extensions).
        6 => (AF_INET6, ip.v6(2), ip.v6(6)),
        _ => return Ok(None),
    };
    let tcp = read::<TcpHead>(head + transport as u64, 0)?;
    if tcp.flags & mask != flags {
        return Ok(None);
    }
    Ok(Some(Segment {
        sequence: u32::from_be(tcp.sequence),
        remote_port: u16::from_be(tcp.source),
        local_port: u16::from_be(tcp.dest),
        local_addr,
        remote_addr,
        family,
    }))
}
