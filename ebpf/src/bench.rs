//! The forwarding bench's traffic ends (`cargo xtask bench`, sections 2 and 5); never
//! attached by the agent.
//!
//! - The generator runs under BPF_PROG_TEST_RUN in live-frames mode
//!   (`BPF_F_TEST_XDP_LIVE_FRAMES`) with the sending veth as ingress: each run writes one
//!   frame and returns XDP_TX, which the kernel turns into a redirect out of that veth, so
//!   the frame arrives on the gateway's side as if a host had sent it.
//! - The sink, attached to the veth the gateway forwards into, counts the IPv4 UDP frames
//!   (the generator's) per CPU and drops everything. Its being attached also lets the
//!   kernel redirect into that veth at all (a veth accepts XDP_REDIRECT only when its peer
//!   runs an XDP program).
//!
//! The generator writes the whole header on every run, from [`GenConfig`]: live frames are
//! recycled pages whose contents are not reset, and the gateway, the kernel or nftables
//! have rewritten the last frame that used a page (addresses, TTL, MACs, checksums).

use aya_ebpf::{
    bindings::xdp_action,
    macros::map,
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use eipgw_common::{
    bench::{BENCH_HEADER_LEN as HEADER_LEN, GenConfig, VARY_DESTINATION, VARY_SOURCE},
    checksum,
};
use network_types::eth::{EthHdr, EtherType};

use crate::packet::ptr_at;

/// Where the fields the generator rewrites sit in the frame (the varied address: see
/// [`GenConfig::addr_offset`]).
const IPV4_CHECKSUM_OFFSET: usize = 24;
const UDP_SRC_PORT_OFFSET: usize = 34;
const IPV4_PROTO_OFFSET: usize = 23;
const PROTO_UDP: u8 = 17;

#[map]
static BENCH_GEN: Array<GenConfig> = Array::with_max_entries(1, 0);
/// The generator's run number, per CPU (the bench runs it on one).
#[map]
static BENCH_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
/// IPv4 UDP frames the sink has seen, per CPU (not ICMP errors a gateway may send back).
#[map]
static BENCH_SINK: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn generate(ctx: &XdpContext) -> u32 {
    let Some(config) = BENCH_GEN.get(0) else {
        return xdp_action::XDP_ABORTED;
    };
    let Some(seq) = BENCH_SEQ.get_ptr_mut(0) else {
        return xdp_action::XDP_ABORTED;
    };
    let Ok(header) = ptr_at::<[u8; HEADER_LEN]>(ctx, 0) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: this CPU's counter; XDP does not preempt itself.
    let n = unsafe {
        let n = *seq;
        *seq = n + 1;
        n
    };
    let flow = (n % u64::from(config.flows.max(1))) as u32;
    let addr_count = config.addr_count.max(1);
    let (addr_step, port_step) = (flow % addr_count, flow / addr_count);
    // One of two constants, so that the verifier sees the offset within the header.
    let addr_offset =
        if config.addr_offset == VARY_SOURCE { VARY_SOURCE } else { VARY_DESTINATION } as usize;
    // SAFETY: `header` spans HEADER_LEN bytes of the frame (bounds-checked), and every
    // offset below lies within it; packet memory may be unaligned, hence the unaligned
    // accesses.
    unsafe {
        let base = header.cast::<u8>();
        // Eight bytes at a time, volatile: a plain copy becomes a call of a memmove
        // subprogram, a good part of the generator's time. Byte arrays have alignment 1,
        // so the stores need none.
        let template = config.header.as_ptr();
        for word in 0..HEADER_LEN / 8 {
            let value = template.add(word * 8).cast::<[u8; 8]>().read();
            base.add(word * 8).cast::<[u8; 8]>().write_volatile(value);
        }
        let tail = HEADER_LEN / 8 * 8;
        let value = template.add(tail).cast::<[u8; 2]>().read();
        base.add(tail).cast::<[u8; 2]>().write_volatile(value);
        let addr = base.add(addr_offset).cast::<u32>();
        let old = addr.read_unaligned();
        let new = (u32::from_be(old).wrapping_add(addr_step)).to_be();
        addr.write_unaligned(new);
        let check = base.add(IPV4_CHECKSUM_OFFSET).cast::<u16>();
        check.write_unaligned(checksum::replace_u32(check.read_unaligned(), old, new));
        // The UDP checksum is 0 (none), so the port needs no checksum update.
        let port = base.add(UDP_SRC_PORT_OFFSET).cast::<u16>();
        port.write_unaligned(
            (u16::from_be(port.read_unaligned()).wrapping_add(port_step as u16)).to_be(),
        );
    }
    xdp_action::XDP_TX
}

#[inline(always)]
pub fn sink(ctx: &XdpContext) -> u32 {
    if let (Ok(eth), Ok(proto)) = (ptr_at::<EthHdr>(ctx, 0), ptr_at::<u8>(ctx, IPV4_PROTO_OFFSET))
        // SAFETY: both bounds-checked.
        && unsafe { (*eth).ether_type == EtherType::Ipv4 as u16 && *proto == PROTO_UDP }
        && let Some(count) = BENCH_SINK.get_ptr_mut(0)
    {
        // SAFETY: this CPU's counter.
        unsafe { *count += 1 };
    }
    xdp_action::XDP_DROP
}
