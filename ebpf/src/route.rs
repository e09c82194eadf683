//! Routing through the kernel's FIB, and the redirect to the egress interface.

use core::mem;

use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_NOT_FWDED,
        BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams, xdp_action,
    },
    helpers::generated::bpf_fib_lookup,
    programs::XdpContext,
};

use crate::EGRESS_DEVICES;

const AF_INET: u8 = 2;

/// What the kernel's routing table says about a destination.
pub enum Route {
    /// Forward out of `ifindex` with these link-layer addresses.
    Forward { ifindex: u32, smac: [u8; 6], dmac: [u8; 6] },
    /// Forward out of `ifindex`, but the next hop's MAC is not resolved yet.
    NeighbourUnknown { ifindex: u32 },
    /// Larger than the egress MTU (only reported when DF matters to the caller).
    TooBig,
    /// Addressed to this host (or broadcast/multicast): not ours to forward.
    Local,
    /// Blackhole, unreachable, prohibited, or forwarding disabled.
    Unroutable,
}

/// Looks up the route for an IPv4 packet arriving on the context's interface.
#[inline(always)]
pub fn lookup(ctx: &XdpContext, src: u32, dst: u32, proto: u8, tos: u8, total_len: u16) -> Route {
    // SAFETY: an all-zero bpf_fib_lookup is valid input (plain integers and unions of them).
    let mut params: FibParams = unsafe { mem::zeroed() };
    params.family = AF_INET;
    params.l4_protocol = proto;
    params.__bindgen_anon_1.tot_len = total_len;
    params.ifindex = ctx.ingress_ifindex() as u32;
    params.__bindgen_anon_2.tos = tos;
    params.__bindgen_anon_3.ipv4_src = src;
    params.__bindgen_anon_4.ipv4_dst = dst;
    // SAFETY: `params` is a valid bpf_fib_lookup on the stack and its size is passed.
    let rc =
        unsafe { bpf_fib_lookup(ctx.as_ptr(), &mut params, mem::size_of::<FibParams>() as i32, 0) };
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => {
            // SAFETY: on success the kernel fills smac/dmac.
            let macs = unsafe { params.__bindgen_anon_6.__bindgen_anon_2 };
            Route::Forward { ifindex: params.ifindex, smac: macs.smac, dmac: macs.dmac }
        }
        BPF_FIB_LKUP_RET_NO_NEIGH => Route::NeighbourUnknown { ifindex: params.ifindex },
        BPF_FIB_LKUP_RET_FRAG_NEEDED => Route::TooBig,
        BPF_FIB_LKUP_RET_NOT_FWDED => Route::Local,
        _ => Route::Unroutable,
    }
}

/// The ifindex a route leaves through, ignoring the MTU: for a packet that is too big we
/// still need to know whether it was headed for the Internet.
#[inline(always)]
pub fn egress_ifindex(ctx: &XdpContext, src: u32, dst: u32, proto: u8, tos: u8) -> Option<u32> {
    match lookup(ctx, src, dst, proto, tos, 0) {
        Route::Forward { ifindex, .. } | Route::NeighbourUnknown { ifindex } => Some(ifindex),
        _ => None,
    }
}

/// Sends the (already rewritten) frame out of `ifindex`: XDP_TX back out of the interface
/// it came in on, XDP_REDIRECT through the device map otherwise. `None` when the interface
/// is not in the device map.
#[inline(always)]
pub fn transmit(ctx: &XdpContext, ifindex: u32) -> Option<u32> {
    if ifindex == ctx.ingress_ifindex() as u32 {
        return Some(xdp_action::XDP_TX);
    }
    // With XDP_DROP in the low bits, a missing device makes the helper return XDP_DROP.
    EGRESS_DEVICES.redirect(ifindex, xdp_action::XDP_DROP as u64).ok()
}
