//! The eipgw XDP program: 1:1 NAT between Elastic IPs and VPC private addresses.
//!
//! Attached to the gateway's WAN and LAN interfaces. Per frame: parse → classify by ingress
//! interface → look up the mapping → route (`bpf_fib_lookup`) → rewrite → redirect. EIPs in
//! a visible mode (cut-through, multi-EIP) and public IPv6 addresses take the same path
//! without the rewrite. ICMP errors crossing the gateway have their quoted packet
//! translated too; a NAT-mode EIP's packet that expires here or does not fit is answered
//! with an ICMP error sent back with XDP_TX. Every return is a deliberate action with a
//! counted [`Verdict`].
#![no_std]
#![no_main]
// For `core::intrinsics::atomic_xadd`: see `policy::within_cap`.
#![feature(core_intrinsics)]
#![expect(internal_features, reason = "the atomic add intrinsic; see policy::within_cap")]

mod bench;
mod counters;
mod forward;
mod gateway;
mod icmp;
mod ipv6;
mod nat;
mod packet;
mod policy;
mod reference;
mod route;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, DevMapHash, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
    programs::XdpContext,
};
use eipgw_common::{
    DEFAULT_MAX_MAPPINGS, EIP_FILTER_SLOTS, EipBuckets, EipCounters, EipEntry, EipLimits, Endpoint,
    FlowKey, FragmentKey, FragmentTarget, GatewayConfig, HELD_RING_BYTES, IcmpErrorBudget, Ipv6Key,
    MAPPING_MAP_FLAGS, MAX_DNAT_PORTS, MAX_FRAGMENTS, MAX_GROUP_FLOWS, MAX_HELD_KEYS,
    MAX_SECURITY_GROUPS, MAX_SNAT_SESSIONS, MAX_SNAT_SOURCES, NatTarget, PrivateEntry,
    SecurityGroupRules, SnatConfig, SnatSession, Verdict,
};

// Every map is pinned by name so that a restarted agent finds the same maps (and the same
// counters) and traffic never stops while it is down.
#[map]
static EIPS: HashMap<u32, EipEntry> = HashMap::pinned(DEFAULT_MAX_MAPPINGS, MAPPING_MAP_FLAGS);
#[map]
static PRIVATE_IPS: HashMap<u32, PrivateEntry> =
    HashMap::pinned(DEFAULT_MAX_MAPPINGS, MAPPING_MAP_FLAGS);
#[map]
static EIP_COUNTERS: PerCpuArray<EipCounters> = PerCpuArray::pinned(DEFAULT_MAX_MAPPINGS, 0);
#[map]
static VERDICT_COUNTERS: PerCpuArray<u64> = PerCpuArray::pinned(Verdict::COUNT, 0);
#[map]
static CONFIG: Array<GatewayConfig> = Array::pinned(1, 0);
#[map]
static EGRESS_DEVICES: DevMapHash = DevMapHash::pinned(64, 0);
#[map]
static IPV6_PUBLIC: HashMap<Ipv6Key, u32> = HashMap::pinned(DEFAULT_MAX_MAPPINGS, 0);
#[map]
static EIP_FILTER: Array<u32> = Array::pinned(EIP_FILTER_SLOTS, 0);
#[map]
static EIP_LIMITS: Array<EipLimits> = Array::pinned(DEFAULT_MAX_MAPPINGS, 0);
#[map]
static EIP_BUCKETS: Array<EipBuckets> = Array::pinned(DEFAULT_MAX_MAPPINGS, 0);
#[map]
static SECURITY_GROUPS: HashMap<u32, SecurityGroupRules> = HashMap::pinned(MAX_SECURITY_GROUPS, 0);
#[map]
static GROUP_FLOWS: LruHashMap<FlowKey, u64> = LruHashMap::pinned(MAX_GROUP_FLOWS, 0);
/// The NAT gateway program at [`eipgw_common::NAT_PROGRAM_INDEX`], put there by the agent.
#[map]
static NAT_PROGRAMS: ProgramArray = ProgramArray::pinned(1, 0);
/// What one step of `eipgw_nat` leaves the next (see `nat::Scratch`).
#[map]
static NAT_SCRATCH: PerCpuArray<nat::Scratch> = PerCpuArray::with_max_entries(1, 0);
#[map]
static DNAT_PORTS: HashMap<Endpoint, NatTarget> = HashMap::pinned(MAX_DNAT_PORTS, 0);
#[map]
static DNAT_REVERSE: HashMap<Endpoint, NatTarget> = HashMap::pinned(MAX_DNAT_PORTS, 0);
#[map]
static SNAT_SOURCES: HashMap<u32, PrivateEntry> = HashMap::pinned(MAX_SNAT_SOURCES, 0);
/// Not LRU: a live session is never evicted; a full table refuses new flows instead.
#[map]
static SNAT_SESSIONS: HashMap<Endpoint, SnatSession> = HashMap::pinned(MAX_SNAT_SESSIONS, 0);
#[map]
static SNAT_PORTS: HashMap<Endpoint, Endpoint> = HashMap::pinned(MAX_SNAT_SESSIONS, 0);
#[map]
static SNAT_CONFIG: Array<SnatConfig> = Array::pinned(1, 0);
#[map]
static FRAGMENTS: LruHashMap<FragmentKey, FragmentTarget> = LruHashMap::pinned(MAX_FRAGMENTS, 0);
#[map]
static HELD_FRAGMENTS: RingBuf = RingBuf::pinned(HELD_RING_BYTES, 0);
#[map]
static HELD_KEYS: LruHashMap<FragmentKey, u8> = LruHashMap::pinned(MAX_HELD_KEYS, 0);
/// The budget of ICMP errors the program sends as a router, per CPU. The one map that is
/// not pinned: a restarted agent may as well start with a full budget, and no agent reads it.
#[map]
static ICMP_ERROR_BUDGET: PerCpuArray<IcmpErrorBudget> = PerCpuArray::with_max_entries(1, 0);

#[xdp]
pub fn eipgw(ctx: XdpContext) -> u32 {
    let outcome = gateway::process(&ctx).unwrap_or(forward::Outcome::drop(Verdict::DropMalformed));
    counters::count_verdict(outcome.verdict);
    outcome.action
}

/// The NAT gateway's paths (see `nat`), reached from `eipgw` by tail call only.
#[xdp]
pub fn eipgw_nat(ctx: XdpContext) -> u32 {
    let outcome = nat::run(&ctx);
    counters::count_verdict(outcome.verdict);
    outcome.action
}

/// The benchmark's reference (see `reference`): forwards like a router, translates nothing.
#[xdp]
pub fn eipgw_reference(ctx: XdpContext) -> u32 {
    reference::forward(&ctx).unwrap_or(xdp_action::XDP_DROP)
}

/// The forwarding bench's traffic generator (see `bench`), run by BPF_PROG_TEST_RUN.
#[xdp]
pub fn eipgw_bench_gen(ctx: XdpContext) -> u32 {
    bench::generate(&ctx)
}

/// The forwarding bench's sink (see `bench`): counts and drops.
#[xdp]
pub fn eipgw_bench_sink(ctx: XdpContext) -> u32 {
    bench::sink(&ctx)
}

/// Passes every frame. Attached to the far end of a veth so that frames redirected into the
/// veth are accepted (the kernel delivers XDP_REDIRECT into a veth only when its peer runs
/// an XDP program).
#[xdp]
pub fn eipgw_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
