//! What the agent asks of each EIP's traffic beyond its mapping: the security group of the
//! ENI behind it (inbound, checked before any rewrite) and the bandwidth cap (both
//! directions, checked just before the frame leaves).
//!
//! The checks are global BPF functions (`#[no_mangle] extern "C"`, kept out of line): the
//! verifier checks each of them once, on its own, instead of once for every path through
//! the gateway that reaches it. Inlined, they made the program too large to verify (one
//! million instructions explored). Global functions take only the context and scalars, so
//! each reads what it needs of the frame itself, from the IPv4 header `parse_ipv4` checked.

use core::{
    intrinsics::{AtomicOrdering, atomic_xadd},
    ptr::{read_volatile, write_volatile},
};

use aya_ebpf::{bindings::xdp_md, helpers::bpf_ktime_get_ns, programs::XdpContext};
use eipgw_common::{
    EipLimits, FlowKey, Verdict, bandwidth,
    policy::{FLOW_REFRESH_NS, PROTO_ICMP, PROTO_TCP, PROTO_UDP, flow_idle_timeout_ns},
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    EIP_BUCKETS, EIP_LIMITS, GROUP_FLOWS, SECURITY_GROUPS,
    counters::{Direction, EipDrop, count_eip_drop},
    forward::Outcome,
    packet::ptr_at,
};

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
/// The IPv4 fragment offset bits.
const FRAGMENT_OFFSET_MASK: u16 = 0x1fff;

/// `flags` of [`eipgw_inbound_policy`]: the frame is an ICMP error about a packet the EIP
/// sent (RFC 5508 §3.1).
pub const ERROR_ABOUT_EIP: u32 = 1;

/// The IPv4 header facts the checks need.
struct Header {
    dst: u32,
    proto: u8,
    total_len: u16,
    /// Where the L4 header starts, or `None` in a fragment other than the first.
    l4_offset: Option<usize>,
}

#[inline(always)]
fn header(ctx: &XdpContext) -> Option<Header> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, EthHdr::LEN).ok()?;
    // SAFETY: bounds-checked just above.
    let ip = unsafe { &*ip };
    let frags = u16::from_be_bytes(ip.frags);
    // Masked to 4 bits, so the verifier knows the offset is at most 14 + 60.
    let header_len = ((ip.vihl & 0x0f) as usize) * 4;
    Some(Header {
        dst: u32::from_ne_bytes(ip.dst_addr),
        proto: ip.proto,
        total_len: u16::from_be_bytes(ip.tot_len),
        l4_offset: (frags & FRAGMENT_OFFSET_MASK == 0).then_some(EthHdr::LEN + header_len),
    })
}

/// What tells one flow from another beyond the addresses, in network byte order: TCP and
/// UDP ports, or for ICMP echo the identifier (as `a`; `b` is 0).
struct Ports {
    a: u16,
    b: u16,
}

/// The frame's ports (TCP, UDP) or echo identifier (ICMP echo of `echo_type`). `None`: a
/// later fragment, another ICMP message, or another protocol.
#[inline(always)]
fn ports(ctx: &XdpContext, header: &Header, echo_type: u8) -> Option<Ports> {
    let at = header.l4_offset?;
    if header.proto == PROTO_TCP || header.proto == PROTO_UDP {
        let at: *const [u16; 2] = ptr_at(ctx, at).ok()?;
        // SAFETY: bounds-checked just above.
        let [src, dst] = unsafe { *at };
        Some(Ports { a: src, b: dst })
    } else if header.proto == PROTO_ICMP {
        // Type and code, checksum, identifier.
        let at: *const [u16; 3] = ptr_at(ctx, at).ok()?;
        // SAFETY: as above.
        let [type_code, _, id] = unsafe { *at };
        (type_code.to_ne_bytes()[0] == echo_type).then_some(Ports { a: id, b: 0 })
    } else {
        None
    }
}

/// The limits of the EIP in `slot`; none if the agent has written none.
#[inline(always)]
fn limits(slot: u32) -> EipLimits {
    EIP_LIMITS.get(slot).copied().unwrap_or_default()
}

/// What the policy makes of a frame: [`PASSES`], or the drop it ends with, packed by
/// [`Outcome::pack`] (never 0: a drop's action is XDP_DROP).
pub type Decision = u32;
pub const PASSES: Decision = 0;

#[inline(always)]
fn drop_with(verdict: Verdict) -> Decision {
    Outcome::drop(verdict).pack()
}

/// The check for a frame that comes in through a DNAT port mapping whose target's ENI has
/// the security group `group`: a rule must let it in from `src`, judged on the port the
/// instance sees (`private_port`, host byte order), as the group would judge it at the
/// instance. What comes in is never a reply (DNAT flows start outside), and errors about
/// the EIP's packets are not checked (see `nat::inbound`). A drop is counted under the EIP
/// in `slot`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn eipgw_dnat_policy(
    ctx: *mut xdp_md,
    group: u32,
    src: u32,
    private_port: u32,
    slot: u32,
) -> Decision {
    let ctx = XdpContext::new(ctx);
    let Some(header) = header(&ctx) else {
        return drop_with(Verdict::DropMalformed);
    };
    // SAFETY: only read, while the program runs; the agent replaces entries whole. A
    // group the agent has not written (it writes groups first) lets nothing in.
    let allowed = unsafe { SECURITY_GROUPS.get(&group) }
        .is_some_and(|rules| rules.allow(header.proto, src, Some(private_port as u16)));
    if allowed {
        return PASSES;
    }
    count_eip_drop(slot, EipDrop::Denied, header.total_len as u64);
    drop_with(Verdict::DropSecurityGroup)
}

/// Whether the EIP asks nothing of its traffic, as most do: then nothing else is read.
#[inline(always)]
fn unlimited(limits: &EipLimits) -> bool {
    !limits.limited()
}

/// The checks for a frame that comes in to the EIP in `slot` (its destination) from `src`
/// (the sender's public address): the EIP's security group, if it has one, must let it in,
/// and it must fit under the EIP's inbound bandwidth cap. A frame no rule allows still
/// comes in as a reply to a flow the instance opened from the EIP, or as an ICMP error
/// about one of its packets (`flags` [`ERROR_ABOUT_EIP`]), as a stateful firewall would
/// see them. Drops are counted under the EIP.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn eipgw_inbound_policy(
    ctx: *mut xdp_md,
    slot: u32,
    src: u32,
    flags: u32,
) -> Decision {
    let limits = limits(slot);
    if unlimited(&limits) {
        return PASSES;
    }
    let ctx = XdpContext::new(ctx);
    let Some(header) = header(&ctx) else {
        return drop_with(Verdict::DropMalformed);
    };
    if limits.security_group != 0
        && !inbound_allowed(&ctx, &header, limits.security_group, src, flags)
    {
        count_eip_drop(slot, EipDrop::Denied, header.total_len as u64);
        return drop_with(Verdict::DropSecurityGroup);
    }
    charge(&limits, slot, Direction::Inbound, header.total_len)
}

/// The checks for a frame an instance sends from the EIP `eip` in `slot`: if the EIP has a
/// security group, the flow is noted so that its replies come back in; and the frame must
/// fit under the EIP's outbound bandwidth cap.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn eipgw_outbound_policy(ctx: *mut xdp_md, slot: u32, eip: u32) -> Decision {
    let limits = limits(slot);
    if unlimited(&limits) {
        return PASSES;
    }
    let ctx = XdpContext::new(ctx);
    let Some(header) = header(&ctx) else {
        return drop_with(Verdict::DropMalformed);
    };
    if limits.security_group != 0 {
        note_outbound(&ctx, &header, eip);
    }
    charge(&limits, slot, Direction::Outbound, header.total_len)
}

/// Books `bytes` against the cap, or counts them as dropped over it.
#[inline(always)]
fn charge(limits: &EipLimits, slot: u32, direction: Direction, bytes: u16) -> Decision {
    if within_cap(limits, slot, direction, bytes as u64) {
        return PASSES;
    }
    count_eip_drop(slot, EipDrop::OverCap(direction), bytes as u64);
    drop_with(Verdict::DropBandwidthCap)
}

#[inline(always)]
fn inbound_allowed(ctx: &XdpContext, header: &Header, group: u32, src: u32, flags: u32) -> bool {
    // SAFETY: only read, while the program runs; the agent replaces entries whole.
    let Some(rules) = (unsafe { SECURITY_GROUPS.get(&group) }) else {
        // The agent writes a group before any EIP names it: a missing group means its
        // rules cannot be known, and nothing is let in on a guess.
        return false;
    };
    let proto = header.proto;
    if flags & ERROR_ABOUT_EIP != 0 {
        return true;
    }
    let ports = ports(ctx, header, ICMP_ECHO_REPLY);
    let dst_port = match (&ports, proto) {
        (Some(p), PROTO_TCP | PROTO_UDP) => Some(u16::from_be(p.b)),
        _ => None,
    };
    if rules.allow(proto, src, dst_port) {
        return true;
    }
    let Some(ports) = ports else {
        return false;
    };
    // A reply: the flow the instance opened, seen from the other end.
    let (eip_port, remote_port) =
        if proto == PROTO_ICMP { (ports.a, 0) } else { (ports.b, ports.a) };
    let key = FlowKey { eip: header.dst, remote: src, eip_port, remote_port, proto, _pad: [0; 3] };
    // SAFETY: a u64 copied out at once.
    let Some(&seen) = (unsafe { GROUP_FLOWS.get(&key) }) else {
        return false;
    };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    now.saturating_sub(seen) < flow_idle_timeout_ns(proto)
}

/// Notes that the instance sent the frame from `eip` to the frame's destination.
#[inline(always)]
fn note_outbound(ctx: &XdpContext, header: &Header, eip: u32) {
    let Some(ports) = ports(ctx, header, ICMP_ECHO_REQUEST) else {
        return;
    };
    let proto = header.proto;
    let remote_port = if proto == PROTO_ICMP { 0 } else { ports.b };
    let key =
        FlowKey { eip, remote: header.dst, eip_port: ports.a, remote_port, proto, _pad: [0; 3] };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: a u64 copied out at once.
    if let Some(&seen) = unsafe { GROUP_FLOWS.get(&key) }
        && now.saturating_sub(seen) < FLOW_REFRESH_NS
    {
        return;
    }
    // A full table makes room by forgetting the flow seen longest ago (LRU); the worst
    // that does is drop the replies of the flow idle for longest.
    let _ = GROUP_FLOWS.insert(&key, &now, 0);
}

#[inline(always)]
fn within_cap(limits: &EipLimits, slot: u32, direction: Direction, bytes: u64) -> bool {
    if limits.ps_per_byte == 0 {
        return true;
    }
    let Some(buckets) = EIP_BUCKETS.get_ptr_mut(slot) else {
        return true;
    };
    // SAFETY: a pointer into the map value, which lives as long as the map.
    let tat = unsafe {
        match direction {
            Direction::Inbound => &raw mut (*buckets).inbound_tat_ns,
            Direction::Outbound => &raw mut (*buckets).outbound_tat_ns,
        }
    };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let cost = bandwidth::cost_ns(bytes, limits.ps_per_byte);
    // SAFETY: `tat` points into the map value; other CPUs may write it, hence volatile.
    let current = unsafe { read_volatile(tat) };
    if bandwidth::admit(current, now, cost, limits.burst_ns).is_none() {
        return false;
    }
    if current < now {
        // Idle until now: restart from the clock. Two CPUs racing here both store about
        // `now` and lose at most a packet's booking each; the adds below lose none.
        // SAFETY: as above.
        unsafe { write_volatile(tat, now + cost) };
    } else {
        // The bpf target offers no `AtomicU64` read-modify-write in `core`, but the
        // intrinsic compiles to BPF_ATOMIC | BPF_ADD, which needs no newer instruction set
        // as long as its result goes unused.
        // SAFETY: the map value is 8-byte aligned and shared by every CPU, which is what the
        // atomic add is for.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(tat, cost) };
    }
    true
}
