//! The benchmark's yardstick (`cargo xtask bench`): a program that does everything a
//! router hop in XDP does for an IPv4 frame (parse and check the headers, look up the route,
//! decrement the TTL, set the MACs, redirect) and nothing an EIP gateway adds (no mapping
//! lookup, no rewrite, no counters). The gateway's per-packet cost is reported against it.
//! Never attached by the agent.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use eipgw_common::Verdict;

use crate::{
    forward::deliver,
    packet::{self, Malformed, Network, parse_ipv4},
    route::{self, Flow},
};

#[inline(always)]
pub fn forward(ctx: &XdpContext) -> Result<u32, Malformed> {
    match packet::network(ctx)? {
        Network::Ipv4 => {
            let frame = parse_ipv4(ctx)?;
            let flow = Flow::V4 { src: frame.src(), dst: frame.dst(), tos: frame.tos() };
            let route = route::lookup(ctx, &flow, frame.proto(), frame.total_len);
            let outcome = deliver(ctx, &frame, route, |_| {}, Verdict::ForwardedUnchanged, || {})?;
            Ok(outcome.action)
        }
        Network::Ipv6 | Network::Other => Ok(xdp_action::XDP_PASS),
    }
}
