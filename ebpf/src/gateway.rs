//! The decision for one frame: which family, which side it came from, and for IPv4 what
//! its EIP's mode makes of it.

use aya_ebpf::programs::XdpContext;
use eipgw_common::{
    EIP_LIMITED, EipEntry, MODE_CUT_THROUGH, MODE_MULTI_EIP, MODE_NAT, MODE_NAT_GATEWAY,
    NAT_PROGRAM_INDEX, Verdict, eip_filter_slot,
};

use crate::{
    CONFIG, EIP_FILTER, EIPS, NAT_PROGRAMS, PRIVATE_IPS,
    counters::{Direction, count_eip},
    forward::{Outcome, deliver},
    icmp::{self, RouterError},
    ipv6,
    packet::{self, Ipv4Frame, Malformed, Network, parse_ipv4},
    policy,
    route::{self, Egress, Flow, Route},
};

#[inline(always)]
pub fn process(ctx: &XdpContext) -> Result<Outcome, Malformed> {
    // Each family is parsed before anything else, so that a malformed frame is dropped
    // whatever it is for. The two arms do not share a `Frame` enum of both: LLVM packs such
    // an enum's packet pointers into integers and shifts them, which the verifier refuses
    // ("pointer arithmetic with >>= operator prohibited").
    match packet::network(ctx)? {
        Network::Ipv4 => {
            let frame = parse_ipv4(ctx)?;
            match ingress(ctx) {
                Some(Ingress::Wan { own_addr, .. }) => inbound(ctx, &frame, own_addr),
                Some(Ingress::Lan { wan, own_addr }) => outbound(ctx, &frame, wan, own_addr),
                None => Ok(Outcome::pass(Verdict::PassNotTranslated)),
            }
        }
        Network::Ipv6 => {
            let (direction, far_ifindex) = match ingress(ctx) {
                Some(Ingress::Wan { lan, .. }) => (ipv6::INBOUND, lan),
                Some(Ingress::Lan { wan, .. }) => (ipv6::OUTBOUND, wan),
                None => return Ok(Outcome::pass(Verdict::PassNotTranslated)),
            };
            Ok(Outcome::unpack(ipv6::eipgw_ipv6(ctx.ctx, direction, far_ifindex)))
        }
        Network::Other => Ok(Outcome::pass(Verdict::PassNotTranslated)),
    }
}

/// The side a frame came in on, with the ifindex of the other side (where a frame that
/// crosses the gateway leaves) and the gateway's own IPv4 address on this side (where the
/// ICMP errors it sends as a router come from; 0 if it has none).
pub enum Ingress {
    Wan { lan: u32, own_addr: u32 },
    Lan { wan: u32, own_addr: u32 },
}

/// `None` before the agent has configured the interfaces, or for a frame that came in on
/// some other interface.
#[inline(always)]
pub fn ingress(ctx: &XdpContext) -> Option<Ingress> {
    let config = CONFIG.get(0)?;
    let ifindex = ctx.ingress_ifindex() as u32;
    if ifindex == config.wan_ifindex {
        Some(Ingress::Wan { lan: config.lan_ifindex, own_addr: config.wan_addr })
    } else if ifindex == config.lan_ifindex {
        Some(Ingress::Lan { wan: config.wan_ifindex, own_addr: config.lan_addr })
    } else {
        None
    }
}

/// The address change NAT mode makes; visible modes make none.
#[derive(Copy, Clone)]
enum Rewrite {
    /// Inbound: the destination EIP becomes this private address (and in an ICMP error,
    /// the quoted source, the packet the private host sent).
    Destination(u32),
    /// Outbound: the private source becomes this EIP (and in an ICMP error, the quoted
    /// destination, the packet the private host received).
    Source(u32),
    /// Hairpin, from one instance to another's EIP: both at once, so the target sees the
    /// sender's EIP and its replies come back through the gateway too.
    Both { src: u32, dst: u32 },
}

impl Rewrite {
    #[inline(always)]
    fn apply(self, frame: &Ipv4Frame) {
        match self {
            Rewrite::Destination(addr) => {
                frame.set_dst(addr);
                if let Some(quoted) = &frame.quoted {
                    quoted.set_src(addr);
                }
            }
            Rewrite::Source(addr) => {
                frame.set_src(addr);
                if let Some(quoted) = &frame.quoted {
                    quoted.set_dst(addr);
                }
            }
            // ICMP errors never take the hairpin (see `outbound`): outer addresses only.
            Rewrite::Both { src, dst } => {
                frame.set_src(src);
                frame.set_dst(dst);
            }
        }
    }
}

/// Whether the EIP's mode forwards its traffic unchanged (R10, R11).
#[inline(always)]
fn is_visible(entry: &EipEntry) -> bool {
    entry.mode == MODE_CUT_THROUGH || entry.mode == MODE_MULTI_EIP
}

/// From the Internet, to an associated EIP: in NAT mode the destination becomes the private
/// address and the route is the private address's; in a visible mode the frame goes on
/// unchanged along the kernel route the agent installs for the EIP itself. `own_addr` is
/// the gateway's WAN address.
#[inline(always)]
fn inbound(ctx: &XdpContext, frame: &Ipv4Frame, own_addr: u32) -> Result<Outcome, Malformed> {
    let dst = frame.dst();
    // SAFETY: the value is copied out at once; the agent replaces entries whole.
    let Some(entry) = (unsafe { EIPS.get(&dst) }).copied() else {
        return Ok(Outcome::pass(Verdict::PassNotTranslated));
    };
    // The address the frame leaves with, and so the one it is routed by.
    let (rewrite, routed_to) = if entry.mode == MODE_NAT {
        // An ICMP error for the EIP is about a packet the EIP sent: anything else has no
        // mapping to translate it by (RFC 5508 §3.1).
        if let Some(quoted) = &frame.quoted
            && quoted.src() != dst
        {
            return Ok(Outcome::drop(Verdict::DropIcmpErrorUnmatched));
        }
        (Some(Rewrite::Destination(entry.private_addr)), entry.private_addr)
    } else if is_visible(&entry) {
        (None, dst)
    } else if entry.mode == MODE_NAT_GATEWAY {
        return Ok(nat_program(ctx, Verdict::DropNoNatMapping));
    } else {
        return Ok(Outcome::drop(Verdict::DropEipNotAssociated));
    };
    // The ENI's security group decides before anything else is done for the frame, and
    // the cap meters what arrives.
    if entry.flags & EIP_LIMITED != 0
        && let Some(dropped) = inbound_policy(ctx, frame, entry.stats_slot, frame.src(), dst)
    {
        return Ok(dropped);
    }
    if frame.ttl() <= 1 {
        return ttl_expired(ctx, frame, rewrite, own_addr);
    }
    let flow = Flow::V4 { src: frame.src(), dst: routed_to, tos: frame.tos() };
    let route = route::lookup(ctx, &flow, frame.proto(), frame.total_len);
    translate(ctx, frame, route, rewrite, entry.stats_slot, Direction::Inbound, own_addr)
}

/// The inbound policy of the EIP in `slot` for `frame`, to `eip` from `src` (see
/// [`policy::eipgw_inbound_policy`]): `None` if it passes, else the drop.
#[inline(always)]
fn inbound_policy(
    ctx: &XdpContext,
    frame: &Ipv4Frame,
    slot: u32,
    src: u32,
    eip: u32,
) -> Option<Outcome> {
    let flags = match &frame.quoted {
        Some(quoted) if quoted.src() == eip => policy::ERROR_ABOUT_EIP,
        _ => 0,
    };
    dropped(policy::eipgw_inbound_policy(ctx.ctx, slot, src, flags))
}

/// Hands the frame to the NAT gateway program (`eipgw_nat`), which sends it on and counts
/// it itself; `unloaded` if it is not there. A tail call: that program starts with a stack
/// and a verifier budget of its own, which the 1:1 paths leave too little of.
#[inline(always)]
fn nat_program(ctx: &XdpContext, unloaded: Verdict) -> Outcome {
    // SAFETY: the context is this program's, and the map holds only XDP programs.
    let _ = unsafe { NAT_PROGRAMS.tail_call(ctx, NAT_PROGRAM_INDEX) };
    Outcome::drop(unloaded)
}

/// The drop a policy decision asks for, if any.
#[inline(always)]
fn dropped(decision: policy::Decision) -> Option<Outcome> {
    (decision != policy::PASSES).then(|| Outcome::unpack(decision))
}

/// From the VPC: traffic routed to the Internet leaves with its EIP as the source (NAT
/// mode), or unchanged when its source is itself an EIP in a visible mode; any other source
/// has no egress. Traffic for the gateway itself, or routed back into the VPC, is the
/// kernel's. `own_addr` is the gateway's LAN address.
#[inline(always)]
fn outbound(
    ctx: &XdpContext,
    frame: &Ipv4Frame,
    wan_ifindex: u32,
    own_addr: u32,
) -> Result<Outcome, Malformed> {
    let src = frame.src();
    // Hairpin: to another instance's NAT-mode EIP, the frame turns round here towards the
    // target's private address, with the sender's EIP as its source so that the answer
    // turns round here too. One path with the Internet-bound case: a second copy of it
    // makes the program too large for the verifier to explore. Most destinations are no
    // EIP, which the filter says without the hash lookup.
    let dst = frame.dst();
    let maybe_eip = EIP_FILTER.get(eip_filter_slot(dst)).is_some_and(|&n| n != 0);
    // SAFETY: values are copied out at once; the agent replaces entries whole.
    let target = if maybe_eip { unsafe { EIPS.get(&dst) }.copied() } else { None }
        .filter(|t| t.mode == MODE_NAT);
    if target.is_some() && frame.quoted.is_some() {
        return Ok(Outcome::drop(Verdict::DropIcmpErrorUnmatched));
    }
    let routed_to = target.map_or(frame.dst(), |t| t.private_addr);
    let flow = Flow::V4 { src, dst: routed_to, tos: frame.tos() };
    let route = route::lookup(ctx, &flow, frame.proto(), frame.total_len);
    if target.is_none() {
        match route.egress() {
            Egress::Local => return Ok(Outcome::pass(Verdict::PassNotTranslated)),
            Egress::Interface(ifindex) if ifindex != wan_ifindex => {
                return Ok(Outcome::pass(Verdict::PassNotTranslated));
            }
            // Towards the Internet, or no route: without an egress right it is dropped
            // either way.
            Egress::Interface(_) | Egress::Unknown => {}
        }
    }
    // SAFETY: as above.
    let (rewrite, stats_slot, public_src, flags) =
        if let Some(private) = unsafe { PRIVATE_IPS.get(&src) }.copied() {
            // An ICMP error from the private host is about a packet it received, sent to it
            // (RFC 5508 §3.1; a host sends its errors from the address the packet came to).
            if let Some(quoted) = &frame.quoted
                && quoted.dst() != src
            {
                return Ok(Outcome::drop(Verdict::DropIcmpErrorUnmatched));
            }
            let rewrite = match target {
                Some(t) => Rewrite::Both { src: private.eip_addr, dst: t.private_addr },
                None => Rewrite::Source(private.eip_addr),
            };
            (Some(rewrite), private.stats_slot, private.eip_addr, private.flags)
        } else {
            // SAFETY: as above.
            match unsafe { EIPS.get(&src) }.copied() {
                // A visible-mode EIP as source stays as it is.
                Some(eip) if is_visible(&eip) => {
                    let rewrite = target.map(|t| Rewrite::Destination(t.private_addr));
                    (rewrite, eip.stats_slot, src, eip.flags)
                }
                // A NAT gateway's DNAT port mapping or SNAT, for Internet-bound traffic.
                _ if target.is_none() => return Ok(nat_program(ctx, Verdict::DropNoEgress)),
                // No public address to be answered at: no hairpin.
                _ => return Ok(Outcome::drop(Verdict::DropNoEgress)),
            }
        };
    // Hairpin: the target's security group sees the sender's EIP as the source.
    if let Some(t) = target
        && t.flags & EIP_LIMITED != 0
        && let Some(dropped) = inbound_policy(ctx, frame, t.stats_slot, public_src, frame.dst())
    {
        return Ok(dropped);
    }
    if flags & EIP_LIMITED != 0
        && let Some(dropped) =
            dropped(policy::eipgw_outbound_policy(ctx.ctx, stats_slot, public_src))
    {
        return Ok(dropped);
    }
    if frame.ttl() <= 1 {
        return ttl_expired(ctx, frame, rewrite, own_addr);
    }
    let bytes = frame.total_len as u64;
    let outcome = translate(ctx, frame, route, rewrite, stats_slot, Direction::Outbound, own_addr)?;
    // The target EIP received it, as if from the Internet.
    if let Some(t) = target
        && matches!(outcome.verdict, Verdict::Translated | Verdict::PassNeighbourUnknown)
    {
        count_eip(t.stats_slot, Direction::Inbound, bytes);
    }
    Ok(outcome)
}

/// A frame whose TTL would expire here. A NAT-mode EIP's gets ICMP time exceeded from
/// `own_addr`: the kernel would see it only untranslated and could route it nowhere. A
/// visible-mode EIP's goes to the kernel, which answers as the router itself, as it does
/// whatever the program may not answer.
#[inline(always)]
fn ttl_expired(
    ctx: &XdpContext,
    frame: &Ipv4Frame,
    rewrite: Option<Rewrite>,
    own_addr: u32,
) -> Result<Outcome, Malformed> {
    let kernel = Outcome::pass(Verdict::PassTtlExpired);
    match rewrite {
        Some(_) => icmp::answer(ctx, frame, RouterError::TimeExceeded, own_addr, kernel),
        None => Ok(kernel),
    }
}

/// Sends an EIP's frame on along `route`, translated by `rewrite` (NAT mode) or unchanged
/// (visible modes, `None`), and books it under the EIP's counters once it is on its way. A
/// NAT-mode frame with DF set that does not fit the egress MTU is answered with ICMP
/// fragmentation needed from `own_addr` instead, about the packet as it arrived.
#[inline(always)]
fn translate(
    ctx: &XdpContext,
    frame: &Ipv4Frame,
    route: Route,
    rewrite: Option<Rewrite>,
    stats_slot: u32,
    direction: Direction,
    own_addr: u32,
) -> Result<Outcome, Malformed> {
    if let (Route::TooBig { mtu, .. }, Some(_)) = (&route, rewrite)
        && !frame.may_fragment()
    {
        let error = RouterError::FragmentationNeeded { mtu: *mtu };
        let unanswered = Outcome::drop(Verdict::DropFragmentationNeeded);
        return icmp::answer(ctx, frame, error, own_addr, unanswered);
    }
    let verdict = match rewrite {
        Some(_) => Verdict::Translated,
        None => Verdict::ForwardedUnchanged,
    };
    let bytes = frame.total_len as u64;
    deliver(
        ctx,
        frame,
        route,
        |frame| {
            if let Some(rewrite) = rewrite {
                rewrite.apply(frame);
            }
        },
        verdict,
        || count_eip(stats_slot, direction, bytes),
    )
}
