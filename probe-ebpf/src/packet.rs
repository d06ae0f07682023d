//! Reading received packets: the TCP/IP headers and the namespace they arrived in.

use probe_common::{AF_INET, AF_INET6, KernelOffsets};

use crate::kernel::{net_inum, read, v4_mapped};

const IPPROTO_TCP: u8 = 6;

/// A TCP segment as the receiving host sees it.
pub struct Segment {
    pub flags: u8,
    pub sequence: u32,
    pub local_port: u16,
    pub remote_port: u16,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    pub family: u16,
}

/// Network namespace of a received packet. TCP clears `skb->dev` before the listener sees the
/// SYN, but the input route stays attached, and its device is in the same namespace.
#[inline(always)]
pub fn skb_netns(offsets: &KernelOffsets, skb: u64) -> Result<u32, i32> {
    /// Low bit of `_skb_refdst`: the route is not reference-counted.
    const SKB_DST_NOREF: u64 = 1;
    let mut dev = read::<u64>(skb, offsets.skb_dev)?;
    if dev == 0 {
        let dst = read::<u64>(skb, offsets.skb_refdst)? & !SKB_DST_NOREF;
        if dst == 0 {
            return Err(0);
        }
        dev = read::<u64>(dst, offsets.dst_dev)?;
    }
    let net = read::<u64>(dev, offsets.netdev_net)?;
    net_inum(offsets, net)
}

/// Parses the IP and TCP headers of a received TCP segment; `None` for anything else.
#[inline(always)]
pub fn parse_tcp(offsets: &KernelOffsets, skb: u64) -> Result<Option<Segment>, i32> {
    let head = read::<u64>(skb, offsets.skb_head)?;
    let network = head + read::<u16>(skb, offsets.skb_network_header)? as u64;
    let transport = head + read::<u16>(skb, offsets.skb_transport_header)? as u64;
    let version = read::<u8>(network, 0)? >> 4;
    let (family, remote_addr, local_addr) = match version {
        4 => {
            if read::<u8>(network, 9)? != IPPROTO_TCP {
                return Ok(None);
            }
            (
                AF_INET,
                v4_mapped(read(network, 12)?),
                v4_mapped(read(network, 16)?),
            )
        }
        // No next-header test: with extension headers it is not TCP's, and the callers only
        // pass TCP segments (transport_header already points past the extensions).
        6 => (AF_INET6, read(network, 8)?, read(network, 24)?),
        _ => return Ok(None),
    };
    Ok(Some(Segment {
        flags: read::<u8>(transport, 13)?,
        sequence: u32::from_be(read::<u32>(transport, 4)?),
        remote_port: u16::from_be(read::<u16>(transport, 0)?),
        local_port: u16::from_be(read::<u16>(transport, 2)?),
        local_addr,
        remote_addr,
        family,
    }))
}
