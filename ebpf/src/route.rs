//! Routing through the kernel's FIB, and the redirect to the egress interface.

use core::{mem, ptr};

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
const AF_INET6: u8 = 10;

/// What a route is looked up for: the addresses (as they sit in the header) and the fields
/// policy routing may select on.
#[derive(Copy, Clone)]
pub enum Flow {
    V4 {
        src: u32,
        dst: u32,
        tos: u8,
    },
    /// The addresses point into the frame's IPv6 header (bounds-checked by the parser): a
    /// copy of both, held in registers, was spilled to the stack byte by byte.
    V6 {
        src: *const [u8; 16],
        dst: *const [u8; 16],
        /// Traffic class and flow label, network byte order, version bits clear (the
        /// kernel's `ip6_flowinfo`).
        flowinfo: u32,
    },
}

/// What the kernel's routing table says about a destination.
pub enum Route {
    /// Forward out of `ifindex` with these link-layer addresses.
    Forward { ifindex: u32, smac: [u8; 6], dmac: [u8; 6] },
    /// Forward out of `ifindex`, but the next hop's MAC is not resolved yet.
    NeighbourUnknown { ifindex: u32 },
    /// Larger than `mtu`, the MTU towards the next hop through `ifindex`, the interface it
    /// would leave through (0 in the unlikely case that the lookup without the MTU check
    /// finds no way out).
    TooBig { ifindex: u32, mtu: u16 },
    /// Addressed to this host (or broadcast/multicast, or IPv6 link-scoped): not ours to
    /// forward.
    Local,
    /// Blackhole, unreachable, prohibited, or forwarding disabled.
    Unroutable,
}

/// Where a route leaves, whatever the frame's size.
pub enum Egress {
    /// Addressed to this host: the kernel's.
    Local,
    /// Out of this interface.
    Interface(u32),
    /// No route that forwards it.
    Unknown,
}

/// Looks up the route for a packet of `tot_len` bytes (IP header included) arriving on the
/// context's interface; `proto` is the L4 protocol (IPv6: the next header, extension
/// headers are not walked).
#[inline(always)]
pub fn lookup(ctx: &XdpContext, flow: &Flow, proto: u8, tot_len: u16) -> Route {
    let ingress = ctx.ingress_ifindex() as u32;
    // SAFETY: an all-zero bpf_fib_lookup is valid input (plain integers and unions of them).
    let mut params: FibParams = unsafe { mem::zeroed() };
    params.l4_protocol = proto;
    params.__bindgen_anon_1.tot_len = tot_len;
    params.ifindex = ingress;
    match *flow {
        Flow::V4 { src, dst, tos } => {
            params.family = AF_INET;
            params.__bindgen_anon_2.tos = tos;
            params.__bindgen_anon_3.ipv4_src = src;
            params.__bindgen_anon_4.ipv4_dst = dst;
        }
        Flow::V6 { src, dst, flowinfo } => {
            params.family = AF_INET6;
            params.__bindgen_anon_2.flowinfo = flowinfo;
            // SAFETY: `src` and `dst` are 16 readable bytes of the frame; the words keep the
            // header's byte order, as the helper expects, and every bit pattern is a valid
            // u32.
            unsafe {
                let to_src = (&raw mut params.__bindgen_anon_3.ipv6_src).cast::<[u8; 16]>();
                ptr::copy_nonoverlapping(src, to_src, 1);
                let to_dst = (&raw mut params.__bindgen_anon_4.ipv6_dst).cast::<[u8; 16]>();
                ptr::copy_nonoverlapping(dst, to_dst, 1);
            }
        }
    }
    match fib_lookup(ctx, &mut params) {
        BPF_FIB_LKUP_RET_SUCCESS => {
            // SAFETY: on success the kernel fills smac/dmac.
            let macs = unsafe { params.__bindgen_anon_6.__bindgen_anon_2 };
            Route::Forward { ifindex: params.ifindex, smac: macs.smac, dmac: macs.dmac }
        }
        BPF_FIB_LKUP_RET_NO_NEIGH => Route::NeighbourUnknown { ifindex: params.ifindex },
        BPF_FIB_LKUP_RET_FRAG_NEEDED => {
            // This answer names no interface (the kernel stops before setting it), but
            // callers need to know whether the packet was headed across the gateway: ask
            // again without the MTU check. The first call changed only `tot_len` (now the
            // MTU, a union) and left the addresses as they were. (A second lookup made by
            // the caller from its `Flow` instead got the program refused by the verifier:
            // LLVM shifted a stack pointer it had left in an unused register.)
            // SAFETY: on FRAG_NEEDED the kernel writes the MTU over `tot_len` (a union of
            // two u16s, so reading either is sound).
            let mtu = unsafe { params.__bindgen_anon_1.mtu_result };
            params.__bindgen_anon_1.tot_len = 0;
            params.ifindex = ingress;
            let ifindex = match fib_lookup(ctx, &mut params) {
                BPF_FIB_LKUP_RET_SUCCESS | BPF_FIB_LKUP_RET_NO_NEIGH => params.ifindex,
                _ => 0,
            };
            Route::TooBig { ifindex, mtu }
        }
        BPF_FIB_LKUP_RET_NOT_FWDED => Route::Local,
        _ => Route::Unroutable,
    }
}

#[inline(always)]
fn fib_lookup(ctx: &XdpContext, params: &mut FibParams) -> u32 {
    // SAFETY: `params` is a valid bpf_fib_lookup and its size is passed.
    let rc = unsafe { bpf_fib_lookup(ctx.as_ptr(), params, mem::size_of::<FibParams>() as i32, 0) };
    rc as u32
}

impl Route {
    /// Where the route leaves, whatever the frame's size.
    #[inline(always)]
    pub fn egress(&self) -> Egress {
        match *self {
            Route::Forward { ifindex, .. }
            | Route::NeighbourUnknown { ifindex }
            | Route::TooBig { ifindex, .. } => match ifindex {
                0 => Egress::Unknown,
                _ => Egress::Interface(ifindex),
            },
            Route::Local => Egress::Local,
            Route::Unroutable => Egress::Unknown,
        }
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
