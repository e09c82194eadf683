//! Bounds-checked access to the frame, the Ethernet header, and the IPv4 rewrites. Every
//! checksum change goes through `eipgw_common::checksum` (incremental, RFC 1624); nothing is
//! recomputed over the payload.

use core::mem;

use aya_ebpf::programs::XdpContext;
use eipgw_common::checksum;
use network_types::{
    eth::{EthHdr, EtherType},
    icmp::Icmpv4Hdr,
    ip::{IpProto, Ipv4Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
};

/// The frame is shorter than a header claims, or a header field is impossible.
pub struct Malformed;

const PROTO_TCP: u8 = IpProto::Tcp as u8;
const PROTO_UDP: u8 = IpProto::Udp as u8;
const PROTO_ICMP: u8 = IpProto::Icmp as u8;
/// IPv4 "more fragments" flag within the fragment field.
const MORE_FRAGMENTS: u16 = 0x2000;
/// IPv4 "don't fragment" flag within the fragment field.
const DONT_FRAGMENT: u16 = 0x4000;
/// Offset of the data-offset nibble within the TCP header.
const TCP_DOFF_OFFSET: usize = 12;
/// Bits of the IPv4 fragment field that hold the offset (the other three are flags).
const FRAGMENT_OFFSET_MASK: u16 = 0x1fff;
const IPV4_MIN_HEADER_LEN: usize = Ipv4Hdr::LEN;

/// A pointer to a `T` at `offset` bytes into the frame, if the whole `T` is inside it.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, Malformed> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + mem::size_of::<T>() > end {
        return Err(Malformed);
    }
    Ok((start + offset) as *mut T)
}

/// Where the L4 checksum that covers the IPv4 addresses sits, if any.
#[derive(Copy, Clone)]
pub enum L4Checksum {
    /// TCP: the pseudo-header includes both addresses.
    Tcp(*mut [u8; 2]),
    /// UDP: as TCP, but 0 means "no checksum".
    Udp(*mut [u8; 2]),
    /// Not in this frame (non-first fragment), or a protocol whose checksum does not cover
    /// the IP addresses (ICMP, and anything we only forward).
    None,
}

/// A parsed IP frame, as a router hop sees it.
pub trait Hop {
    /// Takes one off the TTL (IPv4, fixing the header checksum) or the hop limit (IPv6,
    /// which has no header checksum). The caller has checked that it is above 1.
    fn decrement_hop_limit(&self);

    /// Whether the kernel deals properly with this frame when it is larger than the egress
    /// MTU: it fragments IPv4 without DF, and answers IPv6 with Packet Too Big. IPv4 with
    /// DF set needs ICMP "fragmentation needed" about the untranslated packet, which the
    /// kernel cannot give.
    fn kernel_handles_too_big(&self) -> bool;
}

/// A parsed IPv4 frame.
pub struct Ipv4Frame {
    pub ip: *mut Ipv4Hdr,
    /// IPv4 total length in bytes, already checked against the frame.
    pub total_len: u16,
    pub l4: L4Checksum,
}

impl Ipv4Frame {
    #[inline(always)]
    pub fn src(&self) -> u32 {
        // SAFETY: `ip` was bounds-checked by `parse_ipv4`.
        u32::from_ne_bytes(unsafe { (*self.ip).src_addr })
    }

    #[inline(always)]
    pub fn dst(&self) -> u32 {
        // SAFETY: as above.
        u32::from_ne_bytes(unsafe { (*self.ip).dst_addr })
    }

    #[inline(always)]
    pub fn ttl(&self) -> u8 {
        // SAFETY: as above.
        unsafe { (*self.ip).ttl }
    }

    #[inline(always)]
    pub fn proto(&self) -> u8 {
        // SAFETY: as above.
        unsafe { (*self.ip).proto }
    }

    #[inline(always)]
    pub fn tos(&self) -> u8 {
        // SAFETY: as above.
        unsafe { (*self.ip).tos }
    }

    /// Rewrites the source address and fixes the IPv4 and L4 checksums.
    #[inline(always)]
    pub fn set_src(&self, new: u32) {
        let old = self.src();
        // SAFETY: as above.
        unsafe { (*self.ip).src_addr = new.to_ne_bytes() };
        self.fix_checksums(old, new);
    }

    /// Rewrites the destination address and fixes the IPv4 and L4 checksums.
    #[inline(always)]
    pub fn set_dst(&self, new: u32) {
        let old = self.dst();
        // SAFETY: as above.
        unsafe { (*self.ip).dst_addr = new.to_ne_bytes() };
        self.fix_checksums(old, new);
    }

    #[inline(always)]
    fn fix_checksums(&self, old: u32, new: u32) {
        // SAFETY: `ip` and the L4 checksum pointers were bounds-checked by `parse_ipv4`.
        unsafe {
            let ip_check = u16::from_ne_bytes((*self.ip).check);
            (*self.ip).check = checksum::replace_u32(ip_check, old, new).to_ne_bytes();
            match self.l4 {
                L4Checksum::Tcp(check) => {
                    let c = u16::from_ne_bytes(*check);
                    *check = checksum::replace_u32(c, old, new).to_ne_bytes();
                }
                L4Checksum::Udp(check) => {
                    let c = u16::from_ne_bytes(*check);
                    *check = checksum::udp_replace_u32(c, old, new).to_ne_bytes();
                }
                L4Checksum::None => {}
            }
        }
    }
}

impl Hop for Ipv4Frame {
    #[inline(always)]
    fn kernel_handles_too_big(&self) -> bool {
        // SAFETY: `ip` was bounds-checked by `parse_ipv4`.
        u16::from_be_bytes(unsafe { (*self.ip).frags }) & DONT_FRAGMENT == 0
    }

    /// Decrements the TTL as a router does, fixing the header checksum.
    #[inline(always)]
    fn decrement_hop_limit(&self) {
        // SAFETY: `ip` was bounds-checked by `parse_ipv4`. TTL and protocol form one 16-bit
        // word of the header.
        unsafe {
            let ttl = (*self.ip).ttl;
            let proto = (*self.ip).proto;
            let old = u16::from_ne_bytes([ttl, proto]);
            let new = u16::from_ne_bytes([ttl - 1, proto]);
            (*self.ip).ttl = ttl - 1;
            let check = u16::from_ne_bytes((*self.ip).check);
            (*self.ip).check = checksum::replace_u16(check, old, new).to_ne_bytes();
        }
    }
}

/// The network layer an Ethernet frame carries.
pub enum Network {
    Ipv4,
    Ipv6,
    /// ARP, VLAN-tagged, anything else: the kernel's.
    Other,
}

/// What follows the Ethernet header; `Err` for a frame too short to have one.
#[inline(always)]
pub fn network(ctx: &XdpContext) -> Result<Network, Malformed> {
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: bounds-checked just above.
    let ether_type = unsafe { (*eth).ether_type };
    Ok(if ether_type == EtherType::Ipv4 as u16 {
        Network::Ipv4
    } else if ether_type == EtherType::Ipv6 as u16 {
        Network::Ipv6
    } else {
        Network::Other
    })
}

/// The IPv4 frame that [`network`] found; `Err` if it is truncated or its headers contradict
/// each other.
#[inline(always)]
pub fn parse_ipv4(ctx: &XdpContext) -> Result<Ipv4Frame, Malformed> {
    let ip: *mut Ipv4Hdr = ptr_at(ctx, EthHdr::LEN)?;
    // SAFETY: bounds-checked just above.
    let (vihl, total_len, frags, proto) = unsafe {
        (
            (*ip).vihl,
            u16::from_be_bytes((*ip).tot_len),
            u16::from_be_bytes((*ip).frags),
            (*ip).proto,
        )
    };
    if vihl >> 4 != 4 {
        return Err(Malformed);
    }
    // Masked to 4 bits, so the verifier knows the header is at most 60 bytes.
    let header_len = ((vihl & 0x0f) as usize) * 4;
    if header_len < IPV4_MIN_HEADER_LEN {
        return Err(Malformed);
    }
    let frame_len = ctx.data_end() - ctx.data();
    if (total_len as usize) < header_len || EthHdr::LEN + total_len as usize > frame_len {
        return Err(Malformed);
    }
    let l4_offset = EthHdr::LEN + header_len;
    let l4_len = total_len as usize - header_len;

    // Only the first fragment carries the L4 header; later ones need only the IP rewrite,
    // which is why 1:1 NAT can translate every fragment without state, in any order.
    if frags & FRAGMENT_OFFSET_MASK != 0 {
        return Ok(Ipv4Frame { ip, total_len, l4: L4Checksum::None });
    }
    let l4 = match proto {
        PROTO_TCP => {
            let tcp: *mut TcpHdr = ptr_at(ctx, l4_offset)?;
            // SAFETY: the whole fixed TCP header is inside the frame.
            let data_offset = unsafe { *(tcp as *const u8).add(TCP_DOFF_OFFSET) } >> 4;
            let tcp_header_len = data_offset as usize * 4;
            if tcp_header_len < TcpHdr::LEN || tcp_header_len > l4_len {
                return Err(Malformed);
            }
            // SAFETY: as above.
            L4Checksum::Tcp(unsafe { &raw mut (*tcp).check })
        }
        PROTO_UDP => {
            let udp: *mut UdpHdr = ptr_at(ctx, l4_offset)?;
            // SAFETY: bounds-checked just above.
            let udp_len = u16::from_be_bytes(unsafe { (*udp).len }) as usize;
            // A UDP length below the header size is never valid; a whole datagram (not a
            // first fragment, MF clear) must also fit in the IP payload.
            let more_fragments = frags & MORE_FRAGMENTS != 0;
            if udp_len < UdpHdr::LEN || (!more_fragments && udp_len > l4_len) {
                return Err(Malformed);
            }
            // SAFETY: bounds-checked above.
            L4Checksum::Udp(unsafe { &raw mut (*udp).check })
        }
        PROTO_ICMP => {
            // The ICMP checksum does not cover the IP header, so an address rewrite leaves
            // it alone; the header must still be whole.
            let _: *mut Icmpv4Hdr = ptr_at(ctx, l4_offset)?;
            L4Checksum::None
        }
        _ => L4Checksum::None,
    };
    Ok(Ipv4Frame { ip, total_len, l4 })
}

/// Writes the next hop's addresses into the Ethernet header.
#[inline(always)]
pub fn set_macs(ctx: &XdpContext, src: [u8; 6], dst: [u8; 6]) -> Result<(), Malformed> {
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: bounds-checked just above.
    unsafe {
        (*eth).src_addr = src;
        (*eth).dst_addr = dst;
    }
    Ok(())
}
