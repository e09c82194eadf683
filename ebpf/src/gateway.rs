//! The translation decision for one frame.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use eipgw_common::{MODE_NAT, Verdict};

use crate::{
    CONFIG, EIPS, PRIVATE_IPS,
    counters::{Direction, count_eip},
    packet::{Ipv4Frame, Malformed, parse_ipv4, set_macs},
    route::{self, Route},
};

/// The action returned to the kernel and the counter it is booked under.
pub struct Outcome {
    pub action: u32,
    pub verdict: Verdict,
}

impl Outcome {
    pub const fn drop(verdict: Verdict) -> Self {
        Self { action: xdp_action::XDP_DROP, verdict }
    }

    pub const fn pass(verdict: Verdict) -> Self {
        Self { action: xdp_action::XDP_PASS, verdict }
    }
}

#[inline(always)]
pub fn process(ctx: &XdpContext) -> Result<Outcome, Malformed> {
    let Some(frame) = parse_ipv4(ctx)? else {
        return Ok(Outcome::pass(Verdict::PassNotTranslated));
    };
    let Some(config) = CONFIG.get(0) else {
        return Ok(Outcome::pass(Verdict::PassNotTranslated));
    };
    let ingress = ctx.ingress_ifindex() as u32;
    if ingress == config.wan_ifindex {
        inbound(ctx, &frame)
    } else if ingress == config.lan_ifindex {
        outbound(ctx, &frame, config.wan_ifindex)
    } else {
        Ok(Outcome::pass(Verdict::PassNotTranslated))
    }
}

/// From the Internet: a destination that is an associated EIP becomes its private address.
#[inline(always)]
fn inbound(ctx: &XdpContext, frame: &Ipv4Frame) -> Result<Outcome, Malformed> {
    // SAFETY: the value is copied out at once; the agent replaces entries whole.
    let Some(entry) = (unsafe { EIPS.get(&frame.dst()) }).copied() else {
        return Ok(Outcome::pass(Verdict::PassNotTranslated));
    };
    if entry.mode != MODE_NAT {
        return Ok(Outcome::drop(Verdict::DropEipNotAssociated));
    }
    if frame.ttl() <= 1 {
        // The kernel, as the router, answers with ICMP time exceeded.
        return Ok(Outcome::pass(Verdict::PassTtlExpired));
    }
    let route = route::lookup(
        ctx,
        frame.src(),
        entry.private_addr,
        frame.proto(),
        frame.tos(),
        frame.total_len,
    );
    translate(
        ctx,
        frame,
        route,
        |f| f.set_dst(entry.private_addr),
        entry.stats_slot,
        Direction::Inbound,
    )
}

/// From the VPC: traffic routed to the Internet leaves with its EIP as the source; a source
/// without one has no egress. Traffic for the gateway itself, or routed back into the VPC,
/// is the kernel's.
#[inline(always)]
fn outbound(ctx: &XdpContext, frame: &Ipv4Frame, wan_ifindex: u32) -> Result<Outcome, Malformed> {
    let (src, dst, proto, tos) = (frame.src(), frame.dst(), frame.proto(), frame.tos());
    let route = route::lookup(ctx, src, dst, proto, tos, frame.total_len);
    let egress = match route {
        Route::Forward { ifindex, .. } | Route::NeighbourUnknown { ifindex } => Some(ifindex),
        Route::TooBig => route::egress_ifindex(ctx, src, dst, proto, tos),
        Route::Local | Route::Unroutable => None,
    };
    if let Route::Local = route {
        return Ok(Outcome::pass(Verdict::PassNotTranslated));
    }
    if egress.is_some_and(|ifindex| ifindex != wan_ifindex) {
        return Ok(Outcome::pass(Verdict::PassNotTranslated));
    }
    // SAFETY: the value is copied out at once; the agent replaces entries whole.
    let Some(entry) = (unsafe { PRIVATE_IPS.get(&src) }).copied() else {
        return Ok(Outcome::drop(Verdict::DropNoEgress));
    };
    if frame.ttl() <= 1 {
        return Ok(Outcome::pass(Verdict::PassTtlExpired));
    }
    translate(
        ctx,
        frame,
        route,
        |f| f.set_src(entry.eip_addr),
        entry.stats_slot,
        Direction::Outbound,
    )
}

/// Rewrites the address (`rewrite`) of a frame whose mapping is known, then acts on the
/// route: forward it, or leave neighbour resolution to the kernel, or drop it.
#[inline(always)]
fn translate(
    ctx: &XdpContext,
    frame: &Ipv4Frame,
    route: Route,
    rewrite: impl Fn(&Ipv4Frame),
    stats_slot: u32,
    direction: Direction,
) -> Result<Outcome, Malformed> {
    let bytes = frame.total_len as u64;
    match route {
        Route::Forward { ifindex, smac, dmac } => {
            rewrite(frame);
            frame.decrement_ttl();
            set_macs(ctx, smac, dmac)?;
            let outcome = forward(ctx, ifindex);
            if outcome.verdict == Verdict::Translated {
                count_eip(stats_slot, direction, bytes);
            }
            Ok(outcome)
        }
        Route::NeighbourUnknown { .. } => {
            // Translated, then the kernel resolves the neighbour and forwards it (and
            // decrements the TTL itself).
            rewrite(frame);
            count_eip(stats_slot, direction, bytes);
            Ok(Outcome::pass(Verdict::PassNeighbourUnknown))
        }
        Route::TooBig => Ok(Outcome::drop(Verdict::DropFragmentationNeeded)),
        Route::Local | Route::Unroutable => Ok(Outcome::drop(Verdict::DropUnroutable)),
    }
}

#[inline(always)]
fn forward(ctx: &XdpContext, ifindex: u32) -> Outcome {
    match route::transmit(ctx, ifindex) {
        Some(action) if action != xdp_action::XDP_DROP => {
            Outcome { action, verdict: Verdict::Translated }
        }
        _ => Outcome::drop(Verdict::DropNoEgressDevice),
    }
}
