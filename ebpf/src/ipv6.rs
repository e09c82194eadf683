//! IPv6: never translated (R23). Between the Internet and the VPC only addresses whose
//! public bandwidth is enabled ([`IPV6_PUBLIC`]) are forwarded, unchanged but for the hop
//! limit and the link addresses; the rest of that traffic is dropped. Everything that does
//! not cross the gateway (link-scoped traffic such as ND, RS/RA and MLD, traffic for the
//! gateway itself, routes that lead elsewhere) is the kernel's.

use aya_ebpf::{bindings::xdp_md, programs::XdpContext};
use eipgw_common::{Ipv6Key, Verdict};
use network_types::{eth::EthHdr, ip::Ipv6Hdr};

use crate::{
    IPV6_PUBLIC,
    forward::{Outcome, deliver},
    packet::{Hop, Malformed, ptr_at},
    route::{self, Egress, Flow},
};

/// Clears the version bits of the header's first word (network byte order), leaving the
/// traffic class and the flow label.
const FLOWINFO_MASK: u32 = u32::from_ne_bytes([0x0f, 0xff, 0xff, 0xff]);

/// A parsed IPv6 frame: the fixed header only. Extension headers are not walked: nothing
/// the gateway does depends on them, and `next_hdr` serves only as the protocol of the
/// route lookup.
pub struct Ipv6Frame {
    ip: *mut Ipv6Hdr,
    /// Header and payload in bytes, already checked against the frame.
    total_len: u16,
}

impl Ipv6Frame {
    /// The source address, where it sits in the frame (copies of the addresses cost the
    /// stack a byte-wide spill slot per byte).
    #[inline(always)]
    fn src(&self) -> &[u8; 16] {
        // SAFETY: `ip` was bounds-checked by `parse`.
        unsafe { &(*self.ip).src_addr }
    }

    #[inline(always)]
    fn dst(&self) -> &[u8; 16] {
        // SAFETY: as above.
        unsafe { &(*self.ip).dst_addr }
    }

    #[inline(always)]
    fn hop_limit(&self) -> u8 {
        // SAFETY: as above.
        unsafe { (*self.ip).hop_limit }
    }

    #[inline(always)]
    fn next_hdr(&self) -> u8 {
        // SAFETY: as above.
        unsafe { (*self.ip).next_hdr }
    }

    #[inline(always)]
    fn flowinfo(&self) -> u32 {
        // SAFETY: as above.
        u32::from_ne_bytes(unsafe { (*self.ip).vcf }) & FLOWINFO_MASK
    }
}

impl Hop for Ipv6Frame {
    /// The kernel, as the router, answers with ICMPv6 Packet Too Big; the frame is not
    /// rewritten, so the answer is right as it stands.
    #[inline(always)]
    fn kernel_handles_too_big(&self) -> bool {
        true
    }

    #[inline(always)]
    fn decrement_hop_limit(&self) {
        // SAFETY: as above. IPv6 has no header checksum, and the hop limit is in no
        // pseudo-header, so nothing else changes.
        unsafe { (*self.ip).hop_limit -= 1 };
    }
}

/// The IPv6 frame that `packet::network` found; `Err` if the fixed header is truncated, is
/// not version 6, or claims a payload longer than the frame.
#[inline(always)]
fn parse(ctx: &XdpContext) -> Result<Ipv6Frame, Malformed> {
    let ip: *mut Ipv6Hdr = ptr_at(ctx, EthHdr::LEN)?;
    // SAFETY: bounds-checked just above.
    let (version, payload_len) =
        unsafe { ((*ip).vcf[0] >> 4, u16::from_be_bytes((*ip).payload_len)) };
    if version != 6 {
        return Err(Malformed);
    }
    // A payload length of 0 with a jumbo payload option (RFC 2675) needs a link MTU above
    // 64 KiB: not a frame XDP sees.
    let total_len = Ipv6Hdr::LEN + payload_len as usize;
    if EthHdr::LEN + total_len > ctx.data_end() - ctx.data() {
        return Err(Malformed);
    }
    // Fits: the frame is shorter than 64 KiB.
    Ok(Ipv6Frame { ip, total_len: total_len as u16 })
}

/// Which way an IPv6 frame crosses, for [`eipgw_ipv6`].
pub const INBOUND: u32 = 0;
pub const OUTBOUND: u32 = 1;

/// The IPv6 path, on its own: a global BPF function, so that the verifier checks it once
/// and its stack (the copies of two addresses for the route lookup) is not added to the
/// IPv4 path's. `direction` is [`INBOUND`] or [`OUTBOUND`], `far_ifindex` the interface on
/// the other side of the gateway. Returns the outcome packed by [`Outcome::pack`].
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn eipgw_ipv6(ctx: *mut xdp_md, direction: u32, far_ifindex: u32) -> u32 {
    let ctx = XdpContext::new(ctx);
    let outcome = parse(&ctx).and_then(|frame| {
        if direction == INBOUND {
            inbound(&ctx, &frame, far_ifindex)
        } else {
            outbound(&ctx, &frame, far_ifindex)
        }
    });
    outcome.unwrap_or(Outcome::drop(Verdict::DropMalformed)).pack()
}

/// From the Internet: forwarded to the VPC if its destination is public.
#[inline(always)]
fn inbound(ctx: &XdpContext, frame: &Ipv6Frame, lan_ifindex: u32) -> Result<Outcome, Malformed> {
    cross(ctx, frame, lan_ifindex, frame.dst())
}

/// From the VPC: forwarded to the Internet if its source is public.
#[inline(always)]
fn outbound(ctx: &XdpContext, frame: &Ipv6Frame, wan_ifindex: u32) -> Result<Outcome, Malformed> {
    cross(ctx, frame, wan_ifindex, frame.src())
}

/// Forwards `frame` unchanged (but for the router hop) if its route leaves through
/// `far_ifindex`, the other side of the gateway, and `vpc_addr`, its address on the VPC
/// side, is public; drops it if that address is not. Anything that does not cross is the
/// kernel's.
#[inline(always)]
fn cross(
    ctx: &XdpContext,
    frame: &Ipv6Frame,
    far_ifindex: u32,
    vpc_addr: &[u8; 16],
) -> Result<Outcome, Malformed> {
    let (src, dst) = (frame.src(), frame.dst());
    if never_forwarded(src) || never_forwarded(dst) {
        return Ok(Outcome::pass(Verdict::PassNotTranslated));
    }
    let flow = Flow::V6 { src, dst, flowinfo: frame.flowinfo() };
    let route = route::lookup(ctx, &flow, frame.next_hdr(), frame.total_len);
    match route.egress() {
        Egress::Interface(ifindex) if ifindex == far_ifindex => {}
        // For the gateway itself, or routed elsewhere; or unroutable, where the kernel
        // does not forward it either and answers as the router.
        Egress::Interface(_) | Egress::Local | Egress::Unknown => {
            return Ok(Outcome::pass(Verdict::PassNotTranslated));
        }
    }
    if IPV6_PUBLIC.get_ptr(&Ipv6Key { addr: *vpc_addr }).is_none() {
        return Ok(Outcome::drop(Verdict::DropIpv6NotPublic));
    }
    if frame.hop_limit() <= 1 {
        // The kernel, as the router, answers with ICMPv6 time exceeded.
        return Ok(Outcome::pass(Verdict::PassTtlExpired));
    }
    deliver(ctx, frame, route, |_| {}, Verdict::ForwardedUnchanged, || {})
}

/// Addresses that a router never forwards between links (RFC 4291 §2.5.2, §2.5.3, §2.5.6,
/// §2.7): unspecified, loopback, link-local (fe80::/10), and multicast (ff00::/8: the
/// gateway is no multicast router). ND, RS/RA and MLD use them.
#[inline(always)]
fn never_forwarded(addr: &[u8; 16]) -> bool {
    let multicast = addr[0] == 0xff;
    let link_local = addr[0] == 0xfe && addr[1] & 0xc0 == 0x80;
    let unspecified_or_loopback = addr[..15].iter().all(|&byte| byte == 0) && addr[15] <= 1;
    multicast || link_local || unspecified_or_loopback
}
