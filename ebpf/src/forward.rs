//! What happens to a frame the gateway lets across, whatever its IP version and whether or
//! not its addresses change: the router hop (TTL or hop limit, link addresses), the
//! redirect, and the action and verdict it ends with.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use eipgw_common::Verdict;

use crate::{
    packet::{Hop, Malformed, set_macs},
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

    /// The outcome as one scalar, the only kind of value a global BPF function returns.
    #[inline(always)]
    pub fn pack(self) -> u32 {
        self.action | (self.verdict as u32) << 8
    }

    /// The outcome [`Outcome::pack`] made `packed` of.
    #[inline(always)]
    pub fn unpack(packed: u32) -> Self {
        let index = packed >> 8;
        let verdict = if index < Verdict::COUNT {
            // SAFETY: `Verdict` is `repr(u32)` with the discriminants 0..COUNT, and `index`
            // is one of them. (A lookup in `Verdict::ALL` instead lost its bounds check to
            // the optimizer, and the verifier refused it.)
            unsafe { core::mem::transmute::<u32, Verdict>(index) }
        } else {
            Verdict::DropMalformed
        };
        Self { action: packed & 0xff, verdict }
    }
}

/// Acts on the route of a frame that may cross the gateway: forward it (after `rewrite`,
/// with the hop limit decremented and the next hop's MACs) under `verdict`, or leave
/// neighbour resolution to the kernel (after `rewrite` only: the kernel forwards it and
/// decrements the hop limit itself), or drop it. `on_its_way` runs once the frame is
/// forwarded or handed to the kernel to forward, and never for a drop.
#[inline(always)]
pub fn deliver<F: Hop>(
    ctx: &XdpContext,
    frame: &F,
    route: Route,
    rewrite: impl FnOnce(&F),
    verdict: Verdict,
    on_its_way: impl FnOnce(),
) -> Result<Outcome, Malformed> {
    match route {
        Route::Forward { ifindex, smac, dmac } => {
            rewrite(frame);
            frame.decrement_hop_limit();
            set_macs(ctx, smac, dmac)?;
            let outcome = forward(ctx, ifindex, verdict);
            if outcome.verdict == verdict {
                on_its_way();
            }
            Ok(outcome)
        }
        Route::NeighbourUnknown { .. } => {
            rewrite(frame);
            on_its_way();
            Ok(Outcome::pass(Verdict::PassNeighbourUnknown))
        }
        Route::TooBig { .. } if frame.kernel_handles_too_big() => {
            rewrite(frame);
            on_its_way();
            Ok(Outcome::pass(Verdict::PassTooBig))
        }
        // IPv4 with DF set: a NAT-mode EIP's is answered before it gets here
        // (`icmp::answer`); a visible-mode EIP's is dropped.
        Route::TooBig { .. } => Ok(Outcome::drop(Verdict::DropFragmentationNeeded)),
        Route::Local | Route::Unroutable => Ok(Outcome::drop(Verdict::DropUnroutable)),
    }
}

/// Redirects a ready frame out of `ifindex`, booked under `verdict`; a drop if the
/// interface is not one the gateway can redirect to.
#[inline(always)]
fn forward(ctx: &XdpContext, ifindex: u32, verdict: Verdict) -> Outcome {
    match route::transmit(ctx, ifindex) {
        Some(action) if action != xdp_action::XDP_DROP => Outcome { action, verdict },
        _ => Outcome::drop(Verdict::DropNoEgressDevice),
    }
}
