//! The ICMP errors the gateway sends as a router (RFC 1812 §4.3.2) for a NAT-mode EIP's
//! IPv4 traffic: time exceeded when the TTL would expire here, fragmentation needed when
//! DF is set and the packet does not fit the egress MTU. The kernel cannot send these: it
//! would see the packet only after translation, or only before it and then route it
//! nowhere. The error replaces the frame in place and leaves with XDP_TX through the
//! interface the packet came in on, from the gateway's address there, quoting the packet as
//! it arrived (untranslated: what its sender sent, so that the sender recognises it).
//!
//! (The translation of the ICMP errors that cross the gateway, RFC 5508, is in
//! `packet::Quoted` and `gateway`.)

use core::mem;

use aya_ebpf::{
    bindings::{xdp_action, xdp_md},
    helpers::{bpf_ktime_get_ns, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use eipgw_common::{Verdict, checksum};
use network_types::{
    eth::{EthHdr, EtherType},
    icmp::Icmpv4Hdr,
    ip::Ipv4Hdr,
};

use crate::{
    ICMP_ERROR_BUDGET,
    forward::Outcome,
    packet::{
        DONT_FRAGMENT, ICMP_DEST_UNREACHABLE, ICMP_PARAMETER_PROBLEM, ICMP_SOURCE_QUENCH,
        ICMP_TIME_EXCEEDED, IPV4_MAX_HEADER_LEN, Ipv4Frame, Malformed, PROTO_ICMP, ptr_at,
    },
};

/// An error too, though not one that crosses a NAT.
const ICMP_REDIRECT: u8 = 5;
const CODE_TTL_EXCEEDED_IN_TRANSIT: u8 = 0;
const CODE_FRAGMENTATION_NEEDED: u8 = 4;
/// RFC 1812 §5.2.7.1: communication administratively prohibited.
const CODE_ADMINISTRATIVELY_PROHIBITED: u8 = 13;
/// The highest ICMP type the kernel knows; it treats any above as an error (NR_ICMP_TYPES).
const ICMP_LAST_KNOWN_TYPE: u8 = 18;

/// Version 4, IHL 5: the error carries no options.
const VERSION_IHL: u8 = 0x45;
/// Precedence 6, internetwork control, as RFC 1812 §4.3.2.5 asks of ICMP errors.
const TOS_INTERNETWORK_CONTROL: u8 = 0xc0;
const ERROR_TTL: u8 = 64;
/// RFC 792: the quoted header and the first 64 bits of its payload.
const QUOTED_L4_BYTES: usize = 8;
/// The IPv4 and ICMP headers that the error puts in front of the quote.
const ADDED_LEN: usize = Ipv4Hdr::LEN + Icmpv4Hdr::LEN;
/// The ICMP message at most: its header, an IPv4 header with 40 bytes of options, 8 bytes.
const MAX_ICMP_WORDS: usize = (Icmpv4Hdr::LEN + IPV4_MAX_HEADER_LEN + QUOTED_L4_BYTES) / 2;

/// The headers of the error, in the order they sit in the frame.
#[repr(C)]
struct ErrorHeaders {
    eth: EthHdr,
    ip: Ipv4Hdr,
    icmp: Icmpv4Hdr,
}
const _: () = assert!(mem::size_of::<ErrorHeaders>() == EthHdr::LEN + ADDED_LEN);

/// An error the gateway sends as a router.
#[derive(Copy, Clone)]
pub enum RouterError {
    /// Type 11, code 0: time to live exceeded in transit.
    TimeExceeded,
    /// Type 3, code 4, with the MTU of the next hop (RFC 1191 §4).
    FragmentationNeeded { mtu: u16 },
    /// Type 3, code 13: a new SNAT flow the gateway refuses, having no port left for it (RFC
    /// 5508 REQ-8 asks a NAT that cannot create a mapping to say so this way).
    SnatRefused,
}

/// [`RouterError::pack`]: which error, in the low byte.
const PACKED_TIME_EXCEEDED: u32 = 0;
const PACKED_FRAGMENTATION_NEEDED: u32 = 1;
const PACKED_SNAT_REFUSED: u32 = 2;

impl RouterError {
    /// The error as one scalar, for [`eipgw_router_error`]: the kind in the low byte, and an
    /// MTU in the 16 bits above it.
    #[inline(always)]
    pub fn pack(self) -> u32 {
        match self {
            RouterError::TimeExceeded => PACKED_TIME_EXCEEDED,
            RouterError::FragmentationNeeded { mtu } => {
                PACKED_FRAGMENTATION_NEEDED | (mtu as u32) << 8
            }
            RouterError::SnatRefused => PACKED_SNAT_REFUSED,
        }
    }

    /// What becomes of the frame when the error may not be sent: an expiring TTL goes to
    /// the kernel, which answers or drops it; anything else is dropped.
    #[inline(always)]
    pub fn unanswered(self) -> Outcome {
        match self {
            RouterError::TimeExceeded => Outcome::pass(Verdict::PassTtlExpired),
            RouterError::FragmentationNeeded { .. } => {
                Outcome::drop(Verdict::DropFragmentationNeeded)
            }
            RouterError::SnatRefused => Outcome::drop(Verdict::SnatRefused),
        }
    }

    #[inline(always)]
    pub fn unpack(packed: u32) -> Self {
        match packed & 0xff {
            PACKED_FRAGMENTATION_NEEDED => {
                RouterError::FragmentationNeeded { mtu: (packed >> 8) as u16 }
            }
            PACKED_SNAT_REFUSED => RouterError::SnatRefused,
            _ => RouterError::TimeExceeded,
        }
    }

    /// Type, code, and the 4 bytes of the ICMP header after the checksum.
    #[inline(always)]
    fn header(self) -> (u8, u8, [u8; 4]) {
        match self {
            RouterError::TimeExceeded => (ICMP_TIME_EXCEEDED, CODE_TTL_EXCEEDED_IN_TRANSIT, [0; 4]),
            RouterError::FragmentationNeeded { mtu } => {
                let [high, low] = mtu.to_be_bytes();
                (ICMP_DEST_UNREACHABLE, CODE_FRAGMENTATION_NEEDED, [0, 0, high, low])
            }
            RouterError::SnatRefused => {
                (ICMP_DEST_UNREACHABLE, CODE_ADMINISTRATIVELY_PROHIBITED, [0; 4])
            }
        }
    }

    #[inline(always)]
    fn verdict(self) -> Verdict {
        match self {
            RouterError::TimeExceeded => Verdict::IcmpTimeExceededSent,
            RouterError::FragmentationNeeded { .. } => Verdict::IcmpFragNeededSent,
            RouterError::SnatRefused => Verdict::SnatRefused,
        }
    }
}

/// [`answer`] as a global BPF function, for callers that are themselves global functions
/// (the NAT gateway's): the verifier checks it once instead of once per call site, and it
/// parses the frame again itself, since a global function takes scalars only. `error` is
/// [`RouterError::pack`]ed, `fallback` and the result [`Outcome::pack`]ed.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn eipgw_router_error(
    ctx: *mut xdp_md,
    error: u32,
    from: u32,
    fallback: u32,
) -> u32 {
    let ctx = XdpContext::new(ctx);
    let outcome = match crate::packet::parse_ipv4(&ctx) {
        Ok(frame) => {
            answer(&ctx, &frame, RouterError::unpack(error), from, Outcome::unpack(fallback))
        }
        Err(Malformed) => Err(Malformed),
    };
    core::hint::black_box(outcome.unwrap_or(Outcome::drop(Verdict::DropMalformed))).pack()
}

/// Answers `frame` with `error`, sent from `from` (the gateway's address on the ingress
/// interface) back through the interface it came in on. `fallback` when no error may be
/// sent about this packet (RFC 1812 §4.3.2.7) or the gateway has no address there; a
/// counted drop when this CPU's error budget is spent.
#[inline(always)]
pub fn answer(
    ctx: &XdpContext,
    frame: &Ipv4Frame,
    error: RouterError,
    from: u32,
    fallback: Outcome,
) -> Result<Outcome, Malformed> {
    if from == 0 || !may_answer(ctx, frame)? {
        return Ok(fallback);
    }
    if !spend_budget() {
        return Ok(Outcome::drop(Verdict::DropIcmpRateLimited));
    }

    // Everything the error needs from the frame, read before the frame is rebuilt.
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: bounds-checked just above.
    let (peer_mac, own_mac) = unsafe { ((*eth).src_addr, (*eth).dst_addr) };
    let to = frame.src();
    // The quote ends with the packet, not with the frame (which may carry Ethernet padding).
    let quote_len = match frame.header_len + QUOTED_L4_BYTES {
        len if len < frame.total_len as usize => len,
        _ => frame.total_len as usize,
    };
    let frame_len = ctx.data_end() - ctx.data();

    // Room for the new IPv4 and ICMP headers in front of the packet's own IPv4 header,
    // which stays where it is and becomes the quote: nothing is copied. The old Ethernet
    // header is overwritten. If the driver left no headroom the frame is still intact.
    // SAFETY: `ctx.ctx` is the program's xdp_md.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(ADDED_LEN as i32)) } != 0 {
        return Ok(fallback);
    }
    // Then cut it after the quote: a shrink to at least 62 bytes, which the helper only
    // refuses below 14, so a failure here cannot happen (and would leave a frame that is
    // neither the packet nor the error: dropped).
    let error_len = EthHdr::LEN + ADDED_LEN + quote_len;
    let shrink = (frame_len + ADDED_LEN - error_len) as i32;
    // SAFETY: as above.
    if shrink != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, -shrink) } != 0 {
        return Err(Malformed);
    }

    // Every packet pointer is void after the helpers: start again from the context.
    let headers: *mut ErrorHeaders = ptr_at(ctx, 0)?;
    let mut ip = Ipv4Hdr {
        vihl: VERSION_IHL,
        tos: TOS_INTERNETWORK_CONTROL,
        tot_len: ((ADDED_LEN + quote_len) as u16).to_be_bytes(),
        // An atomic datagram (DF set, RFC 6864 §4.1): its ID may be 0.
        id: [0; 2],
        frags: DONT_FRAGMENT.to_be_bytes(),
        ttl: ERROR_TTL,
        proto: PROTO_ICMP,
        check: [0; 2],
        src_addr: from.to_ne_bytes(),
        dst_addr: to.to_ne_bytes(),
    };
    // SAFETY: Ipv4Hdr is #[repr(C)], 20 bytes of u8 fields: every byte is initialized.
    let ip_bytes = unsafe { mem::transmute::<Ipv4Hdr, [u8; Ipv4Hdr::LEN]>(ip) };
    ip.check = checksum::checksum(&ip_bytes).to_ne_bytes();
    let (icmp_type, code, rest) = error.header();
    // SAFETY: bounds-checked above; the frame is now exactly `error_len` bytes.
    unsafe {
        (*headers).eth =
            EthHdr { dst_addr: peer_mac, src_addr: own_mac, ether_type: EtherType::Ipv4 as u16 };
        (*headers).ip = ip;
        (*headers).icmp = Icmpv4Hdr { type_: icmp_type, code, check: [0; 2], data: rest };
    }
    // The ICMP checksum covers the message from its header (checksum 0 while it is summed)
    // to the end of the frame.
    let sum = sum_to_end(ctx, EthHdr::LEN + Ipv4Hdr::LEN);
    // SAFETY: as above; `sum_to_end` moved nothing.
    unsafe { (*headers).icmp.check = checksum::finish(sum).to_ne_bytes() };
    Ok(Outcome { action: xdp_action::XDP_TX, verdict: error.verdict() })
}

/// Whether the gateway may answer this packet with an ICMP error (RFC 1812 §4.3.2.7, RFC
/// 1122 §3.2.2): not when it is itself an ICMP error (or of a type the kernel does not
/// know, which it treats as one), a fragment other than the first, addressed to a link or
/// IP broadcast or multicast group, or from an address that names no single host. The
/// kernel, which gets these instead, sends nothing either.
#[inline(always)]
fn may_answer(ctx: &XdpContext, frame: &Ipv4Frame) -> Result<bool, Malformed> {
    if frame.is_later_fragment() {
        return Ok(false);
    }
    if frame.proto() == PROTO_ICMP {
        let icmp: *const Icmpv4Hdr = ptr_at(ctx, frame.l4_offset())?;
        // SAFETY: bounds-checked just above.
        let icmp_type = unsafe { (*icmp).type_ };
        let error = matches!(
            icmp_type,
            ICMP_DEST_UNREACHABLE
                | ICMP_SOURCE_QUENCH
                | ICMP_REDIRECT
                | ICMP_TIME_EXCEEDED
                | ICMP_PARAMETER_PROBLEM
        );
        if error || icmp_type > ICMP_LAST_KNOWN_TYPE {
            return Ok(false);
        }
    }
    let eth: *const EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: bounds-checked just above. The group bit of the first octet marks broadcast
    // and multicast MACs.
    if unsafe { (*eth).dst_addr[0] } & 1 != 0 {
        return Ok(false);
    }
    let [src_first, ..] = frame.src().to_ne_bytes();
    let [dst_first, ..] = frame.dst().to_ne_bytes();
    // 0/8 "this network", 127/8 loopback, and from 224 up multicast, reserved and the
    // limited broadcast address.
    let src_names_one_host = src_first != 0 && src_first != 127 && src_first < 224;
    Ok(src_names_one_host && dst_first < 224)
}

/// Spends one error from this CPU's budget, if there is one left.
#[inline(always)]
fn spend_budget() -> bool {
    let Some(budget) = ICMP_ERROR_BUDGET.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: no arguments; a monotonic clock.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: this CPU's copy, and XDP does not preempt itself.
    unsafe { (*budget).spend(now) }
}

/// The 16-bit words of the frame from `start` to its end, added up, with a last odd byte
/// padded (RFC 1071). The loop has a constant bound, as the verifier requires.
#[inline(always)]
fn sum_to_end(ctx: &XdpContext, start: usize) -> u32 {
    let mut sum = 0u32;
    let mut offset = start;
    for _ in 0..MAX_ICMP_WORDS {
        let Ok(word) = ptr_at::<[u8; 2]>(ctx, offset) else {
            break;
        };
        // SAFETY: bounds-checked just above.
        sum += u16::from_ne_bytes(unsafe { *word }) as u32;
        offset += 2;
    }
    if let Ok(byte) = ptr_at::<u8>(ctx, offset) {
        // SAFETY: as above.
        sum += checksum::odd_byte(unsafe { *byte }) as u32;
    }
    sum
}
