//! Bounds-checked access to the frame, the Ethernet header, and the IPv4 rewrites. Every
//! checksum change goes through `eipgw_common::checksum` (incremental, RFC 1624); nothing is
//! recomputed over the payload.

use core::mem;

use aya_ebpf::programs::XdpContext;
use eipgw_common::checksum::{self, QuotedChecksums, QuotedL4};
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
pub const PROTO_ICMP: u8 = IpProto::Icmp as u8;
/// IPv4 "more fragments" flag within the fragment field.
const MORE_FRAGMENTS: u16 = 0x2000;
/// IPv4 "don't fragment" flag within the fragment field.
pub const DONT_FRAGMENT: u16 = 0x4000;
/// Offset of the data-offset nibble within the TCP header.
const TCP_DOFF_OFFSET: usize = 12;
/// Bits of the IPv4 fragment field that hold the offset (the other three are flags).
const FRAGMENT_OFFSET_MASK: u16 = 0x1fff;
const IPV4_MIN_HEADER_LEN: usize = Ipv4Hdr::LEN;
/// IHL 15: 40 bytes of options.
pub const IPV4_MAX_HEADER_LEN: usize = 60;
/// Offset of the checksum within the TCP header.
const TCP_CHECKSUM_OFFSET: usize = 16;

/// ICMP types whose message quotes the packet it is about (RFC 792), and that a NAT
/// translates (RFC 5508 §3.1): destination unreachable, source quench (deprecated, RFC
/// 6633, but still an error), time exceeded, parameter problem.
pub const ICMP_DEST_UNREACHABLE: u8 = 3;
pub const ICMP_SOURCE_QUENCH: u8 = 4;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;

/// Whether an ICMP message of this type quotes a packet that a NAT must translate.
#[inline(always)]
fn quotes_a_packet(icmp_type: u8) -> bool {
    matches!(
        icmp_type,
        ICMP_DEST_UNREACHABLE | ICMP_SOURCE_QUENCH | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM
    )
}

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
    /// IPv4 header length in bytes, options included: 20..=60.
    pub header_len: usize,
    pub l4: L4Checksum,
    /// For an ICMP error (RFC 5508 §3.1), the packet it quotes.
    pub quoted: Option<Quoted>,
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

    /// Whether this is a fragment other than the first, which has no L4 header.
    #[inline(always)]
    pub fn is_later_fragment(&self) -> bool {
        // SAFETY: as above.
        u16::from_be_bytes(unsafe { (*self.ip).frags }) & FRAGMENT_OFFSET_MASK != 0
    }

    /// Whether this is the first fragment of a fragmented datagram (offset 0, MF set): the
    /// one with the L4 header, whose translation the later fragments must follow.
    #[inline(always)]
    pub fn is_first_fragment(&self) -> bool {
        // SAFETY: as above.
        u16::from_be_bytes(unsafe { (*self.ip).frags }) & (FRAGMENT_OFFSET_MASK | MORE_FRAGMENTS)
            == MORE_FRAGMENTS
    }

    /// The IPv4 identification, as it sits in the header.
    #[inline(always)]
    pub fn id(&self) -> u16 {
        // SAFETY: as above.
        u16::from_ne_bytes(unsafe { (*self.ip).id })
    }

    /// Whether DF is clear, so that a router may fragment it.
    #[inline(always)]
    pub fn may_fragment(&self) -> bool {
        // SAFETY: as above.
        u16::from_be_bytes(unsafe { (*self.ip).frags }) & DONT_FRAGMENT == 0
    }

    /// Where the L4 header starts in the frame.
    #[inline(always)]
    pub fn l4_offset(&self) -> usize {
        EthHdr::LEN + self.header_len
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
        self.may_fragment()
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

/// The packet an ICMP error quotes: its IPv4 header, whole, and the L4 checksum if the
/// quote holds all of it. Its addresses are rewritten the other way round from the outer
/// packet's: an error about a packet the VPC host sent names the host's address as the
/// quoted source.
pub struct Quoted {
    /// The ICMP error's own checksum, which covers the whole quote.
    pub icmp_check: *mut [u8; 2],
    ip: *mut Ipv4Hdr,
    pub l4: L4Checksum,
    /// Where the quoted L4 header starts in the frame, and where the quote ends (the end of
    /// the outer packet): a port translation reads the quoted ports between them.
    pub l4_at: usize,
    pub end: usize,
}

impl Quoted {
    #[inline(always)]
    pub fn src(&self) -> u32 {
        // SAFETY: `ip` was bounds-checked by `parse_quoted`.
        u32::from_ne_bytes(unsafe { (*self.ip).src_addr })
    }

    #[inline(always)]
    pub fn dst(&self) -> u32 {
        // SAFETY: as above.
        u32::from_ne_bytes(unsafe { (*self.ip).dst_addr })
    }

    #[inline(always)]
    pub fn proto(&self) -> u8 {
        // SAFETY: as above.
        unsafe { (*self.ip).proto }
    }

    /// Whether the quoted packet is a fragment other than the first (no L4 header).
    #[inline(always)]
    pub fn is_later_fragment(&self) -> bool {
        // SAFETY: as above.
        u16::from_be_bytes(unsafe { (*self.ip).frags }) & FRAGMENT_OFFSET_MASK != 0
    }

    /// Rewrites the quoted source address, fixing the quoted IPv4 and L4 checksums and the
    /// ICMP checksum.
    #[inline(always)]
    pub fn set_src(&self, new: u32) {
        let old = self.src();
        // SAFETY: as above.
        unsafe { (*self.ip).src_addr = new.to_ne_bytes() };
        self.fix_checksums(old, new);
    }

    /// Rewrites the quoted destination address, fixing the same checksums.
    #[inline(always)]
    pub fn set_dst(&self, new: u32) {
        let old = self.dst();
        // SAFETY: as above.
        unsafe { (*self.ip).dst_addr = new.to_ne_bytes() };
        self.fix_checksums(old, new);
    }

    #[inline(always)]
    fn fix_checksums(&self, old: u32, new: u32) {
        // SAFETY: every pointer was bounds-checked by `parse_quoted`.
        unsafe {
            let l4 = match self.l4 {
                L4Checksum::Tcp(check) => QuotedL4::Tcp(u16::from_ne_bytes(*check)),
                L4Checksum::Udp(check) => QuotedL4::Udp(u16::from_ne_bytes(*check)),
                L4Checksum::None => QuotedL4::None,
            };
            let before = QuotedChecksums {
                icmp: u16::from_ne_bytes(*self.icmp_check),
                ip: u16::from_ne_bytes((*self.ip).check),
                l4,
            };
            let after = checksum::quoted_address_change(before, old, new);
            *self.icmp_check = after.icmp.to_ne_bytes();
            (*self.ip).check = after.ip.to_ne_bytes();
            match (self.l4, after.l4) {
                (L4Checksum::Tcp(check), QuotedL4::Tcp(c))
                | (L4Checksum::Udp(check), QuotedL4::Udp(c)) => *check = c.to_ne_bytes(),
                _ => {}
            }
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

/// Whether the IPv4 header of `header_len` bytes (20 to 60) sums to the one's-complement
/// zero its checksum makes it.
#[inline(always)]
fn header_checksum_ok(ctx: &XdpContext, header_len: usize) -> Result<bool, Malformed> {
    const FIXED_WORDS: usize = IPV4_MIN_HEADER_LEN / 2;
    const MAX_WORDS: usize = 60 / 2;
    let fixed: *const [u16; FIXED_WORDS] = ptr_at(ctx, EthHdr::LEN)?;
    // SAFETY: bounds-checked just above; u16 reads of packet memory need no alignment here
    // (the verifier and JIT allow unaligned packet access on this architecture).
    let mut sum: u32 = unsafe { *fixed }.iter().map(|&w| w as u32).sum();
    // Options: a constant bound for the verifier, cut short by the real length.
    for word in FIXED_WORDS..MAX_WORDS {
        if word * 2 >= header_len {
            break;
        }
        let at: *const u16 = ptr_at(ctx, EthHdr::LEN + word * 2)?;
        // SAFETY: bounds-checked just above.
        sum += unsafe { *at } as u32;
    }
    Ok(checksum::fold(sum) == 0xffff)
}

/// The IPv4 frame that [`network`] found; `Err` if it is truncated or its headers contradict
/// each other.
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
    // RFC 1812 5.2.2: a router verifies the header checksum and discards a damaged header;
    // an incremental update would otherwise carry the damage out under a new checksum.
    if !header_checksum_ok(ctx, header_len)? {
        return Err(Malformed);
    }
    let l4_offset = EthHdr::LEN + header_len;
    let l4_len = total_len as usize - header_len;

    // Only the first fragment carries the L4 header; later ones need only the IP rewrite,
    // which is why 1:1 NAT can translate every fragment without state, in any order.
    if frags & FRAGMENT_OFFSET_MASK != 0 {
        return Ok(Ipv4Frame { ip, total_len, header_len, l4: L4Checksum::None, quoted: None });
    }
    let mut quoted = None;
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
            // The UDP header itself must be inside the IP packet, or its "checksum" would
            // be bytes beyond it (Ethernet padding) that the rewrite must not touch.
            if l4_len < UdpHdr::LEN
                || udp_len < UdpHdr::LEN
                || (!more_fragments && udp_len > l4_len)
            {
                return Err(Malformed);
            }
            // SAFETY: bounds-checked above.
            L4Checksum::Udp(unsafe { &raw mut (*udp).check })
        }
        PROTO_ICMP => {
            // The ICMP checksum does not cover the IP header, so an address rewrite leaves
            // it alone; the header must still be whole. An error's quote, though, is inside
            // it.
            let icmp: *mut Icmpv4Hdr = ptr_at(ctx, l4_offset)?;
            if l4_len < Icmpv4Hdr::LEN {
                return Err(Malformed);
            }
            // SAFETY: bounds-checked just above.
            if quotes_a_packet(unsafe { (*icmp).type_ }) {
                // SAFETY: as above.
                let icmp_check = unsafe { &raw mut (*icmp).check };
                let quote_at = l4_offset + Icmpv4Hdr::LEN;
                let packet_end = EthHdr::LEN + total_len as usize;
                quoted = Some(parse_quoted(ctx, icmp_check, quote_at, packet_end)?);
            }
            L4Checksum::None
        }
        _ => L4Checksum::None,
    };
    Ok(Ipv4Frame { ip, total_len, header_len, l4, quoted })
}

/// The packet an ICMP error quotes, from `at` up to `end` (the end of the outer IPv4
/// packet, not of the frame, which may be padded); `Err` unless its IPv4 header is whole
/// and sane. The 8 bytes of L4 header that RFC 792 asks for are not required: what is not
/// there cannot need a rewrite.
#[inline(always)]
fn parse_quoted(
    ctx: &XdpContext,
    icmp_check: *mut [u8; 2],
    at: usize,
    end: usize,
) -> Result<Quoted, Malformed> {
    // `end` is within the frame (`parse_ipv4` checked it), and LLVM knows: after a check
    // against `end` it dropped the frame bound check of `ptr_at` that follows as implied,
    // and the verifier, which cannot follow that reasoning, refused the pointer ("invalid
    // access to packet ... r=0"). Hidden from the optimizer, `end` implies nothing.
    let end = core::hint::black_box(end);
    let ip: *mut Ipv4Hdr = ptr_at(ctx, at)?;
    // SAFETY: bounds-checked just above.
    let (vihl, frags, proto) =
        unsafe { ((*ip).vihl, u16::from_be_bytes((*ip).frags), (*ip).proto) };
    if vihl >> 4 != 4 {
        return Err(Malformed);
    }
    // Its own IHL, masked to 4 bits as the outer one.
    let header_len = ((vihl & 0x0f) as usize) * 4;
    if header_len < IPV4_MIN_HEADER_LEN || at + header_len > end {
        return Err(Malformed);
    }
    let l4_at = at + header_len;
    // Only a whole checksum field is rewritten. A TCP one lies beyond the 8 bytes every
    // error quotes, but many routers (Linux among them) quote more, and then it is
    // there and must follow the address like the UDP one.
    let l4 = if frags & FRAGMENT_OFFSET_MASK != 0 {
        L4Checksum::None
    } else if proto == PROTO_UDP && l4_at + UdpHdr::LEN <= end {
        let udp: *mut UdpHdr = ptr_at(ctx, l4_at)?;
        // SAFETY: bounds-checked just above.
        L4Checksum::Udp(unsafe { &raw mut (*udp).check })
    } else if proto == PROTO_TCP && l4_at + mem::size_of::<TcpToChecksum>() <= end {
        let tcp: *mut TcpToChecksum = ptr_at(ctx, l4_at)?;
        // SAFETY: as above.
        L4Checksum::Tcp(unsafe { &raw mut (*tcp).check })
    } else {
        L4Checksum::None
    };
    Ok(Quoted { icmp_check, ip, l4, l4_at, end })
}

/// The part of a TCP header up to and including its checksum: what a quote must hold for
/// the checksum to be rewritten.
#[repr(C)]
struct TcpToChecksum {
    _ports_seq_ack_flags_window: [u8; TCP_CHECKSUM_OFFSET],
    check: [u8; 2],
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
